// Quantized linears of decode steps of more than 8 tokens (CudaBackend.quantSlices): int4, int8 and nvfp4
// weights on their tensor-core GEMVs run in slices of 16 tokens (the _n2 kernels: two 8-token tiles a
// launch), instead of a GEMM over a bf16 copy of the weight. Each token must get the same bits as
// alone (the kernel and its split of K depend on the weight only), every output must be within the
// tensor-core GEMV's bound of the CPU's linear (x rounded to bf16: 1e-2 against exact x), fused
// q/k/v and gate/up·SiLU must be bitwise the separate sliced linears, and the MLP must take the
// slices too. Steps past the formats' limit, weights on the FMA kernels and FP8 weights with W8A8
// GEMMs keep the dequantise-and-GEMM path. Without a GPU the suite skips with the reason.

import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { DEFAULT_SLICED_MAX_TOKENS, QUANT_SLICED_LIMIT } from '../src/backend/cuda/quantized-weights.js';
import type { QuantizedWeight } from '../src/quant/format.js';
import { quantizeFp8 } from '../src/quant/fp8.js';
import { quantizeInt4 } from '../src/quant/int4.js';
import { quantizeInt8 } from '../src/quant/int8.js';
import { quantizeNvfp4 } from '../src/quant/nvfp4.js';
import { comparisons, launchesOf, openTestGpu, testRandom } from './support/cuda.js';

const { gpu, skipReason } = await openTestGpu();
const cpu = new CpuBackend();
const { seed: SEED, uniform } = testRandom();
const { assertClose, assertBitwise } = comparisons(SEED);
const f32Tensor = (v: Float32Array, shape: number[]) => ({ dtype: 'F32' as const, shape, bytes: new Uint8Array(v.buffer, v.byteOffset, v.byteLength) });

type Format = 'int4' | 'int8' | 'nvfp4';
const FORMATS: Format[] = ['int4', 'int8', 'nvfp4'];
function quantize(f: Format | 'fp8', N: number, K: number): QuantizedWeight {
  const w = uniform(N * K, -0.1, 0.1);
  if (f === 'int4') return quantizeInt4(w, N, K, { groupSize: 128, symmetric: false });
  if (f === 'int8') return quantizeInt8(w, N, K);
  if (f === 'fp8') return quantizeFp8(w, N, K, { perChannel: true });
  return quantizeNvfp4(w, N, K);
}
const isGemv = (n: string) => n.startsWith('gemv_mma_');
/** Tokens a launch of the tensor-core GEMVs takes: their _n2 kernels take two 8-token tiles. */
const perLaunch = (_f: Format | 'fp8') => 16;
const isDequant = (n: string) => n.startsWith('dequant_');

