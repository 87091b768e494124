// Programmatic dependent launch (driver.ts, programmatic-launch.ts): a decode GEMV launched right
// after a norm or decode attention may start while that kernel runs, loading its weights, and waits
// for it (griddepcontrol.wait) before reading x. A GEMV that read x too early would change results
// only when kernels overlap, so these tests run without the per-launch synchronisation the other CUDA
// suites use, on models whose decode runs every such GEMV (each quantized format on its FMA kernels,
// and int4 / nvfp4 on the streamed ones), eager and in graphs, and require the bits of serialized
// launches — and that launches and graph edges were programmatic at all. Without a GPU the suite
// skips with the reason.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { parseModelConfig } from '../src/model/config.js';
import { LlamaModel } from '../src/model/llama.js';
import { loadDummyWeights } from '../src/model/load/dummy.js';
import type { QuantizationMethod } from '../src/quant/online.js';
import { comparisons, openTestGpu, testRandom } from './support/cuda.js';
import { argmax, ModelRunner, type Chunk } from './support/run-model.js';

const { gpu, skipReason } = await openTestGpu();
if (gpu) gpu.driver.syncEveryLaunch = false;
const { seed: SEED, randInt } = testRandom();
const { assertBitwise } = comparisons(SEED);

/** A small Llama (head_dim 128 as the 8B's, GQA 2) with random weights, its decoder linears in `quantization`. */
function dummyModel(be: CudaBackend, quantization?: QuantizationMethod): LlamaModel {
  const config = parseModelConfig({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: 1000, hidden_size: 1024, intermediate_size: 2560,
    num_hidden_layers: 3, num_attention_heads: 8, num_key_value_heads: 4, head_dim: 128, rms_norm_eps: 1e-5, rope_theta: 10000,
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

  it('is on where the GPU has it (sm_90+), unless TACHYON_CUDA_PDL=0', () => {
    if (driver.device.computeCapability >= 90) {
      assert.ok(driver.programmaticLaunchSupported, `${driver.device.name}: the driver lacks cuLaunchKernelEx or programmatic graph edges`);
      assert.equal(driver.programmaticLaunch, process.env.TACHYON_CUDA_PDL !== '0');
    } else {
      assert.equal(driver.programmaticLaunch, false);
    }
  });

  // One token a step (chooseDecodeGemvs(1)): the FMA GEMVs, int4/nvfp4 streamed; more: the tensor-core ones.
  const cases: { name: string; quantization?: QuantizationMethod; tokensPerStep: number }[] = [
    { name: 'bf16', tokensPerStep: 1 },
    { name: 'fp8 (FMA GEMVs)', quantization: 'fp8', tokensPerStep: 1 },
    { name: 'w8a16 (FMA GEMVs)', quantization: 'w8a16', tokensPerStep: 1 },
    { name: 'w4a16 (streamed GEMVs)', quantization: 'w4a16', tokensPerStep: 1 },
    { name: 'w4a16 (tensor-core GEMVs, streamed up to 8 tokens)', quantization: 'w4a16', tokensPerStep: 4 },
    { name: 'nvfp4 (streamed GEMVs)', quantization: 'nvfp4', tokensPerStep: 1 },
  ];
  for (const c of cases) {
    it(`gives ${c.name} the bits of serialized launches, eager and in graphs`, { skip: !driver?.programmaticLaunchSupported && 'no programmatic launch on this GPU' }, () => {
      const model = dummyModel(be, c.quantization);
      const q = be.quantized;
      const saved = { decodeGemv: q.decodeGemv, q8DecodeGemv: q.q8DecodeGemv, streamOneToken: q.streamOneToken };
      q.chooseDecodeGemvs(c.tokensPerStep, {});
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
            be.graphs.clear();
            const before = { ...driver.programmaticCounts };
            const got = decode(model, prompts, 24);
            assert.equal(got.length, want.length);
            got.forEach((g, i) => assertBitwise(g, want[i], `${c.name}, ${prompts.length} sequences, graphs ${graphs}, logits ${i}`));
            // (bf16 too: decode attention after RoPE + KV write.)
            const made = graphs ? driver.programmaticCounts.edges - before.edges : driver.programmaticCounts.launches - before.launches;
            assert.ok(made > 0, `${c.name}, ${prompts.length} sequences, graphs ${graphs}: no ${graphs ? 'programmatic edge' : 'programmatic launch'}`);
          }
        }
      } finally {
        Object.assign(q, saved);
        be.graphs.enabled = true;
        be.graphs.clear();
        driver.setProgrammaticLaunch(true);
      }
    });
  }
});
