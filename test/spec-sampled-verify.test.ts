// Speculative windows of sampled requests verified from the backend's draws (one token and one
// probability a window row) instead of their logits. Checked on the CPU: drawResidual is the literal
// residual draw of verifyDrafts (Sampler.probabilities, p − onehot(x), drawFrom); over many random
// windows the planned rows through the CPU backend's sampleRows, verified by verifyDraftsSampled, give
// verifyDrafts' tokens from the same logits and leave the random stream at the same place; which
// windows qualify; the step loop and the engine take the path (counted on the forward's options) and
// give exactly the tokens of the logits path, over a padded vocabulary too; with a GPU, the engine on
// the GPU's draws against the host verifying the GPU's logits (skips without one); sampled drafts whose
// distributions stay on the backend (a draft model's) verified against them, row by row and through
// the engine, against verifyDrafts with q on the host. Fresh random
// inputs each run (TACHYON_TEST_SEED replays one). The GPU's draws row by row: test/cuda-sampling.test.ts.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import type { GpuSamplingRow } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { Engine, type EngineOptions } from '../src/engine/engine.js';
import { drawDistribution, drawResidual, drawResidualOf, maskPaddedVocab, Sampler, TokenCounts, type Logprobs } from '../src/engine/sampler.js';
import { resolveSamplingParams, type SamplingParams } from '../src/engine/sampling-params.js';
import { generateWithSpeculation } from '../src/engine/spec/generate-loop.js';
import { NgramProposer } from '../src/engine/spec/ngram.js';
import { draftDistributionBytes } from '../src/engine/kv-budget.js';
import { DraftModelProposer } from '../src/engine/spec/draft-model.js';
import { Eagle3Proposer, loadEagle3Head } from '../src/engine/spec/eagle3.js';
import { drawFrom, type Proposer } from '../src/engine/spec/proposer.js';
import { SpeculativeDecoder, type SpecWindow } from '../src/engine/spec/speculative-step.js';
import { planSampledVerification, verifyDrafts, verifyDraftsSampled } from '../src/engine/spec/verifier.js';
import { KvBlockPool, SequenceBlocks } from '../src/engine/kv-cache.js';
import { DEFAULT_MODEL_NAME, embeddedModelDir } from '../src/model/default-model.js';
import type { ForwardOptions, LlamaModel } from '../src/model/llama.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { openTestGpu, testRandom } from './support/cuda.js';
import { fixturesDir } from './support/paths.js';
import { assertSameLogprobs } from './support/logprobs.js';
import { loadLlama } from './support/run-model.js';
import { SamplingInputs } from './support/sampling.js';
import { TINY_LLAMA, writeTinyCheckpoint, writePaddedVocabCheckpoint } from './support/tiny-checkpoint.js';

const { seed: SEED, rng } = testRandom();
const inputs = new SamplingInputs(rng);
const none = new TokenCounts();
const cpu = new CpuBackend();

/** [rows × V] random logits, each row with a finite value among its first n ids (no row is empty). */
function windowLogits(rows: number, V: number, n: number): Float32Array {
  const x = new Float32Array(rows * V);
  for (let r = 0; r < rows; r++) {
    const row = inputs.logits(V, false);
    if (!row.subarray(0, n).some((v) => v > -Infinity)) row[inputs.int(n)] = 1;
    x.set(row, r * V);
  }
  return x;
}

/**
 * verifyDrafts' residual draw spelled out: drawFrom over max(0, p − q) (q(y) by `qOf`: one-hot at a
 * deterministic draft), or over p where that has no mass (`empty`).
 */
function literalResidualDraw(p: Float32Array, qOf: (y: number) => number, u: number): { token: number; empty: boolean } {
  const r = new Float32Array(p.length);
  let mass = 0;
  for (let y = 0; y < p.length; y++) {
    const v = p[y] - qOf(y);
    if (v > 0) {
      r[y] = v;
      mass += v;
    }
  }
  return { token: drawFrom(mass > 0 ? r : p, u), empty: !(mass > 0) };
}

describe('drawResidual is verifyDrafts’ residual draw', () => {
  it('the token of drawFrom(p − onehot(x), u) over Sampler.probabilities, and p(x), for random rows, knobs, drafts and u', () => {
    let fallbacks = 0;
    for (let c = 0; c < 3000; c++) {
      const V = inputs.pick([1, 2, 7, 100, 1000, 4000]);
      const knobs = inputs.knobs(false);
      const row = windowLogits(1, V, V);
      const x = inputs.draft(row, V, V, knobs);
      const u = inputs.pick([0, 1 - 2 ** -53, rng.next(), rng.next()]);
      const p = new Sampler(resolveSamplingParams({ ...knobs, seed: 1 }), V).probabilities(row, none);
      const { token: want, empty } = literalResidualDraw(p, (y) => (y === x ? 1 : 0), u);
      if (empty) fallbacks++;
      const got = drawResidual(row, knobs, x, u);
      assert.equal(got.token, want, `case ${c}: V ${V}, ${JSON.stringify(knobs)}, x ${x}, u ${u} (seed ${SEED})`);
      assert.ok(Object.is(got.excludedProb, x < V ? p[x] : 0), `case ${c}: p(x) ${got.excludedProb}, probabilities() says ${p[x]} (seed ${SEED})`);
    }
    assert.ok(fallbacks > 0, 'some residuals were empty (x the only token with mass)');
  });

  it('greedy: the argmax, with p(x) one-hot', () => {
    const row = Float32Array.from([0, 3, 1, 3]);
    const knobs = { temperature: 0, topK: 0, topP: 1, minP: 0 };
    assert.deepEqual(drawResidual(row, knobs, 1, 0.5), { token: 1, excludedProb: 1 });
    assert.deepEqual(drawResidual(row, knobs, 3, 0.5), { token: 1, excludedProb: 0 });
  });
});

