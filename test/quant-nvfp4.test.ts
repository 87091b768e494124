// NVFP4 weights: the E2M1 grid and its ties, nibble order, ModelOpt's scale rules on a hand-computed
// tensor, the two global-scale conventions, round-trip error and linear from the packed codes.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Rng } from '../src/engine/rng.js';
import { assertClose, denseLinear, randomWeightsFrom } from './support/quant-weights.js';
import { E4M3_VALUES, encodeE4m3 } from '../src/quant/fp8-e4m3.js';
import { dequantize, linearQuantized } from '../src/quant/format.js';
import {
  E2M1_VALUES,
  createNvfp4Weight,
  decodeE2m1,
  dequantizeNvfp4,
  encodeE2m1,
  globalScaleFromCompressedTensors,
  globalScaleFromModelOpt,
  globalScaleToCompressedTensors,
  linearNvfp4,
  packE2m1,
  quantizeNvfp4,
  unpackE2m1,
} from '../src/quant/nvfp4.js';

const rng = new Rng(16);
const randomWeights = (rows: number, cols: number) => randomWeightsFrom(rng, rows, cols);

describe('E2M1 codes', () => {
  it('the 16 codes are 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives (from the bit fields)', () => {
    const magnitudes = [0, 0.5, 1, 1.5, 2, 3, 4, 6];
    for (let c = 0; c < 16; c++) {
      // S.EE.M, bias 1: E = 0 is subnormal (M·0.5), else 2^(E−1)·(1 + M/2).
      const e = (c >> 1) & 3, m = c & 1;
      const fromFields = (c & 8 ? -1 : 1) * (e === 0 ? m * 0.5 : 2 ** (e - 1) * (1 + m / 2));
      assert.ok(Object.is(decodeE2m1(c), fromFields), `code ${c}`);
      assert.equal(Math.abs(E2M1_VALUES[c]), magnitudes[c & 7]);
    }
    assert.ok(Object.is(decodeE2m1(8), -0));
  });

  it('encode(decode(c)) == c for every code but −0, which (like ModelOpt) encodes as +0', () => {
    for (let c = 0; c < 16; c++) assert.equal(encodeE2m1(decodeE2m1(c)), c === 8 ? 0 : c, `code ${c}`);
  });

  it('ties go to the even code, and one step off a tie goes to the nearer code', () => {
    const ties: Array<[number, number]> = [[0.25, 0], [0.75, 1], [1.25, 1], [1.75, 2], [2.5, 2], [3.5, 4], [5, 4]];
    for (const [x, value] of ties) {
      assert.equal(decodeE2m1(encodeE2m1(x)), value, `${x}`);
      assert.equal(decodeE2m1(encodeE2m1(-x)), -value, `${-x}`);
      assert.equal(encodeE2m1(x) % 2, 0, `${x} lands on an even code`);
      const above = decodeE2m1(encodeE2m1(x * (1 + 1e-6)));
      const below = decodeE2m1(encodeE2m1(x * (1 - 1e-6)));
      assert.ok(above > below, `${x} separates its neighbours`);
      assert.equal(above - below, [0.5, 0.5, 0.5, 0.5, 1, 1, 2][ties.findIndex(([t]) => t === x)]);
    }
  });

  it('saturates at ±6 and sends small negatives to −0 (code 8)', () => {
    assert.equal(encodeE2m1(6.1), 7);
    assert.equal(encodeE2m1(1e9), 7);
    assert.equal(encodeE2m1(-100), 15);
    assert.equal(encodeE2m1(-0.1), 8);
    assert.equal(encodeE2m1(0.2), 0);
  });

  it('packs two codes per byte, even index in the low nibble', () => {
    assert.deepEqual([...packE2m1(Uint8Array.of(1, 2, 3, 4, 15, 0))], [0x21, 0x43, 0x0f]);
    assert.deepEqual([...unpackE2m1(Uint8Array.of(0x21, 0x43, 0x0f))], [1, 2, 3, 4, 15, 0]);
    assert.throws(() => packE2m1(Uint8Array.of(1, 2, 3)), /whole bytes/);
  });
});

