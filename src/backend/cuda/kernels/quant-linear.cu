// Quantized weights on the GPU: fp8 (E4M3 codes, a float32 scale per row), int8 (w8a16, a scale per
// row), int4 (w4a16: group scales, optional zero points, act-order) and nvfp4 (E2M1 codes, an E4M3
// scale per 16 columns, a global scale). Here:
//   - qgemv_*: y = x · Wᵀ (+ bias) for 1..8 tokens, dequantising in registers with float32
//     accumulation; the packed weight is streamed once with 16-byte loads, like gemv_splitk.
//   - qgemv2many_* / qgemv2silu_*: the v2 GEMV over up to 3 matrices in one grid (q/k/v), and over
//     gate then up writing silu(g)·u; bitwise the separate v2 launches (and silu_mul).
//   - qgemv_exact_*: the same for any shape, one element per lane, from the exact decoders below
//     (K not a whole number of 16-byte loads, odd int4 groupings, fp8 weights holding NaN codes).
//   - dequant_*: the exact float32 values of src/quant's dequantize (weightToHost), or those rounded
//     to bf16 into a scratch matrix that prefill multiplies.
//   - repack_4bit, fp8_find_nan: load-time re-layout and checks (an act-order weight's x is put in
//     its sorted column order by elementwise.cu's gather_columns).
//   - random_*: fills for dummy weights made on the device.
// The device layouts are described in quantized-weights.ts (and docs/cuda.md).
#include "common.cuh"

typedef unsigned char u8;
typedef signed char s8;

#define QMAX_T 8
// Weight rows per block of the fast GEMVs: every x value loaded serves this many rows.
#define QROWS 4
// fp8/int8: 8 warps; int4/nvfp4: 4 warps (a 4096-column row is 128 16-byte loads, one per thread).
#define Q8_THREADS 256
#define Q4_THREADS 128
// 4-bit layouts: a tile of 256 columns is 8 loads of 16 bytes (see tiled_word).
#define TILE_COLS 256

// ---- bit tools ------------------------------------------------------------------------------------

// prmt.b32 in its generic mode: result byte n is byte (sel nibble n & 7) of {b, a} (a = bytes 0-3,
// b = bytes 4-7); a selector nibble with its top bit set gives the sign of that byte (0x00 or 0xff).
__device__ __forceinline__ u32 prmt(u32 a, u32 b, u32 sel) {
  u32 d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
}

// A 16-byte weight load that does not allocate in L1: weights are read once, and L1 is kept for x,
// which every block re-reads.
__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

