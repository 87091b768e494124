// The eval metrics on distributions small enough to compute by hand.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cutIntoWindows } from '../src/eval/evaluate.js';
import { parseTasksJsonl } from '../src/eval/inputs.js';
import {
  argmax,
  binomialStandardError,
  exactMatch,
  kldStats,
  klDivergence,
  logSoftmax,
  mean,
  negativeLogLikelihood,
  percentile,
  perplexity,
  recoveryPercent,
  standardError,
  topOneAgreement,
} from '../src/eval/metrics.js';

const close = (a: number, b: number, tol = 1e-12) => assert.ok(Math.abs(a - b) <= tol, `${a} != ${b}`);

describe('eval metrics', () => {
  it('logSoftmax of logits [0, ln 3] is ln [1/4, 3/4], and does not overflow on large logits', () => {
    const lp = logSoftmax([0, Math.log(3)]);
    close(lp[0], Math.log(0.25));
    close(lp[1], Math.log(0.75));
    const big = logSoftmax([1000, 1000 + Math.log(3)]);
    close(big[0], Math.log(0.25), 1e-9);
    close(big[1], Math.log(0.75), 1e-9);
    // A row picked out of a larger array by offset and length.
    const row = logSoftmax(Float32Array.from([9, 9, 0, 0, 9]), 2, 2);
    assert.equal(row.length, 2);
    close(row[0], -Math.LN2);
  });

  it('NLL of the correct token and perplexity exp(mean NLL)', () => {
    close(negativeLogLikelihood(logSoftmax([0, Math.log(3)]), 1), -Math.log(0.75));
    assert.throws(() => negativeLogLikelihood([0, 0], 2), /outside the vocabulary/);
    // NLLs ln 2 and ln 8: mean 2 ln 2, perplexity 4.
    close(perplexity([Math.LN2, Math.log(8)]), 4);
    // A uniform distribution over V tokens has perplexity V.
    const uniform = logSoftmax(new Float64Array(7));
    close(perplexity([0, 3, 6].map((t) => negativeLogLikelihood(uniform, t))), 7, 1e-9);
  });

  it('KL divergence: 0 for identical distributions, the hand value for a 2-token case, asymmetric', () => {
    const p = logSoftmax([0.3, -1.2, 2.5, 0]);
    assert.equal(klDivergence(p, p), 0);
    const half = [Math.log(0.5), Math.log(0.5)];
    const q = [Math.log(0.25), Math.log(0.75)];
    // 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3)
    close(klDivergence(half, q), 0.5 * Math.log(4 / 3));
    // 0.25 ln(0.25/0.5) + 0.75 ln(0.75/0.5)
    close(klDivergence(q, half), 0.25 * Math.log(0.5) + 0.75 * Math.log(1.5));
    assert.notEqual(klDivergence(half, q), klDivergence(q, half));
    // Tokens the baseline never produces add nothing; mass the candidate lacks is infinite divergence.
    close(klDivergence([0, -Infinity], half), Math.LN2);
    assert.equal(klDivergence(half, [0, -Infinity]), Infinity);
    assert.throws(() => klDivergence([0], [0, 0]), /KL divergence/);
  });

  it('argmax, top-1 agreement and its binomial error', () => {
    assert.equal(argmax([1, 5, 5, 2]), 1);
    assert.equal(argmax([9, 1, 5, 7], 1, 3), 2);
    assert.equal(topOneAgreement([1, 2, 3, 4], [1, 2, 0, 4]), 0.75);
    assert.equal(topOneAgreement([3], [3]), 1);
    close(binomialStandardError(0.75, 4), Math.sqrt(0.75 * 0.25 / 4));
    assert.equal(binomialStandardError(1, 100), 0);
  });

  it('percentiles interpolate linearly between order statistics (numpy default)', () => {
    const v = [4, 1, 3, 2];
    assert.equal(percentile(v, 0), 1);
    assert.equal(percentile(v, 100), 4);
    assert.equal(percentile(v, 50), 2.5);
    assert.equal(percentile(v, 25), 1.75);
    const hundredAndOne = Array.from({ length: 101 }, (_, i) => i);
    assert.equal(percentile(hundredAndOne, 99), 99);
    assert.throws(() => percentile(v, 101), /percentile/);
    const s = kldStats([0, 0.1, 0.2, 0.3, 4]);
    assert.equal(s.max, 4);
    assert.equal(s.min, 0);
    assert.equal(s.median, 0.2);
    close(s.mean, 0.92);
    close(s.p99, 0.3 + 0.96 * 3.7, 1e-12);
  });

  it('mean and standard error of the mean', () => {
    assert.equal(mean([1, 2, 3, 4]), 2.5);
    close(standardError([1, 2, 3, 4]), Math.sqrt(5 / 12));
    assert.equal(standardError([5]), 0);
  });

  it('exact match trims whitespace but nothing else; recovery is candidate / baseline × 100', () => {
    assert.ok(exactMatch(' Saturday\n', 'Saturday'));
    assert.ok(!exactMatch('saturday', 'Saturday'));
    assert.ok(!exactMatch('Saturday.', 'Saturday'));
    assert.equal(recoveryPercent(0.6, 0.8), 75);
    assert.equal(recoveryPercent(0.9, 0.8), 112.5);
    assert.equal(recoveryPercent(0.5, 0), undefined);
  });

  it('windows: BOS + context−1 text tokens each, so every text token is scored once (a BOS in the text excepted)', () => {
    const ids = [10, 11, 12, 13, 14, 15, 16];
    assert.deepEqual(cutIntoWindows(ids, 4, 1), [
      [1, 10, 11, 12],
      [1, 13, 14, 15],
      [1, 16],
    ]);
    // A window whose text starts with BOS (a document start) takes it as its own: context, not a target.
    assert.deepEqual(cutIntoWindows([1, 10, 11, 1, 12, 13, 14], 4, 1), [
      [1, 10, 11],
      [1, 12, 13],
      [1, 14],
    ]);
    // Without BOS the first token of each window has no context; a lone remainder is dropped.
    assert.deepEqual(cutIntoWindows(ids, 4), [
      [10, 11, 12, 13],
      [14, 15, 16],
    ]);
    assert.deepEqual(cutIntoWindows([...ids, 17, 18], 4), [
      [10, 11, 12, 13],
      [14, 15, 16, 17],
    ]);
    assert.throws(() => cutIntoWindows(ids, 1), /context length/);
  });

  it('task files: one {prompt, answer} per line, errors name the line', () => {
    assert.deepEqual(parseTasksJsonl('{"prompt":"Q: 1+1?\\nA:","answer":"2","id":7}\n\n{"prompt":"x","answer":""}\n'), [
      { prompt: 'Q: 1+1?\nA:', answer: '2' },
      { prompt: 'x', answer: '' },
    ]);
    assert.throws(() => parseTasksJsonl('{"prompt":"a","answer":"b"}\n{"prompt":"a"}', 't.jsonl'), /t\.jsonl line 2: expected an object with string fields "prompt" and "answer"/);
    assert.throws(() => parseTasksJsonl('{oops', 't.jsonl'), /t\.jsonl line 1: not valid JSON/);
    assert.throws(() => parseTasksJsonl('\n', 't.jsonl'), /no tasks/);
  });
});