describe('drawDistribution and drawResidualOf are the draft sampler’s draw and verifyDrafts’ residual against q', () => {
  it('drawDistribution: Sampler.probabilities bit for bit, the token drawFrom(q, u), q(token)', () => {
    for (let c = 0; c < 2000; c++) {
      const V = inputs.pick([1, 2, 7, 100, 1000, 4000]);
      const knobs = inputs.knobs(false);
      const row = windowLogits(1, V, V);
      const u = inputs.pick([0, 1 - 2 ** -53, rng.next(), rng.next()]);
      const q = new Sampler(resolveSamplingParams({ ...knobs, seed: 1 }), V).probabilities(row, none);
      const got = drawDistribution(row, knobs, u);
      const what = `case ${c}: V ${V}, ${JSON.stringify(knobs)}, u ${u} (seed ${SEED})`;
      assert.deepEqual(got.probs, q, what);
      assert.equal(got.token, drawFrom(q, u), what);
      assert.ok(Object.is(got.tokenProb, q[got.token]), what);
    }
    assert.throws(() => drawDistribution(Float32Array.from([1, 2]), { temperature: 0, topK: 0, topP: 1, minP: 0 }, 0.5), /greedy row has no distribution/);
  });

  it('drawResidualOf: the token of drawFrom(max(0, p − q), u) — p where that is empty — and p(x), for random rows, knobs, q, drafts and u', () => {
    let fallbacks = 0;
    for (let c = 0; c < 3000; c++) {
      const V = inputs.pick([1, 2, 7, 100, 1000, 4000]);
      const knobs = inputs.knobs(false);
      const row = windowLogits(1, V, V);
      const p = new Sampler(resolveSamplingParams({ ...knobs, seed: 1 }), V).probabilities(row, none);
      // q: p itself (the residual is empty), p at another temperature, or another row's distribution.
      const kind = rng.next();
      const q = kind < 0.2 ? p : drawDistribution(kind < 0.5 ? row : windowLogits(1, V, V), kind < 0.5 ? { ...knobs, temperature: knobs.temperature * (0.5 + rng.next()) } : inputs.knobs(false), 0).probs;
      const x = rng.next() < 0.8 ? drawFrom(q, rng.next()) : inputs.draft(row, V, V, knobs);
      const u = inputs.pick([0, 1 - 2 ** -53, rng.next(), rng.next()]);
      const { token: want, empty } = literalResidualDraw(p, (y) => q[y], u);
      if (empty) fallbacks++;
      const got = drawResidualOf(row, knobs, x, q, u);
      const what = `case ${c}: V ${V}, ${JSON.stringify(knobs)}, x ${x}, u ${u} (seed ${SEED})`;
      assert.equal(got.token, want, what);
      assert.ok(Object.is(got.excludedProb, x < V ? p[x] : 0), what);
    }
    assert.ok(fallbacks > 0, 'some residuals were empty (p ≤ q everywhere)');
  });
});

/**
 * A random request for the window tests: its vocabulary V (of which the first n may be drawn: a
 * padded vocabulary, the rest masked for verifyDrafts), knobs (sometimes greedy if `greedy`), a third
 * penalised with a history the penalties see (and the drafts join), and twin samplers: one verifies
 * from the logits, the other from the backend's draws.
 */
function randomRequest(greedy: boolean): { V: number; n: number; knobs: ReturnType<SamplingInputs['knobs']>; host: Sampler; device: Sampler; counts: TokenCounts } {
  const V = inputs.pick([3, 40, 300, 2000]);
  const n = rng.next() < 0.3 ? Math.max(1, V - 1 - inputs.int(Math.min(V - 1, 12))) : V;
  const knobs = inputs.knobs(greedy);
  const penalties = rng.next() < 0.33 ? { repetitionPenalty: 0.7 + rng.next(), frequencyPenalty: rng.next() - 0.3, presencePenalty: rng.next() - 0.3 } : {};
  const params = resolveSamplingParams({ ...knobs, ...penalties, seed: inputs.int(2 ** 31) });
  const host = new Sampler(params, V);
  const counts = host.penalised ? new TokenCounts(Array.from({ length: 20 }, () => inputs.int(V)), Array.from({ length: 10 }, () => inputs.int(V))) : none;
  return { V, n, knobs, host, device: new Sampler(params, V), counts };
}