__device__ __forceinline__ u32 word_of(const uint4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

// Byte k of `biased` as the float 2^23 + byte (the byte lands in the mantissa's low bits).
#define MAGIC_BYTE(biased, k) __uint_as_float(prmt((biased), 0x4b000000u, 0x7440u | (k)))
#define MAGIC 8388608.f  // 2^23

// float32 → bf16, round to nearest even; NaN stays NaN (a GPU NaN is 0x7fffffff, which the plain
// rounding in common.cuh would carry into -0).
__device__ __forceinline__ u16 to_bf16(float x) { return x != x ? (u16)0x7fc0 : f32_to_bf16(x); }

__device__ __forceinline__ u16 f32_to_f16(float x) {
  u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
  return h;
}

// ---- exact element decoders (src/quant's dequantize, bit for bit) ------------------------------------

// E4M3FN: the code's exponent and mantissa bits placed in a float32's (<< 20) read as value · 2^-120,
// subnormals included, and the power-of-two product is exact. 0x7f / 0xff is NaN (no infinities).
__device__ __forceinline__ float e4m3_value(u32 code) {
  const u32 em = code & 0x7fu;
  const float v = em == 0x7fu ? __uint_as_float(0x7fc00000u) : __uint_as_float(em << 20) * 0x1p120f;
  return (code & 0x80u) ? -v : v;
}

// E2M1: magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6; code 8 is -0.
__device__ __forceinline__ float e2m1_value(u32 code) {
  const u32 m = code & 7u;
  const u32 twice = m < 2u ? m : (2u + (m & 1u)) << ((m >> 1) - 1u);
  const float v = (float)twice * 0.5f;
  return (code & 8u) ? -v : v;
}

// Word index within a row of the tiled 4-bit layout holding natural word n (columns 8n..8n+7).
// A tile of 256 columns = 32 words = 8 loads of 16 bytes; load b of a tile holds the 16-column
// blocks b and b + 8 (words 2b, 2b+1 and 16+2b, 17+2b). So the 8 lanes of a quarter-warp, taking
// loads b = 0..7, read x for 128 consecutive columns at once: one L1 line per float4 load, where
// the plain layout (32 consecutive columns per lane) would touch a line per lane.
__device__ __forceinline__ int tiled_word(int n) {
  const int nn = n & 31;
  return (n & ~31) + 4 * ((nn >> 1) & 7) + 2 * (nn >> 4) + (nn & 1);
}

struct Fp8View {
  const u8* codes;
  const float* rowScale;
  int K;
  __device__ float value(int r, int j) const { return e4m3_value(codes[(u64)r * K + j]) * rowScale[r]; }
  __device__ int col(int j) const { return j; }
};

struct Int8View {
  const s8* codes;
  const float* scale;
  int K;
  __device__ float value(int r, int j) const { return (float)codes[(u64)r * K + j] * scale[r]; }
  __device__ int col(int j) const { return j; }
};

// int4 in either layout: canonical (src/quant/int4.ts: rows of ceil(K/8) words, group by gIdx or
// j / groupSize) or tiled (rows of Kp/8 words, columns sorted by group when perm is set: device
// column j is original column perm[j], in group j / groupSize).
struct Int4View {
  const u32* packed;
  const float* scales;
  const u8* zeros;
  const int* gIdx;
  const int* perm;
  int wordsPerRow, G, groupSize, tiled;
  __device__ float value(int r, int j) const {
    const int n = j >> 3;
    const u32 word = packed[(u64)r * wordsPerRow + (tiled ? tiled_word(n) : n)];
    const int u = (int)((word >> (4 * (j & 7))) & 15u);
    const int g = r * G + (gIdx ? gIdx[j] : j / groupSize);
    const int z = zeros ? (int)zeros[g] : 8;
    return (float)(u - z) * scales[g];
  }
  __device__ int col(int j) const { return perm ? perm[j] : j; }
};

// nvfp4, tiled codes; mult[code] = float32(e4m3(code) · globalScale), made on the host as the CPU does.
struct Nvfp4View {
  const u32* packed;
  const u8* blockScales;
  const float* mult;
  int wordsPerRow, K;
  __device__ float value(int r, int j) const {
    const u32 word = packed[(u64)r * wordsPerRow + tiled_word(j >> 3)];
    const float m = mult[blockScales[(u64)r * (K >> 4) + (j >> 4)]];
    return e2m1_value((word >> (4 * (j & 7))) & 15u) * m;
  }
  __device__ int col(int j) const { return j; }
};

// ---- fast decoders: one 32-bit word of codes at a time ------------------------------------------------

// 4 E4M3 codes → values (as e4m3_value; weights holding a NaN code take the exact path). On sm_89+
// the hardware converts two codes to two f16 in one instruction and each f16 widens to f32 in one
// more (both exact), 1.5 instructions a value; elsewhere the bits are placed in a float32's (4).
// (TACHYON_NVRTC_DEFINES=FP8_DECODE_BITS takes the latter everywhere, to compare.)
__device__ __forceinline__ void fp8x4(u32 w, float* out) {
#if __CUDA_ARCH__ >= 890 && !defined(FP8_DECODE_BITS)
  u32 lo, hi;  // codes 0, 1 and 2, 3 as f16 pairs (code 2k in the low half)
  asm("{\n\t.reg .b16 l, h;\n\tmov.b32 {l, h}, %2;\n\tcvt.rn.f16x2.e4m3x2 %0, l;\n\tcvt.rn.f16x2.e4m3x2 %1, h;\n\t}"
      : "=r"(lo), "=r"(hi) : "r"(w));
  out[0] = f16_to_f32((u16)(lo & 0xffffu));
  out[1] = f16_to_f32((u16)(lo >> 16));
  out[2] = f16_to_f32((u16)(hi & 0xffffu));
  out[3] = f16_to_f32((u16)(hi >> 16));
#else
#pragma unroll
  for (int k = 0; k < 4; k++) {
    const int top = (int)prmt(w, 0u, 0x0444u | (k << 12));  // byte k in the top byte, zeros below
    out[k] = __uint_as_float((u32)(top >> 4) & 0x87f00000u) * 0x1p120f;
  }
#endif
}

// 4 int8 codes → values: each byte + 128 (two's complement → offset binary) in a float's mantissa.
__device__ __forceinline__ void int8x4(u32 w, float* out) {
  const u32 biased = w ^ 0x80808080u;
#pragma unroll
  for (int k = 0; k < 4; k++) out[k] = MAGIC_BYTE(biased, k) - (MAGIC + 128.f);
}

// Half of an int4 word (elements 4q..4q+3) → u − zero, where zmagic = 2^23 + zero.
// lo = word & 0x0f0f0f0f holds the even elements, hi = (word >> 4) & 0x0f0f0f0f the odd ones.
__device__ __forceinline__ void int4x4(u32 lo, u32 hi, int q, float zmagic, float* out) {
  out[0] = MAGIC_BYTE(lo, 2 * q) - zmagic;
  out[1] = MAGIC_BYTE(hi, 2 * q) - zmagic;
  out[2] = MAGIC_BYTE(lo, 2 * q + 1) - zmagic;
  out[3] = MAGIC_BYTE(hi, 2 * q + 1) - zmagic;
}

// An nvfp4 word's 8 E2M1 codes as bytes 64 + 2·value (52..76), 4 per register (elements 0..3 in
// lo, 4..7 in hi): prmt looks each code up in a table of the positive codes (a negative code's set
// top selector bit gives 0x00) and, with the sign bit flipped, in a table of the negative ones.
__device__ __forceinline__ void e2m1_bytes(u32 w, u32& lo, u32& hi) {
  const u32 P0 = 0x43424140u, P1 = 0x4c484644u;  // 64 + {0, 1, 2, 3, 4, 6, 8, 12}
  const u32 N0 = 0x3d3e3f40u, N1 = 0x34383a3cu;  // 64 − {0, 1, 2, 3, 4, 6, 8, 12}
  const u32 f = w ^ 0x88888888u;
  lo = prmt(P0, P1, w) | prmt(N0, N1, f);
  hi = prmt(P0, P1, w >> 16) | prmt(N0, N1, f >> 16);
}

// 4 of those bytes → 2·value.
__device__ __forceinline__ void e2m1x4_twice(u32 bytes, float* out) {
#pragma unroll
  for (int k = 0; k < 4; k++) out[k] = MAGIC_BYTE(bytes, k) - (MAGIC + 64.f);
}

// acc + d · x over 4 elements, in a fixed order (explicit fmaf: no contraction choices by the compiler,
// so a token's sum is the same whatever the number of tokens).
__device__ __forceinline__ float dot4(const float* d, const float4& x, float acc) {
  return fmaf(d[3], x.w, fmaf(d[2], x.z, fmaf(d[1], x.y, fmaf(d[0], x.x, acc))));
}

__device__ __forceinline__ float4 ld_x4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// The block's partial sums meet in shared memory in a fixed order; y = sum · rowScale (+ bias).
template <int NW>
__device__ __forceinline__ void finish(float (&acc)[QROWS][QMAX_T], const float* __restrict__ rowScale, const float* __restrict__ bias,
                                       float* __restrict__ y, int T, int N, int row0) {
  __shared__ float part[NW][QROWS * QMAX_T];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int r = 0; r < QROWS; r++)
#pragma unroll
    for (int t = 0; t < QMAX_T; t++) {
      if (t < T) {
        const float s = warp_sum(acc[r][t]);
        if (lane == 0) part[warp][r * QMAX_T + t] = s;
      }
    }
  __syncthreads();
  const int i = threadIdx.x;
  if (i < QROWS * QMAX_T) {
    const int r = i / QMAX_T, t = i % QMAX_T, row = row0 + r;
    if (t < T && row < N) {
      float s = 0.f;
#pragma unroll
      for (int q = 0; q < NW; q++) s += part[q][i];
      if (rowScale) s *= rowScale[row];
      y[(u64)t * N + row] = s + (bias ? bias[row] : 0.f);
    }
  }
}

// ---- fast GEMVs -----------------------------------------------------------------------------------

// fp8 / int8, row-major [N, K] codes with K a multiple of 16: each thread takes 16-byte loads
// (16 columns) of QROWS rows, strided over the block; the per-row scale multiplies the sum at the end.
template <bool FP8>
__device__ __forceinline__ void gemv_q8(const u8* __restrict__ w, const float* __restrict__ rowScale, const float* __restrict__ x,
                                        const float* __restrict__ bias, float* __restrict__ y, int T, int N, int K) {
  const int row0 = blockIdx.x * QROWS;
  const int loads = K >> 4;
  const uint4* wr[QROWS];
#pragma unroll
  for (int r = 0; r < QROWS; r++) wr[r] = reinterpret_cast<const uint4*>(w + (u64)min(row0 + r, N - 1) * K);  // rows past N re-read the last
  float acc[QROWS][QMAX_T];
#pragma unroll
  for (int r = 0; r < QROWS; r++)
#pragma unroll
    for (int t = 0; t < QMAX_T; t++) acc[r][t] = 0.f;
  for (int c = threadIdx.x; c < loads; c += Q8_THREADS) {
    uint4 raw[QROWS];
#pragma unroll
    for (int r = 0; r < QROWS; r++) raw[r] = ld_stream(wr[r] + c);
    const float* xc = x + c * 16;
#pragma unroll
    for (int q = 0; q < 4; q++) {
      float d[QROWS][4];
#pragma unroll
      for (int r = 0; r < QROWS; r++) {
        if (FP8) fp8x4(word_of(raw[r], q), d[r]);
        else int8x4(word_of(raw[r], q), d[r]);
      }
#pragma unroll
      for (int t = 0; t < QMAX_T; t++) {
        if (t >= T) break;  // one exit, not a test per absent token
        const float4 xv = ld_x4(xc + (u64)t * K + 4 * q);
#pragma unroll
        for (int r = 0; r < QROWS; r++) acc[r][t] = dot4(d[r], xv, acc[r][t]);
      }
    }
  }
  finish<Q8_THREADS / 32>(acc, rowScale, bias, y, T, N, row0);
}

