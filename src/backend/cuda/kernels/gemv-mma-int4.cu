// Tensor-core GEMV for int4 (w4a16) weights in the tiled 4-bit layout, 1..8 tokens (1..16 in the _n2
// kernels, which multiply each decoded A fragment by two 8-token B tiles: a token's bits are the same):
// y[T, N] = x[T, K] · W[N, K]ᵀ (+ bias), x and y float32. One mma.sync.m16n8k16 (bf16 × bf16 →
// float32) does 16 rows × 16 k × 8 tokens, as gemv-mma.cu does for bf16 weights (read its header for
// the fragment shapes). Three entry points share one body: a matrix (gemv_mma_int4_*), up to three
// matrices in one grid (q/k/v: gemv_mma_int4many_*) and gate with up writing silu(g)·u
// (gemv_mma_int4silu_*); every output is bitwise what the single-matrix kernel (and silu_mul) gives.
//
// Exactness: the mma runs on the codes minus the zero point (integers in −15..15, exact in bf16) and
// x rounded to bf16 (cvt.rn), so every product is exact and sums are float32. A group's partial sum
// is multiplied by the group's float32 scale afterwards (scale × code is never rounded to bf16).
//
// Layout (quant-linear.cu, tiled_word): a row is `loads` 16-byte loads; load c holds the 16-column
// blocks b = c % 8 and b + 8 of tile c / 8 (256 columns): words 0–1 columns 16b..16b+15 ("half 0"),
// words 2–3 the same 16 columns + 128 ("half 1"). Nibble e of a word is its column e.
//
// Mapping: a warp takes whole tiles (256 columns) of its block's m-tiles (16 rows each). Lane (g, q)
// holds rows g and g + 8 and loads 8t + q and 8t + 4 + q of each: in each half, the 4 lanes q of a
// row cover two aligned 64-column runs. Each word (8 columns) feeds two mma steps: nibbles (0, 4) and
// (1, 5) are the lane's k-slots {2q, 2q+1} and {2q+8, 2q+9} of the first step, (2, 6) and (3, 7) of
// the second, and x is read at the same columns. A step's 16 k lie in one 64-column run, so with
// groups of ≥ 64 columns (or the whole row) a step never spans groups: the steps of a group go into a
// fresh float32 D, then acc += D · scale (row g and row g + 8 each by their own scale).
//
// Decoding: (W >> 4i) & 0x000f000f | 0x43004300 is the bf16 pair (128 + nibble i, 128 + nibble
// i + 4); one fma.rn.bf16x2 by 1 with −(128 + zero) gives nibble − zero exactly.
//
// Why it is shaped this way (H100, one token, Nsight Compute): the one-token int4 GEMV is bound by
// instructions as much as by memory (2 weights a byte), so the body keeps to the decode and the mma:
// x rows past T are not masked (they only feed output columns that are never written), padding is
// handled on a separate path, and addresses advance by whole tiles. Each warp loads its next tile
// (codes, scales, zero points) before it works on the current one, so a tile's loads are always in
// flight while the SM decodes.
//
// Split K: a block's 8 warps take tiles w, w + 8, ... of its range, then meet in shared memory in warp
// order. Where the grid would leave SMs idle (small N), S blocks split a row tile's tiles into S
// ranges; each writes its sums to `part`, and the last to finish (an atomic ticket per tile) adds the
// S partials in order 0..S−1 and the bias. S depends on N and K only, so a token's result is the same
// bits alone or in a batch of 8 (an mma's output column depends on its own B column only).
#include "gemv-mma.cuh"

