// Greedy sampling on the GPU: the index of each row's largest value among its first n columns, so a
// greedy step reads back one id a row instead of the whole vocabulary's logits (513 KB a row for
// Llama 3) and the host skips a 128k-element scan. Semantics of the CPU sampler's argmax: ties go
// to the lowest index, NaN never wins, -1 when no value is above -inf.
#include "common.cuh"

// (value, index) of a candidate; index -1 = none yet.
__device__ __forceinline__ void better(float& bv, int& bi, float v, int i) {
  if (i >= 0 && (bi < 0 || v > bv || (v == bv && i < bi))) {
    bv = v;
    bi = i;
  }
}

// Candidate v at index i, the thread's candidates coming in increasing index order: a later equal
// value never replaces it (nor does NaN, which is never greater).
__device__ __forceinline__ void take(float& bv, int& bi, float v, int i) {
  if (v > bv) {
    bv = v;
    bi = i;
  }
}

#define ARGMAX_LOADS 4  // 16-byte loads a thread has in flight per round

// One block per row; blockDim.x a multiple of 32, at most 1024. A row is read ARGMAX_LOADS float4s per
// thread at a time, all issued before any is compared: at batch 1 the whole 128k-value row is one
// block's, and a load per round trip (the scalar loop) took ~74 µs of every greedy step.
extern "C" __global__ void argmax_rows(const float* __restrict__ x, int* __restrict__ out, int cols, int n) {
  const float* row = x + (u64)blockIdx.x * cols;
  float bv = NEG_INF;
  int bi = -1;
  // Each thread's candidates in increasing index order: its float4s (k = tid, tid + T, …; in
  // groups of ARGMAX_LOADS), then its share of the scalar tail.
  const bool vec = (cols & 3) == 0 && ((u64)x & 15) == 0;
  const int n4 = vec ? n / 4 : 0;
  const float4* row4 = reinterpret_cast<const float4*>(row);
  const int T = blockDim.x;
  for (int k0 = threadIdx.x; k0 < n4; k0 += ARGMAX_LOADS * T) {
    float4 v[ARGMAX_LOADS];
#pragma unroll
    for (int j = 0; j < ARGMAX_LOADS; j++) {
      const int k = k0 + j * T;
      v[j] = k < n4 ? row4[k] : float4{NEG_INF, NEG_INF, NEG_INF, NEG_INF};
    }
#pragma unroll
    for (int j = 0; j < ARGMAX_LOADS; j++) {
      const int i = 4 * (k0 + j * T);
      take(bv, bi, v[j].x, i);
      take(bv, bi, v[j].y, i + 1);
      take(bv, bi, v[j].z, i + 2);
      take(bv, bi, v[j].w, i + 3);
    }
  }
  for (int i = 4 * n4 + threadIdx.x; i < n; i += T) take(bv, bi, row[i], i);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, bv, o);
    const int i = __shfl_xor_sync(0xffffffffu, bi, o);
    better(bv, bi, v, i);
  }
  __shared__ float sv[32];
  __shared__ int si[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sv[warp] = bv;
    si[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x >> 5;
    bv = lane < warps ? sv[lane] : NEG_INF;
    bi = lane < warps ? si[lane] : -1;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float v = __shfl_xor_sync(0xffffffffu, bv, o);
      const int i = __shfl_xor_sync(0xffffffffu, bi, o);
      better(bv, bi, v, i);
    }
    if (lane == 0) out[blockIdx.x] = bi;
  }
}

// ---- Sampling: temperature, min-p, top-k, top-p and the draw ---------------------------------------
//
// `sample_rows` draws exactly what src/engine/sampler.ts draws (the reference) from the same uniform u,
// one block per logit row, without sorting the vocabulary and without a device-wide sync:
//
//   weights w = exp((x − max) / t) in f64 (the top token weighs exactly 1; NaN and −inf weigh 0; if
//   the max is +inf, the +inf tokens weigh 1 and the rest 0) → min-p keeps w ≥ minWeight → top-k
//   keeps the k best by (logit desc, id asc) → top-p keeps the shortest prefix of that order whose
//   weight reaches topP × its candidates' weight → the lowest surviving id whose cumulative weight
//   over surviving ids in ascending id order exceeds u × total.
//
// Sums are exact: each weight becomes a fixed-point number of 88 fractional bits held as two u64
// (units of 2^-44 and of 2^-88; Fx), so a sum does not depend on the order it is taken in (shared
// memory atomics, a block's threads, warp segments all give the same bits) and differs from the true
// sum of the f64 weights by less than 2^-88 per weight. The host sums its f64 weights one by one, so
// the two differ only by the host's own rounding (≤ n·2^-53 of the total, and exp()'s last ulp);
// a draw can come out differently only where u × total lies that close to a cumulative boundary.
//
// Top-k and top-p thresholds are found by a radix descent over the logits' order-preserving 32-bit
// keys: a histogram of up to 2048 bins (count and fixed-point weight) over the candidates' key range,
// the bin where the running measure from the top reaches the target, then the same within that bin,
// until the bin is one key (or holds one candidate); ties at that key are cut in id order, as the
// host's heaps do. Each level is one pass over the row. The exp() of every token is taken once, in
// the weight pass; later passes take it only for the few tokens their key test lets through.
//
// Residual mode (a row with an excluded draft x ≥ 0: speculative verification of a deterministic
// draft, drawResidual in sampler.ts): the row also returns p(x) = (float)(w(x) / total), the float32
// probability Sampler.probabilities stores (0 if x did not survive), and draws instead from the
// residual: the float32 probabilities (float)(w(y) / total) of the survivors y ≠ x that are above 0,
// scaled by the power of two that puts the largest in [0.5, 1) (they can all be far below 2^-88) and
// as fixed-point weights, by the same walk; if no such y exists, x (the residual is then p itself, in
// which only x has mass). `total` is the exact sum rounded to f64 where the host rounds a running
// sum, so a probability can differ from the host's by one float32 ulp where the quotient lies within
// that rounding of a float32 rounding boundary (rare; docs/cuda.md).
//
// Sampled drafts keep their distribution on the device (a row's `distRow` ≥ 0, a row of `dist`,
// distCols floats apart). A draft model's row (no excluded draft) writes its float32 probabilities
// there and draws from them (drawDistribution); a verification row excluding draft x draws from the
// residual max(0, p − q) against that row's q, rounded to float32 per id as the verifier stores it,
// or from p when nothing is left (drawResidualOf). Both walk float32 values like residual mode.

