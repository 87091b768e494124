// The CPU sampler against hand-computed values and a brute-force reference: penalties, greedy,
// temperature, min-p / top-k / top-p, the draw rule, seeding and logprobs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/engine/rng.js';
import { applyPenalties, applyPenaltiesFromCounts, argmax, computeLogprobs, Sampler, TokenCounts } from '../src/engine/sampler.js';
import { resolveSamplingParams, type SamplingParams } from '../src/engine/sampling-params.js';

const params = (p: Partial<SamplingParams>): SamplingParams => resolveSamplingParams({ seed: 0, ...p });
const none = new TokenCounts();
const f32 = (values: number[]): Float32Array => Float32Array.from(values);
const support = (probs: Float32Array): number[] => [...probs.keys()].filter((i) => probs[i] > 0);

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what = ''): void {
  assert.equal(actual.length, expected.length, `${what} length`);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tol, `${what}[${i}]: got ${actual[i]}, expected ${expected[i]}`);
  }
}

/** Logits drawn from a fixed stream: roughly normal with the given spread. */
function randomLogits(n: number, seed: number, spread = 3): Float32Array {
  const rng = new Rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = spread * (rng.next() + rng.next() + rng.next() - 1.5);
  return out;
}

/**
 * The definition, written the slow obvious way: sort everything by probability, then min-p,
 * top-k, top-p (vLLM v1 order), renormalise. The sampler's heaps and prefilters must agree.
 */
function referenceProbabilities(logits: Float32Array, counts: TokenCounts, p: SamplingParams): Float64Array {
  const x = Float32Array.from(logits);
  applyPenaltiesFromCounts(x, counts, p);
  const max = x.reduce((m, v) => Math.max(m, v), -Infinity);
  const weight = [...x].map((v) => Math.exp((v - max) / p.temperature));
  let order = [...x.keys()].sort((a, b) => x[b] - x[a] || a - b);
  if (p.minP > 0) order = order.filter((i) => weight[i] >= p.minP);
  if (p.topK > 0) order = order.slice(0, p.topK);
  if (p.topP < 1) {
    const mass = order.reduce((s, i) => s + weight[i], 0);
    let cum = 0;
    const kept: number[] = [];
    for (const i of order) {
      kept.push(i);
      cum += weight[i] / mass;
      if (cum >= p.topP) break;
    }
    order = kept;
  }
  const total = order.reduce((s, i) => s + weight[i], 0);
  const out = new Float64Array(x.length);
  for (const i of order) out[i] = weight[i] / total;
  return out;
}

test('penalties match hand-computed logits (repetition on positive and negative, frequency, presence)', () => {
  const logits = f32([2, -1, 0.5, 3, -2, 0]);
  // prompt {0, 1, 5}; output: 2 twice, 3 once. Token 4 is unseen.
  applyPenalties(logits, [0, 1, 5, 0], [2, 2, 3], params({ repetitionPenalty: 2, frequencyPenalty: 0.5, presencePenalty: 0.25 }));
  // 0: 2/2 = 1          (prompt only: no frequency/presence)
  // 1: -1*2 = -2
  // 2: 0.5/2 - 0.5*2 - 0.25 = -1
  // 3: 3/2 - 0.5*1 - 0.25 = 0.75
  // 4: unseen, -2
  // 5: 0 is not > 0, so multiplied: stays 0
  assertClose(logits, [1, -2, -1, 0.75, -2, 0], 1e-6, 'penalised');
});

test('negative frequency/presence penalties raise repeated tokens; defaults change nothing', () => {
  const logits = f32([1, 1, 1]);
  applyPenalties(logits, [], [1, 1], params({ frequencyPenalty: -0.5, presencePenalty: -1 }));
  assertClose(logits, [1, 3, 1], 1e-6, 'encouraged');
  const untouched = f32([5, -5, 0]);
  applyPenalties(untouched, [0, 1, 2], [0, 1, 2], params({}));
  assertClose(untouched, [5, -5, 0], 0, 'defaults');
});

