// Causal attention over the paged KV cache for a flattened, varlen batch (prefill chunks and
// decode tokens alike). One block per (token, head); its warps take the token's visible positions
// in turn (through the sequence's block table), each keeping an online softmax, merged at the end.
// KV cache per layer: [numBlocks·blockSize slots, numKvHeads·headDim] kv_t (float32, or bf16: common.cuh).
#include "common.cuh"

#define ATTN_WARPS 8
#define ATTN_MAX_D 8  // dims per lane: headDim ≤ 256

extern "C" __global__ void __launch_bounds__(ATTN_WARPS * 32) paged_attention(
    const float* __restrict__ q, const kv_t* __restrict__ kc, const kv_t* __restrict__ vc, float* __restrict__ out,
    const int* __restrict__ positions, const int* __restrict__ seqIndex, const int* __restrict__ blockTables,
    int maxBlocksPerSeq, int blockSize, int numHeads, int numKvHeads, int headDim, float scale, int window, float vScale) {
  __shared__ float s_m[ATTN_WARPS], s_l[ATTN_WARPS];
  __shared__ float s_acc[ATTN_WARPS][ATTN_MAX_D * 32];
  const int tok = blockIdx.x, h = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int kvh = h / (numHeads / numKvHeads);
  const int kvWidth = numKvHeads * headDim;
  const int pos = positions[tok];
  const int* table = blockTables + (u64)seqIndex[tok] * maxBlocksPerSeq;
  const int first = window > 0 ? max(0, pos - window + 1) : 0;

  const float* qp = q + ((u64)tok * numHeads + h) * headDim;
  float qv[ATTN_MAX_D], acc[ATTN_MAX_D];
#pragma unroll
  for (int i = 0; i < ATTN_MAX_D; i++) {
    const int d = lane + 32 * i;
    qv[i] = d < headDim ? qp[d] * scale : 0.f;
    acc[i] = 0.f;
  }
  float m = NEG_INF, l = 0.f;
  for (int p = first + warp; p <= pos; p += ATTN_WARPS) {
    const int slot = table[p / blockSize] * blockSize + p % blockSize;
    const kv_t* kp = kc + (u64)slot * kvWidth + kvh * headDim;
    const kv_t* vp = vc + (u64)slot * kvWidth + kvh * headDim;
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < ATTN_MAX_D; i++) {
      const int d = lane + 32 * i;
      if (d < headDim) s += qv[i] * kv_to_f32(kp[d]);
    }
    s = warp_sum(s);
    const float mNew = fmaxf(m, s);
    const float corr = expf(m - mNew);  // 0 on the first position (m = -inf)
    const float e = expf(s - mNew);
    l = l * corr + e;
#pragma unroll
    for (int i = 0; i < ATTN_MAX_D; i++) {
      const int d = lane + 32 * i;
      if (d < headDim) acc[i] = acc[i] * corr + e * kv_to_f32(vp[d]);
    }
    m = mNew;
  }
  if (lane == 0) { s_m[warp] = m; s_l[warp] = l; }
#pragma unroll
  for (int i = 0; i < ATTN_MAX_D; i++) {
    const int d = lane + 32 * i;
    if (d < headDim) s_acc[warp][d] = acc[i];
  }
  __syncthreads();
  float M = NEG_INF;
#pragma unroll
  for (int w = 0; w < ATTN_WARPS; w++) M = fmaxf(M, s_m[w]);
  float L = 0.f, f[ATTN_WARPS];
#pragma unroll
  for (int w = 0; w < ATTN_WARPS; w++) {
    f[w] = s_m[w] == NEG_INF ? 0.f : expf(s_m[w] - M);  // a warp that saw no position adds nothing
    L += s_l[w] * f[w];
  }
  float* op = out + ((u64)tok * numHeads + h) * headDim;
  for (int d = threadIdx.x; d < headDim; d += blockDim.x) {
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; w++) o += s_acc[w][d] * f[w];
    op[d] = o / L * vScale;
  }
}
