// Sampling with speculation is lossless: the generated tokens are distributed exactly as the target's
// own sampling (penalties, temperature, top-k, top-p included). Chi-square goodness of fit against
// the exact target distribution, on seeded runs (so each outcome is reproducible); the significance
// level is 0.001, and deliberately broken verifiers are shown to fail the same test by a wide margin.

import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { DEFAULT_DRAFT_MODEL_NAME, DEFAULT_MODEL_NAME, embeddedModelDir } from '../src/model/default-model.js';
import { LlamaModel } from '../src/model/llama.js';
import { KvBlockPool, SequenceBlocks } from '../src/engine/kv-cache.js';
import { Rng } from '../src/engine/rng.js';
import { Sampler, TokenCounts } from '../src/engine/sampler.js';
import { resolveSamplingParams, type SamplingParams } from '../src/engine/sampling-params.js';
import { buildForwardBatch } from '../src/engine/spec/batch.js';
import { DraftModelProposer } from '../src/engine/spec/draft-model.js';
import { drawFrom } from '../src/engine/spec/proposer.js';
import { SpeculativeDecoder } from '../src/engine/spec/speculative-step.js';
import { verifyDrafts, type VerifyFn, type VerifyInput } from '../src/engine/spec/verifier.js';
import { loadLlama } from './support/run-model.js';

const ALPHA = 0.001;

// ---- chi-square goodness of fit ----------------------------------------------------------------

function logGamma(x: number): number {
  const c = [76.18009172947146, -86.50532032941677, 24.01409824083091, -1.231739572450155, 0.1208650973866179e-2, -0.5395239384953e-5];
  let y = x;
  const tmp = x + 5.5 - (x + 0.5) * Math.log(x + 5.5);
  let ser = 1.000000000190015;
  for (const cj of c) ser += cj / ++y;
  return -tmp + Math.log((2.5066282746310005 * ser) / x);
}

/** Regularised upper incomplete gamma Q(a, x) (Numerical Recipes gammq). */
function gammaQ(a: number, x: number): number {
  if (x <= 0) return 1;
  if (x < a + 1) {
    let sum = 1 / a;
    let del = sum;
    for (let n = 1; n < 1000; n++) {
      del *= x / (a + n);
      sum += del;
      if (Math.abs(del) < Math.abs(sum) * 1e-15) break;
    }
    return 1 - sum * Math.exp(-x + a * Math.log(x) - logGamma(a));
  }
  let b = x + 1 - a;
  let c = 1 / 1e-300;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 1000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < 1e-300) d = 1e-300;
    c = b + an / c;
    if (Math.abs(c) < 1e-300) c = 1e-300;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-15) break;
  }
  return Math.exp(-x + a * Math.log(x) - logGamma(a)) * h;
}

/**
 * Pearson's chi-square of observed outcome counts against exact probabilities. An outcome expected
 * fewer than 5 times is pooled with the others of its group (`group(key)`, e.g. the same first token);
 * groups still expected fewer than 5 times, and outcomes of probability 0, go into one last cell.
 * An outcome of probability 0 that occurs when that last cell expects nothing makes the statistic infinite.
 */
function chiSquare(observed: Map<number, number>, expected: Map<number, number>, n: number, group: (key: number) => number = () => 0): { stat: number; df: number; p: number } {
  const cells = new Map<string, { p: number; o: number }>();
  const add = (cell: string, p: number, o: number) => {
    const c = cells.get(cell) ?? { p: 0, o: 0 };
    c.p += p;
    c.o += o;
    cells.set(cell, c);
  };
  const groups = new Map<number, { p: number; o: number }>();
  for (const [key, p] of expected) {
    const o = observed.get(key) ?? 0;
    if (n * p >= 5) add(`k${key}`, p, o);
    else {
      const g = groups.get(group(key)) ?? { p: 0, o: 0 };
      g.p += p;
      g.o += o;
      groups.set(group(key), g);
    }
  }
  for (const [g, { p, o }] of groups) add(n * p >= 5 ? `g${g}` : 'rest', p, o);
  for (const [key, o] of observed) if (!expected.has(key)) add('rest', 0, o);
  let stat = 0;
  for (const { p, o } of cells.values()) {
    if (n * p < 1e-9) {
      if (o > 0) return { stat: Infinity, df: cells.size - 1, p: 0 };
      continue;
    }
    stat += (o - n * p) ** 2 / (n * p);
  }
  const df = [...cells.values()].filter((c) => n * c.p >= 1e-9).length - 1;
  return { stat, df, p: gammaQ(df / 2, stat / 2) };
}