describe('NVFP4 weights', () => {
  it('quantizes a hand-computed tensor the way ModelOpt does', () => {
    const w = new Float32Array(80);
    // Block 0 holds the tensor amax 2688 = 6·448, so globalScale = 1 and this block's scale is 448.
    w.set([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.25, 0.75, -1.25, 1.75, 2.5, -3.5, 5, 5.9].map((v) => v * 448), 0);
    // Block 1: amax 30 → scale e4m3(5) = 5 exactly; w/5 walks the ties and small values of both signs.
    w.set([5, -30, 1.5, 14.5, 12.5, 17.5, 25, 1.25, 3.75, 6.25, 8.75, -2.5, -20, 10, 0.5, -0.5], 16);
    // Block 2: amax 7 → 7/6 = 1.1667 rounds to the E4M3 value 1.125, so 7/1.125 = 6.22 saturates to 6.
    w.set([7, -7, 1.125, 0.5625, 2.25, 3.375, 4.5, 6.75, 0.28125, 0.28125, 0.28125, 0.28125, 0.28125, 0.28125, 0.28125, 0.28125], 32);
    // Block 3 is all zero: scale 1.0. Block 4 is tiny: amax/6 underflows E4M3, so the scale is clamped to 2^-9.
    w.set([1e-4, -5e-5, 1e-5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2e-4], 64);
    const q = quantizeNvfp4(w, 1, 80);

    assert.equal(q.globalScale, 1);
    assert.deepEqual([...q.blockScales], [0x7e, 0x4a, 0x39, 0x38, 0x01]);
    assert.deepEqual([...q.blockScales].map((c) => E4M3_VALUES[c]), [448, 5, 1.125, 1, 2 ** -9]);
    const codes = unpackE2m1(q.packed);
    assert.deepEqual([...codes.subarray(0, 16)], [0, 1, 2, 3, 4, 5, 6, 7, 8, 2, 10, 4, 4, 14, 6, 7]);
    assert.deepEqual([...codes.subarray(16, 32)], [2, 15, 1, 5, 4, 6, 6, 0, 2, 2, 4, 9, 14, 4, 0, 8]);
    assert.deepEqual([...codes.subarray(32, 48)], [7, 15, 2, 1, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual([...codes.subarray(48, 64)], new Array(16).fill(0));
    // 2e-4 / 2^-9 = 0.1024 → 0; everything in the tiny block is below a quarter step.
    assert.deepEqual([...codes.subarray(64, 80)], [0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert.equal(q.packed[0], 0x10); // codes 0 (low) and 1 (high)
    assert.equal(q.packed[1], 0x32);

    const back = dequantizeNvfp4(q);
    assert.deepEqual([...back.subarray(32, 40)], [6.75, -6.75, 1.125, 0.5625, 2.25, 3.375, 4.5, 6.75]);
    assert.deepEqual([...back.subarray(16, 24)], [5, -30, 2.5, 15, 10, 20, 20, 0]);
    assert.equal(q.bytes, 40 + 5 + 4);
  });

  it('the global scale is amax/2688 and each block scale the E4M3 of amax_block/6/globalScale', () => {
    const rows = 6, cols = 64;
    const w = randomWeights(rows, cols);
    const q = quantizeNvfp4(w, rows, cols);
    const amax = w.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assert.equal(q.globalScale, Math.fround(amax / 2688));
    for (let b = 0; b < q.blockScales.length; b++) {
      let blockAmax = 0;
      for (let i = b * 16; i < (b + 1) * 16; i++) blockAmax = Math.max(blockAmax, Math.abs(w[i]));
      const expected = encodeE4m3(Math.fround(blockAmax / 6) / q.globalScale);
      assert.equal(q.blockScales[b], expected === 0 ? 0x01 : expected, `block ${b}`);
    }
  });

  it('round-trips random weights within half an E2M1 step times the block scale', () => {
    const rows = 16, cols = 128;
    const w = randomWeights(rows, cols);
    const q = quantizeNvfp4(w, rows, cols);
    const back = dequantize(q);
    for (let i = 0; i < w.length; i++) {
      const blockMultiplier = E4M3_VALUES[q.blockScales[Math.floor(i / 16)]] * q.globalScale;
      const v = Math.abs(w[i]) / blockMultiplier;
      const halfStep = v < 2 ? 0.25 : v < 4 ? 0.5 : 1;
      assert.ok(Math.abs(back[i] - w[i]) <= halfStep * blockMultiplier * (1 + 1e-5), `element ${i}: ${back[i]} vs ${w[i]}`);
    }
  });

  it('linear from the packed codes equals a dense linear over dequantize', () => {
    const rows = 19, cols = 96, nTokens = 5;
    const q = quantizeNvfp4(randomWeights(rows, cols), rows, cols);
    const x = randomWeights(nTokens, cols);
    const expected = denseLinear(x, nTokens, dequantizeNvfp4(q), rows, cols);
    assertClose(linearNvfp4(x, nTokens, q), expected, 1e-5);
    assertClose(linearQuantized(x, nTokens, q), expected, 1e-5);
  });

  it('ModelOpt weight_scale_2 multiplies; compressed-tensors weight_global_scale divides', () => {
    assert.equal(globalScaleFromModelOpt(0.25), 0.25);
    assert.equal(globalScaleFromCompressedTensors(4), 0.25);
    assert.equal(globalScaleToCompressedTensors(0.25), 4);
    // The same checkpoint bytes read through either convention give the same weights.
    const packed = packE2m1(Uint8Array.from({ length: 16 }, (_, i) => i));
    const blockScales = Uint8Array.of(0x40); // 2.0
    const fromModelOpt = dequantizeNvfp4(createNvfp4Weight(1, 16, packed, blockScales, globalScaleFromModelOpt(0.25)));
    const fromCompressedTensors = dequantizeNvfp4(createNvfp4Weight(1, 16, packed, blockScales, globalScaleFromCompressedTensors(4)));
    assert.deepEqual(fromModelOpt, fromCompressedTensors);
    assert.deepEqual([...fromModelOpt.subarray(0, 8)], [0, 0.25, 0.5, 0.75, 1, 1.5, 2, 3]);
    // compressed-tensors' own value for a quantized tensor is 2688/amax.
    const q = quantizeNvfp4(Float32Array.from({ length: 16 }, (_, i) => i - 5.5), 1, 16);
    assert.ok(Math.abs(globalScaleToCompressedTensors(q.globalScale) - 2688 / 9.5) < 1e-3);
    for (const bad of [0, -1, NaN, Infinity]) {
      assert.throws(() => globalScaleFromCompressedTensors(bad), /positive finite/);
      assert.throws(() => globalScaleFromModelOpt(bad), /positive finite/);
    }
  });

  it('rejects inputs whose width is not whole 16-element blocks, and mismatched arrays', () => {
    assert.throws(() => quantizeNvfp4(new Float32Array(24), 1, 24), /multiple of the 16/);
    assert.throws(() => createNvfp4Weight(1, 32, new Uint8Array(16), new Uint8Array(1), 1), /block scales/);
    assert.throws(() => createNvfp4Weight(1, 32, new Uint8Array(15), new Uint8Array(2), 1), /packed/);
  });
});
