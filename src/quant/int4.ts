// W4A16 int4 weights: 4-bit codes packed 8 per uint32 along the input dimension, a float32 scale
// (and for asymmetric schemes a zero point) per group of input columns, optional act-order g_idx.

import { checkMatrixShape, dequantizeRows, linearOverDecodedRows } from './decoded-row-linear.js';
import { FLOAT32_EPSILON, roundHalfToEven } from './rounding.js';

/*
 * Canonical layout (the one every checkpoint reader converts into, and kernels read):
 *
 *   packed  Uint32Array [rows, ceil(cols/8)]. Column i of row o is the nibble at bits 4·(i%8) of word
 *           (o, i/8): lowest nibble = lowest column ("LSB-first"), rows zero-padded to whole words.
 *           This is compressed-tensors pack-quantized (formats.md §3.4) bit for bit, so its
 *           `weight_packed` I32 [out, in/8] is taken as is, and it is also how GPTQ packs along the
 *           input dim (GPTQ's qweight is merely transposed). Codes are unsigned u ∈ [0, 15].
 *   scales  Float32Array [rows, numGroups].
 *   zeros   Uint8Array [rows, numGroups] of unsigned zero points ∈ [0, 15], or undefined for
 *           symmetric weights, whose zero point is 8 (vLLM's `uint4b8`).
 *   gIdx    Int32Array [cols] or undefined: column i belongs to group gIdx[i] (act-order); without it
 *           to group floor(i / groupSize).
 *
 *   w[o, i] = (u[o, i] − zero[o, g]) · scale[o, g]
 *
 * What readers add to reach the unsigned zero point: compressed-tensors stores signed zero points
 * z ∈ [−8, 7] (zero = z + 8, its codes are already q + 8); GPTQ v1 stores zero − 1 (zero = stored + 1),
 * GPTQ v2 and AWQ store the zero itself.
 */

/** Canonical int4 weight; see the layout above. */
export interface Int4Weight {
  readonly format: 'int4';
  readonly rows: number;
  readonly cols: number;
  /** Input columns per group; equals `cols` for one group per row (group_size −1). */
  readonly groupSize: number;
  /** Groups per row, ceil(cols / groupSize): the second dimension of scales and zeros. */
  readonly numGroups: number;
  readonly packed: Uint32Array;
  readonly scales: Float32Array;
  readonly zeros: Uint8Array | undefined;
  readonly gIdx: Int32Array | undefined;
  /** Packed codes plus float32 scales, zero points and g_idx as held here. */
  readonly bytes: number;
}

export interface Int4Parts {
  rows: number;
  cols: number;
  /** A positive group size, or −1 for one group per row. */
  groupSize: number;
  packed: Uint32Array;
  scales: Float32Array;
  zeros?: Uint8Array;
  gIdx?: Int32Array;
}

export interface Int4QuantizeOptions {
  /** Columns per group (default 128, llm-compressor's W4A16); −1 = per output channel. */
  groupSize?: number;
  /** Symmetric (default, W4A16) or asymmetric with zero points (W4A16_ASYM). */
  symmetric?: boolean;
  /** Act-order group of each input column; groups are then the columns sharing a gIdx value. */
  gIdx?: Int32Array;
}

const SYMMETRIC_ZERO = 8;

/** Words per packed row: 8 nibbles per uint32. */
export function int4WordsPerRow(cols: number): number {
  return Math.ceil(cols / 8);
}

/** Packs unsigned 4-bit codes [rows, cols] into the canonical words (column i at bits 4·(i%8)). */
export function packInt4(codes: Uint8Array, rows: number, cols: number): Uint32Array {
  checkMatrixShape(codes, rows, cols, 'packInt4 codes');
  const wordsPerRow = int4WordsPerRow(cols);
  const packed = new Uint32Array(rows * wordsPerRow);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < cols; i++) {
      const u = codes[r * cols + i];
      if (u > 15) throw new RangeError(`packInt4: code ${u} at [${r}, ${i}] does not fit in 4 bits`);
      const word = r * wordsPerRow + (i >> 3);
      packed[word] = (packed[word] | (u << (4 * (i & 7)))) >>> 0;
    }
  }
  return packed;
}

/** The unsigned 4-bit codes [rows, cols] held in canonical packed words (padding dropped). */
export function unpackInt4(packed: Uint32Array, rows: number, cols: number): Uint8Array {
  const wordsPerRow = int4WordsPerRow(cols);
  checkMatrixShape(packed, rows, wordsPerRow, 'unpackInt4 words');
  const codes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < cols; i++) codes[r * cols + i] = (packed[r * wordsPerRow + (i >> 3)] >>> (4 * (i & 7))) & 0xf;
  }
  return codes;
}

function normalizedGroupSize(groupSize: number, cols: number): number {
  if (groupSize === -1) return cols;
  if (!Number.isInteger(groupSize) || groupSize <= 0) {
    throw new RangeError(`int4 group size must be a positive integer or -1 (per channel), got ${groupSize}`);
  }
  return Math.min(groupSize, cols);
}

function checkGIdx(gIdx: Int32Array, cols: number, numGroups: number, what: string): void {
  if (gIdx.length !== cols) throw new RangeError(`${what}: g_idx has ${gIdx.length} entries, expected one per input column (${cols})`);
  const bad = gIdx.findIndex((g) => g < 0 || g >= numGroups);
  if (bad >= 0) throw new RangeError(`${what}: g_idx[${bad}] = ${gIdx[bad]} is not a group (0..${numGroups - 1})`);
}