// How the 4-bit GEMV scales a 16-column block: int4 by its group's scale (and zero point), nvfp4 by
// its E4M3 block scale times the global scale.
struct Int4Scales {
  const float* scales;
  const u8* zeros;
  int G, groupShift;
  // Multiplier of the block's sum, and 2^23 + zero point for the decoder.
  __device__ __forceinline__ void at(int row, int col, float& mul, float& zmagic) const {
    const int g = row * G + (col >> groupShift);
    mul = scales[g];
    zmagic = MAGIC + (zeros ? (float)zeros[g] : 8.f);
  }
  // A word's codes split once per word, then decoded 4 at a time (fewer live registers).
  __device__ __forceinline__ uint2 split(u32 word) const { return make_uint2(word & 0x0f0f0f0fu, (word >> 4) & 0x0f0f0f0fu); }
  __device__ __forceinline__ void decode4(uint2 s, int q, float zmagic, float* out) const { int4x4(s.x, s.y, q, zmagic, out); }
};

struct Nvfp4Scales {
  const u8* blockScales;
  const float* mult;  // shared memory copy of the 256 multipliers
  int blocksPerRow;
  __device__ __forceinline__ void at(int row, int col, float& mul, float&) const {
    mul = mult[blockScales[row * blocksPerRow + (col >> 4)]] * 0.5f;  // the decoder gives 2·value
  }
  __device__ __forceinline__ uint2 split(u32 word) const {
    uint2 s;
    e2m1_bytes(word, s.x, s.y);
    return s;
  }
  __device__ __forceinline__ void decode4(uint2 s, int q, float, float* out) const { e2m1x4_twice(q ? s.y : s.x, out); }
};

// int4 / nvfp4 in the tiled layout: rows of `loads` 16-byte loads (Kp/32, Kp = K rounded up to 256).
// Load c holds the 16-column blocks at columns (c/8)·256 + (c%8)·16 and 128 more; each block's
// sum (16 products per token and row) is scaled once. Blocks past K (padding) are skipped.
template <class S>
__device__ __forceinline__ void gemv_q4(const uint4* __restrict__ w, int loads, const S& sc, const float* __restrict__ x,
                                        const float* __restrict__ bias, float* __restrict__ y, int T, int N, int K) {
  const int row0 = blockIdx.x * QROWS;
  int rows[QROWS];
  const uint4* wr[QROWS];
#pragma unroll
  for (int r = 0; r < QROWS; r++) {
    rows[r] = min(row0 + r, N - 1);
    wr[r] = w + (u64)rows[r] * loads;
  }
  float acc[QROWS][QMAX_T];
#pragma unroll
  for (int r = 0; r < QROWS; r++)
#pragma unroll
    for (int t = 0; t < QMAX_T; t++) acc[r][t] = 0.f;
  for (int c = threadIdx.x; c < loads; c += Q4_THREADS) {
    uint4 raw[QROWS];
#pragma unroll
    for (int r = 0; r < QROWS; r++) raw[r] = ld_stream(wr[r] + c);
    const int col0 = (c >> 3) * TILE_COLS + (c & 7) * 16;
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int col = col0 + 128 * h;
      if (col >= K) break;
      float mul[QROWS], zm[QROWS];
#pragma unroll
      for (int r = 0; r < QROWS; r++) sc.at(rows[r], col, mul[r], zm[r]);
      float part[QROWS][QMAX_T];  // only tokens < T are used
#pragma unroll
      for (int t = 0; t < QMAX_T; t++) {
        if (t >= T) break;
#pragma unroll
        for (int r = 0; r < QROWS; r++) part[r][t] = 0.f;
      }
#pragma unroll
      for (int j = 0; j < 2; j++) {
        uint2 codes[QROWS];
#pragma unroll
        for (int r = 0; r < QROWS; r++) codes[r] = sc.split(word_of(raw[r], 2 * h + j));
#pragma unroll
        for (int q = 0; q < 2; q++) {
          float d[QROWS][4];
#pragma unroll
          for (int r = 0; r < QROWS; r++) sc.decode4(codes[r], q, zm[r], d[r]);
#pragma unroll
          for (int t = 0; t < QMAX_T; t++) {
            if (t >= T) break;
            const float4 xv = ld_x4(x + (u64)t * K + col + 8 * j + 4 * q);
#pragma unroll
            for (int r = 0; r < QROWS; r++) part[r][t] = dot4(d[r], xv, part[r][t]);
          }
        }
      }
#pragma unroll
      for (int t = 0; t < QMAX_T; t++) {
        if (t >= T) break;
#pragma unroll
        for (int r = 0; r < QROWS; r++) acc[r][t] = fmaf(part[r][t], mul[r], acc[r][t]);
      }
    }
  }
  finish<Q4_THREADS / 32>(acc, nullptr, bias, y, T, N, row0);
}

extern "C" __global__ void __launch_bounds__(Q8_THREADS) qgemv_fp8(const u8* w, const float* rowScale, const float* x, const float* bias,
                                                                    float* y, int T, int N, int K) {
  gemv_q8<true>(w, rowScale, x, bias, y, T, N, K);
}

extern "C" __global__ void __launch_bounds__(Q8_THREADS) qgemv_int8(const u8* w, const float* rowScale, const float* x, const float* bias,
                                                                     float* y, int T, int N, int K) {
  gemv_q8<false>(w, rowScale, x, bias, y, T, N, K);
}

extern "C" __global__ void __launch_bounds__(Q4_THREADS) qgemv_int4(const uint4* w, int loads, const float* scales, const u8* zeros, int G,
                                                                     int groupShift, const float* x, const float* bias, float* y, int T, int N, int K) {
  gemv_q4(w, loads, Int4Scales{scales, zeros, G, groupShift}, x, bias, y, T, N, K);
}

extern "C" __global__ void __launch_bounds__(Q4_THREADS) qgemv_nvfp4(const uint4* w, int loads, const u8* blockScales, const float* mult,
                                                                      const float* x, const float* bias, float* y, int T, int N, int K) {
  __shared__ float m[256];
  for (int i = threadIdx.x; i < 256; i += Q4_THREADS) m[i] = mult[i];
  __syncthreads();
  gemv_q4(w, loads, Nvfp4Scales{blockScales, m, K >> 4}, x, bias, y, T, N, K);
}

// ---- fast GEMVs, v2 (the default): rows and tokens per block as template parameters ------------------
//
// v1 above holds 4 rows and room for 8 tokens in every block. Measured on the H100 it streams the
// weight at 35–56% of the copy bandwidth at 1 token and 10–17% at 8: a 4-row block moves only 8–16
// KB (one load per row per thread for K = 4096), so the fixed cost of a block (x loads, the
// reduction) is paid per few bytes, and at 8 tokens each float4 of x (its lanes 64 bytes apart:
// four L1 lines per quarter-warp) serves only 4 rows. v2 compiles each kernel for ROWS rows and
// TMAX tokens: the host takes the smallest TMAX ≥ T and as many rows as keep ≥ 256 blocks (16 at 1–2
// tokens, 8 at 3–8), so a thread has ROWS independent 16-byte loads in flight and each x value
// serves ROWS rows without the registers of 8 tokens when fewer run. Every variant uses QV2_THREADS
// threads and the same per-thread slice of K, the same order of products in a thread, the same
// butterfly and the same order of warps: an output's arithmetic depends only on K, so results are
// bitwise the same for any ROWS, TMAX and T (tested) — batch invariance as v1.
#define QV2_THREADS 128

