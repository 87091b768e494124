// kernels/logprobs.cu's logprob_rows, the GPU's token logprobs, run on the CPU: the unchanged kernel
// source compiled by the host's C++ compiler against test/support/cuda-emulator/emu.h, its results
// finished by logprobsFromRowStats (src/backend/cuda/logprobs.ts) as the CUDA backend finishes them,
// and held to the host's computeLogprobs over the same rows: the same top ids in the same order
// (ties to the lowest id, NaN last), the same rank, logprobs within float64 rounding of the sum's
// order. Rows with ties, -inf, NaN and +inf logits, padded rows, vocabularies from 3 to 128256 ids.
// The GPU test (cuda-logprobs.test.ts) remains the word on the real thing. Skips, saying why, without
// a C++20 compiler.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { GPU_MAX_TOP_LOGPROBS, LOGPROB_STRIDE, logprobsFromRowStats } from '../src/backend/cuda/logprobs.js';
import { ALL_MASKED, computeLogprobs } from '../src/engine/sampler.js';
import { testRandom } from './support/cuda.js';
import { buildEmulated } from './support/cuda-emulator.js';
import { assertSameLogprobs } from './support/logprobs.js';

const { seed: SEED, rng } = testRandom();
const { bin, skipReason } = buildEmulated('logprob-rows');

/** logprob_rows over x [rows, cols] (first n of each row), tokens[r] asked: each row's statistics. */
function kernelStats(x: Float32Array, cols: number, n: number, tokens: Int32Array): Array<{ words: Int32Array; sum: number }> {
  const rows = tokens.length;
  const input = Buffer.concat([Buffer.from(Int32Array.from([rows, cols, n]).buffer), Buffer.from(x.buffer, x.byteOffset, x.byteLength), Buffer.from(tokens.buffer)]);
  const out = execFileSync(bin!, { input, maxBuffer: 1 << 26 });
  const bytes = out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength);
  assert.equal(bytes.byteLength, rows * 8 + rows * LOGPROB_STRIDE * 4);
  const sums = new Float64Array(bytes, 0, rows);
  const words = new Int32Array(bytes, rows * 8);
  return Array.from({ length: rows }, (_, r) => ({ words: words.subarray(r * LOGPROB_STRIDE, (r + 1) * LOGPROB_STRIDE), sum: sums[r] }));
}

/** A row of logits: normal values, or with many ties, masks, NaN and +inf sprinkled in. */
function row(n: number, kind: 'plain' | 'ties' | 'masked' | 'inf'): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = kind === 'ties' ? Math.floor(rng.next() * 6) - 3 : 8 * (rng.next() - 0.5);
  if (kind === 'masked') {
    for (let i = 0; i < n; i++) {
      const r = rng.next();
      if (r < 0.3) x[i] = -Infinity;
      else if (r < 0.35) x[i] = NaN;
    }
  }
  if (kind === 'inf') {
    for (let j = 0; j < 3; j++) x[Math.floor(rng.next() * n)] = Infinity;
  }
  return x;
}

describe('the GPU logprobs kernel on a CPU emulation of CUDA', { skip: skipReason }, () => {
  it('gives computeLogprobs’ tokens, ranks, top lists and values', () => {
    // [cols, n]: the kernel reads the first n of each row (a padded vocabulary).
    const shapes: Array<[number, number]> = [[3, 3], [20, 17], [1000, 1000], [5000, 4990], [128256, 128000]];
    for (const [cols, n] of shapes) {
      const kinds = ['plain', 'ties', 'masked', 'inf'] as const;
      const x = new Float32Array(kinds.length * cols);
      kinds.forEach((k, r) => x.set(row(cols, k), r * cols));
      // Tokens: a random one, the row's best, a masked one where there is one.
      const tokens = Int32Array.from(kinds, (_, r) => {
        const xr = x.subarray(r * cols, r * cols + n);
        if (r === 1) {
          let best = 0;
          for (let i = 1; i < n; i++) if (xr[i] > xr[best] || xr[best] !== xr[best]) best = i;
          return best;
        }
        if (r === 2) {
          const masked = xr.findIndex((v) => v === -Infinity || v !== v);
          if (masked >= 0) return masked;
        }
        return Math.floor(rng.next() * n);
      });
      const stats = kernelStats(x, cols, n, tokens);
      kinds.forEach((kind, r) => {
        const xr = x.subarray(r * cols, r * cols + n);
        for (const topN of [0, 1, 5, GPU_MAX_TOP_LOGPROBS]) {
          const what = `${kind} row of ${n} ids (cols ${cols}), token ${tokens[r]}, top ${topN}`;
          let want;
          try {
            want = computeLogprobs(xr, topN, tokens[r]);
          } catch (err) {
            // A short masked row can lose every id: then both refuse alike.
            assert.equal((err as Error).message, ALL_MASKED);
            assert.throws(() => logprobsFromRowStats(stats[r], tokens[r], topN, n), { message: ALL_MASKED }, what);
            continue;
          }
          assertSameLogprobs(logprobsFromRowStats(stats[r], tokens[r], topN, n), want, what, SEED);
        }
      });
    }
  });

  it('throws the sampler’s error for a row with nothing to choose', () => {
    const x = Float32Array.from([-Infinity, NaN, -Infinity, NaN]);
    const [s] = kernelStats(x, 4, 4, Int32Array.from([1]));
    assert.throws(() => logprobsFromRowStats(s, 1, 2, 4), { message: ALL_MASKED });
    assert.throws(() => computeLogprobs(x, 2, 1), { message: ALL_MASKED });
  });
});
