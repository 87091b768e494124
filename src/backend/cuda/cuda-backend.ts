// The CUDA backend for float checkpoints: weights stay on the GPU in their checkpoint dtype (bf16,
// f16; f32 stays f32), activations and the KV cache are float32, and every op is a kernel from
// kernels/*.cu. Tested op by op against the CPU backend (test/cuda-backend.test.ts).

import { DECODE_GEMM_MIN_TOKENS, GEMV_MAX_TOKENS } from '../../engine/kv-budget.js';
import { checkGatherColumns, checkRopeRows, KV_DTYPE_BYTES, kvScalesOf, mlpByLinears, type AttentionBatch, type Backend, type GpuSamplingRow, type KvCacheSpec, type KvDtype, type LogprobRow, type RopeRows, type KvCacheStorage, type MlpBiases, type NormReaders, type RandomWeightSpec, type Tensor, type Weight } from '../backend.js';
import type { HostTensor } from '../../model/load/safetensors.js';
import { toFloat32 } from '../../model/load/dtype.js';
import { ModelLoadError } from '../../errors.js';
import type { QuantizedWeight } from '../../quant/format.js';
import { CublasLtPrefill, fp8GemmUnsupportedReason, halfGemmShape, openCublasLtPrefill, prefillGemmFromEnv } from './cublaslt.js';
import { CudaDriver, CudaError, type DeviceInfo, type DevicePtr } from './driver.js';
import { KernelModules, archSpecificModule, kernelCacheDir, moduleVariant } from './kernel-modules.js';
import { DerivedInputCache, DevicePool, fmtBytes, type PooledBuffer } from './memory-pool.js';
import { fusedLinearMany, fusedLinearSiluMul, type FusedGemvVariant } from './fused-linear.js';
import { mmaGemv, mmaGemvApplies, mmaLinearMany } from './gemv-mma.js';
import { Nvrtc } from './nvrtc.js';
import { CudaFp8Weight, QuantizedWeights, isCudaQuantized, type CudaQuantizedWeight } from './quantized-weights.js';
import { StepGraphs, type Uploads } from './step-graphs.js';
import { sampleRowsOnGpu } from './sampling.js';
import { GPU_MAX_TOP_LOGPROBS, logprobRowsOnGpu } from './logprobs.js';
import type { Logprobs, PenaltyRow } from '../../engine/sampler.js';
import { firstOutside, int32Bounds } from '../../int32-bounds.js';
import { sameContents } from './same-contents.js';
import { AttentionPlanner, DECODE_MAX_SPLITS, DECODE_MMA_MIN_CHUNK, DECODE_MMA_ONE_CHUNK, PREFILL_MIN_RUN, type PrefillTileRows, decodeHeadsPerBlock, decodeSplits, prefillSharedBytes, prefillTileRows } from './attention-plan.js';

/** An MLP's widths (intermediate N, input K, output H), checked to chain and to take x. */
function mlpShape(x: CudaTensor, gate: Weight, up: Weight, down: Weight): { N: number; K: number; H: number } {
  const [N, K] = gate.shape;
  const H = down.shape[0];
  if (up.shape[0] !== N || up.shape[1] !== K || down.shape[1] !== N) {
    throw new RangeError(`mlp: gate [${gate.shape.join(', ')}], up [${up.shape.join(', ')}] and down [${down.shape.join(', ')}] do not chain`);
  }
  if (x.cols !== K) throw new Error(`mlp: input has ${x.cols} columns, gate expects ${K}`);
  return { N, K, H };
}

/** How a weight is stored on the device. */
export type DeviceDtype = 'bf16' | 'f16' | 'f32';
const DTYPE_BYTES: Record<DeviceDtype, number> = { bf16: 2, f16: 2, f32: 4 };

/**
 * A float32 activation [rows, ...] in a pooled device buffer, valid for the synchronous run that
 * made it (see memory-pool.ts): using it later throws rather than reading recycled memory.
 */
export class CudaTensor implements Tensor {
  readonly buffer: PooledBuffer;
  private readonly generation: number;
  readonly numel: number;
  constructor(
    pool: DevicePool,
    readonly shape: readonly number[],
  ) {
    this.numel = shape.reduce((a, b) => a * b, 1);
    this.buffer = pool.alloc(this.numel * 4);
    this.generation = this.buffer.generation;
  }
  /** Writes this tensor's values on first use of ptr (a norm that left them for later: CudaBackend.deferNormRows). */
  private pendingFill?: () => void;
  /** A q whose RoPE was left to the prefill attention that reads it (CudaBackend.ropeWriteKv); pendingFill applies it in memory otherwise. */
  private deferredRope?: QRope;
  get ptr(): DevicePtr {
    if (this.buffer.generation !== this.generation) {
      throw new CudaError(
        `a CUDA activation [${this.shape.join(', ')}] was used after the synchronous step that made it ended; ` +
          'the CUDA backend recycles activations when the step returns to the event loop (copy it to the host with toHost to keep it)',
      );
    }
    const fill = this.pendingFill;
    if (fill) {
      this.pendingFill = this.deferredRope = undefined;
      fill();
    }
    return this.buffer.ptr;
  }
  /** Leave the values unwritten until ptr is first asked for; `fill` writes them to unfilledPtr then. */
  deferFill(fill: () => void): void {
    this.pendingFill = fill;
  }
  /** Leave q's rotation for the attention kernel (pendingRope); `rotate` rotates it in memory if anything else reads it first. */
  deferRope(rope: QRope, rotate: () => void): void {
    this.deferredRope = rope;
    this.pendingFill = rotate;
  }
  /** The rotation still to apply to these (unrotated) values at unfilledPtr, if one was deferred. */
  get pendingRope(): QRope | undefined {
    return this.deferredRope;
  }
  /** The address, without writing deferred values (for the op that writes them). */
  get unfilledPtr(): DevicePtr {
    return this.buffer.ptr;
  }
  /** Still this tensor's memory (not recycled at the end of its step, nor released). */
  get valid(): boolean {
    return this.buffer.generation === this.generation;
  }
  get rows(): number {
    return this.shape[0];
  }
  get cols(): number {
    return this.numel / this.shape[0];
  }
}

/** RoPE rows on the device (CudaBackend.ropeOnDevice): the cos and sin tables, and the row index (0: row t for token t). */
interface RopeOnDevice {
  cos: DevicePtr;
  sin: DevicePtr;
  index: DevicePtr;
}

/**
 * Rotate-half RoPE over the whole head still to apply to a q tensor: its tokens' rows as ropeWriteKv
 * got them, and where it put them on the device (reused while the step's uploads still hold them).
 */
export interface QRope {
  rows: RopeRows;
  at: RopeOnDevice;
}

/** A float weight on the device. `format` and `bytes` describe the checkpoint; vectors are held as f32. */
export class CudaDenseWeight implements Weight {
  constructor(
    readonly ptr: DevicePtr,
    readonly shape: readonly number[],
    readonly bytes: number,
    readonly format: string,
    readonly dtype: DeviceDtype,
  ) {}
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
}

class CudaKvCache implements KvCacheStorage {
  readonly bytes: number;
  /** Bytes of one layer's K (or V) store. */
  readonly layerBytes: number;
  /** Bytes of one block of one layer's K (or V) store. */
  readonly blockBytes: number;
  constructor(
    readonly spec: KvCacheSpec,
    readonly dtype: KvDtype,
    readonly k: DevicePtr,
    readonly v: DevicePtr,
  ) {
    this.blockBytes = spec.blockSize * spec.numKvHeads * spec.headDim * KV_DTYPE_BYTES[dtype];
    this.layerBytes = spec.numBlocks * this.blockBytes;
    this.bytes = 2 * spec.numLayers * this.layerBytes;
  }

  /** The module of `file`'s kernels for this cache (kvModule). */
  module(file: string): string {
    return kvModule(file, this.dtype);
  }
}

/** The kernels reading or writing a KV cache of `dtype`: `file` as it is (float32), or compiled with KV_BF16 or KV_FP8 (common.cuh kv_t). */
function kvModule(file: string, dtype: KvDtype): string {
  return dtype === 'float32' ? file : moduleVariant(file, dtype === 'bf16' ? 'KV_BF16' : 'KV_FP8');
}

/** A weight format this backend cannot run yet; LLM.load on device 'auto' falls back to the CPU on it. */
export class CudaUnsupportedError extends ModelLoadError {
  constructor(message: string) {
    super(message);
    this.name = 'CudaUnsupportedError';
  }
}

export interface CudaBackendOptions {
  /** GPU ordinal (default 0). */
  device?: number;
  /** Synchronize after every kernel and name the one that failed (slow; tests). */
  syncEveryLaunch?: boolean;
  /** Compiled kernel cache folder; null disables the cache. */
  kernelCacheDir?: string | null;
  /** Replay decode steps as CUDA graphs (step-graphs.ts; default: on unless $TACHYON_CUDA_GRAPHS=0). */
  cudaGraphs?: boolean;
  /** KV cache element type (default bf16: half the memory and attention reads of float32). */
  kvDtype?: KvDtype;
}

/** Host arrays of the current step (ids, slots, positions, block tables, RoPE tables) kept on the device. */
class StepUploads implements Uploads {
  private readonly entries = new Map<string, { src: Int32Array | Float32Array; copy: Int32Array | Float32Array; buffer: PooledBuffer; generation: number }>();
  constructor(
    private readonly driver: CudaDriver,
    private readonly pool: DevicePool,
  ) {}

  /**
   * The device copy of `arr` under `key`. The same array with the same contents as last time is not
   * sent again (a step's forward passes its batch arrays to every layer); contents are compared, so
   * an array changed in place is still sent.
   */
  get(key: string, arr: Int32Array | Float32Array): DevicePtr {
    const e = this.entries.get(key);
    if (e && e.src === arr && sameContents(e.copy, arr)) return e.buffer.ptr;
    // Kept across steps (the next step may send the same arrays); the one it replaces goes back to the
    // pool, and stream order keeps queued kernels reading the old contents before anything new lands.
    if (e) this.pool.release(e.buffer);
    const buffer = this.pool.alloc(Math.max(arr.byteLength, 4), true);
    this.driver.upload(buffer.ptr, arr);
    this.entries.set(key, { src: arr, copy: arr.slice(), buffer, generation: buffer.generation });
    return buffer.ptr;
  }

  holds(key: string, ptr: DevicePtr): boolean {
    const e = this.entries.get(key);
    return e !== undefined && e.buffer.ptr === ptr && e.buffer.generation === e.generation;
  }
}

/** decodeGemv 'auto': matrices of at most this many rows take the tensor-core GEMV (see decodeGemv). */
const MMA_AUTO_MAX_ROWS = 8192;

/** The default decode GEMV: $TACHYON_DECODE_GEMV (fma, mma or auto), so a test file can pin float32. */
function decodeGemvFromEnv(env: NodeJS.ProcessEnv = process.env): 'fma' | 'mma' | 'auto' {
  const v = env.TACHYON_DECODE_GEMV;
  if (v === undefined || v === '') return 'auto';
  if (v === 'fma' || v === 'mma' || v === 'auto') return v;
  throw new CudaError(`TACHYON_DECODE_GEMV must be fma, mma or auto, got '${v}'`);
}
const GEMV_WARPS = 8;
const SPLITK_ROWS = 4;
export type GemvKernel = 'auto' | 'row' | 'split-k';
export type PrefillGemm = 'auto' | 'cublaslt' | 'tiled';
const TILE = 64;
const ATTN_THREADS = 256;
const MAX_HEAD_DIM = 256;
/**
 * Attention kernels: 'auto' (at head_dim 64 and 128, runs of ≥ 16 tokens on the tensor-core prefill
 * kernel and every other token split-K; the original kernel at other head sizes), or one kernel for
 * every token ('paged': the original one block per (token, head); 'decode'; 'prefill'), for tests
 * and benchmarks. See docs/cuda.md, "Attention".
 */
