// Repetition, frequency and presence penalties on the GPU (Backend.applyPenalties,
// kernels/penalties.cu): against applyPenaltyRow (engine/sampler.ts, the host sampler's own
// arithmetic) bit for bit, on fresh random rows up to Llama-3's 128,256 ids with NaN, ±inf, ids past
// the row and knobs of either sign; and through the engine: penalised sampled and greedy requests
// draw on the GPU with the tokens the logits path gives. Without a GPU the suite skips with the reason.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Rng } from '../src/engine/rng.js';
import { applyPenaltyRow, penaltyRow, TokenCounts } from '../src/engine/sampler.js';
import { resolveSamplingParams } from '../src/engine/sampling-params.js';
import { LLM } from '../src/llm.js';
import { comparisons, launchesOf, openTestGpu, testRandom } from './support/cuda.js';

const { gpu, skipReason } = await openTestGpu();
const { seed: SEED } = testRandom();
const { assertBitwise } = comparisons(SEED);

describe('penalties on the GPU', { skip: skipReason }, () => {
  const be = gpu!;

  it('applyPenalties changes each listed logit as the host does, bit for bit, and leaves x alone', () => {
    const rng = new Rng(SEED);
    for (const [rows, cols] of [[3, 128256], [8, 1000], [2, 7]]) {
      const x = Float32Array.from({ length: rows * cols }, () => 30 * (rng.next() - 0.5));
      for (let i = 0; i < 20; i++) x[Math.floor(rng.next() * x.length)] = [NaN, Infinity, -Infinity, 0, -0][i % 5];
      const ids = (n: number) => Array.from({ length: n }, () => Math.floor(rng.next() * (cols + 5)));
      const penalties = Array.from({ length: rows }, (_, r) => {
        if (r === 1) return undefined; // a row without penalties, copied as it is
        const counts = new TokenCounts(ids(Math.min(cols, 400)), ids(Math.min(cols, 300)));
        return penaltyRow(counts, resolveSamplingParams({ repetitionPenalty: 0.3 + 2 * rng.next(), frequencyPenalty: 4 * rng.next() - 2, presencePenalty: 4 * rng.next() - 2 }));
      });
      const want = x.slice();
      penalties.forEach((p, r) => p && applyPenaltyRow(want.subarray(r * cols, (r + 1) * cols), p));
      const xt = be.fromHost(x, [rows, cols]);
      let y = xt;
      const names = launchesOf(be, () => (y = be.applyPenalties(xt, penalties)));
      assert.deepEqual(names, ['apply_penalties']);
      assertBitwise(be.toHost(y), want, `[${rows}, ${cols}] penalised`);
      assertBitwise(be.toHost(xt), x, 'x keeps its raw logits');
      be.release(xt, y);
    }
    assert.throws(() => be.applyPenalties(be.fromHost(new Float32Array(4), [2, 2]), [undefined]), /applyPenalties: 1 penalty rows for 2 logit rows/);
  });

  it('gives the engine’s penalised requests, sampled and greedy, the tokens of the logits path while drawing on the GPU', async () => {
    const llm = await LLM.load({ device: 'cuda' });
    try {
      const model = llm.loaded.model;
      const forward = model.forward.bind(model);
      let penalisedSteps = 0;
      model.forward = (batch, kv, opts = {}) => {
        if (opts.sampleRows?.penalties) penalisedSteps++;
        return forward(batch, kv, opts);
      };
      const penalties = { repetitionPenalty: 1.3, frequencyPenalty: 0.5, presencePenalty: 0.4 };
      const run = () =>
        Promise.all([
          llm.complete('The capital of France is', { maxTokens: 20, temperature: 0.8, seed: 7, ignoreEos: true, ...penalties }),
          llm.complete('Once upon a time', { maxTokens: 20, temperature: 0, ignoreEos: true, ...penalties }),
          llm.complete('def fib(n):', { maxTokens: 20, temperature: 0.7, topP: 0.9, seed: 8, ignoreEos: true }),
        ]);
      const onGpu = await run();
      assert.ok(penalisedSteps >= 20, `penalised steps drew on the GPU (${penalisedSteps})`);
      // The logits path: the engine's backend draws turned off (its private choice, replaced here).
      const engine = llm.engine as unknown as Record<string, unknown>;
      engine.sampleRowsOf = () => undefined;
      const viaLogits = await run();
      delete engine.sampleRowsOf;
      onGpu.forEach((r, i) => assert.deepEqual(r.tokenIds, viaLogits[i].tokenIds, `request ${i} (seed ${SEED})`));
    } finally {
      await llm.close();
    }
  });
});

