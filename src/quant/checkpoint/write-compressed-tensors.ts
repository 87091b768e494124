// Writes canonical quantized weights as compressed-tensors tensors (the layout llm-compressor saves,
// formats.md §3.2–3.6), and safetensors shards with the index transformers writes.

import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { f32ToBf16 } from '../../model/load/dtype.js';
import { encodeSafetensors, type HostTensor } from '../../model/load/safetensors.js';
import type { QuantizedWeight } from '../format.js';
import { globalScaleToCompressedTensors, NVFP4_BLOCK_SIZE } from '../nvfp4.js';
import { f32ToF16, type ScaleDtype } from './export-quantize.js';

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/** Float values (already representable) in a scale dtype. */
export function floatTensor(values: Float32Array, shape: number[], dtype: ScaleDtype): HostTensor {
  if (dtype === 'F32') return { dtype, shape, bytes: bytesOf(Float32Array.from(values)) };
  const encode = dtype === 'BF16' ? f32ToBf16 : f32ToF16;
  return { dtype, shape, bytes: bytesOf(Uint16Array.from(values, encode)) };
}

function int64Tensor(values: number[]): HostTensor {
  return { dtype: 'I64', shape: [values.length], bytes: bytesOf(BigInt64Array.from(values, BigInt)) };
}

/** Unsigned values [count, inner] packed 32/bits to a word along the FIRST dimension (compressed-tensors zero points). */
function packAlongFirstDim(values: Uint8Array, count: number, inner: number, bits: number): Uint32Array {
  const perWord = 32 / bits;
  const words = new Uint32Array(Math.ceil(count / perWord) * inner);
  for (let k = 0; k < count; k++) {
    const row = Math.floor(k / perWord) * inner;
    const shift = bits * (k % perWord);
    for (let c = 0; c < inner; c++) words[row + c] = (words[row + c] | (values[k * inner + c] << shift)) >>> 0;
  }
  return words;
}

/**
 * The tensors compressed-tensors stores for module `m` quantized as `w`:
 *   fp8    weight F8_E4M3 [out, in], weight_scale [out, 1]                          (float-quantized)
 *   int8   weight_packed I32 [out, in/4], weight_scale [out, 1], weight_shape       (pack-quantized)
 *   int4   weight_packed I32 [out, in/8], weight_scale [out, groups], weight_shape,
 *          + weight_zero_point I32 [out/8, groups] (asymmetric), + weight_g_idx I32 [in] (act-order)
 *   nvfp4  weight_packed U8 [out, in/2], weight_scale F8_E4M3 [out, in/16],
 *          weight_global_scale F32 [1] = 1 / our multiplier                         (nvfp4-pack-quantized)
 */
export function compressedTensorsTensors(m: string, w: QuantizedWeight, scaleDtype: ScaleDtype): Record<string, HostTensor> {
  const { rows, cols } = w;
  const t: Record<string, HostTensor> = {};
  switch (w.format) {
    case 'fp8':
      t[`${m}.weight`] = { dtype: 'F8_E4M3', shape: [rows, cols], bytes: w.codes };
      t[`${m}.weight_scale`] = floatTensor(w.scales, w.scales.length === 1 ? [1] : [rows, 1], scaleDtype);
      break;
    case 'int8': {
      const wordsPerRow = Math.ceil(cols / 4);
      const words = new Uint32Array(rows * wordsPerRow);
      for (let r = 0; r < rows; r++) {
        for (let i = 0; i < cols; i++) {
          const k = r * wordsPerRow + (i >> 2);
          words[k] = (words[k] | (((w.codes[r * cols + i] + 128) & 0xff) << (8 * (i & 3)))) >>> 0;
        }
      }
      t[`${m}.weight_packed`] = { dtype: 'I32', shape: [rows, wordsPerRow], bytes: bytesOf(words) };
      t[`${m}.weight_scale`] = floatTensor(w.scales, [rows, 1], scaleDtype);
      t[`${m}.weight_shape`] = int64Tensor([rows, cols]);
      break;
    }
    case 'int4':
      // Canonical int4 words are pack-quantized's bit for bit (codes q + 8, lowest column lowest nibble).
      t[`${m}.weight_packed`] = { dtype: 'I32', shape: [rows, Math.ceil(cols / 8)], bytes: bytesOf(w.packed) };
      t[`${m}.weight_scale`] = floatTensor(w.scales, [rows, w.numGroups], scaleDtype);
      t[`${m}.weight_shape`] = int64Tensor([rows, cols]);
      if (w.zeros) {
        // Signed zero points z − 8 offset back by +8 like the codes: the unsigned zero, packed along the output dim.
        t[`${m}.weight_zero_point`] = { dtype: 'I32', shape: [Math.ceil(rows / 8), w.numGroups], bytes: bytesOf(packAlongFirstDim(w.zeros, rows, w.numGroups, 4)) };
      }
      if (w.gIdx) t[`${m}.weight_g_idx`] = { dtype: 'I32', shape: [cols], bytes: bytesOf(Int32Array.from(w.gIdx)) };
      break;
    case 'nvfp4':
      t[`${m}.weight_packed`] = { dtype: 'U8', shape: [rows, cols / 2], bytes: w.packed };
      t[`${m}.weight_scale`] = { dtype: 'F8_E4M3', shape: [rows, cols / NVFP4_BLOCK_SIZE], bytes: w.blockScales };
      t[`${m}.weight_global_scale`] = { dtype: 'F32', shape: [1], bytes: bytesOf(Float32Array.of(globalScaleToCompressedTensors(w.globalScale))) };
      break;
  }
  return t;
}

/**
 * Collects tensors into safetensors shards of at most `maxShardBytes` (a tensor larger than that
 * gets a shard of its own) and names them as transformers does: model.safetensors for one,
 * model-0000k-of-0000n.safetensors plus model.safetensors.index.json for several.
 */
export class SafetensorsShardWriter {
  private pending: Record<string, HostTensor> = {};
  private pendingBytes = 0;
  private readonly shards: { tmp: string; names: string[] }[] = [];
  private totalBytes = 0;

  constructor(
    readonly dir: string,
    readonly maxShardBytes: number,
  ) {}

  add(name: string, tensor: HostTensor): void {
    if (this.pendingBytes > 0 && this.pendingBytes + tensor.bytes.byteLength > this.maxShardBytes) this.flush();
    this.pending[name] = tensor;
    this.pendingBytes += tensor.bytes.byteLength;
    this.totalBytes += tensor.bytes.byteLength;
  }

  private flush(): void {
    const names = Object.keys(this.pending);
    if (names.length === 0) return;
    const tmp = join(this.dir, `.shard-${this.shards.length}.safetensors.partial`);
    writeFileSync(tmp, encodeSafetensors(this.pending, { format: 'pt' }));
    this.shards.push({ tmp, names });
    this.pending = {};
    this.pendingBytes = 0;
  }

  /** Writes what is left, gives the shards their final names; returns the file names written. */
  finish(): string[] {
    this.flush();
    const n = this.shards.length;
    if (n === 1) {
      renameSync(this.shards[0].tmp, join(this.dir, 'model.safetensors'));
      return ['model.safetensors'];
    }
    const weightMap: Record<string, string> = {};
    const files = this.shards.map((s, k) => {
      const file = `model-${String(k + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
      renameSync(s.tmp, join(this.dir, file));
      for (const name of s.names) weightMap[name] = file;
      return file;
    });
    writeFileSync(join(this.dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: this.totalBytes }, weight_map: weightMap }, null, 2) + '\n');
    return [...files, 'model.safetensors.index.json'];
  }
}
