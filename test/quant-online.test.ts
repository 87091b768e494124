// Online quantization at load: each method's model runs end to end, reports its weight bytes by
// format, and its logits stay close to the float model's (closer for 8-bit than for 4-bit).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { InvalidRequestError } from '../src/errors.js';
import { loadModelConfig } from '../src/model/config.js';
import { LlamaModel } from '../src/model/llama.js';
import { SafetensorsCheckpoint } from '../src/model/load/safetensors.js';
import { loadModelWeights, weightBytesByFormat } from '../src/model/weights.js';
import { parseQuantizationMethod, QUANTIZATION_METHODS, type QuantizationMethod } from '../src/quant/online.js';
import { ModelRunner } from './support/run-model.js';
import { TINY_LLAMA, writeTinyCheckpoint } from './support/tiny-checkpoint.js';

const cfg = { ...TINY_LLAMA, hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, num_key_value_heads: 2 };
const dir = writeTinyCheckpoint(cfg);
const tokens = [3, 17, 29, 40, 8, 61, 5, 22];

function load(quantization?: QuantizationMethod) {
  const config = loadModelConfig(dir);
  const ckpt = SafetensorsCheckpoint.open(dir);
  const backend = new CpuBackend();
  const weights = loadModelWeights(ckpt, config, backend, { quantization });
  ckpt.close();
  return { model: new LlamaModel(config, weights, backend), bytes: weightBytesByFormat(weights, config.tieWordEmbeddings) };
}

function logits(model: LlamaModel): Float32Array {
  return new ModelRunner(model).step([{ seq: 0, start: 0, tokens }])[0];
}

/** Relative RMS error of the logits against the float model's. */
function relativeError(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

describe('online quantization', () => {
  const base = load();
  const reference = logits(base.model);
  const errors: Record<string, number> = {};

  for (const method of QUANTIZATION_METHODS) {
    it(`${method}: linear layers packed, embeddings/lm_head/norms kept, logits close to float`, () => {
      const { model, bytes } = load(method);
      const expectFormat = { fp8: 'fp8', w8a16: 'int8', w4a16: 'int4', nvfp4: 'nvfp4' }[method];
      assert.ok(bytes[expectFormat] > 0, `${method} weights reported under ${expectFormat}: ${JSON.stringify(bytes)}`);
      assert.equal(model.weights.embedTokens.format, 'f32');
      assert.equal(model.weights.lmHead.format, 'f32');
      assert.equal(model.weights.layers[0].down.format, expectFormat);
      // Packed linear weights are smaller than their float32 originals.
      const linearParams = 2 * (4 * 64 * 16 + 2 * 2 * 16 * 64 + 3 * 64 * 128);
      assert.ok(bytes[expectFormat] < linearParams * 4);
      errors[method] = relativeError(logits(model), reference);
      assert.ok(errors[method] > 0, 'quantization changed something');
      // Per linear layer the error is ~1% (8-bit) and ~10% (4-bit); this random network amplifies
      // it several-fold, so bounds are per bit width.
      const bound = method === 'fp8' || method === 'w8a16' ? 0.15 : 1;
      assert.ok(errors[method] < bound, `${method} logits error ${errors[method]}`);
    });
  }

  it('8-bit formats are closer to float than 4-bit ones', () => {
    assert.ok(Math.max(errors.fp8, errors.w8a16) < Math.min(errors.w4a16, errors.nvfp4), JSON.stringify(errors));
  });

  it('rejects an unknown method with the supported list', () => {
    assert.throws(() => parseQuantizationMethod('int3'), (e: unknown) => e instanceof InvalidRequestError && /quantization 'int3' is not supported; supported: none, fp8, w8a16, w4a16, nvfp4/.test(e.message));
    assert.equal(parseQuantizationMethod('none'), undefined);
  });
});
