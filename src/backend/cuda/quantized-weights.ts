// Quantized weights on the CUDA device: upload (and re-layout) of src/quant's canonical formats, the
// GEMV for ≤ 8 tokens that dequantises in registers, exact dequantisation (weightToHost, and a bf16
// scratch matrix for prefill), and random weights made on the device. Kernels: kernels/quant-linear.cu
// (the tensor-core GEMVs: gemv-mma-int4.ts, gemv-mma-q8.ts).
//
// Device layouts (`bytes` always reports the canonical weight's, as the CPU backend does):
//   fp8    codes as given, row-major [N, K] u8; rowScales float32 [N] (a per-tensor scale repeated).
//   int8   codes as given, [N, K] s8; scales float32 [N].
//   int4   'tiled' when K % 16 = 0 and the group size is a power of two ≥ 16 or the whole row (and an
//          act-order g_idx, if any, has groups of exactly that size): rows padded to a multiple of
//          256 columns, each tile of 256 columns reordered so that one 16-byte load holds the
//          16-column blocks b and b + 8 of its tile (quant-linear.cu, tiled_word); with g_idx the
//          columns are first sorted by group (perm) and x is gathered into that order per call.
//          Otherwise 'canonical': src/quant's words as given, with g_idx, read by the exact kernel.
//          scales float32 [N, G], zeros u8 [N, G] (absent: symmetric, zero point 8) as given.
//   nvfp4  codes tiled as int4's (the nibble order of the two formats is the same); block scales as
//          given, [N, K/16] E4M3 codes; the 256 multipliers float32(e4m3(code) · globalScale), made on
//          the host exactly as the CPU makes them.

import type { RandomWeightSpec, Weight } from '../backend.js';
import { InvalidRequestError } from '../../errors.js';
import type { Fp8Weight, Int4Weight, Int8Weight, Nvfp4Weight, QuantizedWeight } from '../../quant/format.js';
import { E4M3_VALUES } from '../../quant/fp8-e4m3.js';
import { int4WordsPerRow } from '../../quant/int4.js';
import { E2M1_MAX, NVFP4_BLOCK_SIZE } from '../../quant/nvfp4.js';
import { DEFAULT_INT4_GROUP_SIZE, type QuantizationMethod } from '../../quant/online.js';
import type { CudaDriver, DevicePtr } from './driver.js';
import type { DevicePool } from './memory-pool.js';
import { INT4_MMA_FILE, INT4_MMA_MAX_TOKENS, INT4_STREAM_MAX_TOKENS, int4MmaFusable, int4StreamPlan, int4MmaGemv, int4MmaGemvMany, int4MmaGemvSiluMul, int4MmaRefusal, quantDecodeGemvFromEnv, type QuantDecodeGemv } from './gemv-mma-int4.js';
import { Q8_MMA_FILE, Q8_MMA_MAX_TOKENS, nvfp4StreamPlan, q8DecodeGemvFromEnv, q8MmaChosen, q8MmaFusable, q8MmaPlan, q8MmaGemv, q8MmaGemvMany, q8MmaGemvSiluMul, type Q8DecodeGemv, type Q8MmaWeight } from './gemv-mma-q8.js';
import type { MmaLauncher } from './mma-launch.js';

/** Columns of one tile of the 4-bit layout: 8 loads of 16 bytes (quant-linear.cu, TILE_COLS). */
export const TILE_COLS = 256;
/** Tokens the quantized GEMV takes in one launch (the same kernel for 1..8, so results are batch-invariant). */
export const QUANT_GEMV_MAX_T = 8;
/**
 * Steps of 9 to this many tokens may run the GEMV in slices (slicedMaxTokens; 16 tokens a launch on the
 * tensor-core GEMVs, 8 on the others) rather than multiplying a bf16 copy of the weight. The engine's
 * default max_num_seqs is 64.
 */
export const QUANT_SLICED_LIMIT = 64;
/**
 * slicedMaxTokens' defaults: up to how many tokens a step reads the weight once per 16-token slice
 * on its tensor-core GEMV instead of dequantising the whole matrix to bf16 for a cuBLASLt GEMM. About
 * where the two cost the same in decode steps at Llama-3.1-8B shapes on the H100
 * (bench/cuda-decode-batches.ts, docs/cuda.md "Decode steps of more than 8 tokens"): int4 was as fast
 * at 48 tokens; nvfp4 and int8 took 11.4-11.7 ms at 32 against 18.9-19.7 for the copy, which costs
 * ~20 ms at any size (fp8 without FP8 tensor cores is taken to be int8's twin).
 */
export const DEFAULT_SLICED_MAX_TOKENS: Readonly<Record<CudaQuantizedWeight['format'], number>> = { int4: 48, nvfp4: 48, int8: 48, fp8: 48 };
const QROWS = 4;
const Q8_THREADS = 256;
const Q4_THREADS = 128;
const QV2_THREADS = 128;

/** Which fast GEMV kernels run: 'v2' (rows and tokens per block chosen per call) or the first 'v1' (4 rows, room for 8 tokens). */
export type QuantGemvKernel = 'v1' | 'v2';
type GemvFamily = 'q8' | 'q4';
/** The formats with fast GEMV kernels; fp8/int8 form the 'q8' family, int4/nvfp4 the 'q4' one. */
export type QuantGemvFormat = 'fp8' | 'int8' | 'int4' | 'nvfp4';
const FAMILY: Record<QuantGemvFormat, GemvFamily> = { fp8: 'q8', int8: 'q8', int4: 'q4', nvfp4: 'q4' };
/** Token bounds the v2 kernels are compiled for. */
const V2_TMAX = [1, 2, 4, 8] as const;
/** Rows per block of each v2 kernel made, by family and token bound (quant-linear.cu: QV2_Q8 / QV2_Q4). */
const V2_ROWS: Record<GemvFamily, Record<number, readonly number[]>> = {
  q8: { 1: [4, 8, 16], 2: [4, 8, 16], 4: [4, 8], 8: [4, 8] },
  q4: { 1: [4, 8], 2: [4, 8], 4: [4, 8], 8: [4] },
};
/** The same for the fused q/k/v and gate/up kernels (quant-linear.cu: QF_ALL_Q8 / QF_ALL_Q4): no 16 rows. */
const V2_FUSED_ROWS: Record<GemvFamily, Record<number, readonly number[]>> = {
  q8: { 1: [4, 8], 2: [4, 8], 4: [4, 8], 8: [4, 8] },
  q4: V2_ROWS.q4,
};
/**
 * The rows a v2 block takes unless N is small, per format and token bound: the fastest measured by
 * bench/cuda-quant-gemv.ts on the H100 (2026-11-23, 1 and 8 tokens at Llama-3.1-8B's shapes, summed
 * over a layer's q+k+v, o, gate, up and down). 1 token: fp8 and int8 r8 (r4 and r16 within 1–5%;
 * r8 the fastest on the 6144-row q/k/v width), int4 r4 (2–10% ahead of r8 on every large shape),
 * nvfp4 r8 (r4 ahead on gate/up, r8 on o and down, r8 by 1.5% over a layer). 8 tokens: r8 for
 * fp8/int8 (13–30% ahead of r4), r4 the only 4-bit kernel. 2 and 4 tokens were not measured: q8
 * r8 as at 1 and 8, int4 r4 as at 1, nvfp4 as predicted before (r8 at 2, r4 at 4).
 */
