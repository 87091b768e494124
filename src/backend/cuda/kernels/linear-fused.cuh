// Fused decode linears (≤ 8 tokens, dense bf16/f16/f32 weights, K a whole number of 16-byte vectors):
//   gemv_many_*: up to three matrices of the same input in one launch (q, k, v), the grid covering
//                the rows of all of them;
//   gemv_silu_*: silu(x·gateᵀ + bg) · (x·upᵀ + bu), a block reading the same rows of gate and up and
//                writing only the product.
// Both use gemv-core.cuh's split-K loop, so every output equals gemv_splitk's (the separate linear)
// bitwise, and the SiLU is silu_mul's expression (elementwise.cu) on the same float32 values.
//
// Variants: the same arithmetic, different ways to keep HBM busy (bench/cuda-gemv.ts times them).
//   unroll  4 rows a block; a lane issues up to 4 (1 token) or 2 (more) 16-byte loads per row
//           before using any, loads past L1 so x stays cached. The default (linear-fused.cu).
//   base    4 rows a block, one load per row in flight, loads through L1: gemv_splitk's loop
//           exactly, so it measures the fusion alone.
//   rows8   8 rows a block: x read once per 8 rows instead of 4; 2 (1 token) or 1 loads per row in flight.
//   persist a grid of 2 blocks per SM looping over the row groups, each round's loads issued before
//           the previous round's products, across groups too (HBM stays busy while a group's sums
//           are reduced), x staged in shared memory once per block when it fits.
// Kernels are compiled for at most TMAX tokens (suffix _tTMAX): fewer accumulators for fewer tokens
// leave registers for more loads in flight; a token's arithmetic does not depend on TMAX.
// This header holds the bodies; linear-fused.cu instantiates the default, linear-fused-variants.cu
// the others (compiled only when a benchmark or test asks for one).
#pragma once
#include "common.cuh"
#include "gemv-core.cuh"

// Up to three matrices side by side: row group g (RW rows) of the concatenation [w0; w1; w2].
// Pointers are picked by comparisons, not an indexed array, which would go to local memory.
template <class W, int RW, int TMAX>
struct ManyJob {
  typedef typename W::T T;
  const T *w0, *w1, *w2;
  const float *b0, *b1, *b2;
  float *y0, *y1, *y2;
  int n0, n1, n2, K;

  __device__ __forceinline__ int groups() const { return (n0 + RW - 1) / RW + (n1 + RW - 1) / RW + (n2 + RW - 1) / RW; }
  // Which matrix holds group g, and the group's first row in it.
  __device__ __forceinline__ int locate(int g, int& row0) const {
    const int g0 = (n0 + RW - 1) / RW, g1 = (n1 + RW - 1) / RW;
    if (g < g0) return row0 = g * RW, 0;
    if (g < g0 + g1) return row0 = (g - g0) * RW, 1;
    return row0 = (g - g0 - g1) * RW, 2;
  }
  __device__ __forceinline__ void rows(int g, const T* (&wr)[RW]) const {
    int row0;
    const int m = locate(g, row0);
    const T* w = m == 0 ? w0 : m == 1 ? w1 : w2;
    const int n = m == 0 ? n0 : m == 1 ? n1 : n2;
#pragma unroll
    for (int r = 0; r < RW; r++) wr[r] = w + (u64)min(row0 + r, n - 1) * K;  // rows past n re-read the last
  }
  __device__ __forceinline__ void finish(int g, const float (*part)[RW * TMAX], int T) const {
    int row0;
    const int m = locate(g, row0);
    const float* b = m == 0 ? b0 : m == 1 ? b1 : b2;
    float* y = m == 0 ? y0 : m == 1 ? y1 : y2;
    const int n = m == 0 ? n0 : m == 1 ? n1 : n2;
    const int i = threadIdx.x;
    if (i < RW * TMAX) {
      const int r = i / TMAX, t = i % TMAX, row = row0 + r;
      if (t < T && row < n) y[(u64)t * n + row] = sum_warps(part, i) + (b ? b[row] : 0.f);
    }
  }
};

// Gate and up together: group g is rows g·RW/2 … of gate (the block's first RW/2 rows) and the same
// rows of up (the last RW/2).
template <class W, int RW, int TMAX>
struct SiluJob {
  typedef typename W::T T;
  static const int RG = RW / 2;
  const T *wg, *wu;
  const float *bg, *bu;
  float* y;
  int N, K;

  __device__ __forceinline__ int groups() const { return (N + RG - 1) / RG; }
  __device__ __forceinline__ void rows(int g, const T* (&wr)[RW]) const {
#pragma unroll
    for (int r = 0; r < RG; r++) {
      const u64 off = (u64)min(g * RG + r, N - 1) * K;
      wr[r] = wg + off;
      wr[RG + r] = wu + off;
    }
  }
  __device__ __forceinline__ void finish(int g, const float (*part)[RW * TMAX], int T) const {
    const int i = threadIdx.x;
    if (i < RG * TMAX) {
      const int r = i / TMAX, t = i % TMAX, row = g * RG + r;
      if (t < T && row < N) {
        // The separate path's values: linear's output (sum + bias), then silu_mul's expression.
        const float gs = sum_warps(part, i) + (bg ? bg[row] : 0.f);
        const float us = sum_warps(part, RG * TMAX + i) + (bu ? bu[row] : 0.f);
        y[(u64)t * N + row] = silu_times(gs, us);
      }
    }
  }
};

