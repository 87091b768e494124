// Turns one sequence's logits into its next token on the CPU, with vLLM's penalties, temperature,
// min-p, top-k and top-p, and reports logprobs. The reference every GPU sampler is tested against.

import { Rng, randomSeed } from './rng.js';
import type { SamplingParams } from './sampling-params.js';

/** Temperatures below this sample greedily, as vLLM's _SAMPLING_EPS: dividing by ~0 would overflow. */
export const GREEDY_TEMPERATURE_EPS = 1e-5;

/**
 * Which tokens one sequence has seen: the prompt's distinct ids and how often each id occurs in the
 * output. The engine keeps one per sequence and calls `addOutput` per generated token, so applying
 * penalties costs O(distinct seen tokens) per step instead of recounting the whole history.
 */
export class TokenCounts {
  // id -> outputCount * 2 + (in prompt ? 1 : 0): one map, one lookup per token, and a token that
  // appears only in the prompt still counts as seen for the repetition penalty.
  private readonly seen = new Map<number, number>();

  constructor(promptIds: ArrayLike<number> = [], outputIds: ArrayLike<number> = []) {
    this.addPrompt(promptIds);
    for (let i = 0; i < outputIds.length; i++) this.addOutput(outputIds[i]);
  }

  /** Chunked prefill may hand the prompt over in pieces; order does not matter. */
  addPrompt(ids: ArrayLike<number>): void {
    for (let i = 0; i < ids.length; i++) {
      const id = checkId(ids[i]);
      this.seen.set(id, (this.seen.get(id) ?? 0) | 1);
    }
  }

  addOutput(id: number): void {
    checkId(id);
    this.seen.set(id, (this.seen.get(id) ?? 0) + 2);
  }

  /** Undo `addOutput`, for speculative tokens the verifier rejected. */
  removeOutput(id: number): void {
    const packed = this.seen.get(id) ?? 0;
    if (packed < 2) throw new RangeError(`TokenCounts.removeOutput: token ${id} is not in the output`);
    if (packed === 2) this.seen.delete(id);
    else this.seen.set(id, packed - 2);
  }

  outputCount(id: number): number {
    return (this.seen.get(id) ?? 0) >>> 1;
  }

  inPrompt(id: number): boolean {
    return ((this.seen.get(id) ?? 0) & 1) === 1;
  }

  /** Number of distinct ids seen in prompt or output: the cost of one `applyPenaltiesFromCounts`. */
  get size(): number {
    return this.seen.size;
  }

  /** Visits every id seen in the prompt or the output (output count 0 means prompt only). */
  forEach(fn: (id: number, outputCount: number, inPrompt: boolean) => void): void {
    for (const [id, packed] of this.seen) fn(id, packed >>> 1, (packed & 1) === 1);
  }
}

function checkId(id: number): number {
  if (!Number.isInteger(id) || id < 0) throw new RangeError(`token id must be a non-negative integer, got ${id}`);
  return id;
}

/** Whether any of the three penalties would change a logit. */
export function hasPenalties(p: SamplingParams): boolean {
  return p.repetitionPenalty !== 1 || p.frequencyPenalty !== 0 || p.presencePenalty !== 0;
}

/**
 * vLLM's penalties, in place: for every token seen in the prompt or the output, the repetition
 * penalty divides a positive logit and multiplies a non-positive one (so it always pushes the token
 * down); then frequency_penalty × output count and presence_penalty × (output count > 0) are
 * subtracted. Ids beyond the logits (a tokenizer larger than the lm_head) are ignored, as vLLM's
 * bincount drops them.
 */
export function applyPenalties(logits: Float32Array, promptIds: ArrayLike<number>, outputIds: ArrayLike<number>, p: SamplingParams): void {
  if (!hasPenalties(p)) return;
  applyPenaltiesFromCounts(logits, new TokenCounts(promptIds, outputIds), p);
}

