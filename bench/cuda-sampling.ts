// Sampling on the GPU (CudaBackend.sampleRows, kernels/sampling.cu) against what it replaces: reading
// the logits back and sampling on the host (drawToken, engine/sampler.ts). Rows of Llama 3's 128,256
// ids, 1 and 8 rows; plain temperature, top-k 50, top-p 0.9, all three with min-p, and greedy (the
// argmax kernel) for scale. Per case: the kernel's device µs (events around back-to-back launches
// queued behind a device copy), the µs of one sampleRows call as the engine makes it (upload, launch,
// read back, wall clock), and the host path's µs (read back, then drawToken per row). Then token
// logprobs (CudaBackend.logprobRows, kernels/logprobs.cu) for 5 and 20 alternatives against the
// logits read back and computeLogprobs per row. Prints markdown tables; saves JSON with the GPU.
// Measures; never passes or fails.
//
//   node dist/bench/cuda-sampling.js [--reps 50] [--vocab 128256] [--output FILE]

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import type { GpuSamplingRow, Tensor } from '../src/backend/backend.js';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import type { DevicePtr } from '../src/backend/cuda/driver.js';
import { launchSampleRows, packSamplingParams, SAMPLE_PRE_BYTES } from '../src/backend/cuda/sampling.js';
import { Rng } from '../src/engine/rng.js';
import { modelLikeLogits } from './model-like-logits.js';
import { computeLogprobs, drawToken } from '../src/engine/sampler.js';
import { KernelTimer, wallUs } from './kernel-timer.js';
import { gpuResultFile, machineInfo } from './machine.js';

const { values } = parseArgs({ options: { reps: { type: 'string', default: '50' }, vocab: { type: 'string', default: '128256' }, output: { type: 'string' } } });
const reps = Number(values.reps);
const V = Number(values.vocab);

const backend = new CudaBackend();
backend.warmUp();
const gpu = backend.device;
const d = backend.driver;
console.log(`GPU ${gpu.name} (sm_${gpu.computeCapability}, ${gpu.multiprocessors} SMs), vocabulary ${V}`);
const timer = new KernelTimer(backend);
const rng = new Rng(1);

const CASES: Array<{ name: string; knobs: Omit<GpuSamplingRow, 'u'> }> = [
  { name: 'temperature 0.8', knobs: { temperature: 0.8, topK: 0, topP: 1, minP: 0 } },
  { name: 'top-k 50', knobs: { temperature: 0.8, topK: 50, topP: 1, minP: 0 } },
  { name: 'top-p 0.9', knobs: { temperature: 0.8, topK: 0, topP: 0.9, minP: 0 } },
  { name: 'top-k 50, top-p 0.9, min-p 0.05', knobs: { temperature: 0.8, topK: 50, topP: 0.9, minP: 0.05 } },
  { name: 'min-p 0.05', knobs: { temperature: 0.8, topK: 0, topP: 1, minP: 0.05 } },
  { name: 'greedy (argmax kernel)', knobs: { temperature: 0, topK: 0, topP: 1, minP: 0 } },
];

interface Row {
  case: string;
  rows: number;
  kernelUs: number;
  callUs: number;
  hostUs: number;
  readBackUs: number;
}
const results: Row[] = [];

/** `rows` model-like logit rows on the host and a plain device copy (a tensor would last one step only). */
function logitRows(rows: number): { host: Float32Array; logits: DevicePtr } {
  const host = new Float32Array(rows * V);
  for (let r = 0; r < rows; r++) host.set(modelLikeLogits(rng, V), r * V);
  const logits = d.memAlloc(host.byteLength);
  d.upload(logits, host);
  return { host, logits };
}


