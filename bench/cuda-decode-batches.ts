// Decode steps of more than 8 sequences on the CUDA backend: a Llama-3.1-8B-shaped model with random
// weights in each --formats format, greedy decode steps of every --batch size (prompt 128). For the
// quantized formats at more than 8 tokens, two ways to run the linears: in 8-token slices on the
// tensor-core GEMVs (CudaBackend.quantSlices, the default up to slicedMaxTokens) and the GEMM over a
// bf16 copy of each weight that prefill uses ('dequant': slicedMaxTokens set to 8; 'dequant-scalar':
// the copy made element by element, QuantizedWeights.vectorisedDequant off); graphs on and off
// (steps of up to graphs.maxTokens tokens replay as CUDA graphs, cuBLASLt GEMMs captured into them).
// Prints a table with each step's time, tokens/s and the weight-roofline ratio (weight bytes a step
// must read / copy bandwidth, over the step time), and saves JSON with the GPU. Measures; never passes
// or fails. What it measured sets DEFAULT_SLICED_MAX_TOKENS (quantized-weights.ts).
//
//   node --expose-gc dist/bench/cuda-decode-batches.js [--formats w4a16,nvfp4,w8a16,bf16] [--batch 8,12,16,24,32,48]
//                                                      [--modes sliced,dequant,dequant-scalar] [--graphs on,off] [--decode-len 32] [--output FILE]

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { DEFAULT_SLICED_MAX_TOKENS } from '../src/backend/cuda/quantized-weights.js';
import { parseModelConfig } from '../src/model/config.js';
import { LlamaModel } from '../src/model/llama.js';
import { loadDummyWeights } from '../src/model/load/dummy.js';
import { findPreset } from '../src/plan/presets.js';
import type { QuantizationMethod } from '../src/quant/online.js';
import { DecodeRunner, timeDecodeSteps, weightBytesPerStep } from './decode-steps.js';
import { randomTokenIds } from './engine-timing.js';
import { gpuResultFile, machineInfo } from './machine.js';
import { openBenchGpu } from './bench-gpu.js';

const { values } = parseArgs({
  options: {
    formats: { type: 'string', default: 'w4a16,nvfp4,w8a16,bf16' },
    batch: { type: 'string', default: '8,12,16,24,32,48' },
    modes: { type: 'string', default: 'sliced,dequant' },
    graphs: { type: 'string', default: 'on' },
    'prompt-len': { type: 'string', default: '128' },
    'decode-len': { type: 'string', default: '32' },
    output: { type: 'string' },
  },
});
const batches = values.batch!.split(',').map(Number);
const MODES = ['sliced', 'dequant', 'dequant-scalar'] as const;
const modes = values.modes!.split(',') as Array<(typeof MODES)[number]>;
for (const m of modes) if (!(MODES as readonly string[]).includes(m)) throw new Error(`--modes takes ${MODES.join(', ')}, got '${m}'`);
const graphModes = values.graphs!.split(',').map((g) => {
  if (g !== 'on' && g !== 'off') throw new Error(`--graphs takes on, off or both, got '${g}'`);
  return g === 'on';
});
const promptLen = Number(values['prompt-len']);
const decodeLen = Number(values['decode-len']);

const { backend, gpu, copyGBs } = openBenchGpu();
const randomIds = randomTokenIds();

interface Row {
  format: string;
  batch: number;
  /** Quantized steps of more than 8 tokens: 8-token slices on the GEMVs, or bf16 copies and GEMMs. */
  mode: (typeof MODES)[number] | '-';
  graphs: boolean;
  decodeStepMs: number;
  decodeTokensPerSecond: number;
  weightBytesPerStep: number;
  rooflineRatio: number;
  launchesPerStep?: number;
  /** CUDA graph steps over the run (prefill and decode): replayed, built, and run eagerly. */
  graphSteps: { replays: number; builds: number; eager: number; interrupted: number };
}
const rows: Row[] = [];