it('the chi-square p-value is right (known quantiles)', () => {
  assert.ok(Math.abs(gammaQ(0.5, 3.841 / 2) - 0.05) < 1e-3); // df 1
  assert.ok(Math.abs(gammaQ(1, 9.21 / 2) - Math.exp(-9.21 / 2)) < 1e-12); // df 2: exp(-x/2)
  assert.ok(Math.abs(gammaQ(5, 18.307 / 2) - 0.05) < 1e-3); // df 10
  assert.ok(Math.abs(gammaQ(10, 37.566 / 2) - 0.01) < 1e-3); // df 20
  assert.ok(Math.abs(gammaQ(25, 86.661 / 2) - 0.001) < 1e-4); // df 50
});

// ---- deliberately broken verifiers --------------------------------------------------------------

const rowOf = (x: VerifyInput, i: number) => x.logits.subarray(i * x.sampler.vocabSize, (i + 1) * x.sampler.vocabSize);

/** Accepts every draft: the output follows the draft's distribution. */
const alwaysAccept: VerifyFn = (x) => {
  for (const d of x.drafts) x.counts.addOutput(d);
  const bonus = x.sampler.sample(rowOf(x, x.drafts.length), x.counts);
  for (const d of x.drafts) x.counts.removeOutput(d);
  return { numAccepted: x.drafts.length, tokens: [...x.drafts, bonus] };
};

/**
 * Rejection sampling written with one bug each: a residual of p instead of max(0, p − q), or
 * penalties computed from the counts before the step (the accepted drafts not counted).
 */
function buggyRejection(bug: 'resample-from-p' | 'stale-penalties'): VerifyFn {
  return (x) => {
    const added: number[] = [];
    const countDraft = bug !== 'stale-penalties';
    try {
      for (let i = 0; i < x.drafts.length; i++) {
        const d = x.drafts[i];
        const p = x.sampler.probabilities(rowOf(x, i), x.counts);
        const qd = x.probs ? x.probs[i][d] : 1;
        if (x.sampler.rng.next() * qd < p[d]) {
          if (countDraft) x.counts.addOutput(d);
          added.push(d);
          continue;
        }
        const r = bug === 'resample-from-p' ? p : Float32Array.from(p, (v, y) => Math.max(0, v - (x.probs ? x.probs[i][y] : y === d ? 1 : 0)));
        return { numAccepted: i, tokens: [...added, drawFrom(r, x.sampler.rng.next())] };
      }
      return { numAccepted: added.length, tokens: [...added, x.sampler.sample(rowOf(x, x.drafts.length), x.counts)] };
    } finally {
      if (countDraft) for (const d of added) x.counts.removeOutput(d);
    }
  };
}

// ---- verifier level: a toy target over 4 tokens, exact joint distribution of 3 generated tokens ----

