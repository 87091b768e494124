// Repetition, frequency and presence penalties on logit rows (Backend.applyPenalties, cuda-backend.ts),
// so a penalised request's draw stays on the GPU. For each listed entry (row, id, output count),
// x[row, id] becomes engine/sampler.ts penalisedLogit's value: computed in float64 and rounded to
// float32 once, as the host's Float32Array store rounds it, with no fused multiply-add (the _rn
// intrinsics keep the compiler from contracting): the host's bits. A thread per entry; a row lists
// each id once; ids at or past cols are skipped (a tokenizer larger than the lm_head).
#include "common.cuh"

// params: per row (repetition, frequency, presence) as float64.
extern "C" __global__ void apply_penalties(float* __restrict__ x, const int* __restrict__ rowOf, const int* __restrict__ ids,
                                           const int* __restrict__ outputCounts, const double* __restrict__ params, int entries, int cols) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= entries) return;
  const int id = ids[e];
  if (id >= cols) return;
  const int r = rowOf[e];
  const double rep = params[3 * r], freq = params[3 * r + 1], presence = params[3 * r + 2];
  float* p = x + (u64)r * cols + id;
  double v = (double)*p;
  if (rep != 1.0) v = v > 0.0 ? __ddiv_rn(v, rep) : __dmul_rn(v, rep);
  const int c = outputCounts[e];
  if (c > 0) {
    v = __dsub_rn(v, __dmul_rn(freq, (double)c));
    v = __dsub_rn(v, presence);
  }
  *p = (float)v;
}
