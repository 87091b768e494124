// Prefill attention on tensor cores (flash-attention-2 style) over the paged KV cache (float32, bf16
// in the KV_BF16 build, FP8 E4M3 in the KV_FP8 one: common.cuh).
//
// A block takes one query tile (up to 16·WARPS consecutive tokens of one sequence at consecutive
// positions, built on the host: attention-plan.ts) for one head; WARPS is 8 (128-row tiles: each
// K/V tile read serves twice the rows) or 4 (64-row tiles, twice the blocks, for short prompts). Its
// warps own 16 query rows each. The block walks the sequence's visible positions in tiles of 64
// through the block table, pipelined: each thread copies its share of the next tile's K and V rows
// with cp.async (no registers held, all of a tile's loads in flight at once) while the warps compute
// on the current tile. From a float32 (FP8) cache the copies land in a float32 (FP8) staging buffer,
// and each thread then rounds (widens: exact) its own staged values to bf16 into the compute tiles;
// from a bf16 cache they land in the compute tiles themselves, which are double-buffered instead. S = Q·Kᵀ and O += P·V run
// on `mma.sync.m16n8k16` (bf16 inputs, float32 accumulators); the softmax is online and in float32
// (the running max taken over raw scores, then exp2(s · scale · log2 e − max) as one FMA; a warp
// whose rows' maxima all stayed put skips rescaling its output, which would multiply by exactly 1). Numbers: q, k, v and the probabilities are
// rounded to bf16 (8 significant bits) before the products, so results differ from the float32
// reference by about 1e-3 relative (the tests bound it; see docs/cuda.md), and a bf16 cache gives
// the same bits as a float32 one (its values are rounded once, when written, the same way).
//
// Shared memory (dynamic: the host passes prefill_shared_bytes, cuda-backend.ts prefillSharedBytes)
// at head_dim 128: bf16 cache, two bf16 tile pairs, 64 KiB; FP8, FP8 staging 2 × 8 KiB + bf16 tiles
// 2 × 16 KiB, 48 KiB; float32, float32 staging 2 × 32 KiB + bf16 tiles 2 × 16 KiB, 96 KiB (the wgmma
// build adds the query tile in bf16: 32 KiB at 128 rows). 64-position
// tiles rather than 32 halve the per-tile work that is not a product (the softmax's shuffles and
// rescale, the barrier) and give S = Q·Kᵀ 8 independent accumulator chains instead of 4. The bf16
// tiles are unpadded, in panels of 64 dims with rows of 128 bytes, swizzled (tile_chunk): the 8 rows
// an `ldmatrix` reads hit distinct banks, and it is the layout wgmma reads.
//
// q is read once, into bf16: where the host left q's RoPE to this kernel (prefill steps: the RoPE +
// KV write then rotates only k), it is applied there, on the float32 values (rope_q).
//
// On compute capability 9.0 the module is also built with PF_WGMMA for sm_90a (cuda-backend.ts
// prefillWgmma): the same staging, tiles, masks and online softmax, with the two products on Hopper's
// warpgroup MMA (wgmma.cuh) instead of mma.sync — each warpgroup's 64 rows at once, q and the K/V tiles
// read by the tensor cores straight from shared memory (no ldmatrix), P from registers. Tiles are
// skipped per warpgroup rather than per warp. The results are the mma.sync build's, bit for bit in
// every case tested (the roundings are the same; the tests allow the summation order to differ).
//
// mma fragment layouts (PTX ISA, m16n8k16, .bf16): with g = lane / 4 and t = lane % 4,
//   A (16×16, row-major): regs {(g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)}
//   B (16×8, "col": column n contiguous in k): regs {(k 2t..2t+1, n g), (k 2t+8.., n g)}
//   C (16×8 float): {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}
// K tiles stored [position][dim] are Bᵀ for S = Q·Kᵀ, so `ldmatrix` (no transpose) yields B
// fragments; V tiles stored [position][dim] are B for O = P·V with k = position, so
// `ldmatrix.trans` yields them. S's C fragments of two adjacent 8-position tiles are exactly the A
// fragment of P for one 16-position k-step, so P never leaves registers.
#include "common.cuh"
#include "tensor-core.cuh"
#ifdef PF_WGMMA
#include "wgmma.cuh"
#endif