export type AttentionKernel = 'auto' | 'paged' | 'decode' | 'prefill';
const DECODE_THREADS = 128;
/** What every attention kernel launch of one call shares. */
interface AttentionLaunch {
  /** The cache read (its element type picks the kernels' module). */
  cache: CudaKvCache;
  q: DevicePtr;
  kc: DevicePtr;
  vc: DevicePtr;
  out: DevicePtr;
  tables: DevicePtr;
  batch: AttentionBatch;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  blockSize: number;
  /** The softmax scale, times the cache's K scale (FP8 with calibrated scales). */
  scale: number;
  /** The cache's V scale: multiplies the output (1 but for FP8 with calibrated scales). */
  vScale: number;
  window: number;
  /** q's RoPE for the prefill kernel to apply as it loads q (q's memory not yet rotated): ropeWriteKv deferred it. */
  rope?: QRope;
}

const roundUp = (n: number, m: number) => Math.ceil(n / m) * m;
/** Threads for a one-block-per-row kernel over `cols` elements. */
const rowThreads = (cols: number) => Math.min(512, Math.max(32, roundUp(cols, 32)));

/** Threads per block of the RoPE kernels (rope-kv.cu ROPE_THREADS). */
const ROPE_THREADS = 256;
/** RopeTable arrays kept on the device at once (cuda-backend ropeTableOnDevice): cos and sin of a model, its draft and an EAGLE head, with room to spare. */
const MAX_ROPE_TABLES = 8;
/** Rows per block of the warp-per-row norm kernel (norm.cu NORM_WARP_ROWS). */
const NORM_WARP_ROWS = 8;
/** Float4s per thread the vector norm kernels are built for (norm.cu NORM_KERNELS). */
const NORM_MAX_VEC = 4;
export type NormKernel = { kind: 'warp'; vec: number } | { kind: 'block'; vec: number; threads: number } | { kind: 'scalar' };
/**
 * The RMSNorm kernel for rows of `cols` floats (norm.cu), chosen from `cols` alone so a row's
 * summation order never depends on how many rows a step has: rows of ≤ 128 float4s a warp each (when
 * `warp`), rows of ≤ 1024 threads × 4 float4s a block each with the fewest float4s per thread, and the
 * scalar kernel for the rest, or where a row or pointer is not 16-byte aligned. Prefill-sized steps
 * then take prefillNormKernel's blocks.
 */
export function normKernel(cols: number, warp: boolean, ptrs: readonly number[]): NormKernel {
  if (cols % 4 !== 0 || ptrs.some((p) => p % 16 !== 0)) return { kind: 'scalar' };
  const n4 = cols / 4;
  if (warp && n4 <= 32 * NORM_MAX_VEC) return { kind: 'warp', vec: Math.ceil(n4 / 32) };
  const vec = Math.ceil(n4 / 1024);
  if (vec > NORM_MAX_VEC) return { kind: 'scalar' };
  return { kind: 'block', vec, threads: roundUp(Math.ceil(n4 / vec), 32) };
}

/**
 * The norm kernel of a step of `rows` rows: normKernel's, except that steps of more than
 * GEMV_MAX_TOKENS rows (prefill; their norms walk rows, norm.cu rms_norm_rows) take 256-thread
 * blocks where a row fits (V = cols / 1024 float4s a thread, at most NORM_MAX_VEC) instead of up to
 * 1024: eight blocks an SM rather than two, each row's two reductions (sum, absmax) over 8 warps
 * rather than 32 — at 2048 × 4096 with E4M3 out, 24.1 → 20.7 µs on an H100 (L2 flushed). A step's
 * norms, its side outputs and their deferred float32 rows all use it, so they agree bit for bit;
 * a row's sum order still depends on its length and the step's kind (prefill or decode, whose
 * linears differ anyway), never on how many rows share the launch beyond that.
 */
export function prefillNormKernel(k: NormKernel, rows: number, cols: number): NormKernel {
  if (k.kind !== 'block' || rows <= GEMV_MAX_TOKENS) return k;
  const vec = Math.ceil(cols / 4 / 256);
  return vec > NORM_MAX_VEC ? k : { kind: 'block', vec, threads: roundUp(Math.ceil(cols / 4 / vec), 32) };
}

let sharedDriver: CudaDriver | undefined;
let sharedNvrtc: Nvrtc | undefined;

export class CudaBackend implements Backend {
  readonly name = 'cuda';
  readonly driver: CudaDriver;
  readonly nvrtc: Nvrtc;
  readonly kernels: KernelModules;
  readonly pool: DevicePool;
  private readonly stepUploads: StepUploads;
  /** CUDA graphs over decode steps (step-graphs.ts); `graphs.enabled = false` runs every step eagerly. */
  readonly graphs: StepGraphs;
  /** Device allocations of weights, KV caches and scratch not yet freed (by the collector or dispose). */
  private readonly live = new Set<DevicePtr>();
  private disposed = false;
  /** Device memory held by weights and KV caches, freed when they are collected. */
  private readonly owned: FinalizationRegistry<DevicePtr>;
  weightBytesOnDevice = 0;
  /**
   * The GEMV for ≤ 8 tokens: 'split-k' (a block per 4 rows, its warps splitting K; what 'auto' uses,
   * faster at every Llama-8B shape on the H100, see docs/cuda.md) or 'row' (a warp per row, the
   * prototype's kernel). Benchmarks and tests set it to compare.
   */
  gemvKernel: GemvKernel = 'auto';
  /**
   * linearMany (q/k/v) and linearSiluMul (gate/up) as one launch each for dense weights and ≤ 8
   * tokens (fused-linear.ts); false runs them as separate ops (benchmarks compare). Same results.
   */
  fusedLinears = true;
  /** The fused GEMV kernel: 'auto' (by token count, fused-linear.ts), or one variant to compare (kernels/linear-fused.cuh). */
  fusedGemv: FusedGemvVariant | 'auto' = 'auto';
  /** ropeWriteKv as one launch (rope-kv.cu); false runs rope, rope, writeKv (tests and benchmarks compare). Same results. */
  fusedRopeKv = true;
  /** The fused RoPE + KV write on 16-byte accesses where shapes allow (rope_write_kv4); false keeps the scalar kernel (to compare). */
  vectorRopeKv = true;
  /**
   * The decode GEMV for dense bf16 weights (1–8 tokens, K % 16 = 0): 'fma' (float32 FMA, the kernels
   * above), 'mma' (tensor cores, x rounded to bf16 in the kernel; gemv-mma.ts), or 'auto' (the
   * default; $TACHYON_DECODE_GEMV overrides): mma for matrices of at most MMA_AUTO_MAX_ROWS rows, FMA
   * for taller ones. Measured on the H100 (bench/cuda-gemv-mma.ts): at 1 token mma matches FMA on
   * q/k/v, o and down (73–87% of the copy bandwidth) but not on gate/up (65% against 92%) or the
   * lm_head (77% against 106%); at 8 tokens it is 1.3–2.1× faster everywhere. 'auto' also hands decode
   * steps of 4–8 tokens on 16-bit weights to cuBLASLt, faster still (decodeGemmFor); 'mma' and 'fma'
   * depend on the matrix alone, never on the token count, so a token's result stays independent of
   * its batch.
   */
  decodeGemv: 'fma' | 'mma' | 'auto' = decodeGemvFromEnv();
  /**
   * The GEMM for more than 8 tokens (prefill): 'cublaslt' (tensor cores; x rounded to a bf16/f16
   * weight's type, or quantised per token for FP8; cublaslt.ts), 'tiled' (the float32 kernel), or
   * 'auto': cuBLASLt when libcublasLt is found, else tiled. f32 weights, and any shape cuBLASLt has
   * no algorithm for, take the tiled kernel (f32 stays exact). Default: $TACHYON_PREFILL_GEMM, else
   * 'auto'. Tests and benchmarks set it to compare.
   */
  prefillGemm: PrefillGemm = prefillGemmFromEnv();
  /** Which attention kernel runs (tests and benchmarks compare them); see AttentionKernel. */
  attentionKernel: AttentionKernel = 'auto';
  /**
   * The prefill MLP (mlp, more than 8 tokens on cuBLASLt) without float32 intermediates: with 16-bit
   * weights gate and up written in bf16/f16, silu·mul over them, down reading the result; with FP8
   * ones silu·mul and down's quantisation in one kernel over the GEMMs' outputs. False runs
   * linearSiluMul then linear in float32, as every other op (tests and benchmarks compare).
   */
  fusedMlp = true;
  /** Positions per chunk of decode attention; 0: by each token's context (attention-plan.ts decodeChunk). */
  attentionChunk = 0;
  /**
   * Decode attention over a bf16 or fp8 cache on tensor cores (attention-decode.cu
   * decode_attention_mma: the query heads of a KV head as the mma's n; q and the probabilities
   * rounded to bf16, as the prefill kernel does). False keeps the float32 kernel, which a float32
   * cache always takes.
   */
  decodeAttentionMma = true;
  /** Query rows per tile of the prefill kernel; 0: by the rule (attention-plan.ts prefillTileRows). */
  attentionPrefillRows: 0 | PrefillTileRows = 0;
  /**
   * Prefill attention's products on Hopper's wgmma (the kernel compiled with PF_WGMMA for sm_90a)
   * instead of mma.sync; only compute capability 9.0 has it (prefillWgmmaAvailable). Same tiles,
   * softmax and rounding; $TACHYON_PREFILL_WGMMA=0 turns it off.
   */
  prefillWgmma = process.env.TACHYON_PREFILL_WGMMA !== '0';
  private readonly attentionPlanner = new AttentionPlanner();
  /** Chunk counters of split-K decode attention (decodeCounters). */
  private counters = { ptr: 0 as DevicePtr, ints: 0 };
  private prefill?: CublasLtPrefill | { reason: string };
  kvBytesOnDevice = 0;
  readonly kvDtype: KvDtype;
  private readonly gridStrideBlocks: number;
  /** fp8, int8, int4 and nvfp4 weights (quantized-weights.ts). */
  private readonly quant: QuantizedWeights;

  constructor(options: CudaBackendOptions = {}) {
    // One driver (primary context, stream) per process, shared by every backend instance.
    this.driver = sharedDriver ??= new CudaDriver(options.device ?? 0);
    this.nvrtc = sharedNvrtc ??= Nvrtc.load();
    if (options.syncEveryLaunch) this.driver.syncEveryLaunch = true;
    this.kvDtype = options.kvDtype ?? 'bf16';
    const cacheDir = options.kernelCacheDir === null ? undefined : (options.kernelCacheDir ?? kernelCacheDir());
    this.kernels = new KernelModules(this.driver, this.nvrtc, undefined, cacheDir);
    this.pool = new DevicePool(this.driver);
    this.stepUploads = new StepUploads(this.driver, this.pool);
    this.graphs = new StepGraphs(this.driver, this.pool, options.cudaGraphs);
    const driver = this.driver;
    const live = this.live;
    this.owned = new FinalizationRegistry((ptr) => {
      // dispose() may have freed it already.
      if (!live.delete(ptr)) return;
      try {
        driver.memFree(ptr);
      } catch {
        // at exit the context may be gone
      }
    });
    this.gridStrideBlocks = this.driver.device.multiprocessors * 8;
    this.quant = new QuantizedWeights({
      driver: this.driver,
      pool: this.pool,
      alloc: (bytes) => this.ownedAlloc(bytes),
      own: (owner, ptrs, bytes) => {
        for (const p of ptrs) this.owned.register(owner, p);
        this.weightBytesOnDevice += bytes;
      },
      launch: (kernel, grid, block, kinds, args, shared) => this.launch('quant-linear.cu', kernel, grid, block, kinds, args, shared),
      launchIn: (file, kernel, grid, block, kinds, args, shared) => this.launch(file, kernel, grid, block, kinds, args, shared),
      gridFor: (n) => this.gridFor(n),
    });
  }

  /** Where this step's host arrays go: a recorded step's upload slots, else the per-step uploads. */
  private get uploads(): Uploads {
    return this.graphs.uploads ?? this.stepUploads;
  }

