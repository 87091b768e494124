// What a checkpoint reader hands the loader for one Linear: a weight in a canonical quantized format,
// or, where the stored layout has no canonical equivalent, its exact float32 dequantization.

import { createInt4Weight, packInt4 } from '../int4.js';
import { createInt8Weight } from '../int8.js';
import type { QuantizedWeight } from '../format.js';

export type StoredLinear =
  | { kind: 'quantized'; weight: QuantizedWeight }
  /** The layout is read exactly but held as float32 [rows, cols]; `why` names what the canonical formats lack. */
  | { kind: 'dequantized'; values: Float32Array; why: string };

/**
 * The common shape of every integer layout (compressed-tensors int, GPTQ, AWQ) once unpacked:
 * unsigned codes u ∈ [0, 2^bits), and w[o, i] = (u[o, i] − zero[o, g]) · scale[o, g] with
 * g = gIdx[i] or floor(i / groupSize). Readers fill it; `toCanonical` picks the format.
 */
export interface UnpackedIntWeight {
  rows: number;
  cols: number;
  bits: 4 | 8;
  groupSize: number;
  /** [rows, cols] unsigned codes; or, for 4 bits, `packed` in the canonical int4 word layout instead. */
  codes?: Uint8Array;
  packed?: Uint32Array;
  /** [rows, numGroups]. */
  scales: Float32Array;
  /** [rows, numGroups] unsigned zero points (GPTQ v1 can reach 2^bits); undefined = symmetric (2^(bits−1)). */
  zeros?: Uint16Array;
  gIdx?: Int32Array;
}

export function numGroupsOf(cols: number, groupSize: number): number {
  return Math.ceil(cols / groupSize);
}

/** Codes [rows, cols] held in canonical int4 words (column i at bits 4·(i%8) of word (o, i/8)). */
function codesFromPacked(packed: Uint32Array, rows: number, cols: number): Uint8Array {
  const wordsPerRow = Math.ceil(cols / 8);
  const codes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < cols; i++) codes[r * cols + i] = (packed[r * wordsPerRow + (i >> 3)] >>> (4 * (i & 7))) & 0xf;
  }
  return codes;
}

function isTrivialGIdx(gIdx: Int32Array, groupSize: number): boolean {
  return gIdx.every((g, i) => g === Math.floor(i / groupSize));
}

/**
 * The canonical form of an unpacked integer weight: int4 (any group size, zero points up to 15,
 * act-order g_idx) or int8 (one scale per row, symmetric). Anything else is dequantized exactly,
 * with the reason.
 */
export function toCanonical(w: UnpackedIntWeight): StoredLinear {
  const { rows, cols, bits, groupSize, scales } = w;
  const numGroups = numGroupsOf(cols, groupSize);
  const mid = 1 << (bits - 1);
  const gIdx = w.gIdx && !isTrivialGIdx(w.gIdx, groupSize) ? w.gIdx : undefined;
  const zeros = w.zeros && w.zeros.some((z) => z !== mid) ? w.zeros : undefined;
  if (bits === 4 && !(zeros && zeros.some((z) => z > 15))) {
    const packed = w.packed ?? packInt4(w.codes!, rows, cols);
    const weight = createInt4Weight({ rows, cols, groupSize: numGroups === 1 ? -1 : groupSize, packed, scales, zeros: zeros ? Uint8Array.from(zeros) : undefined, gIdx });
    return { kind: 'quantized', weight };
  }
  if (bits === 8 && numGroups === 1 && !zeros) {
    const codes = new Int8Array(rows * cols);
    for (let i = 0; i < codes.length; i++) codes[i] = w.codes![i] - 128;
    return { kind: 'quantized', weight: createInt8Weight(rows, cols, codes, scales) };
  }
  const why =
    bits === 4
      ? 'a GPTQ v1 zero point of 16 (stored 15) does not fit the canonical int4 zero points (0..15)'
      : `canonical int8 holds one scale per output row and no zero point; this weight has ${numGroups} group(s) per row${zeros ? ' and zero points' : ''}`;
  return { kind: 'dequantized', values: dequantizeUnpacked(w), why };
}

/** w[o, i] = (u − zero) · scale in float32, for layouts the canonical formats cannot hold. */
export function dequantizeUnpacked(w: UnpackedIntWeight): Float32Array {
  const { rows, cols, bits, groupSize, scales } = w;
  const numGroups = numGroupsOf(cols, groupSize);
  const codes = w.codes ?? codesFromPacked(w.packed!, rows, cols);
  const mid = 1 << (bits - 1);
  const out = new Float32Array(rows * cols);
  for (let o = 0; o < rows; o++) {
    for (let i = 0; i < cols; i++) {
      const g = o * numGroups + (w.gIdx ? w.gIdx[i] : Math.floor(i / groupSize));
      out[o * cols + i] = (codes[o * cols + i] - (w.zeros ? w.zeros[g] : mid)) * scales[g];
    }
  }
  return out;
}

/**
 * Values packed `32 / bits` to a little-endian word, lowest slot = lowest index, along the LAST
 * dimension: words [outer, ceil(count / perWord)] → values [outer, count].
 */
export function unpackAlongRows(words: Uint32Array, outer: number, count: number, bits: number): Uint8Array {
  const perWord = 32 / bits;
  const wordsPerRow = Math.ceil(count / perWord);
  const mask = (1 << bits) - 1;
  const out = new Uint8Array(outer * count);
  for (let r = 0; r < outer; r++) {
    for (let k = 0; k < count; k++) out[r * count + k] = (words[r * wordsPerRow + Math.floor(k / perWord)] >>> (bits * (k % perWord))) & mask;
  }
  return out;
}

/**
 * The same packing along the FIRST dimension: words [ceil(count / perWord), inner] → values
 * [count, inner] (GPTQ qweight, compressed-tensors zero points).
 */
export function unpackAlongColumns(words: Uint32Array, count: number, inner: number, bits: number): Uint8Array {
  const perWord = 32 / bits;
  const mask = (1 << bits) - 1;
  const out = new Uint8Array(count * inner);
  for (let k = 0; k < count; k++) {
    const wordRow = Math.floor(k / perWord) * inner;
    const shift = bits * (k % perWord);
    for (let c = 0; c < inner; c++) out[k * inner + c] = (words[wordRow + c] >>> shift) & mask;
  }
  return out;
}

/** [a, b] → [b, a]. */
export function transposeFloats(x: Float32Array, a: number, b: number): Float32Array {
  const out = new Float32Array(a * b);
  for (let i = 0; i < a; i++) for (let j = 0; j < b; j++) out[j * a + i] = x[i * b + j];
  return out;
}

export function transposeBytes(x: Uint8Array, a: number, b: number): Uint8Array {
  const out = new Uint8Array(a * b);
  for (let i = 0; i < a; i++) for (let j = 0; j < b; j++) out[j * a + i] = x[i * b + j];
  return out;
}
