// The canonical quantized weight formats as one tagged union, and the two operations every consumer
// needs regardless of format: back to float32, and y = x · Wᵀ from the packed form.

import { dequantizeFp8, linearFp8, type Fp8Weight } from './fp8.js';
import { dequantizeInt4, linearInt4, type Int4Weight } from './int4.js';
import { dequantizeInt8, linearInt8, type Int8Weight } from './int8.js';
import { dequantizeNvfp4, linearNvfp4, type Nvfp4Weight } from './nvfp4.js';

export type { Fp8Weight, Int4Weight, Int8Weight, Nvfp4Weight };

/** Plain data (typed arrays + numbers), nn.Linear layout [rows = out, cols = in]. */
export type QuantizedWeight = Fp8Weight | Int8Weight | Int4Weight | Nvfp4Weight;
export type QuantizedFormat = QuantizedWeight['format'];

export function dequantize(w: QuantizedWeight): Float32Array {
  switch (w.format) {
    case 'fp8':
      return dequantizeFp8(w);
    case 'int8':
      return dequantizeInt8(w);
    case 'int4':
      return dequantizeInt4(w);
    case 'nvfp4':
      return dequantizeNvfp4(w);
    default:
      return unknownFormat(w);
  }
}

/** y = x · Wᵀ for x [nTokens, w.cols] → [nTokens, w.rows], decoding W as it goes. */
export function linearQuantized(x: Float32Array, nTokens: number, w: QuantizedWeight): Float32Array {
  switch (w.format) {
    case 'fp8':
      return linearFp8(x, nTokens, w);
    case 'int8':
      return linearInt8(x, nTokens, w);
    case 'int4':
      return linearInt4(x, nTokens, w);
    case 'nvfp4':
      return linearNvfp4(x, nTokens, w);
    default:
      return unknownFormat(w);
  }
}

// Reached only by data built outside the type system (a reader's bug); the `never` makes a new
// union member a compile error here until it is handled.
function unknownFormat(w: never): never {
  throw new TypeError(`unknown quantized weight format '${(w as { format?: unknown }).format}'`);
}
