// Quantized weights on the CUDA backend (fp8, int8, int4, nvfp4) against the CPU reference: every
// format and variant made by src/quant's own quantizers from fresh random weights, linear on 1 to 130
// tokens with and without bias, batch invariance, exact weightToHost, random weights made on the
// device, and the default model end to end with each --quantization method. Free pool buffers are
// poisoned with NaN before each op, so an output element a kernel never writes shows. The GPU suites
// skip, saying why, where no GPU, libcuda or NVRTC is present; the layout planning runs everywhere.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import type { Tensor, Weight } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import type { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import {
  CudaFp8Weight, CudaInt4Weight, CudaInt8Weight, CudaNvfp4Weight, nvfp4Multipliers, planInt4, quantGemvV2, quantizedBytes, QuantizedWeights,
  type CudaQuantizedWeight, type Int4DeviceParts, type QuantDeviceContext, type QuantGemvFormat,
} from '../src/backend/cuda/quantized-weights.js';
import { Rng } from '../src/engine/rng.js';
import { InvalidRequestError } from '../src/errors.js';
import { LLM } from '../src/llm.js';
import { bf16ToF32, f16ToF32, f32ToBf16 } from '../src/model/load/dtype.js';
import { dequantize, type QuantizedWeight } from '../src/quant/format.js';
import { E4M3_VALUES } from '../src/quant/fp8-e4m3.js';
import { quantizeFp8 } from '../src/quant/fp8.js';
import { quantizeInt4 } from '../src/quant/int4.js';
import { quantizeInt8 } from '../src/quant/int8.js';
import { quantizeNvfp4 } from '../src/quant/nvfp4.js';
import { QUANTIZATION_METHODS, quantizeWeight, type QuantizationMethod } from '../src/quant/online.js';
import { fixturesDir } from './support/paths.js';
import { randomWeightsFrom } from './support/quant-weights.js';

// Decode GEMVs take the float32 FMA kernels here, held to the float32 CPU; the tensor-core GEMV
// (x rounded to bf16) has its own bounds in cuda-gemv-mma.test.ts. Each file runs in its own process.
process.env.TACHYON_DECODE_GEMV = 'fma';

let gpu: CudaBackend | undefined;
let skipReason: string | false = false;
try {
  const cuda = await import('../src/backend/cuda/cuda-backend.js');
  const opened = cuda.openCudaBackend({ syncEveryLaunch: true });
  if ('backend' in opened) gpu = opened.backend;
  else skipReason = `no CUDA device: ${opened.reason}`;
} catch (err) {
  skipReason = `no CUDA device: the CUDA bindings did not load (${(err as Error).message.split('\n')[0]})`;
}

const cpu = new CpuBackend();
// Fresh inputs on every run; the seed is in every failure message so a failure can be replayed.
const SEED = Number(process.env.TACHYON_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
const rng = new Rng(SEED);
const uniform = (n: number, lo = -1, hi = 1) => Float32Array.from({ length: n }, () => lo + (hi - lo) * rng.next());

/** ‖a − b‖ / ‖b‖; a non-finite value in `a` fails. */
function relErr(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length, 'lengths differ');
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) return Infinity;
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

function assertClose(got: Float32Array, want: Float32Array, bound: number, what: string): void {
  const e = relErr(got, want);
  assert.ok(e <= bound, `${what}: relative error ${e.toExponential(2)} over ${bound.toExponential(0)} (seed ${SEED})`);
}

/**
 * Equal values element by element, as Object.is sees them: -0 ≠ 0, and any NaN equals any NaN (a GPU's
 * NaN has other bits than JavaScript's, which deepStrictEqual on a Float32Array would count).
 */