// Where an output of a v2 block goes: out(i, t, row, v) with v = sum · rowScale + bias, the linear's
// value. StoreY writes it to y (a plain linear); the fused gate/up kernel below keeps gate's value
// in a register (KeepGate) and writes silu(g) · u with up's (SiluStore).
struct StoreY {
  float* __restrict__ y;
  int N;
  __device__ __forceinline__ void operator()(int, int t, int row, float v) const { y[(u64)t * N + row] = v; }
};

// The block's partial sums meet in shared memory in warp order; v = sum · rowScale (+ bias).
template <int ROWS, int TMAX, class Out>
__device__ __forceinline__ void finish_v2(float (&acc)[ROWS][TMAX], const float* __restrict__ rowScale, const float* __restrict__ bias,
                                          int T, int N, int row0, const Out& out) {
  constexpr int NW = QV2_THREADS / 32;
  __shared__ float part[NW][ROWS * TMAX];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int r = 0; r < ROWS; r++)
#pragma unroll
    for (int t = 0; t < TMAX; t++) {
      if (t < T) {
        const float s = warp_sum(acc[r][t]);
        if (lane == 0) part[warp][r * TMAX + t] = s;
      }
    }
  __syncthreads();
  static_assert(ROWS * TMAX <= QV2_THREADS, "a thread per output");
  const int i = threadIdx.x;
  if (i < ROWS * TMAX) {
    const int r = i / TMAX, t = i % TMAX, row = row0 + r;
    if (t < T && row < N) {
      float s = 0.f;
#pragma unroll
      for (int q = 0; q < NW; q++) s += part[q][i];
      if (rowScale) s *= rowScale[row];
      out(i, t, row, s + (bias ? bias[row] : 0.f));
    }
  }
}

// A v2 thread's walk over its loads c = threadIdx.x, + QV2_THREADS, …: `load` issues its ROWS 16-byte
// weight loads, `round` multiplies them with x. The first round's weights are loaded before waiting
// for the kernel before this one (programmatic launch, programmatic-launch.ts), so they stream in
// while it finishes; x is read only after the wait; once every weight is read, the kernel after this
// one may start.
template <int ROWS, class Load, class Round>
__device__ __forceinline__ void v2_rounds(int loads, const Load& load, const Round& round) {
  int c = threadIdx.x;
  if (c < loads) {
    uint4 raw[ROWS];
    load(c, raw);
    pdl_wait_after(raw[ROWS - 1].w);  // (a plain wait would be hoisted above the loads)
    round(c, raw);
    c += QV2_THREADS;
  } else {
    pdl_wait();
  }
  for (; c < loads; c += QV2_THREADS) {
    uint4 raw[ROWS];
    load(c, raw);
    round(c, raw);
  }
  pdl_trigger();
}

// fp8 / int8 (K a multiple of 16): thread i takes 16-byte loads i, i + 128, … of each of the ROWS
// rows row0.., all ROWS issued before the first is used. Per word of 4 codes, x's float4 of each
// token is loaded once and serves every row.
template <bool FP8, int ROWS, int TMAX, class Out>
__device__ __forceinline__ void gemv_q8_v2(const u8* __restrict__ w, const float* __restrict__ rowScale, const float* __restrict__ x,
                                           const float* __restrict__ bias, int T, int N, int K, int row0, const Out& out) {
  const int loads = K >> 4;
  float acc[ROWS][TMAX];
#pragma unroll
  for (int r = 0; r < ROWS; r++)
#pragma unroll
    for (int t = 0; t < TMAX; t++) acc[r][t] = 0.f;
  const auto load = [&](int c, uint4 (&raw)[ROWS]) {
#pragma unroll
    for (int r = 0; r < ROWS; r++) raw[r] = ld_stream(reinterpret_cast<const uint4*>(w + (u64)min(row0 + r, N - 1) * K) + c);  // rows past N re-read the last
  };
  const auto round = [&](int c, const uint4 (&raw)[ROWS]) {
    const float* xc = x + c * 16;
#pragma unroll
    for (int q = 0; q < 4; q++) {
      float4 xv[TMAX];
#pragma unroll
      for (int t = 0; t < TMAX; t++)
        if (t < T) xv[t] = ld_x4(xc + (u64)t * K + 4 * q);
#pragma unroll
      for (int r = 0; r < ROWS; r++) {
        float d[4];
        if (FP8) fp8x4(word_of(raw[r], q), d);
        else int8x4(word_of(raw[r], q), d);
#pragma unroll
        for (int t = 0; t < TMAX; t++)
          if (t < T) acc[r][t] = dot4(d, xv[t], acc[r][t]);
      }
    }
  };
  v2_rounds<ROWS>(loads, load, round);
  finish_v2<ROWS, TMAX>(acc, rowScale, bias, T, N, row0, out);
}

// int4 / nvfp4, tiled (see gemv_q4): the same loads and 16-column blocks, each block's sum scaled
// once; ROWS loads in flight per thread.
template <int ROWS, int TMAX, class S, class Out>
__device__ __forceinline__ void gemv_q4_v2(const uint4* __restrict__ w, int loads, const S& sc, const float* __restrict__ x,
                                           const float* __restrict__ bias, int T, int N, int K, int row0, const Out& out) {
  float acc[ROWS][TMAX];
#pragma unroll
  for (int r = 0; r < ROWS; r++)
#pragma unroll
    for (int t = 0; t < TMAX; t++) acc[r][t] = 0.f;
  const auto load = [&](int c, uint4 (&raw)[ROWS]) {
#pragma unroll
    for (int r = 0; r < ROWS; r++) raw[r] = ld_stream(w + (u64)min(row0 + r, N - 1) * loads + c);
  };
  const auto round = [&](int c, const uint4 (&raw)[ROWS]) {
    const int col0 = (c >> 3) * TILE_COLS + (c & 7) * 16;
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int col = col0 + 128 * h;
      if (col >= K) break;
      float mul[ROWS], zm[ROWS];
#pragma unroll
      for (int r = 0; r < ROWS; r++) sc.at(min(row0 + r, N - 1), col, mul[r], zm[r]);
      float part[ROWS][TMAX];
#pragma unroll
      for (int r = 0; r < ROWS; r++)
#pragma unroll
        for (int t = 0; t < TMAX; t++) part[r][t] = 0.f;
#pragma unroll
      for (int j = 0; j < 2; j++) {
#pragma unroll
        for (int q = 0; q < 2; q++) {
          float4 xv[TMAX];
#pragma unroll
          for (int t = 0; t < TMAX; t++)
            if (t < T) xv[t] = ld_x4(x + (u64)t * K + col + 8 * j + 4 * q);
#pragma unroll
          for (int r = 0; r < ROWS; r++) {
            float d[4];
            sc.decode4(sc.split(word_of(raw[r], 2 * h + j)), q, zm[r], d);
#pragma unroll
            for (int t = 0; t < TMAX; t++)
              if (t < T) part[r][t] = dot4(d, xv[t], part[r][t]);
          }
        }
      }
#pragma unroll
      for (int r = 0; r < ROWS; r++)
#pragma unroll
        for (int t = 0; t < TMAX; t++)
          if (t < T) acc[r][t] = fmaf(part[r][t], mul[r], acc[r][t]);
    }
  };
  v2_rounds<ROWS>(loads, load, round);
  finish_v2<ROWS, TMAX>(acc, nullptr, bias, T, N, row0, out);
}