// 16 bytes of a weight, read once, past L1 (the caller keeps the address in bounds).
__device__ __forceinline__ uint4 ld_w16(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

__device__ __forceinline__ float4 ld_x(const float* p) { return __ldg(reinterpret_cast<const float4*>(p)); }

// Nibbles i and i + 4 of w as the bf16 pair (nibble i − zero, nibble i + 4 − zero); negz = the pair
// −(128 + zero) twice.
__device__ __forceinline__ u32 nib_pair(u32 w, int i, u32 negz) {
  const u32 p = ((w >> (4 * i)) & 0x000f000fu) | 0x43004300u;
  return fma_bf16x2(p, 0x3f803f80u, negz);
}

// −(128 + zero) as a bf16 pair; a symmetric weight's zero is 8.
__device__ __forceinline__ u32 neg_zero(u32 z) { return (0xc300u | z) * 0x00010001u; }
#define I4_SYM_NEGZ 0xc308c308u
// Tiles a warp holds in registers: one worked on while the next loads. (3 measured the same on the
// H100 at every 8B shape, and spills in the zero-point variants.)
#ifndef I4_STAGES
#define I4_STAGES 2
#endif

// One matrix's pointers and rows.
struct I4Matrix {
  const uint4* w;
  const float* scales;       // float32 [N, G]
  const unsigned char* zeros;  // u8 [N, G], or null (symmetric)
  const float* bias;
  float* y;
  int N;
};

// What a warp holds for one tile of one m-tile: the codes (rows g and g + 8, the tile's two loads)
// and, per row, the scales and zero points of the tile's groups (each 64-column run with groups of
// 64, else each half).
template <bool ZP, bool G64>
struct I4Stage {
  static constexpr int NG = G64 ? 4 : 2;
  uint4 w[2][2];
  float s[2][NG];
  u32 z[2][ZP ? NG : 1];
};

// The lane's rows of one m-tile: pointers at tile 0.
struct I4Lane {
  const uint4* w[2];
  const float* s[2];
  const unsigned char* z[2];
};

template <bool ZP, bool G64>
__device__ __forceinline__ void i4_load(I4Stage<ZP, G64>& st, const I4Lane& ln, int t, int G, int groupShift) {
#pragma unroll
  for (int h = 0; h < 2; h++) {
    st.w[h][0] = ld_w16(ln.w[h] + 8 * t);
    st.w[h][1] = ld_w16(ln.w[h] + 8 * t + 4);
  }
#pragma unroll
  for (int gi = 0; gi < I4Stage<ZP, G64>::NG; gi++) {
    // Padding tiles may lie past the last group: clamp (their sums are zero anyway).
    const int grp = min((256 * t + (G64 ? 64 : 128) * gi) >> groupShift, G - 1);
#pragma unroll
    for (int h = 0; h < 2; h++) {
      st.s[h][gi] = __ldg(ln.s[h] + grp);
      if constexpr (ZP) st.z[h][gi] = __ldg(ln.z[h] + grp);
    }
  }
}

// The mma steps of one 64-column run (chunk c of half hf) into d[n] for each n-tile n (tokens
// 8n..8n + 7): each A fragment is decoded once and multiplied by every n-tile's B. Lanes whose 16
// columns lie past K use x = 0 (mask; the codes there are padding).
// b[n][j]: the B pairs of n-tile n for word j of the run, columns (e, e + 4) for e = 0..3.
template <bool ZP, bool G64, int NT>
__device__ __forceinline__ void i4_run_b(const I4Stage<ZP, G64>& st, int hf, int c, int gi, const u32 (&b)[NT][2][4], float (&d)[NT][4]) {
  u32 nz0 = I4_SYM_NEGZ, nz1 = I4_SYM_NEGZ;
  if constexpr (ZP) {
    nz0 = neg_zero(st.z[0][gi]);
    nz1 = neg_zero(st.z[1][gi]);
  }
#pragma unroll
  for (int j = 0; j < 2; j++) {
    const u32 w0 = word_at(st.w[0][c], 2 * hf + j), w1 = word_at(st.w[1][c], 2 * hf + j);
    const u32 a[8] = {nib_pair(w0, 0, nz0), nib_pair(w1, 0, nz1), nib_pair(w0, 1, nz0), nib_pair(w1, 1, nz1),
                      nib_pair(w0, 2, nz0), nib_pair(w1, 2, nz1), nib_pair(w0, 3, nz0), nib_pair(w1, 3, nz1)};
#pragma unroll
    for (int n = 0; n < NT; n++) {
      mma_bf16(d[n], a[0], a[1], a[2], a[3], b[n][j][0], b[n][j][1]);
      mma_bf16(d[n], a[4], a[5], a[6], a[7], b[n][j][2], b[n][j][3]);
    }
  }
}

// i4_run_b with x as floats (rounded to bf16 pairs here; `mask` zeroes lanes past K).
template <bool ZP, bool G64, int NT>
__device__ __forceinline__ void i4_run(const I4Stage<ZP, G64>& st, int hf, int c, int gi, const float4 (&x)[NT][2][2], u32 mask, float (&d)[NT][4]) {
  u32 b[NT][2][4];
#pragma unroll
  for (int n = 0; n < NT; n++)
#pragma unroll
    for (int j = 0; j < 2; j++) {
      const float4 x0 = x[n][j][0], x1 = x[n][j][1];
      b[n][j][0] = bf16x2(x0.x, x1.x) & mask, b[n][j][1] = bf16x2(x0.y, x1.y) & mask;
      b[n][j][2] = bf16x2(x0.z, x1.z) & mask, b[n][j][3] = bf16x2(x0.w, x1.w) & mask;
    }
  i4_run_b<ZP, G64, NT>(st, hf, c, gi, b, d);
}

// acc[n] += this tile's group sums · scales. xt[n]: n-tile n's x at the tile's first column for this
// lane (+ 16q); xrow[n]: its x row (an address in bounds for lanes past K). With one n-tile each
// half's x (32 floats a lane) is loaded at once, so a tile waits for x twice, not once a run; with
// more, each run's (16 floats a lane and n-tile), to stay in registers.
template <bool ZP, bool G64, int NT>
__device__ __forceinline__ void i4_compute(const I4Stage<ZP, G64>& st, int t, const float* const (&xt)[NT], const float* const (&xrow)[NT],
                                           int K, int q, float (&acc)[NT][4]) {
  constexpr int XC = NT == 1 ? 2 : 1;  // runs whose x is loaded together
  float d[NT][4];
#pragma unroll
  for (int hf = 0; hf < 2; hf++) {
    const int half = 256 * t + 128 * hf;
    if (half >= K) break;  // padding (the same for the whole warp)
    float4 x[XC][NT][2][2];
    u32 mask[2];
#pragma unroll
    for (int c = 0; c < 2; c++) mask[c] = half + 64 * c + 16 * q < K ? 0xffffffffu : 0u;
#pragma unroll
    for (int c = 0; c < 2; c++) {
      if (c % XC == 0) {
#pragma unroll
        for (int cc = 0; cc < XC; cc++)
#pragma unroll
          for (int n = 0; n < NT; n++) {
            const float* xc = mask[c + cc] ? xt[n] + 128 * hf + 64 * (c + cc) : xrow[n];
#pragma unroll
            for (int j = 0; j < 2; j++) x[cc][n][j][0] = ld_x(xc + 8 * j), x[cc][n][j][1] = ld_x(xc + 8 * j + 4);
          }
      }
      const int gi = G64 ? 2 * hf + c : hf;
      if (G64 || c == 0)
#pragma unroll
        for (int n = 0; n < NT; n++) d[n][0] = d[n][1] = d[n][2] = d[n][3] = 0.f;
      i4_run<ZP, G64, NT>(st, hf, c, gi, x[c % XC], mask[c], d);
      if (G64 || c == 1) {
        // D: d[0..1] row g, d[2..3] row g + 8 (tokens 2q, 2q + 1 of the n-tile).
#pragma unroll
        for (int n = 0; n < NT; n++) {
          acc[n][0] = fmaf(d[n][0], st.s[0][gi], acc[n][0]);
          acc[n][1] = fmaf(d[n][1], st.s[0][gi], acc[n][1]);
          acc[n][2] = fmaf(d[n][2], st.s[1][gi], acc[n][2]);
          acc[n][3] = fmaf(d[n][3], st.s[1][gi], acc[n][3]);
        }
      }
    }
  }
}

// The warp's share of R m-tiles (rows row0[r].. of mat[r]; R = 2 for gate and up) over tiles
// [kt0, kt1) for NT n-tiles of tokens: tiles kt0 + warp, + 8, ..., loaded I4_STAGES − 1 items ahead
// of their use.
template <int R, bool ZP, bool G64, int NT>
__device__ __forceinline__ void i4_rows(const I4Matrix* const (&mat)[R], const int (&row0)[R], int loads, int G, int groupShift,
                                        const float* __restrict__ x, int T, int K, int kt0, int kt1, float (&acc)[R][NT][4]) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int q = lane & 3;
  I4Lane ln[R];
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      // Rows past N read row N − 1 (their outputs are not written).
      const int row = min(row0[r] + g + 8 * h, mat[r]->N - 1);
      ln[r].w[h] = mat[r]->w + (u64)row * loads + q;
      ln[r].s[h] = mat[r]->scales + (u64)row * G;
      ln[r].z[h] = ZP ? mat[r]->zeros + (u64)row * G : nullptr;
    }
  // Token rows past T read row T − 1: they feed only output columns that are never written.
  const float* xrow[NT];
  const float* xl[NT];
