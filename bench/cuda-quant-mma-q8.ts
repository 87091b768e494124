// The fp8, int8 (w8a16) and nvfp4 decode GEMVs on the FMA kernels (quant-linear.cu v2, the default)
// against the tensor-core one (QuantizedWeights.q8DecodeGemv = 'mma', kernels/gemv-mma-q8.cu) at
// Llama-3.1-8B's linear shapes and 1, 2, 4 and 8 tokens: device µs per call (CUDA events, queued
// behind a 2 GiB device copy so the host's launch time is hidden, rotating over weight copies
// totalling ≥ 256 MB so they stream from HBM), and the weight's bytes (codes + scales) over that time
// as a share of the device-to-device copy bandwidth; the mma result's relative difference from the
// FMA one is printed as a sanity check (~2⁻⁹ expected: x rounded to bf16). Then whole decode steps of
// an 8B-shaped model quantized each way (random weights) at batch 1 and 8 with q8DecodeGemv 'fma',
// 'mma' and 'auto', with the roofline ratio (weight bytes a step / copy bandwidth / step time).
// Prints tables and saves JSON. Measures; never passes or fails.
//
//   node --expose-gc dist/bench/cuda-quant-mma-q8.js [--methods fp8,w8a16,nvfp4] [--tokens 1,2,4,8] [--batch 1,8]
//        [--decode-steps 16] [--no-model] [--output FILE]

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type { Tensor, Weight } from '../src/backend/backend.js';
import { q8MmaPlan, type Q8DecodeGemv, type Q8MmaFormat } from '../src/backend/cuda/gemv-mma-q8.js';
import { parseModelConfig } from '../src/model/config.js';
import { LlamaModel } from '../src/model/llama.js';
import { loadDummyWeights } from '../src/model/load/dummy.js';
import { findPreset } from '../src/plan/presets.js';
import type { QuantizationMethod } from '../src/quant/online.js';
import { DecodeRunner, timeDecodeSteps, weightBytesPerStep } from './decode-steps.js';
import { randomTokenIds } from './engine-timing.js';
import { gpuResultFile, machineInfo } from './machine.js';
import { openBenchGpu } from './bench-gpu.js';
import { KernelTimer } from './kernel-timer.js';

const { values } = parseArgs({
  options: {
    methods: { type: 'string', default: 'fp8,w8a16,nvfp4' },
    tokens: { type: 'string', default: '1,2,4,8' },
    batch: { type: 'string', default: '1,8' },
    'decode-steps': { type: 'string', default: '16' },
    'prompt-len': { type: 'string', default: '32' },
    'no-model': { type: 'boolean', default: false },
    output: { type: 'string' },
  },
});
const FORMAT_OF: Partial<Record<QuantizationMethod, Q8MmaFormat>> = { fp8: 'fp8', w8a16: 'int8', nvfp4: 'nvfp4' };
const methods = values.methods!.split(',') as QuantizationMethod[];
for (const m of methods) if (!FORMAT_OF[m]) throw new RangeError(`--methods: '${m}' has no mma GEMV here (fp8, w8a16, nvfp4)`);
const tokenCounts = values.tokens!.split(',').map(Number);
const batches = values.batch!.split(',').map(Number);
const decodeSteps = Number(values['decode-steps']);
const promptLen = Number(values['prompt-len']);

const started = performance.now();
const { backend, gpu, copyGBs, kernelsMs: compileMs } = openBenchGpu({ warmUp: false, modules: ['quant-linear.cu', 'gemv-mma-q8.cu'] });
const quant = backend.quantized;

const timer = new KernelTimer(backend);
const gc = () => (globalThis as { gc?: () => void }).gc?.();

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

interface Row {
  method: QuantizationMethod;
  shape: [number, number];
  role: string;
  tokens: number;
  weightBytes: number;
  fmaUs: number;
  fmaOfCopy: number;
  mmaUs: number;
  mmaOfCopy: number;
  /** m-tiles a block and blocks splitting K (q8MmaPlan). */
  mmaPlan: string;
  /** ‖y_mma − y_fma‖ / ‖y_fma‖ on the first weight copy. */
  mmaVsFma: number;
}
const rows: Row[] = [];
const shapes: Array<[number, number, string]> = [
  [4096, 4096, 'q, o'],
  [1024, 4096, 'k, v'],
  [6144, 4096, 'q+k+v rows'],
  [14336, 4096, 'gate, up'],
  [4096, 14336, 'down'],
];
let seed = 7000;
for (const method of methods) {
  const format = FORMAT_OF[method]!;
  for (const [N, K, role] of shapes) {
    gc();
    await nextTurn();
    const make = (): Weight => backend.randomWeight(`${role}.${method}`, { shape: [N, K], dtype: 'bf16', method, seed: seed++, scale: 1 / Math.sqrt(K) });
    const first = make();
    const copies = Math.max(1, Math.ceil(256e6 / first.bytes));
    const ws = [first, ...Array.from({ length: copies - 1 }, make)];
    for (const T of tokenCounts) {
      const xHost = Float32Array.from({ length: T * K }, (_, i) => Math.sin(i));
      const timeWith = async (setting: Q8DecodeGemv) => {
        quant.q8DecodeGemv = setting;
        let x: Tensor = backend.fromHost(xHost, [T, K]);
        const ms = await timer.ms(() => (x = backend.fromHost(xHost, [T, K])), (i) => backend.linear(x, ws[i % copies]), 30);
        const y = backend.toHost(backend.linear(backend.fromHost(xHost, [T, K]), first));
        return { ms, y };
      };
      const fma = await timeWith('fma');
      const mma = await timeWith('mma');
      quant.q8DecodeGemv = 'fma';
      const p = q8MmaPlan(format, N, K, gpu.multiprocessors);
      const ofCopy = (ms: number) => first.bytes / (ms / 1000) / 1e9 / copyGBs;
      rows.push({
        method, shape: [N, K], role, tokens: T, weightBytes: first.bytes,
        fmaUs: fma.ms * 1000, fmaOfCopy: ofCopy(fma.ms), mmaUs: mma.ms * 1000, mmaOfCopy: ofCopy(mma.ms),
        mmaPlan: `r${p.rows} × ${p.splits} split${p.splits > 1 ? 's' : ''}`, mmaVsFma: relDiff(mma.y, fma.y),
      });
    }
    ws.length = 0;
  }
}

