// Calibrated FP8 KV-cache scales of a quantized checkpoint: one float32 scalar per layer for K and
// for V, stored under compressed-tensors' names (`self_attn.k_scale`, `self_attn.v_scale`) or
// ModelOpt's (`self_attn.k_proj.k_scale`, `self_attn.v_proj.v_scale`). An FP8 KV cache stores
// e4m3(x / scale) and reads code · scale, as vLLM does; without them the scale is 1.

import type { KvScales } from '../../backend/backend.js';
import { ModelLoadError } from '../../errors.js';
import type { SafetensorsCheckpoint } from './safetensors.js';
import { toFloat32 } from './dtype.js';

/** The tensor names a layer's K or V scale may have, in the order they are looked up. */
export function kvScaleNames(layer: number, which: 'k' | 'v'): string[] {
  const a = `model.layers.${layer}.self_attn.`;
  return [`${a}${which}_scale`, `${a}${which}_proj.${which}_scale`];
}

/**
 * Per layer the checkpoint's K and V scales, or undefined when it has none. A layer missing one
 * gets 1 for it (vLLM's default); a scale that is not one finite positive number is an error naming
 * the tensor.
 */
export function readKvScales(ckpt: SafetensorsCheckpoint, numLayers: number): KvScales[] | undefined {
  const read = (layer: number, which: 'k' | 'v'): number | undefined => {
    const name = kvScaleNames(layer, which).find((n) => ckpt.has(n));
    if (!name) return undefined;
    const info = ckpt.info(name);
    const values = toFloat32(ckpt.read(name), name);
    if (values.length !== 1 || !(values[0] > 0) || !Number.isFinite(values[0])) {
      throw new ModelLoadError(`${info.file}: KV cache scale '${name}' must be one finite positive number, got [${Array.from(values.slice(0, 4)).join(', ')}${values.length > 4 ? ', …' : ''}] (shape [${info.shape.join(', ')}])`);
    }
    return values[0];
  };
  const scales = Array.from({ length: numLayers }, (_, i) => ({ k: read(i, 'k'), v: read(i, 'v') }));
  if (scales.every((s) => s.k === undefined && s.v === undefined)) return undefined;
  return scales.map((s) => ({ k: s.k ?? 1, v: s.v ?? 1 }));
}