/** `applyPenalties` over counts the engine maintains incrementally: O(counts.size), not O(vocab). */
export function applyPenaltiesFromCounts(logits: Float32Array, counts: TokenCounts, p: SamplingParams): void {
  if (!hasPenalties(p)) return;
  const n = logits.length;
  counts.forEach((id, outputCount) => {
    if (id < n) logits[id] = penalisedLogit(logits[id], outputCount, p);
  });
}

/**
 * One seen token's logit after the penalties, in float64 as JavaScript computes it (the caller's
 * Float32Array store rounds it once): what kernels/penalties.cu computes too, bit for bit.
 */
export function penalisedLogit(x: number, outputCount: number, p: PenaltyParams): number {
  let v = x;
  if (p.repetitionPenalty !== 1) v = v > 0 ? v / p.repetitionPenalty : v * p.repetitionPenalty;
  if (outputCount > 0) {
    v -= p.frequencyPenalty * outputCount;
    v -= p.presencePenalty;
  }
  return v;
}

/** The three penalties' knobs. */
export type PenaltyParams = Pick<SamplingParams, 'repetitionPenalty' | 'frequencyPenalty' | 'presencePenalty'>;

/**
 * A row's penalties as a backend applies them (Backend.applyPenalties): every seen id (prompt or
 * output) with its output count, and the knobs. Undefined when nothing would change.
 */
export interface PenaltyRow extends PenaltyParams {
  ids: Int32Array;
  outputCounts: Int32Array;
}

/** The PenaltyRow of counts under p; undefined without penalties or with nothing seen. */
export function penaltyRow(counts: TokenCounts, p: SamplingParams): PenaltyRow | undefined {
  if (!hasPenalties(p) || counts.size === 0) return undefined;
  const ids = new Int32Array(counts.size);
  const outputCounts = new Int32Array(counts.size);
  let i = 0;
  counts.forEach((id, outputCount) => {
    ids[i] = id;
    outputCounts[i++] = outputCount;
  });
  return { ids, outputCounts, repetitionPenalty: p.repetitionPenalty, frequencyPenalty: p.frequencyPenalty, presencePenalty: p.presencePenalty };
}

/** Logit rows [rows.length, cols] in place, row r taking rows[r]'s penalties (undefined: none). */
export function applyPenaltyRows(logits: Float32Array, cols: number, rows: readonly (PenaltyRow | undefined)[]): void {
  rows.forEach((p, r) => p && applyPenaltyRow(logits.subarray(r * cols, (r + 1) * cols), p));
}

/** A PenaltyRow applied to one row of logits in place (ids beyond the row ignored): applyPenaltiesFromCounts over its lists. */
export function applyPenaltyRow(logits: Float32Array, row: PenaltyRow): void {
  for (let i = 0; i < row.ids.length; i++) {
    const id = row.ids[i];
    if (id < logits.length) logits[id] = penalisedLogit(logits[id], row.outputCounts[i], row);
  }
}

/**
 * A padded vocabulary: the model's vocab_size may exceed what its tokenizer can decode (Qwen pads the
 * lm_head to a multiple of 128; dummy weights at a preset's shapes borrow a 4096-token tokenizer for a
 * 128k vocabulary). Those ids must never be sampled, so their logits become -inf in every row of
 * `logits` ([rows × vocab]), in place; the rows are still computed in full (vLLM likewise drops the
 * logits of its padded lm_head rows before sampling).
 */
export function maskPaddedVocab(logits: Float32Array, vocab: number, usable: number): void {
  if (usable >= vocab) return;
  for (let r = 0; r + vocab <= logits.length; r += vocab) logits.fill(-Infinity, r + usable, r + vocab);
}

/** Index of the largest logit; ties go to the lowest id, NaN never wins. -1 when none is > -inf. */
export function argmax(logits: ArrayLike<number>): number {
  let best = -Infinity;
  let bestId = -1;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (v > best) {
      best = v;
      bestId = i;
    }
  }
  return bestId;
}

export interface TokenLogprob {
  id: number;
  logprob: number;
}

