// The tensor-core GEMV for fp8, int8 (w8a16) and nvfp4 weights (kernels/gemv-mma-q8.cu), chosen per
// matrix by QuantizedWeights.q8DecodeGemv ('mma', the default, 'fma' or 'auto'; read
// from $TACHYON_Q8_DECODE_GEMV). 1–8 tokens (up to 16 in one launch of the _n2 kernels, for decode steps
// of more than 8 sequences); fp8 and int8 with K % 16 = 0 (16-byte rows), fp8 without
// NaN codes; nvfp4 always (tiled, K % 16 = 0 by the format). x is rounded to bf16 inside the kernel;
// the weight operands (e4m3 values, int8 codes, e2m1 · e4m3 block scale) are exact in bf16, products
// exact, sums float32, and the row / global scale multiplies each row's sum in float32 at the end. On
// sm_90+ nvfp4 weights run on the streamed kernels (gemv_mma_nvfp4s*: the copy engine fills a
// shared-memory ring) where they fit (nvfp4StreamPlan), with the classic kernels' bits.

import type { DevicePtr } from './driver.js';
import { fusedLaunchSize, splitPartFloats, splitScratch, type MmaLauncher, type StreamPlan } from './mma-launch.js';
import type { CudaFp8Weight, CudaInt8Weight, CudaNvfp4Weight } from './quantized-weights.js';

export const Q8_MMA_FILE = 'gemv-mma-q8.cu';
export const Q8_MMA_THREADS = 256;
const MAX_TOKENS = 8;
/** Tokens one launch takes: the _n2 kernels multiply each decoded weight fragment by two 8-token tiles. */
export const Q8_MMA_MAX_TOKENS = 16;
const WARPS = 8;

/** The kernel name's suffix for a launch of T tokens (1..16). */
function tokensSuffix(T: number): string {
  if (T < 1 || T > Q8_MMA_MAX_TOKENS) throw new RangeError(`mma GEMV: ${T} tokens, a launch takes 1 to ${Q8_MMA_MAX_TOKENS}`);
  return T > MAX_TOKENS ? '_n2' : '';
}

/** The formats this GEMV takes. */
export type Q8MmaFormat = 'fp8' | 'int8' | 'nvfp4';
export type Q8MmaWeight = CudaFp8Weight | CudaInt8Weight | CudaNvfp4Weight;
/** 'fma': the float32 v2 kernels; 'mma': the tensor cores for every weight they take; 'auto': the rule below. */
export type Q8DecodeGemv = 'fma' | 'mma' | 'auto';

/**
 * 'auto' runs matrices of at most this many rows on the tensor cores, as the bf16 'auto' does
 * (cuda-backend.ts: there the FMA GEMV streamed the taller gate/up and lm_head faster at one token).
 * A prediction for these formats until bench/cuda-quant-mma-q8.ts has measured them.
 */
export const Q8_MMA_AUTO_MAX_ROWS = 8192;

/**
 * What runs when nothing is set: the tensor cores. Measured on the H100 (bench/cuda-quant-mma-q8.ts,
 * 8B-shaped decode steps): at batch 8 fp8, w8a16 and nvfp4 steps take 5.5-5.7 ms on mma against
 * 10.4-14.1 on FMA; at batch 1 mma is 2-11% slower. An engine that never runs more than one token a
 * step picks FMA instead (QuantizedWeights.chooseDecodeGemvs).
 */
export const Q8_DECODE_GEMV_DEFAULT: Q8DecodeGemv = 'mma';

/**
 * The setting at start: $TACHYON_Q8_DECODE_GEMV (fma, mma or auto); else 'fma' where
 * $TACHYON_DECODE_GEMV pins the float32 kernels (the test files that compare with the CPU), else
 * Q8_DECODE_GEMV_DEFAULT.
 */
export function q8DecodeGemvFromEnv(env: NodeJS.ProcessEnv = process.env): Q8DecodeGemv {
  const v = env.TACHYON_Q8_DECODE_GEMV;
  if (v === undefined || v === '') return env.TACHYON_DECODE_GEMV === 'fma' ? 'fma' : Q8_DECODE_GEMV_DEFAULT;
  if (v === 'fma' || v === 'mma' || v === 'auto') return v;
  throw new RangeError(`TACHYON_Q8_DECODE_GEMV must be fma, mma or auto, got '${v}'`);
}

