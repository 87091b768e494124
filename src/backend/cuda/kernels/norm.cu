// RMSNorm over rows, the fused residual-add + RMSNorm of pre-norm blocks, and (by calling rms_norm
// with rows of headDim, in place) the per-head q/k norm. In prefill the row kernels may also write
// their output in the form the GEMMs after them read (write_normed_row).
//
// Decode normalises 1–8 rows of 4096–8192 floats: such a launch is all latency, so a row is read
// once with 16-byte loads into registers (V float4s per thread, every load issued before any use),
// reduced once (warp shuffles, one shared-memory step) and written from registers. The host picks
// the threads and V from the row length and the step's kind alone (prefill steps: smaller blocks,
// cuda-backend.ts prefillNormKernel), so a row's summation order never depends on how many rows
// share the launch. Rows that fit a warp (head norms) take a warp each, 8 rows a block.
// Rows whose length is not a multiple of 4, or longer than 1024 threads × 4 float4s, take the
// scalar kernels at the end. The row kernels may start while the kernel before them finishes and let
// the kernel after them start early (pdl_wait, pdl_trigger; programmatic-launch.ts): that is the GEMV
// reading their output, which loads its weights meanwhile.
#include "common.cuh"

// 1 / sqrt(mean + eps), the expression every kernel here shares.
__device__ __forceinline__ float rms_inv(float ss, int cols, float eps) { return 1.f / sqrtf(ss / (float)cols + eps); }

__device__ __forceinline__ float4 norm4(float4 x, float inv, float4 w) {
  return make_float4(__fmul_rn(x.x, inv) * w.x, __fmul_rn(x.y, inv) * w.y, __fmul_rn(x.z, inv) * w.z, __fmul_rn(x.w, inv) * w.w);
}

__device__ __forceinline__ float sq4(float4 v, float ss) {
  ss = fmaf(v.x, v.x, ss);
  ss = fmaf(v.y, v.y, ss);
  ss = fmaf(v.z, v.z, ss);
  return fmaf(v.w, v.w, ss);
}

// What a row kernel writes beside its float32 output, for the prefill GEMMs that read it (the
// norm's output is their input): nothing (NORM_F32), the row quantised per token to FP8 (E4M3 codes
// four a float4, scale absmax / 448 to scales[row]: what quantize_rows_e4m3 gives from the row), or
// the row rounded to bf16 / f16 (what f32_to_bf16 / f32_to_f16 give). Saves those kernels' read of
// the row and their launch. With a side output, `out` may be null: only the GEMMs read the norm's
// result, and its float32 rows are written later if anything asks (CudaBackend.deferNormRows).
#define NORM_F32 0
#define NORM_E4M3 1
#define NORM_BF16 2
#define NORM_F16 3
template <int V, int SIDE>
__device__ __forceinline__ void write_normed_row(const float4 (&y)[V], float4* dst, int n4, void* __restrict__ side, float* __restrict__ scales,
                                                 u64 row) {
  float m = 0.f;
#pragma unroll
  for (int j = 0; j < V; j++) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < n4) {
      if (dst) dst[i] = y[j];
      if (SIDE == NORM_E4M3) m = absmax4(m, y[j].x, y[j].y, y[j].z, y[j].w);
      if (SIDE == NORM_BF16) reinterpret_cast<uint2*>(side)[row * n4 + i] = uint2{pack_bf16x2(y[j].x, y[j].y), pack_bf16x2(y[j].z, y[j].w)};
      if (SIDE == NORM_F16) reinterpret_cast<uint2*>(side)[row * n4 + i] = uint2{pack_f16x2(y[j].x, y[j].y), pack_f16x2(y[j].z, y[j].w)};
    }
  }
  if (SIDE != NORM_E4M3) return;
  const float s = e4m3_row_scale(block_max(m));
  if (threadIdx.x == 0) scales[row] = s;
  u32* codes = reinterpret_cast<u32*>(side) + row * n4;
#pragma unroll
  for (int j = 0; j < V; j++) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < n4) codes[i] = e4m3x4(y[j].x, y[j].y, y[j].z, y[j].w, s);
  }
}

// A row's values v loaded (and g, the weights): reduce, normalise, write (write_normed_row). Shared by
// the row kernels and the row-walking ones, so a row gets the same bits from either.
template <int V, int SIDE>
__device__ __forceinline__ void norm_row(float4 (&v)[V], const float4 (&g)[V], int cols, float eps, float4* dst, int n4, void* __restrict__ side,
                                         float* __restrict__ scales, u64 row) {
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < V; j++) ss = sq4(v[j], ss);
  const float inv = rms_inv(block_sum(ss), cols, eps);
