// y[T, N] = x[T, K] · W[N, K]ᵀ (+ bias), x and y float32, W in its storage type (bf16, f16, f32).
// Few rows (decode, ≤ GEMV_MAX_T tokens): W streamed once with 16-byte loads, each weight element
// serving every token (split-K by default). Many rows (prefill): a shared-memory tiled kernel, float32 FMA.
#include "common.cuh"
#include "gemv-core.cuh"

#define GEMV_MAX_T 8
#define GEMV_WARPS 8

// A warp per row (R = 1; R = 2 measured no faster on the H100): the prototype's kernel, kept to
// compare against split-K (CudaBackend.gemvKernel = 'row').
template <class W, int R>
__device__ __forceinline__ void gemv_vec(const typename W::T* __restrict__ w, const float* __restrict__ x,
                                         const float* __restrict__ bias, float* __restrict__ y, int T, int N, int K) {
  const int lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5)) * R;
  if (row0 >= N) return;
  float acc[R][GEMV_MAX_T];
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int t = 0; t < GEMV_MAX_T; t++) acc[r][t] = 0.f;
#pragma unroll 2
  for (int k = lane * W::V; k < K; k += 32 * W::V) {
    float wf[R][W::V];
#pragma unroll
    for (int r = 0; r < R; r++) {
      // A row past N (odd N, R = 2) re-reads the last row; its result is not stored.
      const int row = min(row0 + r, N - 1);
      W::vec(w + (u64)row * K + k, wf[r]);
    }
#pragma unroll
    for (int t = 0; t < GEMV_MAX_T; t++) {
      if (t < T) {
        const float4* xp = reinterpret_cast<const float4*>(x + (u64)t * K + k);
#pragma unroll
        for (int j = 0; j < W::V / 4; j++) {
          const float4 xv = xp[j];
#pragma unroll
          for (int r = 0; r < R; r++)
            acc[r][t] += wf[r][4 * j] * xv.x + wf[r][4 * j + 1] * xv.y + wf[r][4 * j + 2] * xv.z + wf[r][4 * j + 3] * xv.w;
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; r++) {
    const int row = row0 + r;
    const float b = bias && row < N ? bias[row] : 0.f;
#pragma unroll
    for (int t = 0; t < GEMV_MAX_T; t++) {
      if (t < T) {
        const float s = warp_sum(acc[r][t]);
        if (lane == 0 && row < N) y[(u64)t * N + row] = s + b;
      }
    }
  }
}

// Split-K over a block: 8 warps share SK_ROWS rows, each warp taking one contiguous slice of K, so
// every x value loaded serves SK_ROWS rows (x traffic per weight byte ÷ SK_ROWS) while a matrix of
// N rows still gives N / SK_ROWS blocks. Partial sums meet in shared memory in a fixed order. The
// loop is gemv-core.cuh's, shared with the fused decode kernels (linear-fused.cu) so they match it
// bitwise.
#define SK_ROWS 4
template <class W>
__device__ __forceinline__ void gemv_splitk(const typename W::T* __restrict__ w, const float* __restrict__ x,
                                            const float* __restrict__ bias, float* __restrict__ y, int T, int N, int K) {
  __shared__ float part[SK_WARPS][SK_ROWS * GEMV_MAX_T];
  const int row0 = blockIdx.x * SK_ROWS;
  const typename W::T* wr[SK_ROWS];
#pragma unroll
  for (int r = 0; r < SK_ROWS; r++) wr[r] = w + (u64)min(row0 + r, N - 1) * K;  // rows past N re-read the last
  SplitK<W, SK_ROWS, 1, GEMV_MAX_T, LOAD_CACHED> core;
  core.begin(K);
  core.run(wr, x, T, K);
  core.to_shared(part, T);
  __syncthreads();
  const int i = threadIdx.x;
  if (i < SK_ROWS * GEMV_MAX_T) {
    const int r = i / GEMV_MAX_T, t = i % GEMV_MAX_T, row = row0 + r;
    if (t < T && row < N) y[(u64)t * N + row] = sum_warps(part, i) + (bias ? bias[row] : 0.f);
  }
}

// Any K (no alignment needed): one element per lane per step.
template <class W>
__device__ __forceinline__ void gemv_scalar(const typename W::T* __restrict__ w, const float* __restrict__ x,
                                            const float* __restrict__ bias, float* __restrict__ y, int T, int N, int K) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
  if (row >= N) return;
  const typename W::T* wr = w + (u64)row * K;
  float acc[GEMV_MAX_T];
#pragma unroll
  for (int t = 0; t < GEMV_MAX_T; t++) acc[t] = 0.f;
  for (int k = lane; k < K; k += 32) {
    const float wv = W::one(wr + k);
#pragma unroll
    for (int t = 0; t < GEMV_MAX_T; t++)
      if (t < T) acc[t] += wv * x[(u64)t * K + k];
  }
  const float b = bias ? bias[row] : 0.f;
#pragma unroll
  for (int t = 0; t < GEMV_MAX_T; t++) {
    if (t < T) {
      const float s = warp_sum(acc[t]);
      if (lane == 0) y[(u64)t * N + row] = s + b;
    }
  }
}

#define TILE_M 64
#define TILE_N 64
#define TILE_K 16

// 256 threads; each computes a 4×4 block of outputs. Tiles are stored k-major in shared memory.
template <class W>
__device__ __forceinline__ void gemm_tiled(const typename W::T* __restrict__ w, const float* __restrict__ x,
                                           const float* __restrict__ bias, float* __restrict__ y, int T, int N, int K) {
  __shared__ __align__(16) float xs[TILE_K][TILE_M + 4];
  __shared__ __align__(16) float ws[TILE_K][TILE_N + 4];
  const int tid = threadIdx.x;
  const int tx = tid & 15, ty = tid >> 4;
  const int m0 = blockIdx.y * TILE_M, n0 = blockIdx.x * TILE_N;
  const int lr = tid >> 2, lk = (tid & 3) * 4;  // the row and first k this thread loads
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
  for (int k0 = 0; k0 < K; k0 += TILE_K) {
    const int gm = m0 + lr, gn = n0 + lr;
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int gk = k0 + lk + i;
      xs[lk + i][lr] = (gm < T && gk < K) ? x[(u64)gm * K + gk] : 0.f;
      ws[lk + i][lr] = (gn < N && gk < K) ? W::one(w + (u64)gn * K + gk) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < TILE_K; kk++) {
      const float4 a = *reinterpret_cast<const float4*>(&xs[kk][ty * 4]);
      const float4 b = *reinterpret_cast<const float4*>(&ws[kk][tx * 4]);
      const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int m = m0 + ty * 4 + i;
    if (m >= T) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int n = n0 + tx * 4 + j;
      if (n < N) y[(u64)m * N + n] = acc[i][j] + (bias ? bias[n] : 0.f);
    }
  }
}

