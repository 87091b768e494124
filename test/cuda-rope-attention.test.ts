// Prefill steps on the CUDA backend leave q's RoPE to the attention kernel: ropeWriteKv rotates k
// (and writes the cache) but not q, and the prefill kernel rotates q as it loads it (rope_q in
// attention-prefill.cu) — the same roundings as the rope kernel, so the attention's output must be
// bitwise what rotating q in memory first gives, in the mma.sync and (on sm_90) the wgmma build, for
// float32, bf16 and fp8 caches. q itself, read afterwards, must be rotated (in memory, then). Where
// decode tokens share the step, q is rotated in memory before the decode kernel reads it. Against
// the CPU as well (its rope, writeKv and attention). Without a GPU the suite skips with the reason.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Backend, KvCacheStorage, KvDtype, RopeRows } from '../src/backend/backend.js';
import type { CudaTensor } from '../src/backend/cuda/cuda-backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { batchOf } from './support/attention-batch.js';
import { comparisons, launchesOf, openTestGpu, testRandom } from './support/cuda.js';

const { gpu, skipReason } = await openTestGpu();
const cpu = new CpuBackend();
const { seed: SEED, uniform } = testRandom();
const { assertClose, assertBitwise } = comparisons(SEED);

/**
 * Rotate-half RoPE (Llama's base 500000) for the batch's positions: a table of rows by position indexed
 * by them (the model's form, RopeTable), or rows [T, half] of the step's own.
 */
function ropeRows(positions: Int32Array, half: number, indexed: boolean): RopeRows {
  const rowPositions = indexed ? Int32Array.from({ length: Math.max(...positions) + 1 }, (_, p) => p) : positions;
  const cos = new Float32Array(rowPositions.length * half), sin = new Float32Array(rowPositions.length * half);
  rowPositions.forEach((p, t) => {
    for (let i = 0; i < half; i++) {
      const angle = p * 500000 ** (-i / half);
      cos[t * half + i] = Math.cos(angle);
      sin[t * half + i] = Math.sin(angle);
    }
  });
  return { cos, sin, index: indexed ? positions : undefined };
}

