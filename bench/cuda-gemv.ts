// The decode GEMVs on CUDA at Llama-3.1-8B shapes: the split-K linear for q, k, v, gate and up one at
// a time against the fused q/k/v and gate/up·SiLU launches (every variant of kernels/linear-fused.cuh),
// each variant on single matrices too, then whole decode steps of an 8B-shaped model with random
// bf16 weights with and without the fused ops. Device time from events; weights rotate over copies
// totalling ≥ 256 MB so the 50 MB L2 cannot hold them. Prints markdown tables and saves JSON with the
// GPU. Measures; never passes or fails.
//
//   node dist/bench/cuda-gemv.js [--tokens 1,8] [--batch 1,8] [--decode-steps 24] [--no-model] [--output FILE]

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type { Tensor, Weight } from '../src/backend/backend.js';
import { FUSED_GEMV_VARIANTS, fusedLinearMany, fusedLinearSiluMul, type FusedGemvVariant } from '../src/backend/cuda/fused-linear.js';
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
    tokens: { type: 'string', default: '1,8' },
    batch: { type: 'string', default: '1,8' },
    'decode-steps': { type: 'string', default: '24' },
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
const { backend, gpu, copyGBs } = openBenchGpu({ modules: ['linear-fused-variants.cu'] });

// ---- device time of a call (kernel-timer.ts) ----

const timer = new KernelTimer(backend);
const deviceUs = (setup: () => void, fn: (i: number) => void, reps?: number) => timer.us(setup, fn, reps);

/** `count` sets of random bf16 matrices of these shapes, enough sets that they total ≥ 256 MB. */
function weightSets(shapes: Array<[number, number]>, seed: number): Weight[][] {
  const bytes = shapes.reduce((a, [n, k]) => a + n * k * 2, 0);
  const sets = Math.max(1, Math.ceil(256e6 / bytes));
  return Array.from({ length: sets }, (_, s) => shapes.map(([n, k], i) => backend.randomBf16([n, k], seed + 100 * s + i, 1 / Math.sqrt(k))));
}

// ---- microbenchmarks at Llama-3.1-8B shapes ----

const H = 4096;
const FF = 14336;
const KV = 1024;
const VOCAB = 128256;

interface GemvRow {
  op: string;
  shape: string;
  tokens: number;
  kernel: string;
  launches: number;
  us: number;
  weightBytes: number;
  ofCopyBw: number;
}
const gemvRows: GemvRow[] = [];
const record = (op: string, shape: string, tokens: number, kernel: string, launches: number, us: number, weightBytes: number) => {
  gemvRows.push({ op, shape, tokens, kernel, launches, us, weightBytes, ofCopyBw: weightBytes / (us / 1e6) / 1e9 / copyGBs });
};

const qkvSets = weightSets([[H, H], [KV, H], [KV, H]], 1000);
const mlpSets = weightSets([[FF, H], [FF, H]], 2000);
const singles: Array<{ op: string; sets: Weight[][] }> = [
  { op: 'q, o', sets: weightSets([[H, H]], 3000) },
  { op: 'k, v', sets: weightSets([[KV, H]], 4000) },
  { op: 'gate, up', sets: weightSets([[FF, H]], 5000) },
  { op: 'down', sets: weightSets([[H, FF]], 6000) },
  { op: 'lm_head', sets: weightSets([[VOCAB, H]], 7000) },
];
backend.synchronize();