function assertSameValues(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: lengths differ`);
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i])) assert.fail(`${what}: element ${i} is ${Object.is(got[i], -0) ? '-0' : got[i]}, expected ${Object.is(want[i], -0) ? '-0' : want[i]}`);
  }
}

const roundBf16 = (a: Float32Array) => a.map((v) => bf16ToF32(f32ToBf16(v)));
const f32Tensor = (data: Float32Array, shape: number[]) => ({ dtype: 'F32', shape, bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
/** The CPU's float linear over given weight values (the reference for the bf16 prefill path). */
const cpuDense = (x: Float32Array, T: number, w: Float32Array, N: number, K: number, bias?: Weight) =>
  cpu.toHost(cpu.linear(cpu.fromHost(x, [T, K]), cpu.loadDense('w', f32Tensor(w, [N, K])), bias));

/** A random permutation of 0..n-1 (Fisher–Yates over the seeded stream). */
function shuffled(n: number): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

/** Act-order g_idx as GPTQ makes it: groups of exactly `groupSize` columns, in a shuffled column order. */
function shuffledGIdx(cols: number, groupSize: number): Int32Array {
  const order = shuffled(cols);
  const g = new Int32Array(cols);
  for (let i = 0; i < cols; i++) g[order[i]] = Math.floor(i / groupSize);
  return g;
}

interface Variant {
  name: string;
  /** Which kernel family the GEMV should take (documents the case; the weight decides). */
  path: 'fast' | 'exact';
  make(): QuantizedWeight;
}

/** Every format and variant, quantised by src/quant from random weights (row magnitudes over 3 decades). */
function variants(): Variant[] {
  const w = (rows: number, cols: number) => randomWeightsFrom(rng, rows, cols);
  const v: Variant[] = [];
  for (const perChannel of [true, false]) {
    const s = perChannel ? 'per-channel' : 'per-tensor';
    v.push({ name: `fp8 ${s} [67, 256]`, path: 'fast', make: () => quantizeFp8(w(67, 256), 67, 256, { perChannel }) });
    v.push({ name: `fp8 ${s} [130, 1040]`, path: 'fast', make: () => quantizeFp8(w(130, 1040), 130, 1040, { perChannel }) });
    v.push({ name: `fp8 ${s} [33, 100] (K not a multiple of 16)`, path: 'exact', make: () => quantizeFp8(w(33, 100), 33, 100, { perChannel }) });
  }
  v.push({ name: 'int8 [67, 256]', path: 'fast', make: () => quantizeInt8(w(67, 256), 67, 256) });
  v.push({ name: 'int8 [130, 1040]', path: 'fast', make: () => quantizeInt8(w(130, 1040), 130, 1040) });
  v.push({ name: 'int8 [33, 100] (K not a multiple of 16)', path: 'exact', make: () => quantizeInt8(w(33, 100), 33, 100) });
  const int4 = (rows: number, cols: number, groupSize: number, symmetric: boolean, gIdx?: 'shuffled' | 'irregular') => () => {
    const numGroups = Math.ceil(cols / Math.min(groupSize === -1 ? cols : groupSize, cols));
    const g =
      gIdx === 'shuffled' ? shuffledGIdx(cols, Math.min(groupSize, cols))
      : gIdx === 'irregular' ? Int32Array.from({ length: cols }, () => Math.floor(rng.next() * numGroups))
      : undefined;
    return quantizeInt4(w(rows, cols), rows, cols, { groupSize, symmetric, gIdx: g });
  };
  for (const symmetric of [true, false]) {
    const s = symmetric ? 'symmetric' : 'asymmetric';
    v.push({ name: `int4 g128 ${s} [67, 256]`, path: 'fast', make: int4(67, 256, 128, symmetric) });
    v.push({ name: `int4 g32 ${s} [45, 320] (a padded tile)`, path: 'fast', make: int4(45, 320, 32, symmetric) });
    v.push({ name: `int4 g128 ${s} [45, 320] (K not a multiple of the group)`, path: 'fast', make: int4(45, 320, 128, symmetric) });
    v.push({ name: `int4 g32 ${s} [70, 512], shuffled g_idx`, path: 'fast', make: int4(70, 512, 32, symmetric, 'shuffled') });
    v.push({ name: `int4 g128 ${s} [33, 320], shuffled g_idx`, path: 'fast', make: int4(33, 320, 128, symmetric, 'shuffled') });
    v.push({ name: `int4 per-channel ${s} [37, 208]`, path: 'fast', make: int4(37, 208, -1, symmetric) });
    v.push({ name: `int4 g32 ${s} [33, 100] (K not a multiple of 16), shuffled g_idx`, path: 'exact', make: int4(33, 100, 32, symmetric, 'shuffled') });
    v.push({ name: `int4 g48 ${s} [40, 192] (group not a power of two)`, path: 'exact', make: int4(40, 192, 48, symmetric) });
    v.push({ name: `int4 g64 ${s} [40, 256], irregular g_idx`, path: 'exact', make: int4(40, 256, 64, symmetric, 'irregular') });
  }
  v.push({ name: 'nvfp4 [67, 256]', path: 'fast', make: () => quantizeNvfp4(w(67, 256), 67, 256) });
  v.push({ name: 'nvfp4 [33, 48] (a padded tile)', path: 'fast', make: () => quantizeNvfp4(w(33, 48), 33, 48) });
  v.push({ name: 'nvfp4 [130, 1040]', path: 'fast', make: () => quantizeNvfp4(w(130, 1040), 130, 1040) });
  return v;
}

describe('quantized weight layouts on CUDA (planning, no GPU needed)', () => {
  it('int4: tiled for K % 16 = 0 and power-of-two (or whole-row) groups; act-order sorted into plain groups, else canonical', () => {
    const base = { groupSize: 128, numGroups: 2, gIdx: undefined };
    assert.deepEqual(planInt4({ ...base, cols: 256 }), { layout: 'tiled', groupShift: 7 });
    assert.deepEqual(planInt4({ ...base, cols: 208, groupSize: 208, numGroups: 1 }), { layout: 'tiled', groupShift: 31 });
    assert.equal(planInt4({ ...base, cols: 100 }).layout, 'canonical');
    assert.equal(planInt4({ cols: 192, groupSize: 48, numGroups: 4, gIdx: undefined }).layout, 'canonical');
    assert.equal(planInt4({ cols: 64, groupSize: 8, numGroups: 8, gIdx: undefined }).layout, 'canonical');
    // g_idx in plain order needs no permutation.
    const plain = Int32Array.from({ length: 256 }, (_, i) => i >> 7);
    assert.deepEqual(planInt4({ ...base, cols: 256, gIdx: plain }), { layout: 'tiled', groupShift: 7 });
    // GPTQ act-order: the permutation sorts columns by group, stable, and every sorted column lands in group j >> shift.
    const gIdx = shuffledGIdx(320, 128);
    const plan = planInt4({ cols: 320, groupSize: 128, numGroups: 3, gIdx });
    assert.equal(plan.layout, 'tiled');
    assert.ok(plan.layout === 'tiled' && plan.perm);
    const perm = plan.perm!;
    assert.deepEqual([...perm].sort((a, b) => a - b), Array.from({ length: 320 }, (_, i) => i));
    for (let j = 0; j < 320; j++) {
      assert.equal(gIdx[perm[j]], j >> 7);
      if (j > 0 && gIdx[perm[j]] === gIdx[perm[j - 1]]) assert.ok(perm[j] > perm[j - 1], 'stable within a group');
    }
    // Uneven groups cannot be found by a shift.
    const uneven = Int32Array.from({ length: 256 }, (_, i) => (i < 100 ? 0 : 1));
    assert.deepEqual(planInt4({ ...base, cols: 256, gIdx: uneven }), { layout: 'canonical', reason: 'g_idx groups are not all of the group size' });
  });

  it('nvfp4 multipliers are float32(e4m3(code) · globalScale), as the CPU computes each block', () => {
    const gs = Math.fround(0.37 / 2688);
    const m = nvfp4Multipliers(gs);
    assert.equal(m.length, 256);
    for (let c = 0; c < 256; c++) assert.ok(Object.is(m[c], Math.fround(E4M3_VALUES[c] * gs)) || (Number.isNaN(m[c]) && Number.isNaN(E4M3_VALUES[c])), `code ${c}`);
  });

  it('v2 GEMV choice: the smallest token bound ≥ T; preferred rows per format, halved while under 256 blocks; forced rows only where made', () => {
    assert.deepEqual(quantGemvV2('fp8', 14336, 1), { tmax: 1, rows: 8, suffix: '_r8_t1' });
    assert.deepEqual(quantGemvV2('int8', 4096, 1), { tmax: 1, rows: 8, suffix: '_r8_t1' });
    assert.deepEqual(quantGemvV2('fp8', 1024, 1), { tmax: 1, rows: 4, suffix: '_r4_t1' });
    assert.deepEqual(quantGemvV2('int8', 2048, 3), { tmax: 4, rows: 8, suffix: '_r8_t4' });
    assert.deepEqual(quantGemvV2('fp8', 14336, 8), { tmax: 8, rows: 8, suffix: '_r8_t8' });
    assert.deepEqual(quantGemvV2('int4', 14336, 1), { tmax: 1, rows: 4, suffix: '_r4_t1' });
    assert.deepEqual(quantGemvV2('nvfp4', 14336, 1), { tmax: 1, rows: 8, suffix: '_r8_t1' });
    assert.deepEqual(quantGemvV2('nvfp4', 14336, 2), { tmax: 2, rows: 8, suffix: '_r8_t2' });
    assert.deepEqual(quantGemvV2('nvfp4', 1024, 1), { tmax: 1, rows: 4, suffix: '_r4_t1' });
    assert.deepEqual(quantGemvV2('int4', 14336, 5), { tmax: 8, rows: 4, suffix: '_r4_t8' });
    assert.deepEqual(quantGemvV2('int4', 67, 1, 8), { tmax: 1, rows: 8, suffix: '_r8_t1' });
    assert.deepEqual(quantGemvV2('fp8', 4096, 2, 16), { tmax: 2, rows: 16, suffix: '_r16_t2' });
    // The fused kernels: chosen over the rows of the whole grid (q+k+v); no 16-row kernels.
    assert.deepEqual(quantGemvV2('int8', 6144, 1, 'auto', 'fused'), { tmax: 1, rows: 8, suffix: '_r8_t1' });
    assert.deepEqual(quantGemvV2('nvfp4', 14336, 4, 'auto', 'fused'), { tmax: 4, rows: 4, suffix: '_r4_t4' });
    assert.throws(() => quantGemvV2('fp8', 4096, 1, 16, 'fused'), /no fused fp8 kernel for 16 rows and up to 1 tokens \(made: 4, 8\)/);
    assert.throws(() => quantGemvV2('int4', 14336, 8, 8), /no int4 kernel for 8 rows and up to 8 tokens \(made: 4\)/);
    assert.throws(() => quantGemvV2('fp8', 14336, 9), /9 tokens, it takes 1 to 8/);
  });

  it('fused q/k/v and gate/up kernels: taken for weights of one format on their fast kernels, refused otherwise', () => {
    // fusedFormat reads only the weights' descriptions: no device is touched (the context throws if used).
    const noDevice = new Proxy({}, { get: () => { throw new Error('no device in this test'); } }) as QuantDeviceContext;
    const quant = new QuantizedWeights(noDevice);
    const fp8 = (rows: number, cols: number, nan = false) => new CudaFp8Weight(rows, cols, 1, 2, rows * cols, nan);
    const int8 = (rows: number, cols: number) => new CudaInt8Weight(rows, cols, 1, 2, rows * cols);
    const int4 = (rows: number, cols: number, over: Partial<Int4DeviceParts> = {}) =>
      new CudaInt4Weight({ rows, cols, layout: 'tiled', packed: 1, wordsPerRow: Math.ceil(cols / 256) * 32, groupSize: 128, numGroups: Math.ceil(cols / 128), groupShift: 7, scales: 2, zeros: 0, perm: 0, gIdx: 0, ...over }, 1);
    const nvfp4 = (rows: number, cols: number) => new CudaNvfp4Weight(rows, cols, 1, Math.ceil(cols / 256) * 32, 2, 3, 1, 1);
    assert.equal(quant.fusedFormat([fp8(256, 512), fp8(64, 512), fp8(64, 512)], 512), 'fp8');
    assert.equal(quant.fusedFormat([int8(256, 512), int8(64, 512)], 512), 'int8');
    assert.equal(quant.fusedFormat([int4(256, 512), int4(64, 512, { zeros: 5 })], 512), 'int4');
    assert.equal(quant.fusedFormat([nvfp4(96, 512), nvfp4(96, 512)], 512), 'nvfp4');
    assert.equal(quant.fusedFormat([int8(64, 512), fp8(64, 512)], 512), undefined, 'mixed formats');
    assert.equal(quant.fusedFormat([int8(64, 512), int8(64, 256)], 512), undefined, 'another K');
    assert.equal(quant.fusedFormat([fp8(64, 512), fp8(64, 512, true)], 512), undefined, 'fp8 NaN codes (exact kernel)');
    assert.equal(quant.fusedFormat([int8(64, 100), int8(64, 100)], 100), undefined, 'K % 16 ≠ 0');
    assert.equal(quant.fusedFormat([int4(64, 512), int4(64, 512, { perm: 9 })], 512), undefined, 'act-order int4 (x in its own column order)');
    assert.equal(quant.fusedFormat([int4(64, 512), int4(64, 512, { layout: 'canonical' })], 512), undefined, 'canonical int4 (exact kernel)');
    assert.equal(quant.fusedFormat([int4(64, 512), int4(64, 512, { groupShift: 5, numGroups: 16, groupSize: 32 })], 512), undefined, 'another grouping');
    quant.kernel = 'v1';
    assert.equal(quant.fusedFormat([int8(64, 512), int8(64, 512)], 512), undefined, 'v1 kernels');
  });

  it("random quantized weights report the bytes quantizeWeight's weights do", () => {
    for (const method of QUANTIZATION_METHODS) {
      for (const [rows, cols] of [[48, 512], [33, 80], [17, 100], [5, 4096]]) {
        if (method === 'nvfp4' && cols % 16 !== 0) continue;
        const q = quantizeWeight(method, uniform(rows * cols), rows, cols, 'w');
        assert.equal(quantizedBytes(method, rows, cols), q.bytes, `${method} [${rows}, ${cols}]`);
      }
    }
  });
});

describe('CUDA quantized linear against the CPU reference', { skip: skipReason }, () => {
  const g = () => gpu!;
  /** End the synchronous run (recycling its activations), then poison every free buffer with NaN. */
  const fresh = async () => {
    await nextTurn();
    g().poisonFreeMemory();
  };
  after(() => {
    if (gpu) gpu.prefillGemm = 'auto';
  });

  /**
   * Bounds. ≤ 8 tokens (the GEMV dequantising in registers, float32 accumulation): ≤ 2e-5 against
   * the CPU's linearQuantized (float64 sums), as for dense weights. More tokens multiply a bf16 copy
   * of the weight: against the CPU over that bf16-rounded weight, ≤ 2e-5 with the tiled float32
   * GEMM ('tiled'), and, where cuBLASLt runs ('auto'; x rounded to bf16 too), ≤ 1e-5 against the CPU
   * over rounded x and rounded weight; against the exact reference ≤ 8e-3: bf16's unit roundoff is
   * 2⁻⁹ ≈ 2e-3 per weight (and per x value with cuBLASLt), ~1e-3 relative on a sum (measured on
   * the CPU ≈ 6e-4 for the weights alone).
   */
  const TOKENS = [1, 3, 8, 9, 37, 130];
  for (const v of variants()) {
    it(`${v.name}: weightToHost is dequantize exactly; linear over ${TOKENS.join(', ')} tokens ± bias (${v.path} GEMV ≤ 2e-5; prefill bounds above)`, async () => {
      const q = v.make();
      const [N, K] = [q.rows, q.cols];
      const wc = cpu.loadQuantized('w', q);
      const wg = g().loadQuantized('w', q);
      assert.equal(wg.format, q.format);
      assert.deepEqual(wg.shape, [N, K]);
      assert.equal(wg.bytes, q.bytes, 'bytes as the CPU backend reports them');
      await fresh();
      const exact = dequantize(q);
      assertSameValues(g().weightToHost(wg), exact, `${v.name}: weightToHost`);
      const rounded = roundBf16(exact);
      const bias = uniform(N, -2, 2);
      const bc = cpu.loadDense('b', f32Tensor(bias, [N]));
      const bg = g().loadDense('b', f32Tensor(bias, [N]));
      for (const T of TOKENS) {
        for (const withBias of [false, true]) {
          const what = `${v.name} × ${T} tokens${withBias ? ' + bias' : ''}`;
          const x = uniform(T * K);
          const want = cpu.toHost(cpu.linear(cpu.fromHost(x.slice(), [T, K]), wc, withBias ? bc : undefined));
          if (T <= 8) {
            await fresh();
            assertClose(g().toHost(g().linear(g().fromHost(x, [T, K]), wg, withBias ? bg : undefined)), want, 2e-5, what);
            continue;
          }
          for (const mode of ['tiled', 'auto'] as const) {
            g().prefillGemm = mode;
            await fresh();
            const blas = g().cublasLt();
            const before = blas?.counters.half ?? 0;
            const beforeFp8 = blas?.counters.fp8 ?? 0;
            const got = g().toHost(g().linear(g().fromHost(x, [T, K]), wg, withBias ? bg : undefined));
            if (blas && blas.counters.fp8 > beforeFp8) {
              // FP8 weights in prefill run W8A8 on the FP8 tensor cores (x rounded to e4m3 per token,
              // 2⁻⁴ relative per value; test/cuda-cublaslt.test.ts checks that GEMM tightly against an
              // emulation): here only the wiring, against the exact reference with FP8's bound.
              assert.equal(v.name.startsWith('fp8'), true, `${what}: only fp8 weights take the FP8 GEMM`);
              assertClose(got, want, 6e-2, `${what} (prefill on FP8 tensor cores) vs exact`);
              continue;
            }
            // cuBLASLt ran (it declines shapes it has no algorithm for; the tiled kernel runs those).
            const viaBlas = blas !== undefined && blas.counters.half > before;
            const tight = viaBlas ? cpuDense(roundBf16(x), T, rounded, N, K, withBias ? bc : undefined) : cpuDense(x, T, rounded, N, K, withBias ? bc : undefined);
            assertClose(got, tight, viaBlas ? 1e-5 : 2e-5, `${what} (prefill ${viaBlas ? 'cuBLASLt' : 'tiled'}) vs the bf16-rounded weight`);
            assertClose(got, want, 8e-3, `${what} (prefill ${viaBlas ? 'cuBLASLt' : 'tiled'}) vs exact`);
          }
          g().prefillGemm = 'auto';
        }
      }
    });
  }

  it('the bf16 copy prefill multiplies is dequantize rounded to bf16, bit for bit: by the vectorised kernels where they apply, else element by element', async () => {
    for (const v of variants()) {
      const q = v.make();
      const wg = g().loadQuantized('w', q) as CudaQuantizedWeight;
      const n = q.rows * q.cols;
      await fresh();
      // Float32 slots holding two bf16 each, poisoned first: every value must be written.
      const out = g().fromHost(new Float32Array(Math.ceil(n / 2)).fill(NaN), [Math.ceil(n / 2)]) as Tensor & { ptr: number };
      const names = launchesOf(g(), () => g().quantized.dequantize(wg, out.ptr, 'bf16'));
      const vectorised = !/shuffled|irregular|not a multiple of 16|not a power of two/.test(v.name);
      assert.deepEqual(names, [vectorised ? (q.format === 'int4' ? 'dequant_int4_tiled_bf16' : q.format === 'nvfp4' ? 'dequant_nvfp4_bf16' : 'dequant_bytes_bf16') : `dequant_${q.format}`], `${v.name}: ${names.join(', ')}`);
      const host = g().toHost(out);
      const got = new Uint16Array(host.buffer, host.byteOffset, n);
      const want = dequantize(q);
      for (let i = 0; i < n; i++) {
        if (got[i] !== f32ToBf16(want[i])) assert.fail(`${v.name}: element ${i} is bf16 0x${got[i].toString(16)}, dequantize gives ${want[i]} (0x${f32ToBf16(want[i]).toString(16)})`);
      }
    }
  });

  it("a token's output does not depend on how many tokens (≤ 8) share its step: bitwise, for every format and both GEMV paths", async () => {
    for (const v of variants()) {
      await fresh();
      const q = v.make();
      const wg = g().loadQuantized('w', q);
      const K = q.cols;
      const x = uniform(8 * K);
      const all = g().toHost(g().linear(g().fromHost(x, [8, K]), wg));
      for (const t of [0, 3, 7]) {
        const one = g().toHost(g().linear(g().fromHost(x.slice(t * K, (t + 1) * K), [1, K]), wg));
        assert.deepEqual(all.slice(t * q.rows, (t + 1) * q.rows), one, `${v.name}: token ${t} alone vs in a batch of 8`);
      }
    }
  });

  it('every fast GEMV kernel (v2 at 4, 8, 16 rows a block; v1) against the CPU (≤ 2e-5) on 1..8 tokens, and the v2 ones bitwise equal to each other', async () => {
    const quant = g().quantized;
    const w = (rows: number, cols: number) => randomWeightsFrom(rng, rows, cols);
    // Odd N (a last block of fewer rows), K spanning several loads per thread and a padded tile.
    const [N, K] = [75, 1296];
    const cases: Array<[string, QuantGemvFormat, () => QuantizedWeight]> = [
      ['fp8', 'fp8', () => quantizeFp8(w(N, K), N, K)],
      ['int8', 'int8', () => quantizeInt8(w(N, K), N, K)],
      ['int4 g32 asymmetric', 'int4', () => quantizeInt4(w(N, K), N, K, { groupSize: 32, symmetric: false })],
      ['int4 g128, shuffled g_idx', 'int4', () => quantizeInt4(w(N, 1280), N, 1280, { groupSize: 128, symmetric: true, gIdx: shuffledGIdx(1280, 128) })],
      ['nvfp4', 'nvfp4', () => quantizeNvfp4(w(N, K), N, K)],
    ];
    try {
      for (const [name, format, make] of cases) {
        const family = format === 'fp8' || format === 'int8' ? 'q8' : 'q4';
        const q = make();
        const cols = q.cols;
        const wc = cpu.loadQuantized('w', q);
        const wg = g().loadQuantized('w', q);
        const bias = uniform(N, -2, 2);
        const bc = cpu.loadDense('b', f32Tensor(bias, [N]));
        const bg = g().loadDense('b', f32Tensor(bias, [N]));
        const x = uniform(8 * cols);
        for (let T = 1; T <= 8; T++) {
          const xs = x.slice(0, T * cols);
          const want = cpu.toHost(cpu.linear(cpu.fromHost(xs.slice(), [T, cols]), wc, bc));
          let first: Float32Array | undefined;
          for (const rows of [4, 8, 16] as const) {
            const tmax = quantGemvV2(format, N, T).tmax;
            if (!(rows === 4 || (rows === 8 && (family === 'q8' || tmax <= 4)) || (rows === 16 && family === 'q8' && tmax <= 2))) continue;
            quant.kernel = 'v2';
            quant.rows = rows;
            await fresh();
            const got = g().toHost(g().linear(g().fromHost(xs, [T, cols]), wg, bg));
            const what = `${name} v2 ${rows} rows × ${T} tokens`;
            assertClose(got, want, 2e-5, what);
            if (first) assertSameValues(got, first, `${what} vs 4 rows`);
            else first = got;
            // Token 0 is bitwise the same whatever the number of tokens (and kernel).
            if (T > 1) {
              await fresh();
              const one = g().toHost(g().linear(g().fromHost(xs.slice(0, cols), [1, cols]), wg, bg));
              assertSameValues(got.slice(0, N), one, `${what}: token 0 vs alone`);
            }
          }
          quant.kernel = 'v1';
          quant.rows = 'auto';
          await fresh();
          assertClose(g().toHost(g().linear(g().fromHost(xs, [T, cols]), wg, bg)), want, 2e-5, `${name} v1 × ${T} tokens`);
        }
      }
    } finally {
      quant.kernel = 'v2';
      quant.rows = 'auto';
    }
  });

  it('an fp8 weight holding NaN codes (0x7f/0xff): weightToHost and linear give NaN where the CPU does', async () => {
    const q = quantizeFp8(randomWeightsFrom(rng, 20, 64), 20, 64);
    q.codes[5 * 64 + 7] = 0x7f;
    q.codes[11 * 64 + 40] = 0xff;
    const wg = g().loadQuantized('w', q);
    const wc = cpu.loadQuantized('w', q);
    assertSameValues(g().weightToHost(wg), dequantize(q), 'weightToHost with NaN codes');
    for (const T of [1, 8, 20]) {
      await fresh();
      const x = uniform(T * 64);
      // 20 tokens: the bf16 scratch (NaN stays NaN) through the float32 tiled GEMM, against the CPU over that weight.
      g().prefillGemm = 'tiled';
      const got = g().toHost(g().linear(g().fromHost(x, [T, 64]), wg));
      g().prefillGemm = 'auto';
      const want = T <= 8 ? cpu.toHost(cpu.linear(cpu.fromHost(x.slice(), [T, 64]), wc)) : cpuDense(x, T, roundBf16(dequantize(q)), 20, 64);
      for (let i = 0; i < want.length; i++) {
        const row = i % 20;
        if (row === 5 || row === 11) assert.ok(Number.isNaN(got[i]), `row ${row} of token ${Math.floor(i / 20)} is NaN (T = ${T})`);
        else assert.ok(Math.abs(got[i] - want[i]) <= 1e-4 * (1 + Math.abs(want[i])), `element ${i}: ${got[i]} vs ${want[i]} (T = ${T})`);
      }
    }
  });

  it('a quantized weight is refused where a float weight is needed, and a wrong input width is named', () => {
    const wg = g().loadQuantized('w', quantizeInt8(uniform(16 * 32), 16, 32));
    assert.throws(() => g().embedding(wg, Int32Array.from([1])), /a quantized \(int8\) weight \[16, 32\] was given where a float weight is needed: only linear takes quantized weights/);
    assert.throws(() => g().linear(g().fromHost(uniform(2 * 31), [2, 31]), wg), /linear: input has 31 columns, weight expects 32/);
  });
});

describe('CUDA random weights (--load-format dummy)', { skip: skipReason }, () => {
  const g = () => gpu!;
  const fresh = async () => {
    await nextTurn();
    g().poisonFreeMemory();
  };
  const FORMAT: Record<QuantizationMethod, string> = { fp8: 'fp8', w8a16: 'int8', w4a16: 'int4', nvfp4: 'nvfp4' };

  for (const method of QUANTIZATION_METHODS) {
    it(`${method}: the bytes, format and shape quantizeWeight's would have; finite values of magnitude ~scale; linear equals the CPU over weightToHost (≤ 2e-5)`, async () => {
      for (const [N, K] of [[200, 512], [33, 80], [17, 100]]) {
        const spec = { shape: [N, K], dtype: 'bf16' as const, method, seed: 1 + Math.floor(rng.next() * 1e6), scale: 0.05 };
        if (method === 'nvfp4' && K % 16 !== 0) {
          assert.throws(() => g().randomWeight('w', spec), (err: Error) => err instanceof InvalidRequestError && /multiples of 16; 'w' has 100/.test(err.message));
          continue;
        }
        const w = g().randomWeight('w', spec);
        assert.equal(w.format, FORMAT[method]);
        assert.deepEqual(w.shape, [N, K]);
        assert.equal(w.bytes, quantizeWeight(method, uniform(N * K), N, K, 'w').bytes);
        const values = g().weightToHost(w);
        let max = 0;
        let sum = 0;
        for (const x of values) {
          assert.ok(Number.isFinite(x), `${method} [${N}, ${K}]: a non-finite value`);
          max = Math.max(max, Math.abs(x));
          sum += Math.abs(x);
        }
        const mean = sum / values.length;
        // Uniform codes over the format's range, scales in [scale/2, scale) per code range: |w| ≤ ~1.07·scale
        // (int4's −8 over 7.5), mean |w| 0.2 to 0.4 of it.
        assert.ok(max <= 1.1 * spec.scale && max >= 0.3 * spec.scale, `${method} [${N}, ${K}]: max |w| ${max} for scale ${spec.scale}`);
        assert.ok(mean >= 0.15 * spec.scale && mean <= 0.6 * spec.scale, `${method} [${N}, ${K}]: mean |w| ${mean} for scale ${spec.scale}`);
        assert.deepEqual(g().weightToHost(g().randomWeight('w', spec)), values, 'the same seed gives the same weight');
        assert.notDeepEqual(g().weightToHost(g().randomWeight('w', { ...spec, seed: spec.seed + 1 })), values, 'another seed, another weight');
        for (const T of [1, 8, 37]) {
          await fresh();
          const x = uniform(T * K);
          g().prefillGemm = 'tiled';
          const got = g().toHost(g().linear(g().fromHost(x, [T, K]), w));
          g().prefillGemm = 'auto';
          assertClose(got, cpuDense(x, T, T <= 8 ? values : roundBf16(values), N, K), 2e-5, `${method} [${N}, ${K}] × ${T} tokens`);
        }
      }
    });
  }

  it('dense: matrices in their dtype, vectors held as float32 with the dtype\'s values; randomBf16 still works', () => {
    for (const dtype of ['bf16', 'f16', 'f32'] as const) {
      const m = g().randomWeight('m', { shape: [64, 96], dtype, seed: 7, scale: 0.5 });
      assert.equal(m.format, dtype);
      assert.equal(m.bytes, 64 * 96 * (dtype === 'f32' ? 4 : 2));
      const mv = g().weightToHost(m);
      assert.ok(mv.every((x) => Number.isFinite(x) && Math.abs(x) <= 0.5));
      const mean = mv.reduce((a, x) => a + Math.abs(x), 0) / mv.length;
      assert.ok(mean > 0.2 && mean < 0.3, `${dtype}: mean |w| ${mean} for uniform [-0.5, 0.5)`);
      // A vector (even with a method: only matrices are quantized) is float32 on the device, values of the dtype.
      const v = g().randomWeight('v', { shape: [300], dtype, method: 'w4a16', seed: 3, scale: 0.01 });
      assert.equal(v.format, dtype);
      assert.equal(v.bytes, 300 * (dtype === 'f32' ? 4 : 2));
      const vv = g().weightToHost(v);
      const roundTrip = dtype === 'bf16' ? (x: number) => bf16ToF32(f32ToBf16(x)) : dtype === 'f16' ? (x: number) => f16ToF32(f16Bits(x)) : (x: number) => x;
      // (≤ 1% over the scale: rounding to the dtype may step just past it)
      assert.ok(vv.every((x) => Math.abs(x) <= 0.0101 && roundTrip(x) === x), `${dtype} vector values are ${dtype} values`);
      // Usable as a norm weight (float32 vector).
      const x = g().fromHost(uniform(2 * 300), [2, 300]);
      assert.equal(g().toHost(g().rmsNorm(x, v, 1e-5)).length, 600);
    }
    const b = g().randomBf16([32, 64], 5, 0.1);
    assert.deepEqual([b.format, b.bytes, b.shape], ['bf16', 32 * 64 * 2, [32, 64]]);
  });
});

