// Rotate-half RoPE, alone (`rope`, in place on q or k) and fused with the KV cache write
// (`rope_write_kv`: q and k rotated in place, the rotated k and v stored at each token's slot, in one
// launch). Both rotate a pair with common.cuh's rope_rotate, whose roundings are spelled out (no
// contraction left to the compiler), so the fused kernel gives the same bits as rope, rope, write_kv.
// A thread per (token, rotated pair): grid.x is the token, grid.y covers the row's pairs, so a decode
// step of one token still spreads over several SMs. cos/sin are rows of `half` values, token t's at
// rope_row(ropeIndex, t).
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
                                                                 const float* __restrict__ sinv, const int* __restrict__ ropeIndex,
                                                                 int cols, int headDim, int half) {
  const int t = blockIdx.x;
  const int j = blockIdx.y * ROPE_THREADS + threadIdx.x;
  if (j >= (cols / headDim) * half) return;
  const int h = j / half, i = j - h * half;
  float* p = x + (u64)t * cols + h * headDim;
  const u64 row = (u64)rope_row(ropeIndex, t) * half;
  rope_pair(p + i, p + i + half, cosv[row + i], sinv[row + i]);
}

// Four consecutive pairs (i..i+3 with i+half..i+half+3): rope_pair's arithmetic on 16-byte accesses.
__device__ __forceinline__ void rope_pairs4(float* p1, float* p2, const float* c, const float* s) {
  float4 a = *reinterpret_cast<const float4*>(p1), b = *reinterpret_cast<const float4*>(p2);
  const float4 cv = *reinterpret_cast<const float4*>(c), sv = *reinterpret_cast<const float4*>(s);
  rope_pair(&a.x, &b.x, cv.x, sv.x);
  rope_pair(&a.y, &b.y, cv.y, sv.y);
  rope_pair(&a.z, &b.z, cv.z, sv.z);
  rope_pair(&a.w, &b.w, cv.w, sv.w);
  *reinterpret_cast<float4*>(p1) = a;
  *reinterpret_cast<float4*>(p2) = b;
}

// Four values into the cache at dst (4-element aligned), each as f32_to_kv_scaled stores it.
__device__ __forceinline__ void store_kv4(kv_t* dst, const float* x, float scale) {
  const kv_t a = f32_to_kv_scaled(x[0], scale), b = f32_to_kv_scaled(x[1], scale), c = f32_to_kv_scaled(x[2], scale), d = f32_to_kv_scaled(x[3], scale);
#if defined(KV_BF16)
  *reinterpret_cast<uint2*>(dst) = make_uint2((u32)a | ((u32)b << 16), (u32)c | ((u32)d << 16));
#elif defined(KV_FP8)
  *reinterpret_cast<u32*>(dst) = (u32)a | ((u32)b << 8) | ((u32)c << 16) | ((u32)d << 24);
#else
  *reinterpret_cast<float4*>(dst) = float4{a, b, c, d};
#endif
}

// W consecutive pairs (W = 1: rope_pair; 4: rope_pairs4 on 16-byte accesses) and W values into the
// cache (f32_to_kv_scaled each; store_kv4).
template <int W>
__device__ __forceinline__ void rope_items(float* p1, float* p2, const float* c, const float* s) {
  if (W == 1) rope_pair(p1, p2, *c, *s);
  else rope_pairs4(p1, p2, c, s);
}
template <int W>
__device__ __forceinline__ void store_items(kv_t* dst, const float* x, float scale) {
  if (W == 1) *dst = f32_to_kv_scaled(*x, scale);
  else store_kv4(dst, x, scale);
}

