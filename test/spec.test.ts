// Speculative decoding, the parts that need no statistics: --speculative-config parsing, vLLM's
// counters, prompt lookup, the synthetic (lossy) proposer, greedy verification, and the EAGLE-3 loader.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { InvalidRequestError, ModelLoadError } from '../src/errors.js';
import { DEFAULT_DRAFT_MODEL_NAME, DEFAULT_EAGLE3_MODEL_NAME, DEFAULT_MODEL_NAME, embeddedModelDir } from '../src/model/default-model.js';
import { defaultEagle3AuxLayers, loadEagle3Config } from '../src/model/eagle3.js';
import type { LlamaModel } from '../src/model/llama.js';
import { SafetensorsCheckpoint, encodeSafetensors, type HostTensor } from '../src/model/load/safetensors.js';
import { KvBlockPool, SequenceBlocks } from '../src/engine/kv-cache.js';
import { Sampler, TokenCounts } from '../src/engine/sampler.js';
import { resolveSamplingParams } from '../src/engine/sampling-params.js';
import { parseSpeculativeConfig, SYNTHETIC_WARNING } from '../src/engine/spec/config.js';
import { checkSameVocabulary } from '../src/engine/spec/draft-model.js';
import { buildForwardBatch } from '../src/engine/spec/batch.js';
import { Eagle3Proposer, loadEagle3Head } from '../src/engine/spec/eagle3.js';
import { generateWithSpeculation } from '../src/engine/spec/generate-loop.js';
import { loadProposer } from '../src/engine/spec/load-proposer.js';
import { SpecDecodeMetrics, acceptanceRate, meanAcceptanceLength, perPositionAcceptanceRates, specDecodeDelta } from '../src/engine/spec/metrics.js';
import { NgramProposer, promptLookup } from '../src/engine/spec/ngram.js';
import { fuseHiddenStates, type Proposal, type ProposeInput, type Proposer, type SeqId, type TargetFeatures, type VerifiedOutcome } from '../src/engine/spec/proposer.js';
import { SpeculativeDecoder } from '../src/engine/spec/speculative-step.js';
import { SyntheticProposer } from '../src/engine/spec/synthetic.js';
import { verifyDrafts } from '../src/engine/spec/verifier.js';
import { loadLlama } from './support/run-model.js';

const expectInvalid = (json: unknown, ...fragments: string[]) =>
  assert.throws(
    () => parseSpeculativeConfig(typeof json === 'string' ? json : (json as Record<string, unknown>)),
    (err: unknown) => err instanceof InvalidRequestError && fragments.every((f) => err.message.includes(f)),
    `expected an InvalidRequestError mentioning ${fragments.join(' / ')}`,
  );

