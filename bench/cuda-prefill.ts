// Time to first token of one long prompt on the CUDA backend, at Llama-3.1-8B shapes with random
// weights made on the GPU (bf16, and fp8 where the backend can make fp8 weights), against the
// cuBLAS-bound time: the sum, over every linear of the forward, of cuBLASLt's own GEMM time at the
// same shape and precision, on random operands (FP8 activations: random rows quantised per token, as
// the forward's are; the constant-code figure used before is saved too). Also times each part alone (the linears as the forward runs them, and
// attention) to say where the rest goes. Prints a table, saves JSON with the GPU. Measures; never
// passes or fails.
//
//   node --expose-gc dist/bench/cuda-prefill.js [--prompt-len 2048] [--formats bf16,fp8] [--repeats 3] [--no-tiled] [--kv-dtype bf16|float32] [--output FILE]
//
// The issue's goal: TTFT within 1.5× of the cuBLAS-bound time.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { mlp, type Backend, type KvCacheStorage, type RandomWeightSpec, type Weight } from '../src/backend/backend.js';
import { KV_DTYPE_BYTES, type KvDtype } from '../src/backend/backend.js';
import { CudaBackend, CudaDenseWeight, type CudaTensor } from '../src/backend/cuda/cuda-backend.js';
import { siluStaging, type GemmOperand } from '../src/backend/cuda/cublaslt.js';
import type { DevicePtr } from '../src/backend/cuda/driver.js';
import { DEFAULT_ENGINE_OPTIONS, Engine } from '../src/engine/engine.js';
import { resolveSamplingParams } from '../src/engine/sampling-params.js';
import { parseModelConfig, type ModelConfig } from '../src/model/config.js';
import { LlamaModel, type ForwardBatch } from '../src/model/llama.js';
import { loadDummyWeights } from '../src/model/load/dummy.js';
import type { LayerWeights } from '../src/model/weights.js';
import { findPreset } from '../src/plan/presets.js';
import type { QuantizationMethod } from '../src/quant/online.js';
import { randomTokenIds } from './engine-timing.js';
import { OpProfiler, type OpProfile } from './op-profile.js';
import { gpuResultFile, machineInfo } from './machine.js';

const { values } = parseArgs({
  options: {
    'prompt-len': { type: 'string', default: '2048' },
    formats: { type: 'string', default: 'bf16,fp8' },
    repeats: { type: 'string', default: '3' },
    'no-tiled': { type: 'boolean', default: false },
    'kv-dtype': { type: 'string', default: 'bf16' },
    output: { type: 'string' },
  },
});
const L = Number(values['prompt-len']);
const repeats = Number(values.repeats);

const kvDtype = values['kv-dtype'] as KvDtype;
if (!(kvDtype in KV_DTYPE_BYTES)) throw new Error(`--kv-dtype ${kvDtype}: bf16 or float32`);
const backend = new CudaBackend({ kvDtype });
/** Timed too, interleaved, for comparison. */
const otherKvDtype: KvDtype = kvDtype === 'bf16' ? 'float32' : 'bf16';
backend.warmUp();
const gpu = backend.device;
const blas = backend.cublasLt();
console.log(`GPU ${gpu.name} (sm_${gpu.computeCapability}, ${gpu.multiprocessors} SMs, ${(gpu.totalMemoryBytes / 2 ** 30).toFixed(1)} GiB); KV cache ${kvDtype}`);
console.log(blas ? `cuBLASLt ${blas.lt.version} (${blas.lt.path})` : 'cuBLASLt not found: prefill runs on the tiled float32 kernel and there is no cuBLAS-bound time');

const raw = findPreset('llama-3.1-8b')!;
const config = parseModelConfig(raw, 'llama-3.1-8b');
const randomIds = randomTokenIds(777);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/** Device milliseconds per call of `fn`: events around `reps` calls, median of 5 trials after a warm-up, each trial in its own step. */
async function deviceMs(setup: () => void, fn: () => void, reps: number): Promise<number> {
  const d = backend.driver;
  const e0 = d.createEvent();
  const e1 = d.createEvent();
  const trials: number[] = [];
  for (let trial = 0; trial < 6; trial++) {
    await nextTurn();
    setup();
    d.recordEvent(e0);
    for (let i = 0; i < reps; i++) fn();
    d.recordEvent(e1);
    const ms = d.elapsedMs(e0, e1) / reps;
    if (trial > 0) trials.push(ms);
  }
  return median(trials);
}

