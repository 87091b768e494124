// The small, fixed set of operations LLM inference needs. A model is written once against this
// interface; the CPU backend is the reference implementation and the CUDA backend the fast one.

import { GREEDY_TEMPERATURE_EPS, type Logprobs, type PenaltyRow } from '../engine/sampler.js';
import type { HostTensor } from '../model/load/safetensors.js';
import type { QuantizedWeight } from '../quant/format.js';
import type { QuantizationMethod } from '../quant/online.js';

/** An activation living on the backend (float32 on the CPU). Row-major, first dim = tokens. */
export interface Tensor {
  readonly shape: readonly number[];
}

/**
 * A weight in one of the canonical formats. Quantized formats (fp8, int8, int4, nvfp4) join this
 * union; `linear` dispatches on `format`.
 */
export interface Weight {
  readonly format: string;
  /** [rows, cols] for matrices (nn.Linear layout [out, in]); [n] for vectors. */
  readonly shape: readonly number[];
  /** Bytes this weight occupies on the backend, for memory reports. */
  readonly bytes: number;
}

/**
 * Element type of the KV cache: float32 (the CPU backend's default, the reference), bf16 (the CUDA
 * backend's default, as vLLM's `--kv-cache-dtype auto` keeps K and V in the model's dtype: half the
 * memory, so twice the tokens, and half the bytes attention reads) or fp8 (E4M3 with a scale of 1,
 * as vLLM's `fp8` without calibrated scales: a quarter of float32's bytes; values beyond ±448
 * saturate). K and V are rounded to nearest even once, when written, and widened exactly when read.
 */
export type KvDtype = 'float32' | 'bf16' | 'fp8';
export const KV_DTYPES: readonly KvDtype[] = ['float32', 'bf16', 'fp8'];
export const KV_DTYPE_BYTES: Record<KvDtype, number> = { float32: 4, bf16: 2, fp8: 1 };

/** Layout of the paged KV cache: blocks of `blockSize` token slots, per layer a K and a V store. */
export interface KvCacheSpec {
  numLayers: number;
  numBlocks: number;
  blockSize: number;
  numKvHeads: number;
  headDim: number;
  /** Element type; the backend's `kvDtype` when omitted. */
  dtype?: KvDtype;
  /**
   * Per layer, the calibrated FP8 scales of a quantized checkpoint (`k_scale`, `v_scale`): an fp8
   * cache stores e4m3(x / scale) and reads code · scale. Omitted: 1. Other element types ignore them.
   */
  scales?: readonly KvScales[];
}

/** One layer's FP8 KV cache scales. */
export interface KvScales {
  k: number;
  v: number;
}

/** The scales a cache of this spec and element type applies to `layer` (1 unless fp8 with scales). */
export function kvScalesOf(spec: KvCacheSpec, dtype: KvDtype, layer: number): KvScales {
  return (dtype === 'fp8' && spec.scales?.[layer]) || { k: 1, v: 1 };
}

export interface KvCacheStorage {
  readonly spec: KvCacheSpec;
  /** The element type the cache was allocated with (its spec's, else the backend's). */
  readonly dtype: KvDtype;
  readonly bytes: number;
}

/**
 * Everything attention needs to know about one flattened step: each token's sequence, position and
 * KV slot, and each sequence's block table. A token at position p attends to positions 0..p of its
 * own sequence (all already written to the cache), or the last `window` of them.
 */
export interface AttentionBatch {
  numTokens: number;
  numSeqs: number;
  /** Per token. */
  positions: Int32Array;
  seqIndex: Int32Array;
  slots: Int32Array;
  /** [numSeqs × maxBlocksPerSeq] physical block ids, -1 where unused. */
  blockTables: Int32Array;
  maxBlocksPerSeq: number;
}

/**
 * A random weight at a real model's shape (`--load-format dummy`: speed and memory at scale with no
 * download). `method` set: laid out exactly as `loadQuantized(quantizeWeight(method, …))` would be.
 */
export interface RandomWeightSpec {
  /** [rows, cols] (nn.Linear [out, in]) or [n] for vectors. */
  shape: readonly number[];
  /** The checkpoint dtype a dense weight pretends to have. */
  dtype: 'bf16' | 'f16' | 'f32';
  method?: QuantizationMethod;
  seed: number;
  /** Values uniform in [-scale, scale) (dense) or the dequantised magnitude (quantized). */
  scale: number;
}

