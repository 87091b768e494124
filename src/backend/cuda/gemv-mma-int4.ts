// The tensor-core GEMV for int4 (w4a16) weights (kernels/gemv-mma-int4.cu), the default
// QuantizedWeights.decodeGemv = 'mma' ($TACHYON_QUANT_DECODE_GEMV=fma turns it off): tiled int4 weights
// without an act-order permutation, groups of ≥ 64 columns (or the whole row), 1–8 tokens. x is
// rounded to bf16 inside the kernel; the codes minus the zero point are exact in bf16, products exact,
// sums float32 and each group's sum times its float32 scale. Everything else keeps the FMA kernels.
// Two kernel variants give bitwise the same results (int4MmaOptions picks one): 'v1' and 'pipelined'
// (cp.async rings that keep a warp's next chunks in flight while it computes; see the .cu file).

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

/** The int4 mma kernel: 'v1' (gemv_mma_int4_r*) or 'pipelined' (gemv_mma_int4_p_r*); the same bits either way. */
export type Int4MmaVariant = 'v1' | 'pipelined';

/**
 * $TACHYON_INT4_MMA_VARIANT: v1 or pipelined; unset, 'v1' until 'pipelined' has been measured on the
 * GPU (bench/cuda-quant-mma.ts). A wrong value is named.
 */
export function int4MmaVariantFromEnv(env: NodeJS.ProcessEnv = process.env): Int4MmaVariant {
  const v = env.TACHYON_INT4_MMA_VARIANT;
  if (v === undefined || v === '') return 'v1';
  if (v === 'v1' || v === 'pipelined') return v;
  throw new RangeError(`TACHYON_INT4_MMA_VARIANT must be v1 or pipelined, got '${v}'`);
}

/**
 * Which int4 mma kernel every CudaBackend of this process runs (tests and benches change it; every
 * choice gives the same bits). rows: m-tiles a block, 'auto' = int4MmaPlan's for v1 and 1 for
 * 'pipelined' (whose ring per warp holds 4 chunk-stages of one m-tile or 2 of two).
 */
export const int4MmaOptions: { variant: Int4MmaVariant; rows: 'auto' | 1 | 2 } = { variant: int4MmaVariantFromEnv(), rows: 'auto' };

/**
 * The kernel and grid for an N×K weight. The split of K (int4MmaPlan's) fixes the summation order, so
 * every variant and row count keeps it; the rows a block takes only change how rows are grouped into
 * blocks (each m-tile's arithmetic is its own). 'pipelined' copies zero points as aligned 4-byte
 * words, so a zero-point array that is not 4-byte aligned takes v1. Depends on N, K, the GPU and the
 * options only, never on the tokens. Pure.
 */
export function int4MmaKernel(
  N: number,
  K: number,
  multiprocessors: number,
  opts: { variant: Int4MmaVariant; rows: 'auto' | 1 | 2 } = int4MmaOptions,
  zerosAligned = true,
): { kernel: string; rows: 1 | 2; tiles: number; splits: number } {
  const p = int4MmaPlan(N, K, multiprocessors);
  const pipelined = opts.variant === 'pipelined' && zerosAligned;
  const rows: 1 | 2 = opts.rows !== 'auto' ? opts.rows : pipelined ? 1 : p.rows;
  return { kernel: `gemv_mma_int4_${pipelined ? 'p_' : ''}r${rows}`, rows, tiles: Math.ceil(N / (16 * rows)), splits: p.splits };
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
  const p = int4MmaKernel(N, K, l.multiprocessors, int4MmaOptions, d.zeros % 4 === 0);
  const part = p.splits > 1 ? l.scratch(p.splits * T * N) : undefined;
  const counters = p.splits > 1 ? l.counters(p.tiles) : 0;
  l.launch(p.kernel, [p.tiles, p.splits, 1], INT4_MMA_THREADS, 'pippiipppppiiii', [
    d.packed, d.wordsPerRow / 4, d.scales, d.zeros, d.numGroups, d.groupShift, x, bias, y, part?.ptr ?? 0, counters, T, N, K, p.splits,
  ]);
  part?.release();
}
