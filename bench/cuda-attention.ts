// Attention kernels of the CUDA backend, device time per layer (events around each call, median):
//  - prefill of one 2048-token sequence (and 1024, 512, 384, 256 from 0, and chunks of 512 and 256
//    continuing a cached 1536 and 1792) at Llama-3.1-8B shapes (32 heads, 8 KV heads, head_dim 128): the original kernel (one block
//    per (token, head), float32 FMAs) against the tensor-core kernel with the tile size the rule
//    picks and with 64- and 128-row tiles forced, in TFLOP/s of causal attention (2 · 2 · headDim ·
//    heads per (token, visible position): QKᵀ and PV);
//  - decode at batch 1 and 8: contexts 512, 2048, 8192 at Llama-3.3-70B shapes (64 heads, 8 KV heads,
//    head_dim 128) and 128, 512, 2048 at Llama-3.1-8B shapes (32 heads, 8 KV heads): the original
//    kernel against split-K, with the chunk size by the rule (each token's own context) and fixed
//    ones (to check the rule), in GB/s of KV bytes the step must read (each K/V row once) against
//    the device-to-device copy bandwidth, and kernel launches per call.
// The numbers before this kernel generation (H100, 2026-11-23) are in docs/cuda.md, "Attention".
// L2 is flushed (a 256 MiB memset) before every timed call: in a model each layer reads its own KV.
// The KV cache is bf16 (the CUDA default) or, with --kv-dtype float32, float32.
// Prints markdown tables and saves JSON with the machine and GPU. Measures; never passes or fails.
//
//   node dist/bench/cuda-attention.js [--reps 9] [--kv-dtype bf16|float32] [--contexts-8b 128,512,2048] [--output FILE]

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { KV_DTYPE_BYTES, type AttentionBatch, type KvCacheStorage, type KvDtype } from '../src/backend/backend.js';
import { DECODE_MMA_MIN_CHUNK, DECODE_MMA_ONE_CHUNK, decodeChunk } from '../src/backend/cuda/attention-plan.js';
import type { AttentionKernel } from '../src/backend/cuda/cuda-backend.js';
import { gpuResultFile, machineInfo } from './machine.js';
import { openBenchGpu } from './bench-gpu.js';

const { values } = parseArgs({
  options: {
    reps: { type: 'string', default: '9' },
    'kv-dtype': { type: 'string', default: 'bf16' },
    /** The decode contexts at Llama-3.1-8B shapes (the chunk rule's short end). */
    'contexts-8b': { type: 'string', default: '128,512,2048' },
    output: { type: 'string' },
  },
});
const reps = Number(values.reps);
const kvDtype = values['kv-dtype'] as KvDtype;
if (!(kvDtype in KV_DTYPE_BYTES)) throw new Error(`--kv-dtype ${kvDtype}: bf16 or float32`);

const { backend, gpu, copyGBs, kernelsMs: warmUpMs } = openBenchGpu({ options: { kvDtype }, note: `KV cache ${kvDtype}` });

const driver = backend.driver;
const FLUSH_BYTES = 256 * 2 ** 20;
const flush = driver.memAlloc(FLUSH_BYTES);
const e0 = driver.createEvent();
const e1 = driver.createEvent();

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/**
 * Median device ms of `fn` over `n` calls, each after an L2 flush, each in its own step (pool
 * reuse); `setup` (the q upload) runs before the timed region.
 */
async function timeCold<T>(setup: () => T, fn: (x: T) => void, n: number): Promise<number> {
  fn(setup()); // untimed: loads the kernel, takes the pool buffers
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    await nextTurn();
    const x = setup();
    driver.fill32(flush, i, FLUSH_BYTES / 4);
    driver.recordEvent(e0);
    fn(x);
    driver.recordEvent(e1);
    times.push(driver.elapsedMs(e0, e1));
  }
  return median(times);
}

/** Random values, made once and reused (timing does not depend on them; they must only be finite and not all zero). */
const noise = Float32Array.from({ length: 1 << 23 }, () => Math.random() * 2 - 1); // ≥ q of 2048 tokens × 4096