describe('verifyDraftsSampled over the CPU backend’s draws equals verifyDrafts from the logits', () => {
  it('token for token, the stream at the same place, over random windows (k 0..6, random knobs and penalties, drafts the favourite, random, filtered out or padded)', () => {
    const seen = new Set<string>();
    let windows = 0;
    let penalisedWindows = 0;
    for (let c = 0; c < 400; c++) {
      const { V, n, knobs, host, device, counts } = randomRequest(true);
      for (let step = 0; step < 4; step++) {
        const k = inputs.int(7);
        const logits = windowLogits(k + 1, V, n);
        const drafts = Array.from({ length: k }, (_, i) => inputs.draft(logits.subarray(i * V, (i + 1) * V), n, V, knobs));
        const masked = logits.slice();
        maskPaddedVocab(masked, V, n);
        const want = verifyDrafts({ drafts, logits: masked, sampler: host, counts });

        const plan = planSampledVerification(drafts, device, counts);
        const excludedProbs = new Float32Array(k + 1);
        const x = cpu.fromHost(logits, [k + 1, V]);
        if (plan.penalties) penalisedWindows++;
        const draws = cpu.sampleRows(plan.penalties ? cpu.applyPenalties(x, plan.penalties) : x, n, plan.rows, excludedProbs);
        const got = verifyDraftsSampled({ drafts, sampler: device, plan, draws, excludedProbs });
        const what = `case ${c} step ${step}: V ${V}, n ${n}, ${JSON.stringify(knobs)}, drafts ${JSON.stringify(drafts)} (seed ${SEED})`;
        assert.deepEqual(got, want, what);
        assert.equal(device.rng.clone().next(), host.rng.clone().next(), `${what}: the stream is where verifyDrafts left it`);
        seen.add(`${k}:${got.numAccepted}`);
        windows++;
      }
    }
    // Rejections at every place and whole windows accepted, long ones included.
    for (const [k, a] of [[1, 0], [1, 1], [3, 0], [3, 2], [3, 3], [6, 6]]) assert.ok(seen.has(`${k}:${a}`), `k ${k} with ${a} accepted never happened in ${windows} windows (seed ${SEED})`);
    assert.ok(penalisedWindows > 100, `${penalisedWindows} penalised windows`);
  });

  it('sampled drafts with their distributions on the backend: token for token verifyDrafts with q, the stream at the same place (k 0..6, random knobs and penalties, padded vocabularies)', () => {
    const seen = new Set<string>();
    let windows = 0;
    for (let c = 0; c < 300; c++) {
      const { V, n, knobs, host, device, counts } = randomRequest(false);
      for (let step = 0; step < 4; step++) {
        const k = inputs.int(7);
        const logits = windowLogits(k + 1, V, n);
        // A draft model's drafts: each drawn from its own q (a distribution over the whole vocabulary,
        // as DraftTokenSampler draws), q written to a row of the backend's dist tensor. Mostly q from
        // the target row's logits with noise (a draft model close to its target), else unrelated.
        const qs = Array.from({ length: k }, (_, i) => {
          const near = rng.next() < 0.75;
          const src = near ? Float32Array.from(logits.subarray(i * V, (i + 1) * V), (v) => v + 0.3 * (rng.next() - 0.5)) : windowLogits(1, V, V);
          return drawDistribution(src, near ? knobs : inputs.knobs(false), 0).probs;
        });
        const drafts = qs.map((q) => drawFrom(q, rng.next()));
        const masked = logits.slice();
        maskPaddedVocab(masked, V, n);
        const want = verifyDrafts({ drafts, probs: qs, logits: masked, sampler: host, counts });

        const order = qs.map((_, i) => i).sort(() => rng.next() - 0.5); // rows of dist in any order
        const distData = new Float32Array(Math.max(1, k) * V);
        order.forEach((row, i) => distData.set(qs[i], row * V));
        const dist = cpu.fromHost(distData, [Math.max(1, k), V]);
        const plan = planSampledVerification(drafts, device, counts, { dist, rows: order, tokenProbs: drafts.map((x, i) => qs[i][x]) });
        const excludedProbs = new Float32Array(k + 1);
        const x = cpu.fromHost(logits, [k + 1, V]);
        const draws = cpu.sampleRows(plan.penalties ? cpu.applyPenalties(x, plan.penalties) : x, n, plan.rows, excludedProbs, plan.dist);
        const got = verifyDraftsSampled({ drafts, sampler: device, plan, draws, excludedProbs });
        const what = `case ${c} step ${step}: V ${V}, n ${n}, ${JSON.stringify(knobs)}, drafts ${JSON.stringify(drafts)} (seed ${SEED})`;
        assert.deepEqual(got, want, what);
        assert.equal(device.rng.clone().next(), host.rng.clone().next(), `${what}: the stream is where verifyDrafts left it`);
        seen.add(`${k}:${got.numAccepted}`);
        windows++;
      }
    }
    for (const [k, a] of [[1, 0], [1, 1], [3, 0], [3, 3]]) assert.ok(seen.has(`${k}:${a}`), `k ${k} with ${a} accepted never happened in ${windows} windows (seed ${SEED})`);
  });

  it('plans from a copy of the stream: row i excludes draft i with u = v_(i+1), the bonus row takes v_k, the stream unmoved', () => {
    const sampler = new Sampler(resolveSamplingParams({ temperature: 0.8, topK: 5, seed: 42 }), 10);
    const twin = sampler.rng.clone();
    const plan = planSampledVerification([4, 7, 1], sampler);
    const v = [twin.next(), twin.next(), twin.next(), twin.next()];
    assert.deepEqual([...plan.values], v);
    const knobs = { temperature: 0.8, topK: 5, topP: 1, minP: 0 };
    assert.deepEqual(plan.rows, [{ ...knobs, u: v[1], exclude: 4 }, { ...knobs, u: v[2], exclude: 7 }, { ...knobs, u: v[3], exclude: 1 }, { ...knobs, u: v[3] }]);
    assert.equal(sampler.rng.next(), v[0], 'planning took nothing from the stream');
    // Greedy requests: argmax rows, nothing drawn.
    const greedy = new Sampler(resolveSamplingParams({ temperature: 0, seed: 1 }), 10);
    const g = planSampledVerification([2], greedy);
    assert.equal(g.values.length, 0);
    assert.deepEqual(g.rows.map((r) => [r.temperature, r.exclude]), [[0, undefined], [0, undefined]]);
  });

  it('plans a penalised window\'s rows with the counts each row\'s p sees, leaving the counts as they were', () => {
    const penalised = new Sampler(resolveSamplingParams({ temperature: 0.8, repetitionPenalty: 1.2, frequencyPenalty: 0.5 }), 10);
    const counts = new TokenCounts([5, 6], [1]);
    const plan = planSampledVerification([1, 2], penalised, counts);
    const lists = plan.penalties!.map((p) => new Map([...p!.ids].map((id, i) => [id, p!.outputCounts[i]])));
    assert.deepEqual(lists.map((m) => [...m].sort((a, b) => a[0] - b[0])), [
      [[1, 1], [5, 0], [6, 0]],
      [[1, 2], [5, 0], [6, 0]],
      [[1, 2], [2, 1], [5, 0], [6, 0]],
    ]);
    assert.deepEqual(counts, new TokenCounts([5, 6], [1]), 'the counts are left as they were');
  });

  it('refuses a penalised sampler without counts and answers of the wrong length, naming them', () => {
    const penalised = new Sampler(resolveSamplingParams({ temperature: 0.8, repetitionPenalty: 1.2 }), 10);
    assert.throws(() => planSampledVerification([1], penalised), /a penalised request needs its token counts/);
    const sampler = new Sampler(resolveSamplingParams({ temperature: 0.8, seed: 3 }), 10);
    const plan = planSampledVerification([1, 2], sampler);
    assert.throws(() => verifyDraftsSampled({ drafts: [1, 2], sampler, plan, draws: [1, 2], excludedProbs: [0, 0, 0] }), /2 drafts need 3 rows, draws and excluded probabilities, got 3, 2 and 3/);
    assert.throws(() => verifyDraftsSampled({ drafts: [1, 2], sampler, plan, draws: [-1, 2, 3], excludedProbs: [0, 0, 0] }), /every logit is -inf or NaN/);
  });

  it('sampleRows refuses a bad exclude and a wrong excludedProbs length', () => {
    const x = cpu.fromHost(Float32Array.from([1, 2, 3, 4]), [2, 2]);
    const ok: GpuSamplingRow = { temperature: 1, topK: 0, topP: 1, minP: 0, u: 0.5 };
    assert.throws(() => cpu.sampleRows(x, 2, [ok, { ...ok, exclude: -1 }]), /row 1: exclude must be a token id/);
    assert.throws(() => cpu.sampleRows(x, 2, [ok, { ...ok, exclude: 1.5 }]), /row 1: exclude must be a token id/);
    assert.throws(() => cpu.sampleRows(x, 2, [ok, ok], new Float32Array(3)), /excludedProbs has 3 values for 2 logit rows/);
    // An id past the logits is allowed: p(x) = 0, the draw is from p.
    const probs = new Float32Array(2).fill(-1);
    cpu.sampleRows(x, 2, [ok, { ...ok, exclude: 99 }], probs);
    assert.deepEqual([...probs], [0, 0]);
  });
});

