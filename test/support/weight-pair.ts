// A random weight loaded on two backends (the CPU reference and the one under test) for tests that
// compare them: dense in a 16-bit type, or quantized by the project's own quantizer.

import type { Backend, Weight } from '../../src/backend/backend.js';
import { f32ToBf16 } from '../../src/model/load/dtype.js';
import { f32ToF16 } from '../../src/model/load/dummy.js';
import type { HostTensor } from '../../src/model/load/safetensors.js';
import { quantizeWeight, type QuantizationMethod } from '../../src/quant/online.js';

export type WeightKind = 'BF16' | 'F16' | QuantizationMethod;

/** A maker of weight pairs for two backends and a test's random source (randomWeightPair bound to them). */
export function weightPairs(cpu: Backend, gpu: Backend | undefined, uniform: (n: number, lo?: number, hi?: number) => Float32Array) {
  return (kind: WeightKind, rows: number, cols: number): { c: Weight; g: Weight } => randomWeightPair(kind, rows, cols, cpu, gpu!, uniform);
}

/** One [rows, cols] weight of values uniform in ±1/√cols on both backends. */
export function randomWeightPair(
  kind: WeightKind, rows: number, cols: number, cpu: Backend, gpu: Backend, uniform: (n: number, lo?: number, hi?: number) => Float32Array,
): { c: Weight; g: Weight } {
  const vals = uniform(rows * cols, -1 / Math.sqrt(cols), 1 / Math.sqrt(cols));
  if (kind === 'BF16' || kind === 'F16') {
    const bits = Uint16Array.from(vals, (v) => (kind === 'BF16' ? f32ToBf16(v) : f32ToF16(v)));
    const t: HostTensor = { dtype: kind, shape: [rows, cols], bytes: new Uint8Array(bits.buffer) };
    return { c: cpu.loadDense('w', t), g: gpu.loadDense('w', t) };
  }
  const q = quantizeWeight(kind, vals, rows, cols, 'w');
  return { c: cpu.loadQuantized('w', q), g: gpu.loadQuantized('w', q) };
}
