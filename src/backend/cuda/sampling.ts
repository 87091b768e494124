// Host side of sampling on the GPU (kernels/sampling.cu `sample_rows`): temperature, min-p, top-k,
// top-p and the inverse-CDF draw for a few logit rows, one block a row, so a sampled step reads back
// one id a row instead of the logits (513 KB a row for Llama 3) and the host skips the vocabulary-
// sized work. The kernel reproduces engine/sampler.ts's drawToken given the same uniform u: the
// same f64 weights, exact (fixed-point) sums, the host's tie rules; docs/cuda.md, "Sampling on the
// GPU", says where the two can differ. Rows that exclude a draft (speculative verification) draw
// drawResidual's token and also return p(draft), a second word a row read back; rows with a row of
// `dist` write a sampled draft's distribution there (and return p(token)) or verify against it.

import { checkSamplingRows, type GpuSamplingRow } from '../backend.js';
import { SAMPLE_PRE_BYTES } from '../../engine/kv-budget.js';
import { ALL_MASKED, GREEDY_TEMPERATURE_EPS } from '../../engine/sampler.js';
import type { CudaBackend, CudaTensor } from './cuda-backend.js';
import { CudaError, type DevicePtr } from './driver.js';

const FILE = 'sampling.cu';
const KERNEL = 'sample_rows';
/** Threads a row's block (sampling.cu: at most 512, where ptxas fits the kernel without spilling). */
export const SAMPLE_THREADS = 512;
/** The row passes' blocks: one per (row, warp segment of sample_rows), this many threads each. */
export const SAMPLE_PRE_THREADS = 256;
/** Bytes of sampling.cu's RowPre a row (32 SegMax, 32 SegSum, 2048 bins), counted in each step's activations by kv-budget.ts. */
export { SAMPLE_PRE_BYTES };
/** float64 values a row's parameters take (sampling.cu SAMPLE_PARAMS). */
export const SAMPLE_PARAMS = 8;
/**
 * The longest row the kernel takes: its fixed-point sums hold up to 2^19 weights of at most 1 without
 * overflowing (sampling.cu, Fx). The largest vocabularies today are about 2^18.
 */
export const SAMPLE_MAX_VOCAB = 2 ** 19;

/**
 * The rows' parameters as the kernel reads them, SAMPLE_PARAMS float64 a row: temperature, topP, the
 * min-p floor on a weight (minP, or the smallest double when min-p is off: the host keeps any weight
 * above 0), u, topK, greedy (1 below GREEDY_TEMPERATURE_EPS, decided here with the host's constant),
 * the excluded draft (-1: none), the row of dist it reads or writes (-1: none).
 */
export function packSamplingParams(rows: readonly GpuSamplingRow[]): Float64Array {
  const out = new Float64Array(rows.length * SAMPLE_PARAMS);
  rows.forEach((r, i) => {
    out.set([r.temperature, r.topP, r.minP > 0 ? r.minP : Number.MIN_VALUE, r.u, r.topK, r.temperature < GREEDY_TEMPERATURE_EPS ? 1 : 0, r.exclude ?? -1, r.distRow ?? -1], i * SAMPLE_PARAMS);
  });
  return out;
}

/** Device buffers of a sample_rows call: the logits, packed parameters, the row passes' scratch (SAMPLE_PRE_BYTES a row), the ids' and probabilities' words, dist (0: none). */
export interface SampleRowsBuffers {
  x: DevicePtr;
  params: DevicePtr;
  pre: DevicePtr;
  out: DevicePtr;
  dist: DevicePtr;
}

/**
 * sample_rows' three launches: the row passes a block per (row, warp segment) — the max, then the
 * weights' sums and first histogram — and the block a row that cuts and draws (sampling.cu).
 */
export function launchSampleRows(be: CudaBackend, b: SampleRowsBuffers, rows: number, cols: number, n: number, distCols: number): void {
  const segs = SAMPLE_THREADS / 32;
  const fn = (name: string) => be.kernels.fn(FILE, name);
  be.driver.launch(fn('sample_rows_max'), 'sample_rows_max', [rows * segs, 1, 1], SAMPLE_PRE_THREADS, 'ppiii', [b.x, b.pre, cols, n, segs]);
  be.driver.launch(fn('sample_rows_weights'), 'sample_rows_weights', [rows * segs, 1, 1], SAMPLE_PRE_THREADS, 'pppiii', [b.x, b.params, b.pre, cols, n, segs]);
  be.driver.launch(fn(KERNEL), KERNEL, [rows, 1, 1], SAMPLE_THREADS, 'pppppiii', [b.x, b.params, b.pre, b.out, b.dist, cols, n, distCols]);
}

/** The kernel's ids as tokens: -1 (every logit -inf or NaN) is the host sampler's error; anything else outside 0..n-1 a bug named. */
export function sampledTokens(ids: Int32Array, n: number): Int32Array {
  for (let r = 0; r < ids.length; r++) {
    const id = ids[r];
    if (id === -1) throw new RangeError(ALL_MASKED);
    if (!(id >= 0 && id < n)) throw new CudaError(`sample_rows returned id ${id} for row ${r}, outside the ${n} ids sampled over`);
  }
  return ids;
}

/**
 * Backend.sampleRows on CUDA: x [rows, cols] float32 logits, each row drawn over its first n ids.
 * `upload` puts the packed parameters on the device (the backend's step uploads, so a recorded step
 * replays with the new u). Synchronises to read the ids back, and p(exclude) of each row when a row
 * excludes a draft, p(token) of a row that writes its distribution to dist (into excludedProbs, if
 * given).
 */
export function sampleRowsOnGpu(be: CudaBackend, x: CudaTensor, n: number, rows: readonly GpuSamplingRow[], upload: (params: Int32Array) => DevicePtr, excludedProbs?: Float32Array, dist?: CudaTensor): Int32Array {
  checkSamplingRows(x.rows, x.cols, n, rows, excludedProbs, dist);
  if (n > SAMPLE_MAX_VOCAB) throw new RangeError(`sampleRows: CUDA samples rows of up to ${SAMPLE_MAX_VOCAB} ids, got ${n}`);
  if (x.rows === 0) return new Int32Array(0);
  // Uploads carry 32-bit words; the kernel reads the same bytes as float64.
  const params = upload(new Int32Array(packSamplingParams(rows).buffer));
  // The ids, then p(exclude)'s float32 bits for the rows that exclude a draft: room for both always,
  // so a recorded step's buffer has one size; read back only when some row excludes one.
  const out = be.pool.alloc(x.rows * 8);
  const pre = be.pool.alloc(x.rows * SAMPLE_PRE_BYTES);
  launchSampleRows(be, { x: x.ptr, params, pre: pre.ptr, out: out.ptr, dist: dist ? dist.ptr : 0 }, x.rows, x.cols, n, dist ? dist.cols : 0);
  const hasProb = (r: GpuSamplingRow) => r.exclude !== undefined || r.distRow !== undefined;
  const second = rows.some(hasProb);
  const words = new Int32Array(second ? 2 * x.rows : x.rows);
  be.driver.download(words, out.ptr, words.byteLength);
  if (excludedProbs) {
    const probs = new Float32Array(words.buffer, second ? x.rows * 4 : 0, x.rows);
    rows.forEach((r, i) => (excludedProbs[i] = hasProb(r) ? probs[i] : 0));
  }
  return sampledTokens(second ? words.slice(0, x.rows) : words, n);
}