const config = parseModelConfig(findPreset('llama-3.1-8b')!, 'llama-3.1-8b');
const quant = backend.quantized;
for (const format of values.formats!.split(',')) {
  (globalThis as { gc?: () => void }).gc?.();
  await nextTurn();
  const quantization = format === 'bf16' ? undefined : (format as QuantizationMethod);
  const weights = loadDummyWeights(config, backend, { quantization, seed: 1 });
  const model = new LlamaModel(config, weights, backend);
  const wBytes = weightBytesPerStep(weights);
  for (const batch of batches) {
    // An engine of `batch` sequences: the quantized GEMVs it would pick (tensor cores above 1 token).
    quant.chooseDecodeGemvs(batch);
    for (const mode of quantization && batch > 8 ? modes : (['-'] as const)) {
      for (const graphs of graphModes) {
        backend.graphs.enabled = graphs;
        backend.graphs.clear();
        const keep = { ...quant.slicedMaxTokens };
        if (mode.startsWith('dequant')) for (const f of Object.keys(quant.slicedMaxTokens) as Array<keyof typeof keep>) quant.slicedMaxTokens[f] = 8;
        quant.vectorisedDequant = mode !== 'dequant-scalar';
        try {
          const prompts = Array.from({ length: batch }, () => randomIds(promptLen, config.vocabSize));
          const runner = new DecodeRunner(model, batch, promptLen + decodeLen + 1);
          const s0 = { ...backend.graphs.stats };
          const { stepMs, launchesPerStep } = await timeDecodeSteps(runner, prompts, decodeLen, () => backend.driver.launches);
          const s1 = backend.graphs.stats;
          const graphSteps = { replays: s1.replays - s0.replays, builds: s1.builds - s0.builds, eager: s1.eager - s0.eager, interrupted: s1.interrupted - s0.interrupted };
          const r: Row = {
            format, batch, mode, graphs, decodeStepMs: stepMs, decodeTokensPerSecond: (batch * 1000) / stepMs, weightBytesPerStep: wBytes,
            rooflineRatio: (wBytes / (copyGBs * 1e9) / stepMs) * 1000, launchesPerStep, graphSteps,
          };
          rows.push(r);
          console.log(`${format} batch ${batch} ${mode} graphs ${graphs ? 'on' : 'off'}: ${stepMs.toFixed(3)} ms a step, ${r.decodeTokensPerSecond.toFixed(0)} tok/s (graph steps ${JSON.stringify(graphSteps)})`);
        } finally {
          Object.assign(quant.slicedMaxTokens, keep);
          quant.vectorisedDequant = true;
        }
        await nextTurn();
      }
    }
  }
}
backend.graphs.enabled = true;

console.log('');
console.log('| weights | batch | quantized linears | graphs | decode step ms | decode tok/s | launches a step | roofline ratio |');
console.log('|---|---:|---|---|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(
    `| ${r.format} | ${r.batch} | ${r.mode} | ${r.graphs ? 'on' : 'off'} | ${r.decodeStepMs.toFixed(3)} | ${r.decodeTokensPerSecond.toFixed(0)} | ${r.launchesPerStep?.toFixed(0) ?? ''} | ${(100 * r.rooflineRatio).toFixed(1)}% |`,
  );
}
const machine = machineInfo();
const file = values.output ?? gpuResultFile('cuda-decode-batches', gpu.name, machine.date);
mkdirSync(join(file, '..'), { recursive: true });
writeFileSync(
  file,
  JSON.stringify(
    {
      bench: 'cuda-decode-batches', gpu: { ...gpu, copyGBs }, promptLen, decodeLen, slicedMaxTokens: DEFAULT_SLICED_MAX_TOKENS, graphMaxTokens: backend.graphs.maxTokens,
      notes: 'Llama-3.1-8B shapes, random weights; decodeStepMs is the median greedy decode step of the forward (argmax on the GPU); rooflineRatio = (weight bytes per step / copy bandwidth) / step time',
      machine, rows,
    },
    null,
    2,
  ) + '\n',
);
console.log(`\nsaved ${file}`);