/** The kernels `fn` launches, by name, and the driver's launch count over it. */
function launchesOf(be: CudaBackend, fn: () => void): string[] {
  const names: string[] = [];
  const driver = be.driver;
  const launch = driver.launch;
  const before = driver.launches;
  driver.launch = function (this: typeof driver, ...args: Parameters<typeof launch>) {
    names.push(args[1]);
    return launch.apply(this, args);
  };
  try {
    fn();
  } finally {
    driver.launch = launch;
  }
  assert.equal(driver.launches - before, names.length, 'the driver counted every launch');
  return names;
}

describe('CUDA fused quantized decode linears (q/k/v in one launch, gate/up·SiLU in one)', { skip: skipReason }, () => {
  const g = () => gpu!;
  const fresh = async () => {
    await nextTurn();
    g().poisonFreeMemory();
  };
  const w = (rows: number, cols: number) => randomWeightsFrom(rng, rows, cols);
  /** Each fusable format, as src/quant's quantizers make it; K = 384: a tile and a half (4-bit rows padded), 3 groups of 128. */
  const K = 384;
  const formats: Array<[string, string, (n: number) => QuantizedWeight]> = [
    ['fp8 per-channel', 'fp8', (n) => quantizeFp8(w(n, K), n, K, { perChannel: true })],
    ['int8', 'int8', (n) => quantizeInt8(w(n, K), n, K)],
    ['int4 g128 symmetric', 'int4', (n) => quantizeInt4(w(n, K), n, K, { groupSize: 128, symmetric: true })],
    ['int4 g128 asymmetric', 'int4', (n) => quantizeInt4(w(n, K), n, K, { groupSize: 128, symmetric: false })],
    ['nvfp4', 'nvfp4', (n) => quantizeNvfp4(w(n, K), n, K)],
  ];
  const load = (q: QuantizedWeight) => ({ c: cpu.loadQuantized('w', q), g: g().loadQuantized('w', q) });
  const vec = (n: number) => {
    const b = uniform(n, -2, 2);
    return { c: cpu.loadDense('b', f32Tensor(b, [n])), g: g().loadDense('b', f32Tensor(b, [n])) };
  };
  /** Runs `fn` with fusedLinears set, then back on. */
  const withFused = <R>(on: boolean, fn: () => R): R => {
    g().fusedLinears = on;
    try {
      return fn();
    } finally {
      g().fusedLinears = true;
    }
  };

  for (const [name, format, make] of formats) {
    it(`${name}: linearMany over q/k/v widths 256/64/64 and 75/33/33, 1/3/8 tokens ± biases: one launch, bitwise the separate linears, ≤ 2e-5 from the CPU`, async () => {
      for (const widths of [[256, 64, 64], [75, 33, 33]]) {
        const ws = widths.map((n) => load(make(n)));
        const bs = widths.map((n) => vec(n));
        for (const T of [1, 3, 8]) {
          for (const withBias of [false, true]) {
            const what = `${name} [${widths.join(', ')}] × ${T} tokens${withBias ? ' + biases' : ''}`;
            const x = uniform(T * K);
            await fresh();
            const xg = g().fromHost(x, [T, K]);
            let fused: Tensor[] = [];
            const names = launchesOf(g(), () => (fused = g().linearMany(xg, ws.map((p) => p.g), withBias ? bs.map((b) => b.g) : undefined)));
            assert.equal(names.length, 1, `${what}: launches ${names.join(', ')}`);
            assert.match(names[0], new RegExp(`^qgemv2many_${format}_r\\d+_t\\d$`), what);
            const got = fused.map((t) => g().toHost(t));
            const separate = withFused(false, () => g().linearMany(xg, ws.map((p) => p.g), withBias ? bs.map((b) => b.g) : undefined)).map((t) => g().toHost(t));
            for (let i = 0; i < 3; i++) {
              assertSameValues(got[i], separate[i], `${what}: matrix ${i} fused vs separate`);
              const want = cpu.toHost(cpu.linear(cpu.fromHost(x.slice(), [T, K]), ws[i].c, withBias ? bs[i].c : undefined));
              assertClose(got[i], want, 2e-5, `${what}: matrix ${i} vs the CPU`);
            }
          }
        }
      }
    });

    it(`${name}: linearSiluMul over 256 and 200 rows, 1/3/8 tokens ± biases: one launch (no silu_mul), bitwise linear, linear, siluMul, ≤ 2e-5 from the CPU`, async () => {
      for (const N of [256, 200]) {
        const [gate, up] = [load(make(N)), load(make(N))];
        const [bg, bu] = [vec(N), vec(N)];
        for (const T of [1, 3, 8]) {
          for (const withBias of [false, true]) {
            const what = `${name} gate/up [${N}, ${K}] × ${T} tokens${withBias ? ' + biases' : ''}`;
            const x = uniform(T * K);
            await fresh();
            const xg = g().fromHost(x, [T, K]);
            let fused: Tensor | undefined;
            const names = launchesOf(g(), () => (fused = g().linearSiluMul(xg, gate.g, up.g, withBias ? bg.g : undefined, withBias ? bu.g : undefined)));
            assert.deepEqual(names.length, 1, `${what}: launches ${names.join(', ')}`);
            assert.match(names[0], new RegExp(`^qgemv2silu_${format}_r\\d+_t\\d$`), what);
            const got = g().toHost(fused!);
            const separate = withFused(false, () => g().linearSiluMul(xg, gate.g, up.g, withBias ? bg.g : undefined, withBias ? bu.g : undefined));
            assertSameValues(got, g().toHost(separate), `${what}: fused vs separate`);
            const xc = cpu.fromHost(x.slice(), [T, K]);
            const want = cpu.toHost(cpu.siluMul(cpu.linear(xc, gate.c, withBias ? bg.c : undefined), cpu.linear(xc, up.c, withBias ? bu.c : undefined)));
            assertClose(got, want, 2e-5, `${what} vs the CPU`);
          }
        }
      }
    });
  }

  it('every rows-a-block of the fused kernels gives the same bits; more than 3 matrices take several launches', async () => {
    const quant = g().quantized;
    try {
      for (const [name, format, make] of formats) {
        const ws = [120, 40, 40, 24].map((n) => load(make(n)));
        const [gate, up] = [load(make(96)), load(make(96))];
        for (const T of [1, 2, 5, 8]) {
          const x = uniform(T * K);
          let first: Float32Array[] | undefined;
          for (const rows of [4, 8] as const) {
            try {
              quantGemvV2(format as QuantGemvFormat, 200, T, rows, 'fused');
            } catch {
              continue; // not made (4-bit r8 at 8 tokens)
            }
            quant.rows = rows;
            await fresh();
            const xg = g().fromHost(x, [T, K]);
            let outs: Tensor[] = [];
            const names = launchesOf(g(), () => (outs = [...g().linearMany(xg, ws.map((p) => p.g)), g().linearSiluMul(xg, gate.g, up.g)]));
            assert.deepEqual(names.map((n) => n.replace(/_r\d+_t\d$/, '')), [`qgemv2many_${format}`, `qgemv2many_${format}`, `qgemv2silu_${format}`], `${name}: 4 matrices in 2 launches, then gate/up`);
            assert.ok(names.every((n) => n.includes(`_r${rows}_`)), `${name}: ${rows} rows forced: ${names.join(', ')}`);
            const got = outs.map((t) => g().toHost(t));
            if (first) got.forEach((y, i) => assertSameValues(y, first![i], `${name} × ${T} tokens: output ${i} at ${rows} rows vs 4`));
            else first = got;
          }
        }
      }
    } finally {
      quant.rows = 'auto';
    }
  });

  it('weights the fused kernels cannot take run the separate ops: mixed formats, act-order int4, fp8 with K % 16 ≠ 0, > 8 tokens; gate/up of other heights fail as siluMul does', async () => {
    await fresh();
    const x1 = g().fromHost(uniform(K), [1, K]);
    const names = (fn: () => void) => launchesOf(g(), fn).map((n) => n.replace(/_r\d+_t\d$/, ''));
    const i8 = load(quantizeInt8(w(64, K), 64, K)).g;
    const f8 = load(quantizeFp8(w(64, K), 64, K)).g;
    assert.deepEqual(names(() => g().linearMany(x1, [i8, f8])), ['qgemv2_int8', 'qgemv2_fp8']);
    assert.deepEqual(names(() => g().linearSiluMul(x1, i8, f8)), ['qgemv2_int8', 'qgemv2_fp8', 'silu_mul']);
    // Weights are loaded (and 4-bit ones re-laid out on the device) before the launches are watched.
    const actOrder = () => load(quantizeInt4(w(64, K), 64, K, { groupSize: 128, symmetric: true, gIdx: shuffledGIdx(K, 128) })).g;
    const [ao1, ao2] = [actOrder(), actOrder()];
    assert.deepEqual(names(() => g().linearMany(x1, [ao1, ao2])), ['gather_columns', 'qgemv2_int4', 'gather_columns', 'qgemv2_int4']);
    const odd = (n: number) => load(quantizeFp8(w(n, 100), n, 100)).g;
    const x100 = g().fromHost(uniform(100), [1, 100]);
    const [odd32, odd16] = [odd(32), odd(16)];
    assert.deepEqual(names(() => g().linearMany(x100, [odd32, odd16])), ['qgemv_exact_fp8', 'qgemv_exact_fp8']);
    // gate and up of different heights cannot be multiplied: the separate ops' own error, not a fused launch.
    const i8b = load(quantizeInt8(w(32, K), 32, K)).g;
    assert.throws(() => g().linearSiluMul(x1, i8, i8b), /siluMul: gate has 64 values, up 32/);
    const x9 = g().fromHost(uniform(9 * K), [9, K]);
    assert.ok(!names(() => g().linearMany(x9, [i8, i8])).some((n) => n.startsWith('qgemv2many')), '9 tokens: prefill GEMMs');
    g().fusedLinears = false;
    try {
      assert.deepEqual(names(() => g().linearMany(x1, [i8, i8])), ['qgemv2_int8', 'qgemv2_int8']);
    } finally {
      g().fusedLinears = true;
    }
  });
});

