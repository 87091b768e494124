// Decode attention over the paged KV cache (float32, bf16 or FP8: common.cuh kv_t), split over positions ("flash decoding"), one
// block per (token, KV head, group of up to 8 of its query heads, chunk of positions). `tokens`
// lists the step's tokens to serve (the short runs of a step whose prefill chunks take the
// tensor-core kernel), or is null for all of them.
//
// Why: one block per (token, head) leaves most SMs idle at small batch (1 token × 32 heads = 32
// blocks on 132 SMs) and reads each K/V row once per query head. Here a block reads a K/V row once
// for all the query heads of its KV head (GQA), and contexts are cut into chunks handled by separate
// blocks. A token's chunk size depends on its own context length only (decode_chunk, the same rule
// as attention-plan.ts decodeChunk), never on the rest of the batch, so a token's output is the same
// bits whichever tokens share its step.
//
// One launch, no combine kernel: a chunk's block writes a partial softmax (max, sum, normalized
// output), then counts itself done on a per-(token, head group) counter; the last block of the
// token merges the partials in split order (so the result does not depend on which block is last)
// and resets the counter for the next launch. A context that fits one chunk is written directly.
//
// Inside a block, 4 warps take U = 8 consecutive positions at a time in turn: every lane issues the
// 16 independent K and V loads of those positions (a position's head_dim floats is one warp-wide
// load) before using any, so 8 KiB per warp are in flight per iteration. A lane holds D/32 dims of
// each head's output; q sits in shared memory. The U × GB partial dot products of an iteration are
// summed across the warp by a reduce-scatter (each shuffle level halves the values a lane
// carries; 32 values at a time), so after ~32 shuffles lane i holds the full score of (position,
// head) i / R: one exp per lane per 32 scores. Everything is float32, as the reference (bf16 K and V
// are widened exactly as they are loaded).
#include "common.cuh"
#include "tensor-core.cuh"

#define DEC_WARPS 4
// Blocks per SM the register budget is cut for: 3 (168 registers) fits every variant without
// spills (ptxas, sm_90 and sm_87) except 8 heads at head_dim 128, which spills at 168 on sm_90: 2
// blocks there (ptxas then takes 234 registers on sm_90, 161 on sm_87; still 64 KiB of loads in
// flight per SM).
#define DEC_MIN_BLOCKS(D, GB) ((D) * (GB) >= 1024 ? 2 : 3)
#define DEC_U 8  // positions per warp iteration
// Block-table entries of a chunk staged in shared memory (more: read from global memory).
#define DEC_TABLE 128
// Most splits of one token (attention-plan.ts DECODE_MAX_SPLITS): the merge keeps their weights in shared memory.
#define DEC_MAX_SPLITS 128

// Positions per chunk for a token that sees n positions (attention-plan.ts decodeChunk): one chunk
// where n ≤ the walk's oneChunk, else about 16 chunks, a multiple of 32 (one iteration of the block's
// warps), between the walk's minChunk and 1024, and at most DEC_MAX_SPLITS chunks.
__device__ __forceinline__ int decode_chunk(int n, int minChunk, int oneChunk) {
  if (n <= oneChunk) return max(minChunk, (n + 31) / 32 * 32);
  int c = min(1024, (n + 16 * 32 - 1) / (16 * 32) * 32);
  c = max(c, (n + DEC_MAX_SPLITS * 32 - 1) / (DEC_MAX_SPLITS * 32) * 32);
  return max(c, minChunk);
}
// The smallest chunk of each walk (attention-plan.ts decodeChunk's minChunk, DECODE_MMA_MIN_CHUNK),
// and the longest context the tensor-core walk takes in one chunk (DECODE_MMA_ONE_CHUNK).
#define DEC_MIN_CHUNK 32
#define DEC_MMA_MIN_CHUNK 128
#define DEC_MMA_ONE_CHUNK 256

// c ? a : b through selp: written as a C++ select of two array elements, the front end turns it into
// a load through a selected address and the array goes to local memory.
__device__ __forceinline__ float select(bool c, float a, float b) {
  float r;
  asm("{ .reg .pred p; setp.ne.b32 p, %3, 0; selp.f32 %0, %1, %2, p; }" : "=f"(r) : "f"(a), "f"(b), "r"((int)c));
  return r;
}

// A load that bypasses L1: partials written by other blocks of this launch are read from L2.
__device__ __forceinline__ float load_cg(const float* p) {
  float v;
  asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
  return v;
}

// Sums C values over the warp's lanes so that each ends with one full sum: at each level a lane
// keeps the upper half of its values if (lane & o), else the lower half, and adds its partner's
// copy of them (the partner keeps the other half). After log2(C) levels (offsets 16, 8, ...) lane
// holds value lane / R summed over 32 / R lanes; the caller adds the R copies. Levels are template
// instances, so every index is a constant and the values stay in registers.
template <int C, int R>
__device__ __forceinline__ float reduce_scatter(float* v, int lane) {
  constexpr int o = C * R / 2;
  const bool upper = (lane & o) != 0;
#pragma unroll
  for (int j = 0; j < C / 2; j++) {
    const float lo = v[j], hi = v[j + C / 2];
    v[j] = select(upper, hi, lo) + __shfl_xor_sync(0xffffffffu, select(upper, lo, hi), o);
  }
  if constexpr (C > 2) return reduce_scatter<C / 2, R>(v, lane);
  else return v[0];
}

