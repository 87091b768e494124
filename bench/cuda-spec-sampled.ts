// Verifying sampled speculative windows on the GPU (sampleRows rows that exclude each draft, one id
// and one probability a row back; engine/spec/verifier.ts verifyDraftsSampled) against what it
// replaces: the window rows' logits read back and verifyDrafts on the host. Rows of Llama 3's 128,256
// ids; windows of k = 3 drafts (4 rows) at batch 1 and 8; plain temperature, top-p 0.9, top-k 50 with
// min-p. Per case: the kernel's device µs for the step's rows in residual mode and as plain draws (what
// the residual pass adds), the µs of the path as the engine takes it (sampleRows call + verification,
// wall clock), and the host path's µs (read back + verifyDrafts per window). Prints a markdown table;
// saves JSON with the GPU. Measures; never passes or fails.
//
//   node dist/bench/cuda-spec-sampled.js [--reps 30] [--vocab 128256] [--k 3] [--output FILE]

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import type { GpuSamplingRow, Tensor } from '../src/backend/backend.js';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { packSamplingParams, SAMPLE_THREADS } from '../src/backend/cuda/sampling.js';
import { Rng } from '../src/engine/rng.js';
import { modelLikeLogits } from './model-like-logits.js';
import { Sampler, TokenCounts } from '../src/engine/sampler.js';
import { resolveSamplingParams } from '../src/engine/sampling-params.js';
import { planSampledVerification, verifyDrafts, verifyDraftsSampled } from '../src/engine/spec/verifier.js';
import { KernelTimer, wallUs } from './kernel-timer.js';
import { gpuResultFile, machineInfo } from './machine.js';

const { values } = parseArgs({ options: { reps: { type: 'string', default: '30' }, vocab: { type: 'string', default: '128256' }, k: { type: 'string', default: '3' }, output: { type: 'string' } } });
const reps = Number(values.reps);
const V = Number(values.vocab);
const K = Number(values.k);

const backend = new CudaBackend();
backend.warmUp();
const gpu = backend.device;
const d = backend.driver;
console.log(`GPU ${gpu.name} (sm_${gpu.computeCapability}, ${gpu.multiprocessors} SMs), vocabulary ${V}, k = ${K}`);
const timer = new KernelTimer(backend);
const rng = new Rng(1);
const none = new TokenCounts();