/** What q8MmaRefusal looks at: the weight's format and shape, and for fp8 whether it holds NaN codes. */
export interface Q8MmaShape {
  readonly format: string;
  readonly shape: readonly number[];
  readonly hasNanCodes?: boolean;
}

/** Why the mma GEMV cannot take this weight at T tokens, or undefined if it can. Pure. */
export function q8MmaRefusal(w: Q8MmaShape, T: number): string | undefined {
  if (T < 1 || T > MAX_TOKENS) return `${T} tokens (it takes 1 to ${MAX_TOKENS})`;
  const K = w.shape[1];
  switch (w.format) {
    case 'fp8':
      if (w.hasNanCodes) return 'the fp8 weight holds NaN codes (the exact kernel decodes them)';
      return K % 16 === 0 ? undefined : `K = ${K} is not a multiple of 16 (rows must be 16-byte aligned)`;
    case 'int8':
      return K % 16 === 0 ? undefined : `K = ${K} is not a multiple of 16 (rows must be 16-byte aligned)`;
    case 'nvfp4':
      return undefined;
    default:
      return `format ${w.format} (it takes fp8, int8 and nvfp4)`;
  }
}

/**
 * Whether `setting` runs this weight at T tokens on the mma GEMV: it must take the weight
 * (q8MmaRefusal), and 'auto' takes matrices of up to Q8_MMA_AUTO_MAX_ROWS rows. The rows, not T,
 * decide: a matrix runs on one kernel for 1..8 tokens (batch invariance). Pure.
 */
export function q8MmaChosen(setting: Q8DecodeGemv, w: Q8MmaShape, T: number): boolean {
  if (setting === 'fma' || q8MmaRefusal(w, T) !== undefined) return false;
  return setting === 'mma' || w.shape[0] <= Q8_MMA_AUTO_MAX_ROWS;
}

/**
 * m-tiles (16 rows) a block takes and how many blocks split each tile's K: 2 m-tiles
 * (each x value loaded serves 32 rows) where every SM still gets two blocks; where the tiles are fewer
 * than the SMs, K is split over up to ⌈2·SMs / tiles⌉ blocks, each warp keeping at least one chunk
 * (64 columns for fp8/int8, 128 for nvfp4). Depends on the format, N, K and the GPU only (never on the
 * tokens), so results stay batch-invariant. Pure.
 */
export function q8MmaPlan(format: Q8MmaFormat, N: number, K: number, multiprocessors: number): { rows: 1 | 2; splits: number; tiles: number } {
  const rows: 1 | 2 = Math.ceil(N / 32) >= 2 * multiprocessors ? 2 : 1;
  const tiles = Math.ceil(N / (16 * rows));
  const chunks = format === 'nvfp4' ? Math.ceil(K / 256) * 2 : Math.ceil(K / 64);
  let splits = 1;
  if (tiles < multiprocessors) splits = Math.max(1, Math.min(Math.ceil((2 * multiprocessors) / tiles), Math.floor(chunks / WARPS)));
  return { rows, splits, tiles };
}

// The streamed nvfp4 kernels' shared memory (kernels/gemv-mma-q8.cu, F4S_*): the ring's stages of 16 · R
// rows, each row a stage's 16 tiles of codes and block scales with bank padding, then x as bf16 pairs,
// then the splits' sums.
const STREAM_STAGE_ROW = 16 * 128 + 64 + 16 * 16 + 16;
/** The streamed kernels' static shared memory, at most: the scale pairs' table and the ring's barriers. */
const STREAM_STATIC = 256 * 8 + 256;
export const NVFP4_STREAM_THREADS = Q8_MMA_THREADS + 32;

/**
 * How the streamed nvfp4 kernels run a launch over R m-tiles an item (the plan's rows; 1 for q/k/v, 2
 * for gate and up) at T tokens, or undefined where they do not apply: before sm_90 (no bulk copies),
 * where the launcher turns them off or allows fewer tokens (streamTokens), K not a multiple of 256
 * (padded tiles; block-scale rows off 16-byte bounds), or a ring of 2 stages, x and the splits' sums
 * (`splits`: the most any matrix of the launch has in q8MmaPlan) over a block's shared memory. One
 * m-tile an item takes a ring of 4 stages (16 rows each) where it fits, else 2 (so 8 tokens of q/k/v
 * with split k and v, or up to 5 at K 14336, still stream); gate and up 2 stages of 32 rows. Pure.
 */
