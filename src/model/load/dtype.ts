// Conversions from the float storage dtypes of checkpoints (F32, F16, BF16) to float32 for the CPU.

import { ModelLoadError } from '../../errors.js';
import type { HostTensor } from './safetensors.js';

export function bf16ToF32(bits: number): number {
  F32_SCRATCH_U32[0] = bits << 16;
  return F32_SCRATCH[0];
}

/** IEEE half → float32, including subnormals, infinities and NaN. */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** float32 → bf16 bits with round-to-nearest-even (as torch does), NaN kept quiet. */
export function f32ToBf16(x: number): number {
  F32_SCRATCH[0] = x;
  const u = F32_SCRATCH_U32[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

const F32_SCRATCH = new Float32Array(1);
const F32_SCRATCH_U32 = new Uint32Array(F32_SCRATCH.buffer);

/** Decode a float tensor into a new Float32Array; names the tensor if its dtype is not a float type. */
export function toFloat32(t: HostTensor, name: string): Float32Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  const { buffer, byteOffset } = t.bytes;
  switch (t.dtype) {
    case 'F32':
      return new Float32Array(buffer.slice(byteOffset, byteOffset + n * 4));
    case 'BF16': {
      const src = new Uint16Array(buffer, byteOffset, n);
      const out = new Float32Array(n);
      const outU32 = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) outU32[i] = src[i] << 16;
      return out;
    }
    case 'F16': {
      const src = new Uint16Array(buffer, byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = f16ToF32(src[i]);
      return out;
    }
    default:
      throw new ModelLoadError(`tensor '${name}' has dtype ${t.dtype}; supported for unquantized weights: F32, F16, BF16`);
  }
}
