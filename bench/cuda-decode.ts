// Decode speed of the CUDA backend: the default model (or --model) and, unless --no-dummy-8b, a
// Llama-3.1-8B-shaped model with random weights generated on the GPU in each --formats format. Prints a table with the
// memory roofline ratio (weight bytes a decode step must read / the measured device-to-device copy
// bandwidth, over the measured step time) and saves JSON with the GPU. Measures; never passes or fails.
//
//   node dist/bench/cuda-decode.js [--model DIR] [--prompt-len 128] [--decode-len 64] [--batch 1,8] [--no-dummy-8b]
//                                  [--formats bf16,fp8,w8a16,w4a16,nvfp4] [--graphs on,off] [--pdl on,off] [--repeat 1]
//                                  [--no-default-model] [--output FILE]
// --graphs: forward steps with CUDA graphs (step-graphs.ts) on, off, or both to compare. --pdl: with
// programmatic dependent launch (programmatic-launch.ts) on, off or both (default: as the driver is);
// --repeat runs every forward measurement that many times, the modes interleaved, to compare them
// on one machine in one process (lent GPUs differ by a few percent from run to run).

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type { CudaBackend, GemvKernel } from '../src/backend/cuda/cuda-backend.js';
import { LLM } from '../src/llm.js';
import { parseModelConfig } from '../src/model/config.js';
import { resolveModelDir } from '../src/model/default-model.js';
import { LlamaModel } from '../src/model/llama.js';
import { loadModel } from '../src/model/load-model.js';
import { loadDummyWeights } from '../src/model/load/dummy.js';
import { findPreset } from '../src/plan/presets.js';
import type { QuantizationMethod } from '../src/quant/online.js';
import { DecodeRunner, timeDecodeSteps, weightBytesPerStep } from './decode-steps.js';
import { randomTokenIds, timeBatchedGenerate } from './engine-timing.js';
import { gpuResultFile, machineInfo } from './machine.js';
import { openBenchGpu } from './bench-gpu.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    'prompt-len': { type: 'string', default: '128' },
    'decode-len': { type: 'string', default: '64' },
    batch: { type: 'string', default: '1,8' },
    'no-dummy-8b': { type: 'boolean', default: false },
    formats: { type: 'string', default: 'bf16,fp8,w8a16,w4a16,nvfp4' },
    graphs: { type: 'string', default: 'on,off' },
    pdl: { type: 'string' },
    repeat: { type: 'string', default: '1' },
    'no-default-model': { type: 'boolean', default: false },
    output: { type: 'string' },
  },
});
const promptLen = Number(values['prompt-len']);
const decodeLen = Number(values['decode-len']);
const batches = values.batch!.split(',').map(Number);
const graphModes = values.graphs!.split(',').map((g) => {
  if (g !== 'on' && g !== 'off') throw new Error(`--graphs takes on, off or both, got '${g}'`);
  return g === 'on';
});
const repeats = Number(values.repeat);

const { backend, gpu, copyGBs, kernelsMs: warmUpMs } = openBenchGpu();
const pdlModes = (values.pdl ?? (backend.driver.programmaticLaunch ? 'on' : 'off')).split(',').map((g) => {
  if (g !== 'on' && g !== 'off') throw new Error(`--pdl takes on, off or both, got '${g}'`);
  return g === 'on';
});
const pdlDefault = backend.driver.programmaticLaunch;

// ---- kernel microbenchmarks: launch cost, the linear kernels at Llama-3.1-8B shapes ----
function medianOf(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}
/**
 * Device milliseconds per call of `fn`, from events around `reps` back-to-back calls; the median of
 * 3 trials after a warm-up one, each in its own step so the outputs' buffers come from the pool.
 */
async function deviceMs(setup: () => void, fn: (i: number) => void, reps: number): Promise<number> {
  const d = backend.driver;
  const e0 = d.createEvent();
  const e1 = d.createEvent();
  const trials: number[] = [];
  for (let trial = 0; trial < 4; trial++) {
    await nextTurn();
    setup();
    d.recordEvent(e0);
    for (let i = 0; i < reps; i++) fn(i);
    d.recordEvent(e1);
    if (trial > 0) trials.push(d.elapsedMs(e0, e1) / reps);
    else d.synchronize();
  }
  return medianOf(trials);
}

const launchUs = (() => {
  const a = backend.fromHost(new Float32Array(256).fill(1), [1, 256]);
  const b = backend.fromHost(new Float32Array(256).fill(2), [1, 256]);
  backend.addInPlace(a, b);
  backend.synchronize();
  const n = 5000;
  const t = performance.now();
  for (let i = 0; i < n; i++) backend.addInPlace(a, b);
  backend.synchronize();
  return ((performance.now() - t) * 1000) / n;
})();
console.log(`launch through koffi (add_inplace, 256 floats, host time incl. the wait): ${launchUs.toFixed(2)} µs each`);

