// Speed of the quantized GEMVs (≤ 8 tokens: dequantise in registers, stream the packed weight once)
// at Llama-3.1-8B's linear shapes, for bf16 and every --quantization method, at 1 and 8 tokens:
// device µs per call (CUDA events), the weight bytes streamed per second, and that as a share of the
// device-to-device copy bandwidth (the memory roofline). lm_head stays bf16 in real quantized
// checkpoints, so it is measured in bf16 only. Each quantized case runs every GEMV kernel: v1, v2 as
// chosen per call, and v2 forced to each other rows-a-block it has a kernel for. Then the fused decode
// linears per quantized format: q/k/v through linearMany and gate/up·SiLU through linearSiluMul, the
// separate ops against the fused kernels (as chosen, and forced to each rows-a-block), with launches
// per call. Prints tables and saves JSON with the machine and GPU. Measures; never passes or fails.
//
//   node dist/bench/cuda-quant-gemv.js [--tokens 1,8] [--output FILE]

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type { Tensor, Weight } from '../src/backend/backend.js';
import { quantGemvV2, type QuantGemvFormat, type QuantizedWeights } from '../src/backend/cuda/quantized-weights.js';
import type { QuantizationMethod } from '../src/quant/online.js';
import { gpuResultFile, machineInfo } from './machine.js';
import { openBenchGpu } from './bench-gpu.js';
import { KernelTimer } from './kernel-timer.js';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '1,8' },
    output: { type: 'string' },
  },
});
const tokenCounts = values.tokens!.split(',').map(Number);

const { backend, gpu, copyGBs, kernelsMs: compileMs } = openBenchGpu({ warmUp: false, modules: ['linear.cu', 'quant-linear.cu'] });

// The quantized GEMV kernels to compare (QuantizedWeights.kernel / .rows; the backend keeps them private).
const quant = backend.quantized;
function setVariant(v: string): void {
  quant.kernel = v === 'v1' ? 'v1' : 'v2';
  const m = /^v2 r(\d+)$/.exec(v);
  quant.rows = m ? (Number(m[1]) as 4 | 8 | 16) : 'auto';
}
/** v1, v2 as chosen, and v2 at each rows a block that has a kernel for T tokens (other than the chosen). */
function variantsOf(format: Format, N: number, T: number): string[] {
  if (format === 'bf16') return ['split-K'];
  const kernelFormat = KERNEL_FORMAT[format];
  const chosen = quantGemvV2(kernelFormat, N, T).rows;
  const forced = [4, 8, 16].filter((r) => r !== chosen && (() => { try { quantGemvV2(kernelFormat, N, T, r as 4 | 8 | 16); return true; } catch { return false; } })());
  return ['v1', 'v2', ...forced.map((r) => `v2 r${r}`)];
}

const timer = new KernelTimer(backend);
const deviceMs = (setup: () => void, fn: (i: number) => void, reps?: number) => timer.ms(setup, fn, reps);

type Format = 'bf16' | QuantizationMethod;
/** The kernel format of each --quantization method (quantized-weights.ts). */
const KERNEL_FORMAT: Record<QuantizationMethod, QuantGemvFormat> = { fp8: 'fp8', w8a16: 'int8', w4a16: 'int4', nvfp4: 'nvfp4' };
interface Row {
  shape: [number, number];
  format: Format;
  /** Quantized: 'v1', 'v2' (the default, rows chosen per call) or 'v2 rN' (N rows a block forced); bf16: 'split-K'. */
  variant: string;
  /** The weight's bytes as the backend reports them (the checkpoint's: codes + scales). */
  weightBytes: number;
  tokens: number;
  us: number;
  weightGBs: number;
  ofCopy: number;
}
const rows: Row[] = [];
const shapes: Array<[number, number, string]> = [
  [4096, 4096, 'q, o'],
  [6144, 4096, 'q+k+v fused width'],
  [1024, 4096, 'k, v'],
  [14336, 4096, 'gate, up'],
  [4096, 14336, 'down'],
  [128256, 4096, 'lm_head'],
];
const formats: Format[] = ['bf16', 'fp8', 'w8a16', 'w4a16', 'nvfp4'];
let seed = 1000;
for (const [N, K, role] of shapes) {
  for (const format of formats) {
    if (role === 'lm_head' && format !== 'bf16') continue;
    (globalThis as { gc?: () => void }).gc?.(); // give the last shape's copies back (node --expose-gc)
    await nextTurn();
    const method = format === 'bf16' ? undefined : format;
    const make = (): Weight => backend.randomWeight(`${role}.${format}`, { shape: [N, K], dtype: 'bf16', method, seed: seed++, scale: 1 / Math.sqrt(K) });
    const first = make();
    // Rotate over copies totalling ≥ 256 MB so the 50 MB L2 cannot hold them: stream from HBM, as decode does.
    const copies = Math.max(1, Math.ceil(256e6 / first.bytes));
    const ws = [first, ...Array.from({ length: copies - 1 }, make)];
    for (const T of tokenCounts) {
      for (const variant of variantsOf(format, N, T)) {
        setVariant(variant);
        const xHost = Float32Array.from({ length: T * K }, (_, i) => Math.sin(i));
        let x = backend.fromHost(xHost, [T, K]);
        const ms = await deviceMs(() => (x = backend.fromHost(xHost, [T, K])), (i) => backend.linear(x, ws[i % copies]), 30);
        const weightGBs = first.bytes / (ms / 1000) / 1e9;
        rows.push({ shape: [N, K], format, variant, weightBytes: first.bytes, tokens: T, us: ms * 1000, weightGBs, ofCopy: weightGBs / copyGBs });
      }
      setVariant('v2');
    }
  }
}

