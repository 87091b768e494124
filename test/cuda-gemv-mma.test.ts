// The tensor-core decode GEMV (kernels/gemv-mma.cu, CudaBackend.decodeGemv = 'mma') against the CPU
// reference on fresh random inputs with free memory poisoned: the kernel rounds x to bf16 and sums
// exact bf16 products in float32, so against the CPU given the same bf16-rounded x it must agree to
// float32 rounding (≤ 1e-5), and against the exact x to bf16's 2⁻⁹ (≤ 1e-2). A token's result must be
// the same bits alone as in a batch of 8, and at either block size. The default model decoding on it
// must give logits within 3e-2 of the FMA GEMV's. Without a GPU the CUDA suites skip with the reason;
// the dispatch rules run everywhere.

import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, it } from 'node:test';
import type { Tensor, Weight } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import type { CudaBackend, CudaDenseWeight, CudaTensor } from '../src/backend/cuda/cuda-backend.js';
import { DEFAULT_MODEL_NAME, embeddedModelDir } from '../src/model/default-model.js';
import { bf16ToF32, f32ToBf16 } from '../src/model/load/dtype.js';
import type { HostTensor } from '../src/model/load/safetensors.js';
import { loadLlama, ModelRunner, runSteps } from './support/run-model.js';
import { comparisons, launchesOf, openTestGpu, testRandom } from './support/cuda.js';

// The modules load without a GPU (the dispatch rules are checked everywhere); the driver only on use.
const cudaModule = await import('../src/backend/cuda/cuda-backend.js').catch(() => undefined);
const mma = await import('../src/backend/cuda/gemv-mma.js').catch(() => undefined);
const { gpu, skipReason } = await openTestGpu();

const cpu = new CpuBackend();
// Fresh inputs on every run; the seed is in every failure message so a failure can be replayed.
const { seed: SEED, rng, uniform, randInt } = testRandom();
const { assertClose, assertBitwise } = comparisons(SEED);
const roundBf16 = (a: Float32Array) => a.map((v) => bf16ToF32(f32ToBf16(v)));

/** A random bf16 checkpoint tensor [N, K] (values in ±scale), or a float32 vector. */
function hostTensor(dtype: 'BF16' | 'F32', shape: number[], scale = 1): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const vals = uniform(n, -scale, scale);
  if (dtype === 'F32') return { dtype, shape, bytes: new Uint8Array(vals.buffer) };
  const bits = Uint16Array.from(vals, (v) => f32ToBf16(v));
  return { dtype, shape, bytes: new Uint8Array(bits.buffer) };
}

/** The same weight on both backends. */
function weightPair(dtype: 'BF16' | 'F32', shape: number[], scale = 1): { c: Weight; g: Weight } {
  const t = hostTensor(dtype, shape, scale);
  return { c: cpu.loadDense('w', t), g: gpu!.loadDense('w', t) };
}

describe('mma GEMV dispatch rules (no GPU needed)', { skip: mma ? false : 'the CUDA bindings did not load' }, () => {
  it('takes dense bf16 matrices with K a multiple of 16 and 1..8 tokens, nothing else', () => {
    const { CudaDenseWeight: Dense } = cudaModule!;
    const dense = (dtype: 'bf16' | 'f16' | 'f32', shape: number[]) => new Dense(0, shape, 0, dtype, dtype);
    const applies = mma!.mmaGemvApplies;
    assert.ok(applies(dense('bf16', [75, 256]), 1));
    assert.ok(applies(dense('bf16', [75, 272]), 8), 'K % 32 = 16 (a half chunk) is taken');
    assert.ok(!applies(dense('bf16', [75, 264]), 1), 'K % 16 ≠ 0');
    assert.ok(!applies(dense('bf16', [75, 256]), 9), '9 tokens');
    assert.ok(!applies(dense('bf16', [75, 256]), 0), 'no tokens');
    assert.ok(!applies(dense('f16', [75, 256]), 1), 'f16');
    assert.ok(!applies(dense('f32', [75, 256]), 1), 'f32');
    assert.ok(!applies(dense('bf16', [256]), 1), 'a vector');
  });

  it('two m-tiles a block only where every SM still gets two blocks', () => {
    assert.equal(mma!.mmaRows(4096, 132), 1);
    assert.equal(mma!.mmaRows(8448, 132), 2);
    assert.equal(mma!.mmaRows(8416, 132), 1);
    assert.equal(mma!.mmaRows(8417, 132), 2);
    assert.equal(mma!.mmaRows(14336, 132), 2);
    assert.equal(mma!.mmaRows(128256, 132), 2);
    assert.equal(mma!.mmaRows(4096, 16), 2);
  });
});