// KV positions per shared-memory tile (attention-plan.ts PREFILL_KV_TILE sizes the shared memory;
// TACHYON_NVRTC_DEFINES=PF_KV=32 compares the earlier tile in the same shared memory).
#ifndef PF_KV
#define PF_KV 64
#endif
#define LOG2E 1.4426950408889634f
// Blocks per SM the register budget is cut for. At head_dim 128 ptxas wants ~220 registers (it
// issues a tile's ldmatrix loads early) and spills ~200 bytes when cut to 128, so: 8 warps, 1 block
// (each K/V tile serving 128 rows); 4 warps, 2 blocks (at 3 blocks, 168 registers, it spills on
// sm_90). Either way 8 warps per SM; no spills on sm_90 or sm_87 (ptxas).
#define PF_MIN_BLOCKS(WARPS) (8 / (WARPS))

// Byte offset of 16-byte chunk c (8 bf16) of row r in a bf16 K/V tile: panels of 64 columns one
// after another ([panel][row][128 bytes]), chunk c & 7 of a row stored at (c & 7) ^ (r & 7). That is
// the 128-byte swizzle wgmma reads (wgmma.cuh), and the 8 rows an ldmatrix reads hit distinct banks.
// (The wgmma build's q tile is laid out the same way, with panels of `rows` rows.)
__device__ __forceinline__ u32 tile_chunk(int r, int c, int rows = PF_KV) { return (c >> 3) * (rows * 128) + r * 128 + (((c & 7) ^ (r & 7)) << 4); }

// Rotate-half RoPE on float2/float4 runs of q pairs (x1 at dims i.. < D/2, x2 at i + D/2..) in
// registers, with rope_rotate (the roundings rope-kv.cu rotates with in memory), where the host left q's
// rotation to this kernel (ropeCos non-null: CudaBackend.ropeWriteKv, full rotary only; token t's cos/sin
// row at rope_row(ropeIndex, t)).
template <typename F>
__device__ __forceinline__ void rope_q(F& x1, F& x2, F c, F s) {
  constexpr int N = sizeof(F) / sizeof(float);
#pragma unroll
  for (int n = 0; n < N; n++) rope_rotate(reinterpret_cast<float*>(&x1)[n], reinterpret_cast<float*>(&x2)[n], reinterpret_cast<float*>(&c)[n], reinterpret_cast<float*>(&s)[n]);
}

