// Tensor-core GEMV for int4 (w4a16) weights in the tiled 4-bit layout, 1..8 tokens:
// y[T, N] = x[T, K] · W[N, K]ᵀ (+ bias), x and y float32. Opt-in (QuantizedWeights.decodeGemv =
// 'mma'); the FMA kernels of quant-linear.cu stay the default. At 8 tokens those are bound by 8
// float32 FMAs per weight element; here one mma.sync.m16n8k16 (bf16 × bf16 → float32) does 16 rows
// × 16 k × 8 tokens, as gemv-mma.cu does for bf16 weights (read its header for the fragment shapes).
//
// Exactness: the mma runs on the codes minus the zero point (integers in −15..15, exact in bf16) and
// x rounded to bf16 (cvt.rn), so every product is exact and sums are float32. A group's partial sum
// is multiplied by the group's float32 scale afterwards (scale × code is never rounded to bf16).
//
// Layout (quant-linear.cu, tiled_word): a row is `loads` 16-byte loads; load c holds the 16-column
// blocks b = c % 8 and b + 8 of tile c / 8 (256 columns): words 0–1 columns 16b..16b+15 ("half 0"),
// words 2–3 the same 16 columns + 128 ("half 1"). Nibble e of a word is its column e.
//
// Mapping: a "chunk" is half a tile's loads (4 loads, 128 columns). The 4 lanes q = 0..3 of a row
// take its loads 4c + q, i.e. blocks 4(c % 2) + q: in each half they cover one aligned run of 64
// columns. Each word (8 columns) feeds two mma steps: nibbles (0, 4) and (1, 5) are the lane's
// k-slots {2q, 2q+1} and {2q+8, 2q+9} of the first step, (2, 6) and (3, 7) of the second, and x is
// loaded at the same columns. A step's 16 k thus lie in one 64-column run, so with groups of ≥ 64
// columns (or the whole row) each half of a chunk is one group: 4 mma steps into a fresh float32 D,
// then acc += D · scale (row g and row g + 8 each by their own scale). Smaller groups would put one
// step across groups; the host keeps them on the FMA kernel.
//
// Decoding: (W >> 4i) & 0x000f000f | 0x43004300 is the bf16 pair (128 + nibble i, 128 + nibble
// i + 4); one fma.rn.bf16x2 by 1 with −(128 + zero) gives nibble − zero exactly.
//
// Split K: the block's 8 warps take chunks w, w + 8, ... of the block's range (GROUP chunks' loads
// issued before their mmas), then meet in shared memory in warp order. Where the grid would leave
// SMs idle (small N), gridDim.y = S blocks split a row tile's chunks into S ranges; each writes its
// sums to `part`, and the last to finish (an atomic ticket per tile) adds the S partials in order
// 0..S−1 and the bias. S depends on N and K only, so a token's result is the same bits alone or in
// a batch of 8 (rows of x past T are zero; an mma's output column depends on its own B column).
#include "gemv-mma.cuh"

// Chunks a warp loads before using them.
#define I4_GROUP 2

// Nibbles i and i + 4 of w as the bf16 pair (nibble i − zero, nibble i + 4 − zero); negz = the pair
// −(128 + zero) twice.
__device__ __forceinline__ u32 nib_pair(u32 w, int i, u32 negz) {
  const u32 p = ((w >> (4 * i)) & 0x000f000fu) | 0x43004300u;
  return fma_bf16x2(p, 0x3f803f80u, negz);
}

