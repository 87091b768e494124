// Tensor-core GEMV for fp8 (E4M3), int8 (w8a16) and nvfp4 weights, 1..8 tokens:
// y[T, N] = x[T, K] · W[N, K]ᵀ (+ bias), x and y float32. Chosen per matrix by
// QuantizedWeights.q8DecodeGemv (gemv-mma-q8.ts; the default, but engines of one token a step keep
// the FMA kernels of quant-linear.cu). At 8 tokens those are bound by 8 float32 FMAs per weight
// element; here one mma.sync.m16n8k16 (bf16 × bf16 → float32) does 16 rows × 16 k × 8 tokens, as gemv-mma.cu does for
// bf16 weights (read its header for the fragment shapes: lane = 4g + q holds A rows g and g + 8 at
// k-slots {2q, 2q+1, 2q+8, 2q+9}, B token g at the same k-slots, D rows g, g + 8 × tokens 2q, 2q+1).
//
// Exactness. Every operand is exact in bf16 (8 significant bits, float32's exponent range):
//   - an E4M3 value has 4 significant bits (subnormals fewer);
//   - an int8 code is an integer in −128..127 (at most 7 significant bits);
//   - an nvfp4 element e2m1(code) · e4m3(block scale) has 2 + 4 ≤ 6 significant bits, between 2⁻¹⁰
//     and 6 · 448.
// x is rounded to bf16 (cvt.rn.bf16x2.f32), so every product is exact and the sums are float32. What
// is left of the scale — fp8's row (or repeated per-tensor) scale, int8's row scale, nvfp4's global
// scale — multiplies the row's float32 sum once at the end, then the bias is added (in that order).
//
// The order of k inside a dot product is free as long as A and B agree, so each lane takes whole
// 16-byte loads of its rows as they lie in memory and loads x at the same columns:
//   fp8 / int8 (row-major [N, K], K % 16 = 0): a chunk is 64 columns; lane q takes bytes 16q..16q+15
//     of rows g and g + 8. Word i (columns 16q + 4i + 0..3, bytes b0..b3) is mma step i of the chunk:
//     the pair (b0, b2) at k-slots {2q, 2q+1}, (b1, b3) at {2q+8, 2q+9}; x alike.
//   nvfp4 (the tiled 4-bit layout, see quant-linear.cu's tiled_word; rows padded to 256 columns): a
//     chunk is half a tile's loads (128 columns), lane q taking load 4c + q as gemv-mma-int4.cu does,
//     whose words 0–1 and 2–3 are 16 columns each, 128 apart. Word (8 columns, one 16-column block)
//     → two mma steps: elements (4t, 4t+1) at k-slots {2q, 2q+1} and (4t+2, 4t+3) at {2q+8, 2q+9}.
//
// Decoding to bf16 pairs (no tables for the codes; all bit operations plus one fma.rn.bf16x2, whose
// result is exact, so its rounding never acts):
//   fp8: the code's exponent and mantissa bits shifted into a bf16's (bits 4..10), the sign to bit
//     15: that bf16 is the value · 2⁻¹²⁰ (E4M3 subnormals land on bf16 subnormals, which fma keeps);
//     times ±2¹²⁰ gives the value. The NaN codes would read as ±480: weights holding one never come
//     here (QuantizedWeights keeps them on the exact kernel).
//   int8: code = (128 + low 7 bits) − 128 − 128·sign, as one fma of exact bf16 terms.
//   nvfp4: the codes as bytes 64 + 2·value by prmt tables (quant-linear.cu's e2m1_bytes), each in a
//     bf16 192 + 2·value (0x43 | byte), and one fma by the block's (s/2, −96·s) pair gives value · s,
//     s = e4m3(block scale). The 256 pairs sit in shared memory, made by the block at its start.
//
// Split K: the block's 8 warps take groups w, w + 8, … of G chunks of the block's range (G = 4 at one
// m-tile a block, 2 at two; each group's weight loads issued, predicated, before its mmas, x loaded
// from L1 per chunk; one accumulator per chunk of the group), add their accumulators in order and meet
// in shared memory in warp order (gemv-mma.cuh mma_finish_emit_n). Where the row tiles are fewer than
// the SMs, S blocks split a tile's chunks into S ranges: each writes its float32 sums to `part`, and
// the last to finish (an atomic ticket per tile, reset by that block) adds the S partials in order
// 0..S−1, then scales and adds the bias. S and the rows per block (hence G) depend on the format, N, K
// and the GPU only, so a token's result is the same bits alone or in a batch of 8 (rows of x past T
// are zero, and an mma's output column depends on its own B column only).
//
// Fused launches: gemv_mma_<fmt>many runs up to three matrices planned at one m-tile a block (q/k/v)
// in one grid, each with its own split; gemv_mma_<fmt>silu runs gate and up planned at two m-tiles a
// block as a block's two m-tiles (16 rows of each), writing silu(g)·u with silu_mul's expression.
// Their chunk groups and orders are the single kernel's, so every output is bitwise its (the host
// checks the plans: gemv-mma-q8.ts q8MmaFusable).
#include "gemv-mma.cuh"

typedef unsigned char u8;

// Chunks a warp loads before using them: 4 at one m-tile a block, 2 at two, so that a lane has 8
// weight loads of 16 bytes in flight either way (as gemv-mma.cu's one-m-tile kernel).
template <int R>
struct Group {
  static const int G = R == 1 ? 4 : 2;
};

// ---- loads (predicated rather than branched, so a group's loads stay in flight together) -----------

// One byte (an nvfp4 block scale code), 0 where !ok. Through L1: the 4 lanes of a row read neighbours.
__device__ __forceinline__ u32 ldg_u8(const u8* p, bool ok) {
  u32 v;
  asm volatile("{ .reg .pred p; setp.ne.b32 p, %2, 0; mov.b32 %0, 0;\n  @p ld.global.nc.u8 %0, [%1]; }" : "=r"(v) : "l"(p), "r"((int)ok));
  return v;
}

// ---- bf16 pairs and the mma -----------------------------------------------------------------------

__device__ __forceinline__ u32 prmt(u32 a, u32 b, u32 sel) {
  u32 d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
}