describe('--speculative-config', () => {
  it('reads vLLM keys with vLLM defaults and the embedded models', () => {
    const d = parseSpeculativeConfig('{"method": "draft_model", "num_speculative_tokens": 4}');
    assert.deepEqual([d.method, d.numSpeculativeTokens, d.model, d.lossy, d.warning], ['draft_model', 4, embeddedModelDir(DEFAULT_DRAFT_MODEL_NAME), false, undefined]);
    const e = parseSpeculativeConfig({ method: 'eagle3', num_speculative_tokens: 3 });
    assert.equal(e.model, embeddedModelDir(DEFAULT_EAGLE3_MODEL_NAME));
    const n = parseSpeculativeConfig({ method: 'ngram', num_speculative_tokens: 2 });
    assert.deepEqual([n.promptLookupMin, n.promptLookupMax, n.model], [5, 5, undefined]);
    const n2 = parseSpeculativeConfig({ method: 'ngram', num_speculative_tokens: 2, prompt_lookup_max: 4 });
    assert.deepEqual([n2.promptLookupMin, n2.promptLookupMax], [4, 4]);
    const n3 = parseSpeculativeConfig({ method: 'ngram', num_speculative_tokens: 2, prompt_lookup_min: 2, prompt_lookup_max: 6 });
    assert.deepEqual([n3.promptLookupMin, n3.promptLookupMax], [2, 6]);
    // method inferred from model as vLLM does
    assert.equal(parseSpeculativeConfig({ model: 'ngram', num_speculative_tokens: 2 }).method, 'ngram');
    assert.equal(parseSpeculativeConfig({ model: '/models/Foo-EAGLE3-8B', num_speculative_tokens: 2 }).method, 'eagle3');
    const inferred = parseSpeculativeConfig({ model: 'some/draft', num_speculative_tokens: 2 });
    assert.equal(inferred.method, 'draft_model');
    assert.ok(inferred.model!.endsWith(join('some', 'draft')));
  });

  it('rejects unknown keys and methods, listing what is supported', () => {
    expectInvalid({ method: 'eagle3', num_speculative_tokens: 2, draft_tensor_parallel_size: 1 }, "'draft_tensor_parallel_size'", 'supported keys', 'num_speculative_tokens', 'prompt_lookup_max');
    expectInvalid({ method: 'medusa', num_speculative_tokens: 2 }, '"medusa"', 'supported methods: draft_model, eagle3, ngram, synthetic');
    expectInvalid('{"method": "ngram",', 'not valid JSON');
    expectInvalid('[1, 2]', 'JSON object');
    expectInvalid({ method: 'eagle3' }, 'num_speculative_tokens', 'required');
    expectInvalid({ method: 'eagle3', num_speculative_tokens: 0 }, 'num_speculative_tokens', 'positive integer');
    expectInvalid({ method: 'eagle3', num_speculative_tokens: 2.5 }, 'num_speculative_tokens', 'positive integer');
    expectInvalid({ method: 'ngram', num_speculative_tokens: 2, prompt_lookup_min: 4, prompt_lookup_max: 2 }, 'prompt_lookup_min (4) must be <= prompt_lookup_max (2)');
    expectInvalid({ method: 'eagle3', num_speculative_tokens: 2, prompt_lookup_min: 2 }, 'prompt_lookup_min', "'ngram' only");
    expectInvalid({ method: 'ngram', num_speculative_tokens: 2, model: '/some/dir' }, 'model', 'not used');
    expectInvalid({ method: 'draft_model', num_speculative_tokens: 2, acceptance_rates: [0.5, 0.5] }, 'acceptance_rates', "'synthetic' only");
    expectInvalid({ method: 'eagle3', num_speculative_tokens: 2, lossy: true }, 'lossy', "'synthetic' only");
    expectInvalid({ method: 'eagle3', num_speculative_tokens: 2, disable_by_batch_size: 1 }, 'disable_by_batch_size', 'at least 2');
    expectInvalid({ method: 'eagle3', num_speculative_tokens: 2, disable_by_batch_size: 4.5 }, 'disable_by_batch_size', 'positive integer');
  });

  it('disable_by_batch_size: vLLM\'s threshold, for every method; absent means always', () => {
    assert.equal(parseSpeculativeConfig({ method: 'eagle3', num_speculative_tokens: 2 }).disableByBatchSize, undefined);
    assert.equal(parseSpeculativeConfig({ method: 'eagle3', num_speculative_tokens: 2, disable_by_batch_size: 4 }).disableByBatchSize, 4);
    assert.equal(parseSpeculativeConfig({ method: 'ngram', num_speculative_tokens: 2, disable_by_batch_size: 2 }).disableByBatchSize, 2);
  });

  it('synthetic mode needs an explicit "lossy": true and always carries a warning', () => {
    expectInvalid({ method: 'synthetic', acceptance_rates: [0.8, 0.5] }, 'lossy', 'must be true', 'NOT the target');
    expectInvalid({ method: 'synthetic', acceptance_rates: [0.8, 0.5], lossy: 'true' }, 'lossy', 'must be true');
    expectInvalid({ method: 'synthetic', acceptance_rates: [0.8, 0.5], lossy: 1 }, 'lossy', 'must be true');
    expectInvalid({ method: 'synthetic', lossy: true }, 'acceptance_rates', 'required');
    expectInvalid({ method: 'synthetic', lossy: true, acceptance_rates: [0.5, 0.8] }, 'acceptance_rates', 'must not increase');
    expectInvalid({ method: 'synthetic', lossy: true, acceptance_rates: [1.5] }, 'acceptance_rates', '[0, 1]');
    expectInvalid({ method: 'synthetic', lossy: true, acceptance_rates: [0.9, 0.5], num_speculative_tokens: 3 }, 'num_speculative_tokens (3) must equal the number of acceptance_rates (2)');
    const s = parseSpeculativeConfig({ method: 'synthetic', lossy: true, acceptance_rates: [0.9, 0.6, 0.3], seed: 7 });
    assert.deepEqual([s.method, s.numSpeculativeTokens, s.lossy, s.seed, s.acceptanceRates], ['synthetic', 3, true, 7, [0.9, 0.6, 0.3]]);
    assert.equal(s.warning, SYNTHETIC_WARNING);
    assert.match(s.warning!, /LOSSY/);
    assert.match(s.warning!, /NOT the target model's output/);
  });
});

describe('speculative-decoding metrics (vLLM counting)', () => {
  it('counts drafts, draft tokens and accepted tokens per position; derived rates as vLLM computes them', () => {
    const m = new SpecDecodeMetrics(3);
    assert.ok(Number.isNaN(m.acceptanceRate) && Number.isNaN(m.meanAcceptanceLength));
    // (drafted, accepted) per sequence-step
    for (const [k, a] of [[3, 3], [3, 0], [3, 1], [2, 2], [0, 0], [3, 2]]) m.observe(k, a);
    assert.equal(m.numDrafts, 5); // the step with no drafts is not a draft
    assert.equal(m.numDraftTokens, 14);
    assert.equal(m.numAcceptedTokens, 8);
    assert.deepEqual(m.acceptedTokensPerPos, [4, 3, 1]);
    assert.equal(m.acceptanceRate, 8 / 14);
    assert.equal(m.meanAcceptanceLength, 1 + 8 / 5);
    assert.deepEqual(m.perPositionAcceptanceRates, [4 / 5, 3 / 5, 1 / 5]);
    const before = m.snapshot();
    m.observe(3, 3);
    const d = specDecodeDelta(before, m.snapshot());
    assert.deepEqual(d, { numDrafts: 1, numDraftTokens: 3, numAcceptedTokens: 3, acceptedTokensPerPos: [1, 1, 1] });
    assert.equal(acceptanceRate(d), 1);
    assert.equal(meanAcceptanceLength(d), 4);
    assert.deepEqual(perPositionAcceptanceRates(d), [1, 1, 1]);
    assert.throws(() => m.observe(2, 3), RangeError);
    assert.throws(() => m.observe(-1, 0), RangeError);
  });
});

describe('n-gram (prompt lookup) proposer', () => {
  it('proposes what followed the earliest occurrence of the longest matching suffix', () => {
    //              0  1  2  3  4  5  6  7  8  9
    const toks = [1, 2, 3, 4, 9, 2, 3, 5, 1, 2, 3];
    // suffix [1,2,3] (n=3) occurs at 0 → proposes 4, 9, 2
    assert.deepEqual(promptLookup(toks, 1, 3, 3), [4, 9, 2]);
    // n limited to 2: suffix [2,3] first occurs at 1 → 4, 9
    assert.deepEqual(promptLookup(toks, 1, 2, 2), [4, 9]);
    // needs n >= 4: [9? no] no 4-gram suffix repeats
    assert.deepEqual(promptLookup(toks, 4, 5, 3), []);
    // proposals stop at the end of the sequence
    assert.deepEqual(promptLookup([7, 8, 7, 8], 2, 2, 5), [7, 8]);
    assert.deepEqual(promptLookup([5, 5, 5], 1, 2, 3), [5]);
    assert.deepEqual(promptLookup([4], 1, 3, 3), []);
    const p = new NgramProposer(2, 3);
    const sampler = new Sampler(resolveSamplingParams({ temperature: 0 }), 16);
    assert.deepEqual(p.propose([{ id: 0, tokens: toks, numDrafts: 3, sampler }, { id: 1, tokens: toks, numDrafts: 0, sampler }]), [{ tokens: [4, 9, 2] }, { tokens: [] }]);
  });
});

describe('synthetic (lossy) proposer', () => {
  it('forces acceptance at the configured unconditional per-position rates, seeded', () => {
    const rates = [0.9, 0.6, 0.3];
    const sampler = new Sampler(resolveSamplingParams({ temperature: 0 }), 16);
    const run = (seed: number) => {
      const p = new SyntheticProposer(rates, seed);
      assert.equal(p.lossy, true);
      assert.match(p.warning, /LOSSY/);
      const m = new SpecDecodeMetrics(3);
      const forced: number[] = [];
      for (let i = 0; i < 20000; i++) {
        const [prop] = p.propose([{ id: 0, tokens: [1, 2, 3], numDrafts: 3, sampler }]);
        assert.equal(prop.tokens.length, 3);
        m.observe(3, prop.forcedAccept!);
        forced.push(prop.forcedAccept!);
      }
      return { m, forced };
    };
    const { m, forced } = run(3);
    m.perPositionAcceptanceRates.forEach((r, i) => assert.ok(Math.abs(r - rates[i]) < 0.015, `position ${i}: ${r} vs ${rates[i]}`));
    assert.ok(Math.abs(m.meanAcceptanceLength - 2.8) < 0.03);
    assert.deepEqual(run(3).forced, forced, 'same seed, same acceptances');
    assert.notDeepEqual(run(4).forced, forced);
  });

  it('its verifier path emits the accepted drafts then the target\'s own token', () => {
    const vocab = 4;
    const sampler = new Sampler(resolveSamplingParams({ temperature: 0 }), vocab);
    const logits = Float32Array.from([0, 0, 5, 0, 0, 0, 0, 5, 5, 0, 0, 0]); // argmax 2, 3, 0
    const counts = new TokenCounts([1]);
    assert.deepEqual(verifyDrafts({ drafts: [1, 1], logits, sampler, counts, forcedAccept: 2 }), { numAccepted: 2, tokens: [1, 1, 0] });
    assert.deepEqual(verifyDrafts({ drafts: [1, 1], logits, sampler, counts, forcedAccept: 1 }), { numAccepted: 1, tokens: [1, 3] });
    assert.equal(counts.outputCount(1), 0, 'counts are left as given');
  });
});

describe('synthetic (lossy) mode end to end', () => {
  it('accepts exactly at the configured rates, and its output is not the target\'s', () => {
    const target = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), new CpuBackend());
    const params = resolveSamplingParams({ temperature: 0, maxTokens: 16, ignoreEos: true });
    const requests = [[4091, 4093, 882, 4094, 271], [4091, 791, 374]].map((p) => ({ promptIds: p, params }));
    const plain = generateWithSpeculation(target, requests, { numSpeculativeTokens: 0 });
    const load = (rates: number[]) => loadProposer(parseSpeculativeConfig({ method: 'synthetic', lossy: true, acceptance_rates: rates }), { model: target });
    const all = generateWithSpeculation(target, requests, { proposer: load([1, 1]), numSpeculativeTokens: 2 });
    assert.equal(all.metrics.numAcceptedTokens, all.metrics.numDraftTokens);
    assert.ok(all.steps <= 6, `${all.steps} steps for 16 tokens at 3 per step`);
    assert.notDeepEqual(all.outputs, plain.outputs, 'forced acceptance changes the text');
    const none = generateWithSpeculation(target, requests, { proposer: load([0, 0]), numSpeculativeTokens: 2 });
    assert.equal(none.metrics.numAcceptedTokens, 0);
    assert.deepEqual(none.outputs, plain.outputs, 'nothing accepted: every token is the target\'s');
  });
});

