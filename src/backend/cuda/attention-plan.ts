// Host side of CUDA attention: what a step's tokens look like (runs of consecutive positions of one
// sequence), the query tiles of the tensor-core prefill kernel, how far decode attention is split,
// and checks that every position the kernels will read has a block. Built once per step and reused
// by every layer (a forward passes the same batch arrays to each).

import { firstOutside, int32Bounds } from '../../int32-bounds.js';
import { sameContents } from './same-contents.js';
import { KV_DTYPE_BYTES, type AttentionBatch, type KvDtype } from '../backend.js';

/** Query rows of the prefill kernel's tiles (kernels/attention-prefill.cu: 4 or 8 warps × 16 rows). */
export const PREFILL_TILE_ROWS = [64, 128] as const;
export type PrefillTileRows = (typeof PREFILL_TILE_ROWS)[number];
/** Runs this long (prefill chunks) go to the tensor-core kernel; a step's other tokens to split-K. */
export const PREFILL_MIN_RUN = 16;
/** KV positions per shared-memory tile of the prefill kernel (kernels/attention-prefill.cu PF_KV). */
export const PREFILL_KV_TILE = 64;

/**
 * Dynamic shared memory of a prefill_attention block: from a bf16 cache, two bf16 K/V tile pairs
 * (one computed on, one being filled); from a float32 or FP8 cache, one bf16 pair and a staging
 * pair in the cache's own type. 64 KiB (bf16), 48 KiB (FP8), 96 KiB (float32) at head_dim 128. The
 * wgmma build (qRows: the tile's query rows) also holds the query tile in bf16: 32 KiB more at 128 rows.
 */
export function prefillSharedBytes(kvDtype: KvDtype, headDim: number, qRows = 0): number {
  const tile = PREFILL_KV_TILE * headDim;
  return (kvDtype === 'bf16' ? 4 * tile * 2 : 2 * tile * 2 + 2 * tile * KV_DTYPE_BYTES[kvDtype]) + qRows * headDim * 2;
}

/** The prefill kernel's query tiles at one tile size. */
export interface QueryTiles {
  /**
   * 4 ints per tile: first token, rows (≤ the tile size), sequence, position of the first token.
   * Every token is in exactly one tile. Ordered by decreasing last position (the tiles with most
   * positions to visit start first).
   */
  tiles: Int32Array;
  numTiles: number;
  /** The tiles of runs of ≥ PREFILL_MIN_RUN tokens only (same layout and order). */
  prefillTiles: Int32Array;
  numPrefillTiles: number;
}

export interface AttentionPlan {
  numTokens: number;
  /** Runs of consecutive tokens of one sequence at consecutive positions: [first token, length] pairs, in token order. */
  runs: Int32Array;
  /** Tokens in the longest run. */
  longestRun: number;
  /** Largest position of any token. */
  maxPos: number;
  /** Query tiles of 64 and of 128 rows. */
  tiles: Record<PrefillTileRows, QueryTiles>;
  /** Tokens of the shorter runs (decode tokens, speculative windows), ascending: split-K's share of a mixed step. */
  otherTokens: Int32Array;
  /** Largest position among otherTokens (-1 if none). */
  otherMaxPos: number;
}

/**
 * Cut the step into runs and runs into tiles, checking positions and sequence indices (a bad one
 * would make a kernel read outside the cache). Runs are found from the data: the kernels rely on
 * nothing about the order of tokens in the step. (The engine, engine/spec/batch.ts and the model
 * tests all lay a sequence's tokens of a step out contiguously at consecutive positions, so a
 * prefill chunk is one run.) A prefill's first layer waits on this host work, so the token loops are
 * few: the range checks (int32Bounds, shared and soon compiled) and one pass that finds the runs.
 */
