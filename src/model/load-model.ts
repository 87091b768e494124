// Loads everything a model directory holds: config, weights onto a backend, tokenizer, chat
// template and generation defaults, with the eos ids of all three files merged.

import { existsSync, statSync } from 'node:fs';
import type { Backend } from '../backend/backend.js';
import { ModelLoadError } from '../errors.js';
import type { SamplingParams } from '../engine/sampling-params.js';
import { loadChatTemplate } from './chat-template.js';
import { loadModelConfig, type ModelConfig } from './config.js';
import { eosTokenIds, loadGenerationConfig } from './generation-config.js';
import { LlamaModel } from './llama.js';
import { SafetensorsCheckpoint } from './load/safetensors.js';
import { Tokenizer } from './tokenizer.js';
import { loadModelWeights, weightBytesByFormat, type LoadWeightsOptions } from './weights.js';

export interface LoadedModel {
  dir: string;
  config: ModelConfig;
  model: LlamaModel;
  tokenizer: Tokenizer;
  chatTemplate?: string;
  /** Sampling defaults from generation_config.json. */
  samplingDefaults: Partial<SamplingParams>;
  eosTokenIds: number[];
  weightBytes: Record<string, number>;
  /** The online quantization applied at load, if any. */
  quantization?: string;
  /** How a pre-quantized checkpoint stores its weights, if it is one (e.g. "compressed-tensors pack-quantized"). */
  checkpointQuantization?: string;
  loadMs: number;
}

export function loadModel(dir: string, backend: Backend, options: LoadWeightsOptions = {}): LoadedModel {
  const t0 = performance.now();
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new ModelLoadError(`${dir}: model directory does not exist`);
  const config = loadModelConfig(dir);
  const tokenizer = Tokenizer.load(dir);
  const generation = loadGenerationConfig(dir);
  const ckpt = SafetensorsCheckpoint.open(dir);
  try {
    const weights = loadModelWeights(ckpt, config, backend, options);
    const model = new LlamaModel(config, weights, backend);
    return {
      dir,
      config,
      model,
      tokenizer,
      chatTemplate: loadChatTemplate(dir),
      samplingDefaults: generation.sampling,
      eosTokenIds: eosTokenIds(config.eosTokenIds, generation.eosTokenIds, tokenizer.eosTokenId),
      weightBytes: weightBytesByFormat(weights, config.tieWordEmbeddings),
      quantization: options.quantization,
      checkpointQuantization: weights.checkpointQuantization,
      loadMs: performance.now() - t0,
    };
  } finally {
    ckpt.close();
  }
}