for (const T of tokenCounts) {
  const input = (K: number) => {
    const host = Float32Array.from({ length: T * K }, (_, i) => Math.sin(i));
    // Sent again before each trial: activations live for one synchronous run.
    let x: Tensor | undefined;
    return { setup: () => void (x = backend.fromHost(host, [T, K])), x: () => x! };
  };
  const xh = input(H);
  const qkvBytes = (H + 2 * KV) * H * 2;
  const mlpBytes = 2 * FF * H * 2;
  const qkv = (i: number) => qkvSets[i % qkvSets.length];
  const mlp = (i: number) => mlpSets[i % mlpSets.length];

  // q, k and v one linear at a time (split-K), then every fused variant in one launch.
  backend.fusedLinears = false;
  for (const [j, name, N] of [[0, 'q', H], [1, 'k', KV], [2, 'v', KV]] as const) {
    record(name, `${N}×${H}`, T, 'split-k', 1, await deviceUs(xh.setup, (i) => backend.linear(xh.x(), qkv(i)[j])), N * H * 2);
  }
  record('q+k+v', `${H + 2 * KV}×${H}`, T, 'split-k ×3', 3, await deviceUs(xh.setup, (i) => qkv(i).map((w) => backend.linear(xh.x(), w))), qkvBytes);
  backend.fusedLinears = true;
  for (const variant of FUSED_GEMV_VARIANTS) {
    record('q+k+v', `${H + 2 * KV}×${H}`, T, `fused ${variant}`, 1, await deviceUs(xh.setup, (i) => fusedLinearMany(backend, xh.x(), qkv(i), undefined, variant)), qkvBytes);
  }

  // gate and up one at a time, then silu_mul; then gate/up·SiLU fused.
  backend.fusedLinears = false;
  for (const [j, name] of [[0, 'gate'], [1, 'up']] as const) {
    record(name, `${FF}×${H}`, T, 'split-k', 1, await deviceUs(xh.setup, (i) => backend.linear(xh.x(), mlp(i)[j])), FF * H * 2);
  }
  record('silu(gate)·up', `2×${FF}×${H}`, T, 'split-k ×2 + silu_mul', 3, await deviceUs(xh.setup, (i) => backend.siluMul(backend.linear(xh.x(), mlp(i)[0]), backend.linear(xh.x(), mlp(i)[1]))), mlpBytes);
  backend.fusedLinears = true;
  for (const variant of FUSED_GEMV_VARIANTS) {
    record('silu(gate)·up', `2×${FF}×${H}`, T, `fused ${variant}`, 1, await deviceUs(xh.setup, (i) => fusedLinearSiluMul(backend, xh.x(), mlp(i)[0], mlp(i)[1], undefined, undefined, variant)), mlpBytes);
  }

  // Single matrices: the split-K linear against each variant's kernel on one matrix.
  for (const { op, sets } of singles) {
    const [N, K] = sets[0][0].shape;
    const x = K === H ? xh : input(K);
    const w = (i: number) => sets[i % sets.length][0];
    const reps = N * K > 1e8 ? 5 : 20;
    record(op, `${N}×${K}`, T, 'split-k', 1, await deviceUs(x.setup, (i) => backend.linear(x.x(), w(i)), reps), N * K * 2);
    for (const variant of FUSED_GEMV_VARIANTS) {
      record(op, `${N}×${K}`, T, `fused ${variant}`, 1, await deviceUs(x.setup, (i) => fusedLinearMany(backend, x.x(), [w(i)], undefined, variant), reps), N * K * 2);
    }
  }
}

console.log('');
console.log('| op | W | tokens | kernel | launches | device µs | % of copy BW |');
console.log('|---|---|---:|---|---:|---:|---:|');
for (const r of gemvRows) console.log(`| ${r.op} | ${r.shape} | ${r.tokens} | ${r.kernel} | ${r.launches} | ${r.us.toFixed(1)} | ${(100 * r.ofCopyBw).toFixed(0)}% |`);

// ---- decode steps of an 8B-shaped model, with and without the fused ops ----

interface StepRow {
  batch: number;
  linears: string;
  launchesPerStep: number;
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
  // Free the microbenchmarks' weights first where node runs with --expose-gc (else the GC decides).
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
    const configs: Array<[string, boolean, FusedGemvVariant | 'auto']> = [
      ['separate (split-k)', false, 'auto'],
      ['fused auto (the default)', true, 'auto'],
      ...FUSED_GEMV_VARIANTS.map((v): [string, boolean, FusedGemvVariant] => [`fused ${v}`, true, v]),
    ];
    for (const [label, fused, variant] of configs) {
      backend.fusedLinears = fused;
      backend.fusedGemv = variant;
      const runner = new DecodeRunner(model, batch, promptLen + decodeSteps + 2);
      const { stepMs, launchesPerStep: launches } = await timeDecodeSteps(runner, prompts, decodeSteps, () => backend.driver.launches);
      stepRows.push({ batch, linears: label, launchesPerStep: launches ?? 0, stepMs, tokensPerSecond: (batch * 1000) / stepMs, weightBytesPerStep: wBytes, rooflineRatio: wBytes / (copyGBs * 1e9) / (stepMs / 1000) });
    }
    backend.fusedLinears = true;
    backend.fusedGemv = 'auto';
  }

  console.log('');
  console.log(`Llama-3.1-8B shapes, random bf16 (${(wBytes / 1e9).toFixed(2)} GB of weights a step), prompt ${promptLen}, median of ${decodeSteps} decode steps:`);
  console.log('');
  console.log('| batch | linears | launches/step | step ms | tok/s | roofline ratio |');
  console.log('|---:|---|---:|---:|---:|---:|');
  for (const r of stepRows) console.log(`| ${r.batch} | ${r.linears} | ${r.launchesPerStep} | ${r.stepMs.toFixed(3)} | ${r.tokensPerSecond.toFixed(1)} | ${(100 * r.rooflineRatio).toFixed(1)}% |`);
}

timer.free();

const machine = machineInfo();
const file = values.output ?? gpuResultFile('cuda-gemv', gpu.name, machine.date);
mkdirSync(join(file, '..'), { recursive: true });
writeFileSync(
  file,
  JSON.stringify(
    {
      bench: 'cuda-gemv',
      gpu: { ...gpu, copyGBs },
      kernels: backend.kernels.stats,
      notes:
        'device µs per call from events around back-to-back calls queued behind a 2 GiB device copy (no host gaps); weights bf16, rotating over copies of ≥ 256 MB; ' +
        'ofCopyBw = weight bytes / time / device-to-device copy bandwidth; decode rooflineRatio = (weight bytes per step / copy bandwidth) / median step time; activations float32',
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