#pragma unroll
  for (int n = 0; n < NT; n++) {
    xrow[n] = x + (u64)min(8 * n + g, T - 1) * K;
    xl[n] = xrow[n] + 16 * q;
  }

#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int n = 0; n < NT; n++) acc[r][n][0] = acc[r][n][1] = acc[r][n][2] = acc[r][n][3] = 0.f;
  // Work items: (tile kt0 + warp + 8k, m-tile r) for k = 0, 1, ... and r = 0..R−1, in that order.
  // I4_STAGES of them are in registers: item i is worked on while items i + 1 .. i + I4_STAGES − 1
  // are loading. The loop is unrolled over lcm(I4_STAGES, R) items so every stage and m-tile index is
  // a constant (the arrays stay in registers).
  constexpr int L = R == 1 ? I4_STAGES : (I4_STAGES % 2 ? 2 * I4_STAGES : I4_STAGES);
  const int first = kt0 + warp;
  const int items = first < kt1 ? R * ((kt1 - first + MMA_WARPS - 1) / MMA_WARPS) : 0;
  I4Stage<ZP, G64> st[I4_STAGES];
#pragma unroll
  for (int u = 0; u < I4_STAGES - 1; u++)
    if (u < items) i4_load(st[u], ln[u % R], first + MMA_WARPS * (u / R), G, groupShift);
  for (int i0 = 0; i0 < items; i0 += L) {
#pragma unroll
    for (int u = 0; u < L; u++) {
      const int i = i0 + u;
      if (i >= items) break;
      const int ahead = i + I4_STAGES - 1;
      if (ahead < items) i4_load(st[(u + I4_STAGES - 1) % I4_STAGES], ln[(u + I4_STAGES - 1) % R], first + MMA_WARPS * (ahead / R), G, groupShift);
      const int t = first + MMA_WARPS * (i / R);
      const float* xt[NT];
#pragma unroll
      for (int n = 0; n < NT; n++) xt[n] = xl[n] + 256 * t;
      i4_compute<ZP, G64, NT>(st[u % I4_STAGES], t, xt, xrow, K, q, acc[u % R]);
    }
  }
}