test('TokenCounts built token by token equals counting the whole history, and rolls back', () => {
  const incremental = new TokenCounts([4, 4, 7]);
  for (const id of [1, 4, 1, 9]) incremental.addOutput(id);
  const batch = new TokenCounts([4, 4, 7], [1, 4, 1, 9]);
  const dump = (c: TokenCounts): string[] => {
    const rows: string[] = [];
    c.forEach((id, n, inPrompt) => rows.push(`${id}:${n}:${inPrompt}`));
    return rows.sort();
  };
  assert.deepEqual(dump(incremental), dump(batch));
  assert.deepEqual(dump(batch), ['1:2:false', '4:1:true', '7:0:true', '9:1:false']);
  assert.equal(batch.size, 4);

  // A rejected speculative token must leave no trace, not even "seen" for the repetition penalty.
  batch.addOutput(12);
  batch.removeOutput(12);
  batch.removeOutput(4);
  assert.equal(batch.outputCount(4), 0);
  assert.ok(batch.inPrompt(4));
  assert.deepEqual(dump(batch), ['1:2:false', '4:0:true', '7:0:true', '9:1:false']);
  assert.throws(() => batch.removeOutput(7), RangeError);
  assert.throws(() => batch.addOutput(-1), RangeError);
});

test('penalties ignore ids beyond the logits, as vLLM does for a padded tokenizer', () => {
  const logits = f32([1, 1]);
  applyPenalties(logits, [5], [0, 7], params({ repetitionPenalty: 2 }));
  assertClose(logits, [0.5, 1], 0);
});

test('greedy picks the argmax, lowest id on ties, after penalties', () => {
  assert.equal(argmax(f32([0, 3, 1, 3])), 1);
  assert.equal(argmax(f32([Number.NaN, -1, -2])), 1);
  const s = new Sampler(params({ temperature: 0 }), 4);
  assert.equal(s.sample(f32([0, 3, 1, 3]), none), 1);
  // Repetition penalty 2 halves token 1's logit 3 -> 1.5, so token 3 wins.
  const penalised = new Sampler(params({ temperature: 0, repetitionPenalty: 2 }), 4);
  assert.equal(penalised.sample(f32([0, 3, 1, 2]), new TokenCounts([1])), 3);
  // Below vLLM's 1e-5 a temperature is greedy too.
  assert.equal(new Sampler(params({ temperature: 1e-6 }), 4).sample(f32([0, 3, 1, 3]), none), 1);
});

test('greedy ignores top-k/top-p/min-p and consumes no randomness; random mode one draw per token', () => {
  const logits = f32([0.1, 0.2, 5, 0.3]);
  const greedy = new Sampler(params({ temperature: 0, topK: 1, topP: 0.01, minP: 0.9, seed: 5 }), 4);
  for (let i = 0; i < 10; i++) assert.equal(greedy.sample(logits, none), 2);
  assert.deepEqual(greedy.probabilities(logits, none), f32([0, 0, 1, 0]));
  assert.equal(greedy.rng.next(), new Rng(5).next());

  // Even with a single survivor (top-k 1) a random-mode call uses exactly one next().
  const random = new Sampler(params({ temperature: 1, topK: 1, seed: 5 }), 4);
  for (let i = 0; i < 10; i++) assert.equal(random.sample(logits, none), 2);
  const reference = new Rng(5);
  for (let i = 0; i < 10; i++) reference.next();
  assert.equal(random.rng.next(), reference.next());
});

test('probabilities sum to 1 and equal the hand-computed softmax, with temperature', () => {
  const logits = f32([0, Math.log(2), Math.log(3), Math.log(4)]);
  const p1 = new Sampler(params({}), 4).probabilities(logits, none);
  assertClose(p1, [0.1, 0.2, 0.3, 0.4], 1e-6, 'T=1');
  // T = 2 takes square roots of the odds: weights 1, √2, √3, 2.
  const w = [1, Math.SQRT2, Math.sqrt(3), 2];
  const sum = w.reduce((a, b) => a + b);
  const p2 = new Sampler(params({ temperature: 2 }), 4).probabilities(logits, none);
  assertClose(p2, w.map((v) => v / sum), 1e-6, 'T=2');
  for (const p of [p1, p2]) assert.ok(Math.abs(p.reduce((a, b) => a + b) - 1) < 1e-6);
});