const V2_PREFERRED: Record<QuantGemvFormat, Record<number, number>> = {
  fp8: { 1: 8, 2: 8, 4: 8, 8: 8 },
  int8: { 1: 8, 2: 8, 4: 8, 8: 8 },
  int4: { 1: 4, 2: 4, 4: 4, 8: 4 },
  nvfp4: { 1: 8, 2: 8, 4: 4, 8: 4 },
};
/** Fewer blocks than this (about 2 per SM of an H100) and the rows per block are halved. */
const V2_MIN_BLOCKS = 256;

/**
 * The v2 kernel for T tokens of an N-row weight (for the fused kernels, N = the rows of the whole
 * grid): the smallest token bound ≥ T, and the preferred rows (or `rows` when forced, if that kernel
 * exists), halved while the grid would have fewer than V2_MIN_BLOCKS blocks. Every choice gives
 * bitwise the same results (quant-linear.cu), so this only affects speed. Pure: tested without a GPU.
 */
export function quantGemvV2(
  format: QuantGemvFormat,
  N: number,
  T: number,
  rows: 'auto' | 4 | 8 | 16 = 'auto',
  kind: 'single' | 'fused' = 'single',
): { tmax: number; rows: number; suffix: string } {
  const tmax = V2_TMAX.find((t) => t >= T);
  if (tmax === undefined) throw new RangeError(`quantized GEMV: ${T} tokens, it takes 1 to ${QUANT_GEMV_MAX_T}`);
  const made = (kind === 'fused' ? V2_FUSED_ROWS : V2_ROWS)[FAMILY[format]][tmax];
  let r: number;
  if (rows !== 'auto') {
    if (!made.includes(rows)) throw new RangeError(`quantized GEMV: no ${kind === 'fused' ? 'fused ' : ''}${format} kernel for ${rows} rows and up to ${tmax} tokens (made: ${made.join(', ')})`);
    r = rows;
  } else {
    r = V2_PREFERRED[format][tmax];
    while (r > 4 && Math.ceil(N / r) < V2_MIN_BLOCKS) r /= 2;
  }
  return { tmax, rows: r, suffix: `_r${r}_t${tmax}` };
}
const EXACT_THREADS = 256;

/** FP8 (E4M3) on the device: codes row-major [rows, cols], one byte each, unpadded; rowScales float32 [rows]. */
export class CudaFp8Weight implements Weight {
  readonly format = 'fp8';
  readonly shape: readonly number[];
  constructor(
    readonly rows: number,
    readonly cols: number,
    readonly codes: DevicePtr,
    readonly rowScales: DevicePtr,
    readonly bytes: number,
    /** Some code is NaN (0x7f/0xff): the fast GEMV would read it as ±480, so the exact kernel runs instead. */
    readonly hasNanCodes: boolean,
  ) {
    this.shape = [rows, cols];
  }
}

/** int8 (w8a16) on the device: codes [rows, cols] s8, scales float32 [rows]. */
export class CudaInt8Weight implements Weight {
  readonly format = 'int8';
  readonly shape: readonly number[];
  constructor(
    readonly rows: number,
    readonly cols: number,
    readonly codes: DevicePtr,
    readonly scales: DevicePtr,
    readonly bytes: number,
  ) {
    this.shape = [rows, cols];
  }
}

export interface Int4DeviceParts {
  rows: number;
  cols: number;
  layout: 'tiled' | 'canonical';
  packed: DevicePtr;
  /** u32 words per row of `packed`: Kp/8 tiled, ceil(K/8) canonical. */
  wordsPerRow: number;
  groupSize: number;
  numGroups: number;
  /** Tiled: group of (sorted) column j = j >> groupShift (31 for one group per row). */
  groupShift: number;
  scales: DevicePtr;
  /** u8 [rows, numGroups], or 0 for symmetric weights. */
  zeros: DevicePtr;
  /** Tiled act-order: int32 [cols], tiled column j holds original column perm[j]; else 0. */
  perm: DevicePtr;
  /** Canonical act-order: int32 [cols] group of each column; else 0. */
  gIdx: DevicePtr;
}

/** int4 (w4a16) on the device; see the layouts at the top of this file. */
export class CudaInt4Weight implements Weight {
  readonly format = 'int4';
  readonly shape: readonly number[];
  constructor(
    readonly d: Int4DeviceParts,
    readonly bytes: number,
  ) {
    this.shape = [d.rows, d.cols];
  }
}

/** NVFP4 on the device: tiled codes, E4M3 block scales [rows, cols/16], 256 float32 multipliers. */
export class CudaNvfp4Weight implements Weight {
  readonly format = 'nvfp4';
  readonly shape: readonly number[];
  constructor(
    readonly rows: number,
    readonly cols: number,
    readonly packed: DevicePtr,
    readonly wordsPerRow: number,
    readonly blockScales: DevicePtr,
    readonly multipliers: DevicePtr,
    readonly globalScale: number,
    readonly bytes: number,
  ) {
    this.shape = [rows, cols];
  }
}

export type CudaQuantizedWeight = CudaFp8Weight | CudaInt8Weight | CudaInt4Weight | CudaNvfp4Weight;

export function isCudaQuantized(w: Weight): w is CudaQuantizedWeight {
  return w instanceof CudaFp8Weight || w instanceof CudaInt8Weight || w instanceof CudaInt4Weight || w instanceof CudaNvfp4Weight;
}

/** How an int4 weight is laid out on the device (pure: tests check it without a GPU). */
export type Int4Plan = { layout: 'tiled'; groupShift: number; perm?: Int32Array } | { layout: 'canonical'; reason: string };

export function planInt4(q: Pick<Int4Weight, 'cols' | 'groupSize' | 'numGroups' | 'gIdx'>): Int4Plan {
  const { cols: K, groupSize } = q;
  if (K % 16 !== 0) return { layout: 'canonical', reason: `K = ${K} is not a multiple of 16` };
  let groupShift: number;
  if (groupSize === K) groupShift = 31;
  else if (groupSize >= 16 && (groupSize & (groupSize - 1)) === 0) groupShift = Math.log2(groupSize);
  else return { layout: 'canonical', reason: `group size ${groupSize} is not a power of two ≥ 16` };
  if (!q.gIdx) return { layout: 'tiled', groupShift };
  // Act-order: sort the columns by group (stable). The tiled kernel finds a column's group by
  // shifting, so the sorted groups must be the plain ones (GPTQ's g_idx always gives that).
  const perm = sortColumnsByGroup(q.gIdx, q.numGroups);
  let identity = true;
  for (let j = 0; j < K; j++) {
    if (q.gIdx[perm[j]] !== j >> groupShift) return { layout: 'canonical', reason: 'g_idx groups are not all of the group size' };
    if (perm[j] !== j) identity = false;
  }
  return identity ? { layout: 'tiled', groupShift } : { layout: 'tiled', groupShift, perm };
}