// tiles: 4 ints per tile {first token, rows (≤ 16·WARPS), sequence, position of the first token};
// the tile's rows are tokens first.. at positions pos0.. (consecutive). Grid: (heads, tiles).
template <int D, int WARPS>
__device__ __forceinline__ void prefill_attention(const float* __restrict__ q, const kv_t* __restrict__ kc, const kv_t* __restrict__ vc,
                                                  float* __restrict__ out, const int* __restrict__ tiles, const int* __restrict__ blockTables,
                                                  int maxBlocksPerSeq, int blockSize, int numHeads, int numKvHeads, float scale, int window,
                                                  float vScale, const float* __restrict__ ropeCos, const float* __restrict__ ropeSin,
                                                  const int* __restrict__ ropeIndex) {
  constexpr int THREADS = WARPS * 32;
  constexpr int KS = D / 16;                 // k-steps of S = Q·Kᵀ (over dims)
  constexpr int NT = D / 8;                  // 8-wide column tiles of O
#ifdef KV_BF16
  constexpr int C8 = D / 8;                  // 16-byte chunks (8 bf16) per K/V row
  constexpr int TPR = THREADS / PF_KV;       // threads sharing a K/V row: one cache slot to find each
  constexpr int NL = C8 / TPR;               // chunks a thread copies per tile, per K and per V
  static_assert(TPR * PF_KV == THREADS && NL * TPR == C8, "threads must divide the tile by rows");
  constexpr u32 TILE_BYTES = PF_KV * D * 2;
  extern __shared__ __align__(1024) unsigned char pf_smem[];
  u16* kb = reinterpret_cast<u16*>(pf_smem);  // two bf16 tiles each: computed on, being filled
  u16* vb = kb + 2 * PF_KV * D;
#elif defined(KV_FP8)
  constexpr int C16 = D / 16;                // 16-byte chunks (16 e4m3 codes) per K/V row
  constexpr int CHUNKS = PF_KV * C16;        // per tile, per K and per V
  constexpr int NL = (CHUNKS + THREADS - 1) / THREADS;  // chunks a thread stages (the last round may be partial)
  extern __shared__ __align__(1024) unsigned char pf_smem[];
  u16* kb = reinterpret_cast<u16*>(pf_smem);  // bf16 tile being computed on, swizzled chunks
  u16* vb = kb + PF_KV * D;
  unsigned char* kq = reinterpret_cast<unsigned char*>(vb + PF_KV * D);  // FP8 staging of the next tile (cp.async)
  unsigned char* vq = kq + PF_KV * D;
#else
  constexpr int C4 = D / 4;                  // float4s per K/V row
  constexpr int NL = PF_KV * C4 / THREADS;   // float4s a thread stages per tile, per K and per V
  constexpr int RSTEP = THREADS / C4;        // rows between a thread's successive float4s
  static_assert(NL * THREADS == PF_KV * C4, "threads must divide the tile");
  extern __shared__ __align__(1024) unsigned char pf_smem[];
  float* kf = reinterpret_cast<float*>(pf_smem);  // float32 staging of the next tile (cp.async)
  float* vf = kf + PF_KV * D;
  u16* kb = reinterpret_cast<u16*>(vf + PF_KV * D);  // bf16 tile being computed on, swizzled chunks
  u16* vb = kb + PF_KV * D;
#endif

  const int h = blockIdx.x;
  const int* tile = tiles + 4 * blockIdx.y;
  const int tok0 = tile[0], count = tile[1], pos0 = tile[3];
  const int* table = blockTables + (u64)tile[2] * maxBlocksPerSeq;
  const int bsShift = kv_block_shift(blockSize);
  const int kvh = h / (numHeads / numKvHeads);
  const int kvWidth = numKvHeads * D;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int row0 = warp * 16 + g, row1 = row0 + 8;  // this thread's two query rows
  const int qpos0 = pos0 + row0, qpos1 = pos0 + row1;
  const int first = window > 0 ? max(0, pos0 - window + 1) : 0;  // first position any row sees
  const int last = pos0 + count - 1;                              // last position any row sees
  const int warpRows = min(16, count - warp * 16);                // ≤ 0: a warp of padding rows
  const int warpFirstPos = pos0 + warp * 16, warpLastPos = warpFirstPos + warpRows - 1;
  // The rows a tile is skipped for together: the warp's, or in the wgmma build, which computes a
  // warpgroup's 64 rows at once, the warpgroup's.
#ifdef PF_WGMMA
  static_assert(PF_KV == 64, "S = Q·Kᵀ is one m64n64 wgmma a k-step");
  const int wg = warp >> 2;
  const int skipRows = min(64, count - wg * 64), skipFirstPos = pos0 + wg * 64;
#else
  const int skipRows = warpRows, skipFirstPos = warpFirstPos;
#endif
  const int skipLastPos = skipFirstPos + skipRows - 1;

#ifdef KV_BF16
  // The chunks this thread copies: chunks c8 + i·TPR of row sr, stored at tile_chunk of tile buffer
  // `buf` (a row's cache slot is looked up once a tile, by the TPR threads that copy it; each copy
  // instruction of theirs reads TPR · 16 consecutive bytes of the row, whole 32-byte sectors).
  const int sr = threadIdx.x / TPR, c8 = threadIdx.x % TPR;
  const kv_t* kcol = kc + kvh * D + c8 * 8;
  const kv_t* vcol = vc + kvh * D + c8 * 8;
  // The block-table entry of this thread's row in the tile of positions t0.. (0 past `last`: not
  // read). Loaded a tile before its copies are queued: waited for right there, its latency stood
  // between each tile's barrier and its copies.
  auto entryOf = [&](int t0) { return t0 + sr <= last ? kv_table_entry(table, t0 + sr, blockSize, bsShift) : 0; };
  // Queue the copies of positions t0.. (this thread's row in block table entry `entry`) into buffer
  // buf (rows past `last` are zero, so no NaN from unwritten slots reaches a product).
  auto stage = [&](int t0, int buf, int entry) {
    const int p = t0 + sr;
    const bool ok = p <= last;
    const u64 off = ok ? (u64)kv_slot_in(entry, p, blockSize, bsShift) * kvWidth : 0;
#pragma unroll
    for (int i = 0; i < NL; i++) {
      const u32 at = buf * TILE_BYTES + tile_chunk(sr, c8 + i * TPR);
      cp_async16(shared_addr(kb) + at, kcol + off + i * TPR * 8, ok);
      cp_async16(shared_addr(vb) + at, vcol + off + i * TPR * 8, ok);
    }
    cp_async_commit();
  };
  stage(first, 0, entryOf(first));  // in flight while q is read
  int nextEntry = entryOf(first + PF_KV);
#elif defined(KV_FP8)
  // The chunks this thread stages and widens: chunk id threadIdx.x + i·THREADS (row id / C16, chunk
  // id % C16), the same ones every tile, so a thread only reads back what its own cp.async wrote.
  auto stage = [&](int t0) {
#pragma unroll
    for (int i = 0; i < NL; i++) {
      const int id = threadIdx.x + i * THREADS;
      if (NL * THREADS != CHUNKS && id >= CHUNKS) break;
      const int r = id / C16, c16 = id % C16, p = t0 + r;
      const bool ok = p <= last;
      const u64 off = ok ? (u64)kv_slot(table, p, blockSize, bsShift) * kvWidth : 0;
      cp_async16(shared_addr(kq) + r * D + c16 * 16, kc + kvh * D + c16 * 16 + off, ok);
      cp_async16(shared_addr(vq) + r * D + c16 * 16, vc + kvh * D + c16 * 16 + off, ok);
    }
    cp_async_commit();
  };
  // 16 staged codes → 16 bf16 (exact: e4m3 has 3 mantissa bits) in the two 16-byte chunks 2·c16
  // and 2·c16 + 1 of row r, each stored at tile_chunk.
  auto widen = [](const unsigned char* src, u16* dst, int r, int c16) {
    const uint4 q = *reinterpret_cast<const uint4*>(src + r * D + c16 * 16);
    const u32 w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int h = 0; h < 2; h++) {
      u32 o[4];
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const u32 word = w[2 * h + j / 2], sh = 16 * (j & 1);
        const u32 lo = __float_as_uint(e4m3_to_f32((word >> sh) & 0xffu)) >> 16;
        const u32 hi = __float_as_uint(e4m3_to_f32((word >> (sh + 8)) & 0xffu)) >> 16;
        o[j] = lo | (hi << 16);
      }
      *reinterpret_cast<uint4*>(reinterpret_cast<unsigned char*>(dst) + tile_chunk(r, 2 * c16 + h)) = make_uint4(o[0], o[1], o[2], o[3]);
    }
  };
  auto convert = [&]() {
#pragma unroll
    for (int i = 0; i < NL; i++) {
      const int id = threadIdx.x + i * THREADS;
      if (NL * THREADS != CHUNKS && id >= CHUNKS) break;
      widen(kq, kb, id / C16, id % C16);
      widen(vq, vb, id / C16, id % C16);
    }
  };
  stage(first);  // in flight while q is read
