// CPU backend ops against direct, naive formulas (the HF fixtures check them composed; these pin
// the parts fixtures cannot reach, like sliding-window attention).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { Rng } from '../src/engine/rng.js';
import { bf16ToF32, f32ToBf16 } from '../src/model/load/dtype.js';
import { decodeE4m3, encodeE4m3 } from '../src/quant/fp8-e4m3.js';

const be = new CpuBackend();
const rng = new Rng(7);
const rand = (n: number) => Float32Array.from({ length: n }, () => rng.next() * 2 - 1);

describe('cpu backend', () => {
  it('attention with GQA and a sliding window equals a naive softmax over the window', () => {
    const heads = 4, kvHeads = 2, headDim = 8, blockSize = 4, len = 11, window = 5;
    const cache = be.allocKvCache({ numLayers: 1, numBlocks: 8, blockSize, numKvHeads: kvHeads, headDim });
    // Scatter the sequence over non-contiguous blocks to exercise the block table.
    const blocks = [5, 2, 7];
    const slots = Int32Array.from({ length: len }, (_, p) => blocks[Math.floor(p / blockSize)] * blockSize + (p % blockSize));
    const k = rand(len * kvHeads * headDim);
    const v = rand(len * kvHeads * headDim);
    be.writeKv(cache, 0, be.fromHost(k, [len, kvHeads * headDim]), be.fromHost(v, [len, kvHeads * headDim]), slots);
    const q = rand(len * heads * headDim);
    const batch = { numTokens: len, numSeqs: 1, positions: Int32Array.from({ length: len }, (_, i) => i), seqIndex: new Int32Array(len), slots, blockTables: Int32Array.from(blocks), maxBlocksPerSeq: 3 };
    const scale = 0.3;
    for (const win of [0, window]) {
      const out = be.toHost(be.attention(be.fromHost(q, [len, heads * headDim]), cache, 0, batch, scale, win));
      for (let t = 0; t < len; t++) {
        for (let h = 0; h < heads; h++) {
          const kvh = Math.floor(h / 2);
          const js = [];
          for (let j = win ? Math.max(0, t - win + 1) : 0; j <= t; j++) js.push(j);
          const s = js.map((j) => scale * Array.from({ length: headDim }, (_, d) => q[(t * heads + h) * headDim + d] * k[(j * kvHeads + kvh) * headDim + d]).reduce((a, b) => a + b));
          const m = Math.max(...s);
          const e = s.map((x) => Math.exp(x - m));
          const z = e.reduce((a, b) => a + b);
          for (let d = 0; d < headDim; d++) {
            const want = js.reduce((acc, j, i) => acc + (e[i] / z) * v[(j * kvHeads + kvh) * headDim + d], 0);
            assert.ok(Math.abs(out[(t * heads + h) * headDim + d] - want) < 1e-5, `window ${win} token ${t} head ${h} dim ${d}`);
          }
        }
      }
    }
  });

  it('a bf16 KV cache: half the bytes, K and V rounded to nearest even once, attention exactly as over float32 copies of the rounded values; block copies move them', () => {
    const heads = 4, kvHeads = 2, headDim = 8, blockSize = 4, len = 11;
    const spec = { numLayers: 2, numBlocks: 8, blockSize, numKvHeads: kvHeads, headDim };
    const bf = new CpuBackend({ kvDtype: 'bf16' }).allocKvCache(spec); // the backend's default dtype
    const f32 = be.allocKvCache(spec);
    assert.equal(bf.dtype, 'bf16');
    assert.equal(f32.dtype, 'float32');
    assert.equal(bf.bytes * 2, f32.bytes);
    assert.equal(be.allocKvCache({ ...spec, dtype: 'bf16' }).dtype, 'bf16', 'a spec names its own dtype');
    const blocks = [5, 2, 7];
    const slots = Int32Array.from({ length: len }, (_, p) => blocks[Math.floor(p / blockSize)] * blockSize + (p % blockSize));
    const k = rand(len * kvHeads * headDim);
    const v = rand(len * kvHeads * headDim);
    // Ties round to even: 1 + 2⁻⁸ (halfway between 1 and 1 + 2⁻⁷) → 1, 1 + 3·2⁻⁸ → 1 + 2⁻⁶.
    k[0] = 1 + 2 ** -8;
    k[1] = 1 + 3 * 2 ** -8;
    const rounded = (x: Float32Array) => x.map((y) => bf16ToF32(f32ToBf16(y)));
    assert.deepEqual([rounded(k)[0], rounded(k)[1]], [1, 1 + 2 ** -6]);
    const width = kvHeads * headDim;
    be.writeKv(bf, 1, be.fromHost(k, [len, width]), be.fromHost(v, [len, width]), slots);
    be.writeKv(f32, 1, be.fromHost(rounded(k), [len, width]), be.fromHost(rounded(v), [len, width]), slots);
    const q = rand(len * heads * headDim);
    const batch = { numTokens: len, numSeqs: 1, positions: Int32Array.from({ length: len }, (_, i) => i), seqIndex: new Int32Array(len), slots, blockTables: Int32Array.from(blocks), maxBlocksPerSeq: 3 };
    const attend = (cache: typeof bf, b = batch) => be.toHost(be.attention(be.fromHost(q, [len, heads * headDim]), cache, 1, b, 0.3, 0));
    const want = attend(f32);
    assert.deepEqual(attend(bf), want);
    // Differs from attention over the unrounded values (the rounding happened).
    const exact = be.allocKvCache(spec);
    be.writeKv(exact, 1, be.fromHost(k, [len, width]), be.fromHost(v, [len, width]), slots);
    assert.notDeepEqual(attend(exact), want);
    // Blocks 5, 2, 7 copied to 0, 1, 3: the same attention through the new table.
    be.copyKvBlocks(bf, [[5, 0], [2, 1], [7, 3]]);
    assert.deepEqual(attend(bf, { ...batch, blockTables: Int32Array.from([0, 1, 3]) }), want);
  });

  it('an fp8 KV cache: a quarter of the bytes, E4M3 codes rounded to nearest even and saturated at ±448, attention exactly as over their values', () => {
    const heads = 2, kvHeads = 1, headDim = 8, blockSize = 4, len = 6;
    const spec = { numLayers: 1, numBlocks: 4, blockSize, numKvHeads: kvHeads, headDim };
    const fp8 = be.allocKvCache({ ...spec, dtype: 'fp8' });
    const f32 = be.allocKvCache(spec);
    assert.equal(fp8.dtype, 'fp8');
    assert.equal(fp8.bytes * 4, f32.bytes);
    const slots = Int32Array.from({ length: len }, (_, p) => 4 + p); // blocks 1 and 2
    const k = rand(len * kvHeads * headDim);
    const v = rand(len * kvHeads * headDim);
    // 1 + 2⁻⁴ lies halfway between 1 and 1 + 2⁻³: to even, 1; 1 + 3·2⁻⁴ → 1 + 2⁻²; 1000 saturates to 448.
    k[0] = 1 + 2 ** -4;
    k[1] = 1 + 3 * 2 ** -4;
    v[2] = 1000;
    const rounded = (x: Float32Array) => x.map((y) => decodeE4m3(encodeE4m3(y)));
    assert.deepEqual([rounded(k)[0], rounded(k)[1], rounded(v)[2]], [1, 1.25, 448]);
    const width = kvHeads * headDim;
    be.writeKv(fp8, 0, be.fromHost(k, [len, width]), be.fromHost(v, [len, width]), slots);
    be.writeKv(f32, 0, be.fromHost(rounded(k), [len, width]), be.fromHost(rounded(v), [len, width]), slots);
    const q = rand(len * heads * headDim);
    const batch = { numTokens: len, numSeqs: 1, positions: Int32Array.from({ length: len }, (_, i) => i), seqIndex: new Int32Array(len), slots, blockTables: Int32Array.of(1, 2), maxBlocksPerSeq: 2 };
    const attend = (cache: typeof fp8, b = batch) => be.toHost(be.attention(be.fromHost(q, [len, heads * headDim]), cache, 0, b, 0.3, 0));
    const want = attend(f32);
    assert.deepEqual(attend(fp8), want);
    be.copyKvBlocks(fp8, [[1, 0], [2, 3]]);
    assert.deepEqual(attend(fp8, { ...batch, blockTables: Int32Array.of(0, 3) }), want);
  });

  it('an fp8 KV cache with calibrated scales stores e4m3(x / scale) per layer and attends over code · scale; other types ignore the scales', () => {
    const heads = 2, kvHeads = 1, headDim = 8, blockSize = 4, len = 6, width = kvHeads * headDim;
    // Layer 0 at scale 1, layer 1 with values far past ±448 that its scales bring into range.
    const scales = [{ k: 1, v: 1 }, { k: 8, v: 0.5 }];
    const spec = { numLayers: 2, numBlocks: 4, blockSize, numKvHeads: kvHeads, headDim, scales };
    const fp8 = be.allocKvCache({ ...spec, dtype: 'fp8' });
    const f32 = be.allocKvCache({ ...spec, dtype: 'float32' });
    const slots = Int32Array.from({ length: len }, (_, p) => 4 + p);
    const k = rand(len * width).map((x) => x * 2000);
    const v = rand(len * width).map((x) => x * 100);
    const q = rand(len * heads * headDim);
    const batch = { numTokens: len, numSeqs: 1, positions: Int32Array.from({ length: len }, (_, i) => i), seqIndex: new Int32Array(len), slots, blockTables: Int32Array.of(1, 2), maxBlocksPerSeq: 2 };
    const attend = (cache: typeof fp8, layer: number) => be.toHost(be.attention(be.fromHost(q, [len, heads * headDim]), cache, layer, batch, 0.0005, 0));
    for (const layer of [0, 1]) {
      be.writeKv(fp8, layer, be.fromHost(k, [len, width]), be.fromHost(v, [len, width]), slots);
      be.writeKv(f32, layer, be.fromHost(k, [len, width]), be.fromHost(v, [len, width]), slots);
    }
    // What the fp8 cache must hold, and the values attention reads back.
    const { k: ks, v: vs } = scales[1];
    const dequant = (x: Float32Array, s: number) => x.map((y) => Math.fround(decodeE4m3(encodeE4m3(Math.fround(y / s))) * s));
    const exact = be.allocKvCache({ ...spec, scales: undefined, dtype: 'float32' });
    be.writeKv(exact, 1, be.fromHost(dequant(k, ks), [len, width]), be.fromHost(dequant(v, vs), [len, width]), slots);
    assert.deepEqual(attend(fp8, 1), attend(exact, 1), 'layer 1 attends over e4m3(x / scale) · scale');
    // Scaled, layer 1 tracks the float cache; at scale 1 (layer 0) K saturates at 448 and attention drifts.
    const err = (layer: number) => {
      const got = attend(fp8, layer), want = attend(f32, layer);
      return Math.max(...got.map((g, i) => Math.abs(g - want[i]))) / Math.max(...want.map(Math.abs));
    };
    assert.ok(err(1) < 0.05, `scaled fp8 layer: relative error ${err(1)}`);
    assert.ok(err(0) > 5 * err(1), `unscaled layer saturates (${err(0)} vs ${err(1)})`);
    // A float32 cache ignores the scales: exactly the cache without them.
    const plain = be.allocKvCache({ ...spec, scales: undefined, dtype: 'float32' });
    be.writeKv(plain, 1, be.fromHost(k, [len, width]), be.fromHost(v, [len, width]), slots);
    assert.deepEqual(attend(f32, 1), attend(plain, 1));
  });

  it('rope rotates pairs (i, i + rotaryDim/2) and leaves the rest of a partial-rotary head alone', () => {
    const headDim = 8, rotaryDim = 4;
    const x = rand(2 * headDim);
    const orig = x.slice();
    const cos = Float32Array.from([Math.cos(0.5), Math.cos(0.25)]);
    const sin = Float32Array.from([Math.sin(0.5), Math.sin(0.25)]);
    be.rope(be.fromHost(x, [1, 2 * headDim]), headDim, rotaryDim, { cos, sin });
    for (const h of [0, 1]) {
      const b = h * headDim;
      for (let i = 0; i < 2; i++) {
        assert.ok(Math.abs(x[b + i] - (orig[b + i] * cos[i] - orig[b + i + 2] * sin[i])) < 1e-6);
        assert.ok(Math.abs(x[b + i + 2] - (orig[b + i + 2] * cos[i] + orig[b + i] * sin[i])) < 1e-6);
      }
      for (let i = rotaryDim; i < headDim; i++) assert.equal(x[b + i], orig[b + i]);
    }
  });

  it('linear with bias and rmsNorm match direct sums', () => {
    const W = rand(3 * 5), x = rand(2 * 5), b = rand(3), g = rand(5);
    const f32 = (a: Float32Array, shape: number[]) => be.loadDense('w', { dtype: 'F32', shape, bytes: new Uint8Array(a.slice().buffer) });
    const y = be.toHost(be.linear(be.fromHost(x, [2, 5]), f32(W, [3, 5]), f32(b, [3])));
    for (let r = 0; r < 2; r++) for (let o = 0; o < 3; o++) {
      const want = b[o] + Array.from({ length: 5 }, (_, i) => x[r * 5 + i] * W[o * 5 + i]).reduce((p, q) => p + q);
      assert.ok(Math.abs(y[r * 3 + o] - want) < 1e-6);
    }
    const n = be.toHost(be.rmsNorm(be.fromHost(x, [2, 5]), f32(g, [5]), 1e-6));
    for (let r = 0; r < 2; r++) {
      const ms = Array.from({ length: 5 }, (_, i) => x[r * 5 + i] ** 2).reduce((p, q) => p + q) / 5;
      for (let i = 0; i < 5; i++) assert.ok(Math.abs(n[r * 5 + i] - (x[r * 5 + i] / Math.sqrt(ms + 1e-6)) * g[i]) < 1e-5);
    }
  });

  it('linear is batch-invariant: each row bitwise equal to computing it alone', () => {
    for (const inDim of [7, 16]) {
      const W = rand(5 * inDim), x = rand(7 * inDim);
      const weight = be.loadDense('w', { dtype: 'F32', shape: [5, inDim], bytes: new Uint8Array(W.slice().buffer) });
      const all = be.toHost(be.linear(be.fromHost(x, [7, inDim]), weight));
      for (let r = 0; r < 7; r++) {
        const one = be.toHost(be.linear(be.fromHost(x.slice(r * inDim, (r + 1) * inDim), [1, inDim]), weight));
        assert.deepEqual(Array.from(all.subarray(r * 5, (r + 1) * 5)), Array.from(one), `row ${r}, in ${inDim}`);
      }
    }
  });
});
