// Element-wise and gather kernels over float32 activations: embedding rows, SiLU·mul, residual add,
// row selection (RoPE is in rope-kv.cu).
#include "common.cuh"

#define EMBEDDING(NAME, W)                                                                           \
  extern "C" __global__ void NAME(const W::T* __restrict__ table, const int* __restrict__ ids,       \
                                  float* __restrict__ out, int hidden) {                            \
    const W::T* row = table + (u64)ids[blockIdx.x] * hidden;                                        \
    float* dst = out + (u64)blockIdx.x * hidden;                                                    \
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = W::one(row + i);               \
  }
EMBEDDING(embedding_bf16, WBf16)
EMBEDDING(embedding_f16, WF16)
EMBEDDING(embedding_f32, WF32)

extern "C" __global__ void silu_mul(const float* __restrict__ gate, const float* __restrict__ up,
                                    float* __restrict__ out, u64 n) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    out[i] = silu_times(gate[i], up[i]);
  }
}

extern "C" __global__ void add_inplace(float* __restrict__ a, const float* __restrict__ b, u64 n) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) a[i] += b[i];
}

extern "C" __global__ void select_rows(const float* __restrict__ x, const int* __restrict__ rows,
                                       float* __restrict__ out, int cols) {
  const float* src = x + (u64)rows[blockIdx.x] * cols;
  float* dst = out + (u64)blockIdx.x * cols;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = src[i];
}

// out[r, j] = x[r, columns[j]], or `fill` where columns[j] < 0: a row's values moved to other ids (an
// EAGLE-3 head's draft-vocabulary logits onto the target's vocabulary; an act-order int4 weight's x
// in its sorted column order). Grid (rows, column blocks).
extern "C" __global__ void gather_columns(const float* __restrict__ x, const int* __restrict__ columns,
                                          float* __restrict__ out, int xCols, int outCols, float fill) {
  const int j = blockIdx.y * blockDim.x + threadIdx.x;
  if (j >= outCols) return;
  const int c = columns[j];
  out[(u64)blockIdx.x * outCols + j] = c >= 0 ? x[(u64)blockIdx.x * xCols + c] : fill;
}

// The original RoPE kernel (one block per token, its threads looping over the heads), kept only so
// bench/cuda-small-kernels.ts can show what rope-kv.cu's grid over (token, pair) gains; the backend
// runs rope-kv.cu. In place on the first 2·half dims of every head of row blockIdx.x; cos/sin [T, half].
extern "C" __global__ void rope_per_token(float* __restrict__ x, const float* __restrict__ cosv,
                                const float* __restrict__ sinv, int cols, int headDim, int half) {
  const int r = blockIdx.x;
  const int heads = cols / headDim;
  float* row = x + (u64)r * cols;
  for (int j = threadIdx.x; j < heads * half; j += blockDim.x) {
    const int h = j / half, i = j - h * half;
    const float c = cosv[r * half + i], s = sinv[r * half + i];
    float* p = row + h * headDim;
    const float x1 = p[i], x2 = p[i + half];
    p[i] = x1 * c - x2 * s;
    p[i + half] = x2 * c + x1 * s;
  }
}

// Random bf16 values uniform in [-scale, scale) from a counter hash: dummy weights made on the GPU.
extern "C" __global__ void fill_random_bf16(u16* __restrict__ out, u64 n, u32 seed, float scale) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    u32 h = (u32)i * 0x9E3779B1u ^ (u32)(i >> 32) * 0x85EBCA77u ^ seed * 0xC2B2AE3Du;
    h ^= h >> 15; h *= 0x2C1B3C6Du; h ^= h >> 12; h *= 0x297A2D39u; h ^= h >> 15;
    const float u = (h >> 8) * (1.f / 16777216.f);  // [0, 1)
    out[i] = f32_to_bf16((2.f * u - 1.f) * scale);
  }
}
