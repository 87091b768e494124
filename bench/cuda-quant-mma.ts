// The int4 (w4a16) decode GEMV on the FMA kernels against the tensor-core ones
// (QuantizedWeights.decodeGemv = 'mma', kernels/gemv-mma-int4.cu), classic and streamed ('mma-streamed':
// QuantizedWeights.streamed, which runs the streamed kernels where they apply and the classic ones
// elsewhere; 'mma' turns them off) at Llama-3.1-8B's linear shapes and 1, 2, 4 and 8 tokens: device µs
// per call (CUDA events, queued behind a 2 GiB device copy so the host's launch time is hidden,
// rotating over weight copies totalling ≥ 256 MB so they stream from HBM), and the int4 bytes (codes +
// scales) over that time as a share of the device-to-device copy bandwidth. Then the fused q/k/v
// (linearMany) and gate/up·SiLU (linearSiluMul) the same way, with launches per call, and whole decode
// steps of an 8B-shaped w4a16 model (random weights) at batch 1 and 8 on each kernel. Prints tables
// and saves JSON. Measures; never passes or fails. Separate from bench/cuda-quant-gemv.ts so that it
// stays under a minute.
//
//   node dist/bench/cuda-quant-mma.js [--tokens 1,2,4,8] [--batch 1,8] [--decode-steps 16] [--stream-tokens 1] [--output FILE]

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type { Weight } from '../src/backend/backend.js';
import { INT4_STREAM_MAX_TOKENS, int4MmaPlan } from '../src/backend/cuda/gemv-mma-int4.js';
import { parseModelConfig } from '../src/model/config.js';
import { LlamaModel } from '../src/model/llama.js';
import { loadDummyWeights } from '../src/model/load/dummy.js';
import { findPreset } from '../src/plan/presets.js';
import { DecodeRunner, timeDecodeSteps } from './decode-steps.js';
import { randomTokenIds } from './engine-timing.js';
import { gpuResultFile, machineInfo } from './machine.js';
import { openBenchGpu } from './bench-gpu.js';
import { KernelTimer } from './kernel-timer.js';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '1,2,4,8' },
    batch: { type: 'string', default: '1,8' },
    'decode-steps': { type: 'string', default: '16' },
    /** The most tokens the streamed kernels take in 'mma-streamed' (QuantizedWeights.streamMaxTokens). */
    'stream-tokens': { type: 'string', default: String(INT4_STREAM_MAX_TOKENS) },
    output: { type: 'string' },
  },
});
const tokenCounts = values.tokens!.split(',').map(Number);
const batches = values.batch!.split(',').map(Number);
const decodeSteps = Number(values['decode-steps']);
const streamTokens = Number(values['stream-tokens']);

const { backend, gpu, copyGBs, kernelsMs: compileMs } = openBenchGpu({ warmUp: false, modules: ['quant-linear.cu', 'gemv-mma-int4.cu'] });
const quant = backend.quantized;

const timer = new KernelTimer(backend);
const deviceMs = (setup: () => void, fn: (i: number) => void, reps?: number) => timer.ms(setup, fn, reps);

/** The FMA GEMV, the tensor-core one, and the tensor-core one's streamed kernels (QuantizedWeights.streamed). */
type Kernel = 'fma' | 'mma' | 'mma-streamed';
const KERNELS: readonly Kernel[] = ['fma', 'mma', 'mma-streamed'];
/** Set the backend to run int4 linears on `kernel`. */
const useKernel = (kernel: Kernel) => {
  quant.decodeGemv = kernel === 'fma' ? 'fma' : 'mma';
  quant.streamed = kernel === 'mma-streamed';
  quant.streamMaxTokens = streamTokens;
};

interface Row {
  shape: [number, number];
  role: string;
  kernel: Kernel;
  /** mma: blocks splitting K (int4MmaPlan). */
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
    for (const kernel of KERNELS) {
      useKernel(kernel);
      const xHost = Float32Array.from({ length: T * K }, (_, i) => Math.sin(i));
      let x = backend.fromHost(xHost, [T, K]);
      const ms = await deviceMs(() => (x = backend.fromHost(xHost, [T, K])), (i) => backend.linear(x, ws[i % copies]), 30);
      const p = int4MmaPlan(N, K, gpu.multiprocessors);
      rows.push({
        shape: [N, K], role, kernel, plan: kernel !== 'fma' ? `${p.splits} split${p.splits > 1 ? 's' : ''}` : undefined, weightBytes: first.bytes, tokens: T,
        us: ms * 1000, ofCopy: first.bytes / (ms / 1000) / 1e9 / copyGBs,
      });
    }
    useKernel('fma');
  }
}

// ---- the fused decode linears: q/k/v through linearMany, gate/up·SiLU through linearSiluMul ----

