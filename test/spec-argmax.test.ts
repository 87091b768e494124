// Greedy speculative verification reads back one id per window row (the target's argmax over the
// sampling vocabulary) instead of [rows × vocab] logits, and greedy draft-model passes read back one
// id a row too. Checked: the argmax verifier equals the logits verifier on fresh random rows; the
// step and the engine take the argmax path when every sequence samples plain greedily (counted on the
// forward calls) and give exactly the tokens of plain greedy decoding from the logits, for every
// proposer, over a padded vocabulary too; a request with logprobs, penalties or a temperature in the
// batch makes those steps read the logits, still correct. The CUDA half skips without a GPU.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import type { Backend, Tensor } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { Engine, type EngineOptions } from '../src/engine/engine.js';
import { Rng } from '../src/engine/rng.js';
import { argmax, Sampler, TokenCounts, maskPaddedVocab, type Logprobs } from '../src/engine/sampler.js';
import { resolveSamplingParams, type SamplingParams } from '../src/engine/sampling-params.js';
import { buildForwardBatch } from '../src/engine/spec/batch.js';
import { parseSpeculativeConfig } from '../src/engine/spec/config.js';
import { DraftModelProposer } from '../src/engine/spec/draft-model.js';
import type { Eagle3Proposer } from '../src/engine/spec/eagle3.js';
import { generateWithSpeculation, type LoopOptions } from '../src/engine/spec/generate-loop.js';
import { loadProposer } from '../src/engine/spec/load-proposer.js';
import { NgramProposer } from '../src/engine/spec/ngram.js';
import type { Proposer } from '../src/engine/spec/proposer.js';
import { SpeculativeDecoder } from '../src/engine/spec/speculative-step.js';
import { verifyDrafts, verifyDraftsByArgmax } from '../src/engine/spec/verifier.js';
import { KvBlockPool, SequenceBlocks } from '../src/engine/kv-cache.js';
import { DEFAULT_MODEL_NAME, embeddedModelDir } from '../src/model/default-model.js';
import type { ForwardOptions, LlamaModel } from '../src/model/llama.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { openTestGpu } from './support/cuda.js';
import { fixturesDir } from './support/paths.js';
import { ModelRunner, loadLlama } from './support/run-model.js';
import { writePaddedVocabCheckpoint } from './support/tiny-checkpoint.js';

const fixture = JSON.parse(readFileSync(join(fixturesDir(), 'default-models', 'greedy.json'), 'utf8')) as { target: { prompt_ids: number[] }[] };
const PROMPTS = [0, 1, 2, 5].map((i) => fixture.target[i].prompt_ids);
const K = 3;
const greedy = (maxTokens: number, extra: Partial<SamplingParams> = {}) => resolveSamplingParams({ temperature: 0, maxTokens, ignoreEos: true, ...extra });

interface ForwardCall {
  argmaxVocab?: number;
  /** Drew on the backend (the sampleRows option). */
  sampleRows: boolean;
  capture: boolean;
  logitRows: number;
  numSeqs: number;
  numTokens: number;
}

/** Record every forward of `model` (argmaxOnly or not, how many logit rows); returns the list. */
function recordForwards(model: LlamaModel): ForwardCall[] {
  const calls: ForwardCall[] = [];
  const forward = model.forward.bind(model);
  model.forward = (batch, kv, opts?: ForwardOptions) => {
    calls.push({ argmaxVocab: opts?.argmaxOnly?.vocab, sampleRows: opts?.sampleRows !== undefined, capture: (opts?.captureHiddenStates?.length ?? 0) > 0, logitRows: batch.logitRows.length, numSeqs: batch.numSeqs, numTokens: batch.numTokens });
    return forward(batch, kv, opts);
  };
  return calls;
}