test('temperature sharpens and flattens: empirical frequencies match softmax(x/T) (chi-square)', () => {
  const logits = f32([2, 1, 0, -1]);
  const draws = 20_000;
  const topShare: number[] = [];
  for (const t of [0.5, 1, 2]) {
    const s = new Sampler(params({ temperature: t, seed: 11 }), 4);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < draws; i++) counts[s.sample(logits, none)]++;
    const w = [...logits].map((x) => Math.exp(x / t));
    const z = w.reduce((a, b) => a + b);
    const chi2 = counts.reduce((acc, c, i) => acc + (c - (draws * w[i]) / z) ** 2 / ((draws * w[i]) / z), 0);
    assert.ok(chi2 < 16.27, `T=${t}: chi-square ${chi2.toFixed(2)} over 3 dof exceeds the p=0.001 bound`);
    topShare.push(counts[0] / draws);
  }
  assert.ok(topShare[0] > topShare[1] && topShare[1] > topShare[2], `top-token share must fall as T rises: ${topShare}`);
  // Exact values for orientation: 0.865 at T=0.5, 0.644 at T=1, 0.455 at T=2.
  assertClose(topShare, [0.865, 0.644, 0.455], 0.015, 'top share');
});

test('top-k keeps exactly the k largest, ties at the boundary to the lowest ids', () => {
  const logits = randomLogits(1000, 3);
  const probs = new Sampler(params({ topK: 10 }), 1000).probabilities(logits, none);
  const kept = support(probs);
  const expected = [...logits.keys()].sort((a, b) => logits[b] - logits[a]).slice(0, 10).sort((a, b) => a - b);
  assert.deepEqual(kept, expected);
  // Within the survivors the odds are untouched: renormalised softmax over those 10.
  const z = kept.reduce((s, i) => s + Math.exp(logits[i]), 0);
  assertClose(kept.map((i) => probs[i]), kept.map((i) => Math.exp(logits[i]) / z), 1e-6, 'renormalised');

  const flat = new Sampler(params({ topK: 3 }), 6).probabilities(new Float32Array(6), none);
  assertClose(flat, [1 / 3, 1 / 3, 1 / 3, 0, 0, 0], 1e-7, 'ties');

  const s = new Sampler(params({ topK: 10, seed: 8 }), 1000);
  for (let i = 0; i < 500; i++) assert.ok(kept.includes(s.sample(logits, none)));
});

test('top-p keeps the smallest prefix reaching top_p: exact boundary and hand-computed cases', () => {
  // Four equal tokens, 0.25 each, exact in binary: 0.5 is reached by two tokens exactly.
  const flat = new Float32Array(4);
  assertClose(new Sampler(params({ topP: 0.5 }), 4).probabilities(flat, none), [0.5, 0.5, 0, 0], 0, 'at boundary');
  assertClose(new Sampler(params({ topP: 0.5000001 }), 4).probabilities(flat, none), [1 / 3, 1 / 3, 1 / 3, 0], 1e-7, 'past boundary');
  // Always at least one token, even for a tiny top_p.
  assert.deepEqual(support(new Sampler(params({ topP: 1e-9 }), 4).probabilities(f32([0, 1, 3, 2]), none)), [2]);

  // probs 0.05 0.5 0.15 0.3: sorted 0.5, 0.3 (0.8), 0.15 (0.95), 0.05 (1).
  const logits = f32([0.05, 0.5, 0.15, 0.3].map(Math.log));
  const at = (topP: number): Float32Array => new Sampler(params({ topP }), 4).probabilities(logits, none);
  assertClose(at(0.79), [0, 0.5 / 0.8, 0, 0.3 / 0.8], 1e-6, 'top_p 0.79');
  assertClose(at(0.81), [0, 0.5 / 0.95, 0.15 / 0.95, 0.3 / 0.95], 1e-6, 'top_p 0.81');
  assertClose(at(0.96), [0.05, 0.5, 0.15, 0.3], 1e-6, 'top_p 0.96');
  assertClose(at(0.4), [0, 1, 0, 0], 1e-6, 'top_p 0.4');

  // top-k first, then top-p on the renormalised survivors: k=2 leaves 0.625/0.375, so 0.6 needs one.
  const both = new Sampler(params({ topK: 2, topP: 0.6 }), 4).probabilities(logits, none);
  assertClose(both, [0, 1, 0, 0], 1e-6, 'top_k then top_p');
  // The same exact boundary on the path where top-k has already ordered the candidates.
  const afterTopK = new Sampler(params({ topK: 4, topP: 0.5 }), 6).probabilities(new Float32Array(6), none);
  assertClose(afterTopK, [0.5, 0.5, 0, 0, 0, 0], 0, 'top_k 4 then top_p 0.5');
});