#define SAMPLE_BINS 2048
#define SAMPLE_BIN_BITS 11
#define POS_INF __int_as_float(0x7f800000)
#define NO_ID 0x7fffffff
// Per row in `params`: temperature, topP, the min-p weight floor, u, topK, greedy (0/1), the excluded
// draft (residual mode; -1: none), the row of dist it reads or writes (-1: none).
#define SAMPLE_PARAMS 8

#define TWO44 17592186044416.0
#define TWO52 4503599627370496.0
#define FX_MASK ((1ull << 44) - 1)

// A non-negative fixed-point number hi·2^-44 + lo·2^-88. Sums may leave lo above 2^44 (normalise
// before comparing); a weight is ≤ 1 (hi ≤ 2^44) and rows are ≤ 2^19 long, so neither word overflows.
struct Fx {
  u64 hi, lo;
};

__device__ __forceinline__ Fx fx(u64 hi, u64 lo) {
  Fx f;
  f.hi = hi;
  f.lo = lo;
  return f;
}
__device__ __forceinline__ Fx fx_add(Fx a, Fx b) { return fx(a.hi + b.hi, a.lo + b.lo); }
// a − b where b ≤ a word by word (b is one of the terms summed into a).
__device__ __forceinline__ Fx fx_sub(Fx a, Fx b) { return fx(a.hi - b.hi, a.lo - b.lo); }
__device__ __forceinline__ Fx fx_norm(Fx a) { return fx(a.hi + (a.lo >> 44), a.lo & FX_MASK); }
__device__ __forceinline__ bool fx_ge(Fx a, Fx b) {
  a = fx_norm(a);
  b = fx_norm(b);
  return a.hi > b.hi || (a.hi == b.hi && a.lo >= b.lo);
}
__device__ __forceinline__ bool fx_gt(Fx a, Fx b) { return !fx_ge(b, a); }
__device__ __forceinline__ double fx_to_double(Fx a) {
  a = fx_norm(a);
  return (double)a.hi * (1.0 / TWO44) + (double)a.lo * (1.0 / TWO44 / TWO44);
}

// A surviving token's weight w in (0, 1] as Fx, truncated at 2^-88, without float→int conversions
// (slow on some GPUs): adding 2^52 rounding toward zero leaves floor(s) in the mantissa of a double
// of exponent 52. A weight below 2^-88 counts as 2^-88, not 0: every survivor keeps some mass, so
// u = 0 draws the first survivor, as on the host (the sums move by at most n·2^-88).
__device__ __forceinline__ Fx fx_weight(double w) {
  const double s = w * TWO44;  // exact: a power of two, s ≤ 2^44
  const double hs = __dadd_rz(s, TWO52);
  const double fl = hs - TWO52;  // floor(s), exact
  const double ls = __dadd_rz((s - fl) * TWO44, TWO52);  // s − floor(s) is exact, and so is × 2^44
  const u64 hi = (u64)(__double_as_longlong(hs) - __double_as_longlong(TWO52));
  const u64 lo = (u64)(__double_as_longlong(ls) - __double_as_longlong(TWO52));
  return fx(hi, (hi | lo) == 0 ? 1 : lo);
}

// Any v in [0, 2^19) as Fx (targets: u × total, topP × mass).
__device__ __forceinline__ Fx fx_of(double v) {
  const double s = v * TWO44;
  const u64 hi = __double2ull_rz(s);
  return fx(hi, __double2ull_rz((s - (double)hi) * TWO44));
}