describe('greedy verification', () => {
  const vocab = 5;
  const rows = (...argmaxes: number[]) => {
    const l = new Float32Array(argmaxes.length * vocab);
    argmaxes.forEach((a, i) => (l[i * vocab + a] = 3));
    return l;
  };
  it('accepts the longest prefix equal to the target argmax, then the target token', () => {
    const sampler = new Sampler(resolveSamplingParams({ temperature: 0 }), vocab);
    const counts = new TokenCounts([0]);
    assert.deepEqual(verifyDrafts({ drafts: [1, 2, 3], logits: rows(1, 2, 3, 4), sampler, counts }), { numAccepted: 3, tokens: [1, 2, 3, 4] });
    assert.deepEqual(verifyDrafts({ drafts: [1, 2, 3], logits: rows(1, 4, 3, 4), sampler, counts }), { numAccepted: 1, tokens: [1, 4] });
    assert.deepEqual(verifyDrafts({ drafts: [2, 2, 3], logits: rows(1, 4, 3, 4), sampler, counts }), { numAccepted: 0, tokens: [1] });
    assert.deepEqual(verifyDrafts({ drafts: [], logits: rows(3), sampler, counts }), { numAccepted: 0, tokens: [3] });
    assert.throws(() => verifyDrafts({ drafts: [1], logits: rows(1), sampler, counts }), RangeError);
  });

  it('scores each position with the penalties of the accepted drafts before it', () => {
    // Every row prefers token 1 slightly over 2; a frequency penalty makes a second 1 lose to 2.
    const sampler = new Sampler(resolveSamplingParams({ temperature: 0, frequencyPenalty: 1 }), vocab);
    const row = [0, 2, 1.5, 0, 0];
    const logits = Float32Array.from([...row, ...row, ...row]);
    const counts = new TokenCounts([0]);
    // Without counting draft 1, position 2 would pick 1 again and accept draft [1, 1].
    assert.deepEqual(verifyDrafts({ drafts: [1, 1], logits, sampler, counts }), { numAccepted: 1, tokens: [1, 2] });
    assert.deepEqual(verifyDrafts({ drafts: [1, 2], logits, sampler, counts }), { numAccepted: 2, tokens: [1, 2, 1] }, 'third: 1 seen once (2−1=1) beats 2 seen once (1.5−1=0.5)');
    assert.equal(counts.outputCount(1) + counts.outputCount(2), 0);
  });
});

