// Prefill's residual stream on the CUDA backend: the o projection and the MLP's down linear add to
// the residual inside their cuBLASLt GEMM (linearAdd, mlpAdd: beta 1, C = the residual), and norms
// read only by linears leave their float32 rows unwritten until something asks (NormReaders
// 'linears'). Held against the CPU backend and against the separate linear + add on fresh random
// inputs, for dense bf16 / f16, FP8 (W8A8) and w4a16 weights; decode steps and the switches off must
// change nothing. Without a GPU the suite skips with the reason.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { linearAddRmsNorm, mlp, mlpAdd, type Weight } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import type { HostTensor } from '../src/model/load/safetensors.js';
import { DEFAULT_SLICED_MAX_TOKENS } from '../src/backend/cuda/quantized-weights.js';
import { comparisons, launchesOf, openTestGpu, testRandom } from './support/cuda.js';
import { weightPairs, type WeightKind } from './support/weight-pair.js';

const { gpu, skipReason } = await openTestGpu();
const cpu = new CpuBackend();
const { seed: SEED, uniform } = testRandom();
const { assertClose, assertBitwise } = comparisons(SEED);

type Kind = WeightKind;
/** One [rows, cols] weight of random values on both backends, dense in a 16-bit type or quantized. */
const weight = weightPairs(cpu, gpu, uniform);

function normWeight(n: number): { c: Weight; g: Weight } {
  const t: HostTensor = { dtype: 'F32', shape: [n], bytes: new Uint8Array(uniform(n, 0.5, 1.5).buffer) };
  return { c: cpu.loadDense('norm', t), g: gpu!.loadDense('norm', t) };
}

// bf16 rounds each product to 8 significant bits on the GPU (x cast for the GEMM); FP8 quantises x
// per token (its CPU reference emulates that, but accumulation orders differ at a code boundary);
// the residual (±2) dominates the sums, so the bounds are on the sum.
const kinds: { kind: Kind; bound: number; T: number }[] = [
  { kind: 'BF16', bound: 3e-3, T: 40 },
  { kind: 'F16', bound: 5e-4, T: 17 },
  { kind: 'fp8', bound: 2e-2, T: 33 },
  // More tokens than quantized weights take in slices on the decode GEMVs (CudaBackend.quantSlices).
  { kind: 'w4a16', bound: 3e-3, T: DEFAULT_SLICED_MAX_TOKENS.int4 + 5 },
];