// ---- decoders: 4 codes of a 32-bit word (bytes b0..b3) → the bf16 pairs (b0, b2) and (b1, b3) -------

// fp8 (common.cuh e4m3_bf16x2): bytes (b0, b2) and (b1, b3) shifted into place.
__device__ __forceinline__ u32 fp8_even(u32 w) { return e4m3_bf16x2((w << 4) & 0x07f007f0u, (w << 8) & 0x80008000u); }
__device__ __forceinline__ u32 fp8_odd(u32 w) { return e4m3_bf16x2((w >> 4) & 0x07f007f0u, w & 0x80008000u); }

// v: the two's-complement codes at bits 0..7 and 16..23. (128 + low 7 bits) + (−128 or −256), one
// fma by 1: every term and the result are integers a bf16 holds exactly.
__device__ __forceinline__ u32 int8_pair(u32 v) {
  const u32 a = (v & 0x007f007fu) | 0x43004300u;  // bf16 128 + (code & 127)
  const u32 c = (v & 0x00800080u) | 0xc300c300u;  // bf16 −128, or −256 for a negative code
  return fma_bf16x2(a, 0x3f803f80u, c);
}
__device__ __forceinline__ u32 int8_even(u32 w) { return int8_pair(w); }
__device__ __forceinline__ u32 int8_odd(u32 w) { return int8_pair(w >> 8); }

template <bool FP8>
__device__ __forceinline__ u32 q8_even(u32 w) { return FP8 ? fp8_even(w) : int8_even(w); }
template <bool FP8>
__device__ __forceinline__ u32 q8_odd(u32 w) { return FP8 ? fp8_odd(w) : int8_odd(w); }

// An nvfp4 word's 8 E2M1 codes as bytes 64 + 2·value (52..76), elements 0..3 in lo and 4..7 in hi:
// prmt looks each code up in a table of the positive codes (a negative code's set top selector bit
// gives 0x00) and, with the sign bit flipped, in a table of the negative ones.
__device__ __forceinline__ void e2m1_bytes(u32 w, u32& lo, u32& hi) {
  const u32 P0 = 0x43424140u, P1 = 0x4c484644u;  // 64 + {0, 1, 2, 3, 4, 6, 8, 12}
  const u32 N0 = 0x3d3e3f40u, N1 = 0x34383a3cu;  // 64 − {0, 1, 2, 3, 4, 6, 8, 12}
  const u32 f = w ^ 0x88888888u;
  lo = prmt(P0, P1, w) | prmt(N0, N1, f);
  hi = prmt(P0, P1, w >> 16) | prmt(N0, N1, f >> 16);
}

// Bytes k and k + 1 of `bytes` as bf16 192 + 2·value each (sel 0x4140: bytes 0, 1; 0x4342: 2, 3),
// then × s/2 − 96·s = value · s (m = the block's (s/2, −96·s) pair).
__device__ __forceinline__ u32 nvfp4_pair(u32 bytes, u32 sel, uint2 m) { return fma_bf16x2(prmt(bytes, 0x43434343u, sel), m.x, m.y); }

// E4M3 code → float32, exactly (subnormals included; 0x7f / 0xff NaN): the exponent and mantissa
// bits in a float32's (<< 20) are the value · 2⁻¹²⁰.
__device__ __forceinline__ float e4m3_to_f32(u32 code) {
  const u32 em = code & 0x7fu;
  const float v = em == 0x7fu ? __uint_as_float(0x7fc00000u) : __uint_as_float(em << 20) * 0x1p120f;
  return (code & 0x80u) ? -v : v;
}

// One matrix's pointers: fp8/int8 codes row-major [N, K] with a float32 scale per row; or nvfp4 codes
// in the tiled layout with E4M3 block scales [N, K/16] and a float32 global scale (rowScale null).
struct Q8Matrix {
  const void* w;
  const float* rowScale;
  const u8* blockScales;
  float globalScale;
  const float* bias;
  float* y;
  int N;
};

// The row's float32 sum times what is left of its scale, then the bias (in that order, unfused).
__device__ __forceinline__ float q8_scaled(const Q8Matrix& m, float s, int row) {
  const float v = __fmul_rn(s, m.rowScale ? m.rowScale[row] : m.globalScale);
  return m.bias ? __fadd_rn(v, m.bias[row]) : v;
}

// y = the scaled sum for the rows of R m-tiles of one matrix.
template <int R>
struct Q8StoreRows {
  const Q8Matrix* mat;
  int row0;
  __device__ __forceinline__ void operator()(int m, int t, const float (&s)[R]) const {
#pragma unroll
    for (int r = 0; r < R; r++) {
      const int row = row0 + 16 * r + m;
      if (row < mat->N) mat->y[(u64)t * mat->N + row] = q8_scaled(*mat, s[r], row);
    }
  }
};

// y = silu(gate) · up of the scaled sums, silu_mul's expression (silu_times, common.cuh).
struct Q8StoreSilu {
  const Q8Matrix* gate;
  const Q8Matrix* up;
  float* y;
  int row0;
  __device__ __forceinline__ void operator()(int m, int t, const float (&s)[2]) const {
    const int row = row0 + m;
    if (row >= gate->N) return;
    const float g = q8_scaled(*gate, s[0], row), u = q8_scaled(*up, s[1], row);
    y[(u64)t * gate->N + row] = silu_times(g, u);
  }
};

// fp8 / int8: the lane's share of R m-tiles (rows row0[r].. of mat[r]) over chunks [cBegin, cEnd) of
// 64 columns, warps taking groups of G chunks in turn, for NT n-tiles of 8 tokens (each decoded A
// fragment multiplied by every n-tile's B).
template <bool FP8, int R, int G, int NT>
__device__ __forceinline__ void q8_rows(const Q8Matrix* const (&mat)[R], const int (&row0)[R], const float* __restrict__ x, int T, int K,
                                        int cBegin, int cEnd, float (&acc)[G][R][NT][4]) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int q = lane & 3;

  // This lane's two rows of each m-tile: rows past N load nothing (their outputs are not written).
  const uint4* wrow[R][2];
  bool rowOk[R][2];
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int row = row0[r] + g + 8 * h;
      rowOk[r][h] = row < mat[r]->N;
      wrow[r][h] = reinterpret_cast<const uint4*>(static_cast<const u8*>(mat[r]->w) + (u64)(rowOk[r][h] ? row : 0) * K) + q;
    }
  bool tokOk[NT];
  const float* xrow[NT];