interface FusedRow {
  op: string;
  kernel: Kernel;
  tokens: number;
  launches: number;
  weightBytes: number;
  us: number;
  ofCopy: number;
}
const fusedRows: FusedRow[] = [];
{
  (globalThis as { gc?: () => void }).gc?.();
  await nextTurn();
  const K = 4096;
  const make = (N: number): Weight => backend.randomWeight(`fused.w4a16`, { shape: [N, K], dtype: 'bf16', method: 'w4a16', seed: seed++, scale: 1 / Math.sqrt(K) });
  const sets = [
    { op: 'q/k/v (linearMany)', make: () => [make(4096), make(1024), make(1024)] },
    { op: 'gate/up·SiLU (linearSiluMul)', make: () => [make(14336), make(14336)] },
  ];
  for (const set of sets) {
    const first = set.make();
    const bytes = first.reduce((n, w) => n + w.bytes, 0);
    const copies = Math.max(1, Math.ceil(256e6 / bytes));
    const all = [first, ...Array.from({ length: copies - 1 }, set.make)];
    const run = (x: ReturnType<typeof backend.fromHost>, ws: Weight[]) => (ws.length === 3 ? backend.linearMany(x, ws) : backend.linearSiluMul(x, ws[0], ws[1]));
    for (const T of tokenCounts) {
      for (const kernel of KERNELS) {
        useKernel(kernel);
        const xHost = Float32Array.from({ length: T * K }, (_, i) => Math.cos(i));
        let x = backend.fromHost(xHost, [T, K]);
        const l0 = backend.driver.launches;
        run(x, all[0]);
        const launches = backend.driver.launches - l0;
        const ms = await deviceMs(() => (x = backend.fromHost(xHost, [T, K])), (i) => void run(x, all[i % copies]), 30);
        fusedRows.push({ op: set.op, kernel, tokens: T, launches, weightBytes: bytes, us: ms * 1000, ofCopy: bytes / (ms / 1000) / 1e9 / copyGBs });
      }
      useKernel('fma');
    }
  }
}

console.log('');
console.log('| W [N, K] | role | kernel | MB | tokens | µs | of copy BW |');
console.log('|---|---|---|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(`| ${r.shape.join('×')} | ${r.role} | ${r.kernel}${r.plan ? ` (${r.plan})` : ''} | ${(r.weightBytes / 1e6).toFixed(1)} | ${r.tokens} | ${r.us.toFixed(1)} | ${(100 * r.ofCopy).toFixed(0)}% |`);
}

console.log('');
console.log('Fused decode linears (K = 4096):');
console.log('| op | kernel | launches | MB | tokens | µs | of copy BW |');
console.log('|---|---|---:|---:|---:|---:|---:|');
for (const r of fusedRows) {
  console.log(`| ${r.op} | ${r.kernel} | ${r.launches} | ${(r.weightBytes / 1e6).toFixed(1)} | ${r.tokens} | ${r.us.toFixed(1)} | ${(100 * r.ofCopy).toFixed(0)}% |`);
}

// ---- decode steps of an 8B-shaped w4a16 model, the option off and on ----

interface StepRow {
  batch: number;
  decodeGemv: Kernel;
  launchesPerStep: number;
  stepMs: number;
  tokensPerSecond: number;
}
const stepRows: StepRow[] = [];
{
  const raw = findPreset('llama-3.1-8b')!;
  const config = parseModelConfig(raw, 'llama-3.1-8b');
  (globalThis as { gc?: () => void }).gc?.();
  await nextTurn();
  const weights = loadDummyWeights(config, backend, { seed: 1, quantization: 'w4a16' });
  const model = new LlamaModel(config, weights, backend);
  backend.synchronize();
  const randomIds = randomTokenIds();
  const promptLen = 32;
  for (const batch of batches) {
    const prompts = Array.from({ length: batch }, () => randomIds(promptLen, config.vocabSize));
    for (const kind of KERNELS) {
      useKernel(kind);
      const runner = new DecodeRunner(model, batch, promptLen + decodeSteps + 2);
      const { stepMs, launchesPerStep } = await timeDecodeSteps(runner, prompts, decodeSteps, () => backend.driver.launches);
      stepRows.push({ batch, decodeGemv: kind, launchesPerStep: launchesPerStep ?? 0, stepMs, tokensPerSecond: (batch * 1000) / stepMs });
    }
    useKernel('mma-streamed');
  }
}
console.log('');
console.log(`Llama-3.1-8B shapes, random w4a16 weights, prompt 32, median of ${decodeSteps} decode steps:`);
console.log('| batch | int4 GEMV | launches/step | step ms | tok/s |');
console.log('|---:|---|---:|---:|---:|');
for (const r of stepRows) console.log(`| ${r.batch} | ${r.decodeGemv} | ${r.launchesPerStep} | ${r.stepMs.toFixed(3)} | ${r.tokensPerSecond.toFixed(1)} |`);

const machine = machineInfo();
const file = values.output ?? gpuResultFile('cuda-quant-mma', gpu.name, machine.date);
mkdirSync(join(file, '..'), { recursive: true });
writeFileSync(
  file,
  JSON.stringify(
    {
      bench: 'cuda-quant-mma',
      streamTokens,
      gpu: { ...gpu, copyGBs },
      kernels: { compileMs, modules: backend.kernels.stats },
      notes:
        'rows: int4 (w4a16, symmetric, group 128) linears on the FMA GEMV (quant-linear.cu v2) vs the tensor-core one (gemv-mma-int4.cu), classic and streamed (mma-streamed: streamed, where it applies); ' +
        'us: device time per call (events, median of 3 trials of 30 calls behind a 2 GiB device copy, rotating over weight copies totalling >= 256 MB); ' +
        'ofCopy: int4 bytes (codes + scales) per second / the device-to-device copy bandwidth (read + write); ' +
        'fusedRows: q/k/v (4096, 1024, 1024 rows) through linearMany and gate/up (14336 rows each) through linearSiluMul at K = 4096, launches per call; ' +
        'stepRows: host wall time of a decode step of an 8B-shaped w4a16 model with random weights on each kernel',
      machine,
      rows,
      fusedRows,
      stepRows,
    },
    null,
    2,
  ) + '\n',
);
console.log(`\nsaved ${file}`);