  /**
   * Backend.replayable: `step` recorded and replayed as a CUDA graph under `key` (step-graphs.ts);
   * steps of more than graphs.maxTokens tokens (those call cuBLASLt) run eagerly.
   */
  replayable<T>(key: string, numTokens: number, step: () => T): T {
    return this.graphs.run(key, numTokens, step);
  }

  get device(): DeviceInfo {
    return this.driver.device;
  }

  /** The quantized weights' kernels and their settings (fused-linear.ts, tests, benchmarks). */
  get quantized(): QuantizedWeights {
    return this.quant;
  }

  /** Compile and load every kernel module now (otherwise each compiles on first use). */
  warmUp(): void {
    for (const f of ['elementwise.cu', 'norm.cu', 'linear.cu', 'linear-fused.cu', 'linear-fused-variants.cu', 'quant-linear.cu', 'sampling.cu']) this.kernels.module(f);
    for (const f of ['attention.cu', 'attention-prefill.cu', 'attention-decode.cu', 'kv-cache.cu', 'rope-kv.cu']) this.kernels.module(kvModule(f, this.kvDtype));
    this.kernels.module(this.prefillAttentionModule(this.kvDtype).module);
  }

  /** A long-lived allocation (weights, KV caches); the caller registers its owner with `owned`. */
  private ownedAlloc(bytes: number): DevicePtr {
    if (this.disposed) throw new CudaError('this CUDA backend was disposed (its LLM was closed)');
    const ptr = this.driver.tryMemAlloc(bytes) ?? (this.pool.trim(), this.driver.tryMemAlloc(bytes));
    if (ptr === undefined) {
      const { freeBytes, totalBytes } = this.driver.memInfo();
      throw new CudaError(`out of GPU memory allocating ${fmtBytes(bytes)} (${fmtBytes(freeBytes)} free of ${fmtBytes(totalBytes)})`, 2);
    }
    this.live.add(ptr);
    return ptr;
  }

  /**
   * Free every weight, KV cache and pooled buffer this backend allocated, now rather than when the
   * garbage collector finds their owners (LLM.close calls it: loading model after model in one
   * process would otherwise run out of GPU memory). Nothing it made may be used afterwards.
   */
  dispose(): void {
    this.driver.synchronize();
    this.graphs.clear();
    for (const ptr of this.live) this.driver.memFree(ptr);
    this.live.clear();
    this.pool.trim();
    this.weightBytesOnDevice = 0;
    this.kvBytesOnDevice = 0;
    this.disposed = true;
  }

  private tensor(shape: readonly number[]): CudaTensor {
    return new CudaTensor(this.pool, shape);
  }

  // ---- weights -------------------------------------------------------------------------------

  loadDense(name: string, tensor: HostTensor): Weight {
    const dtype = String(tensor.dtype);
    const format = dtype.toLowerCase();
    if (tensor.shape.length === 2 && (dtype === 'BF16' || dtype === 'F16' || dtype === 'F32')) {
      // Matrices stay in the checkpoint's dtype: the GEMV streams them as stored.
      const dev = format as DeviceDtype;
      const n = tensor.shape[0] * tensor.shape[1];
      const bytes = n * DTYPE_BYTES[dev];
      if (tensor.bytes.byteLength < bytes) throw new ModelLoadError(`tensor '${name}' holds ${tensor.bytes.byteLength} bytes, its shape needs ${bytes}`);
      return this.upload(tensor.bytes.subarray(0, bytes), tensor.shape, tensor.bytes.byteLength, format, dev);
    }
    // Vectors (norms, biases) and anything else: float32 (toFloat32 names a non-float dtype).
    const f32 = toFloat32(tensor, name);
    return this.upload(f32, tensor.shape, tensor.bytes.byteLength, format, 'f32');
  }

  private upload(data: ArrayBufferView, shape: readonly number[], checkpointBytes: number, format: string, dtype: DeviceDtype): CudaDenseWeight {
    const ptr = this.ownedAlloc(data.byteLength);
    const w = new CudaDenseWeight(ptr, [...shape], checkpointBytes, format, dtype);
    this.owned.register(w, ptr);
    this.driver.upload(ptr, data);
    this.weightBytesOnDevice += data.byteLength;
    return w;
  }

  /** fp8, int8, int4 (any group size, zero points, act-order) and nvfp4; layouts in quantized-weights.ts. */
  loadQuantized(name: string, weight: QuantizedWeight): Weight {
    return this.quant.load(name, weight);
  }

  /**
   * A random weight made on the GPU, no host copy (--load-format dummy, benchmarks). Dense: values
   * uniform in [-scale, scale) in `dtype` (vectors held as f32, as loadDense holds them). Quantized
   * (matrices): what loadQuantized would hold for quantizeWeight(method, …) of such values.
   */
  randomWeight(name: string, spec: RandomWeightSpec): Weight {
    if (spec.method && spec.shape.length === 2) return this.quant.random(name, spec.method, spec);
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const seed = spec.seed >>> 0;
    const bytes = n * DTYPE_BYTES[spec.dtype];
    const matrix = spec.shape.length === 2;
    const held: DeviceDtype = matrix ? spec.dtype : 'f32';
    const ptr = this.ownedAlloc(n * DTYPE_BYTES[held]);
    const w = new CudaDenseWeight(ptr, [...spec.shape], bytes, spec.dtype, held);
    this.owned.register(w, ptr);
    this.weightBytesOnDevice += n * DTYPE_BYTES[held];
    if (matrix) this.launch('quant-linear.cu', `random_dense_${spec.dtype}`, this.gridFor(n), 256, 'pluf', [ptr, n, seed, spec.scale]);
    else this.launch('quant-linear.cu', 'random_vector', this.gridFor(n), 256, 'plufi', [ptr, n, seed, spec.scale, { f32: 0, bf16: 1, f16: 2 }[spec.dtype]]);
    return w;
  }

  /** Dummy weights at real shapes, generated on the GPU (benchmarks): bf16 uniform in [-scale, scale). */
  randomBf16(shape: readonly number[], seed: number, scale: number): Weight {
    return this.randomWeight('random', { shape, dtype: 'bf16', seed, scale });
  }

  weightToHost(weight: Weight): Float32Array {
    if (isCudaQuantized(weight)) return this.quantizedToHost(weight);
    const w = this.dense(weight);
    const raw = new Uint8Array(w.numel * DTYPE_BYTES[w.dtype]);
    this.driver.download(raw, w.ptr);
    return toFloat32({ dtype: w.dtype.toUpperCase(), shape: [...w.shape], bytes: raw }, 'weight');
  }

  /** Exactly src/quant's dequantize(w), computed on the device (no host copy of the weight is kept). */
  private quantizedToHost(w: CudaQuantizedWeight): Float32Array {
    const [N, K] = w.shape;
    const buf = this.pool.alloc(N * K * 4, true);
    try {
      this.quant.dequantize(w, buf.ptr, 'f32');
      const out = new Float32Array(N * K);
      this.driver.download(out, buf.ptr);
      return out;
    } finally {
      this.pool.release(buf);
    }
  }

  /**
   * A quantized weight as a bf16 [N, K] matrix (rounded to nearest even) for prefill's matmul, in the
   * backend's one scratch matrix (sized at load for the largest quantized weight): valid until the
   * next call, which stream order puts after the work queued in between.
   */
  private dequantizeToBf16(w: CudaQuantizedWeight): DevicePtr {
    return this.quant.bf16Copy(w);
  }

  private dense(weight: Weight): CudaDenseWeight {
    if (weight instanceof CudaDenseWeight) return weight;
    if (isCudaQuantized(weight)) throw new CudaError(`a quantized (${weight.format}) weight [${weight.shape.join(', ')}] was given where a float weight is needed: only linear takes quantized weights`);
    throw new CudaError(`weight of format ${weight.format} is not a CUDA weight (was it loaded by another backend?)`);
  }

  // ---- activations ---------------------------------------------------------------------------