#pragma unroll
  for (int n = 0; n < NT; n++) {
    tokOk[n] = 8 * n + g < T;
    xrow[n] = x + (u64)(tokOk[n] ? 8 * n + g : 0) * K + 16 * q;
  }

#pragma unroll
  for (int u = 0; u < G; u++)
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int n = 0; n < NT; n++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc[u][r][n][i] = 0.f;

  for (int c0 = cBegin + warp * G; c0 < cEnd; c0 += MMA_WARPS * G) {
    // Every weight load of the group first, then per chunk x (from L1) and the mmas. A lane's 16
    // columns lie wholly inside K or wholly past it (K % 16 = 0): past it, weights and x read as zeros.
    uint4 a[G][R][2];
#pragma unroll
    for (int u = 0; u < G; u++) {
      const int c = c0 + u;
      const bool in = c < cEnd && 64 * c + 16 * q < K;
#pragma unroll
      for (int r = 0; r < R; r++)
#pragma unroll
        for (int h = 0; h < 2; h++) a[u][r][h] = ldg_w(wrow[r][h] + 4 * c, in && rowOk[r][h]);
    }
#pragma unroll
    for (int u = 0; u < G; u++) {
      const int c = c0 + u;
      if (c >= cEnd) break;  // the same for the whole warp
      float4 xv[NT][4];
#pragma unroll
      for (int n = 0; n < NT; n++) {
        const bool xin = tokOk[n] && 64 * c + 16 * q < K;
#pragma unroll
        for (int i = 0; i < 4; i++) xv[n][i] = ldg_x4(xrow[n] + 64 * c + 4 * i, xin);
      }
#pragma unroll
      for (int i = 0; i < 4; i++) {
#pragma unroll
        for (int r = 0; r < R; r++) {
          const u32 w0 = word_at(a[u][r][0], i), w1 = word_at(a[u][r][1], i);
          const u32 a0 = q8_even<FP8>(w0), a1 = q8_even<FP8>(w1), a2 = q8_odd<FP8>(w0), a3 = q8_odd<FP8>(w1);
#pragma unroll
          for (int n = 0; n < NT; n++) {
            // Word i: columns (0, 2) at k-slots 2q.., (1, 3) at 2q+8..
            mma_bf16(acc[u][r][n], a0, a1, a2, a3, bf16x2(xv[n][i].x, xv[n][i].z), bf16x2(xv[n][i].y, xv[n][i].w));
          }
        }
      }
    }
  }
}

// ---- nvfp4: tiled codes, E4M3 block scales [N, K/16], a float32 global scale ----------------------

// (s/2, −96·s) as bf16 pairs for every block scale code s (exact: s has ≤ 4 significant bits), made by
// each block at its start.
__device__ __forceinline__ void nvfp4_scale_pairs(uint2* scalePairs) {
  for (int i = threadIdx.x; i < 256; i += MMA_THREADS) {
    const float s = e4m3_to_f32((u32)i);
    scalePairs[i] = make_uint2(bf16x2(0.5f * s, 0.5f * s), bf16x2(-96.f * s, -96.f * s));
  }
  __syncthreads();
}

// One half (hf) of a chunk of R m-tiles into acc[r][n]: a[r][h] the lane's load of row g + 8h, sc[r][h][hf]
// the block scale codes of its two 16-column blocks, b[n][j] n-tile n's B pairs for word 2hf + j: columns
// (0, 1), (2, 3) of the word's 8 for the first step, (4, 5), (6, 7) for the second.
template <int R, int NT>
__device__ __forceinline__ void nvfp4_half(const uint4 (&a)[R][2], const u32 (&sc)[R][2][2], int hf, const u32 (&b)[NT][2][4], const uint2* scalePairs,
                                           float (&acc)[R][NT][4]) {
#pragma unroll
  for (int r = 0; r < R; r++) {
    const uint2 m0 = scalePairs[sc[r][0][hf]], m1 = scalePairs[sc[r][1][hf]];
#pragma unroll
    for (int j = 0; j < 2; j++) {
      u32 lo0, hi0, lo1, hi1;
      e2m1_bytes(word_at(a[r][0], 2 * hf + j), lo0, hi0);
      e2m1_bytes(word_at(a[r][1], 2 * hf + j), lo1, hi1);
      // Elements 0–3 (lo) in the first step, 4–7 (hi) in the second; x at the same columns.
      const u32 lo[4] = {nvfp4_pair(lo0, 0x4140u, m0), nvfp4_pair(lo1, 0x4140u, m1), nvfp4_pair(lo0, 0x4342u, m0), nvfp4_pair(lo1, 0x4342u, m1)};
      const u32 hi[4] = {nvfp4_pair(hi0, 0x4140u, m0), nvfp4_pair(hi1, 0x4140u, m1), nvfp4_pair(hi0, 0x4342u, m0), nvfp4_pair(hi1, 0x4342u, m1)};
#pragma unroll
      for (int n = 0; n < NT; n++) {
        mma_bf16(acc[r][n], lo[0], lo[1], lo[2], lo[3], b[n][j][0], b[n][j][1]);
        mma_bf16(acc[r][n], hi[0], hi[1], hi[2], hi[3], b[n][j][2], b[n][j][3]);
      }
    }
  }
}