// Kernels qgemv2_<format>_r<ROWS>_t<TMAX>: the combinations that fit in registers without spilling
// (ptxas, 128 threads, sm_90: fp8/int8 r16_t1 128, r8_t8 255; int4 r8_t1 168, r4_t8 225; nvfp4
// r8_t1 127; sm_87 alike). 4-bit r16 and r8_t8 are not made (they would spill); quantized-weights.ts
// lists the same set (V2_ROWS).
#define QV2_Q8(R, TM)                                                                                                             \
  extern "C" __global__ void __launch_bounds__(QV2_THREADS, 1) qgemv2_fp8_r##R##_t##TM(                                             \
      const u8* w, const float* rowScale, const float* x, const float* bias, float* y, int T, int N, int K) {                   \
    gemv_q8_v2<true, R, TM>(w, rowScale, x, bias, T, N, K, blockIdx.x * R, StoreY{y, N});                                         \
  }                                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(QV2_THREADS, 1) qgemv2_int8_r##R##_t##TM(                                            \
      const u8* w, const float* rowScale, const float* x, const float* bias, float* y, int T, int N, int K) {                   \
    gemv_q8_v2<false, R, TM>(w, rowScale, x, bias, T, N, K, blockIdx.x * R, StoreY{y, N});                                        \
  }
#define QV2_Q4(R, TM)                                                                                                             \
  extern "C" __global__ void __launch_bounds__(QV2_THREADS, 1) qgemv2_int4_r##R##_t##TM(                                            \
      const uint4* w, int loads, const float* scales, const u8* zeros, int G, int groupShift, const float* x, const float* bias,  \
      float* y, int T, int N, int K) {                                                                                              \
    gemv_q4_v2<R, TM>(w, loads, Int4Scales{scales, zeros, G, groupShift}, x, bias, T, N, K, blockIdx.x * R, StoreY{y, N});        \
  }                                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(QV2_THREADS, 1) qgemv2_nvfp4_r##R##_t##TM(                                           \
      const uint4* w, int loads, const u8* blockScales, const float* mult, const float* x, const float* bias, float* y, int T,    \
      int N, int K) {                                                                                                               \
    __shared__ float m[256];                                                                                                        \
    for (int i = threadIdx.x; i < 256; i += QV2_THREADS) m[i] = mult[i];                                                           \
    __syncthreads();                                                                                                                \
    gemv_q4_v2<R, TM>(w, loads, Nvfp4Scales{blockScales, m, K >> 4}, x, bias, T, N, K, blockIdx.x * R, StoreY{y, N});             \
  }

QV2_Q8(4, 1) QV2_Q8(4, 2) QV2_Q8(4, 4) QV2_Q8(4, 8)
QV2_Q8(8, 1) QV2_Q8(8, 2) QV2_Q8(8, 4) QV2_Q8(8, 8)
QV2_Q8(16, 1) QV2_Q8(16, 2)
QV2_Q4(4, 1) QV2_Q4(4, 2) QV2_Q4(4, 4) QV2_Q4(4, 8)
QV2_Q4(8, 1) QV2_Q4(8, 2) QV2_Q4(8, 4)

// ---- fused decode GEMVs over quantized weights (linearMany, linearSiluMul) ---------------------------
//
// Small decode matrices are latency-bound (a 1024×4096 w4a16 GEMV takes ~9 µs for 2 MB), so q, k and
// v run as one grid, and gate and up as one pass writing silu(g)·u. Each block runs exactly the body
// of the single-matrix v2 kernel above (same ROWS, TMAX, slices, order of products and sums) on the
// matrix it belongs to, so every output is bitwise what linear gives, and the SiLU product is
// silu_mul's expression (elementwise.cu) on those values.

// qgemv2many_<format>_r<R>_t<TM>: blocks 0..ceil(n0/R)-1 take matrix 0's rows, the next
// ceil(n1/R) matrix 1's, the rest matrix 2's (n = 0: an absent matrix). Each matrix has its own
// weight, scales, bias, output and N; they share x, K and (int4) the grouping.
struct ManyPick {
  int m, row0;
  template <int R>
  __device__ __forceinline__ static ManyPick of(int n0, int n1) {
    const int b = blockIdx.x, b0 = (n0 + R - 1) / R, b1 = (n1 + R - 1) / R;
    if (b < b0) return ManyPick{0, b * R};
    if (b < b0 + b1) return ManyPick{1, (b - b0) * R};
    return ManyPick{2, (b - b0 - b1) * R};
  }
  template <class P>
  __device__ __forceinline__ P pick(P a, P b, P c) const { return m == 0 ? a : m == 1 ? b : c; }
};

// The fused gate/up kernel keeps gate's value v in a register (same thread, same (row, token) in
// both passes), then writes silu(g) · u.
struct KeepGate {
  float* g;
  __device__ __forceinline__ void operator()(int, int, int, float v) const { *g = v; }
};
struct SiluStore {
  float* __restrict__ y;
  int N;
  float g;
  __device__ __forceinline__ void operator()(int, int t, int row, float u) const { y[(u64)t * N + row] = silu_times(g, u); }
};

#define QF_Q8(FMT, FP8, R, TM)                                                                                                    \
  extern "C" __global__ void __launch_bounds__(QV2_THREADS, 1) qgemv2many_##FMT##_r##R##_t##TM(                                    \
      const float* x, int T, int K, const u8* w0, const float* s0, const float* b0, float* y0, int n0, const u8* w1,              \
      const float* s1, const float* b1, float* y1, int n1, const u8* w2, const float* s2, const float* b2, float* y2, int n2) {  \
    const ManyPick p = ManyPick::of<R>(n0, n1);                                                                                     \
    const int n = p.pick(n0, n1, n2);                                                                                               \
    gemv_q8_v2<FP8, R, TM>(p.pick(w0, w1, w2), p.pick(s0, s1, s2), x, p.pick(b0, b1, b2), T, n, K, p.row0,                       \
                           StoreY{p.pick(y0, y1, y2), n});                                                                          \
  }                                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(QV2_THREADS, 1) qgemv2silu_##FMT##_r##R##_t##TM(                                    \
      const float* x, int T, int K, int N, const u8* wg, const float* sg, const float* bg, const u8* wu, const float* su,         \
      const float* bu, float* y) {                                                                                                  \
    float g = 0.f;                                                                                                                  \
    gemv_q8_v2<FP8, R, TM>(wg, sg, x, bg, T, N, K, blockIdx.x * R, KeepGate{&g});                                                  \
    __syncthreads(); /* finish_v2's shared partial sums are reused */                                                              \
    gemv_q8_v2<FP8, R, TM>(wu, su, x, bu, T, N, K, blockIdx.x * R, SiluStore{y, N, g});                                            \
  }