export interface Logprobs {
  /** The token asked about (usually the one just sampled). */
  tokenId: number;
  logprob: number;
  /** 1-based; the number of tokens whose logprob is >= this token's, as vLLM counts it. */
  rank: number;
  /** The topN most likely tokens, most likely first, ties by lowest id. */
  top: TokenLogprob[];
}

/**
 * Log-softmax of the raw logits, before penalties and temperature: vLLM's default
 * `logprobs_mode="raw_logprobs"`, and what OpenAI clients expect — the model's own belief, which
 * does not change with the sampling knobs of the request. (The sampled token itself does depend
 * on them, so its rank may be > 1 even when it was the only token left after top-k.)
 */
export function computeLogprobs(logits: Float32Array, topN: number, tokenId: number): Logprobs {
  const n = logits.length;
  if (!Number.isInteger(tokenId) || tokenId < 0 || tokenId >= n) {
    throw new RangeError(`logprobs: token id ${tokenId} is outside the vocabulary of ${n}`);
  }
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i] > max) max = logits[i];
  if (max === -Infinity) throw new RangeError(ALL_MASKED);
  if (max === Infinity) {
    // The +inf tokens share all the mass equally; everything else is impossible.
    let infinite = 0;
    for (let i = 0; i < n; i++) if (logits[i] === Infinity) infinite++;
    const shared = -Math.log(infinite);
    return finishLogprobs(logits, tokenId, topN, (id) => (logits[id] === Infinity ? shared : -Infinity));
  }
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(logits[i] - max);
    if (e > 0) sum += e; // NaN logits carry no mass
  }
  const logSumExp = max + Math.log(sum);
  return finishLogprobs(logits, tokenId, topN, (id) => {
    const v = logits[id];
    return v === v ? v - logSumExp : -Infinity;
  });
}

function finishLogprobs(logits: Float32Array, tokenId: number, topN: number, logprobOf: (id: number) => number): Logprobs {
  const n = logits.length;
  const k = Math.max(0, Math.min(Math.floor(topN), n));
  const scratch = scratchFor(n);
  selectTopK(logits, null, n, k, scratch.heap, scratch.ids);
  const top: TokenLogprob[] = [];
  for (let j = 0; j < k; j++) top.push({ id: scratch.ids[j], logprob: logprobOf(scratch.ids[j]) });
  const chosen = logits[tokenId];
  let rank = 0;
  if (chosen === chosen) {
    for (let i = 0; i < n; i++) if (logits[i] >= chosen) rank++;
  } else {
    rank = n; // a NaN logit is treated as the least likely token
  }
  return { tokenId, logprob: logprobOf(tokenId), rank, top };
}

/** The error every sampler (this one, a backend's sampleRows) throws when no token can be chosen. */
export const ALL_MASKED = 'sampler: every logit is -inf or NaN, so there is no token to choose (the model output or the logit masks are broken)';

/**
 * One sequence's sampler. Pipeline, in vLLM v1's order (vllm/v1/sample/sampler.py):
 *   penalties → greedy argmax if temperature < 1e-5 → logits / temperature → softmax (f64)
 *   → min-p → top-k → top-p → renormalise → inverse-CDF draw.
 * vLLM v1 applies min-p (an argmax-invariant logits processor) *before* top-k/top-p; HF and vLLM v0
 * apply it after. Only min-p combined with top-p tells them apart (top-p then sees the
 * renormalised min-p survivors); we follow v1 because that is the server we are compatible with.
 *
 * The draw: u = rng.next() × total mass; the token is the lowest id x whose cumulative mass over
 * ids ≤ x exceeds u. Walking in id order (not probability order) makes a draw a pure function of
 * `probabilities()` and u, so other samplers can be checked against this one. A random-mode call
 * consumes exactly one `rng.next()`, even when one token is left; greedy consumes none. That keeps
 * the stream position a function of the step count alone.
 */