/** One logit row's draw for Backend.sampleRows: a request's knobs (no penalties) and its uniform number. */
export interface GpuSamplingRow {
  /** Below GREEDY_TEMPERATURE_EPS (engine/sampler.ts) the row takes its argmax and u is unused. */
  temperature: number;
  /** 0 or -1: off. */
  topK: number;
  /** 1: off. */
  topP: number;
  /** 0: off. */
  minP: number;
  /** Uniform in [0, 1), drawn by the caller from the request's Rng (rng.next(), as Sampler.sample draws it). */
  u: number;
  /**
   * Residual mode (speculative verification of a deterministic draft x): the draw is from the row's
   * final distribution p with x's entry removed (drawResidual in engine/sampler.ts), and sampleRows
   * also returns p(x). Absent: the plain draw. Any id >= 0 (one outside the n ids has p(x) = 0).
   */
  exclude?: number;
  /**
   * A row of sampleRows' `dist` tensor (sampled drafts, whose distribution stays on the device). With
   * `exclude`: that row is the draft's distribution q, and the row draws from the residual
   * max(0, p − q) (drawResidualOf in engine/sampler.ts) and returns p(x). Without: the row draws from
   * its own float32 probabilities p as a draft model's sampler does (drawDistribution), writes them to
   * that row of dist (its first n values) and returns p(token drawn) where excludedProbs takes a row's
   * value. Sampled rows only (temperature ≥ GREEDY_TEMPERATURE_EPS): a greedy draft has no q.
   */
  distRow?: number;
}

export interface Backend {
  readonly name: string;

  /** Take a float weight (F32/F16/BF16 on disk) into the backend's canonical dense format. */
  loadDense(name: string, tensor: HostTensor): Weight;
  /** Take a weight already in a canonical quantized format (fp8, int8, int4, nvfp4). */
  loadQuantized(name: string, weight: QuantizedWeight): Weight;
  /**
   * Make a random weight directly on the backend (the CUDA backend fills device memory, so a 70B model
   * needs no host copy). Absent: the loader builds it on the host and calls loadDense/loadQuantized.
   */
  randomWeight?(name: string, spec: RandomWeightSpec): Weight;
  /** Bring a backend weight back as float32 (tests, tied embeddings, quantizers). */
  weightToHost(w: Weight): Float32Array;

  fromHost(data: Float32Array, shape: readonly number[]): Tensor;
  /**
   * Optional: an activation of this shape with unspecified contents, for a kernel to fill (no host
   * upload; valid for the step, as every activation). Without it, fromHost of zeros serves.
   */
  emptyTensor?(shape: readonly number[]): Tensor;
  toHost(t: Tensor): Float32Array;