for (const rows of [1, 8]) {
  const { host, logits } = logitRows(rows);
  const out = d.memAlloc(rows * 4);
  const params = d.memAlloc(rows * 64);
  const pre = d.memAlloc(rows * SAMPLE_PRE_BYTES);
  for (const c of CASES) {
    const knobs = Array.from({ length: rows }, () => ({ ...c.knobs, u: rng.next() }));
    d.upload(params, packSamplingParams(knobs));
    const greedy = c.knobs.temperature === 0;
    const kernelUs = await timer.us(
      () => {},
      () => {
        if (greedy) d.launch(backend.kernels.fn('sampling.cu', 'argmax_rows'), 'argmax_rows', [rows, 1, 1], 1024, 'ppii', [logits, out, V, V]);
        else launchSampleRows(backend, { x: logits, params, pre, out, dist: 0 }, rows, V, V, 0);
      },
      reps,
    );
    // As the engine calls it: the step's logits tensor, the op, the ids back.
    let t: Tensor | undefined;
    const callUs = await wallUs(backend,
      () => (t = backend.fromHost(host, [rows, V])),
      () => (greedy ? backend.argmaxRows(t!, V) : backend.sampleRows(t!, V, knobs)),
      reps,
    );
    // What it replaces: the logits read back, then the host sampler per row.
    const readBack = new Float32Array(rows * V);
    const readBackUs = await wallUs(backend, () => {}, () => d.download(readBack, logits, readBack.byteLength), reps);
    const hostUs = await wallUs(backend,
      () => {},
      () => {
        d.download(readBack, logits, readBack.byteLength);
        for (let r = 0; r < rows; r++) drawToken(readBack.subarray(r * V, (r + 1) * V), knobs[r], knobs[r].u);
      },
      Math.max(5, Math.floor(reps / 5)),
    );
    results.push({ case: c.name, rows, kernelUs, callUs, hostUs, readBackUs });
    console.log(`${c.name}, ${rows} row(s): kernel ${kernelUs.toFixed(1)} µs, call ${callUs.toFixed(1)} µs; host path ${hostUs.toFixed(0)} µs (read back ${readBackUs.toFixed(0)} µs)`);
  }
  d.memFree(logits);
  d.memFree(out);
  d.memFree(params);
  d.memFree(pre);
}

// ---- token logprobs (Backend.logprobRows) against the logits read back and computeLogprobs ----
interface LogprobRowTiming {
  rows: number;
  topN: number;
  callUs: number;
  hostUs: number;
}
const logprobResults: LogprobRowTiming[] = [];
for (const rows of [1, 8]) {
  const { host, logits } = logitRows(rows);
  const readBack = new Float32Array(rows * V);
  for (const topN of [5, 20]) {
    const asks = Array.from({ length: rows }, () => ({ token: Math.floor(rng.next() * V), topN }));
    let t: Tensor | undefined;
    const callUs = await wallUs(backend, () => (t = backend.fromHost(host, [rows, V])), () => backend.logprobRows(t!, V, asks), reps);
    const hostUs = await wallUs(backend,
      () => {},
      () => {
        d.download(readBack, logits, readBack.byteLength);
        for (let r = 0; r < rows; r++) computeLogprobs(readBack.subarray(r * V, (r + 1) * V), topN, asks[r].token);
      },
      Math.max(5, Math.floor(reps / 5)),
    );
    logprobResults.push({ rows, topN, callUs, hostUs });
    console.log(`logprobs, ${rows} row(s), top ${topN}: logprobRows call ${callUs.toFixed(1)} µs; host path ${hostUs.toFixed(0)} µs`);
  }
  d.memFree(logits);
}

console.log(`\n| case | rows | kernel µs | sampleRows call µs | host path µs (read back + drawToken) | of which read back µs |`);
console.log('|---|---|---|---|---|---|');
for (const r of results) console.log(`| ${r.case} | ${r.rows} | ${r.kernelUs.toFixed(1)} | ${r.callUs.toFixed(1)} | ${r.hostUs.toFixed(0)} | ${r.readBackUs.toFixed(0)} |`);
console.log(`\n| logprobs | rows | top | logprobRows call µs | host path µs (read back + computeLogprobs) |`);
console.log('|---|---|---|---|---|');
for (const r of logprobResults) console.log(`| logprobs | ${r.rows} | ${r.topN} | ${r.callUs.toFixed(1)} | ${r.hostUs.toFixed(0)} |`);

const machine = machineInfo();
const file = values.output ?? gpuResultFile('cuda-sampling', gpu.name, machine.date);
mkdirSync(dirname(file), { recursive: true });
writeFileSync(
  file,
  JSON.stringify({ bench: 'cuda-sampling', machine, gpu: { name: gpu.name, computeCapability: gpu.computeCapability, multiprocessors: gpu.multiprocessors }, vocab: V, reps, results, logprobs: logprobResults }, null, 2) + '\n',
);
console.log(`saved ${file}`);
timer.free();