export class Sampler {
  readonly params: SamplingParams;
  readonly vocabSize: number;
  /** The seed actually used: params.seed, or a random one that replays this generation if passed back. */
  readonly seed: number;
  readonly rng: Rng;
  readonly greedy: boolean;
  /** Repetition/presence/frequency penalties change the logits before the choice. */
  readonly penalised: boolean;
  private lastToken = -1;

  constructor(params: SamplingParams, vocabSize: number) {
    if (!Number.isInteger(vocabSize) || vocabSize < 1) throw new RangeError(`Sampler: vocabSize must be a positive integer, got ${vocabSize}`);
    this.params = params;
    this.vocabSize = vocabSize;
    this.seed = params.seed ?? randomSeed();
    this.rng = new Rng(this.seed);
    this.greedy = params.temperature < GREEDY_TEMPERATURE_EPS;
    this.penalised = hasPenalties(params);
  }

  /**
   * Greedy with no penalties: the choice is the argmax of the raw logits, which the engine may take
   * from the backend without reading the logits back (then `chose` records it).
   */
  get argmaxOnly(): boolean {
    return this.greedy && !this.penalised;
  }

  /**
   * This step's draw for a backend that samples (Backend.sampleRows): the knobs and the uniform u,
   * taken from this sampler's stream exactly as `sample` would take it (one `rng.next()` in random
   * mode, none when greedy). A penalised sequence's logits take `penaltyRow(counts, params)` first
   * (Backend.applyPenalties). `chose` then records the token the backend drew.
   */
  drawRow(): DrawParams & { u: number } {
    return { ...this.drawParams, u: this.greedy ? 0 : this.rng.next() };
  }

  /** This request's knobs as a backend's draw takes them (no penalties, no uniform). */
  get drawParams(): DrawParams {
    const { temperature, topK, topP, minP } = this.params;
    return { temperature, topK, topP, minP };
  }

  /** Record a token chosen outside `sample` (the backend's argmax or draw; see argmaxOnly, drawRow). */
  chose(token: number): void {
    if (token < 0) throw new RangeError(ALL_MASKED);
    this.lastToken = token;
  }

  /** The next token. `logits` is not modified (penalties are applied to a copy). */
  sample(logits: Float32Array, counts: TokenCounts): number {
    const support = this.support(logits, counts);
    // The draw comes after the support, so a throwing call consumes no random number.
    const token = this.greedy ? support.ids[0] : drawFromSupport(support, this.rng.next());
    this.lastToken = token;
    return token;
  }

  /**
   * The distribution `sample` draws from, over the full vocabulary, zeros for filtered tokens
   * (one-hot for greedy). Speculative decoding's verifier needs p(x) of the target from this.
   */
  probabilities(logits: Float32Array, counts: TokenCounts): Float32Array {
    const { ids, weights, count, total } = this.support(logits, counts);
    const out = new Float32Array(this.vocabSize);
    for (let j = 0; j < count; j++) out[ids[j]] = weights[ids[j]] / total;
    return out;
  }

  /** Raw-logit logprobs (see `computeLogprobs`) of `tokenId`, by default the token last sampled. */
  logprobs(logits: Float32Array, topN: number, tokenId: number = this.lastToken): Logprobs {
    if (tokenId < 0) throw new RangeError('Sampler.logprobs: no token sampled yet and no tokenId given');
    this.checkLength(logits);
    return computeLogprobs(logits, topN, tokenId);
  }

  private checkLength(logits: Float32Array): void {
    if (logits.length !== this.vocabSize) {
      throw new RangeError(`Sampler: expected ${this.vocabSize} logits, got ${logits.length}`);
    }
  }

  /** The surviving tokens after this sequence's penalties (see `samplingSupport`). */
  private support(logits: Float32Array, counts: TokenCounts): SamplingSupport {
    this.checkLength(logits);
    let x = logits;
    if (this.penalised && counts.size > 0) {
      x = scratchFor(this.vocabSize).logits.subarray(0, this.vocabSize);
      x.set(logits);
      applyPenaltiesFromCounts(x, counts, this.params);
    }
    return samplingSupport(x, this.params);
  }
}

