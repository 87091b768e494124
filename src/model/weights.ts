// Maps a checkpoint's tensor names onto the Llama-family weight structure, checking every shape
// against config.json so a mismatched checkpoint fails at load with the tensor named.

import type { Backend, KvScales, Weight } from '../backend/backend.js';
import { InvalidRequestError, ModelLoadError } from '../errors.js';
import type { ModelConfig } from './config.js';
import type { SafetensorsCheckpoint } from './load/safetensors.js';
import { readKvScales } from './load/kv-scales.js';
import { quantizeWeight, type QuantizationMethod } from '../quant/online.js';
import { storedWeightLoader } from '../quant/checkpoint/open.js';

export interface LayerWeights {
  inputNorm: Weight;
  q: Weight;
  k: Weight;
  v: Weight;
  o: Weight;
  qBias?: Weight;
  kBias?: Weight;
  vBias?: Weight;
  oBias?: Weight;
  qNorm?: Weight;
  kNorm?: Weight;
  postAttentionNorm: Weight;
  gate: Weight;
  up: Weight;
  down: Weight;
  gateBias?: Weight;
  upBias?: Weight;
  downBias?: Weight;
}

export interface ModelWeights {
  embedTokens: Weight;
  layers: LayerWeights[];
  norm: Weight;
  /** The embedding table itself when tie_word_embeddings is set. */
  lmHead: Weight;
  /** How a pre-quantized checkpoint stored its weights (e.g. "GPTQ int4 (group 128, format gptq)"). */
  checkpointQuantization?: string;
  /** Per layer, the checkpoint's calibrated FP8 KV-cache scales (load/kv-scales.ts), if it has them. */
  kvScales?: KvScales[];
}

export interface LoadWeightsOptions {
  /** Quantize the decoder's linear layers at load (embeddings, lm_head and norms stay as stored). */
  quantization?: QuantizationMethod;
  onProgress?: (done: number, total: number) => void;
}

export function loadModelWeights(ckpt: SafetensorsCheckpoint, config: ModelConfig, backend: Backend, options: LoadWeightsOptions = {}): ModelWeights {
  const { hiddenSize: h, headDim, numHeads, numKvHeads, intermediateSize: ff, vocabSize } = config;
  const { quantization, onProgress } = options;
  const load = (name: string, shape: number[]): Weight => {
    if (!ckpt.has(name)) throw new ModelLoadError(`${ckpt.dir}: checkpoint is missing tensor '${name}' (${config.architecture} expects it)`);
    const info = ckpt.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new ModelLoadError(`${info.file}: tensor '${name}' has shape [${info.shape.join(', ')}], config.json implies [${shape.join(', ')}]`);
    }
    return backend.loadDense(name, ckpt.read(name));
  };
  // A pre-quantized checkpoint (compressed-tensors, GPTQ, AWQ, ModelOpt, FP8) gives its packed weights as stored.
  const stored = storedWeightLoader(ckpt, config.raw, backend);
  if (stored && quantization) {
    throw new InvalidRequestError(`${ckpt.dir} is already quantized (${stored.quantization.description}); online quantization '${quantization}' applies to float checkpoints only`);
  }
  // A decoder projection: as a pre-quantized checkpoint stores it, quantized when asked, else as stored.
  const linear = (name: string, shape: number[]): Weight => {
    const packed = stored?.load(name, shape);
    if (packed) return packed;
    if (!quantization) return load(name, shape);
    const dense = load(name, shape);
    const q = quantizeWeight(quantization, backend.weightToHost(dense), shape[0], shape[1], name);
    return backend.loadQuantized(name, q);
  };
  const total = config.numLayers + 2;
  const embedTokens = stored?.load('model.embed_tokens.weight', [vocabSize, h], 'Embedding') ?? load('model.embed_tokens.weight', [vocabSize, h]);
  onProgress?.(1, total);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}.`;
    const a = `${p}self_attn.`;
    const m = `${p}mlp.`;
    layers.push({
      inputNorm: load(`${p}input_layernorm.weight`, [h]),
      q: linear(`${a}q_proj.weight`, [numHeads * headDim, h]),
      k: linear(`${a}k_proj.weight`, [numKvHeads * headDim, h]),
      v: linear(`${a}v_proj.weight`, [numKvHeads * headDim, h]),
      o: linear(`${a}o_proj.weight`, [h, numHeads * headDim]),
      qBias: config.qkvBias ? load(`${a}q_proj.bias`, [numHeads * headDim]) : undefined,
      kBias: config.qkvBias ? load(`${a}k_proj.bias`, [numKvHeads * headDim]) : undefined,
      vBias: config.qkvBias ? load(`${a}v_proj.bias`, [numKvHeads * headDim]) : undefined,
      oBias: config.oBias ? load(`${a}o_proj.bias`, [h]) : undefined,
      qNorm: config.qkNorm ? load(`${a}q_norm.weight`, [headDim]) : undefined,
      kNorm: config.qkNorm ? load(`${a}k_norm.weight`, [headDim]) : undefined,
      postAttentionNorm: load(`${p}post_attention_layernorm.weight`, [h]),
      gate: linear(`${m}gate_proj.weight`, [ff, h]),
      up: linear(`${m}up_proj.weight`, [ff, h]),
      down: linear(`${m}down_proj.weight`, [h, ff]),
      gateBias: config.mlpBias ? load(`${m}gate_proj.bias`, [ff]) : undefined,
      upBias: config.mlpBias ? load(`${m}up_proj.bias`, [ff]) : undefined,
      downBias: config.mlpBias ? load(`${m}down_proj.bias`, [h]) : undefined,
    });
    onProgress?.(i + 2, total);
  }
  const norm = load('model.norm.weight', [h]);
  // Some tied checkpoints still store lm_head.weight; the config decides which one is used.
  const lmHead = config.tieWordEmbeddings ? embedTokens : (stored?.load('lm_head.weight', [vocabSize, h]) ?? load('lm_head.weight', [vocabSize, h]));
  onProgress?.(total, total);
  return { embedTokens, layers, norm, lmHead, checkpointQuantization: stored?.quantization.description, kvScales: readKvScales(ckpt, config.numLayers) };
}

/** Weight bytes by format, for memory reports (`generate --json`). */
export function weightBytesByFormat(weights: ModelWeights, tied: boolean): Record<string, number> {
  const out: Record<string, number> = {};
  const add = (wt: Weight | undefined) => {
    if (wt) out[wt.format] = (out[wt.format] ?? 0) + wt.bytes;
  };
  add(weights.embedTokens);
  if (!tied) add(weights.lmHead);
  add(weights.norm);
  for (const l of weights.layers) for (const wt of Object.values(l)) add(wt as Weight | undefined);
  return out;
}