test('min-p drops tokens below min_p × the top probability, and runs before top-p (vLLM v1)', () => {
  const logits = f32([0.05, 0.5, 0.15, 0.3].map(Math.log));
  // min_p 0.35: threshold 0.175 keeps 0.5 and 0.3.
  assertClose(new Sampler(params({ minP: 0.35 }), 4).probabilities(logits, none), [0, 0.5 / 0.8, 0, 0.3 / 0.8], 1e-6, 'min_p 0.35');
  // min_p 0.25: threshold 0.125 keeps 0.15 too.
  assertClose(new Sampler(params({ minP: 0.25 }), 4).probabilities(logits, none), [0, 0.5 / 0.95, 0.15 / 0.95, 0.3 / 0.95], 1e-6, 'min_p 0.25');
  assert.deepEqual(support(new Sampler(params({ minP: 1 }), 4).probabilities(logits, none)), [1]);

  // probs 0.5 0.3 0.2, min_p 0.5, top_p 0.6. vLLM v1: min-p drops 0.2 first, leaving 0.625/0.375,
  // and top-p 0.6 then keeps one token. (Min-p after top-p, as HF does, would keep two.)
  const order = new Sampler(params({ minP: 0.5, topP: 0.6 }), 3).probabilities(f32([0.5, 0.3, 0.2].map(Math.log)), none);
  assertClose(order, [1, 0, 0], 1e-6, 'min_p before top_p');
});

test('probabilities agree with a brute-force sort for every filter combination', () => {
  const configs: Array<Partial<SamplingParams>> = [
    {},
    { temperature: 0.7, topK: 40 },
    { topP: 0.9 },
    { temperature: 1.3, topP: 0.5 },
    { topK: 100, topP: 0.8 },
    { minP: 0.05 },
    { minP: 0.02, topK: 30, topP: 0.95 },
    { temperature: 0.8, topP: 0.97, repetitionPenalty: 1.3, frequencyPenalty: 0.4, presencePenalty: 0.3 },
  ];
  const counts = new TokenCounts([1, 2, 3, 50, 60], [7, 7, 8, 100, 1]);
  for (const [i, c] of configs.entries()) {
    const logits = randomLogits(3000, 100 + i);
    const p = params(c);
    const got = new Sampler(p, 3000).probabilities(logits, counts);
    const expected = referenceProbabilities(logits, counts, p);
    assertClose(got, expected, 1e-6, JSON.stringify(c));
    assert.deepEqual(support(got), [...expected.keys()].filter((j) => expected[j] > 0), JSON.stringify(c));
  }
});

test('a draw is the inverse CDF of probabilities() in id order, at u = rng.next()', () => {
  const logits = randomLogits(50, 4, 2);
  const counts = new TokenCounts([3, 4], [5]);
  const s = new Sampler(params({ temperature: 0.9, topK: 20, topP: 0.9, presencePenalty: 1, seed: 77 }), 50);
  const probs = s.probabilities(logits, counts);
  const u = new Rng(77);
  for (let draw = 0; draw < 2000; draw++) {
    const token = s.sample(logits, counts);
    const r = u.next();
    let before = 0;
    for (let i = 0; i < token; i++) before += probs[i];
    assert.ok(probs[token] > 0);
    assert.ok(before - 1e-6 <= r && r < before + probs[token] + 1e-6, `u=${r} outside token ${token}'s interval`);
  }
});