describe('mma GEMV on CUDA against the CPU', { skip: skipReason }, () => {
  const g = () => gpu!;
  /** End the synchronous run (recycling its activations), then poison every free buffer with NaN. */
  const fresh = async () => {
    await nextTurn();
    g().poisonFreeMemory();
  };

  it('linear: T 1/2/3/5/8, odd N, K 256/272/4096/4112/14336, ± bias: ≤ 1e-5 on bf16-rounded x, ≤ 1e-2 on exact x', async () => {
    const be = g();
    be.decodeGemv = 'mma';
    try {
      for (const K of [256, 272, 4096, 4112, 14336]) {
        for (const N of [75, 333]) {
          const w = weightPair('BF16', [N, K], 1 / Math.sqrt(K));
          for (const withBias of [false, true]) {
            const b = withBias ? weightPair('F32', [N]) : undefined;
            for (const T of [1, 2, 3, 5, 8]) {
              await fresh();
              const host = uniform(T * K);
              const what = `[${N}, ${K}] × ${T} tokens${withBias ? ' + bias' : ''}`;
              let y: Tensor | undefined;
              const names = launchesOf(be, () => void (y = be.linear(be.fromHost(host, [T, K]), w.g, b?.g)));
              assert.deepEqual(names, [`gemv_mma_bf16_r1`], `${what}: one mma launch`);
              const got = be.toHost(y!);
              const rounded = cpu.toHost(cpu.linear(cpu.fromHost(roundBf16(host), [T, K]), w.c, b?.c));
              assertClose(got, rounded, 1e-5, `${what} vs the CPU on bf16-rounded x`);
              const exact = cpu.toHost(cpu.linear(cpu.fromHost(host.slice(), [T, K]), w.c, b?.c));
              assertClose(got, exact, 1e-2, `${what} vs the CPU on exact x`);
            }
          }
        }
      }
    } finally {
      be.decodeGemv = 'fma';
    }
  });

  it('one and two m-tiles a block give the same bits; a token alone equals it in a batch of 8', async () => {
    const be = g();
    const { mmaGemv } = mma!;
    for (const [N, K] of [[75, 4096], [333, 272], [40, 14336]]) {
      const w = weightPair('BF16', [N, K], 1 / Math.sqrt(K));
      const b = weightPair('F32', [N]);
      await fresh();
      const host = uniform(8 * K, -2, 2);
      const x8 = be.fromHost(host, [8, K]) as CudaTensor;
      const run = (x: CudaTensor, rows: 1 | 2) => {
        const out = be.fromHost(new Float32Array(x.rows * N).fill(Number.NaN), [x.rows, N]) as CudaTensor;
        mmaGemv(be, x, w.g as CudaDenseWeight, (b.g as CudaDenseWeight).ptr, out, rows);
        return be.toHost(out);
      };
      const batch1 = run(x8, 1);
      const batch2 = run(x8, 2);
      assertBitwise(batch2, batch1, `[${N}, ${K}] × 8 tokens, 2 m-tiles vs 1`);
      for (const t of [0, 3, 7]) {
        const alone = run(be.fromHost(host.slice(t * K, (t + 1) * K), [1, K]) as CudaTensor, 1);
        assertBitwise(alone, batch1.slice(t * N, (t + 1) * N), `[${N}, ${K}] token ${t} alone vs in a batch of 8`);
      }
      // And a batch of 3 (a partial n-tile) agrees with the batch of 8 on its tokens.
      const three = run(be.fromHost(host.slice(0, 3 * K), [3, K]) as CudaTensor, 2);
      assertBitwise(three, batch1.slice(0, 3 * N), `[${N}, ${K}] tokens 0–2 in a batch of 3 vs of 8`);
    }
  });

  it('linearMany: q/k/v in one launch, bitwise the separate mma linears; linearSiluMul = siluMul of two mma linears', async () => {
    const be = g();
    be.decodeGemv = 'mma';
    try {
      const K = 512;
      for (const widths of [[256, 64, 64], [97, 33, 31], [40, 8, 8, 24, 5]]) {
        const ws = widths.map((N) => weightPair('BF16', [N, K], 0.05));
        const bs = widths.map((N, i) => (i % 2 === 0 ? weightPair('F32', [N]) : undefined));
        for (const T of [1, 3, 8]) {
          await fresh();
          const x = be.fromHost(uniform(T * K), [T, K]);
          let many: Tensor[] = [];
          const names = launchesOf(be, () => void (many = be.linearMany(x, ws.map((w) => w.g), bs.map((b) => b?.g))));
          assert.deepEqual(names, Array(Math.ceil(widths.length / 3)).fill('gemv_mma_many_bf16_r1'), `[${widths.join('/')}] × ${T}: launches`);
          widths.forEach((N, i) => {
            const one = be.toHost(be.linear(x, ws[i].g, bs[i]?.g));
            assertBitwise(be.toHost(many[i]), one, `[${widths.join('/')}] × ${T} tokens: output ${i} [${T}, ${N}]`);
          });
        }
      }
      const gate = weightPair('BF16', [200, K], 0.05);
      const up = weightPair('BF16', [200, K], 0.05);
      await fresh();
      const x = be.fromHost(uniform(5 * K), [5, K]);
      let fusedOut: Tensor | undefined;
      const names = launchesOf(be, () => void (fusedOut = be.linearSiluMul(x, gate.g, up.g)));
      assert.deepEqual(names, ['gemv_mma_bf16_r1', 'gemv_mma_bf16_r1', 'silu_mul']);
      assertBitwise(be.toHost(fusedOut!), be.toHost(be.siluMul(be.linear(x, gate.g), be.linear(x, up.g))), 'gate/up·SiLU');
    } finally {
      be.decodeGemv = 'fma';
    }
  });

  it('what the mma path does not take runs the FMA kernels (f16, K % 16 ≠ 0, 9 tokens, the default)', async () => {
    const be = g();
    const K = 264;
    const w = weightPair('BF16', [64, K]);
    const w256 = weightPair('BF16', [64, 256]);
    await fresh();
    be.decodeGemv = 'mma';
    try {
      const f16: HostTensor = { dtype: 'F16', shape: [64, 256], bytes: new Uint8Array(64 * 256 * 2).fill(0x3c) };
      const names = launchesOf(be, () => {
        be.linear(be.fromHost(uniform(2 * K), [2, K]), w.g);
        be.linear(be.fromHost(uniform(2 * 256), [2, 256]), be.loadDense('f16', f16));
      });
      assert.ok(names.every((n) => !n.startsWith('gemv_mma')), `no mma launch: ${names.join(', ')}`);
      const nine = launchesOf(be, () => void be.linear(be.fromHost(uniform(9 * 256), [9, 256]), w256.g));
      assert.ok(nine.every((n) => !n.startsWith('gemv_mma')), `9 tokens: ${nine.join(', ')}`);
    } finally {
      be.decodeGemv = 'fma';
    }
    const def = launchesOf(be, () => void be.linear(be.fromHost(uniform(2 * 256), [2, 256]), w256.g));
    assert.ok(def.every((n) => !n.startsWith('gemv_mma')), `the default is the FMA GEMV: ${def.join(', ')}`);
  });
});