#define QF_INT4(R, TM)                                                                                                            \
  extern "C" __global__ void __launch_bounds__(QV2_THREADS, 1) qgemv2many_int4_r##R##_t##TM(                                       \
      const float* x, int T, int K, int loads, int G, int groupShift, const uint4* w0, const float* sc0, const u8* z0,           \
      const float* b0, float* y0, int n0, const uint4* w1, const float* sc1, const u8* z1, const float* b1, float* y1, int n1,   \
      const uint4* w2, const float* sc2, const u8* z2, const float* b2, float* y2, int n2) {                                     \
    const ManyPick p = ManyPick::of<R>(n0, n1);                                                                                     \
    const int n = p.pick(n0, n1, n2);                                                                                               \
    gemv_q4_v2<R, TM>(p.pick(w0, w1, w2), loads, Int4Scales{p.pick(sc0, sc1, sc2), p.pick(z0, z1, z2), G, groupShift}, x,        \
                      p.pick(b0, b1, b2), T, n, K, p.row0, StoreY{p.pick(y0, y1, y2), n});                                          \
  }                                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(QV2_THREADS, 1) qgemv2silu_int4_r##R##_t##TM(                                       \
      const float* x, int T, int K, int N, int loads, int G, int groupShift, const uint4* wg, const float* scg, const u8* zg,    \
      const float* bg, const uint4* wu, const float* scu, const u8* zu, const float* bu, float* y) {                             \
    float g = 0.f;                                                                                                                  \
    gemv_q4_v2<R, TM>(wg, loads, Int4Scales{scg, zg, G, groupShift}, x, bg, T, N, K, blockIdx.x * R, KeepGate{&g});              \
    __syncthreads();                                                                                                                \
    gemv_q4_v2<R, TM>(wu, loads, Int4Scales{scu, zu, G, groupShift}, x, bu, T, N, K, blockIdx.x * R, SiluStore{y, N, g});        \
  }

#define QF_NVFP4(R, TM)                                                                                                           \
  extern "C" __global__ void __launch_bounds__(QV2_THREADS, 1) qgemv2many_nvfp4_r##R##_t##TM(                                      \
      const float* x, int T, int K, int loads, const uint4* w0, const u8* bs0, const float* m0, const float* b0, float* y0,      \
      int n0, const uint4* w1, const u8* bs1, const float* m1, const float* b1, float* y1, int n1, const uint4* w2,              \
      const u8* bs2, const float* m2, const float* b2, float* y2, int n2) {                                                      \
    const ManyPick p = ManyPick::of<R>(n0, n1);                                                                                     \
    const int n = p.pick(n0, n1, n2);                                                                                               \
    __shared__ float m[256];                                                                                                        \
    const float* mult = p.pick(m0, m1, m2);                                                                                         \
    for (int i = threadIdx.x; i < 256; i += QV2_THREADS) m[i] = mult[i];                                                           \
    __syncthreads();                                                                                                                \
    gemv_q4_v2<R, TM>(p.pick(w0, w1, w2), loads, Nvfp4Scales{p.pick(bs0, bs1, bs2), m, K >> 4}, x, p.pick(b0, b1, b2), T, n, K, \
                      p.row0, StoreY{p.pick(y0, y1, y2), n});                                                                       \
  }                                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(QV2_THREADS, 1) qgemv2silu_nvfp4_r##R##_t##TM(                                      \
      const float* x, int T, int K, int N, int loads, const uint4* wg, const u8* bsg, const float* mg, const float* bg,          \
      const uint4* wu, const u8* bsu, const float* mu, const float* bu, float* y) {                                              \
    __shared__ float m[2][256]; /* gate's multipliers, up's */                                                                     \
    for (int i = threadIdx.x; i < 256; i += QV2_THREADS) {                                                                          \
      m[0][i] = mg[i];                                                                                                              \
      m[1][i] = mu[i];                                                                                                              \
    }                                                                                                                               \
    __syncthreads();                                                                                                                \
    float g = 0.f;                                                                                                                  \
    gemv_q4_v2<R, TM>(wg, loads, Nvfp4Scales{bsg, m[0], K >> 4}, x, bg, T, N, K, blockIdx.x * R, KeepGate{&g});                  \
    __syncthreads();                                                                                                                \
    gemv_q4_v2<R, TM>(wu, loads, Nvfp4Scales{bsu, m[1], K >> 4}, x, bu, T, N, K, blockIdx.x * R, SiluStore{y, N, g});            \
  }

// The single-matrix kernels' (R, TM) set without 16 rows, which no format prefers (measured; it
// would add compile time for nothing): V2_FUSED_ROWS in quantized-weights.ts. No spills on sm_90 or
// sm_87 (ptxas; at most 255 registers, the r8_t8 q8 kernels, as their single-matrix ones).
#define QF_ALL_Q8(R, TM) QF_Q8(fp8, true, R, TM) QF_Q8(int8, false, R, TM)
#define QF_ALL_Q4(R, TM) QF_INT4(R, TM) QF_NVFP4(R, TM)
QF_ALL_Q8(4, 1) QF_ALL_Q8(4, 2) QF_ALL_Q8(4, 4) QF_ALL_Q8(4, 8)
QF_ALL_Q8(8, 1) QF_ALL_Q8(8, 2) QF_ALL_Q8(8, 4) QF_ALL_Q8(8, 8)
QF_ALL_Q4(4, 1) QF_ALL_Q4(4, 2) QF_ALL_Q4(4, 4) QF_ALL_Q4(4, 8)
QF_ALL_Q4(8, 1) QF_ALL_Q4(8, 2) QF_ALL_Q4(8, 4)

// ---- exact GEMV (any shape) ----------------------------------------------------------------------------

// A warp per row, one element per lane per step: y = Σ value(r, j) · x[col(j)] over exact values.
template <class V>
__device__ __forceinline__ void gemv_exact(const V& v, const float* __restrict__ x, const float* __restrict__ bias, float* __restrict__ y,
                                           int T, int N, int K) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= N) return;
  float acc[QMAX_T];
#pragma unroll
  for (int t = 0; t < QMAX_T; t++) acc[t] = 0.f;
  for (int j = lane; j < K; j += 32) {
    const float wv = v.value(row, j);
    const int k = v.col(j);
#pragma unroll
    for (int t = 0; t < QMAX_T; t++) {
      if (t >= T) break;
      acc[t] = fmaf(wv, x[(u64)t * K + k], acc[t]);
    }
  }
  const float b = bias ? bias[row] : 0.f;
#pragma unroll
  for (int t = 0; t < QMAX_T; t++) {
    if (t < T) {
      const float s = warp_sum(acc[t]);
      if (lane == 0) y[(u64)t * N + row] = s + b;
    }
  }
}

extern "C" __global__ void qgemv_exact_fp8(const u8* codes, const float* rowScale, const float* x, const float* bias, float* y, int T, int N, int K) {
  gemv_exact(Fp8View{codes, rowScale, K}, x, bias, y, T, N, K);
}