// One token (blockIdx.x) of q [T, qHeads·headDim], k and v [T, kvHeads·headDim], W pairs or values a
// thread. A row's work items, in order: q's rotated pairs, k's rotated pairs (also stored in the
// cache), v's values, and (W = 1) k's dims past the rotary part (partial rotary; stored unchanged).
// qHeads 0: q left alone (the prefill attention rotates it: CudaBackend.ropeWriteKv).
template <int W>
__device__ __forceinline__ void rope_write_kv_body(float* __restrict__ q, float* __restrict__ k, const float* __restrict__ v,
                                                   const float* __restrict__ cosv, const float* __restrict__ sinv,
                                                   const int* __restrict__ ropeIndex, kv_t* __restrict__ kc, kv_t* __restrict__ vc,
                                                   const int* __restrict__ slots, int qHeads, int kvHeads, int headDim, int half,
                                                   float kScale, float vScale) {
  const int t = blockIdx.x;
  int j = blockIdx.y * ROPE_THREADS + threadIdx.x;
  const u64 row = (u64)rope_row(ropeIndex, t) * half;
  const float* cs = cosv + row;
  const float* sn = sinv + row;
  const int perHead = half / W;  // items per head
  const int qItems = qHeads * perHead;
  if (j < qItems) {
    const int h = j / perHead, i = (j - h * perHead) * W;
    float* p = q + (u64)t * qHeads * headDim + h * headDim;
    rope_items<W>(p + i, p + i + half, cs + i, sn + i);
    return;
  }
  j -= qItems;
  const int width = kvHeads * headDim;
  const u64 src = (u64)t * width, dst = (u64)slots[t] * width;
  const int kItems = kvHeads * perHead;
  if (j < kItems) {
    const int h = j / perHead, i = (j - h * perHead) * W;
    float* p = k + src + h * headDim;
    rope_items<W>(p + i, p + i + half, cs + i, sn + i);
    store_items<W>(kc + dst + h * headDim + i, p + i, kScale);
    store_items<W>(kc + dst + h * headDim + i + half, p + i + half, kScale);
    return;
  }
  j -= kItems;
  if (j < width / W) {
    store_items<W>(vc + dst + W * j, v + src + W * j, vScale);
    return;
  }
  if (W != 1) return;  // the 16-byte kernel runs full rotary only: no tail
  j -= width;
  const int tail = headDim - 2 * half;
  if (j < kvHeads * tail) {
    const int h = j / tail, d = h * headDim + 2 * half + (j - h * tail);
    kc[dst + d] = f32_to_kv_scaled(k[src + d], kScale);
  }
}

#define ROPE_WRITE_KV_PARAMS                                                                                          \
  float *__restrict__ q, float *__restrict__ k, const float *__restrict__ v, const float *__restrict__ cosv,          \
      const float *__restrict__ sinv, const int *__restrict__ ropeIndex, kv_t *__restrict__ kc, kv_t *__restrict__ vc, \
      const int *__restrict__ slots, int qHeads, int kvHeads, int headDim, int half, float kScale, float vScale
#define ROPE_WRITE_KV_ARGS q, k, v, cosv, sinv, ropeIndex, kc, vc, slots, qHeads, kvHeads, headDim, half, kScale, vScale

// A thread per pair or value (any rotary part).
extern "C" __global__ void __launch_bounds__(ROPE_THREADS) rope_write_kv(ROPE_WRITE_KV_PARAMS) {
  pdl_trigger();  // decode attention after it may start (programmatic-launch.ts)
  pdl_wait();     // q, k, v: written by the q/k/v GEMV before
  rope_write_kv_body<1>(ROPE_WRITE_KV_ARGS);
}

// rope_write_kv with 16-byte accesses, a thread per four pairs (q, k) or four values (v): for full
// rotary (2·half = headDim) with half a multiple of 4 and 16-byte aligned rows and tables (the host
// checks). Same arithmetic, so the same bits; a prefill's RoPE + KV write moves ~94 MB at 2048 tokens
// of an 8B model, and scalar 4-byte accesses held it at ~70% of the bandwidth.
extern "C" __global__ void __launch_bounds__(ROPE_THREADS) rope_write_kv4(ROPE_WRITE_KV_PARAMS) {
  pdl_trigger();
  pdl_wait();
  rope_write_kv_body<4>(ROPE_WRITE_KV_ARGS);
}
