// The shared range-check loop (src/int32-bounds.ts) against plain reductions on random arrays.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { firstOutside, int32Bounds } from '../src/int32-bounds.js';
import { testRandom } from './support/cuda.js';

const { seed: SEED, rng } = testRandom();

describe('int32Bounds / firstOutside', () => {
  it('give the smallest and largest value and the first value out of range', () => {
    for (let trial = 0; trial < 100; trial++) {
      const n = Math.floor(rng.next() * 300);
      const a = Int32Array.from({ length: n + 5 }, () => Math.floor((rng.next() - 0.3) * 2 ** 31));
      const { min, max } = int32Bounds(a, n);
      const head = Array.from(a.subarray(0, n));
      assert.equal(min, n ? Math.min(...head) : Infinity, `seed ${SEED}`);
      assert.equal(max, n ? Math.max(...head) : -Infinity, `seed ${SEED}`);
      assert.deepEqual(int32Bounds(a), { min: Math.min(...a), max: Math.max(...a) }, `seed ${SEED}`);
      const lo = -(2 ** 29), hi = 2 ** 30;
      assert.equal(firstOutside(a, lo, hi, n), head.findIndex((v) => v < lo || v >= hi), `seed ${SEED}`);
    }
  });
});