// A lane's E values of a K or V row as floats (one load of E elements: 16 or 8 bytes of float32, 8
// or 4 of bf16, 4 or 2 of FP8; widened exactly), or zeros.
template <int E>
__device__ __forceinline__ void load_row(float* x, const kv_t* p, bool ok) {
#if defined(KV_FP8)
  const u32 a = !ok ? 0u : E == 4 ? *reinterpret_cast<const u32*>(p) : *reinterpret_cast<const u16*>(p);
#pragma unroll
  for (int e = 0; e < E; e++) x[e] = e4m3_to_f32((a >> (8 * e)) & 0xffu);
#elif defined(KV_BF16)
  if constexpr (E == 4) {
    const uint2 a = ok ? *reinterpret_cast<const uint2*>(p) : uint2{0u, 0u};
    x[0] = __uint_as_float(a.x << 16), x[1] = __uint_as_float(a.x & 0xffff0000u);
    x[2] = __uint_as_float(a.y << 16), x[3] = __uint_as_float(a.y & 0xffff0000u);
  } else {
    const u32 a = ok ? *reinterpret_cast<const u32*>(p) : 0u;
    x[0] = __uint_as_float(a << 16), x[1] = __uint_as_float(a & 0xffff0000u);
  }
#else
  if constexpr (E == 4) {
    const float4 a = ok ? *reinterpret_cast<const float4*>(p) : float4{0.f, 0.f, 0.f, 0.f};
    x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w;
  } else {
    const float2 a = ok ? *reinterpret_cast<const float2*>(p) : float2{0.f, 0.f};
    x[0] = a.x, x[1] = a.y;
  }
#endif
}

// out = Σ_s w_s · partial_s / W (· vScale) for each of the block's nh heads × D dims, splits in order,
// MB splits' loads in flight at a time. w: the split weights per head (shared memory), W their sums.
template <int MB, int D>
__device__ __forceinline__ void merge_partials(float* __restrict__ out, const float* __restrict__ partOut, u64 part0, int nsplit, int nh,
                                               const float (*w)[DEC_MAX_SPLITS], const float* W, float vScale, int tok, int numHeads, int h0) {
  for (int i = threadIdx.x; i < nh * D; i += DEC_WARPS * 32) {
    const int g = i / D, d = i % D;
    const float* po = partOut + (part0 + (u64)g * gridDim.z) * D + d;
    float o = 0.f;
    for (int s0 = 0; s0 < nsplit; s0 += MB) {
      float v[MB];
#pragma unroll
      for (int j = 0; j < MB; j++) v[j] = load_cg(po + (u64)min(s0 + j, nsplit - 1) * D);
#pragma unroll
      for (int j = 0; j < MB; j++) {
        if (s0 + j < nsplit) o += w[g][s0 + j] * v[j];
      }
    }
    out[((u64)tok * numHeads + h0 + g) * D + d] = o / W[g] * vScale;
  }
}

// The block's end, shared by both decode kernels: the warps' partial softmax states (running max m
// and sum l per head, unnormalised outputs acc, in shared memory) merged in warp order; then either
// the output (one chunk) or this chunk's partial, and the last chunk of the token to finish merging
// them in split order (an atomic ticket per (token, head group), reset by that block).
template <int D, int GB>
__device__ __forceinline__ void decode_epilogue(float (*s_m)[GB], float (*s_l)[GB], float (*s_acc)[GB][D], float (*s_w)[DEC_MAX_SPLITS],
                                                float (*s_pm)[DEC_MAX_SPLITS], int* s_last, float* __restrict__ out, float* __restrict__ partOut,
                                                float* __restrict__ partMl, int* __restrict__ counters, int tok, int numHeads, int h0, int nh,
                                                int split, int nsplit, float vScale) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // Partials are indexed by the block's place in the list (blockIdx.x), not the token (a short list of a long step).
  const u64 part0 = ((u64)blockIdx.x * numHeads + h0) * gridDim.z;
  for (int i = threadIdx.x; i < nh * D; i += DEC_WARPS * 32) {
    const int g = i / D, d = i % D;
    float M = NEG_INF;
#pragma unroll
    for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, s_m[w][g]);
    float L = 0.f, o = 0.f;
