// Where a decode step's time goes on the GPU, for a model at real shapes with dummy weights: the
// step's wall time, the host's time to issue it (until the logits are read back), the GPU span from
// the step's first to its last kernel (events), and the launches per step. With --ncu-plan it prints
// the launch index of the last step, so Nsight Compute can time that step's kernels one by one:
//
//   node dist/bench/cuda-step-profile.js [--model llama-3.1-8b] [--quantization none] [--batch 1] [--context 128] [--steps 16]
//   ncu --launch-skip <first> --launch-count <count> --metrics gpu__time_duration.sum --csv node dist/bench/cuda-step-profile.js …
//
// Measures; never passes or fails. Prints a table; saves nothing (the numbers go into docs/cuda.md).

import { setImmediate as nextTurn } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { parseModelConfig } from '../src/model/config.js';
import { LlamaModel } from '../src/model/llama.js';
import { loadDummyWeights } from '../src/model/load/dummy.js';
import { findPreset } from '../src/plan/presets.js';
import type { QuantizationMethod } from '../src/quant/online.js';
import { DecodeRunner } from './decode-steps.js';
import { OpProfiler, type OpProfile } from './op-profile.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'llama-3.1-8b' },
    quantization: { type: 'string', default: 'none' },
    batch: { type: 'string', default: '1' },
    context: { type: 'string', default: '128' },
    steps: { type: 'string', default: '16' },
  },
});
const batch = Number(values.batch);
const context = Number(values.context);
const steps = Number(values.steps);
const quantization = values.quantization === 'none' ? undefined : (values.quantization as QuantizationMethod);

const backend = new CudaBackend();
// Every kernel ours, so the launch counter matches Nsight Compute's (cuBLASLt launches its own).
backend.prefillGemm = 'tiled';
backend.warmUp();
const raw = findPreset(values.model!);
if (!raw) throw new Error(`unknown preset ${values.model}`);
const config = parseModelConfig(raw, values.model!);
const model = new LlamaModel(config, loadDummyWeights(config, backend, { quantization, seed: 1 }), backend);
const runner = new DecodeRunner(model, batch, context + steps + 1);

// Read-back time: argmaxRows is where the host waits for the GPU.
let issuedAt = 0;
const argmaxRows = backend.argmaxRows.bind(backend);
backend.argmaxRows = (t, n) => {
  issuedAt = performance.now();
  return argmaxRows(t, n);
};

const V = config.vocabSize;
let next = Array.from({ length: batch }, (_, s) => (s * 7919) % V);
const prompt = Array.from({ length: batch }, (_, s) => Array.from({ length: context }, (_, i) => (s * 31 + i * 17) % V));
runner.prefill(prompt);
backend.synchronize();
const e0 = backend.driver.createEvent();
const e1 = backend.driver.createEvent();
const rows: Array<{ wall: number; issue: number; gpu: number; launches: number }> = [];
let firstLaunchOfLast = 0;
for (let i = 0; i < steps; i++) {
  await nextTurn();
  const l0 = backend.driver.launches;
  if (i === steps - 1) firstLaunchOfLast = l0;
  const t0 = performance.now();
  backend.driver.recordEvent(e0);
  // Greedy, as the engine runs it: the argmax of each row on the GPU, one id a row read back.
  next = runner.step(next, context + i);
  const t1 = performance.now();
  backend.driver.recordEvent(e1);
  const gpu = backend.driver.elapsedMs(e0, e1);
  rows.push({ wall: t1 - t0, issue: issuedAt - t0, gpu, launches: backend.driver.launches - l0 });
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const last = rows.slice(2);
console.log(`${values.model} ${values.quantization} batch ${batch} context ${context} on ${backend.device.name}`);
console.log('| step wall ms | host issue ms (until the read-back) | GPU span ms (events; includes the read-back) | launches |');
console.log('|---:|---:|---:|---:|');
console.log(`| ${med(last.map((r) => r.wall)).toFixed(3)} | ${med(last.map((r) => r.issue)).toFixed(3)} | ${med(last.map((r) => r.gpu)).toFixed(3)} | ${rows[rows.length - 1].launches} |`);
console.log(`ncu plan: --launch-skip ${firstLaunchOfLast} --launch-count ${rows[rows.length - 1].launches}`);

// The same step op by op (op-profile.ts), eager: events around every Backend call (a recorded
// graph could not hold them). Device time per op summed over the layers, median step of 5.
backend.graphs.enabled = false;
const profiler = new OpProfiler(backend);
const profiledRunner = new DecodeRunner(new LlamaModel(config, model.weights, profiler.backend), batch, context + 8);
profiledRunner.prefill(prompt);
const profiles: OpProfile[] = [];
for (let i = 0; i < 6; i++) {
  await nextTurn();
  profiler.reset();
  next = profiledRunner.step(next, context + i);
  if (i > 0) profiles.push(profiler.collect());
}
const p = profiles.sort((a, b) => a.spanMs - b.spanMs)[profiles.length >> 1];
console.log(`\nOne eager step by op (GPU span ${(p.spanMs * 1000).toFixed(0)} µs, GPU idle between ops ${(p.gapsMs * 1000).toFixed(0)} µs; the events add a little):`);
console.log('| op | calls | device µs | µs a call | host µs |');
console.log('|---|---:|---:|---:|---:|');
for (const o of p.ops) console.log(`| ${o.op} | ${o.calls} | ${(o.ms * 1000).toFixed(0)} | ${((o.ms * 1000) / o.calls).toFixed(1)} | ${(o.hostMs * 1000).toFixed(0)} |`);
