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

// silu(g) · u as every SiLU·mul kernel writes it (silu_mul, the fused gate/up GEMVs, the prefill
// MLP's middle): one expression, so fused and separate paths give the same bits.
__device__ __forceinline__ float silu_times(float g, float u) { return (g / (1.f + expf(-g))) * u; }

__device__ __forceinline__ u16 f32_to_bf16(float x) {
  // Round to nearest even, as torch does (the inputs here are finite).
  u32 u = __float_as_uint(x);
  return (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// KV cache element: float32, bf16 in a module compiled with KV_BF16, or FP8 E4M3 (scale 1) with
// KV_FP8 (the backend picks the module by the cache's dtype: cuda-backend.ts kvModule). bf16 stores
// round to nearest even (the PTX conversion, as the CPU backend's f32ToBf16 for every finite value);
// FP8 stores round to nearest even after clamping to ±448, NaN to 0x7F, in integer arithmetic on any
// GPU (the CPU's encodeE4m3, bit for bit; sm_87 has no FP8 conversion instruction), and loads widen
// exactly.
// Two E4M3 codes → the bf16 pair of their values, exactly (the decoders of the fp8 tensor-core GEMV
// and of the tensor-core decode attention from an fp8 cache). mag: each code's exponent and mantissa
// at bits 4..10 of its half (a bf16 that reads value · 2⁻¹²⁰, E4M3 subnormals on bf16 subnormals);
// sign: bits 15 and 31. One fma by ±2¹²⁰ (bf16 0x7b80) plus −0, whose result is exact, so its
// rounding never acts. The NaN code 0x7f would read as ±480 (callers never hold one).
__device__ __forceinline__ u32 e4m3_bf16x2(u32 mag, u32 sign) {
  u32 r;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(mag), "r"(sign | 0x7b807b80u), "r"(0x80008000u));
  return r;
}

#if defined(KV_FP8)
typedef unsigned char kv_t;
// The code's bits placed at float32's exponent/mantissa boundary read as 2^(E-127)·(1 + M/8), or for
// E = 0 as the float32 subnormal M·2^-129; one multiply by 2^120 makes both the E4M3 value (no branch,
// so no divergence across a warp's codes; float32 subnormals are kept: no --ftz). 0x7F is NaN.
__device__ __forceinline__ float e4m3_to_f32(u32 c) {
  const float v = __uint_as_float(((c & 0x80u) << 24) | ((c & 0x7fu) << 20)) * 0x1p120f;
  return (c & 0x7fu) == 0x7fu ? __int_as_float(0x7fc00000) : v;
}
__device__ __forceinline__ float kv_to_f32(kv_t x) { return e4m3_to_f32(x); }
__device__ __forceinline__ kv_t f32_to_kv(float x) {
  const u32 u = __float_as_uint(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7f;
  const u32 sign = (u >> 24) & 0x80u;
  const u32 m = __float_as_uint(fminf(__uint_as_float(u & 0x7fffffffu), 448.f));
  u32 code;
  if (m < (121u << 23)) code = __float2uint_rn(__uint_as_float(m) * 512.f);  // below 2^-6: units of 2^-9
  else code = (m - (120u << 23) + 0x7ffffu + ((m >> 20) & 1u)) >> 20;       // ties to even via the kept bit
  return (kv_t)(sign | code);
}
// x stored with the cache's scale: FP8 keeps e4m3(x / scale) (the calibrated k_scale / v_scale of a
// quantized checkpoint, 1 without them); the other types ignore it.
__device__ __forceinline__ kv_t f32_to_kv_scaled(float x, float scale) { return f32_to_kv(__fdiv_rn(x, scale)); }
#elif defined(KV_BF16)
typedef u16 kv_t;
__device__ __forceinline__ float kv_to_f32(kv_t x) { return bf16_to_f32(x); }
__device__ __forceinline__ kv_t f32_to_kv(float x) {
  u16 r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ kv_t f32_to_kv_scaled(float x, float) { return f32_to_kv(x); }
#else
typedef float kv_t;
__device__ __forceinline__ float kv_to_f32(kv_t x) { return x; }
__device__ __forceinline__ kv_t f32_to_kv(float x) { return x; }
__device__ __forceinline__ kv_t f32_to_kv_scaled(float x, float) { return f32_to_kv(x); }
#endif

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

// Rotate-half RoPE on one pair (x1 at dim i, x2 at dim i + half): (x1·c − x2·s, x2·c + x1·s), each a
// fused multiply-add of a rounded product, spelled out (no contraction left to the compiler) so every
// kernel that rotates — rope-kv.cu in memory, the prefill attention as it loads q — gives the same bits.
__device__ __forceinline__ void rope_rotate(float& x1, float& x2, float c, float s) {
  const float a = x1, b = x2;
  x1 = __fmaf_rn(a, c, -__fmul_rn(b, s));
  x2 = __fmaf_rn(b, c, __fmul_rn(a, s));
}

// The cos/sin row of token t: RoPE tables indexed by position (a RopeTable kept on the device, `index`
// the step's positions), or a step's own rows [T, half] (index null).
__device__ __forceinline__ int rope_row(const int* __restrict__ index, int t) { return index ? index[t] : t; }

// Two floats to a packed bf16 or f16 pair, `lo` at the lower address (the element of lower index),
// round to nearest even. (PTX puts its first source in the upper half.)
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ u32 pack_f16x2(float lo, float hi) {
  u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// The paged cache's slot of position p through a sequence's block table. A division by the block size
// costs ~20 integer instructions: where the size is a power of two (the usual 16) it is a shift
// (kv_block_shift gives -1 otherwise).
// (TACHYON_NVRTC_DEFINES=KV_SLOT_DIVIDE takes the division everywhere, to compare.)
__device__ __forceinline__ int kv_block_shift(int blockSize) {
#ifdef KV_SLOT_DIVIDE
  return -1;
#else
  return (blockSize & (blockSize - 1)) == 0 ? __ffs(blockSize) - 1 : -1;
#endif
}
// In two steps for kernels that load a position's table entry ahead of using it: the entry, then
// the slot in that block.
__device__ __forceinline__ int kv_table_entry(const int* table, int p, int blockSize, int shift) {
  return table[shift >= 0 ? p >> shift : p / blockSize];
}
__device__ __forceinline__ int kv_slot_in(int block, int p, int blockSize, int shift) {
  return shift >= 0 ? (block << shift) + (p & (blockSize - 1)) : block * blockSize + p % blockSize;
}
__device__ __forceinline__ int kv_slot(const int* table, int p, int blockSize, int shift) {
  return kv_slot_in(kv_table_entry(table, p, blockSize, shift), p, blockSize, shift);
}

// Max over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ __forceinline__ float block_max(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float m = partial[lane < warps ? lane : 0];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  return m;
}

// ---- per-token FP8 (E4M3) activations: quantize_rows_e4m3 (convert.cu) and the quantising norms
// (norm.cu) share these. scale = absmax / 448 (float32 epsilon for an all-zero row), code =
// e4m3(value · (1 / scale)), round to nearest even, saturating: a multiplication by the row's
// reciprocal, as vLLM's quantisers do, where an IEEE division costs ~8 instructions a value (the
// product differs from the quotient by at most an ulp of float32, which moves an e4m3 code only at
// a rounding boundary). TACHYON_NVRTC_DEFINES=E4M3_DIVIDE divides, to compare.
#define E4M3_MAX 448.f
// compressed-tensors' guard for an all-zero row (float32 epsilon), as quant/fp8.ts uses for weights.
#define FLOAT32_EPS 1.1920928955078125e-7f
// m raised to the largest magnitude of four values (a row's running absmax).
__device__ __forceinline__ float absmax4(float m, float a, float b, float c, float d) {
  return fmaxf(m, fmaxf(fmaxf(fabsf(a), fabsf(b)), fmaxf(fabsf(c), fabsf(d))));
}
__device__ __forceinline__ float e4m3_row_scale(float absmax) { return absmax > 0.f ? absmax / E4M3_MAX : FLOAT32_EPS; }
// Four values → four codes, the first in the low byte. The conversion exists from sm_89 on.
__device__ __forceinline__ u32 e4m3x4(float v0, float v1, float v2, float v3, float s) {
#if __CUDA_ARCH__ >= 890
  unsigned short lo, hi;
#ifdef E4M3_DIVIDE
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(lo) : "f"(v1 / s), "f"(v0 / s));
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(hi) : "f"(v3 / s), "f"(v2 / s));
#else
  const float r = __frcp_rn(s);
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(lo) : "f"(__fmul_rn(v1, r)), "f"(__fmul_rn(v0, r)));
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(hi) : "f"(__fmul_rn(v3, r)), "f"(__fmul_rn(v2, r)));
#endif
  return (u32)lo | ((u32)hi << 16);