// R m-tiles (16 rows each) per block; block (tile, s) takes rows tile·16R.. and chunk range s of S.
// scales float32 [N, G], zeros u8 [N, G] or null (symmetric: 8); groupShift ≥ 6 (31: one group).
// part: float32 [S, T, N] scratch and counters: u32 per tile, zero between launches (used when S > 1).
template <int R>
__device__ __forceinline__ void gemv_mma_int4(const uint4* __restrict__ w, int loads, const float* __restrict__ scales,
                                              const unsigned char* __restrict__ zeros, int G, int groupShift,
                                              const float* __restrict__ x, const float* __restrict__ bias, float* __restrict__ y,
                                              float* __restrict__ part, u32* __restrict__ counters, int T, int N, int K, int S) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int q = lane & 3;
  const int tile = blockIdx.x;
  const int split = blockIdx.y;
  const int row0 = tile * 16 * R;
  const int chunks = loads >> 2;
  const int per = (chunks + S - 1) / S;
  const int cBegin = split * per;
  const int cEnd = min(chunks, cBegin + per);

  // This lane's two rows of each m-tile: rows past N load nothing (their outputs are not written;
  // their scales are read at row N − 1 to stay in bounds).
  const uint4* wrow[R][2];
  int srow[R][2];
  bool rowOk[R][2];
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int row = row0 + 16 * r + g + 8 * h;
      rowOk[r][h] = row < N;
      srow[r][h] = min(row, N - 1) * G;
      wrow[r][h] = w + (u64)(rowOk[r][h] ? row : 0) * loads + q;
    }
  const bool tokOk = g < T;
  const float* xrow = x + (u64)(tokOk ? g : 0) * K;

  float acc[1][R][4];
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int i = 0; i < 4; i++) acc[0][r][i] = 0.f;

  for (int c0 = cBegin + warp * I4_GROUP; c0 < cEnd; c0 += MMA_WARPS * I4_GROUP) {
    uint4 a[I4_GROUP][R][2];
#pragma unroll
    for (int u = 0; u < I4_GROUP; u++) {
      const bool in = c0 + u < cEnd;
#pragma unroll
      for (int r = 0; r < R; r++)
#pragma unroll
        for (int h = 0; h < 2; h++) a[u][r][h] = ldg_w(wrow[r][h] + 4 * (c0 + u), in && rowOk[r][h]);
    }
#pragma unroll
    for (int u = 0; u < I4_GROUP; u++) {
      const int c = c0 + u;
      if (c >= cEnd) break;
      // The chunk's two halves: 64-column runs starting at run[hf]; this lane's 16 columns at +16q.
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        const int run = (c >> 1) * 256 + 128 * hf + 64 * (c & 1);
        if (run >= K) break;  // padding (the same for the whole warp)
        const int col = run + 16 * q;
        const bool xin = tokOk && col < K;  // padded columns: x = 0, so they add nothing
        const float4 x0 = ldg_x4(xrow + col, xin), x1 = ldg_x4(xrow + col + 4, xin);
        const float4 x2 = ldg_x4(xrow + col + 8, xin), x3 = ldg_x4(xrow + col + 12, xin);
        // B pairs per word: columns (e, e + 4) for e = 0..3.
        const u32 b[2][4] = {{bf16x2(x0.x, x1.x), bf16x2(x0.y, x1.y), bf16x2(x0.z, x1.z), bf16x2(x0.w, x1.w)},
                             {bf16x2(x2.x, x3.x), bf16x2(x2.y, x3.y), bf16x2(x2.z, x3.z), bf16x2(x2.w, x3.w)}};
        const int grp = run >> groupShift;
#pragma unroll
        for (int r = 0; r < R; r++) {
          u32 negz[2];
          float sc[2];
#pragma unroll
          for (int h = 0; h < 2; h++) {
            const int gi = srow[r][h] + grp;
            sc[h] = scales[gi];
            const u32 z = zeros ? (u32)zeros[gi] : 8u;
            negz[h] = (0xc300u | z) * 0x00010001u;
          }
          float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
          for (int j = 0; j < 2; j++) {
            const u32 w0 = word_at(a[u][r][0], 2 * hf + j), w1 = word_at(a[u][r][1], 2 * hf + j);
            mma_bf16(d, nib_pair(w0, 0, negz[0]), nib_pair(w1, 0, negz[1]), nib_pair(w0, 1, negz[0]), nib_pair(w1, 1, negz[1]), b[j][0], b[j][1]);
            mma_bf16(d, nib_pair(w0, 2, negz[0]), nib_pair(w1, 2, negz[1]), nib_pair(w0, 3, negz[0]), nib_pair(w1, 3, negz[1]), b[j][2], b[j][3]);
          }
          // D: d[0..1] row g, d[2..3] row g + 8 (tokens 2q, 2q + 1).
          acc[0][r][0] = fmaf(d[0], sc[0], acc[0][r][0]);
          acc[0][r][1] = fmaf(d[1], sc[0], acc[0][r][1]);
          acc[0][r][2] = fmaf(d[2], sc[1], acc[0][r][2]);
          acc[0][r][3] = fmaf(d[3], sc[1], acc[0][r][3]);
        }
      }
    }
  }

  mma_finish<R, 1, false>(acc, nullptr, 1.f, bias, y, part, counters, T, N, S, row0);
}

#define I4_KERNEL(R, BOUNDS)                                                                                                   \
  extern "C" __global__ void BOUNDS gemv_mma_int4_r##R(const uint4* w, int loads, const float* scales, const unsigned char* zeros, \
                                                       int G, int groupShift, const float* x, const float* bias, float* y,       \
                                                       float* part, u32* counters, int T, int N, int K, int S) {                  \
    gemv_mma_int4<R>(w, loads, scales, zeros, G, groupShift, x, bias, y, part, counters, T, N, K, S);                              \
  }

I4_KERNEL(1, __launch_bounds__(MMA_THREADS, 2))
I4_KERNEL(2, __launch_bounds__(MMA_THREADS, 2))
