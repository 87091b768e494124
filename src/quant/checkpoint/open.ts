// Finds out how a checkpoint is quantized — config.json quantization_config, else ModelOpt's
// hf_quant_config.json, GPTQ's quantize_config.json or AutoAWQ's quant_config.json — and opens the
// matching reader; anything else is a ModelLoadError naming what was found and what is supported.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend, Weight } from '../../backend/backend.js';
import { ModelLoadError } from '../../errors.js';
import type { SafetensorsCheckpoint } from '../../model/load/safetensors.js';
import { CHECKPOINT_QUANT_METHODS, type CheckpointQuantization } from './checkpoint-quantization.js';
import { openAwq } from './read-awq.js';
import { openCompressedTensors } from './read-compressed-tensors.js';
import { openGptq } from './read-gptq.js';
import { openHfFp8 } from './read-hf-fp8.js';
import { openModelOpt } from './read-modelopt.js';
import { dequantize } from '../format.js';
import type { ModuleClass } from './module-match.js';
import { CheckpointTensors } from './tensors.js';

function readJson(path: string): Record<string, unknown> {
  try {
    const value = JSON.parse(readFileSync(path, 'utf8'));
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('not a JSON object');
    return value;
  } catch (err) {
    throw new ModelLoadError(`${path}: not valid JSON (${(err as Error).message})`);
  }
}

/**
 * The checkpoint's quantization reader, or undefined for a plain float checkpoint. `rawConfig` is
 * config.json as parsed (ModelConfig.raw).
 */
export function openCheckpointQuantization(ckpt: SafetensorsCheckpoint, rawConfig: Record<string, unknown>): CheckpointQuantization | undefined {
  const dir = ckpt.dir;
  const tensors = new CheckpointTensors(ckpt);
  const qc = rawConfig.quantization_config;
  if (qc != null) {
    const path = join(dir, 'config.json');
    if (typeof qc !== 'object' || Array.isArray(qc)) throw new ModelLoadError(`${path}: quantization_config must be an object`);
    const q = qc as Record<string, unknown>;
    const method = q.quant_method ?? (q.quant_algo !== undefined || q.quantization !== undefined ? 'modelopt' : undefined);
    switch (method) {
      case 'compressed-tensors':
      case 'compressed_tensors':
        return openCompressedTensors(q, path, tensors);
      case 'gptq':
        return openGptq(q, path, tensors);
      case 'awq':
        return openAwq(q, path, tensors);
      case 'modelopt':
        return openModelOpt((q.quantization ?? q) as Record<string, unknown>, path, tensors);
      case 'fp8':
        return openHfFp8(q, path, tensors);
      default:
        throw new ModelLoadError(`${path}: quantization_config.quant_method '${String(method)}' is not supported; supported: ${CHECKPOINT_QUANT_METHODS.join(', ')}`);
    }
  }
  const modelopt = join(dir, 'hf_quant_config.json');
  if (existsSync(modelopt)) {
    const raw = readJson(modelopt);
    if (!raw.quantization || typeof raw.quantization !== 'object') throw new ModelLoadError(`${modelopt}: has no "quantization" object`);
    return openModelOpt(raw.quantization as Record<string, unknown>, modelopt, tensors);
  }
  const gptq = join(dir, 'quantize_config.json');
  if (existsSync(gptq)) return openGptq(readJson(gptq), gptq, tensors);
  const awq = join(dir, 'quant_config.json');
  if (existsSync(awq)) return openAwq(readJson(awq), awq, tensors);
  return undefined;
}

/** Loads the weights a pre-quantized checkpoint stores packed, by tensor name ('….weight'). */
export interface StoredWeightLoader {
  readonly quantization: CheckpointQuantization;
  /**
   * The backend weight of `name` as the checkpoint stores it — canonical quantized, or float32 where
   * the layout has no canonical form — or undefined when it is stored as a plain float tensor (then
   * the caller loads it the usual way). Embeddings are always given dense, as the embedding op needs.
   */
  load(name: string, shape: readonly number[], moduleClass?: ModuleClass): Weight | undefined;
}

export function storedWeightLoader(ckpt: SafetensorsCheckpoint, rawConfig: Record<string, unknown>, backend: Backend): StoredWeightLoader | undefined {
  const quantization = openCheckpointQuantization(ckpt, rawConfig);
  if (!quantization) return undefined;
  return {
    quantization,
    load(name, shape, moduleClass = 'Linear') {
      if (!name.endsWith('.weight') || shape.length !== 2) return undefined;
      const stored = quantization.readLinear(name.slice(0, -'.weight'.length), shape[0], shape[1], moduleClass);
      if (!stored) return undefined;
      if (stored.kind === 'quantized' && moduleClass === 'Linear') return backend.loadQuantized(name, stored.weight);
      const v = stored.kind === 'quantized' ? dequantize(stored.weight) : stored.values;
      return backend.loadDense(name, { dtype: 'F32', shape: [...shape], bytes: new Uint8Array(v.buffer, v.byteOffset, v.byteLength) });
    },
  };
}
