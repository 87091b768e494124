// W8A16 int8 weights: the symmetric per-channel convention (s = amax/127, half-to-even rounding) on
// hand-computed rows, round-trip error on random weights, and linear straight from the codes.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Rng } from '../src/engine/rng.js';
import { assertClose, denseLinear, randomWeightsFrom } from './support/quant-weights.js';
import { dequantize, linearQuantized } from '../src/quant/format.js';
import { createInt8Weight, dequantizeInt8, linearInt8, quantizeInt8 } from '../src/quant/int8.js';
import { roundHalfToEven } from '../src/quant/rounding.js';

const rng = new Rng(88);
const randomWeights = (rows: number, cols: number) => randomWeightsFrom(rng, rows, cols);

describe('round half to even', () => {
  it('rounds ties to the even integer and everything else to the nearest', () => {
    const cases: Array<[number, number]> = [
      [0.5, 0], [1.5, 2], [2.5, 2], [-0.5, 0], [-1.5, -2], [-2.5, -2], [126.5, 126], [127.5, 128],
      [0.49999999999999994, 0], [2.5000000000000004, 3], [-3.7, -4], [3.2, 3],
    ];
    for (const [x, want] of cases) assert.equal(roundHalfToEven(x), want, `${x}`);
  });
});

describe('int8 weights', () => {
  it('quantizes hand-computed rows: s = amax/127, ties to even', () => {
    // Row 0: amax 127 → s = 1. Row 1: amax 254 → s = 2, so 5 → 2.5 → 2 and 7 → 3.5 → 4.
    const w = Float32Array.of(127, -63.5, 0.5, 1.5, 2.5, -2.5, -127, 3.49, 254, 5, 7, -1, -3, 100.2, 0.9, -254);
    const q = quantizeInt8(w, 2, 8);
    assert.deepEqual([...q.scales], [1, 2]);
    assert.deepEqual([...q.codes], [127, -64, 0, 2, 2, -2, -127, 3, 127, 2, 4, 0, -2, 50, 0, -127]);
    assert.deepEqual([...dequantizeInt8(q)], [127, -64, 0, 2, 2, -2, -127, 3, 254, 4, 8, 0, -4, 100, 0, -254]);
    assert.equal(q.bytes, 16 + 2 * 4);
  });

  it('round-trips random weights within half a step, with each row reaching ±127', () => {
    const rows = 20, cols = 77;
    const w = randomWeights(rows, cols);
    const q = quantizeInt8(w, rows, cols);
    const back = dequantize(q);
    for (let r = 0; r < rows; r++) {
      const s = q.scales[r];
      let amax = 0;
      for (let i = r * cols; i < (r + 1) * cols; i++) amax = Math.max(amax, Math.abs(w[i]));
      assert.equal(s, Math.fround(amax / 127), `row ${r} scale`);
      let maxCode = 0;
      for (let i = r * cols; i < (r + 1) * cols; i++) {
        assert.ok(Math.abs(back[i] - w[i]) <= (s / 2) * (1 + 1e-6), `row ${r} col ${i - r * cols}`);
        maxCode = Math.max(maxCode, Math.abs(q.codes[i]));
      }
      assert.equal(maxCode, 127, `row ${r} uses the full range`);
    }
  });

  it('linear from the codes equals a dense linear over dequantize', () => {
    const rows = 31, cols = 77, nTokens = 6;
    const q = quantizeInt8(randomWeights(rows, cols), rows, cols);
    const x = randomWeights(nTokens, cols);
    const expected = denseLinear(x, nTokens, dequantizeInt8(q), rows, cols);
    assertClose(linearInt8(x, nTokens, q), expected, 1e-5);
    assertClose(linearQuantized(x, nTokens, q), expected, 1e-5);
  });

  it('an all-zero row gets a positive scale and stays exactly zero', () => {
    const q = quantizeInt8(Float32Array.of(0, 0, 0, 0.5, -1, 0.25), 2, 3);
    assert.ok(q.scales[0] > 0);
    assert.deepEqual([...dequantizeInt8(q)].slice(0, 3), [0, 0, 0]);
  });

  it('rejects codes and scales that do not match the shape', () => {
    assert.throws(() => createInt8Weight(2, 3, new Int8Array(7), new Float32Array(2)), /codes/);
    assert.throws(() => createInt8Weight(2, 3, new Int8Array(6), new Float32Array(1)), /scales/);
  });
});