// Order-preserving key of a logit: larger float, larger key; −0 and +0 are one key (the host's
// comparisons tie them). NaN keys are never used (NaN weighs nothing).
__device__ __forceinline__ u32 order_key(float v) {
  u32 b = __float_as_uint(v);
  if ((b << 1) == 0) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float key_value(u32 k) { return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }

// 64-bit shuffles as two 32-bit ones.
__device__ __forceinline__ u64 join64(u32 lo, u32 hi) { return ((u64)hi << 32) | lo; }
__device__ __forceinline__ u64 shfl_xor64(u64 v, int o) {
  return join64(__shfl_xor_sync(0xffffffffu, (u32)v, o), __shfl_xor_sync(0xffffffffu, (u32)(v >> 32), o));
}
__device__ __forceinline__ u64 shfl_up64(u64 v, int d) {
  return join64(__shfl_up_sync(0xffffffffu, (u32)v, d), __shfl_up_sync(0xffffffffu, (u32)(v >> 32), d));
}
__device__ __forceinline__ u64 shfl_down64(u64 v, int d) {
  return join64(__shfl_down_sync(0xffffffffu, (u32)v, d), __shfl_down_sync(0xffffffffu, (u32)(v >> 32), d));
}

__device__ __forceinline__ Fx warp_fx_sum(Fx a) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    a.hi += shfl_xor64(a.hi, o);
    a.lo += shfl_xor64(a.lo, o);
  }
  return a;
}
__device__ __forceinline__ int warp_int_sum(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ int warp_int_max(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sums and maxima (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. Each starts with a barrier, so back-to-back calls never race on the shared partials.
__device__ Fx block_fx_sum(Fx a) {
  __shared__ u64 part[2][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  a = warp_fx_sum(a);
  __syncthreads();
  if (lane == 0) {
    part[0][warp] = a.hi;
    part[1][warp] = a.lo;
  }
  __syncthreads();
  return warp_fx_sum(lane < warps ? fx(part[0][lane], part[1][lane]) : fx(0, 0));
}
__device__ int block_int_sum(int v) {
  __shared__ int part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_int_sum(v);
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  return warp_int_sum(lane < warps ? part[lane] : 0);
}
__device__ int block_int_max(int v) {
  __shared__ int part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_int_max(v);
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  return warp_int_max(lane < warps ? part[lane] : -1);
}

// Exclusive scan of one Fx per thread in thread order, or from the last thread down (`down`):
// returns the sum over the threads before this one; `total` gets the block's sum.
__device__ Fx block_fx_scan(Fx a, bool down, Fx& total) {
  __shared__ u64 part[2][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  Fx inc = a;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const u64 h = down ? shfl_down64(inc.hi, d) : shfl_up64(inc.hi, d);
    const u64 l = down ? shfl_down64(inc.lo, d) : shfl_up64(inc.lo, d);
    if (down ? lane + d < 32 : lane >= d) {
      inc.hi += h;
      inc.lo += l;
    }
  }
  __syncthreads();
  if (lane == (down ? 0 : 31)) {
    part[0][warp] = inc.hi;
    part[1][warp] = inc.lo;
  }
  __syncthreads();
  Fx before = fx(0, 0), all = fx(0, 0);
  for (int w = 0; w < warps; w++) {
    const Fx t = fx(part[0][w], part[1][w]);
    all = fx_add(all, t);
    if (down ? w > warp : w < warp) before = fx_add(before, t);
  }
  total = all;
  return fx_add(before, fx_sub(inc, a));
}

// One row and what the weight of a logit needs.
struct Row {
  const float* x;
  int n;
  int seg;  // ids per warp segment: warp w owns [w·seg, (w+1)·seg)
  float max;
  bool inf;  // the max is +inf: the +inf tokens weigh 1, the rest 0 (the host's rule)
  double t, minW;
};

// The host's weight: Math.exp((x − max) / t) on the f32 values widened to f64.
__device__ __forceinline__ double row_weight(const Row& r, float v) {
  if (r.inf) return v == POS_INF ? 1.0 : 0.0;
  return exp(((double)v - (double)r.max) / r.t);
}

// Calls f(i, x[i]) for the ids of this thread's warp segment, each thread's in ascending order,
// with four loads in flight.
template <typename F>
__device__ __forceinline__ void for_segment(const Row& r, F&& f) {
  const int start = (threadIdx.x >> 5) * r.seg;
  const int end = min(r.n, start + r.seg);
  int i = start + (threadIdx.x & 31);
  for (; i + 96 < end; i += 128) {
    const float v0 = r.x[i], v1 = r.x[i + 32], v2 = r.x[i + 64], v3 = r.x[i + 96];
    f(i, v0);
    f(i + 32, v1);
    f(i + 64, v2);
    f(i + 96, v3);
  }
  for (; i < end; i += 32) f(i, r.x[i]);
}

// Which candidates a top-k or top-p cut keeps: keys above `key`, and ids up to `id` at `key`.
struct Cut {
  u32 key;
  int id;
};
__device__ __forceinline__ bool passes(Cut c, u32 k, int i) { return k > c.key || (k == c.key && i <= c.id); }

// What the block's shared memory holds between steps.
struct Shared {
  u32 cnt[SAMPLE_BINS];
  u64 hi[SAMPLE_BINS], lo[SAMPLE_BINS];
  // Per warp segment: the admitted tokens' summed weight (or measure) and their number.
  u64 seg_hi[32], seg_lo[32];
  int seg_n[32];
  int pick, found;
  u64 pick_hi, pick_lo;
  Fx seg_base;
  int seg_index;
};

// Each warp's sums over its segment into the shared per-segment totals.
__device__ __forceinline__ void store_segment(Shared& s, Fx sum, int count) {
  sum = warp_fx_sum(sum);
  count = warp_int_sum(count);
  if ((threadIdx.x & 31) == 0) {
    const int w = threadIdx.x >> 5;
    s.seg_hi[w] = sum.hi;
    s.seg_lo[w] = sum.lo;
    s.seg_n[w] = count;
  }
}

// The first warp segment (in id order) holding an admitted token at which offset + the running
// measure reaches `target` (≥, or > when strict); -1 if none. Also leaves the offset at its start.
__device__ int crossing_segment(Shared& s, Fx offset, Fx target, bool strict) {
  __syncthreads();
  if (threadIdx.x == 0) {
    s.seg_index = -1;
    Fx acc = offset;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) {
      const Fx next = fx_add(acc, fx(s.seg_hi[w], s.seg_lo[w]));
      if (s.seg_n[w] > 0 && (strict ? fx_gt(next, target) : fx_ge(next, target))) {
        s.seg_index = w;
        s.seg_base = acc;
        break;
      }
      acc = next;
    }
  }
  __syncthreads();
  return s.seg_index;
}

// Within warp segment `w`, the lowest admitted id at which base + the running measure reaches
// `target` (as crossing_segment); the whole block scans it in chunks of 4 consecutive ids a thread.
// measure(i, v, m) says whether id i is admitted and sets its measure m. NO_ID if none.
template <typename F>
__device__ int crossing_in_segment(const Row& r, Shared& s, int w, Fx base, Fx target, bool strict, F&& measure) {
  const int start = w * r.seg, end = min(r.n, start + r.seg);
  for (int c = start; c < end; c += blockDim.x * 4) {
    const int i0 = c + threadIdx.x * 4;
    Fx m[4];
    bool in[4];
    Fx mine = fx(0, 0);
#pragma unroll
    for (int j = 0; j < 4; j++) {
      m[j] = fx(0, 0);
      in[j] = i0 + j < end && measure(i0 + j, r.x[i0 + j], m[j]);
      if (in[j]) mine = fx_add(mine, m[j]);
    }
    if (threadIdx.x == 0) s.found = NO_ID;  // the scan's barriers order this before any atomicMin
    Fx chunk;
    Fx acc = fx_add(base, block_fx_scan(mine, false, chunk));
#pragma unroll
    for (int j = 0; j < 4; j++) {
      if (!in[j]) continue;
      acc = fx_add(acc, m[j]);
      if (strict ? fx_gt(acc, target) : fx_ge(acc, target)) {
        atomicMin(&s.found, i0 + j);
        break;
      }
    }
    __syncthreads();
    const int found = s.found;
    __syncthreads();
    if (found != NO_ID) return found;
    base = fx_add(base, chunk);
  }
  return NO_ID;
}

// The range of keys one histogram level covers: bins of 2^shift keys from lo.
struct Level {
  u32 lo, hi;
  int shift, bins;
};
__device__ __forceinline__ Level level_of(u32 lo, u32 hi) {
  Level L;
  L.lo = lo;
  L.hi = hi;
  const u32 width = hi - lo;
  const int bits = width == 0 ? 0 : 32 - __clz(width);
  L.shift = bits > SAMPLE_BIN_BITS ? bits - SAMPLE_BIN_BITS : 0;
  L.bins = (int)(width >> L.shift) + 1;
  return L;
}
__device__ __forceinline__ int bin_of(const Level& L, u32 k) {
  // Clamped, so a key outside the range can never index outside the histogram.
  return k < L.lo ? 0 : min((int)((k - L.lo) >> L.shift), L.bins - 1);
}

__device__ __forceinline__ void clear_bins(Shared& s, int bins) {
  for (int b = threadIdx.x; b < bins; b += blockDim.x) {
    s.cnt[b] = 0;
    s.hi[b] = 0;
    s.lo[b] = 0;
  }
}

__device__ __forceinline__ Fx bin_measure(const Shared& s, int b, bool mass) { return mass ? fx(s.hi[b], s.lo[b]) : fx(s.cnt[b], 0); }

// The highest non-empty bin at which above + the measure of the bins from the top down to it
// reaches `target` (the bin holding the cut), or -1 when even all of them fall short; `above`
// becomes the measure above that bin. Each thread owns a run of consecutive bins.
__device__ int pick_bin(Shared& s, int bins, bool mass, Fx& above, Fx target) {
  const int per = (bins + blockDim.x - 1) / blockDim.x;
  const int b0 = threadIdx.x * per, b1 = min(b0 + per, bins);
  Fx mine = fx(0, 0);
  for (int b = b0; b < b1; b++) mine = fx_add(mine, bin_measure(s, b, mass));
  if (threadIdx.x == 0) s.pick = -1;
  Fx all;
  const Fx higher = fx_add(above, block_fx_scan(mine, true, all));  // the scan's barriers order the reset
  Fx acc = higher;
  for (int b = b1 - 1; b >= b0; b--) {
    const Fx m = bin_measure(s, b, mass);
    if (s.cnt[b] > 0 && fx_ge(fx_add(acc, m), target)) {
      atomicMax(&s.pick, b);
      break;
    }
    acc = fx_add(acc, m);
  }
  __syncthreads();
  const int pick = s.pick;
  if (pick >= b0 && pick < b1) {
    acc = higher;
    for (int b = b1 - 1; b > pick; b--) acc = fx_add(acc, bin_measure(s, b, mass));
    s.pick_hi = acc.hi;
    s.pick_lo = acc.lo;
  }
  __syncthreads();
  if (pick >= 0) above = fx(s.pick_hi, s.pick_lo);
  __syncthreads();
  return pick;
}

// Top-k (mass false: the measure is the count, target k) or top-p (mass true: the measure is the
// weight, target topP × the candidates' weight) over the candidates `cut` and min-p keep: a cut that,
// together with `cut`, keeps the order (key desc, id asc) up to where it reaches the target.
// `reuse`: the histogram of the first level (keys lo..hi) is already in shared memory (the weight
// pass made it, leaving out top-p's negligible tail, which never reaches the cut but may share its
// bin: so that histogram is not `complete`, and top-p's mass is `survivors`, the weight pass's sum).
__device__ Cut select_cut(const Row& r, Shared& s, Cut cut, bool mass, int topK, double topP, bool reuse, bool complete, Fx survivors, u32 lo, u32 hi) {
  Fx above = fx(0, 0);
  Fx target = fx((u64)topK, 0);
  for (bool first = true;; first = false, complete = true) {
    const Level L = level_of(lo, hi);
    if (!(first && reuse)) {
      __syncthreads();
      clear_bins(s, L.bins);
      __syncthreads();
      for_segment(r, [&](int i, float v) {
        const u32 k = order_key(v);
        if (k < L.lo || k > L.hi || !passes(cut, k, i)) return;
        const double w = row_weight(r, v);
        if (!(w >= r.minW)) return;
        const int b = bin_of(L, k);
        atomicAdd(&s.cnt[b], 1u);
        if (mass) {
          const Fx f = fx_weight(w);
          atomicAdd(&s.hi[b], f.hi);
          atomicAdd(&s.lo[b], f.lo);
        }
      });
      __syncthreads();
    }
    if (first && mass) {
      // The mass top-p takes its share of: every candidate's, which a first level of our own holds.
      Fx mine = fx(0, 0);
      for (int b = threadIdx.x; b < L.bins; b += blockDim.x) mine = fx_add(mine, fx(s.hi[b], s.lo[b]));
      const Fx all = reuse ? survivors : block_fx_sum(mine);
      target = fx_of(topP * fx_to_double(all));
    }
    const int b = pick_bin(s, L.bins, mass, above, target);
    if (b < 0) return cut;  // never reached (rounding at the very end): every candidate stays
    // A lone candidate in the bin is the cut: no other candidate has a key from the bin's bottom up to
    // it (known only when the bin counted them all, or is one key: tied logits weigh the same).
    if (s.cnt[b] == 1 && (complete || L.shift == 0)) return Cut{L.lo + ((u32)b << L.shift), NO_ID};
    if (L.shift == 0) {
      // One key: a group of tied logits (equal weights), ordered by id.
      const u32 K = L.lo + (u32)b;
      const Fx m = mass ? fx_weight(row_weight(r, key_value(K))) : fx(1, 0);
      const Fx group = bin_measure(s, b, mass);
      const Cut whole = {K, cut.key == K ? cut.id : NO_ID};
      if (!fx_ge(fx_add(above, fx_sub(group, m)), target)) return whole;  // it takes the group's last member
      // The cut falls inside the group: count its members in id order.
      auto member = [&](int i, float v, Fx& mm) {
        if (order_key(v) != K || !passes(cut, K, i) || !(row_weight(r, v) >= r.minW)) return false;
        mm = m;
        return true;
      };
      Fx sum = fx(0, 0);
      int count = 0;
      for_segment(r, [&](int i, float v) {
        Fx mm;
        if (member(i, v, mm)) {
          sum = fx_add(sum, mm);
          count++;
        }
      });
      store_segment(s, sum, count);
      const int w = crossing_segment(s, above, target, false);
      const int id = w < 0 ? NO_ID : crossing_in_segment(r, s, w, s.seg_base, target, false, member);
      return id == NO_ID ? whole : Cut{K, id};
    }
    const u64 top = (u64)L.lo + ((u64)b << L.shift) + ((1ull << L.shift) - 1);
    lo = L.lo + ((u32)b << L.shift);
    hi = top < (u64)L.hi ? (u32)top : L.hi;
  }
}

// A row's survivors after every filter, and what the float32 walks need (residual mode, sampled drafts).
struct Survivors {
  Cut cutK, cutP;
  double total;     // the survivors' weight, the exact sum rounded to f64
  int exclude;      // the excluded draft (-1: none)
  const float* q;   // the draft's distribution the residual is taken against (null: one-hot)
  // Whether id i (logit v) survives every filter, with its weight w.
  __device__ __forceinline__ bool survives(const Row& r, int i, float v, double& w) const {
    const u32 k = order_key(v);
    if (!passes(cutK, k, i) || !passes(cutP, k, i)) return false;
    w = row_weight(r, v);
    return w >= r.minW;
  }
  // p(i) as the host stores it: the float32 quotient of the f64 weight and total.
  __device__ __forceinline__ float prob(double w) const { return (float)(w / total); }
};

// What a float32 walk weighs a survivor y by (> 0 to take part): p(y) for y ≠ the excluded draft
// (WALK_ONEHOT); the residual max(0, p(y) − q(y)) rounded to float32, as the verifier stores it
// (WALK_MINUS_Q); p(y) (WALK_P: a draft's own draw, or the residual's fallback when p ≤ q everywhere).
// A template argument, so each walk is compiled for its mode (a run-time mode made ptxas spill).
enum { WALK_ONEHOT, WALK_MINUS_Q, WALK_P };
template <int MODE>
__device__ __forceinline__ bool walk_value(const Row& r, const Survivors& sv, int i, float v, float& q) {
  double w;
  if ((MODE == WALK_ONEHOT && i == sv.exclude) || !sv.survives(r, i, v, w)) return false;
  q = sv.prob(w);
  if (MODE == WALK_MINUS_Q) q = (float)fmax(0.0, (double)q - (double)sv.q[i]);
  return q > 0.0f;  // below float32's range: the host's walk skips it too
}

// The lowest id of a float32 walk at u (NO_ID when nothing has a value > 0): the weights are
// q × 2^(126 − e), e the largest q's biased exponent. Residual values can all lie far below fixed
// point's unit 2^-88 (x the favourite of a peaked row: q ≈ e^-60), where truncation would erase their
// ratios; scaled, the largest lands in [0.5, 1), the scaling is exact and scales u × total with it, so
// the draw is the host's with fixed point's usual precision.
template <int MODE>
__device__ int float_walk(const Row& r, Shared& s, const Survivors& sv, double u) {
  int qmax = 0, count = 0, last = -1;
  for_segment(r, [&](int i, float v) {
    float q;
    if (!walk_value<MODE>(r, sv, i, v, q)) return;
    qmax = max(qmax, (int)__float_as_uint(q));  // positive floats order as their bits
    count++;
    last = i;
  });
  count = block_int_sum(count);
  last = block_int_max(last);
  qmax = block_int_max(qmax);
  if (count == 0) return NO_ID;
  const double scale = ldexp(1.0, 126 - (qmax >> 23));
  auto weight = [&](int i, float v, Fx& m) {
    float q;
    if (!walk_value<MODE>(r, sv, i, v, q)) return false;
    m = fx_weight((double)q * scale);
    return true;
  };
  Fx sum = fx(0, 0);
  int mine = 0;
  for_segment(r, [&](int i, float v) {
    Fx m;
    if (!weight(i, v, m)) return;
    sum = fx_add(sum, m);
    mine++;
  });
  __syncthreads();  // every thread has read the previous segment totals
  store_segment(s, sum, mine);
  __syncthreads();
  Fx wtotal = fx(0, 0);
  for (int w = 0; w < (int)(blockDim.x >> 5); w++) wtotal = fx_add(wtotal, fx(s.seg_hi[w], s.seg_lo[w]));
  const Fx target = fx_of(u * fx_to_double(wtotal));
  const int w = crossing_segment(s, fx(0, 0), target, true);
  const int id = w < 0 ? NO_ID : crossing_in_segment(r, s, w, s.seg_base, target, true, weight);
  return id == NO_ID ? last : id;
}

// ---- The row passes, spread over the GPU ------------------------------------------------------------
//
// The two passes that read a whole row — its max and smallest logit, then every weight with its sums
// and first histogram — run before `sample_rows`, a block per (row, segment) rather than one block a
// row: the segments are `sample_rows`' warp segments (segs of them), so each block's sums are exactly
// those of the warp that would have walked the segment, and fixed-point sums do not depend on the
// order they are taken in. Their results go through `pre` (RowPre, per row), and `sample_rows` starts
// from them with the cuts and the draw. On one block a row the f64 exp and division of 128k weights
// kept a single SM busy for ~100 µs (Nsight Compute: ~2 instructions a cycle, 122k FP64 warp
// instructions); spread over the row's segments they take a few µs.

// A segment's max and its lowest id, and its smallest logit above −inf.
struct SegMax {
  float max;
  int arg;
  float min;
  int pad;
};
// A segment's survivors of min-p: their summed weight (Fx words), number and last id.
struct SegSum {
  u64 hi, lo;
  int count, last;
};
// What the row passes leave for sample_rows, per row: segs SegMax, segs SegSum, the first level's
// histogram (counts, then weight words).
struct RowPre {
  SegMax mx[32];
  SegSum sum[32];
  u32 cnt[SAMPLE_BINS];
  u64 hi[SAMPLE_BINS], lo[SAMPLE_BINS];
};

// The row's max (ties to the lowest id, NaN never wins), its id, and its smallest logit above −inf,
// from its segments (any order gives the same: `better` is a total order on (value, id)).
__device__ __forceinline__ void row_max(const RowPre& pre, int segs, float& bv, int& bi, float& mn) {
  bv = NEG_INF, bi = -1, mn = POS_INF;
  for (int w = 0; w < segs; w++) {
    better(bv, bi, pre.mx[w].max, pre.mx[w].arg);
    mn = fminf(mn, pre.mx[w].min);
  }
}

// Block (row, segment) of rows × segs: the segment's max, id and smallest logit (the walk of
// sample_rows' pass 1); and the row's histogram cleared for sample_rows_weights (its share of bins).
extern "C" __global__ void sample_rows_max(const float* __restrict__ x, RowPre* __restrict__ pre, int cols, int n, int segs) {
  const int row = blockIdx.x / segs, w = blockIdx.x % segs;
  const float* xr = x + (u64)row * cols;
  const int seg = (n + segs - 1) / segs, start = w * seg, end = min(n, start + seg);
  float bv = NEG_INF, mn = POS_INF;
  int bi = -1;
  for (int i = start + threadIdx.x; i < end; i += blockDim.x) {
    const float v = xr[i];
    if (v > bv) {
      bv = v;
      bi = i;
    }
    if (v > NEG_INF && v < mn) mn = v;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    better(bv, bi, __shfl_xor_sync(0xffffffffu, bv, o), __shfl_xor_sync(0xffffffffu, bi, o));
    mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, o));
  }
  __shared__ float pv[32], pm[32];
  __shared__ int pi[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    pv[warp] = bv;
    pi[warp] = bi;
    pm[warp] = mn;
  }
  __syncthreads();
  RowPre& p = pre[row];
  if (threadIdx.x == 0) {
    for (int k = 1; k < (int)(blockDim.x >> 5); k++) {
      better(bv, bi, pv[k], pi[k]);
      mn = fminf(mn, pm[k]);
    }
    p.mx[w] = SegMax{bv, bi, mn, 0};
  }
  const int per = (SAMPLE_BINS + segs - 1) / segs;
  for (int b = w * per + threadIdx.x; b < min(SAMPLE_BINS, (w + 1) * per); b += blockDim.x) {
    p.cnt[b] = 0;
    p.hi[b] = 0;
    p.lo[b] = 0;
  }
}

// Block (row, segment): every weight of the segment (sample_rows' pass 2), min-p, the survivors' sum,
// number and last id, and the first level's histogram by key (counts for top-k, else counts and
// weights for top-p, leaving out top-p's negligible tail) added into the row's.
extern "C" __global__ void sample_rows_weights(const float* __restrict__ x, const double* __restrict__ params, RowPre* __restrict__ pre, int cols, int n, int segs) {
  const int row = blockIdx.x / segs, w = blockIdx.x % segs;
  RowPre& pr = pre[row];
  const double* p = params + (u64)row * SAMPLE_PARAMS;
  Row r;
  r.x = x + (u64)row * cols;
  r.n = n;
  r.t = p[0];
  r.minW = p[2];
  const double topP = p[1];
  const int topK = (int)p[4];
  float mn;
  int arg;
  row_max(pr, segs, r.max, arg, mn);
  if (p[5] != 0.0 || r.max == NEG_INF) return;  // greedy, or nothing left: sample_rows needs no weights
  r.inf = r.max == POS_INF;
  const Level L1 = level_of(order_key(mn), order_key(r.max));
  const bool countBins = topK > 0, massBins = topK <= 0 && topP < 1.0;
  const double negligible = massBins && 1.0 - topP > 1e-6 ? (1.0 - topP) / n * (1.0 - 1e-6) : 0.0;
  const int seg = (n + segs - 1) / segs, start = w * seg, end = min(n, start + seg);
  Fx sum = fx(0, 0);
  int count = 0, last = -1;
  for (int i = start + threadIdx.x; i < end; i += blockDim.x) {
    const float v = r.x[i];
    const double wt = row_weight(r, v);
    if (!(wt >= r.minW)) continue;
    const Fx f = fx_weight(wt);
    sum = fx_add(sum, f);
    count++;
    last = i;
    if (countBins) {
      atomicAdd(&pr.cnt[bin_of(L1, order_key(v))], 1u);
    } else if (massBins && wt > negligible) {
      const int b = bin_of(L1, order_key(v));
      atomicAdd(&pr.cnt[b], 1u);
      atomicAdd(&pr.hi[b], f.hi);
      atomicAdd(&pr.lo[b], f.lo);
    }
  }
  sum = block_fx_sum(sum);
  count = block_int_sum(count);
  last = block_int_max(last);
  if (threadIdx.x == 0) pr.sum[w] = SegSum{sum.hi, sum.lo, count, last};
}

// One block per row of x ([rows, cols]; ids 0..n-1 of each), blockDim.x a multiple of 32 up to 512
// (the host launches 512; at 1024 threads ptxas would spill).
// params: SAMPLE_PARAMS doubles a row. out: out[row] the sampled id, or -1 when every logit is −inf or
// NaN; for a row that excludes a draft, also out[rows + row] = the float32 bits of p(draft), and for a
// row that writes its distribution to dist, those of p(token) (so out holds 2 × rows words when any
// row does either; other rows leave that word alone).
extern "C" __global__ void __launch_bounds__(512) sample_rows(const float* __restrict__ x, const double* __restrict__ params, const RowPre* __restrict__ pre, int* __restrict__ out, float* __restrict__ dist, int cols, int n, int distCols) {
  __shared__ Shared s;
  const double* p = params + (u64)blockIdx.x * SAMPLE_PARAMS;
  const RowPre& pr = pre[blockIdx.x];
  Row r;
  r.x = x + (u64)blockIdx.x * cols;
  r.n = n;
  const int warps = blockDim.x >> 5;
  r.seg = (n + warps - 1) / warps;
  r.t = p[0];
  const double topP = p[1];
  r.minW = p[2];
  const double u = p[3];
  const int topK = (int)p[4];
  const bool greedy = p[5] != 0.0;
  const int exclude = p[6] >= 0.0 ? (int)p[6] : -1;
  int* const prob = out + gridDim.x + blockIdx.x;

  // Pass 1 (sample_rows_max): the max (ties to the lowest id, NaN never wins: the greedy pick) and
  // the smallest logit above −inf (the bottom of the keys' range).
  float mn;
  int arg;
  row_max(pr, warps, r.max, arg, mn);
  if (greedy || r.max == NEG_INF) {
    if (threadIdx.x == 0) {
      out[blockIdx.x] = r.max == NEG_INF ? -1 : arg;
      // Greedy p is one-hot at the argmax.
      if (exclude >= 0) *prob = (int)__float_as_uint(r.max != NEG_INF && exclude == arg ? 1.0f : 0.0f);
    }
    return;
  }
  r.inf = r.max == POS_INF;

  // Pass 2 (sample_rows_weights): the survivors of min-p per warp segment — their weight, number and
  // last id — and the first level's histogram by key for top-k (counts) or else top-p (counts and
  // weights), copied in.
  const u32 keyHi = order_key(r.max), keyLo = order_key(mn);
  const Level L1 = level_of(keyLo, keyHi);
  const bool countBins = topK > 0, massBins = topK <= 0 && topP < 1.0;
  if (countBins || massBins) {
    for (int b = threadIdx.x; b < L1.bins; b += blockDim.x) {
      s.cnt[b] = pr.cnt[b];
      s.hi[b] = pr.hi[b];
      s.lo[b] = pr.lo[b];
    }
  }
  if (threadIdx.x < warps) {
    s.seg_hi[threadIdx.x] = pr.sum[threadIdx.x].hi;
    s.seg_lo[threadIdx.x] = pr.sum[threadIdx.x].lo;
    s.seg_n[threadIdx.x] = pr.sum[threadIdx.x].count;
  }
  __syncthreads();
  int count = 0, last = -1;
  Fx survivors = fx(0, 0);  // min-p's survivors' mass (exact, so any order will do)
  for (int w = 0; w < warps; w++) {
    count += pr.sum[w].count;
    last = max(last, pr.sum[w].last);
    survivors = fx_add(survivors, fx(pr.sum[w].hi, pr.sum[w].lo));
  }

  // Top-k, then top-p over what it left (the host's order). A survivor passes both cuts.
  Cut cutK = {0, NO_ID}, cutP = {0, NO_ID};
  bool cutApplied = false;
  if (topK > 0 && topK < count) {
    cutK = select_cut(r, s, cutK, false, topK, topP, true, true, fx(0, 0), keyLo, keyHi);
    count = topK;
    cutApplied = true;
  }
  if (topP < 1.0 && count > 1) {
    cutP = select_cut(r, s, cutK, true, topK, topP, massBins, !massBins, survivors, cutApplied ? cutK.key : keyLo, keyHi);
    cutApplied = true;
  }
  // The survivors of every filter (their total and the float32 walks' fields are set below).
  Survivors sv;
  sv.cutK = cutK;
  sv.cutP = cutP;
  auto survivor = [&](int i, float v, Fx& m) {
    double w;
    if (!sv.survives(r, i, v, w)) return false;
    m = fx_weight(w);
    return true;
  };
  if (cutApplied) {
    // The survivors' weight per segment again, now of those the cuts kept.
    Fx sum = fx(0, 0);
    count = 0;
    last = -1;
    for_segment(r, [&](int i, float v) {
      Fx m;
      if (!survivor(i, v, m)) return;
      sum = fx_add(sum, m);
      count++;
      last = i;
    });
    __syncthreads();  // the cut's search may still read the segment totals
    store_segment(s, sum, count);
    last = block_int_max(last);
  }

  // The draw: the lowest surviving id whose cumulative weight in id order exceeds u × total; the
  // last survivor if rounding put u × total at the total itself (as the host).
  __syncthreads();
  Fx total = fx(0, 0);
  for (int w = 0; w < warps; w++) total = fx_add(total, fx(s.seg_hi[w], s.seg_lo[w]));
  // The row of dist, read here rather than kept from the start (one register fewer through the cuts).
  const int distRow = p[7] >= 0.0 ? (int)p[7] : -1;
  if (exclude < 0 && distRow < 0) {
    const Fx target = fx_of(u * fx_to_double(total));
    const int w = crossing_segment(s, fx(0, 0), target, true);
    int id = w < 0 ? NO_ID : crossing_in_segment(r, s, w, s.seg_base, target, true, survivor);
    if (id == NO_ID) id = last;
    if (threadIdx.x == 0) out[blockIdx.x] = id;
    return;
  }

  // The float32 walks: residual mode, against a draft's q, or a draft's own probabilities. Their
  // values are the probabilities as the host stores them, float32 quotients of the f64 total.
  sv.total = fx_to_double(total);
  sv.exclude = exclude;
  sv.q = distRow >= 0 ? dist + (u64)distRow * distCols : nullptr;
  if (exclude < 0) {
    // A draft's draw that keeps its distribution: p written to its row of dist (0 for the ids that did
    // not survive), the draw from those float32 values, p(token) returned.
    float* const keep = dist + (u64)distRow * distCols;
    for_segment(r, [&](int i, float v) {
      double w;
      keep[i] = sv.survives(r, i, v, w) ? sv.prob(w) : 0.0f;
    });
  }
  // The draw. A draft's: from its p. Residual mode against a one-hot draft: nothing but x having mass
  // leaves x (the host then draws from p itself, which can only give x); against a distribution q ≥ p
  // everywhere, the host draws from p.
  int id;
  if (exclude < 0) {
    id = float_walk<WALK_P>(r, s, sv, u);
  } else if (!sv.q) {
    id = float_walk<WALK_ONEHOT>(r, s, sv, u);
    if (id == NO_ID) id = exclude;
  } else {
    id = float_walk<WALK_MINUS_Q>(r, s, sv, u);
    if (id == NO_ID) id = float_walk<WALK_P>(r, s, sv, u);
  }
  const int probOf = exclude < 0 ? id : exclude;
  if (threadIdx.x == 0) {
    out[blockIdx.x] = id;
    double w;
    *prob = (int)__float_as_uint(probOf >= 0 && probOf < n && sv.survives(r, probOf, r.x[probOf], w) ? sv.prob(w) : 0.0f);
  }
}