describe('EAGLE-3 head loader', () => {
  let target: LlamaModel;
  const dir = embeddedModelDir(DEFAULT_EAGLE3_MODEL_NAME);
  let tmp: string;
  const tensors: Record<string, HostTensor> = {};
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  let n = 0;
  /** A head directory made from the default one with some tensors/config keys changed. */
  const variant = (edit: { drop?: string[]; replace?: Record<string, HostTensor>; config?: Record<string, unknown> }): string => {
    const out = join(tmp, `head-${n++}`);
    mkdirSync(out);
    const t = { ...tensors, ...edit.replace };
    for (const name of edit.drop ?? []) delete t[name];
    writeFileSync(join(out, 'config.json'), JSON.stringify({ ...config, ...edit.config }));
    writeFileSync(join(out, 'model.safetensors'), encodeSafetensors(t));
    return out;
  };
  const f32 = (shape: number[]): HostTensor => ({ dtype: 'F32', shape, bytes: new Uint8Array(shape.reduce((a, b) => a * b, 1) * 4) });
  const i64 = (values: number[]): HostTensor => ({ dtype: 'I64', shape: [values.length], bytes: new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer) });
  const loadFails = (head: string, ...fragments: string[]) =>
    assert.throws(
      () => loadEagle3Head(head, target),
      (err: unknown) => err instanceof ModelLoadError && fragments.every((f) => err.message.includes(f)),
      `expected ModelLoadError mentioning ${fragments.join(' / ')}`,
    );

  before(() => {
    target = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), new CpuBackend());
    tmp = mkdtempSync(join(tmpdir(), 'tachyon-eagle3-'));
    const ckpt = SafetensorsCheckpoint.open(dir);
    for (const name of ckpt.names) tensors[name] = ckpt.read(name);
    ckpt.close();
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('loads the default head: names, shapes, vocabulary map and fused layers', () => {
    const c = loadEagle3Config(dir);
    assert.deepEqual([c.hiddenSize, c.targetHiddenSize, c.draftVocabSize, c.vocabSize, c.numHeads, c.numKvHeads, c.headDim, c.auxLayerIds], [256, 256, 2048, 4096, 8, 2, 32, undefined]);
    const head = loadEagle3Head(dir, target);
    const w = head.weights;
    const shapes = Object.fromEntries(Object.entries(w).filter(([k]) => k !== 'draftToTarget').map(([k, v]) => [k, (v as { shape: readonly number[] }).shape.join('x')]));
    assert.deepEqual(shapes, {
      embedTokens: '4096x256', fc: '256x768', hiddenNorm: '256', inputNorm: '256',
      qEmbed: '256x256', qHidden: '256x256', kEmbed: '64x256', kHidden: '64x256', vEmbed: '64x256', vHidden: '64x256',
      o: '256x256', postAttentionNorm: '256', gate: '768x256', up: '768x256', down: '256x768', norm: '256', lmHead: '2048x256',
    });
    // q_proj split at load: the two halves are exactly the checkpoint's columns.
    const q = new CpuBackend().loadDense('q', tensors['midlayer.self_attn.q_proj.weight']);
    const full = (q as unknown as { data: Float32Array }).data;
    const be = target.backend;
    const e = be.weightToHost(w.qEmbed);
    const h = be.weightToHost(w.qHidden);
    for (const [r, col] of [[0, 0], [7, 255], [100, 3], [255, 200]]) {
      assert.equal(e[r * 256 + col], full[r * 512 + col]);
      assert.equal(h[r * 256 + col], full[r * 512 + 256 + col]);
    }
    // d2t holds offsets: target = draft + d2t[draft]; t2d marks exactly those targets.
    const d2t = new BigInt64Array(tensors.d2t.bytes.buffer, tensors.d2t.bytes.byteOffset, 2048);
    const t2d = tensors.t2d.bytes;
    for (let d = 0; d < 2048; d++) {
      assert.equal(w.draftToTarget[d], d + Number(d2t[d]));
      assert.equal(t2d[w.draftToTarget[d]], 1);
    }
    assert.equal(t2d.reduce((a, b) => a + b, 0), 2048);
    assert.deepEqual(new Eagle3Proposer(head, target.config.numLayers).targetHiddenStateLayers, [2, 4, 5]);
    assert.deepEqual(defaultEagle3AuxLayers(80), [2, 40, 77]);
  });

  it('reads explicit eagle_aux_hidden_state_layer_ids and rejects ids beyond the target', () => {
    const head = loadEagle3Head(variant({ config: { eagle_config: { eagle_aux_hidden_state_layer_ids: [1, 3, 6] } } }), target);
    assert.deepEqual(new Eagle3Proposer(head, 8).targetHiddenStateLayers, [1, 3, 6]);
    const far = loadEagle3Head(variant({ config: { eagle_config: { eagle_aux_hidden_state_layer_ids: [1, 3, 12] } } }), target);
    assert.throws(() => new Eagle3Proposer(far, 8), (e: unknown) => e instanceof ModelLoadError && e.message.includes('hidden state 12') && e.message.includes('8 layers'));
    loadFails(variant({ config: { eagle_config: { eagle_aux_hidden_state_layer_ids: [1, 3] } } }), 'eagle_aux_hidden_state_layer_ids', 'three');
  });

  it('names what is wrong with a malformed head', () => {
    loadFails(variant({ drop: ['fc.weight'] }), "missing tensor 'fc.weight'");
    loadFails(variant({ drop: ['midlayer.hidden_norm.weight'] }), "'midlayer.hidden_norm.weight'");
    loadFails(variant({ replace: { 'lm_head.weight': f32([2048, 128]) } }), "'lm_head.weight'", '[2048, 128]', '[2048, 256]');
    loadFails(variant({ replace: { 'midlayer.self_attn.q_proj.weight': f32([256, 256]) } }), "'midlayer.self_attn.q_proj.weight'", '[256, 512]');
    loadFails(variant({ replace: { 'fc.weight': f32([256, 512]) } }), "'fc.weight'", '[256, 768]');
    loadFails(variant({ replace: { d2t: i64(new Array(2048).fill(5000)) } }), 'd2t', 'outside the vocabulary');
    loadFails(variant({ replace: { d2t: i64(new Array(2048).fill(0).map((_, i) => (i === 1 ? -1 : 0))) } }), 'd2t maps two draft ids to target id 0');
    loadFails(variant({ replace: { d2t: i64(new Array(1024).fill(0)) } }), "'d2t'", '[1024]', '[2048]');
    loadFails(variant({ drop: ['d2t', 't2d'] }), 'no \'d2t\'');
    loadFails(variant({ config: { architectures: ['MedusaModel'] } }), '"MedusaModel"', 'LlamaForCausalLMEagle3');
    loadFails(variant({ config: { num_hidden_layers: 2 } }), 'one decoder layer');
    loadFails(variant({ config: { vocab_size: 8192 } }), 'vocab_size 8192', "target's 4096");
    loadFails(variant({ config: { target_hidden_size: 512 } }), 'target_hidden_size', 'hidden_size is 256');
    loadFails(variant({ drop: Object.keys(tensors).filter((k) => k.startsWith('midlayer.')) }), 'not an EAGLE-3 checkpoint');
    const bin = join(tmp, 'bin-only');
    mkdirSync(bin);
    writeFileSync(join(bin, 'config.json'), JSON.stringify(config));
    writeFileSync(join(bin, 'pytorch_model.bin'), 'not read');
    loadFails(bin, 'pytorch_model.bin', 'safetensors');
  });

  it('without embed_tokens it shares the target embedding (the default head stores a copy of it: same drafts)', () => {
    const shared = loadEagle3Head(variant({ drop: ['embed_tokens.weight'] }), target);
    assert.equal(shared.weights.embedTokens, undefined);
    assert.equal(shared.embedTokens, target.weights.embedTokens);
    const prompts = [[4091, 4093, 882, 4094, 271], [4091, 791, 374]];
    const params = resolveSamplingParams({ temperature: 0, maxTokens: 12 });
    const run = (proposer: Eagle3Proposer) => generateWithSpeculation(target, prompts.map((p) => ({ promptIds: p, params })), { proposer, numSpeculativeTokens: 3 });
    const a = run(new Eagle3Proposer(loadEagle3Head(dir, target), 8));
    const b = run(new Eagle3Proposer(shared, 8));
    assert.deepEqual(b.outputs, a.outputs);
    assert.deepEqual(b.metrics, a.metrics);
    assert.ok(a.metrics.numAcceptedTokens > 0);
  });

  it('draft models must share the target tokenizer', () => {
    checkSameVocabulary(embeddedModelDir(DEFAULT_MODEL_NAME), embeddedModelDir(DEFAULT_DRAFT_MODEL_NAME));
    const other = join(tmp, 'other-tokenizer');
    mkdirSync(other);
    const tok = JSON.parse(readFileSync(join(embeddedModelDir(DEFAULT_DRAFT_MODEL_NAME), 'tokenizer.json'), 'utf8'));
    const [a, b] = Object.keys(tok.model.vocab).slice(300, 302);
    [tok.model.vocab[a], tok.model.vocab[b]] = [tok.model.vocab[b], tok.model.vocab[a]];
    writeFileSync(join(other, 'tokenizer.json'), JSON.stringify(tok));
    assert.throws(() => checkSameVocabulary(embeddedModelDir(DEFAULT_MODEL_NAME), other), (e: unknown) => e instanceof ModelLoadError && e.message.includes(JSON.stringify(a)) && e.message.includes("target's tokenizer"));
    // a draft whose vocab_size differs is refused before its weights are read
    const cfg = JSON.parse(readFileSync(join(embeddedModelDir(DEFAULT_DRAFT_MODEL_NAME), 'config.json'), 'utf8'));
    writeFileSync(join(other, 'config.json'), JSON.stringify({ ...cfg, vocab_size: 5000 }));
    assert.throws(
      () => loadProposer(parseSpeculativeConfig({ method: 'draft_model', model: other, num_speculative_tokens: 2 }), { model: target }),
      (e: unknown) => e instanceof ModelLoadError && e.message.includes('vocab_size is 5000') && e.message.includes("target's is 4096"),
    );
  });
});