describe('CUDA prefill: the residual added inside the GEMM', { skip: skipReason }, () => {
  const be = gpu!;
  const fp8Skip = (kind: Kind) => kind === 'fp8' && !be?.canMatmulFp8(256) && 'no FP8 GEMMs on this GPU';

  for (const { kind, bound, T } of kinds) {
    it(`${kind}: linearAdd gives residual + linear (CPU within ${bound}; the separate add within float32 rounding)`, { skip: fp8Skip(kind) }, () => {
      const H = 512, K = 384;
      const w = weight(kind, H, K);
      const x = uniform(T * K, -2, 2);
      const res = uniform(T * H, -2, 2);
      // CPU: the plain linear and add.
      const rc = cpu.fromHost(res.slice(), [T, H]);
      cpu.addInPlace(rc, cpu.linear(cpu.fromHost(x, [T, K]), w.c));
      const want = cpu.toHost(rc);
      // GPU, in the GEMM.
      const rg = be.fromHost(res, [T, H]);
      let added = false;
      const names = launchesOf(be, () => (added = be.linearAdd(be.fromHost(x, [T, K]), w.g, rg)));
      assert.ok(added, 'linearAdd ran');
      assert.ok(!names.includes('add_inplace'), `no separate add (${names.join(', ')})`);
      const got = be.toHost(rg);
      assertClose(got, want, bound, `${kind} residual + linear against the CPU`);
      // GPU, the linear then the add: one rounding more (the product rounded to float32 before the add).
      const rs = be.fromHost(res, [T, H]);
      be.addInPlace(rs, be.linear(be.fromHost(x, [T, K]), w.g));
      assertClose(got, be.toHost(rs), 1e-6, `${kind} in the GEMM against linear + addInPlace`);
    });

    it(`${kind}: mlpAdd gives residual + mlp, the add in the down GEMM`, { skip: fp8Skip(kind) }, () => {
      const H = 256, N = 640;
      const gate = weight(kind, N, H), up = weight(kind, N, H), down = weight(kind, H, N);
      const x = uniform(T * H, -2, 2);
      const res = uniform(T * H, -2, 2);
      const rg = be.fromHost(res, [T, H]);
      const xt = be.fromHost(x, [T, H]);
      assert.equal(mlpAdd(be, xt, gate.g, up.g, down.g, {}, rg), undefined, 'added in the GEMM: nothing left for the caller');
      const got = be.toHost(rg);
      const rs = be.fromHost(res, [T, H]);
      be.addInPlace(rs, mlp(be, be.fromHost(x, [T, H]), gate.g, up.g, down.g));
      assertClose(got, be.toHost(rs), 1e-6, `${kind} mlpAdd against mlp + addInPlace`);
      const rc = cpu.fromHost(res.slice(), [T, H]);
      cpu.addInPlace(rc, mlp(cpu, cpu.fromHost(x, [T, H]), gate.c, up.c, down.c));
      // The MLP's own bounds (cuda-mlp.test.ts: 1e-2 on its output), on a sum the residual dominates.
      assertClose(got, cpu.toHost(rc), 1e-2, `${kind} mlpAdd against the CPU`);
    });
  }

  it('declines decode steps, float32 weights and residualInGemm = false, changing nothing', () => {
    const H = 256, K = 256;
    const bf = weight('BF16', H, K);
    const f32: HostTensor = { dtype: 'F32', shape: [H, K], bytes: new Uint8Array(uniform(H * K).buffer) };
    const wf = be.loadDense('w', f32);
    const cases: Array<{ what: string; T: number; w: Weight; off?: boolean }> = [
      { what: 'a decode step of 8 tokens', T: 8, w: bf.g },
      { what: 'float32 weights', T: 40, w: wf },
      { what: 'residualInGemm off', T: 40, w: bf.g, off: true },
    ];
    for (const c of cases) {
      const res = uniform(c.T * H, -2, 2);
      const rg = be.fromHost(res, [c.T, H]);
      be.residualInGemm = !c.off;
      try {
        const names = launchesOf(be, () => assert.equal(be.linearAdd(be.fromHost(uniform(c.T * K), [c.T, K]), c.w, rg), false, `${c.what}: declined`));
        assert.deepEqual(names, [], `${c.what}: nothing launched`);
        assertBitwise(be.toHost(rg), res, `${c.what}: the residual unchanged`);
      } finally {
        be.residualInGemm = true;
      }
    }
  });

  it('linearAddRmsNorm falls back to linear + addRmsNorm where the backend declines (a bias)', () => {
    const H = 256, K = 256, T = 40;
    const w = weight('BF16', H, K);
    const bias = be.loadDense('b', { dtype: 'F32', shape: [H], bytes: new Uint8Array(uniform(H, -0.1, 0.1).buffer) });
    const nw = normWeight(H);
    const x = uniform(T * K), res = uniform(T * H, -2, 2);
    const r1 = be.fromHost(res, [T, H]);
    const got = be.toHost(linearAddRmsNorm(be, be.fromHost(x, [T, K]), w.g, bias, r1, nw.g, 1e-5));
    const r2 = be.fromHost(res, [T, H]);
    const want = be.toHost(be.addRmsNorm(be.linear(be.fromHost(x, [T, K]), w.g, bias), r2, nw.g, 1e-5));
    assertBitwise(got, want, 'with a bias: the separate linear and addRmsNorm');
    assertBitwise(be.toHost(r1), be.toHost(r2), 'the residual alike');
  });
});

