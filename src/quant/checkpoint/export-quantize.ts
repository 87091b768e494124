// Round-to-nearest quantization for writing a checkpoint: the canonical quantizers' conventions, except
// that every scale is first rounded to the dtype it will be stored in, so the codes are chosen against
// exactly the scale a reader will load and the written checkpoint dequantizes to what we computed.

import { InvalidRequestError } from '../../errors.js';
import { bf16ToF32, f16ToF32, f32ToBf16 } from '../../model/load/dtype.js';
import { E4M3_MAX, encodeE4m3, E4M3_VALUES } from '../fp8-e4m3.js';
import { createFp8Weight } from '../fp8.js';
import type { QuantizedWeight } from '../format.js';
import { quantizeIntRtn, type IntGrid } from '../gptq.js';
import { createNvfp4Weight, E2M1_MAX, encodeE2m1, globalScaleFromCompressedTensors, globalScaleToCompressedTensors, NVFP4_BLOCK_SIZE, packE2m1 } from '../nvfp4.js';
import { absMax, FLOAT32_EPSILON, roundHalfToEven } from '../rounding.js';
import type { SchemeSettings } from './schemes.js';

/** The float dtypes scales are stored in: llm-compressor keeps the original weight's dtype. */
export type ScaleDtype = 'F32' | 'F16' | 'BF16';

export function scaleDtypeOf(weightDtype: string): ScaleDtype {
  return weightDtype === 'BF16' || weightDtype === 'F16' ? weightDtype : 'F32';
}

/** float32 → IEEE half bits, round to nearest even as torch casts (for F16 scales). */
export function f32ToF16(x: number): number {
  const v = Math.fround(x);
  if (Number.isNaN(v)) return 0x7e00;
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const abs = Math.abs(v);
  if (abs >= 65520) return sign | 0x7c00; // rounds to infinity
  // Subnormals count units of 2^-24 (a carry to 0x400 is the smallest normal, correctly encoded).
  if (abs < 2 ** -14) return sign | roundHalfToEven(abs * 2 ** 24);
  let e = Math.floor(Math.log2(abs));
  if (2 ** e > abs) e--;
  else if (2 ** (e + 1) <= abs) e++;
  // A mantissa that rounds up to 1024 carries into the exponent through the addition.
  return sign | (((e + 15) << 10) + roundHalfToEven((abs / 2 ** e - 1) * 1024));
}

/** The value a float32 scale has once stored in `dtype`. */
export function roundToScaleDtype(dtype: ScaleDtype): (x: number) => number {
  switch (dtype) {
    case 'F32':
      return Math.fround;
    case 'BF16':
      return (x) => bf16ToF32(f32ToBf16(x));
    case 'F16':
      return (x) => f16ToF32(f32ToF16(x));
  }
}

/** The integer grid of an int scheme, its scales rounded to the storage dtype (never to 0). */
export function intGridFor(settings: SchemeSettings, scaleDtype: ScaleDtype): IntGrid {
  const round = roundToScaleDtype(scaleDtype);
  const roundScale = (s: number) => {
    const r = round(s);
    return r > 0 ? r : round(Math.max(s, FLOAT32_EPSILON, 2 ** -24));
  };
  switch (settings.scheme) {
    case 'W8A16':
      return { bits: 8, symmetric: true, groupSize: -1, roundScale };
    case 'W4A16':
      return { bits: 4, symmetric: true, groupSize: settings.groupSize, roundScale };
    case 'W4A16_ASYM':
      return { bits: 4, symmetric: false, groupSize: settings.groupSize, roundScale };
    default:
      throw new RangeError(`${settings.scheme} is not an integer scheme`);
  }
}

/** FP8 per output channel: s = amax/448 rounded to the scale dtype, code = e4m3(w / s). */
function quantizeFp8ForExport(w: Float32Array, rows: number, cols: number, scaleDtype: ScaleDtype): QuantizedWeight {
  const round = roundToScaleDtype(scaleDtype);
  const scales = new Float32Array(rows);
  const codes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const amax = absMax(w, r * cols, (r + 1) * cols);
    let s = round(amax > 0 ? Math.fround(amax / E4M3_MAX) : FLOAT32_EPSILON);
    if (!(s > 0)) s = round(2 ** -24);
    scales[r] = s;
    for (let i = r * cols; i < (r + 1) * cols; i++) codes[i] = encodeE4m3(w[i] / s);
  }
  return createFp8Weight(rows, cols, codes, scales);
}

/**
 * A global multiplier g = 1 / weight_global_scale whose float32 reciprocal round-trips (a reader
 * computes 1/(1/g) in float32), chosen next to compressed-tensors' 448·6/amax.
 */
function stableNvfp4GlobalScale(amax: number): number {
  const ctGlobal = Math.fround((E4M3_MAX * E2M1_MAX) / Math.max(amax, 2 ** -126));
  let g = globalScaleFromCompressedTensors(ctGlobal);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let step = 0; step < 8 && globalScaleFromCompressedTensors(globalScaleToCompressedTensors(g)) !== g; step++) {
    f[0] = g;
    u[0] += 1; // the next float32 up (a slightly larger multiplier keeps block scales in range)
    g = f[0];
  }
  return g;
}

/** NVFP4 with ModelOpt's block rule (nvfp4.ts) against a global multiplier that survives being stored inverted. */
function quantizeNvfp4ForExport(w: Float32Array, rows: number, cols: number, name: string): QuantizedWeight {
  if (cols % NVFP4_BLOCK_SIZE !== 0) throw new InvalidRequestError(`NVFP4A16 needs input dimensions that are multiples of ${NVFP4_BLOCK_SIZE}; '${name}' has ${cols}`);
  const globalScale = stableNvfp4GlobalScale(absMax(w));
  const blockScales = new Uint8Array((rows * cols) / NVFP4_BLOCK_SIZE);
  const codes = new Uint8Array(rows * cols);
  for (let b = 0; b < blockScales.length; b++) {
    const start = b * NVFP4_BLOCK_SIZE;
    const perBlock = Math.fround(absMax(w, start, start + NVFP4_BLOCK_SIZE) / E2M1_MAX);
    const code = perBlock === 0 ? 0x38 : encodeE4m3(perBlock / globalScale);
    blockScales[b] = code === 0 ? 0x01 : code;
    const divisor = Math.fround(E4M3_VALUES[blockScales[b]] * globalScale);
    for (let i = start; i < start + NVFP4_BLOCK_SIZE; i++) codes[i] = encodeE2m1(Math.fround(w[i] / divisor));
  }
  return createNvfp4Weight(rows, cols, packE2m1(codes), blockScales, globalScale);
}

/** Round-to-nearest of one float weight [rows, cols] for `settings.scheme`, scales as stored in `scaleDtype`. */
export function quantizeForExport(w: Float32Array, rows: number, cols: number, settings: SchemeSettings, scaleDtype: ScaleDtype, name: string): QuantizedWeight {
  switch (settings.scheme) {
    case 'FP8_DYNAMIC':
      return quantizeFp8ForExport(w, rows, cols, scaleDtype);
    case 'NVFP4A16':
      return quantizeNvfp4ForExport(w, rows, cols, name);
    default:
      return quantizeIntRtn(w, rows, cols, intGridFor(settings, scaleDtype));
  }
}
