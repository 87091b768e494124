// Greedy steps read back one id a row (the backend's argmax) instead of the logits: the same tokens
// as sampling from the logits, on the CPU (host fallback) and, where a GPU is present, on CUDA
// (Backend.argmaxRows against the host's argmax; skipped with the reason elsewhere).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Backend } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { Engine, type EngineOptions } from '../src/engine/engine.js';
import { Rng } from '../src/engine/rng.js';
import { argmax } from '../src/engine/sampler.js';
import { resolveSamplingParams } from '../src/engine/sampling-params.js';
import type { ForwardBatch, LlamaModel } from '../src/model/llama.js';
import { loadLlama } from './support/run-model.js';
import { TINY_LLAMA, writeTinyCheckpoint } from './support/tiny-checkpoint.js';
import { openTestGpu } from './support/cuda.js';

const checkpoint = writeTinyCheckpoint(TINY_LLAMA);
const options: EngineOptions = { maxModelLen: 128, maxNumSeqs: 8, maxNumBatchedTokens: 256, kvCacheTokens: 1024, blockSize: 4 };

/** One prefill forward of several prompts, every token's row with logits. */
function forwardAll(model: LlamaModel, prompts: number[][], argmaxOnly?: { vocab: number }) {
  const tokens = prompts.flat();
  const seqIndex = prompts.flatMap((p, s) => p.map(() => s));
  const positions = prompts.flatMap((p) => p.map((_, i) => i));
  const blocksPerSeq = 32;
  const batch: ForwardBatch = {
    numTokens: tokens.length, numSeqs: prompts.length, tokens: Int32Array.from(tokens), positions: Int32Array.from(positions), seqIndex: Int32Array.from(seqIndex),
    slots: Int32Array.from(positions, (p, i) => seqIndex[i] * blocksPerSeq * 4 + p), blockTables: Int32Array.from({ length: prompts.length * blocksPerSeq }, (_, i) => i),
    maxBlocksPerSeq: blocksPerSeq, logitRows: Int32Array.from(tokens, (_, i) => i),
  };
  const c = model.config;
  const kv = model.backend.allocKvCache({ numLayers: c.numLayers, numBlocks: prompts.length * blocksPerSeq, blockSize: 4, numKvHeads: c.numKvHeads, headDim: c.headDim });
  return model.forward(batch, kv, argmaxOnly ? { argmaxOnly } : {});
}

function checkModel(backend: Backend): void {
  const model = loadLlama(checkpoint, backend);
  const V = model.config.vocabSize;
  const prompts = [[1, 2, 3, 4, 5], [9, 8, 7], [33]];
  const { logits } = forwardAll(model, prompts);
  for (const n of [V, Math.floor(V / 3)]) {
    const { argmax: ids, logits: none } = forwardAll(model, prompts, { vocab: n });
    assert.equal(none.length, 0, 'no logits come back');
    const want = Array.from({ length: logits.length / V }, (_, r) => argmax(logits.subarray(r * V, r * V + n)));
    assert.deepEqual([...ids!], want, `argmax over the first ${n} of ${V} ids`);
  }
}

function checkEngine(backend: Backend): void {
  const model = loadLlama(checkpoint, backend);
  const prompts = [[1, 2, 3], [5, 9, 11, 12, 40, 41], [63], [7, 7, 7, 7]];
  const run = (logprobs: number | undefined) => {
    const engine = new Engine(model, undefined, [], options);
    prompts.forEach((p, i) => engine.addRequest(`r${i}`, p, resolveSamplingParams({ temperature: 0, maxTokens: 12, ignoreEos: true }), { logprobs }));
    const out = new Map<string, number[]>();
    while (engine.hasWork()) for (const o of engine.step()) out.set(o.requestId, [...(out.get(o.requestId) ?? []), ...o.newTokenIds]);
    return out;
  };
  let argmaxSteps = 0;
  const forward = model.forward.bind(model);
  model.forward = (b, kv, o) => {
    if (o?.argmaxOnly) argmaxSteps++;
    return forward(b, kv, o);
  };
  // Logprobs need the logits: the same greedy tokens must come from either path.
  const fast = run(undefined);
  assert.ok(argmaxSteps > 0, 'plain greedy steps take the argmax path');
  argmaxSteps = 0;
  const full = run(0);
  assert.equal(argmaxSteps, 0, 'a request with logprobs reads the logits back');
  assert.deepEqual(fast, full);
}

describe('greedy steps read back the argmax only (CPU)', () => {
  it("the forward's argmax equals the sampler's over the logits, also over a padded vocabulary's first ids", () => checkModel(new CpuBackend()));
  it('the engine takes it for plain greedy steps and produces the same tokens as from the logits', () => checkEngine(new CpuBackend()));
});

const { gpu, skipReason } = await openTestGpu();

describe('greedy steps read back the argmax only (CUDA)', { skip: skipReason }, () => {
  it('argmaxRows equals the host argmax: ties to the lowest id, NaN never wins, -1 for a row of -inf, over the first n columns', () => {
    const g = gpu!;
    const rng = new Rng(Number(process.env.TACHYON_TEST_SEED ?? 7));
    for (const [rows, cols] of [[1, 128256], [8, 4096], [5, 1000], [3, 31]]) {
      const x = Float32Array.from({ length: rows * cols }, () => rng.next() * 4 - 2);
      // Row 0: a tie at two places; row 1: NaN larger than everything around it; row 2 (if any): all -inf.
      x[7] = 5;
      x[cols - 2] = 5;
      if (rows > 1) {
        x[cols + 3] = Number.NaN;
        x[cols + 4] = 4.5;
      }
      if (rows > 2) x.fill(-Infinity, 2 * cols, 3 * cols);
      for (const n of [cols, Math.max(1, cols - 3), Math.ceil(cols / 2)]) {
        const got = g.argmaxRows(g.fromHost(x, [rows, cols]), n);
        const want = Array.from({ length: rows }, (_, r) => argmax(x.subarray(r * cols, r * cols + n)));
        assert.deepEqual([...got], want, `[${rows}, ${cols}], n ${n}`);
      }
    }
  });
  it("the forward's argmax equals the sampler's over the logits", () => checkModel(gpu!));
  it('the engine produces the same greedy tokens with the argmax path as from the logits', () => checkEngine(gpu!));
});