  /** Rows of `table` [vocab, hidden] for each id → [T, hidden]. */
  embedding(table: Weight, ids: Int32Array): Tensor;
  /** x · rsqrt(mean(x²) + eps) · weight, per row. `readers`: see NormReaders (default 'any'). */
  rmsNorm(x: Tensor, weight: Weight, eps: number, readers?: NormReaders): Tensor;
  /** residual += x (in place), then returns rmsNorm(residual). The pre-norm block's fused step. */
  addRmsNorm(x: Tensor, residual: Tensor, weight: Weight, eps: number, readers?: NormReaders): Tensor;
  /** RMSNorm over each head's `headDim` slice, in place (Qwen3 q/k norm). */
  headRmsNorm(x: Tensor, weight: Weight, headDim: number, eps: number): void;
  /** y = x · Wᵀ (+ bias): [T, in] → [T, out]. */
  linear(x: Tensor, w: Weight, bias?: Weight): Tensor;
  /**
   * Optional: residual += x · Wᵀ in place (no bias), where the backend adds inside the GEMM (the CUDA
   * backend's prefill GEMMs read the residual as cuBLASLt's C), returning true; false, having done
   * nothing, where it does not. Call it through `linearAddRmsNorm` below.
   */
  linearAdd?(x: Tensor, w: Weight, residual: Tensor): boolean;
  /**
   * Optional: residual += mlp(x, gate, up, down) in place (no biases), the add inside the down GEMM,
   * returning true; false, having done nothing, where the backend does not. Call it through `mlpAdd`.
   */
  mlpAdd?(x: Tensor, gate: Weight, up: Weight, down: Weight, residual: Tensor): boolean;
  /**
   * Several linears of the same input (q, k, v): `linear(x, weights[i], biases?.[i])` for each i, in
   * one launch where the backend can. Optional; must equal the separate linears bitwise (call it
   * through `linearMany(backend, …)` below, which falls back to them).
   */
  linearMany?(x: Tensor, weights: readonly Weight[], biases?: readonly (Weight | undefined)[]): Tensor[];
  /**
   * silu(x·gateᵀ + gateBias) · (x·upᵀ + upBias) in one pass where the backend can, without the two
   * intermediate tensors. Optional; must equal siluMul(linear(x, gate, gateBias), linear(x, up, upBias))
   * bitwise (call it through `linearSiluMul(backend, …)` below).
   */
  linearSiluMul?(x: Tensor, gate: Weight, up: Weight, gateBias?: Weight, upBias?: Weight): Tensor;
  /**
   * The MLP: linear(linearSiluMul(x, gate, up, gateBias, upBias), down, downBias), where the backend
   * may keep the intermediate in a narrower type than its activations (the CUDA backend's prefill
   * holds it in bf16, which the down GEMM reads anyway). Optional; call it through `mlp(backend, …)`.
   */
  mlp?(x: Tensor, gate: Weight, up: Weight, down: Weight, biases?: MlpBiases): Tensor;
  /** Rotate-half RoPE in place on the first rotaryDim dims of every head, token t by its row of `rope` (rows of rotaryDim/2). */
  rope(x: Tensor, headDim: number, rotaryDim: number, rope: RopeRows): void;
  /** silu(gate) · up, elementwise. */
  siluMul(gate: Tensor, up: Tensor): Tensor;
  /**
   * Optional: per row of x [rows, cols], the index of the largest of the first n values (ties to the
   * lowest index, NaN never wins, -1 when none is above -inf), so greedy sampling reads back one id
   * a row instead of the logits. Without it the model reads the logits back and scans them on the host.
   */
  argmaxRows?(x: Tensor, n: number): Int32Array;
  /**
   * Optional: per row of x [rows, cols], the token drawn over its first n ids with `rows[r]`'s
   * temperature, min-p, top-k, top-p and uniform u: exactly what the host sampler (drawToken in
   * engine/sampler.ts, penalties aside) draws with that u, so a sampled step reads back one id a row
   * instead of the logits. Throws the sampler's ALL_MASKED error for a row whose every value is -inf
   * or NaN. See checkSamplingRows for the arguments' rules. A row with `exclude` draws what drawResidual
   * draws, and `excludedProbs[r]` (when given, one value per row) receives its p(exclude) as
   * drawResidual computes it (0 for rows without `exclude`): one more value a row read back. Rows with
   * `distRow` read or write that row of `dist` ([rows, ≥ n] float32, on this backend; see
   * GpuSamplingRow.distRow), and their excludedProbs value is p(exclude) or p(token drawn).
   */
  sampleRows?(x: Tensor, n: number, rows: readonly GpuSamplingRow[], excludedProbs?: Float32Array, dist?: Tensor): Int32Array;
  /**
   * Token logprobs of logit rows (one LogprobRow per row of x, each over its first n values): what
   * computeLogprobs (engine/sampler.ts) gives for the row's raw logits — the token's log-softmax, its
   * rank and the topN best — without the logits leaving the device. Optional; rows may ask at most
   * `maxTopLogprobs` alternatives. Throws ALL_MASKED for a row whose every value is -inf or NaN.
   */
  logprobRows?(x: Tensor, n: number, rows: readonly LogprobRow[]): Logprobs[];
  /** The most alternatives logprobRows returns a row. */
  readonly maxTopLogprobs?: number;
  /**
   * A copy of logit rows x with each row's penalties applied (rows[r] undefined: row r as it is), as
   * applyPenaltyRow (engine/sampler.ts) applies them, bit for bit; x is unchanged (its raw logits
   * still serve logprobs). Optional: without it the forward applies them on the host.
   */
  applyPenalties?(x: Tensor, rows: readonly (PenaltyRow | undefined)[]): Tensor;
  /** a += b, in place. */
  addInPlace(a: Tensor, b: Tensor): void;
  /** Rows `rows` of x → [rows.length, ...]. */
  selectRows(x: Tensor, rows: Int32Array): Tensor;
  /**
   * Optional: x [rows, cols] → [rows, columns.length], out[r][j] = x[r][columns[j]], or `fill` where
   * columns[j] is -1 (each other entry a column of x): a row's values moved to other ids.
   */
  gatherColumns?(x: Tensor, columns: Int32Array, fill: number): Tensor;