/** The knobs of a draw besides the penalties: what a backend's sampler (Backend.sampleRows) takes. */
export interface DrawParams {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
}

/**
 * The tokens a draw can pick: ids[0..count) in ascending order, their unnormalised f64 weights in
 * weights[id], and the weights' sum taken in that same order (so a cumulative walk ends exactly at
 * `total`). Both arrays are shared scratch: valid until the next call.
 */
export interface SamplingSupport {
  ids: Int32Array;
  weights: Float64Array;
  count: number;
  total: number;
}

/**
 * The sampler's pipeline over logits (penalties already applied): greedy argmax if temperature <
 * GREEDY_TEMPERATURE_EPS, else logits / temperature → softmax numerators (f64) → min-p → top-k →
 * top-p. Throws ALL_MASKED when every logit is -inf or NaN. `Sampler` runs every draw through it,
 * so it is the one reference other samplers (the GPU's) are held to.
 */
export function samplingSupport(x: Float32Array, p: DrawParams): SamplingSupport {
  const n = x.length;
  const scratch = scratchFor(n);
  const { ids, weights, heap } = scratch;

  if (p.temperature < GREEDY_TEMPERATURE_EPS) {
    const id = argmax(x);
    if (id < 0) throw new RangeError(ALL_MASKED);
    ids[0] = id;
    weights[id] = 1;
    return { ids, weights, count: 1, total: 1 };
  }

  let max = -Infinity;
  for (let i = 0; i < n; i++) if (x[i] > max) max = x[i];
  if (max === -Infinity) throw new RangeError(ALL_MASKED);

  // Softmax numerators, shifted by the max so the top token weighs exactly 1; this makes min-p
  // (drop p < min_p · p_max) a plain comparison against min_p. Zero-weight tokens (-inf, NaN or
  // underflow) can never be drawn, so they leave the candidate list here.
  let count = 0;
  if (max === Infinity) {
    for (let i = 0; i < n; i++) {
      if (x[i] === Infinity) {
        weights[i] = 1;
        ids[count++] = i;
      }
    }
  } else {
    const t = p.temperature;
    const minWeight = p.minP > 0 ? p.minP : Number.MIN_VALUE;
    for (let i = 0; i < n; i++) {
      const w = Math.exp((x[i] - max) / t);
      if (w >= minWeight) {
        weights[i] = w;
        ids[count++] = i;
      }
    }
  }

  // Top-k: ties at the k-th place go to the lowest ids, so exactly k survive (torch.topk's tie
  // order is unspecified). Selection orders by the logit, which is finer than the weight: two
  // logits can round to the same exp().
  let byProbability = false;
  if (p.topK > 0 && p.topK < count) {
    selectTopK(x, ids, count, p.topK, heap, ids);
    count = p.topK;
    byProbability = true;
  }

  if (p.topP < 1 && count > 1) {
    let mass = 0;
    for (let j = 0; j < count; j++) mass += weights[ids[j]];
    if (!byProbability) count = nucleusByHeap(x, weights, ids, count, mass, p.topP, heap);
    else count = nucleusPrefix(weights, ids, count, mass, p.topP);
    byProbability = true;
  }

  if (byProbability) ids.subarray(0, count).sort();
  let total = 0;
  for (let j = 0; j < count; j++) total += weights[ids[j]];
  return { ids, weights, count, total };
}

/**
 * The inverse-CDF draw from a support, u uniform in [0, 1): the lowest id x whose cumulative weight
 * over ids ≤ x exceeds u × total (the last id if rounding put u × total at the total itself).
 */
export function drawFromSupport(support: SamplingSupport, u: number): number {
  const { ids, weights, count } = support;
  const target = u * support.total;
  let acc = 0;
  for (let j = 0; j < count; j++) {
    acc += weights[ids[j]];
    if (target < acc) return ids[j];
  }
  return ids[count - 1];
}

/**
 * One token from logits without penalties, given the uniform u the caller drew: exactly what
 * `Sampler.sample` returns when its random stream yields u (greedy ignores u). The reference of
 * Backend.sampleRows.
 */