/** Plain decoding, one token a step for all prompts together, from the logits (masked past `usable`) and the sampler. */
function plainFromLogits(model: LlamaModel, prompts: number[][], params: SamplingParams, usable = model.config.vocabSize): number[][] {
  const runner = new ModelRunner(model, 256, 16);
  const vocab = model.config.vocabSize;
  const seqs = prompts.map((p, i) => ({ i, tokens: [...p], out: [] as number[], sampler: new Sampler(params, vocab), counts: new TokenCounts(p) }));
  let chunks = seqs.map((s) => ({ seq: s.i, start: 0, tokens: s.tokens }));
  while (chunks.length > 0) {
    const logits = runner.step(chunks);
    chunks.forEach((c, j) => {
      const s = seqs[c.seq];
      const last = logits[j].slice((c.tokens.length - 1) * vocab, c.tokens.length * vocab);
      maskPaddedVocab(last, vocab, usable);
      const t = s.sampler.sample(last, s.counts);
      s.counts.addOutput(t);
      s.out.push(t);
      s.tokens.push(t);
    });
    chunks = seqs.filter((s) => s.out.length < params.maxTokens).map((s) => ({ seq: s.i, start: s.tokens.length - 1, tokens: [s.tokens[s.tokens.length - 1]] }));
  }
  return seqs.map((s) => s.out);
}

function makeProposer(method: string, target: LlamaModel): Proposer {
  const extra = method === 'ngram' ? { prompt_lookup_min: 1, prompt_lookup_max: 3 } : {};
  return loadProposer(parseSpeculativeConfig({ method, num_speculative_tokens: K, ...extra }), { model: target, dir: embeddedModelDir(DEFAULT_MODEL_NAME) });
}