/** A float32 activation [rows, cols] of smooth pseudo-random values, made once on the host. */
const hostActivations = new Map<string, Float32Array>();
function activation(rows: number, cols: number): CudaTensor {
  const key = `${rows}x${cols}`;
  let h = hostActivations.get(key);
  if (!h) {
    h = new Float32Array(rows * cols);
    let s = 12345;
    for (let i = 0; i < h.length; i++) h[i] = ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 30 - 1) * 0.5;
    hostActivations.set(key, h);
  }
  return backend.fromHost(h, [rows, cols]) as CudaTensor;
}

/** One sequence of `ids` from position 0, one step, logits for the last token. */
function prefillBatch(ids: number[], blocks: number): ForwardBatch {
  const n = ids.length;
  return {
    numTokens: n, numSeqs: 1, tokens: Int32Array.from(ids), positions: Int32Array.from({ length: n }, (_, i) => i), seqIndex: new Int32Array(n),
    slots: Int32Array.from({ length: n }, (_, i) => i), blockTables: Int32Array.from({ length: blocks }, (_, i) => i), maxBlocksPerSeq: blocks, logitRows: Int32Array.of(n - 1),
  };
}

type LinearName = 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down';
const LINEARS: LinearName[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

interface LinearTiming {
  name: LinearName | 'lm_head';
  N: number;
  K: number;
  tokens: number;
  /** cuBLASLt's GEMM alone (operands already in the GEMM's type). */
  gemmMs: number | null;
  /** FP8 only: the same GEMM on constant activation codes, as the bound was measured before. */
  gemmConstCodesMs?: number | null;
  gemmTflops: number | null;
  /** backend.linear as the forward calls it (activation conversion and FP8 scaling included). */
  linearMs: number;
}

interface FormatResult {
  format: string;
  skipped?: string;
  weightBytesOnDevice?: number;
  /** The forward alone: one 2048-token step, logits of the last token copied to the host. */
  forwardTtftMs?: number;
  forwardTtftRunsMs?: number[];
  /** Through the engine (scheduler, sampler), prompt submitted to first token. */
  engineTtftMs?: number;
  engineMaxNumBatchedTokens?: number;
  /** The forward on the tiled float32 GEMM, for comparison (one run). */
  tiledForwardMs?: number;
  /** One layer's backend.mlp, device ms, with the intermediate in 16 bits and in float32. */
  mlpLayerMs?: { half: number; f32: number; siluF32: number; siluHalf: number };
  /** The FP8 MLP's middle alone (bf16 gate and up → e4m3 codes and scales): µs staged through shared memory and in registers, and bytes over the device copy bandwidth. */
  fp8Middle?: { stagedUs: number | null; registersUs: number; bytes: number; copyGBs: number; stagedOfCopy: number | null; registersOfCopy: number };
  /** The forward with the MLP's intermediate in float32 (backend.fusedMlp = false), median of the repeats. */
  float32MlpForwardMs?: number;
  /** The forward with a KV cache of the other element type (otherKvDtype), median of the repeats. */
  otherKvForwardMs?: number;
  /**
   * The forward with the residual added by the norms and every norm writing its float32 rows
   * (backend.residualInGemm and deferNormOutput false: the fourteenth phase's start), median of the repeats.
   */
  separateResidualForwardMs?: number;
  cublasBoundMs?: number | null;
  /** FP8: the bound on constant activation codes, as measured before the thirteenth phase. */
  cublasBoundConstCodesMs?: number | null;
  linearsInForwardMs?: number;
  attentionMs?: number;
  restMs?: number;
  linears?: LinearTiming[];
  prefillPath?: { half: number; fp8: number };
  /** One forward with events around every backend op (op-profile.ts): device ms by op, and the GPU's idle gaps. */
  opProfile?: OpProfile;
  opProfiles?: Array<{ wallMs: number; spanMs: number; gapsMs: number }>;
}

/** The weights' own random generator where the backend has one; for bf16 without it, randomBf16 on the GPU. */
function dummyTarget(quantization: QuantizationMethod | undefined): Backend | string {
  if ((backend as Backend).randomWeight) return backend;
  if (quantization) return `the CUDA backend has no randomWeight (made by the quantized-weights work); building ${quantization} weights at 8B shapes on the host is too slow`;
  const randomWeight = (_name: string, spec: RandomWeightSpec): Weight => backend.randomBf16(spec.shape, spec.seed, spec.scale);
  // Everything else goes to the backend itself (reads and writes alike).
  return new Proxy(backend, { get: (t, key) => (key === 'randomWeight' ? randomWeight : Reflect.get(t, key)) }) as Backend;
}

/** cuBLASLt operand pointer and type of a layer weight, when it is a plain bf16 matrix or FP8 codes. */
function gemmOperand(w: Weight): { ptr: DevicePtr; type: GemmOperand } | undefined {
  if (w instanceof CudaDenseWeight && (w.dtype === 'bf16' || w.dtype === 'f16')) return { ptr: w.ptr, type: w.dtype };
  const codes = (w as { codes?: unknown }).codes;
  if (w.format === 'fp8' && typeof codes === 'number') return { ptr: codes, type: 'e4m3' };
  return undefined;
}

/** One KV cache per model and element type, kept across timed runs, so no run pays for allocating (or the collector freeing) 0.5 GB. */
const kvCaches = new WeakMap<LlamaModel, Map<KvDtype, KvCacheStorage>>();

async function timeTtft(model: LlamaModel, runs: number, dtype: KvDtype = kvDtype): Promise<number[]> {
  const c = model.config;
  const blocks = Math.ceil((L + 1) / 16);
  const caches = kvCaches.get(model) ?? new Map<KvDtype, KvCacheStorage>();
  kvCaches.set(model, caches);
  let kv = caches.get(dtype);
  if (!kv) caches.set(dtype, (kv = backend.allocKvCache({ numLayers: c.numLayers, numBlocks: blocks, blockSize: 16, numKvHeads: c.numKvHeads, headDim: c.headDim, dtype })));
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    await nextTurn();
    const batch = prefillBatch(randomIds(L, c.vocabSize), blocks);
    backend.synchronize();
    const t0 = performance.now();
    model.forward(batch, kv); // ends with the logits' copy to the host: the GPU is done
    times.push(performance.now() - t0);
  }
  return times;
}

