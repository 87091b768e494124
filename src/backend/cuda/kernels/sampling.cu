// Greedy sampling on the GPU: the index of each row's largest value among its first n columns, so a
// greedy step reads back one id a row instead of the whole vocabulary's logits (513 KB a row for
// Llama 3) and the host skips a 128k-element scan. Semantics of the CPU sampler's argmax: ties go
// to the lowest index, NaN never wins, -1 when no value is above -inf.
#include "common.cuh"

// (value, index) of a candidate; index -1 = none yet.
__device__ __forceinline__ void better(float& bv, int& bi, float v, int i) {
  if (i >= 0 && (bi < 0 || v > bv || (v == bv && i < bi))) {
    bv = v;
    bi = i;
  }
}

// One block per row; blockDim.x a multiple of 32, at most 1024.
extern "C" __global__ void argmax_rows(const float* __restrict__ x, int* __restrict__ out, int cols, int n) {
  const float* row = x + (u64)blockIdx.x * cols;
  float bv = NEG_INF;
  int bi = -1;
  // Each thread's candidates in increasing index order: a later equal value never replaces it.
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = row[i];
    if (v > bv) {
      bv = v;
      bi = i;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, bv, o);
    const int i = __shfl_xor_sync(0xffffffffu, bi, o);
    better(bv, bi, v, i);
  }
  __shared__ float sv[32];
  __shared__ int si[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sv[warp] = bv;
    si[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x >> 5;
    bv = lane < warps ? sv[lane] : NEG_INF;
    bi = lane < warps ? si[lane] : -1;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float v = __shfl_xor_sync(0xffffffffu, bv, o);
      const int i = __shfl_xor_sync(0xffffffffu, bi, o);
      better(bv, bi, v, i);
    }
    if (lane == 0) out[blockIdx.x] = bi;
  }
}
