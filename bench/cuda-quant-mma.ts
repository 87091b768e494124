// The int4 (w4a16) decode GEMV on the FMA kernels against the tensor-core ones
// (QuantizedWeights.decodeGemv = 'mma', kernels/gemv-mma-int4.cu: the v1 kernel at its plan's rows,
// and the pipelined one — int4MmaOptions.variant — at 1 and 2 m-tiles a block) at Llama-3.1-8B's
// linear shapes and 1, 2, 4 and 8 tokens: device µs per call (CUDA events, queued behind a 2 GiB
// device copy so the host's launch time is hidden, rotating over weight copies totalling ≥ 256 MB so
// they stream from HBM), and the int4 bytes (codes + scales) over that time as a share of the
// device-to-device copy bandwidth. Then whole decode steps of an 8B-shaped w4a16 model (random
// weights) at batch 1 and 8 on FMA, mma v1 and mma pipelined, with the step's weight bytes over the
// step time as a share of the copy bandwidth (the roofline ratio of bench/cuda-decode.ts). Prints
// tables and saves JSON. Measures; never passes or fails. Separate from bench/cuda-quant-gemv.ts so
// that it stays around a minute.
//
//   node dist/bench/cuda-quant-mma.js [--tokens 1,2,4,8] [--batch 1,8] [--decode-steps 16] [--output FILE]

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type { Weight } from '../src/backend/backend.js';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { int4MmaKernel, int4MmaOptions, type Int4MmaVariant, type QuantDecodeGemv } from '../src/backend/cuda/gemv-mma-int4.js';
import { parseModelConfig } from '../src/model/config.js';
import { packageRoot } from '../src/model/default-model.js';
import { LlamaModel } from '../src/model/llama.js';
import { loadDummyWeights } from '../src/model/load/dummy.js';
import { findPreset } from '../src/plan/presets.js';
import { DecodeRunner, timeDecodeSteps, weightBytesPerStep } from './decode-steps.js';
import { randomTokenIds } from './engine-timing.js';
import { machineInfo } from './machine.js';
import { KernelTimer } from './kernel-timer.js';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '1,2,4,8' },
    batch: { type: 'string', default: '1,8' },
    'decode-steps': { type: 'string', default: '16' },
    output: { type: 'string' },
  },
});
const tokenCounts = values.tokens!.split(',').map(Number);
const batches = values.batch!.split(',').map(Number);
const decodeSteps = Number(values['decode-steps']);

const backend = new CudaBackend();
const t0 = performance.now();
for (const f of ['quant-linear.cu', 'gemv-mma-int4.cu']) backend.kernels.module(f);
const compileMs = performance.now() - t0;
const copyGBs = backend.measureCopyBandwidth();
const gpu = backend.device;
console.log(`GPU ${gpu.name} (sm_${gpu.computeCapability}, ${gpu.multiprocessors} SMs), device-to-device copy ${copyGBs.toFixed(0)} GB/s (read + write)`);
console.log(`kernels ready in ${compileMs.toFixed(0)} ms: ${backend.kernels.stats.map((s) => `${s.file} ${s.fromCache ? 'cached' : 'compiled'}`).join(', ')}`);
const quant = backend.quantized;

const timer = new KernelTimer(backend);
const deviceMs = (setup: () => void, fn: (i: number) => void, reps?: number) => timer.ms(setup, fn, reps);

/** A decode GEMV to time: the FMA kernels, or an int4 mma kernel variant at its rows ('auto': the default for it). */
interface Kernel {
  label: string;
  decodeGemv: QuantDecodeGemv;
  variant: Int4MmaVariant;
  rows: 'auto' | 1 | 2;
}
const KERNELS: Kernel[] = [
  { label: 'fma', decodeGemv: 'fma', variant: 'v1', rows: 'auto' },
  { label: 'mma v1', decodeGemv: 'mma', variant: 'v1', rows: 'auto' },
  { label: 'mma pipelined', decodeGemv: 'mma', variant: 'pipelined', rows: 'auto' },
  { label: 'mma pipelined r2', decodeGemv: 'mma', variant: 'pipelined', rows: 2 },
];
/** Puts a kernel's options in place for the backend's next calls. */
const use = (k: Kernel) => {
  quant.decodeGemv = k.decodeGemv;
  int4MmaOptions.variant = k.variant;
  int4MmaOptions.rows = k.rows;
};

interface Row {
  shape: [number, number];
  role: string;
  kernel: string;
  /** mma: the kernel launched and the blocks splitting K (int4MmaKernel). */
  plan?: string;
  weightBytes: number;
  tokens: number;
  us: number;
  ofCopy: number;
}
const rows: Row[] = [];
const shapes: Array<[number, number, string]> = [
  [4096, 4096, 'q, o'],
  [1024, 4096, 'k, v'],
  [14336, 4096, 'gate, up'],
  [4096, 14336, 'down'],
];
let seed = 5000;
for (const [N, K, role] of shapes) {
  (globalThis as { gc?: () => void }).gc?.();
  await nextTurn();
  const make = (): Weight => backend.randomWeight(`${role}.w4a16`, { shape: [N, K], dtype: 'bf16', method: 'w4a16', seed: seed++, scale: 1 / Math.sqrt(K) });
  const first = make();
  const copies = Math.max(1, Math.ceil(256e6 / first.bytes));
  const ws = [first, ...Array.from({ length: copies - 1 }, make)];
  for (const T of tokenCounts) {
    for (const k of KERNELS) {
      use(k);
      const xHost = Float32Array.from({ length: T * K }, (_, i) => Math.sin(i));
      let x = backend.fromHost(xHost, [T, K]);
      const ms = await deviceMs(() => (x = backend.fromHost(xHost, [T, K])), (i) => backend.linear(x, ws[i % copies]), 30);
      const p = int4MmaKernel(N, K, gpu.multiprocessors);
      rows.push({
        shape: [N, K], role, kernel: k.label, plan: k.decodeGemv === 'mma' ? `${p.kernel} × ${p.splits} splits` : undefined, weightBytes: first.bytes, tokens: T,
        us: ms * 1000, ofCopy: first.bytes / (ms / 1000) / 1e9 / copyGBs,
      });
    }
    use(KERNELS[0]);
  }
}