/** Columns in order of their group, stable within a group (a counting sort). */
function sortColumnsByGroup(gIdx: Int32Array, numGroups: number): Int32Array {
  const start = new Int32Array(numGroups + 1);
  for (const g of gIdx) start[g + 1]++;
  for (let g = 0; g < numGroups; g++) start[g + 1] += start[g];
  const perm = new Int32Array(gIdx.length);
  for (let i = 0; i < gIdx.length; i++) perm[start[gIdx[i]]++] = i;
  return perm;
}

/** float32(e4m3(code) · globalScale) for every code, as src/quant/nvfp4.ts computes each block's multiplier. */
export function nvfp4Multipliers(globalScale: number): Float32Array {
  return Float32Array.from(E4M3_VALUES, (v) => v * globalScale);
}

/** The bytes src/quant's quantizeWeight(method, …) reports for a [rows, cols] weight (no g_idx). */
export function quantizedBytes(method: QuantizationMethod, rows: number, cols: number): number {
  switch (method) {
    case 'fp8':
    case 'w8a16':
      return rows * cols + 4 * rows;
    case 'w4a16':
      return rows * int4WordsPerRow(cols) * 4 + rows * Math.ceil(cols / Math.min(DEFAULT_INT4_GROUP_SIZE, cols)) * 4;
    case 'nvfp4':
      return rows * (cols / 2) + rows * (cols / NVFP4_BLOCK_SIZE) + 4;
  }
}

/** What the quantized-weight code needs from the backend that owns it. */
export interface QuantDeviceContext {
  readonly driver: CudaDriver;
  readonly pool: DevicePool;
  /** Long-lived device memory; hand it to `own` once its weight exists. */
  alloc(bytes: number): DevicePtr;
  /** Free `ptrs` when `owner` is garbage collected, and count `bytes` as weight memory. */
  own(owner: object, ptrs: DevicePtr[], bytes: number): void;
  /** Launch a kernel of quant-linear.cu. */
  launch(kernel: string, grid: [number, number, number], block: number, kinds: string, args: number[], shared?: number): void;
  /** Launch a kernel of another kernels file (the int4 mma GEMV's). */
  launchIn?(file: string, kernel: string, grid: [number, number, number], block: number, kinds: string, args: number[], shared?: number): void;
  /** Blocks for a grid-stride loop over n elements. */
  gridFor(n: number): [number, number, number];
}

const roundUp = (n: number, m: number) => Math.ceil(n / m) * m;

/** Quantized weights of one CudaBackend. */
export class QuantizedWeights {
  /**
   * The bf16 matrix prefill multiplies: one per backend, as large as the largest quantized weight,
   * made when that weight is loaded (so it is in the memory the KV cache sizing sees, not in a
   * step's activations). Every prefill linear reuses it: each write is queued after the GEMM that
   * read the previous contents, on the one stream.
   */
  private scratch: { holder: object; ptr: DevicePtr; bytes: number } | undefined;

  /** The fast GEMV kernels: 'v2' (default) or 'v1', kept to compare against (bench/cuda-quant-gemv.ts). */
  kernel: QuantGemvKernel = 'v2';
  /** v2's rows per block: chosen per call ('auto'), or forced (tests, bench; the kernel must exist; 16 leaves the fused kernels on 'auto'). */
  rows: 'auto' | 4 | 8 | 16 = 'auto';
  /**
   * The ≤ 8-token GEMV of int4 weights: 'fma' (the kernels above) or 'mma' (the default), the tensor-core
   * GEMV (gemv-mma-int4.ts) for the int4 weights it takes (tiled, no act-order, groups ≥ 64); x is
   * then rounded to bf16. The fused q/k/v and gate/up kernels step aside for those weights (separate
   * mma linears, then silu_mul). quantDecodeGemvFromEnv says how the default is chosen.
   */
  decodeGemv: QuantDecodeGemv = quantDecodeGemvFromEnv();
  /**
   * Whether the int4 and nvfp4 tensor-core GEMVs may run their streamed kernels (sm_90+: the copy
   * engine fills a shared-memory ring; int4StreamPlan in gemv-mma-int4.ts and nvfp4StreamPlan in
   * gemv-mma-q8.ts say where they apply): bitwise the same outputs, so only speed depends on it.
   * $TACHYON_STREAM=0 turns them off.
   */
  streamed = process.env.TACHYON_STREAM !== '0';
  /** The most tokens a streamed launch takes (INT4_STREAM_MAX_TOKENS, as measured; up to 8). */
  streamMaxTokens = INT4_STREAM_MAX_TOKENS;
  /**
   * The ≤ 8-token GEMV of fp8, int8 and nvfp4 weights: 'fma' (the v2 kernels above), 'mma' (the
   * default: the tensor-core GEMV of gemv-mma-q8.ts for every such weight it takes: fp8/int8
   * with K % 16 = 0, fp8 without NaN codes, all nvfp4; x then rounded to bf16) or 'auto' (mma for
   * matrices of up to Q8_MMA_AUTO_MAX_ROWS rows). The choice depends on the matrix only, never on the
   * token count; the fused q/k/v and gate/up kernels step aside for weights on mma, as for int4.
   * q8DecodeGemvFromEnv says how the default is chosen.
   */
  q8DecodeGemv: Q8DecodeGemv = q8DecodeGemvFromEnv();
  /**
   * Per format, the most tokens a step runs on the decode GEMVs in slices (gemv, gemvMany and
   * gemvSiluMul take up to QUANT_SLICED_LIMIT tokens that way) where the weight is on its tensor-core
   * GEMV; more go to prefill's dequantise-and-GEMM (see slicesTake). 8 or less turns slicing off.
   */
  slicedMaxTokens: Record<CudaQuantizedWeight['format'], number> = { ...DEFAULT_SLICED_MAX_TOKENS };
  /** bf16 copies by the vectorised kernels where they apply (dequantizeBf16Fast); false: element by element, to compare. */
  vectorisedDequant = true;
  /** u32 counters the split-K mma GEMV uses (zero between launches), grown as needed. */
  private mmaCounters: { holder: object; ptr: DevicePtr; count: number } | undefined;

  constructor(private readonly ctx: QuantDeviceContext) {}

  /**
   * The decode GEMVs for an engine whose steps carry at most `maxTokensPerStep` tokens (max_num_seqs
   * × (1 + speculative tokens)): one token → the FMA kernels, faster at one token (H100, 8B-shaped
   * steps: w4a16 3.60 against 4.13 ms, fp8 2-11% faster), except int4 and nvfp4 weights the streamed
   * kernels take (streamOneToken); more → the tensor-core ones (2-3× faster at 8 tokens). Fixed for the
   * engine's life, so a token's result never depends on which tokens share its step. Where $TACHYON_DECODE_GEMV, $TACHYON_QUANT_DECODE_GEMV or $TACHYON_Q8_DECODE_GEMV is
   * set, the environment wins and nothing changes.
   */
  chooseDecodeGemvs(maxTokensPerStep: number, env: NodeJS.ProcessEnv = process.env): void {
    if (env.TACHYON_DECODE_GEMV || env.TACHYON_QUANT_DECODE_GEMV || env.TACHYON_Q8_DECODE_GEMV) return;
    const kernels = maxTokensPerStep <= 1 ? 'fma' : 'mma';
    this.decodeGemv = kernels;
    this.q8DecodeGemv = kernels;
    this.streamOneToken = maxTokensPerStep <= 1;
  }

