// Token logprobs of logit rows on the GPU (Backend.logprobRows, src/backend/cuda/logprobs.ts): what
// engine/sampler.ts computeLogprobs needs from a row, so the host gets a few hundred bytes a row
// instead of the vocabulary's logits. One block of LP_THREADS per row, over its first n ids:
//   - the row's max (NaN ignored), how many logits are +inf, the chosen token's logit and its rank
//     (how many logits are >= it, as vLLM counts it);
//   - Σ exp(x − max) in float64 over the terms > 0 (NaN excluded), as the host sums it;
//   - the LP_TOP best ids, best first, NaN ranking as -inf and ties to the lowest id (the host's
//     selectTopK order), with their keys.
// The host turns those into logprobs in float64 (logprobsFromRowStats). Reductions go through shared
// memory in a fixed tree, so a row's result does not depend on anything but the row; no warp
// shuffles of 64-bit values (the CPU emulation in test/support/cuda-emulator runs this file too).
#include "common.cuh"

#define LP_THREADS 256
// Most alternatives a row returns (OpenAI's top_logprobs and vLLM's max_logprobs stop at 20).
#define LP_TOP 20
// int32 words a row's results take in `out`: max, chosen (float bits), rank, +inf count, LP_TOP ids,
// LP_TOP keys (float bits).
#define LP_STRIDE (4 + 2 * LP_TOP)
#define LP_NO_ID 0x7fffffff

// The ranking key: NaN is the least likely token.
__device__ __forceinline__ float lp_key(float v) { return v != v ? NEG_INF : v; }
// (a, ia) ranks before (b, ib): larger key, then lower id.
__device__ __forceinline__ bool lp_before(float a, int ia, float b, int ib) { return a > b || (a == b && ia < ib); }

// x [rows, cols] float32; tokens[row]: the id whose logprob and rank are asked; sums[row] float64;
// out [rows, LP_STRIDE]. Grid: rows.
extern "C" __global__ void __launch_bounds__(LP_THREADS) logprob_rows(const float* __restrict__ x, const int* __restrict__ tokens, int cols, int n,
                                                                       double* __restrict__ sums, int* __restrict__ out) {
  __shared__ float s_key[LP_THREADS][LP_TOP];
  __shared__ int s_id[LP_THREADS][LP_TOP];
  __shared__ double s_sum[LP_THREADS];
  __shared__ float s_f[LP_THREADS];
  __shared__ int s_a[LP_THREADS], s_b[LP_THREADS];
  const int tid = threadIdx.x;
  const float* row = x + (u64)blockIdx.x * cols;
  const float chosen = row[tokens[blockIdx.x]];
  const float inf = __int_as_float(0x7f800000);

  // One pass: max, +inf count, rank, and this thread's LP_TOP best (a sorted insertion; most
  // logits lose to the thread's current last and are dropped after one comparison).
  float topKey[LP_TOP];
  int topId[LP_TOP];
#pragma unroll
  for (int j = 0; j < LP_TOP; j++) {
    topKey[j] = NEG_INF;
    topId[j] = LP_NO_ID;
  }
  float mx = NEG_INF;
  int infs = 0, rank = 0;
  for (int i = tid; i < n; i += LP_THREADS) {
    const float v = row[i];
    mx = fmaxf(mx, v);  // a NaN v leaves mx
    infs += v == inf;
    rank += v >= chosen;  // nothing counts when chosen is NaN (the host ranks it last)
    float k = lp_key(v);
    int id = i;
    if (lp_before(k, id, topKey[LP_TOP - 1], topId[LP_TOP - 1])) {
#pragma unroll
      for (int j = 0; j < LP_TOP; j++) {
        if (lp_before(k, id, topKey[j], topId[j])) {
          const float tk = topKey[j];
          const int ti = topId[j];
          topKey[j] = k;
          topId[j] = id;
          k = tk;
          id = ti;
        }
      }
    }
  }
  s_f[tid] = mx;
  s_a[tid] = infs;
  s_b[tid] = rank;
  __syncthreads();
  for (int o = LP_THREADS / 2; o > 0; o >>= 1) {
    if (tid < o) {
      s_f[tid] = fmaxf(s_f[tid], s_f[tid + o]);
      s_a[tid] += s_a[tid + o];
      s_b[tid] += s_b[tid + o];
    }
    __syncthreads();
  }
  const float m = s_f[0];
  const int base = blockIdx.x * LP_STRIDE;
  if (tid == 0) {
    out[base] = (int)__float_as_uint(m);
    out[base + 1] = (int)__float_as_uint(chosen);
    out[base + 2] = s_b[0];
    out[base + 3] = s_a[0];
  }

  // Σ exp(x − max) in float64 over the terms > 0, where the max is finite (else unused).
  double sum = 0.0;
  if (m > NEG_INF && m < inf) {
    for (int i = tid; i < n; i += LP_THREADS) {
      const double e = exp((double)row[i] - (double)m);
      if (e > 0.0) sum += e;
    }
  }
  s_sum[tid] = sum;
#pragma unroll
  for (int j = 0; j < LP_TOP; j++) {
    s_key[tid][j] = topKey[j];
    s_id[tid][j] = topId[j];
  }
  __syncthreads();  // also: every thread has read s_f[0] and s_b[0] above
  for (int o = LP_THREADS / 2; o > 0; o >>= 1) {
    if (tid < o) s_sum[tid] += s_sum[tid + o];
    __syncthreads();
  }
  if (tid == 0) sums[blockIdx.x] = s_sum[0];

  // The block's LP_TOP best: LP_TOP rounds, each taking the best head of the threads' lists.
  int head = 0;
  for (int r = 0; r < LP_TOP; r++) {
    s_f[tid] = head < LP_TOP ? s_key[tid][head] : NEG_INF;
    s_a[tid] = head < LP_TOP ? s_id[tid][head] : LP_NO_ID;
    s_b[tid] = tid;
    __syncthreads();
    for (int o = LP_THREADS / 2; o > 0; o >>= 1) {
      if (tid < o && lp_before(s_f[tid + o], s_a[tid + o], s_f[tid], s_a[tid])) {
        s_f[tid] = s_f[tid + o];
        s_a[tid] = s_a[tid + o];
        s_b[tid] = s_b[tid + o];
      }
      __syncthreads();
    }
    if (tid == s_b[0]) head++;
    if (tid == 0) {
      out[base + 4 + r] = s_a[0];
      out[base + 4 + LP_TOP + r] = (int)__float_as_uint(s_f[0]);
    }
    __syncthreads();  // s_f, s_a, s_b [0] are read before the next round writes them
  }
}