async function timeEngine(model: LlamaModel, runs: number): Promise<{ ms: number[]; maxNumBatchedTokens: number }> {
  const options = { ...DEFAULT_ENGINE_OPTIONS(L + 16), kvCacheTokens: L + 64, enablePrefixCaching: false };
  const engine = new Engine(model, undefined, [], options);
  const params = resolveSamplingParams({ maxTokens: 1, temperature: 0, ignoreEos: true });
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    await nextTurn();
    backend.synchronize();
    const t0 = performance.now();
    engine.addRequest(`r${i}`, randomIds(L, model.config.vocabSize), params);
    let first = 0;
    while (engine.hasWork()) {
      const outs = engine.step();
      if (!first && outs.some((o) => o.newTokenIds.length > 0)) first = performance.now();
      await nextTurn(); // as LLM does between steps
    }
    ms.push(first - t0);
  }
  return { ms, maxNumBatchedTokens: options.maxNumBatchedTokens };
}

async function timeLinears(layer: LayerWeights, lmHead: Weight): Promise<LinearTiming[]> {
  const out: LinearTiming[] = [];
  const list: Array<[LinearTiming['name'], Weight, number]> = [...LINEARS.map((n) => [n, layer[n], L] as [LinearName, Weight, number]), ['lm_head', lmHead, 1]];
  for (const [name, w, T] of list) {
    const [N, K] = w.shape;
    let x = activation(T, K);
    const linearMs = await deviceMs(() => (x = activation(T, K)), () => backend.linear(x, w), T > 8 ? 5 : 20);
    let gemmMs: number | null = null;
    let gemmConstCodesMs: number | undefined;
    const op = gemmOperand(w);
    if (blas && op) {
      // B in the GEMM's type: random bf16/f16 values, or random activations quantised per token to
      // e4m3 as the forward does. (Until the thirteenth phase the FP8 bound took constant codes,
      // 1.25…1.625: tensor cores draw less power on them, and those GEMMs ran faster than on real
      // activations. Both are timed; the bound is the random one.)
      const bytes = T * K * (op.type === 'e4m3' ? 1 : 2);
      const b = backend.driver.memAlloc(bytes);
      const d = backend.driver.memAlloc(T * Math.ceil(N / 4) * 4 * 4);
      const shape = { type: op.type, m: N, n: T, k: K, ldd: op.type === 'e4m3' ? Math.ceil(N / 4) * 4 : N };
      let constMs: number | null = null;
      if (op.type === 'e4m3') {
        backend.driver.fill32(b, 0x3a3b3c3d, bytes / 4);
        constMs = await deviceMs(() => undefined, () => blas.lt.matmul(shape, op.ptr, b, d), T > 8 ? 10 : 50);
        const scales = backend.driver.memAlloc(T * 4);
        blas.quantizeRows(activation(T, K).ptr, T, K, b, scales);
        backend.driver.synchronize();
        backend.driver.memFree(scales);
      } else backend.driver.copyDeviceToDevice(b, (backend.randomBf16([T, K], 99, 1) as CudaDenseWeight).ptr, bytes);
      gemmMs = await deviceMs(() => undefined, () => blas.lt.matmul(shape, op.ptr, b, d), T > 8 ? 10 : 50);
      gemmConstCodesMs = constMs ?? undefined;
      backend.driver.synchronize();
      backend.driver.memFree(b);
      backend.driver.memFree(d);
    }
    out.push({ name, N, K, tokens: T, gemmMs, gemmTflops: gemmMs ? (2 * N * K * T) / (gemmMs / 1000) / 1e12 : null, linearMs, ...(gemmConstCodesMs !== undefined ? { gemmConstCodesMs } : {}) });
    await nextTurn();
  }
  return out;
}