// y = sum (+ bias) for the rows of an m-tile.
struct I4StoreRows {
  const I4Matrix* mat;
  int row0;
  __device__ __forceinline__ void operator()(int m, int t, const float (&s)[1]) const {
    const int row = row0 + m;
    if (row < mat->N) mat->y[(u64)t * mat->N + row] = mat->bias ? s[0] + mat->bias[row] : s[0];
  }
};

// y = silu(gate + bg) · (up + bu), silu_mul's expression (silu_times, common.cuh).
struct I4StoreSilu {
  const I4Matrix* gate;
  const I4Matrix* up;
  float* y;
  int row0;
  __device__ __forceinline__ void operator()(int m, int t, const float (&s)[2]) const {
    const int row = row0 + m;
    if (row >= gate->N) return;
    const float g = gate->bias ? s[0] + gate->bias[row] : s[0];
    const float u = up->bias ? s[1] + up->bias[row] : s[1];
    y[(u64)t * gate->N + row] = silu_times(g, u);
  }
};

// gemv_mma_int4[_zp][_g64][_n2]: block (tile, split) takes rows tile·16.. and tile range split of S,
// for up to 8 tokens (16 with _n2: two n-tiles, each A fragment decoded once for both).
// part: float32 [tiles][S][16][T], counters: u32 per tile, zero between launches (used when S > 1).
template <bool ZP, bool G64, int NT>
__device__ __forceinline__ void i4_single(const I4Matrix& mt, int loads, int G, int groupShift, const float* x, float* part, u32* counters,
                                          int T, int K, int S) {
  const int tile = blockIdx.x, split = blockIdx.y;
  const I4Matrix* mat[1] = {&mt};
  const int row0[1] = {tile * 16};
  int kt0, kt1;
  split_range(loads >> 3, S, split, kt0, kt1);
  float acc[1][1][NT][4];
  i4_rows<1, ZP, G64, NT>(mat, row0, loads, G, groupShift, x, T, K, kt0, kt1, acc[0]);
  mma_finish_emit_n<1, 1, NT>(acc, T, S, split, part + (u64)tile * S * 16 * T, counters + tile, I4StoreRows{&mt, tile * 16});
}

// gemv_mma_int4many[_zp][_g64][_n2]: up to 3 matrices (N = 0: absent), one m-tile a block, laid out as
// fused_slot says (gemv-mma.cuh). S_i is what the single-matrix kernel uses for N_i, so every output
// is bitwise that kernel's.
template <bool ZP, bool G64, int NT>
__device__ __forceinline__ void i4_many(const I4Matrix& m0, int S0, const I4Matrix& m1, int S1, const I4Matrix& m2, int S2, int loads, int G,
                                        int groupShift, const float* x, float* part, u32* counters, int T, int K) {
  const FusedSlot f = fused_slot(blockIdx.x, {m0.N, m1.N, m2.N}, {S0, S1, S2}, T);
  const I4Matrix mt = f.matrix == 0 ? m0 : f.matrix == 1 ? m1 : m2;
  const I4Matrix* mat[1] = {&mt};
  const int row0[1] = {f.tile * 16};
  int kt0, kt1;
  split_range(loads >> 3, f.S, f.split, kt0, kt1);
  float acc[1][1][NT][4];
  i4_rows<1, ZP, G64, NT>(mat, row0, loads, G, groupShift, x, T, K, kt0, kt1, acc[0]);
  mma_finish_emit_n<1, 1, NT>(acc, T, f.S, f.split, part + f.partOff + (u64)f.tile * f.S * 16 * T, counters + f.counterOff + f.tile,
                              I4StoreRows{&mt, f.tile * 16});
}

// gemv_mma_int4silu[_zp][_g64][_n2]: block (tile, split) takes rows tile·16.. of gate (m-tile 0) and
// of up (m-tile 1). part: [tiles][S][2][16][T].
template <bool ZP, bool G64, int NT>
__device__ __forceinline__ void i4_silu(const I4Matrix& gate, const I4Matrix& up, float* y, int loads, int G, int groupShift, const float* x,
                                        float* part, u32* counters, int T, int K, int S) {
  const int tile = blockIdx.x, split = blockIdx.y;
  const I4Matrix* mat[2] = {&gate, &up};
  const int row0[2] = {tile * 16, tile * 16};
  int kt0, kt1;
  split_range(loads >> 3, S, split, kt0, kt1);
  float acc[1][2][NT][4];
  i4_rows<2, ZP, G64, NT>(mat, row0, loads, G, groupShift, x, T, K, kt0, kt1, acc[0]);
  mma_finish_emit_n<2, 1, NT>(acc, T, S, split, part + (u64)tile * S * 2 * 16 * T, counters + tile, I4StoreSilu{&gate, &up, y, tile * 16});
}