describe('rejection sampling against the exact target distribution (toy target, penalties, top-k)', () => {
  const V = 4;
  const N = 60000;
  // Base logits per output index (the toy target ignores context except through the penalties).
  const L = [Float32Array.from([1.0, 0.5, 0.2, -0.3]), Float32Array.from([0.2, 1.1, 0.4, 0.0]), Float32Array.from([0.6, 0.1, 0.9, 0.3]), Float32Array.from([0, 0, 0, 0])];
  // Draft distributions per output index; q puts mass where top-k leaves p = 0.
  const Q = [Float32Array.from([0.1, 0.2, 0.3, 0.4]), Float32Array.from([0.4, 0.1, 0.4, 0.1]), Float32Array.from([0.25, 0.25, 0.25, 0.25])];
  const params: SamplingParams = resolveSamplingParams({ temperature: 0.9, topK: 3, repetitionPenalty: 1.4, presencePenalty: 0.5, frequencyPenalty: 0.3 });
  const PROMPT = [0];

  const countsOf = (history: number[]) => new TokenCounts(PROMPT, history);
  const exact = new Map<number, number>();
  const probe = new Sampler(params, V);
  for (let key = 0; key < V ** 3; key++) {
    const h = [Math.floor(key / 16), Math.floor(key / 4) % 4, key % 4];
    let p = 1;
    for (let j = 0; j < 3; j++) p *= probe.probabilities(L[j], countsOf(h.slice(0, j)))[h[j]];
    if (p > 0) exact.set(key, p);
  }

  /** N generations of 3 tokens with k = 2 drafts per step; drafts sampled from Q or argmax Q (one-hot). */
  function run(verify: VerifyFn, drafts: 'sampled' | 'deterministic', seed: number): Map<number, number> {
    const sampler = new Sampler({ ...params, seed }, V);
    const rng = new Rng(seed + 1000);
    const observed = new Map<number, number>();
    for (let r = 0; r < N; r++) {
      const out: number[] = [];
      const counts = countsOf([]);
      while (out.length < 3) {
        const m = out.length;
        const k = Math.min(2, 3 - m - 1);
        const tokens: number[] = [];
        for (let i = 0; i < k; i++) tokens.push(drafts === 'sampled' ? drawFrom(Q[m + i], rng.next()) : Q[m + i].indexOf(Math.max(...Q[m + i])));
        const logits = new Float32Array((k + 1) * V);
        for (let i = 0; i <= k; i++) logits.set(L[m + i], i * V);
        const res = verify({ drafts: tokens, probs: drafts === 'sampled' ? tokens.map((_, i) => Q[m + i]) : undefined, logits, sampler, counts });
        assert.equal(res.tokens.length, res.numAccepted + 1);
        for (const t of res.tokens) {
          if (out.length === 3) break;
          out.push(t);
          counts.addOutput(t);
        }
      }
      const key = out[0] * 16 + out[1] * 4 + out[2];
      observed.set(key, (observed.get(key) ?? 0) + 1);
    }
    return observed;
  }

  it('sampled drafts with their q: output matches the target (p > 0.001)', (ctx) => {
    const t = chiSquare(run(verifyDrafts, 'sampled', 1), exact, N, (key) => key >> 4);
    ctx.diagnostic(`chi2 ${t.stat.toFixed(1)}, df ${t.df}, p ${t.p.toPrecision(3)}`);
    assert.ok(t.df >= 20, `df ${t.df}`);
    assert.ok(t.p > ALPHA, `chi2 ${t.stat.toFixed(1)} df ${t.df} p ${t.p}`);
  });

  it('deterministic drafts (q one-hot, as EAGLE-3 greedy drafts and n-gram): output matches the target', (ctx) => {
    const t = chiSquare(run(verifyDrafts, 'deterministic', 2), exact, N, (key) => key >> 4);
    ctx.diagnostic(`chi2 ${t.stat.toFixed(1)}, df ${t.df}, p ${t.p.toPrecision(3)}`);
    assert.ok(t.p > ALPHA, `chi2 ${t.stat.toFixed(1)} df ${t.df} p ${t.p}`);
  });

  for (const [name, broken] of [['always accept', alwaysAccept], ['residual = p instead of max(0, p − q)', buggyRejection('resample-from-p')], ['penalties ignore the accepted drafts', buggyRejection('stale-penalties')]] as const) {
    it(`the same test rejects a broken verifier: ${name}`, (ctx) => {
      const t = chiSquare(run(broken, 'sampled', 1), exact, N, (key) => key >> 4);
      ctx.diagnostic(`chi2 ${t.stat.toFixed(1)}, df ${t.df}, p ${t.p.toPrecision(3)}`);
      assert.ok(t.p < 1e-6, `broken verifier passed: chi2 ${t.stat.toFixed(1)} df ${t.df} p ${t.p}`);
    });
  }
});

// ---- end to end: the default target with a draft model, k = 2 ------------------------------------