test('same seed ⇒ same tokens; different or absent seeds ⇒ different tokens', () => {
  const logits = randomLogits(100, 5, 0.5);
  const run = (seed: number | undefined): number[] => {
    const s = new Sampler(params({ seed }), 100);
    return Array.from({ length: 50 }, () => s.sample(logits, none));
  };
  assert.deepEqual(run(1), run(1));
  assert.notDeepEqual(run(1), run(2));
  assert.notDeepEqual(run(undefined), run(undefined));
  const unseeded = new Sampler(params({ seed: undefined }), 100);
  assert.ok(Number.isSafeInteger(unseeded.seed), 'the random seed is reported so it can be replayed');
  assert.deepEqual(run(unseeded.seed), Array.from({ length: 50 }, () => unseeded.sample(logits, none)));
});

test('sampling does not modify the caller\'s logits, even with penalties', () => {
  const logits = f32([1, 2, 3]);
  const s = new Sampler(params({ repetitionPenalty: 3, frequencyPenalty: 1 }), 3);
  s.sample(logits, new TokenCounts([0, 1, 2], [2]));
  s.probabilities(logits, new TokenCounts([0, 1, 2], [2]));
  assert.deepEqual(logits, f32([1, 2, 3]));
});

test('logprobs are the raw log-softmax: untouched by penalties and temperature', () => {
  const logits = f32([1, 2, 3, 0]);
  const lse = Math.log(Math.E + Math.E ** 2 + Math.E ** 3 + 1);
  const s = new Sampler(params({ temperature: 0, repetitionPenalty: 10 }), 4);
  const token = s.sample(logits, new TokenCounts([2]));
  assert.equal(token, 1); // the penalty moved the choice off token 2 ...
  const lp = s.logprobs(logits, 2); // ... but logprobs describe the model's own distribution
  assert.equal(lp.tokenId, 1);
  assert.ok(Math.abs(lp.logprob - (2 - lse)) < 1e-9);
  assert.equal(lp.rank, 2);
  assert.deepEqual(lp.top.map((t) => t.id), [2, 1]);
  assertClose(lp.top.map((t) => t.logprob), [3 - lse, 2 - lse], 1e-9, 'top');
  // vLLM's rank counts every token at least as likely, ties included.
  assert.equal(computeLogprobs(f32([1, 1, 0]), 1, 1).rank, 2);
  assert.equal(computeLogprobs(f32([1, 1, 0]), 1, 0).top[0].id, 0); // ties listed lowest id first
  assert.throws(() => new Sampler(params({}), 4).logprobs(logits, 1), RangeError);
});

test('128k vocabulary: partial selection gives the same answer as brute force', () => {
  const n = 131_072;
  const logits = randomLogits(n, 6, 4);
  const p = params({ topP: 0.95, temperature: 0.8 });
  const got = new Sampler(p, n).probabilities(logits, none);
  const expected = referenceProbabilities(logits, none, p);
  assertClose(got, expected, 1e-7, 'top_p over 128k');
  assert.deepEqual(support(got), [...expected.keys()].filter((j) => expected[j] > 0));
  const s = new Sampler(params({ topK: 50, topP: 0.9, seed: 3 }), n);
  const allowed = new Set(support(s.probabilities(logits, none)));
  assert.ok(allowed.size <= 50 && allowed.size > 0);
  for (let i = 0; i < 50; i++) assert.ok(allowed.has(s.sample(logits, none)));
});

test('rejects logits it cannot sample from, naming the problem', () => {
  const s = new Sampler(params({}), 3);
  assert.throws(() => s.sample(f32([-Infinity, Number.NaN, -Infinity]), none), /every logit is -inf or NaN/);
  assert.throws(() => new Sampler(params({ temperature: 0 }), 3).sample(f32([-Infinity, -Infinity, -Infinity]), none), /every logit/);
  assert.throws(() => s.sample(f32([1, 2]), none), /expected 3 logits, got 2/);
  // -inf and NaN entries are simply impossible tokens; +inf takes all the mass.
  assertClose(s.probabilities(f32([-Infinity, Number.NaN, 0]), none), [0, 0, 1], 0, 'masked');
  assertClose(s.probabilities(f32([Infinity, 0, Infinity]), none), [0.5, 0, 0.5], 0, 'infinite');
});