export function nvfp4StreamPlan(l: Pick<MmaLauncher, 'computeCapability' | 'sharedPerBlockOptin' | 'streamTokens'>, K: number, R: number, T: number, splits = 1): StreamPlan | undefined {
  if (l.computeCapability < 90 || T > Math.min(l.streamTokens, MAX_TOKENS) || K % 256 !== 0) return undefined;
  for (const stages of R === 1 ? [4, 2] : [2]) {
    const shared = stages * 16 * R * STREAM_STAGE_ROW + T * (K / 8 + 1) * 16 + splits * 8 * R * 32 * 16;
    if (shared + STREAM_STATIC <= l.sharedPerBlockOptin) return { shared, stages };
  }
  return undefined;
}

/** y[T, N] = x · Wᵀ (+ bias) on the tensor cores; check q8MmaRefusal first. */
export function q8MmaGemv(l: MmaLauncher, w: Q8MmaWeight, x: DevicePtr, T: number, bias: DevicePtr, y: DevicePtr): void {
  const [N, K] = w.shape;
  const why = q8MmaRefusal(w, Math.min(T, MAX_TOKENS));
  if (why !== undefined) throw new RangeError(`mma GEMV: cannot take this ${w.format} weight [${N}, ${K}]: ${why}`);
  const p = q8MmaPlan(w.format, N, K, l.multiprocessors);
  // The streamed kernels take the classic kernel's arguments (part and counters unused) and the ring's stages.
  const args = (part: DevicePtr, counters: DevicePtr) => [
    ...(w.format === 'nvfp4' ? [w.packed, w.wordsPerRow / 4, w.blockScales, w.globalScale] : [w.codes, w.format === 'fp8' ? w.rowScales : w.scales]),
    x, bias, y, part, counters, T, N, K, p.splits,
  ];
  const kinds = w.format === 'nvfp4' ? 'pipfpppppiiii' : 'pppppppiiii';
  const sp = w.format === 'nvfp4' ? nvfp4StreamPlan(l, K, p.rows, T, p.splits) : undefined;
  if (sp !== undefined) {
    l.launch(`gemv_mma_nvfp4s_r${p.rows}`, [Math.min(p.tiles, l.multiprocessors), 1, 1], NVFP4_STREAM_THREADS, kinds + 'i', [...args(0, 0), sp.stages], sp.shared);
    return;
  }
  const { part, counters } = splitScratch(l, splitPartFloats(p, p.rows, T), p.splits > 1 ? p.tiles : 0);
  l.launch(`gemv_mma_${w.format}_r${p.rows}${tokensSuffix(T)}`, [p.tiles, p.splits, 1], Q8_MMA_THREADS, kinds, args(part?.ptr ?? 0, counters));
  part?.release();
}

/** A weight's pointers and scales as the fused kernels take them (fp8/int8: codes, row scales; nvfp4: codes, block scales, global scale). */
function matrixArgs(w: Q8MmaWeight): number[] {
  if (w.format === 'nvfp4') return [w.packed, w.blockScales, w.globalScale];
  return [w.codes, w.format === 'fp8' ? w.rowScales : w.scales];
}

/**
 * Whether the fused mma kernels can take these weights as `op`: one format, one K, each taken by the
 * mma GEMV; q/k/v ('many', at most 3) each planned at one m-tile a block, gate and up ('silu') of one
 * shape planned at two — the plans the fused kernels share with the single one, so their outputs are
 * bitwise its. Pure.
 */
export function q8MmaFusable(ws: readonly Q8MmaWeight[], op: 'many' | 'silu', multiprocessors: number): boolean {
  if (ws.length === 0 || (op === 'many' && ws.length > 3) || (op === 'silu' && ws.length !== 2)) return false;
  const [N0, K] = ws[0].shape;
  if (!ws.every((w) => w.format === ws[0].format && w.shape[1] === K && q8MmaRefusal(w, 1) === undefined)) return false;
  if (op === 'silu') return ws[1].shape[0] === N0 && q8MmaPlan(ws[0].format, N0, K, multiprocessors).rows === 2;
  return ws.every((w) => q8MmaPlan(w.format, w.shape[0], K, multiprocessors).rows === 1);
}

/**
 * y_i = x · W_iᵀ (+ bias_i) for up to 3 weights in one launch (q8MmaFusable(…, 'many')), each matrix's
 * blocks as the single kernel's plan for it: every y_i bitwise q8MmaGemv's.
 */
