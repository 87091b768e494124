// The tensor-core GEMV for int4 (w4a16) weights (kernels/gemv-mma-int4.cu), used where
// QuantizedWeights.decodeGemv = 'mma' (the default; $TACHYON_QUANT_DECODE_GEMV sets it): tiled int4
// weights without an act-order permutation, groups of ≥ 64 columns (or the whole row), 1–8 tokens (up
// to 16 in one launch: the _n2 kernels multiply each decoded weight fragment by two 8-token tiles),
// one matrix, up to three in one launch (q/k/v) or gate and up writing silu(g)·u. x is rounded to bf16
// inside the kernel; the codes minus the zero point are exact in bf16, products exact, sums float32
// and each group's sum times its float32 scale. Everything else keeps the FMA kernels. On sm_90+ the
// streamed kernels (gemv_mma_int4s*: the copy engine fills a shared-memory ring) take what fits them
// (int4StreamPlan), with the classic kernels' bits.

import type { DevicePtr } from './driver.js';
import { fusedLaunchSize, splitPartFloats, splitScratch, type MmaLauncher, type SplitPlan, type StreamPlan } from './mma-launch.js';
import type { Int4DeviceParts } from './quantized-weights.js';

export const INT4_MMA_FILE = 'gemv-mma-int4.cu';
export const INT4_MMA_THREADS = 256;
const MAX_TOKENS = 8;
/** Tokens one launch takes (two n-tiles); a token's result is the same bits at any count up to it. */
export const INT4_MMA_MAX_TOKENS = 16;
/** Smallest group the kernel takes: a mma step's 16 k lie in an aligned run of 64 columns. */
const MIN_GROUP_SHIFT = 6;

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
 * Row tiles (16 rows, one a block) and how many blocks split each tile's K (S): where the tiles are
 * fewer than the SMs, K is split over up to ⌈2·SMs / tiles⌉ blocks, each keeping at least 4 of the
 * row's 256-column tiles (half its 8 warps busy). Depends on N, K and the GPU only (never on the
 * tokens), so results stay batch-invariant; the fused kernels use each matrix's own plan, so their
 * outputs are bitwise the single kernel's. Pure.
 */
export function int4MmaPlan(N: number, K: number, multiprocessors: number): { splits: number; tiles: number } {
  const tiles = Math.ceil(N / 16);
  const kTiles = Math.ceil(K / 256);
  let splits = 1;
  if (tiles < multiprocessors) splits = Math.max(1, Math.min(Math.ceil((2 * multiprocessors) / tiles), Math.floor(kTiles / 4)));
  return { splits, tiles };
}

// The streamed kernels' shared memory (kernels/gemv-mma-int4.cu, I4S_*): ring stages of 16 · R rows,
// each row a stage's 16 tiles of codes, scales and zero points with bank padding, then x as bf16 pairs.
const STREAM_TILES = 16;
/** A stage's row: codes, scales and (with zero points) zero points, each with bank padding (I4S_STAGE_ROW). */
const streamStageRow = (zeroPoints: boolean) => STREAM_TILES * 128 + 64 + 4 * (4 * STREAM_TILES + 12) + (zeroPoints ? 4 * STREAM_TILES + 48 : 0);
/**
 * Tokens the streamed kernels take by default (QuantizedWeights.streamMaxTokens). Measured on the
 * H100 (bench/cuda-quant-mma.ts, 8B shapes) once x was staged with 4 loads in flight a thread: every
 * shape at 1, 4 and 8 tokens as fast as the classic kernel or faster (gate 23.6 → 18.3, 26.8 → 18.6,
 * 31.3 → 22.4 µs; o 11.4 → 11.0 at 8), and steps at batch 1 / 4 / 8 3.67 → 3.10, 3.87 → 3.58,
 * 4.48 → 4.41 ms. So up to 8, where x fits.
 */
export const INT4_STREAM_MAX_TOKENS = 8;
/** The streamed kernels' static shared memory, at most (the ring's barriers). */
const STREAM_STATIC = 256;
/** Shared memory for the sums of S splits × 8 warps × R m-tiles, a float4 a lane (the kernels' units). */
const streamUnits = (R: number, S: number) => S * 8 * R * 32 * 16;
export const INT4_STREAM_THREADS = INT4_MMA_THREADS + 32;