  /** The element type allocKvCache gives a cache whose spec names none (set when the backend is made). */
  readonly kvDtype: KvDtype;
  allocKvCache(spec: KvCacheSpec): KvCacheStorage;
  /** Store this step's k, v ([T, kvHeads·headDim]) at each token's slot. */
  writeKv(cache: KvCacheStorage, layer: number, k: Tensor, v: Tensor, slots: Int32Array): void;
  /**
   * rope(q), rope(k), then writeKv(cache, layer, k, v, slots), in one launch where the backend can.
   * Optional; must equal the separate ops bitwise, q and k included (call it through
   * `ropeWriteKv(backend, …)` below, which falls back to them).
   */
  ropeWriteKv?(q: Tensor, k: Tensor, v: Tensor, headDim: number, rotaryDim: number, rope: RopeRows, cache: KvCacheStorage, layer: number, slots: Int32Array): void;
  /** Causal attention of q ([T, heads·headDim]) over each token's own sequence in the cache. */
  attention(q: Tensor, cache: KvCacheStorage, layer: number, batch: AttentionBatch, scale: number, window: number): Tensor;
  /**
   * The caller will not use these activations again: a backend that recycles memory may reuse theirs
   * now rather than when the step ends (a 70B prefill step's activations would not fit otherwise).
   * Using a released tensor afterwards is a bug the CUDA backend reports.
   */
  release?(...tensors: Tensor[]): void;
  /** Free what this backend allocated now (LLM.close); nothing it made may be used afterwards. */
  dispose?(): void;
  /**
   * Optional: run `step` (a forward pass's ops) so the backend may record it and replay it as one
   * launch the next time a step under the same `key` comes (the CUDA backend's graphs). Must return
   * exactly what `step()` would; `numTokens` lets the backend leave large steps eager. The key names
   * the step's shape (which recording to compare with); the backend checks every op against it.
   */
  replayable?<T>(key: string, numTokens: number, step: () => T): T;
  /** Copy whole KV blocks (prefix sharing, forks). */
  copyKvBlocks?(cache: KvCacheStorage, pairs: Array<[number, number]>): void;
}

/** q/k/v-style linears of one input: the backend's fused op where it has one, else one linear each. */
export function linearMany(backend: Backend, x: Tensor, weights: readonly Weight[], biases?: readonly (Weight | undefined)[]): Tensor[] {
  if (backend.linearMany) return backend.linearMany(x, weights, biases);
  return weights.map((w, i) => backend.linear(x, w, biases?.[i]));
}

/** The MLP's silu(gate) · up: the backend's fused op where it has one, else linear, linear, siluMul. */
export function linearSiluMul(backend: Backend, x: Tensor, gate: Weight, up: Weight, gateBias?: Weight, upBias?: Weight): Tensor {
  if (backend.linearSiluMul) return backend.linearSiluMul(x, gate, up, gateBias, upBias);
  const g = backend.linear(x, gate, gateBias);
  const u = backend.linear(x, up, upBias);
  const out = backend.siluMul(g, u);
  backend.release?.(g, u);
  return out;
}

/**
 * What reads a norm's result. 'any' (the default): anything. 'linears': only linear, linearMany,
 * linearSiluMul, mlp and mlpAdd (and toHost), before the next in-place op on any tensor — so a
 * backend may keep the result only in the form those read (the CUDA backend's prefill norms write
 * the GEMMs' bf16 or E4M3 input and make the float32 rows only if something asks for them).
 */
export type NormReaders = 'any' | 'linears';

/**
 * residual += x · Wᵀ + bias, then rmsNorm(residual): the pre-norm block's step after the attention's
 * o projection. The add inside the GEMM where the backend can (linearAdd), else linear + addRmsNorm.
 */
export function linearAddRmsNorm(
  backend: Backend, x: Tensor, w: Weight, bias: Weight | undefined, residual: Tensor, norm: Weight, eps: number, readers?: NormReaders,
): Tensor {
  if (!bias && backend.linearAdd?.(x, w, residual)) return backend.rmsNorm(residual, norm, eps, readers);
  const y = backend.linear(x, w, bias);
  const out = backend.addRmsNorm(y, residual, norm, eps, readers);
  backend.release?.(y);
  return out;
}

/**
 * residual += mlp(x, …) where the backend adds inside the down GEMM (mlpAdd): returns undefined.
 * Otherwise the MLP's output, for the caller to add to the residual (usually by the next addRmsNorm).
 */