// loads: 16-byte loads per row (Kp / 32, Kp = K rounded up to 256); chunks of 128 columns. Otherwise
// as q8_rows.
template <int R, int G, int NT>
__device__ __forceinline__ void nvfp4_rows(const Q8Matrix* const (&mat)[R], const int (&row0)[R], int loads, const uint2* scalePairs,
                                           const float* __restrict__ x, int T, int K, int cBegin, int cEnd, float (&acc)[G][R][NT][4]) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int q = lane & 3;
  const int blocksPerRow = K >> 4;

  const uint4* wrow[R][2];
  const u8* srow[R][2];
  bool rowOk[R][2];
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int row = row0[r] + g + 8 * h;
      rowOk[r][h] = row < mat[r]->N;
      const int rr = rowOk[r][h] ? row : 0;
      wrow[r][h] = static_cast<const uint4*>(mat[r]->w) + (u64)rr * loads + q;
      srow[r][h] = mat[r]->blockScales + (u64)rr * blocksPerRow;
    }
  bool tokOk[NT];
  const float* xrow[NT];
#pragma unroll
  for (int n = 0; n < NT; n++) {
    tokOk[n] = 8 * n + g < T;
    xrow[n] = x + (u64)(tokOk[n] ? 8 * n + g : 0) * K;
  }

#pragma unroll
  for (int u = 0; u < G; u++)
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int n = 0; n < NT; n++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc[u][r][n][i] = 0.f;

  for (int c0 = cBegin + warp * G; c0 < cEnd; c0 += MMA_WARPS * G) {
    uint4 a[G][R][2];
    u32 sc[G][R][2][2];  // block scale codes: [chunk][m-tile][row g, g + 8][half]
#pragma unroll
    for (int u = 0; u < G; u++) {
      const int c = c0 + u;
      const bool in = c < cEnd;
      // Load 4c + q: blocks b and b + 8 of tile c / 2, b = 4(c % 2) + q. Blocks past K (padding)
      // read code 0, whose pair is (0, −0): the padded codes (zeros) then give exact zeros.
      const int blk = (c >> 1) * 16 + 4 * (c & 1) + q;
#pragma unroll
      for (int r = 0; r < R; r++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          a[u][r][h] = ldg_w(wrow[r][h] + 4 * c, in && rowOk[r][h]);
#pragma unroll
          for (int hf = 0; hf < 2; hf++) sc[u][r][h][hf] = ldg_u8(srow[r][h] + blk + 8 * hf, in && rowOk[r][h] && blk + 8 * hf < blocksPerRow);
        }
    }
#pragma unroll
    for (int u = 0; u < G; u++) {
      const int c = c0 + u;
      if (c >= cEnd) break;
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        // The half's 64-column run; this lane's 16 columns (words 2hf, 2hf + 1) at +16q.
        const int run = (c >> 1) * 256 + 128 * hf + 64 * (c & 1);
        if (run >= K) break;  // padding (the same for the whole warp)
        const int col = run + 16 * q;
        u32 b[NT][2][4];
#pragma unroll
        for (int n = 0; n < NT; n++) {
          const bool xin = tokOk[n] && col < K;
#pragma unroll
          for (int j = 0; j < 2; j++) {
            const float4 x0 = ldg_x4(xrow[n] + col + 8 * j, xin), x1 = ldg_x4(xrow[n] + col + 8 * j + 4, xin);
            b[n][j][0] = bf16x2(x0.x, x0.y), b[n][j][1] = bf16x2(x0.z, x0.w), b[n][j][2] = bf16x2(x1.x, x1.y), b[n][j][3] = bf16x2(x1.z, x1.w);
          }
        }
        nvfp4_half<R, NT>(a[u], sc[u], hf, b, scalePairs, acc[u]);
      }
    }
  }
}

// ---- entry points: one matrix, up to three (q/k/v), gate and up writing silu(g)·u ------------------

// Chunks of a row: 64 columns for fp8/int8, 128 (half a tile) for nvfp4.
template <int FMT>
__device__ __forceinline__ int q8_chunks(int K, int loads) { return FMT == 2 ? loads >> 2 : (K + 63) >> 6; }

// The format's body (FMT 0 fp8, 1 int8, 2 nvfp4) over R m-tiles and chunks [c0, c1).
template <int FMT, int R, int G, int NT>
__device__ __forceinline__ void q8_body(const Q8Matrix* const (&mat)[R], const int (&row0)[R], int loads, const uint2* scalePairs,
                                        const float* x, int T, int K, int c0, int c1, float (&acc)[G][R][NT][4]) {
  if constexpr (FMT == 2) nvfp4_rows<R, G, NT>(mat, row0, loads, scalePairs, x, T, K, c0, c1, acc);
  else q8_rows<FMT == 0, R, G, NT>(mat, row0, x, T, K, c0, c1, acc);
}

// gemv_mma_<fmt>_r<R>: block (tile, split) takes rows tile·16R.. and chunk range split of S.
// part: float32 [tiles][S][R][16][T]; counters: u32 per tile, zero between launches (used when S > 1).
template <int FMT, int R, int NT>
__device__ __forceinline__ void q8_single(const Q8Matrix& mt, int loads, const float* x, float* part, u32* counters, int T, int K, int S) {
  __shared__ uint2 scalePairs[FMT == 2 ? 256 : 1];
  if constexpr (FMT == 2) nvfp4_scale_pairs(scalePairs);
  constexpr int G = Group<R>::G;
  const int tile = blockIdx.x, split = blockIdx.y;
  const Q8Matrix* mat[R];
  int row0[R];
#pragma unroll
  for (int r = 0; r < R; r++) {
    mat[r] = &mt;
    row0[r] = tile * 16 * R + 16 * r;
  }
  int c0, c1;
  split_range(q8_chunks<FMT>(K, loads), S, split, c0, c1);
  float acc[G][R][NT][4];
  q8_body<FMT, R, G, NT>(mat, row0, loads, scalePairs, x, T, K, c0, c1, acc);
  mma_finish_emit_n<R, G, NT>(acc, T, S, split, part + (u64)tile * S * R * 16 * T, counters + tile, Q8StoreRows<R>{&mt, tile * 16 * R});
}

