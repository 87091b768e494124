// Rotate-half RoPE, alone (`rope`, in place on q or k) and fused with the KV cache write
// (`rope_write_kv`: q and k rotated in place, the rotated k and v stored at each token's slot, in one
// launch). Both rotate a pair with rope_pair, whose roundings are spelled out (no contraction left to
// the compiler), so the fused kernel gives the same bits as rope, rope, write_kv.
// A thread per (token, rotated pair): grid.x is the token, grid.y covers the row's pairs, so a decode
// step of one token still spreads over several SMs. cos/sin are [T, half].
#include "common.cuh"

#define ROPE_THREADS 256

// (x1, x2) → (x1·c − x2·s, x2·c + x1·s), each a fused multiply-add of a rounded product.
__device__ __forceinline__ void rope_pair(float* p1, float* p2, float c, float s) {
  const float x1 = *p1, x2 = *p2;
  *p1 = __fmaf_rn(x1, c, -__fmul_rn(x2, s));
  *p2 = __fmaf_rn(x2, c, __fmul_rn(x1, s));
}

// In place on the first 2·half dims of every head of x [T, cols].
extern "C" __global__ void __launch_bounds__(ROPE_THREADS) rope(float* __restrict__ x, const float* __restrict__ cosv,
                                                                 const float* __restrict__ sinv, int cols, int headDim, int half) {
  const int t = blockIdx.x;
  const int j = blockIdx.y * ROPE_THREADS + threadIdx.x;
  if (j >= (cols / headDim) * half) return;
  const int h = j / half, i = j - h * half;
  float* p = x + (u64)t * cols + h * headDim;
  rope_pair(p + i, p + i + half, cosv[t * half + i], sinv[t * half + i]);
}

// One token (blockIdx.x) of q [T, qHeads·headDim], k and v [T, kvHeads·headDim]. A row's work items,
// in order: q's rotated pairs, k's rotated pairs (also stored in the cache), v's values, and k's
// dims past the rotary part (partial rotary; stored unchanged).
extern "C" __global__ void __launch_bounds__(ROPE_THREADS) rope_write_kv(
    float* __restrict__ q, float* __restrict__ k, const float* __restrict__ v, const float* __restrict__ cosv,
    const float* __restrict__ sinv, kv_t* __restrict__ kc, kv_t* __restrict__ vc, const int* __restrict__ slots,
    int qHeads, int kvHeads, int headDim, int half, float kScale, float vScale) {
  pdl_trigger();  // decode attention after it may start (programmatic-launch.ts)
  pdl_wait();     // q, k, v: written by the q/k/v GEMV before
  const int t = blockIdx.x;
  int j = blockIdx.y * ROPE_THREADS + threadIdx.x;
  const float* cs = cosv + t * half;
  const float* sn = sinv + t * half;
  const int qPairs = qHeads * half;
  if (j < qPairs) {
    const int h = j / half, i = j - h * half;
    float* p = q + (u64)t * qHeads * headDim + h * headDim;
    rope_pair(p + i, p + i + half, cs[i], sn[i]);
    return;
  }
  j -= qPairs;
  const int width = kvHeads * headDim;
  const u64 src = (u64)t * width, dst = (u64)slots[t] * width;
  const int kPairs = kvHeads * half;
  if (j < kPairs) {
    const int h = j / half, i = j - h * half;
    float* p = k + src + h * headDim;
    rope_pair(p + i, p + i + half, cs[i], sn[i]);
    kc[dst + h * headDim + i] = f32_to_kv_scaled(p[i], kScale);
    kc[dst + h * headDim + i + half] = f32_to_kv_scaled(p[i + half], kScale);
    return;
  }
  j -= kPairs;
  if (j < width) {
    vc[dst + j] = f32_to_kv_scaled(v[src + j], vScale);
    return;
  }
  j -= width;
  const int tail = headDim - 2 * half;
  if (j < kvHeads * tail) {
    const int h = j / tail, d = h * headDim + 2 * half + (j - h * tail);
    kc[dst + d] = f32_to_kv_scaled(k[src + d], kScale);
  }
}
