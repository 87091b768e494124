// W8A16 int8 weights: symmetric signed codes in nn.Linear layout with one float32 scale per output
// channel (compressed-tensors W8A16 / int-quantized, channel strategy).

import { checkMatrixShape, dequantizeRows, linearOverDecodedRows } from './decoded-row-linear.js';
import { FLOAT32_EPSILON, absMax, roundHalfToEven } from './rounding.js';

/**
 * Symmetric scale divisor: s = amax/127, so ±amax land exactly on ±127 and −128 is never produced
 * (the absmax convention of most int8 kernels). compressed-tensors' own calibration divides by
 * (qmax − qmin)/2 = 127.5 instead; checkpoints carry their scale, so this only affects our quantizer.
 */
export const INT8_SCALE_DIVISOR = 127;

/** Canonical int8 weight: w[o, i] = codes[o·cols + i] · scales[o]. */
export interface Int8Weight {
  readonly format: 'int8';
  readonly rows: number;
  readonly cols: number;
  /** Signed codes, row-major [rows, cols]. */
  readonly codes: Int8Array;
  /** [rows] float32 dequantization multipliers. */
  readonly scales: Float32Array;
  /** Codes plus float32 scales. */
  readonly bytes: number;
}

/** Checks shapes and builds the canonical weight; checkpoint readers call this with what they read. */
export function createInt8Weight(rows: number, cols: number, codes: Int8Array, scales: Float32Array): Int8Weight {
  checkMatrixShape(codes, rows, cols, 'int8 weight codes');
  if (scales.length !== rows) throw new RangeError(`int8 weight [${rows}, ${cols}]: ${scales.length} scales, expected one per output row (${rows})`);
  return { format: 'int8', rows, cols, codes, scales, bytes: codes.byteLength + scales.byteLength };
}

/**
 * Round-to-nearest per output channel: s = amax/127, q = clamp(roundHalfToEven(w/s), −128, 127),
 * w/s in float32 as torch computes it. An all-zero row gets s = float32 epsilon.
 */
export function quantizeInt8(w: Float32Array, rows: number, cols: number): Int8Weight {
  checkMatrixShape(w, rows, cols, 'quantizeInt8 input');
  const scales = new Float32Array(rows);
  const codes = new Int8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const amax = absMax(w, r * cols, (r + 1) * cols);
    const s = amax > 0 ? Math.fround(amax / INT8_SCALE_DIVISOR) : FLOAT32_EPSILON;
    scales[r] = s;
    for (let i = r * cols; i < (r + 1) * cols; i++) {
      codes[i] = Math.min(127, Math.max(-128, roundHalfToEven(Math.fround(w[i] / s))));
    }
  }
  return createInt8Weight(rows, cols, codes, scales);
}

function decodeInt8Row(w: Int8Weight, row: number, dst: Float32Array): void {
  const s = w.scales[row];
  const off = row * w.cols;
  for (let i = 0; i < w.cols; i++) dst[i] = w.codes[off + i] * s;
}

export function dequantizeInt8(w: Int8Weight): Float32Array {
  return dequantizeRows(w.rows, w.cols, (row, dst) => decodeInt8Row(w, row, dst));
}

/** y = x · Wᵀ straight from the codes: x [nTokens, cols] → [nTokens, rows]. */
export function linearInt8(x: Float32Array, nTokens: number, w: Int8Weight): Float32Array {
  return linearOverDecodedRows(x, nTokens, w.rows, w.cols, (row, dst) => decodeInt8Row(w, row, dst), 'int8');
}