// ---- fused decode linears: q/k/v in one launch (linearMany), gate/up·SiLU in one (linearSiluMul) ----

interface FusedRow {
  op: 'q/k/v' | 'gate/up·SiLU';
  format: QuantizationMethod;
  /** 'separate' (fusedLinears off: a linear per matrix, + silu_mul), 'fused' (rows chosen per call), 'fused rN' (forced). */
  variant: string;
  tokens: number;
  /** Kernel launches per call. */
  launches: number;
  weightBytes: number;
  us: number;
  weightGBs: number;
  ofCopy: number;
}
const fusedRows: FusedRow[] = [];
const H = 4096;
const FF = 14336;
const KV = 1024;
for (const format of formats) {
  if (format === 'bf16') continue; // dense fused GEMVs: bench/cuda-gemv.ts
  for (const [op, shapes] of [['q/k/v', [[H, H], [KV, H], [KV, H]]], ['gate/up·SiLU', [[FF, H], [FF, H]]]] as const) {
    (globalThis as { gc?: () => void }).gc?.();
    await nextTurn();
    const make = (): Weight[] => shapes.map(([N, K]) => backend.randomWeight(`${op}.${format}`, { shape: [N, K], dtype: 'bf16', method: format, seed: seed++, scale: 1 / Math.sqrt(K) }));
    const first = make();
    const bytes = first.reduce((a, w) => a + w.bytes, 0);
    const copies = Math.max(1, Math.ceil(256e6 / bytes));
    const sets = [first, ...Array.from({ length: copies - 1 }, make)];
    const call = (x: Tensor, ws: Weight[]) => (op === 'q/k/v' ? backend.linearMany(x, ws) : backend.linearSiluMul(x, ws[0], ws[1]));
    const totalN = shapes.reduce((a, [N]) => a + N, 0);
    for (const T of tokenCounts) {
      const chosen = quantGemvV2(KERNEL_FORMAT[format], op === 'q/k/v' ? totalN : FF, T, 'auto', 'fused').rows;
      const forced = [4, 8].filter((r) => r !== chosen && (() => { try { quantGemvV2(KERNEL_FORMAT[format], FF, T, r as 4 | 8, 'fused'); return true; } catch { return false; } })());
      for (const variant of ['separate', 'fused', ...forced.map((r) => `fused r${r}`)]) {
        backend.fusedLinears = variant !== 'separate';
        const m = /^fused r(\d+)$/.exec(variant);
        quant.rows = m ? (Number(m[1]) as 4 | 8) : 'auto';
        const xHost = Float32Array.from({ length: T * H }, (_, i) => Math.sin(i));
        let x = backend.fromHost(xHost, [T, H]);
        const before = backend.driver.launches;
        call(x, first);
        const launches = backend.driver.launches - before;
        const ms = await deviceMs(() => (x = backend.fromHost(xHost, [T, H])), (i) => call(x, sets[i % copies]), 30);
        const weightGBs = bytes / (ms / 1000) / 1e9;
        fusedRows.push({ op, format, variant, tokens: T, launches, weightBytes: bytes, us: ms * 1000, weightGBs, ofCopy: weightGBs / copyGBs });
      }
      backend.fusedLinears = true;
      quant.rows = 'auto';
    }
  }
}

console.log('');
console.log('| W [N, K] | format | kernel | MB | tokens | µs | weight GB/s | of copy BW |');
console.log('|---|---|---|---:|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(`| ${r.shape.join('×')} | ${r.format} | ${r.variant} | ${(r.weightBytes / 1e6).toFixed(1)} | ${r.tokens} | ${r.us.toFixed(1)} | ${r.weightGBs.toFixed(0)} | ${(100 * r.ofCopy).toFixed(0)}% |`);
}

console.log('');
console.log('| fused op | format | kernel | launches | MB | tokens | µs | weight GB/s | of copy BW |');
console.log('|---|---|---|---:|---:|---:|---:|---:|---:|');
for (const r of fusedRows) {
  console.log(`| ${r.op} | ${r.format} | ${r.variant} | ${r.launches} | ${(r.weightBytes / 1e6).toFixed(1)} | ${r.tokens} | ${r.us.toFixed(1)} | ${r.weightGBs.toFixed(0)} | ${(100 * r.ofCopy).toFixed(0)}% |`);
}

const machine = machineInfo();
const file = values.output ?? gpuResultFile('cuda-quant-gemv', gpu.name, machine.date);
mkdirSync(join(file, '..'), { recursive: true });
writeFileSync(
  file,
  JSON.stringify(
    {
      bench: 'cuda-quant-gemv',
      gpu: { ...gpu, copyGBs },
      kernels: { compileMs, modules: backend.kernels.stats, nvrtc: { path: backend.nvrtc.path, version: backend.nvrtc.version } },
      notes:
        'variant: the quantized GEMV kernel (v1; v2 with rows per block chosen per call; v2 rN forced to N rows); ' +
        'us: device time per linear call (events, median of 3 trials of 30 calls queued behind a 2 GiB device copy so host launch time is hidden, rotating over weight copies totalling >= 256 MB); ' +
        'fusedRows: q/k/v (4096+1024+1024 rows) through linearMany and gate/up (2 x 14336) through linearSiluMul, K = 4096, separate ops (fusedLinears off) vs the fused quantized kernels, launches per call; ' +
        'weightGBs: the weight bytes the backend reports (codes + scales, as the checkpoint) over that time; ofCopy: that / the device-to-device copy bandwidth (read + write)',
      machine,
      rows,
      fusedRows,
    },
    null,
    2,
  ) + '\n',
);
console.log(`\nsaved ${file}`);