  /**
   * Set by chooseDecodeGemvs for an engine of one token a step: int4 and nvfp4 weights the streamed
   * kernels take (sm_90+, int4StreamPlan / nvfp4StreamPlan) run on the tensor-core GEMVs all the
   * same — measured on the H100, an 8B-shaped w4a16 step at batch 1 took 3.07 ms there against 3.38 on
   * FMA — and the rest keeps FMA. Fixed for the engine's life, as the choice above.
   */
  streamOneToken = false;

  /** Whether an engine of one token a step runs this weight on the streamed tensor-core kernels. */
  private streamsOneToken(w: CudaQuantizedWeight): boolean {
    if (!this.streamOneToken || !this.streamed) return false;
    const { device } = this.ctx.driver;
    const l = { computeCapability: device.computeCapability, sharedPerBlockOptin: device.sharedPerBlockOptin, streamTokens: 1 };
    if (w instanceof CudaInt4Weight) return int4MmaRefusal(w.d, 1) === undefined && int4StreamPlan(l, w.d, 2, 1) !== undefined;
    if (!(w instanceof CudaNvfp4Weight)) return false;
    const [N, K] = w.shape;
    const p = q8MmaPlan('nvfp4', N, K, device.multiprocessors);
    return nvfp4StreamPlan(l, K, p.rows, 1, p.splits) !== undefined;
  }

  // ---- loading ---------------------------------------------------------------------------------

  load(name: string, q: QuantizedWeight): CudaQuantizedWeight {
    const w = this.upload(name, q);
    this.reserveScratch(w);
    return w;
  }

  private reserveScratch(w: CudaQuantizedWeight): void {
    const bytes = w.shape[0] * w.shape[1] * 2;
    if (this.scratch && this.scratch.bytes >= bytes) return;
    // A smaller one before it is freed when its holder is collected; not counted as weight bytes.
    const ptr = this.ctx.alloc(bytes);
    const holder = {};
    this.ctx.own(holder, [ptr], 0);
    this.scratch = { holder, ptr, bytes };
  }

  private upload(name: string, q: QuantizedWeight): CudaQuantizedWeight {
    switch (q.format) {
      case 'fp8':
        return this.loadFp8(q);
      case 'int8':
        return this.loadInt8(q);
      case 'int4':
        return this.loadInt4(q);
      case 'nvfp4':
        return this.loadNvfp4(q);
      default:
        // Data built outside the type system (a reader's bug); format.ts names it the same way.
        throw new TypeError(`'${name}': unknown quantized weight format '${(q as { format?: unknown }).format}'`);
    }
  }

  /** Device memory holding `data`, to be owned by a weight. */
  private put(data: ArrayBufferView): DevicePtr {
    const ptr = this.ctx.alloc(data.byteLength);
    this.ctx.driver.upload(ptr, data);
    return ptr;
  }

  private loadFp8(q: Fp8Weight): CudaFp8Weight {
    const rowScales = q.scales.length === q.rows ? q.scales : new Float32Array(q.rows).fill(q.scales[0]);
    const codes = this.put(q.codes);
    const scales = this.put(rowScales);
    const w = new CudaFp8Weight(q.rows, q.cols, codes, scales, q.bytes, this.hasNanCodes(codes, q.codes.length));
    this.ctx.own(w, [codes, scales], q.codes.byteLength + rowScales.byteLength);
    return w;
  }

  /** Whether any of n E4M3 codes at `codes` is NaN (0x7f/0xff), checked on the device. */
  private hasNanCodes(codes: DevicePtr, n: number): boolean {
    const flag = this.ctx.pool.alloc(4, true);
    try {
      this.ctx.driver.fill32(flag.ptr, 0, 1);
      this.ctx.launch('fp8_find_nan', this.ctx.gridFor(n / 4), 256, 'plp', [codes, n, flag.ptr]);
      const found = new Uint32Array(1);
      this.ctx.driver.download(found, flag.ptr);
      return found[0] !== 0;
    } finally {
      this.ctx.pool.release(flag);
    }
  }

  private loadInt8(q: Int8Weight): CudaInt8Weight {
    const codes = this.put(q.codes);
    const scales = this.put(q.scales);
    const w = new CudaInt8Weight(q.rows, q.cols, codes, scales, q.bytes);
    this.ctx.own(w, [codes, scales], q.codes.byteLength + q.scales.byteLength);
    return w;
  }

  private loadInt4(q: Int4Weight): CudaInt4Weight {
    const plan = planInt4(q);
    const ptrs: DevicePtr[] = [];
    const put = (data: ArrayBufferView) => {
      const p = this.put(data);
      ptrs.push(p);
      return p;
    };
    const scales = put(q.scales);
    const zeros = q.zeros ? put(q.zeros) : 0;
    let parts: Int4DeviceParts;
    if (plan.layout === 'tiled') {
      const perm = plan.perm ? put(plan.perm) : 0;
      const wordsPerRow = roundUp(q.cols, TILE_COLS) / 8;
      const packed = this.ctx.alloc(q.rows * wordsPerRow * 4);
      ptrs.push(packed);
      this.tile(q.packed, q.rows, q.cols, perm, packed, wordsPerRow);
      parts = { rows: q.rows, cols: q.cols, layout: 'tiled', packed, wordsPerRow, groupSize: q.groupSize, numGroups: q.numGroups, groupShift: plan.groupShift, scales, zeros, perm, gIdx: 0 };
    } else {
      const packed = put(q.packed);
      const gIdx = q.gIdx ? put(q.gIdx) : 0;
      parts = { rows: q.rows, cols: q.cols, layout: 'canonical', packed, wordsPerRow: int4WordsPerRow(q.cols), groupSize: q.groupSize, numGroups: q.numGroups, groupShift: 0, scales, zeros, perm: 0, gIdx };
    }
    const w = new CudaInt4Weight(parts, q.bytes);
    const deviceBytes = q.scales.byteLength + (q.zeros?.byteLength ?? 0) + (plan.layout === 'tiled' ? q.rows * parts.wordsPerRow * 4 + (plan.perm?.byteLength ?? 0) : q.packed.byteLength + (q.gIdx?.byteLength ?? 0));
    this.ctx.own(w, ptrs, deviceBytes);
    return w;
  }

  /** Canonical 4-bit words (K/8 per row) → the tiled layout at `dst`, through a scratch copy on the device. */
  private tile(words: ArrayBufferView, rows: number, K: number, perm: DevicePtr, dst: DevicePtr, dstWords: number): void {
    const scratch = this.ctx.pool.alloc(words.byteLength, true);
    try {
      this.ctx.driver.upload(scratch.ptr, words);
      this.ctx.launch('repack_4bit', this.ctx.gridFor(rows * dstWords), 256, 'pppiiii', [scratch.ptr, perm, dst, rows, K, K / 8, dstWords]);
    } finally {
      // Later work on the stream is ordered after the repack, so the buffer can be reused at once.
      this.ctx.pool.release(scratch);
    }
  }

