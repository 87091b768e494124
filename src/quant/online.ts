// Online quantization: the `--quantization` methods, applied to a float weight at load time.
// Embeddings and lm_head are left in the checkpoint's precision, as real quantized checkpoints keep them.

import { InvalidRequestError } from '../errors.js';
import type { QuantizedWeight } from './format.js';
import { quantizeFp8 } from './fp8.js';
import { quantizeInt4 } from './int4.js';
import { quantizeInt8 } from './int8.js';
import { NVFP4_BLOCK_SIZE, quantizeNvfp4 } from './nvfp4.js';

export const QUANTIZATION_METHODS = ['fp8', 'w8a16', 'w4a16', 'nvfp4'] as const;
export type QuantizationMethod = (typeof QUANTIZATION_METHODS)[number];

export const DEFAULT_INT4_GROUP_SIZE = 128;

export function parseQuantizationMethod(value: string | undefined): QuantizationMethod | undefined {
  if (value === undefined || value === 'none') return undefined;
  if ((QUANTIZATION_METHODS as readonly string[]).includes(value)) return value as QuantizationMethod;
  throw new InvalidRequestError(`quantization '${value}' is not supported; supported: none, ${QUANTIZATION_METHODS.join(', ')}`);
}

/** Round-to-nearest quantization of one [rows, cols] float weight by `method`. */
export function quantizeWeight(method: QuantizationMethod, w: Float32Array, rows: number, cols: number, name: string): QuantizedWeight {
  switch (method) {
    case 'fp8':
      return quantizeFp8(w, rows, cols, { perChannel: true });
    case 'w8a16':
      return quantizeInt8(w, rows, cols);
    case 'w4a16':
      return quantizeInt4(w, rows, cols, { groupSize: DEFAULT_INT4_GROUP_SIZE, symmetric: true });
    case 'nvfp4':
      if (cols % NVFP4_BLOCK_SIZE !== 0) throw new InvalidRequestError(`nvfp4 needs input dims that are multiples of ${NVFP4_BLOCK_SIZE}; '${name}' has ${cols}`);
      return quantizeNvfp4(w, rows, cols);
  }
}