describe('proposer state across verification outcomes', () => {
  let target: LlamaModel;
  before(() => {
    target = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), new CpuBackend());
  });

  /** Records what the proposer was asked and what it proposed. */
  class Recorder implements Proposer {
    readonly calls: { tokens: number[]; numDrafts: number; drafted: number[] }[][] = [];
    constructor(readonly inner: Proposer) {}
    get method() {
      return this.inner.method;
    }
    get lossy() {
      return this.inner.lossy;
    }
    get targetHiddenStateLayers() {
      return this.inner.targetHiddenStateLayers;
    }
    propose(inputs: ProposeInput[]): Proposal[] {
      const out = this.inner.propose(inputs);
      this.calls.push(inputs.map((x, i) => ({ tokens: [...x.tokens], numDrafts: x.numDrafts, drafted: out[i].tokens })));
      return out;
    }
    onVerified(o: VerifiedOutcome[]): void {
      this.inner.onVerified(o);
    }
    observeTarget(id: SeqId, f: TargetFeatures): void {
      this.inner.observeTarget(id, f);
    }
    release(id: SeqId): void {
      this.inner.release(id);
    }
  }

  /** A fresh proposer given only a sequence's tokens (and, for EAGLE-3, the target's hidden states of them). */
  function freshProposal(make: () => Proposer, tokens: number[], numDrafts: number): number[] {
    const p = make();
    if (p.targetHiddenStateLayers.length > 0) {
      const pool = new KvBlockPool(64, 16);
      const c = target.config;
      const kv = target.backend.allocKvCache({ numLayers: c.numLayers, numBlocks: 64, blockSize: 16, numKvHeads: c.numKvHeads, headDim: c.headDim });
      const blocks = new SequenceBlocks(pool);
      blocks.reserve(tokens.length - 1);
      const out = target.forward(buildForwardBatch([{ blocks, start: 0, tokens: tokens.slice(0, -1) }], 'none'), kv, { captureHiddenStates: [...p.targetHiddenStateLayers] });
      p.observeTarget('x', { start: 0, count: tokens.length - 1, rows: fuseHiddenStates(out.hiddenStates!, p.targetHiddenStateLayers, c.hiddenSize, 0, tokens.length - 1) });
    }
    const sampler = new Sampler(resolveSamplingParams({ temperature: 0 }), target.config.vocabSize);
    return p.propose([{ id: 'x', tokens, numDrafts, sampler }])[0].tokens;
  }

  for (const method of ['draft_model', 'eagle3'] as const) {
    it(`${method}: after accepts and rollbacks, proposals equal a fresh proposer's on the same tokens`, () => {
      const make = () => loadProposer(parseSpeculativeConfig({ method, num_speculative_tokens: 3 }), { model: target });
      const rec = new Recorder(make());
      const params = resolveSamplingParams({ temperature: 0, maxTokens: 30 });
      const prompts = [[4091, 4093, 882, 4094, 271, 3923, 374], [4091, 58, 2318, 25]];
      generateWithSpeculation(target, prompts.map((p) => ({ promptIds: p, params })), { proposer: rec, numSpeculativeTokens: 3 });
      assert.ok(rec.calls.length >= 6);
      let checked = 0;
      let partial = 0;
      for (const call of rec.calls.filter((_, i) => i % 2 === 1)) {
        for (const c of call) {
          if (c.numDrafts === 0) continue;
          assert.deepEqual(c.drafted, freshProposal(make, c.tokens, c.numDrafts), `${method} at ${c.tokens.length} tokens`);
          checked++;
        }
      }
      // the recorded steps include ones after a rejection (rollback), not only full accepts
      for (let i = 1; i < rec.calls.length; i++) {
        for (const c of rec.calls[i]) {
          const prev = rec.calls[i - 1].find((p) => c.tokens.length > p.tokens.length && p.tokens.every((t, j) => c.tokens[j] === t));
          if (prev && c.tokens.length - prev.tokens.length < prev.drafted.length + 1) partial++;
        }
      }
      assert.ok(checked >= 4 && partial >= 1, `checked ${checked}, after partial acceptance ${partial}`);
    });
  }

  it('EAGLE-3 sampling drafts: q lives on the draft vocabulary, sums to 1, and the draft token has mass; drawn on the backend, the same tokens and q', () => {
    const loaded = loadProposer(parseSpeculativeConfig({ method: 'eagle3', num_speculative_tokens: 3 }), { model: target }) as Eagle3Proposer;
    const tokens = [4091, 4093, 882, 4094, 271, 3923, 374, 279];
    const c = target.config;
    /** One proposal of 3 sampled drafts from a fresh proposer (host or backend draws) and a fresh, seeded sampler. */
    const propose = (drawOnBackend: boolean) => {
      const proposer = new Eagle3Proposer(loaded.head, c.numLayers, { kvCacheTokens: 1024, drawOnBackend });
      const pool = new KvBlockPool(64, 16);
      const kv = target.backend.allocKvCache({ numLayers: c.numLayers, numBlocks: 64, blockSize: 16, numKvHeads: c.numKvHeads, headDim: c.headDim });
      const blocks = new SequenceBlocks(pool);
      blocks.reserve(tokens.length - 1);
      const layers = proposer.targetHiddenStateLayers;
      const out = target.forward(buildForwardBatch([{ blocks, start: 0, tokens: tokens.slice(0, -1) }], 'none'), kv, { captureHiddenStates: [...layers] });
      proposer.observeTarget(1, { start: 0, count: tokens.length - 1, rows: fuseHiddenStates(out.hiddenStates!, layers, c.hiddenSize, 0, tokens.length - 1) });
      const sampler = new Sampler(resolveSamplingParams({ temperature: 1.2, topK: 50, seed: 3 }), c.vocabSize);
      return proposer.propose([{ id: 1, tokens, numDrafts: 3, sampler }])[0];
    };
    const p = propose(false);
    assert.equal(p.tokens.length, 3);
    assert.equal(p.probs!.length, 3);
    const inDraftVocab = new Set(loaded.head.weights.draftToTarget);
    p.probs!.forEach((q, i) => {
      let sum = 0;
      let support = 0;
      q.forEach((v, id) => {
        sum += v;
        if (v > 0) {
          support++;
          assert.ok(inDraftVocab.has(id), `q[${id}] > 0 outside the draft vocabulary`);
        }
      });
      assert.ok(Math.abs(sum - 1) < 1e-5);
      assert.ok(support > 1 && support <= 50, `top-k 50 applied to q: ${support}`);
      assert.ok(q[p.tokens[i]] > 0);
    });
    // On the backend (the CPU's sampleRows is the host's own pipeline): the same tokens, each q in
    // its row of the dist tensor bit for bit, q(x) returned with it, and no q on the host.
    const d = propose(true);
    assert.deepEqual(d.tokens, p.tokens);
    assert.equal(d.probs, undefined);
    const dist = target.backend.toHost(d.deviceProbs!.dist);
    d.deviceProbs!.rows.forEach((row, i) => {
      assert.deepEqual(dist.subarray(row * c.vocabSize, (row + 1) * c.vocabSize), p.probs![i], `draft ${i}'s q`);
      assert.ok(Object.is(d.deviceProbs!.tokenProbs[i], p.probs![i][p.tokens[i]]), `draft ${i}'s q(x)`);
    });
  });
});

