// The split-K GEMV core for decode (≤ 8 tokens), shared by linear.cu's gemv_splitk and the fused
// kernels of linear-fused.cu, so that a fused launch gives bitwise the results of separate linears.
//
// A block of SK_WARPS warps computes RW weight rows. Each warp takes one contiguous slice of K's
// 16-byte vectors (the same slices whatever RW is), its lanes striding through the slice 32 vectors
// apart; partial sums meet in shared memory and are added in warp order. So the summation order of
// an output (row, token) depends only on K: not on how many rows a block holds (RW), how many loads
// a lane keeps in flight (U), how many tokens a kernel was compiled for (TMAX) or how rows are
// spread over blocks. Those are the knobs the variants in linear-fused.cu turn.
#pragma once
#include "common.cuh"

#ifndef SK_WARPS
#define SK_WARPS 8
#endif
// The most tokens a GEMV serves; more go to the tiled kernel.
#ifndef GEMV_MAX_T
#define GEMV_MAX_T 8
#endif

// How weight vectors are loaded: through L1 (what gemv_splitk has always done) or streamed past it
// (each weight byte is read once per step, so caching it only evicts x).
#define LOAD_CACHED 0
#define LOAD_STREAM 1

template <int LOAD>
__device__ __forceinline__ uint4 load_w16(const void* p);
template <>
__device__ __forceinline__ uint4 load_w16<LOAD_CACHED>(const void* p) {
  uint4 v;
  asm("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
template <>
__device__ __forceinline__ uint4 load_w16<LOAD_STREAM>(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

// 16 loaded bytes as W::V float32 values (exact for every storage type).
__device__ __forceinline__ void to_f32(WBf16, const uint4& v, float* out) {
  const u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    out[2 * i] = __uint_as_float(w[i] << 16);
    out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void to_f32(WF16, const uint4& v, float* out) {
  const u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    out[2 * i] = f16_to_f32((u16)(w[i] & 0xffffu));
    out[2 * i + 1] = f16_to_f32((u16)(w[i] >> 16));
  }
}
__device__ __forceinline__ void to_f32(WF32, const uint4& v, float* out) {
  out[0] = __uint_as_float(v.x);
  out[1] = __uint_as_float(v.y);
  out[2] = __uint_as_float(v.z);
  out[3] = __uint_as_float(v.w);
}

// acc + (w·x over 4 elements), spelled out instruction by instruction: this is how nvcc 13 compiled
// gemv_splitk's `acc += w0*x0 + w1*x1 + w2*x2 + w3*x3` (the second product rounded alone, the
// others fused in turn, then one add), fixed here so no kernel's inlining or unrolling can contract
// it differently and break the bitwise match between kernels.
__device__ __forceinline__ float dot4_add(float acc, const float* w, const float4& x) {
  float p;
  asm("mul.rn.f32 %0, %1, %2;" : "=f"(p) : "f"(w[1]), "f"(x.y));
  asm("fma.rn.f32 %0, %1, %2, %0;" : "+f"(p) : "f"(w[0]), "f"(x.x));
  asm("fma.rn.f32 %0, %1, %2, %0;" : "+f"(p) : "f"(w[2]), "f"(x.z));
  asm("fma.rn.f32 %0, %1, %2, %0;" : "+f"(p) : "f"(w[3]), "f"(x.w));
  float s;
  asm("add.rn.f32 %0, %1, %2;" : "=f"(s) : "f"(acc), "f"(p));
  return s;
}

// One block's share of the work: RW rows × up to TMAX tokens. A lane keeps U vectors of each row in
// flight: it issues U·RW independent 16-byte loads, then uses them in its own order.
template <class W, int RW, int U, int TMAX, int LOAD>
struct SplitK {
  typedef typename W::T T;
  static const int ROWS = RW, LOADS = U;
  float acc[RW][TMAX];
  uint4 raw[U][RW];
  int v0, v1;  // this warp's slice [v0, v1) of the K / W::V vectors of a row
  int phases;  // rounds of U vectors a lane needs for its slice (the same for every warp)

  __device__ __forceinline__ void begin(int K) {
    const int nvec = K / W::V;
    const int per = (nvec + SK_WARPS - 1) / SK_WARPS;
    v0 = (threadIdx.x >> 5) * per;
    v1 = min(nvec, v0 + per);
    phases = (per + 32 * U - 1) / (32 * U);
    zero();
  }
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int r = 0; r < RW; r++)
#pragma unroll
      for (int t = 0; t < TMAX; t++) acc[r][t] = 0.f;
  }
  /** The first vector this lane reads in round `phase`. */
  __device__ __forceinline__ int first(int phase) const { return v0 + (threadIdx.x & 31) + phase * 32 * U; }

  /** Issue round `phase`'s loads of rows `wr` into `dst` (vectors past the slice are skipped). */
  __device__ __forceinline__ void load(uint4 (&dst)[U][RW], const T* const (&wr)[RW], int phase) const {
    const int v = first(phase);
#pragma unroll
    for (int u = 0; u < U; u++)
      if (v + 32 * u < v1)
#pragma unroll
        for (int r = 0; r < RW; r++) dst[u][r] = load_w16<LOAD>(wr[r] + (u64)(v + 32 * u) * W::V);
  }

  /** Add round `phase`'s products (weights in `src`) to acc, vector after vector in slice order. */
  __device__ __forceinline__ void accumulate(const uint4 (&src)[U][RW], const float* __restrict__ x, int T, int K, int phase) {
    const int v = first(phase);
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int k = (v + 32 * u) * W::V;
      if (v + 32 * u < v1) {
        float wf[RW][W::V];
#pragma unroll
        for (int r = 0; r < RW; r++) to_f32(W(), src[u][r], wf[r]);
#pragma unroll
        for (int t = 0; t < TMAX; t++) {
          if (t < T) {
            const float4* xp = reinterpret_cast<const float4*>(x + (u64)t * K + k);
#pragma unroll
            for (int j = 0; j < W::V / 4; j++) {
              const float4 xv = xp[j];
#pragma unroll
              for (int r = 0; r < RW; r++) acc[r][t] = dot4_add(acc[r][t], &wf[r][4 * j], xv);
            }
          }
        }
      }
    }
  }

  /** Every round for rows `wr`: loads, then products, round after round. */
  __device__ __forceinline__ void run(const T* const (&wr)[RW], const float* __restrict__ x, int T, int K) {
    for (int p = 0; p < phases; p++) {
      load(raw, wr, p);
      accumulate(raw, x, T, K, p);
    }
  }

  /** Each warp's sums into part[warp][r · TMAX + t]; the caller synchronises before reading them. */
  __device__ __forceinline__ void to_shared(float (*part)[RW * TMAX], int T) const {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int r = 0; r < RW; r++)
#pragma unroll
      for (int t = 0; t < TMAX; t++) {
        if (t < T) {
          const float s = warp_sum(acc[r][t]);
          if (lane == 0) part[warp][r * TMAX + t] = s;
        }
      }
  }
};

// The full dot product of entry i of the partials: the warps' sums in warp order.
template <int N>
__device__ __forceinline__ float sum_warps(const float (*part)[N], int i) {
  float s = 0.f;
#pragma unroll
  for (int q = 0; q < SK_WARPS; q++) s += part[q][i];
  return s;
}
