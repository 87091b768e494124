// The int4 tensor-core GEMV (kernels/gemv-mma-int4.cu, QuantizedWeights.decodeGemv = 'mma') against
// the CPU's linearQuantized on fresh random weights and inputs, free memory poisoned (and its fused
// q/k/v and gate/up·SiLU kernels against it): the kernel runs
// the mma on codes minus the zero point (exact in bf16) and x rounded to bf16, sums in float32 and
// scales each group's sum in float32, so against the CPU given the same bf16-rounded x it must agree
// to float32 rounding (≤ 1e-5), and against the exact x to bf16's 2⁻⁹ (≤ 1e-2). A token's result must
// be the same bits alone as in a batch of 8 (K split over blocks or not). The default model with
// --quantization w4a16 must give logits within 3e-2 of the FMA GEMV's. Without a GPU the CUDA suites
// skip with the reason; the dispatch rules run everywhere. (No TACHYON_DECODE_GEMV pin: the option
// under test is set explicitly.)

import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import type { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { LLM } from '../src/llm.js';
import { bf16ToF32, f32ToBf16 } from '../src/model/load/dtype.js';
import { quantizeInt4 } from '../src/quant/int4.js';
import { assertStreamedIsClassic, classicName, comparisons, launchesOf, openTestGpu, testRandom } from './support/cuda.js';
import { ModelRunner } from './support/run-model.js';

// The modules load without a GPU (the dispatch rules are checked everywhere); the driver only on use.
const mmaInt4 = await import('../src/backend/cuda/gemv-mma-int4.js').catch(() => undefined);
const mmaLaunch = await import('../src/backend/cuda/mma-launch.js').catch(() => undefined);
const { gpu, skipReason } = await openTestGpu();

const cpu = new CpuBackend();
const { seed: SEED, uniform, randInt } = testRandom();
const { assertClose, assertBitwise } = comparisons(SEED);
const roundBf16 = (a: Float32Array) => a.map((v) => bf16ToF32(f32ToBf16(v)));
const f32Tensor = (v: Float32Array, shape: number[]) => ({ dtype: 'F32' as const, shape, bytes: new Uint8Array(v.buffer, v.byteOffset, v.byteLength) });

describe('int4 mma GEMV dispatch rules (no GPU needed)', { skip: mmaInt4 ? false : 'the CUDA bindings did not load' }, () => {
  it('takes tiled int4 without act-order, groups ≥ 64 or the whole row, 1..8 tokens; names why not otherwise', () => {
    const m = mmaInt4!;
    const tiled = { layout: 'tiled' as const, perm: 0, groupShift: 7, groupSize: 128 };
    assert.equal(m.int4MmaRefusal(tiled, 1), undefined);
    assert.equal(m.int4MmaRefusal(tiled, 8), undefined);
    assert.equal(m.int4MmaRefusal({ ...tiled, groupShift: 6, groupSize: 64 }, 3), undefined);
    assert.equal(m.int4MmaRefusal({ ...tiled, groupShift: 31, groupSize: 4096 }, 3), undefined);
    assert.match(m.int4MmaRefusal(tiled, 9)!, /9 tokens/);
    assert.match(m.int4MmaRefusal({ ...tiled, groupShift: 5, groupSize: 32 }, 2)!, /group size 32 is under 64/);
    assert.match(m.int4MmaRefusal({ ...tiled, perm: 1234 }, 2)!, /act-order/);
    assert.match(m.int4MmaRefusal({ ...tiled, layout: 'canonical' }, 2)!, /canonical/);
  });

  it('splits K only where the row tiles are fewer than the SMs, each split keeping ≥ 4 column tiles', () => {
    const m = mmaInt4!;
    assert.deepEqual(m.int4MmaPlan(14336, 4096, 132), { splits: 1, tiles: 896 });
    assert.deepEqual(m.int4MmaPlan(4096, 4096, 132), { splits: 1, tiles: 256 });
    // 64 tiles: ⌈264 / 64⌉ = 5 blocks wanted, K = 4096 has 16 column tiles, 4 for each split.
    assert.deepEqual(m.int4MmaPlan(1024, 4096, 132), { splits: 4, tiles: 64 });
    assert.deepEqual(m.int4MmaPlan(1024, 256, 132), { splits: 1, tiles: 64 });
    assert.deepEqual(m.int4MmaPlan(75, 14336, 132), { splits: 14, tiles: 5 });
  });

  it('streams (sm_90+, scale rows on 16 bytes) on a ring of 4 stages where it fits, else 2, or says no', () => {
    const m = mmaInt4!;
    const h100 = { computeCapability: 90, sharedPerBlockOptin: 232448, streamTokens: 4 };
    // Llama-3.1-8B's shapes, group 128: K 4096 has 32 groups a row, 14336 has 112.
    const w = (cols: number, zeros = 0) => ({ rows: 4096, cols, wordsPerRow: cols / 8, numGroups: cols / 128, groupShift: 7, groupSize: 128, zeros, packed: 1, scales: 2, perm: 0, gIdx: 0, layout: 'tiled' as const });
    // A stage's row: 2,112 bytes of codes, 304 of scales, 112 of zero points (with zero points only).
    const stage = 16 * 2416;
    // Then x as bf16 (a row a token, 16 bytes of padding each), and the splits' sums (4 KiB a split and m-tile).
    const xRow = (K: number) => 2 * K + 16;
    const plan = (shared: number, stages: number) => ({ shared, stages });
    assert.deepEqual(m.int4StreamPlan(h100, w(4096), 1, 1), plan(4 * stage + xRow(4096) + 4096, 4), 'a ring of 4 stages, x as bf16, one split\'s sums');
    assert.deepEqual(m.int4StreamPlan(h100, w(4096), 1, 1, 4), plan(4 * stage + xRow(4096) + 4 * 4096, 4), 'a plan of 4 splits');
    assert.deepEqual(m.int4StreamPlan(h100, w(14336), 1, 1), plan(4 * stage + xRow(14336) + 4096, 4));
    assert.deepEqual(m.int4StreamPlan(h100, w(4096), 1, 4), plan(4 * stage + 4 * xRow(4096) + 4096, 4));
    assert.equal(m.int4StreamPlan(h100, w(4096), 1, 5), undefined, 'no more tokens than the launcher allows');
    const upTo8 = { ...h100, streamTokens: 8 };
    assert.deepEqual(m.int4StreamPlan(upTo8, w(4096), 1, 8), plan(4 * stage + 8 * xRow(4096) + 4096, 4), '8 tokens of x fit beside 4 stages at K 4096');
    assert.deepEqual(m.int4StreamPlan(upTo8, w(4096), 1, 8, 4), plan(2 * stage + 8 * xRow(4096) + 4 * 4096, 2), 'with 4 splits\' sums, beside 2');
    assert.deepEqual(m.int4StreamPlan(upTo8, w(14336), 1, 3), plan(2 * stage + 3 * xRow(14336) + 4096, 2), '3 tokens at K 14336: 2 stages');
    assert.deepEqual(m.int4StreamPlan(upTo8, w(14336), 1, 5), plan(2 * stage + 5 * xRow(14336) + 4096, 2));
    assert.equal(m.int4StreamPlan(upTo8, w(14336), 1, 6), undefined, '6 tokens at K 14336 do not fit');
    assert.equal(m.int4StreamPlan({ ...h100, streamTokens: 16 }, w(4096), 1, 9), undefined, 'a launch takes at most 8');
    assert.deepEqual(m.int4StreamPlan(h100, w(4096), 2, 1), plan(2 * 32 * 2416 + xRow(4096) + 8192, 2), 'gate and up: 2 stages of 32 rows');
    assert.deepEqual(m.int4StreamPlan(upTo8, w(4096), 2, 8), plan(2 * 32 * 2416 + 8 * xRow(4096) + 8192, 2), 'gate and up at 8 tokens, symmetric');
    assert.equal(m.int4StreamPlan(upTo8, w(4096, 7), 2, 8), undefined, 'with zero points they do not fit');
    assert.deepEqual(m.int4StreamPlan({ ...h100, sharedPerBlockOptin: 160 * 1024 }, w(4096), 1, 1), plan(2 * stage + xRow(4096) + 4096, 2), 'less shared memory: 2 stages');
    assert.equal(m.int4StreamPlan({ ...h100, sharedPerBlockOptin: 64 * 1024 }, w(4096), 1, 1), undefined, 'a ring of 2 and x over the shared memory');
    assert.deepEqual(m.int4StreamPlan(h100, w(4096, 7), 1, 1), plan(4 * 16 * 2528 + xRow(4096) + 4096, 4), 'zero points with 32 groups a row');
    assert.equal(m.int4StreamPlan(h100, { ...w(4608, 7) }, 1, 1), undefined, 'zero points with 36 groups a row: not on 16 bytes');
    assert.equal(m.int4StreamPlan(h100, { ...w(4096), numGroups: 1, groupShift: 31, groupSize: 4096 }, 1, 1), undefined, 'one scale a row');
    assert.equal(m.int4StreamPlan({ ...h100, computeCapability: 87 }, w(4096), 1, 1), undefined, 'Orin: no bulk copies');
    assert.equal(m.int4StreamPlan({ ...h100, streamTokens: 0 }, w(4096), 1, 1), undefined, 'turned off');
  });

  it('sizes split-K scratch per matrix and for a fused launch (the layout fused_slot reads)', () => {
    const l = mmaLaunch!;
    assert.equal(l.splitPartFloats({ tiles: 64, splits: 1 }, 1, 8), 0, 'no split, no scratch');
    // [tiles][S][m-tiles a block][16 rows][T]
    assert.equal(l.splitPartFloats({ tiles: 5, splits: 14 }, 2, 3), 5 * 14 * 2 * 16 * 3);
    // q (256 tiles, whole K) then k and v (64 tiles split 4 ways): only the split matrices keep scratch and tickets.
    assert.deepEqual(l.fusedLaunchSize([{ tiles: 256, splits: 1 }, { tiles: 64, splits: 4 }, { tiles: 64, splits: 4 }], 3), {
      blocks: 256 + 256 + 256,
      partFloats: 2 * 64 * 4 * 16 * 3,
      counters: 128,
    });
    assert.deepEqual(l.fusedLaunchSize([{ tiles: 7, splits: 1 }], 1), { blocks: 7, partFloats: 0, counters: 0 });
  });

  it('fuses int4 weights on mma that agree on K, grouping and zero points', () => {
    const m = mmaInt4!;
    const d = { rows: 64, cols: 512, layout: 'tiled' as const, packed: 1, wordsPerRow: 64, groupSize: 128, numGroups: 4, groupShift: 7, scales: 2, zeros: 0, perm: 0, gIdx: 0 };
    assert.equal(m.int4MmaFusable([d, { ...d, rows: 32 }]), true);
    assert.equal(m.int4MmaFusable([d, { ...d, zeros: 3 }]), false);
    assert.equal(m.int4MmaFusable([d, { ...d, cols: 768, numGroups: 6, wordsPerRow: 96 }]), false);
    assert.equal(m.int4MmaFusable([d, { ...d, groupSize: 64, groupShift: 6, numGroups: 8 }]), false);
    assert.equal(m.int4MmaFusable([{ ...d, groupSize: 32, groupShift: 5, numGroups: 16 }]), false);
    assert.equal(m.int4MmaFusable([]), false);
  });

  it('$TACHYON_QUANT_DECODE_GEMV: mma (the default; fma where $TACHYON_DECODE_GEMV pins fma) or fma, anything else named', () => {
    const m = mmaInt4!;
    assert.equal(m.quantDecodeGemvFromEnv({}), 'mma');
    assert.equal(m.quantDecodeGemvFromEnv({ TACHYON_DECODE_GEMV: 'fma' }), 'fma');
    assert.equal(m.quantDecodeGemvFromEnv({ TACHYON_DECODE_GEMV: 'fma', TACHYON_QUANT_DECODE_GEMV: 'mma' }), 'mma');
    assert.equal(m.quantDecodeGemvFromEnv({ TACHYON_QUANT_DECODE_GEMV: 'fma' }), 'fma');
    assert.equal(m.quantDecodeGemvFromEnv({ TACHYON_QUANT_DECODE_GEMV: 'mma' }), 'mma');
    assert.throws(() => m.quantDecodeGemvFromEnv({ TACHYON_QUANT_DECODE_GEMV: 'tensor' }), /TACHYON_QUANT_DECODE_GEMV must be fma or mma, got 'tensor'/);
  });
});

describe('int4 mma GEMV on CUDA against the CPU', { skip: skipReason }, () => {
  const be = () => gpu!;
  const fresh = async () => {
    await nextTurn();
    be().poisonFreeMemory();
  };
  after(() => {
    if (gpu) gpu.quantized.decodeGemv = 'fma';
  });
  /** Runs fn with decodeGemv set, then back to 'fma'. */
  const withMma = <R>(on: boolean, fn: () => R): R => {
    be().quantized.decodeGemv = on ? 'mma' : 'fma';
    try {
      return fn();
    } finally {
      be().quantized.decodeGemv = 'fma';
    }
  };
  const weights = (N: number, K: number, groupSize: number, symmetric: boolean) => {
    const q = quantizeInt4(uniform(N * K, -0.1, 0.1), N, K, { groupSize, symmetric });
    return { c: cpu.loadQuantized('w', q), g: be().loadQuantized('w', q) };
  };
  const vec = (n: number) => {
    const b = uniform(n, -2, 2);
    return { c: cpu.loadDense('b', f32Tensor(b, [n])), g: be().loadDense('b', f32Tensor(b, [n])) };
  };

  const SHAPES: [number, number][] = [
    [75, 256], // one column tile
    [333, 320], // a padded tile (K % 256 = 64: half 1 of tile 1 is padding)
    [45, 4096],
    [2200, 512], // more tiles than SMs: no split
    [67, 14336],
  ];
  const GROUPS: [string, number][] = [['g128', 128], ['g64', 64], ['g32 (FMA fallback)', 32], ['whole row', -1]];
  for (const [gname, groupSize] of GROUPS) {
    for (const symmetric of [true, false]) {
      it(`linear, int4 ${gname} ${symmetric ? 'symmetric' : 'asymmetric'}: T 1/2/3/5/8, odd N, ± bias; ≤ 1e-5 on bf16-rounded x, ≤ 1e-2 on exact x`, async () => {
        for (const [N, K] of SHAPES) {
          const w = weights(N, K, groupSize === -1 ? K : groupSize, symmetric);
          const b = vec(N);
          for (const T of [1, 2, 3, 5, 8]) {
            for (const withBias of [false, true]) {
              const what = `[${N}, ${K}] ${gname} ${symmetric ? 'sym' : 'asym'} × ${T}${withBias ? ' + bias' : ''}`;
              const x = uniform(T * K);
              const xr = roundBf16(x);
              const want = (xs: Float32Array) => cpu.toHost(cpu.linear(cpu.fromHost(xs.slice(), [T, K]), w.c, withBias ? b.c : undefined));
              await fresh();
              let got: Float32Array = new Float32Array();
              const names = withMma(true, () => launchesOf(be(), () => (got = be().toHost(be().linear(be().fromHost(x, [T, K]), w.g, withBias ? b.g : undefined)))));
              const onMma = names.some((n) => n.startsWith('gemv_mma_int4'));
              assert.equal(onMma, groupSize !== 32, `${what}: launches ${names.join(', ')}`);
              if (onMma) {
                assertClose(got, want(xr), 1e-5, `${what} vs the CPU on bf16-rounded x`);
                assertClose(got, want(x), 1e-2, `${what} vs the CPU on exact x`);
              } else {
                assertClose(got, want(x), 2e-5, `${what} (FMA kernel) vs the CPU`);
              }
            }
          }
        }
      });
    }
  }

  it('a token alone gives the same bits as in a batch of 8 (with and without split K); the default stays on the FMA kernel', async () => {
    for (const [N, K] of [[75, 4096], [2200, 512], [1024, 4096]] as const) {
      const w = weights(N, K, 128, false);
      const b = vec(N);
      const x = uniform(8 * K);
      await fresh();
      const batch = withMma(true, () => be().toHost(be().linear(be().fromHost(x, [8, K]), w.g, b.g)));
      for (const t of [0, 3, 7]) {
        await fresh();
        const alone = withMma(true, () => be().toHost(be().linear(be().fromHost(x.slice(t * K, (t + 1) * K), [1, K]), w.g, b.g)));
        assertBitwise(alone, batch.slice(t * N, (t + 1) * N), `[${N}, ${K}] token ${t} alone vs in a batch of 8`);
      }
      // Again, the same bits (the split-K counters were reset).
      await fresh();
      assertBitwise(withMma(true, () => be().toHost(be().linear(be().fromHost(x, [8, K]), w.g, b.g))), batch, `[${N}, ${K}] a second run`);
      const def = launchesOf(be(), () => void be().linear(be().fromHost(x.slice(0, 2 * K), [2, K]), w.g));
      assert.ok(def.every((n) => !n.startsWith('gemv_mma_int4')), `the default is the FMA GEMV: ${def.join(', ')}`);
    }
  });

  it('linearMany and linearSiluMul on mma: one launch each, bitwise the separate mma linears (and silu_mul)', async () => {
    // K 512: no split; 4096: the small matrices split K over blocks; 320: a padded tile; g64 and asymmetric variants.
    const cases: [number, number, boolean][] = [[512, 128, true], [4096, 128, false], [320, 64, true], [1024, 64, false], [768, -1, true]];
    for (const [K, groupSize, symmetric] of cases) {
      const gs = groupSize === -1 ? K : groupSize;
      const ws = [weights(96, K, gs, symmetric), weights(32, K, gs, symmetric), weights(40, K, gs, symmetric)];
      const biases = [vec(96), undefined, vec(40)];
      const gate = weights(200, K, gs, symmetric);
      const up = weights(200, K, gs, symmetric);
      const bg = vec(200);
      for (const T of [1, 5, 8]) {
        const what = `K ${K} group ${gs} ${symmetric ? 'sym' : 'asym'} × ${T}`;
        const x = uniform(T * K);
        await fresh();
        withMma(true, () => {
          let many: Float32Array[] = [];
          const manyLaunches = launchesOf(be(), () => (many = be().linearMany(be().fromHost(x, [T, K]), ws.map((w) => w.g), biases.map((b) => b?.g)).map((y) => be().toHost(y))));
          const suffix = `${symmetric ? '' : '_zp'}${gs === 64 ? '_g64' : ''}`;
          assert.deepEqual(manyLaunches.filter((n) => n.startsWith('gemv_')).map(classicName), [`gemv_mma_int4many${suffix}`], `${what}: linearMany launches ${manyLaunches.join(', ')}`);
          const sep = ws.map((w, i) => be().toHost(be().linear(be().fromHost(x, [T, K]), w.g, biases[i]?.g)));
          many.forEach((y, i) => assertBitwise(y, sep[i], `${what} linearMany output ${i}`));
          let silu: Float32Array = new Float32Array();
          const siluLaunches = launchesOf(be(), () => (silu = be().toHost(be().linearSiluMul(be().fromHost(x, [T, K]), gate.g, up.g, bg.g))));
          assert.deepEqual(siluLaunches.filter((n) => n.startsWith('gemv_') || n === 'silu_mul').map(classicName), [`gemv_mma_int4silu${suffix}`], `${what}: linearSiluMul launches ${siluLaunches.join(', ')}`);
          const ref = be().toHost(be().siluMul(be().linear(be().fromHost(x, [T, K]), gate.g, bg.g), be().linear(be().fromHost(x, [T, K]), up.g)));
          assertBitwise(silu, ref, `${what} linearSiluMul`);
        });
      }
    }
  });

  it('weights that do not agree on the kernel variant run one by one on mma', async () => {
    const K = 512;
    const ws = [weights(64, K, 128, true), weights(64, K, 128, false)];
    const x = uniform(2 * K);
    await fresh();
    const names = withMma(true, () => launchesOf(be(), () => void be().linearMany(be().fromHost(x, [2, K]), ws.map((w) => w.g))));
    assert.deepEqual(names.filter((n) => n.startsWith('gemv_')).map(classicName), ['gemv_mma_int4', 'gemv_mma_int4_zp'], names.join(', '));
  });

  it('an engine of one token a step runs int4 weights the streamed kernels take on them, the rest on FMA', async (t) => {
    const q = be().quantized;
    const { q8DecodeGemv } = q;
    q.chooseDecodeGemvs(1, {});
    try {
      const K = 4096;
      const streamable = weights(16 * be().device.multiprocessors, K, 128, true);
      const g32 = weights(64, 512, 32, true); // no tensor-core GEMV for groups under 64
      const x = uniform(K);
      await fresh();
      let got: Float32Array = new Float32Array();
      const names = launchesOf(be(), () => (got = be().toHost(be().linear(be().fromHost(x, [1, K]), streamable.g)))).filter((n) => n.startsWith('gemv_') || n.startsWith('qgemv'));
      if (be().device.computeCapability >= 90) assert.deepEqual(names, ['gemv_mma_int4s'], names.join(', '));
      else assert.ok(names.every((n) => !n.startsWith('gemv_mma')), `sm_${be().device.computeCapability}: FMA (${names.join(', ')})`);
      assertClose(got, cpu.toHost(cpu.linear(cpu.fromHost(roundBf16(x), [1, K]), streamable.c)), be().device.computeCapability >= 90 ? 1e-5 : 1e-2, 'vs the CPU');
      const fma = launchesOf(be(), () => void be().linear(be().fromHost(uniform(512), [1, 512]), g32.g));
      assert.ok(fma.every((n) => !n.startsWith('gemv_mma')), fma.join(', '));
    } finally {
      q.chooseDecodeGemvs(8, {});
      q.decodeGemv = 'fma';
      q.q8DecodeGemv = q8DecodeGemv;
    }
    assert.equal(q.streamOneToken, false);
  });

  it('the streamed kernels (sm_90+) give bitwise the classic kernels\' outputs: linear, linearMany, linearSiluMul', async (t) => {
    if (be().device.computeCapability < 90) return t.skip(`sm_${be().device.computeCapability} has no bulk copies: the streamed kernels are not made`);
    const onMma = <R>(fn: () => R) => withMma(true, fn);
    const compare = (what: string, fn: () => Float32Array[], streams = true) => assertStreamedIsClassic(be(), SEED, onMma, what, fn, streams);
    const SMs = be().device.multiprocessors;
    // [N, K, group, symmetric]: N ≥ 16 · SMs rows leave K unsplit; K 14336 ends on a stage of 8 tiles,
    // 4608 on one of 2; groups of 64 and 128, zero points; up to 8 tokens (K 14336 only fits 1 or 2).
    const cases: [number, number, number, boolean, number[]][] = [
      [16 * SMs + 40, 4096, 128, true, [1, 3, 8]],
      [16 * SMs + 3, 4608, 128, true, [1, 2]],
      [16 * SMs, 6144, 128, false, [1, 4]],
      [16 * SMs + 16, 4096, 64, false, [1, 5]],
      [16 * SMs + 1, 14336, 128, true, [1, 2]],
    ];
    for (const [N, K, gs, symmetric, tokens] of cases) {
      const w = weights(N, K, gs, symmetric);
      const b = vec(N);
      const bq = vec(16 * SMs + 8);
      const qkv = [weights(16 * SMs + 8, K, gs, symmetric), weights(16 * SMs + 24, K, gs, symmetric), weights(16 * SMs + 5, K, gs, symmetric)];
      const gate = weights(16 * SMs + 8, K, gs, symmetric);
      const up = weights(16 * SMs + 8, K, gs, symmetric);
      for (const T of tokens) {
        const what = `[${N}, ${K}] group ${gs} ${symmetric ? 'sym' : 'asym'} × ${T}`;
        const x = uniform(T * K);
        const ops: [string, () => Float32Array[]][] = [
          ['linear', () => [be().toHost(be().linear(be().fromHost(x, [T, K]), w.g, b.g))]],
          ['linearMany', () => be().linearMany(be().fromHost(x, [T, K]), qkv.map((q) => q.g), [bq.g, undefined, undefined]).map((y) => be().toHost(y))],
          ['linearSiluMul', () => [be().toHost(be().linearSiluMul(be().fromHost(x, [T, K]), gate.g, up.g))]],
        ];
        for (const [op, fn] of ops) await compare(`${what} ${op}`, fn);
      }
    }
    // Matrices whose plan splits K (k and v of 64 rows in q/k/v, 1024 rows with zero points, 75 rows of
    // K 6144 in 6 splits): streamed, summed within a block as the splits would be, bitwise the classic
    // kernels.
    const K = 4096;
    const split = [weights(16 * SMs, K, 128, true), weights(64, K, 128, true), weights(64, K, 128, true)];
    const kv = weights(1024, K, 128, false);
    const narrow = weights(75, 6144, 128, true);
    const x6144 = uniform(6144);
    // (At 8 tokens x and 4 splits' sums fit beside a ring of 2 stages only.)
    for (const T of [1, 4, 8]) {
      const x = uniform(T * K);
      const ops: [string, () => Float32Array[]][] = [
        ['q/k/v with split k, v', () => be().linearMany(be().fromHost(x, [T, K]), split.map((q) => q.g)).map((y) => be().toHost(y))],
        ['[1024, 4096] with zero points', () => [be().toHost(be().linear(be().fromHost(x, [T, K]), kv.g))]],
      ];
      if (T === 1) ops.push(['[75, 6144]', () => [be().toHost(be().linear(be().fromHost(x6144, [1, 6144]), narrow.g))]]);
      for (const [op, fn] of ops) await compare(`${op} × ${T}`, fn);
    }
    // K 14336: 3 and 5 tokens on a ring of 2 stages, bitwise the classic kernel; at 6 x does not fit
    // beside it, and the classic kernel runs.
    const w14 = weights(16 * SMs, 14336, 128, true);
    for (const T of [3, 5]) {
      const x = uniform(T * 14336);
      const names = await compare(`${T} tokens at K 14336`, () => [be().toHost(be().linear(be().fromHost(x, [T, 14336]), w14.g))]);
      assert.deepEqual([names.streamed, names.classic], [['gemv_mma_int4s'], ['gemv_mma_int4']], `${T} tokens at K 14336`);
    }
    const x6 = uniform(6 * 14336);
    const six = await compare('6 tokens at K 14336', () => [be().toHost(be().linear(be().fromHost(x6, [6, 14336]), w14.g))], false);
    assert.deepEqual(six.streamed, ['gemv_mma_int4'], `6 tokens at K 14336: ${six.streamed.join(', ')}`);
  });
});

describe('the default model with --quantization w4a16 on the int4 mma GEMV', { skip: skipReason }, () => {
  it('logits of 8-token prompts within 3e-2 of the FMA GEMV\'s, the mma kernel doing the int4 linears', async () => {
    const m = await LLM.load({ device: 'cuda', quantization: 'w4a16' });
    try {
      const model = m.loaded.model;
      const be = model.backend as CudaBackend;
      const c = model.config;
      // Every row's logits of a prompt from position 0, in a fresh cache.
      const logitsOf = (tokens: number[]) => new ModelRunner(model, 1, 16).step([{ seq: 0, start: 0, tokens }])[0];
      for (let p = 0; p < 2; p++) {
        const tokens = Array.from({ length: 8 }, () => randInt(c.vocabSize));
        await nextTurn();
        be.poisonFreeMemory();
        const fma = logitsOf(tokens).slice();
        await nextTurn();
        be.poisonFreeMemory();
        be.quantized.decodeGemv = 'mma';
        let mmaLogits: Float32Array = new Float32Array();
        let names: string[] = [];
        try {
          names = launchesOf(be, () => (mmaLogits = logitsOf(tokens).slice()));
        } finally {
          be.quantized.decodeGemv = 'fma';
        }
        // A layer: q/k/v in one launch, o, gate/up·SiLU in one launch, down.
        assert.equal(names.filter((n) => n.startsWith('gemv_mma_int4')).length, 4 * c.numLayers, `the int4 linears on mma: ${[...new Set(names)].join(', ')}`);
        assert.equal(names.filter((n) => n.startsWith('gemv_mma_int4silu')).length, c.numLayers, 'gate/up·SiLU fused');
        assert.ok(!names.some((n) => n.startsWith('qgemv2')), 'no FMA int4 GEMV');
        // Every int4 linear rounds its input to bf16 (2⁻⁹ each, 7 a layer).
        assertClose(mmaLogits, fma, 3e-2, `prompt ${p}: logits on the int4 mma GEMV vs FMA`);
      }
    } finally {
      await m.close();
    }
  });
});