describe('quantized decode steps of more than 8 tokens in slices on CUDA', { skip: skipReason }, () => {
  const be = () => gpu!;
  const fresh = async () => {
    await nextTurn();
    be().poisonFreeMemory();
  };
  after(() => {
    if (!gpu) return;
    gpu.quantized.decodeGemv = 'fma';
    gpu.quantized.q8DecodeGemv = 'fma';
  });
  /** fn with the decode GEMVs on the tensor cores (what an engine of more than one token a step picks). */
  const onMma = <R>(fn: () => R): R => {
    const q = be().quantized;
    q.decodeGemv = 'mma';
    q.q8DecodeGemv = 'mma';
    try {
      return fn();
    } finally {
      q.decodeGemv = 'fma';
      q.q8DecodeGemv = 'fma';
    }
  };
  const weights = (f: Format | 'fp8', N: number, K: number) => {
    const q = quantize(f, N, K);
    return { c: cpu.loadQuantized('w', q), g: be().loadQuantized('w', q) };
  };
  const vec = (n: number) => {
    const b = uniform(n, -2, 2);
    return { c: cpu.loadDense('b', f32Tensor(b, [n])), g: be().loadDense('b', f32Tensor(b, [n])) };
  };

  for (const f of FORMATS) {
    it(`${f} linear at 9, 16, 21 and ${DEFAULT_SLICED_MAX_TOKENS[f]} tokens (its limit): ⌈T / ${perLaunch(f)}⌉ GEMV launches, each token the bits of the token alone, ≤ 1e-2 of the CPU`, async () => {
      for (const [N, K] of [[200, 512], [96, 4096]] as const) {
        const w = weights(f, N, K);
        const b = vec(N);
        for (const T of [9, 16, 21, DEFAULT_SLICED_MAX_TOKENS[f]]) {
          const what = `${f} [${N}, ${K}] × ${T}`;
          const x = uniform(T * K);
          await fresh();
          let got: Float32Array = new Float32Array();
          const names = onMma(() => launchesOf(be(), () => (got = be().toHost(be().linear(be().fromHost(x, [T, K]), w.g, b.g)))));
          assert.equal(names.filter(isGemv).length, Math.ceil(T / perLaunch(f)), `${what}: launches ${names.join(', ')}`);
          assert.ok(!names.some(isDequant), `${what}: no bf16 copy of the weight (${names.join(', ')})`);
          assertClose(got, cpu.toHost(cpu.linear(cpu.fromHost(x.slice(), [T, K]), w.c, b.c)), 1e-2, `${what} vs the CPU`);
          for (const t of new Set([0, 8, Math.min(9, T - 1), T - 1])) {
            const alone = onMma(() => be().toHost(be().linear(be().fromHost(x.slice(t * K, (t + 1) * K), [1, K]), w.g, b.g)));
            assertBitwise(alone, got.slice(t * N, (t + 1) * N), `${what}: token ${t} alone vs in the step`);
          }
        }
      }
    });

    it(`${f} q/k/v, gate/up·SiLU and the MLP at 20 tokens: sliced launches (fused where the kernels take them), bitwise the separate sliced linears`, async () => {
      const K = 512;
      const T = 20;
      const ws = [weights(f, 96, K), weights(f, 32, K), weights(f, 32, K)];
      const gate = weights(f, 256, K);
      const up = weights(f, 256, K);
      const down = weights(f, K, 256);
      const x = uniform(T * K);
      await fresh();
      onMma(() => {
        const xg = be().fromHost(x, [T, K]);
        let many: Float32Array[] = [];
        const manyLaunches = launchesOf(be(), () => (many = be().linearMany(xg, ws.map((w) => w.g)).map((y) => be().toHost(y))));
        // One launch a slice where the fused kernels take the weights (QuantizedWeights.fusedFormat), else one a weight.
        const fusedMany = be().quantized.fusedFormat(ws.map((w) => w.g), K, 'many') !== undefined;
        const slices = Math.ceil(T / perLaunch(f));
        assert.equal(manyLaunches.filter(isGemv).length, slices * (fusedMany ? 1 : 3), `linearMany (${manyLaunches.join(', ')})`);
        ws.forEach((w, i) => assertBitwise(many[i], be().toHost(be().linear(xg, w.g)), `linearMany output ${i}`));
        let silu: Float32Array = new Float32Array();
        const siluLaunches = launchesOf(be(), () => (silu = be().toHost(be().linearSiluMul(xg, gate.g, up.g))));
        const fusedSilu = be().quantized.fusedFormat([gate.g, up.g], K, 'silu') !== undefined;
        assert.equal(siluLaunches.filter(isGemv).length, slices * (fusedSilu ? 1 : 2), `linearSiluMul (${siluLaunches.join(', ')})`);
        assertBitwise(silu, be().toHost(be().siluMul(be().linear(xg, gate.g), be().linear(xg, up.g))), 'linearSiluMul');
        let mlp: Float32Array = new Float32Array();
        const mlpLaunches = launchesOf(be(), () => (mlp = be().toHost(be().mlp!(xg, gate.g, up.g, down.g))));
        assert.ok(!mlpLaunches.some(isDequant), `mlp: no bf16 copies (${mlpLaunches.join(', ')})`);
        assertBitwise(mlp, be().toHost(be().linear(be().linearSiluMul(xg, gate.g, up.g), down.g)), 'mlp');
        const want = cpu.linear(cpu.siluMul(cpu.linear(cpu.fromHost(x.slice(), [T, K]), gate.c), cpu.linear(cpu.fromHost(x.slice(), [T, K]), up.c)), down.c);
        assertClose(mlp, cpu.toHost(want), 3e-2, 'mlp vs the CPU');
      });
    });
  }

  it('keeps the bf16 copy and GEMM past the limit, on the FMA kernels, and for FP8 weights with W8A8 GEMMs', async () => {
    const K = 512;
    const x = uniform((QUANT_SLICED_LIMIT + 1) * K);
    const launches = (w: ReturnType<typeof weights>, T: number, mma: boolean) => {
      const run = () => launchesOf(be(), () => void be().toHost(be().linear(be().fromHost(x.subarray(0, T * K), [T, K]), w.g)));
      return mma ? onMma(run) : run();
    };
    const int4 = weights('int4', 64, K);
    const past = DEFAULT_SLICED_MAX_TOKENS.int4 + 1;
    assert.ok(launches(int4, past, true).some(isDequant), `int4 × ${past}: past the limit`);
    assert.ok(launches(int4, 16, false).some(isDequant), 'int4 × 16 on the FMA kernels (an engine of one token a step)');
    const sliced = be().quantized.slicedMaxTokens;
    const keep = { ...sliced };
    sliced.int4 = 8;
    try {
      assert.ok(launches(int4, 16, true).some(isDequant), 'int4 × 16 with slicing off (slicedMaxTokens 8)');
    } finally {
      Object.assign(sliced, keep);
    }
    const fp8 = weights('fp8', 64, K);
    const names = launches(fp8, 16, true);
    if (be().device.computeCapability >= 89) assert.ok(!names.some(isGemv), `fp8 × 16 on sm_${be().device.computeCapability}: W8A8 GEMM (${names.join(', ')})`);
    else assert.equal(names.filter(isGemv).length, Math.ceil(16 / perLaunch('fp8')), `fp8 × 16 without FP8 tensor cores: sliced (${names.join(', ')})`);
  });
});
