// The reference backend: plain TypeScript over Float32Arrays, computing in float32 (f64 where a
// sum could lose precision). Every faster backend is tested against it.

import { checkGatherColumns, checkRopeRows, checkSamplingRows, KV_DTYPE_BYTES, kvScalesOf, type AttentionBatch, type Backend, type GpuSamplingRow, type KvCacheSpec, type KvCacheStorage, type KvDtype, type RopeRows, type Tensor, type Weight } from '../backend.js';
import type { HostTensor } from '../../model/load/safetensors.js';
import { bf16ToF32, f32ToBf16, toFloat32 } from '../../model/load/dtype.js';
import { E4M3_VALUES, encodeE4m3 } from '../../quant/fp8-e4m3.js';
import { dequantize, linearQuantized, type QuantizedWeight } from '../../quant/format.js';
import { applyPenaltyRows, drawSamplingRow, type PenaltyRow } from '../../engine/sampler.js';

export class CpuTensor implements Tensor {
  constructor(
    readonly data: Float32Array,
    readonly shape: readonly number[],
  ) {}
  get rows(): number {
    return this.shape[0];
  }
  get cols(): number {
    return this.shape.slice(1).reduce((a, b) => a * b, 1);
  }
}

/** A float weight, held as float32; `format` is the checkpoint's dtype (bf16, f16, f32). */
export class CpuDenseWeight implements Weight {
  constructor(
    readonly data: Float32Array,
    readonly shape: readonly number[],
    /** Bytes the checkpoint stored (what a GPU backend would hold), not our float32 copy. */
    readonly bytes: number,
    readonly format: string = 'f32',
  ) {}
}

/** A weight kept in its packed quantized form; linear dequantizes a row at a time. */
export class CpuQuantizedWeight implements Weight {
  readonly format: string;
  readonly shape: readonly number[];
  readonly bytes: number;
  constructor(readonly q: QuantizedWeight) {
    this.format = q.format;
    this.shape = [q.rows, q.cols];
    this.bytes = q.bytes;
  }
}

/** A layer's K or V store: float32 values, bf16 bit patterns or E4M3 codes (rounded to nearest even when written). */
type KvStore = Float32Array | Uint16Array | Uint8Array;

/** Per layer a K and a V store of the cache's element type. */
class CpuKvCache implements KvCacheStorage {
  readonly k: KvStore[];
  readonly v: KvStore[];
  readonly bytes: number;
  constructor(
    readonly spec: KvCacheSpec,
    readonly dtype: KvDtype,
  ) {
    const perLayer = spec.numBlocks * spec.blockSize * spec.numKvHeads * spec.headDim;
    const store = () => (dtype === 'bf16' ? new Uint16Array(perLayer) : dtype === 'fp8' ? new Uint8Array(perLayer) : new Float32Array(perLayer));
    this.k = Array.from({ length: spec.numLayers }, store);
    this.v = Array.from({ length: spec.numLayers }, store);
    this.bytes = 2 * spec.numLayers * perLayer * KV_DTYPE_BYTES[dtype];
  }
}

/** float32 values of every bf16 bit pattern: reading a bf16 KV store is one lookup an element. */
const BF16_VALUES = (() => {
  const t = new Float32Array(65536);
  for (let b = 0; b < 65536; b++) t[b] = bf16ToF32(b);
  return t;
})();

/** Store n values of `src` (from `from`) into a KV store at `to`, rounding to its element type (fp8: of x / scale). */
function storeKv(dst: KvStore, to: number, src: Float32Array, from: number, n: number, scale: number): void {
  if (dst instanceof Float32Array) dst.set(src.subarray(from, from + n), to);
  else if (dst instanceof Uint16Array) for (let i = 0; i < n; i++) dst[to + i] = f32ToBf16(src[from + i]);
  else if (scale === 1) for (let i = 0; i < n; i++) dst[to + i] = encodeE4m3(src[from + i]);
  else for (let i = 0; i < n; i++) dst[to + i] = encodeE4m3(Math.fround(src[from + i] / scale));
}

/**
 * Rows (headDim values at `off` within each slot's row) of a KV store, as float32, into `out` one
 * after another (fp8: code · scale, rounded to float32).
 */
function gatherKv(store: KvStore, slots: Int32Array, n: number, rowWidth: number, off: number, headDim: number, out: Float32Array, scale: number): void {
  const values = store instanceof Uint16Array ? BF16_VALUES : E4M3_VALUES;
  for (let j = 0; j < n; j++) {
    const at = slots[j] * rowWidth + off;
    if (store instanceof Float32Array) out.set(store.subarray(at, at + headDim), j * headDim);
    else if (scale === 1) for (let d = 0; d < headDim; d++) out[j * headDim + d] = values[store[at + d]];
    else for (let d = 0; d < headDim; d++) out[j * headDim + d] = Math.fround(values[store[at + d]] * scale);
  }
}