console.log('');
console.log('| method | W [N, K] | role | MB | tokens | FMA µs | FMA % copy BW | mma µs (plan) | mma % copy BW | speed-up | mma vs FMA rel. diff |');
console.log('|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(
    `| ${r.method} | ${r.shape.join('×')} | ${r.role} | ${(r.weightBytes / 1e6).toFixed(1)} | ${r.tokens} | ${r.fmaUs.toFixed(1)} | ${(100 * r.fmaOfCopy).toFixed(0)}% | ` +
      `${r.mmaUs.toFixed(1)} (${r.mmaPlan}) | ${(100 * r.mmaOfCopy).toFixed(0)}% | ${(r.fmaUs / r.mmaUs).toFixed(2)}× | ${r.mmaVsFma.toExponential(1)} |`,
  );
}

// ---- decode steps of an 8B-shaped model quantized each way, each setting ----

interface StepRow {
  method: QuantizationMethod;
  batch: number;
  q8DecodeGemv: Q8DecodeGemv;
  launchesPerStep: number;
  stepMs: number;
  tokensPerSecond: number;
  weightBytesPerStep: number;
  rooflineRatio: number;
}
const stepRows: StepRow[] = [];
if (!values['no-model']) {
  const raw = findPreset('llama-3.1-8b')!;
  const config = parseModelConfig(raw, 'llama-3.1-8b');
  const randomIds = randomTokenIds();
  for (const method of methods) {
    gc();
    await nextTurn();
    let weights: ReturnType<typeof loadDummyWeights> | undefined = loadDummyWeights(config, backend, { seed: 1, quantization: method });
    const model = new LlamaModel(config, weights, backend);
    backend.synchronize();
    const wBytes = weightBytesPerStep(weights);
    weights = undefined;
    for (const batch of batches) {
      const prompts = Array.from({ length: batch }, () => randomIds(promptLen, config.vocabSize));
      for (const setting of ['fma', 'mma', 'auto'] as const) {
        quant.q8DecodeGemv = setting;
        const runner = new DecodeRunner(model, batch, promptLen + decodeSteps + 2);
        const { stepMs, launchesPerStep } = await timeDecodeSteps(runner, prompts, decodeSteps, () => backend.driver.launches);
        stepRows.push({
          method, batch, q8DecodeGemv: setting, launchesPerStep: launchesPerStep ?? 0, stepMs, tokensPerSecond: (batch * 1000) / stepMs,
          weightBytesPerStep: wBytes, rooflineRatio: wBytes / (copyGBs * 1e9) / (stepMs / 1000),
        });
      }
      quant.q8DecodeGemv = 'fma';
    }
  }
  console.log('');
  console.log(`Llama-3.1-8B shapes, random quantized weights, prompt ${promptLen}, median of ${decodeSteps} decode steps:`);
  console.log('| method | batch | q8DecodeGemv | launches/step | step ms | tok/s | roofline ratio |');
  console.log('|---|---:|---|---:|---:|---:|---:|');
  for (const r of stepRows) {
    console.log(`| ${r.method} | ${r.batch} | ${r.q8DecodeGemv} | ${r.launchesPerStep} | ${r.stepMs.toFixed(3)} | ${r.tokensPerSecond.toFixed(1)} | ${(100 * r.rooflineRatio).toFixed(1)}% |`);
  }
}

timer.free();

const machine = machineInfo();
const file = values.output ?? gpuResultFile('cuda-quant-mma-q8', gpu.name, machine.date);
mkdirSync(join(file, '..'), { recursive: true });
writeFileSync(
  file,
  JSON.stringify(
    {
      bench: 'cuda-quant-mma-q8',
      gpu: { ...gpu, copyGBs },
      kernels: { compileMs, modules: backend.kernels.stats },
      notes:
        'rows: fp8 (per-channel), int8 (w8a16) and nvfp4 linears on the FMA GEMV (quant-linear.cu v2, q8DecodeGemv fma) vs the tensor-core one (gemv-mma-q8.cu, q8DecodeGemv mma); ' +
        'us: device time per call (events, median of 3 trials of 30 calls behind a 2 GiB device copy, rotating over weight copies totalling >= 256 MB); ' +
        'ofCopy: weight bytes (codes + scales) per second / the device-to-device copy bandwidth (read + write); mmaVsFma: relative difference of the outputs (x rounded to bf16 on mma); ' +
        "stepRows: host wall time of a decode step of an 8B-shaped model with random weights quantized by `method`, q8DecodeGemv 'fma', 'mma' and 'auto' (mma for matrices of <= 8192 rows); " +
        'rooflineRatio = weight bytes a step (embedding table excluded) / copy bandwidth / step time',
      machine,
      rows,
      stepRows,
      seconds: (performance.now() - started) / 1000,
    },
    null,
    2,
  ) + '\n',
);
console.log(`\nsaved ${file} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
