// What the tensor-core decode GEMVs share (gemv-mma.cu for bf16, gemv-mma-int4.cu, gemv-mma-q8.cu for
// fp8/int8/nvfp4): predicated loads, bf16 pairs, the m16n8k16 step, and the block's epilogue. Each of
// them runs 8 warps a block, tokens as the mma's n (rows of x past T are zero), a warp per 16 rows.
#pragma once
#include "common.cuh"

#define MMA_WARPS 8
#define MMA_THREADS (MMA_WARPS * 32)

// ---- loads (predicated rather than branched, so a group's loads stay in flight together) -----------

// 16 bytes of a weight, read once: kept out of L1, which holds x. Zeros where !ok.
__device__ __forceinline__ uint4 ldg_w(const void* p, bool ok) {
  uint4 v;
  asm volatile(
      "{ .reg .pred p; setp.ne.b32 p, %5, 0; mov.b32 %0, 0; mov.b32 %1, 0; mov.b32 %2, 0; mov.b32 %3, 0;\n"
      "  @p ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4]; }"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p), "r"((int)ok));
  return v;
}

// Four floats of x (through L1: every row's lanes read them). Zeros where !ok.
__device__ __forceinline__ float4 ldg_x4(const float* p, bool ok) {
  float4 v;
  asm volatile(
      "{ .reg .pred p; setp.ne.b32 p, %5, 0; mov.b32 %0, 0; mov.b32 %1, 0; mov.b32 %2, 0; mov.b32 %3, 0;\n"
      "  @p ld.global.nc.v4.f32 {%0, %1, %2, %3}, [%4]; }"
      : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
      : "l"(p), "r"((int)ok));
  return v;
}

// A partial written by another block of this launch: from L2, past this SM's L1.
__device__ __forceinline__ float ld_cg(const float* p) {
  float v;
  asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
  return v;
}

// ---- bf16 pairs and the mma -----------------------------------------------------------------------