#define LINEAR_KERNELS(SUFFIX, W)                                                                           \
  extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_vec_##SUFFIX(                          \
      const W::T* w, const float* x, const float* bias, float* y, int T, int N, int K) {                    \
    gemv_vec<W, 1>(w, x, bias, y, T, N, K);                                                                 \
  }                                                                                                         \
  extern "C" __global__ void __launch_bounds__(SK_WARPS * 32) gemv_splitk_##SUFFIX(                        \
      const W::T* w, const float* x, const float* bias, float* y, int T, int N, int K) {                    \
    gemv_splitk<W>(w, x, bias, y, T, N, K);                                                                 \
  }                                                                                                         \
  extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_scalar_##SUFFIX(                       \
      const W::T* w, const float* x, const float* bias, float* y, int T, int N, int K) {                    \
    gemv_scalar<W>(w, x, bias, y, T, N, K);                                                                 \
  }                                                                                                         \
  extern "C" __global__ void __launch_bounds__(256) gemm_tiled_##SUFFIX(                                    \
      const W::T* w, const float* x, const float* bias, float* y, int T, int N, int K) {                    \
    gemm_tiled<W>(w, x, bias, y, T, N, K);                                                                  \
  }
LINEAR_KERNELS(bf16, WBf16)
LINEAR_KERNELS(f16, WF16)
LINEAR_KERNELS(f32, WF32)
