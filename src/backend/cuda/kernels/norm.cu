// RMSNorm over rows (one block per row), the fused residual-add + RMSNorm of pre-norm blocks, and
// (by calling rms_norm with rows of headDim, in place) the per-head q/k norm.
#include "common.cuh"

extern "C" __global__ void rms_norm(const float* x, const float* __restrict__ w, float* out, int cols, float eps) {
  const float* src = x + (u64)blockIdx.x * cols;
  float* dst = out + (u64)blockIdx.x * cols;
  float ss = 0.f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) ss += src[i] * src[i];
  ss = block_sum(ss);
  const float inv = 1.f / sqrtf(ss / (float)cols + eps);
  // src and dst may alias: each thread rewrites exactly the elements it read.
  for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = __fmul_rn(src[i], inv) * w[i];
}

extern "C" __global__ void add_rms_norm(const float* __restrict__ x, float* __restrict__ residual,
                                        const float* __restrict__ w, float* __restrict__ out, int cols, float eps) {
  const float* a = x + (u64)blockIdx.x * cols;
  float* r = residual + (u64)blockIdx.x * cols;
  float* dst = out + (u64)blockIdx.x * cols;
  float ss = 0.f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) {
    const float v = r[i] + a[i];
    r[i] = v;
    ss += v * v;
  }
  ss = block_sum(ss);
  const float inv = 1.f / sqrtf(ss / (float)cols + eps);
  for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = __fmul_rn(r[i], inv) * w[i];
}