  private loadNvfp4(q: Nvfp4Weight): CudaNvfp4Weight {
    const wordsPerRow = roundUp(q.cols, TILE_COLS) / 8;
    const packed = this.ctx.alloc(q.rows * wordsPerRow * 4);
    const blockScales = this.put(q.blockScales);
    const multipliers = this.put(nvfp4Multipliers(q.globalScale));
    this.tile(q.packed, q.rows, q.cols, 0, packed, wordsPerRow);
    const w = new CudaNvfp4Weight(q.rows, q.cols, packed, wordsPerRow, blockScales, multipliers, q.globalScale, q.bytes);
    this.ctx.own(w, [packed, blockScales, multipliers], q.rows * wordsPerRow * 4 + q.blockScales.byteLength + 1024);
    return w;
  }

  // ---- random weights (--load-format dummy) ------------------------------------------------------

  /**
   * A random [rows, cols] weight laid out exactly as `load(quantizeWeight(method, …))` would hold one:
   * random valid codes, positive scales; dequantised magnitudes up to about `spec.scale`.
   */
  random(name: string, method: QuantizationMethod, spec: RandomWeightSpec): CudaQuantizedWeight {
    const w = this.makeRandom(name, method, spec);
    this.reserveScratch(w);
    return w;
  }

  private makeRandom(name: string, method: QuantizationMethod, spec: RandomWeightSpec): CudaQuantizedWeight {
    const [rows, cols] = spec.shape;
    const seed = spec.seed >>> 0;
    const { scale } = spec;
    const bytes = quantizedBytes(method, rows, cols);
    const n = rows * cols;
    // Scales uniform in [scale/2, scale) / (the format's largest code), so values reach ~scale.
    const scales = (count: number, maxCode: number, stream: number) => {
      const p = this.ctx.alloc(count * 4);
      this.ctx.launch('random_scales', this.ctx.gridFor(count), 256, 'pluff', [p, count, (seed ^ stream) >>> 0, (0.5 * scale) / maxCode, scale / maxCode]);
      return p;
    };
    switch (method) {
      case 'fp8': {
        const codes = this.ctx.alloc(n);
        this.ctx.launch('random_fp8_codes', this.ctx.gridFor(n), 256, 'plu', [codes, n, seed]);
        const rowScales = scales(rows, 448, 0x5ca1e);
        const w = new CudaFp8Weight(rows, cols, codes, rowScales, bytes, false);
        this.ctx.own(w, [codes, rowScales], n + 4 * rows);
        return w;
      }
      case 'w8a16': {
        const codes = this.ctx.alloc(n);
        this.ctx.launch('random_int8_codes', this.ctx.gridFor(n), 256, 'plu', [codes, n, seed]);
        const s = scales(rows, 127, 0x5ca1e);
        const w = new CudaInt8Weight(rows, cols, codes, s, bytes);
        this.ctx.own(w, [codes, s], n + 4 * rows);
        return w;
      }
      case 'w4a16': {
        // quantizeWeight's w4a16: symmetric, group 128 (the whole row when shorter); codes 0..15 − 8.
        const groupSize = Math.min(DEFAULT_INT4_GROUP_SIZE, cols);
        const numGroups = Math.ceil(cols / groupSize);
        const plan = planInt4({ cols, groupSize, numGroups, gIdx: undefined });
        const tiled = plan.layout === 'tiled';
        const wordsPerRow = tiled ? roundUp(cols, TILE_COLS) / 8 : int4WordsPerRow(cols);
        const packed = this.ctx.alloc(rows * wordsPerRow * 4);
        this.ctx.launch('random_4bit', this.ctx.gridFor(rows * wordsPerRow), 256, 'piiiiu', [packed, rows, wordsPerRow, cols, tiled ? 1 : 0, seed]);
        const s = scales(rows * numGroups, 7.5, 0x5ca1e);
        const parts: Int4DeviceParts = {
          rows, cols, layout: tiled ? 'tiled' : 'canonical', packed, wordsPerRow, groupSize, numGroups,
          groupShift: plan.layout === 'tiled' ? plan.groupShift : 0, scales: s, zeros: 0, perm: 0, gIdx: 0,
        };
        const w = new CudaInt4Weight(parts, bytes);
        this.ctx.own(w, [packed, s], rows * wordsPerRow * 4 + rows * numGroups * 4);
        return w;
      }
      case 'nvfp4': {
        if (cols % NVFP4_BLOCK_SIZE !== 0) throw new InvalidRequestError(`nvfp4 needs input dims that are multiples of ${NVFP4_BLOCK_SIZE}; '${name}' has ${cols}`);
        const wordsPerRow = roundUp(cols, TILE_COLS) / 8;
        const packed = this.ctx.alloc(rows * wordsPerRow * 4);
        this.ctx.launch('random_4bit', this.ctx.gridFor(rows * wordsPerRow), 256, 'piiiiu', [packed, rows, wordsPerRow, cols, 1, seed]);
        const blocks = (rows * cols) / NVFP4_BLOCK_SIZE;
        const blockScales = this.ctx.alloc(blocks);
        this.ctx.launch('random_block_scales', this.ctx.gridFor(blocks), 256, 'plu', [blockScales, blocks, (seed ^ 0xb10c) >>> 0]);
        // As ModelOpt's amax / (6 · 448) with amax = scale: the largest value, 6 · 448 · globalScale, is `scale`.
        const globalScale = Math.fround(scale / (E2M1_MAX * 448));
        const multipliers = this.put(nvfp4Multipliers(globalScale));
        const w = new CudaNvfp4Weight(rows, cols, packed, wordsPerRow, blockScales, multipliers, globalScale, bytes);
        this.ctx.own(w, [packed, blockScales, multipliers], rows * wordsPerRow * 4 + blocks + 1024);
        return w;
      }
    }
  }

  // ---- compute -----------------------------------------------------------------------------------

  /**
   * Whether a step of T > 8 tokens should run these weights' linears on the decode GEMVs, 16 tokens a
   * launch (each slice reads the weight again): every weight is on its tensor-core GEMV (the FMA
   * kernels slow down with tokens) and T is within its format's slicedMaxTokens. A decode step of up
   * to 48 sequences then streams 4-bit weights 3 times (1.5 bytes a weight) where a bf16 copy for a
   * GEMM would move 4.5, and stays on kernels a CUDA graph can hold.
   */
  slicesTake(ws: readonly Weight[], T: number): boolean {
    if (T <= QUANT_GEMV_MAX_T || T > QUANT_SLICED_LIMIT || ws.length === 0) return false;
    return ws.every((w) => isCudaQuantized(w) && T <= this.slicedMaxTokens[w.format] && this.onMma(w));
  }