#else
  __trap();
  return 0;
#endif
}

// ---- programmatic dependent launch (sm_90+; programmatic-launch.ts) ------------------------------
// pdl_trigger(): the kernel after this one may start its blocks once every block of this one has
// called it (or exited). The small latency-bound kernels of a decode step (norms, attention) call it
// first thing, so the GEMV after them loads its weights while they run.
__device__ __forceinline__ void pdl_trigger() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// pdl_wait(): wait until the kernels before this one have finished and their writes are visible. A
// kernel programmatic-launch.ts names calls it before reading activations or writing anything (it
// may load weights before); elsewhere it returns at once.
__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
// pdl_wait() once `loaded`, a value this thread loaded, has arrived. ptxas hoists a plain wait above
// loads that do not depend on it (seen in the SASS: the weight loads of a GEMV then only start once
// the wait returns, and nothing streams meanwhile); a branch on a loaded value keeps the loads before
// it. (The two sides differ so that neither the compiler nor ptxas merges them into one plain wait.)
__device__ __forceinline__ void pdl_wait_after(u32 loaded) {
#if __CUDA_ARCH__ >= 900
  if (loaded != 0x7fc00001u) asm volatile("griddepcontrol.wait;" ::: "memory");
  else asm volatile("nanosleep.u32 1;\n\tgriddepcontrol.wait;" ::: "memory");
#endif
}
