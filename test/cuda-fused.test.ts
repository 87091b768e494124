// The fused decode linears: linearMany (q/k/v in one launch) and linearSiluMul (gate/up·SiLU in one
// pass). On CUDA every fused result must equal the separate ops bitwise (same summation order) and
// the CPU reference within 2e-5, on fresh random inputs with free memory poisoned; the model forward
// must give the same logits with and without them. Without a GPU the CUDA suites skip with the
// reason, and the CPU suite checks the forward's fallback when a backend lacks the ops.

import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { linearMany, linearSiluMul, type Backend, type Tensor, type Weight } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import type { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { FUSED_GEMV_VARIANTS } from '../src/backend/cuda/fused-linear.js';
import { loadEagle3Head } from '../src/engine/spec/eagle3.js';
import { DEFAULT_EAGLE3_MODEL_NAME, DEFAULT_MODEL_NAME, embeddedModelDir } from '../src/model/default-model.js';
import type { Eagle3Batch } from '../src/model/eagle3.js';
import { f32ToBf16 } from '../src/model/load/dtype.js';
import type { HostTensor } from '../src/model/load/safetensors.js';
import { loadLlama, ModelRunner, runSteps } from './support/run-model.js';
import { comparisons, launchesOf, openTestGpu, testRandom } from './support/cuda.js';

// Decode GEMVs take the float32 FMA kernels here, held to the float32 CPU; the tensor-core GEMV
// (x rounded to bf16) has its own bounds in cuda-gemv-mma.test.ts. Each file runs in its own process.
process.env.TACHYON_DECODE_GEMV = 'fma';

const { gpu, skipReason } = await openTestGpu();

const cpu = new CpuBackend();
// Fresh inputs on every run; the seed is in every failure message so a failure can be replayed.
const { seed: SEED, rng, uniform, randInt } = testRandom();
const { assertClose, assertBitwise } = comparisons(SEED);

/** float32 → IEEE half (round to nearest), enough for test values in [-4, 4]. */
function f32ToF16(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = ((u >>> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return sign; // tiny values flush to zero; fine for tests
  const mant = u & 0x7fffff;
  let h = sign | (exp << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;
  return h;
}

type Dtype = 'BF16' | 'F16' | 'F32';

/** A checkpoint-like tensor of random values in `dtype` (bf16/f16 rounded from float32). */
function hostTensor(dtype: Dtype, shape: number[], scale = 1): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const vals = uniform(n, -scale, scale);
  if (dtype === 'F32') return { dtype, shape, bytes: new Uint8Array(vals.buffer) };
  const bits = new Uint16Array(n);
  for (let i = 0; i < n; i++) bits[i] = dtype === 'BF16' ? f32ToBf16(vals[i]) : f32ToF16(vals[i]);
  return { dtype, shape, bytes: new Uint8Array(bits.buffer) };
}

/** The same weight on both backends. */
function weightPair(dtype: Dtype, shape: number[], scale = 1): { c: Weight; g: Weight } {
  const t = hostTensor(dtype, shape, scale);
  return { c: cpu.loadDense('w', t), g: gpu!.loadDense('w', t) };
}

/** Matrices [N, K] and optional float32 biases [N] on both backends. */
function layerPair(dtype: Dtype, widths: number[], K: number, withBias: boolean) {
  const ws = widths.map((N) => weightPair(dtype, [N, K], 0.5));
  const bs = widths.map((N) => (withBias ? weightPair('F32', [N]) : undefined));
  return {
    c: ws.map((w) => w.c),
    g: ws.map((w) => w.g),
    cb: bs.map((b) => b?.c),
    gb: bs.map((b) => b?.g),
  };
}

const KS: Array<[number, string]> = [
  [256, 'aligned K'],
  [264, 'aligned K, uneven warp slices'],
  [250, 'unaligned K (separate ops)'],
];
const WIDTH_SETS = [[256, 64, 64], [97, 33, 31], [40, 8, 8, 24, 5]];

describe('fused decode linears on CUDA against the separate ops (bitwise) and the CPU (≤ 2e-5)', { skip: skipReason }, () => {
  const g = () => gpu!;
  /** End the synchronous run (recycling its activations), then poison every free buffer with NaN. */
  const fresh = async () => {
    await nextTurn();
    g().poisonFreeMemory();
  };
  const toHost = (ts: Tensor[]) => ts.map((t) => g().toHost(t));

  it('linearMany: q/k/v-like widths (GQA 256/64/64, odd, more than three), bf16/f16/f32, 1/3/8 tokens, with and without biases', async () => {
    for (const dtype of ['BF16', 'F16', 'F32'] as const) {
      for (const [K0, kWhat] of KS) {
        // f32 rows are 4 values a vector: 250 is unaligned for all, 264 aligned for all.
        const K = dtype === 'F32' && K0 === 250 ? 251 : K0;
        for (const widths of WIDTH_SETS) {
          for (const withBias of [false, true]) {
            const L = layerPair(dtype, widths, K, withBias);
            for (const T of [1, 3, 8]) {
              await fresh();
              const host = uniform(T * K);
              const xg = g().fromHost(host, [T, K]);
              const xc = cpu.fromHost(host.slice(), [T, K]);
              const what = `${dtype} [${widths.join('/')}] × K ${K} (${kWhat}) × ${T} tokens${withBias ? ' + bias' : ''}`;
              g().fusedLinears = false;
              const separate = toHost(L.g.map((w, i) => g().linear(xg, w, L.gb[i])));
              g().fusedLinears = true;
              const fused = toHost(g().linearMany(xg, L.g, L.gb));
              assert.equal(fused.length, widths.length);
              widths.forEach((N, i) => {
                assertBitwise(fused[i], separate[i], `${what}: output ${i} [${T}, ${N}]`);
                assertClose(fused[i], cpu.toHost(cpu.linear(xc, L.c[i], L.cb[i])), 2e-5, `${what}: output ${i} vs CPU`);
              });
            }
          }
        }
      }
    }
  });

  it('linearSiluMul: gate/up·SiLU in one pass, bf16/f16/f32, odd N, 1/3/8 tokens, with and without biases', async () => {
    for (const dtype of ['BF16', 'F16', 'F32'] as const) {
      for (const [K0, kWhat] of KS) {
        const K = dtype === 'F32' && K0 === 250 ? 251 : K0;
        for (const N of [768, 97]) {
          for (const withBias of [false, true]) {
            const L = layerPair(dtype, [N, N], K, withBias);
            for (const T of [1, 3, 8]) {
              await fresh();
              const host = uniform(T * K, -2, 2);
              const xg = g().fromHost(host, [T, K]);
              const xc = cpu.fromHost(host.slice(), [T, K]);
              const what = `${dtype} gate/up [${N}, ${K}] (${kWhat}) × ${T} tokens${withBias ? ' + biases' : ''}`;
              const separate = g().toHost(g().siluMul(g().linear(xg, L.g[0], L.gb[0]), g().linear(xg, L.g[1], L.gb[1])));
              const fused = g().toHost(g().linearSiluMul(xg, L.g[0], L.g[1], L.gb[0], L.gb[1]));
              assertBitwise(fused, separate, what);
              const want = cpu.toHost(cpu.siluMul(cpu.linear(xc, L.c[0], L.cb[0]), cpu.linear(xc, L.c[1], L.cb[1])));
              assertClose(fused, want, 2e-5, `${what} vs CPU`);
            }
          }
        }
      }
    }
  });

  it('every GEMV variant gives the same bits (they differ only in how loads are arranged)', async () => {
    for (const dtype of ['BF16', 'F16', 'F32'] as const) {
      // K 1032: 129 vectors of bf16 (several rounds per lane and a short last warp); 4096 as in Llama.
      for (const K of [1032, 4096]) {
        const L = layerPair(dtype, [256, 64, 64], K, true);
        const G = layerPair(dtype, [200, 200], K, true);
        for (const T of [1, 2, 5, 8]) {
          await fresh();
          const host = uniform(T * K);
          const xg = g().fromHost(host, [T, K]);
          const separate = toHost(L.g.map((w, i) => g().linear(xg, w, L.gb[i])));
          const separateAct = g().toHost(g().siluMul(g().linear(xg, G.g[0], G.gb[0]), g().linear(xg, G.g[1], G.gb[1])));
          for (const variant of FUSED_GEMV_VARIANTS) {
            g().fusedGemv = variant;
            const what = `${variant} ${dtype} K ${K} × ${T} tokens`;
            toHost(g().linearMany(xg, L.g, L.gb)).forEach((y, i) => assertBitwise(y, separate[i], `${what}: linearMany output ${i}`));
            assertBitwise(g().toHost(g().linearSiluMul(xg, G.g[0], G.g[1], G.gb[0], G.gb[1])), separateAct, `${what}: linearSiluMul`);
          }
          g().fusedGemv = 'auto';
        }
      }
    }
  });

  it('runs one launch where it can, and the separate ops where it cannot (> 8 tokens, unaligned K, the row GEMV, fusedLinears off)', async () => {
    await fresh();
    const L = layerPair('BF16', [256, 64, 64], 512, false);
    const x1 = g().fromHost(uniform(512), [1, 512]);
    const x3 = g().fromHost(uniform(3 * 512), [3, 512]);
    // 'auto' (the default): 'rows8' at 1 token; at 2–8 tokens 'unroll' for q/k/v and gate/up unfused.
    g().fusedGemv = 'auto';
    assert.deepEqual(launchesOf(g(), () => g().linearMany(x1, L.g)), ['gemv_many_rows8_bf16_t1']);
    assert.deepEqual(launchesOf(g(), () => g().linearSiluMul(x1, L.g[1], L.g[2])), ['gemv_silu_rows8_bf16_t1']);
    assert.deepEqual(launchesOf(g(), () => g().linearMany(x3, L.g)), ['gemv_many_unroll_bf16_t4']);
    assert.deepEqual(launchesOf(g(), () => g().linearSiluMul(x3, L.g[1], L.g[2])), ['gemv_splitk_bf16', 'gemv_splitk_bf16', 'silu_mul']);
    g().fusedGemv = 'unroll';
    assert.deepEqual(launchesOf(g(), () => g().linearMany(x1, L.g)), ['gemv_many_unroll_bf16_t1']);
    assert.deepEqual(launchesOf(g(), () => g().linearSiluMul(x1, L.g[1], L.g[2])), ['gemv_silu_unroll_bf16_t1']);
    assert.deepEqual(launchesOf(g(), () => g().linearMany(x3, L.g)), ['gemv_many_unroll_bf16_t4']);
    assert.deepEqual(launchesOf(g(), () => g().linearMany(x3, [...L.g, ...L.g])), ['gemv_many_unroll_bf16_t4', 'gemv_many_unroll_bf16_t4']);

    // More than 8 tokens: the prefill GEMM per matrix, whatever it is; the results as separate linears.
    const x9 = g().fromHost(uniform(9 * 512), [9, 512]);
    assert.ok(!launchesOf(g(), () => g().linearMany(x9, L.g)).some((n) => n.startsWith('gemv_many')));
    toHost(g().linearMany(x9, L.g)).forEach((y, i) => assertBitwise(y, g().toHost(g().linear(x9, L.g[i])), `9 tokens, output ${i}`));

    const U = layerPair('BF16', [64, 64], 250, false);
    const xu = g().fromHost(uniform(250), [1, 250]);
    assert.deepEqual(launchesOf(g(), () => g().linearMany(xu, U.g)), ['gemv_scalar_bf16', 'gemv_scalar_bf16']);

    g().gemvKernel = 'row';
    assert.deepEqual(launchesOf(g(), () => g().linearSiluMul(x1, L.g[1], L.g[2])), ['gemv_vec_bf16', 'gemv_vec_bf16', 'silu_mul']);
    g().gemvKernel = 'auto';
    g().fusedLinears = false;
    assert.deepEqual(launchesOf(g(), () => g().linearMany(x1, L.g)), ['gemv_splitk_bf16', 'gemv_splitk_bf16', 'gemv_splitk_bf16']);
    g().fusedLinears = true;
    g().fusedGemv = 'auto';
  });

  it('checks its arguments as linear does', async () => {
    await fresh();
    const L = layerPair('BF16', [64, 32], 128, false);
    const wrongBias = weightPair('F32', [63]).g;
    const x = g().fromHost(uniform(128), [1, 128]);
    assert.throws(() => g().linearMany(x, L.g, [wrongBias]), /linear bias: expected a float32 vector of 64 values, got f32 \[63\]/);
    assert.throws(() => g().linearSiluMul(x, L.g[0], L.g[0], undefined, wrongBias), /linear bias: expected a float32 vector of 64 values/);
    assert.throws(() => g().linearMany(g().fromHost(uniform(100), [1, 100]), L.g), /linear: input has 100 columns, weight expects 128/);
    // gate and up of different widths cannot be multiplied elementwise: siluMul says so.
    assert.throws(() => g().linearSiluMul(x, L.g[0], L.g[1]), /siluMul: gate has 64 values, up 32/);
    assert.deepEqual(g().linearMany(x, []), []);
  });
});

describe('the model forward with and without the fused ops on CUDA', { skip: skipReason }, () => {
  it(`${DEFAULT_MODEL_NAME}: the same logits bitwise, prefill and decode`, async () => {
    const be = gpu!;
    const model = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), be);
    const vocab = model.config.vocabSize;
    const prompt = Array.from({ length: 12 }, () => randInt(vocab));
    const run = async (fused: boolean) => {
      await nextTurn();
      be.poisonFreeMemory();
      be.fusedLinears = fused;
      try {
        return runSteps(new ModelRunner(model, 16, 4), vocab, prompt);
      } finally {
        be.fusedLinears = true;
      }
    };
    const launches = launchesOf(be, () => {
      new ModelRunner(model, 16, 4).step([{ seq: 0, start: 0, tokens: [1] }]);
    });
    assert.equal(launches.filter((n) => n.startsWith('gemv_many_')).length, model.config.numLayers, 'one q/k/v launch a layer');
    assert.equal(launches.filter((n) => n.startsWith('gemv_silu_')).length, model.config.numLayers, 'one gate/up launch a layer');
    assert.ok(!launches.includes('silu_mul'));
    const withFused = await run(true);
    const without = await run(false);
    withFused.forEach((l, i) => assertBitwise(l, without[i], `logits of chunk ${i}`));
  });

  it('the EAGLE-3 head: the same hidden states and draft logits bitwise', async () => {
    const be = gpu!;
    const target = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), be);
    const head = loadEagle3Head(embeddedModelDir(DEFAULT_EAGLE3_MODEL_NAME), target);
    const c = head.config;
    const T = 5;
    const features = uniform(T * 3 * c.targetHiddenSize);
    const tokens = Int32Array.from({ length: T }, () => randInt(c.vocabSize));
    const run = async (fused: boolean) => {
      await nextTurn();
      be.poisonFreeMemory();
      be.fusedLinears = fused;
      try {
        const kv = head.allocKvCache(4, 4);
        const batch: Eagle3Batch = {
          numTokens: T, numSeqs: 1, tokens, positions: Int32Array.from({ length: T }, (_, i) => i), seqIndex: new Int32Array(T),
          slots: Int32Array.from({ length: T }, (_, i) => i), blockTables: Int32Array.from([0, 1, 2, 3]), maxBlocksPerSeq: 4, logitRows: Int32Array.from([T - 1, 1]),
        };
        const out = head.forward(batch, head.fuse(features, T), kv);
        return { hidden: be.toHost(out.hidden), logits: out.logits };
      } finally {
        be.fusedLinears = true;
      }
    };
    const a = await run(true);
    const b = await run(false);
    assertBitwise(a.hidden, b.hidden, 'EAGLE-3 hidden');
    assertBitwise(a.logits, b.logits, 'EAGLE-3 logits');
  });
});