/** Checks every array against the shape and builds the canonical weight. */
export function createInt4Weight(parts: Int4Parts): Int4Weight {
  const { rows, cols, packed, scales, zeros, gIdx } = parts;
  const what = `int4 weight [${rows}, ${cols}]`;
  checkMatrixShape(packed, rows, int4WordsPerRow(cols), `${what} packed words`);
  const groupSize = normalizedGroupSize(parts.groupSize, cols);
  const numGroups = Math.ceil(cols / groupSize);
  checkMatrixShape(scales, rows, numGroups, `${what} scales (group size ${groupSize})`);
  if (zeros) {
    checkMatrixShape(zeros, rows, numGroups, `${what} zero points (group size ${groupSize})`);
    const bad = zeros.findIndex((z) => z > 15);
    if (bad >= 0) throw new RangeError(`${what}: zero point ${zeros[bad]} at ${bad} is outside the unsigned 4-bit range 0..15`);
  }
  if (gIdx) checkGIdx(gIdx, cols, numGroups, what);
  const bytes = packed.byteLength + scales.byteLength + (zeros?.byteLength ?? 0) + (gIdx?.byteLength ?? 0);
  return { format: 'int4', rows, cols, groupSize, numGroups, packed, scales, zeros, gIdx, bytes };
}

/**
 * Round-to-nearest in llm-compressor's convention (compressed-tensors calculate_qparams), in float32:
 * - symmetric: s = amax / 7.5 (amax over the group; 7.5 = (qmax − qmin)/2 for [−8, 7]),
 *   q = clamp(roundHalfToEven(w/s), −8, 7), stored u = q + 8. So +amax → 7.5 → 8 → clamped to 7 and
 *   −amax → −8: every element is within s/2.
 * - asymmetric: the range is widened to include 0 (min ≤ 0 ≤ max) so that zero is exact;
 *   s = (max − min)/15, zero = clamp(roundHalfToEven(−min/s), 0, 15),
 *   u = clamp(roundHalfToEven(w/s + zero − 8), −8, 7) + 8 (the signed-domain order of operations).
 * An all-zero group gets s = float32 epsilon. Rounding is half-to-even throughout (torch.round).
 */
export function quantizeInt4(w: Float32Array, rows: number, cols: number, options: Int4QuantizeOptions = {}): Int4Weight {
  checkMatrixShape(w, rows, cols, 'quantizeInt4 input');
  const groupSize = normalizedGroupSize(options.groupSize ?? 128, cols);
  const numGroups = Math.ceil(cols / groupSize);
  const symmetric = options.symmetric ?? true;
  const gIdx = options.gIdx;
  if (gIdx) checkGIdx(gIdx, cols, numGroups, `quantizeInt4 [${rows}, ${cols}]`);
  const groupOf = (i: number) => (gIdx ? gIdx[i] : Math.floor(i / groupSize));

  const scales = new Float32Array(rows * numGroups);
  const zeros = symmetric ? undefined : new Uint8Array(rows * numGroups);
  const codes = new Uint8Array(rows * cols);
  const groupMin = new Float64Array(numGroups);
  const groupMax = new Float64Array(numGroups);
  for (let r = 0; r < rows; r++) {
    const off = r * cols;
    groupMin.fill(0);
    groupMax.fill(0);
    for (let i = 0; i < cols; i++) {
      const g = groupOf(i);
      if (w[off + i] < groupMin[g]) groupMin[g] = w[off + i];
      if (w[off + i] > groupMax[g]) groupMax[g] = w[off + i];
    }
    for (let g = 0; g < numGroups; g++) {
      const s = symmetric
        ? Math.fround(Math.max(-groupMin[g], groupMax[g]) / 7.5)
        : Math.fround(Math.fround(groupMax[g] - groupMin[g]) / 15);
      scales[r * numGroups + g] = s > 0 ? s : FLOAT32_EPSILON;
      if (zeros) zeros[r * numGroups + g] = Math.min(15, Math.max(0, roundHalfToEven(Math.fround(-groupMin[g] / scales[r * numGroups + g]))));
    }
    for (let i = 0; i < cols; i++) {
      const g = r * numGroups + groupOf(i);
      const signedZero = zeros ? zeros[g] - SYMMETRIC_ZERO : 0;
      const scaled = Math.fround(Math.fround(w[off + i] / scales[g]) + signedZero);
      codes[off + i] = Math.min(7, Math.max(-8, roundHalfToEven(scaled))) + SYMMETRIC_ZERO;
    }
  }
  return createInt4Weight({ rows, cols, groupSize, packed: packInt4(codes, rows, cols), scales, zeros, gIdx });
}

function decodeInt4Row(w: Int4Weight, row: number, dst: Float32Array): void {
  const wordsPerRow = int4WordsPerRow(w.cols);
  const groupOff = row * w.numGroups;
  for (let i = 0; i < w.cols; i++) {
    const u = (w.packed[row * wordsPerRow + (i >> 3)] >>> (4 * (i & 7))) & 0xf;
    const g = groupOff + (w.gIdx ? w.gIdx[i] : Math.floor(i / w.groupSize));
    dst[i] = (u - (w.zeros ? w.zeros[g] : SYMMETRIC_ZERO)) * w.scales[g];
  }
}

export function dequantizeInt4(w: Int4Weight): Float32Array {
  return dequantizeRows(w.rows, w.cols, (row, dst) => decodeInt4Row(w, row, dst));
}

/** y = x · Wᵀ straight from the packed words: x [nTokens, cols] → [nTokens, rows]. */
export function linearInt4(x: Float32Array, nTokens: number, w: Int4Weight): Float32Array {
  return linearOverDecodedRows(x, nTokens, w.rows, w.cols, (row, dst) => decodeInt4Row(w, row, dst), 'int4');
}