/** float32 → f16 bits (round to nearest even), enough for values in (−1, 1). */
function f16Bits(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  const a = Math.abs(f[0]);
  if (a < 2 ** -14) return sign | Math.round(a * 2 ** 24); // subnormal (exact halves do not occur here)
  const exp = ((u >>> 23) & 0xff) - 112;
  let h = (exp << 10) | ((u >>> 13) & 0x3ff);
  const rest = u & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++;
  return sign | h;
}

interface GreedyCase {
  prompt: string;
  prompt_ids: number[];
  output_ids: number[];
}

describe('CUDA quantized end to end on the default model', { skip: skipReason }, () => {
  const models: LLM[] = [];
  after(async () => {
    for (const m of models) await m.close();
  });
  const load = async (device: 'cpu' | 'cuda', quantization: QuantizationMethod) => {
    // float32 K and V on both, so the two differ by their kernels only (a bf16 cache on both would
    // turn the backends' ~1e-7 differences into occasional one-ulp bf16 differences of K and V).
    const m = await LLM.load({ device, quantization, kvCacheDtype: 'float32' });
    models.push(m);
    return m;
  };

  /** Logits of one prefill of `tokens` (rows of every token), through the model's forward. */
  const logitsOf = (m: LLM, tokens: number[], rows: number[]) => {
    const model = m.loaded.model;
    const c = model.config;
    const blocks = Math.ceil((tokens.length + 1) / 16);
    const kv = model.backend.allocKvCache({ numLayers: c.numLayers, numBlocks: blocks, blockSize: 16, numKvHeads: c.numKvHeads, headDim: c.headDim });
    const n = tokens.length;
    return model.forward(
      {
        numTokens: n, numSeqs: 1, tokens: Int32Array.from(tokens), positions: Int32Array.from({ length: n }, (_, i) => i), seqIndex: new Int32Array(n),
        slots: Int32Array.from({ length: n }, (_, i) => i), blockTables: Int32Array.from({ length: blocks }, (_, i) => i), maxBlocksPerSeq: blocks, logitRows: Int32Array.from(rows),
      },
      kv,
    ).logits;
  };

  it('w4a16: the same logits bitwise with and without the fused q/k/v and gate/up·SiLU kernels (1, 3 and 8 tokens); one launch each a layer', async () => {
    const m = await load('cuda', 'w4a16');
    const be = m.loaded.model.backend as CudaBackend;
    const layers = m.loaded.model.config.numLayers;
    const vocab = m.config.vocabSize;
    for (const n of [1, 3, 8]) {
      const tokens = Array.from({ length: n }, () => Math.floor(rng.next() * vocab));
      const rows = Array.from({ length: n }, (_, i) => i);
      const run = async (fused: boolean) => {
        await nextTurn();
        be.poisonFreeMemory();
        be.fusedLinears = fused;
        try {
          let logits: Float32Array | undefined;
          const names = launchesOf(be, () => (logits = logitsOf(m, tokens, rows)));
          return { logits: logits!, names };
        } finally {
          be.fusedLinears = true;
        }
      };
      const fused = await run(true);
      const separate = await run(false);
      assertSameValues(fused.logits, separate.logits, `w4a16 logits of ${n} tokens, fused vs separate`);
      assert.equal(fused.names.filter((k) => k.startsWith('qgemv2many_int4')).length, layers, `${n} tokens: one q/k/v launch a layer`);
      assert.equal(fused.names.filter((k) => k.startsWith('qgemv2silu_int4')).length, layers, `${n} tokens: one gate/up launch a layer`);
      assert.ok(!fused.names.includes('silu_mul'), `${n} tokens: no silu_mul`);
      assert.ok(separate.names.includes('silu_mul') && !separate.names.some((k) => k.startsWith('qgemv2many') || k.startsWith('qgemv2silu')), `${n} tokens: fusedLinears = false runs the separate ops`);
    }
  });

  for (const method of QUANTIZATION_METHODS) {
    it(`${method}: an 8-token prompt (the in-register GEMV throughout) gives the CPU's logits (≤ 1e-4); greedy tokens of fixture prompts equal the CPU's, or part only at a near tie`, async () => {
      const onCpu = await load('cpu', method);
      const onGpu = await load('cuda', method);
      assert.equal(onGpu.loaded.model.backend.name, 'cuda');
      const vocab = onCpu.config.vocabSize;
      const short = Array.from({ length: 8 }, () => Math.floor(rng.next() * vocab));
      assertClose(logitsOf(onGpu, short, [0, 3, 7]), logitsOf(onCpu, short, [0, 3, 7]), 1e-4, `${method}: logits of an 8-token prompt`);

      // Greedy continuations. Prompts of more than 8 tokens are prefilled through a bf16 copy of each
      // weight (and, with cuBLASLt, bf16 activations), so logits differ from the CPU's by ~1e-3
      // relative (emulated on the CPU: 6e-4 to 1.3e-3 over all the fixture prompts for each method):
      // a token may part from the CPU's only where the CPU's top two are that close. Where one parts,
      // the logits there must agree within 1e-2, and the GPU's pick must be within twice the largest
      // logit difference of the CPU's best.
      const fixture = JSON.parse(readFileSync(join(fixturesDir(), 'default-models', 'greedy.json'), 'utf8')) as { target: GreedyCase[] };
      const cases = fixture.target.slice(0, 6);
      const run = (m: LLM) => Promise.all(cases.map((c) => m.complete(c.prompt_ids, { temperature: 0, maxTokens: c.output_ids.length, ignoreEos: true })));
      const [a, b] = [await run(onGpu), await run(onCpu)];
      cases.forEach((c, i) => {
        const got = a[i].tokenIds;
        const want = b[i].tokenIds;
        const first = want.findIndex((t, j) => got[j] !== t);
        if (first < 0) return;
        const prefix = [...c.prompt_ids, ...want.slice(0, first)];
        const lg = logitsOf(onGpu, prefix, [prefix.length - 1]);
        const lc = logitsOf(onCpu, prefix, [prefix.length - 1]);
        // fp8 prefill runs W8A8 on the FP8 tensor cores (activations rounded to e4m3 per token, 2⁻⁴
        // relative per value): its logits move more than bf16 rounding moves them.
        assertClose(lg, lc, method === 'fp8' ? 6e-2 : 1e-2, `${method} prompt ${i}: logits where the tokens part (output token ${first})`);
        let maxDiff = 0;
        for (let k = 0; k < lc.length; k++) maxDiff = Math.max(maxDiff, Math.abs(lg[k] - lc[k]));
        const gap = lc[want[first]] - lc[got[first]];
        assert.ok(gap <= 2 * maxDiff, `${method} prompt ${i}: the GPU chose ${got[first]}, ${gap} below the CPU's ${want[first]}, more than twice the largest logit difference ${maxDiff}`);
      });
    });
  }
});