// Two floats as a bf16 pair (round to nearest even), lo in the low half: the lower k-slot.
__device__ __forceinline__ u32 bf16x2(float lo, float hi) {
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

__device__ __forceinline__ u32 fma_bf16x2(u32 a, u32 b, u32 c) {
  u32 r;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}

// d += A · B, one m16n8k16 step: a0/a2 row g (k-slots 2q.. and 2q+8..), a1/a3 row g + 8.
__device__ __forceinline__ void mma_bf16(float* d, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ u32 word_at(const uint4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

// ---- the block's sums → y ----------------------------------------------------------------------------

// Where D's element (row m, token t of its n-tile) of an m16n8 fragment sits: lane 4·(m % 8) + t / 2,
// register 2·(m / 8) + t % 2.
struct FragSlot {
  int lane, reg;
};
__device__ __forceinline__ FragSlot frag_slot(int m, int t) { return {4 * (m & 7) + (t >> 1), 2 * (m >> 3) + (t & 1)}; }

// The block's sums → outputs: acc[u][r][n] is the lane's D fragment of chunk u of its group (G of
// them, added in order), m-tile r, n-tile n (tokens 8n..8n + 7); the warps' fragments meet in warp
// order, then (S > 1) the S blocks of this tile in split order, the last of them to finish (an atomic
// ticket, reset by that block) adding. emit(m, t, s) gets the sums s[r] of row m of each m-tile for
// token t and writes the outputs. part: this tile's [S][R][16][T] float32 slots; counter: this tile's
// ticket. An n-tile's sums are the same whatever NT is (each mma's output column depends on its own B
// column only), so a token's result does not depend on how many n-tiles its launch has.
template <int R, int G, int NT, class Emit>
__device__ __forceinline__ void mma_finish_emit_n(const float (&acc)[G][R][NT][4], int T, int S, int split, float* __restrict__ part,
                                                  u32* __restrict__ counter, const Emit& emit) {
  static_assert(NT * 128 <= MMA_THREADS, "one thread per (row, token) of the block");
  __shared__ float partial[MMA_WARPS][NT][R][32][4];
  __shared__ int lastBlock;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
#pragma unroll
  for (int n = 0; n < NT; n++)
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int i = 0; i < 4; i++) {
        float v = acc[0][r][n][i];
#pragma unroll
        for (int u = 1; u < G; u++) v += acc[u][r][n][i];
        partial[warp][n][r][lane][i] = v;
      }
  __syncthreads();
  // One thread per (row m, token t): D's element (m, t) of n-tile t / 8 (frag_slot(m, t % 8)).
  const int o = threadIdx.x;
  const int m = (o >> 3) & 15;
  const int n = o >> 7;
  const int t = 8 * n + (o & 7);
  const bool mine = n < NT && t < T;
  float s[R];
  if (mine) {
    const FragSlot f = frag_slot(m, o & 7);
#pragma unroll
    for (int r = 0; r < R; r++) {
      float v = partial[0][n][r][f.lane][f.reg];
#pragma unroll
      for (int wp = 1; wp < MMA_WARPS; wp++) v += partial[wp][n][r][f.lane][f.reg];
      s[r] = v;
    }
  }
  if (S == 1) {
    if (mine) emit(m, t, s);
    return;
  }
  if (mine) {
#pragma unroll
    for (int r = 0; r < R; r++) part[((split * R + r) * 16 + m) * T + t] = s[r];
  }
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) lastBlock = atomicAdd(counter, 1u) == (u32)(S - 1);
  __syncthreads();
  if (!lastBlock) return;
  __threadfence();
  if (mine) {
#pragma unroll
    for (int r = 0; r < R; r++) {
      float v = ld_cg(part + (r * 16 + m) * T + t);
      for (int sp = 1; sp < S; sp++) v += ld_cg(part + ((sp * R + r) * 16 + m) * T + t);
      s[r] = v;
    }
    emit(m, t, s);
  }
  if (threadIdx.x == 0) *counter = 0;  // ready for the next launch
}

// mma_finish_emit_n for one n-tile (1..8 tokens): acc[u][r] the lane's D fragment.
template <int R, int G, class Emit>
__device__ __forceinline__ void mma_finish_emit(const float (&acc)[G][R][4], int T, int S, int split, float* __restrict__ part,
                                                u32* __restrict__ counter, const Emit& emit) {
  mma_finish_emit_n<R, G, 1>(reinterpret_cast<const float(&)[G][R][1][4]>(acc), T, S, split, part, counter, emit);
}

// Split s of S equal ranges of n items (chunks or column tiles) of a row: [begin, end).
__device__ __forceinline__ void split_range(int n, int S, int s, int& begin, int& end) {
  const int per = (n + S - 1) / S;
  begin = s * per;
  end = min(n, begin + per);
}

// Where block b of a fused launch over up to three matrices (rows N[i], splits S[i]; N = 0: absent)
// works: matrix i's ceil(N[i] / 16) · S[i] blocks of one m-tile follow matrix i − 1's, tile-major
// (its S[i] splits adjacent); the split-K scratch ([tiles][S][16][T] floats) and tickets of the
// matrices with S[i] > 1 lie one after another.
struct FusedSlot {
  int matrix, tile, split, S;
  u64 partOff;
  int counterOff;
};
__device__ __forceinline__ FusedSlot fused_slot(int b, const int (&N)[3], const int (&S)[3], int T) {
  FusedSlot f{0, 0, 0, S[0], 0, 0};
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int tiles = (N[i] + 15) >> 4;
    if (f.matrix != i || b < tiles * S[i]) continue;
    b -= tiles * S[i];
    if (S[i] > 1) {
      f.partOff += (u64)tiles * S[i] * 16 * T;
      f.counterOff += tiles;
    }
    f.matrix = i + 1;
    f.S = S[i + 1];
  }
  f.tile = b / f.S;
  f.split = b % f.S;
  return f;
}

// ---- bulk copies into shared memory (sm_90+: the streamed int4 and nvfp4 GEMVs) ----------------------
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900  // (undefined: nvcc's host pass)
__device__ __forceinline__ u32 smem_u32(const void* p) { return (u32)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(u64* b, int count) { asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(b)), "r"(count)); }
// The barrier's phase completes once the arrival comes and `bytes` of bulk copies have landed.
__device__ __forceinline__ void mbar_expect(u64* b, int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(b)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u64* b) { asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(b)) : "memory"); }
// Wait until the phase of this parity has completed.
__device__ __forceinline__ void mbar_wait(u64* b, int parity) {
  asm volatile("{ .reg .pred p; WAIT_%=: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1; @!p bra WAIT_%=; }" ::"r"(smem_u32(b)), "r"(parity)
               : "memory");
}
// `bytes` (a multiple of 16, both addresses 16-byte aligned) from global to shared memory by the copy
// engine; their landing counts against barrier b.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, int bytes, u64* b) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smem_u32(dst)), "l"(src), "r"(bytes),
               "r"(smem_u32(b))
               : "memory");
}

// The consumer warps of a streamed GEMV meet (named barrier 1): its producer warp has left.
struct ConsumerSync {
  __device__ __forceinline__ void operator()() const { asm volatile("bar.sync 1, %0;" ::"n"(MMA_THREADS) : "memory"); }
};