describe('the default model decoding on the mma GEMV', { skip: skipReason }, () => {
  it(`${DEFAULT_MODEL_NAME}: logits within 3e-2 of the FMA GEMV's, the mma kernels doing the decode linears`, async () => {
    const be = gpu!;
    const model = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), be);
    const vocab = model.config.vocabSize;
    const prompt = Array.from({ length: 12 }, () => randInt(vocab));
    const run = async (kind: 'fma' | 'mma') => {
      await nextTurn();
      be.poisonFreeMemory();
      be.decodeGemv = kind;
      try {
        return runSteps(new ModelRunner(model, 16, 4), vocab, prompt);
      } finally {
        be.decodeGemv = 'fma';
      }
    };
    be.decodeGemv = 'mma';
    let names: string[] = [];
    try {
      names = launchesOf(be, () => void new ModelRunner(model, 16, 4).step([{ seq: 0, start: 0, tokens: [1] }]));
    } finally {
      be.decodeGemv = 'fma';
    }
    const L = model.config.numLayers;
    assert.equal(names.filter((n) => n.startsWith('gemv_mma_many_')).length, L, 'q/k/v: one mma launch a layer');
    // o, gate, up and down a layer, and lm_head.
    assert.equal(names.filter((n) => n.startsWith('gemv_mma_bf16_')).length, 4 * L + 1, 'the other linears on mma');
    const fma = await run('fma');
    const mmaLogits = await run('mma');
    // Every decode linear of 8 layers and the lm_head rounds its input to bf16 (2⁻⁹ each, ~40 roundings
    // in a row): ~1e-2 relative on the logits, seen up to 1.1e-2.
    fma.forEach((l, i) => assertClose(mmaLogits[i], l, 3e-2, `logits of chunk ${i}`));
  });
});
