// Programmatic dependent launch (driver.ts, kernels/common.cuh): each kernel may start while the one
// before it runs, prefetching its weights, and waits for it before touching its data. A kernel that
// read or wrote too early would change results only when kernels overlap, so these tests run
// without the per-launch synchronisation the other CUDA suites use, on models whose every decode op
// runs (dense and each quantized format, FMA and tensor-core GEMVs, eager and graphs), and require
// the same bits as with programmatic launch off. The source rule behind it is checked on the CPU
// (cuda-pdl-source.test.ts). Without a GPU the suite skips with the reason.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { parseModelConfig } from '../src/model/config.js';
import { embeddedModelDir, DEFAULT_MODEL_NAME } from '../src/model/default-model.js';
import { LlamaModel } from '../src/model/llama.js';
import { loadDummyWeights } from '../src/model/load/dummy.js';
import type { QuantizationMethod } from '../src/quant/online.js';
import { comparisons, openTestGpu, testRandom } from './support/cuda.js';
import { argmax, loadLlama, ModelRunner, type Chunk } from './support/run-model.js';

const { gpu, skipReason } = await openTestGpu();
if (gpu) gpu.driver.syncEveryLaunch = false;
const { seed: SEED, randInt } = testRandom();
const { assertBitwise } = comparisons(SEED);

/** A small Llama (head_dim 64, GQA 2) with random weights, its decoder linears in `quantization`. */
function dummyModel(be: CudaBackend, quantization?: QuantizationMethod): LlamaModel {
  const config = parseModelConfig({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: 1000, hidden_size: 512, intermediate_size: 1280,
    num_hidden_layers: 3, num_attention_heads: 8, num_key_value_heads: 4, head_dim: 64, rms_norm_eps: 1e-5, rope_theta: 10000,
    max_position_embeddings: 4096, tie_word_embeddings: false, torch_dtype: 'bfloat16',
  });
  return new LlamaModel(config, loadDummyWeights(config, be, { seed: SEED, quantization }), be);
}

/** Prefill each prompt, then `steps` greedy decode steps of all sequences together: every step's logits. */
function decode(model: LlamaModel, prompts: number[][], steps: number): Float32Array[] {
  const runner = new ModelRunner(model, 256, prompts.length);
  const vocab = model.config.vocabSize;
  const out: Float32Array[] = [];
  const next = prompts.map((p, s) => {
    const [l] = runner.step([{ seq: s, start: 0, tokens: p }]);
    out.push(l);
    return argmax(l.subarray(l.length - vocab));
  });
  for (let i = 0; i < steps; i++) {
    const chunks: Chunk[] = prompts.map((p, s) => ({ seq: s, start: p.length + i, tokens: [next[s]] }));
    runner.step(chunks).forEach((l, s) => {
      out.push(l);
      next[s] = argmax(l);
    });
  }
  return out;
}

describe('programmatic dependent launch', { skip: skipReason }, () => {
  const be = gpu!;
  const driver = be.driver;

  it('is on where the GPU has it (sm_90+)', () => {
    if (driver.device.computeCapability >= 90) {
      assert.ok(driver.programmaticLaunchSupported, `${driver.device.name}: the driver lacks cuLaunchKernelEx or programmatic graph edges`);
      assert.equal(driver.programmaticLaunch, process.env.TACHYON_CUDA_PDL !== '0');
    } else {
      assert.equal(driver.programmaticLaunch, false);
    }
  });

  const cases: { name: string; make: () => LlamaModel; gemv?: 'fma' | 'mma' }[] = [
    { name: 'the embedded model', make: () => loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), be) },
    { name: 'bf16', make: () => dummyModel(be) },
    { name: 'w4a16 (FMA GEMVs)', make: () => dummyModel(be, 'w4a16'), gemv: 'fma' },
    { name: 'w4a16 (tensor-core GEMVs)', make: () => dummyModel(be, 'w4a16'), gemv: 'mma' },
    { name: 'fp8 (FMA GEMVs)', make: () => dummyModel(be, 'fp8'), gemv: 'fma' },
    { name: 'w8a16 (tensor-core GEMVs)', make: () => dummyModel(be, 'w8a16'), gemv: 'mma' },
    { name: 'nvfp4 (FMA GEMVs)', make: () => dummyModel(be, 'nvfp4'), gemv: 'fma' },
    { name: 'nvfp4 (tensor-core GEMVs)', make: () => dummyModel(be, 'nvfp4'), gemv: 'mma' },
  ];
  for (const c of cases) {
    it(`gives ${c.name} the bits of serialized launches, eager and in graphs`, { skip: !driver?.programmaticLaunchSupported && 'no programmatic launch on this GPU' }, () => {
      const model = c.make();
      const q = be.quantized;
      const saved = [q.decodeGemv, q.q8DecodeGemv] as const;
      if (c.gemv) [q.decodeGemv, q.q8DecodeGemv] = [c.gemv, c.gemv];
      const vocab = model.config.vocabSize;
      // One sequence: one-token steps; four: the batched kernels.
      const batches = [[17], [9, 30, 5, 21]].map((lens) => lens.map((n) => Array.from({ length: n }, () => randInt(vocab))));
      try {
        for (const prompts of batches) {
          driver.setProgrammaticLaunch(false);
          be.graphs.enabled = false;
          const want = decode(model, prompts, 24);
          driver.setProgrammaticLaunch(true);
          for (const graphs of [false, true]) {
            be.graphs.enabled = graphs;
            const got = decode(model, prompts, 24);
            assert.equal(got.length, want.length);
            got.forEach((g, i) => assertBitwise(g, want[i], `${c.name}, ${prompts.length} sequences, graphs ${graphs}, logits ${i}`));
          }
        }
      } finally {
        [q.decodeGemv, q.q8DecodeGemv] = saved;
        be.graphs.enabled = true;
        driver.setProgrammaticLaunch(true);
      }
    });
  }
});