// ---- windows that qualify, the step loop, the engine ----------------------------------------------

const K = 3;

interface ForwardCall {
  sampleRows?: GpuSamplingRow[];
  /** Some row's logits took penalties before the draw. */
  penalised: boolean;
  argmax: boolean;
  logitRows: number;
  numSeqs: number;
}

/** Record every forward of `model` until `stop()`. */
function recordForwards(model: LlamaModel): { calls: ForwardCall[]; stop: () => void } {
  const calls: ForwardCall[] = [];
  const forward = model.forward.bind(model);
  model.forward = (batch, kv, opts?: ForwardOptions) => {
    calls.push({ sampleRows: opts?.sampleRows?.rows, penalised: opts?.sampleRows?.penalties !== undefined, argmax: opts?.argmaxOnly !== undefined, logitRows: batch.logitRows.length, numSeqs: batch.numSeqs });
    return forward(batch, kv, opts);
  };
  return { calls, stop: () => delete (model as { forward?: unknown }).forward };
}

const excludes = (c: ForwardCall) => (c.sampleRows ?? []).some((r) => r.exclude !== undefined);

describe('which windows the backend may verify by its draws', () => {
  it('deterministic drafts, penalised requests\' too; not sampled drafts, forced acceptance, or with the option off', () => {
    const target = loadLlama(writeTinyCheckpoint(TINY_LLAMA), cpu);
    const kv = cpu.allocKvCache({ numLayers: 2, numBlocks: 4, blockSize: 16, numKvHeads: 2, headDim: 8 });
    const window = (params: Partial<SamplingParams>, proposal: SpecWindow['proposal']): SpecWindow => ({
      seq: { id: 0, tokens: [1, 2], blocks: new SequenceBlocks(new KvBlockPool(4, 16)), sampler: new Sampler(resolveSamplingParams(params), 64), counts: new TokenCounts() },
      proposal, start: 1, tokens: [2, ...proposal.tokens],
    });
    const on = new SpeculativeDecoder({ model: target, kv }, new NgramProposer(1, 3), { numSpeculativeTokens: K });
    const sampled = { temperature: 0.7 };
    assert.ok(on.canVerifySampled(window(sampled, { tokens: [3, 4] })));
    assert.ok(on.canVerifySampled(window({ temperature: 0 }, { tokens: [3] })));
    assert.ok(!on.canVerifySampled(window(sampled, { tokens: [3], probs: [new Float32Array(64)] })));
    assert.ok(!on.canVerifySampled(window(sampled, { tokens: [3], forcedAccept: 1 })));
    assert.ok(on.canVerifySampled(window({ temperature: 0.7, presencePenalty: 0.5 }, { tokens: [3] })));
    assert.throws(() => on.planSampled(window(sampled, { tokens: [3], forcedAccept: 1 })), /must be verified from the logits/);
    const off = new SpeculativeDecoder({ model: target, kv }, new NgramProposer(1, 3), { numSpeculativeTokens: K, sampledVerification: false });
    assert.ok(!off.canVerifySampled(window(sampled, { tokens: [3] })));
    const replaced = new SpeculativeDecoder({ model: target, kv }, new NgramProposer(1, 3), { numSpeculativeTokens: K, verify: verifyDrafts });
    assert.ok(!replaced.canVerifySampled(window(sampled, { tokens: [3] })));
    // Greedy windows go through the draws only where argmax verification is on (off: the logits).
    const noArgmax = new SpeculativeDecoder({ model: target, kv }, new NgramProposer(1, 3), { numSpeculativeTokens: K, argmaxVerification: false });
    assert.ok(!noArgmax.canVerifySampled(window({ temperature: 0 }, { tokens: [3] })));
    assert.ok(noArgmax.canVerifySampled(window(sampled, { tokens: [3] })));
  });
});