extern "C" __global__ void qgemv_exact_int8(const s8* codes, const float* scale, const float* x, const float* bias, float* y, int T, int N, int K) {
  gemv_exact(Int8View{codes, scale, K}, x, bias, y, T, N, K);
}

extern "C" __global__ void qgemv_exact_int4(const u32* packed, const float* scales, const u8* zeros, const int* gIdx, const int* perm,
                                            int wordsPerRow, int G, int groupSize, int tiled, const float* x, const float* bias,
                                            float* y, int T, int N, int K) {
  gemv_exact(Int4View{packed, scales, zeros, gIdx, perm, wordsPerRow, G, groupSize, tiled}, x, bias, y, T, N, K);
}

// ---- dequantisation --------------------------------------------------------------------------------------

// out[r, col(j)] = value(r, j), float32 (exact) or bf16 (rounded to nearest even). A block per row at a time.
template <class V>
__device__ __forceinline__ void dequant(const V& v, void* out, int bf16, int N, int K) {
  for (int r = blockIdx.x; r < N; r += gridDim.x) {
    for (int j = threadIdx.x; j < K; j += blockDim.x) {
      const float val = v.value(r, j);
      const u64 o = (u64)r * K + v.col(j);
      if (bf16) reinterpret_cast<u16*>(out)[o] = to_bf16(val);
      else reinterpret_cast<float*>(out)[o] = val;
    }
  }
}

extern "C" __global__ void dequant_fp8(const u8* codes, const float* rowScale, void* out, int bf16, int N, int K) {
  dequant(Fp8View{codes, rowScale, K}, out, bf16, N, K);
}

extern "C" __global__ void dequant_int8(const s8* codes, const float* scale, void* out, int bf16, int N, int K) {
  dequant(Int8View{codes, scale, K}, out, bf16, N, K);
}

extern "C" __global__ void dequant_int4(const u32* packed, const float* scales, const u8* zeros, const int* gIdx, const int* perm,
                                        int wordsPerRow, int G, int groupSize, int tiled, void* out, int bf16, int N, int K) {
  dequant(Int4View{packed, scales, zeros, gIdx, perm, wordsPerRow, G, groupSize, tiled}, out, bf16, N, K);
}

extern "C" __global__ void dequant_nvfp4(const u32* packed, const u8* blockScales, const float* mult, int wordsPerRow, void* out, int bf16,
                                         int N, int K) {
  dequant(Nvfp4View{packed, blockScales, mult, wordsPerRow, K}, out, bf16, N, K);
}

// ---- dequantisation to bf16, vectorised (the scratch matrix prefill's GEMMs read) ------------------------
//
// dequant above takes a nibble or byte at a time and stores 2 bytes at a time: ~0.6 TB/s on the H100,
// for a matrix written and read again by the GEMM at every prefill linear. These take 16 bytes of codes
// a thread and store 8 bf16 at a time, the values computed by the same expressions as the views above
// and rounded the same way, so the matrix is bit for bit dequant's. The host picks them where they
// apply (rows of whole 16-byte vectors; int4 tiled with neither act-order nor per-column groups).

__device__ __forceinline__ uint4 bf16x8(const float (&v)[8]) {
  uint4 o;
  o.x = (u32)to_bf16(v[0]) | ((u32)to_bf16(v[1]) << 16);
  o.y = (u32)to_bf16(v[2]) | ((u32)to_bf16(v[3]) << 16);
  o.z = (u32)to_bf16(v[4]) | ((u32)to_bf16(v[5]) << 16);
  o.w = (u32)to_bf16(v[6]) | ((u32)to_bf16(v[7]) << 16);
  return o;
}

__device__ __forceinline__ uint4 ld_nc16(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

// The 4-bit tiled layout: 16-byte load c of a row holds tile c / 8's 16-column blocks b = c % 8 (words
// 0-1: columns 16b..16b+15) and b + 8 (words 2-3: the same + 128); nibble e of a word is its column e.
// dec(r, col, word, v) gives the 8 values of the word whose first column is col. Padding columns (≥ K,
// whole words since K % 16 = 0) are not written.
template <class Dec>
__device__ __forceinline__ void dequant_tiled4_bf16(const uint4* __restrict__ packed, int loads, u16* __restrict__ out, int N, int K, const Dec& dec) {
  const u64 total = (u64)N * loads;
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
    const int r = (int)(i / loads), c = (int)(i % loads);
    const uint4 w = ld_nc16(packed + i);
    const u32 words[4] = {w.x, w.y, w.z, w.w};
    const int col0 = 256 * (c >> 3) + 16 * (c & 7);
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const int col = col0 + 128 * (k >> 1) + 8 * (k & 1);
      if (col >= K) continue;
      float v[8];
      dec(r, col, words[k], v);
      *reinterpret_cast<uint4*>(out + (u64)r * K + col) = bf16x8(v);
    }
  }
}

// int4, tiled, groups of 2^groupShift columns (≥ 8: a word never spans two), zero points or 8.
extern "C" __global__ void dequant_int4_tiled_bf16(const uint4* packed, int loads, const float* scales, const u8* zeros, int G, int groupShift,
                                                   u16* out, int N, int K) {
  dequant_tiled4_bf16(packed, loads, out, N, K, [&](int r, int col, u32 word, float (&v)[8]) {
    const int g = r * G + (col >> groupShift);
    const int z = zeros ? (int)zeros[g] : 8;
    const float s = scales[g];
#pragma unroll
    for (int e = 0; e < 8; e++) v[e] = (float)((int)((word >> (4 * e)) & 15u) - z) * s;
  });
}

// nvfp4: e2m1 code × mult[block scale] (a block is 16 columns: one per word pair).
extern "C" __global__ void dequant_nvfp4_bf16(const uint4* packed, int loads, const u8* blockScales, const float* mult, u16* out, int N, int K) {
  dequant_tiled4_bf16(packed, loads, out, N, K, [&](int r, int col, u32 word, float (&v)[8]) {
    const float m = mult[blockScales[(u64)r * (K >> 4) + (col >> 4)]];
#pragma unroll
    for (int e = 0; e < 8; e++) v[e] = e2m1_value((word >> (4 * e)) & 15u) * m;
  });
}

// fp8 (FP8 = 1) or int8 codes in rows of K % 16 = 0 bytes, one float32 scale a row: 16 codes a thread.
extern "C" __global__ void dequant_bytes_bf16(const uint4* codes, const float* rowScale, int fp8, u16* out, int N, int K) {
  const int perRow = K >> 4;
  const u64 total = (u64)N * perRow;
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
    const int r = (int)(i / perRow);
    const uint4 w = ld_nc16(codes + i);
    const u32 words[4] = {w.x, w.y, w.z, w.w};
    const float s = rowScale[r];
#pragma unroll
    for (int h = 0; h < 2; h++) {
      float v[8];
#pragma unroll
      for (int e = 0; e < 8; e++) {
        const u32 code = (words[2 * h + (e >> 2)] >> (8 * (e & 3))) & 0xffu;
        v[e] = (fp8 ? e4m3_value(code) : (float)(s8)code) * s;
      }
      *reinterpret_cast<uint4*>(out + 16 * i + 8 * h) = bf16x8(v);
    }
  }
}

