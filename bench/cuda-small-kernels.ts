// The decode step's small kernels on CUDA at Llama-3.1-8B shapes (hidden 4096, 32 heads over 8 KV
// heads of 128): rmsNorm / addRmsNorm (the vector kernels against the scalar block-per-row ones they
// replaced) at 1, 8 and 2048 rows of 4096 and 8192; RoPE (the grid over (token, pair) against the
// original block per token); RoPE + KV write fused against rope, rope, writeKv. Device µs per call
// from events (median of 5 trials of many back-to-back launches, after a warm-up trial), then what
// one decode step of 32 layers spends in them. Prints markdown tables; saves JSON with the GPU.
// Measures; never passes or fails.
//
//   node dist/bench/cuda-small-kernels.js [--reps 100] [--output FILE]

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type { Tensor } from '../src/backend/backend.js';
import { CudaBackend, type CudaTensor } from '../src/backend/cuda/cuda-backend.js';
import { gpuResultFile, machineInfo } from './machine.js';

const { values } = parseArgs({ options: { reps: { type: 'string', default: '100' }, output: { type: 'string' } } });
const reps = Number(values.reps);

const backend = new CudaBackend();
backend.warmUp();
const gpu = backend.device;
const d = backend.driver;
console.log(`GPU ${gpu.name} (sm_${gpu.computeCapability}, ${gpu.multiprocessors} SMs)`);

// A device copy queued before the timed launches keeps the GPU busy while the host queues them (a
// launch through koffi costs 5–7 µs of host time, more than these kernels), so the events time the
// kernels back to back, as in a decode step.
const SPACER_BYTES = 2 ** 31;
const spacerSrc = d.memAlloc(SPACER_BYTES);
const spacerDst = d.memAlloc(SPACER_BYTES);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** Device µs per call of `fn` (median of 5 trials of `reps` calls, after a warm-up trial). */
async function deviceUs(setup: () => void, fn: () => void): Promise<number> {
  const e0 = d.createEvent();
  const e1 = d.createEvent();
  const trials: number[] = [];
  for (let trial = 0; trial < 6; trial++) {
    await nextTurn(); // the last trial's activations go back to the pool
    setup();
    d.copyDeviceToDevice(spacerDst, spacerSrc, SPACER_BYTES);
    d.recordEvent(e0);
    for (let i = 0; i < reps; i++) fn();
    d.recordEvent(e1);
    const ms = d.elapsedMs(e0, e1);
    if (trial > 0) trials.push((ms * 1000) / reps);
  }
  return median(trials);
}

/** A kernel launched directly (the replaced kernels the backend no longer calls). */
const launchRaw = (file: string, kernel: string, grid: [number, number, number], block: number, kinds: string, args: number[]) =>
  d.launch(backend.kernels.fn(file, kernel), kernel, grid, block, kinds, args);
const ptr = (t: Tensor) => (t as CudaTensor).ptr;
const random = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + seed));

interface Row {
  op: string;
  shape: string;
  tokens: number;
  kernel: string;
  us: number;
}
const rows: Row[] = [];
const record = (op: string, shape: string, tokens: number, kernel: string, us: number) => {
  rows.push({ op, shape, tokens, kernel, us });
  console.log(`${op} ${shape} × ${tokens}: ${kernel} ${us.toFixed(2)} µs`);
};

// ---- norms ----

const EPS = 1e-5;
for (const cols of [4096, 8192]) {
  const w = backend.loadDense('norm', { dtype: 'F32', shape: [cols], bytes: new Uint8Array(random(cols, 1).map((x) => 1 + 0.1 * x).buffer) });
  const wPtr = (w as unknown as { ptr: number }).ptr;
  for (const T of [1, 8, 2048]) {
    let x!: Tensor;
    let r!: Tensor;
    let out!: Tensor;
    const [xh, rh] = [random(T * cols, 2), random(T * cols, 3)];
    const setup = () => {
      x = backend.fromHost(xh, [T, cols]);
      r = backend.fromHost(rh, [T, cols]);
      out = backend.fromHost(new Float32Array(T * cols), [T, cols]);
    };
    const shape = `${T}×${cols}`;
    record('rmsNorm', shape, T, 'vector (new)', await deviceUs(setup, () => backend.release(backend.rmsNorm(x, w, EPS))));
    record('rmsNorm', shape, T, 'scalar block per row (old)', await deviceUs(setup, () => launchRaw('norm.cu', 'rms_norm', [T, 1, 1], 512, 'pppif', [ptr(x), wPtr, ptr(out), cols, EPS])));
    record('addRmsNorm', shape, T, 'vector (new)', await deviceUs(setup, () => backend.release(backend.addRmsNorm(x, r, w, EPS))));
    record('addRmsNorm', shape, T, 'scalar block per row (old)', await deviceUs(setup, () => launchRaw('norm.cu', 'add_rms_norm', [T, 1, 1], 512, 'ppppif', [ptr(x), ptr(r), wPtr, ptr(out), cols, EPS])));
  }
}

// ---- RoPE and the KV write (Llama-3.1-8B: 32 q heads, 8 KV heads, head_dim 128) ----