// Logs and lists, whose continuations repeat what came before: prompt lookup's drafts are often accepted.
const fixture = JSON.parse(readFileSync(join(fixturesDir(), 'default-models', 'greedy.json'), 'utf8')) as { target: { prompt_ids: number[] }[] };
const PROMPTS = [1, 3, 7, 9].map((i) => fixture.target[i].prompt_ids);

const sampledParams = (i: number, extra: Partial<SamplingParams> = {}) =>
  resolveSamplingParams({ temperature: [0.3, 0.7, 1, 0.5][i % 4], topK: [0, 40, 0, 5][i % 4], topP: [1, 0.9, 0.95, 1][i % 4], minP: [0, 0.02, 0, 0.1][i % 4], seed: (SEED + i) % 1_000_000, maxTokens: 20, ignoreEos: true, ...extra });

const ENGINE: EngineOptions = { maxModelLen: 256, maxNumSeqs: 8, maxNumBatchedTokens: 256, kvCacheTokens: 4096, blockSize: 16 };

interface Req {
  id: string;
  prompt: number[];
  params: SamplingParams;
  logprobs?: number;
  /** Added before this engine step (default 0). */
  at?: number;
}

/** Requests through an engine with n-gram speculation: the tokens, every step's forward options, the counters. */
function runEngine(model: LlamaModel, requests: Req[], tok?: Tokenizer, logitsPath = false, proposer: Proposer = new NgramProposer(1, 3)): { tokens: Map<string, number[]>; logprobs: Map<string, Logprobs[]>; calls: ForwardCall[]; accepted: number; drafted: number } {
  const engine = new Engine(model, tok, [], { ...ENGINE, speculative: { proposer, numSpeculativeTokens: K } });
  // The engine's logits path for every step: no backend draws (its private choice, replaced here).
  if (logitsPath) Object.assign(engine, { sampleRowsOf: () => undefined });
  const rec = recordForwards(model);
  const tokens = new Map<string, number[]>();
  const logprobs = new Map<string, Logprobs[]>();
  try {
    for (let n = 0; n === 0 || engine.hasWork() || requests.some((r) => (r.at ?? 0) >= n); n++) {
      assert.ok(n < 5000, 'the engine did not finish');
      for (const r of requests.filter((r) => (r.at ?? 0) === n)) engine.addRequest(r.id, r.prompt, r.params, r.logprobs === undefined ? {} : { logprobs: r.logprobs });
      for (const out of engine.step()) {
        tokens.set(out.requestId, [...(tokens.get(out.requestId) ?? []), ...out.newTokenIds]);
        if (out.logprobs) logprobs.set(out.requestId, [...(logprobs.get(out.requestId) ?? []), ...out.logprobs]);
      }
    }
  } finally {
    rec.stop();
  }
  const s = engine.stats().specDecode;
  return { tokens, logprobs, calls: rec.calls, accepted: s.numAcceptedTokens, drafted: s.numDraftTokens };
}

/** The same requests through the logits path: no backend draws, and logprobs so no step takes the argmax alone (the same batches). */
const viaLogits = (model: LlamaModel, requests: Req[], tok?: Tokenizer, proposer?: Proposer) => runEngine(model, requests.map((r) => ({ ...r, logprobs: r.logprobs ?? 0 })), tok, true, proposer);