describe('engine-style integration: prefill chunks and verification windows in one forward', () => {
  it('EAGLE-3 (needs hidden states of every chunk): a late arrival prefilled in chunks, output equals plain greedy', () => {
    const target = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), new CpuBackend());
    const c = target.config;
    const vocab = c.vocabSize;
    const params = resolveSamplingParams({ temperature: 0, maxTokens: 20, ignoreEos: true });
    const prompts = [[4091, 4093, 882, 4094, 271, 3923, 374, 279], [4091, 58, 2318, 25, 2366, 25, 2437, 60, 735, 267, 3258, 25]];
    const expected = generateWithSpeculation(target, prompts.map((p) => ({ promptIds: p, params })), { numSpeculativeTokens: 0 }).outputs;

    const pool = new KvBlockPool(64, 4);
    const kv = target.backend.allocKvCache({ numLayers: c.numLayers, numBlocks: 64, blockSize: 4, numKvHeads: c.numKvHeads, headDim: c.headDim });
    const proposer = loadProposer(parseSpeculativeConfig({ method: 'eagle3', num_speculative_tokens: 3 }), { model: target });
    const spec = new SpeculativeDecoder({ model: target, kv }, proposer, { numSpeculativeTokens: 3 });
    type Req = { id: number; prompt: number[]; tokens: number[]; out: number[]; computed: number; blocks: SequenceBlocks; sampler: Sampler; counts: TokenCounts; arrives: number; maxDraftTokens?: number };
    const reqs: Req[] = prompts.map((p, id) => ({ id, prompt: p, tokens: [...p], out: [], computed: 0, blocks: new SequenceBlocks(pool), sampler: new Sampler(params, vocab), counts: new TokenCounts(p), arrives: id * 3 }));
    const CHUNK = 5;
    for (let step = 0; reqs.some((r) => r.out.length < params.maxTokens); step++) {
      const prefilling = reqs.filter((r) => r.arrives <= step && r.computed < r.prompt.length);
      const decoding = reqs.filter((r) => r.computed >= r.prompt.length && r.out.length < params.maxTokens);
      for (const r of decoding) r.maxDraftTokens = Math.min(3, params.maxTokens - r.out.length - 1);
      const windows = spec.propose(decoding);
      // One batch: prefill chunks first, then the windows; logits for every row (the test picks what it needs).
      const chunks = prefilling.map((r) => {
        const count = Math.min(CHUNK, r.prompt.length - r.computed);
        r.blocks.reserve(r.computed + count);
        return { r, start: r.computed, count };
      });
      const runs = [...chunks.map(({ r, start, count }) => ({ blocks: r.blocks, start, tokens: r.prompt.slice(start, start + count) })), ...windows.map((w) => ({ blocks: w.seq.blocks, start: w.start, tokens: w.tokens }))];
      if (runs.length === 0) continue;
      const out = target.forward(buildForwardBatch(runs, 'all'), kv, { captureHiddenStates: [...spec.captureHiddenStates] });
      let row = 0;
      for (const { r, start, count } of chunks) {
        spec.observePrefill(r.id, start, count, out.hiddenStates, row);
        r.computed += count;
        row += count;
        if (r.computed === r.prompt.length) {
          // prefill done: the engine samples the first token from the last prompt row
          const t = r.sampler.sample(out.logits.subarray((row - 1) * vocab, row * vocab), r.counts);
          r.tokens.push(t);
          r.out.push(t);
          r.counts.addOutput(t);
        }
      }
      const windowRows: number[] = [];
      const windowLogits = windows.map((w) => {
        windowRows.push(row);
        const l = out.logits.subarray(row * vocab, (row + w.tokens.length) * vocab);
        row += w.tokens.length;
        return l;
      });
      const results = spec.verify(windows, windowLogits, out.hiddenStates, windowRows);
      results.forEach((res, i) => {
        const r = decoding[i];
        for (const t of res.tokens.slice(0, params.maxTokens - r.out.length)) {
          r.tokens.push(t);
          r.out.push(t);
          r.counts.addOutput(t);
        }
        r.blocks.truncate(res.keepKvTokens);
        r.computed = res.keepKvTokens;
        if (r.out.length >= params.maxTokens) spec.release(r.id);
      });
    }
    assert.deepEqual(reqs.map((r) => r.out), expected);
    assert.ok(spec.metrics.numAcceptedTokens > 10, `${spec.metrics.numAcceptedTokens} accepted`);
  });
});