// One row group per block.
template <class Core, int TMAX, class Job>
__device__ __forceinline__ void run_block(const Job& job, const float* __restrict__ x, int T, int K) {
  const int RW = Core::ROWS;
  __shared__ float part[SK_WARPS][RW * TMAX];
  const int g = blockIdx.x;
  const typename Core::T* wr[RW];
  job.rows(g, wr);
  Core c;
  c.begin(K);
  c.run(wr, x, T, K);
  c.to_shared(part, T);
  __syncthreads();
  job.finish(g, part, T);
}

// A fixed grid looping over row groups. Loads run one round ahead of the products, across group
// boundaries too, so HBM stays busy while a group's partial sums are reduced and written. x is
// copied to shared memory once (xInShared: the launch gave it T·K floats of dynamic shared memory).
template <class Core, int TMAX, class Job>
__device__ __forceinline__ void run_persistent(const Job& job, const float* __restrict__ x, int T, int K, int xInShared) {
  const int RW = Core::ROWS, U = Core::LOADS;
  __shared__ float part[SK_WARPS][RW * TMAX];
  extern __shared__ float4 xs[];
  const int groups = job.groups();
  int g = blockIdx.x;
  if (g >= groups) return;
  Core c;
  c.begin(K);
  const typename Core::T* wr[RW];
  job.rows(g, wr);
  c.load(c.raw, wr, 0);  // in flight while x is staged
  const float* xp = x;
  if (xInShared) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int i = threadIdx.x; i < T * K / 4; i += blockDim.x) xs[i] = x4[i];
    __syncthreads();
    xp = reinterpret_cast<const float*>(xs);
  }
  int p = 0;
  for (;;) {
    // Where the next round is: the next phase of this group, or the first of the next group.
    int ng = g, np = p + 1;
    if (np == c.phases) {
      np = 0;
      ng += gridDim.x;
    }
    const typename Core::T* nwr[RW];
#pragma unroll
    for (int r = 0; r < RW; r++) nwr[r] = wr[r];
    uint4 next[U][RW];
    if (ng < groups) {
      if (np == 0) job.rows(ng, nwr);
      c.load(next, nwr, np);
    }
    c.accumulate(c.raw, xp, T, K, p);
    if (np == 0) {
      c.to_shared(part, T);
      __syncthreads();
      job.finish(g, part, T);
      __syncthreads();  // part is written again by the next group
      c.zero();
    }
    if (ng >= groups) break;
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
      for (int r = 0; r < RW; r++) c.raw[u][r] = next[u][r];
#pragma unroll
    for (int r = 0; r < RW; r++) wr[r] = nwr[r];
    g = ng;
    p = np;
  }
}

#define MANY_PARAMS(W)                                                                                   \
  const float *x, int T, int K, const W::T *w0, const float *b0, float *y0, int n0, const W::T *w1,     \
      const float *b1, float *y1, int n1, const W::T *w2, const float *b2, float *y2, int n2, int xInShared
#define MANY_JOB(W, RW, TMAX) \
  ManyJob<W, RW, TMAX> job = {w0, w1, w2, b0, b1, b2, y0, y1, y2, n0, n1, n2, K}
#define SILU_PARAMS(W) \
  const float *x, int T, int K, const W::T *wg, const float *bg, const W::T *wu, const float *bu, float *y, int N, int xInShared
#define SILU_JOB(W, RW, TMAX) SiluJob<W, RW, TMAX> job = {wg, wu, bg, bu, y, N, K}

// One variant for one weight type and token bound: gemv_many_<name>_<dtype>_t<TMAX>, gemv_silu_<...>.
#define FUSED_KERNELS(NAME, SUFFIX, W, TMAX, RW, U, LOAD, RUN, MINBLOCKS)                                 \
  extern "C" __global__ void __launch_bounds__(SK_WARPS * 32, MINBLOCKS)                                  \
      gemv_many_##NAME##_##SUFFIX##_t##TMAX(MANY_PARAMS(W)) {                                              \
    MANY_JOB(W, RW, TMAX);                                                                                \
    RUN<SplitK<W, RW, U, TMAX, LOAD>, TMAX>(job, x, T, K RUN##_EXTRA);                                    \
  }                                                                                                       \
  extern "C" __global__ void __launch_bounds__(SK_WARPS * 32, MINBLOCKS)                                  \
      gemv_silu_##NAME##_##SUFFIX##_t##TMAX(SILU_PARAMS(W)) {                                              \
    SILU_JOB(W, RW, TMAX);                                                                                \
    RUN<SplitK<W, RW, U, TMAX, LOAD>, TMAX>(job, x, T, K RUN##_EXTRA);                                    \
  }
#define run_block_EXTRA
#define run_persistent_EXTRA , xInShared
