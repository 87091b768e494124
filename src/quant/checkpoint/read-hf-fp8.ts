// Reads quant_method "fp8" checkpoints (transformers FineGrainedFP8 / vLLM Fp8Config; DeepSeek-V3 and
// Qwen "-FP8" releases): E4M3 weights with a per-tensor `weight_scale` or 2-D block `weight_scale_inv`.

import { ModelLoadError } from '../../errors.js';
import { createFp8Weight } from '../fp8.js';
import type { CheckpointQuantization } from './checkpoint-quantization.js';
import { dequantizeFp8Blocks } from './read-compressed-tensors.js';
import { isFloatWeight, type CheckpointTensors } from './tensors.js';

export function openHfFp8(qc: Record<string, unknown>, path: string, tensors: CheckpointTensors): CheckpointQuantization {
  const block = qc.weight_block_size as unknown;
  if (block != null && !(Array.isArray(block) && block.length === 2 && block.every((x) => Number.isInteger(x) && x > 0))) {
    throw new ModelLoadError(`${path}: quantization_config.weight_block_size must be [rows, cols] or null, got ${JSON.stringify(block)}`);
  }
  const blockSize = block as [number, number] | null | undefined;
  return {
    method: 'fp8',
    description: blockSize ? `FP8 (${blockSize.join('×')} blocks)` : 'FP8',
    readLinear(module, rows, cols) {
      // modules_to_not_convert / ignored_layers keep their float weight; the dtype says which is which.
      if (isFloatWeight(tensors, module)) return undefined;
      const p = `${module}.`;
      const why = `${module}: FP8${blockSize ? ` ${blockSize.join('×')} blocks` : ''}`;
      const codes = tensors.bytes(`${p}weight`, why, ['F8_E4M3'], [rows, cols]);
      if (blockSize) {
        const [bh, bw] = blockSize;
        // Despite its name, weight_scale_inv multiplies: w = fp8 · weight_scale_inv.
        const scales = tensors.floats(`${p}weight_scale_inv`, why, [[Math.ceil(rows / bh), Math.ceil(cols / bw)]]);
        return { kind: 'dequantized', values: dequantizeFp8Blocks(codes, rows, cols, blockSize, scales), why: 'canonical fp8 has no block scales' };
      }
      const scales = tensors.floats(`${p}weight_scale`, why, [[], [1], [rows], [rows, 1]]);
      return { kind: 'quantized', weight: createFp8Weight(rows, cols, codes, scales) };
    },
  };
}