const HEADS = 32;
const KV_HEADS = 8;
const HEAD_DIM = 128;
const half = HEAD_DIM / 2;
const spec = { numLayers: 1, numBlocks: 2048 / 16, blockSize: 16, numKvHeads: KV_HEADS, headDim: HEAD_DIM };
const cache = backend.allocKvCache(spec);
// Launched directly on tables and slots uploaded once: the ops' host-side checks (contents compared
// with the last upload) would take longer than the kernels at 2048 tokens.
const uploads = (backend as unknown as { uploads: { get(key: string, a: Float32Array | Int32Array): number } }).uploads;
const width = KV_HEADS * HEAD_DIM;
for (const T of [1, 8, 2048]) {
  const ang = random(T * half, 4).map((a) => a * 40);
  const cos = ang.map(Math.cos);
  const sin = ang.map(Math.sin);
  const slots = Int32Array.from({ length: T }, (_, i) => (i * 7) % (spec.numBlocks * spec.blockSize));
  const [qh, kh, vh] = [random(T * HEADS * HEAD_DIM, 5), random(T * width, 6), random(T * width, 7)];
  let q!: Tensor;
  let k!: Tensor;
  let v!: Tensor;
  let c = 0;
  let sn = 0;
  let sl = 0;
  const setup = () => {
    q = backend.fromHost(qh, [T, HEADS * HEAD_DIM]);
    k = backend.fromHost(kh, [T, width]);
    v = backend.fromHost(vh, [T, width]);
    [c, sn, sl] = [uploads.get('rope.cos', cos), uploads.get('rope.sin', sin), uploads.get('slots', slots)];
  };
  const kc = (cache as unknown as { k: number }).k;
  const vc = (cache as unknown as { v: number }).v;
  const ropeNew = (x: Tensor, heads: number) =>
    launchRaw('rope-kv.cu', 'rope', [T, Math.ceil((heads * half) / 256), 1], 256, 'pppiii', [ptr(x), c, sn, heads * HEAD_DIM, HEAD_DIM, half]);
  const qShape = `q ${HEADS}×${HEAD_DIM}`;
  record('rope', qShape, T, 'grid over (token, pair) (new)', await deviceUs(setup, () => ropeNew(q, HEADS)));
  record('rope', qShape, T, 'block per token (old)', await deviceUs(setup, () =>
    launchRaw('elementwise.cu', 'rope_per_token', [T, 1, 1], 128, 'pppiii', [ptr(q), c, sn, HEADS * HEAD_DIM, HEAD_DIM, half])));
  const shape = `q ${HEADS}, kv ${KV_HEADS} × ${HEAD_DIM}`;
  const items = HEADS * half + KV_HEADS * half + width;
  record('rope + writeKv', shape, T, 'rope_write_kv (fused)', await deviceUs(setup, () =>
    launchRaw('rope-kv.cu', 'rope_write_kv', [T, Math.ceil(items / 256), 1], 256, 'ppppppppiiiiff', [ptr(q), ptr(k), ptr(v), c, sn, kc, vc, sl, HEADS, KV_HEADS, HEAD_DIM, half, 1, 1])));
  record('rope + writeKv', shape, T, 'rope, rope, write_kv (new rope)', await deviceUs(setup, () => {
    ropeNew(q, HEADS);
    ropeNew(k, KV_HEADS);
    launchRaw('kv-cache.cu', 'write_kv', [T, 1, 1], 512, 'pppppiff', [kc, vc, ptr(k), ptr(v), sl, width, 1, 1]);
  }));
}

// ---- tables ----

console.log('\n| op | shape | tokens | kernel | µs |\n|---|---|---:|---|---:|');
for (const r of rows) console.log(`| ${r.op} | ${r.shape} | ${r.tokens} | ${r.kernel} | ${r.us.toFixed(2)} |`);

// One decode step of a Llama-3.1-8B-shaped model at batch 1: 2 norms a layer (63 addRmsNorm + 1
// rmsNorm, the final norm included) and the rope/KV write of 32 layers.
const us = (op: string, kernel: string, T = 1, cols = 4096) => rows.find((r) => r.op === op && r.tokens === T && r.kernel === kernel && (op.includes('Norm') ? r.shape.endsWith(`×${cols}`) : true))!.us;
const LAYERS = 32;
const before = 63 * us('addRmsNorm', 'scalar block per row (old)') + 2 * us('rmsNorm', 'scalar block per row (old)') +
  LAYERS * (2 * us('rope', 'block per token (old)') + (us('rope + writeKv', 'rope, rope, write_kv (new rope)') - 2 * us('rope', 'grid over (token, pair) (new)')));
const after = 63 * us('addRmsNorm', 'vector (new)') + 2 * us('rmsNorm', 'vector (new)') + LAYERS * us('rope + writeKv', 'rope_write_kv (fused)');
console.log(`\ndecode step, batch 1, 32 layers: norms + RoPE + KV write ${before.toFixed(0)} µs before, ${after.toFixed(0)} µs now (goal ≤ 300 µs)`);

const machine = machineInfo();
const file = values.output ?? gpuResultFile('cuda-small-kernels', gpu.name, machine.date);
mkdirSync(dirname(file), { recursive: true });
writeFileSync(
  file,
  JSON.stringify({ bench: 'cuda-small-kernels', machine, gpu: { name: gpu.name, computeCapability: gpu.computeCapability, multiprocessors: gpu.multiprocessors }, reps, rows, decodeStepUs: { before, after } }, null, 2) + '\n',
);
console.log(`saved ${file}`);
d.memFree(spacerSrc);
d.memFree(spacerDst);