/** One layer's MLP over the whole prompt (backend.mlp), with its intermediate in 16 bits and in float32: device ms each. */
async function timeMlp(layer: LayerWeights, hidden: number): Promise<{ half: number; f32: number; siluF32: number; siluHalf: number }> {
  let x = activation(L, hidden);
  const once = () => deviceMs(() => (x = activation(L, hidden)), () => mlp(backend, x, layer.gate, layer.up, layer.down), 5);
  const half = await once();
  backend.fusedMlp = false;
  const f32 = await once();
  backend.fusedMlp = true;
  // Its elementwise middle alone: silu·mul over [L, intermediate] in float32, and in bf16.
  const n = L * layer.gate.shape[0];
  let g = activation(L, layer.gate.shape[0]);
  let u = g;
  const fresh = () => {
    g = activation(L, layer.gate.shape[0]);
    u = activation(L, layer.gate.shape[0]);
  };
  const siluF32 = await deviceMs(fresh, () => backend.release(backend.siluMul(g, u)), 10);
  const hb = backend.driver.memAlloc(3 * n * 2);
  const siluHalf = blas ? await deviceMs(() => undefined, () => blas.siluMulHalf(hb, hb + n * 2, hb + n * 4, n, 'bf16'), 10) : NaN;
  backend.driver.synchronize();
  backend.driver.memFree(hb);
  return { half, f32, siluF32, siluHalf };
}

/**
 * The FP8 MLP's middle (CublasLtPrefill.siluMulQuantizeBf16) over [L, intermediate]: the staged kernel
 * and the register-pipelined one, against the bytes it must move (gate and up read, codes and scales
 * written) at the device copy bandwidth.
 */
async function timeFp8Middle(N: number): Promise<FormatResult['fp8Middle']> {
  if (!blas) return undefined;
  const d = backend.driver;
  // Random bf16 [L, N] matrices stand in for the gate and up GEMMs' outputs.
  const gate = (backend.randomBf16([L, N], 7, 1) as CudaDenseWeight).ptr, up = (backend.randomBf16([L, N], 8, 1) as CudaDenseWeight).ptr;
  const codes = d.memAlloc(L * N), scales = d.memAlloc(L * 4);
  const run = async (staged: boolean) => {
    blas.stagedSiluRows = staged;
    try {
      return await deviceMs(() => undefined, () => blas.siluMulQuantizeBf16(gate, up, L, N, codes, scales), 20);
    } finally {
      blas.stagedSiluRows = true;
    }
  };
  const stagedMs = siluStaging(N, gpu.sharedPerBlockOptin, [gate, up, codes]) ? await run(true) : null;
  const registersMs = await run(false);
  d.synchronize();
  for (const p of [codes, scales]) d.memFree(p);
  const bytes = L * N * 5 + L * 4;
  const copyGBs = backend.measureCopyBandwidth();
  const ofCopy = (ms: number) => bytes / (copyGBs * 1e9) / (ms / 1000);
  return { stagedUs: stagedMs && stagedMs * 1000, registersUs: registersMs * 1000, bytes, copyGBs, stagedOfCopy: stagedMs && ofCopy(stagedMs), registersOfCopy: ofCopy(registersMs) };
}