console.log('');
console.log('| W [N, K] | role | kernel | MB | tokens | µs | of copy BW | vs mma v1 |');
console.log('|---|---|---|---:|---:|---:|---:|---:|');
for (const r of rows) {
  const v1 = rows.find((o) => o.kernel === 'mma v1' && o.tokens === r.tokens && o.shape[0] === r.shape[0] && o.shape[1] === r.shape[1])!;
  console.log(
    `| ${r.shape.join('×')} | ${r.role} | ${r.kernel}${r.plan ? ` (${r.plan})` : ''} | ${(r.weightBytes / 1e6).toFixed(1)} | ${r.tokens} | ${r.us.toFixed(1)} | ` +
      `${(100 * r.ofCopy).toFixed(0)}% | ${(v1.us / r.us).toFixed(2)}× |`,
  );
}

// ---- decode steps of an 8B-shaped w4a16 model on FMA, mma v1 and mma pipelined ----

interface StepRow {
  batch: number;
  kernel: string;
  launchesPerStep: number;
  stepMs: number;
  tokensPerSecond: number;
  /** The step's weight bytes over its time, as a share of the copy bandwidth. */
  rooflineRatio: number;
}
const stepRows: StepRow[] = [];
let stepBytes = 0;
{
  const raw = findPreset('llama-3.1-8b')!;
  const config = parseModelConfig(raw, 'llama-3.1-8b');
  (globalThis as { gc?: () => void }).gc?.();
  await nextTurn();
  const weights = loadDummyWeights(config, backend, { seed: 1, quantization: 'w4a16' });
  const model = new LlamaModel(config, weights, backend);
  stepBytes = weightBytesPerStep(weights);
  backend.synchronize();
  const randomIds = randomTokenIds();
  const promptLen = 32;
  for (const batch of batches) {
    const prompts = Array.from({ length: batch }, () => randomIds(promptLen, config.vocabSize));
    for (const k of KERNELS.filter((k) => k.rows === 'auto')) {
      use(k);
      const runner = new DecodeRunner(model, batch, promptLen + decodeSteps + 2);
      const { stepMs, launchesPerStep } = await timeDecodeSteps(runner, prompts, decodeSteps, () => backend.driver.launches);
      stepRows.push({
        batch, kernel: k.label, launchesPerStep: launchesPerStep ?? 0, stepMs, tokensPerSecond: (batch * 1000) / stepMs,
        rooflineRatio: stepBytes / (copyGBs * 1e9) / (stepMs / 1000),
      });
    }
    use(KERNELS[0]);
  }
}
console.log('');
console.log(`Llama-3.1-8B shapes, random w4a16 weights (${(stepBytes / 1e9).toFixed(2)} GB a step), prompt 32, median of ${decodeSteps} decode steps` +
  `${backend.graphs.enabled ? ' (CUDA graphs on)' : ''}:`);
console.log('| batch | int4 GEMV | launches/step | step ms | tok/s | of the roofline |');
console.log('|---:|---|---:|---:|---:|---:|');
for (const r of stepRows) {
  console.log(`| ${r.batch} | ${r.kernel} | ${r.launchesPerStep} | ${r.stepMs.toFixed(3)} | ${r.tokensPerSecond.toFixed(1)} | ${(100 * r.rooflineRatio).toFixed(1)}% |`);
}

const machine = machineInfo();
const gpuSlug = gpu.name.replace(/^NVIDIA\s+/, '').replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '').toLowerCase();
const file = values.output ?? join(packageRoot(), 'bench', 'results', `cuda-quant-mma-${gpuSlug}-${machine.date.slice(0, 10)}.json`);
mkdirSync(join(file, '..'), { recursive: true });
writeFileSync(
  file,
  JSON.stringify(
    {
      bench: 'cuda-quant-mma',
      gpu: { ...gpu, copyGBs },
      kernels: { compileMs, modules: backend.kernels.stats },
      notes:
        'rows: int4 (w4a16, symmetric, group 128) linears on the FMA GEMV (quant-linear.cu v2) vs the tensor-core ones (gemv-mma-int4.cu: ' +
        'v1 at its plan\'s rows, pipelined at 1 (its default) and 2 m-tiles a block; all mma kernels give the same bits); ' +
        'us: device time per call (events, median of 3 trials of 30 calls behind a 2 GiB device copy, rotating over weight copies totalling >= 256 MB); ' +
        'ofCopy: int4 bytes (codes + scales) per second / the device-to-device copy bandwidth (read + write); ' +
        'stepRows: host wall time of a decode step of an 8B-shaped w4a16 model with random weights on FMA, mma v1 and mma pipelined; ' +
        'rooflineRatio: the step\'s weight bytes (all but the embedding) / the copy bandwidth / the step time',
      machine,
      rows,
      stepRows,
    },
    null,
    2,
  ) + '\n',
);
console.log(`\nsaved ${file}`);