export function mlpAdd(backend: Backend, x: Tensor, gate: Weight, up: Weight, down: Weight, biases: MlpBiases, residual: Tensor): Tensor | undefined {
  if (!biases.gate && !biases.up && !biases.down && backend.mlpAdd?.(x, gate, up, down, residual)) return undefined;
  return mlp(backend, x, gate, up, down, biases);
}

/** The optional biases of an MLP's three linears. */
export interface MlpBiases {
  gate?: Weight;
  up?: Weight;
  down?: Weight;
}

/** The MLP through the backend's `mlp` where it has one, else linearSiluMul then the down linear. */
export function mlp(backend: Backend, x: Tensor, gate: Weight, up: Weight, down: Weight, biases: MlpBiases = {}): Tensor {
  if (backend.mlp) return backend.mlp(x, gate, up, down, biases);
  return mlpByLinears(backend, x, gate, up, down, biases);
}

/** linearSiluMul, the down linear, the intermediate released: what `mlp` means. */
export function mlpByLinears(backend: Backend, x: Tensor, gate: Weight, up: Weight, down: Weight, biases: MlpBiases = {}): Tensor {
  const act = linearSiluMul(backend, x, gate, up, biases.gate, biases.up);
  const y = backend.linear(act, down, biases.down);
  backend.release?.(act);
  return y;
}

/**
 * RoPE's cos and sin for a step's tokens, rows of rotaryDim/2 values: token t rotates by row
 * `index[t]` of `cos` and `sin`, or by row t where there is no index. With an index the arrays are a
 * RopeTable's rows by position (model/rope.ts), which are never changed once made: a backend may keep
 * its device copy of them by the arrays' identity, so a step sends only its positions.
 */
export interface RopeRows {
  readonly cos: Float32Array;
  readonly sin: Float32Array;
  readonly index?: Int32Array;
}

/**
 * Checks `rope` against `tokens` tokens of `half` pairs (rotaryDim/2): a row for every token, every
 * index within the tables. Returns the number of rows the tables hold.
 */
export function checkRopeRows(op: string, rope: RopeRows, tokens: number, half: number): number {
  const rows = Math.floor(Math.min(rope.cos.length, rope.sin.length) / half);
  if (!rope.index) {
    if (rows < tokens) throw new RangeError(`${op}: cos/sin hold ${rope.cos.length}/${rope.sin.length} values, need ${tokens * half}`);
    return rows;
  }
  const index = rope.index;
  if (index.length < tokens) throw new RangeError(`${op}: the RoPE index has ${index.length} rows for ${tokens} tokens`);
  for (let t = 0; t < tokens; t++) {
    const r = index[t];
    if (!(r >= 0 && r < rows)) throw new RangeError(`${op}: token ${t} takes RoPE row ${r}, the tables hold ${rows}`);
  }
  return rows;
}

/** Rotate q and k in place and store k and v at `slots`: the backend's fused op where it has one, else rope, rope, writeKv. */
export function ropeWriteKv(
  backend: Backend, q: Tensor, k: Tensor, v: Tensor, headDim: number, rotaryDim: number,
  rope: RopeRows, cache: KvCacheStorage, layer: number, slots: Int32Array,
): void {
  if (backend.ropeWriteKv) return backend.ropeWriteKv(q, k, v, headDim, rotaryDim, rope, cache, layer, slots);
  backend.rope(q, headDim, rotaryDim, rope);
  backend.rope(k, headDim, rotaryDim, rope);
  backend.writeKv(cache, layer, k, v, slots);
}

/** One logit row's logprobs question for Backend.logprobRows. */
export interface LogprobRow {
  /** The id whose logprob and rank are asked (usually the token just drawn), in 0..n-1. */
  token: number;
  /** Alternatives to return, best first. */
  topN: number;
}

/** logprobRows' arguments, checked the same way on every backend. */
export function checkLogprobRows(xRows: number, cols: number, n: number, rows: readonly LogprobRow[], maxTop: number): void {
  if (rows.length !== xRows) throw new RangeError(`logprobRows: ${rows.length} rows for ${xRows} logit rows`);
  if (!(Number.isInteger(n) && n >= 1 && n <= cols)) throw new RangeError(`logprobRows: n must be in 1..${cols}, got ${n}`);
  rows.forEach((r, i) => {
    if (!(Number.isInteger(r.token) && r.token >= 0 && r.token < n)) throw new RangeError(`logprobRows: row ${i}: token id ${r.token} is outside the vocabulary of ${n}`);
    if (!(Number.isInteger(r.topN) && r.topN >= 0 && r.topN <= maxTop)) throw new RangeError(`logprobRows: row ${i}: topN must be an integer in 0..${maxTop}, got ${r.topN}`);
  });
}