#else
  // The float4s this thread stages and converts: rows sr + i·RSTEP, column c4 (the same ones every
  // tile, so a thread only ever reads back what its own cp.async wrote: no barrier needed there).
  const int sr = threadIdx.x / C4, c4 = threadIdx.x % C4;
  const kv_t* kcol = kc + kvh * D + c4 * 4;
  const kv_t* vcol = vc + kvh * D + c4 * 4;
  const u32 kfThread = shared_addr(kf) + (sr * D + c4 * 4) * 4, vfThread = shared_addr(vf) + (sr * D + c4 * 4) * 4;
  // Queue the copies of positions t0.. (rows past `last` are zero, so no NaN from unwritten slots reaches a product).
  auto stage = [&](int t0) {
#pragma unroll
    for (int i = 0; i < NL; i++) {
      const int p = t0 + sr + i * RSTEP;
      const bool ok = p <= last;
      const u64 off = ok ? (u64)kv_slot(table, p, blockSize, bsShift) * kvWidth : 0;
      cp_async16(kfThread + i * RSTEP * D * 4, kcol + off, ok);
      cp_async16(vfThread + i * RSTEP * D * 4, vcol + off, ok);
    }
    cp_async_commit();
  };
  // This thread's staged floats → bf16, 16-byte chunk c of row r stored at tile_chunk.
  auto convert = [&]() {
#pragma unroll
    for (int i = 0; i < NL; i++) {
      const int r = sr + i * RSTEP;
      const u32 at = tile_chunk(r, c4 >> 1) + (c4 & 1) * 8;  // bytes
      const float4 a = *reinterpret_cast<const float4*>(kf + r * D + c4 * 4);
      const float4 b = *reinterpret_cast<const float4*>(vf + r * D + c4 * 4);
      *reinterpret_cast<uint2*>(reinterpret_cast<unsigned char*>(kb) + at) = uint2{pack_bf16x2(a.x, a.y), pack_bf16x2(a.z, a.w)};
      *reinterpret_cast<uint2*>(reinterpret_cast<unsigned char*>(vb) + at) = uint2{pack_bf16x2(b.x, b.y), pack_bf16x2(b.z, b.w)};
    }
  };
  stage(first);  // in flight while q is read
#endif