  fromHost(data: Float32Array, shape: readonly number[]): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    if (data.length !== n) throw new RangeError(`fromHost: ${data.length} values for shape [${shape.join(', ')}]`);
    const t = this.tensor(shape);
    if (n > 0) this.driver.upload(t.ptr, data, n * 4);
    return t;
  }

  /** Backend.emptyTensor: a pooled activation, not written (its memory holds whatever was there). */
  emptyTensor(shape: readonly number[]): Tensor {
    return this.tensor(shape);
  }

  toHost(x: Tensor): Float32Array {
    const t = x as CudaTensor;
    const out = new Float32Array(t.numel);
    if (t.numel > 0) this.driver.download(out, t.ptr, t.numel * 4);
    return out;
  }

  private launch(file: string, kernel: string, grid: [number, number, number], block: number, kinds: string, args: number[], shared = 0): void {
    if (grid[0] === 0 || grid[1] === 0 || grid[2] === 0) return;
    this.driver.launch(this.kernels.fn(file, kernel), kernel, grid, block, kinds, args, shared);
  }

  private gridFor(n: number, threads = 256): [number, number, number] {
    return [Math.max(1, Math.min(Math.ceil(n / threads), this.gridStrideBlocks)), 1, 1];
  }

  embedding(table: Weight, ids: Int32Array): Tensor {
    const tab = this.dense(table);
    const [vocab, hidden] = tab.shape;
    const { min, max } = int32Bounds(ids);
    if (min < 0 || max >= vocab) throw new RangeError(`token id ${ids[firstOutside(ids, 0, vocab)]} is outside the vocabulary (0..${vocab - 1})`);
    const out = this.tensor([ids.length, hidden]);
    if (ids.length === 0) return out;
    const idsPtr = this.uploads.get('ids', ids);
    this.launch('elementwise.cu', `embedding_${tab.dtype}`, [ids.length, 1, 1], rowThreads(hidden), 'pppi', [tab.ptr, idsPtr, out.ptr, hidden]);
    return out;
  }

  rmsNorm(x: Tensor, weight: Weight, eps: number, readers: NormReaders = 'any'): Tensor {
    const src = x as CudaTensor;
    const out = this.tensor(src.shape);
    const w = this.vector(weight, src.cols, 'rmsNorm');
    // The kernel norm() would pick, so quantising does not change the output's bits.
    const k = prefillNormKernel(normKernel(src.cols, true, [src.ptr, out.ptr, w]), src.rows, src.cols);
    const side = this.normSideOutput(out, k);
    if (side && k.kind === 'block') {
      const rows = this.deferNormRows(out, readers, src, w, eps, k) ? 0 : out.ptr;
      this.launch('norm.cu', `rms_norm_${side.kind}_b${k.vec}`, this.normRowGrid(src.rows, k.threads), k.threads, 'pppifppi', [src.ptr, w, rows, src.cols, eps, side.ptr, side.scales, src.rows]);
    } else this.norm(src.ptr, out.ptr, w, src.rows, src.cols, eps, k);
    return out;
  }

  /**
   * The side-output norms' blocks (norm.cu rms_norm_rows): as many as are resident at once (2048
   * threads an SM), each walking rows with the next one's loads in flight; never more than rows.
   */
  private normRowGrid(rows: number, threads: number): [number, number, number] {
    return [Math.min(rows, this.device.multiprocessors * Math.max(1, Math.floor(2048 / threads))), 1, 1];
  }

  /** Norms whose readers are only linears leave their float32 rows unwritten where a side output serves those (deferNormRows); false writes them always. */
  deferNormOutput = true;
  /**
   * A prefill norm read only by linears (NormReaders 'linears') that writes the GEMMs' input beside
   * its output (normSideOutput) need not write its float32 rows: the GEMMs read the side output. They
   * are made on first use of the tensor's pointer instead (a linear that wants another form, toHost),
   * by the plain row kernel over the norm's input `src` (the residual, after an addRmsNorm's add): the
   * same bits, as long as src is unchanged — checked by the in-place epoch. Saves a write of the rows
   * (33.5 MB at 2048 tokens of 4096 floats, ~11 µs on an H100) twice a layer. Whether it deferred.
   */
  private deferNormRows(out: CudaTensor, readers: NormReaders, src: CudaTensor, w: DevicePtr, eps: number, k: NormKernel): boolean {
    if (readers !== 'linears' || !this.deferNormOutput) return false;
    const epoch = this.inPlaceEpoch;
    out.deferFill(() => {
      if (this.inPlaceEpoch !== epoch) {
        throw new CudaError(
          `a norm's output [${out.shape.join(', ')}] made for linears only (NormReaders 'linears') was read after an in-place op may have changed its input; ` +
            "the caller must read it before, or pass readers 'any'",
        );
      }
      this.norm(src.ptr, out.unfilledPtr, w, out.rows, out.cols, eps, k);
    });
    return true;
  }

  /** Norms of prefill steps also write their output in the prefill GEMMs' input type (normSideOutput); false: the GEMMs convert it. */
  fusedNormOutput = true;
  /** The input type of the last prefill GEMM (matmul, matmulFp8, mlp): what a norm's output is likely read in next. */
  private prefillGemmInput?: 'e4m3' | 'bf16' | 'f16';

  /**
   * A prefill step's norm output is read next by GEMMs that first convert it: to E4M3 per token (FP8
   * weights) or to bf16 / f16 (dense and dequantised weights). When the row kernel runs, the norm
   * writes that form beside its float32 output (norm.cu rms_norm_{e4m3,bf16,f16}_b*, add_rms_norm_…)
   * and it is left in the input cache the GEMMs look in (fp8Cache, castCache), saving the
   * conversion's read of the row and a launch. The form is the one the last prefill GEMM read; a
   * GEMM that wants another converts as before. Undefined (the plain norm) where none applies.
   */
  private normSideOutput(out: CudaTensor, k: NormKernel): { kind: 'e4m3' | 'bf16' | 'f16'; ptr: DevicePtr; scales: DevicePtr } | undefined {
    const kind = this.prefillGemmInput;
    if (!this.fusedNormOutput || !kind || k.kind !== 'block' || out.rows <= GEMV_MAX_TOKENS || !this.cublasLt()) return undefined;
    const n = out.rows * out.cols;
    if (kind === 'e4m3') {
      if (!this.canMatmulFp8(out.cols)) return undefined;
      const q = [this.pool.alloc(n), this.pool.alloc(out.rows * 4)];
      (this.fp8Cache ??= new DerivedInputCache(this.pool)).set(out, 'e4m3', this.inPlaceEpoch, q);
      return { kind, ptr: q[0].ptr, scales: q[1].ptr };
    }
    const h = this.pool.alloc(n * 2);
    (this.castCache ??= new DerivedInputCache(this.pool)).set(out, kind, this.inPlaceEpoch, [h]);
    return { kind, ptr: h.ptr, scales: 0 };
  }

  addRmsNorm(x: Tensor, residual: Tensor, weight: Weight, eps: number, readers: NormReaders = 'any'): Tensor {
    this.inPlaceEpoch++;
    const a = x as CudaTensor;
    const r = residual as CudaTensor;
    if (a.numel !== r.numel) throw new RangeError(`addRmsNorm: x has ${a.numel} values, residual ${r.numel}`);
    const out = this.tensor(r.shape);
    const w = this.vector(weight, r.cols, 'addRmsNorm');
    const args = [a.ptr, r.ptr, w, out.ptr, r.cols, eps];
    const k = prefillNormKernel(normKernel(r.cols, false, [a.ptr, r.ptr, w, out.ptr]), r.rows, r.cols);
    const side = this.normSideOutput(out, k);
    if (side && k.kind === 'block') {
      // Deferred rows come from the residual after the add (the row kernel's sum, the same bits).
      if (this.deferNormRows(out, readers, r, w, eps, k)) args[3] = 0;
      this.launch('norm.cu', `add_rms_norm_${side.kind}_b${k.vec}`, this.normRowGrid(r.rows, k.threads), k.threads, 'ppppifppi', [...args, side.ptr, side.scales, r.rows]);
    } else if (k.kind === 'block') this.launch('norm.cu', `add_rms_norm_b${k.vec}`, [r.rows, 1, 1], k.threads, 'ppppif', args);
    else this.launch('norm.cu', 'add_rms_norm', [r.rows, 1, 1], rowThreads(r.cols), 'ppppif', args);
    return out;
  }

  headRmsNorm(x: Tensor, weight: Weight, headDim: number, eps: number): void {
    this.inPlaceEpoch++;
    const t = x as CudaTensor;
    if (t.numel % headDim !== 0) throw new RangeError(`headRmsNorm: ${t.numel} values is not a whole number of heads of ${headDim}`);
    this.norm(t.ptr, t.ptr, this.vector(weight, headDim, 'headRmsNorm'), t.numel / headDim, headDim, eps);
  }

  /** RMSNorm of `rows` rows of `cols` floats: the vector kernel normKernel picks (`k`, where the caller has asked already), else the scalar one. */
  private norm(src: DevicePtr, dst: DevicePtr, w: DevicePtr, rows: number, cols: number, eps: number, k = normKernel(cols, true, [src, dst, w])): void {
    if (k.kind === 'warp') this.launch('norm.cu', `rms_norm_w${k.vec}`, [Math.ceil(rows / NORM_WARP_ROWS), 1, 1], NORM_WARP_ROWS * 32, 'pppiif', [src, w, dst, rows, cols, eps]);
    else if (k.kind === 'block') this.launch('norm.cu', `rms_norm_b${k.vec}`, [rows, 1, 1], k.threads, 'pppif', [src, w, dst, cols, eps]);
    else this.launch('norm.cu', 'rms_norm', [rows, 1, 1], rowThreads(cols), 'pppif', [src, w, dst, cols, eps]);
  }

  /** A float32 vector weight of `n` values (norm weights and biases are held as f32). */
  private vector(weight: Weight, n: number, op: string): DevicePtr {
    const w = this.dense(weight);
    if (w.dtype !== 'f32' || w.numel !== n) throw new RangeError(`${op}: expected a float32 vector of ${n} values, got ${w.dtype} [${w.shape.join(', ')}]`);
    return w.ptr;
  }

  linear(x: Tensor, weight: Weight, bias?: Weight): Tensor {
    if (isCudaQuantized(weight)) return this.linearQuantized(x as CudaTensor, weight, bias);
    const src = x as CudaTensor;
    const W = this.dense(weight);
    const [N, K] = W.shape;
    if (src.cols !== K) throw new Error(`linear: input has ${src.cols} columns, weight expects ${K}`);
    const T = src.rows;
    const out = this.tensor([T, N]);
    const b = bias ? this.vector(bias, N, 'linear bias') : 0;
    if (T <= GEMV_MAX_TOKENS && !this.decodeGemmFor(W, T)) {
      const args = [W.ptr, src.ptr, b, out.ptr, T, N, K];
      if (this.mmaFor(W, T)) {
        mmaGemv(this, src, W, b, out);
        return out;
      }
      // 16-byte loads need every row of W (and x) 16-byte aligned.
      if (K % (16 / DTYPE_BYTES[W.dtype]) !== 0) {
        this.launch('linear.cu', `gemv_scalar_${W.dtype}`, [Math.ceil(N / GEMV_WARPS), 1, 1], GEMV_WARPS * 32, 'ppppiii', args);
      } else {
        // One kernel for 1..8 tokens, so a token's result does not depend on how many share its step.
        if (this.gemvKernel === 'row') this.launch('linear.cu', `gemv_vec_${W.dtype}`, [Math.ceil(N / GEMV_WARPS), 1, 1], GEMV_WARPS * 32, 'ppppiii', args);
        else this.launch('linear.cu', `gemv_splitk_${W.dtype}`, [Math.ceil(N / SPLITK_ROWS), 1, 1], 256, 'ppppiii', args);
      }
      return out;
    }
    return this.matmul(src, W.ptr, W.dtype, N, K, b, out);
  }

  /**
   * Whether a step of T > 8 tokens runs these quantized linears on the decode GEMVs in slices of 16
   * tokens (QuantizedWeights.slicesTake: decode steps of up to 48 sequences) rather than a GEMM
   * over a bf16 copy of each weight; FP8 weights with FP8 GEMMs (W8A8, one read of the codes) keep those.
   */
  quantSlices(ws: readonly Weight[], T: number): boolean {
    if (!this.quant.slicesTake(ws, T)) return false;
    return !ws.some((w) => w instanceof CudaFp8Weight && this.canMatmulFp8(w.shape[1]));
  }

  /**
   * Quantized weights: ≤ 8 tokens take the GEMV that dequantises in registers (one kernel per weight
   * for 1..8 tokens), as do decode-sized steps in slices of 16 (quantSlices); more multiply a bf16 copy
   * of the weight (the backend's scratch matrix) with matmul.
   */
  private linearQuantized(src: CudaTensor, w: CudaQuantizedWeight, bias?: Weight): CudaTensor {
    const [N, K] = w.shape;
    if (src.cols !== K) throw new Error(`linear: input has ${src.cols} columns, weight expects ${K}`);
    const T = src.rows;
    const b = bias ? this.vector(bias, N, 'linear bias') : 0;
    if (T <= GEMV_MAX_TOKENS || this.quantSlices([w], T)) {
      const out = this.tensor([T, N]);
      if (T > 0) this.quant.gemv(w, src.ptr, T, b, out.ptr);
      return out;
    }
    // FP8 on sm_89+: the FP8 tensor cores with per-token activation scales (W8A8, as vLLM runs FP8
    // checkpoints); other formats, and shapes cuBLASLt has no FP8 algorithm for, dequantise to bf16.
    if (w instanceof CudaFp8Weight && this.canMatmulFp8(K)) {
      const y = this.matmulFp8(src, w.codes, w.rowScales, N, K, b);
      if (y) return y;
    }
    return this.matmul(src, this.dequantizeToBf16(w), 'bf16', N, K, b);
  }

  /** Prefill linears add to the residual inside their GEMM (linearAdd, mlpAdd); false: a separate add (the norm's). */
  residualInGemm = true;

  /**
   * residual += x · Wᵀ inside the GEMM (Backend.linearAdd): cuBLASLt reads the float32 residual as C
   * and writes the sum over it (beta 1), so the norm after reads one tensor instead of two and writes
   * one less — on prefill steps (more than 8 tokens) on cuBLASLt: bf16/f16 weights and the dequantised
   * copies of quantized ones, and FP8 ones where cuBLASLt scales by vectors (W8A8). The sum is formed
   * in float32 from the GEMM's unrounded result (one rounding fewer than linear + add). False, having
   * done nothing, elsewhere: decode steps keep their GEMVs and their batch invariance.
   */
  linearAdd(x: Tensor, weight: Weight, residual: Tensor): boolean {
    const src = x as CudaTensor;
    const r = residual as CudaTensor;
    const T = src.rows;
    const [N, K] = weight.shape;
    if (!this.residualInGemm || T <= GEMV_MAX_TOKENS || src.cols !== K || r.rows !== T || r.cols !== N) return false;
    const blas = this.cublasLt();
    if (!blas) return false;
    if (weight instanceof CudaFp8Weight && this.canMatmulFp8(K)) {
      // Real operand addresses for the question (the heuristic looks at the scale vectors too).
      const x8 = this.fp8Input(src);
      if (!blas.canFp8ScaledAdd(T, N, K, weight.codes, weight.rowScales, x8.q.ptr, x8.s.ptr, r.ptr)) {
        x8.drop();
        return false;
      }
      x8.ready();
      this.inPlaceEpoch++;
      this.prefillGemmInput = 'e4m3';
      blas.fp8GemmScaledAdd(x8.q.ptr, x8.s.ptr, T, weight.codes, weight.rowScales, N, K, r.ptr);
      return true;
    }
    if (isCudaQuantized(weight) && this.quantSlices([weight], T)) return false;
    const op = this.halfOperand(weight);
    if (!op) return false;
    const cache = (this.castCache ??= new DerivedInputCache(this.pool));
    const kept = cache.get(src, op.dtype, this.inPlaceEpoch)?.[0];
    if (!blas.lt.canRun(halfGemmShape(T, op.dtype, N, K, 'f32+'), op.alignedAs, kept?.ptr ?? 0, r.ptr)) return false;
    this.inPlaceEpoch++;
    const buf = blas.half(kept ? 0 : src.ptr, T, op.ptr(), op.dtype, N, K, 0, r.ptr, kept, true);
    if (!buf) throw new CudaError(`linearAdd: cuBLASLt refused a GEMM it had an algorithm for (${op.dtype} [${N}, ${K}], ${T} tokens)`);
    this.prefillGemmInput = op.dtype;
    cache.set(src, op.dtype, this.inPlaceEpoch, [buf]);
    return true;
  }

  /** residual += mlp(x, …) with the add inside the down GEMM (Backend.mlpAdd): where mlp's prefill paths run (mlpFp8, mlpHalf) and residualInGemm. */
  mlpAdd(x: Tensor, gate: Weight, up: Weight, down: Weight, residual: Tensor): boolean {
    const src = x as CudaTensor;
    const r = residual as CudaTensor;
    if (!this.residualInGemm || !this.fusedMlp || src.rows <= GEMV_MAX_TOKENS || r.rows !== src.rows || r.cols !== down.shape[0]) return false;
    if (this.quantSlices([gate, up, down], src.rows)) return false;
    return (this.mlpFp8(src, gate, up, down, r) ?? this.mlpHalf(src, gate, up, down, r)) !== undefined;
  }

  /** q/k/v in one launch where fused-linear.ts can (else separate linears); see fusedLinears. */
  linearMany(x: Tensor, weights: readonly Weight[], biases?: readonly (Weight | undefined)[]): Tensor[] {
    const T = x.shape[0];
    if (this.decodeGemmForAll(weights, T)) return weights.map((w, i) => this.linear(x, w, biases?.[i]));
    if (weights.some((w) => this.mmaFor(w, T))) {
      // Every weight on its own kernel choice: one mma launch when all take mma, else one by one.
      const ys = weights.every((w) => this.mmaFor(w, T)) ? mmaLinearMany(this, x, weights, biases) : undefined;
      return ys ?? weights.map((w, i) => this.linear(x, w, biases?.[i]));
    }
    return fusedLinearMany(this, x, weights, biases);
  }

  /** gate/up·SiLU in one launch where fused-linear.ts can (else linear, linear, siluMul). */
  linearSiluMul(x: Tensor, gate: Weight, up: Weight, gateBias?: Weight, upBias?: Weight): Tensor {
    // The mma path has no fused gate/up kernel, and the decode GEMM none: two linears and silu_mul.
    const T = x.shape[0];
    if (this.mmaFor(gate, T) || this.mmaFor(up, T) || this.decodeGemmForAll([gate, up], T)) {
      const g = this.linear(x, gate, gateBias);
      const u = this.linear(x, up, upBias);
      const out = this.siluMul(g, u);
      this.release(g, u);
      return out;
    }
    return fusedLinearSiluMul(this, x, gate, up, gateBias, upBias);
  }

  /**
   * The MLP (Backend.mlp). Prefill on cuBLASLt (more than 8 tokens, no biases, fusedMlp): FP8
   * weights on their tensor cores take mlpFp8; others keep the intermediate in the weights' 16-bit
   * type, as vLLM does: x rounded once, gate and up GEMMs writing
   * bf16/f16, silu·mul (float32 math) written in that type, the down GEMM reading it into float32.
   * The float32 gate, up and product never exist: at 2048 tokens of Llama-3.1-8B that is ~470 MB
   * less memory traffic a layer than linearSiluMul and linear, which cast the product to bf16
   * anyway. The only new rounding is gate's and up's outputs to bf16. Else linearSiluMul and linear.
   */
  mlp(x: Tensor, gate: Weight, up: Weight, down: Weight, biases: MlpBiases = {}): Tensor {
    const src = x as CudaTensor;
    const gemmRows = src.rows > GEMV_MAX_TOKENS || this.decodeGemmForAll([gate, up, down], src.rows);
    if (this.fusedMlp && gemmRows && !biases.gate && !biases.up && !biases.down && !this.quantSlices([gate, up, down], src.rows)) {
      const y = this.mlpFp8(src, gate, up, down) ?? this.mlpHalf(src, gate, up, down);
      if (y) return y;
    }
    return mlpByLinears(this, x, gate, up, down, biases);
  }

  /**
   * mlp for FP8 weights on the FP8 tensor cores (W8A8, as linear runs them): x quantised per token
   * once for gate and up; where cuBLASLt scales by vectors (outer-vector scaling), their GEMMs write
   * gate and up scaled, in bf16, and one kernel silu·mul's and quantises them for down
   * (silu_mul_quantize_bf16_e4m3); elsewhere their float32 outputs are scaled, silu·mul'd and
   * quantised in one kernel (silu_mul_quantize_e4m3, the values scale_fp8_product, silu_mul and
   * quantize_rows_e4m3 give). Then down's GEMM and scaling. Undefined (nothing launched) where it
   * does not apply.
   */
  private mlpFp8(x: CudaTensor, gate: Weight, up: Weight, down: Weight, into?: CudaTensor): CudaTensor | undefined {
    if (!(gate instanceof CudaFp8Weight && up instanceof CudaFp8Weight && down instanceof CudaFp8Weight)) return undefined;
    const { N, K, H } = mlpShape(x, gate, up, down);
    if (!this.canMatmulFp8(K) || !this.canMatmulFp8(N)) return undefined;
    const blas = this.cublasLt()!;
    const T = x.rows;
    const ldd = CublasLtPrefill.fp8Ldd(N);
    // x quantised already (by the norm that wrote it: normSideOutput), or here.
    const kept = this.fp8Cache?.get(x, 'e4m3', this.inPlaceEpoch);
    const [xq, xs] = kept ?? [this.pool.alloc(T * K), this.pool.alloc(T * 4)];
    // Gate and up scaled inside their GEMMs into bf16 where cuBLASLt can (outer-vector scaling), else
    // unscaled float32 that the middle kernel scales.
    const halfBytes = T * N * 2;
    const dg = this.pool.alloc(Math.max(halfBytes, T * ldd * 4));
    const du = this.pool.alloc(Math.max(halfBytes, T * ldd * 4));
    const aq = this.pool.alloc(T * N);
    const as = this.pool.alloc(T * 4);
    // into: down's GEMM adds to it (mlpAdd) instead of writing a new tensor.
    const out = into ?? this.tensor([T, H]);
    const half =
      blas.canFp8ScaledHalf(T, N, K, gate.codes, gate.rowScales, xq.ptr, xs.ptr, dg.ptr) &&
      blas.canFp8ScaledHalf(T, N, K, up.codes, up.rowScales, xq.ptr, xs.ptr, du.ptr);
    const runs =
      (half || (blas.canFp8(T, N, K, gate.codes, xq.ptr, dg.ptr) && blas.canFp8(T, N, K, up.codes, xq.ptr, du.ptr))) &&
      (into
        ? blas.canFp8ScaledAdd(T, H, N, down.codes, down.rowScales, aq.ptr, as.ptr, into.ptr)
        : blas.canFp8(T, H, N, down.codes, aq.ptr, CublasLtPrefill.fp8Ldd(H) === H ? out.ptr : 0));
    if (runs) {
      this.prefillGemmInput = 'e4m3';
      if (!kept) blas.quantizeRows(x.ptr, T, K, xq.ptr, xs.ptr);
      if (half) {
        blas.fp8GemmScaledHalf(xq.ptr, xs.ptr, T, gate.codes, gate.rowScales, N, K, dg.ptr);
        blas.fp8GemmScaledHalf(xq.ptr, xs.ptr, T, up.codes, up.rowScales, N, K, du.ptr);
        blas.siluMulQuantizeBf16(dg.ptr, du.ptr, T, N, aq.ptr, as.ptr);
      } else {
        blas.fp8Gemm(xq.ptr, T, gate.codes, N, K, dg.ptr);
        blas.fp8Gemm(xq.ptr, T, up.codes, N, K, du.ptr);
        blas.siluMulQuantizeFp8(dg.ptr, du.ptr, xs.ptr, gate.rowScales, up.rowScales, T, N, aq.ptr, as.ptr);
      }
      if (into) {
        this.inPlaceEpoch++;
        blas.fp8GemmScaledAdd(aq.ptr, as.ptr, T, down.codes, down.rowScales, H, N, into.ptr);
      } else blas.fp8GemmScaled(aq.ptr, as.ptr, T, down.codes, down.rowScales, H, N, 0, out.ptr);
    }
    for (const b of kept ? [dg, du, aq, as] : [xq, xs, dg, du, aq, as]) this.pool.release(b);
    if (runs) return out;
    if (!into) this.release(out);
    return undefined;
  }

  /** mlp's 16-bit path; undefined (nothing launched) where it does not apply. */
  private mlpHalf(x: CudaTensor, gate: Weight, up: Weight, down: Weight, into?: CudaTensor): CudaTensor | undefined {
    const blas = this.cublasLt();
    const ops = [gate, up, down].map((w) => this.halfOperand(w));
    const dtype = ops[0]?.dtype;
    if (!blas || !dtype || ops.some((o) => o?.dtype !== dtype)) return undefined;
    const { N, K, H } = mlpShape(x, gate, up, down);
    const T = x.rows;
    // x rounded already (by the norm that wrote it: normSideOutput), or here.
    const kept = this.castCache?.get(x, dtype, this.inPlaceEpoch)?.[0];
    const xh = kept ?? this.pool.alloc(T * K * 2);
    const g = this.pool.alloc(T * N * 2);
    const u = this.pool.alloc(T * N * 2);
    const a = this.pool.alloc(T * N * 2);
    // into: down's GEMM adds to it (mlpAdd) instead of writing a new tensor.
    const out = into ?? this.tensor([T, H]);
    const downOut = into ? 'f32+' : 'f32';
    const lt = blas.lt;
    const runs =
      lt.canRun(halfGemmShape(T, dtype, N, K, 'half'), ops[0]!.alignedAs, xh.ptr, g.ptr) &&
      lt.canRun(halfGemmShape(T, dtype, N, K, 'half'), ops[1]!.alignedAs, xh.ptr, u.ptr) &&
      lt.canRun(halfGemmShape(T, dtype, H, N, downOut), ops[2]!.alignedAs, a.ptr, out.ptr);
    if (runs) {
      this.prefillGemmInput = dtype;
      if (!kept) blas.cast(x.ptr, xh.ptr, T * K, dtype);
      // In this order: a quantized weight's bf16 copy lives in one scratch matrix until the next.
      blas.halfGemm(xh.ptr, T, ops[0]!.ptr(), dtype, N, K, g.ptr, 'half');
      blas.halfGemm(xh.ptr, T, ops[1]!.ptr(), dtype, N, K, u.ptr, 'half');
      blas.siluMulHalf(g.ptr, u.ptr, a.ptr, T * N, dtype);
      if (into) this.inPlaceEpoch++;
      blas.halfGemm(a.ptr, T, ops[2]!.ptr(), dtype, H, N, out.ptr, downOut);
    }
    // Stream order: the GEMMs queued read these before any later use of the memory.
    for (const b of kept ? [g, u, a] : [xh, g, u, a]) this.pool.release(b);
    if (runs) return out;
    if (!into) this.release(out);
    return undefined;
  }

  /**
   * A weight as a 16-bit GEMM operand: dense bf16/f16 as stored, a quantized one as its bf16 copy
   * (made by ptr(), in the scratch matrix), except FP8 where W8A8 runs (not here). alignedAs: a
   * pointer with the operand's alignment, for asking cuBLASLt before anything is launched.
   */
  private halfOperand(w: Weight): { dtype: 'bf16' | 'f16'; ptr: () => DevicePtr; alignedAs: DevicePtr } | undefined {
    if (isCudaQuantized(w)) {
      if (w instanceof CudaFp8Weight && this.canMatmulFp8(w.shape[1])) return undefined;
      return { dtype: 'bf16', ptr: () => this.dequantizeToBf16(w), alignedAs: this.quant.scratchAlignment };
    }
    const d = this.dense(w);
    if (d.dtype !== 'bf16' && d.dtype !== 'f16') return undefined;
    return { dtype: d.dtype, ptr: () => d.ptr, alignedAs: d.ptr };
  }

  /**
   * Whether a decode step of T tokens multiplies dense weight W on cuBLASLt instead of a GEMV: with
   * decodeGemv 'auto' (the default), 16-bit weights, DECODE_GEMM_MIN_TOKENS ≤ T ≤ 8, cuBLASLt present.
   * On the H100 (8B shapes, bench/cuda-decode-batches.ts) a bf16 step of 8 tokens took 6.66 ms there
   * against 9.02 on the tensor-core GEMVs, 4 tokens 6.55 against 6.96, while at 2 the GEMVs were
   * faster (6.33 against 6.59). The price: a token's bits then depend on whether its step has fewer
   * than 4 tokens (or on cuBLASLt's algorithm for the step's size); decodeGemv 'mma' or 'fma' keeps
   * the GEMVs for 1-8 tokens, and with them a token's result independent of its batch.
   */
  private decodeGemmFor(W: CudaDenseWeight, T: number): boolean {
    if (this.decodeGemv !== 'auto' || T < DECODE_GEMM_MIN_TOKENS || T > GEMV_MAX_TOKENS) return false;
    return (W.dtype === 'bf16' || W.dtype === 'f16') && this.cublasLt() !== undefined;
  }

  private decodeGemmForAll(ws: readonly Weight[], T: number): boolean {
    return ws.length > 0 && ws.every((w) => w instanceof CudaDenseWeight && this.decodeGemmFor(w, T));
  }

  /** Whether a ≤ 8-token linear of `w` runs on the tensor-core GEMV (see decodeGemv). */
  private mmaFor(w: Weight, T: number): boolean {
    if (this.decodeGemv === 'fma' || !mmaGemvApplies(w, T)) return false;
    if (w instanceof CudaDenseWeight && this.decodeGemmFor(w, T)) return false;
    return this.decodeGemv === 'mma' || w.shape[0] <= MMA_AUTO_MAX_ROWS;
  }

  /** The last prefill input rounded for cuBLASLt (see matmul), and the last one quantised for FP8 (matmulFp8). */
  private castCache?: DerivedInputCache<CudaTensor>;
  private fp8Cache?: DerivedInputCache<CudaTensor>;
  /** Counts in-place ops on activations, so cached derivatives of a tensor know when it may have changed. */
  private inPlaceEpoch = 0;

  /**
   * y[T, N] = x · Wᵀ (+ bias) for many tokens (prefill), W a dense [N, K] matrix on the device in
   * `dtype`. Quantized weights come here after dequantising into a bf16 scratch matrix. bf16/f16 run
   * on cuBLASLt's tensor cores (see prefillGemm), f32 and the fallback on the tiled float32 kernel.
   */
  private matmul(x: CudaTensor, w: DevicePtr, dtype: DeviceDtype, N: number, K: number, bias: DevicePtr, out = this.tensor([x.rows, N])): CudaTensor {
    const T = x.rows;
    const blas = dtype === 'f32' ? undefined : this.cublasLt();
    if (blas) {
      // q, k and v (and gate, up) read the same input: round it to bf16/f16 once. An in-place op
      // anywhere in between (rope, addInPlace, the norms' residual) drops the cached copy.
      const cache = (this.castCache ??= new DerivedInputCache(this.pool));
      const kept = cache.get(x, dtype, this.inPlaceEpoch)?.[0];
      // x itself only where it is not kept (a norm's deferred rows stay unwritten).
      const buf = blas.half(kept ? 0 : x.ptr, T, w, dtype as 'bf16' | 'f16', N, K, bias, out.ptr, kept);
      if (buf) {
        this.prefillGemmInput = dtype as 'bf16' | 'f16';
        cache.set(x, dtype, this.inPlaceEpoch, [buf]);
        return out;
      }
    }
    this.launch('linear.cu', `gemm_tiled_${dtype}`, [Math.ceil(N / TILE), Math.ceil(T / TILE), 1], 256, 'ppppiii', [w, x.ptr, bias, out.ptr, T, N, K]);
    return out;
  }

  /** cuBLASLt for prefill unless prefillGemm is 'tiled' or it is missing ('cublaslt' then throws the reason). */
  cublasLt(): CublasLtPrefill | undefined {
    if (this.prefillGemm === 'tiled') return undefined;
    const p = (this.prefill ??= openCublasLtPrefill(this.driver, this.kernels, this.pool));
    if (p instanceof CublasLtPrefill) return p;
    if (this.prefillGemm === 'cublaslt') throw new CudaError(`prefillGemm is 'cublaslt', but ${p.reason}`);
    return undefined;
  }

  /** Whether matmulFp8 can run a [*, K] input: cuBLASLt present and chosen, compute capability ≥ 8.9, K a multiple of 16. */
  canMatmulFp8(K: number): boolean {
    return fp8GemmUnsupportedReason(this.device.computeCapability, K) === undefined && this.cublasLt() !== undefined;
  }

  /**
   * y [T, N] = x · Wᵀ (+ bias) for an FP8 weight, W[n, k] = e4m3(codes[n, k]) · rowScales[n] (codes
   * row-major [N, K], rowScales float32 [N], bias float32 [N] or 0): x quantised per token to e4m3,
   * the FP8 tensor-core GEMM, then the two scales and the bias (cublaslt.ts). Check canMatmulFp8 first.
   * Undefined (nothing launched) where cuBLASLt has no FP8 algorithm for this shape.
   */
  matmulFp8(x: CudaTensor, codes: DevicePtr, rowScales: DevicePtr, N: number, K: number, bias: DevicePtr): CudaTensor | undefined {
    if (x.cols !== K) throw new Error(`matmulFp8: input has ${x.cols} columns, weight expects ${K}`);
    const blas = this.cublasLt();
    if (!blas) throw new CudaError(`matmulFp8: cuBLASLt is not in use (prefillGemm '${this.prefillGemm}'${this.prefill && 'reason' in this.prefill ? `; ${this.prefill.reason}` : ''})`);
    const T = x.rows;
    const out = this.tensor([T, N]);
    const x8 = this.fp8Input(x);
    const d = CublasLtPrefill.fp8Ldd(N) === N ? out.ptr : 0;
    // Some odd shapes have no FP8 algorithm (seen: N = 37 on the H100); the caller then dequantises.
    if (!blas.canFp8(T, N, K, codes, x8.q.ptr, d)) {
      x8.drop();
      this.release(out);
      return undefined;
    }
    x8.ready();
    this.prefillGemmInput = 'e4m3';
    blas.fp8GemmScaled(x8.q.ptr, x8.s.ptr, T, codes, rowScales, N, K, bias, out.ptr);
    return out;
  }

  /**
   * x quantised per token for FP8 GEMMs, once for all the linears that read it (q, k and v; as bf16
   * ones cast it once): the codes and scales kept from an earlier use (or written by the norm that made
   * x: normSideOutput), else fresh buffers. ready() quantises into fresh ones and keeps them for the
   * next reader; drop() gives fresh ones back unused (the GEMM could not run).
   */
  private fp8Input(x: CudaTensor): { q: PooledBuffer; s: PooledBuffer; ready(): void; drop(): void } {
    const cache = (this.fp8Cache ??= new DerivedInputCache(this.pool));
    const kept = cache.get(x, 'e4m3', this.inPlaceEpoch);
    if (kept) return { q: kept[0], s: kept[1], ready: () => {}, drop: () => {} };
    const q = this.pool.alloc(x.rows * x.cols);
    const s = this.pool.alloc(x.rows * 4);
    return {
      q,
      s,
      ready: () => {
        this.cublasLt()!.quantizeRows(x.ptr, x.rows, x.cols, q.ptr, s.ptr);
        cache.set(x, 'e4m3', this.inPlaceEpoch, [q, s]);
      },
      drop: () => {
        this.pool.release(q);
        this.pool.release(s);
      },
    };
  }

  /** A thread per (token, rotated pair): rope-kv.cu. */
  rope(x: Tensor, headDim: number, rotaryDim: number, rows: RopeRows): void {
    this.inPlaceEpoch++;
    const t = x as CudaTensor;
    const half = this.checkRope('rope', t, headDim, rotaryDim, rows);
    const at = this.ropeOnDevice(rows);
    const pairs = (t.cols / headDim) * half;
    this.launch('rope-kv.cu', 'rope', [t.rows, Math.ceil(pairs / ROPE_THREADS), 1], ROPE_THREADS, 'ppppiii', [t.ptr, at.cos, at.sin, at.index, t.cols, headDim, half]);
  }

  /** Checks x [T, heads·headDim], rotaryDim and the rows against each other; returns rotaryDim / 2. */
  private checkRope(op: string, x: CudaTensor, headDim: number, rotaryDim: number, rows: RopeRows): number {
    if (x.cols % headDim !== 0) throw new RangeError(`${op}: ${x.cols} columns is not a whole number of heads of ${headDim}`);
    if (rotaryDim % 2 !== 0 || rotaryDim <= 0 || rotaryDim > headDim) throw new RangeError(`${op}: rotary dim ${rotaryDim} must be even and within the head dim ${headDim}`);
    checkRopeRows(op, rows, x.rows, rotaryDim / 2);
    return rotaryDim / 2;
  }

  /**
   * `rows` on the device. A RopeTable's (an index given) are kept by the arrays' identity and sent once;
   * only the index goes with the step. A step's own rows are among its uploads. `was`: where an earlier
   * op of this step put the same rows, reused while the uploads still hold it.
   */
  private ropeOnDevice(rows: RopeRows, was?: RopeOnDevice): RopeOnDevice {
    const upload = (key: string, arr: Int32Array | Float32Array, ptr: DevicePtr | undefined) => (ptr !== undefined && this.uploads.holds(key, ptr) ? ptr : this.uploads.get(key, arr));
    if (rows.index) return { cos: this.ropeTableOnDevice(rows.cos), sin: this.ropeTableOnDevice(rows.sin), index: upload('rope.index', rows.index, was?.index) };
    return { cos: upload('rope.cos', rows.cos, was?.cos), sin: upload('rope.sin', rows.sin, was?.sin), index: 0 };
  }

  /** RopeTable arrays on the device, by identity, the latest used last (see ropeTableOnDevice). */
  private readonly ropeTables = new Map<Float32Array, PooledBuffer>();

  /**
   * The device copy of a RopeTable's cos or sin array (never changed once made: RopeRows). A table
   * that grows makes new arrays and leaves the old ones unused: the latest MAX_ROPE_TABLES are kept.
   */
  private ropeTableOnDevice(arr: Float32Array): DevicePtr {
    let buf = this.ropeTables.get(arr);
    if (buf) {
      this.ropeTables.delete(arr);
    } else {
      buf = this.pool.allocOutsideArena(arr.byteLength);
      this.driver.upload(buf.ptr, arr);
      for (const [old, b] of this.ropeTables) {
        if (this.ropeTables.size < MAX_ROPE_TABLES) break;
        // Stream order: kernels queued before still read it before anything new lands there.
        this.ropeTables.delete(old);
        this.pool.release(b);
      }
    }
    this.ropeTables.set(arr, buf);
    return buf.ptr;
  }

  /**
   * rope(q), rope(k), writeKv(k, v) in one launch (rope-kv.cu rope_write_kv), the same bits as the
   * three ops; fusedRopeKv = false runs those instead.
   */
  ropeWriteKv(q: Tensor, k: Tensor, v: Tensor, headDim: number, rotaryDim: number, rows: RopeRows, cache: KvCacheStorage, layer: number, slots: Int32Array): void {
    if (!this.fusedRopeKv) {
      this.rope(q, headDim, rotaryDim, rows);
      this.rope(k, headDim, rotaryDim, rows);
      this.writeKv(cache, layer, k, v, slots);
      return;
    }
    this.inPlaceEpoch++;
    const c = cache as CudaKvCache;
    const qt = q as CudaTensor;
    const kt = k as CudaTensor;
    const vt = v as CudaTensor;
    const { numKvHeads, headDim: cacheHeadDim } = c.spec;
    if (headDim !== cacheHeadDim) throw new RangeError(`ropeWriteKv: head dim ${headDim}, the KV cache's is ${cacheHeadDim}`);
    if (qt.rows !== slots.length) throw new RangeError(`ropeWriteKv: q has ${qt.rows} rows for ${slots.length} slots`);
    const { off, slotsPtr } = this.kvTarget('ropeWriteKv', c, layer, kt, vt, slots);
    const half = this.checkRope('ropeWriteKv', qt, headDim, rotaryDim, rows);
    if (slots.length === 0) return;
    const at = this.ropeOnDevice(rows);
    // Four pairs (values) a thread with 16-byte accesses where rows and tables allow (rope_write_kv4).
    const vec = this.vectorRopeKv && 2 * half === headDim && half % 4 === 0 && [qt.ptr, kt.ptr, vt.ptr, at.cos, at.sin].every((p) => p % 16 === 0);
    // q's rotation left to the prefill attention that reads q next (rope_q in attention-prefill.cu):
    // the kernel rotates q as it loads it, so q is not read and written here (at 2048 tokens of an 8B
    // model, 67 of this launch's ~92 MB). If anything else reads q first, it is rotated in memory
    // then (`rope`, the same bits).
    // (vec: full rotary, 2·half = headDim, which the kernel assumes.)
    const deferQ = vec && this.prefillQRope && qt.rows > GEMV_MAX_TOKENS && (headDim === 64 || headDim === 128) && (this.attentionKernel === 'auto' || this.attentionKernel === 'prefill');
    const qHeads = deferQ ? 0 : qt.cols / headDim;
    if (deferQ) qt.deferRope({ rows, at }, () => this.rope(qt, headDim, rotaryDim, rows));
    const items = vec ? (qHeads * half + numKvHeads * half + numKvHeads * headDim) / 4 : qHeads * half + numKvHeads * half + numKvHeads * headDim + numKvHeads * (headDim - 2 * half);
    const scales = kvScalesOf(c.spec, c.dtype, layer);
    this.launch(c.module('rope-kv.cu'), vec ? 'rope_write_kv4' : 'rope_write_kv', [slots.length, Math.ceil(items / ROPE_THREADS), 1], ROPE_THREADS, 'pppppppppiiiiff', [
      qt.unfilledPtr, kt.ptr, vt.ptr, at.cos, at.sin, at.index, c.k + off, c.v + off, slotsPtr, qHeads, numKvHeads, headDim, half, scales.k, scales.v,
    ]);
  }

  /** Prefill steps leave q's RoPE to the attention kernel (ropeWriteKv); false rotates q in ropeWriteKv's launch. */
  prefillQRope = true;

  siluMul(gate: Tensor, up: Tensor): Tensor {
    const g = gate as CudaTensor;
    const u = up as CudaTensor;
    if (g.numel !== u.numel) throw new RangeError(`siluMul: gate has ${g.numel} values, up ${u.numel}`);
    const out = this.tensor(g.shape);
    this.launch('elementwise.cu', 'silu_mul', this.gridFor(g.numel), 256, 'pppl', [g.ptr, u.ptr, out.ptr, g.numel]);
    return out;
  }

  argmaxRows(x: Tensor, n: number): Int32Array {
    const t = x as CudaTensor;
    if (!(Number.isInteger(n) && n >= 1 && n <= t.cols)) throw new RangeError(`argmaxRows: n must be in 1..${t.cols}, got ${n}`);
    const ids = new Int32Array(t.rows);
    if (t.rows === 0) return ids;
    const out = this.pool.alloc(t.rows * 4);
    this.launch('sampling.cu', 'argmax_rows', [t.rows, 1, 1], 1024, 'ppii', [t.ptr, out.ptr, t.cols, n]);
    this.driver.download(ids, out.ptr, t.rows * 4);
    return ids;
  }

  /** Backend.sampleRows: kernels/sampling.cu sample_rows, a block a row (sampling.ts). */
  sampleRows(x: Tensor, n: number, rows: readonly GpuSamplingRow[], excludedProbs?: Float32Array, dist?: Tensor): Int32Array {
    return sampleRowsOnGpu(this, x as CudaTensor, n, rows, (params) => this.uploads.get('sampleRows', params), excludedProbs, dist as CudaTensor | undefined);
  }

  readonly maxTopLogprobs = GPU_MAX_TOP_LOGPROBS;

  /** A copy of the logits with the rows' penalties applied: kernels/penalties.cu, a thread per seen id. */
  applyPenalties(x: Tensor, rows: readonly (PenaltyRow | undefined)[]): Tensor {
    const src = x as CudaTensor;
    if (rows.length !== src.rows) throw new RangeError(`applyPenalties: ${rows.length} penalty rows for ${src.rows} logit rows`);
    const out = this.tensor(src.shape);
    this.driver.copyDeviceToDevice(out.ptr, src.ptr, src.numel * 4);
    const entries = rows.reduce((a, p) => a + (p?.ids.length ?? 0), 0);
    if (entries === 0) return out;
    const rowOf = new Int32Array(entries);
    const ids = new Int32Array(entries);
    const counts = new Int32Array(entries);
    const params = new Float64Array(3 * rows.length);
    let e = 0;
    rows.forEach((p, r) => {
      if (!p) return;
      rowOf.fill(r, e, e + p.ids.length);
      ids.set(p.ids, e);
      counts.set(p.outputCounts, e);
      e += p.ids.length;
      params.set([p.repetitionPenalty, p.frequencyPenalty, p.presencePenalty], 3 * r);
    });
    const u = (key: string, a: Int32Array) => this.uploads.get(`applyPenalties.${key}`, a);
    this.launch('penalties.cu', 'apply_penalties', [Math.ceil(entries / 256), 1, 1], 256, 'pppppii', [
      out.ptr, u('rows', rowOf), u('ids', ids), u('counts', counts), u('params', new Int32Array(params.buffer)), entries, src.cols,
    ]);
    return out;
  }

  /** kernels/logprobs.cu: a block a row, the row's logprobs statistics and top alternatives read back (logprobs.ts). */
  logprobRows(x: Tensor, n: number, rows: readonly LogprobRow[]): Logprobs[] {
    return logprobRowsOnGpu(this, x as CudaTensor, n, rows, (ids) => this.uploads.get('logprobRows', ids));
  }

  addInPlace(a: Tensor, b: Tensor): void {
    this.inPlaceEpoch++;
    const x = a as CudaTensor;
    const y = b as CudaTensor;
    if (x.numel !== y.numel) throw new RangeError(`addInPlace: ${x.numel} and ${y.numel} values`);
    this.launch('elementwise.cu', 'add_inplace', this.gridFor(x.numel), 256, 'ppl', [x.ptr, y.ptr, x.numel]);
  }

  selectRows(x: Tensor, rows: Int32Array): Tensor {
    const src = x as CudaTensor;
    for (let i = 0; i < rows.length; i++) if (rows[i] < 0 || rows[i] >= src.rows) throw new RangeError(`selectRows: row ${rows[i]} of ${src.rows}`);
    const out = this.tensor([rows.length, ...src.shape.slice(1)]);
    if (rows.length === 0) return out;
    const r = this.uploads.get('selectRows', rows);
    this.launch('elementwise.cu', 'select_rows', [rows.length, 1, 1], rowThreads(src.cols), 'pppi', [src.ptr, r, out.ptr, src.cols]);
    return out;
  }

  gatherColumns(x: Tensor, columns: Int32Array, fill: number): Tensor {
    const src = x as CudaTensor;
    checkGatherColumns(src.cols, columns);
    const out = this.tensor([src.rows, columns.length]);
    if (src.rows === 0 || columns.length === 0) return out;
    const c = this.uploads.get('gatherColumns', columns);
    this.launch('elementwise.cu', 'gather_columns', [src.rows, Math.ceil(columns.length / 256), 1], 256, 'pppiif', [src.ptr, c, out.ptr, src.cols, columns.length, fill]);
    return out;
  }

  // ---- KV cache and attention ----------------------------------------------------------------

  allocKvCache(spec: KvCacheSpec): KvCacheStorage {
    const dtype = spec.dtype ?? this.kvDtype;
    // Block copies move 4-byte words and the kernels load a lane's elements as one word: a row of
    // head_dim elements must be whole words (an even head_dim for bf16, a multiple of 4 for fp8).
    const perWord = 4 / KV_DTYPE_BYTES[dtype];
    if (spec.headDim % perWord !== 0) throw new RangeError(`allocKvCache: a ${dtype} KV cache needs head_dim to be a multiple of ${perWord}, not ${spec.headDim}`);
    const bytes = spec.numLayers * spec.numBlocks * spec.blockSize * spec.numKvHeads * spec.headDim * KV_DTYPE_BYTES[dtype];
    const k = this.ownedAlloc(bytes);
    const v = this.ownedAlloc(bytes);
    const cache = new CudaKvCache(spec, dtype, k, v);
    this.owned.register(cache, k);
    this.owned.register(cache, v);
    this.kvBytesOnDevice += cache.bytes;
    // Zeroed like the CPU's, so a stray read of an unwritten slot is at least finite.
    this.driver.fill32(k, 0, bytes / 4);
    this.driver.fill32(v, 0, bytes / 4);
    return cache;
  }

  writeKv(cache: KvCacheStorage, layer: number, k: Tensor, v: Tensor, slots: Int32Array): void {
    const c = cache as CudaKvCache;
    const width = c.spec.numKvHeads * c.spec.headDim;
    const kt = k as CudaTensor;
    const vt = v as CudaTensor;
    const { off, slotsPtr } = this.kvTarget('writeKv', c, layer, kt, vt, slots);
    if (slots.length === 0) return;
    const scales = kvScalesOf(c.spec, c.dtype, layer);
    this.launch(c.module('kv-cache.cu'), 'write_kv', [slots.length, 1, 1], rowThreads(width), 'pppppiff', [c.k + off, c.v + off, kt.ptr, vt.ptr, slotsPtr, width, scales.k, scales.v]);
  }

  /**
   * Checks a cache write of k, v ([slots, kvHeads·headDim]) into `layer` at `slots` (a slot outside
   * the cache would be a write to a stray address); the layer's byte offset and the slots on the device.
   */
  private kvTarget(op: string, c: CudaKvCache, layer: number, k: CudaTensor, v: CudaTensor, slots: Int32Array): { off: number; slotsPtr: DevicePtr } {
    const { numLayers, numBlocks, blockSize, numKvHeads, headDim } = c.spec;
    const width = numKvHeads * headDim;
    if (k.numel !== slots.length * width || v.numel !== slots.length * width) throw new RangeError(`${op}: k/v must be [${slots.length}, ${width}]`);
    if (!Number.isInteger(layer) || layer < 0 || layer >= numLayers) throw new RangeError(`${op}: layer ${layer} of a ${numLayers}-layer KV cache`);
    const numSlots = numBlocks * blockSize;
    const { min, max } = int32Bounds(slots);
    if (min < 0 || max >= numSlots) {
      const i = firstOutside(slots, 0, numSlots);
      throw new RangeError(`${op}: slot ${slots[i]} (token ${i}) is outside the KV cache's ${numSlots} slots`);
    }
    return { off: layer * c.layerBytes, slotsPtr: slots.length > 0 ? this.uploads.get('slots', slots) : 0 };
  }

  attention(q: Tensor, cache: KvCacheStorage, layer: number, batch: AttentionBatch, scale: number, window: number): Tensor {
    const c = cache as CudaKvCache;
    const qt = q as CudaTensor;
    const { numKvHeads, headDim, blockSize } = c.spec;
    const numHeads = qt.cols / headDim;
    if (headDim > MAX_HEAD_DIM) throw new CudaError(`attention: head_dim ${headDim} is over the CUDA kernel's limit of ${MAX_HEAD_DIM}`);
    if (!Number.isInteger(numHeads) || numHeads % numKvHeads !== 0) throw new RangeError(`attention: ${qt.cols} query columns is not a multiple of ${numKvHeads} KV heads × ${headDim}`);
    const out = this.tensor(qt.shape);
    if (batch.numTokens === 0) return out;
    // Planned once per step (cached while the batch arrays are unchanged); checks positions and blocks.
    const plan = this.attentionPlanner.plan(batch, blockSize, c.spec.numBlocks, window);
    const tables = this.uploads.get('blockTables', batch.blockTables);
    const off = layer * c.layerBytes;
    const kc = c.k + off;
    const vc = c.v + off;
    // The tiled kernels exist for head_dim 64 and 128; other sizes keep the original kernel.
    const tiled = headDim === 64 || headDim === 128;
    const kernel = this.attentionKernel !== 'auto' ? this.attentionKernel : !tiled ? 'paged' : plan.longestRun >= PREFILL_MIN_RUN ? 'prefill' : 'decode';
    if (kernel !== 'paged' && !tiled) throw new CudaError(`attention: the ${kernel} kernel needs head_dim 64 or 128, not ${headDim}`);
    // An FP8 cache's calibrated scales: K's folds into the softmax scale, V's multiplies the output.
    const kvScales = kvScalesOf(c.spec, c.dtype, layer);
    // q's RoPE, where ropeWriteKv left it to this kernel: applied as the prefill kernel loads q when
    // every token goes through it; otherwise (decode tokens in the step) q.ptr rotates q in memory first.
    const rope = kernel === 'prefill' && (this.attentionKernel === 'prefill' || plan.otherTokens.length === 0) ? qt.pendingRope : undefined;
    const qPtr = rope ? qt.unfilledPtr : qt.ptr;
    const a: AttentionLaunch = { cache: c, q: qPtr, kc, vc, out: out.ptr, tables, batch, numHeads, numKvHeads, headDim, blockSize, scale: scale * kvScales.k, vScale: kvScales.v, window, rope };
    if (kernel === 'paged') {
      const positions = this.uploads.get('positions', batch.positions);
      const seqIndex = this.uploads.get('seqIndex', batch.seqIndex);
      this.launch(c.module('attention.cu'), 'paged_attention', [batch.numTokens, numHeads, 1], ATTN_THREADS, 'pppppppiiiiifif', [
        qt.ptr, kc, vc, out.ptr, positions, seqIndex, tables,
        batch.maxBlocksPerSeq, blockSize, numHeads, numKvHeads, headDim, a.scale, window, a.vScale,
      ]);
    } else if (kernel === 'decode') {
      this.decodeAttention(a, undefined, undefined);
    } else if (this.attentionKernel === 'prefill') {
      // Forced (tests, benchmarks): every token through the tensor-core kernel, short runs as small tiles.
      const rows = this.prefillRows(plan.tiles[128].numTiles, numHeads);
      this.prefillAttention(a, rows, this.uploads.get(`attention.tiles${rows}`, plan.tiles[rows].tiles), plan.tiles[rows].numTiles);
    } else {
      // A prefill step: runs of ≥ 16 tokens on tensor cores, the rest of the step's tokens (decode
      // tokens, speculative windows) split-K, each token's rows written by one of the two.
      const rows = this.prefillRows(plan.tiles[128].numPrefillTiles, numHeads);
      const t = plan.tiles[rows];
      this.prefillAttention(a, rows, this.uploads.get(`attention.prefillTiles${rows}`, t.prefillTiles), t.numPrefillTiles);
      if (plan.otherTokens.length > 0) this.decodeAttention(a, this.uploads.get('attention.otherTokens', plan.otherTokens), plan.otherTokens);
    }
    return out;
  }

  /** Tile size of a prefill launch: attentionPrefillRows, or by the rule (attention-plan.ts prefillTileRows). */
  private prefillRows(tiles128: number, numHeads: number): PrefillTileRows {
    return this.attentionPrefillRows || prefillTileRows(tiles128, numHeads, this.device.multiprocessors);
  }

  /**
   * Whether prefill attention can run on wgmma here: a compute capability 9.0 GPU (H100, H200, GH200)
   * and an NVRTC that compiles for sm_90a (CUDA 12.0 and later).
   */
  get prefillWgmmaAvailable(): boolean {
    return this.device.computeCapability === 90 && Number.parseInt(this.nvrtc.version, 10) >= 12;
  }

  /** The prefill attention module for a cache of `dtype`: the wgmma build where it runs (prefillWgmma). */
  private prefillAttentionModule(dtype: KvDtype): { module: string; wgmma: boolean } {
    const base = kvModule('attention-prefill.cu', dtype);
    const wgmma = this.prefillWgmma && this.prefillWgmmaAvailable;
    return { module: wgmma ? archSpecificModule(moduleVariant(base, 'PF_WGMMA')) : base, wgmma };
  }

  /** prefill_attention over `numTiles` query tiles of `rows` rows (attention-plan.ts) × heads. */
  private prefillAttention(a: AttentionLaunch, rows: PrefillTileRows, tiles: DevicePtr, numTiles: number): void {
    const warps = rows / 16;
    const { module, wgmma } = this.prefillAttentionModule(a.cache.dtype);
    // q's RoPE left to the kernel (full rotary: cos/sin rows of headDim / 2), or null pointers.
    const rope = a.rope ? this.ropeOnDevice(a.rope.rows, a.rope.at) : { cos: 0, sin: 0, index: 0 };
    this.launch(module, `prefill_attention_d${a.headDim}_w${warps}`, [a.numHeads, numTiles, 1], warps * 32, 'ppppppiiiififppp', [
      a.q, a.kc, a.vc, a.out, tiles, a.tables, a.batch.maxBlocksPerSeq, a.blockSize, a.numHeads, a.numKvHeads, a.scale, a.window, a.vScale, rope.cos, rope.sin, rope.index,
    ], prefillSharedBytes(a.cache.dtype, a.headDim, wgmma ? rows : 0));
  }

  /**
   * Split-K decode attention for the tokens in `list` (on the host; `tokens` is the same list on the
   * device), or all of the step's when undefined. A block per (token, KV head, group of ≤ 8 of its
   * query heads, chunk of positions); a token's chunk size depends on its own context only
   * (attention-plan.ts decodeChunk), and its chunks are merged by the last of them to finish, in the
   * same launch.
   */
  private decodeAttention(a: AttentionLaunch, tokens: DevicePtr | undefined, list: Int32Array | undefined): void {
    const heads = decodeHeadsPerBlock(a.numHeads, a.numKvHeads);
    const headBlocks = a.numKvHeads * Math.ceil(a.numHeads / a.numKvHeads / heads);
    const count = list ? list.length : a.batch.numTokens;
    // Grid depth: the most chunks any of the tokens needs (blocks past a token's own count exit).
    const mma = a.cache.dtype !== 'float32' && this.decodeAttentionMma;
    const [minChunk, oneChunk] = mma ? [DECODE_MMA_MIN_CHUNK, DECODE_MMA_ONE_CHUNK] : [32, 0];
    let splits = 1;
    for (let i = 0; i < count; i++) {
      const pos = a.batch.positions[list ? list[i] : i];
      splits = Math.max(splits, decodeSplits(a.window > 0 ? Math.min(pos + 1, a.window) : pos + 1, this.attentionChunk, minChunk, oneChunk));
    }
    if (splits > DECODE_MAX_SPLITS) throw new RangeError(`attention: a decode chunk of ${this.attentionChunk} positions makes ${splits} chunks, over the kernel's ${DECODE_MAX_SPLITS}`);
    const positions = this.uploads.get('positions', a.batch.positions);
    const seqIndex = this.uploads.get('seqIndex', a.batch.seqIndex);
    // Partial results of split tokens: normalized outputs, then (max, sum), per (listed token, head,
    // split). Given back to the pool as soon as the launch is queued (stream order keeps it intact
    // until the kernel has run), so every layer of a step reuses one scratch.
    const partials = count * a.numHeads * splits;
    const scratch = splits > 1 ? this.pool.alloc(partials * (a.headDim + 2) * 4, true) : undefined;
    const partOut = scratch?.ptr ?? 0;
    const partMl = scratch ? scratch.ptr + partials * a.headDim * 4 : 0;
    const counters = splits > 1 ? this.decodeCounters(count * headBlocks) : 0;
    try {
      const kernel = mma ? 'decode_attention_mma' : 'decode_attention';
      this.launch(a.cache.module('attention-decode.cu'), `${kernel}_d${a.headDim}_g${heads}`, [count, headBlocks, splits], DECODE_THREADS, 'pppppppppppiiiifiif', [
        a.q, a.kc, a.vc, a.out, partOut, partMl, counters, tokens ?? 0, positions, a.tables, seqIndex,
        a.batch.maxBlocksPerSeq, a.blockSize, a.numHeads, a.numKvHeads, a.scale, a.window, this.attentionChunk, a.vScale,
      ]);
    } finally {
      if (scratch) this.pool.release(scratch);
    }
  }

  /**
   * At least `n` zeroed ints for the decode kernel's per-(token, head group) chunk counters. Each
   * launch leaves them zero (the last chunk resets its counter), so they are kept, not pooled
   * (pooled memory is poisoned between steps in tests); grown by doubling.
   */
  private decodeCounters(n: number): DevicePtr {
    if (n > this.counters.ints) {
      if (this.counters.ints > 0) {
        this.driver.synchronize(); // no queued kernel still counts in the old array
        this.driver.memFree(this.counters.ptr);
      }
      const ints = Math.max(n, 2 * this.counters.ints, 1024);
      this.counters = { ptr: this.ownedAlloc(ints * 4), ints };
      this.driver.fill32(this.counters.ptr, 0, ints);
    }
    return this.counters.ptr;
  }

  /** Back to the pool now (see Backend.release); a stale or foreign tensor is left alone. */
  release(...tensors: Tensor[]): void {
    for (const t of tensors) {
      if (t instanceof CudaTensor && t.valid) this.pool.release(t.buffer);
    }
  }

  copyKvBlocks(cache: KvCacheStorage, pairs: Array<[number, number]>): void {
    const c = cache as CudaKvCache;
    // One launch per pair, in order, so chains (a → b, b → c) behave as the CPU's sequential copies.
    // Copied as 4-byte words whatever the element type (a block's bytes are a multiple of 4).
    for (const [src, dst] of pairs) {
      this.launch(c.module('kv-cache.cu'), 'copy_kv_block', [c.spec.numLayers, 2, 1], 256, 'ppllii', [c.k, c.v, c.layerBytes / 4, c.blockBytes / 4, src, dst]);
    }
  }

  /** Wait for all queued GPU work (benchmarks time with this). */
  synchronize(): void {
    this.driver.synchronize();
  }

  /** Device-to-device copy bandwidth in GB/s, bytes read + written, timed with events: the memory roofline. */
  measureCopyBandwidth(bytes = 2 ** 30, repeats = 10): number {
    const a = this.driver.memAlloc(bytes);
    const b = this.driver.memAlloc(bytes);
    try {
      this.driver.fill32(a, 0x3f800000, bytes / 4);
      for (let i = 0; i < 2; i++) this.driver.copyDeviceToDevice(b, a, bytes);
      const e0 = this.driver.createEvent();
      const e1 = this.driver.createEvent();
      const times: number[] = [];
      for (let i = 0; i < repeats; i++) {
        this.driver.recordEvent(e0);
        this.driver.copyDeviceToDevice(b, a, bytes);
        this.driver.recordEvent(e1);
        times.push(this.driver.elapsedMs(e0, e1));
      }
      times.sort((x, y) => x - y);
      return (2 * bytes) / (times[times.length >> 1] / 1000) / 1e9;
    } finally {
      this.driver.memFree(a);
      this.driver.memFree(b);
    }
  }

  /**
   * Tests: fill every free pooled buffer with NaN, so an output element an op fails to write shows
   * as NaN instead of a stale, plausible value.
   */
  poisonFreeMemory(): void {
    this.pool.poisonFree(0x7fc00bad);
  }
}

/** Open the CUDA backend, or say in one line why it cannot be (no driver, no GPU, no NVRTC). */
export function openCudaBackend(options: CudaBackendOptions = {}): { backend: CudaBackend } | { reason: string } {
  try {
    return { backend: new CudaBackend(options) };
  } catch (err) {
    return { reason: (err as Error).message.split('\n')[0] };
  }
}
