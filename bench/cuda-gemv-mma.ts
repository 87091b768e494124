// The tensor-core decode GEMV (kernels/gemv-mma.cu, CudaBackend.decodeGemv = 'mma') against the FMA
// split-K GEMV at Llama-3.1-8B shapes and 1, 2, 4, 8 tokens, then whole decode steps of an 8B-shaped
// model (random bf16 weights) at batch 1 and 8 with either. Device time from events around calls
// queued behind a 2 GiB device copy (no host gaps); weights rotate over copies totalling ≥ 256 MB so
// the 50 MB L2 cannot hold them. Prints markdown tables and saves JSON with the GPU. Measures; never
// passes or fails (the relative difference mma vs FMA is printed as a sanity check, ~2⁻⁹ expected).
//
//   node --expose-gc dist/bench/cuda-gemv-mma.js [--tokens 1,2,4,8] [--batch 1,8] [--decode-steps 16] [--no-model] [--output FILE]

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type { Tensor, Weight } from '../src/backend/backend.js';
import { parseModelConfig } from '../src/model/config.js';
import { LlamaModel } from '../src/model/llama.js';
import { loadDummyWeights } from '../src/model/load/dummy.js';
import { findPreset } from '../src/plan/presets.js';
import { DecodeRunner, timeDecodeSteps, weightBytesPerStep } from './decode-steps.js';
import { randomTokenIds } from './engine-timing.js';
import { gpuResultFile, machineInfo } from './machine.js';
import { openBenchGpu } from './bench-gpu.js';
import { KernelTimer } from './kernel-timer.js';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '1,2,4,8' },
    batch: { type: 'string', default: '1,8' },
    'decode-steps': { type: 'string', default: '16' },
    'prompt-len': { type: 'string', default: '16' },
    'no-model': { type: 'boolean', default: false },
    output: { type: 'string' },
  },
});
const tokenCounts = values.tokens!.split(',').map(Number);
const batches = values.batch!.split(',').map(Number);
const decodeSteps = Number(values['decode-steps']);
const promptLen = Number(values['prompt-len']);

const started = performance.now();
const { backend, gpu, copyGBs } = openBenchGpu({ modules: ['gemv-mma.cu'] });

const timer = new KernelTimer(backend);
const deviceUs = (setup: () => void, fn: (i: number) => void, reps?: number) => timer.us(setup, fn, reps);