describe('speculative sampling end to end (tachyon-tiny + a draft model, k = 2)', () => {
  const BOS = 4091;
  const params = resolveSamplingParams({ temperature: 1.0, topP: 0.95, maxTokens: 2 });
  let target: LlamaModel;
  let flatDraft: LlamaModel;
  const exact = new Map<number, number>();

  before(() => {
    const be = new CpuBackend();
    target = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), be);
    // The default draft agrees with the target too well for a broken verifier to show in a few
    // hundred samples; its logits × 0.5 make q much flatter than p. Any q must give the target's output.
    const draft = loadLlama(embeddedModelDir(DEFAULT_DRAFT_MODEL_NAME), be);
    const lm = Float32Array.from(be.weightToHost(draft.weights.lmHead), (v) => v * 0.5);
    flatDraft = new LlamaModel(draft.config, { ...draft.weights, lmHead: be.loadDense('lm_head.weight', { dtype: 'F32', shape: [...draft.weights.lmHead.shape], bytes: new Uint8Array(lm.buffer) }) }, be);

    // Exact P(t1, t2 | BOS) of the target: p1 at BOS, then p2 after each t1 in p1's support.
    const c = target.config;
    const pool = new KvBlockPool(1024, 2);
    const kv = be.allocKvCache({ numLayers: c.numLayers, numBlocks: 1024, blockSize: 2, numKvHeads: c.numKvHeads, headDim: c.headDim });
    const probe = new Sampler(params, c.vocabSize);
    const seq = () => Object.assign(new SequenceBlocks(pool), {});
    const b0 = seq();
    b0.reserve(1);
    const p1 = probe.probabilities(target.forward(buildForwardBatch([{ blocks: b0, start: 0, tokens: [BOS] }], 'last'), kv).logits, new TokenCounts([BOS]));
    const support = [...p1.keys()].filter((t) => p1[t] > 0);
    assert.ok(support.length >= 10, 'several likely first tokens');
    const runs = support.map((t) => {
      const b = seq();
      b.reserve(2);
      return { blocks: b, start: 0, tokens: [BOS, t] };
    });
    const logits = target.forward(buildForwardBatch(runs, 'last'), kv).logits;
    support.forEach((t1, i) => {
      const p2 = probe.probabilities(logits.subarray(i * c.vocabSize, (i + 1) * c.vocabSize), new TokenCounts([BOS], [t1]));
      p2.forEach((p, t2) => {
        if (p > 0) exact.set(t1 * c.vocabSize + t2, p1[t1] * p);
      });
    });
  });

  /** n seeded generations of 2 tokens from a one-token prompt, 100 sequences per step. */
  function sample(n: number, verify?: VerifyFn): { observed: Map<number, number>; accepted: number } {
    const c = target.config;
    const pool = new KvBlockPool(512, 4);
    const kv = target.backend.allocKvCache({ numLayers: c.numLayers, numBlocks: 512, blockSize: 4, numKvHeads: c.numKvHeads, headDim: c.headDim });
    const decoder = new SpeculativeDecoder({ model: target, kv }, new DraftModelProposer(flatDraft, { kvCacheTokens: 2048, blockSize: 4 }), { numSpeculativeTokens: 2, verify });
    const observed = new Map<number, number>();
    for (let from = 0; from < n; from += 100) {
      const seqs = Array.from({ length: Math.min(100, n - from) }, (_, i) => ({
        id: from + i,
        tokens: [BOS],
        out: [] as number[],
        blocks: new SequenceBlocks(pool),
        sampler: new Sampler({ ...params, seed: from + i + 1 }, c.vocabSize),
        counts: new TokenCounts([BOS]),
        maxDraftTokens: 2,
      }));
      let active = seqs;
      while (active.length > 0) {
        const results = decoder.step(active);
        results.forEach((r, i) => {
          const s = active[i];
          s.blocks.truncate(r.keepKvTokens);
          for (const t of r.tokens.slice(0, 2 - s.out.length)) {
            s.out.push(t);
            s.tokens.push(t);
            s.counts.addOutput(t);
          }
          s.maxDraftTokens = 2 - s.out.length - 1;
        });
        active = active.filter((s) => s.out.length < 2);
      }
      for (const s of seqs) {
        const key = s.out[0] * c.vocabSize + s.out[1];
        observed.set(key, (observed.get(key) ?? 0) + 1);
        s.blocks.releaseAll();
        decoder.release(s.id);
      }
    }
    assert.equal(pool.numFree, pool.numBlocks, 'every target KV block is back');
    return { observed, accepted: decoder.metrics.numAcceptedTokens };
  }

  it('the first two tokens follow the target distribution (300 seeded runs, p > 0.001)', (ctx) => {
    const { observed, accepted } = sample(300);
    assert.ok(accepted > 50, `${accepted} drafts accepted: the draft path is exercised`);
    const t = chiSquare(observed, exact, 300, (key) => Math.floor(key / target.config.vocabSize));
    ctx.diagnostic(`chi2 ${t.stat.toFixed(1)}, df ${t.df}, p ${t.p.toPrecision(3)}`);
    assert.ok(t.df >= 5, `df ${t.df}`);
    assert.ok(t.p > ALPHA, `chi2 ${t.stat.toFixed(1)} df ${t.df} p ${t.p}`);
  });

  it('the same test rejects an always-accept verifier', (ctx) => {
    const t = chiSquare(sample(200, alwaysAccept).observed, exact, 200, (key) => Math.floor(key / target.config.vocabSize));
    ctx.diagnostic(`chi2 ${t.stat.toFixed(1)}, df ${t.df}, p ${t.p.toPrecision(3)}`);
    assert.ok(t.p < 1e-6, `always-accept passed: chi2 ${t.stat.toFixed(1)} df ${t.df} p ${t.p}`);
  });
});