// ---- load-time re-layout and checks ---------------------------------------------------------------------

// Canonical 4-bit rows (srcWords words: nibble i of word n is column 8n + i; int4 and nvfp4 agree)
// → the tiled layout (dstWords = Kp/8 words per row). With perm, tiled column j takes original
// column perm[j]. Columns ≥ K (padding up to the tile) are zero.
extern "C" __global__ void repack_4bit(const u32* __restrict__ src, const int* __restrict__ perm, u32* __restrict__ dst, int N, int K,
                                       int srcWords, int dstWords) {
  const u64 total = (u64)N * dstWords;
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
    const int r = (int)(i / dstWords), d = (int)(i % dstWords);
    // Inverse of tiled_word: device word d of its tile holds natural word 2b + 16h + jj.
    const int dd = d & 31;
    const int n = (d & ~31) + 2 * (dd >> 2) + 16 * ((dd >> 1) & 1) + (dd & 1);
    const int col = 8 * n;
    const u32* row = src + (u64)r * srcWords;
    u32 word = 0;
    if (!perm) {
      if (col < K) word = row[n];
    } else {
      for (int e = 0; e < 8; e++) {
        if (col + e < K) {
          const int o = perm[col + e];
          word |= ((row[o >> 3] >> (4 * (o & 7))) & 15u) << (4 * e);
        }
      }
    }
    dst[i] = word;
  }
}

// *found = 1 if any of the n E4M3 codes is NaN (0x7f or 0xff).
extern "C" __global__ void fp8_find_nan(const u8* __restrict__ codes, u64 n, u32* found) {
  const u64 words = n >> 2;
  const u32* w = reinterpret_cast<const u32*>(codes);
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < words; i += (u64)gridDim.x * blockDim.x) {
    const u32 v = (w[i] & 0x7f7f7f7fu) ^ 0x7f7f7f7fu;  // a zero byte where the code was 0x7f / 0xff
    if ((v - 0x01010101u) & ~v & 0x80808080u) *found = 1u;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0)
    for (u64 i = words << 2; i < n; i++)
      if ((codes[i] & 0x7fu) == 0x7fu) *found = 1u;
}

// ---- random weights (--load-format dummy) ------------------------------------------------------------

// A counter-based hash: element i of stream `seed`, uniform bits.
__device__ __forceinline__ u32 hash_bits(u64 i, u32 seed) {
  u32 h = (u32)i * 0x9E3779B1u ^ (u32)(i >> 32) * 0x85EBCA77u ^ seed * 0xC2B2AE3Du;
  h ^= h >> 15; h *= 0x2C1B3C6Du; h ^= h >> 12; h *= 0x297A2D39u; h ^= h >> 15;
  return h;
}
__device__ __forceinline__ float uniform01(u64 i, u32 seed) { return (hash_bits(i, seed) >> 8) * (1.f / 16777216.f); }

#define GRID_STRIDE(i, n) for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < (n); i += (u64)gridDim.x * blockDim.x)

// Dense values uniform in [-scale, scale), rounded to the storage type.
extern "C" __global__ void random_dense_bf16(u16* out, u64 n, u32 seed, float scale) {
  GRID_STRIDE(i, n) out[i] = f32_to_bf16((2.f * uniform01(i, seed) - 1.f) * scale);
}
extern "C" __global__ void random_dense_f16(u16* out, u64 n, u32 seed, float scale) {
  GRID_STRIDE(i, n) out[i] = f32_to_f16((2.f * uniform01(i, seed) - 1.f) * scale);
}
extern "C" __global__ void random_dense_f32(float* out, u64 n, u32 seed, float scale) {
  GRID_STRIDE(i, n) out[i] = (2.f * uniform01(i, seed) - 1.f) * scale;
}
// A vector held as float32 whose values are those of `dtype` (0 f32, 1 bf16, 2 f16), as loadDense
// would hold a checkpoint's.
extern "C" __global__ void random_vector(float* out, u64 n, u32 seed, float scale, int dtype) {
  GRID_STRIDE(i, n) {
    const float v = (2.f * uniform01(i, seed) - 1.f) * scale;
    out[i] = dtype == 1 ? bf16_to_f32(f32_to_bf16(v)) : dtype == 2 ? f16_to_f32(f32_to_f16(v)) : v;
  }
}

// Positive scales uniform in [lo, hi).
extern "C" __global__ void random_scales(float* out, u64 n, u32 seed, float lo, float hi) {
  GRID_STRIDE(i, n) out[i] = lo + (hi - lo) * uniform01(i, seed);
}

// float32 → E4M3FN, round to nearest even, saturating at ±448 (src/quant's encodeE4m3; x finite).
__device__ __forceinline__ u32 encode_e4m3(float x) {
  const u32 sign = (__float_as_uint(x) >> 24) & 0x80u;
  const float a = fminf(fabsf(x), 448.f);
  if (a < 0x1p-6f) return sign | (u32)__float2int_rn(a * 512.f);  // the subnormal grid, 2^-9 apart (8 → 0x08, the smallest normal)
  u32 b = __float_as_uint(a);
  b += 0x7ffffu + ((b >> 20) & 1u);  // round the mantissa to 3 bits
  return sign | ((b >> 20) - (120u << 3));
}

// E4M3 codes of values uniform in [-448, 448): what quantizeFp8 makes of a row whose absmax is the scale.
extern "C" __global__ void random_fp8_codes(u8* out, u64 n, u32 seed) {
  GRID_STRIDE(i, n) out[i] = (u8)encode_e4m3((2.f * uniform01(i, seed) - 1.f) * 448.f);
}

// int8 codes in [-127, 127] (quantizeInt8's range).
extern "C" __global__ void random_int8_codes(s8* out, u64 n, u32 seed) {
  GRID_STRIDE(i, n) out[i] = (s8)__float2int_rn((2.f * uniform01(i, seed) - 1.f) * 127.f);
}

// Random 4-bit codes, canonical (tiled = 0) or tiled rows of wordsPerRow words; columns ≥ K zero.
extern "C" __global__ void random_4bit(u32* out, int N, int wordsPerRow, int K, int tiled, u32 seed) {
  GRID_STRIDE(i, (u64)N * wordsPerRow) {
    const int d = (int)(i % wordsPerRow);
    int n = d;
    if (tiled) {
      const int dd = d & 31;
      n = (d & ~31) + 2 * (dd >> 2) + 16 * ((dd >> 1) & 1) + (dd & 1);
    }
    const int valid = min(max(K - 8 * n, 0), 8);  // columns of this word inside the row
    const u32 mask = valid == 8 ? 0xffffffffu : (1u << (4 * valid)) - 1u;
    out[i] = hash_bits(i, seed) & mask;
  }
}

// E4M3 block scales for nvfp4: codes 0x70..0x7e (128 to 448), a spread like ModelOpt's amax/6/globalScale.
extern "C" __global__ void random_block_scales(u8* out, u64 n, u32 seed) {
  GRID_STRIDE(i, n) out[i] = (u8)(0x70u + hash_bits(i, seed) % 15u);
}