/** ‖a − b‖ / ‖b‖. */
function relDiff(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

// ---- single matrices at Llama-3.1-8B shapes ----

const SHAPES: Array<[string, number, number]> = [
  ['q, o', 4096, 4096],
  ['k, v', 1024, 4096],
  ['q+k+v', 6144, 4096],
  ['gate, up', 14336, 4096],
  ['down', 4096, 14336],
  ['lm_head', 128256, 4096],
];

interface GemvRow {
  op: string;
  shape: string;
  tokens: number;
  kernel: 'fma' | 'mma';
  us: number;
  weightBytes: number;
  ofCopyBw: number;
  relDiffVsFma?: number;
}
const gemvRows: GemvRow[] = [];

for (const [op, N, K] of SHAPES) {
  const bytes = N * K * 2;
  const copies = Math.max(1, Math.ceil(256e6 / bytes));
  const ws: Weight[] = Array.from({ length: copies }, (_, s) => backend.randomBf16([N, K], 1000 + 17 * s + N, 1 / Math.sqrt(K)));
  const w = (i: number) => ws[i % ws.length];
  const reps = bytes > 1e8 ? 5 : 20;
  for (const T of tokenCounts) {
    const host = Float32Array.from({ length: T * K }, (_, i) => Math.sin(i));
    // Sent again before each trial: activations live for one synchronous run.
    let x: Tensor | undefined;
    const setup = () => void (x = backend.fromHost(host, [T, K]));
    const outputs: Partial<Record<'fma' | 'mma', Float32Array>> = {};
    for (const kernel of ['fma', 'mma'] as const) {
      backend.decodeGemv = kernel;
      await nextTurn();
      outputs[kernel] = backend.toHost(backend.linear(backend.fromHost(host, [T, K]), ws[0]));
      const us = await deviceUs(setup, (i) => backend.linear(x!, w(i)), reps);
      gemvRows.push({
        op, shape: `${N}×${K}`, tokens: T, kernel, us, weightBytes: bytes, ofCopyBw: bytes / (us / 1e6) / 1e9 / copyGBs,
        relDiffVsFma: kernel === 'mma' ? relDiff(outputs.mma!, outputs.fma!) : undefined,
      });
    }
    backend.decodeGemv = 'fma';
  }
  ws.length = 0;
  (globalThis as { gc?: () => void }).gc?.();
}

console.log('');
console.log('| op | W | tokens | FMA µs | FMA % copy BW | mma µs | mma % copy BW | speed-up | mma vs FMA rel. diff |');
console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|');
for (let i = 0; i < gemvRows.length; i += 2) {
  const f = gemvRows[i];
  const m = gemvRows[i + 1];
  console.log(
    `| ${f.op} | ${f.shape} | ${f.tokens} | ${f.us.toFixed(1)} | ${(100 * f.ofCopyBw).toFixed(0)}% | ${m.us.toFixed(1)} | ${(100 * m.ofCopyBw).toFixed(0)}% | ${(f.us / m.us).toFixed(2)}× | ${m.relDiffVsFma!.toExponential(1)} |`,
  );
}

// ---- decode steps of an 8B-shaped model, FMA vs mma GEMVs ----

interface StepRow {
  batch: number;
  decodeGemv: 'fma' | 'mma' | 'auto';
  stepMs: number;
  tokensPerSecond: number;
  weightBytesPerStep: number;
  rooflineRatio: number;
}
const stepRows: StepRow[] = [];

let modelInfo: { config: Record<string, unknown>; weightBytesPerStep: number } | null = null;
if (!values['no-model']) {
  const raw = findPreset('llama-3.1-8b')!;
  const config = parseModelConfig(raw, 'llama-3.1-8b');
  (globalThis as { gc?: () => void }).gc?.();
  await nextTurn();
  const weights = loadDummyWeights(config, backend, { seed: 1 });
  const model = new LlamaModel(config, weights, backend);
  backend.synchronize();
  const wBytes = weightBytesPerStep(weights);
  modelInfo = { config: raw, weightBytesPerStep: wBytes };
  const randomIds = randomTokenIds();

  for (const batch of batches) {
    const prompts = Array.from({ length: batch }, () => randomIds(promptLen, config.vocabSize));
    for (const kind of ['fma', 'mma', 'auto'] as const) {
      backend.decodeGemv = kind;
      const runner = new DecodeRunner(model, batch, promptLen + decodeSteps + 2);
      const { stepMs } = await timeDecodeSteps(runner, prompts, decodeSteps);
      stepRows.push({ batch, decodeGemv: kind, stepMs, tokensPerSecond: (batch * 1000) / stepMs, weightBytesPerStep: wBytes, rooflineRatio: wBytes / (copyGBs * 1e9) / (stepMs / 1000) });
    }
    backend.decodeGemv = 'auto';
  }

  console.log('');
  console.log(`Llama-3.1-8B shapes, random bf16 (${(wBytes / 1e9).toFixed(2)} GB of weights a step), prompt ${promptLen}, median of ${decodeSteps} decode steps:`);
  console.log('');
  console.log('| batch | decodeGemv | step ms | tok/s | roofline ratio |');
  console.log('|---:|---|---:|---:|---:|');
  for (const r of stepRows) console.log(`| ${r.batch} | ${r.decodeGemv} | ${r.stepMs.toFixed(3)} | ${r.tokensPerSecond.toFixed(1)} | ${(100 * r.rooflineRatio).toFixed(1)}% |`);
}

timer.free();

const machine = machineInfo();
const file = values.output ?? gpuResultFile('cuda-gemv-mma', gpu.name, machine.date);
mkdirSync(join(file, '..'), { recursive: true });
writeFileSync(
  file,
  JSON.stringify(
    {
      bench: 'cuda-gemv-mma',
      gpu: { ...gpu, copyGBs },
      kernels: backend.kernels.stats,
      notes:
        'device µs per call from events around back-to-back linear calls queued behind a 2 GiB device copy; weights bf16, rotating over copies of ≥ 256 MB; ' +
        "fma = the split-K GEMV (decodeGemv 'fma'), mma = kernels/gemv-mma.cu (decodeGemv 'mma'); ofCopyBw = weight bytes / time / device-to-device copy bandwidth; " +
        'relDiffVsFma = ‖y_mma − y_fma‖ / ‖y_fma‖ on the first weight copy; decode steps: fused ops on (default), rooflineRatio = (weight bytes per step / copy bandwidth) / median step time',
      gemv: gemvRows,
      model: modelInfo,
      promptLen,
      decodeSteps,
      steps: stepRows,
      seconds: (performance.now() - started) / 1000,
      machine,
    },
    null,
    2,
  ) + '\n',
);
console.log(`\nsaved ${file} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