#pragma unroll
  for (int j = 0; j < V; j++) v[j] = norm4(v[j], inv, g[j]);
  write_normed_row<V, SIDE>(v, dst, n4, side, scales, row);
}

// The add kernels' row: v = residual + x; the residual written back (r4) as it is summed, then as norm_row.
template <int V, int SIDE>
__device__ __forceinline__ void add_norm_row(float4 (&v)[V], const float4 (&g)[V], float4* __restrict__ r4, int cols, float eps, float4* dst, int n4,
                                             void* __restrict__ side, float* __restrict__ scales, u64 row) {
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < V; j++) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < n4) r4[i] = v[j];
    ss = sq4(v[j], ss);
  }
  const float inv = rms_inv(block_sum(ss), cols, eps);
#pragma unroll
  for (int j = 0; j < V; j++) v[j] = norm4(v[j], inv, g[j]);
  write_normed_row<V, SIDE>(v, dst, n4, side, scales, row);
}

// A block per row; thread t holds float4s t, t + blockDim.x, … (V of them, those below n4 = cols/4).
// src and dst may alias (head norm in place): every value is read before the reduction's barrier.
template <int V, int SIDE = NORM_F32>
__device__ __forceinline__ void rms_norm_block(const float* x, const float* __restrict__ w, float* out, int cols, float eps,
                                               void* __restrict__ side = nullptr, float* __restrict__ scales = nullptr) {
  const int n4 = cols >> 2;
  const float4* src = reinterpret_cast<const float4*>(x + (u64)blockIdx.x * cols);
  float4* dst = out ? reinterpret_cast<float4*>(out + (u64)blockIdx.x * cols) : nullptr;
  const float4* w4 = reinterpret_cast<const float4*>(w);
  float4 v[V], g[V];
#pragma unroll
  for (int j = 0; j < V; j++) {
    const int i = threadIdx.x + j * blockDim.x;
    v[j] = i < n4 ? src[i] : make_float4(0.f, 0.f, 0.f, 0.f);
    g[j] = i < n4 ? w4[i] : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  norm_row<V, SIDE>(v, g, cols, eps, dst, n4, side, scales, blockIdx.x);
}

// residual += x, then out = rmsNorm(residual): one read of x and residual, one write of each output.
template <int V, int SIDE = NORM_F32>
__device__ __forceinline__ void add_rms_norm_block(const float* __restrict__ x, float* __restrict__ residual, const float* __restrict__ w,
                                                   float* __restrict__ out, int cols, float eps, void* __restrict__ side = nullptr,
                                                   float* __restrict__ scales = nullptr) {
  const int n4 = cols >> 2;
  const u64 row = (u64)blockIdx.x * cols;
  const float4* a4 = reinterpret_cast<const float4*>(x + row);
  float4* r4 = reinterpret_cast<float4*>(residual + row);
  float4* dst = out ? reinterpret_cast<float4*>(out + row) : nullptr;
  const float4* w4 = reinterpret_cast<const float4*>(w);
  float4 v[V], g[V];
#pragma unroll
  for (int j = 0; j < V; j++) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < n4) {
      const float4 a = a4[i], r = r4[i];
      v[j] = make_float4(r.x + a.x, r.y + a.y, r.z + a.z, r.w + a.w);
      g[j] = w4[i];
    } else {
      v[j] = g[j] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
  add_norm_row<V, SIDE>(v, g, r4, cols, eps, dst, n4, side, scales, blockIdx.x);
}

// The prefill norms with a side output: the row kernels' arithmetic, row for row (the same bits as
// rms_norm_block / add_rms_norm_block at the same block size, which make a deferred output's float32
// rows), but each block walks rows blockIdx.x, + gridDim.x, … (about as many blocks as fit the GPU at
// once) with the next row's loads in flight while it reduces and writes this one, and the weights
// loaded once. A block a row spent most of its short life waiting: one load's latency, then four
// barriers (the sum, the absmax), with only two rows an SM in flight (27 µs for 2048 rows of 4096 on
// an H100, ~1.6 TB/s). The host runs them with 256-thread blocks where a row fits (V = 4 at 4096
// columns; cuda-backend.ts prefillNormKernel): eight rows an SM, reductions over 8 warps. Rows of more
// than 2 float4s a thread (V > 2) would spill the prefetch at 1024 threads' 64 registers: those load
// each row as they reach it (at 256 threads the prefetch measured no faster).
template <int V>
__host__ __device__ constexpr bool norm_prefetch() { return V <= 2; }
template <int V>
__device__ __forceinline__ void load_row(const float4* __restrict__ src, int n4, float4 (&v)[V]) {
#pragma unroll
  for (int j = 0; j < V; j++) {
    const int i = threadIdx.x + j * blockDim.x;
    v[j] = i < n4 ? src[i] : make_float4(0.f, 0.f, 0.f, 0.f);
  }
}

template <int V, int SIDE>
__device__ __forceinline__ void rms_norm_rows(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ out, int rows,
                                              int cols, float eps, void* __restrict__ side, float* __restrict__ scales) {
  const int n4 = cols >> 2;
  constexpr bool PREFETCH = norm_prefetch<V>();
  float4 g[V], v[V], next[V];  // next: unused (and dropped by the compiler) without PREFETCH
  load_row<V>(reinterpret_cast<const float4*>(w), n4, g);
  int row = blockIdx.x;
  if (PREFETCH && row < rows) load_row<V>(reinterpret_cast<const float4*>(x + (u64)row * cols), n4, next);
  for (; row < rows; row += gridDim.x) {
    if (PREFETCH) {
#pragma unroll
      for (int j = 0; j < V; j++) v[j] = next[j];
      if (row + gridDim.x < rows) load_row<V>(reinterpret_cast<const float4*>(x + (u64)(row + gridDim.x) * cols), n4, next);
    } else {
      load_row<V>(reinterpret_cast<const float4*>(x + (u64)row * cols), n4, v);
    }
    norm_row<V, SIDE>(v, g, cols, eps, out ? reinterpret_cast<float4*>(out + (u64)row * cols) : nullptr, n4, side, scales, row);
  }
}

template <int V, int SIDE>
__device__ __forceinline__ void add_rms_norm_rows(const float* __restrict__ x, float* __restrict__ residual, const float* __restrict__ w,
                                                  float* __restrict__ out, int rows, int cols, float eps, void* __restrict__ side,
                                                  float* __restrict__ scales) {
  const int n4 = cols >> 2;
  constexpr bool PREFETCH = norm_prefetch<V>();
  float4 g[V], v[V], a[V], r[V];
  load_row<V>(reinterpret_cast<const float4*>(w), n4, g);
  int row = blockIdx.x;
  if (PREFETCH && row < rows) {
    load_row<V>(reinterpret_cast<const float4*>(x + (u64)row * cols), n4, a);
    load_row<V>(reinterpret_cast<const float4*>(residual + (u64)row * cols), n4, r);
  }
  for (; row < rows; row += gridDim.x) {
    if (!PREFETCH) {
      load_row<V>(reinterpret_cast<const float4*>(x + (u64)row * cols), n4, a);
      load_row<V>(reinterpret_cast<const float4*>(residual + (u64)row * cols), n4, r);
    }
#pragma unroll
    for (int j = 0; j < V; j++) v[j] = make_float4(r[j].x + a[j].x, r[j].y + a[j].y, r[j].z + a[j].z, r[j].w + a[j].w);
    if (PREFETCH && row + gridDim.x < rows) {
      load_row<V>(reinterpret_cast<const float4*>(x + (u64)(row + gridDim.x) * cols), n4, a);
      load_row<V>(reinterpret_cast<const float4*>(residual + (u64)(row + gridDim.x) * cols), n4, r);
    }
    add_norm_row<V, SIDE>(v, g, reinterpret_cast<float4*>(residual + (u64)row * cols), cols, eps,
                          out ? reinterpret_cast<float4*>(out + (u64)row * cols) : nullptr, n4, side, scales, row);
  }
}

// A warp per row (rows of at most 32·V float4s), NORM_WARP_ROWS rows a block.
#define NORM_WARP_ROWS 8
template <int V>
__device__ __forceinline__ void rms_norm_warp(const float* x, const float* __restrict__ w, float* out, int rows, int cols, float eps) {
  const int r = blockIdx.x * NORM_WARP_ROWS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (r >= rows) return;  // a whole warp leaves: warp_sum below only involves full warps
  const int n4 = cols >> 2;
  const float4* src = reinterpret_cast<const float4*>(x + (u64)r * cols);
  float4* dst = reinterpret_cast<float4*>(out + (u64)r * cols);
  const float4* w4 = reinterpret_cast<const float4*>(w);
  float4 v[V], g[V];
#pragma unroll
  for (int j = 0; j < V; j++) {
    const int i = lane + 32 * j;
    v[j] = i < n4 ? src[i] : make_float4(0.f, 0.f, 0.f, 0.f);
    g[j] = i < n4 ? w4[i] : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < V; j++) ss = sq4(v[j], ss);
  const float inv = rms_inv(warp_sum(ss), cols, eps);
#pragma unroll
  for (int j = 0; j < V; j++) {
    const int i = lane + 32 * j;
    if (i < n4) dst[i] = norm4(v[j], inv, g[j]);
  }
}

#define NORM_KERNELS(V)                                                                                              \
  extern "C" __global__ void __launch_bounds__(1024) rms_norm_b##V(const float* x, const float* __restrict__ w,      \
                                                                   float* out, int cols, float eps) {               \
    pdl_trigger(); /* the GEMV after it may start loading its weights */                                             \
    pdl_wait();    /* x: written by the kernel before */                                                             \
    rms_norm_block<V>(x, w, out, cols, eps);                                                                         \
  }                                                                                                                  \
  extern "C" __global__ void __launch_bounds__(1024) add_rms_norm_b##V(                                              \
      const float* __restrict__ x, float* __restrict__ residual, const float* __restrict__ w, float* __restrict__ out, \
      int cols, float eps) {                                                                                         \
    pdl_trigger();                                                                                                   \
    pdl_wait();                                                                                                      \
    add_rms_norm_block<V>(x, residual, w, out, cols, eps);                                                           \
  }                                                                                                                  \
  extern "C" __global__ void __launch_bounds__(NORM_WARP_ROWS * 32) rms_norm_w##V(                                   \
      const float* x, const float* __restrict__ w, float* out, int rows, int cols, float eps) {                      \
    rms_norm_warp<V>(x, w, out, rows, cols, eps);                                                                    \
  }                                                                                                                  \
  NORM_SIDE_KERNELS(V, e4m3, NORM_E4M3)                                                                               \
  NORM_SIDE_KERNELS(V, bf16, NORM_BF16)                                                                               \
  NORM_SIDE_KERNELS(V, f16, NORM_F16)
