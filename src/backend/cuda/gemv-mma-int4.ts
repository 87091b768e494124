// The tensor-core GEMV for int4 (w4a16) weights (kernels/gemv-mma-int4.cu), opt-in through
// QuantizedWeights.decodeGemv = 'mma' (or $TACHYON_QUANT_DECODE_GEMV=mma): tiled int4 weights
// without an act-order permutation, groups of ≥ 64 columns (or the whole row), 1–8 tokens. x is
// rounded to bf16 inside the kernel; the codes minus the zero point are exact in bf16, products exact,
// sums float32 and each group's sum times its float32 scale. Everything else keeps the FMA kernels.

import type { DevicePtr } from './driver.js';
import type { Int4DeviceParts } from './quantized-weights.js';

export const INT4_MMA_FILE = 'gemv-mma-int4.cu';
export const INT4_MMA_THREADS = 256;
const MAX_TOKENS = 8;
/** Smallest group the kernel takes: a mma step's 16 k lie in an aligned run of 64 columns. */
const MIN_GROUP_SHIFT = 6;
const WARPS = 8;

export type QuantDecodeGemv = 'fma' | 'mma';

/**
 * The default: $TACHYON_QUANT_DECODE_GEMV (fma or mma); else 'fma' where $TACHYON_DECODE_GEMV pins the
 * float32 kernels (test files that compare with the CPU), else 'mma'. Measured on the H100
 * (bench/cuda-quant-mma.ts): an 8B-shaped w4a16 decode step at batch 8 takes 11.7 ms on mma against
 * 20.9 on FMA, at batch 1 4.9 against 4.4 (the fused FMA launches step aside); a 70B W4A16 server at
 * concurrency 8 gives 76 output tok/s against 46, at concurrency 1 31 against 35. Serving is what
 * int4 models are for, so mma is the default.
 */
export function quantDecodeGemvFromEnv(env: NodeJS.ProcessEnv = process.env): QuantDecodeGemv {
  const v = env.TACHYON_QUANT_DECODE_GEMV;
  if (v === undefined || v === '') return env.TACHYON_DECODE_GEMV === 'fma' ? 'fma' : 'mma';
  if (v === 'fma' || v === 'mma') return v;
  throw new RangeError(`TACHYON_QUANT_DECODE_GEMV must be fma or mma, got '${v}'`);
}

/** Why the int4 mma GEMV cannot take this weight at T tokens, or undefined if it can. Pure. */
export function int4MmaRefusal(d: Pick<Int4DeviceParts, 'layout' | 'perm' | 'groupShift' | 'groupSize'>, T: number): string | undefined {
  if (T < 1 || T > MAX_TOKENS) return `${T} tokens (it takes 1 to ${MAX_TOKENS})`;
  if (d.layout !== 'tiled') return 'the weight is in the canonical layout';
  if (d.perm) return 'act-order weights gather x per call';
  if (d.groupShift < MIN_GROUP_SHIFT) return `group size ${d.groupSize} is under 64 (a mma step would span groups)`;
  return undefined;
}

/**
 * m-tiles (16 rows) a block takes and how many blocks split each tile's K: 2 m-tiles (each x value
 * loaded serves 32 rows) where that still gives every SM two blocks; where the tiles are fewer than
 * the SMs, K is split over up to ⌈2·SMs / tiles⌉ blocks, each warp keeping at least one chunk. Depends
 * on N, K and the GPU only (never on the tokens), so results stay batch-invariant. Pure.
 */
export function int4MmaPlan(N: number, K: number, multiprocessors: number): { rows: 1 | 2; splits: number; tiles: number } {
  const rows: 1 | 2 = Math.ceil(N / 32) >= 2 * multiprocessors ? 2 : 1;
  const tiles = Math.ceil(N / (16 * rows));
  const chunks = Math.ceil(K / 256) * 2; // half tiles of 128 columns
  let splits = 1;
  if (tiles < multiprocessors) splits = Math.max(1, Math.min(Math.ceil((2 * multiprocessors) / tiles), Math.floor(chunks / WARPS)));
  return { rows, splits, tiles };
}

/** What the launcher needs from its owner (QuantizedWeights). */
export interface Int4MmaLauncher {
  multiprocessors: number;
  /** Launch a kernel of INT4_MMA_FILE. */
  launch(kernel: string, grid: [number, number, number], block: number, kinds: string, args: number[]): void;
  /** Float32 scratch of n values for this launch; released right after (stream order keeps it valid). */
  scratch(n: number): { ptr: DevicePtr; release(): void };
  /** At least n u32 counters, zero between launches (the kernel resets the ones it used). */
  counters(n: number): DevicePtr;
}

/** y[T, N] = x · Wᵀ (+ bias) on the tensor cores; check int4MmaRefusal first. */
export function int4MmaGemv(l: Int4MmaLauncher, d: Int4DeviceParts, x: DevicePtr, T: number, bias: DevicePtr, y: DevicePtr): void {
  const { rows: N, cols: K } = d;
  const p = int4MmaPlan(N, K, l.multiprocessors);
  const kernel = `gemv_mma_int4_r${p.rows}`;
  const part = p.splits > 1 ? l.scratch(p.splits * T * N) : undefined;
  const counters = p.splits > 1 ? l.counters(p.tiles) : 0;
  l.launch(kernel, [p.tiles, p.splits, 1], INT4_MMA_THREADS, 'pippiipppppiiii', [
    d.packed, d.wordsPerRow / 4, d.scales, d.zeros, d.numGroups, d.groupShift, x, bias, y, part?.ptr ?? 0, counters, T, N, K, p.splits,
  ]);
  part?.release();
}