describe('verifyDraftsByArgmax equals verifyDrafts from the logits', () => {
  it('on fresh random rows with ties, -inf and NaN, for every acceptance length and forced acceptance', () => {
    const seed = Number(process.env.TACHYON_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
    const rng = new Rng(seed);
    const V = 40;
    const sampler = new Sampler(resolveSamplingParams({ temperature: 0 }), V);
    const argmaxSampler = new Sampler(resolveSamplingParams({ temperature: 0 }), V);
    const counts = new TokenCounts([1, 2, 3]);
    const seen = new Set<number>();
    for (let trial = 0; trial < 2000; trial++) {
      const k = Math.floor(rng.next() * 6);
      // Few distinct values, so rows often tie at their maximum (the lowest id must win on both paths).
      const logits = Float32Array.from({ length: (k + 1) * V }, () => {
        const u = rng.next();
        return u < 0.05 ? -Infinity : u < 0.07 ? Number.NaN : Math.floor(rng.next() * 8) - 4;
      });
      const argmax = Int32Array.from({ length: k + 1 }, (_, r) => {
        let best = -Infinity;
        let id = -1;
        for (let i = 0; i < V; i++) if (logits[r * V + i] > best) [best, id] = [logits[r * V + i], i];
        return id;
      });
      // Drafts agree with the target most of the time, so long accepted prefixes occur.
      const drafts = Array.from({ length: k }, (_, i) => (rng.next() < 0.75 ? argmax[i] : Math.floor(rng.next() * V)));
      const forcedAccept = rng.next() < 0.2 ? Math.floor(rng.next() * (k + 2)) : undefined;
      const want = verifyDrafts({ drafts, logits, sampler, counts, forcedAccept });
      const got = verifyDraftsByArgmax({ drafts, argmax, sampler: argmaxSampler, forcedAccept });
      assert.deepEqual(got, want, `seed ${seed}, trial ${trial}`);
      seen.add(got.numAccepted);
    }
    assert.ok(seen.size >= 5, `acceptance lengths seen: ${[...seen]}`);
    assert.equal(counts.size, 3, 'counts left as given');
  });

  it('a row with no finite logit fails as sampling it would; wrong lengths and non-greedy samplers are refused', () => {
    const V = 4;
    const sampler = new Sampler(resolveSamplingParams({ temperature: 0 }), V);
    const logits = Float32Array.from([0, 3, 1, 0, ...new Array(V).fill(-Infinity)]);
    assert.throws(() => verifyDrafts({ drafts: [1], logits, sampler, counts: new TokenCounts() }), /every logit is -inf or NaN/);
    assert.throws(() => verifyDraftsByArgmax({ drafts: [1], argmax: [1, -1], sampler }), /every logit is -inf or NaN/);
    assert.throws(() => verifyDraftsByArgmax({ drafts: [1, 2], argmax: [1, 2], sampler }), /2 drafts need 3 argmax ids/);
    for (const params of [{ temperature: 0.7 }, { temperature: 0, repetitionPenalty: 1.2 }, { temperature: 0, presencePenalty: 0.5 }]) {
      const s = new Sampler(resolveSamplingParams(params), V);
      assert.throws(() => verifyDraftsByArgmax({ drafts: [1], argmax: [1, 2], sampler: s }), /must be verified from the logits/, JSON.stringify(params));
    }
  });
});

describe('speculative steps of plain greedy sequences verify from the argmax (CPU)', () => {
  let target: LlamaModel;
  let forwards: ForwardCall[];
  let expected: number[][];
  const params = greedy(24);
  const proposers = new Map<string, Proposer>();
  const proposer = (method: string) => {
    if (!proposers.has(method)) proposers.set(method, makeProposer(method, target));
    return proposers.get(method)!;
  };
  const run = (method: string, options: Partial<LoopOptions> = {}, p = params, prompts = PROMPTS) =>
    generateWithSpeculation(target, prompts.map((promptIds) => ({ promptIds, params: p })), { proposer: proposer(method), numSpeculativeTokens: K, ...options });

  before(() => {
    target = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), new CpuBackend());
    expected = plainFromLogits(target, PROMPTS, params);
    forwards = recordForwards(target);
  });

  for (const method of ['ngram', 'draft_model', 'eagle3']) {
    it(`${method}, k=${K}: every verification forward returns the argmax only, the tokens are plain greedy's, the proposer's view identical to the logits path`, () => {
      forwards.length = 0;
      const fast = run(method);
      const verification = forwards.filter((f) => f.logitRows > 0);
      assert.ok(verification.length > 0 && verification.every((f) => f.argmaxVocab === target.config.vocabSize), JSON.stringify(verification.slice(0, 3)));
      assert.ok(verification.some((f) => f.logitRows > f.numSeqs), 'the windows held drafts');
      if (method === 'eagle3') assert.ok(verification.every((f) => f.capture), 'hidden states captured alongside the argmax');
      fast.outputs.forEach((o, i) => assert.deepEqual(o, expected[i], `prompt ${i}`));

      forwards.length = 0;
      const slow = run(method, { argmaxVerification: false });
      assert.ok(forwards.every((f) => f.argmaxVocab === undefined), 'argmaxVerification: false reads the logits');
      assert.deepEqual(slow.outputs, fast.outputs);
      // Same drafts, same acceptances, position by position: the proposer saw the same outcomes and features.
      assert.deepEqual(fast.metrics, slow.metrics);
      assert.equal(fast.steps, slow.steps);
      assert.ok(fast.metrics.numAcceptedTokens > 0);
    });
  }

  it('draft_model: greedy drafting passes read back the argmax only; sampled drafting draws on the backend (draft logits read back only with drawOnBackend off)', () => {
    const p = proposer('draft_model') as DraftModelProposer;
    const drafts = recordForwards(p.draft);
    run('draft_model');
    assert.ok(drafts.length > 0 && drafts.every((f) => f.argmaxVocab === p.draft.config.vocabSize), JSON.stringify(drafts.slice(0, 3)));
    // Sampling requests draw their drafts on the backend, their distributions kept there for the verifier.
    drafts.length = 0;
    const sampled = resolveSamplingParams({ temperature: 0.8, seed: 5, maxTokens: 6, ignoreEos: true });
    run('draft_model', {}, sampled, PROMPTS.slice(0, 2));
    assert.ok(drafts.length > 0 && drafts.every((f) => f.argmaxVocab === undefined && f.sampleRows), JSON.stringify(drafts.slice(0, 3)));
    const host = new DraftModelProposer(p.draft, { kvCacheTokens: 2048, drawOnBackend: false });
    drafts.length = 0;
    generateWithSpeculation(target, PROMPTS.slice(0, 2).map((promptIds) => ({ promptIds, params: sampled })), { proposer: host, numSpeculativeTokens: K });
    assert.ok(drafts.length > 0 && drafts.every((f) => f.argmaxVocab === undefined && !f.sampleRows));
  });

  it('eagle3: greedy head passes take the argmax on a backend with argmaxRows (one id a row back), the same drafts as reading the head\'s logits', () => {
    /** The CPU backend with an argmaxRows (the host's argmax over each row's first n), counting calls by n. */
    class ArgmaxCpu extends CpuBackend {
      readonly calls = new Map<number, number>();
      argmaxRows(x: Tensor, n: number): Int32Array {
        this.calls.set(n, (this.calls.get(n) ?? 0) + 1);
        const host = this.toHost(x);
        const cols = x.shape[1];
        return Int32Array.from({ length: x.shape[0] }, (_, r) => argmax(host.subarray(r * cols, r * cols + n)));
      }
    }
    const be = new ArgmaxCpu();
    const onArgmax = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), be);
    const withArgmax = generateWithSpeculation(onArgmax, PROMPTS.slice(0, 3).map((promptIds) => ({ promptIds, params })), { proposer: makeProposer('eagle3', onArgmax), numSpeculativeTokens: K });
    const draftVocab = (makeProposer('eagle3', onArgmax) as Eagle3Proposer).head.config.draftVocabSize;
    assert.ok((be.calls.get(draftVocab) ?? 0) > 0, `the head's passes took the argmax on the backend (calls by n: ${JSON.stringify([...be.calls])})`);
    const without = run('eagle3', {}, params, PROMPTS.slice(0, 3));
    assert.deepEqual(withArgmax.outputs, without.outputs);
    assert.deepEqual(withArgmax.metrics, without.metrics, 'the same drafts and acceptances');
  });

  it('step results carry no tokenLogits on the argmax path, and the logits rows on the logits path', () => {
    const c = target.config;
    const decode = (argmaxVerification: boolean) => {
      const pool = new KvBlockPool(64, 16);
      const kv = target.backend.allocKvCache({ numLayers: c.numLayers, numBlocks: 64, blockSize: 16, numKvHeads: c.numKvHeads, headDim: c.headDim });
      const spec = new SpeculativeDecoder({ model: target, kv }, new NgramProposer(1, 3), { numSpeculativeTokens: K, argmaxVerification });
      // Each sequence ends with its prompt's first 4 tokens again, so the n-gram proposer drafts what followed them.
      const seqs = PROMPTS.slice(0, 2).map((p, id) => {
        const tokens = [...p, ...p.slice(0, 4)];
        const blocks = new SequenceBlocks(pool);
        blocks.reserve(tokens.length - 1);
        target.forward(buildForwardBatch([{ blocks, start: 0, tokens: tokens.slice(0, -1) }], 'none'), kv);
        return { id, tokens, blocks, sampler: new Sampler(params, c.vocabSize), counts: new TokenCounts(tokens) };
      });
      return spec.step(seqs);
    };
    const fast = decode(true);
    const slow = decode(false);
    assert.ok(fast.some((r) => r.numDraftTokens > 0));
    fast.forEach((r, i) => {
      assert.equal(r.tokenLogits, undefined);
      const { tokenLogits, ...rest } = slow[i];
      assert.deepEqual(r, rest);
      assert.equal(tokenLogits!.length, r.tokens.length);
      tokenLogits!.forEach((row) => assert.equal(row.length, c.vocabSize));
    });
  });

  it('a sequence with penalties or a temperature in the step makes it read the logits; the tokens stay plain decoding\'s', () => {
    // At most 5 steps for the penalised sequence, at least 6 (24 tokens, k + 1 = 4 a step) for the others.
    const penalised = greedy(5, { repetitionPenalty: 1.3, frequencyPenalty: 0.3 });
    const wantPenalised = plainFromLogits(target, [PROMPTS[1]], penalised)[0];
    for (const method of ['ngram', 'eagle3']) {
      forwards.length = 0;
      const r = generateWithSpeculation(target, [{ promptIds: PROMPTS[0], params }, { promptIds: PROMPTS[1], params: penalised }, { promptIds: PROMPTS[2], params }], {
        proposer: proposer(method),
        numSpeculativeTokens: K,
      });
      assert.deepEqual(r.outputs[0], expected[0]);
      assert.deepEqual(r.outputs[2], expected[2]);
      assert.deepEqual(r.outputs[1], wantPenalised);
      const decodes = forwards.filter((f) => f.logitRows > 0);
      // While the penalised sequence runs (the first steps) every step reads logits; once it is done, argmax again.
      assert.equal(decodes[0].argmaxVocab, undefined);
      assert.ok(decodes.some((f) => f.argmaxVocab !== undefined) && decodes.filter((f) => f.argmaxVocab === undefined).every((f) => f.numSeqs === 3), method);
    }
    forwards.length = 0;
    const sampled = resolveSamplingParams({ temperature: 0.9, seed: 11, maxTokens: 6, ignoreEos: true });
    const r = generateWithSpeculation(target, [{ promptIds: PROMPTS[0], params }, { promptIds: PROMPTS[1], params: sampled }], { proposer: proposer('eagle3'), numSpeculativeTokens: K });
    assert.deepEqual(r.outputs[0], expected[0]);
    assert.equal(r.outputs[1].length, 6);
    assert.ok(forwards.filter((f) => f.logitRows > 0 && f.numSeqs === 2).every((f) => f.argmaxVocab === undefined));
  });

  it('a padded vocabulary: the argmax is taken over the sampling vocabulary only, the same tokens as masking the logits', () => {
    const usable = 2000;
    const want = plainFromLogits(target, PROMPTS, params, usable);
    assert.notDeepEqual(want, expected, 'the mask changes the output (so the test can fail)');
    for (const method of ['ngram', 'eagle3']) {
      forwards.length = 0;
      const fast = run(method, { samplingVocabSize: usable });
      assert.ok(forwards.filter((f) => f.logitRows > 0).every((f) => f.argmaxVocab === usable));
      assert.deepEqual(fast.outputs, want, method);
      const slow = run(method, { samplingVocabSize: usable, argmaxVerification: false });
      assert.deepEqual(slow.outputs, want, `${method}, logits path`);
      assert.deepEqual(slow.metrics, fast.metrics);
    }
  });
});

