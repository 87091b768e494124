// FP8 weights: E4M3FN codes in nn.Linear layout with one float32 scale per output channel
// (compressed-tensors FP8_DYNAMIC, ModelOpt FP8_PER_CHANNEL_PER_TOKEN) or per tensor (FP8 static).

import { checkMatrixShape, dequantizeRows, linearOverDecodedRows } from './decoded-row-linear.js';
import { E4M3_MAX, E4M3_VALUES, encodeE4m3 } from './fp8-e4m3.js';
import { FLOAT32_EPSILON, absMax } from './rounding.js';

/** Canonical FP8 weight: w[o, i] = e4m3(codes[o·cols + i]) · scales[o] (or scales[0] per tensor). */
export interface Fp8Weight {
  readonly format: 'fp8';
  readonly rows: number;
  readonly cols: number;
  /** E4M3FN codes, row-major [rows, cols]. */
  readonly codes: Uint8Array;
  /** Dequantization multipliers: [rows] per output channel, or [1] for the whole tensor. */
  readonly scales: Float32Array;
  /** Codes plus float32 scales. */
  readonly bytes: number;
}

export interface Fp8QuantizeOptions {
  /** One scale per output row (default, FP8_DYNAMIC) or a single one for the tensor (FP8 static). */
  perChannel?: boolean;
}

/** Checks shapes and builds the canonical weight; checkpoint readers call this with what they read. */
export function createFp8Weight(rows: number, cols: number, codes: Uint8Array, scales: Float32Array): Fp8Weight {
  checkMatrixShape(codes, rows, cols, 'fp8 weight codes');
  if (scales.length !== rows && scales.length !== 1) {
    throw new RangeError(`fp8 weight [${rows}, ${cols}]: ${scales.length} scales, expected ${rows} (per channel) or 1 (per tensor)`);
  }
  return { format: 'fp8', rows, cols, codes, scales, bytes: codes.byteLength + scales.byteLength };
}

/**
 * Round-to-nearest FP8 as compressed-tensors and ModelOpt do it: s = amax/448 over the row (or
 * tensor), code = e4m3(clamp(w/s, ±448)), all in float32. An all-zero row gets s = float32 epsilon
 * (compressed-tensors' guard), which still dequantizes to exact zeros.
 */
export function quantizeFp8(w: Float32Array, rows: number, cols: number, options: Fp8QuantizeOptions = {}): Fp8Weight {
  checkMatrixShape(w, rows, cols, 'quantizeFp8 input');
  const perChannel = options.perChannel ?? true;
  const scaleFor = (amax: number) => (amax > 0 ? Math.fround(amax / E4M3_MAX) : FLOAT32_EPSILON);
  const scales = perChannel
    ? Float32Array.from({ length: rows }, (_, r) => scaleFor(absMax(w, r * cols, (r + 1) * cols)))
    : Float32Array.of(scaleFor(absMax(w)));
  const codes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const s = scales[perChannel ? r : 0];
    for (let i = r * cols; i < (r + 1) * cols; i++) codes[i] = encodeE4m3(w[i] / s);
  }
  return createFp8Weight(rows, cols, codes, scales);
}

function decodeFp8Row(w: Fp8Weight, row: number, dst: Float32Array): void {
  const s = w.scales[w.scales.length === 1 ? 0 : row];
  const off = row * w.cols;
  for (let i = 0; i < w.cols; i++) dst[i] = E4M3_VALUES[w.codes[off + i]] * s;
}

export function dequantizeFp8(w: Fp8Weight): Float32Array {
  return dequantizeRows(w.rows, w.cols, (row, dst) => decodeFp8Row(w, row, dst));
}

/** y = x · Wᵀ straight from the codes: x [nTokens, cols] → [nTokens, rows]. */
export function linearFp8(x: Float32Array, nTokens: number, w: Fp8Weight): Float32Array {
  return linearOverDecodedRows(x, nTokens, w.rows, w.cols, (row, dst) => decodeFp8Row(w, row, dst), 'fp8');
}