const t = (x: Tensor) => x as CpuTensor;
const w = (x: Weight) => x as CpuDenseWeight;

export interface CpuBackendOptions {
  /** KV cache element type (default float32: the CPU computes in float32 and is the reference). */
  kvDtype?: KvDtype;
}

export class CpuBackend implements Backend {
  readonly name = 'cpu';
  readonly kvDtype: KvDtype;

  constructor(options: CpuBackendOptions = {}) {
    this.kvDtype = options.kvDtype ?? 'float32';
  }

  loadDense(name: string, tensor: HostTensor): Weight {
    return new CpuDenseWeight(toFloat32(tensor, name), tensor.shape, tensor.bytes.byteLength, String(tensor.dtype).toLowerCase());
  }

  loadQuantized(_name: string, weight: QuantizedWeight): Weight {
    return new CpuQuantizedWeight(weight);
  }

  weightToHost(weight: Weight): Float32Array {
    return weight instanceof CpuQuantizedWeight ? dequantize(weight.q) : w(weight).data;
  }

  fromHost(data: Float32Array, shape: readonly number[]): Tensor {
    return new CpuTensor(data, shape);
  }

  toHost(x: Tensor): Float32Array {
    return t(x).data;
  }

  embedding(table: Weight, ids: Int32Array): Tensor {
    const tab = w(table);
    const hidden = tab.shape[1];
    const out = new Float32Array(ids.length * hidden);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id < 0 || id >= tab.shape[0]) throw new RangeError(`token id ${id} is outside the vocabulary (0..${tab.shape[0] - 1})`);
      out.set(tab.data.subarray(id * hidden, (id + 1) * hidden), i * hidden);
    }
    return new CpuTensor(out, [ids.length, hidden]);
  }

  rmsNorm(x: Tensor, weight: Weight, eps: number): Tensor {
    const src = t(x);
    const out = new Float32Array(src.data.length);
    normRows(src.data, out, w(weight).data, src.cols, eps);
    return new CpuTensor(out, src.shape);
  }

  addRmsNorm(x: Tensor, residual: Tensor, weight: Weight, eps: number): Tensor {
    this.addInPlace(residual, x);
    return this.rmsNorm(residual, weight, eps);
  }

  headRmsNorm(x: Tensor, weight: Weight, headDim: number, eps: number): void {
    const d = t(x).data;
    normRows(d, d, w(weight).data, headDim, eps);
  }

  linear(x: Tensor, weight: Weight, bias?: Weight): Tensor {
    const src = t(x);
    if (weight instanceof CpuQuantizedWeight) return this.linearPacked(src, weight, bias);
    const W = w(weight);
    const [outDim, inDim] = W.shape;
    if (src.cols !== inDim) throw new Error(`linear: input has ${src.cols} columns, weight expects ${inDim}`);
    const n = src.rows;
    const out = new Float32Array(n * outDim);
    const xs = src.data;
    const ws = W.data;
    const b = bias ? w(bias).data : undefined;
    // Row of W outermost, four tokens at a time: each weight element loaded serves four tokens
    // (scalar JS is compute-bound). Every output is the same two interleaved partial sums over k,
    // whichever path computes it, so a token's result never depends on its batch.
    const even = inDim - (inDim % 2);
    for (let o = 0; o < outDim; o++) {
      const wOff = o * inDim;
      const bias0 = b ? b[o] : 0;
      const wLast = even < inDim ? ws[wOff + even] : 0;
      let r = 0;
      for (; r + 3 < n; r += 4) {
        const xa = r * inDim, xb = xa + inDim, xc = xb + inDim, xd = xc + inDim;
        let a0 = 0, a1 = 0, b0 = 0, b1 = 0, c0 = 0, c1 = 0, d0 = 0, d1 = 0;
        for (let k = 0; k < even; k += 2) {
          const w0 = ws[wOff + k], w1 = ws[wOff + k + 1];
          a0 += xs[xa + k] * w0;
          a1 += xs[xa + k + 1] * w1;
          b0 += xs[xb + k] * w0;
          b1 += xs[xb + k + 1] * w1;
          c0 += xs[xc + k] * w0;
          c1 += xs[xc + k + 1] * w1;
          d0 += xs[xd + k] * w0;
          d1 += xs[xd + k + 1] * w1;
        }
        if (even < inDim) {
          a0 += xs[xa + even] * wLast;
          b0 += xs[xb + even] * wLast;
          c0 += xs[xc + even] * wLast;
          d0 += xs[xd + even] * wLast;
        }
        out[r * outDim + o] = a0 + a1 + bias0;
        out[(r + 1) * outDim + o] = b0 + b1 + bias0;
        out[(r + 2) * outDim + o] = c0 + c1 + bias0;
        out[(r + 3) * outDim + o] = d0 + d1 + bias0;
      }
      for (; r < n; r++) {
        const xa = r * inDim;
        let a0 = 0, a1 = 0;
        for (let k = 0; k < even; k += 2) {
          a0 += xs[xa + k] * ws[wOff + k];
          a1 += xs[xa + k + 1] * ws[wOff + k + 1];
        }
        if (even < inDim) a0 += xs[xa + even] * wLast;
        out[r * outDim + o] = a0 + a1 + bias0;
      }
    }
    return new CpuTensor(out, [n, outDim]);
  }

  private linearPacked(src: CpuTensor, weight: CpuQuantizedWeight, bias?: Weight): Tensor {
    const { rows: outDim, cols: inDim } = weight.q;
    if (src.cols !== inDim) throw new Error(`linear: input has ${src.cols} columns, weight expects ${inDim}`);
    const out = linearQuantized(src.data, src.rows, weight.q);
    if (bias) {
      const b = w(bias).data;
      for (let r = 0; r < src.rows; r++) for (let o = 0; o < outDim; o++) out[r * outDim + o] += b[o];
    }
    return new CpuTensor(out, [src.rows, outDim]);
  }

  rope(x: Tensor, headDim: number, rotaryDim: number, rope: RopeRows): void {
    const src = t(x);
    const d = src.data;
    const half = rotaryDim / 2;
    const heads = src.cols / headDim;
    checkRopeRows('rope', rope, src.rows, half);
    const { cos, sin, index } = rope;
    for (let r = 0; r < src.rows; r++) {
      const row = (index ? index[r] : r) * half;
      for (let h = 0; h < heads; h++) {
        const base = r * src.cols + h * headDim;
        for (let i = 0; i < half; i++) {
          const c = cos[row + i];
          const s = sin[row + i];
          const x1 = d[base + i];
          const x2 = d[base + i + half];
          d[base + i] = x1 * c - x2 * s;
          d[base + i + half] = x2 * c + x1 * s;
        }
      }
    }
  }

  siluMul(gate: Tensor, up: Tensor): Tensor {
    const g = t(gate).data;
    const u = t(up).data;
    const out = new Float32Array(g.length);
    for (let i = 0; i < g.length; i++) out[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
    return new CpuTensor(out, t(gate).shape);
  }

  /** Backend.sampleRows through the host sampler's own pipeline (drawSamplingRow): the reference itself. */
  sampleRows(x: Tensor, n: number, rows: readonly GpuSamplingRow[], excludedProbs?: Float32Array, dist?: Tensor): Int32Array {
    const src = t(x);
    checkSamplingRows(src.rows, src.cols, n, rows, excludedProbs, dist);
    const d = dist && t(dist);
    const distRow = (r: GpuSamplingRow) => (r.distRow === undefined ? undefined : d!.data.subarray(r.distRow * d!.cols, r.distRow * d!.cols + n));
    return Int32Array.from(rows, (r, i) => {
      const { token, excludedProb } = drawSamplingRow(src.data.subarray(i * src.cols, i * src.cols + n), r, distRow(r));
      if (excludedProbs) excludedProbs[i] = excludedProb;
      return token;
    });
  }

  applyPenalties(x: Tensor, rows: readonly (PenaltyRow | undefined)[]): Tensor {
    const src = t(x);
    if (rows.length !== src.rows) throw new RangeError(`applyPenalties: ${rows.length} penalty rows for ${src.rows} logit rows`);
    const out = src.data.slice();
    applyPenaltyRows(out, src.cols, rows);
    return new CpuTensor(out, src.shape);
  }

  addInPlace(a: Tensor, b: Tensor): void {
    const x = t(a).data;
    const y = t(b).data;
    for (let i = 0; i < x.length; i++) x[i] += y[i];
  }

  selectRows(x: Tensor, rows: Int32Array): Tensor {
    const src = t(x);
    const cols = src.cols;
    const out = new Float32Array(rows.length * cols);
    for (let i = 0; i < rows.length; i++) out.set(src.data.subarray(rows[i] * cols, (rows[i] + 1) * cols), i * cols);
    return new CpuTensor(out, [rows.length, ...src.shape.slice(1)]);
  }

  gatherColumns(x: Tensor, columns: Int32Array, fill: number): Tensor {
    const src = t(x);
    checkGatherColumns(src.cols, columns);
    const w = columns.length;
    const out = new Float32Array(src.rows * w);
    for (let r = 0; r < src.rows; r++) {
      for (let j = 0; j < w; j++) out[r * w + j] = columns[j] < 0 ? fill : src.data[r * src.cols + columns[j]];
    }
    return new CpuTensor(out, [src.rows, w]);
  }

  allocKvCache(spec: KvCacheSpec): KvCacheStorage {
    return new CpuKvCache(spec, spec.dtype ?? this.kvDtype);
  }

  writeKv(cache: KvCacheStorage, layer: number, k: Tensor, v: Tensor, slots: Int32Array): void {
    const c = cache as CpuKvCache;
    const width = c.spec.numKvHeads * c.spec.headDim;
    const ks = t(k).data;
    const vs = t(v).data;
    const scales = kvScalesOf(c.spec, c.dtype, layer);
    for (let i = 0; i < slots.length; i++) {
      storeKv(c.k[layer], slots[i] * width, ks, i * width, width, scales.k);
      storeKv(c.v[layer], slots[i] * width, vs, i * width, width, scales.v);
    }
  }

  attention(q: Tensor, cache: KvCacheStorage, layer: number, batch: AttentionBatch, scale: number, window: number): Tensor {
    const c = cache as CpuKvCache;
    const { numKvHeads, headDim, blockSize } = c.spec;
    const qs = t(q).data;
    const numHeads = t(q).cols / headDim;
    const group = numHeads / numKvHeads;
    const kvWidth = numKvHeads * headDim;
    const scales = kvScalesOf(c.spec, c.dtype, layer);
    const out = new Float32Array(qs.length);
    const maxLen = batch.maxBlocksPerSeq * blockSize;
    const scores = new Float64Array(maxLen);
    const slotOf = new Int32Array(maxLen);
    // One KV head's visible rows, as float32, shared by the query heads of its group.
    const K = new Float32Array(maxLen * headDim);
    const V = new Float32Array(maxLen * headDim);
    for (let tok = 0; tok < batch.numTokens; tok++) {
      const pos = batch.positions[tok];
      const seq = batch.seqIndex[tok];
      const first = window > 0 ? Math.max(0, pos - window + 1) : 0;
      const n = pos - first + 1;
      for (let j = 0; j < n; j++) {
        const p = first + j;
        const block = batch.blockTables[seq * batch.maxBlocksPerSeq + Math.floor(p / blockSize)];
        slotOf[j] = block * blockSize + (p % blockSize);
      }
      for (let kvh = 0; kvh < numKvHeads; kvh++) {
        gatherKv(c.k[layer], slotOf, n, kvWidth, kvh * headDim, headDim, K, scales.k);
        gatherKv(c.v[layer], slotOf, n, kvWidth, kvh * headDim, headDim, V, scales.v);
        for (let h = kvh * group; h < (kvh + 1) * group; h++) {
          const qOff = tok * numHeads * headDim + h * headDim;
          let max = -Infinity;
          for (let j = 0; j < n; j++) {
            let s = 0;
            for (let d = 0; d < headDim; d++) s += qs[qOff + d] * K[j * headDim + d];
            s *= scale;
            scores[j] = s;
            if (s > max) max = s;
          }
          let sum = 0;
          for (let j = 0; j < n; j++) {
            scores[j] = Math.exp(scores[j] - max);
            sum += scores[j];
          }
          for (let d = 0; d < headDim; d++) {
            let acc = 0;
            for (let j = 0; j < n; j++) acc += scores[j] * V[j * headDim + d];
            out[qOff + d] = acc / sum;
          }
        }
      }
    }
    return new CpuTensor(out, t(q).shape);
  }

  copyKvBlocks(cache: KvCacheStorage, pairs: Array<[number, number]>): void {
    const c = cache as CpuKvCache;
    const blockFloats = c.spec.blockSize * c.spec.numKvHeads * c.spec.headDim;
    for (let l = 0; l < c.spec.numLayers; l++) {
      for (const [src, dst] of pairs) {
        c.k[l].copyWithin(dst * blockFloats, src * blockFloats, (src + 1) * blockFloats);
        c.v[l].copyWithin(dst * blockFloats, src * blockFloats, (src + 1) * blockFloats);
      }
    }
  }
}

/** RMSNorm over consecutive rows of length `width` (src and dst may alias). */
function normRows(src: Float32Array, dst: Float32Array, weight: Float32Array, width: number, eps: number): void {
  const rows = src.length / width;
  for (let r = 0; r < rows; r++) {
    const off = r * width;
    let ss = 0;
    for (let i = 0; i < width; i++) ss += src[off + i] * src[off + i];
    const inv = Math.fround(1 / Math.sqrt(Math.fround(ss / width) + eps));
    for (let i = 0; i < width; i++) dst[off + i] = Math.fround(src[off + i] * inv) * weight[i];
  }
}