/** One layer's attention over the whole causal prompt (the KV written first), device time. */
async function timeAttention(c: ModelConfig): Promise<number> {
  const blocks = Math.ceil(L / 16);
  const kv = backend.allocKvCache({ numLayers: 1, numBlocks: blocks, blockSize: 16, numKvHeads: c.numKvHeads, headDim: c.headDim });
  const batch = prefillBatch(Array.from({ length: L }, () => 0), blocks);
  const width = c.numKvHeads * c.headDim;
  backend.writeKv(kv, 0, activation(L, width), activation(L, width), batch.slots);
  let q = activation(L, c.numHeads * c.headDim);
  return deviceMs(() => (q = activation(L, c.numHeads * c.headDim)), () => backend.attention(q, kv, 0, batch, 1 / Math.sqrt(c.headDim), 0), 2);
}

const results: FormatResult[] = [];
for (const format of values.formats!.split(',')) {
  (globalThis as { gc?: () => void }).gc?.();
  await nextTurn();
  const quantization = format === 'bf16' ? undefined : (format as QuantizationMethod);
  const target = dummyTarget(quantization);
  if (typeof target === 'string') {
    console.log(`skipping ${format}: ${target}`);
    results.push({ format, skipped: target });
    continue;
  }
  const needBytes = (quantization ? 9e9 : 16.1e9) + 4 * 2 ** 30;
  const { freeBytes } = backend.driver.memInfo();
  if (freeBytes < needBytes) {
    const why = `${(freeBytes / 1e9).toFixed(1)} GB free, it needs ${(needBytes / 1e9).toFixed(1)} GB (run with node --expose-gc so the last format's weights are freed)`;
    console.log(`skipping ${format}: ${why}`);
    results.push({ format, skipped: why });
    continue;
  }
  const bytesBefore = backend.weightBytesOnDevice;
  const weights = loadDummyWeights(config, target, { quantization, seed: 1 });
  const model = new LlamaModel(config, weights, backend);
  backend.synchronize();
  const r: FormatResult = { format, weightBytesOnDevice: backend.weightBytesOnDevice - bytesBefore };
  console.log(`\n${format}: ${(r.weightBytesOnDevice! / 1e9).toFixed(2)} GB of weights; prompt of ${L} tokens`);

  backend.prefillGemm = 'auto';
  const path0 = blas ? { ...blas.counters } : { half: 0, fp8: 0 };
  await timeTtft(model, 1); // plans cuBLASLt's GEMMs and compiles kernels
  await timeTtft(model, 1, otherKvDtype);
  // The MLP's intermediate in 16 bits (the default) and in float32, and the other KV element type,
  // runs interleaved so that drift of the machine (seen: ±10% between runs minutes apart) falls on
  // all alike.
  r.forwardTtftRunsMs = [];
  const f32Runs: number[] = [];
  const otherKvRuns: number[] = [];
  const separateRuns: number[] = [];
  for (let i = 0; i < repeats; i++) {
    r.forwardTtftRunsMs.push(...(await timeTtft(model, 1)));
    backend.fusedMlp = false;
    f32Runs.push(...(await timeTtft(model, 1)));
    backend.fusedMlp = true;
    otherKvRuns.push(...(await timeTtft(model, 1, otherKvDtype)));
    backend.residualInGemm = backend.deferNormOutput = false;
    separateRuns.push(...(await timeTtft(model, 1)));
    backend.residualInGemm = backend.deferNormOutput = true;
  }
  r.forwardTtftMs = median(r.forwardTtftRunsMs);
  r.float32MlpForwardMs = median(f32Runs);
  r.otherKvForwardMs = median(otherKvRuns);
  r.separateResidualForwardMs = median(separateRuns);
  r.prefillPath = blas ? { half: blas.counters.half - path0.half, fp8: blas.counters.fp8 - path0.fp8 } : undefined;
  const eng = await timeEngine(model, 1 + repeats);
  r.engineTtftMs = median(eng.ms.slice(1));
  r.engineMaxNumBatchedTokens = eng.maxNumBatchedTokens;
  console.log(`  TTFT: forward ${r.forwardTtftMs.toFixed(1)} ms, engine ${r.engineTtftMs.toFixed(1)} ms (max_num_batched_tokens ${eng.maxNumBatchedTokens}); forward with a float32 MLP intermediate ${r.float32MlpForwardMs.toFixed(1)} ms, with a ${otherKvDtype} KV cache ${r.otherKvForwardMs.toFixed(1)} ms, with the residual added by the norms ${r.separateResidualForwardMs.toFixed(1)} ms`);
  if (r.prefillPath) console.log(`  prefill linears on cuBLASLt in those forwards: ${r.prefillPath.half} bf16/f16, ${r.prefillPath.fp8} FP8 (the rest on other kernels)`);

  r.linears = await timeLinears(weights.layers[0], weights.lmHead);
  const layers = config.numLayers;
  const perLayer = (key: 'gemmMs' | 'linearMs' | 'gemmConstCodesMs') => r.linears!.filter((t) => t.name !== 'lm_head').reduce((s, t) => s + (t[key] ?? NaN), 0);
  const head = r.linears.find((t) => t.name === 'lm_head')!;
  const bound = layers * perLayer('gemmMs') + (head.gemmMs ?? NaN);
  r.cublasBoundMs = Number.isFinite(bound) ? bound : null;
  if (r.linears.some((t) => t.gemmConstCodesMs !== undefined)) {
    const constBound = layers * perLayer('gemmConstCodesMs') + (head.gemmConstCodesMs ?? head.gemmMs ?? NaN);
    r.cublasBoundConstCodesMs = Number.isFinite(constBound) ? constBound : null;
    console.log(`  cuBLAS-bound ${r.cublasBoundMs?.toFixed(1)} ms on quantised random activations; ${constBound.toFixed(1)} ms on constant codes (the bound before the thirteenth phase)`);
  }
  r.linearsInForwardMs = layers * perLayer('linearMs') + head.linearMs;
  r.attentionMs = layers * (await timeAttention(config));
  r.mlpLayerMs = await timeMlp(weights.layers[0], config.hiddenSize);
  console.log(`  one layer's MLP (backend.mlp): ${(r.mlpLayerMs.half * 1000).toFixed(0)} µs with a 16-bit intermediate, ${(r.mlpLayerMs.f32 * 1000).toFixed(0)} µs in float32; silu·mul alone ${(r.mlpLayerMs.siluF32 * 1000).toFixed(0)} µs float32, ${(r.mlpLayerMs.siluHalf * 1000).toFixed(0)} µs bf16`);
  if (format === 'fp8') {
    r.fp8Middle = await timeFp8Middle(config.intermediateSize);
    const m = r.fp8Middle;
    if (m) console.log(`  the FP8 MLP's middle alone: ${m.stagedUs?.toFixed(1) ?? '—'} µs staged (${m.stagedOfCopy ? (100 * m.stagedOfCopy).toFixed(0) : '—'}% of copy bandwidth), ${m.registersUs.toFixed(1)} µs in registers (${(100 * m.registersOfCopy).toFixed(0)}%); ${(m.bytes / 1e6).toFixed(0)} MB, copy ${m.copyGBs.toFixed(0)} GB/s`);
  }
  r.restMs = r.forwardTtftMs - r.linearsInForwardMs - r.attentionMs;
  // The same forward op by op: the profiled run of median wall time, and every run's wall, span and gaps.
  const profiler = new OpProfiler(backend);
  const profiled = new LlamaModel(config, weights, profiler.backend);
  const profiles: OpProfile[] = [];
  for (let i = 0; i <= repeats; i++) {
    await nextTurn();
    profiler.reset();
    const [wallMs] = await timeTtft(profiled, 1);
    if (i > 0) profiles.push({ ...profiler.collect(), wallMs });
  }
  r.opProfiles = profiles.map(({ spanMs, gapsMs, wallMs }) => ({ spanMs, gapsMs, wallMs: wallMs! }));
  r.opProfile = [...profiles].sort((a, b) => a.wallMs! - b.wallMs!)[profiles.length >> 1];
  console.log(`  profiled forwards, wall / GPU span / gaps ms: ${r.opProfiles.map((p) => `${p.wallMs.toFixed(1)}/${p.spanMs.toFixed(1)}/${p.gapsMs.toFixed(1)}`).join(', ')}`);
  console.log(`  by op (the profiled forward of median wall time): ` + r.opProfile.ops.map((o) => `${o.op} ${o.ms.toFixed(2)} ms/${o.calls} (host ${o.hostMs.toFixed(2)})`).join(', '));

  if (!values['no-tiled']) {
    backend.prefillGemm = 'tiled';
    r.tiledForwardMs = (await timeTtft(model, 1))[0];
    backend.prefillGemm = 'auto';
  }
  for (const t of r.linears) {
    console.log(
      `  ${t.name.padEnd(7)} [${t.N}, ${t.K}] × ${t.tokens}: cuBLASLt GEMM ${t.gemmMs === null ? '—' : `${(t.gemmMs * 1000).toFixed(0)} µs (${t.gemmTflops!.toFixed(0)} TFLOP/s)`}, backend.linear ${(t.linearMs * 1000).toFixed(0)} µs`,
    );
  }
  results.push(r);
}