#ifdef PF_WGMMA
  // The block's query rows as bf16 in shared memory, after the K/V tiles (tile_chunk layout, panels
  // of QROWS rows): S = Q·Kᵀ reads them through a descriptor (wgmma.cuh says why not registers).
  // Written once here; the first tile's fence and barrier make them visible to the tensor cores.
  constexpr int QROWS = WARPS * 16;
#ifdef KV_BF16
  unsigned char* qs = reinterpret_cast<unsigned char*>(vb + 2 * PF_KV * D);
#elif defined(KV_FP8)
  unsigned char* qs = vq + PF_KV * D;
#else
  unsigned char* qs = reinterpret_cast<unsigned char*>(vb + PF_KV * D);
#endif
  // A thread takes chunk c < D/16 of a row with chunk c + D/16: the dims RoPE pairs (ropeCos: q's
  // rotation left to this kernel, cos/sin rows [T, D/2]). Every load of every round is issued
  // before the first is used: one global round trip at the block's start, not one per round (with
  // one block an SM nothing else hid them: ~10% of the kernel at 2048 tokens, Nsight Compute).
  constexpr int QPAIRS = QROWS * (D / 16);
  constexpr int QR = QPAIRS / THREADS;  // rounds
  static_assert(QR * THREADS == QPAIRS, "threads must divide the q tile");
  const float4 zero = float4{0.f, 0.f, 0.f, 0.f};
  float4 a0[QR], a1[QR], b0[QR], b1[QR];  // chunk c, chunk c + D/16 of round j's row
#pragma unroll
  for (int j = 0; j < QR; j++) {
    const int i = threadIdx.x + j * THREADS;
    const int r = i / (D / 16), c = i % (D / 16);
    a0[j] = a1[j] = b0[j] = b1[j] = zero;
    if (r < count) {
      const float* src = q + ((u64)(tok0 + r) * numHeads + h) * D + 8 * c;
      a0[j] = *reinterpret_cast<const float4*>(src);
      a1[j] = *reinterpret_cast<const float4*>(src + 4);
      b0[j] = *reinterpret_cast<const float4*>(src + D / 2);
      b1[j] = *reinterpret_cast<const float4*>(src + D / 2 + 4);
    }
  }
  if (ropeCos) {
    float4 cs0[QR], cs1[QR], sn0[QR], sn1[QR];
#pragma unroll
    for (int j = 0; j < QR; j++) {
      const int i = threadIdx.x + j * THREADS;
      const int r = i / (D / 16), c = i % (D / 16);
      const u64 at = (u64)rope_row(ropeIndex, tok0 + min(r, count - 1)) * (D / 2) + 8 * c;
      cs0[j] = *reinterpret_cast<const float4*>(ropeCos + at);
      cs1[j] = *reinterpret_cast<const float4*>(ropeCos + at + 4);
      sn0[j] = *reinterpret_cast<const float4*>(ropeSin + at);
      sn1[j] = *reinterpret_cast<const float4*>(ropeSin + at + 4);
    }
#pragma unroll
    for (int j = 0; j < QR; j++) {
      rope_q(a0[j], b0[j], cs0[j], sn0[j]);
      rope_q(a1[j], b1[j], cs1[j], sn1[j]);
    }
  }
#pragma unroll
  for (int j = 0; j < QR; j++) {
    const int i = threadIdx.x + j * THREADS;
    const int r = i / (D / 16), c = i % (D / 16);
    *reinterpret_cast<uint4*>(qs + tile_chunk(r, c, QROWS)) = make_uint4(pack_bf16x2(a0[j].x, a0[j].y), pack_bf16x2(a0[j].z, a0[j].w), pack_bf16x2(a1[j].x, a1[j].y), pack_bf16x2(a1[j].z, a1[j].w));
    *reinterpret_cast<uint4*>(qs + tile_chunk(r, c + D / 16, QROWS)) = make_uint4(pack_bf16x2(b0[j].x, b0[j].y), pack_bf16x2(b0[j].z, b0[j].w), pack_bf16x2(b1[j].x, b1[j].y), pack_bf16x2(b1[j].z, b1[j].w));
  }