export function q8MmaGemvMany(l: MmaLauncher, ws: readonly Q8MmaWeight[], x: DevicePtr, T: number, biases: readonly DevicePtr[], ys: readonly DevicePtr[]): void {
  if (!q8MmaFusable(ws, 'many', l.multiprocessors)) throw new RangeError(`mma gemvMany: these ${ws.length} weights cannot share a launch (q8MmaFusable)`);
  const format = ws[0].format;
  const K = ws[0].shape[1];
  const plans = ws.map((w) => q8MmaPlan(format, w.shape[0], K, l.multiprocessors));
  const nvfp4 = format === 'nvfp4';
  const sp = nvfp4 ? nvfp4StreamPlan(l, K, 1, T, Math.max(...plans.map((p) => p.splits))) : undefined;
  const args = (part: DevicePtr, counters: DevicePtr) => {
    const a: number[] = nvfp4 ? [x, T, K, (ws[0] as CudaNvfp4Weight).wordsPerRow / 4, part, counters] : [x, T, K, part, counters];
    for (let i = 0; i < 3; i++) {
      const w = ws[i];
      const absent = nvfp4 ? [0, 0, 1, 0, 0, 0, 1] : [0, 0, 0, 0, 0, 1];
      a.push(...(w ? [...matrixArgs(w), biases[i], ys[i], w.shape[0], plans[i].splits] : absent));
    }
    return a;
  };
  const kinds = nvfp4 ? 'piiipp' + 'ppfppii'.repeat(3) : 'piipp' + 'ppppii'.repeat(3);
  if (sp !== undefined) {
    const tiles = plans.reduce((n, p) => n + p.tiles, 0);
    l.launch('gemv_mma_nvfp4smany', [Math.min(tiles, l.multiprocessors), 1, 1], NVFP4_STREAM_THREADS, kinds + 'i', [...args(0, 0), sp.stages], sp.shared);
    return;
  }
  const size = fusedLaunchSize(plans, T);
  const { part, counters } = splitScratch(l, size.partFloats, size.counters);
  l.launch(`gemv_mma_${format}many${tokensSuffix(T)}`, [size.blocks, 1, 1], Q8_MMA_THREADS, kinds, args(part?.ptr ?? 0, counters));
  part?.release();
}

/** y = silu(x · gateᵀ + bg) · (x · upᵀ + bu) in one launch (q8MmaFusable([gate, up], 'silu')); bitwise two q8MmaGemv and silu_mul. */
export function q8MmaGemvSiluMul(l: MmaLauncher, gate: Q8MmaWeight, up: Q8MmaWeight, bg: DevicePtr, bu: DevicePtr, x: DevicePtr, T: number, y: DevicePtr): void {
  if (!q8MmaFusable([gate, up], 'silu', l.multiprocessors)) throw new RangeError('mma gemvSiluMul: gate and up cannot share a launch (q8MmaFusable)');
  const [N, K] = gate.shape;
  // Two m-tiles a block in the single plan means as many tiles as SMs twice over: never split.
  const tiles = Math.ceil(N / 16);
  if (gate.format === 'nvfp4') {
    const sp = nvfp4StreamPlan(l, K, 2, T, 1);
    const args = [x, T, K, N, gate.wordsPerRow / 4, 0, 0, 1, ...matrixArgs(gate), bg, ...matrixArgs(up), bu, y];
    const kinds = 'piiiippi' + 'ppfp' + 'ppfp' + 'p';
    if (sp !== undefined) l.launch('gemv_mma_nvfp4ssilu', [Math.min(tiles, l.multiprocessors), 1, 1], NVFP4_STREAM_THREADS, kinds + 'i', [...args, sp.stages], sp.shared);
    else l.launch(`gemv_mma_nvfp4silu${tokensSuffix(T)}`, [tiles, 1, 1], Q8_MMA_THREADS, kinds, args);
  } else {
    l.launch(`gemv_mma_${gate.format}silu${tokensSuffix(T)}`, [tiles, 1, 1], Q8_MMA_THREADS, 'piiippi' + 'ppp' + 'ppp' + 'p', [
      x, T, K, N, 0, 0, 1, ...matrixArgs(gate), bg, ...matrixArgs(up), bu, y,
    ]);
  }
}
