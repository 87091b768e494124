// The tensor-core GEMV for fp8, int8 and nvfp4 weights (kernels/gemv-mma-q8.cu,
// QuantizedWeights.q8DecodeGemv) against the CPU's linearQuantized on fresh random weights and
// inputs, free memory poisoned. The kernel multiplies exact bf16 operands (e4m3 values, int8 codes,
// e2m1 · e4m3 block scale) by x rounded to bf16, sums in float32 and applies the row / global scale
// in float32 at the end, so against the CPU given the same bf16-rounded x it must agree to float32
// rounding (≤ 1e-5), and against the exact x to bf16's 2⁻⁹ (≤ 1e-2). One-hot inputs read every code
// back exactly (fp8 and e4m3 block-scale subnormals included). A token's result must be the same bits
// alone as in a batch of 8, K split over blocks or not. The default model quantized with fp8, w8a16
// and nvfp4 must give logits within 3e-2 of the FMA GEMV's. Without a GPU the CUDA suites skip with
// the reason; the dispatch rules run everywhere. (No TACHYON_DECODE_GEMV pin: the option under test
// is set explicitly.)

import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import type { Weight } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import type { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import type { Q8DecodeGemv } from '../src/backend/cuda/gemv-mma-q8.js';
import { CudaFp8Weight, CudaInt4Weight, CudaInt8Weight, CudaNvfp4Weight, QuantizedWeights, type QuantDeviceContext } from '../src/backend/cuda/quantized-weights.js';
import { LLM } from '../src/llm.js';
import { bf16ToF32, f32ToBf16 } from '../src/model/load/dtype.js';
import { dequantize, type QuantizedWeight } from '../src/quant/format.js';
import { E4M3_VALUES } from '../src/quant/fp8-e4m3.js';
import { createFp8Weight, quantizeFp8 } from '../src/quant/fp8.js';
import { createInt8Weight, quantizeInt8 } from '../src/quant/int8.js';
import { createNvfp4Weight, E2M1_VALUES, packE2m1, quantizeNvfp4 } from '../src/quant/nvfp4.js';
import type { QuantizationMethod } from '../src/quant/online.js';
import { assertStreamedIsClassic, classicName, comparisons, launchesOf, openTestGpu, testRandom } from './support/cuda.js';
import { ModelRunner } from './support/run-model.js';

// The modules load without a GPU (the dispatch rules are checked everywhere); the driver only on use.
const mmaQ8 = await import('../src/backend/cuda/gemv-mma-q8.js').catch(() => undefined);
const { gpu, skipReason } = await openTestGpu();

const cpu = new CpuBackend();
const { seed: SEED, uniform, randInt } = testRandom();
const { assertClose, assertBitwise } = comparisons(SEED);
const roundBf16 = (a: Float32Array) => a.map((v) => bf16ToF32(f32ToBf16(v)));
const f32Tensor = (v: Float32Array, shape: number[]) => ({ dtype: 'F32' as const, shape, bytes: new Uint8Array(v.buffer, v.byteOffset, v.byteLength) });

type Variant = 'fp8 per-channel' | 'fp8 per-tensor' | 'int8' | 'nvfp4';
const VARIANTS: Variant[] = ['fp8 per-channel', 'fp8 per-tensor', 'int8', 'nvfp4'];
const kernelFormat = (v: Variant) => (v.startsWith('fp8') ? 'fp8' : v);
/** src/quant's own quantizers on fresh random weights. */
function quantize(v: Variant, N: number, K: number): QuantizedWeight {
  const w = uniform(N * K, -0.1, 0.1);
  switch (v) {
    case 'fp8 per-channel':
      return quantizeFp8(w, N, K, { perChannel: true });
    case 'fp8 per-tensor':
      return quantizeFp8(w, N, K, { perChannel: false });
    case 'int8':
      return quantizeInt8(w, N, K);
    case 'nvfp4':
      return quantizeNvfp4(w, N, K);
  }
}

describe('fp8/int8/nvfp4 mma GEMV dispatch rules (no GPU needed)', { skip: mmaQ8 ? false : 'the CUDA bindings did not load' }, () => {
  const shape = (format: string, N: number, K: number, hasNanCodes = false) => ({ format, shape: [N, K], hasNanCodes });

  it('takes fp8/int8 with K % 16 = 0 (fp8 without NaN codes) and every nvfp4 weight at 1..8 tokens; names why not otherwise', () => {
    const m = mmaQ8!;
    for (const f of ['fp8', 'int8', 'nvfp4']) {
      for (const T of [1, 3, 8]) assert.equal(m.q8MmaRefusal(shape(f, 75, 272), T), undefined, `${f} × ${T}`);
      assert.match(m.q8MmaRefusal(shape(f, 75, 256), 9)!, /9 tokens/);
      assert.match(m.q8MmaRefusal(shape(f, 75, 256), 0)!, /0 tokens/);
    }
    assert.match(m.q8MmaRefusal(shape('fp8', 75, 100), 1)!, /K = 100 is not a multiple of 16/);
    assert.match(m.q8MmaRefusal(shape('int8', 75, 100), 1)!, /K = 100 is not a multiple of 16/);
    assert.match(m.q8MmaRefusal(shape('fp8', 75, 256, true), 1)!, /NaN codes/);
    assert.match(m.q8MmaRefusal(shape('int4', 75, 256), 1)!, /format int4/);
  });

  it("'auto' takes matrices of up to 8192 rows, 'mma' every one it can, 'fma' none; never by the token count", () => {
    const m = mmaQ8!;
    for (const T of [1, 2, 8]) {
      assert.equal(m.q8MmaChosen('auto', shape('fp8', 8192, 4096), T), true);
      assert.equal(m.q8MmaChosen('auto', shape('nvfp4', 8193, 4096), T), false);
      assert.equal(m.q8MmaChosen('mma', shape('int8', 14336, 4096), T), true);
      assert.equal(m.q8MmaChosen('fma', shape('int8', 1024, 4096), T), false);
      assert.equal(m.q8MmaChosen('mma', shape('fp8', 1024, 4096, true), T), false);
      assert.equal(m.q8MmaChosen('auto', shape('int8', 1024, 100), T), false);
    }
  });

  it('plans two m-tiles only where every SM gets two blocks, and splits K only where the tiles are fewer than the SMs', () => {
    const m = mmaQ8!;
    assert.deepEqual(m.q8MmaPlan('fp8', 14336, 4096, 132), { rows: 2, splits: 1, tiles: 448 });
    assert.deepEqual(m.q8MmaPlan('int8', 4096, 14336, 132), { rows: 1, splits: 1, tiles: 256 });
    // 64 tiles: K = 4096 has 64 chunks of 64 columns (fp8/int8), 32 of 128 (nvfp4); each of a block's 8 warps keeps one.
    assert.deepEqual(m.q8MmaPlan('fp8', 1024, 4096, 132), { rows: 1, splits: 5, tiles: 64 });
    assert.deepEqual(m.q8MmaPlan('nvfp4', 1024, 4096, 132), { rows: 1, splits: 4, tiles: 64 });
    assert.deepEqual(m.q8MmaPlan('int8', 1024, 256, 132), { rows: 1, splits: 1, tiles: 64 });
    assert.deepEqual(m.q8MmaPlan('nvfp4', 75, 14336, 132), { rows: 1, splits: 14, tiles: 5 });
    assert.deepEqual(m.q8MmaPlan('fp8', 75, 14336, 132), { rows: 1, splits: 28, tiles: 5 });
  });

  it('$TACHYON_Q8_DECODE_GEMV: mma (the default; fma where $TACHYON_DECODE_GEMV pins fma), fma or auto, anything else named', () => {
    const m = mmaQ8!;
    assert.equal(m.q8DecodeGemvFromEnv({}), 'mma');
    assert.equal(m.q8DecodeGemvFromEnv({ TACHYON_DECODE_GEMV: 'fma' }), 'fma');
    assert.equal(m.q8DecodeGemvFromEnv({ TACHYON_DECODE_GEMV: 'fma', TACHYON_Q8_DECODE_GEMV: 'mma' }), 'mma');
    assert.equal(m.q8DecodeGemvFromEnv({ TACHYON_Q8_DECODE_GEMV: 'auto' }), 'auto');
    assert.equal(m.q8DecodeGemvFromEnv({ TACHYON_Q8_DECODE_GEMV: 'fma' }), 'fma');
    assert.throws(() => m.q8DecodeGemvFromEnv({ TACHYON_Q8_DECODE_GEMV: 'tensor' }), /TACHYON_Q8_DECODE_GEMV must be fma, mma or auto, got 'tensor'/);
  });

  it('an engine of one token a step takes the FMA GEMVs, of more the tensor-core ones; the environment wins', () => {
    const noDevice = new Proxy({}, { get: () => { throw new Error('no device in this test'); } }) as QuantDeviceContext;
    const quant = new QuantizedWeights(noDevice);
    quant.chooseDecodeGemvs(1, {});
    assert.deepEqual([quant.decodeGemv, quant.q8DecodeGemv, quant.streamOneToken], ['fma', 'fma', true], 'one token: FMA, int4 on the streamed kernels where they apply');
    quant.chooseDecodeGemvs(8, {});
    assert.deepEqual([quant.decodeGemv, quant.q8DecodeGemv, quant.streamOneToken], ['mma', 'mma', false]);
    for (const env of [{ TACHYON_DECODE_GEMV: 'fma' }, { TACHYON_QUANT_DECODE_GEMV: 'fma' }, { TACHYON_Q8_DECODE_GEMV: 'auto' }]) {
      quant.chooseDecodeGemvs(1, env);
      assert.deepEqual([quant.decodeGemv, quant.q8DecodeGemv], ['mma', 'mma'], JSON.stringify(env));
    }
  });

  it('streams nvfp4 (sm_90+, K % 256 = 0) on a ring of 4 stages where it fits, else 2, or says no', () => {
    const m = mmaQ8!;
    const h100 = { computeCapability: 90, sharedPerBlockOptin: 232448, streamTokens: 8 };
    // A stage's row: 2,112 bytes of codes and 272 of block scales; stages of 16 rows (32 for gate and up).
    const stage = 16 * 2384;
    // Then x as bf16 (a row a token, 16 bytes of padding each) and the splits' sums (4 KiB a split and m-tile).
    const xRow = (K: number) => 2 * K + 16;
    const plan = (shared: number, stages: number) => ({ shared, stages });
    assert.deepEqual(m.nvfp4StreamPlan(h100, 4096, 1, 1), plan(4 * stage + xRow(4096) + 4096, 4));
    assert.deepEqual(m.nvfp4StreamPlan(h100, 4096, 1, 8), plan(4 * stage + 8 * xRow(4096) + 4096, 4), '8 tokens at K 4096');
    assert.deepEqual(m.nvfp4StreamPlan(h100, 4096, 1, 4, 4), plan(4 * stage + 4 * xRow(4096) + 4 * 4096, 4), 'a plan of 4 splits');
    assert.deepEqual(m.nvfp4StreamPlan(h100, 4096, 1, 8, 4), plan(2 * stage + 8 * xRow(4096) + 4 * 4096, 2), '8 tokens and 4 splits: 2 stages');
    assert.deepEqual(m.nvfp4StreamPlan(h100, 4096, 2, 8), plan(2 * 2 * stage + 8 * xRow(4096) + 8192, 2), 'gate and up at 8 tokens');
    assert.deepEqual(m.nvfp4StreamPlan(h100, 14336, 1, 2), plan(4 * stage + 2 * xRow(14336) + 4096, 4));
    assert.deepEqual(m.nvfp4StreamPlan(h100, 14336, 1, 5), plan(2 * stage + 5 * xRow(14336) + 4096, 2), 'K 14336 up to 5 tokens on 2 stages');
    assert.equal(m.nvfp4StreamPlan(h100, 14336, 1, 6), undefined, '6 tokens at K 14336 do not fit');
    assert.equal(m.nvfp4StreamPlan(h100, 4112, 1, 1), undefined, 'K % 256 ≠ 0: padded tiles');
    assert.equal(m.nvfp4StreamPlan(h100, 4096, 1, 9), undefined, 'a launch takes at most 8');
    assert.equal(m.nvfp4StreamPlan({ ...h100, streamTokens: 4 }, 4096, 1, 5), undefined, 'no more tokens than the launcher allows');
    assert.equal(m.nvfp4StreamPlan({ ...h100, streamTokens: 0 }, 4096, 1, 1), undefined, 'turned off');
    assert.equal(m.nvfp4StreamPlan({ ...h100, computeCapability: 87 }, 4096, 1, 1), undefined, 'Orin: no bulk copies');
  });

  it('an engine of one token a step runs nvfp4 weights the streamed kernels take on them (sm_90+), fp8 and int8 on FMA', () => {
    const ctx = (computeCapability: number) =>
      new Proxy({}, {
        get: (_, prop) => {
          if (prop === 'driver') return { device: { multiprocessors: 132, computeCapability, sharedPerBlockOptin: 232448 } };
          throw new Error('no device in this test');
        },
      }) as QuantDeviceContext;
    const nvfp4 = (rows: number, cols: number) => new CudaNvfp4Weight(rows, cols, 1, Math.ceil(cols / 256) * 32, 2, 3, 1, 1);
    const quant = new QuantizedWeights(ctx(90));
    quant.chooseDecodeGemvs(1, {});
    quant.streamed = true;
    assert.equal(quant.takesMma(nvfp4(4096, 4096), 1), true, 'q/o');
    assert.equal(quant.takesMma(nvfp4(1024, 4096), 1), true, 'k/v (K split in 4)');
    assert.equal(quant.takesMma(nvfp4(4096, 14336), 1), true, 'down');
    assert.equal(quant.takesMma(nvfp4(64, 4112), 1), false, 'K % 256 ≠ 0: FMA');
    assert.equal(quant.takesMma(new CudaFp8Weight(4096, 4096, 1, 2, 4096 * 4096, false), 1), false, 'fp8: FMA');
    assert.equal(quant.takesMma(new CudaInt8Weight(4096, 4096, 1, 2, 4096 * 4096), 1), false, 'int8: FMA');
    quant.streamed = false;
    assert.equal(quant.takesMma(nvfp4(4096, 4096), 1), false, 'streaming off: FMA');
    const orin = new QuantizedWeights(ctx(87));
    orin.chooseDecodeGemvs(1, {});
    assert.equal(orin.takesMma(nvfp4(4096, 4096), 1), false, 'sm_87: FMA');
    orin.chooseDecodeGemvs(8, {});
    assert.equal(orin.takesMma(nvfp4(4096, 4096), 1), true, 'more tokens a step: the tensor cores');
  });

  it('QuantizedWeights: weights on the mma GEMV take its fused kernels where the plans fit (q/k/v at one m-tile a block, gate/up at two); int4 keeps its own setting', () => {
    // takesMma and fusedFormat read only the weights' descriptions and the SM count: no device is
    // touched (the context throws if anything else is used).
    const noDevice = new Proxy({}, {
      get: (_, prop) => {
        if (prop === 'driver') return { device: { multiprocessors: 132 } };
        throw new Error('no device in this test');
      },
    }) as QuantDeviceContext;
    const quant = new QuantizedWeights(noDevice);
    const fp8 = (rows: number, cols: number, nan = false) => new CudaFp8Weight(rows, cols, 1, 2, rows * cols, nan);
    const int8 = (rows: number, cols: number) => new CudaInt8Weight(rows, cols, 1, 2, rows * cols);
    const nvfp4 = (rows: number, cols: number) => new CudaNvfp4Weight(rows, cols, 1, Math.ceil(cols / 256) * 32, 2, 3, 1, 1);
    const int4 = (rows: number, cols: number) =>
      new CudaInt4Weight({ rows, cols, layout: 'tiled', packed: 1, wordsPerRow: Math.ceil(cols / 256) * 32, groupSize: 128, numGroups: Math.ceil(cols / 128), groupShift: 7, scales: 2, zeros: 0, perm: 0, gIdx: 0 }, 1);
    quant.decodeGemv = 'fma';
    quant.q8DecodeGemv = 'fma';
    assert.equal(quant.takesMma(fp8(64, 512), 1), false);
    assert.equal(quant.fusedFormat([fp8(256, 512), fp8(64, 512)], 512), 'fp8');
    quant.q8DecodeGemv = 'mma';
    for (const T of [1, 8]) {
      assert.equal(quant.takesMma(fp8(64, 512), T), true);
      assert.equal(quant.takesMma(int8(64, 512), T), true);
      assert.equal(quant.takesMma(nvfp4(64, 512), T), true);
      assert.equal(quant.takesMma(fp8(64, 512, true), T), false, 'NaN codes: the exact kernel');
      assert.equal(quant.takesMma(int8(64, 100), T), false, 'K % 16 ≠ 0: the exact kernel');
      assert.equal(quant.takesMma(int4(64, 512), T), false, "int4 follows decodeGemv ('fma' here)");
    }
    assert.equal(quant.fusedFormat([fp8(256, 512), fp8(64, 512)], 512), 'fp8');
    assert.equal(quant.fusedFormat([int8(256, 512), int8(64, 512), int8(64, 512)], 512), 'int8');
    assert.equal(quant.fusedFormat([nvfp4(96, 512), nvfp4(96, 512)], 512), 'nvfp4');
    assert.equal(quant.fusedFormat([fp8(64, 512), int8(64, 512)], 512), undefined, 'two formats');
    assert.equal(quant.fusedFormat([fp8(9000, 512), fp8(64, 512)], 512), undefined, 'q planned at two m-tiles a block: apart');
    assert.equal(quant.fusedFormat([fp8(14336, 4096), fp8(14336, 4096)], 4096, 'silu'), 'fp8');
    assert.equal(quant.fusedFormat([nvfp4(14336, 4096), nvfp4(14336, 4096)], 4096, 'silu'), 'nvfp4');
    assert.equal(quant.fusedFormat([fp8(200, 512), fp8(200, 512)], 512, 'silu'), undefined, 'one m-tile a block: gate and up apart');
    assert.equal(quant.fusedFormat([int4(96, 512), int4(96, 512)], 512), 'int4');
    assert.equal(quant.fusedFormat([fp8(64, 512, true), fp8(64, 512, true)], 512), undefined, 'NaN codes: the exact kernel has no fused form either');
    quant.q8DecodeGemv = 'auto';
    assert.equal(quant.takesMma(int8(8192, 512), 3), true);
    assert.equal(quant.takesMma(int8(8193, 512), 3), false);
    assert.equal(quant.fusedFormat([int8(14336, 512), int8(14336, 512)], 512), 'int8', 'taller matrices keep the fused FMA kernel');
  });
});

describe('fp8/int8/nvfp4 mma GEMV on CUDA against the CPU', { skip: skipReason }, () => {
  const be = () => gpu!;
  const fresh = async () => {
    await nextTurn();
    be().poisonFreeMemory();
  };
  after(() => {
    if (gpu) gpu.quantized.q8DecodeGemv = 'fma';
  });
  /** Runs fn with q8DecodeGemv set, then back to 'fma'. */
  const withSetting = <R>(setting: Q8DecodeGemv, fn: () => R): R => {
    be().quantized.q8DecodeGemv = setting;
    try {
      return fn();
    } finally {
      be().quantized.q8DecodeGemv = 'fma';
    }
  };
  const load = (q: QuantizedWeight) => ({ q, c: cpu.loadQuantized('w', q), g: be().loadQuantized('w', q) });
  const vec = (n: number) => {
    const b = uniform(n, -2, 2);
    return { c: cpu.loadDense('b', f32Tensor(b, [n])), g: be().loadDense('b', f32Tensor(b, [n])) };
  };
  const gpuLinear = (x: Float32Array, T: number, w: Weight, b?: Weight) => be().toHost(be().linear(be().fromHost(x, [T, x.length / T]), w, b));

  const SHAPES: [number, number][] = [
    [75, 256], // one tile; K split over blocks
    [333, 320], // K % 64 = 0 but nvfp4's second tile is three quarters padding
    [129, 272], // K % 64 = 16 (a last chunk of 16 columns; nvfp4: one 16-column block in the second tile)
    [45, 4096],
    [2200, 512], // more tiles than SMs: no split
    [77, 4112], // K % 64 = 16, split
    [67, 14336],
  ];
  for (const v of VARIANTS) {
    it(`linear, ${v}: T 1/2/3/5/8, odd N, K % 64 ≠ 0, ± bias; ≤ 1e-5 on bf16-rounded x, ≤ 1e-2 on exact x`, async () => {
      for (const [N, K] of SHAPES) {
        const w = load(quantize(v, N, K));
        const b = vec(N);
        for (const T of [1, 2, 3, 5, 8]) {
          for (const withBias of [false, true]) {
            const what = `${v} [${N}, ${K}] × ${T}${withBias ? ' + bias' : ''}`;
            const x = uniform(T * K);
            const want = (xs: Float32Array) => cpu.toHost(cpu.linear(cpu.fromHost(xs.slice(), [T, K]), w.c, withBias ? b.c : undefined));
            await fresh();
            let got: Float32Array = new Float32Array();
            const names = withSetting('mma', () => launchesOf(be(), () => (got = gpuLinear(x, T, w.g, withBias ? b.g : undefined))));
            assert.deepEqual(names.filter((n) => !n.startsWith('gemv_mma_')), [], `${what}: only the mma kernel runs (${names.join(', ')})`);
            assert.ok(names.some((n) => classicName(n).startsWith(`gemv_mma_${kernelFormat(v)}_r`)), `${what}: launches ${names.join(', ')}`);
            assertClose(got, want(roundBf16(x)), 1e-5, `${what} vs the CPU on bf16-rounded x`);
            assertClose(got, want(x), 1e-2, `${what} vs the CPU on exact x`);
          }
        }
      }
    });
  }

  it('every code reads back exactly: one-hot x gives each weight value (fp8 and block-scale subnormals, int8 −128..127, all e2m1 codes)', async () => {
    const N = 32;
    const K = 256;
    // Codes cycling over every value (fp8: every code but the NaNs 0x7f / 0xff, each row shifted).
    const fp8Codes = Uint8Array.from({ length: N * K }, (_, i) => {
      const c = (Math.floor(i / K) * 7 + (i % K)) % 256;
      return (c & 0x7f) === 0x7f ? c ^ 0x01 : c;
    });
    const fp8 = createFp8Weight(N, K, fp8Codes, uniform(N, 0.5, 2));
    const int8 = createInt8Weight(N, K, Int8Array.from({ length: N * K }, (_, i) => ((Math.floor(i / K) * 5 + (i % K)) % 256) - 128), uniform(N, 0.001, 0.01));
    const e2m1 = Uint8Array.from({ length: N * K }, (_, i) => (Math.floor(i / K) + (i % K)) % 16);
    // Block scales: every E4M3 code but the NaNs, 0x00 (a zero scale) and the subnormals 0x01..0x07 included.
    const blockCodes = Uint8Array.from({ length: (N * K) / 16 }, (_, i) => {
      const c = (i * 3) % 256;
      return (c & 0x7f) === 0x7f ? c ^ 0x01 : c;
    });
    const globalScale = Math.fround(0.37);
    const nvfp4 = createNvfp4Weight(N, K, packE2m1(e2m1), blockCodes, globalScale);
    // The one-hot sum has a single nonzero term, exact in float32; then × scale rounds once, as the
    // CPU's e4m3 · scale (fp8), code · scale (int8); nvfp4: fround(e2m1 · e4m3 · globalScale) exactly.
    const exactNvfp4 = (n: number, k: number) => Math.fround(E2M1_VALUES[e2m1[n * K + k]] * E4M3_VALUES[blockCodes[(n * K + k) >> 4]] * globalScale);
    for (const [name, q] of [['fp8', fp8], ['int8', int8], ['nvfp4', nvfp4]] as const) {
      const w = be().loadQuantized('w', q);
      const ref = dequantize(q);
      for (let k0 = 0; k0 < K; k0 += 8) {
        const x = new Float32Array(8 * K);
        for (let t = 0; t < 8; t++) x[t * K + k0 + t] = 1;
        await fresh();
        const y = withSetting('mma', () => gpuLinear(x, 8, w));
        for (let t = 0; t < 8; t++) {
          const k = k0 + t;
          for (let n = 0; n < N; n++) {
            const want = name === 'nvfp4' ? exactNvfp4(n, k) : ref[n * K + k];
            // === : a −0 weight gives +0 (the sum starts from +0), which is the same value.
            assert.ok(y[t * N + n] === want, `${name} row ${n} column ${k}: ${y[t * N + n]}, expected ${want}`);
          }
        }
      }
    }
  });

  it('a token alone gives the same bits as in a batch of 8 (with and without split K); twice the same bits', async () => {
    for (const v of VARIANTS) {
      for (const [N, K] of [[75, 4096], [2200, 512], [1024, 4096]] as const) {
        const w = load(quantize(v, N, K));
        const b = vec(N);
        const x = uniform(8 * K);
        await fresh();
        const batch = withSetting('mma', () => gpuLinear(x, 8, w.g, b.g));
        for (const t of [0, 3, 7]) {
          await fresh();
          const alone = withSetting('mma', () => gpuLinear(x.slice(t * K, (t + 1) * K), 1, w.g, b.g));
          assertBitwise(alone, batch.slice(t * N, (t + 1) * N), `${v} [${N}, ${K}] token ${t} alone vs in a batch of 8`);
        }
        await fresh();
        const three = withSetting('mma', () => gpuLinear(x.slice(0, 3 * K), 3, w.g, b.g));
        assertBitwise(three, batch.slice(0, 3 * N), `${v} [${N}, ${K}] tokens 0..2 as a batch of 3`);
        // Again, the same bits (the split-K counters were reset).
        await fresh();
        assertBitwise(withSetting('mma', () => gpuLinear(x, 8, w.g, b.g)), batch, `${v} [${N}, ${K}] a second run`);
      }
    }
  });

  it("which kernels run: 'fma' the v2 kernels, 'mma' the tensor cores, 'auto' by rows; NaN codes and K % 16 ≠ 0 the exact kernels", async () => {
    const run = (setting: Q8DecodeGemv, w: Weight, T: number) => {
      const K = w.shape[1];
      return withSetting(setting, () => launchesOf(be(), () => void gpuLinear(uniform(T * K), T, w)));
    };
    for (const v of VARIANTS) {
      const f = kernelFormat(v);
      const small = load(quantize(v, 96, 256)).g;
      const tall = load(quantize(v, 8200, 64)).g; // over 8192 rows
      for (const T of [1, 4, 8]) {
        await fresh();
        assert.ok(run('fma', small, T).every((n) => n.startsWith(`qgemv2_${f}_`)), `${v} 'fma' × ${T}`);
        assert.ok(run('mma', small, T).every((n) => classicName(n).startsWith(`gemv_mma_${f}_r`)), `${v} 'mma' × ${T}`);
        assert.ok(run('auto', small, T).every((n) => classicName(n).startsWith(`gemv_mma_${f}_r`)), `${v} 'auto' small × ${T}`);
        assert.ok(run('mma', tall, T).every((n) => classicName(n).startsWith(`gemv_mma_${f}_r`)), `${v} 'mma' tall × ${T}`);
        assert.ok(run('auto', tall, T).every((n) => n.startsWith(`qgemv2_${f}_`)), `${v} 'auto' tall × ${T}`);
      }
    }
    // An fp8 weight holding a NaN code, and K = 100: the exact kernels, whatever the setting.
    const codes = quantizeFp8(uniform(64 * 256), 64, 256);
    const nanCodes = codes.codes.slice();
    nanCodes[77] = 0x7f;
    const withNan = be().loadQuantized('w', createFp8Weight(64, 256, nanCodes, codes.scales));
    assert.deepEqual(run('mma', withNan, 3), ['qgemv_exact_fp8']);
    for (const v of ['fp8 per-channel', 'int8'] as const) {
      const odd = load(quantize(v, 64, 100));
      assert.deepEqual(run('mma', odd.g, 3), [`qgemv_exact_${kernelFormat(v)}`]);
      const x = uniform(3 * 100);
      await fresh();
      assertClose(withSetting('mma', () => gpuLinear(x, 3, odd.g)), cpu.toHost(cpu.linear(cpu.fromHost(x, [3, 100]), odd.c)), 2e-5, `${v} K = 100 on the exact kernel`);
    }
  });

  it('linearMany and linearSiluMul on mma: one fused launch where the plans allow, bitwise the separate mma linears (and silu_mul); no FMA GEMV', async () => {
    // Gate/up fuse where the single kernel plans two m-tiles a block (⌈N / 32⌉ ≥ 2 · SMs): N = 64 · SMs.
    const tall = 64 * be().device.multiprocessors;
    for (const v of VARIANTS) {
      const format = v.startsWith('fp8') ? 'fp8' : v;
      for (const K of [512, 4096]) {
        // K 4096: the 32- and 40-row matrices split K over blocks.
        const ws = [load(quantize(v, 96, K)), load(quantize(v, 32, K)), load(quantize(v, 40, K))];
        const biases = [vec(96), undefined, vec(40)];
        const pairs = K === 512 ? [[load(quantize(v, 200, K)), load(quantize(v, 200, K))], [load(quantize(v, tall, K)), load(quantize(v, tall, K))]] : [];
        const bg = vec(tall);
        for (const T of [1, 5, 8]) {
          const what = `${v} K ${K} × ${T}`;
          const x = uniform(T * K);
          await fresh();
          const names = withSetting('mma', () => {
            const many = launchesOf(be(), () => {
              const ys = be().linearMany(be().fromHost(x, [T, K]), ws.map((w) => w.g), biases.map((b) => b?.g)).map((y) => be().toHost(y));
              const sep = ws.map((w, i) => gpuLinear(x, T, w.g, biases[i]?.g));
              ys.forEach((y, i) => assertBitwise(y, sep[i], `${what} linearMany output ${i}`));
            });
            assert.equal(many.filter((n) => classicName(n) === `gemv_mma_${format}many`).length, 1, `${what}: linearMany launches ${many.join(', ')}`);
            const silus = pairs.map(([gate, up]) => {
              const N = gate.q.rows;
              const b = N === tall ? bg.g : undefined;
              let silu: Float32Array = new Float32Array();
              const launched = launchesOf(be(), () => (silu = be().toHost(be().linearSiluMul(be().fromHost(x, [T, K]), gate.g, up.g, b))));
              const ref = be().toHost(be().siluMul(be().linear(be().fromHost(x, [T, K]), gate.g, b), be().linear(be().fromHost(x, [T, K]), up.g)));
              assertBitwise(silu, ref, `${what} linearSiluMul [${N}, ${K}]`);
              const fused = launched.filter((n) => classicName(n) === `gemv_mma_${format}silu`).length;
              assert.equal(fused, N === tall ? 1 : 0, `${what} [${N}, ${K}]: ${launched.join(', ')}`);
              return launched;
            });
            return [...many, ...silus.flat()];
          });
          assert.ok(!names.some((n) => n.startsWith('qgemv')), `${what}: no FMA GEMV launch: ${names.join(', ')}`);
        }
      }
    }
  });
  it("nvfp4's streamed kernels (sm_90+) give bitwise the classic kernels' outputs: linear (one and two m-tiles an item), linearMany, linearSiluMul, split K", async (t) => {
    if (be().device.computeCapability < 90) return t.skip(`sm_${be().device.computeCapability} has no bulk copies: the streamed kernels are not made`);
    const onMma = <R>(fn: () => R) => withSetting('mma', fn);
    const compare = (what: string, fn: () => Float32Array[], streams = true) => assertStreamedIsClassic(be(), SEED, onMma, what, fn, streams);
    const SMs = be().device.multiprocessors;
    const nv = (N: number, K: number) => load(quantizeNvfp4(uniform(N * K, -0.1, 0.1), N, K));
    const linear = (w: ReturnType<typeof nv>, x: Float32Array, T: number, b?: Weight) => () => [gpuLinear(x, T, w.g, b)];
    // [N, K, tokens]: one m-tile an item, unsplit (16·SMs rows and more); two (64·SMs rows and more:
    // the plan's two m-tiles a block); K 14336 (3.5 stages); K 8192 (two stages) of 1,600 rows in 3
    // splits of 22 chunks, so a group of 4 chunks straddles the stages; 1,600 rows at K 4096 in 3
    // splits of 11 (groups cut short); [1024, 8192] in 5 splits of 13 (70B's k and v); [75, 6144] in 6.
    const cases: [number, number, number[]][] = [
      [16 * SMs + 40, 4096, [1, 3, 8]],
      [64 * SMs + 40, 4096, [1, 8]],
      [16 * SMs + 1, 14336, [1, 2]],
      [1600, 8192, [1, 3]],
      [1600, 4096, [1, 5]],
      [1024, 8192, [1, 2]],
      [75, 6144, [1]],
    ];
    for (const [N, K, tokens] of cases) {
      const w = nv(N, K);
      const b = vec(N);
      for (const T of tokens) await compare(`linear [${N}, ${K}] × ${T}`, linear(w, uniform(T * K), T, b.g));
    }
    const K = 4096;
    const qkv = [nv(16 * SMs + 8, K), nv(64, K), nv(40, K)]; // k and v of 64 and 40 rows split K in 4
    const bq = vec(16 * SMs + 8);
    const gate = nv(64 * SMs, K);
    const up = nv(64 * SMs, K);
    const bg = vec(64 * SMs);
    for (const T of [1, 4, 8]) {
      const x = uniform(T * K);
      // (At 8 tokens x and 4 splits' sums leave room for a ring of 2 stages only.)
      await compare(`q/k/v with split k, v × ${T}`, () => be().linearMany(be().fromHost(x, [T, K]), qkv.map((q) => q.g), [bq.g, undefined, undefined]).map((y) => be().toHost(y)));
      await compare(`gate/up·SiLU × ${T}`, () => [be().toHost(be().linearSiluMul(be().fromHost(x, [T, K]), gate.g, up.g, bg.g))]);
    }
    const w14 = nv(16 * SMs, 14336);
    await compare('5 tokens at K 14336 (2 stages)', linear(w14, uniform(5 * 14336), 5));
    await compare('6 tokens at K 14336 (x does not fit)', linear(w14, uniform(6 * 14336), 6), false);
    const padded = nv(16 * SMs, 4352 + 16);
    await compare('K % 256 ≠ 0', linear(padded, uniform(4368), 1), false);
  });
});

describe('the default model with --quantization fp8 / w8a16 / nvfp4 on the mma GEMV', { skip: skipReason }, () => {
  for (const method of ['fp8', 'w8a16', 'nvfp4'] as QuantizationMethod[]) {
    it(`${method}: logits of 8-token prompts within 3e-2 of the FMA GEMV's, the mma kernel doing the quantized linears`, async () => {
      const m = await LLM.load({ device: 'cuda', quantization: method });
      try {
        const model = m.loaded.model;
        const be = model.backend as CudaBackend;
        const c = model.config;
        // Every row's logits of a prompt from position 0, in a fresh cache.
        const logitsOf = (tokens: number[]) => new ModelRunner(model, 1, 16).step([{ seq: 0, start: 0, tokens }])[0];
        const format = method === 'w8a16' ? 'int8' : method;
        for (let p = 0; p < 2; p++) {
          const tokens = Array.from({ length: 8 }, () => randInt(c.vocabSize));
          await nextTurn();
          be.poisonFreeMemory();
          be.quantized.q8DecodeGemv = 'fma';
          const fma = logitsOf(tokens).slice();
          await nextTurn();
          be.poisonFreeMemory();
          be.quantized.q8DecodeGemv = 'mma';
          let mmaLogits: Float32Array = new Float32Array();
          let names: string[] = [];
          try {
            names = launchesOf(be, () => (mmaLogits = logitsOf(tokens).slice()));
          } finally {
            be.quantized.q8DecodeGemv = 'fma';
          }
          // A layer: q/k/v in one launch, o, gate, up and down (gate/up fuse only where two m-tiles a block are planned: taller models).
          assert.equal(names.filter((n) => classicName(n) === `gemv_mma_${format}many`).length, c.numLayers, `q/k/v fused on mma: ${[...new Set(names)].join(', ')}`);
          assert.ok(names.filter((n) => classicName(n).startsWith(`gemv_mma_${format}_r`)).length >= 4 * c.numLayers, `the ${format} linears on mma: ${[...new Set(names)].join(', ')}`);
          assert.ok(!names.some((n) => n.startsWith('qgemv')), `no FMA ${format} GEMV: ${[...new Set(names)].join(', ')}`);
          // Every quantized linear rounds its input to bf16 (2⁻⁹ each, 7 a layer).
          assertClose(mmaLogits, fma, 3e-2, `${method} prompt ${p}: logits on the mma GEMV vs FMA`);
        }
      } finally {
        await m.close();
      }
    });
  }
});