/** An activation for a kernel to fill: Backend.emptyTensor where the backend has it, else zeros. */
export function emptyTensor(backend: Backend, shape: readonly number[]): Tensor {
  return backend.emptyTensor ? backend.emptyTensor(shape) : backend.fromHost(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
}

/** gatherColumns' arguments, checked the same way on every backend: each column -1 or one of x's. */
export function checkGatherColumns(cols: number, columns: Int32Array): void {
  for (let j = 0; j < columns.length; j++) {
    const c = columns[j];
    if (!(c === -1 || (c >= 0 && c < cols))) throw new RangeError(`gatherColumns: column ${j} takes column ${c} of ${cols} (each must be -1 or a column of x)`);
  }
}

/**
 * The arguments every sampleRows takes, checked the same way on every backend: one GpuSamplingRow per
 * row of x ([xRows, cols]), n in 1..cols, and each row's knobs within what a request may ask
 * (sampling-params.ts) with u in [0, 1), `exclude` (if any) a non-negative int32; excludedProbs (if
 * given) one value a row; `distRow` (if any) a row of `dist` (given, 2-D, at least n columns) on a
 * sampled row, and no two rows writing the same one.
 */
export function checkSamplingRows(xRows: number, cols: number, n: number, rows: readonly GpuSamplingRow[], excludedProbs?: Float32Array, dist?: Tensor): void {
  if (rows.length !== xRows) throw new RangeError(`sampleRows: ${rows.length} sampling rows for ${xRows} logit rows`);
  if (excludedProbs && excludedProbs.length !== xRows) throw new RangeError(`sampleRows: excludedProbs has ${excludedProbs.length} values for ${xRows} logit rows`);
  if (!(Number.isInteger(n) && n >= 1 && n <= cols)) throw new RangeError(`sampleRows: n must be in 1..${cols}, got ${n}`);
  rows.forEach((r, i) => {
    const bad = (what: string, v: number) => new RangeError(`sampleRows: row ${i}: ${what}, got ${v}`);
    if (!(Number.isFinite(r.temperature) && r.temperature >= 0)) throw bad('temperature must be finite and >= 0', r.temperature);
    if (!(Number.isInteger(r.topK) && r.topK >= -1)) throw bad('topK must be an integer >= -1', r.topK);
    if (!(r.topP > 0 && r.topP <= 1)) throw bad('topP must be in (0, 1]', r.topP);
    if (!(r.minP >= 0 && r.minP <= 1)) throw bad('minP must be in [0, 1]', r.minP);
    if (!(r.u >= 0 && r.u < 1)) throw bad('u must be in [0, 1)', r.u);
    if (r.exclude !== undefined && !(Number.isInteger(r.exclude) && r.exclude >= 0 && r.exclude <= 0x7fffffff)) throw bad('exclude must be a token id (an integer in 0..2^31-1)', r.exclude);
  });
  if (!rows.some((r) => r.distRow !== undefined)) return;
  if (!dist) throw new RangeError('sampleRows: rows with distRow need the dist tensor');
  if (dist.shape.length !== 2 || dist.shape[1] < n) throw new RangeError(`sampleRows: dist must be [rows, >= ${n}] (n values a row), got [${dist.shape.join(', ')}]`);
  const written = new Set<number>();
  rows.forEach((r, i) => {
    if (r.distRow === undefined) return;
    if (!(Number.isInteger(r.distRow) && r.distRow >= 0 && r.distRow < dist.shape[0])) throw new RangeError(`sampleRows: row ${i}: distRow must be a row of dist (0..${dist.shape[0] - 1}), got ${r.distRow}`);
    if (r.temperature < GREEDY_TEMPERATURE_EPS) throw new RangeError(`sampleRows: row ${i}: distRow on a greedy row (temperature ${r.temperature}): a greedy draft has no distribution`);
    if (r.exclude !== undefined) return;
    if (written.has(r.distRow)) throw new RangeError(`sampleRows: row ${i}: dist row ${r.distRow} is written by two rows`);
    written.add(r.distRow);
  });
}