// ---- report ----
const fmt = (v: number | null | undefined, d = 1) => (v === null || v === undefined || !Number.isFinite(v) ? '—' : v.toFixed(d));
console.log('');
console.log(`| format | TTFT forward ms | TTFT engine ms | cuBLAS-bound ms | TTFT / bound | float32-MLP forward ms | ${otherKvDtype}-KV forward ms | linears in forward ms | attention ms | rest ms | tiled-GEMM forward ms |`);
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const r of results) {
  if (r.skipped) {
    console.log(`| ${r.format} | skipped: ${r.skipped} | | | | | | | | | |`);
    continue;
  }
  const ratio = r.cublasBoundMs ? r.forwardTtftMs! / r.cublasBoundMs : null;
  console.log(
    `| ${r.format} | ${fmt(r.forwardTtftMs)} | ${fmt(r.engineTtftMs)} | ${fmt(r.cublasBoundMs)} | ${ratio === null ? '—' : `${ratio.toFixed(2)}×`} | ${fmt(r.float32MlpForwardMs)} | ${fmt(r.otherKvForwardMs)} | ${fmt(r.linearsInForwardMs)} | ${fmt(r.attentionMs)} | ${fmt(r.restMs)} | ${fmt(r.tiledForwardMs)} |`,
  );
}
console.log('\ngoal: TTFT within 1.5× of the cuBLAS-bound time (the sum of cuBLASLt\'s GEMM time over every linear at this prompt length, lm_head for the last token only)');

