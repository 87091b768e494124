// CUDA attention against the CPU reference: the tensor-core prefill kernel, split-K decode and the
// original kernel, on fresh random q/k/v written through writeKv into scattered blocks, for ragged
// prefill chunks, chunks continuing a cached prompt, mixed steps and long decode contexts. Bounds:
// the prefill kernel, and split-K decode from a bf16 or fp8 cache (tensor cores too), round q and the
// probabilities (and a float32 cache's k, v) to bf16 (8 significant bits), so they are held to a
// relative error of 1e-2 (a row-level emulation of the prefill kernel in float64 gives 2e-3 to 4e-3
// on these inputs); the float32 paths (split-K decode from a float32 cache, the original kernel) to
// 1e-5. Each scenario runs with a float32 KV cache, and the main ones again with bf16 and fp8 caches
// on both backends (the CPU's reads the same rounded values). On sm_90 the prefill kernel runs on
// wgmma, and its mma.sync build is checked too.
// The host-side planning (runs, tiles, checks, split sizes) is tested without a GPU; the GPU suites
// skip with the reason when no device, libcuda or NVRTC is present.

import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, it } from 'node:test';
import type { AttentionBatch, KvDtype } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { AttentionPlanner, checkBlockTables, DECODE_MAX_SPLITS, DECODE_MMA_MIN_CHUNK, DECODE_MMA_ONE_CHUNK, decodeChunk, decodeHeadsPerBlock, decodeSplits, planAttention, PREFILL_TILE_ROWS, prefillSharedBytes, prefillTileRows } from '../src/backend/cuda/attention-plan.js';
import type { AttentionKernel } from '../src/backend/cuda/cuda-backend.js';
import { batchOf } from './support/attention-batch.js';
import { openTestGpu, testRandom, relErr } from './support/cuda.js';

const { gpu, skipReason } = await openTestGpu();

const cpu = new CpuBackend();
// Fresh inputs on every run; the seed is in every failure message so a failure can be replayed.
const { seed: SEED, rng, uniform: uniformIn, randInt } = testRandom();
const uniform = (n: number, lo = -2, hi = 2) => uniformIn(n, lo, hi);

const BF16_BOUND = 1e-2;
const F32_BOUND = 1e-5;
// The prefill kernel on wgmma against its mma.sync build: the same bf16 roundings, so only a
// probability that the tensor cores' different summation order tips to the neighbouring bf16 differs.
const WGMMA_BOUND = 1e-3;