  /**
   * Tokens one launch of these weights' decode GEMV takes: 16 where all are on the tensor-core GEMVs
   * (their _n2 kernels decode each weight once for two 8-token tiles), else 8.
   */
  private launchTokens(ws: readonly CudaQuantizedWeight[]): number {
    if (!ws.every((w) => this.onMma(w))) return QUANT_GEMV_MAX_T;
    return ws[0] instanceof CudaInt4Weight ? INT4_MMA_MAX_TOKENS : Q8_MMA_MAX_TOKENS;
  }

  /**
   * fn(t0, n) over slices of at most `per` of T tokens, in order. Each slice is a launch of the decode
   * kernel on rows t0..t0 + n − 1 of x and y, so a token's result is the same bits in a step of any size.
   */
  private sliced(T: number, per: number, what: string, fn: (t0: number, n: number) => void): void {
    if (T < 1 || T > QUANT_SLICED_LIMIT) throw new RangeError(`${what}: ${T} tokens, it takes 1 to ${QUANT_SLICED_LIMIT}`);
    for (let t0 = 0; t0 < T; t0 += per) fn(t0, Math.min(per, T - t0));
  }

  /**
   * y [T, N] = x [T, K] · Wᵀ (+ bias) for 1 ≤ T ≤ 8 (pointers: float32 x, y; bias float32 [N] or 0),
   * or up to QUANT_SLICED_LIMIT tokens in slices (launchTokens). Which kernel runs depends on the weight only,
   * never on T, so a token's result does not depend on how many tokens share the step.
   */
  gemv(w: CudaQuantizedWeight, x: DevicePtr, T: number, bias: DevicePtr, y: DevicePtr): void {
    const [N, K] = w.shape;
    const per = this.launchTokens([w]);
    if (T > per) {
      this.sliced(T, per, 'quantized GEMV', (t0, n) => this.gemv(w, x + 4 * t0 * K, n, bias, y + 4 * t0 * N));
      return;
    }
    if (T < 1) throw new RangeError(`quantized GEMV: ${T} tokens, it takes 1 to ${QUANT_SLICED_LIMIT}`);
    // The fast kernel's name, grid and block for a family (fp8/int8 or int4/nvfp4).
    const fastKernel = (base: QuantGemvFormat, family: GemvFamily): [string, [number, number, number], number] => {
      if (this.kernel === 'v1') return [`qgemv_${base}`, [Math.ceil(N / QROWS), 1, 1], family === 'q8' ? Q8_THREADS : Q4_THREADS];
      const v = quantGemvV2(base, N, T, this.rows);
      return [`qgemv2_${base}${v.suffix}`, [Math.ceil(N / v.rows), 1, 1], QV2_THREADS];
    };
    const exact: [number, number, number] = [Math.ceil(N / (EXACT_THREADS / 32)), 1, 1];
    if ((w instanceof CudaFp8Weight || w instanceof CudaInt8Weight || w instanceof CudaNvfp4Weight) && this.onMma(w)) {
      q8MmaGemv(this.mmaLauncher(Q8_MMA_FILE), w, x, T, bias, y);
    } else if (w instanceof CudaFp8Weight) {
      if (K % 16 === 0 && !w.hasNanCodes) this.ctx.launch(...fastKernel('fp8', 'q8'), 'pppppiii', [w.codes, w.rowScales, x, bias, y, T, N, K]);
      else this.ctx.launch('qgemv_exact_fp8', exact, EXACT_THREADS, 'pppppiii', [w.codes, w.rowScales, x, bias, y, T, N, K]);
    } else if (w instanceof CudaInt8Weight) {
      if (K % 16 === 0) this.ctx.launch(...fastKernel('int8', 'q8'), 'pppppiii', [w.codes, w.scales, x, bias, y, T, N, K]);
      else this.ctx.launch('qgemv_exact_int8', exact, EXACT_THREADS, 'pppppiii', [w.codes, w.scales, x, bias, y, T, N, K]);
    } else if (w instanceof CudaInt4Weight) {
      const d = w.d;
      if (this.onMma(w)) {
        int4MmaGemv(this.mmaLauncher(INT4_MMA_FILE), d, x, T, bias, y);
      } else if (d.layout === 'tiled') {
        let xs = x;
        if (d.perm) {
          // Act-order: x's columns into the weight's sorted order (a step's activations are small).
          const sorted = this.ctx.pool.alloc(T * K * 4);
          this.ctx.launchIn!('elementwise.cu', 'gather_columns', [T, Math.ceil(K / 256), 1], 256, 'pppiif', [x, d.perm, sorted.ptr, K, K, 0]);
          xs = sorted.ptr;
        }
        this.ctx.launch(...fastKernel('int4', 'q4'), 'pippiipppiii', [d.packed, d.wordsPerRow / 4, d.scales, d.zeros, d.numGroups, d.groupShift, xs, bias, y, T, N, K]);
      } else {
        this.ctx.launch('qgemv_exact_int4', exact, EXACT_THREADS, 'pppppiiiipppiii', [d.packed, d.scales, d.zeros, d.gIdx, d.perm, d.wordsPerRow, d.numGroups, d.groupSize, 0, x, bias, y, T, N, K]);
      }
    } else {
      this.ctx.launch(...fastKernel('nvfp4', 'q4'), 'pipppppiii', [w.packed, w.wordsPerRow / 4, w.blockScales, w.multipliers, x, bias, y, T, N, K]);
    }
  }

  /**
   * Whether gemv runs this weight at T tokens on a tensor-core GEMV: int4 with decodeGemv = 'mma',
   * fp8/int8/nvfp4 as q8DecodeGemv chooses, and in a one-token engine what streams (streamsOneToken).
   * The same answer for every T in 1..8.
   */
  takesMma(w: CudaQuantizedWeight, T: number): boolean {
    if (w instanceof CudaInt4Weight) return (this.decodeGemv === 'mma' && int4MmaRefusal(w.d, T) === undefined) || this.streamsOneToken(w);
    return q8MmaChosen(this.q8DecodeGemv, w, T) || this.streamsOneToken(w);
  }

  /**
   * Whether this weight's decode linears run on its tensor-core GEMV, whatever the step's size: the
   * choice is the same at every token count (steps of more than 8 take the same kernels in slices).
   */
  private onMma(w: Weight): boolean {
    return isCudaQuantized(w) && this.takesMma(w, 1);
  }

  /** The launcher of a tensor-core GEMV's kernels file (the int4 one or gemv-mma-q8.cu). */
  private mmaLauncher(file: string): MmaLauncher {
    const { ctx } = this;
    if (!ctx.launchIn) throw new Error(`quantized GEMV: this backend cannot launch the mma kernels of ${file}`);
    const launchIn = ctx.launchIn;
    return {
      multiprocessors: ctx.driver.device.multiprocessors,
      computeCapability: ctx.driver.device.computeCapability,
      sharedPerBlockOptin: ctx.driver.device.sharedPerBlockOptin,
      streamTokens: this.streamed ? this.streamMaxTokens : 0,
      launch: (kernel, grid, block, kinds, args, shared) => launchIn(file, kernel, grid, block, kinds, args, shared),
      scratch: (n) => {
        const buf = ctx.pool.alloc(n * 4);
        return { ptr: buf.ptr, release: () => ctx.pool.release(buf) };
      },
      counters: (n) => {
        if (!this.mmaCounters || this.mmaCounters.count < n) {
          // The old buffer is freed when its holder is collected; its last launch is queued before any later one.
          const count = Math.max(n, 4096);
          const ptr = ctx.alloc(count * 4);
          ctx.driver.fill32(ptr, 0, count);
          const holder = {};
          ctx.own(holder, [ptr], 0);
          this.mmaCounters = { holder, ptr, count };
        }
        return this.mmaCounters.ptr;
      },
    };
  }