#pragma unroll
    for (int w = 0; w < DEC_WARPS; w++) {
      const float f = s_m[w][g] == NEG_INF ? 0.f : expf(s_m[w][g] - M);
      L += s_l[w][g] * f;
      o += s_acc[w][g][d] * f;
    }
    if (nsplit == 1) {
      out[((u64)tok * numHeads + h0 + g) * D + d] = o / L * vScale;
    } else {
      const u64 part = part0 + (u64)g * gridDim.z + split;
      partOut[part * D + d] = o / L;
      if (d == 0) {
        partMl[part * 2] = M;
        partMl[part * 2 + 1] = L;
      }
    }
  }
  if (nsplit == 1) return;

  // The last of the token's chunks to finish merges them: weights l_s · exp(m_s − max), in split order.
  __threadfence();  // this block's partials are visible before its count is
  __syncthreads();
  int* counter = counters + (u64)blockIdx.x * gridDim.y + blockIdx.y;
  if (threadIdx.x == 0) *s_last = atomicAdd(counter, 1) == nsplit - 1;
  __syncthreads();
  if (!*s_last) return;
  __threadfence();  // the other blocks' partials, counted before this one, are read after
  // Each split's (max, sum) is fetched by its own thread (nsplit ≤ DEC_MAX_SPLITS = threads), all
  // at once: one L2 round trip, not one per few splits of a serial loop.
  static_assert(DEC_MAX_SPLITS == DEC_WARPS * 32, "one split per thread in the merge");
  if (threadIdx.x < nsplit) {
    float mv[GB], lv[GB];
#pragma unroll
    for (int g = 0; g < GB; g++) {
      const float* ml = partMl + (part0 + (u64)min(g, nh - 1) * gridDim.z + threadIdx.x) * 2;
      mv[g] = load_cg(ml);
      lv[g] = load_cg(ml + 1);
    }
#pragma unroll
    for (int g = 0; g < GB; g++) {
      s_pm[g][threadIdx.x] = mv[g];
      s_w[g][threadIdx.x] = lv[g];
    }
  }
  __syncthreads();
  // Weights l_s · exp(m_s − max): a warp per head, a lane per split (and split + 32, ...); the max
  // and the sum W over a fixed shuffle tree (the same for every token with this many splits).
  for (int g = warp; g < nh; g += DEC_WARPS) {
    float M = NEG_INF;
    for (int s = lane; s < nsplit; s += 32) M = fmaxf(M, s_pm[g][s]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
    float W = 0.f;
    for (int s = lane; s < nsplit; s += 32) {
      const float w = s_w[g][s] * expf(s_pm[g][s] - M);
      s_w[g][s] = w;
      W += w;
    }
    W = warp_sum(W);
    if (lane == 0) s_m[0][g] = W;
  }
  __syncthreads();
  // The partial outputs, summed in split order with as many loads in flight as there are splits (up
  // to 16 at a time): a short context's few splits do not wait on 16 loads.
  if (nsplit <= 4) merge_partials<4, D>(out, partOut, part0, nsplit, nh, s_w, s_m[0], vScale, tok, numHeads, h0);
  else if (nsplit <= 8) merge_partials<8, D>(out, partOut, part0, nsplit, nh, s_w, s_m[0], vScale, tok, numHeads, h0);
  else merge_partials<16, D>(out, partOut, part0, nsplit, nh, s_w, s_m[0], vScale, tok, numHeads, h0);
  if (threadIdx.x == 0) *counter = 0;  // ready for the next launch (stream order)
}

// What a decode block serves (both walks): token blockIdx.x of the list (or of the step), query
// heads h0..h0+nh of KV head kvh (blockIdx.y), and chunk `split` (blockIdx.z) of the positions the
// token sees, [lo, hi); a token's chunk size depends on its own context only. Block-table entries
// blk0..blk0+nblk cover the chunk; block sizes are powers of two in practice (16 by default), so a
// position's slot is shifts, not integer divisions (~20 instructions each, on the latency path).
struct DecodeBlock {
  int tok, split, kvh, h0, nh, nsplit, lo, hi;
  const int* table;  // the sequence's block table
  int blockSize, blockShift, blk0, nblk;
  // Position p's cache slot, from the chunk's table entries (blk[i] = table[blk0 + i]): by shifts
  // (a power-of-two block size) or by division.
  __device__ __forceinline__ int slotPow2(const int* blk, int p) const { return (blk[(p >> blockShift) - blk0] << blockShift) + (p & (blockSize - 1)); }
  __device__ __forceinline__ int slotDiv(const int* blk, int p) const { return blk[p / blockSize - blk0] * blockSize + p % blockSize; }
  __device__ __forceinline__ int slot(const int* blk, int p) const {
    if (blockShift >= 0) return slotPow2(blk, p);
    return slotDiv(blk, p);
  }
};
template <int GB>
__device__ __forceinline__ DecodeBlock decode_block(const int* __restrict__ tokens, const int* __restrict__ positions, const int* __restrict__ blockTables,
                                                    const int* __restrict__ seqIndex, int maxBlocksPerSeq, int blockSize, int numHeads, int numKvHeads,
                                                    int window, int forcedChunk, int minChunk, int oneChunk) {
  DecodeBlock b;
  b.tok = tokens ? tokens[blockIdx.x] : blockIdx.x;
  b.split = blockIdx.z;
  const int group = numHeads / numKvHeads;
  const int chunks = (group + GB - 1) / GB;
  b.kvh = blockIdx.y / chunks;
  b.h0 = b.kvh * group + (blockIdx.y % chunks) * GB;  // first query head of this block
  b.nh = min(GB, (b.kvh + 1) * group - b.h0);         // heads this block serves (≤ GB)
  const int pos = positions[b.tok];
  const int first = window > 0 ? max(0, pos - window + 1) : 0;
  const int n = pos - first + 1;  // positions this token sees
  const int chunkLen = forcedChunk > 0 ? forcedChunk : decode_chunk(n, minChunk, oneChunk);
  b.nsplit = (n + chunkLen - 1) / chunkLen;
  b.lo = first + b.split * chunkLen;
  b.hi = min(b.lo + chunkLen, pos + 1);
  b.table = blockTables + (u64)seqIndex[b.tok] * maxBlocksPerSeq;
  b.blockSize = blockSize;
  b.blockShift = kv_block_shift(blockSize);
  b.blk0 = b.blockShift >= 0 ? b.lo >> b.blockShift : b.lo / blockSize;
  b.nblk = (b.blockShift >= 0 ? (b.hi - 1) >> b.blockShift : (b.hi - 1) / blockSize) - b.blk0 + 1;
  return b;
}