export function drawToken(logits: Float32Array, p: DrawParams, u: number): number {
  const support = samplingSupport(logits, p);
  return p.temperature < GREEDY_TEMPERATURE_EPS ? support.ids[0] : drawFromSupport(support, u);
}

/**
 * Speculative verification's draw for a deterministic draft x (q one-hot at x), without penalties:
 * `excludedProb` is p(x) exactly as `Sampler.probabilities` gives it (the float32 weight(x) / total,
 * 0 when x did not survive the knobs, 1 or 0 when greedy), and `token` is what verifyDrafts
 * (spec/verifier.ts) emits when it rejects x with uniform u: drawFrom(residual) — the float32
 * probabilities of the surviving ids other than x, walked in ascending id order with an f64 running
 * sum, the lowest id whose cumulative value exceeds u × their sum (the last one if rounding put the
 * target at the sum); when nothing but x has a non-zero float32 probability, the residual is p itself,
 * from which only x can be drawn. Greedy: the argmax (u unused), as the greedy verifier emits. x may be
 * any id, also one past the logits (then it has probability 0 and the draw is from p). The reference
 * of Backend.sampleRows' rows with `exclude`.
 */
export function drawResidual(logits: Float32Array, p: DrawParams, exclude: number, u: number): { token: number; excludedProb: number } {
  if (p.temperature < GREEDY_TEMPERATURE_EPS) {
    const top = samplingSupport(logits, p).ids[0];
    return { token: top, excludedProb: top === exclude ? 1 : 0 };
  }
  // q one-hot at x: the residual is p without x (p(x) − 1 ≤ 0); when nothing else has mass, drawing
  // from p itself can only give x.
  return residualDraw(logits, p, exclude, (y) => (y === exclude ? 1 : 0), u);
}

/**
 * A sampled draft's draw that keeps its distribution (a draft model's, for the verifier): q as
 * `Sampler.probabilities` gives it without penalties (the float32 weight / total of each survivor, 0
 * elsewhere; `probs` has the logits' length), and the token DraftTokenSampler.choose draws from it
 * with u: drawFrom(q, u) — the positive q walked in ascending id order with an f64 running sum, the
 * lowest id whose cumulative value exceeds u × their sum. `tokenProb` is q(token). Not for greedy
 * knobs (a greedy draft is deterministic: it has no q). The reference of Backend.sampleRows' rows that
 * write their distribution (`distRow` without `exclude`).
 */
export function drawDistribution(logits: Float32Array, p: DrawParams, u: number): { token: number; tokenProb: number; probs: Float32Array } {
  if (p.temperature < GREEDY_TEMPERATURE_EPS) throw new RangeError('drawDistribution: a greedy row has no distribution to keep (its draft is deterministic)');
  const { ids, weights, count, total } = samplingSupport(logits, p);
  const probs = new Float32Array(logits.length);
  const inOrder = new Float32Array(count);
  for (let j = 0; j < count; j++) inOrder[j] = probs[ids[j]] = weights[ids[j]] / total;
  const token = drawInIdOrder(inOrder, ids, count, u);
  return { token, tokenProb: probs[token], probs };
}

/**
 * Speculative verification's draw for a draft x drawn from a distribution q (a sampled draft model),
 * without penalties: `excludedProb` is p(x) as `Sampler.probabilities` gives it, and `token` is what
 * verifyDrafts (spec/verifier.ts) emits when it rejects x with uniform u: drawFrom(max(0, p − q)) —
 * the float32 differences fround(p(y) − q(y)) of the surviving ids where positive, walked as
 * drawFrom walks them; when none is positive (p ≤ q everywhere), drawFrom(p) itself. q holds at least
 * the logits' length of values (ids past it are not read: p is 0 there). The reference of
 * Backend.sampleRows' rows with both `exclude` and `distRow`.
 */