// A streamed GEMV's ring barriers: `full` completes when a stage's bulk copies have landed, `empty` when
// its 8 consumer warps are done with it. Made by thread 0 before the warps split.
__device__ __forceinline__ void stream_ring_init(u64* full, u64* empty, int stages) {
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; s++) mbar_init(&full[s], 1), mbar_init(&empty[s], MMA_WARPS);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
}

// A streamed GEMV's producer warp: for each of the block's items (blockIdx.x, + gridDim.x, ... of
// `items`; item(i) says what item i is) and each of its stagesPerItem stages, waits until the next ring
// slot is free (its consumers have arrived on `empty`), then fill(it, st, slot, full) bulk-copies stage
// st of the item into the slot: lane 0 expects the stage's bytes on `full`, then the lanes copy.
template <class ItemOf, class Fill>
__device__ __forceinline__ void stream_produce(int items, const ItemOf& item, int stagesPerItem, int stages, u64* full, u64* empty, const Fill& fill) {
  int s = 0, phase = 0, n = 0;
  for (int i = blockIdx.x; i < items; i += gridDim.x) {
    const auto it = item(i);
    for (int st = 0; st < stagesPerItem; st++, n++) {
      if (n >= stages) mbar_wait(&empty[s], phase ^ 1);
      fill(it, st, s, &full[s]);
      if (++s == stages) s = 0, phase ^= 1;
    }
  }
}

// A streamed GEMV's item, summed: its consumer warps have left each (split, classic warp) unit's sum in
// `units` ([S][8 warps][R][32 lanes] float4, the lane's D fragment). They meet; one thread per (row m,
// token t) adds the units of each m-tile in the classic kernel's order — warps, then splits
// (mma_finish_emit_n's) — and emit(it, m, t, sums) writes the outputs; they meet again, so the units are
// read before the next item writes them.
template <int R, class Item, class Emit>
__device__ __forceinline__ void stream_units_emit(const float4* units, const Item& it, int S, int T, const Emit& emit) {
  ConsumerSync()();
  const int o = threadIdx.x, m = (o >> 3) & 15, t = o & 7;
  if (o < 128 && t < T) {
    const FragSlot f = frag_slot(m, t);
    const auto at = [&](int sp, int w, int r) { return reinterpret_cast<const float*>(&units[((sp * MMA_WARPS + w) * R + r) * 32 + f.lane])[f.reg]; };
    float v[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
      for (int sp = 0; sp < S; sp++) {
        float vs = at(sp, 0, r);
#pragma unroll
        for (int w = 1; w < MMA_WARPS; w++) vs += at(sp, w, r);
        v[r] = sp == 0 ? vs : v[r] + vs;
      }
    }
    emit(it, m, t, v);
  }
  ConsumerSync()();
}

// x → bf16 pairs in shared memory for a streamed GEMV (every consumer thread), then the consumers
// meet. Token row t holds `blocks` uint4, one per 8 columns c..c + 7 (zeros past K), and one of padding,
// so that the rows of two tokens a quarter-warp reads start 16 bytes apart in the banks. Each uint4 is
// the 4 pairs of the kernel's k-slot order: PAIRS4 (int4) (c + i, c + i + 4), else (nvfp4) (c + 2i,
// c + 2i + 1), i = 0..3. A thread issues the loads of 4 blocks before converting any, so it waits on L2
// once per 4, not per block. x is the first thing the consumers read that an earlier kernel wrote, so
// they wait for it here (pdl_wait; launched programmatically, the producer warp has been filling the
// ring with weights meanwhile, programmatic-launch.ts).
template <bool PAIRS4>
__device__ __forceinline__ void stream_stage_x(uint4* xs, const float* __restrict__ x, int T, int K, int blocks) {
  constexpr int U = 4;
  pdl_wait();
  for (int i0 = threadIdx.x; i0 < T * blocks; i0 += U * MMA_THREADS) {
    float4 lo[U], hi[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int i = i0 + u * MMA_THREADS, t = i / blocks, c = 8 * (i - t * blocks);
      // K % 16 = 0: a block lies wholly in K or past it.
      const bool ok = i < T * blocks && c < K;
      lo[u] = ldg_x4(x + (u64)t * K + c, ok);
      hi[u] = ldg_x4(x + (u64)t * K + c + 4, ok);
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int i = i0 + u * MMA_THREADS, t = i / blocks;
      if (i >= T * blocks) continue;
      const float4 a = lo[u], b = hi[u];
      xs[i + t] = PAIRS4 ? make_uint4(bf16x2(a.x, b.x), bf16x2(a.y, b.y), bf16x2(a.z, b.z), bf16x2(a.w, b.w))
                         : make_uint4(bf16x2(a.x, a.y), bf16x2(a.z, a.w), bf16x2(b.x, b.y), bf16x2(b.z, b.w));
    }
  }
  ConsumerSync()();
}
#endif