/** Sampled requests, a greedy one and a late prefill in one batch: the same tokens as the logits path, every step drawing on the backend. */
function checkMixedBatch(target: LlamaModel): void {
  const requests: Req[] = [
    ...PROMPTS.slice(0, 3).map((prompt, i) => ({ id: `s${i}`, prompt, params: sampledParams(i) })),
    { id: 'greedy', prompt: PROMPTS[3], params: resolveSamplingParams({ temperature: 0, maxTokens: 20, ignoreEos: true }) },
    // Arrives late: its prefill shares steps with the others' windows.
    { id: 'late', prompt: PROMPTS[0].concat(PROMPTS[2]), params: sampledParams(3, { maxTokens: 12 }), at: 3 },
    // Asks logprobs: its windows' rows answer for their drafts and their draws.
    { id: 'logprobs', prompt: PROMPTS[2], params: sampledParams(5, { maxTokens: 16 }), logprobs: 3 },
  ];
  const want = viaLogits(target, requests);
  assert.ok(want.calls.every((c) => c.sampleRows === undefined && !c.argmax));
  const got = runEngine(target, requests);
  for (const r of requests) assert.deepEqual(got.tokens.get(r.id), want.tokens.get(r.id), `${r.id} (seed ${SEED})`);
  assert.deepEqual([got.drafted, got.accepted], [want.drafted, want.accepted]);
  assert.ok(got.drafted > 0 && got.accepted > 0, `drafted ${got.drafted}, accepted ${got.accepted}`);
  const lp = got.logprobs.get('logprobs')!;
  assert.equal(lp.length, got.tokens.get('logprobs')!.length, 'a logprobs entry a token');
  lp.forEach((l, t) => assertSameLogprobs(l, want.logprobs.get('logprobs')![t], `logprobs request, token ${t}`, SEED));
  const steps = got.calls.filter((c) => c.logitRows > 0);
  // (A step where only the greedy request samples takes its argmax.)
  assert.ok(steps.every((c) => c.sampleRows !== undefined || c.argmax), 'no step read the logits');
  assert.ok(steps.some(excludes), 'windows with drafts were verified by residual rows');
  assert.ok(steps.some((c) => excludes(c) && c.sampleRows!.some((r) => r.temperature === 0)), 'a step held sampled windows and the greedy one together');
}

describe('sampled n-gram speculation verified by the backend’s draws (CPU)', () => {
  let target: LlamaModel;
  before(() => {
    target = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), cpu);
  });

  it('the step loop: the same tokens and acceptances as verifying from the logits, every verification forward drawing on the backend', () => {
    const requests = PROMPTS.map((promptIds, i) => ({ promptIds, params: sampledParams(i) }));
    const rec = recordForwards(target);
    let fast;
    try {
      fast = generateWithSpeculation(target, requests, { proposer: new NgramProposer(1, 3), numSpeculativeTokens: K });
    } finally {
      rec.stop();
    }
    const slow = generateWithSpeculation(target, requests, { proposer: new NgramProposer(1, 3), numSpeculativeTokens: K, sampledVerification: false });
    assert.deepEqual(fast.outputs, slow.outputs, `seed ${SEED}`);
    assert.deepEqual(fast.metrics, slow.metrics);
    const verification = rec.calls.filter((c) => c.logitRows > 0);
    assert.ok(verification.length > 0 && verification.every((c) => c.sampleRows !== undefined), 'every verification forward drew on the backend');
    assert.ok(verification.some(excludes), 'windows with drafts were verified by residual rows');
    assert.ok(fast.metrics.numDraftTokens > 0 && fast.metrics.numAcceptedTokens > 0, JSON.stringify(fast.metrics));
  });

  it('the engine: sampled, greedy and a late prefill in one batch, the tokens of the logits path, every step drawing on the backend', () => checkMixedBatch(target));

  it('a penalised request\'s windows are verified from draws of penalised rows: the tokens of the logits path', () => {
    const requests: Req[] = [
      { id: 's0', prompt: PROMPTS[0], params: sampledParams(0) },
      { id: 's1', prompt: PROMPTS[1], params: sampledParams(1, { maxTokens: 30 }) },
      { id: 'penalised', prompt: PROMPTS[2], params: sampledParams(2, { maxTokens: 6, repetitionPenalty: 1.2 }) },
    ];
    const want = viaLogits(target, requests);
    const got = runEngine(target, requests);
    for (const r of requests) assert.deepEqual(got.tokens.get(r.id), want.tokens.get(r.id), `${r.id} (seed ${SEED})`);
    assert.deepEqual([got.drafted, got.accepted], [want.drafted, want.accepted]);
    const steps = got.calls.filter((c) => c.logitRows > 0);
    // The penalised request runs in the first steps (6 tokens), s1 alone at the end (30 tokens).
    assert.ok(steps.every((c) => c.sampleRows !== undefined), 'every step drew on the backend');
    assert.ok(steps.some((c) => c.penalised && excludes(c)), 'a step verified windows with penalised rows');
  });

  it('a padded vocabulary (model 1024 ids, tokenizer 1009): draws over the tokenizer’s ids, as masking the logits', () => {
    // The real ids' lm_head rows are scaled up less than the padded ones, so unmasked the padded ids would win.
    const { dir } = writePaddedVocabCheckpoint(3, 12);
    const padTokenizer = Tokenizer.load(dir);
    assert.equal(padTokenizer.vocabSize, 1009);
    const model = loadLlama(dir, cpu);
    const texts = ['abc abc abc abc', 'The lidar and the lidar and the', 'xyz xyz xyz'];
    const requests: Req[] = texts.map((t, i) => ({ id: `p${i}`, prompt: padTokenizer.encode(t), params: sampledParams(i, { temperature: 0.4, maxTokens: 24 }) }));
    const want = viaLogits(model, requests, padTokenizer);
    const got = runEngine(model, requests, padTokenizer);
    for (const r of requests) {
      assert.deepEqual(got.tokens.get(r.id), want.tokens.get(r.id), `${r.id} (seed ${SEED})`);
      assert.ok(got.tokens.get(r.id)!.every((t) => t < 1009));
    }
    assert.ok(got.drafted > 0);
    assert.ok(got.calls.filter((c) => c.logitRows > 0).every((c) => c.sampleRows !== undefined) && got.calls.some(excludes));
  });
});