describe('the forward uses linearMany / linearSiluMul when a backend has them, and falls back when not (CPU)', () => {
  /** The CPU reference plus the two optional ops, done as the separate ops and counted. */
  class CountingCpu extends CpuBackend {
    many = 0;
    siluMuls = 0;
    linearMany(x: Tensor, weights: readonly Weight[], biases?: readonly (Weight | undefined)[]): Tensor[] {
      this.many++;
      return weights.map((w, i) => this.linear(x, w, biases?.[i]));
    }
    linearSiluMul(x: Tensor, gate: Weight, up: Weight, gateBias?: Weight, upBias?: Weight): Tensor {
      this.siluMuls++;
      return this.siluMul(this.linear(x, gate, gateBias), this.linear(x, up, upBias));
    }
  }

  it('the helpers on a backend without the ops equal the separate ops exactly', () => {
    const be = new CpuBackend();
    assert.equal((be as Backend).linearMany, undefined);
    assert.equal((be as Backend).linearSiluMul, undefined);
    const K = 48;
    const load = (shape: number[]) => be.loadDense('w', { dtype: 'F32', shape, bytes: new Uint8Array(uniform(shape.reduce((a, b) => a * b, 1)).buffer) });
    const ws = [load([16, K]), load([8, K]), load([8, K])];
    const bias = load([8]);
    const x = be.fromHost(uniform(3 * K), [3, K]);
    const many = linearMany(be, x, ws, [undefined, bias]).map((t) => be.toHost(t));
    ws.forEach((w, i) => assert.deepEqual(many[i], be.toHost(be.linear(x, w, i === 1 ? bias : undefined))));
    assert.deepEqual(be.toHost(linearSiluMul(be, x, ws[1], ws[2], bias)), be.toHost(be.siluMul(be.linear(x, ws[1], bias), be.linear(x, ws[2]))));
  });

  it(`${DEFAULT_MODEL_NAME}: the same logits with the ops (called once a layer each) as without`, () => {
    const dir = embeddedModelDir(DEFAULT_MODEL_NAME);
    const counting = new CountingCpu();
    const withOps = loadLlama(dir, counting);
    const plain = loadLlama(dir, new CpuBackend());
    const vocab = plain.config.vocabSize;
    const prompt = Array.from({ length: 12 }, () => randInt(vocab));
    const a = runSteps(new ModelRunner(withOps, 16, 4), vocab, prompt);
    const b = runSteps(new ModelRunner(plain, 16, 4), vocab, prompt);
    // 4 steps × 8 layers.
    assert.equal(counting.many, 4 * plain.config.numLayers);
    assert.equal(counting.siluMuls, 4 * plain.config.numLayers);
    a.forEach((l, i) => assert.deepEqual(l, b[i], `logits of chunk ${i}`));
  });
});
