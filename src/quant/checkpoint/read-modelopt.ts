// Reads NVIDIA ModelOpt checkpoints (formats.md §5): FP8 with a per-tensor or per-channel scale, and
// NVFP4 whose `weight_scale_2` is the global MULTIPLIER (compressed-tensors stores its reciprocal).

import { ModelLoadError } from '../../errors.js';
import { createFp8Weight } from '../fp8.js';
import { createNvfp4Weight, globalScaleFromModelOpt, NVFP4_BLOCK_SIZE } from '../nvfp4.js';
import type { CheckpointQuantization } from './checkpoint-quantization.js';
import { dequantizeFp8Blocks } from './read-compressed-tensors.js';
import { excludedByModelOpt } from './module-match.js';
import type { StoredLinear } from './stored-linear.js';
import { isFloatWeight, type CheckpointTensors } from './tensors.js';

export const MODELOPT_ALGOS = ['FP8', 'FP8_PER_CHANNEL_PER_TOKEN', 'FP8_PB_WO', 'NVFP4', 'W4A16_NVFP4', 'MIXED_PRECISION'] as const;
type Algo = Exclude<(typeof MODELOPT_ALGOS)[number], 'MIXED_PRECISION'>;

function parseAlgo(value: unknown, path: string, what: string): Algo | 'MIXED_PRECISION' {
  const algo = String(value).toUpperCase();
  if (!(MODELOPT_ALGOS as readonly string[]).includes(algo)) {
    throw new ModelLoadError(`${path}: ModelOpt ${what} '${String(value)}' is not supported; supported: ${MODELOPT_ALGOS.join(', ')}`);
  }
  return algo as Algo | 'MIXED_PRECISION';
}

/**
 * `q` is hf_quant_config.json's "quantization" object, or config.json's quantization_config
 * (quant_method "modelopt", flat or with the same nested "quantization").
 */
export function openModelOpt(q: Record<string, unknown>, path: string, tensors: CheckpointTensors): CheckpointQuantization {
  const algo = parseAlgo(q.quant_algo, path, 'quant_algo');
  const exclude = ((q.exclude_modules ?? q.ignore ?? []) as unknown[]).filter((x): x is string => typeof x === 'string');
  const checkGroup = (groupSize: unknown, what: string) => {
    if (groupSize != null && Number(groupSize) !== NVFP4_BLOCK_SIZE) throw new ModelLoadError(`${path}: ModelOpt ${what} group_size ${String(groupSize)} is not supported; NVFP4 uses ${NVFP4_BLOCK_SIZE}`);
  };
  // MIXED_PRECISION lists every quantized module with its own algorithm; the rest stay float.
  const perLayer = new Map<string, Algo>();
  if (algo === 'MIXED_PRECISION') {
    const layers = (q.quantized_layers ?? {}) as Record<string, Record<string, unknown>>;
    for (const [name, cfg] of Object.entries(layers)) {
      const a = parseAlgo(cfg.quant_algo, path, `quantized_layers.${name}.quant_algo`);
      if (a === 'MIXED_PRECISION') throw new ModelLoadError(`${path}: quantized_layers.${name} cannot itself be MIXED_PRECISION`);
      if (a === 'NVFP4' || a === 'W4A16_NVFP4') checkGroup(cfg.group_size, `quantized_layers.${name}`);
      perLayer.set(name, a);
    }
  } else if (algo === 'NVFP4' || algo === 'W4A16_NVFP4') checkGroup(q.group_size, 'NVFP4');

  return {
    method: 'modelopt',
    description: `ModelOpt ${algo}`,
    readLinear(module, rows, cols) {
      if (excludedByModelOpt(exclude, module)) return undefined;
      const a = algo === 'MIXED_PRECISION' ? perLayer.get(module) : algo;
      if (!a) return undefined;
      // Modules ModelOpt leaves alone without listing them (embeddings) have a float weight and no scale.
      if (!tensors.has(`${module}.weight_scale`) && isFloatWeight(tensors, module)) return undefined;
      return readModule(tensors, module, rows, cols, a);
    },
  };
}

function readModule(t: CheckpointTensors, module: string, rows: number, cols: number, algo: Algo): StoredLinear {
  const p = `${module}.`;
  const why = `${module}: ModelOpt ${algo}`;
  if (algo === 'NVFP4' || algo === 'W4A16_NVFP4') {
    const packed = t.bytes(`${p}weight`, why, ['U8'], [rows, cols / 2]);
    const blockScales = t.bytes(`${p}weight_scale`, why, ['F8_E4M3'], [rows, cols / NVFP4_BLOCK_SIZE]);
    const globalScale = globalScaleFromModelOpt(t.scalar(`${p}weight_scale_2`, why));
    return { kind: 'quantized', weight: createNvfp4Weight(rows, cols, packed, blockScales, globalScale) };
  }
  const codes = t.bytes(`${p}weight`, why, ['F8_E4M3'], [rows, cols]);
  if (algo === 'FP8_PB_WO') {
    // Stored as [rows/128, 1, cols/128, 1]: the same numbers as a 2-D grid of 128×128 blocks.
    const br = Math.ceil(rows / 128);
    const bc = Math.ceil(cols / 128);
    const blockScales = t.floats(`${p}weight_scale`, why, [[br, 1, bc, 1], [br, bc]]);
    return { kind: 'dequantized', values: dequantizeFp8Blocks(codes, rows, cols, [128, 128], blockScales), why: 'canonical fp8 has no block scales' };
  }
  const scales = t.floats(`${p}weight_scale`, why, algo === 'FP8' ? [[], [1]] : [[rows], [rows, 1]]);
  return { kind: 'quantized', weight: createFp8Weight(rows, cols, codes, scales) };
}