/**
 * How the streamed kernels run a launch over R m-tiles an item at T tokens, or undefined where they do
 * not apply: before sm_90 (no bulk copies), where the launcher turns them off, more tokens than the
 * launcher allows (streamTokens), scales whose rows do not start on 16 bytes (numGroups % 4; % 16 with
 * zero points, one byte each), or a ring of 2 stages, x and the splits' sums that do not fit a block's
 * shared memory (`splits`: the most any matrix of the launch has in int4MmaPlan). One m-tile an item
 * takes a ring of 4 stages where it fits, else 2 (q/k/v with split k and v at 8 tokens, K 14336 past 2
 * tokens, 70B's K 8192 at 8); gate and up 2 stages of 32 rows. Pure.
 */
export function int4StreamPlan(l: Pick<MmaLauncher, 'computeCapability' | 'sharedPerBlockOptin' | 'streamTokens'>, d: Int4DeviceParts, R: number, T: number, splits = 1): StreamPlan | undefined {
  if (l.computeCapability < 90 || T > Math.min(l.streamTokens, MAX_TOKENS)) return undefined;
  if (d.numGroups % (d.zeros ? 16 : 4) !== 0) return undefined;
  for (const stages of R === 1 ? [4, 2] : [2]) {
    // x: a row of bf16 per token, one uint4 of padding each (stream_stage_x).
    const shared = stages * 16 * R * streamStageRow(d.zeros !== 0) + T * (d.wordsPerRow * 16 + 16) + streamUnits(R, splits);
    if (shared + STREAM_STATIC <= l.sharedPerBlockOptin) return { shared, stages };
  }
  return undefined;
}

/**
 * A launch's plans (one per matrix, int4MmaPlan's) and, where it streams (int4StreamPlan), how. The
 * streamed kernels sum each row tile as the plan's splits would, within one block, so they take split
 * plans too.
 */
function streamedPlans(l: MmaLauncher, ds: readonly Int4DeviceParts[], R: number, T: number): { plans: SplitPlan[]; stream: StreamPlan | undefined } {
  const plans = ds.map((d) => int4MmaPlan(d.rows, d.cols, l.multiprocessors));
  return { plans, stream: int4StreamPlan(l, ds[0], R, T, Math.max(...plans.map((p) => p.splits))) };
}

/** The kernels' suffix for a weight's zero points and group size, and for T > 8 tokens (each combination is compiled apart). */
function variant(d: Int4DeviceParts, T: number): string {
  if (T < 1 || T > INT4_MMA_MAX_TOKENS) throw new RangeError(`int4 mma GEMV: ${T} tokens, a launch takes 1 to ${INT4_MMA_MAX_TOKENS}`);
  return (d.zeros ? '_zp' : '') + (d.groupShift === MIN_GROUP_SHIFT ? '_g64' : '') + (T > MAX_TOKENS ? '_n2' : '');
}

/** y[T, N] = x · Wᵀ (+ bias) on the tensor cores; check int4MmaRefusal first. */
export function int4MmaGemv(l: MmaLauncher, d: Int4DeviceParts, x: DevicePtr, T: number, bias: DevicePtr, y: DevicePtr): void {
  const { rows: N, cols: K } = d;
  const { plans: [p], stream } = streamedPlans(l, [d], 1, T);
  const args = (part: DevicePtr, counters: DevicePtr) => [d.packed, d.wordsPerRow / 4, d.scales, d.zeros, d.numGroups, d.groupShift, x, bias, y, part, counters, T, N, K, p.splits];
  if (stream !== undefined) {
    l.launch(`gemv_mma_int4s${variant(d, T)}`, [Math.min(p.tiles, l.multiprocessors), 1, 1], INT4_STREAM_THREADS, 'pippiipppppiiiii', [...args(0, 0), stream.stages], stream.shared);
    return;
  }
  const { part, counters } = splitScratch(l, splitPartFloats(p, 1, T), p.splits > 1 ? p.tiles : 0);
  l.launch(`gemv_mma_int4${variant(d, T)}`, [p.tiles, p.splits, 1], INT4_MMA_THREADS, 'pippiipppppiiii', args(part?.ptr ?? 0, counters));
  part?.release();
}

