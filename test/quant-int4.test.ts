// W4A16 int4 weights: the pack-quantized nibble order, llm-compressor's symmetric (amax/7.5) and
// asymmetric conventions on hand-computed groups, round-trip error, linear, and act-order g_idx.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Rng } from '../src/engine/rng.js';
import { assertClose, denseLinear, randomWeightsFrom } from './support/quant-weights.js';
import { dequantize, linearQuantized } from '../src/quant/format.js';
import { createInt4Weight, dequantizeInt4, linearInt4, packInt4, quantizeInt4, unpackInt4, type Int4Weight } from '../src/quant/int4.js';

const rng = new Rng(4);
const randomWeights = (rows: number, cols: number) => randomWeightsFrom(rng, rows, cols);

/** Like randomWeights but shifted, so asymmetric groups get min ≠ −max and non-trivial zero points. */
function skewedWeights(rows: number, cols: number): Float32Array {
  return randomWeights(rows, cols).map((v, i) => v + (i % 3 === 0 ? 0.7 : 0.2) * Math.abs(v) + 0.001);
}

const groupIndex = (w: Int4Weight, row: number, col: number) => row * w.numGroups + (w.gIdx ? w.gIdx[col] : Math.floor(col / w.groupSize));

describe('int4 packing', () => {
  it('puts column i at bits 4·(i%8) of word i/8, lowest column in the lowest nibble', () => {
    const codes = Uint8Array.from({ length: 16 }, (_, i) => i);
    assert.deepEqual([...packInt4(codes, 1, 16)], [0x76543210, 0xfedcba98]);
    // 10 columns: the second word holds two codes and zero padding; two rows do not share words.
    const twoRows = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 0, 0, 0, 0, 0, 0, 0, 0, 12);
    const packed = packInt4(twoRows, 2, 10);
    assert.deepEqual([...packed], [0x87654321, 0x000000a9, 0x0000000f, 0x000000c0]);
    assert.deepEqual([...unpackInt4(packed, 2, 10)], [...twoRows]);
  });

  it('round-trips every code at every nibble position and rejects codes over 15', () => {
    const codes = Uint8Array.from({ length: 8 * 16 }, (_, i) => (i * 7 + (i >> 3)) % 16);
    assert.deepEqual(unpackInt4(packInt4(codes, 8, 16), 8, 16), codes);
    assert.throws(() => packInt4(Uint8Array.of(16), 1, 1), /4 bits/);
  });
});