// gemv_mma_<fmt>many: up to 3 matrices (N = 0: absent), one m-tile a block (the single kernel's plan
// for each of them must be one m-tile a block: the host checks), laid out as fused_slot says
// (gemv-mma.cuh); every output bitwise the single kernel's.
template <int FMT, int NT>
__device__ __forceinline__ void q8_many(const Q8Matrix& m0, int S0, const Q8Matrix& m1, int S1, const Q8Matrix& m2, int S2, int loads,
                                        const float* x, float* part, u32* counters, int T, int K) {
  __shared__ uint2 scalePairs[FMT == 2 ? 256 : 1];
  if constexpr (FMT == 2) nvfp4_scale_pairs(scalePairs);
  constexpr int G = Group<1>::G;
  const FusedSlot f = fused_slot(blockIdx.x, {m0.N, m1.N, m2.N}, {S0, S1, S2}, T);
  const Q8Matrix mt = f.matrix == 0 ? m0 : f.matrix == 1 ? m1 : m2;
  const Q8Matrix* mat[1] = {&mt};
  const int row0[1] = {f.tile * 16};
  int c0, c1;
  split_range(q8_chunks<FMT>(K, loads), f.S, f.split, c0, c1);
  float acc[G][1][NT][4];
  q8_body<FMT, 1, G, NT>(mat, row0, loads, scalePairs, x, T, K, c0, c1, acc);
  mma_finish_emit_n<1, G, NT>(acc, T, f.S, f.split, part + f.partOff + (u64)f.tile * f.S * 16 * T, counters + f.counterOff + f.tile, Q8StoreRows<1>{&mt, f.tile * 16});
}

// gemv_mma_<fmt>silu: block (tile, split) takes rows tile·16.. of gate (m-tile 0) and of up (m-tile
// 1), in chunk groups as the single kernel's two-m-tile plan (which the host checks gate and up get),
// so each sum is bitwise the single kernel's. part: [tiles][S][2][16][T].
template <int FMT, int NT>
__device__ __forceinline__ void q8_silu(const Q8Matrix& gate, const Q8Matrix& up, float* y, int loads, const float* x, float* part, u32* counters,
                                        int T, int K, int S) {
  __shared__ uint2 scalePairs[FMT == 2 ? 256 : 1];
  if constexpr (FMT == 2) nvfp4_scale_pairs(scalePairs);
  constexpr int G = Group<2>::G;
  const int tile = blockIdx.x, split = blockIdx.y;
  const Q8Matrix* mat[2] = {&gate, &up};
  const int row0[2] = {tile * 16, tile * 16};
  int c0, c1;
  split_range(q8_chunks<FMT>(K, loads), S, split, c0, c1);
  float acc[G][2][NT][4];
  q8_body<FMT, 2, G, NT>(mat, row0, loads, scalePairs, x, T, K, c0, c1, acc);
  mma_finish_emit_n<2, G, NT>(acc, T, S, split, part + (u64)tile * S * 2 * 16 * T, counters + tile, Q8StoreSilu{&gate, &up, y, tile * 16});
}

// fp8 / int8 pass (codes, row scales); nvfp4 (tiled codes, loads a row, block scales, global scale).
#define Q8_MAT(P) Q8Matrix{P##w, P##s, nullptr, 1.f, P##b, P##y, P##n}
#define NVFP4_MAT(P) Q8Matrix{P##w, nullptr, P##bs, P##gs, P##b, P##y, P##n}

#define Q8_SINGLE(FMT, NAME, R, NT, NS)                                                                                            \
  extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2) gemv_mma_##NAME##_r##R##NS(                                         \
      const u8* w, const float* rowScale, const float* x, const float* bias, float* y, float* part, u32* counters, int T, int N,   \
      int K, int S) {                                                                                                              \
    q8_single<FMT, R, NT>(Q8Matrix{w, rowScale, nullptr, 1.f, bias, y, N}, 0, x, part, counters, T, K, S);                        \
  }
#define Q8_FUSED(FMT, NAME, NT, NS)                                                                                                \
  extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2) gemv_mma_##NAME##many##NS(                                          \
      const float* x, int T, int K, float* part, u32* counters,                                                                    \
      const u8* m0w, const float* m0s, const float* m0b, float* m0y, int m0n, int S0,                                              \
      const u8* m1w, const float* m1s, const float* m1b, float* m1y, int m1n, int S1,                                              \
      const u8* m2w, const float* m2s, const float* m2b, float* m2y, int m2n, int S2) {                                            \
    q8_many<FMT, NT>(Q8_MAT(m0), S0, Q8_MAT(m1), S1, Q8_MAT(m2), S2, 0, x, part, counters, T, K);                                  \
  }                                                                                                                                \
  extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2) gemv_mma_##NAME##silu##NS(                                          \
      const float* x, int T, int K, int N, float* part, u32* counters, int S, const u8* gw, const float* gs, const float* gb,       \
      const u8* uw, const float* us, const float* ub, float* y) {                                                                  \
    q8_silu<FMT, NT>(Q8Matrix{gw, gs, nullptr, 1.f, gb, nullptr, N}, Q8Matrix{uw, us, nullptr, 1.f, ub, nullptr, N}, y, 0, x, part, \
                     counters, T, K, S);                                                                                           \
  }

// Up to 8 tokens a launch, and (_n2) up to 16: two n-tiles, each decoded A fragment used twice.
Q8_SINGLE(0, fp8, 1, 1, ) Q8_SINGLE(0, fp8, 2, 1, ) Q8_SINGLE(1, int8, 1, 1, ) Q8_SINGLE(1, int8, 2, 1, )
Q8_FUSED(0, fp8, 1, ) Q8_FUSED(1, int8, 1, )
Q8_SINGLE(0, fp8, 1, 2, _n2) Q8_SINGLE(0, fp8, 2, 2, _n2) Q8_SINGLE(1, int8, 1, 2, _n2) Q8_SINGLE(1, int8, 2, 2, _n2)
Q8_FUSED(0, fp8, 2, _n2) Q8_FUSED(1, int8, 2, _n2)

