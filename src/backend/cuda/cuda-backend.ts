// The CUDA backend for float checkpoints: weights stay on the GPU in their checkpoint dtype (bf16,
// f16; f32 stays f32), activations and the KV cache are float32, and every op is a kernel from
// kernels/*.cu. Tested op by op against the CPU backend (test/cuda-backend.test.ts).

import type { AttentionBatch, Backend, KvCacheSpec, KvCacheStorage, Tensor, Weight } from '../backend.js';
import type { HostTensor } from '../../model/load/safetensors.js';
import { toFloat32 } from '../../model/load/dtype.js';
import { ModelLoadError } from '../../errors.js';
import type { QuantizedWeight } from '../../quant/format.js';
import { CudaDriver, CudaError, type DeviceInfo, type DevicePtr } from './driver.js';
import { KernelModules, kernelCacheDir } from './kernel-modules.js';
import { DevicePool, fmtBytes, type PooledBuffer } from './memory-pool.js';
import { Nvrtc } from './nvrtc.js';

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
  get ptr(): DevicePtr {
    if (this.buffer.generation !== this.generation) {
      throw new CudaError(
        `a CUDA activation [${this.shape.join(', ')}] was used after the synchronous step that made it ended; ` +
          'the CUDA backend recycles activations when the step returns to the event loop (copy it to the host with toHost to keep it)',
      );
    }
    return this.buffer.ptr;
  }
  get rows(): number {
    return this.shape[0];
  }
  get cols(): number {
    return this.numel / this.shape[0];
  }
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
  /** Floats of one layer's K (or V) store. */
  readonly layerFloats: number;
  constructor(
    readonly spec: KvCacheSpec,
    readonly k: DevicePtr,
    readonly v: DevicePtr,
  ) {
    this.layerFloats = spec.numBlocks * spec.blockSize * spec.numKvHeads * spec.headDim;
    this.bytes = 2 * spec.numLayers * this.layerFloats * 4;
  }
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
}

/** Host arrays of the current step (ids, slots, positions, block tables, RoPE tables) kept on the device. */
class StepUploads {
  private readonly entries = new Map<string, { src: Int32Array | Float32Array; copy: Int32Array | Float32Array; buffer: PooledBuffer }>();
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
    this.entries.set(key, { src: arr, copy: arr.slice(), buffer });
    return buffer.ptr;
  }
}

function sameContents(a: Int32Array | Float32Array, b: Int32Array | Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && !(a[i] !== a[i] && b[i] !== b[i])) return false;
  return true;
}

const GEMV_MAX_T = 8;
const GEMV_WARPS = 8;
const SPLITK_ROWS = 4;
export type GemvKernel = 'auto' | 'row' | 'split-k';
const TILE = 64;
const ATTN_THREADS = 256;
const MAX_HEAD_DIM = 256;

const roundUp = (n: number, m: number) => Math.ceil(n / m) * m;
/** Threads for a one-block-per-row kernel over `cols` elements. */
const rowThreads = (cols: number) => Math.min(512, Math.max(32, roundUp(cols, 32)));

let sharedDriver: CudaDriver | undefined;
let sharedNvrtc: Nvrtc | undefined;

export class CudaBackend implements Backend {
  readonly name = 'cuda';
  readonly driver: CudaDriver;
  readonly nvrtc: Nvrtc;
  readonly kernels: KernelModules;
  readonly pool: DevicePool;
  private readonly uploads: StepUploads;
  /** Device memory held by weights and KV caches, freed when they are collected. */
  private readonly owned: FinalizationRegistry<DevicePtr>;
  weightBytesOnDevice = 0;
  /**
   * The GEMV for ≤ 8 tokens: 'split-k' (a block per 4 rows, its warps splitting K; what 'auto' uses,
   * faster at every Llama-8B shape on the H100, see docs/cuda.md) or 'row' (a warp per row, the
   * prototype's kernel). Benchmarks and tests set it to compare.
   */
  gemvKernel: GemvKernel = 'auto';
  kvBytesOnDevice = 0;
  private readonly gridStrideBlocks: number;

  constructor(options: CudaBackendOptions = {}) {
    // One driver (primary context, stream) per process, shared by every backend instance.
    this.driver = sharedDriver ??= new CudaDriver(options.device ?? 0);
    this.nvrtc = sharedNvrtc ??= Nvrtc.load();
    if (options.syncEveryLaunch) this.driver.syncEveryLaunch = true;
    const cacheDir = options.kernelCacheDir === null ? undefined : (options.kernelCacheDir ?? kernelCacheDir());
    this.kernels = new KernelModules(this.driver, this.nvrtc, undefined, cacheDir);
    this.pool = new DevicePool(this.driver);
    this.uploads = new StepUploads(this.driver, this.pool);
    const driver = this.driver;
    this.owned = new FinalizationRegistry((ptr) => {
      try {
        driver.memFree(ptr);
      } catch {
        // at exit the context may be gone
      }
    });
    this.gridStrideBlocks = this.driver.device.multiprocessors * 8;
  }

  get device(): DeviceInfo {
    return this.driver.device;
  }