  /**
   * The format whose fused kernels (gemvMany, gemvSiluMul) can take these weights for an input of K
   * columns, or undefined (run them one by one): the v2 kernels, one quantized format, all [*, K],
   * each on its fast kernel (fp8 and int8 with K % 16 = 0 and no NaN codes; int4 tiled without an
   * act-order permutation — each weight would want x in its own column order — and with one grouping),
   * or all on the mma GEMVs where their fused kernels take them as `op` (q/k/v: 'many'; gate and up: 'silu').
   */
  fusedFormat(weights: readonly Weight[], K: number, op: 'many' | 'silu' = 'many'): QuantGemvFormat | undefined {
    if (this.kernel !== 'v2' || weights.length === 0) return undefined;
    const first = weights[0];
    if (!isCudaQuantized(first)) return undefined;
    // Weights on the mma GEMVs have fused mma kernels of their own (gemv-mma-int4.ts, gemv-mma-q8.ts)
    // when all of them are on mma in one format and K; int4 also needs one kernel variant, fp8/int8/
    // nvfp4 plans the fused kernel shares with the single one (q8MmaFusable).
    if (weights.some((w) => this.onMma(w))) {
      const allOnMma = weights.every((w) => this.onMma(w) && w.format === first.format && w.shape[1] === K);
      if (!allOnMma) return undefined;
      if (first instanceof CudaInt4Weight) return int4MmaFusable(weights.map((w) => (w as CudaInt4Weight).d)) ? 'int4' : undefined;
      return q8MmaFusable(weights as readonly Q8MmaWeight[], op, this.ctx.driver.device.multiprocessors) ? (first.format as QuantGemvFormat) : undefined;
    }
    for (const w of weights) {
      if (!isCudaQuantized(w) || w.format !== first.format || w.shape[1] !== K) return undefined;
    }
    const ws = weights as readonly CudaQuantizedWeight[];
    if (first instanceof CudaFp8Weight) return K % 16 === 0 && ws.every((w) => !(w as CudaFp8Weight).hasNanCodes) ? 'fp8' : undefined;
    if (first instanceof CudaInt8Weight) return K % 16 === 0 ? 'int8' : undefined;
    if (first instanceof CudaInt4Weight) {
      const d0 = first.d;
      const same = ws.every((w) => {
        const d = (w as CudaInt4Weight).d;
        return d.layout === 'tiled' && !d.perm && d.numGroups === d0.numGroups && d.groupShift === d0.groupShift;
      });
      return same ? 'int4' : undefined;
    }
    return 'nvfp4';
  }

  /**
   * y_i [T, N_i] = x [T, K] · W_iᵀ (+ bias_i) for up to 3 weights of one format (fusedFormat), in one
   * launch; bitwise what gemv gives for each.
   */
  gemvMany(format: QuantGemvFormat, ws: readonly CudaQuantizedWeight[], biases: readonly DevicePtr[], x: DevicePtr, T: number, ys: readonly DevicePtr[]): void {
    if (ws.length < 1 || ws.length > 3) throw new RangeError(`quantized gemvMany: ${ws.length} weights, it takes 1 to 3`);
    const perLaunch = this.launchTokens(ws);
    if (T > perLaunch) {
      const K = ws[0].shape[1];
      this.sliced(T, perLaunch, 'quantized gemvMany', (t0, n) => this.gemvMany(format, ws, biases, x + 4 * t0 * K, n, ys.map((y, i) => y + 4 * t0 * ws[i].shape[0])));
      return;
    }
    if (format === 'int4' && this.onMma(ws[0])) {
      int4MmaGemvMany(this.mmaLauncher(INT4_MMA_FILE), ws.map((w) => (w as CudaInt4Weight).d), x, T, biases, ys);
      return;
    }
    if (format !== 'int4' && this.onMma(ws[0])) {
      q8MmaGemvMany(this.mmaLauncher(Q8_MMA_FILE), ws as readonly Q8MmaWeight[], x, T, biases, ys);
      return;
    }
    const K = ws[0].shape[1];
    const totalN = ws.reduce((n, w) => n + w.shape[0], 0);
    // Forced rows apply where a fused kernel has them (none has 16: those calls choose as 'auto').
    const v = quantGemvV2(format, totalN, T, this.rows === 16 ? 'auto' : this.rows, 'fused');
    const blocks = ws.reduce((b, w) => b + Math.ceil(w.shape[0] / v.rows), 0);
    const grid: [number, number, number] = [blocks, 1, 1];
    const kernel = `qgemv2many_${format}${v.suffix}`;
    // Per matrix: its pointers and N; an absent one has N = 0 (no blocks).
    const per = (i: number, parts: (w: CudaQuantizedWeight) => number[], width: number): number[] =>
      i < ws.length ? [...parts(ws[i]), biases[i], ys[i], ws[i].shape[0]] : new Array<number>(width + 3).fill(0);
    const args: number[] = [];
    if (format === 'fp8' || format === 'int8') {
      const parts = (w: CudaQuantizedWeight) => (w instanceof CudaFp8Weight ? [w.codes, w.rowScales] : [(w as CudaInt8Weight).codes, (w as CudaInt8Weight).scales]);
      args.push(x, T, K);
      for (let i = 0; i < 3; i++) args.push(...per(i, parts, 2));
      this.ctx.launch(kernel, grid, QV2_THREADS, 'pii' + 'ppppi'.repeat(3), args);
    } else if (format === 'int4') {
      const d0 = (ws[0] as CudaInt4Weight).d;
      args.push(x, T, K, d0.wordsPerRow / 4, d0.numGroups, d0.groupShift);
      for (let i = 0; i < 3; i++) args.push(...per(i, (w) => [(w as CudaInt4Weight).d.packed, (w as CudaInt4Weight).d.scales, (w as CudaInt4Weight).d.zeros], 3));
      this.ctx.launch(kernel, grid, QV2_THREADS, 'piiiii' + 'pppppi'.repeat(3), args);
    } else {
      args.push(x, T, K, (ws[0] as CudaNvfp4Weight).wordsPerRow / 4);
      for (let i = 0; i < 3; i++) args.push(...per(i, (w) => [(w as CudaNvfp4Weight).packed, (w as CudaNvfp4Weight).blockScales, (w as CudaNvfp4Weight).multipliers], 3));
      this.ctx.launch(kernel, grid, QV2_THREADS, 'piii' + 'pppppi'.repeat(3), args);
    }
  }