export function drawResidualOf(logits: Float32Array, p: DrawParams, exclude: number, q: ArrayLike<number>, u: number): { token: number; excludedProb: number } {
  if (p.temperature < GREEDY_TEMPERATURE_EPS) throw new RangeError('drawResidualOf: a greedy row verifies deterministic drafts (drawResidual), not a distribution');
  return residualDraw(logits, p, exclude, (y) => q[y], u);
}

/**
 * What drawResidual and drawResidualOf share: p(y) as probabilities() stores it (the f64 quotient
 * rounded to float32) for the survivors, p(exclude), and the draw with u from fround(max(0, p − q))
 * over them (drawFrom's walk), or from p where that has no mass.
 */
function residualDraw(logits: Float32Array, p: DrawParams, exclude: number, qOf: (y: number) => number, u: number): { token: number; excludedProb: number } {
  const { ids, weights, count, total } = samplingSupport(logits, p);
  const probs = new Float32Array(count);
  const rest = new Float32Array(count);
  let excludedProb = 0;
  for (let j = 0; j < count; j++) {
    const y = ids[j];
    probs[j] = weights[y] / total;
    rest[j] = Math.max(0, probs[j] - qOf(y)); // rounded to float32 as the verifier's residual stores it
    if (y === exclude) excludedProb = probs[j];
  }
  const weightsOf = rest.some((r) => r > 0) ? rest : probs;
  return { token: drawInIdOrder(weightsOf, ids, count, u), excludedProb };
}

/**
 * drawFrom (spec/proposer.ts) over float32 values of ids in ascending order (values[j] of id ids[j],
 * j < count): the lowest id whose cumulative value (f64 running sum over the positive values)
 * exceeds u × their sum; the last such id if rounding put the target at the sum.
 */
function drawInIdOrder(values: Float32Array, ids: Int32Array, count: number, u: number): number {
  let sum = 0;
  for (let j = 0; j < count; j++) sum += values[j];
  if (!(sum > 0)) throw new RangeError('drawFrom: no probability mass to draw from');
  const target = u * sum;
  let acc = 0;
  let last = -1;
  for (let j = 0; j < count; j++) {
    if (values[j] <= 0) continue;
    acc += values[j];
    last = ids[j];
    if (target < acc) return last;
  }
  return last;
}

/** One row of Backend.sampleRows: its knobs, u, and what it asks besides the plain draw. */
export type SamplingRowRequest = DrawParams & { u: number; exclude?: number; distRow?: number };

/**
 * One row of Backend.sampleRows on the host, the reference every backend's is held to: drawToken, or
 * drawResidual for a row that excludes a draft (excludedProb 0 for the others). With a distribution
 * `dist` (the row's `distRow` of sampleRows' dist tensor): a row that excludes a draft draws
 * drawResidualOf against it; one that does not draws drawDistribution, writes its probabilities there
 * and returns q(token) as its excludedProb.
 */
export function drawSamplingRow(logits: Float32Array, row: SamplingRowRequest, dist?: Float32Array): { token: number; excludedProb: number } {
  if (row.distRow !== undefined) {
    if (!dist) throw new RangeError('drawSamplingRow: a row with distRow needs its distribution row');
    if (row.exclude !== undefined) return drawResidualOf(logits, row, row.exclude, dist, row.u);
    const { token, tokenProb, probs } = drawDistribution(logits, row, row.u);
    dist.set(probs);
    return { token, excludedProb: tokenProb };
  }
  if (row.exclude === undefined) return { token: drawToken(logits, row, row.u), excludedProb: 0 };
  return drawResidual(logits, row, row.exclude, row.u);
}

/** Top-p over candidates already sorted by probability: the shortest prefix with mass ≥ topP. */
function nucleusPrefix(weights: Float64Array, ids: Int32Array, count: number, mass: number, topP: number): number {
  let cum = 0;
  for (let j = 0; j < count; j++) {
    cum += weights[ids[j]] / mass;
    if (cum >= topP) return j + 1;
  }
  return count;
}