// ---- the engine ------------------------------------------------------------------------------------

const ENGINE_OPTIONS: EngineOptions = { maxModelLen: 512, maxNumSeqs: 8, maxNumBatchedTokens: 512, kvCacheTokens: 4096, blockSize: 16 };

interface EngineRun {
  tokens: Map<string, number[]>;
  logprobs: Map<string, Logprobs[]>;
  /** Per engine step: which requests were unfinished before it, and whether its forward took the argmax. */
  steps: { running: string[]; argmax: boolean; windows: boolean; prefill: boolean }[];
}

interface EngineRequest {
  id: string;
  prompt: number[];
  params: SamplingParams;
  logprobs?: number;
  /** Added before this engine step (default 0: before the first). */
  arrivesAtStep?: number;
}

function runEngine(model: LlamaModel, requests: EngineRequest[], speculative?: Proposer, tokenizer?: Tokenizer): EngineRun {
  const engine = new Engine(model, tokenizer, [], { ...ENGINE_OPTIONS, ...(speculative ? { speculative: { proposer: speculative, numSpeculativeTokens: K } } : {}) });
  const calls = recordForwards(model);
  const res: EngineRun = { tokens: new Map(), logprobs: new Map(), steps: [] };
  const unfinished = new Set<string>();
  try {
    for (let n = 0; n === 0 || engine.hasWork() || requests.some((r) => (r.arrivesAtStep ?? 0) >= n); n++) {
      assert.ok(n < 10_000, 'engine did not finish');
      for (const r of requests.filter((r) => (r.arrivesAtStep ?? 0) === n)) {
        engine.addRequest(r.id, r.prompt, r.params, r.logprobs === undefined ? {} : { logprobs: r.logprobs });
        unfinished.add(r.id);
      }
      const running = [...unfinished];
      calls.length = 0;
      for (const out of engine.step()) {
        res.tokens.set(out.requestId, [...(res.tokens.get(out.requestId) ?? []), ...out.newTokenIds]);
        if (out.logprobs) res.logprobs.set(out.requestId, [...(res.logprobs.get(out.requestId) ?? []), ...out.logprobs]);
        if (out.finished) unfinished.delete(out.requestId);
      }
      assert.ok(calls.length <= 1);
      const c = calls[0];
      // Windows have logits at every row, a prefill chunk at its last row only.
      if (c) res.steps.push({ running, argmax: c.argmaxVocab !== undefined, windows: c.logitRows > c.numSeqs, prefill: c.numTokens > c.logitRows });
    }
  } finally {
    delete (model as { forward?: unknown }).forward; // back to the prototype's
  }
  return res;
}