interface LinearRow {
  shape: [number, number];
  tokens: number;
  kernel: string;
  us: number;
  weightGBs: number;
  tflops: number;
}
const linearRows: LinearRow[] = [];
await nextTurn();
{
  const shapes: Array<[number, number]> = [[4096, 4096], [1024, 4096], [14336, 4096], [4096, 14336], [128256, 4096]];
  for (const [N, K] of shapes) {
    const bytes = N * K * 2;
    // Rotate over copies totalling ≥ 256 MB so the 50 MB L2 cannot hold them: stream from HBM, as decode does.
    const copies = Math.max(1, Math.ceil(256e6 / bytes));
    const ws = Array.from({ length: copies }, (_, i) => backend.randomBf16([N, K], 1000 + i, 0.05));
    const variants: Array<[number, GemvKernel]> = [];
    for (const T of [1, 8]) for (const k of ['row', 'split-k'] as const) variants.push([T, k]);
    if (N === 4096 && K === 4096) variants.push([2, 'row'], [2, 'split-k'], [4, 'split-k'], [128, 'auto'], [1024, 'auto']);
    for (const [T, kernel] of variants) {
      const xHost = Float32Array.from({ length: T * K }, (_, i) => Math.sin(i));
      backend.gemvKernel = kernel;
      const reps = T >= 128 ? 5 : 30;
      let x = backend.fromHost(xHost, [T, K]);
      // The input is sent again before each trial (activations live for one step).
      const ms = await deviceMs(() => (x = backend.fromHost(xHost, [T, K])), (i) => backend.linear(x, ws[i % copies]), reps);
      linearRows.push({ shape: [N, K], tokens: T, kernel: T > 8 ? 'tiled' : kernel, us: ms * 1000, weightGBs: bytes / (ms / 1000) / 1e9, tflops: (2 * N * K * T) / (ms / 1000) / 1e12 });
      await nextTurn();
    }
    backend.gemvKernel = 'auto';
  }
  console.log('');
  console.log('| W [N, K] bf16 | tokens | kernel | µs | weight GB/s | of copy BW | TFLOP/s |');
  console.log('|---|---:|---|---:|---:|---:|---:|');
  for (const r of linearRows) {
    console.log(`| ${r.shape.join('×')} | ${r.tokens} | ${r.kernel} | ${r.us.toFixed(1)} | ${r.weightGBs.toFixed(0)} | ${((100 * r.weightGBs) / copyGBs).toFixed(0)}% | ${r.tflops.toFixed(2)} |`);
  }
}

interface Row {
  model: string;
  path: 'forward' | 'engine';
  /** CUDA graphs over decode steps. */
  graphs: boolean;
  /** Programmatic dependent launch (programmatic-launch.ts). */
  programmaticLaunch: boolean;
  /** The int4 and the fp8/int8/nvfp4 decode GEMVs (QuantizedWeights.decodeGemv / q8DecodeGemv). */
  quantGemv: string;
  batch: number;
  promptTokens: number;
  decodeSteps: number;
  prefillMs: number;
  decodeStepMs: number;
  decodeTokensPerSecond: number;
  weightBytesPerStep: number;
  rooflineStepMs: number;
  rooflineRatio: number;
}
const rows: Row[] = [];

const randomIds = randomTokenIds();

/**
 * Prefill `batch` random prompts in one step, then greedy decode steps over all of them; the model
 * forward alone, once per --graphs mode.
 */
async function timeForward(name: string, model: LlamaModel, batch: number): Promise<Row[]> {
  const out: Row[] = [];
  // Quantized decode GEMVs as an engine of at most `batch` tokens a step picks them (FMA at one token,
  // tensor cores above; QuantizedWeights.chooseDecodeGemvs).
  backend.quantized.chooseDecodeGemvs(batch);
  for (let r = 0; r < repeats; r++) {
    for (const graphs of graphModes) {
      for (const pdl of pdlModes) {
        backend.graphs.enabled = graphs;
        backend.driver.setProgrammaticLaunch(pdl);
        backend.graphs.clear();  // a graph keeps the edges it was built with
        const prompts = Array.from({ length: batch }, () => randomIds(promptLen, model.config.vocabSize));
        const runner = new DecodeRunner(model, batch, promptLen + decodeLen + 1);
        const { prefillMs, stepMs } = await timeDecodeSteps(runner, prompts, decodeLen);
        out.push(row(name, 'forward', batch, prefillMs, stepMs, weightBytesPerStep(model.weights), graphs));
      }
    }
  }
  backend.graphs.enabled = true;
  backend.driver.setProgrammaticLaunch(pdlDefault);
  return out;
}

