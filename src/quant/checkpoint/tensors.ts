// Typed reads of the tensors quantized checkpoints add (packed words, codes, scales, scalars), each
// checked for dtype and shape so that a malformed checkpoint fails at load with the tensor named.

import { ModelLoadError } from '../../errors.js';
import { toFloat32 } from '../../model/load/dtype.js';
import type { HostTensor, SafetensorsCheckpoint, TensorInfo } from '../../model/load/safetensors.js';

export const FLOAT_DTYPES = ['F32', 'F16', 'BF16'] as const;

/** The tensors of one checkpoint, read with the checks every layout reader needs. */
export class CheckpointTensors {
  constructor(readonly ckpt: SafetensorsCheckpoint) {}

  get dir(): string {
    return this.ckpt.dir;
  }

  has(name: string): boolean {
    return this.ckpt.has(name);
  }

  /** The header entry of `name`, or a ModelLoadError saying what needed it. */
  info(name: string, neededFor: string): TensorInfo {
    if (!this.ckpt.has(name)) throw new ModelLoadError(`${this.ckpt.dir}: checkpoint is missing tensor '${name}' (${neededFor})`);
    return this.ckpt.info(name);
  }

  /** Reads `name` after checking its dtype is one of `dtypes` and its shape one of `shapes`. */
  read(name: string, neededFor: string, dtypes: readonly string[], shapes: readonly (readonly number[])[]): HostTensor {
    const info = this.info(name, neededFor);
    if (!dtypes.includes(info.dtype)) {
      throw new ModelLoadError(`${info.file}: tensor '${name}' has dtype ${info.dtype}; ${neededFor} needs ${dtypes.join(' or ')}`);
    }
    if (!shapes.some((s) => sameShape(s, info.shape))) {
      throw new ModelLoadError(`${info.file}: tensor '${name}' has shape [${info.shape.join(', ')}]; ${neededFor} expects ${shapes.map((s) => `[${s.join(', ')}]`).join(' or ')}`);
    }
    return this.ckpt.read(name);
  }

  /** 32-bit packed words (I32 on disk, as PyTorch cannot save U32) as unsigned words. */
  words(name: string, neededFor: string, shape: readonly number[]): Uint32Array {
    const t = this.read(name, neededFor, ['I32', 'U32'], [shape]);
    return new Uint32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 4);
  }

  /** Raw bytes of a 1-byte dtype tensor (U8 packed codes, F8_E4M3 codes). */
  bytes(name: string, neededFor: string, dtypes: readonly string[], shape: readonly number[]): Uint8Array {
    return this.read(name, neededFor, dtypes, [shape]).bytes;
  }

  /** Signed 8-bit integers (naive-quantized codes, unpacked zero points). */
  int8(name: string, neededFor: string, shapes: readonly (readonly number[])[]): Int8Array {
    const t = this.read(name, neededFor, ['I8'], shapes);
    return new Int8Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength);
  }

  /** A float tensor (F32, F16 or BF16: scales keep the dtype of the weights they came from) as float32. */
  floats(name: string, neededFor: string, shapes: readonly (readonly number[])[]): Float32Array {
    return toFloat32(this.read(name, neededFor, FLOAT_DTYPES, shapes), name);
  }

  /** A per-tensor scale: a 0-rank scalar or a one-element tensor. */
  scalar(name: string, neededFor: string): number {
    return this.floats(name, neededFor, [[], [1]])[0];
  }

  /** A small integer tensor (I64 / I32), e.g. compressed-tensors' weight_shape. */
  integers(name: string, neededFor: string, shape: readonly number[]): number[] {
    const t = this.read(name, neededFor, ['I64', 'I32'], [shape]);
    const view = new DataView(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength);
    const n = shape.reduce((a, b) => a * b, 1);
    return Array.from({ length: n }, (_, i) => (t.dtype === 'I64' ? Number(view.getBigInt64(i * 8, true)) : view.getInt32(i * 4, true)));
  }

  /** An I32 index tensor such as g_idx. */
  int32(name: string, neededFor: string, shape: readonly number[]): Int32Array {
    const t = this.read(name, neededFor, ['I32'], [shape]);
    return new Int32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 4);
  }
}

/** Whether `module`.weight exists as a plain float tensor (an unquantized module). */
export function isFloatWeight(t: CheckpointTensors, module: string): boolean {
  return t.has(`${module}.weight`) && (FLOAT_DTYPES as readonly string[]).includes(t.ckpt.info(`${module}.weight`).dtype);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
