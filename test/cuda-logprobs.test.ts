// Token logprobs on the GPU (Backend.logprobRows, kernels/logprobs.cu): against computeLogprobs over
// the same logits read back, on fresh random rows (ties, masks, NaN, +inf, padded vocabularies up to
// Llama-3's 128,256), and through the engine: a sampled request asking logprobs gets the tokens and
// logprobs it gets when the model computes them from the logits on the host. Without a GPU the suite
// skips with the reason (the kernel's logic also runs on the CPU in cuda-logprobs-emulated.test.ts).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { GPU_MAX_TOP_LOGPROBS } from '../src/backend/cuda/logprobs.js';
import { computeLogprobs } from '../src/engine/sampler.js';
import { LLM, type GenerateOptions } from '../src/llm.js';
import { launchesOf, openTestGpu, testRandom } from './support/cuda.js';
import { assertSameLogprobs } from './support/logprobs.js';

const { gpu, skipReason } = await openTestGpu();
const { seed: SEED, rng } = testRandom();

function logitRow(n: number, kind: number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = kind === 1 ? Math.floor(rng.next() * 5) - 2 : 10 * (rng.next() - 0.5);
  if (kind === 2) for (let i = 0; i < n; i++) if (rng.next() < 0.4) x[i] = rng.next() < 0.8 ? -Infinity : NaN;
  if (kind === 3) x[Math.floor(rng.next() * n)] = Infinity;
  return x;
}

describe('token logprobs on the GPU', { skip: skipReason }, () => {
  const be = gpu!;

  it('gives computeLogprobs’ answer for every row, without reading the logits back', () => {
    for (const [rows, cols, n] of [[4, 128256, 128256], [8, 32000, 31990], [3, 1000, 1000], [2, 7, 5]]) {
      const x = new Float32Array(rows * cols);
      for (let r = 0; r < rows; r++) x.set(logitRow(cols, r % 4), r * cols);
      const xt = be.fromHost(x, [rows, cols]);
      const asks = Array.from({ length: rows }, () => ({ token: Math.floor(rng.next() * n), topN: Math.floor(rng.next() * (GPU_MAX_TOP_LOGPROBS + 1)) }));
      let got: ReturnType<CudaBackend['logprobRows']> = [];
      const names = launchesOf(be, () => (got = be.logprobRows(xt, n, asks)));
      assert.deepEqual(names, ['logprob_rows']);
      asks.forEach((a, r) => {
        const want = computeLogprobs(x.subarray(r * cols, r * cols + n), a.topN, a.token);
        assertSameLogprobs(got[r], want, `row ${r} of [${rows}, ${cols}] over ${n} ids, token ${a.token}, top ${a.topN}`, SEED);
      });
      be.release(xt);
    }
  });

  it('refuses tokens outside the vocabulary and more alternatives than it returns', () => {
    const xt = be.fromHost(new Float32Array(2 * 10), [2, 10]);
    assert.throws(() => be.logprobRows(xt, 8, [{ token: 8, topN: 1 }, { token: 0, topN: 1 }]), /logprobRows: row 0: token id 8 is outside the vocabulary of 8/);
    assert.throws(() => be.logprobRows(xt, 8, [{ token: 0, topN: 21 }, { token: 0, topN: 1 }]), /logprobRows: row 0: topN must be an integer in 0\.\.20, got 21/);
    assert.throws(() => be.logprobRows(xt, 8, [{ token: 0, topN: 1 }]), /logprobRows: 1 rows for 2 logit rows/);
  });

  it('gives the engine’s sampled requests the tokens and logprobs of the host path', async () => {
    const run = async (onGpu: boolean) => {
      const llm = await LLM.load({ device: 'cuda' });
      const backend = llm.loaded.model.backend as CudaBackend;
      // Without the op the model computes logprobs from the logits it reads back (the host path).
      if (!onGpu) Object.defineProperty(backend, 'logprobRows', { value: undefined, configurable: true });
      try {
        const opts: GenerateOptions = { logprobs: 5 };
        const prompts = ['The capital of France is', 'Once upon a time', 'def fib(n):'];
        return await Promise.all(prompts.map((p, i) => llm.complete(p, { maxTokens: 16, temperature: 0.8, topP: 0.95, seed: 1000 + i, ignoreEos: true }, opts)));
      } finally {
        if (!onGpu) delete (backend as { logprobRows?: unknown }).logprobRows;
        await llm.close();
      }
    };
    const gpuRuns = await run(true);
    const hostRuns = await run(false);
    gpuRuns.forEach((g, i) => {
      const h = hostRuns[i];
      assert.deepEqual(g.tokenIds, h.tokenIds, `prompt ${i}: tokens`);
      assert.equal(g.logprobs?.length, g.tokenIds.length, `prompt ${i}: a logprobs entry a token`);
      g.logprobs!.forEach((lp, t) => assertSameLogprobs(lp, h.logprobs![t], `prompt ${i}, token ${t}`, SEED));
    });
  });
});