template <int D, int GB>
__device__ __forceinline__ void decode_attention(const float* __restrict__ q, const kv_t* __restrict__ kc, const kv_t* __restrict__ vc,
                                                 float* __restrict__ out, float* __restrict__ partOut, float* __restrict__ partMl,
                                                 int* __restrict__ counters, const int* __restrict__ tokens, const int* __restrict__ positions,
                                                 const int* __restrict__ blockTables, const int* __restrict__ seqIndex, int maxBlocksPerSeq,
                                                 int blockSize, int numHeads, int numKvHeads, float scale, int window, int forcedChunk,
                                                 float vScale) {
  constexpr int E = D / 32;             // dims per lane
  constexpr int U = DEC_U;              // positions per warp iteration
  constexpr int N = U * GB;             // scores per iteration (8..64)
  constexpr int NG = N < 32 ? N : 32;   // scores per reduce-scatter
  constexpr int G = N / NG;             // reduce-scatters per iteration (1 or 2)
  constexpr int UG = U / G;             // positions per reduce-scatter
  constexpr int R = 32 / NG;            // lanes that end up holding the same score
  static_assert(E == 2 || E == 4, "head_dim 64 or 128");
  static_assert(N % NG == 0 && 32 % NG == 0, "U × GB must fill whole reduce-scatters");
  __shared__ __align__(16) float s_q[GB][D];
  __shared__ int s_tbl[DEC_TABLE];
  __shared__ float s_p[DEC_WARPS][N], s_corr[DEC_WARPS][GB];
  __shared__ float s_m[DEC_WARPS][GB], s_l[DEC_WARPS][GB];
  __shared__ __align__(16) float s_acc[DEC_WARPS][GB][D];
  __shared__ float s_w[GB][DEC_MAX_SPLITS], s_pm[GB][DEC_MAX_SPLITS];
  __shared__ int s_last;

  const DecodeBlock b = decode_block<GB>(tokens, positions, blockTables, seqIndex, maxBlocksPerSeq, blockSize, numHeads, numKvHeads, window, forcedChunk, DEC_MIN_CHUNK, 0);
  if (b.split >= b.nsplit) return;
  const int tok = b.tok, split = b.split, kvh = b.kvh, h0 = b.h0, nh = b.nh, nsplit = b.nsplit, lo = b.lo, hi = b.hi, blk0 = b.blk0;
  const int kvWidth = numKvHeads * D;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

  // q of each head, pre-scaled in float32 like the reference; 0 for heads past nh. The chunk's
  // block-table entries, so a position's row address costs no dependent global load. Every load is
  // issued before any is stored (a head past nh reads head nh - 1's q and discards it), so the
  // prologue costs one memory latency, not one per q element a thread stages.
  constexpr int QN = (GB * D + DEC_WARPS * 32 - 1) / (DEC_WARPS * 32);  // q floats per thread
  static_assert(DEC_TABLE == DEC_WARPS * 32, "one staged block-table entry per thread");
  const bool staged = b.nblk <= DEC_TABLE;
  const int tblEntry = staged && threadIdx.x < b.nblk ? b.table[blk0 + threadIdx.x] : 0;
  float qv[QN];
#pragma unroll
  for (int k = 0; k < QN; k++) {
    const int i = min((int)threadIdx.x + k * DEC_WARPS * 32, GB * D - 1), g = min(i / D, nh - 1);
    qv[k] = q[((u64)tok * numHeads + h0 + g) * D + i % D];
  }
#pragma unroll
  for (int k = 0; k < QN; k++) {
    const int i = threadIdx.x + k * DEC_WARPS * 32, g = i / D;
    if (i < GB * D) s_q[g][i % D] = g < nh ? qv[k] * scale : 0.f;
  }
  if (staged && threadIdx.x < b.nblk) s_tbl[threadIdx.x] = tblEntry;
  const int* blk = staged ? s_tbl : b.table + blk0;  // generic pointer: shared or global
  __syncthreads();

  float acc[GB][E];
#pragma unroll
  for (int g = 0; g < GB; g++) {
#pragma unroll
    for (int e = 0; e < E; e++) acc[g][e] = 0.f;
  }
  // After a reduce-scatter this lane holds score index i = lane / R: position u = i / GB of the
  // reduce-scatter's UG positions, head g = i % GB. m and l are that head's running max and sum
  // (same in every lane of the head).
  const int idx = lane / R, myG = idx % GB, myU = idx / GB;
  float m = NEG_INF, l = 0.f;

  for (int base = lo + warp * U; base < hi; base += DEC_WARPS * U) {
    // All of the iteration's loads first, K then V (positions past the chunk read nothing and give 0).
    float kk[U][E], vv[U][E];
    int slot[U];
    if (b.blockShift >= 0) {
#pragma unroll
      for (int u = 0; u < U; u++) slot[u] = b.slotPow2(blk, min(base + u, hi - 1));
    } else {
#pragma unroll
      for (int u = 0; u < U; u++) slot[u] = b.slotDiv(blk, min(base + u, hi - 1));
    }
#pragma unroll
    for (int u = 0; u < U; u++) load_row<E>(kk[u], kc + (u64)slot[u] * kvWidth + kvh * D + lane * E, base + u < hi);
#pragma unroll
    for (int u = 0; u < U; u++) load_row<E>(vv[u], vc + (u64)slot[u] * kvWidth + kvh * D + lane * E, base + u < hi);
    // Full scores, G reduce-scatters of NG partial dot products (index u·GB + g within each).
    float s[G];
#pragma unroll
    for (int j = 0; j < G; j++) {
      float sc[NG];
#pragma unroll
      for (int g = 0; g < GB; g++) {
        float qg[E];
        if constexpr (E == 4) {
          const float4 t = *reinterpret_cast<const float4*>(&s_q[g][lane * 4]);
          qg[0] = t.x, qg[1] = t.y, qg[2] = t.z, qg[3] = t.w;
        } else {
          const float2 t = *reinterpret_cast<const float2*>(&s_q[g][lane * 2]);
          qg[0] = t.x, qg[1] = t.y;
        }
#pragma unroll
        for (int u = 0; u < UG; u++) {
          float d = 0.f;
#pragma unroll
          for (int e = 0; e < E; e++) d = fmaf(qg[e], kk[j * UG + u][e], d);
          sc[u * GB + g] = d;
        }
      }
      float t = reduce_scatter<NG, R>(sc, lane);
#pragma unroll
      for (int o = R / 2; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
      s[j] = base + j * UG + myU < hi ? t : NEG_INF;  // past the chunk's end: no weight
    }

    // Online softmax per head over the iteration's U positions (lanes differing in the u bits, and
    // the G reduce-scatters).
    float mx = s[0];
#pragma unroll
    for (int j = 1; j < G; j++) mx = fmaxf(mx, s[j]);
#pragma unroll
    for (int o = R * GB; o < 32; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    const float mNew = fmaxf(m, mx);    // finite: position `base` is in the chunk
    const float corr = expf(m - mNew);  // 0 on the first iteration (m = -inf)
    float ps = 0.f;
#pragma unroll
    for (int j = 0; j < G; j++) {
      const float p = expf(s[j] - mNew);
      ps += p;
      if (lane % R == 0) s_p[warp][j * NG + idx] = p;
    }
#pragma unroll
    for (int o = R * GB; o < 32; o <<= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
    l = l * corr + ps;
    m = mNew;
    // Every lane needs every (position, head) weight for its dims of V: through shared memory.
    if (lane % R == 0 && myU == 0) s_corr[warp][myG] = corr;
    __syncwarp();
#pragma unroll
    for (int g = 0; g < GB; g++) {
      const float c = s_corr[warp][g];
#pragma unroll
      for (int e = 0; e < E; e++) acc[g][e] *= c;
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
#pragma unroll
      for (int g = 0; g < GB; g++) {
        const float w = s_p[warp][u * GB + g];
#pragma unroll
        for (int e = 0; e < E; e++) acc[g][e] = fmaf(w, vv[u][e], acc[g][e]);
      }
    }
    __syncwarp();  // s_p is rewritten next iteration
  }

  // Merge the warps (a warp that saw no position has m = -inf and adds nothing).
  if (lane % R == 0 && myU == 0) {
    s_m[warp][myG] = m;
    s_l[warp][myG] = l;
  }
#pragma unroll
  for (int g = 0; g < GB; g++) {
#pragma unroll
    for (int e = 0; e < E; e++) s_acc[warp][g][lane * E + e] = acc[g][e];
  }
  __syncthreads();
  decode_epilogue<D, GB>(s_m, s_l, s_acc, s_w, s_pm, &s_last, out, partOut, partMl, counters, tok, numHeads, h0, nh, split, nsplit, vScale);
}

#if defined(KV_BF16) || defined(KV_FP8)
// ---- tensor cores, for a bf16 or an fp8 cache ------------------------------------------------------------
//
// The same blocks, chunks, partials and merge as decode_attention; only a warp's walk over its
// positions differs. The FMA walk spends ~120 instructions on each (position, KV head): float32 dot
// products for every query head, a reduce-scatter, the softmax. Here the query heads of the block
// (≤ 8) are the n of an m16n8k16 mma, so one warp tile of 16 positions is
//   Sᵀ [16 positions × 8 heads] = K [16 × D] · Qᵀ      (D / 16 mmas; K rows from shared memory by ldmatrix)
//   Oᵀ [D × 8 heads]         += Vᵀ [D × 16] · Pᵀ     (D / 16 mmas; V by ldmatrix.trans)
// with Pᵀ's B fragments made from Sᵀ's C fragments by movmatrix.trans. Each warp copies its own tile
// of K and V rows with cp.async into its own shared memory: warps walk independently. bf16 rows are
// 16-byte chunks, chunk c of row r stored at c ^ (r & 7) so ldmatrix's 8 rows hit distinct banks;
// FP8 rows stay codes (half the bytes to copy), padded by 16 bytes a row against bank conflicts, and
// each fragment is built from them (two codes → an exact bf16 pair). q · scale and the probabilities
// are rounded to bf16 for the products (K and V are exact in bf16), as the prefill kernel does; sums,
// the softmax and the merge are float32.
#define DEC_TILE 16

#if defined(KV_FP8)
// Two E4M3 codes (lo: bits 0–7, hi: bits 8–15) → the bf16 pair of their values (common.cuh
// e4m3_bf16x2; the cache holds no NaN code for a finite value).
__device__ __forceinline__ u32 e4m3x2_bf16x2(u32 codes) {
  const u32 x = (codes & 0xffu) | ((codes & 0xff00u) << 8);
  return e4m3_bf16x2((x << 4) & 0x07f007f0u, (x << 8) & 0x80008000u);
}
__device__ __forceinline__ u32 lds_u16(u32 addr) {
  u16 v;
  asm volatile("ld.shared.u16 %0, [%1];" : "=h"(v) : "r"(addr));
  return v;
}
__device__ __forceinline__ u32 lds_u8(u32 addr) {
  u16 v;
  asm volatile("ld.shared.u8 %0, [%1];" : "=h"(v) : "r"(addr));
  return v & 0xffu;
}
#endif

template <int D, int GB>
__device__ __forceinline__ void decode_attention_mma(const float* __restrict__ q, const kv_t* __restrict__ kc, const kv_t* __restrict__ vc,
                                                     float* __restrict__ out, float* __restrict__ partOut, float* __restrict__ partMl,
                                                     int* __restrict__ counters, const int* __restrict__ tokens, const int* __restrict__ positions,
                                                     const int* __restrict__ blockTables, const int* __restrict__ seqIndex, int maxBlocksPerSeq,
                                                     int blockSize, int numHeads, int numKvHeads, float scale, int window, int forcedChunk,
                                                     float vScale) {
  static_assert(GB <= 8, "the query heads are the mma's n (8)");
  constexpr int KS = D / 16;       // k-steps of Sᵀ (dims), m-tiles of Oᵀ (dims)
#if defined(KV_FP8)
  constexpr int ROW = D + 16;      // bytes a staged row: the codes and 16 bytes of padding
  constexpr int CW = 16;           // codes a 16-byte chunk
#else
  constexpr int ROW = 2 * D;       // bytes a staged row (swizzled chunks)
  constexpr int CW = 8;
#endif
  constexpr int CR = D / CW;       // 16-byte chunks a K/V row
  constexpr int CL = DEC_TILE * CR / 32;  // chunks a lane copies a tile, for K and for V
  constexpr int TILE_BYTES = DEC_TILE * ROW;
  // Per warp a K and a V tile; after the walk the same bytes hold the warps' outputs (s_acc).
  static_assert(DEC_WARPS * GB * D * 4 <= DEC_WARPS * 2 * TILE_BYTES, "s_acc fits the tiles");
  __shared__ __align__(128) unsigned char s_tiles[DEC_WARPS][2][TILE_BYTES];
  __shared__ int s_tbl[DEC_TABLE];
  __shared__ float s_m[DEC_WARPS][GB], s_l[DEC_WARPS][GB];
  __shared__ float s_w[GB][DEC_MAX_SPLITS], s_pm[GB][DEC_MAX_SPLITS];
  __shared__ int s_last;
  float (*s_acc)[GB][D] = reinterpret_cast<float (*)[GB][D]>(&s_tiles[0][0][0]);

  const DecodeBlock b = decode_block<GB>(tokens, positions, blockTables, seqIndex, maxBlocksPerSeq, blockSize, numHeads, numKvHeads, window, forcedChunk, DEC_MMA_MIN_CHUNK, DEC_MMA_ONE_CHUNK);
  if (b.split >= b.nsplit) return;
  const int tok = b.tok, kvh = b.kvh, h0 = b.h0, nh = b.nh, lo = b.lo, hi = b.hi;
  const int kvWidth = numKvHeads * D;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;

  const bool staged = b.nblk <= DEC_TABLE;
  if (staged && threadIdx.x < b.nblk) s_tbl[threadIdx.x] = b.table[b.blk0 + threadIdx.x];
  const int* blk = staged ? s_tbl : b.table + b.blk0;

  // Qᵀ as B fragments (k = dims, n = head g): q · scale of head h0 + g, 0 for heads past nh.
  u32 qb[KS][2];
  {
    const float* qh = q + ((u64)tok * numHeads + h0 + min(g, nh - 1)) * D + 2 * t;
    const float f = g < nh ? scale : 0.f;
#pragma unroll
    for (int k = 0; k < KS; k++) {
      const float2 a = *reinterpret_cast<const float2*>(qh + 16 * k);
      const float2 b = *reinterpret_cast<const float2*>(qh + 16 * k + 8);
      qb[k][0] = pack_bf16x2(a.x * f, a.y * f);
      qb[k][1] = pack_bf16x2(b.x * f, b.y * f);
    }
  }
  __syncthreads();  // s_tbl

  // This lane's chunks of a tile: rows (lane + 32i) / CR, chunk (lane + 32i) % CR. A tile's K rows
  // are copied as one cp.async group and its V rows as the next, so K of the next tile loads while
  // this one's softmax and P·V run, and its V while the next Q·Kᵀ does (one buffer each, no more
  // shared memory than the tiles themselves).
  const u32 kTile = shared_addr(&s_tiles[warp][0][0]), vTile = shared_addr(&s_tiles[warp][1][0]);
#if defined(KV_FP8)
  auto chunkAt = [](int r, int c) { return (u32)(r * ROW + c * 16); };
#else
  auto chunkAt = [](int r, int c) { return (u32)(r * ROW + ((c ^ (r & 7)) << 4)); };
#endif
  u64 rowSrc[CL];
  auto stageK = [&](int base) {
#pragma unroll
    for (int i = 0; i < CL; i++) {
      const int id = lane + 32 * i, r = id / CR, c = id % CR, p = base + r;
      const bool ok = p < hi;
      const int pp = ok ? p : lo;
      rowSrc[i] = ok ? (u64)b.slot(blk, pp) * kvWidth + kvh * D + c * CW : ~0ull;
      cp_async16(kTile + chunkAt(r, c), kc + (ok ? rowSrc[i] : 0), ok);
    }
    cp_async_commit();
  };
  auto stageV = [&]() {
#pragma unroll
    for (int i = 0; i < CL; i++) {
      const int id = lane + 32 * i, r = id / CR, c = id % CR;
      const bool ok = rowSrc[i] != ~0ull;
      cp_async16(vTile + chunkAt(r, c), vc + (ok ? rowSrc[i] : 0), ok);
    }
    cp_async_commit();
  };
  // K as A (positions × dims) for k-step k, Vᵀ as A (dims × positions) for m-tile k.
#if defined(KV_FP8)
  // From the codes: a0/a2 position g, a1/a3 position g + 8 (dims 16k + 2t.. and + 8) for K; for Vᵀ
  // a0/a1 dims 16k + g and + 8 at positions 2t, 2t + 1, a2/a3 the same at 2t + 8, 2t + 9.
  auto kFrag = [&](int k, u32* a) {
    const u32 at = kTile + g * ROW + 16 * k + 2 * t;
    a[0] = e4m3x2_bf16x2(lds_u16(at));
    a[1] = e4m3x2_bf16x2(lds_u16(at + 8 * ROW));
    a[2] = e4m3x2_bf16x2(lds_u16(at + 8));
    a[3] = e4m3x2_bf16x2(lds_u16(at + 8 * ROW + 8));
  };
  auto vFrag = [&](int k, u32* a) {
    const u32 at = vTile + 2 * t * ROW + 16 * k + g;
    a[0] = e4m3x2_bf16x2(lds_u8(at) | (lds_u8(at + ROW) << 8));
    a[1] = e4m3x2_bf16x2(lds_u8(at + 8) | (lds_u8(at + ROW + 8) << 8));
    a[2] = e4m3x2_bf16x2(lds_u8(at + 8 * ROW) | (lds_u8(at + 9 * ROW) << 8));
    a[3] = e4m3x2_bf16x2(lds_u8(at + 8 * ROW + 8) | (lds_u8(at + 9 * ROW + 8) << 8));
  };
#else
  // By ldmatrix: lane l gives row (l & 7) of matrix l / 8. K: matrices (rows 0–7, dims +0), (rows
  // 8–15, +0), (rows 0–7, +8), (rows 8–15, +8); V, transposed on load: (positions 0–7, dims +0),
  // (0–7, +8), (8–15, +0), (8–15, +8).
  const int mi = lane >> 3;
  const int kRow = (lane & 7) + 8 * (mi & 1), kHalf = mi >> 1;
  const int vRow = (lane & 7) + 8 * (mi >> 1), vHalf = mi & 1;
  auto kFrag = [&](int k, u32* a) { ldmatrix_x4(kTile + chunkAt(kRow, 2 * k + kHalf), a[0], a[1], a[2], a[3]); };
  auto vFrag = [&](int k, u32* a) { ldmatrix_x4_trans(vTile + chunkAt(vRow, 2 * k + vHalf), a[0], a[1], a[2], a[3]); };
#endif

  float o[KS][4];
#pragma unroll
  for (int k = 0; k < KS; k++) o[k][0] = o[k][1] = o[k][2] = o[k][3] = 0.f;
  // Running max and sum for heads 2t and 2t + 1 (the same in every lane of a t).
  float m0 = NEG_INF, m1 = NEG_INF, l0 = 0.f, l1 = 0.f;

  const int step = DEC_TILE * DEC_WARPS;
  if (lo + DEC_TILE * warp < hi) {
    stageK(lo + DEC_TILE * warp);
    stageV();
  }
  for (int base = lo + DEC_TILE * warp; base < hi; base += step) {
    const bool more = base + step < hi;
    cp_async_wait_one();  // K of this tile has landed (its V may still be on the way)
    __syncwarp();
    // Sᵀ: s[0..1] position g, heads 2t, 2t + 1; s[2..3] position g + 8.
    float s[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int k = 0; k < KS; k++) {
      u32 a[4];
      kFrag(k, a);
      mma_bf16(s, a, qb[k][0], qb[k][1]);
    }
    __syncwarp();  // every lane's K fragments are read: the next tile's K may land
    if (more) stageK(base + step);
    else cp_async_commit();  // an empty group keeps the waits below counting alike
    if (base + g >= hi) s[0] = s[1] = NEG_INF;
    if (base + g + 8 >= hi) s[2] = s[3] = NEG_INF;
    // Online softmax per head over the tile's positions (the 8 lanes g of a t, and the two halves).
    float x0 = fmaxf(s[0], s[2]), x1 = fmaxf(s[1], s[3]);
#pragma unroll
    for (int off = 4; off < 32; off <<= 1) {
      x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, off));
      x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, off));
    }
    const float n0 = fmaxf(m0, x0), n1 = fmaxf(m1, x1);  // finite: position `base` is in the chunk
    const float c0 = expf(m0 - n0), c1 = expf(m1 - n1);  // 0 on the first tile (m = -inf)
    const float p0 = expf(s[0] - n0), p1 = expf(s[1] - n1), p2 = expf(s[2] - n0), p3 = expf(s[3] - n1);
    float y0 = p0 + p2, y1 = p1 + p3;
#pragma unroll
    for (int off = 4; off < 32; off <<= 1) {
      y0 += __shfl_xor_sync(0xffffffffu, y0, off);
      y1 += __shfl_xor_sync(0xffffffffu, y1, off);
    }
    l0 = l0 * c0 + y0;
    l1 = l1 * c1 + y1;
    m0 = n0;
    m1 = n1;
    // Pᵀ as B fragments (k = positions, n = head g): the 8×8 halves of P transposed in registers.
    const u32 b0 = movmatrix_trans(pack_bf16x2(p0, p1)), b1 = movmatrix_trans(pack_bf16x2(p2, p3));
    cp_async_wait_one();  // V of this tile has landed (the next tile's K may still be on the way)
    __syncwarp();
#pragma unroll
    for (int k = 0; k < KS; k++) {
      // Oᵀ m-tile k: o[k][0..1] dim 16k + g, heads 2t, 2t + 1; o[k][2..3] dim 16k + g + 8.
      o[k][0] *= c0, o[k][1] *= c1, o[k][2] *= c0, o[k][3] *= c1;
      u32 a[4];
      vFrag(k, a);
      mma_bf16(o[k], a, b0, b1);
    }
    __syncwarp();  // every lane's V fragments are read: the next tile's V may land
    if (more) stageV();
    else cp_async_commit();
  }
  cp_async_wait_all();

  // Into the shared form decode_epilogue merges (the tiles' bytes now hold s_acc: every warp is done).
  __syncthreads();
  const int hA = 2 * t, hB = 2 * t + 1;
  if (g == 0) {
    if (hA < GB) s_m[warp][hA] = m0, s_l[warp][hA] = l0;
    if (hB < GB) s_m[warp][hB] = m1, s_l[warp][hB] = l1;
  }