  /**
   * y [T, N] = silu(x · gateᵀ + bg) · (x · upᵀ + bu) in one launch, for gate and up of one format
   * (fusedFormat) and shape; bitwise gemv, gemv, then silu_mul.
   */
  gemvSiluMul(format: QuantGemvFormat, gate: CudaQuantizedWeight, up: CudaQuantizedWeight, bg: DevicePtr, bu: DevicePtr, x: DevicePtr, T: number, y: DevicePtr): void {
    const [N, K] = gate.shape;
    if (up.shape[0] !== N || up.shape[1] !== K) throw new RangeError(`quantized gemvSiluMul: gate [${gate.shape.join(', ')}] and up [${up.shape.join(', ')}] differ`);
    const per = this.launchTokens([gate, up]);
    if (T > per) {
      this.sliced(T, per, 'quantized gemvSiluMul', (t0, n) => this.gemvSiluMul(format, gate, up, bg, bu, x + 4 * t0 * K, n, y + 4 * t0 * N));
      return;
    }
    if (format === 'int4' && this.onMma(gate)) {
      int4MmaGemvSiluMul(this.mmaLauncher(INT4_MMA_FILE), (gate as CudaInt4Weight).d, (up as CudaInt4Weight).d, bg, bu, x, T, y);
      return;
    }
    if (format !== 'int4' && this.onMma(gate)) {
      q8MmaGemvSiluMul(this.mmaLauncher(Q8_MMA_FILE), gate as Q8MmaWeight, up as Q8MmaWeight, bg, bu, x, T, y);
      return;
    }
    // A block takes R rows of gate, then the same R rows of up.
    const v = quantGemvV2(format, N, T, this.rows === 16 ? 'auto' : this.rows, 'fused');
    const grid: [number, number, number] = [Math.ceil(N / v.rows), 1, 1];
    const kernel = `qgemv2silu_${format}${v.suffix}`;
    if (gate instanceof CudaFp8Weight || gate instanceof CudaInt8Weight) {
      const parts = (w: CudaQuantizedWeight) => (w instanceof CudaFp8Weight ? [w.codes, w.rowScales] : [(w as CudaInt8Weight).codes, (w as CudaInt8Weight).scales]);
      this.ctx.launch(kernel, grid, QV2_THREADS, 'piiippppppp', [x, T, K, N, ...parts(gate), bg, ...parts(up), bu, y]);
    } else if (gate instanceof CudaInt4Weight) {
      const g = gate.d;
      const u = (up as CudaInt4Weight).d;
      this.ctx.launch(kernel, grid, QV2_THREADS, 'piiiiii' + 'p'.repeat(9), [x, T, K, N, g.wordsPerRow / 4, g.numGroups, g.groupShift, g.packed, g.scales, g.zeros, bg, u.packed, u.scales, u.zeros, bu, y]);
    } else {
      const u = up as CudaNvfp4Weight;
      const g = gate as CudaNvfp4Weight;
      this.ctx.launch(kernel, grid, QV2_THREADS, 'piiii' + 'p'.repeat(9), [x, T, K, N, g.wordsPerRow / 4, g.packed, g.blockScales, g.multipliers, bg, u.packed, u.blockScales, u.multipliers, bu, y]);
    }
  }

  /** The weight as bf16 [N, K] (round to nearest even) in the prefill scratch matrix, for this GEMM only. */
  /** A pointer aligned as the scratch matrix bf16Copy writes (a pool allocation: 256 bytes), for cuBLASLt's plans. */
  get scratchAlignment(): DevicePtr {
    return this.scratch?.ptr ?? 256;
  }

  bf16Copy(w: CudaQuantizedWeight): DevicePtr {
    const s = this.scratch!; // made when the weight was loaded, at least this large
    this.dequantize(w, s.ptr, 'bf16');
    return s.ptr;
  }

  /**
   * The bf16 scratch matrix by the vectorised kernels (16 bytes of codes a thread, 8 values a store),
   * bit for bit the element-wise kernels' values, where they apply: fp8/int8 rows of whole 16-byte
   * vectors, nvfp4, int4 in the tiled layout without act-order. False (nothing launched) elsewhere.
   */
  private dequantizeBf16Fast(w: CudaQuantizedWeight, out: DevicePtr): boolean {
    const [N, K] = w.shape;
    const threads = 256;
    if (w instanceof CudaFp8Weight || w instanceof CudaInt8Weight) {
      if (K % 16 !== 0) return false;
      const [codes, scales, fp8] = w instanceof CudaFp8Weight ? [w.codes, w.rowScales, 1] : [w.codes, w.scales, 0];
      this.ctx.launch('dequant_bytes_bf16', this.ctx.gridFor((N * K) / 16), threads, 'ppipii', [codes, scales, fp8, out, N, K]);
      return true;
    }
    if (w instanceof CudaNvfp4Weight) {
      const loads = w.wordsPerRow / 4;
      this.ctx.launch('dequant_nvfp4_bf16', this.ctx.gridFor(N * loads), threads, 'pipppii', [w.packed, loads, w.blockScales, w.multipliers, out, N, K]);
      return true;
    }
    const d = w.d;
    if (d.layout !== 'tiled' || d.perm || d.gIdx || d.groupShift < 3) return false;
    const loads = d.wordsPerRow / 4;
    this.ctx.launch('dequant_int4_tiled_bf16', this.ctx.gridFor(N * loads), threads, 'pippiipii', [d.packed, loads, d.scales, d.zeros, d.numGroups, d.groupShift, out, N, K]);
    return true;
  }

  /**
   * The weight's values into `out` [N, K] (original column order): float32, exactly src/quant's
   * dequantize, or bf16 rounded to nearest even (the scratch matrix prefill multiplies).
   */
  dequantize(w: CudaQuantizedWeight, out: DevicePtr, dtype: 'f32' | 'bf16'): void {
    const [N, K] = w.shape;
    if (dtype === 'bf16' && this.vectorisedDequant && this.dequantizeBf16Fast(w, out)) return;
    const bf16 = dtype === 'bf16' ? 1 : 0;
    const grid: [number, number, number] = [Math.min(N, this.ctx.gridFor(N * K)[0]), 1, 1];
    const threads = Math.min(256, roundUp(K, 32));
    if (w instanceof CudaFp8Weight) this.ctx.launch('dequant_fp8', grid, threads, 'pppiii', [w.codes, w.rowScales, out, bf16, N, K]);
    else if (w instanceof CudaInt8Weight) this.ctx.launch('dequant_int8', grid, threads, 'pppiii', [w.codes, w.scales, out, bf16, N, K]);
    else if (w instanceof CudaInt4Weight) {
      const d = w.d;
      this.ctx.launch('dequant_int4', grid, threads, 'pppppiiiipiii', [d.packed, d.scales, d.zeros, d.gIdx, d.perm, d.wordsPerRow, d.numGroups, d.groupSize, d.layout === 'tiled' ? 1 : 0, out, bf16, N, K]);
    } else this.ctx.launch('dequant_nvfp4', grid, threads, 'pppipiii', [w.packed, w.blockScales, w.multipliers, w.wordsPerRow, out, bf16, N, K]);
  }
}