describe('int4 weights', () => {
  it('symmetric: s = amax/7.5, q = clamp(round-half-even(w/s), −8, 7), stored as q + 8', () => {
    // Group 0 has amax 7.5 → s = 1; group 1 has amax 15 → s = 2.
    const w = Float32Array.of(7.5, -7.5, 0.5, 1.5, -2.5, 3.49, 6.6, -0.4, 15, 1, 3, 5, -7, -15, 13.9, 0.2);
    const q = quantizeInt4(w, 1, 16, { groupSize: 8 });
    assert.deepEqual([...q.scales], [1, 2]);
    assert.equal(q.zeros, undefined);
    const codes = [15, 0, 8, 10, 6, 11, 15, 8, 15, 8, 10, 10, 4, 0, 15, 8];
    assert.deepEqual([...unpackInt4(q.packed, 1, 16)], codes);
    assert.deepEqual([...dequantizeInt4(q)], [7, -8, 0, 2, -2, 3, 7, 0, 14, 0, 4, 4, -8, -16, 14, 0]);
    assert.equal(q.bytes, 2 * 4 + 2 * 4);
  });

  it('asymmetric: s = (max − min)/15 over a range containing 0, zero = round(−min/s)', () => {
    // Group 0: min −3, max 12 → s = 1, zero = 3. Group 1: all positive, so min widens to 0: s = 0.5, zero 0.
    const w = Float32Array.of(-3, 12, 0.5, 1.5, -2.5, 4.4, 7, 1, 7.5, 0.5, 0.75, 1.75, 3.75, 0.25, 2, 0.1);
    const q = quantizeInt4(w, 1, 16, { groupSize: 8, symmetric: false });
    assert.deepEqual([...q.scales], [1, 0.5]);
    assert.deepEqual([...q.zeros!], [3, 0]);
    // Group 0: u = round(w + 3), ties to even: 3.5 → 4, 4.5 → 4, 0.5 → 0.
    // Group 1: u = round(w / 0.5), ties to even: 1.5 → 2, 3.5 → 4, 7.5 → 8, 0.5 → 0.
    assert.deepEqual([...unpackInt4(q.packed, 1, 16)], [0, 15, 4, 4, 0, 7, 10, 4, 15, 1, 2, 4, 8, 0, 4, 0]);
    assert.deepEqual([...dequantizeInt4(q)], [-3, 12, 1, 1, -3, 4, 7, 1, 7.5, 0.5, 1, 2, 4, 0, 2, 0]);
    assert.equal(q.bytes, 2 * 4 + 2 * 4 + 2);
  });

  for (const [label, groupSize, symmetric] of [
    ['symmetric, group 32 (partial last group, cols not a multiple of 8)', 32, true],
    ['symmetric, per channel', -1, true],
    ['asymmetric, group 16', 16, false],
  ] as const) {
    it(`round-trips random weights within half a step of their group (${label})`, () => {
      const rows = 12, cols = 100;
      const w = symmetric ? randomWeights(rows, cols) : skewedWeights(rows, cols);
      const q = quantizeInt4(w, rows, cols, { groupSize, symmetric });
      assert.equal(q.numGroups, groupSize === -1 ? 1 : Math.ceil(cols / groupSize));
      const back = dequantize(q);
      for (let r = 0; r < rows; r++) {
        for (let i = 0; i < cols; i++) {
          const s = q.scales[groupIndex(q, r, i)];
          assert.ok(Math.abs(back[r * cols + i] - w[r * cols + i]) <= (s / 2) * (1 + 1e-5), `row ${r} col ${i}`);
        }
      }
      if (symmetric) {
        // The scale really is the group's amax / 7.5.
        for (let r = 0; r < rows; r++) {
          const amax = new Float64Array(q.numGroups);
          for (let i = 0; i < cols; i++) amax[groupIndex(q, r, i) - r * q.numGroups] = Math.max(amax[groupIndex(q, r, i) - r * q.numGroups], Math.abs(w[r * cols + i]));
          amax.forEach((a, g) => assert.equal(q.scales[r * q.numGroups + g], Math.fround(a / 7.5), `row ${r} group ${g}`));
        }
      }
    });

    it(`linear from the packed words equals a dense linear over dequantize (${label})`, () => {
      const rows = 17, cols = 100, nTokens = 4;
      const q = quantizeInt4(symmetric ? randomWeights(rows, cols) : skewedWeights(rows, cols), rows, cols, { groupSize, symmetric });
      const x = randomWeights(nTokens, cols);
      const expected = denseLinear(x, nTokens, dequantizeInt4(q), rows, cols);
      assertClose(linearInt4(x, nTokens, q), expected, 1e-5);
      assertClose(linearQuantized(x, nTokens, q), expected, 1e-5);
    });
  }

  for (const symmetric of [true, false]) {
    it(`act-order: g_idx over permuted columns equals the unpermuted contiguous layout (${symmetric ? 'symmetric' : 'asymmetric'})`, () => {
      const rows = 6, cols = 64, groupSize = 16, nTokens = 3;
      const w = symmetric ? randomWeights(rows, cols) : skewedWeights(rows, cols);
      // perm[j] = the original column stored at position j of the act-order (contiguous-group) layout.
      const perm = Int32Array.from({ length: cols }, (_, i) => i);
      for (let i = cols - 1; i > 0; i--) {
        const j = Math.floor(rng.next() * (i + 1));
        [perm[i], perm[j]] = [perm[j], perm[i]];
      }
      const permuted = new Float32Array(rows * cols);
      for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) permuted[r * cols + j] = w[r * cols + perm[j]];
      const gIdx = new Int32Array(cols);
      for (let j = 0; j < cols; j++) gIdx[perm[j]] = Math.floor(j / groupSize);

      const contiguous = quantizeInt4(permuted, rows, cols, { groupSize, symmetric });
      const actOrder = quantizeInt4(w, rows, cols, { groupSize, symmetric, gIdx });
      assert.deepEqual(actOrder.scales, contiguous.scales);
      assert.deepEqual(actOrder.zeros, contiguous.zeros);
      assert.ok(actOrder.gIdx === gIdx && contiguous.gIdx === undefined);
      assert.equal(actOrder.bytes, contiguous.bytes + cols * 4);

      const codesA = unpackInt4(actOrder.packed, rows, cols);
      const codesC = unpackInt4(contiguous.packed, rows, cols);
      const backA = dequantizeInt4(actOrder);
      const backC = dequantizeInt4(contiguous);
      for (let r = 0; r < rows; r++) {
        for (let j = 0; j < cols; j++) {
          assert.equal(codesA[r * cols + perm[j]], codesC[r * cols + j]);
          assert.equal(backA[r * cols + perm[j]], backC[r * cols + j]);
        }
      }

      const x = randomWeights(nTokens, cols);
      const xPermuted = new Float32Array(nTokens * cols);
      for (let t = 0; t < nTokens; t++) for (let j = 0; j < cols; j++) xPermuted[t * cols + j] = x[t * cols + perm[j]];
      assertClose(linearInt4(x, nTokens, actOrder), linearInt4(xPermuted, nTokens, contiguous), 1e-6);
      // And the g_idx really matters: ignoring it would give a different matrix.
      const ignoringGIdx = dequantizeInt4({ ...actOrder, gIdx: undefined });
      assert.ok(ignoringGIdx.some((v, i) => v !== backA[i]));
    });
  }

  it('an all-zero group gets a positive scale and stays exactly zero', () => {
    const w = new Float32Array(16);
    w.fill(0.5, 8);
    for (const symmetric of [true, false]) {
      const q = quantizeInt4(w, 1, 16, { groupSize: 8, symmetric });
      assert.ok(q.scales[0] > 0);
      assert.deepEqual([...dequantizeInt4(q)].slice(0, 8), new Array(8).fill(0));
    }
  });

  it('rejects arrays that do not match the shape, bad zero points and bad g_idx', () => {
    const parts = { rows: 2, cols: 16, groupSize: 8, packed: new Uint32Array(4), scales: new Float32Array(4) };
    assert.doesNotThrow(() => createInt4Weight(parts));
    assert.throws(() => createInt4Weight({ ...parts, packed: new Uint32Array(3) }), /packed/);
    assert.throws(() => createInt4Weight({ ...parts, scales: new Float32Array(2) }), /scales/);
    assert.throws(() => createInt4Weight({ ...parts, zeros: Uint8Array.of(0, 1, 16, 2) }), /zero point 16/);
    assert.throws(() => createInt4Weight({ ...parts, gIdx: new Int32Array(16).fill(2) }), /g_idx\[0\] = 2/);
    assert.throws(() => createInt4Weight({ ...parts, groupSize: 0 }), /group size/);
    assert.throws(() => quantizeInt4(new Float32Array(16), 1, 16, { groupSize: 8, gIdx: new Int32Array(15) }), /g_idx has 15/);
  });
});
