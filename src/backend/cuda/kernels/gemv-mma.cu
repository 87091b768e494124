// Tensor-core GEMV for decode (1..8 tokens), bf16 weights: y[T, N] = x[T, K] · W[N, K]ᵀ (+ bias),
// x and y float32. Opt-in (CudaBackend.decodeGemv = 'mma'); the FMA split-K GEMV (linear.cu) stays
// the default. At 8 tokens the FMA kernels are bound by 8 float32 FMAs per weight element, not by
// bytes; here one mma.sync.m16n8k16 (bf16 × bf16 → float32) does 16 rows × 16 k × 8 tokens.
//
// Shapes of the mma (PTX ISA, "Matrix Fragments for mma.m16n8k16"): lane = 4·g + q (g = 0..7,
// q = 0..3) holds A (16 × 16, the weights: m = row, k) at rows g and g + 8, k-slots {2q, 2q+1,
// 2q+8, 2q+9}; B (16 × 8, x: k, n = token) at k-slots {2q, 2q+1, 2q+8, 2q+9} of token g; and D
// (16 × 8) at rows g, g + 8 and tokens 2q, 2q+1.
//
// The order of k inside a dot product is ours to choose, as long as A and B agree. So a lane loads
// 8 consecutive bf16 of row g (one 16-byte load; another for row g + 8) and takes them as its
// k-slots of two consecutive mma steps — elements 0–3 in the first, 4–7 in the second — and it loads
// x[token g] at the same 8 columns (two float4, rounded to bf16 pairs). The 4 lanes of a row then
// cover 32 consecutive columns (a "chunk"), which two mma steps consume. Weights come straight from
// global memory into the fragments, x from L1 (every block reads all of x; 8 tokens × K = 14336 as
// bf16 would be 224 KiB, more than shared memory holds, so x is not staged there).
//
// Split K: the block's 8 warps share the block's rows; warp w takes groups w, w + 8, ... of GROUP
// consecutive chunks, issuing all of a group's loads before its mmas, each chunk summed into its own
// accumulator (independent mma chains; GROUP · rows-per-block 16-byte weight loads in flight per
// lane). A warp adds its GROUP accumulators in order, the 8 warps' sums meet in shared memory and are
// added in warp order, then the bias in float32. Every step of that order depends on K only: a
// token's result is the same bits alone or in a batch of 8 (rows of x past T are zero, and an mma's
// output column depends on its own B column only), and at R = 1 or 2 m-tiles a block.
#include "gemv-mma.cuh"

// Chunks (32 columns) a warp loads before using them.
#define MMA_GROUP 4

// Loads that give zeros where `ok` is false, as predicated instructions rather than branches, so
// ptxas can keep a group's loads in flight together.
__device__ __forceinline__ uint2 ldg_stream8(const u16* p, bool ok) {
  uint2 v;
  asm volatile("{ .reg .pred p; setp.ne.b32 p, %3, 0; mov.b32 %0, 0; mov.b32 %1, 0;\n  @p ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2]; }"
               : "=r"(v.x), "=r"(v.y)
               : "l"(p), "r"((int)ok));
  return v;
}

// R m-tiles (16 rows each) per block, 8 warps splitting K. K is a multiple of 16 (so rows are
// 16-byte aligned); where it is not one of 32, warp 0 also takes the last 16 columns.
// `tile`: which group of 16·R rows of W this block computes.
template <int R>
__device__ __forceinline__ void gemv_mma_bf16(const u16* __restrict__ w, const float* __restrict__ x, const float* __restrict__ bias,
                                              float* __restrict__ y, int T, int N, int K, int tile) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int q = lane & 3;
  const int row0 = tile * 16 * R;
  const int chunks = K >> 5;

  // This lane's two rows of each m-tile (rows past N read nothing and give zeros) and its token.
  const u16* wrow[R][2];
  bool rowOk[R][2];
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int row = row0 + 16 * r + g + 8 * h;
      rowOk[r][h] = row < N;
      wrow[r][h] = w + (u64)(rowOk[r][h] ? row : 0) * K + 8 * q;
    }
  const bool tokOk = g < T;
  const float* xrow = x + (u64)(tokOk ? g : 0) * K + 8 * q;

  float acc[MMA_GROUP][R][4];