/** Every request with logprobs, so every step samples from the logits (and no step takes the argmax). */
function fromLogits(model: LlamaModel, requests: EngineRequest[], speculative?: Proposer, tokenizer?: Tokenizer): EngineRun {
  const run = runEngine(model, requests.map((r) => ({ ...r, logprobs: r.logprobs ?? 0 })), speculative, tokenizer);
  assert.ok(run.steps.every((s) => !s.argmax));
  return run;
}

/**
 * Speculation with the argmax path against the same speculation reading the logits (the same batches,
 * so the same logits on any backend); on the CPU also against plain decoding without speculation.
 */
function checkEngine(backend: Backend): void {
  const target = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), backend);
  // The last arrives late: its prefill shares a step with the others' verification windows.
  const plain: EngineRequest[] = PROMPTS.map((prompt, i) => ({ id: `g${i}`, prompt, params: greedy(20), arrivesAtStep: i === 3 ? 2 : 0 }));
  const alone = backend.name === 'cpu' ? fromLogits(target, plain) : undefined;
  for (const method of ['draft_model', 'eagle3', 'ngram']) {
    const want = fromLogits(target, plain, makeProposer(method, target));
    const got = runEngine(target, plain, makeProposer(method, target));
    for (const r of plain) {
      assert.deepEqual(got.tokens.get(r.id), want.tokens.get(r.id), `${method} ${r.id}`);
      if (alone) assert.deepEqual(got.tokens.get(r.id), alone.tokens.get(r.id), `${method} ${r.id}: plain decoding's tokens`);
    }
    // Every step samples only plain greedy tokens: the prefill and every verification read the argmax.
    assert.ok(got.steps.every((s) => s.argmax), `${method}: ${got.steps.filter((s) => !s.argmax).length} steps read logits`);
    assert.ok(got.steps.some((s) => s.windows), `${method}: windows with drafts were verified`);
    if (method !== 'ngram') assert.ok(got.steps[2].windows && got.steps[2].prefill, `${method}: the late prefill shared a step with windows`);
  }
}