/**
 * Sampled speculation whose drafts are drawn on the backend with their distributions kept there
 * (`make(true)`; a draft model's or an EAGLE-3 head's), the windows verified against them by the
 * backend's draws, against the drafts drawn on the host (`make(false)`) and the windows verified
 * from the target's logits (verifyDrafts with q): the same tokens and acceptances, no target step
 * reading logits, windows verified against their drafts' distributions.
 */
function checkSampledDrafts(target: LlamaModel, make: (drawOnBackend: boolean) => Proposer): void {
  const requests: Req[] = [
    ...PROMPTS.slice(0, 3).map((prompt, i) => ({ id: `s${i}`, prompt, params: sampledParams(i, { maxTokens: 16 }) })),
    { id: 'greedy', prompt: PROMPTS[3], params: resolveSamplingParams({ temperature: 0, maxTokens: 16, ignoreEos: true }) },
    { id: 'penalised', prompt: PROMPTS[1], params: sampledParams(1, { maxTokens: 8, presencePenalty: 0.5 }), at: 2 },
    // A hot one whose drafts are rejected about two times in three (tachyon-tiny-draft is close to its
    // target: some seeds accept every draft), so windows end in residual draws against q.
    { id: 'hot', prompt: PROMPTS[2], params: sampledParams(2, { maxTokens: 24, temperature: 1.8, topK: 0, topP: 1, minP: 0, seed: 3 }) },
  ];
  const want = viaLogits(target, requests, undefined, make(false));
  const got = runEngine(target, requests, undefined, false, make(true));
  for (const r of requests) assert.deepEqual(got.tokens.get(r.id), want.tokens.get(r.id), `${r.id} (seed ${SEED})`);
  assert.deepEqual([got.drafted, got.accepted], [want.drafted, want.accepted]);
  assert.ok(got.drafted > 0 && got.accepted > 0 && got.accepted < got.drafted, `drafted ${got.drafted}, accepted ${got.accepted}`);
  const steps = got.calls.filter((c) => c.logitRows > 0);
  assert.ok(steps.every((c) => c.sampleRows !== undefined || c.argmax), 'no target step read the logits');
  assert.ok(steps.some((c) => (c.sampleRows ?? []).some((r) => r.distRow !== undefined && r.exclude !== undefined)), 'windows were verified against their drafts\' distributions');
}

/** checkSampledDrafts with tachyon-tiny-draft; its passes draw on the backend, keeping q, and never read logits. */
function checkDraftModel(target: LlamaModel): void {
  const draft = loadLlama(embeddedModelDir('tachyon-tiny-draft'), target.backend);
  const draftCalls = recordForwards(draft);
  try {
    checkSampledDrafts(target, (drawOnBackend) => new DraftModelProposer(draft, { kvCacheTokens: 2048, drawOnBackend }));
  } finally {
    draftCalls.stop();
  }
  const onBackend = draftCalls.calls.filter((c) => c.sampleRows !== undefined);
  assert.ok(onBackend.some((c) => c.sampleRows!.some((r) => r.distRow !== undefined && r.exclude === undefined)), 'draft passes kept their distributions on the backend');
  // The host path's passes read logits; the backend path's read none (argmax or draws).
  assert.ok(draftCalls.calls.some((c) => c.sampleRows === undefined && !c.argmax), 'the host path read the draft logits');
}

/** checkSampledDrafts with tachyon-tiny-eagle3 (a draft vocabulary of its own, mapped by d2t). */
function checkEagle3(target: LlamaModel): void {
  const head = loadEagle3Head(embeddedModelDir('tachyon-tiny-eagle3'), target);
  let drew = 0;
  const proposer = (drawOnBackend: boolean) => {
    const p = new Eagle3Proposer(head, target.config.numLayers, { kvCacheTokens: 2048, drawOnBackend });
    assert.equal(p.drawOnBackend, drawOnBackend, 'the default head\'s d2t is increasing and the backend samples');
    const propose = p.propose.bind(p);
    p.propose = (inputs) => {
      const out = propose(inputs);
      drew += out.filter((o) => o.deviceProbs).length;
      assert.ok(drawOnBackend || out.every((o) => !o.deviceProbs));
      return out;
    };
    return p;
  };
  checkSampledDrafts(target, proposer);
  assert.ok(drew > 0, 'the head drew sampled drafts on the backend');
}