#define NVFP4_KERNELS(NT, NS)                                                                                                      \
  extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2) gemv_mma_nvfp4_r1##NS(                                              \
      const uint4* w, int loads, const u8* blockScales, float globalScale, const float* x, const float* bias, float* y,            \
      float* part, u32* counters, int T, int N, int K, int S) {                                                                    \
    q8_single<2, 1, NT>(Q8Matrix{w, nullptr, blockScales, globalScale, bias, y, N}, loads, x, part, counters, T, K, S);            \
  }                                                                                                                                \
  extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2) gemv_mma_nvfp4_r2##NS(                                              \
      const uint4* w, int loads, const u8* blockScales, float globalScale, const float* x, const float* bias, float* y,            \
      float* part, u32* counters, int T, int N, int K, int S) {                                                                    \
    q8_single<2, 2, NT>(Q8Matrix{w, nullptr, blockScales, globalScale, bias, y, N}, loads, x, part, counters, T, K, S);            \
  }                                                                                                                                \
  extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2) gemv_mma_nvfp4many##NS(                                             \
      const float* x, int T, int K, int loads, float* part, u32* counters,                                                         \
      const uint4* m0w, const u8* m0bs, float m0gs, const float* m0b, float* m0y, int m0n, int S0,                                 \
      const uint4* m1w, const u8* m1bs, float m1gs, const float* m1b, float* m1y, int m1n, int S1,                                 \
      const uint4* m2w, const u8* m2bs, float m2gs, const float* m2b, float* m2y, int m2n, int S2) {                               \
    q8_many<2, NT>(NVFP4_MAT(m0), S0, NVFP4_MAT(m1), S1, NVFP4_MAT(m2), S2, loads, x, part, counters, T, K);                       \
  }                                                                                                                                \
  extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2) gemv_mma_nvfp4silu##NS(                                             \
      const float* x, int T, int K, int N, int loads, float* part, u32* counters, int S, const uint4* gw, const u8* gbs, float ggs, \
      const float* gb, const uint4* uw, const u8* ubs, float ugs, const float* ub, float* y) {                                     \
    q8_silu<2, NT>(Q8Matrix{gw, nullptr, gbs, ggs, gb, nullptr, N}, Q8Matrix{uw, nullptr, ubs, ugs, ub, nullptr, N}, y, loads, x,  \
                   part, counters, T, K, S);                                                                                       \
  }
NVFP4_KERNELS(1, )
NVFP4_KERNELS(2, _n2)

// ---- streamed nvfp4: the same sums from a shared-memory ring the copy engine fills (sm_90+) ----------
//
// As gemv-mma-int4.cu's streamed kernels (read their header for why): one producer warp a block
// bulk-copies each stage — 16 tiles (4,096 columns) of the item's 16·R rows and their block scales —
// into a ring; the 8 consumer warps take x as bf16 pairs from shared memory (stream_stage_x, pairs of
// neighbouring columns, as the B fragments above hold them) and the scale pairs from a table there.
// Blocks are persistent and walk items (a plan's row tile: R m-tiles), summing each exactly as the
// kernels above do under their plan (nvfp4s_body says how), so every output is bitwise theirs.
// gemv-mma-q8.ts says where they run (nvfp4StreamPlan: K % 256 = 0, so no padding and every row's
// block scales start on 16 bytes).
//
// Shared memory (dynamic): the ring's stages (1 to F4S_MAX_STAGES, as the host chose) of 16·R rows (codes,
// then block scales), then x (T rows of K / 8 + 1 uint4), then the splits' sums.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900  // (undefined: nvcc's host pass)
#define F4S_TILES 16                         // tiles a stage (256 columns each): 32 chunks
#define F4S_MAX_STAGES 4                     // ring stages at most (gemv-mma-q8.ts nvfp4StreamPlan chooses 1–4 a launch)
#define F4S_ROW (F4S_TILES * 128 + 64)       // a stage's row of codes, + 64 bytes so each 8 lanes of a load hit 8 bank groups
#define F4S_SROW (F4S_TILES * 16 + 16)       // a stage's row of block scales, + 16 so the 8 rows g fall on 8 banks
#define F4S_THREADS (MMA_THREADS + 32)

// An item: rows row0[r].. (16) of mat[r] for each m-tile r, over all of K, summed as the classic kernels
// sum them under a plan of S splits.
template <int R>
struct F4Item {
  Q8Matrix mat[R];
  int row0[R];
  int S;
};

// One chunk (global index c, index cl in the stage) of the item's R m-tiles into acc: the lane's codes and
// block scale codes from the stage, x from the staged pairs (xl: the lane's token row + 2q).
template <int R>
__device__ __forceinline__ void nvfp4s_chunk(const unsigned char* stage, int cl, int c, const uint4* xl, const uint2* scalePairs, float (&acc)[R][1][4]) {
  const int lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int tile = cl >> 1, half = cl & 1;
  uint4 a[R][2];
  u32 sc[R][2][2];
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int row = 16 * r + 8 * h + g;
      a[r][h] = *reinterpret_cast<const uint4*>(stage + row * F4S_ROW + 128 * tile + 16 * (4 * half + q));
      // Blocks b and b + 8 of the tile, b = 4·half + q (the loads' blocks, as nvfp4_rows).
      const unsigned char* s = stage + 16 * R * F4S_ROW + row * F4S_SROW + 16 * tile + 4 * half + q;
      sc[r][h][0] = s[0];
      sc[r][h][1] = s[8];
    }
#pragma unroll
  for (int hf = 0; hf < 2; hf++) {
    // The half's 64-column run (nvfp4_rows's `run`), this lane's 16 columns at + 16q: uint4 2q, 2q + 1 of it.
    const int run = (c >> 1) * 256 + 128 * hf + 64 * (c & 1);
    u32 b[1][2][4];
#pragma unroll
    for (int j = 0; j < 2; j++) {
      const uint4 v = xl[(run >> 3) + j];
      b[0][j][0] = v.x, b[0][j][1] = v.y, b[0][j][2] = v.z, b[0][j][3] = v.w;
    }
    nvfp4_half<R, 1>(a, sc, hf, b, scalePairs, acc);
  }
}

