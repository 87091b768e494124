// Verifying sampled speculative windows on the GPU (sampleRows rows that exclude each draft, one id
// and one probability a row back; engine/spec/verifier.ts verifyDraftsSampled) against what it
// replaces: the window rows' logits read back and verifyDrafts on the host. Rows of Llama 3's 128,256
// ids; windows of k = 3 drafts (4 rows) at batch 1 and 8; plain temperature, top-p 0.9, top-k 50 with
// min-p. Per case: the kernel's device µs for the step's rows in residual mode and as plain draws (what
// the residual pass adds), the µs of the path as the engine takes it (sampleRows call + verification,
// wall clock), and the host path's µs (read back + verifyDrafts per window). Then sampled drafts (a
// draft model's): k draws keeping their q on the GPU and the verification against q, against reading
// the draft and target logits back and drawing and verifying on the host. Prints markdown tables;
// saves JSON with the GPU. Measures; never passes or fails.
//
//   node dist/bench/cuda-spec-sampled.js [--reps 30] [--vocab 128256] [--k 3] [--output FILE]

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import type { GpuSamplingRow, Tensor } from '../src/backend/backend.js';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { launchSampleRows, packSamplingParams, SAMPLE_PRE_BYTES } from '../src/backend/cuda/sampling.js';
import { Rng } from '../src/engine/rng.js';
import { modelLikeLogits } from './model-like-logits.js';
import { Sampler, TokenCounts } from '../src/engine/sampler.js';
import { resolveSamplingParams } from '../src/engine/sampling-params.js';
import { DraftTokenSampler } from '../src/engine/spec/proposer.js';
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
  const pre = d.memAlloc(rows * SAMPLE_PRE_BYTES);
  for (const c of CASES) {
    const samplers = () => Array.from({ length: batch }, (_, b) => new Sampler(resolveSamplingParams({ ...c.knobs, seed: 100 + b }), V));
    // The kernel alone: the step's rows in residual mode, and the same rows as plain draws.
    const plans = samplers().map((s, b) => planSampledVerification(drafts[b], s));
    const residualRows: GpuSamplingRow[] = plans.flatMap((p) => p.rows);
    const plainRows = residualRows.map(({ exclude: _, ...r }) => r);
    const kernel = async (knobs: GpuSamplingRow[]) => {
      d.upload(params, packSamplingParams(knobs));
      return timer.us(() => {}, () => launchSampleRows(backend, { x: logits, params, pre, out, dist: 0 }, rows, V, V, 0), reps);
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
  d.memFree(pre);
}

console.log(`\n| case | batch (rows) | kernel µs, residual rows | kernel µs, plain rows | GPU path µs (sampleRows + verify) | host path µs (read back + verifyDrafts) | of which read back µs |`);
console.log('|---|---|---|---|---|---|---|');
for (const r of results) console.log(`| ${r.case} | ${r.batch} (${r.rows}) | ${r.residualKernelUs.toFixed(1)} | ${r.plainKernelUs.toFixed(1)} | ${r.deviceUs.toFixed(0)} | ${r.hostUs.toFixed(0)} | ${r.readBackUs.toFixed(0)} |`);

// ---- Sampled drafts (a draft model): their draws and q, then the verification against q -----------
// Per step of `batch` sequences: K draft passes, each drawing a token a sequence from [batch × V] draft
// logits, then the verification of the windows ([batch · (K + 1) × V] target logits). The GPU path:
// each pass one sampleRows writing q to a row of dist (DraftTokenSampler.row), the verification one
// sampleRows against those rows, verifyDraftsSampled. The host path it replaces: each pass's logits
// read back and DraftTokenSampler.choose (q on the host), the target's logits read back and
// verifyDrafts with q. Forwards not included: what sampling and verification cost beside them.
interface DraftRow {
  case: string;
  batch: number;
  deviceUs: number;
  hostUs: number;
}
const draftResults: DraftRow[] = [];
for (const batch of [1, 8]) {
  const rows = batch * (K + 1);
  const target = new Float32Array(rows * V);
  for (let r = 0; r < rows; r++) target.set(modelLikeLogits(rng, V), r * V);
  // The draft's logits for pass j, row b: the target's row for draft j with noise (a draft close to its target).
  const passes = Array.from({ length: K }, (_, j) => {
    const x = new Float32Array(batch * V);
    for (let b = 0; b < batch; b++) {
      const src = target.subarray((b * (K + 1) + j) * V, (b * (K + 1) + j + 1) * V);
      for (let i = 0; i < V; i++) x[b * V + i] = src[i] + 0.5 * (rng.next() - 0.5);
    }
    return x;
  });
  for (const c of CASES) {
    const params = (b: number) => resolveSamplingParams({ ...c.knobs, seed: 200 + b });
    let samplers: Sampler[] = [];
    let drafters: DraftTokenSampler[] = [];
    // The logits on the device afresh for each call (activations last one synchronous run).
    let targetT: Tensor;
    let passT: Tensor[] = [];
    const fresh = () => {
      samplers = Array.from({ length: batch }, (_, b) => new Sampler(params(b), V));
      drafters = samplers.map((s) => new DraftTokenSampler(s));
      targetT = backend.fromHost(target, [rows, V]);
      passT = passes.map((x) => backend.fromHost(x, [batch, V]));
    };
    const deviceUs = await wallUs(backend, fresh, () => {
      const dist = backend.emptyTensor([batch * K, V]);
      const drafts: number[][] = Array.from({ length: batch }, () => []);
      const probs: number[][] = Array.from({ length: batch }, () => []);
      for (let j = 0; j < K; j++) {
        const p = new Float32Array(batch);
        const ids = backend.sampleRows(passT[j], V, drafters.map((d, b) => d.row(b * K + j)), p, dist);
        ids.forEach((id, b) => (drafts[b].push(id), probs[b].push(p[b])));
      }
      const plans = samplers.map((s, b) => planSampledVerification(drafts[b], s, none, { dist, rows: drafts[b].map((_, j) => b * K + j), tokenProbs: probs[b] }));
      const p = new Float32Array(rows);
      const ids = backend.sampleRows(targetT, V, plans.flatMap((pl) => pl.rows), p, dist);
      plans.forEach((plan, b) => {
        const [a, e] = [b * (K + 1), (b + 1) * (K + 1)];
        verifyDraftsSampled({ drafts: drafts[b], sampler: samplers[b], plan, draws: ids.subarray(a, e), excludedProbs: p.subarray(a, e) });
      });
    }, reps, 'call');
    const hostUs = await wallUs(backend, fresh, () => {
      const drafts: number[][] = Array.from({ length: batch }, () => []);
      const qs: Float32Array[][] = Array.from({ length: batch }, () => []);
      for (let j = 0; j < K; j++) {
        const x = backend.toHost(passT[j]);
        drafters.forEach((d, b) => {
          const { token, q } = d.choose(x.subarray(b * V, (b + 1) * V));
          drafts[b].push(token);
          qs[b].push(q!);
        });
      }
      const logits = backend.toHost(targetT);
      samplers.forEach((s, b) => verifyDrafts({ drafts: drafts[b], probs: qs[b], logits: logits.subarray(b * (K + 1) * V, (b + 1) * (K + 1) * V), sampler: s, counts: none }));
    }, Math.max(3, Math.floor(reps / 10)), 'call');
    draftResults.push({ case: c.name, batch, deviceUs, hostUs });
    console.log(`sampled drafts, ${c.name}, batch ${batch}, k ${K}: GPU path ${deviceUs.toFixed(0)} µs, host path ${hostUs.toFixed(0)} µs a step`);
  }
}
console.log(`\n| sampled drafts (draft model), k = ${K} | batch | GPU path µs a step (k draws keeping q + verification against q) | host path µs a step (logits read back, q and verifyDrafts on the host) | speed-up |`);
console.log('|---|---|---|---|---|');
for (const r of draftResults) console.log(`| ${r.case} | ${r.batch} | ${r.deviceUs.toFixed(0)} | ${r.hostUs.toFixed(0)} | ${(r.hostUs / r.deviceUs).toFixed(1)}× |`);

const machine = machineInfo();
const file = values.output ?? gpuResultFile('cuda-spec-sampled', gpu.name, machine.date);
mkdirSync(dirname(file), { recursive: true });
writeFileSync(
  file,
  JSON.stringify({ bench: 'cuda-spec-sampled', machine, gpu: { name: gpu.name, computeCapability: gpu.computeCapability, multiprocessors: gpu.multiprocessors }, vocab: V, k: K, reps, results, sampledDrafts: draftResults }, null, 2) + '\n',
);
console.log(`saved ${file}`);
timer.free();
