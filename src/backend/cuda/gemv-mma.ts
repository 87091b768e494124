// The tensor-core decode GEMV (kernels/gemv-mma.cu), opt-in through CudaBackend.decodeGemv = 'mma':
// dense bf16 weights, 1–8 tokens, K a multiple of 16. x is rounded to bf16 inside the kernel (the
// products are exact, the sums float32), so results differ from the FMA GEMV's by about 2⁻⁹ relative;
// a token's result does not depend on the other tokens of its step, nor on the rows a block takes.

import type { Tensor, Weight } from '../backend.js';
import { CudaDenseWeight, CudaTensor, type CudaBackend } from './cuda-backend.js';

const FILE = 'gemv-mma.cu';
const THREADS = 256;
const MAX_TOKENS = 8;
/** Matrices one gemv_mma_many launch takes. */
const MANY_PER_LAUNCH = 3;
export type MmaRows = 1 | 2;

/** Whether the mma GEMV takes this weight and token count: a dense bf16 matrix, 1..8 tokens, K % 16 = 0. */
export function mmaGemvApplies(weight: Weight, tokens: number): weight is CudaDenseWeight {
  return (
    weight instanceof CudaDenseWeight && weight.dtype === 'bf16' && weight.shape.length === 2 && tokens >= 1 && tokens <= MAX_TOKENS && weight.shape[1] % 16 === 0 && weight.shape[1] > 0
  );
}

/**
 * m-tiles (16 rows) a block takes: 2 (each x value loaded serves 32 rows) where that still gives
 * every SM two blocks, else 1 so that smaller matrices spread over more SMs. The choice changes no
 * result bit (each row's arithmetic is the same at either).
 */
export function mmaRows(totalRows: number, multiprocessors: number): MmaRows {
  return Math.ceil(totalRows / 32) >= 2 * multiprocessors ? 2 : 1;
}

/** y[T, N] = x · Wᵀ (+ bias) into `out` on the tensor cores; check mmaGemvApplies first. */
export function mmaGemv(be: CudaBackend, x: CudaTensor, w: CudaDenseWeight, bias: number, out: CudaTensor, rows?: MmaRows): void {
  const [N, K] = w.shape;
  const R = rows ?? mmaRows(N, be.device.multiprocessors);
  const kernel = `gemv_mma_bf16_r${R}`;
  be.driver.launch(be.kernels.fn(FILE, kernel), kernel, [Math.ceil(N / (16 * R)), 1, 1], THREADS, 'ppppiii', [w.ptr, x.ptr, bias, out.ptr, x.rows, N, K]);
}

/**
 * linear(x, weights[i], biases[i]) for every i, three matrices to a launch (q, k, v), each output
 * bitwise linear's on the mma path. `biases` are float32 vector pointers or 0; `outs` the outputs.
 */
export function mmaGemvMany(be: CudaBackend, x: CudaTensor, weights: readonly CudaDenseWeight[], biases: readonly number[], outs: readonly CudaTensor[], rows?: MmaRows): void {
  const K = x.cols;
  for (let i = 0; i < weights.length; i += MANY_PER_LAUNCH) {
    const ws = weights.slice(i, i + MANY_PER_LAUNCH);
    const total = ws.reduce((a, w) => a + w.shape[0], 0);
    const R = rows ?? mmaRows(total, be.device.multiprocessors);
    const args: number[] = [x.ptr, x.rows, K];
    let blocks = 0;
    for (let j = 0; j < MANY_PER_LAUNCH; j++) {
      const w = ws[j];
      if (w) {
        args.push(w.ptr, biases[i + j], outs[i + j].ptr, w.shape[0]);
        blocks += Math.ceil(w.shape[0] / (16 * R));
      } else args.push(0, 0, 0, 0);
    }
    const kernel = `gemv_mma_many_bf16_r${R}`;
    be.driver.launch(be.kernels.fn(FILE, kernel), kernel, [blocks, 1, 1], THREADS, 'pii' + 'pppi'.repeat(MANY_PER_LAUNCH), args);
  }
}

/**
 * linearMany on the mma path (CudaBackend.decodeGemv = 'mma'): every weight a dense bf16 matrix the
 * mma GEMV takes with x's K; undefined (run the usual path) otherwise.
 */
export function mmaLinearMany(be: CudaBackend, x: Tensor, weights: readonly Weight[], biases?: readonly (Weight | undefined)[]): Tensor[] | undefined {
  const t = x as CudaTensor;
  if (!(t instanceof CudaTensor) || t.shape.length !== 2) return undefined;
  const dense: CudaDenseWeight[] = [];
  for (const w of weights) {
    if (!mmaGemvApplies(w, t.rows) || w.shape[1] !== t.cols) return undefined;
    dense.push(w);
  }
  const biasPtrs = dense.map((w, i) => {
    const b = biases?.[i];
    if (!b) return 0;
    const N = w.shape[0];
    if (!(b instanceof CudaDenseWeight) || b.dtype !== 'f32' || b.numel !== N) {
      throw new RangeError(`linear bias: expected a float32 vector of ${N} values, got ${b instanceof CudaDenseWeight ? b.dtype : b.format} [${b.shape.join(', ')}]`);
    }
    return b.ptr;
  });
  const outs = dense.map((w) => new CudaTensor(be.pool, [t.rows, w.shape[0]]));
  mmaGemvMany(be, t, dense, biasPtrs, outs);
  return outs;
}