/** A KV cache of `seqs` sequences × `positions` slots at the given shapes, every slot written, blocks shuffled. */
function filledCache(seqs: number, positions: number, kvHeads: number, headDim: number, blockSize: number): { cache: KvCacheStorage; blockTables: Int32Array; maxBlocksPerSeq: number } {
  const maxBlocksPerSeq = positions / blockSize;
  const numBlocks = seqs * maxBlocksPerSeq;
  const cache = backend.allocKvCache({ numLayers: 1, numBlocks, blockSize, numKvHeads: kvHeads, headDim });
  const width = kvHeads * headDim;
  const rows = Math.min(numBlocks * blockSize, Math.floor(noise.length / width));
  const kv = backend.fromHost(noise.subarray(0, rows * width), [rows, width]);
  for (let first = 0; first < numBlocks * blockSize; first += rows) {
    const n = Math.min(rows, numBlocks * blockSize - first);
    const src = n === rows ? kv : backend.fromHost(noise.subarray(0, n * width), [n, width]);
    backend.writeKv(cache, 0, src, src, Int32Array.from({ length: n }, (_, i) => first + i));
  }
  const perm = Int32Array.from({ length: numBlocks }, (_, i) => i);
  for (let i = numBlocks - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  return { cache, blockTables: perm, maxBlocksPerSeq };
}

function batchOf(tokens: Array<[seq: number, pos: number]>, numSeqs: number, blockTables: Int32Array, maxBlocksPerSeq: number): AttentionBatch {
  return {
    numTokens: tokens.length,
    numSeqs,
    positions: Int32Array.from(tokens, ([, p]) => p),
    seqIndex: Int32Array.from(tokens, ([s]) => s),
    slots: new Int32Array(tokens.length), // attention does not read slots
    blockTables,
    maxBlocksPerSeq,
  };
}

// ---- prefill at Llama-3.1-8B shapes ----
interface PrefillRow {
  case: string;
  tokens: number;
  kernel: string;
  ms: number;
  tflops: number;
}
const prefillRows: PrefillRow[] = [];
{
  const [heads, kvHeads, headDim, blockSize] = [32, 8, 128, 16];
  const { cache, blockTables, maxBlocksPerSeq } = filledCache(1, 2048, kvHeads, headDim, blockSize);
  // The first three are the ones docs/cuda.md tabulates; the others check the 64/128-row rule between.
  const cases: Array<[string, number, number]> = [
    ['2048 tokens from 0', 0, 2048],
    ['512 tokens from 0', 0, 512],
    ['512-token chunk after 1536 cached', 1536, 512],
    ['1024 tokens from 0', 0, 1024],
    ['384 tokens from 0', 0, 384],
    ['256 tokens from 0', 0, 256],
    ['256-token chunk after 1792 cached', 1792, 256],
  ];
  // Warm-up: the first kernel timed on an idle GPU read up to 1.6× slow (clocks still rising).
  {
    const batch = batchOf(Array.from({ length: 2048 }, (_, i) => [0, i]), 1, blockTables, maxBlocksPerSeq);
    backend.attentionKernel = 'prefill';
    for (let i = 0; i < 20; i++) {
      const q = backend.fromHost(noise.subarray(0, 2048 * heads * headDim), [2048, heads * headDim]);
      for (let j = 0; j < 5; j++) backend.attention(q, cache, 0, batch, 1 / Math.sqrt(headDim), 0);
      await nextTurn(); // q and the outputs return to the pool
    }
    driver.synchronize();
  }
  for (const [name, start, n] of cases) {
    const batch = batchOf(Array.from({ length: n }, (_, i) => [0, start + i]), 1, blockTables, maxBlocksPerSeq);
    // 2 (QKᵀ and PV) × 2 flops × headDim × heads per (token, visible position).
    let visible = 0;
    for (let i = 0; i < n; i++) visible += start + i + 1;
    const flops = 4 * headDim * heads * visible;
    const qHost = noise.subarray(0, n * heads * headDim);
    const variants: Array<[AttentionKernel, 0 | 64 | 128, string, boolean]> = [
      ['prefill', 0, 'prefill (tensor cores, bf16), tiles by the rule', true],
      ['prefill', 64, 'prefill, 64-row tiles', true],
      ['prefill', 128, 'prefill, 128-row tiles', true],
    ];
    // On sm_90 the rows above run on wgmma; these on the mma.sync build, to compare.
    if (backend.prefillWgmmaAvailable) {
      variants.push(['prefill', 0, 'prefill on mma.sync, tiles by the rule', false], ['prefill', 64, 'prefill on mma.sync, 64-row tiles', false], ['prefill', 128, 'prefill on mma.sync, 128-row tiles', false]);
    }
    // Last: a kernel timed right after the original one's 12 ms calls read up to 2× slow.
    variants.push(['paged', 0, 'paged (original, float32)', false]);
    for (const [kernel, rows, label, wgmma] of variants) {
      backend.attentionKernel = kernel;
      backend.attentionPrefillRows = rows;
      backend.prefillWgmma = wgmma;
      const ms = await timeCold(
        () => backend.fromHost(qHost, [n, heads * headDim]),
        (q) => backend.attention(q, cache, 0, batch, 1 / Math.sqrt(headDim), 0),
        kernel === 'paged' ? Math.min(reps, 5) : reps,
      );
      prefillRows.push({ case: name, tokens: n, kernel: label, ms, tflops: flops / (ms / 1000) / 1e12 });
    }
  }
  backend.attentionKernel = 'auto';
  backend.attentionPrefillRows = 0;
  backend.prefillWgmma = true;
}
console.log('\nPrefill attention per layer, Llama-3.1-8B shapes (32 heads, 8 KV heads, head_dim 128), blocks of 16:\n');
console.log('| case | kernel | ms | TFLOP/s |');
console.log('|---|---|---:|---:|');
for (const r of prefillRows) console.log(`| ${r.case} | ${r.kernel} | ${r.ms.toFixed(3)} | ${r.tflops.toFixed(1)} |`);

// ---- decode at Llama-3.3-70B and Llama-3.1-8B shapes ----
interface DecodeRow {
  model: string;
  batch: number;
  context: number;
  kernel: string;
  chunk: number | null;
  splits: number | null;
  launches: number;
  us: number;
  kvGBs: number;
  ofCopy: number;
}
const decodeRows: DecodeRow[] = [];
const shapes: Array<[model: string, heads: number, contexts: number[]]> = [
  ['70B', 64, [512, 2048, 8192]],
  ['8B', 32, values['contexts-8b']!.split(',').map(Number)],
];
for (const [model, heads, contexts] of shapes) {
  await nextTurn();
  const [kvHeads, headDim, blockSize] = [8, 128, 16];
  const maxBatch = 8;
  const { cache, blockTables, maxBlocksPerSeq } = filledCache(maxBatch, Math.max(...contexts), kvHeads, headDim, blockSize);
  for (const b of [1, 8]) {
    for (const context of contexts) {
      const batch = batchOf(Array.from({ length: b }, (_, s) => [s, context - 1]), maxBatch, blockTables, maxBlocksPerSeq);
      const kvBytes = b * context * kvHeads * headDim * KV_DTYPE_BYTES[kvDtype] * 2;
      const qHost = noise.subarray(0, b * heads * headDim);
      const mma = kvDtype !== 'float32';
      const auto = mma ? decodeChunk(context, DECODE_MMA_MIN_CHUNK, DECODE_MMA_ONE_CHUNK) : decodeChunk(context);
      // From a bf16 or fp8 cache split-K runs on tensor cores (decodeAttentionMma); the float32 walk once more at its auto chunk, to compare.
      const variants: Array<[AttentionKernel, number, boolean]> = [['paged', 0, false], ['decode', 0, mma]];
      if (mma) variants.push(['decode', 0, false]);
      for (const chunk of [32, 64, 128, 256, 512, 1024, context]) if (chunk <= context && chunk !== auto && context / chunk <= 128) variants.push(['decode', chunk, mma]);
      for (const [kernel, chunk, onMma] of variants) {
        backend.attentionKernel = kernel;
        backend.attentionChunk = chunk;
        backend.decodeAttentionMma = onMma;
        const launches0 = driver.launches;
        const ms = await timeCold(
          () => backend.fromHost(qHost, [b, heads * headDim]),
          (q) => backend.attention(q, cache, 0, batch, 1 / Math.sqrt(headDim), 0),
          reps,
        );
        const used = kernel === 'decode' ? chunk || (onMma ? auto : decodeChunk(context)) : null;
        decodeRows.push({
          model,
          batch: b,
          context,
          kernel: kernel === 'paged' ? 'paged (original)' : `split-K${chunk === 0 ? ' (auto)' : ''}${kernel === 'decode' ? (onMma ? ', tensor cores' : ', float32') : ''}`,
          chunk: used,
          splits: used === null ? null : Math.ceil(context / used),
          launches: (driver.launches - launches0) / (reps + 1), // timeCold makes reps + 1 calls (the L2 flush is a memset)
          us: ms * 1000,
          kvGBs: kvBytes / (ms / 1000) / 1e9,
          ofCopy: kvBytes / (ms / 1000) / 1e9 / copyGBs,
        });
      }
    }
  }
  backend.attentionKernel = 'auto';
  backend.attentionChunk = 0;
  backend.decodeAttentionMma = true;
}
console.log(`\nDecode attention per layer, 8 KV heads, head_dim 128 (70B: 64 heads, 8B: 32 heads), blocks of 16; KV GB/s = K and V bytes read once / time, against copy ${copyGBs.toFixed(0)} GB/s:\n`);
console.log('| shapes | batch | context | kernel | chunk | splits | launches | µs | KV GB/s | of copy BW |');
console.log('|---|---:|---:|---|---:|---:|---:|---:|---:|---:|');
for (const r of decodeRows) {
  console.log(`| ${r.model} | ${r.batch} | ${r.context} | ${r.kernel} | ${r.chunk ?? ''} | ${r.splits ?? ''} | ${r.launches} | ${r.us.toFixed(1)} | ${r.kvGBs.toFixed(0)} | ${(100 * r.ofCopy).toFixed(0)}% |`);
}

driver.memFree(flush);
const machine = machineInfo();
const file = values.output ?? gpuResultFile('cuda-attention', gpu.name, machine.date, `-kv-${kvDtype}`);
mkdirSync(join(file, '..'), { recursive: true });
writeFileSync(
  file,
  JSON.stringify(
    {
      bench: 'cuda-attention',
      gpu: { ...gpu, copyGBs },
      kernels: { warmUpMs, modules: backend.kernels.stats, nvrtc: { path: backend.nvrtc.path, version: backend.nvrtc.version } },
      reps,
      kvDtype,
      notes:
        'device ms per call, median over calls each after a 256 MiB L2 flush; prefill TFLOP/s = 4 · headDim · heads · Σ visible positions; decode KV GB/s = batch · context · kvHeads · headDim · element bytes (kvDtype) · 2 (K, V) / time',
      machine,
      prefill: prefillRows,
      decode: decodeRows,
    },
    null,
    2,
  ) + '\n',
);
console.log(`\nsaved ${file}`);
