// FP8 E4M3FN / E5M2 element codecs against their bit-field definitions (formats.md §6), and FP8
// weights (per-channel and per-tensor scales) for round-trip error and linear from the codes.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Rng } from '../src/engine/rng.js';
import { assertClose, denseLinear, randomWeightsFrom } from './support/quant-weights.js';
import {
  E4M3_VALUES,
  decodeE4m3,
  decodeE5m2,
  encodeE4m3,
  encodeE4m3Unsaturated,
  encodeE5m2,
  encodeE5m2Unsaturated,
} from '../src/quant/fp8-e4m3.js';
import { createFp8Weight, dequantizeFp8, linearFp8, quantizeFp8 } from '../src/quant/fp8.js';
import { dequantize, linearQuantized } from '../src/quant/format.js';

/** Spec formula, written independently of the implementation: (−1)^S · 2^(E−bias) · (1 + M/2^m). */
function minifloatFromFields(code: number, exponentBits: number, mantissaBits: number, bias: number): number {
  const sign = code >> (exponentBits + mantissaBits) ? -1 : 1;
  const e = (code >> mantissaBits) & ((1 << exponentBits) - 1);
  const m = code & ((1 << mantissaBits) - 1);
  if (e === 0) return sign * 2 ** (1 - bias) * (m / 2 ** mantissaBits);
  return sign * 2 ** (e - bias) * (1 + m / 2 ** mantissaBits);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
/** The float32 neighbour of a positive float32 value, one ulp up (+1) or down (−1). */
function float32Step(x: number, direction: 1 | -1): number {
  f32[0] = x;
  u32[0] += direction;
  return f32[0];
}

const isNanE4m3 = (c: number) => (c & 0x7f) === 0x7f;

describe('E4M3FN codes', () => {
  it('every one of the 256 codes decodes to the value of its bit fields', () => {
    for (let c = 0; c < 256; c++) {
      if (isNanE4m3(c)) {
        assert.ok(Number.isNaN(decodeE4m3(c)), `code 0x${c.toString(16)} is NaN`);
        continue;
      }
      assert.ok(Object.is(decodeE4m3(c), minifloatFromFields(c, 4, 3, 7)), `code 0x${c.toString(16)}`);
    }
  });

  it('matches the table in formats.md §6', () => {
    const table: Array<[number, number]> = [
      [0x38, 1], [0x30, 0.5], [0x40, 2], [0x46, 3.5], [0x7e, 448], [0xfe, -448],
      [0x08, 2 ** -6], [0x01, 2 ** -9], [0x07, 7 * 2 ** -9], [0x00, 0],
    ];
    for (const [code, value] of table) assert.equal(decodeE4m3(code), value, `0x${code.toString(16)}`);
    assert.ok(Object.is(decodeE4m3(0x80), -0));
  });

  it('encode(decode(c)) == c for every non-NaN code, ±0 included', () => {
    for (let c = 0; c < 256; c++) {
      if (isNanE4m3(c)) continue;
      assert.equal(encodeE4m3(decodeE4m3(c)), c, `saturating, code 0x${c.toString(16)}`);
      assert.equal(encodeE4m3Unsaturated(decodeE4m3(c)), c, `torch cast, code 0x${c.toString(16)}`);
    }
  });

  it('an exact tie between neighbouring codes goes to the even code; one ulp off it does not', () => {
    for (let c = 0; c < 0x7e; c++) {
      const low = E4M3_VALUES[c];
      const high = E4M3_VALUES[c + 1];
      const mid = (low + high) / 2;
      assert.equal(Math.fround(mid), mid, 'midpoints are float32 values');
      const even = c % 2 === 0 ? c : c + 1;
      assert.equal(encodeE4m3(mid), even, `tie between 0x${c.toString(16)} and 0x${(c + 1).toString(16)}`);
      assert.equal(encodeE4m3(-mid), 0x80 | even, 'negative tie');
      assert.equal(encodeE4m3(float32Step(mid, 1)), c + 1, 'just above the tie');
      assert.equal(encodeE4m3(float32Step(mid, -1)), c, 'just below the tie');
    }
  });

  it('values below half the smallest subnormal flush to ±0', () => {
    assert.equal(encodeE4m3(2 ** -10), 0x00); // tie between 0 and 2^-9 → even (0)
    assert.equal(encodeE4m3(-(2 ** -10)), 0x80);
    assert.equal(encodeE4m3(1e-30), 0x00);
    assert.equal(encodeE4m3(float32Step(2 ** -10, 1)), 0x01);
    assert.equal(encodeE4m3(3 * 2 ** -10), 0x02); // tie between codes 1 and 2 → 2
  });

  it('saturates beyond ±448 and maps NaN to the NaN code', () => {
    for (const x of [448, 449, 464, 465, 479, 480, 1e6, Infinity]) {
      assert.equal(encodeE4m3(x), 0x7e, `${x}`);
      assert.equal(encodeE4m3(-x), 0xfe, `${-x}`);
    }
    assert.equal(encodeE4m3(NaN), 0x7f);
  });

  it("reproduces torch's unsaturated cast: 448..464 → 448, above 464 → NaN", () => {
    assert.equal(encodeE4m3Unsaturated(464), 0x7e); // tie with the NaN pattern goes to even 0x7E
    assert.equal(encodeE4m3Unsaturated(float32Step(464, 1)), 0x7f);
    assert.equal(encodeE4m3Unsaturated(470), 0x7f);
    assert.equal(encodeE4m3Unsaturated(480), 0x7f);
    assert.equal(encodeE4m3Unsaturated(-1e9), 0xff);
    assert.equal(encodeE4m3Unsaturated(Infinity), 0x7f);
    assert.equal(encodeE4m3Unsaturated(NaN), 0x7f);
  });
});

describe('E5M2 codes', () => {
  it('every code decodes to its bit fields; 0x7C/0xFC are ±Inf, the rest of E=31 NaN', () => {
    for (let c = 0; c < 256; c++) {
      const e = (c >> 2) & 0x1f;
      if (e === 0x1f) {
        if ((c & 3) === 0) assert.equal(decodeE5m2(c), c & 0x80 ? -Infinity : Infinity);
        else assert.ok(Number.isNaN(decodeE5m2(c)));
        continue;
      }
      assert.ok(Object.is(decodeE5m2(c), minifloatFromFields(c, 5, 2, 15)), `code 0x${c.toString(16)}`);
    }
    assert.equal(decodeE5m2(0x3c), 1);
    assert.equal(decodeE5m2(0x7b), 57344);
    assert.equal(decodeE5m2(0x01), 2 ** -16);
  });

  it('encode(decode(c)) == c for every finite code and ties go to even', () => {
    for (let c = 0; c < 256; c++) {
      if (((c >> 2) & 0x1f) === 0x1f) continue;
      assert.equal(encodeE5m2(decodeE5m2(c)), c, `code 0x${c.toString(16)}`);
    }
    for (let c = 0; c < 0x7b; c++) {
      const mid = (decodeE5m2(c) + decodeE5m2(c + 1)) / 2;
      assert.equal(encodeE5m2(mid), c % 2 === 0 ? c : c + 1, `tie after 0x${c.toString(16)}`);
    }
  });

  it('saturating encode clamps to ±57344; the torch cast overflows to ±Inf', () => {
    assert.equal(encodeE5m2(1e9), 0x7b);
    assert.equal(encodeE5m2(-Infinity), 0xfb);
    assert.equal(encodeE5m2Unsaturated(61439), 0x7b);
    assert.equal(encodeE5m2Unsaturated(61440), 0x7c); // tie between 57344 (odd mantissa) and Inf
    assert.equal(encodeE5m2Unsaturated(-1e9), 0xfc);
    assert.equal(encodeE5m2(NaN), 0x7f);
  });
});

const rng = new Rng(1234);
const randomWeights = (rows: number, cols: number) => randomWeightsFrom(rng, rows, cols);

describe('FP8 weights', () => {
  it('quantizes a hand-computed row: s = amax/448, codes round to nearest', () => {
    // amax 7 → s = 7/448 = 2^-6 exactly; w/s = 224, −32, 448, 6.4 (→ 6.5, the nearer code).
    const q = quantizeFp8(Float32Array.of(3.5, -0.5, 7, 0.1), 1, 4);
    assert.deepEqual([...q.scales], [2 ** -6]);
    assert.deepEqual([...q.codes], [0x76, 0xe0, 0x7e, 0x4d]);
    assert.deepEqual([...dequantizeFp8(q)], [3.5, -0.5, 7, 6.5 * 2 ** -6]);
    assert.equal(q.bytes, 4 + 4);
  });

  for (const perChannel of [true, false]) {
    it(`round-trips random weights within the E4M3 step (${perChannel ? 'per channel' : 'per tensor'})`, () => {
      const rows = 24, cols = 70;
      const w = randomWeights(rows, cols);
      const q = quantizeFp8(w, rows, cols, { perChannel });
      assert.equal(q.scales.length, perChannel ? rows : 1);
      assert.equal(q.bytes, rows * cols + 4 * q.scales.length);
      const back = dequantize(q);
      for (let r = 0; r < rows; r++) {
        const s = q.scales[perChannel ? r : 0];
        let rowMaxCode = 0;
        for (let i = r * cols; i < (r + 1) * cols; i++) {
          const scaled = Math.abs(w[i] / s);
          const error = Math.abs(back[i] - w[i]);
          // Normal range: half an ulp of 3 mantissa bits is ≤ 2^-4 of the value; subnormal: 2^-10 absolute.
          if (scaled >= 2 ** -6) assert.ok(error <= 2 ** -4 * Math.abs(w[i]) * (1 + 1e-6), `row ${r} col ${i - r * cols}: ${back[i]} vs ${w[i]}`);
          else assert.ok(error <= 2 ** -10 * s * (1 + 1e-6));
          rowMaxCode = Math.max(rowMaxCode, q.codes[i] & 0x7f);
        }
        if (perChannel) assert.equal(rowMaxCode, 0x7e, `row ${r}: its amax lands on 448`);
      }
    });

    it(`linear from the codes equals a dense linear over dequantize (${perChannel ? 'per channel' : 'per tensor'})`, () => {
      const rows = 33, cols = 70, nTokens = 5;
      const q = quantizeFp8(randomWeights(rows, cols), rows, cols, { perChannel });
      const x = randomWeights(nTokens, cols);
      assertClose(linearFp8(x, nTokens, q), denseLinear(x, nTokens, dequantizeFp8(q), rows, cols), 1e-5);
      assertClose(linearQuantized(x, nTokens, q), denseLinear(x, nTokens, dequantize(q), rows, cols), 1e-5);
    });
  }

  it('an all-zero row gets a positive scale and stays exactly zero', () => {
    const q = quantizeFp8(Float32Array.of(0, 0, 1, -2), 2, 2);
    assert.ok(q.scales[0] > 0);
    assert.deepEqual([...dequantizeFp8(q)], [0, 0, 1, -2]);
  });

  it('rejects codes and scales that do not match the shape', () => {
    assert.throws(() => createFp8Weight(2, 3, new Uint8Array(5), new Float32Array(2)), /codes/);
    assert.throws(() => createFp8Weight(2, 3, new Uint8Array(6), new Float32Array(3)), /scales/);
    assert.throws(() => linearFp8(new Float32Array(5), 2, quantizeFp8(new Float32Array(6).fill(1), 2, 3)), /nTokens/);
  });
});
