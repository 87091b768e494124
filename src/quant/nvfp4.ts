// NVFP4 weights: E2M1 (4-bit float) codes two per byte, an E4M3 scale per block of 16 input elements
// and one float32 global scale per tensor; quantized the way NVIDIA ModelOpt does it.

import { checkMatrixShape, dequantizeRows, linearOverDecodedRows } from './decoded-row-linear.js';
import { E4M3_MAX, E4M3_VALUES, encodeE4m3 } from './fp8-e4m3.js';
import { absMax } from './rounding.js';

/*
 * Canonical layout (formats.md §5.2 / §3.6; ModelOpt and compressed-tensors agree on it):
 *
 *   packed       Uint8Array [rows, cols/2]: element 2k of a row in the low nibble of byte k, element
 *                2k+1 in the high nibble. Nibble = sign<<3 | index into [0, 0.5, 1, 1.5, 2, 3, 4, 6].
 *   blockScales  Uint8Array [rows, cols/16] of E4M3FN codes, row-major, unswizzled.
 *   globalScale  float32 multiplier: w[o, i] = e2m1(code) · e4m3(blockScales[o, i/16]) · globalScale.
 *
 * The global scale has two opposite conventions on disk, and mixing them up is off by amax² / 2688²:
 *   - ModelOpt `weight_scale_2` IS this multiplier: amax(W) / (6·448).
 *   - compressed-tensors `weight_global_scale` is its reciprocal, 6·448 / amax(W), and divides.
 * Readers must go through globalScaleFromModelOpt / globalScaleFromCompressedTensors.
 */

export const NVFP4_BLOCK_SIZE = 16;
export const E2M1_MAX = 6;

/** The 16 E2M1 codes: magnitudes 0..7 then their negatives (8 is −0). */
export const E2M1_VALUES: Float32Array = Float32Array.from(
  { length: 16 },
  (_, code) => (code & 8 ? -1 : 1) * [0, 0.5, 1, 1.5, 2, 3, 4, 6][code & 7],
);

/** Midpoints between neighbouring E2M1 magnitudes; a value exactly on one goes to the even code. */
const E2M1_MIDPOINTS = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5];

export function decodeE2m1(code: number): number {
  return E2M1_VALUES[code & 0xf];
}

/**
 * Nearest E2M1 code, ties to the even code (the one whose mantissa bit is 0): 0.25 → 0, 0.75 → 1,
 * 1.25 → 1, 1.75 → 2, 2.5 → 2, 3.5 → 4, 5 → 4. Saturates at ±6. As in ModelOpt's _cast_fp4 the sign
 * comes from x < 0, so a small negative value becomes −0 (code 8).
 */
export function encodeE2m1(x: number): number {
  const magnitude = Math.abs(x);
  let index = 0;
  while (index < E2M1_MIDPOINTS.length && E2M1_MIDPOINTS[index] < magnitude) index++;
  // Landing exactly on a midpoint leaves us on the lower neighbour; step up when that one is odd.
  if (index < E2M1_MIDPOINTS.length && E2M1_MIDPOINTS[index] === magnitude && index % 2 === 1) index++;
  return (x < 0 ? 8 : 0) | index;
}

/** Two codes per byte, even index in the low nibble; `codes.length` must be even. */
export function packE2m1(codes: Uint8Array): Uint8Array {
  if (codes.length % 2 !== 0) throw new RangeError(`packE2m1: ${codes.length} codes cannot fill whole bytes`);
  const packed = new Uint8Array(codes.length / 2);
  for (let k = 0; k < packed.length; k++) {
    const low = codes[2 * k];
    const high = codes[2 * k + 1];
    if (low > 15 || high > 15) throw new RangeError(`packE2m1: code ${Math.max(low, high)} near index ${2 * k} does not fit in 4 bits`);
    packed[k] = low | (high << 4);
  }
  return packed;
}

export function unpackE2m1(packed: Uint8Array): Uint8Array {
  const codes = new Uint8Array(packed.length * 2);
  for (let k = 0; k < packed.length; k++) {
    codes[2 * k] = packed[k] & 0xf;
    codes[2 * k + 1] = packed[k] >> 4;
  }
  return codes;
}

function checkGlobalScale(x: number, what: string): void {
  if (!Number.isFinite(x) || x <= 0) throw new RangeError(`${what} must be a positive finite number, got ${x}`);
}

/** ModelOpt's `weight_scale_2` is already the multiplier. */
export function globalScaleFromModelOpt(weightScale2: number): number {
  checkGlobalScale(weightScale2, 'ModelOpt weight_scale_2');
  return Math.fround(weightScale2);
}

/** compressed-tensors' `weight_global_scale` divides (6·448/amax); the multiplier is its inverse. */
export function globalScaleFromCompressedTensors(weightGlobalScale: number): number {
  checkGlobalScale(weightGlobalScale, 'compressed-tensors weight_global_scale');
  return Math.fround(1 / weightGlobalScale);
}

/** What a compressed-tensors writer stores as `weight_global_scale` for our multiplier. */
export function globalScaleToCompressedTensors(globalScale: number): number {
  checkGlobalScale(globalScale, 'NVFP4 global scale');
  return Math.fround(1 / globalScale);
}