describe('sampled drafts with their distributions on the backend (CPU)', () => {
  it('draft model: the tokens and acceptances of drawing the drafts on the host and verifying from the logits', () => {
    checkDraftModel(loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), cpu));
  });

  it('EAGLE-3: the same, its head\'s logits moved onto the target vocabulary on the backend (gatherColumns)', () => {
    checkEagle3(loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), cpu));
  });

  it('verified from the logits all the same (sampledVerification off): q read back from the backend, the tokens of drafting on the host', () => {
    const target = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), cpu);
    const draft = loadLlama(embeddedModelDir('tachyon-tiny-draft'), cpu);
    const requests = PROMPTS.slice(0, 2).map((promptIds, i) => ({ promptIds, params: sampledParams(i, { maxTokens: 16, temperature: 1.5, seed: 3 + i }) }));
    const run = (drawOnBackend: boolean) =>
      generateWithSpeculation(target, requests, { proposer: new DraftModelProposer(draft, { kvCacheTokens: 2048, drawOnBackend }), numSpeculativeTokens: K, sampledVerification: false });
    const host = run(false);
    const backend = run(true);
    assert.deepEqual(backend.outputs, host.outputs, `seed ${SEED}`);
    assert.deepEqual(backend.metrics, host.metrics);
    assert.ok(host.metrics.numAcceptedTokens < host.metrics.numDraftTokens, 'some drafts were rejected (residual draws against q)');
  });

  it('a step\'s distributions fit what the KV budget sets aside for them (draftDistributionBytes)', () => {
    const target = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), cpu);
    const draft = loadLlama(embeddedModelDir('tachyon-tiny-draft'), cpu);
    const proposer = new DraftModelProposer(draft, { kvCacheTokens: 2048 });
    const inputs = PROMPTS.slice(0, 3).map((tokens, i) => ({ id: i, tokens, numDrafts: K, sampler: new Sampler(sampledParams(i), target.config.vocabSize) }));
    const proposals = proposer.propose(inputs);
    const dist = proposals[0].deviceProbs!.dist;
    assert.ok(proposals.every((p) => p.deviceProbs?.dist === dist), 'one tensor a step');
    assert.deepEqual(dist.shape, [3 * K, target.config.vocabSize]);
    assert.ok(3 * K * target.config.vocabSize * 4 <= draftDistributionBytes(3, K, target.config.vocabSize));
  });

  it('gatherColumns on the CPU: values moved to their columns, the fill elsewhere, a bad column named', () => {
    const x = cpu.fromHost(Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3]);
    assert.deepEqual([...cpu.toHost(cpu.gatherColumns(x, Int32Array.from([2, -1, 0, 0]), -Infinity))], [3, -Infinity, 1, 1, 6, -Infinity, 4, 4]);
    assert.throws(() => cpu.gatherColumns(x, Int32Array.from([3]), 0), /column 0 takes column 3 of 3/);
    assert.throws(() => cpu.gatherColumns(x, Int32Array.from([-2]), 0), /each must be -1 or a column of x/);
  });
});

// ---- CUDA: the draws come from the GPU (sample_rows in residual mode) -------------------------------

const { gpu, skipReason } = await openTestGpu();

describe('sampled n-gram speculation verified by the GPU’s draws', { skip: skipReason }, () => {
  it('the engine, replaying its steps as CUDA graphs: the tokens of verifying the GPU’s logits on the host, every step drawing on the GPU', () => {
    const g = gpu!;
    const sync = g.driver.syncEveryLaunch;
    g.driver.syncEveryLaunch = false; // graphs record only when launches are not synchronised one by one
    try {
      const replays = g.graphs.stats.replays;
      const target = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), g);
      // Twice: the step shapes (and so the graphs' keys) depend on the seeds' acceptances, and the
      // second run's steps of at most 8 tokens (at least the last sequence's alone) replay the first's.
      checkMixedBatch(target);
      checkMixedBatch(target);
      if (g.graphs.enabled) assert.ok(g.graphs.stats.replays > replays, 'steps were replayed from graphs');
    } finally {
      g.driver.syncEveryLaunch = sync;
    }
  });

  it('sampled draft-model and EAGLE-3 speculation, drafts drawn on the GPU with their distributions kept there: the tokens of drawing them on the host and verifying from the logits', () => {
    const g = gpu!;
    const sync = g.driver.syncEveryLaunch;
    g.driver.syncEveryLaunch = false;
    try {
      const target = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), g);
      checkDraftModel(target);
      checkEagle3(target);
    } finally {
      g.driver.syncEveryLaunch = sync;
    }
  });

  it('steps apart on the event loop (as a server runs them; the GPU recycles activations between): the same tokens as steps run back to back', async () => {
    const g = gpu!;
    const target = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), g);
    const draft = loadLlama(embeddedModelDir('tachyon-tiny-draft'), g);
    const run = async (apart: boolean) => {
      const engine = new Engine(target, undefined, [], { ...ENGINE, speculative: { proposer: new DraftModelProposer(draft, { kvCacheTokens: 2048 }), numSpeculativeTokens: K } });
      PROMPTS.slice(0, 2).forEach((p, i) => engine.addRequest(`r${i}`, p, sampledParams(i, { maxTokens: 12, seed: 11 + i })));
      const tokens = new Map<string, number[]>();
      while (engine.hasWork()) {
        for (const out of engine.step()) tokens.set(out.requestId, [...(tokens.get(out.requestId) ?? []), ...out.newTokenIds]);
        if (apart) await new Promise((resolve) => setImmediate(resolve));
      }
      return tokens;
    };
    assert.deepEqual(await run(true), await run(false));
  });
});