describe('CUDA attention planning (host side, no GPU needed)', () => {
  const sequential = (s: number, b: number) => s * 100 + b;

  it('cuts a mixed step into runs and runs into tiles of at most 64 rows, longest context first', () => {
    // A chunk from 0, a decode token, a continuing chunk, a 130-token chunk: runs of 17, 1, 6, 130.
    const batch = batchOf([[0, 17], [70, 1], [5, 6], [40, 130]], 16, sequential);
    const plan = planAttention(batch, 16);
    assert.equal(plan.longestRun, 130);
    assert.equal(plan.maxPos, 169);
    const t64 = plan.tiles[64];
    const tiles = Array.from({ length: t64.numTiles }, (_, t) => Array.from(t64.tiles.slice(4 * t, 4 * t + 4)));
    // [first token, rows, sequence, first position]; the 130-token run is 64 + 64 + 2 rows.
    assert.deepEqual(tiles, [
      [24 + 128, 2, 3, 168],
      [24 + 64, 64, 3, 104],
      [24, 64, 3, 40],
      [17, 1, 1, 70],
      [0, 17, 0, 0],
      [18, 6, 2, 5],
    ]);
    // In auto mode the runs of ≥ 16 tokens take the tensor-core kernel, the other tokens split-K.
    const prefillTiles = Array.from({ length: t64.numPrefillTiles }, (_, t) => Array.from(t64.prefillTiles.slice(4 * t, 4 * t + 4)));
    assert.deepEqual(prefillTiles, [tiles[0], tiles[1], tiles[2], tiles[4]]);
    // 128-row tiles: the 130-token run is 128 + 2 rows.
    const t128 = plan.tiles[128];
    assert.deepEqual(Array.from({ length: t128.numTiles }, (_, t) => Array.from(t128.tiles.slice(4 * t, 4 * t + 4))), [
      [24 + 128, 2, 3, 168],
      [24, 128, 3, 40],
      [17, 1, 1, 70],
      [0, 17, 0, 0],
      [18, 6, 2, 5],
    ]);
    assert.deepEqual(Array.from(plan.otherTokens), [17, 18, 19, 20, 21, 22, 23]);
    assert.equal(plan.otherMaxPos, 70);
  });

  it('covers every token exactly once with consecutive positions, whatever the token order', () => {
    for (let trial = 0; trial < 50; trial++) {
      // Random runs, with tokens of one sequence split into separate, interleaved runs.
      const T = 1 + Math.floor(rng.next() * 300);
      const positions = new Int32Array(T);
      const seqIndex = new Int32Array(T);
      const next = [0, 0, 0];
      for (let i = 0; i < T; i++) {
        const s = Math.floor(rng.next() * 3);
        if (rng.next() < 0.2) next[s] += Math.floor(rng.next() * 5); // a gap: a new run
        seqIndex[i] = s;
        positions[i] = next[s]++;
      }
      const maxBlocksPerSeq = Math.ceil((Math.max(...next) + 1) / 16);
      const batch: AttentionBatch = { numTokens: T, numSeqs: 3, positions, seqIndex, slots: new Int32Array(T), blockTables: new Int32Array(3 * maxBlocksPerSeq), maxBlocksPerSeq };
      const plan = planAttention(batch, 16);
      for (const size of PREFILL_TILE_ROWS) {
        const { tiles, numTiles, prefillTiles, numPrefillTiles } = plan.tiles[size];
        const seen = new Int32Array(T);
        let prevLast = Infinity;
        for (let t = 0; t < numTiles; t++) {
          const [first, rows, seq, pos] = tiles.slice(4 * t, 4 * t + 4);
          assert.ok(rows >= 1 && rows <= size, `tile of ${rows} rows, size ${size} (seed ${SEED})`);
          assert.ok(pos + rows - 1 <= prevLast, `tiles out of order (seed ${SEED})`);
          prevLast = pos + rows - 1;
          for (let r = 0; r < rows; r++) {
            seen[first + r]++;
            assert.equal(seqIndex[first + r], seq, `seed ${SEED}`);
            assert.equal(positions[first + r], pos + r, `seed ${SEED}`);
          }
        }
        assert.ok(seen.every((n) => n === 1), `a token in ${seen.find((n) => n !== 1)} tiles (seed ${SEED})`);
        // The long runs' tiles and the other tokens split the step too.
        const split = new Int32Array(T);
        for (let t = 0; t < numPrefillTiles; t++) {
          const [first, rows] = prefillTiles.slice(4 * t, 4 * t + 2);
          for (let r = 0; r < rows; r++) split[first + r]++;
        }
        for (const tok of plan.otherTokens) split[tok]++;
        assert.ok(split.every((n) => n === 1), `seed ${SEED}`);
      }
      assert.equal(plan.otherMaxPos, plan.otherTokens.length ? Math.max(...Array.from(plan.otherTokens, (t) => positions[t])) : -1);
      // The runs: every token once, in order, each run one sequence at consecutive positions, and
      // maximal (the next token does not continue it).
      let at = 0;
      for (let r = 0; r < plan.runs.length; r += 2) {
        const [first, len] = [plan.runs[r], plan.runs[r + 1]];
        assert.equal(first, at, `seed ${SEED}`);
        for (let k = 1; k < len; k++) assert.ok(seqIndex[first + k] === seqIndex[first] && positions[first + k] === positions[first] + k, `seed ${SEED}`);
        const end = first + len;
        if (end < T) assert.ok(seqIndex[end] !== seqIndex[end - 1] || positions[end] !== positions[end - 1] + 1, `run ending at ${end} could go on (seed ${SEED})`);
        at = end;
      }
      assert.equal(at, T, `seed ${SEED}`);
      assert.equal(plan.maxPos, Math.max(...positions), `seed ${SEED}`);
      assert.equal(plan.longestRun, Math.max(...Array.from({ length: plan.runs.length / 2 }, (_, r) => plan.runs[2 * r + 1])), `seed ${SEED}`);
    }
  });

  it('checks block tables by run as a token-by-token check would (random steps, holes, windows)', () => {
    // The reference, token by token: per sequence, the blocks from the first any of its tokens
    // reads to the last (the range is checked whole, gaps between runs included).
    const reads = (batch: AttentionBatch, blockSize: number, window: number) => {
      const out = new Set<number>();
      for (let s = 0; s < batch.numSeqs; s++) {
        let lo = Infinity, hi = -1;
        for (let i = 0; i < batch.numTokens; i++) {
          if (batch.seqIndex[i] !== s) continue;
          const p = batch.positions[i];
          lo = Math.min(lo, Math.floor((window > 0 ? Math.max(0, p - window + 1) : 0) / blockSize));
          hi = Math.max(hi, Math.floor(p / blockSize));
        }
        for (let b = lo; b <= hi; b++) out.add(s * batch.maxBlocksPerSeq + b);
      }
      return out;
    };
    for (let trial = 0; trial < 200; trial++) {
      const T = 1 + Math.floor(rng.next() * 80);
      const positions = new Int32Array(T);
      const seqIndex = new Int32Array(T);
      const next = [Math.floor(rng.next() * 40), Math.floor(rng.next() * 40)];
      for (let i = 0; i < T; i++) {
        const s = Math.floor(rng.next() * 2);
        if (rng.next() < 0.1) next[s] += Math.floor(rng.next() * 30);
        seqIndex[i] = s;
        positions[i] = next[s]++;
      }
      const blockSize = 8;
      const maxBlocksPerSeq = Math.ceil(Math.max(...next) / blockSize);
      const blockTables = Int32Array.from({ length: 2 * maxBlocksPerSeq }, (_, i) => i);
      const hole = Math.floor(rng.next() * blockTables.length);
      blockTables[hole] = -1;
      const batch: AttentionBatch = { numTokens: T, numSeqs: 2, positions, seqIndex, slots: new Int32Array(T), blockTables, maxBlocksPerSeq };
      for (const window of [0, 5, 17]) {
        const read = reads(batch, blockSize, window).has(hole);
        assert.equal(
          (() => {
            try {
              checkBlockTables(batch, blockSize, blockTables.length, window);
              return false;
            } catch (e) {
              assert.match(String(e), new RegExp(`sequence ${Math.floor(hole / maxBlocksPerSeq)} reads block ${hole % maxBlocksPerSeq} of its table, which holds -1`));
              return true;
            }
          })(),
          read,
          `window ${window}, hole at ${hole} (seed ${SEED})`,
        );
      }
    }
  });

  it('names a position outside the block table, a bad sequence index and a missing block', () => {
    const batch = batchOf([[0, 20], [30, 1]], 16, sequential);
    assert.throws(() => planAttention({ ...batch, positions: Int32Array.from(batch.positions, (p, i) => (i === 20 ? 40 : p)) }, 16), /token 20 is at position 40, outside its block table \(2 blocks of 16\)/);
    assert.throws(() => planAttention({ ...batch, seqIndex: Int32Array.from(batch.seqIndex, (s, i) => (i === 3 ? 2 : s)) }, 16), /token 3 has sequence index 2, the step has 2 sequences/);
    const holes = batch.blockTables.slice();
    holes[2] = -1; // sequence 1, block 0
    assert.throws(() => checkBlockTables({ ...batch, blockTables: holes }, 16, 1000, 0), /sequence 1 reads block 0 of its table, which holds -1/);
    assert.throws(() => checkBlockTables(batch, 16, 101, 0), /sequence 1 reads block 1 of its table, which holds 101 \(the cache has blocks 0\.\.100\)/);
    // With a window of 7, position 30 reads positions 24..30 only: block 0 is not read.
    checkBlockTables({ ...batch, blockTables: holes }, 16, 1000, 7);
  });

  it('plans once per step: the same arrays give the same plan, an array changed in place a new one', () => {
    const planner = new AttentionPlanner();
    const batch = batchOf([[0, 20], [30, 1]], 16, sequential);
    const a = planner.plan(batch, 16, 1000, 0);
    assert.equal(planner.plan(batch, 16, 1000, 0), a);
    assert.equal(planner.plan(batch, 16, 1000, 100), a); // another layer's window: same plan, checked again
    batch.positions[20] = 31;
    const b = planner.plan(batch, 16, 1000, 0);
    assert.notEqual(b, a);
    assert.equal(b.maxPos, 31);
    batch.blockTables[2] = -1;
    assert.throws(() => planner.plan(batch, 16, 1000, 0), /sequence 1 reads block 0/);
  });

  it('decode split sizes (by a token\'s own context only), head groups and prefill tile sizes', () => {
    // Llama-3.3-70B shapes on 132 SMs: 64 heads over 8 KV heads, one block per KV head per split.
    assert.equal(decodeHeadsPerBlock(64, 8), 8);
    assert.equal(decodeHeadsPerBlock(32, 8), 4);
    assert.equal(decodeHeadsPerBlock(4, 4), 1);
    assert.equal(decodeHeadsPerBlock(28, 4), 8); // 7 heads per KV head: one padded
    assert.equal(decodeHeadsPerBlock(64, 2), 8); // 32 per KV head: 4 blocks of 8
    // Chunks of 32 up to context 512 (1..16 of them), then about 16 chunks, at most 1024 positions
    // each, and never more than DECODE_MAX_SPLITS chunks.
    assert.equal(decodeChunk(1), 32);
    assert.equal(decodeSplits(32), 1);
    assert.equal(decodeSplits(33), 2);
    assert.equal(decodeSplits(128), 4);
    assert.equal(decodeChunk(512), 32);
    assert.equal(decodeSplits(512), 16);
    assert.equal(decodeChunk(2048), 128);
    assert.equal(decodeChunk(8192), 512);
    assert.equal(decodeChunk(16384), 1024);
    assert.equal(decodeSplits(65536), 64);
    assert.equal(decodeSplits(10 ** 6), DECODE_MAX_SPLITS);
    for (let n = 1; n <= 300_000; n += 1 + Math.floor(rng.next() * 997)) {
      const c = decodeChunk(n);
      assert.ok(c % 32 === 0 && c >= 32 && decodeSplits(n) <= DECODE_MAX_SPLITS && (c <= 1024 || n > 1024 * DECODE_MAX_SPLITS), `n ${n}: chunk ${c}`);
    }
    assert.equal(decodeSplits(4096, 100), 41); // a forced chunk size
    // The tensor-core walk (bf16, fp8 caches): one chunk up to 256 positions, then chunks of at least 128.
    const mma = (n: number) => decodeChunk(n, DECODE_MMA_MIN_CHUNK, DECODE_MMA_ONE_CHUNK);
    assert.equal(mma(1), 128);
    assert.equal(mma(129), 160);
    assert.equal(decodeSplits(200, 0, DECODE_MMA_MIN_CHUNK, DECODE_MMA_ONE_CHUNK), 1);
    assert.equal(decodeSplits(256, 0, DECODE_MMA_MIN_CHUNK, DECODE_MMA_ONE_CHUNK), 1);
    assert.equal(decodeSplits(257, 0, DECODE_MMA_MIN_CHUNK, DECODE_MMA_ONE_CHUNK), 3);
    assert.equal(mma(2048), 128);
    assert.equal(mma(4096), 256);
    assert.equal(decodeSplits(512, 0, DECODE_MMA_MIN_CHUNK, DECODE_MMA_ONE_CHUNK), 4);
    for (let n = 1; n <= 4096; n += 17) assert.ok(mma(n) % 32 === 0 && (n > 256 || mma(n) >= n), `n ${n}: chunk ${mma(n)}`);
    // 128-row prefill tiles once their blocks cover 7/8 of the SMs: 2048 and 512 tokens × 32 heads yes, 384 no.
    assert.equal(prefillTileRows(16, 32, 132), 128);
    assert.equal(prefillTileRows(4, 32, 132), 128); // 512 tokens × 32 heads: 128 blocks on 132 SMs
    assert.equal(prefillTileRows(3, 32, 132), 64); // 384 tokens: 96 blocks
    assert.equal(prefillTileRows(2, 32, 132), 64);
  });

  it('prefill shared memory: K/V tiles by cache type, plus the bf16 query tile in the wgmma build', () => {
    assert.equal(prefillSharedBytes('bf16', 128), 64 * 1024);
    assert.equal(prefillSharedBytes('fp8', 128), 48 * 1024);
    assert.equal(prefillSharedBytes('float32', 128), 96 * 1024);
    assert.equal(prefillSharedBytes('bf16', 128, 128), 96 * 1024);
    assert.equal(prefillSharedBytes('float32', 64, 64), 48 * 1024 + 8 * 1024);
  });
});