describe("CUDA prefill: q's RoPE applied by the attention kernel", { skip: skipReason }, () => {
  const be = gpu!;
  const builds = be?.prefillWgmmaAvailable ? [true, false] : [false];

  // (indexed: RoPE rows from a table by position, as the model passes them; else the step's own rows.)
  const cases: Array<{ what: string; seqs: Array<[number, number]>; heads: number; kvHeads: number; headDim: number; indexed: boolean; mixed?: boolean }> = [
    { what: 'a 150-token prompt, 32 heads over 8, head_dim 128, rows by position', seqs: [[0, 150]], heads: 32, kvHeads: 8, headDim: 128, indexed: true },
    { what: "two chunks, one continuing a cached prompt, 8 heads over 2, head_dim 64, the step's own rows", seqs: [[0, 40], [30, 70]], heads: 8, kvHeads: 2, headDim: 64, indexed: false },
    { what: 'a prompt and a decode token in one step (q rotated in memory), rows by position', seqs: [[0, 70], [90, 1]], heads: 8, kvHeads: 2, headDim: 128, indexed: true, mixed: true },
  ];
  for (const c of cases) {
    for (const dtype of ['float32', 'bf16', 'fp8'] as KvDtype[]) {
      it(`${c.what}, ${dtype} cache: the bits of rotating q first`, () => {
        const blockSize = 16;
        const batch = batchOf(c.seqs, blockSize, (s, b) => s * 20 + ((b * 7) % 20));
        const T = batch.numTokens, half = c.headDim / 2;
        const rope = ropeRows(batch.positions, half, c.indexed);
        const spec = { numLayers: 1, numBlocks: 20 * c.seqs.length, blockSize, numKvHeads: c.kvHeads, headDim: c.headDim, dtype };
        const qv = uniform(T * c.heads * c.headDim, -2, 2), kv = uniform(T * c.kvHeads * c.headDim, -2, 2), vv = uniform(T * c.kvHeads * c.headDim, -2, 2);
        // Positions before a sequence's first of this step: already in the cache (random k and v).
        const before = c.seqs.flatMap(([start], s) => Array.from({ length: start }, (_, p) => batch.blockTables[s * batch.maxBlocksPerSeq + Math.floor(p / blockSize)] * blockSize + (p % blockSize)));
        const kBefore = uniform(before.length * c.kvHeads * c.headDim, -2, 2), vBefore = uniform(before.length * c.kvHeads * c.headDim, -2, 2);
        const writeBefore = (b: Backend, cache: KvCacheStorage) => {
          if (before.length === 0) return;
          const shape = [before.length, c.kvHeads * c.headDim];
          b.writeKv(cache, 0, b.fromHost(kBefore.slice(), shape), b.fromHost(vBefore.slice(), shape), Int32Array.from(before));
        };
        const scale = 1 / Math.sqrt(c.headDim);
        const defaults = { qRope: be.prefillQRope, wgmma: be.prefillWgmma };
        const run = (deferred: boolean, wgmma: boolean) => {
          be.prefillQRope = deferred;
          be.prefillWgmma = wgmma;
          try {
            const cache = be.allocKvCache(spec);
            writeBefore(be, cache);
            const q = be.fromHost(qv, [T, c.heads * c.headDim]);
            let out: Float32Array | undefined;
            const names = launchesOf(be, () => {
              be.ropeWriteKv(q, be.fromHost(kv, [T, c.kvHeads * c.headDim]), be.fromHost(vv, [T, c.kvHeads * c.headDim]), c.headDim, c.headDim, rope, cache, 0, batch.slots);
              out = be.toHost(be.attention(q, cache, 0, batch, scale, 0));
            });
            return { out: out!, q: be.toHost(q), names };
          } finally {
            be.prefillQRope = defaults.qRope;
            be.prefillWgmma = defaults.wgmma;
          }
        };
        // The CPU: rope, rope, writeKv, attention, on the same inputs.
        const cc = cpu.allocKvCache(spec);
        writeBefore(cpu, cc);
        const qc = cpu.fromHost(qv.slice(), [T, c.heads * c.headDim]);
        const kc = cpu.fromHost(kv.slice(), [T, c.kvHeads * c.headDim]);
        cpu.rope(qc, c.headDim, c.headDim, rope);
        cpu.rope(kc, c.headDim, c.headDim, rope);
        cpu.writeKv(cc, 0, kc, cpu.fromHost(vv.slice(), [T, c.kvHeads * c.headDim]), batch.slots);
        const want = cpu.toHost(cpu.attention(qc, cc, 0, batch, scale, 0));
        for (const wgmma of builds) {
          const build = wgmma ? 'wgmma' : 'mma.sync';
          const deferred = run(true, wgmma), inMemory = run(false, wgmma);
          assert.ok(inMemory.names.includes('rope_write_kv4'), `${build}: the vector RoPE kernel ran (${inMemory.names.join(', ')})`);
          if (c.mixed) assert.ok(deferred.names.includes('rope'), `${build}: decode tokens in the step: q rotated in memory first (${deferred.names.join(', ')})`);
          else assert.ok(!deferred.names.includes('rope'), `${build}: q rotated by the attention kernel alone (${deferred.names.join(', ')})`);
          assertBitwise(deferred.out, inMemory.out, `${build}: attention with q rotated by the kernel against q rotated first`);
          assertBitwise(deferred.q, inMemory.q, `${build}: q read afterwards is rotated`);
          assertClose(deferred.out, want, 1e-2, `${build}: against the CPU`);
        }
      });
    }
  }

  it('decode steps and prefillQRope = false rotate q in ropeWriteKv', () => {
    const headDim = 128, heads = 4, kvHeads = 2;
    for (const [T, on] of [[8, true], [40, false]] as const) {
      const batch = batchOf([[0, T]], 16, (_, b) => b);
      const rope = ropeRows(batch.positions, headDim / 2, true);
      const cache = be.allocKvCache({ numLayers: 1, numBlocks: 8, blockSize: 16, numKvHeads: kvHeads, headDim });
      const q = be.fromHost(uniform(T * heads * headDim), [T, heads * headDim]);
      be.prefillQRope = on;
      try {
        be.ropeWriteKv(q, be.fromHost(uniform(T * kvHeads * headDim), [T, kvHeads * headDim]), be.fromHost(uniform(T * kvHeads * headDim), [T, kvHeads * headDim]), headDim, headDim, rope, cache, 0, batch.slots);
      } finally {
        be.prefillQRope = true;
      }
      assert.equal((q as CudaTensor).pendingRope, undefined, `${T} tokens${on ? '' : ', prefillQRope off'}: nothing left for the attention`);
      assert.deepEqual(launchesOf(be, () => be.toHost(q)), [], 'q already rotated');
    }
  });
});