function checkEngineMixed(backend: Backend): void {
  const target = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), backend);
  const requests: EngineRequest[] = [
    { id: 'greedy-a', prompt: PROMPTS[0], params: greedy(24) },
    { id: 'greedy-b', prompt: PROMPTS[1], params: greedy(24) },
    { id: 'logprobs', prompt: PROMPTS[2], params: greedy(8), logprobs: 2 },
    { id: 'penalty', prompt: PROMPTS[3], params: greedy(10, { repetitionPenalty: 1.3, presencePenalty: 0.4 }) },
    { id: 'sampled', prompt: PROMPTS[1].slice(0, 20), params: resolveSamplingParams({ temperature: 0.8, seed: 3, maxTokens: 6, ignoreEos: true }) },
  ];
  const alone = backend.name === 'cpu' ? fromLogits(target, requests) : undefined;
  for (const method of ['draft_model', 'eagle3']) {
    const want = fromLogits(target, requests, makeProposer(method, target));
    const got = runEngine(target, requests, makeProposer(method, target));
    // The same batches as reading every step's logits: the same tokens, the sampled request's included.
    for (const r of requests) assert.deepEqual(got.tokens.get(r.id), want.tokens.get(r.id), `${method} ${r.id}`);
    if (alone) for (const id of ['greedy-a', 'greedy-b', 'logprobs', 'penalty']) assert.deepEqual(got.tokens.get(id), alone.tokens.get(id), `${method} ${id}: plain decoding's tokens`);
    assert.equal(got.tokens.get('sampled')!.length, 6);
    const lp = got.logprobs.get('logprobs')!;
    assert.equal(lp.length, 8);
    lp.forEach((l, i) => {
      const w = want.logprobs.get('logprobs')![i];
      assert.equal(l.tokenId, w.tokenId);
      assert.ok(Math.abs(l.logprob - w.logprob) < 1e-4, `token ${i}: ${l.logprob} vs ${w.logprob}`);
      assert.deepEqual(l.top.map((t) => t.id), w.top.map((t) => t.id));
    });
    // A step reads the logits exactly while one of the three others is running; then the argmax.
    const others = ['logprobs', 'penalty', 'sampled'];
    for (const s of got.steps) assert.equal(s.argmax, !s.running.some((id) => others.includes(id)), `${method}: step over ${s.running.join(', ')}`);
    assert.ok(got.steps.some((s) => s.argmax && s.windows), `${method}: greedy-only steps verified windows from the argmax`);
  }
}