#pragma unroll
  for (int u = 0; u < MMA_GROUP; u++)
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int i = 0; i < 4; i++) acc[u][r][i] = 0.f;

  for (int c0 = warp * MMA_GROUP; c0 < chunks; c0 += MMA_WARPS * MMA_GROUP) {
    // Every load of the group first, then the mmas.
    uint4 a[MMA_GROUP][R][2];
    float4 b[MMA_GROUP][2];
    // x first: it comes from L1 and can be rounded to bf16 while the weights are still on their way.
#pragma unroll
    for (int u = 0; u < MMA_GROUP; u++) {
      const bool in = c0 + u < chunks;
      b[u][0] = ldg_x4(xrow + 32 * (c0 + u), in && tokOk);
      b[u][1] = ldg_x4(xrow + 32 * (c0 + u) + 4, in && tokOk);
    }
#pragma unroll
    for (int u = 0; u < MMA_GROUP; u++) {
      const bool in = c0 + u < chunks;
#pragma unroll
      for (int r = 0; r < R; r++)
#pragma unroll
        for (int h = 0; h < 2; h++) a[u][r][h] = ldg_w(wrow[r][h] + 32 * (c0 + u), in && rowOk[r][h]);
    }
#pragma unroll
    for (int u = 0; u < MMA_GROUP; u++) {
      const u32 b0 = bf16x2(b[u][0].x, b[u][0].y), b1 = bf16x2(b[u][0].z, b[u][0].w);
      const u32 b2 = bf16x2(b[u][1].x, b[u][1].y), b3 = bf16x2(b[u][1].z, b[u][1].w);
#pragma unroll
      for (int r = 0; r < R; r++) {
        // Elements 0–3 of the lane's 8 (words x, y) in the first step, 4–7 (z, w) in the second.
        mma_bf16(acc[u][r], a[u][r][0].x, a[u][r][1].x, a[u][r][0].y, a[u][r][1].y, b0, b1);
        mma_bf16(acc[u][r], a[u][r][0].z, a[u][r][1].z, a[u][r][0].w, a[u][r][1].w, b2, b3);
      }
    }
  }

  // K % 32 = 16: the last 16 columns, one mma step (4 per row: elements 0–1 and 2–3 of 4q..4q+3).
  if ((K & 16) && warp == 0) {
    const int k = 32 * chunks + 4 * q;
    const float4 xv = ldg_x4(x + (u64)(tokOk ? g : 0) * K + k, tokOk);
    const u32 b0 = bf16x2(xv.x, xv.y), b1 = bf16x2(xv.z, xv.w);
#pragma unroll
    for (int r = 0; r < R; r++) {
      const uint2 a0 = ldg_stream8(wrow[r][0] - 8 * q + k, rowOk[r][0]);
      const uint2 a1 = ldg_stream8(wrow[r][1] - 8 * q + k, rowOk[r][1]);
      mma_bf16(acc[0][r], a0.x, a1.x, a0.y, a1.y, b0, b1);
    }
  }

  // The warp's chunks in order, then the warps in order (no split K here), + bias.
  mma_finish_emit<R, MMA_GROUP>(acc, T, 1, 0, nullptr, nullptr, [&](int m, int t, const float (&s)[R]) {
#pragma unroll
    for (int r = 0; r < R; r++) {
      const int row = row0 + 16 * r + m;
      if (row < N) y[(u64)t * N + row] = bias ? s[r] + bias[row] : s[r];
    }
  });
}

#define MMA_KERNELS(R, BOUNDS)                                                                                          \
  extern "C" __global__ void BOUNDS gemv_mma_bf16_r##R(const u16* w, const float* x, const float* bias, float* y, int T, int N, int K) { \
    gemv_mma_bf16<R>(w, x, bias, y, T, N, K, blockIdx.x);                                                               \
  }                                                                                                                     \
  /* Up to three matrices of one input (q, k, v) in one grid: blocks 0..tiles0-1 take the first's   */                 \
  /* rows, and so on; each matrix's outputs are linear's bits.                                       */                 \
  extern "C" __global__ void BOUNDS gemv_mma_many_bf16_r##R(const float* x, int T, int K, const u16* w0, const float* b0,  \
                                                            float* y0, int n0, const u16* w1, const float* b1, float* y1, \
                                                            int n1, const u16* w2, const float* b2, float* y2, int n2) {  \
    const int t0 = (n0 + 16 * R - 1) / (16 * R), t1 = (n1 + 16 * R - 1) / (16 * R);                                    \
    const int b = blockIdx.x;                                                                                           \
    if (b < t0) gemv_mma_bf16<R>(w0, x, b0, y0, T, n0, K, b);                                                           \
    else if (b < t0 + t1) gemv_mma_bf16<R>(w1, x, b1, y1, T, n1, K, b - t0);                                            \
    else gemv_mma_bf16<R>(w2, x, b2, y2, T, n2, K, b - t0 - t1);                                                        \
  }

// Two blocks of 8 warps per SM at one m-tile (ptxas fits it in 128 registers without spilling).
// Two m-tiles bounded the same way spill (sm_90 40 bytes, sm_87 92), so they keep ptxas' own choice.
MMA_KERNELS(1, __launch_bounds__(MMA_THREADS, 2))
MMA_KERNELS(2, __launch_bounds__(MMA_THREADS))