/** The favourite of a row (a draft the target often accepts). */
function favourite(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

const CASES: Array<{ name: string; knobs: { temperature: number; topK: number; topP: number; minP: number } }> = [
  { name: 'temperature 0.8', knobs: { temperature: 0.8, topK: 0, topP: 1, minP: 0 } },
  { name: 'top-p 0.9', knobs: { temperature: 0.8, topK: 0, topP: 0.9, minP: 0 } },
  { name: 'top-k 50, min-p 0.05', knobs: { temperature: 0.8, topK: 50, topP: 1, minP: 0.05 } },
];

interface Row {
  case: string;
  batch: number;
  rows: number;
  residualKernelUs: number;
  plainKernelUs: number;
  deviceUs: number;
  hostUs: number;
  readBackUs: number;
}
const results: Row[] = [];


for (const batch of [1, 8]) {
  const rows = batch * (K + 1);
  const host = new Float32Array(rows * V);
  for (let r = 0; r < rows; r++) host.set(modelLikeLogits(rng, V), r * V);
  // Each window's drafts: the favourite of its row half the time, else a random id.
  const drafts = Array.from({ length: batch }, (_, b) => Array.from({ length: K }, (_, i) => (rng.next() < 0.5 ? favourite(host.subarray((b * (K + 1) + i) * V, (b * (K + 1) + i + 1) * V)) : Math.floor(rng.next() * V))));
  const logits = d.memAlloc(host.byteLength);
  d.upload(logits, host);
  const out = d.memAlloc(rows * 8);
  const params = d.memAlloc(rows * 64);
  for (const c of CASES) {
    const samplers = () => Array.from({ length: batch }, (_, b) => new Sampler(resolveSamplingParams({ ...c.knobs, seed: 100 + b }), V));
    // The kernel alone: the step's rows in residual mode, and the same rows as plain draws.
    const plans = samplers().map((s, b) => planSampledVerification(drafts[b], s));
    const residualRows: GpuSamplingRow[] = plans.flatMap((p) => p.rows);
    const plainRows = residualRows.map(({ exclude: _, ...r }) => r);
    const kernel = async (knobs: GpuSamplingRow[]) => {
      d.upload(params, packSamplingParams(knobs));
      return timer.us(() => {}, () => d.launch(backend.kernels.fn('sampling.cu', 'sample_rows'), 'sample_rows', [rows, 1, 1], SAMPLE_THREADS, 'pppii', [logits, params, out, V, V]), reps);
    };
    const residualKernelUs = await kernel(residualRows);
    const plainKernelUs = await kernel(plainRows);

    // As the engine does it: plan from the streams, the step's logits tensor, sampleRows, verify.
    let t: Tensor | undefined;
    let live: Sampler[] = [];
    const deviceUs = await wallUs(backend,
      () => {
        t = backend.fromHost(host, [rows, V]);
        live = samplers();
      },
      () => {
        const ps = live.map((s, b) => planSampledVerification(drafts[b], s));
        const probs = new Float32Array(rows);
        const ids = backend.sampleRows(t!, V, ps.flatMap((p) => p.rows), probs);
        ps.forEach((plan, b) => {
          const [a, e] = [b * (K + 1), (b + 1) * (K + 1)];
          verifyDraftsSampled({ drafts: drafts[b], sampler: live[b], plan, draws: ids.subarray(a, e), excludedProbs: probs.subarray(a, e) });
        });
      },
      reps, 'call');
    // What it replaces: every window row's logits read back, then verifyDrafts per window.
    const readBack = new Float32Array(rows * V);
    const readBackUs = await wallUs(backend, () => {}, () => d.download(readBack, logits, readBack.byteLength), reps, 'call');
    const hostUs = await wallUs(backend,
      () => (live = samplers()),
      () => {
        d.download(readBack, logits, readBack.byteLength);
        live.forEach((s, b) => verifyDrafts({ drafts: drafts[b], logits: readBack.subarray(b * (K + 1) * V, (b + 1) * (K + 1) * V), sampler: s, counts: none }));
      },
      Math.max(5, Math.floor(reps / 5)), 'call');
    results.push({ case: c.name, batch, rows, residualKernelUs, plainKernelUs, deviceUs, hostUs, readBackUs });
    console.log(`${c.name}, batch ${batch} (${rows} rows): kernel ${residualKernelUs.toFixed(1)} µs residual, ${plainKernelUs.toFixed(1)} µs plain; GPU path ${deviceUs.toFixed(0)} µs; host path ${hostUs.toFixed(0)} µs (read back ${readBackUs.toFixed(0)} µs)`);
  }
  d.memFree(logits);
  d.memFree(out);
  d.memFree(params);
}

console.log(`\n| case | batch (rows) | kernel µs, residual rows | kernel µs, plain rows | GPU path µs (sampleRows + verify) | host path µs (read back + verifyDrafts) | of which read back µs |`);
console.log('|---|---|---|---|---|---|---|');
for (const r of results) console.log(`| ${r.case} | ${r.batch} (${r.rows}) | ${r.residualKernelUs.toFixed(1)} | ${r.plainKernelUs.toFixed(1)} | ${r.deviceUs.toFixed(0)} | ${r.hostUs.toFixed(0)} | ${r.readBackUs.toFixed(0)} |`);

const machine = machineInfo();
const file = values.output ?? gpuResultFile('cuda-spec-sampled', gpu.name, machine.date);
mkdirSync(dirname(file), { recursive: true });
writeFileSync(
  file,
  JSON.stringify({ bench: 'cuda-spec-sampled', machine, gpu: { name: gpu.name, computeCapability: gpu.computeCapability, multiprocessors: gpu.multiprocessors }, vocab: V, k: K, reps, results }, null, 2) + '\n',
);
console.log(`saved ${file}`);
timer.free();