#pragma unroll
  for (int k = 0; k < KS; k++) {
    if (hA < GB) s_acc[warp][hA][16 * k + g] = o[k][0], s_acc[warp][hA][16 * k + g + 8] = o[k][2];
    if (hB < GB) s_acc[warp][hB][16 * k + g] = o[k][1], s_acc[warp][hB][16 * k + g + 8] = o[k][3];
  }
  __syncthreads();
  decode_epilogue<D, GB>(s_m, s_l, s_acc, s_w, s_pm, &s_last, out, partOut, partMl, counters, tok, numHeads, h0, nh, b.split, b.nsplit, vScale);
}

#define DECODE_MMA_KERNEL(D, GB)                                                                                                   \
  extern "C" __global__ void __launch_bounds__(DEC_WARPS * 32, 3) decode_attention_mma_d##D##_g##GB(                              \
      const float* __restrict__ q, const kv_t* __restrict__ kc, const kv_t* __restrict__ vc, float* __restrict__ out,              \
      float* __restrict__ partOut, float* __restrict__ partMl, int* __restrict__ counters, const int* __restrict__ tokens,         \
      const int* __restrict__ positions, const int* __restrict__ blockTables, const int* __restrict__ seqIndex, int maxBlocksPerSeq, \
      int blockSize, int numHeads, int numKvHeads, float scale, int window, int forcedChunk, float vScale) {                       \
    pdl_trigger(); /* the o GEMV after it may start loading its weights */                                                     \
    pdl_wait();    /* q and the cache: written by the kernels before */                                                        \
    decode_attention_mma<D, GB>(q, kc, vc, out, partOut, partMl, counters, tokens, positions, blockTables, seqIndex,              \
                                maxBlocksPerSeq, blockSize, numHeads, numKvHeads, scale, window, forcedChunk, vScale);             \
  }