#else
  // This warp's 16 query rows as bf16 A fragments, kept in registers for the whole walk.
  u32 qa[KS][4];
  {
    const float* q0 = q + ((u64)(tok0 + row0) * numHeads + h) * D + 2 * t;
    const float* q1 = q + ((u64)(tok0 + row1) * numHeads + h) * D + 2 * t;
    const float2 zero = float2{0.f, 0.f};
    // Dims 16k + 2t (+1) and 16k + 8 + 2t (+1) of rows row0 and row1 (the A fragment's layout): a
    // thread holds both dims of each RoPE pair (k and k + KS/2), so q's rotation, where it was left
    // to this kernel (ropeCos), needs only the cos/sin values.
    float2 va[KS], vb[KS], vc[KS], vd[KS];
#pragma unroll
    for (int k = 0; k < KS; k++) {
      va[k] = row0 < count ? *reinterpret_cast<const float2*>(q0 + 16 * k) : zero;
      vb[k] = row1 < count ? *reinterpret_cast<const float2*>(q1 + 16 * k) : zero;
      vc[k] = row0 < count ? *reinterpret_cast<const float2*>(q0 + 16 * k + 8) : zero;
      vd[k] = row1 < count ? *reinterpret_cast<const float2*>(q1 + 16 * k + 8) : zero;
    }
    if (ropeCos) {
      const u64 at0 = (u64)rope_row(ropeIndex, tok0 + min(row0, count - 1)) * (D / 2) + 2 * t;
      const u64 at1 = (u64)rope_row(ropeIndex, tok0 + min(row1, count - 1)) * (D / 2) + 2 * t;
      const float *cs0 = ropeCos + at0, *sn0 = ropeSin + at0, *cs1 = ropeCos + at1, *sn1 = ropeSin + at1;
#pragma unroll
      for (int k = 0; k < KS / 2; k++) {
        rope_q(va[k], va[k + KS / 2], *reinterpret_cast<const float2*>(cs0 + 16 * k), *reinterpret_cast<const float2*>(sn0 + 16 * k));
        rope_q(vb[k], vb[k + KS / 2], *reinterpret_cast<const float2*>(cs1 + 16 * k), *reinterpret_cast<const float2*>(sn1 + 16 * k));
        rope_q(vc[k], vc[k + KS / 2], *reinterpret_cast<const float2*>(cs0 + 16 * k + 8), *reinterpret_cast<const float2*>(sn0 + 16 * k + 8));
        rope_q(vd[k], vd[k + KS / 2], *reinterpret_cast<const float2*>(cs1 + 16 * k + 8), *reinterpret_cast<const float2*>(sn1 + 16 * k + 8));
      }
    }
#pragma unroll
    for (int k = 0; k < KS; k++) {
      const float2 a = va[k], b = vb[k], c = vc[k], d = vd[k];
      qa[k][0] = pack_bf16x2(a.x, a.y);
      qa[k][1] = pack_bf16x2(b.x, b.y);
      qa[k][2] = pack_bf16x2(c.x, c.y);
      qa[k][3] = pack_bf16x2(d.x, d.y);
    }
  }
#endif

  float o[NT][4];