// The body: items blockIdx.x, + gridDim.x, ... of `items`; item(i) says what item i is; emit(it, m, t, s)
// writes row m of the item's m-tiles for token t from their sums s[r].
//
// The sums are the classic kernels': their split s of S (chunks [s·per, (s + 1)·per)) has its groups of
// G chunks (Group<R>), group j summed by warp j % 8 into accumulators acc[u], u the chunk's place in its
// group; a warp's G accumulators are added in order, the 8 warps' sums in warp order and the S splits'
// in split order (mma_finish_emit_n). Here each such "unit" (split s, classic warp w) — its groups j ≡ w
// (mod 8) — is summed by one consumer warp, (s·⌈per / G⌉ + w) % 8, which spreads a stage's groups over
// the 8 warps; it keeps the unit's G accumulators and, after the unit's last group, leaves their sum in
// shared memory; then one thread per output adds the units in the classic order. A group may straddle
// two stages; a warp walks the stages of an item in order (wait_stage), arriving on each once it is done.
template <int R, class ItemOf, class Emit>
__device__ __forceinline__ void nvfp4s_body(int items, const ItemOf& item, const Emit& emit, int loads, const float* __restrict__ x, int T, int K,
                                            int stages) {
  extern __shared__ __align__(128) unsigned char f4s_smem[];
  constexpr int ROWS = 16 * R, STAGE_BYTES = ROWS * (F4S_ROW + F4S_SROW), CHUNKS = 2 * F4S_TILES;
  constexpr int G = Group<R>::G;
  __shared__ __align__(8) u64 full[F4S_MAX_STAGES], empty[F4S_MAX_STAGES];
  __shared__ uint2 scalePairs[256];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int KT = loads >> 3;  // tiles a row (K % 256 = 0: none of them padding)
  const int chunks = 2 * KT, stagesPerItem = (KT + F4S_TILES - 1) / F4S_TILES;
  stream_ring_init(full, empty, stages);
  if (warp == MMA_WARPS) {
    stream_produce(items, item, stagesPerItem, stages, full, empty, [&](const F4Item<R>& it, int st, int slot, u64* landed) {
      // Lane l copies row l % 16 of m-tile l / 16. (Selects of values, not it.mat[lane >> 4]: an index
      // into `it` would put it in local memory.)
      const bool second = R == 2 && lane >= 16;
      const uint4* w = static_cast<const uint4*>(second ? it.mat[R - 1].w : it.mat[0].w);
      const u8* blockScales = second ? it.mat[R - 1].blockScales : it.mat[0].blockScales;
      const int row = min((second ? it.row0[R - 1] : it.row0[0]) + (lane & 15), (second ? it.mat[R - 1].N : it.mat[0].N) - 1);
      const int kt = st * F4S_TILES, tiles = min(F4S_TILES, KT - kt);
      if (lane == 0) mbar_expect(landed, ROWS * 144 * tiles);  // 128 bytes of codes and 16 block scales a tile
      __syncwarp();
      if (lane < ROWS) {
        unsigned char* stage = f4s_smem + slot * STAGE_BYTES;
        bulk_copy(stage + lane * F4S_ROW, w + (u64)row * loads + 8 * kt, 128 * tiles, landed);
        bulk_copy(stage + ROWS * F4S_ROW + lane * F4S_SROW, blockScales + (u64)row * (K >> 4) + 16 * kt, 16 * tiles, landed);
      }
    });
    return;
  }
  for (int i = threadIdx.x; i < 256; i += MMA_THREADS) {
    const float sv = e4m3_to_f32((u32)i);
    scalePairs[i] = make_uint2(bf16x2(0.5f * sv, 0.5f * sv), bf16x2(-96.f * sv, -96.f * sv));  // nvfp4_scale_pairs's
  }
  uint4* xs = reinterpret_cast<uint4*>(f4s_smem + stages * STAGE_BYTES);
  stream_stage_x<false>(xs, x, T, K, K >> 3);  // (ends with the consumers meeting: the table is made too)
  // The units' sums: [S][8 warps][R][32 lanes] float4 (the lane's D fragment), after x.
  float4* units = reinterpret_cast<float4*>(xs + T * ((K >> 3) + 1));
  const auto unit = [&](int sp, int w, int r) -> float4& { return units[((sp * MMA_WARPS + w) * R + r) * 32 + lane]; };
  const int g = lane >> 2, q = lane & 3;
  // Token rows past T read row T − 1: they feed only output columns that are never written.
  const uint4* xl = xs + min(g, T - 1) * ((K >> 3) + 1) + 2 * q;
  int s = 0, phase = 0;
  for (int i = blockIdx.x; i < items; i += gridDim.x) {
    if (i + gridDim.x >= items) pdl_trigger();  // this block's last item: the kernel after may start
    const F4Item<R> it = item(i);
    const int per = (chunks + it.S - 1) / it.S;  // chunks a split (split_range's)
    const int groupsPerSplit = (per + G - 1) / G;
    int cur = -1;  // the item's stage this warp has waited for and not yet released
    // Hold stage st: release the ones before it (arrive on their empty barriers) and wait until it has landed.
    const auto wait_stage = [&](int st) {
      for (; cur < st; cur++) {
        if (cur >= 0) {
          __syncwarp();
          if (lane == 0) mbar_arrive(&empty[s]);
          if (++s == stages) s = 0, phase ^= 1;
        }
        if (cur + 1 < stagesPerItem) mbar_wait(&full[s], phase);
      }
    };
    for (int sp = 0; sp < it.S; sp++) {
      const int c0 = sp * per, c1 = min(chunks, c0 + per);
      const int w = (warp - sp * groupsPerSplit) & 7;  // the classic warp whose unit this warp sums
      float acc[G][R][1][4];
#pragma unroll
      for (int u = 0; u < G; u++)
#pragma unroll
        for (int r = 0; r < R; r++) acc[u][r][0][0] = acc[u][r][0][1] = acc[u][r][0][2] = acc[u][r][0][3] = 0.f;
      for (int cg = c0 + w * G; cg < c1; cg += MMA_WARPS * G) {
        const int n = min(G, c1 - cg);  // the group's chunks
        wait_stage(cg / CHUNKS);
        if (n == G && (cg + G - 1) / CHUNKS == cur) {
          // A whole group in the stage held (the usual case): no wait or branch between its chunks, so
          // their G independent accumulators' loads, decodes and mmas interleave, as in the classic kernel.
          const unsigned char* stage = f4s_smem + s * STAGE_BYTES;
#pragma unroll
          for (int u = 0; u < G; u++) nvfp4s_chunk<R>(stage, (cg + u) % CHUNKS, cg + u, xl, scalePairs, acc[u]);
        } else {
#pragma unroll
          for (int u = 0; u < G; u++) {
            if (u >= n) break;  // the same for the whole warp
            wait_stage((cg + u) / CHUNKS);
            nvfp4s_chunk<R>(f4s_smem + s * STAGE_BYTES, (cg + u) % CHUNKS, cg + u, xl, scalePairs, acc[u]);
          }
        }
      }
      // The unit's sum (0 where it has no chunks, as an idle classic warp's).
#pragma unroll
      for (int r = 0; r < R; r++) {
        float v[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
          v[e] = acc[0][r][0][e];
#pragma unroll
          for (int u = 1; u < G; u++) v[e] += acc[u][r][0][e];
        }
        unit(sp, w, r) = make_float4(v[0], v[1], v[2], v[3]);
      }
    }
    wait_stage(stagesPerItem);  // release the rest
    stream_units_emit<R>(units, it, it.S, T, emit);
  }
}