#define I4_KERNELS(SUFFIX, ZP, G64, NT)                                                                                            \
  extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2) gemv_mma_int4##SUFFIX(                                               \
      const uint4* w, int loads, const float* s, const unsigned char* z, int G, int groupShift, const float* x, const float* b,     \
      float* y, float* part, u32* counters, int T, int N, int K, int S) {                                                           \
    i4_single<ZP, G64, NT>(I4Matrix{w, s, z, b, y, N}, loads, G, groupShift, x, part, counters, T, K, S);                             \
  }                                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2) gemv_mma_int4many##SUFFIX(                                           \
      const float* x, int T, int K, int loads, int G, int groupShift, float* part, u32* counters,                                   \
      const uint4* w0, const float* s0, const unsigned char* z0, const float* b0, float* y0, int n0, int S0,                        \
      const uint4* w1, const float* s1, const unsigned char* z1, const float* b1, float* y1, int n1, int S1,                        \
      const uint4* w2, const float* s2, const unsigned char* z2, const float* b2, float* y2, int n2, int S2) {                      \
    i4_many<ZP, G64, NT>(I4Matrix{w0, s0, z0, b0, y0, n0}, S0, I4Matrix{w1, s1, z1, b1, y1, n1}, S1, I4Matrix{w2, s2, z2, b2, y2, n2},  \
                         S2, loads, G, groupShift, x, part, counters, T, K);                                                        \
  }                                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2) gemv_mma_int4silu##SUFFIX(                                           \
      const float* x, int T, int K, int N, int loads, int G, int groupShift, float* part, u32* counters, int S,                    \
      const uint4* gw, const float* gs, const unsigned char* gz, const float* gb,                                                    \
      const uint4* uw, const float* us, const unsigned char* uz, const float* ub, float* y) {                                       \
    i4_silu<ZP, G64, NT>(I4Matrix{gw, gs, gz, gb, nullptr, N}, I4Matrix{uw, us, uz, ub, nullptr, N}, y, loads, G, groupShift, x,     \
                         part, counters, T, K, S);                                                                                  \
  }

I4_KERNELS(, false, false, 1)
I4_KERNELS(_zp, true, false, 1)
I4_KERNELS(_g64, false, true, 1)
I4_KERNELS(_zp_g64, true, true, 1)
I4_KERNELS(_n2, false, false, 2)
I4_KERNELS(_zp_n2, true, false, 2)
I4_KERNELS(_g64_n2, false, true, 2)
I4_KERNELS(_zp_g64_n2, true, true, 2)

// ---- streamed: the same sums from a shared-memory ring the copy engine fills (sm_90+) ---------------
//
// Why (bench/probes/int4-stream.cu, H100, one token): with a tile a warp in flight in registers, the
// kernels above reach 1.3–1.6 TB/s where a plain read of the same bytes reaches 2.4–2.7; a warp waits a
// memory latency per tile. Here one producer warp a block bulk-copies (cp.async.bulk) each stage — 16
// tiles of the item's 16 rows (32 for gate and up), their scales and zero points — into a ring, as far
// ahead as the ring allows, and the 8 consumer warps take x as bf16 pairs from shared memory, rounded
// once per block. Blocks are persistent (one an SM) and walk row tiles, summing each as the kernels
// above sum it under their plan, K splits included (i4s_body says how), so every output is bitwise
// theirs (tested) and a token's bits do not depend on which kernel ran. Measured in the probe (14336×4096 at one token, classic 23.5 µs): stages of 8
// tiles, twice the copies a byte, 24.1 µs against 17.4 with 16; scales copied 4 bytes a thread
// (cp.async) or loaded by the consumers left the ring short (consumers waiting on it). gemv-mma-int4.ts
// says where these kernels run.
//
// Shared memory (dynamic): the ring's stages (1 to I4S_MAX_STAGES, as the host chose) of 16·R rows of codes, scales and zero points (if any), then x
// (stream_stage_x, gemv-mma.cuh: T token rows of 4 · `loads` + 1 uint4, the bf16 pairs (c, c + 4), c = 0..3,
// of each 8 columns), then the splits' sums (i4s_body).
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900  // (undefined: nvcc's host pass)
#define I4S_MAX_STAGES 4  // ring stages at most, 16 · R rows each (gemv-mma-int4.ts int4StreamPlan chooses a launch's)
#ifndef I4S_TILES                     // (TACHYON_NVRTC_DEFINES may set it to probe; gemv-mma-int4.ts sizes for 16)
#define I4S_TILES 16                  // tiles a stage (a multiple of 8: warp w takes tiles w, w + 8, ...)
#endif
#define I4S_ROW (I4S_TILES * 128 + 64)   // a stage's row of codes, + 64 bytes so each 8 lanes of a load hit 8 bank groups
#define I4S_SROW (4 * (4 * I4S_TILES + 12))  // a stage's row of scales: groups of 64 from a 16-byte start, + 4 floats for the banks
#define I4S_ZROW (4 * I4S_TILES + 48)    // a stage's row of zero points: from and to 16-byte bounds, + 16 for the banks
#define I4S_STAGE_ROW(ZP) (I4S_ROW + I4S_SROW + ((ZP) ? I4S_ZROW : 0))  // (symmetric weights leave out the zero points)
#define I4S_THREADS (MMA_THREADS + 32)