/**
 * Top-p over unsorted candidates without sorting them all: order them by a max-heap and pop until
 * the kept mass reaches topP, writing the kept ids to ids[0..). Before that, any token whose
 * weight is ≤ (1 - topP)·mass / count is dropped unseen: those tokens are the least likely ones and
 * together weigh at most (1 - topP)·mass, so the nucleus cannot need any of them. On real LLM
 * distributions that removes almost all of a 128k vocabulary's tail before the heap is built.
 */
function nucleusByHeap(x: Float32Array, weights: Float64Array, ids: Int32Array, count: number, mass: number, topP: number, heap: Int32Array): number {
  const negligible = (((1 - topP) * mass) / count) * (1 - 1e-9); // margin against rounding in the sums
  let size = 0;
  for (let j = 0; j < count; j++) {
    const id = ids[j];
    if (weights[id] > negligible) heap[size++] = id;
  }
  const before = (a: number, b: number): boolean => isWorse(x, b, a);
  for (let i = (size >> 1) - 1; i >= 0; i--) siftDown(heap, size, i, heap[i], before);
  let kept = 0;
  let cum = 0;
  while (size > 0) {
    const id = heap[0];
    size--;
    if (size > 0) siftDown(heap, size, 0, heap[size], before);
    ids[kept++] = id;
    cum += weights[id] / mass;
    if (cum >= topP) break;
  }
  return kept;
}

/** a ranks below b: smaller logit, or an equal logit and a larger id. NaN ranks below everything. */
function isWorse(x: Float32Array, a: number, b: number): boolean {
  let ka = x[a];
  let kb = x[b];
  if (ka !== ka) ka = -Infinity;
  if (kb !== kb) kb = -Infinity;
  return ka < kb || (ka === kb && a > b);
}

/**
 * The k best of candidates (ids[0..count), or 0..count-1 when ids is null) by logit, ties to the
 * lowest id, written to out[0..k) best first. A size-k heap with the worst kept token on top:
 * O(count · log k), and most tokens are rejected by one comparison with the top. `out` may alias
 * `ids`: every candidate is read before the first write.
 */
function selectTopK(x: Float32Array, ids: Int32Array | null, count: number, k: number, heap: Int32Array, out: Int32Array): void {
  if (k <= 0) return;
  const before = (a: number, b: number): boolean => isWorse(x, a, b);
  let size = 0;
  for (let j = 0; j < count; j++) {
    const id = ids === null ? j : ids[j];
    if (size < k) {
      let pos = size++;
      while (pos > 0) {
        const parent = (pos - 1) >> 1;
        if (!before(id, heap[parent])) break;
        heap[pos] = heap[parent];
        pos = parent;
      }
      heap[pos] = id;
    } else if (isWorse(x, heap[0], id)) {
      siftDown(heap, size, 0, id, before);
    }
  }
  for (let j = size - 1; j >= 0; j--) {
    out[j] = heap[0];
    if (j > 0) siftDown(heap, j, 0, heap[j], before);
  }
}

/** Places `item` at `pos` of a binary heap of `size` and moves it down until `before` holds. */
function siftDown(heap: Int32Array, size: number, pos: number, item: number, before: (a: number, b: number) => boolean): void {
  for (;;) {
    let child = 2 * pos + 1;
    if (child >= size) break;
    if (child + 1 < size && before(heap[child + 1], heap[child])) child++;
    if (!before(heap[child], item)) break;
    heap[pos] = heap[child];
    pos = child;
  }
  heap[pos] = item;
}

// Vocab-sized scratch shared by every sampler: sampling is synchronous and JS single-threaded, so
// one set serves all sequences instead of ~1.5 MB each at a 128k vocabulary.
const scratch = { logits: new Float32Array(0), weights: new Float64Array(0), ids: new Int32Array(0), heap: new Int32Array(0) };

function scratchFor(n: number): typeof scratch {
  if (scratch.ids.length < n) {
    scratch.logits = new Float32Array(n);
    scratch.weights = new Float64Array(n);
    scratch.ids = new Int32Array(n);
    scratch.heap = new Int32Array(n);
  }
  return scratch;
}