const machine = machineInfo();
const file = values.output ?? gpuResultFile('cuda-prefill', gpu.name, machine.date);
mkdirSync(join(file, '..'), { recursive: true });
writeFileSync(
  file,
  JSON.stringify(
    {
      bench: 'cuda-prefill',
      gpu: { ...gpu },
      cublasLt: blas ? { version: blas.lt.version, path: blas.lt.path } : null,
      model: { preset: 'llama-3.1-8b', config: raw, weights: 'random (--load-format dummy), made on the GPU' },
      promptLen: L,
      repeats,
      kvDtype,
      notes:
        'forwardTtftMs: median wall time of one forward of the whole prompt in one step (logits of the last token copied to the host), after a warm-up run; ' +
        'engineTtftMs: prompt added to first token out through Engine.step (scheduler, sampler; prefix caching off); ' +
        "cublasBoundMs: layers × Σ cuBLASLt GEMM time of q,k,v,o,gate,up,down at T = promptLen + lm_head at T = 1, each the median of event-timed trials, operands already in the GEMM's type (random bf16, or random activations quantised per token to e4m3 for fp8; cublasBoundConstCodesMs: fp8 on constant codes, the bound before the thirteenth phase); " +
        'linearsInForwardMs: the same sum over backend.linear (activation conversion, FP8 quantisation and scaling included); attentionMs: layers × one layer\'s causal attention over the prompt; restMs: forward − linears − attention (the linears timed as backend.linear runs them, with float32 outputs, while the forward\'s MLP keeps its intermediate in bf16: read rest as approximate); float32MlpForwardMs: the forward with backend.fusedMlp = false; otherKvForwardMs: the forward with a KV cache of otherKvDtype; separateResidualForwardMs: the forward with backend.residualInGemm and deferNormOutput off (runs of the four kinds interleaved)',
      otherKvDtype,
      machine,
      results,
    },
    null,
    2,
  ) + '\n',
);
console.log(`\nsaved ${file}`);