  /** Compile and load every kernel module now (otherwise each compiles on first use). */
  warmUp(): void {
    for (const f of ['elementwise.cu', 'norm.cu', 'linear.cu', 'attention.cu', 'kv-cache.cu']) this.kernels.module(f);
  }

  /** A long-lived allocation (weights, KV caches); the caller registers its owner with `owned`. */
  private ownedAlloc(bytes: number): DevicePtr {
    const ptr = this.driver.tryMemAlloc(bytes) ?? (this.pool.trim(), this.driver.tryMemAlloc(bytes));
    if (ptr === undefined) {
      const { freeBytes, totalBytes } = this.driver.memInfo();
      throw new CudaError(`out of GPU memory allocating ${fmtBytes(bytes)} (${fmtBytes(freeBytes)} free of ${fmtBytes(totalBytes)})`, 2);
    }
    return ptr;
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

  loadQuantized(name: string, weight: QuantizedWeight): Weight {
    throw new CudaUnsupportedError(`'${name}': ${weight.format} weights are not yet supported on CUDA (float bf16/f16/f32 checkpoints only so far)`);
  }

  /** Dummy weights at real shapes, generated on the GPU (benchmarks): bf16 uniform in [-scale, scale). */
  randomBf16(shape: readonly number[], seed: number, scale: number): Weight {
    const n = shape.reduce((a, b) => a * b, 1);
    const ptr = this.ownedAlloc(n * 2);
    const w = new CudaDenseWeight(ptr, [...shape], n * 2, 'bf16', 'bf16');
    this.owned.register(w, ptr);
    this.weightBytesOnDevice += n * 2;
    this.launch('elementwise.cu', 'fill_random_bf16', [Math.min(Math.ceil(n / 256), this.gridStrideBlocks), 1, 1], 256, 'pluf', [ptr, n, seed >>> 0, scale]);
    return w;
  }

  weightToHost(weight: Weight): Float32Array {
    const w = this.dense(weight);
    const raw = new Uint8Array(w.numel * DTYPE_BYTES[w.dtype]);
    this.driver.download(raw, w.ptr);
    return toFloat32({ dtype: w.dtype.toUpperCase(), shape: [...w.shape], bytes: raw }, 'weight');
  }

  private dense(weight: Weight): CudaDenseWeight {
    if (weight instanceof CudaDenseWeight) return weight;
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
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id < 0 || id >= vocab) throw new RangeError(`token id ${id} is outside the vocabulary (0..${vocab - 1})`);
    }
    const out = this.tensor([ids.length, hidden]);
    if (ids.length === 0) return out;
    const idsPtr = this.uploads.get('ids', ids);
    this.launch('elementwise.cu', `embedding_${tab.dtype}`, [ids.length, 1, 1], rowThreads(hidden), 'pppi', [tab.ptr, idsPtr, out.ptr, hidden]);
    return out;
  }

  rmsNorm(x: Tensor, weight: Weight, eps: number): Tensor {
    const src = x as CudaTensor;
    const out = this.tensor(src.shape);
    this.norm(src.ptr, out.ptr, this.vector(weight, src.cols, 'rmsNorm'), src.rows, src.cols, eps);
    return out;
  }

  addRmsNorm(x: Tensor, residual: Tensor, weight: Weight, eps: number): Tensor {
    const a = x as CudaTensor;
    const r = residual as CudaTensor;
    if (a.numel !== r.numel) throw new RangeError(`addRmsNorm: x has ${a.numel} values, residual ${r.numel}`);
    const out = this.tensor(r.shape);
    const w = this.vector(weight, r.cols, 'addRmsNorm');
    this.launch('norm.cu', 'add_rms_norm', [r.rows, 1, 1], rowThreads(r.cols), 'ppppif', [a.ptr, r.ptr, w, out.ptr, r.cols, eps]);
    return out;
  }

  headRmsNorm(x: Tensor, weight: Weight, headDim: number, eps: number): void {
    const t = x as CudaTensor;
    this.norm(t.ptr, t.ptr, this.vector(weight, headDim, 'headRmsNorm'), t.numel / headDim, headDim, eps);
  }

  private norm(src: DevicePtr, dst: DevicePtr, w: DevicePtr, rows: number, cols: number, eps: number): void {
    this.launch('norm.cu', 'rms_norm', [rows, 1, 1], rowThreads(cols), 'pppif', [src, w, dst, cols, eps]);
  }

  /** A float32 vector weight of `n` values (norm weights and biases are held as f32). */
  private vector(weight: Weight, n: number, op: string): DevicePtr {
    const w = this.dense(weight);
    if (w.dtype !== 'f32' || w.numel !== n) throw new RangeError(`${op}: expected a float32 vector of ${n} values, got ${w.dtype} [${w.shape.join(', ')}]`);
    return w.ptr;
  }

  linear(x: Tensor, weight: Weight, bias?: Weight): Tensor {
    const src = x as CudaTensor;
    const W = this.dense(weight);
    const [N, K] = W.shape;
    if (src.cols !== K) throw new Error(`linear: input has ${src.cols} columns, weight expects ${K}`);
    const T = src.rows;
    const out = this.tensor([T, N]);
    const b = bias ? this.vector(bias, N, 'linear bias') : 0;
    const args = [W.ptr, src.ptr, b, out.ptr, T, N, K];
    if (T <= GEMV_MAX_T) {
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
   * y[T, N] = x · Wᵀ (+ bias) for many tokens (prefill), W a dense [N, K] matrix on the device in
   * `dtype`. Quantized weights come here after dequantising into a bf16 scratch matrix.
   */
  private matmul(x: CudaTensor, w: DevicePtr, dtype: DeviceDtype, N: number, K: number, bias: DevicePtr, out = this.tensor([x.rows, N])): CudaTensor {
    const T = x.rows;
    this.launch('linear.cu', `gemm_tiled_${dtype}`, [Math.ceil(N / TILE), Math.ceil(T / TILE), 1], 256, 'ppppiii', [w, x.ptr, bias, out.ptr, T, N, K]);
    return out;
  }

  rope(x: Tensor, headDim: number, rotaryDim: number, cos: Float32Array, sin: Float32Array): void {
    const t = x as CudaTensor;
    const half = rotaryDim / 2;
    if (cos.length < t.rows * half || sin.length < t.rows * half) throw new RangeError(`rope: cos/sin hold ${cos.length}/${sin.length} values, need ${t.rows * half}`);
    const c = this.uploads.get('rope.cos', cos);
    const s = this.uploads.get('rope.sin', sin);
    this.launch('elementwise.cu', 'rope', [t.rows, 1, 1], 128, 'pppiii', [t.ptr, c, s, t.cols, headDim, half]);
  }

  siluMul(gate: Tensor, up: Tensor): Tensor {
    const g = gate as CudaTensor;
    const u = up as CudaTensor;
    if (g.numel !== u.numel) throw new RangeError(`siluMul: gate has ${g.numel} values, up ${u.numel}`);
    const out = this.tensor(g.shape);
    this.launch('elementwise.cu', 'silu_mul', this.gridFor(g.numel), 256, 'pppl', [g.ptr, u.ptr, out.ptr, g.numel]);
    return out;
  }

  addInPlace(a: Tensor, b: Tensor): void {
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

  // ---- KV cache and attention ----------------------------------------------------------------

  allocKvCache(spec: KvCacheSpec): KvCacheStorage {
    const floats = spec.numLayers * spec.numBlocks * spec.blockSize * spec.numKvHeads * spec.headDim;
    const k = this.ownedAlloc(floats * 4);
    const v = this.ownedAlloc(floats * 4);
    const cache = new CudaKvCache(spec, k, v);
    this.owned.register(cache, k);
    this.owned.register(cache, v);
    this.kvBytesOnDevice += cache.bytes;
    // Zeroed like the CPU's, so a stray read of an unwritten slot is at least finite.
    this.driver.fill32(k, 0, floats);
    this.driver.fill32(v, 0, floats);
    return cache;
  }

  writeKv(cache: KvCacheStorage, layer: number, k: Tensor, v: Tensor, slots: Int32Array): void {
    const c = cache as CudaKvCache;
    const kt = k as CudaTensor;
    const vt = v as CudaTensor;
    const width = c.spec.numKvHeads * c.spec.headDim;
    if (kt.numel !== slots.length * width || vt.numel !== slots.length * width) throw new RangeError(`writeKv: k/v must be [${slots.length}, ${width}]`);
    if (slots.length === 0) return;
    const s = this.uploads.get('slots', slots);
    const off = layer * c.layerFloats * 4;
    this.launch('kv-cache.cu', 'write_kv', [slots.length, 1, 1], rowThreads(width), 'pppppi', [c.k + off, c.v + off, kt.ptr, vt.ptr, s, width]);
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
    const positions = this.uploads.get('positions', batch.positions);
    const seqIndex = this.uploads.get('seqIndex', batch.seqIndex);
    const tables = this.uploads.get('blockTables', batch.blockTables);
    const off = layer * c.layerFloats * 4;
    this.launch('attention.cu', 'paged_attention', [batch.numTokens, numHeads, 1], ATTN_THREADS, 'pppppppiiiiifi', [
      qt.ptr, c.k + off, c.v + off, out.ptr, positions, seqIndex, tables,
      batch.maxBlocksPerSeq, blockSize, numHeads, numKvHeads, headDim, scale, window,
    ]);
    return out;
  }

  copyKvBlocks(cache: KvCacheStorage, pairs: Array<[number, number]>): void {
    const c = cache as CudaKvCache;
    const blockFloats = c.spec.blockSize * c.spec.numKvHeads * c.spec.headDim;
    // One launch per pair, in order, so chains (a → b, b → c) behave as the CPU's sequential copies.
    for (const [src, dst] of pairs) {
      this.launch('kv-cache.cu', 'copy_kv_block', [c.spec.numLayers, 2, 1], 256, 'ppllii', [c.k, c.v, c.layerFloats, blockFloats, src, dst]);
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