interface Scenario {
  heads: number;
  kvHeads: number;
  headDim: number;
  blockSize: number;
  /** [first position this step, tokens this step] per sequence; earlier positions are cached. */
  seqs: Array<[number, number]>;
  windows: number[];
  /** Decode split sizes to try (0: chosen per step). */
  chunks?: number[];
  /** KV cache element type on both backends (default float32). */
  kvDtype?: KvDtype;
}

describe('CUDA attention against the CPU reference', { skip: skipReason }, () => {
  const g = () => gpu!;
  /** End the synchronous run (recycling its activations), then poison every free pool buffer. */
  const fresh = async () => {
    await nextTurn();
    g().poisonFreeMemory();
  };
  const tiled = (headDim: number) => headDim === 64 || headDim === 128;

  /**
   * Write every position of every sequence through writeKv (the earlier ones as a past step would,
   * then this step's) into blocks scattered over the cache, on both backends (and into `mirror`, a
   * second GPU cache of that element type, when given).
   */
  function fill(sc: Scenario, mirror?: KvDtype) {
    const { heads, kvHeads, headDim, blockSize, seqs } = sc;
    const blocksPerSeq = seqs.map(([start, n]) => Math.ceil((start + n) / blockSize));
    const numBlocks = blocksPerSeq.reduce((a, b) => a + b, 0) + 5;
    const perm = Array.from({ length: numBlocks }, (_, i) => i);
    for (let i = numBlocks - 1; i > 0; i--) {
      const j = Math.floor(rng.next() * (i + 1));
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    const offsets = blocksPerSeq.map((_, s) => blocksPerSeq.slice(0, s).reduce((a, b) => a + b, 0));
    const batch = batchOf(seqs, blockSize, (s, b) => perm[offsets[s] + b]);
    const spec = { numLayers: 2, numBlocks, blockSize, numKvHeads: kvHeads, headDim, dtype: sc.kvDtype ?? 'float32' };
    const layer = 1;
    const cc = cpu.allocKvCache(spec);
    const gc = g().allocKvCache(spec);
    const gm = mirror ? g().allocKvCache({ ...spec, dtype: mirror }) : undefined;
    const width = kvHeads * headDim;
    const slotOf = (s: number, p: number) => batch.blockTables[s * batch.maxBlocksPerSeq + Math.floor(p / blockSize)] * blockSize + (p % blockSize);
    const write = (slots: Int32Array) => {
      if (slots.length === 0) return;
      const k = uniform(slots.length * width);
      const v = uniform(slots.length * width);
      cpu.writeKv(cc, layer, cpu.fromHost(k.slice(), [slots.length, width]), cpu.fromHost(v.slice(), [slots.length, width]), slots);
      g().writeKv(gc, layer, g().fromHost(k, [slots.length, width]), g().fromHost(v, [slots.length, width]), slots);
      if (gm) g().writeKv(gm, layer, g().fromHost(k, [slots.length, width]), g().fromHost(v, [slots.length, width]), slots);
    };
    write(Int32Array.from(seqs.flatMap(([start], s) => Array.from({ length: start }, (_, p) => slotOf(s, p)))));
    write(batch.slots);
    return { batch, cc, gc, gm, layer, q: uniform(batch.numTokens * heads * headDim), scale: 1 / Math.sqrt(headDim) };
  }

  /**
   * One GPU attention call with the given kernel settings (restored after), on poisoned free memory;
   * wgmma false keeps the prefill kernel on mma.sync where wgmma would run (sm_90).
   */
  async function run(kernel: AttentionKernel, chunk: number, rows: 0 | 64 | 128, q: Float32Array, cache: ReturnType<typeof fill>['gc'], layer: number, batch: AttentionBatch, scale: number, window: number, wgmma = true): Promise<Float32Array> {
    await fresh();
    g().attentionKernel = kernel;
    g().attentionChunk = chunk;
    g().attentionPrefillRows = rows;
    g().prefillWgmma = wgmma;
    try {
      return g().toHost(g().attention(g().fromHost(q, [batch.numTokens, q.length / batch.numTokens]), cache, layer, batch, scale, window));
    } finally {
      g().attentionKernel = 'auto';
      g().attentionChunk = 0;
      g().attentionPrefillRows = 0;
      g().prefillWgmma = true;
    }
  }

  /**
   * Compare each kernel with the CPU (each window, fresh q, free memory poisoned before each call),
   * and 'auto' with the kernel its rule names, row by row and bit for bit.
   */
  async function check(sc: Scenario): Promise<void> {
    const { heads, headDim, blockSize, seqs } = sc;
    const what = (k: string, w: number, chunk = 0, rows = 0) =>
      `${heads}:${sc.kvHeads} heads, head_dim ${headDim}, blocks of ${blockSize}, ${sc.kvDtype ?? 'float32'} KV, seqs ${JSON.stringify(seqs)}, window ${w}, kernel ${k}${chunk ? ` chunk ${chunk}` : ''}${rows ? ` ${rows}-row tiles` : ''} (seed ${SEED})`;
    const { batch, cc, gc, layer, q: qHost, scale } = fill(sc);
    const T = batch.numTokens;

    // Every kernel (split-K also at each chunk size, and at 64 for the comparison below; the
    // tensor-core kernel at both tile sizes), and auto.
    const variants: Array<[AttentionKernel, number, 0 | 64 | 128]> = [['auto', 0, 0], ['paged', 0, 0]];
    if (tiled(headDim)) {
      variants.push(['auto', 64, 0], ['prefill', 0, 64], ['prefill', 0, 128]);
      for (const chunk of new Set([...(sc.chunks ?? [0]), 64])) variants.push(['decode', chunk, 0]);
    }
    const plan = planAttention(batch, blockSize);
    const autoPrefill = tiled(headDim) && plan.longestRun >= 16;
    const autoRows = prefillTileRows(plan.tiles[128].numPrefillTiles, heads, g().device.multiprocessors);
    // One call first, so the output and scratch buffers of the checked calls come from the pool (poisoned).
    g().attention(g().fromHost(qHost, [T, heads * headDim]), gc, layer, batch, scale, 0);
    for (const window of sc.windows) {
      const want = cpu.toHost(cpu.attention(cpu.fromHost(qHost.slice(), [T, heads * headDim]), cc, layer, batch, scale, window));
      const results = new Map<string, Float32Array>();
      for (const [kernel, chunk, rows] of variants) {
        const got = await run(kernel, chunk, rows, qHost, gc, layer, batch, scale, window);
        // From a bf16 or fp8 cache split-K decode runs on tensor cores too (q and P rounded to bf16).
        const onTensorCores = kernel === 'prefill' || (kernel === 'auto' && autoPrefill) || ((sc.kvDtype === 'bf16' || sc.kvDtype === 'fp8') && tiled(headDim) && kernel !== 'paged');
        const bound = onTensorCores ? BF16_BOUND : F32_BOUND;
        const e = relErr(got, want);
        assert.ok(e <= bound, `${what(kernel, window, chunk, rows)}: relative error ${e.toExponential(2)} over ${bound.toExponential(0)}`);
        results.set(`${kernel}/${chunk}/${rows}`, got);
      }
      // On sm_90 the prefill kernel's products run on wgmma; its mma.sync build must agree with it
      // (and with the CPU): the same roundings, only the tensor cores' summation order may differ.
      if (tiled(headDim) && g().prefillWgmmaAvailable) {
        for (const rows of [64, 128] as const) {
          const mma = await run('prefill', 0, rows, qHost, gc, layer, batch, scale, window, false);
          const e = relErr(mma, want);
          assert.ok(e <= BF16_BOUND, `${what('prefill on mma.sync', window, 0, rows)}: relative error ${e.toExponential(2)} over ${BF16_BOUND.toExponential(0)}`);
          const d = relErr(results.get(`prefill/0/${rows}`)!, mma);
          assert.ok(d <= WGMMA_BOUND, `${what('prefill', window, 0, rows)}: wgmma and mma.sync differ by ${d.toExponential(2)} (over ${WGMMA_BOUND.toExponential(0)})`);
        }
      }
      // 'auto' ran what the rule names, bit for bit: the original kernel at other head sizes;
      // split-K without a run of ≥ 16 tokens; with one, the tensor-core kernel (at the tile size
      // the rule picks) for the rows of those runs and split-K for the other tokens' rows (same
      // chunk size).
      const auto = results.get(tiled(headDim) ? 'auto/64/0' : 'auto/0/0')!;
      const rowWidth = heads * headDim;
      const other = new Set(plan.otherTokens);
      for (let t = 0; t < T; t++) {
        const named = !tiled(headDim) ? 'paged/0/0' : autoPrefill && !other.has(t) ? `prefill/0/${autoRows}` : 'decode/64/0';
        const row = (x: Float32Array) => x.subarray(t * rowWidth, (t + 1) * rowWidth);
        assert.deepEqual(row(auto), row(results.get(named)!), `${what('auto', window)}: token ${t} differs from ${named}`);
      }
    }
  }

  // Ragged prefill chunks from position 0 (not multiples of the 64-row tile), several sequences in one step.
  const ragged: Array<[number, number]> = [[0, 300], [0, 129], [0, 65], [0, 64], [0, 17], [0, 16], [0, 15], [0, 2], [0, 1]];
  for (const [heads, kvHeads, headDim, blockSize, kvDtype] of [
    [32, 8, 128, 16, 'float32'], [32, 8, 64, 32, 'float32'], [8, 1, 64, 16, 'float32'], [8, 1, 128, 32, 'float32'], [4, 4, 128, 16, 'float32'], [4, 4, 64, 32, 'float32'], [64, 8, 64, 16, 'float32'], [64, 8, 128, 32, 'float32'],
    [32, 8, 128, 16, 'bf16'], [8, 1, 64, 32, 'bf16'], [4, 4, 128, 16, 'bf16'],
    [32, 8, 128, 16, 'fp8'], [8, 1, 64, 32, 'fp8'],
    // A block size that is not a power of two: slots by division rather than shifts (kv_slot).
    [8, 1, 128, 12, 'bf16'], [4, 4, 64, 12, 'float32'],
  ] as const) {
    it(`prefill chunks of 1..300 tokens from position 0: ${heads}:${kvHeads} heads, head_dim ${headDim}, blocks of ${blockSize}, ${kvDtype} KV, windows 0/7/100`, async () => {
      await check({ heads, kvHeads, headDim, blockSize, seqs: ragged, windows: [0, 7, 100], kvDtype });
    });
  }

  // A chunk continuing a cached prompt, another starting mid-block, decode tokens and a short
  // verification-like run, all in one step (auto: the chunks on tensor cores, the rest split-K).
  for (const [heads, kvHeads, headDim, blockSize, kvDtype] of [[32, 8, 128, 16, 'float32'], [8, 1, 64, 32, 'float32'], [4, 4, 128, 32, 'float32'], [64, 8, 64, 16, 'float32'], [32, 8, 128, 16, 'bf16'], [64, 8, 64, 16, 'bf16'], [32, 8, 128, 16, 'fp8']] as const) {
    it(`mixed step (continuing chunks, decode tokens, a 5-token run): ${heads}:${kvHeads} heads, head_dim ${headDim}, blocks of ${blockSize}, ${kvDtype} KV`, async () => {
      await check({ heads, kvHeads, headDim, blockSize, seqs: [[200, 37], [777, 1], [64, 100], [31, 1], [40, 5], [13, 70]], windows: [0, 7, 100], kvDtype });
    });
  }

  // Decode: long contexts at batch 1 and 8, split over positions (auto, forced chunk sizes, one
  // split; chunk 32 at context 4096 is the kernel's most splits, 128: one per thread in its merge).
  const chunks = [0, 32, 64, 100, 1 << 20];
  for (const [heads, kvHeads, headDim, blockSize, kvDtype] of [
    [64, 8, 128, 16, 'float32'], [32, 8, 128, 32, 'float32'], [8, 1, 64, 16, 'float32'], [4, 4, 64, 32, 'float32'], [28, 4, 128, 16, 'float32'],
    [64, 8, 128, 16, 'bf16'], [8, 1, 64, 16, 'bf16'], [64, 8, 128, 16, 'fp8'], [8, 1, 64, 16, 'fp8'],
  ] as const) {
    it(`decode at batch 1, context 4096: ${heads}:${kvHeads} heads, head_dim ${headDim}, blocks of ${blockSize}, ${kvDtype} KV`, async () => {
      await check({ heads, kvHeads, headDim, blockSize, seqs: [[4095, 1]], windows: [0, 7, 100], chunks, kvDtype });
    });
    it(`decode at batch 8, contexts 1..4096, and a 4-token verification run: ${heads}:${kvHeads} heads, head_dim ${headDim}, blocks of ${blockSize}, ${kvDtype} KV`, async () => {
      const seqs: Array<[number, number]> = [[4095, 1], [3000, 1], [2047, 1], [1499, 1], [776, 1], [128, 1], [63, 1], [0, 1]];
      await check({ heads, kvHeads, headDim, blockSize, seqs, windows: [0, 100], chunks, kvDtype });
      await check({ heads, kvHeads, headDim, blockSize, seqs: [[900, 4], [33, 1], [2500, 1]], windows: [0, 7], chunks, kvDtype });
    });
  }

  it('the tensor-core prefill kernel gives the same bits from a bf16 cache as from a float32 one (it rounds K and V to bf16 either way)', async () => {
    for (const [heads, kvHeads, headDim] of [[32, 8, 128], [8, 1, 64]]) {
      const sc: Scenario = { heads, kvHeads, headDim, blockSize: 16, seqs: [[0, 300], [200, 37], [13, 70]], windows: [0] };
      const f32 = fill(sc, 'bf16');
      const bf = f32.gm!;
      assert.equal(bf.bytes * 2, f32.gc.bytes, 'half the bytes');
      for (const window of [0, 7]) {
        const a = await run('prefill', 0, 0, f32.q, f32.gc, f32.layer, f32.batch, f32.scale, window);
        const b = await run('prefill', 0, 0, f32.q, bf, f32.layer, f32.batch, f32.scale, window);
        assert.deepEqual(b, a, `${heads}:${kvHeads} heads, head_dim ${headDim}, window ${window} (seed ${SEED})`);
      }
    }
  });

  // Batch invariance: a decode token's chunking depends on its own context only, so its output is
  // the same bits alone, in a batch of 8, or beside a prefill chunk; and the kernel's chunk rule
  // (decode_chunk) is the host's (decodeChunk): auto equals the chunk size forced to decodeChunk(n).
  for (const [heads, kvHeads, headDim, blockSize, kvDtype] of [[64, 8, 128, 16, 'float32'], [32, 8, 128, 16, 'float32'], [8, 1, 64, 32, 'float32'], [64, 8, 128, 16, 'bf16'], [8, 1, 64, 32, 'bf16'], [32, 8, 128, 16, 'fp8']] as const) {
    it(`a decode token's output does not depend on the other tokens of its step: ${heads}:${kvHeads} heads, head_dim ${headDim}, ${kvDtype} KV`, async () => {
      const contexts = [4096, 3001, 2048, 1500, 777, 129, 64, 1];
      const seqs: Array<[number, number]> = contexts.map((n) => [n - 1, 1]);
      // A 40-token prefill chunk as a ninth sequence, for the mixed step.
      const { batch, gc, layer, q, scale } = fill({ heads, kvHeads, headDim, blockSize, seqs: [...seqs, [10, 40]], windows: [0], kvDtype });
      const rowWidth = heads * headDim;
      const decodeOnly: AttentionBatch = { ...batch, numTokens: 8, positions: batch.positions.subarray(0, 8), seqIndex: batch.seqIndex.subarray(0, 8), slots: batch.slots.subarray(0, 8) };
      for (const window of [0, 100]) {
        const together = await run('auto', 0, 0, q.subarray(0, 8 * rowWidth), gc, layer, decodeOnly, scale, window);
        const mixed = await run('auto', 0, 0, q, gc, layer, batch, scale, window);
        for (let i = 0; i < 8; i++) {
          const alone: AttentionBatch = { ...batch, numTokens: 1, positions: batch.positions.subarray(i, i + 1), seqIndex: batch.seqIndex.subarray(i, i + 1), slots: batch.slots.subarray(i, i + 1) };
          const qi = q.slice(i * rowWidth, (i + 1) * rowWidth);
          const one = await run('auto', 0, 0, qi, gc, layer, alone, scale, window);
          const n = window > 0 ? Math.min(contexts[i], window) : contexts[i];
          const chunk = kvDtype === 'float32' ? decodeChunk(n) : decodeChunk(n, DECODE_MMA_MIN_CHUNK, DECODE_MMA_ONE_CHUNK);
          const forced = await run('decode', chunk, 0, qi, gc, layer, alone, scale, window);
          const row = (x: Float32Array) => x.subarray(i * rowWidth, (i + 1) * rowWidth);
          const label = `context ${contexts[i]}, window ${window} (seed ${SEED})`;
          assert.deepEqual(row(together), one, `${label}: in a batch of 8 differs from alone`);
          assert.deepEqual(row(mixed), one, `${label}: beside a prefill chunk differs from alone`);
          assert.deepEqual(forced, one, `${label}: auto differs from the chunk size decodeChunk(${n}) = ${chunk}`);
        }
      }
    });
  }

  it('a decode step is one kernel launch, split or not', async () => {
    const { batch, gc, layer, q, scale } = fill({ heads: 32, kvHeads: 8, headDim: 128, blockSize: 16, seqs: [[127, 1], [2047, 1], [20, 1]], windows: [0] });
    for (const [numTokens, what] of [[1, 'context 128 (4 chunks)'], [3, 'contexts 128, 2048, 21']] as const) {
      const b: AttentionBatch = { ...batch, numTokens, positions: batch.positions.subarray(0, numTokens), seqIndex: batch.seqIndex.subarray(0, numTokens), slots: batch.slots.subarray(0, numTokens) };
      const qt = g().fromHost(q.subarray(0, numTokens * 32 * 128), [numTokens, 32 * 128]);
      g().attention(qt, gc, layer, b, scale, 0); // uploads of the step's arrays happen once, outside the count
      const before = g().driver.launches;
      g().attention(qt, gc, layer, b, scale, 0);
      assert.equal(g().driver.launches - before, 1, what);
    }
  });

  it('a run of 16 tokens goes to the tensor-core kernel, 15 to split-K (auto equals the kernel named, bit for bit)', async () => {
    await check({ heads: 8, kvHeads: 2, headDim: 128, blockSize: 16, seqs: [[100, 16], [3, 1]], windows: [0] });
    await check({ heads: 8, kvHeads: 2, headDim: 128, blockSize: 16, seqs: [[100, 15], [3, 1]], windows: [0], chunks: [0] });
  });

  it('other head sizes keep the original kernel; forcing a tiled one names the problem', async () => {
    await check({ heads: 4, kvHeads: 2, headDim: 32, blockSize: 16, seqs: [[0, 40], [50, 1]], windows: [0, 7] });
    const batch = batchOf([[0, 20]], 16, (_, b) => b);
    const cache = g().allocKvCache({ numLayers: 1, numBlocks: 4, blockSize: 16, numKvHeads: 1, headDim: 32 });
    const q = g().fromHost(uniform(20 * 32), [20, 32]);
    g().attentionKernel = 'prefill';
    try {
      assert.throws(() => g().attention(q, cache, 0, batch, 0.2, 0), /attention: the prefill kernel needs head_dim 64 or 128, not 32/);
    } finally {
      g().attentionKernel = 'auto';
    }
  });

  it('a position outside the block table is refused before any kernel runs', () => {
    const batch = batchOf([[0, 20]], 16, (_, b) => b);
    const cache = g().allocKvCache({ numLayers: 1, numBlocks: 4, blockSize: 16, numKvHeads: 2, headDim: 64 });
    const q = g().fromHost(uniform(20 * 128), [20, 128]);
    assert.throws(() => g().attention(q, cache, 0, { ...batch, positions: Int32Array.from({ length: 20 }, (_, i) => i + 20) }, 0.1, 0), /outside its block table \(2 blocks of 16\)/);
    assert.throws(() => g().attention(q, cache, 0, { ...batch, blockTables: Int32Array.from([0, 7]) }, 0.1, 0), /sequence 0 reads block 1 of its table, which holds 7 \(the cache has blocks 0\.\.3\)/);
  });
});