// An item: the R m-tiles of one row tile (rows row0.. of mat[r]) over all of K, summed as the kernels
// above sum it when their plan splits K into S ranges.
template <int R>
struct I4Item {
  I4Matrix mat[R];
  int row0, S;
};

// A stage's groups: [g0, g1) for tiles [kt, kt + n).
__device__ __forceinline__ void i4s_groups(int kt, int n, int G, int groupShift, int& g0, int& g1) {
  g0 = (256 * kt) >> groupShift;
  g1 = (int)min((u64)G, ((u64)256 * (kt + n) + (1ull << groupShift) - 1) >> groupShift);  // groupShift 31: one group a row
}

// The body: items blockIdx.x, + gridDim.x, ... of `items`; item(i) says what item i is; emit(it, m, t,
// s) writes row m of the item's m-tiles for token t from their sums s[r]. A stage holds 16 tiles of the
// item's rows, their scales and zero points; warp w takes tiles w and w + 8 of each. Producer lane l
// bulk-copies row l % 16 of m-tile l / 16: its codes, scales and zero points, each widened to 16-byte
// bounds, which stay within the row as G % 4 = 0 (G % 16 = 0 with zero points).
//
// The sums are the classic kernels': their split s of S (tiles [s·per, (s + 1)·per)) has warp w sum
// tiles s·per + w, + 8, ... in order, the 8 warps' sums are added in warp order and the S splits' in
// split order. Here warp p meets exactly the tiles ≡ p (mod 8), so each such "unit" (s, w) is one warp's
// run of consecutive tiles: it sums them in order into a fresh accumulator and leaves the result in
// shared memory (units with no tiles leave 0, as an idle warp's sum); then one thread per output adds
// them in the classic order.
template <int R, bool ZP, bool G64, class ItemOf, class Emit>
__device__ __forceinline__ void i4s_body(int items, const ItemOf& item, const Emit& emit, int loads, int G, int groupShift,
                                         const float* __restrict__ x, int T, int K, int stages) {
  extern __shared__ __align__(128) unsigned char i4s_smem[];
  __shared__ __align__(8) u64 full[I4S_MAX_STAGES], empty[I4S_MAX_STAGES];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  constexpr int ROWS = 16 * R;
  constexpr int STAGE_BYTES = ROWS * I4S_STAGE_ROW(ZP);
  const int KT = loads >> 3;  // tiles a row
  stream_ring_init(full, empty, stages);
  const int stagesPerItem = (KT + I4S_TILES - 1) / I4S_TILES;
  if (warp == MMA_WARPS) {
    stream_produce(items, item, stagesPerItem, stages, full, empty, [&](const I4Item<R>& it, int st, int slot, u64* landed) {
      // Lane l copies row l % 16 of m-tile l / 16. (Selects of values, not it.mat[lane >> 4]: an index
      // into `it` would put it in local memory.)
      const bool second = R == 2 && lane >= 16;
      const I4Matrix m{second ? it.mat[R - 1].w : it.mat[0].w, second ? it.mat[R - 1].scales : it.mat[0].scales,
                       second ? it.mat[R - 1].zeros : it.mat[0].zeros, nullptr, nullptr, second ? it.mat[R - 1].N : it.mat[0].N};
      const int row = min(it.row0 + (lane & 15), m.N - 1);
      const int kt = st * I4S_TILES, tiles = min(I4S_TILES, KT - kt);
      // Scales: floats [g0 & ~3, g1 rounded up to 4); zero points: bytes [g0 & ~15, g1 rounded up to 16).
      int g0, g1;
      i4s_groups(kt, tiles, G, groupShift, g0, g1);
      const int sBytes = 4 * (((g1 + 3) & ~3) - (g0 & ~3)), zBytes = ZP ? ((g1 + 15) & ~15) - (g0 & ~15) : 0;
      if (lane == 0) mbar_expect(landed, ROWS * (128 * tiles + sBytes + zBytes));
      __syncwarp();
      if (lane < ROWS) {
        unsigned char* stage = i4s_smem + slot * STAGE_BYTES;
        bulk_copy(stage + lane * I4S_ROW, m.w + (u64)row * loads + 8 * kt, 128 * tiles, landed);
        bulk_copy(stage + ROWS * I4S_ROW + lane * I4S_SROW, m.scales + (u64)row * G + (g0 & ~3), sBytes, landed);
        if constexpr (ZP) bulk_copy(stage + ROWS * (I4S_ROW + I4S_SROW) + lane * I4S_ZROW, m.zeros + (u64)row * G + (g0 & ~15), zBytes, landed);
      }
    });
    return;
  }
  uint4* xs = reinterpret_cast<uint4*>(i4s_smem + stages * STAGE_BYTES);
  stream_stage_x<true>(xs, x, T, K, 4 * loads);
  // The units' sums: [S][8 warps][R][32 lanes] float4 (the lane's D fragment), after x.
  float4* units = reinterpret_cast<float4*>(xs + T * (4 * loads + 1));
  const auto unit = [&](int sp, int w, int r) -> float4& { return units[((sp * MMA_WARPS + w) * R + r) * 32 + lane]; };
  const int g = lane >> 2, q = lane & 3;
  // Token rows past T read row T − 1: they feed only output columns that are never written.
  const uint4* xl = xs + min(g, T - 1) * (4 * loads + 1) + 2 * q;
  int s = 0, phase = 0;
  float acc[R][4];
  for (int i = blockIdx.x; i < items; i += gridDim.x) {
    if (i + gridDim.x >= items) pdl_trigger();  // this block's last item: the kernel after may start
    const I4Item<R> it = item(i);
    const int per = (KT + it.S - 1) / it.S;  // tiles a split (split_range's)
    for (int sp = 0; sp < it.S; sp++)
#pragma unroll
      for (int r = 0; r < R; r++) unit(sp, (warp - sp * per) & 7, r) = make_float4(0.f, 0.f, 0.f, 0.f);
    int us = -1, uw = 0;  // the unit being summed: split us, classic warp uw
    const auto flush = [&]() {
#pragma unroll
      for (int r = 0; r < R; r++) unit(us, uw, r) = make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
    };
    for (int kt = 0; kt < KT; kt += I4S_TILES) {
      mbar_wait(&full[s], phase);
#pragma unroll
      for (int u = warp; u < I4S_TILES; u += MMA_WARPS) {
        const int t = kt + u;
        if (t >= KT) break;
        if (t >= (us + 1) * per) {  // the first tile of a unit (split us + 1 or later)
          if (us >= 0) flush();
          us = t / per;
          uw = (t - us * per) & 7;
#pragma unroll
          for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = 0.f;
        }
        const int g0 = (256 * kt) >> groupShift;  // the stage's first group (i4s_groups)
        const unsigned char* stage = i4s_smem + s * STAGE_BYTES;
        const unsigned char* codes = stage + g * I4S_ROW + 16 * q + 128 * u;
        const float* sc = reinterpret_cast<const float*>(stage + ROWS * I4S_ROW + g * I4S_SROW) - (g0 & ~3);
        const unsigned char* zs = stage + ROWS * (I4S_ROW + I4S_SROW) + g * I4S_ZROW - (g0 & ~15);
#pragma unroll
        for (int r = 0; r < R; r++) {
          I4Stage<ZP, G64> st;
#pragma unroll
          for (int h = 0; h < 2; h++) {
            const uint4* row = reinterpret_cast<const uint4*>(codes + (16 * r + 8 * h) * I4S_ROW);
            st.w[h][0] = row[0];
            st.w[h][1] = row[4];
#pragma unroll
            for (int gi = 0; gi < I4Stage<ZP, G64>::NG; gi++) {
              const int grp = min((256 * t + (G64 ? 64 : 128) * gi) >> groupShift, G - 1);
              st.s[h][gi] = sc[(16 * r + 8 * h) * (I4S_SROW / 4) + grp];
              if constexpr (ZP) st.z[h][gi] = zs[(16 * r + 8 * h) * I4S_ZROW + grp];
            }
          }
          float d[1][4];
#pragma unroll
          for (int hf = 0; hf < 2; hf++) {
            const int half = 256 * t + 128 * hf;
            if (half >= K) break;  // padding (the same for the whole warp)
#pragma unroll
            for (int c = 0; c < 2; c++) {
              u32 b[1][2][4];
#pragma unroll
              for (int j = 0; j < 2; j++) {
                const uint4 v = xl[(half >> 3) + 8 * c + j];
                b[0][j][0] = v.x, b[0][j][1] = v.y, b[0][j][2] = v.z, b[0][j][3] = v.w;
              }
              const int gi = G64 ? 2 * hf + c : hf;
              if (G64 || c == 0) d[0][0] = d[0][1] = d[0][2] = d[0][3] = 0.f;
              i4_run_b<ZP, G64, 1>(st, hf, c, gi, b, d);
              if (G64 || c == 1) {
                acc[r][0] = fmaf(d[0][0], st.s[0][gi], acc[r][0]);
                acc[r][1] = fmaf(d[0][1], st.s[0][gi], acc[r][1]);
                acc[r][2] = fmaf(d[0][2], st.s[1][gi], acc[r][2]);
                acc[r][3] = fmaf(d[0][3], st.s[1][gi], acc[r][3]);
              }
            }
          }
        }
      }
      __syncwarp();
      if (lane == 0) mbar_arrive(&empty[s]);
      if (++s == stages) s = 0, phase ^= 1;
    }
    if (us >= 0) flush();
    stream_units_emit<R>(units, it, it.S, T, emit);
  }
}

