// Shared device helpers for tachyon's kernels: float conversions of the weight storage types and
// warp/block reductions. Header-free on purpose, so NVRTC needs no CUDA include directory.
#pragma once

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

// No <math.h> under NVRTC without include paths: spell -infinity by its bits.
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float bf16_to_f32(u16 b) { return __uint_as_float(((u32)b) << 16); }

__device__ __forceinline__ float f16_to_f32(u16 h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

__device__ __forceinline__ u16 f32_to_bf16(float x) {
  // Round to nearest even, as torch does (the inputs here are finite).
  u32 u = __float_as_uint(x);
  return (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Weight storage types: each loads one element, or 16 bytes at once (V elements), as float32.
struct WBf16 {
  typedef u16 T;
  static const int V = 8;
  static __device__ __forceinline__ float one(const T* p) { return bf16_to_f32(*p); }
  static __device__ __forceinline__ void vec(const T* p, float* out) {
    uint4 v = *reinterpret_cast<const uint4*>(p);
    u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
      out[2 * i] = __uint_as_float(w[i] << 16);
      out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
};

struct WF16 {
  typedef u16 T;
  static const int V = 8;
  static __device__ __forceinline__ float one(const T* p) { return f16_to_f32(*p); }
  static __device__ __forceinline__ void vec(const T* p, float* out) {
    uint4 v = *reinterpret_cast<const uint4*>(p);
    u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
      out[2 * i] = f16_to_f32((u16)(w[i] & 0xffffu));
      out[2 * i + 1] = f16_to_f32((u16)(w[i] >> 16));
    }
  }
};

struct WF32 {
  typedef float T;
  static const int V = 4;
  static __device__ __forceinline__ float one(const T* p) { return *p; }
  static __device__ __forceinline__ void vec(const T* p, float* out) {
    float4 v = *reinterpret_cast<const float4*>(p);
    out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
  }
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float s = lane < warps ? partial[lane] : 0.f;
  return warp_sum(s);
}

// ---- programmatic dependent launch (sm_90+) -----------------------------------------------------
// The driver launches every kernel with programmatic stream serialization on sm_90+ (driver.ts), so
// a kernel may start while the one before it in the stream is still running. Every kernel therefore
// calls pdl_wait() (or pdl_begin()) before it reads anything an earlier kernel wrote and before it
// writes anything, and before any return, so that its completion still implies its predecessor's
// (test/cuda-pdl-source.test.ts checks the first part). What may run before the wait: issuing L2
// prefetches of weights, which move no data a thread can see. pdl_trigger() lets the next kernel's
// blocks start as soon as every block of this one has started: they take free SM slots and prefetch
// their weights while this kernel finishes, instead of the GPU draining between kernels.
__device__ __forceinline__ void pdl_trigger() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
// The start of a kernel with nothing to prefetch.
__device__ __forceinline__ void pdl_begin() {
  pdl_trigger();
  pdl_wait();
}
// Ask L2 to fetch `bytes` (a multiple of 16, from a 16-byte aligned address) of weights that this
// block will read after its pdl_wait(). Only a hint: no thread sees the data, so it is safe before
// the wait. sm_80–87 have no bulk prefetch; there it does nothing.
__device__ __forceinline__ void prefetch_l2(const void* p, u32 bytes) {
#if __CUDA_ARCH__ >= 900
  if (bytes) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#endif
}

// L2 prefetch of bytes [b0, b1) of weight rows row0 .. row0 + rows - 1 (those below N; rows
// rowBytes apart), in 4 KB pieces spread over the block's threads. Unaligned rows are skipped (the
// kernels that take them are not the fast path).
#define PREFETCH_PIECE 4096u
__device__ __forceinline__ void prefetch_rows_l2(const void* w, u64 rowBytes, int row0, int rows, int N, u64 b0, u64 b1) {
#if __CUDA_ARCH__ >= 900
  int n = min(rows, N - row0);
  if (n <= 0 || b1 <= b0 || (((u64)w | rowBytes | b0 | b1) & 15)) return;
  const char* base = (const char*)w + (u64)row0 * rowBytes + b0;
  u64 span = b1 - b0;
  if (b0 == 0 && b1 == rowBytes) {  // whole rows: one contiguous range
    span *= n;
    n = 1;
  }
  const u32 pieces = (u32)((span + PREFETCH_PIECE - 1) / PREFETCH_PIECE);
  for (u32 i = threadIdx.x; i < n * pieces; i += blockDim.x) {
    const u32 r = i / pieces, p = i % pieces;
    const u64 off = (u64)p * PREFETCH_PIECE;
    prefetch_l2(base + r * rowBytes + off, (u32)min((u64)PREFETCH_PIECE, span - off));
  }
#endif
}

// The start of a GEMV block: let the next kernel launch, prefetch this block's weight rows (whole,
// or bytes [b0, b1) of each), then wait for the kernels before it. While the block waits for the
// previous kernel (a norm, attention, another GEMV) its weights are already streaming into L2.
__device__ __forceinline__ void pdl_wait_after_prefetch(const void* w, u64 rowBytes, int row0, int rows, int N, u64 b0, u64 b1) {
  pdl_trigger();
  prefetch_rows_l2(w, rowBytes, row0, rows, N, b0, b1);
  pdl_wait();
}
__device__ __forceinline__ void pdl_wait_after_prefetch(const void* w, u64 rowBytes, int row0, int rows, int N) {
  pdl_wait_after_prefetch(w, rowBytes, row0, rows, N, 0, rowBytes);
}
// The same for the same rows of two matrices (gate and up).
__device__ __forceinline__ void pdl_wait_after_prefetch_pair(const void* wa, const void* wb, u64 rowBytes, int row0, int rows, int N) {
  pdl_trigger();
  prefetch_rows_l2(wa, rowBytes, row0, rows, N, 0, rowBytes);
  prefetch_rows_l2(wb, rowBytes, row0, rows, N, 0, rowBytes);
  pdl_wait();
}