/**
 * Whether the fused int4 mma kernels can take these weights together: each taken by the mma GEMV,
 * all [*, K] with one grouping and all with zero points or none (one kernel variant). Pure.
 */
export function int4MmaFusable(ds: readonly Int4DeviceParts[]): boolean {
  const d0 = ds[0];
  return ds.length > 0 && ds.every((d) => int4MmaRefusal(d, 1) === undefined && d.cols === d0.cols && d.numGroups === d0.numGroups && d.groupShift === d0.groupShift && !d.zeros === !d0.zeros);
}

/**
 * y_i = x · W_iᵀ (+ bias_i) for up to 3 weights (int4MmaFusable) in one launch: each matrix's blocks
 * as the single kernel's plan for it, so every y_i is bitwise int4MmaGemv's.
 */
export function int4MmaGemvMany(l: MmaLauncher, ds: readonly Int4DeviceParts[], x: DevicePtr, T: number, biases: readonly DevicePtr[], ys: readonly DevicePtr[]): void {
  if (ds.length < 1 || ds.length > 3) throw new RangeError(`int4 mma gemvMany: ${ds.length} weights, it takes 1 to 3`);
  const K = ds[0].cols;
  const { plans, stream } = streamedPlans(l, ds, 1, T);
  const d0 = ds[0];
  const args = (part: DevicePtr, counters: DevicePtr) => {
    const a: number[] = [x, T, K, d0.wordsPerRow / 4, d0.numGroups, d0.groupShift, part, counters];
    for (let i = 0; i < 3; i++) {
      const d = ds[i];
      a.push(...(d ? [d.packed, d.scales, d.zeros, biases[i], ys[i], d.rows, plans[i].splits] : [0, 0, 0, 0, 0, 0, 1]));
    }
    return a;
  };
  if (stream !== undefined) {
    const tiles = plans.reduce((n, p) => n + p.tiles, 0);
    l.launch(`gemv_mma_int4smany${variant(d0, T)}`, [Math.min(tiles, l.multiprocessors), 1, 1], INT4_STREAM_THREADS, 'piiiiipp' + 'pppppii'.repeat(3) + 'i', [...args(0, 0), stream.stages], stream.shared);
    return;
  }
  const size = fusedLaunchSize(plans, T);
  const { part, counters } = splitScratch(l, size.partFloats, size.counters);
  l.launch(`gemv_mma_int4many${variant(d0, T)}`, [size.blocks, 1, 1], INT4_MMA_THREADS, 'piiiiipp' + 'pppppii'.repeat(3), args(part?.ptr ?? 0, counters));
  part?.release();
}

/** y = silu(x · gateᵀ + bg) · (x · upᵀ + bu) in one launch (int4MmaFusable([gate, up]), same N); bitwise two int4MmaGemv and silu_mul. */
export function int4MmaGemvSiluMul(l: MmaLauncher, gate: Int4DeviceParts, up: Int4DeviceParts, bg: DevicePtr, bu: DevicePtr, x: DevicePtr, T: number, y: DevicePtr): void {
  const { rows: N, cols: K } = gate;
  const { plans: [p], stream } = streamedPlans(l, [gate], 2, T);
  const args = (part: DevicePtr, counters: DevicePtr) => [
    x, T, K, N, gate.wordsPerRow / 4, gate.numGroups, gate.groupShift, part, counters, p.splits,
    gate.packed, gate.scales, gate.zeros, bg, up.packed, up.scales, up.zeros, bu, y,
  ];
  if (stream !== undefined) {
    l.launch(`gemv_mma_int4ssilu${variant(gate, T)}`, [Math.min(p.tiles, l.multiprocessors), 1, 1], INT4_STREAM_THREADS, 'piiiiiippi' + 'p'.repeat(9) + 'i', [...args(0, 0), stream.stages], stream.shared);
    return;
  }
  const { part, counters } = splitScratch(l, splitPartFloats(p, 2, T), p.splits > 1 ? p.tiles : 0);
  l.launch(`gemv_mma_int4silu${variant(gate, T)}`, [p.tiles, p.splits, 1], INT4_MMA_THREADS, 'piiiiiippi' + 'p'.repeat(9), args(part?.ptr ?? 0, counters));
  part?.release();
}