// gemv_mma_int4s*: one item a row tile, summed as gemv_mma_int4 with S splits sums it (part and counters
// are not used: the parameters are gemv_mma_int4's).
template <bool ZP, bool G64>
__device__ __forceinline__ void i4s_single(const I4Matrix& mt, int loads, int G, int groupShift, const float* x, int T, int K, int S, int stages) {
  const auto item = [&](int i) { return I4Item<1>{{mt}, 16 * i, S}; };
  const auto emit = [&](const I4Item<1>& it, int m, int t, const float (&v)[1]) { I4StoreRows{&it.mat[0], it.row0}(m, t, v); };
  i4s_body<1, ZP, G64>((mt.N + 15) >> 4, item, emit, loads, G, groupShift, x, T, K, stages);
}

// gemv_mma_int4smany*: up to 3 matrices, each summed as the single kernel sums it (S_i splits).
template <bool ZP, bool G64>
__device__ __forceinline__ void i4s_many(const I4Matrix& m0, int S0, const I4Matrix& m1, int S1, const I4Matrix& m2, int S2, int loads, int G,
                                         int groupShift, const float* x, int T, int K, int stages) {
  const int t0 = (m0.N + 15) >> 4, t1 = (m1.N + 15) >> 4, t2 = (m2.N + 15) >> 4;
  const auto item = [&](int i) {
    if (i < t0) return I4Item<1>{{m0}, 16 * i, S0};
    if (i < t0 + t1) return I4Item<1>{{m1}, 16 * (i - t0), S1};
    return I4Item<1>{{m2}, 16 * (i - t0 - t1), S2};
  };
  const auto emit = [&](const I4Item<1>& it, int m, int t, const float (&v)[1]) { I4StoreRows{&it.mat[0], it.row0}(m, t, v); };
  i4s_body<1, ZP, G64>(t0 + t1 + t2, item, emit, loads, G, groupShift, x, T, K, stages);
}