#pragma unroll
  for (int j = 0; j < NT; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  // Running max (of scores × scale, in log2 units) and this thread's share of the running sum, for
  // rows row0 / row1. The max is taken over raw scores, which is the same since scale > 0.
  float m0 = NEG_INF, m1 = NEG_INF, l0 = 0.f, l1 = 0.f;
  const float scaleLog2 = scale * LOG2E;
  constexpr u32 PANEL = PF_KV * 128;  // bytes of a tile's 64-column panel (tile_chunk)
#ifdef PF_WGMMA
  const u32 kbBase = shared_addr(kb), vbBase = shared_addr(vb);
  const u32 qsWarpgroup = shared_addr(qs) + wg * 64 * 128;  // this warpgroup's 64 rows in each panel
  // Descriptors of the operands' first k-step; each step adds its byte offset (wgmma_desc_add).
  const u64 qDesc = wgmma_desc_sw128(qsWarpgroup, 16, 1024), kDesc = wgmma_desc_sw128(kbBase, 16, 1024);
  constexpr u32 V_LBO = PANEL, V_SBO = 1024;  // wgmma.cuh: MN-major B
  const u64 vDesc = wgmma_desc_sw128(vbBase, V_LBO, V_SBO);
#else
  // The row this lane addresses for ldmatrix (lanes 8i..8i+7: matrix i) and the chunk it reads
  // before the swizzle; rows of a fragment are 8-aligned, so the swizzle is ^ mrow.
  const int mat = lane >> 3, mrow = lane & 7;
  const u32 kbLane = shared_addr(kb) + ((mat >> 1) * 8 + mrow) * 128, kChunk = mat & 1;
  const u32 vbLane = shared_addr(vb) + ((mat & 1) * 8 + mrow) * 128, vChunk = mat >> 1;
#endif

  for (int t0 = first; t0 <= last; t0 += PF_KV) {
    cp_async_wait_all();  // this thread's copies of tile t0 have landed
#ifdef PF_WGMMA
    fence_proxy_async_shared();  // they are read next by the tensor cores (wgmma), not by loads
#endif
    __syncthreads();      // every warp is done with the previous bf16 tile
#ifdef KV_BF16
    // Tile t0 is complete in buffer `buf`; the other buffer, computed on last iteration, takes the next.
    const int buf = ((t0 - first) / PF_KV) & 1;
    if (t0 + PF_KV <= last) {
      stage(t0 + PF_KV, buf ^ 1, nextEntry);
      nextEntry = entryOf(t0 + 2 * PF_KV);
    }
    const u32 tileOff = buf * TILE_BYTES;
#else
    convert();
    if (t0 + PF_KV <= last) stage(t0 + PF_KV);  // the staging slots are this thread's, just read
#ifdef PF_WGMMA
    fence_proxy_async_shared();  // the bf16 tile's stores, read next by the tensor cores
#endif
    __syncthreads();      // the bf16 tile is complete
    const u32 tileOff = 0;
#endif
    // Nothing in this tile is visible to any of those rows: causally after them, or before the window
    // of the earliest of them.
    if (skipRows <= 0 || t0 > skipLastPos || (window > 0 && t0 + PF_KV - 1 <= skipFirstPos - window)) continue;

    // S = Q · Kᵀ: 16 rows × PF_KV positions per warp, SN column tiles of 8.
    constexpr int SN = PF_KV / 8;
    float s[SN][4];
#pragma unroll
    for (int j = 0; j < SN; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#ifdef PF_WGMMA
    // Q (the warpgroup's rows) as A and the K tile as B, both K-major (a row's dims along it): k-step k
    // is 32 bytes into panel k / 4 of each.
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < KS; k++) {
      const u32 at = (k & 3) * 32;
      wgmma_m64n64k16_ss(s, wgmma_desc_add(qDesc, (k >> 2) * QROWS * 128 + at), wgmma_desc_add(kDesc, tileOff + (k >> 2) * PANEL + at));
    }
    wgmma_commit();
    wgmma_wait<0>();
#else
#pragma unroll
    for (int k = 0; k < KS; k++) {
#pragma unroll
      for (int np = 0; np < SN / 2; np++) {
        // matrices: (positions +0..7, dims +0..7), (+0..7, +8..15), (+8..15, +0..7), (+8..15, +8..15)
        u32 b0, b1, b2, b3;
        ldmatrix_x4(kbLane + tileOff + (k >> 2) * PANEL + np * 16 * 128 + (((2 * (k & 3) + kChunk) ^ mrow) << 4), b0, b1, b2, b3);
        mma_bf16(s[2 * np], qa[k], b0, b1);
        mma_bf16(s[2 * np + 1], qa[k], b2, b3);
      }
    }
#endif

    // Mask (causal, window, past the tile's end; not needed when the whole tile is visible to
    // every row of the warp) and the tile's max per row, over raw scores.
    // One branch for the tile (most tiles are whole), not one per score pair.
    const bool whole = t0 + PF_KV - 1 <= min(warpFirstPos, last) && (window <= 0 || t0 > warpLastPos - window);
    if (!whole) {
#pragma unroll
      for (int j = 0; j < SN; j++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const int p = t0 + j * 8 + 2 * t + e;
          if (!(p <= qpos0 && p <= last && (window <= 0 || p > qpos0 - window))) s[j][e] = NEG_INF;
          if (!(p <= qpos1 && p <= last && (window <= 0 || p > qpos1 - window))) s[j][2 + e] = NEG_INF;
        }
      }
    }
    float mx0 = NEG_INF, mx1 = NEG_INF;
#pragma unroll
    for (int j = 0; j < SN; j++) {
      mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
      mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
    }
    // A row's 32 scores are spread over the 4 lanes of its quad.
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float nm0 = fmaxf(m0, mx0 * scaleLog2), nm1 = fmaxf(m1, mx1 * scaleLog2);
    // A row that has seen nothing yet (padding rows, a window not reached) keeps max -inf: subtract
    // 0 instead so exp2 gives 0, never NaN.
    const float base0 = nm0 == NEG_INF ? 0.f : nm0, base1 = nm1 == NEG_INF ? 0.f : nm1;
    // Rescale only when some row's max rose: otherwise every factor is exp2(0) = 1 (or 0 · 0 for a
    // row still at -inf), so skipping it changes no bit. Past the first tiles maxima rarely move.
    if (!__all_sync(0xffffffffu, nm0 == m0 && nm1 == m1)) {
      const float corr0 = exp2_approx(m0 - base0), corr1 = exp2_approx(m1 - base1);  // 0 while m = -inf
      l0 *= corr0;
      l1 *= corr1;
#pragma unroll
      for (int j = 0; j < NT; j++) {
        o[j][0] *= corr0;
        o[j][1] *= corr0;
        o[j][2] *= corr1;
        o[j][3] *= corr1;
      }
    }
    m0 = nm0;
    m1 = nm1;
    // P = exp2(S · scale · log2 e - max) as bf16 A fragments: column tiles 2k and 2k+1 make k-step k.
    u32 pa[SN / 2][4];
#pragma unroll
    for (int j = 0; j < SN; j++) {
      const float p00 = exp2_approx(fmaf(s[j][0], scaleLog2, -base0)), p01 = exp2_approx(fmaf(s[j][1], scaleLog2, -base0));
      const float p10 = exp2_approx(fmaf(s[j][2], scaleLog2, -base1)), p11 = exp2_approx(fmaf(s[j][3], scaleLog2, -base1));
      l0 += p00 + p01;
      l1 += p10 + p11;
      pa[j >> 1][(j & 1) * 2] = pack_bf16x2(p00, p01);
      pa[j >> 1][(j & 1) * 2 + 1] = pack_bf16x2(p10, p11);
    }

#ifdef PF_WGMMA
    // O += P · V with V as B, MN-major (a position's dims along its row, panels of 64 dims LBO apart):
    // k-step k (16 positions) starts 16 rows in. Waited for before the next tile's barrier, which
    // lets the copies refill this buffer.
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < SN / 2; k++) wgmma_bf16_tb<D>(o, pa[k], wgmma_desc_add(vDesc, tileOff + k * 16 * 128));
    wgmma_commit();
    wgmma_wait<0>();