export function planAttention(batch: AttentionBatch, blockSize: number): AttentionPlan {
  const { numTokens: T, positions, seqIndex, numSeqs, maxBlocksPerSeq } = batch;
  if (positions.length < T || seqIndex.length < T) throw new RangeError(`attention: ${T} tokens but ${positions.length} positions and ${seqIndex.length} sequence indices`);
  if (batch.blockTables.length < numSeqs * maxBlocksPerSeq) {
    throw new RangeError(`attention: block tables hold ${batch.blockTables.length} entries, ${numSeqs} sequences × ${maxBlocksPerSeq} blocks need ${numSeqs * maxBlocksPerSeq}`);
  }
  const capacity = maxBlocksPerSeq * blockSize;
  const seqs = int32Bounds(seqIndex, T);
  if (seqs.min < 0 || seqs.max >= numSeqs) {
    const j = firstOutside(seqIndex, 0, numSeqs, T);
    throw new RangeError(`attention: token ${j} has sequence index ${seqIndex[j]}, the step has ${numSeqs} sequences`);
  }
  const pos = int32Bounds(positions, T);
  if (pos.min < 0 || pos.max >= capacity) {
    const j = firstOutside(positions, 0, capacity, T);
    throw new RangeError(`attention: token ${j} is at position ${positions[j]}, outside its block table (${maxBlocksPerSeq} blocks of ${blockSize})`);
  }
  // A run ends where the sequence changes or the next position is not one more.
  const runStarts: number[] = [0];
  for (let j = 1; j < T; j++) if (seqIndex[j] !== seqIndex[j - 1] || positions[j] !== positions[j - 1] + 1) runStarts.push(j);
  const numRuns = T > 0 ? runStarts.length : 0;
  const runs = new Int32Array(2 * numRuns);
  const otherTokens: number[] = [];
  let longestRun = 0;
  let otherMaxPos = -1;
  for (let r = 0; r < numRuns; r++) {
    const i = runStarts[r];
    const len = (r + 1 < numRuns ? runStarts[r + 1] : T) - i;
    runs[2 * r] = i;
    runs[2 * r + 1] = len;
    if (len > longestRun) longestRun = len;
    if (len < PREFILL_MIN_RUN) {
      for (let k = i; k < i + len; k++) otherTokens.push(k);
      otherMaxPos = Math.max(otherMaxPos, positions[i + len - 1]);
    }
  }
  const tilesOf = (rows: number): QueryTiles => {
    // Tiles of every run, then of the long runs only, ordered by decreasing last position (ties by
    // first token): a run's tiles come out last tile first, and runs are merged by a sort only when
    // there is more than one.
    const list: number[] = [];
    for (let r = 0; r < numRuns; r++) {
      const i = runs[2 * r];
      const len = runs[2 * r + 1];
      for (let off = Math.floor((len - 1) / rows) * rows; off >= 0; off -= rows) list.push(i + off, Math.min(rows, len - off), seqIndex[i], positions[i] + off, len >= PREFILL_MIN_RUN ? 1 : 0);
    }
    const numTiles = list.length / 5;
    const order = Array.from({ length: numTiles }, (_, t) => t);
    if (numRuns > 1) {
      const lastPos = (t: number) => list[5 * t + 3] + list[5 * t + 1] - 1;
      order.sort((a, b) => lastPos(b) - lastPos(a) || list[5 * a] - list[5 * b]);
    }
    const pick = (ts: number[]) => {
      const out = new Int32Array(4 * ts.length);
      for (let k = 0; k < ts.length; k++) for (let f = 0; f < 4; f++) out[4 * k + f] = list[5 * ts[k] + f];
      return out;
    };
    const longOrder = order.filter((t) => list[5 * t + 4] === 1);
    return { tiles: pick(order), numTiles, prefillTiles: pick(longOrder), numPrefillTiles: longOrder.length };
  };
  return {
    numTokens: T,
    runs,
    longestRun,
    maxPos: Math.max(-1, pos.max),
    tiles: { 64: tilesOf(64), 128: tilesOf(128) },
    otherTokens: Int32Array.from(otherTokens),
    otherMaxPos,
  };
}

/**
 * Tile size of a prefill launch: 128-row tiles (8 warps, one block an SM: each K/V tile read serves
 * twice the rows) once their blocks nearly fill the GPU (at least 7/8 of the SMs), else 64-row tiles
 * (4 warps, two blocks an SM), whose twice as many blocks spread a short step wider. Measured at 8B
 * shapes on the H100 (bench/cuda-attention.ts): 128 rows faster for a 512-token chunk after 1536
 * cached (128 blocks) and at 2048 tokens, the same at 384–1024 from 0, 64 rows faster at 256 tokens
 * and for a 256-token chunk (64 blocks).
 */
export function prefillTileRows(tiles128: number, numHeads: number, multiprocessors: number): PrefillTileRows {
  return 8 * tiles128 * numHeads >= 7 * multiprocessors ? 128 : 64;
}

/**
 * Every block a token reads (positions from the first its window shows to its own) must be a real
 * block of the cache; the CPU would read garbage there, a kernel an illegal address. Per run (the
 * plan's, or found here): a run's positions are consecutive, so its first and last token bound
 * the blocks it reads.
 */
export function checkBlockTables(batch: AttentionBatch, blockSize: number, numBlocks: number, window: number, runs = planAttention(batch, blockSize).runs): void {
  const { numSeqs, positions, seqIndex, blockTables, maxBlocksPerSeq } = batch;
  const lo = new Int32Array(numSeqs).fill(maxBlocksPerSeq);
  const hi = new Int32Array(numSeqs).fill(-1);
  for (let r = 0; r < runs.length; r += 2) {
    const first = runs[r];
    const s = seqIndex[first];
    const p0 = positions[first];
    const p1 = positions[first + runs[r + 1] - 1];
    const from = Math.floor((window > 0 ? Math.max(0, p0 - window + 1) : 0) / blockSize);
    const to = Math.floor(p1 / blockSize);
    if (from < lo[s]) lo[s] = from;
    if (to > hi[s]) hi[s] = to;
  }
  for (let s = 0; s < numSeqs; s++) {
    for (let b = lo[s]; b <= hi[s]; b++) {
      const block = blockTables[s * maxBlocksPerSeq + b];
      if (!(block >= 0 && block < numBlocks)) {
        throw new RangeError(`attention: sequence ${s} reads block ${b} of its table, which holds ${block} (the cache has blocks 0..${numBlocks - 1})`);
      }
    }
  }
}