DECODE_MMA_KERNEL(64, 1)
DECODE_MMA_KERNEL(64, 2)
DECODE_MMA_KERNEL(64, 4)
DECODE_MMA_KERNEL(64, 8)
DECODE_MMA_KERNEL(128, 1)
DECODE_MMA_KERNEL(128, 2)
DECODE_MMA_KERNEL(128, 4)
DECODE_MMA_KERNEL(128, 8)
#endif

#define DECODE_KERNEL(D, GB)                                                                                                       \
  extern "C" __global__ void __launch_bounds__(DEC_WARPS * 32, DEC_MIN_BLOCKS(D, GB)) decode_attention_d##D##_g##GB(                      \
      const float* __restrict__ q, const kv_t* __restrict__ kc, const kv_t* __restrict__ vc, float* __restrict__ out,              \
      float* __restrict__ partOut, float* __restrict__ partMl, int* __restrict__ counters, const int* __restrict__ tokens,         \
      const int* __restrict__ positions, const int* __restrict__ blockTables, const int* __restrict__ seqIndex, int maxBlocksPerSeq, \
      int blockSize, int numHeads, int numKvHeads, float scale, int window, int forcedChunk, float vScale) {                       \
    pdl_trigger();                                                                                                                 \
    pdl_wait();                                                                                                                    \
    decode_attention<D, GB>(q, kc, vc, out, partOut, partMl, counters, tokens, positions, blockTables, seqIndex, maxBlocksPerSeq,  \
                            blockSize, numHeads, numKvHeads, scale, window, forcedChunk, vScale);                                          \
  }

DECODE_KERNEL(64, 1)
DECODE_KERNEL(64, 2)
DECODE_KERNEL(64, 4)
DECODE_KERNEL(64, 8)
DECODE_KERNEL(128, 1)
DECODE_KERNEL(128, 2)
DECODE_KERNEL(128, 4)
DECODE_KERNEL(128, 8)