/** Canonical NVFP4 weight; see the layout above. */
export interface Nvfp4Weight {
  readonly format: 'nvfp4';
  readonly rows: number;
  readonly cols: number;
  readonly packed: Uint8Array;
  readonly blockScales: Uint8Array;
  readonly globalScale: number;
  /** Packed codes, E4M3 block scales and the float32 global scale. */
  readonly bytes: number;
}

/** Checks shapes and builds the canonical weight; `globalScale` is the multiplier (see above). */
export function createNvfp4Weight(rows: number, cols: number, packed: Uint8Array, blockScales: Uint8Array, globalScale: number): Nvfp4Weight {
  const what = `nvfp4 weight [${rows}, ${cols}]`;
  if (cols % NVFP4_BLOCK_SIZE !== 0) throw new RangeError(`${what}: the input dimension must be a multiple of the ${NVFP4_BLOCK_SIZE}-element block`);
  checkMatrixShape(packed, rows, cols / 2, `${what} packed codes`);
  checkMatrixShape(blockScales, rows, cols / NVFP4_BLOCK_SIZE, `${what} block scales`);
  checkGlobalScale(globalScale, `${what} global scale`);
  return { format: 'nvfp4', rows, cols, packed, blockScales, globalScale, bytes: packed.byteLength + blockScales.byteLength + 4 };
}

/** The smallest positive E4M3 value, 2⁻⁹: block scales never go below it (ModelOpt's clamp). */
const E4M3_MIN_SUBNORMAL_CODE = 0x01;
const E4M3_ONE_CODE = 0x38;

/**
 * ModelOpt's round-to-nearest NVFP4 (nvfp4_tensor.py), in float32:
 *   globalScale = amax(W) / (6·448)
 *   blockScale  = e4m3(amax(block) / 6 / globalScale), at least 2⁻⁹; 1.0 for an all-zero block
 *   code        = e2m1(w / (blockScale · globalScale)), ties to even, saturating at ±6.
 * An all-zero tensor takes amax = the smallest normal float32 (compressed-tensors' generate_gparam
 * guard) so the global scale stays positive.
 */
export function quantizeNvfp4(w: Float32Array, rows: number, cols: number): Nvfp4Weight {
  checkMatrixShape(w, rows, cols, 'quantizeNvfp4 input');
  if (cols % NVFP4_BLOCK_SIZE !== 0) throw new RangeError(`quantizeNvfp4: the input dimension ${cols} must be a multiple of the ${NVFP4_BLOCK_SIZE}-element block`);
  const amax = Math.max(absMax(w), 2 ** -126);
  const globalScale = Math.fround(amax / (E2M1_MAX * E4M3_MAX));
  const blockScales = new Uint8Array((rows * cols) / NVFP4_BLOCK_SIZE);
  const codes = new Uint8Array(rows * cols);
  for (let b = 0; b < blockScales.length; b++) {
    const start = b * NVFP4_BLOCK_SIZE;
    const perBlockScale = Math.fround(absMax(w, start, start + NVFP4_BLOCK_SIZE) / E2M1_MAX);
    const scaleCode = perBlockScale === 0 ? E4M3_ONE_CODE : encodeE4m3(perBlockScale / globalScale);
    blockScales[b] = scaleCode === 0 ? E4M3_MIN_SUBNORMAL_CODE : scaleCode;
    const divisor = Math.fround(E4M3_VALUES[blockScales[b]] * globalScale);
    for (let i = start; i < start + NVFP4_BLOCK_SIZE; i++) codes[i] = encodeE2m1(Math.fround(w[i] / divisor));
  }
  return createNvfp4Weight(rows, cols, packE2m1(codes), blockScales, globalScale);
}

function decodeNvfp4Row(w: Nvfp4Weight, row: number, dst: Float32Array): void {
  const bytesPerRow = w.cols / 2;
  const blocksPerRow = w.cols / NVFP4_BLOCK_SIZE;
  for (let b = 0; b < blocksPerRow; b++) {
    const multiplier = Math.fround(E4M3_VALUES[w.blockScales[row * blocksPerRow + b]] * w.globalScale);
    for (let k = 0; k < NVFP4_BLOCK_SIZE / 2; k++) {
      const byte = w.packed[row * bytesPerRow + b * (NVFP4_BLOCK_SIZE / 2) + k];
      dst[b * NVFP4_BLOCK_SIZE + 2 * k] = E2M1_VALUES[byte & 0xf] * multiplier;
      dst[b * NVFP4_BLOCK_SIZE + 2 * k + 1] = E2M1_VALUES[byte >> 4] * multiplier;
    }
  }
}

export function dequantizeNvfp4(w: Nvfp4Weight): Float32Array {
  return dequantizeRows(w.rows, w.cols, (row, dst) => decodeNvfp4Row(w, row, dst));
}

/** y = x · Wᵀ straight from the packed codes: x [nTokens, cols] → [nTokens, rows]. */
export function linearNvfp4(x: Float32Array, nTokens: number, w: Nvfp4Weight): Float32Array {
  return linearOverDecodedRows(x, nTokens, w.rows, w.cols, (row, dst) => decodeNvfp4Row(w, row, dst), 'nvfp4');
}