#else
    // O += P · V: k = 16 positions per step, 16 output dims per ldmatrix.x4.trans.
#pragma unroll
    for (int k = 0; k < SN / 2; k++) {
#pragma unroll
      for (int dp = 0; dp < D / 16; dp++) {
        // matrices: (positions +0..7, dims +0..7), (+8..15, +0..7), (+0..7, +8..15), (+8..15, +8..15)
        u32 b0, b1, b2, b3;
        ldmatrix_x4_trans(vbLane + tileOff + (dp >> 2) * PANEL + k * 16 * 128 + (((2 * (dp & 3) + vChunk) ^ mrow) << 4), b0, b1, b2, b3);
        mma_bf16(o[2 * dp], pa[k], b0, b1);
        mma_bf16(o[2 * dp + 1], pa[k], b2, b3);
      }
    }
#endif
  }

  // Each lane summed its own columns: the row's sum is the quad's total.
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  // A real row always sees its own position, so l > 0 there.
  if (row0 < count) {
    const float inv = vScale / l0;
    float* op = out + ((u64)(tok0 + row0) * numHeads + h) * D + 2 * t;
#pragma unroll
    for (int j = 0; j < NT; j++) *reinterpret_cast<float2*>(op + 8 * j) = float2{o[j][0] * inv, o[j][1] * inv};
  }
  if (row1 < count) {
    const float inv = vScale / l1;
    float* op = out + ((u64)(tok0 + row1) * numHeads + h) * D + 2 * t;
#pragma unroll
    for (int j = 0; j < NT; j++) *reinterpret_cast<float2*>(op + 8 * j) = float2{o[j][2] * inv, o[j][3] * inv};
  }
}

#define PREFILL_KERNEL(D, WARPS)                                                                                        \
  extern "C" __global__ void __launch_bounds__(WARPS * 32, PF_MIN_BLOCKS(WARPS)) prefill_attention_d##D##_w##WARPS(     \
      const float* __restrict__ q, const kv_t* __restrict__ kc, const kv_t* __restrict__ vc, float* __restrict__ out,   \
      const int* __restrict__ tiles, const int* __restrict__ blockTables, int maxBlocksPerSeq, int blockSize,           \
      int numHeads, int numKvHeads, float scale, int window, float vScale, const float* __restrict__ ropeCos,           \
      const float* __restrict__ ropeSin, const int* __restrict__ ropeIndex) {                                           \
    prefill_attention<D, WARPS>(q, kc, vc, out, tiles, blockTables, maxBlocksPerSeq, blockSize, numHeads, numKvHeads,   \
                                scale, window, vScale, ropeCos, ropeSin, ropeIndex);                                    \
  }

PREFILL_KERNEL(64, 4)
PREFILL_KERNEL(64, 8)
PREFILL_KERNEL(128, 4)
PREFILL_KERNEL(128, 8)