// The two row kernels also writing their output for the GEMMs after them (write_normed_row), over
// `rows` rows (rms_norm_rows): side is E4M3 codes (scales: a float each row; sm_89+) or bf16 / f16
// values (scales unused); out may be null (a deferred float32 output).
#define NORM_SIDE_KERNELS(V, NAME, SIDE)                                                                               \
  extern "C" __global__ void __launch_bounds__(1024) rms_norm_##NAME##_b##V(const float* x, const float* __restrict__ w, \
                                                                            float* out, int cols, float eps, void* side, \
                                                                            float* scales, int rows) {             \
    rms_norm_rows<V, SIDE>(x, w, out, rows, cols, eps, side, scales);                                               \
  }                                                                                                                  \
  extern "C" __global__ void __launch_bounds__(1024) add_rms_norm_##NAME##_b##V(                                     \
      const float* __restrict__ x, float* __restrict__ residual, const float* __restrict__ w, float* __restrict__ out, \
      int cols, float eps, void* side, float* scales, int rows) {                                                    \
    add_rms_norm_rows<V, SIDE>(x, residual, w, out, rows, cols, eps, side, scales);                                  \
  }
NORM_KERNELS(1)
NORM_KERNELS(2)
NORM_KERNELS(3)
NORM_KERNELS(4)

// Scalar kernels (one block per row) for rows the vector kernels do not take.
extern "C" __global__ void rms_norm(const float* x, const float* __restrict__ w, float* out, int cols, float eps) {
  const float* src = x + (u64)blockIdx.x * cols;
  float* dst = out + (u64)blockIdx.x * cols;
  float ss = 0.f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) ss = fmaf(src[i], src[i], ss);
  const float inv = rms_inv(block_sum(ss), cols, eps);
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
    ss = fmaf(v, v, ss);
  }
  const float inv = rms_inv(block_sum(ss), cols, eps);
  for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = __fmul_rn(r[i], inv) * w[i];
}
