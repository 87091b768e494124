// Backend.logprobRows on CUDA: token logprobs (the chosen token's, its rank, the top alternatives)
// from logit rows on the device, reading back LP_STRIDE words and one float64 a row instead of the
// vocabulary's logits (kernels/logprobs.cu). The host finishes in float64 as computeLogprobs does.

import { checkLogprobRows, type LogprobRow } from '../backend.js';
import { ALL_MASKED, type Logprobs } from '../../engine/sampler.js';
import type { CudaBackend, CudaTensor } from './cuda-backend.js';
import type { DevicePtr } from './driver.js';

const FILE = 'logprobs.cu';
const KERNEL = 'logprob_rows';
const THREADS = 256;
/** Most alternatives a row returns (logprobs.cu LP_TOP). */
export const GPU_MAX_TOP_LOGPROBS = 20;
/** int32 words a row's results take (logprobs.cu LP_STRIDE). */
export const LOGPROB_STRIDE = 4 + 2 * GPU_MAX_TOP_LOGPROBS;

/** What logprob_rows gives for one row: words [max, chosen, rank, +inf count, ids…, keys…] (floats as bits) and Σ exp(x − max). */
export interface RowStats {
  words: Int32Array;
  sum: number;
}

/**
 * A row's Logprobs from its kernel results, as computeLogprobs (engine/sampler.ts) gives them from
 * the logits: log-softmax of the raw logits in float64, the rank vLLM reports, the top `topN` best
 * first (ties to the lowest id). n: the ids the row was read over. Pure: tested without a GPU.
 */
export function logprobsFromRowStats(stats: RowStats, token: number, topN: number, n: number): Logprobs {
  const { words, sum } = stats;
  const f = new Float32Array(words.buffer, words.byteOffset, words.length);
  const max = f[0];
  const chosen = f[1];
  const infinite = words[3];
  if (max === -Infinity || Number.isNaN(max)) throw new RangeError(ALL_MASKED);
  let logprobOf: (v: number) => number;
  if (max === Infinity) {
    // The +inf tokens share all the mass equally; everything else is impossible.
    const shared = -Math.log(infinite);
    logprobOf = (v) => (v === Infinity ? shared : -Infinity);
  } else {
    const logSumExp = max + Math.log(sum);
    logprobOf = (v) => (v === v ? v - logSumExp : -Infinity);
  }
  const k = Math.max(0, Math.min(Math.floor(topN), n, GPU_MAX_TOP_LOGPROBS));
  const top = Array.from({ length: k }, (_, j) => ({ id: words[4 + j], logprob: logprobOf(f[4 + GPU_MAX_TOP_LOGPROBS + j]) }));
  const rank = chosen === chosen ? words[2] : n;
  return { tokenId: token, logprob: logprobOf(chosen), rank, top };
}

/**
 * Backend.logprobRows on CUDA: x [rows, cols] float32 logits, each row over its first n ids; rows
 * ask up to GPU_MAX_TOP_LOGPROBS alternatives. `upload` puts the token ids on the device (the
 * backend's step uploads). Synchronises to read the results back.
 */
export function logprobRowsOnGpu(be: CudaBackend, x: CudaTensor, n: number, rows: readonly LogprobRow[], upload: (ids: Int32Array) => DevicePtr): Logprobs[] {
  checkLogprobRows(x.rows, x.cols, n, rows, GPU_MAX_TOP_LOGPROBS);
  if (x.rows === 0) return [];
  const tokens = upload(Int32Array.from(rows, (r) => r.token));
  // One buffer, one read back: the rows' float64 sums, then their words.
  const sumBytes = x.rows * 8;
  const buf = be.pool.alloc(sumBytes + x.rows * LOGPROB_STRIDE * 4);
  be.driver.launch(be.kernels.fn(FILE, KERNEL), KERNEL, [x.rows, 1, 1], THREADS, 'ppiipp', [x.ptr, tokens, x.cols, n, buf.ptr, buf.ptr + sumBytes]);
  const back = new ArrayBuffer(sumBytes + x.rows * LOGPROB_STRIDE * 4);
  be.driver.download(new Uint8Array(back), buf.ptr);
  be.pool.release(buf);
  const rowSums = new Float64Array(back, 0, x.rows);
  const words = new Int32Array(back, sumBytes);
  return rows.map((r, i) => logprobsFromRowStats({ words: words.subarray(i * LOGPROB_STRIDE, (i + 1) * LOGPROB_STRIDE), sum: rowSums[i] }, r.token, r.topN, n));
}