/**
 * The last plan, kept while the step's arrays stay the same (same arrays, same contents: an array
 * changed in place gets a new plan), so a forward plans once for all its layers and the tile list
 * is the same array each time (StepUploads then sends it once).
 */
export class AttentionPlanner {
  private last?: {
    positions: Int32Array;
    seqIndex: Int32Array;
    blockTables: Int32Array;
    copies: [Int32Array, Int32Array, Int32Array];
    numTokens: number;
    blockSize: number;
    numBlocks: number;
    plan: AttentionPlan;
    checkedWindows: Set<number>;
  };

  plan(batch: AttentionBatch, blockSize: number, numBlocks: number, window: number): AttentionPlan {
    const c = this.last;
    const same =
      c !== undefined &&
      c.positions === batch.positions &&
      c.seqIndex === batch.seqIndex &&
      c.blockTables === batch.blockTables &&
      c.numTokens === batch.numTokens &&
      c.blockSize === blockSize &&
      c.numBlocks === numBlocks &&
      sameContents(c.copies[0], batch.positions) &&
      sameContents(c.copies[1], batch.seqIndex) &&
      sameContents(c.copies[2], batch.blockTables);
    if (!same) {
      this.last = {
        positions: batch.positions,
        seqIndex: batch.seqIndex,
        blockTables: batch.blockTables,
        copies: [batch.positions.slice(), batch.seqIndex.slice(), batch.blockTables.slice()],
        numTokens: batch.numTokens,
        blockSize,
        numBlocks,
        plan: planAttention(batch, blockSize),
        checkedWindows: new Set(),
      };
    }
    const last = this.last!;
    if (!last.checkedWindows.has(window)) {
      checkBlockTables(batch, blockSize, numBlocks, window, last.plan.runs);
      last.checkedWindows.add(window);
    }
    return last.plan;
  }
}

/** Query heads one decode block serves: the whole GQA group, padded to a power of two, at most 8. */
export function decodeHeadsPerBlock(numHeads: number, numKvHeads: number): number {
  const group = numHeads / numKvHeads;
  let gb = 1;
  while (gb < group && gb < 8) gb *= 2;
  return gb;
}

/** Most chunks one token's decode attention is split into (kernels/attention-decode.cu DEC_MAX_SPLITS). */
export const DECODE_MAX_SPLITS = 128;

/**
 * The smallest chunk of the tensor-core decode walk (bf16 and fp8 caches): its per-block latency,
 * not the positions, sets a short chunk's time, so contexts up to 2048 take chunks of 128 (H100,
 * bench/cuda-attention.ts: 8B shapes, context 128, 11.9 → 9.6 µs at batch 1; context 512, batch 8,
 * 27.1 → 19.0 µs), and those up to DECODE_MMA_ONE_CHUNK one chunk (no merge).
 */
export const DECODE_MMA_MIN_CHUNK = 128;

/**
 * The longest context the tensor-core decode walk takes in one chunk: up to 256 positions a chunk's
 * block walks them faster than two blocks and their merge (H100, bench/cuda-attention.ts, 8B shapes,
 * µs one chunk against chunks of 128: contexts 129 / 192 / 256 at batch 1 10.2 / 10.9 / 12.1 against
 * 12.6 / 12.7 / 13.1, at batch 8 11.1 / 11.9 / 13.3 against 13.7 / 14.3 / 14.8).
 */
export const DECODE_MMA_ONE_CHUNK = 256;

/**
 * Positions per chunk of decode attention for a token that sees `n` positions (the same rule as
 * kernels/attention-decode.cu decode_chunk): one chunk where n ≤ `oneChunk` (0 for the float32
 * walk, DECODE_MMA_ONE_CHUNK for the tensor-core one), else about 16 chunks, a multiple of 32 (one iteration of a
 * block's 4 warps × 8 positions), between `minChunk` (32 for the float32 walk, DECODE_MMA_MIN_CHUNK
 * for the tensor-core one) and 1024, and at most DECODE_MAX_SPLITS chunks. It depends on the token's
 * own context only (and the kernel, which is the same for every token of a cache), never on the
 * batch: a token's output is the same bits whichever tokens share its step. 16 chunks give a
 * batch-1 70B step (8 KV heads) 128 blocks at contexts ≥ 512 (≥ 2048 on tensor cores); the chunks of
 * a token are merged inside the same launch, so splitting costs no second kernel.
 */
export function decodeChunk(n: number, minChunk = 32, oneChunk = 0): number {
  const roundUp32 = (x: number) => Math.ceil(x / 32) * 32;
  if (n <= oneChunk) return Math.max(minChunk, roundUp32(n));
  return Math.max(minChunk, Math.min(1024, roundUp32(n / 16)), roundUp32(n / DECODE_MAX_SPLITS));
}

/** Chunks of a token that sees `n` positions, with the chunk size forced (> 0) or by decodeChunk. */
export function decodeSplits(n: number, forcedChunk = 0, minChunk = 32, oneChunk = 0): number {
  return Math.ceil(n / (forcedChunk > 0 ? forcedChunk : decodeChunk(n, minChunk, oneChunk)));
}