function row(model: string, path: Row['path'], batch: number, prefillMs: number, stepMs: number, wBytes: number, graphs: boolean): Row {
  const rooflineStepMs = (wBytes / (copyGBs * 1e9)) * 1000;
  return {
    model, path, graphs, programmaticLaunch: backend.driver.programmaticLaunch, quantGemv: `${backend.quantized.decodeGemv}/${backend.quantized.q8DecodeGemv}`, batch, promptTokens: promptLen, decodeSteps: decodeLen, prefillMs, decodeStepMs: stepMs,
    decodeTokensPerSecond: (batch * 1000) / stepMs, weightBytesPerStep: wBytes, rooflineStepMs, rooflineRatio: rooflineStepMs / stepMs,
  };
}

// ---- the default (or given) model: forward alone, then through the engine (scheduler, sampler) ----
if (!values['no-default-model']) {
  const dir = resolveModelDir(values.model);
  const loaded = loadModel(dir, backend);
  const modelName = dir.split('/').pop()!;
  for (const b of batches) rows.push(...(await timeForward(modelName, loaded.model, b)));

  const llm = await LLM.load({ model: dir, device: 'cuda', maxModelLen: promptLen + decodeLen + 1 });
  for (const batch of batches) {
    const prompts = Array.from({ length: batch }, () => randomIds(promptLen, llm.config.vocabSize));
    const { prefillMs, decodeMs } = await timeBatchedGenerate(llm, prompts, decodeLen);
    const stepMs = decodeMs / (decodeLen - 1);
    rows.push(row(modelName, 'engine', batch, prefillMs, stepMs, weightBytesPerStep(llm.loaded.model.weights), (llm.loaded.model.backend as CudaBackend).graphs.enabled));
  }
  await llm.close();
}

// ---- a Llama-3.1-8B-shaped model with random weights made on the GPU, in each weight format ----
let dummy: { config: Record<string, unknown>; formats: string[] } | undefined;
if (!values['no-dummy-8b']) {
  const raw = findPreset('llama-3.1-8b')!;
  const config = parseModelConfig(raw, 'llama-3.1-8b');
  const formats = values.formats!.split(',');
  for (const format of formats) {
    // Give the last format's device memory back first (node --expose-gc; else the GC decides when).
    (globalThis as { gc?: () => void }).gc?.();
    await nextTurn();
    const quantization = format === 'bf16' ? undefined : (format as QuantizationMethod);
    const needBytes = (quantization ? 6e9 : 16.1e9) + 2 ** 30;
    const { freeBytes } = backend.driver.memInfo();
    if (freeBytes < needBytes) {
      console.log(`skipping the 8B-shaped model in ${format}: ${(freeBytes / 1e9).toFixed(1)} GB free, it needs ${(needBytes / 1e9).toFixed(1)} GB`);
      continue;
    }
    const weights = loadDummyWeights(config, backend, { quantization, seed: 1 });
    const model = new LlamaModel(config, weights, backend);
    backend.synchronize();
    for (const b of batches) rows.push(...(await timeForward(`llama-3.1-8b shapes, random ${format}`, model, b)));
  }
  dummy = { config: raw, formats };
}

// ---- report ----
console.log('');
console.log('| model | path | graphs | pdl | batch | prefill ms | decode step ms | decode tok/s | weight MB/step | roofline step ms | roofline ratio |');
console.log('|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(
    `| ${r.model} | ${r.path} | ${r.graphs ? 'on' : 'off'} | ${r.programmaticLaunch ? 'on' : 'off'} | ${r.batch} | ${r.prefillMs.toFixed(1)} | ${r.decodeStepMs.toFixed(3)} | ${r.decodeTokensPerSecond.toFixed(1)} | ${(r.weightBytesPerStep / 1e6).toFixed(1)} | ${r.rooflineStepMs.toFixed(3)} | ${(r.rooflineRatio * 100).toFixed(1)}% |`,
  );
}
const machine = machineInfo();
const file = values.output ?? gpuResultFile('cuda-decode', gpu.name, machine.date);
mkdirSync(join(file, '..'), { recursive: true });
writeFileSync(
  file,
  JSON.stringify(
    {
      bench: 'cuda-decode',
      gpu: { ...gpu, copyGBs },
      kernels: { warmUpMs, modules: backend.kernels.stats, nvrtc: { path: backend.nvrtc.path, version: backend.nvrtc.version } },
      launchUs, linear: linearRows, pool: backend.pool.counters, graphs: { ...backend.graphs.stats, ...backend.graphs.size },
      promptLen, decodeLen, dummy8b: dummy ?? null,
      notes: `decodeStepMs is the median forward step (forward path) or the mean decode step through LLM.generate (engine path); rooflineRatio = (weight bytes per step / copy bandwidth) / step time; activations are float32, the KV cache ${backend.kvDtype}`,
      machine, rows,
    },
    null,
    2,
  ) + '\n',
);
console.log(`\nsaved ${file}`);