// gemv_mma_nvfp4s_r<R>: one item a plan's row tile (R m-tiles), summed as gemv_mma_nvfp4_r<R> with S
// splits sums it (part and counters unused: the parameters are gemv_mma_nvfp4_r<R>'s).
template <int R>
__device__ __forceinline__ void nvfp4s_single(const Q8Matrix& mt, int loads, const float* x, int T, int K, int S, int stages) {
  const auto item = [&](int i) {
    F4Item<R> it;
#pragma unroll
    for (int r = 0; r < R; r++) it.mat[r] = mt, it.row0[r] = 16 * R * i + 16 * r;
    it.S = S;
    return it;
  };
  const auto emit = [&](const F4Item<R>& it, int m, int t, const float (&v)[R]) { Q8StoreRows<R>{&it.mat[0], it.row0[0]}(m, t, v); };
  nvfp4s_body<R>((mt.N + 16 * R - 1) / (16 * R), item, emit, loads, x, T, K, stages);
}

// gemv_mma_nvfp4smany: up to 3 matrices (one m-tile an item), each summed as the single kernel sums it.
__device__ __forceinline__ void nvfp4s_many(const Q8Matrix& m0, int S0, const Q8Matrix& m1, int S1, const Q8Matrix& m2, int S2, int loads,
                                            const float* x, int T, int K, int stages) {
  const int t0 = (m0.N + 15) >> 4, t1 = (m1.N + 15) >> 4, t2 = (m2.N + 15) >> 4;
  const auto item = [&](int i) {
    if (i < t0) return F4Item<1>{{m0}, {16 * i}, S0};
    if (i < t0 + t1) return F4Item<1>{{m1}, {16 * (i - t0)}, S1};
    return F4Item<1>{{m2}, {16 * (i - t0 - t1)}, S2};
  };
  const auto emit = [&](const F4Item<1>& it, int m, int t, const float (&v)[1]) { Q8StoreRows<1>{&it.mat[0], it.row0[0]}(m, t, v); };
  nvfp4s_body<1>(t0 + t1 + t2, item, emit, loads, x, T, K, stages);
}

// gemv_mma_nvfp4ssilu: gate and up rows of a tile in one item (the two-m-tile plan, never split), silu(g)·u out.
__device__ __forceinline__ void nvfp4s_silu(const Q8Matrix& gate, const Q8Matrix& up, float* y, int loads, const float* x, int T, int K, int stages) {
  const auto item = [&](int i) { return F4Item<2>{{gate, up}, {16 * i, 16 * i}, 1}; };
  const auto emit = [&](const F4Item<2>& it, int m, int t, const float (&v)[2]) { Q8StoreSilu{&it.mat[0], &it.mat[1], y, it.row0[0]}(m, t, v); };
  nvfp4s_body<2>((gate.N + 15) >> 4, item, emit, loads, x, T, K, stages);
}

// The parameters of the classic nvfp4 kernels (part, counters and, for silu, S unused), then the ring's
// stages. Grid: min(items, SMs) blocks of F4S_THREADS.
#define NVFP4S_SINGLE(R)                                                                                                           \
  extern "C" __global__ void __launch_bounds__(F4S_THREADS, 1) gemv_mma_nvfp4s_r##R(                                                \
      const uint4* w, int loads, const u8* blockScales, float globalScale, const float* x, const float* bias, float* y,            \
      float* part, u32* counters, int T, int N, int K, int S, int stages) {                                                        \
    nvfp4s_single<R>(Q8Matrix{w, nullptr, blockScales, globalScale, bias, y, N}, loads, x, T, K, S, stages);                     \
  }
NVFP4S_SINGLE(1)
NVFP4S_SINGLE(2)
extern "C" __global__ void __launch_bounds__(F4S_THREADS, 1) gemv_mma_nvfp4smany(
    const float* x, int T, int K, int loads, float* part, u32* counters,
    const uint4* m0w, const u8* m0bs, float m0gs, const float* m0b, float* m0y, int m0n, int S0,
    const uint4* m1w, const u8* m1bs, float m1gs, const float* m1b, float* m1y, int m1n, int S1,
    const uint4* m2w, const u8* m2bs, float m2gs, const float* m2b, float* m2y, int m2n, int S2, int stages) {
  nvfp4s_many(NVFP4_MAT(m0), S0, NVFP4_MAT(m1), S1, NVFP4_MAT(m2), S2, loads, x, T, K, stages);
}
extern "C" __global__ void __launch_bounds__(F4S_THREADS, 1) gemv_mma_nvfp4ssilu(
    const float* x, int T, int K, int N, int loads, float* part, u32* counters, int S, const uint4* gw, const u8* gbs, float ggs,
    const float* gb, const uint4* uw, const u8* ubs, float ugs, const float* ub, float* y, int stages) {
  nvfp4s_silu(Q8Matrix{gw, nullptr, gbs, ggs, gb, nullptr, N}, Q8Matrix{uw, nullptr, ubs, ugs, ub, nullptr, N}, y, loads, x, T, K, stages);
}
#endif