describe('the engine verifies plain greedy windows from the argmax (CPU)', () => {
  it('every method: each step reads back the argmax only, the tokens are those sampled from the logits', () => checkEngine(new CpuBackend()));
  it('a request with logprobs, penalties or a temperature in the batch: those steps read the logits, every request stays correct', () => checkEngineMixed(new CpuBackend()));

  it('a padded vocabulary (model 1024 ids, tokenizer 1009): windows verified over the tokenizer\'s ids, as masking the logits', () => {
    // Real ids' lm_head rows are scaled down so the padded ids win the raw argmax; the masked argmax still varies.
    const { dir } = writePaddedVocabCheckpoint(0.2);
    const tokenizer = Tokenizer.load(dir);
    assert.equal(tokenizer.vocabSize, 1009);
    const model = loadLlama(dir, new CpuBackend());

    const prompts = ['Hello there, robot', 'The lidar and the lidar and the', 'abc abc abc abc'].map((t) => tokenizer.encode(t));
    const requests: EngineRequest[] = prompts.map((prompt, i) => ({ id: `p${i}`, prompt, params: greedy(24) }));
    // The raw logits favour the padded ids (so the test can fail).
    const raw = plainFromLogits(model, prompts, greedy(4));
    assert.ok(raw.flat().some((t) => t >= 1009), `raw greedy ${JSON.stringify(raw)}`);

    const want = fromLogits(model, requests, undefined, tokenizer);
    const got = runEngine(model, requests, new NgramProposer(1, 3), tokenizer);
    for (const r of requests) {
      assert.deepEqual(got.tokens.get(r.id), want.tokens.get(r.id), r.id);
      assert.ok(got.tokens.get(r.id)!.every((t) => t < 1009));
    }
    assert.deepEqual(want.tokens.get('p0'), plainFromLogits(model, [prompts[0]], greedy(24), 1009)[0]);
    assert.ok(got.steps.every((s) => s.argmax) && got.steps.some((s) => s.windows));
  });
});

// ---- CUDA: the argmax comes from the GPU (Backend.argmaxRows) ---------------------------------------

const { gpu, skipReason } = await openTestGpu();

describe('speculative verification from the argmax (CUDA)', { skip: skipReason }, () => {
  it('the engine, every method: argmax on every step, the tokens of sampling from the GPU logits', () => checkEngine(gpu!));
  it('the engine with logprobs, penalties and a temperature in the batch: those steps read the logits', () => checkEngineMixed(gpu!));

  it('the step loop over a padded sampling vocabulary: the same tokens and acceptances from the argmax as from the logits', () => {
    const target = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), gpu!);
    const requests = PROMPTS.map((promptIds) => ({ promptIds, params: greedy(24) }));
    for (const method of ['draft_model', 'eagle3']) {
      for (const samplingVocabSize of [target.config.vocabSize, 2000]) {
        const forwards = recordForwards(target);
        const fast = generateWithSpeculation(target, requests, { proposer: makeProposer(method, target), numSpeculativeTokens: K, samplingVocabSize });
        assert.ok(forwards.filter((f) => f.logitRows > 0).every((f) => f.argmaxVocab === samplingVocabSize));
        const slow = generateWithSpeculation(target, requests, { proposer: makeProposer(method, target), numSpeculativeTokens: K, samplingVocabSize, argmaxVerification: false });
        delete (target as { forward?: unknown }).forward;
        assert.deepEqual(fast.outputs, slow.outputs, `${method}, sampling vocabulary ${samplingVocabSize}`);
        assert.deepEqual(fast.metrics, slow.metrics);
        assert.ok(fast.outputs.flat().every((t) => t < samplingVocabSize));
      }
    }
  });
});