describe("CUDA prefill: norms read only by linears (NormReaders 'linears')", { skip: skipReason }, () => {
  const be = gpu!;
  const H = 1024, T = 40;

  for (const kind of ['BF16', 'fp8'] as const) {
    it(`${kind}: the norm writes only the GEMMs' input; the float32 rows come when asked, the same bits`, { skip: kind === 'fp8' && !be?.canMatmulFp8(256) && 'no FP8 GEMMs on this GPU' }, () => {
      const w = weight(kind, 256, H);
      const nw = normWeight(H);
      const x = uniform(T * H, -2, 2), res = uniform(T * H, -2, 2);
      // A prefill GEMM first, so the norms know the form the next ones read.
      be.linear(be.fromHost(x, [T, H]), w.g);
      const run = (readers: 'any' | 'linears', addFirst: boolean) => {
        let y: Float32Array | undefined, n: Float32Array | undefined;
        const r = be.fromHost(res, [T, H]);
        const norm = () => (addFirst ? be.addRmsNorm(be.fromHost(x, [T, H]), r, nw.g, 1e-5, readers) : be.rmsNorm(r, nw.g, 1e-5, readers));
        let out: ReturnType<typeof norm> | undefined;
        const names = launchesOf(be, () => {
          out = norm();
          y = be.toHost(be.linear(out, w.g));
        });
        const later = launchesOf(be, () => (n = be.toHost(out!)));
        return { y: y!, n: n!, names, later, r: be.toHost(r) };
      };
      for (const addFirst of [false, true]) {
        const what = addFirst ? 'addRmsNorm' : 'rmsNorm';
        const lazy = run('linears', addFirst);
        const eager = run('any', addFirst);
        assert.deepEqual(lazy.later, [`rms_norm_b1`], `${what}: the float32 rows made on toHost (${lazy.later.join(', ')})`);
        assert.deepEqual(eager.later, [], `${what} 'any': written at once`);
        assert.ok(!lazy.names.some((n) => /^rms_norm_b\d|f32_to|quantize_rows/.test(n)), `${what}: the linear read the side output (${lazy.names.join(', ')})`);
        assertBitwise(lazy.n, eager.n, `${what}: deferred rows against written ones`);
        assertBitwise(lazy.y, eager.y, `${what}: the linear after it`);
        assertBitwise(lazy.r, eager.r, `${what}: the residual`);
      }
    });
  }

  // The side-output norms walk rows, a block per resident slot, with the next row's loads in flight
  // (norm.cu rms_norm_rows): more rows than blocks, and rows wide enough for 2 and 3 float4s a thread
  // (3: loaded as reached, no prefetch), against the one-row-a-block kernels, bit for bit.
  for (const kind of ['BF16', 'fp8'] as const) {
    it(`${kind}: norms walking more rows than resident blocks give the row kernel's bits (4096, 8192, 12288 columns)`, { skip: kind === 'fp8' && !be?.canMatmulFp8(256) && 'no FP8 GEMMs on this GPU' }, () => {
      const rows = 3 * be.device.multiprocessors + 7;
      for (const cols of [4096, 8192, 12288]) {
        const w = weight(kind, 64, cols);
        const nw = normWeight(cols);
        const x = uniform(rows * cols, -2, 2), res = uniform(rows * cols, -2, 2);
        be.linear(be.fromHost(x, [rows, cols]), w.g);
        const run = (side: boolean) => {
          be.fusedNormOutput = side;
          try {
            const r = be.fromHost(res, [rows, cols]);
            const a = be.rmsNorm(be.fromHost(x, [rows, cols]), nw.g, 1e-5);
            const ya = be.linear(a, w.g);
            const b = be.addRmsNorm(be.fromHost(x, [rows, cols]), r, nw.g, 1e-5);
            const yb = be.linear(b, w.g);
            return [a, ya, b, yb, r].map((t) => be.toHost(t));
          } finally {
            be.fusedNormOutput = true;
          }
        };
        const walked = run(true), plain = run(false);
        ['rmsNorm', 'its linear', 'addRmsNorm', 'its linear', 'the residual'].forEach((what, i) => assertBitwise(walked[i], plain[i], `${cols} columns: ${what}`));
      }
    });
  }

  it('refuses to make deferred rows after an in-place op, naming the contract', () => {
    const w = weight('BF16', 256, H);
    const nw = normWeight(H);
    const r = be.fromHost(uniform(T * H, -2, 2), [T, H]);
    be.linear(be.fromHost(uniform(T * H), [T, H]), w.g);
    const out = be.rmsNorm(r, nw.g, 1e-5, 'linears');
    be.addInPlace(r, be.fromHost(uniform(T * H), [T, H]));
    assert.throws(() => be.toHost(out), /made for linears only \(NormReaders 'linears'\) was read after an in-place op/);
  });

  it('decode steps and deferNormOutput = false write the rows at once', () => {
    const w = weight('BF16', 256, H);
    const nw = normWeight(H);
    be.linear(be.fromHost(uniform(T * H), [T, H]), w.g);
    for (const [rows, off] of [[8, false], [T, true]] as const) {
      be.deferNormOutput = !off;
      try {
        const out = be.rmsNorm(be.fromHost(uniform(rows * H), [rows, H]), nw.g, 1e-5, 'linears');
        assert.deepEqual(launchesOf(be, () => be.toHost(out)), [], `${rows} rows${off ? ', deferNormOutput off' : ''}: nothing left to make`);
      } finally {
        be.deferNormOutput = true;
      }
    }
  });
});