// gemv_mma_int4ssilu*: gate and up rows of a tile in one item, silu(g)·u out.
template <bool ZP, bool G64>
__device__ __forceinline__ void i4s_silu(const I4Matrix& gate, const I4Matrix& up, float* y, int loads, int G, int groupShift, const float* x, int T,
                                         int K, int S, int stages) {
  const auto item = [&](int i) { return I4Item<2>{{gate, up}, 16 * i, S}; };
  const auto emit = [&](const I4Item<2>& it, int m, int t, const float (&v)[2]) { I4StoreSilu{&it.mat[0], &it.mat[1], y, it.row0}(m, t, v); };
  i4s_body<2, ZP, G64>((gate.N + 15) >> 4, item, emit, loads, G, groupShift, x, T, K, stages);
}

// The parameters of gemv_mma_int4* (part and counters unused), then the ring's stages; the dynamic shared
// memory holds the ring, x and the units' sums. Grid: min(row tiles, SMs) blocks of I4S_THREADS.
#define I4S_KERNELS(SUFFIX, ZP, G64)                                                                                                \
  extern "C" __global__ void __launch_bounds__(I4S_THREADS, 1) gemv_mma_int4s##SUFFIX(                                               \
      const uint4* w, int loads, const float* s, const unsigned char* z, int G, int groupShift, const float* x, const float* b,     \
      float* y, float* part, u32* counters, int T, int N, int K, int S, int stages) {                                               \
    i4s_single<ZP, G64>(I4Matrix{w, s, z, b, y, N}, loads, G, groupShift, x, T, K, S, stages);                                  \
  }                                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(I4S_THREADS, 1) gemv_mma_int4smany##SUFFIX(                                           \
      const float* x, int T, int K, int loads, int G, int groupShift, float* part, u32* counters,                                \
      const uint4* w0, const float* s0, const unsigned char* z0, const float* b0, float* y0, int n0, int S0,                        \
      const uint4* w1, const float* s1, const unsigned char* z1, const float* b1, float* y1, int n1, int S1,                        \
      const uint4* w2, const float* s2, const unsigned char* z2, const float* b2, float* y2, int n2, int S2, int stages) {          \
    i4s_many<ZP, G64>(I4Matrix{w0, s0, z0, b0, y0, n0}, S0, I4Matrix{w1, s1, z1, b1, y1, n1}, S1, I4Matrix{w2, s2, z2, b2, y2, n2}, S2, \
                      loads, G, groupShift, x, T, K, stages);                                                                  \
  }                                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(I4S_THREADS, 1) gemv_mma_int4ssilu##SUFFIX(                                           \
      const float* x, int T, int K, int N, int loads, int G, int groupShift, float* part, u32* counters, int S,             \
      const uint4* gw, const float* gs, const unsigned char* gz, const float* gb,                                                    \
      const uint4* uw, const float* us, const unsigned char* uz, const float* ub, float* y, int stages) {                           \
    i4s_silu<ZP, G64>(I4Matrix{gw, gs, gz, gb, nullptr, N}, I4Matrix{uw, us, uz, ub, nullptr, N}, y, loads, G, groupShift, x, T, K, \
                      S, stages);                                                                               \
  }

I4S_KERNELS(, false, false)
I4S_KERNELS(_zp, true, false)
I4S_KERNELS(_g64, false, true)
I4S_KERNELS(_zp_g64, true, true)
#endif
