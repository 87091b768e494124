// The Llama-family forward pass (Llama, Mistral, Qwen2, Qwen3), written once against the Backend
// interface over a flattened batch: prefill chunks, decode tokens and verification windows alike.

import { applyPenaltyRows, argmax, computeLogprobs, drawSamplingRow, type Logprobs, type PenaltyRow } from '../engine/sampler.js';
import { checkSamplingRows, linearAddRmsNorm, linearMany, linearSiluMul, mlpAdd, ropeWriteKv, type AttentionBatch, type Backend, type GpuSamplingRow, type KvCacheSpec, type KvCacheStorage, type LogprobRow, type RopeRows, type Tensor } from '../backend/backend.js';
import type { ModelConfig } from './config.js';
import { ropeCosSin, ropeFrequencies, RopeTable } from './rope.js';
import type { ModelWeights } from './weights.js';

/** One step's tokens, flattened across sequences, with where each goes in the paged KV cache. */
export interface ForwardBatch extends AttentionBatch {
  tokens: Int32Array;
  /** Row indices (into tokens) whose logits are wanted, e.g. the last token of each sequence. */
  logitRows: Int32Array;
}

/** The inputs of a layer's projections: q/k/v share one, gate/up share one. */
export type LinearInputSite = 'qkv' | 'o' | 'gate_up' | 'down';

export interface ForwardOptions {
  /** Called with the input activations [numTokens × in] of each projection (GPTQ calibration). */
  observeLinearInput?: (layer: number, site: LinearInputSite, x: Float32Array) => void;
  /** Return the hidden state entering these layers (HF output_hidden_states indices) for logitRows'
   *  tokens and all tokens; used by EAGLE-3. */
  captureHiddenStates?: number[];
  /**
   * Greedy sampling only: return each logit row's argmax over its first `vocab` ids (the tokenizer's,
   * when the model's vocabulary is padded) instead of the logits, computed on the backend where it can
   * (one id a row crosses back instead of the whole vocabulary).
   */
  argmaxOnly?: { vocab: number };
  /**
   * Sampling without penalties: draw each logit row's token over its first `vocab` ids with its own
   * row of `rows` (temperature, min-p, top-k, top-p, and the uniform u the caller drew from the
   * request's Rng) instead of returning the logits: on the backend where it can (Backend.sampleRows,
   * one id a row crosses back), else on the host. Either way the token drawToken (engine/sampler.ts)
   * would draw from the logits with that u. Not with argmaxOnly. Rows with `exclude` (speculative
   * verification) draw drawResidual's token and return p(exclude) in `excludedProbs`. Rows with a
   * `distRow` of `dist` (sampled drafts' distributions, kept on the backend) write a draft's
   * distribution there and return p(token), or verify a draft against it (GpuSamplingRow.distRow);
   * they need a backend with sampleRows.
   */
  sampleRows?: {
    vocab: number;
    rows: GpuSamplingRow[];
    /** [rows, ≥ vocab] float32 on the backend: the rows' distRow index it. */
    dist?: Tensor;
    /** Per row, the penalties its logits take before the draw (Backend.applyPenalties; logprobs still see the raw logits). */
    penalties?: readonly (PenaltyRow | undefined)[];
  };
  /**
   * With sampleRows: per logit row, how many alternatives its token's logprobs list (undefined: no
   * logprobs for that row). Computed on the backend (logprobRows) where it can, else from the row's
   * logits on the host.
   */
  logprobs?: readonly (number | undefined)[];
  /**
   * With logprobs: per logit row, a second token whose logprobs that row also answers (a
   * verification row's draft, emitted should it be accepted); undefined: none.
   */
  logprobAlternates?: readonly (number | undefined)[];
}

export interface ForwardResult {
  /** [logitRows.length × vocab] float32 logits (empty with argmaxOnly). */
  logits: Float32Array;
  /** With argmaxOnly: per logit row, the argmax (-1 where every logit is -inf or NaN). */
  argmax?: Int32Array;
  /** With sampleRows: per logit row, the token drawn. */
  sampled?: Int32Array;
  /**
   * With sampleRows of which some row has `exclude` or `distRow`: per logit row, p(exclude), or
   * p(token drawn) for a row that wrote its distribution (0 for rows with neither).
   */
  excludedProbs?: Float32Array;
  /** With logprobs: per logit row, its sampled token's logprobs (undefined for rows that asked none). */
  logprobs?: (Logprobs | undefined)[];
  /** With logprobAlternates: per logit row, its alternate token's logprobs. */
  alternateLogprobs?: (Logprobs | undefined)[];
  /** captured hidden states per requested index, [numTokens × hidden] each. */
  hiddenStates?: Map<number, Float32Array>;
}

/** Numbers each model instance, so steps of two models on one backend (target and draft) never share a recording. */
let nextModelId = 0;

export class LlamaModel {
  private readonly id = nextModelId++;
  /** cos/sin rows by position, for every RoPE type but dynamic NTK (whose frequencies depend on the sequence's length). */
  private readonly staticRope?: RopeTable;
  readonly attentionScale: number;

  constructor(
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    readonly backend: Backend,
  ) {
    if (config.rope.type !== 'dynamic') {
      const { invFreq, attentionFactor } = ropeFrequencies(config.rope, 0);
      this.staticRope = new RopeTable(invFreq, attentionFactor);
    }
    this.attentionScale = 1 / Math.sqrt(config.headDim);
  }

  /** A paged KV cache for this model: its layers and KV heads, and its checkpoint's FP8 scales if any. */
  kvCacheSpec(numBlocks: number, blockSize: number): KvCacheSpec {
    const c = this.config;
    return { numLayers: c.numLayers, numBlocks, blockSize, numKvHeads: c.numKvHeads, headDim: c.headDim, scales: this.weights.kvScales };
  }

  forward(batch: ForwardBatch, kv: KvCacheStorage, opts: ForwardOptions = {}): ForwardResult {
    // A step that reads nothing back before its end (GPTQ's observer reads every linear's input) may be
    // replayed as one launch (CUDA graphs) next time a step of the same shape comes; the backend checks
    // each op against the recording, so the key only says which recording to compare with.
    const be = this.backend;
    if (opts.argmaxOnly && opts.sampleRows) throw new RangeError('forward: argmaxOnly and sampleRows cannot both be asked for');
    if (be.replayable && !opts.observeLinearInput) {
      const out = opts.argmaxOnly ? `argmax${opts.argmaxOnly.vocab}` : opts.sampleRows ? `sample${opts.sampleRows.vocab}` : 'logits';
      const hidden = opts.captureHiddenStates ? `:hidden${opts.captureHiddenStates.join(',')}` : '';
      const key = `llama${this.id}:${batch.numTokens}:${batch.numSeqs}:${batch.logitRows.length}:${out}${hidden}`;
      return be.replayable(key, batch.numTokens, () => this.run(batch, kv, opts));
    }
    return this.run(batch, kv, opts);
  }

  private run(batch: ForwardBatch, kv: KvCacheStorage, opts: ForwardOptions): ForwardResult {
    const { backend: be, config: c, weights: W } = this;
    const rope = this.ropeRows(batch);
    const capture = opts.captureHiddenStates ? new Map<number, Float32Array>() : undefined;
    // Hidden states asked for (EAGLE-3): on a backend that replays steps, copied on the device as the
    // residual passes (selectRows of every row) and read back at the end, so a replayed step is not cut
    // at every read; elsewhere read back at once.
    const kept = new Map<number, Tensor>();
    const allRows = capture && be.replayable ? Int32Array.from({ length: batch.numTokens }, (_, i) => i) : undefined;
    const keepHidden = (l: number) => {
      if (!capture || !opts.captureHiddenStates!.includes(l)) return;
      if (allRows) kept.set(l, be.selectRows(residual, allRows));
      else capture.set(l, be.toHost(residual).slice());
    };
    const finish = (out: Omit<ForwardResult, 'hiddenStates'>): ForwardResult => {
      for (const [l, t] of kept) capture!.set(l, be.toHost(t));
      return { ...out, hiddenStates: capture };
    };

    const observe = opts.observeLinearInput;
    // The norms' outputs are read only by linears (the CUDA backend may keep them in the GEMMs' input
    // form alone), except where calibration reads them back.
    const readers = observe ? 'any' : 'linears';
    let residual = be.embedding(W.embedTokens, batch.tokens);
    let x: Tensor = be.rmsNorm(residual, W.layers[0].inputNorm, c.rmsNormEps, readers);
    // The last MLP's output when the backend did not add it to the residual in its down GEMM (mlpAdd).
    let down: Tensor | undefined;
    for (let l = 0; l < c.numLayers; l++) {
      const L = W.layers[l];
      if (l > 0) {
        x = down ? be.addRmsNorm(down, residual, L.inputNorm, c.rmsNormEps, readers) : be.rmsNorm(residual, L.inputNorm, c.rmsNormEps, readers);
        if (down) be.release?.(down);
      }
      // HF's hidden_states[l]: the residual stream entering layer l.
      keepHidden(l);

      observe?.(l, 'qkv', be.toHost(x));
      // One launch for q, k and v where the backend fuses them (the same results as three linears).
      const [q, k, v] = linearMany(be, x, [L.q, L.k, L.v], [L.qBias, L.kBias, L.vBias]);
      if (L.qNorm && L.kNorm) {
        be.headRmsNorm(q, L.qNorm, c.headDim, c.rmsNormEps);
        be.headRmsNorm(k, L.kNorm, c.headDim, c.rmsNormEps);
      }
      // RoPE on q and k, then k and v into the cache: one launch where the backend fuses them.
      ropeWriteKv(be, q, k, v, c.headDim, c.rope.rotaryDim, rope, kv, l, batch.slots);
      const attn = be.attention(q, kv, l, batch, this.attentionScale, c.slidingWindows[l]);
      // Each intermediate goes back as soon as it is used: a layer's activations, not the model's, are
      // what a step holds at once (backends without release keep them until the step ends).
      be.release?.(q, k, v, x);
      observe?.(l, 'o', be.toHost(attn));
      // residual += o(attn), in the GEMM where the backend can, then the post-attention norm.
      const n = linearAddRmsNorm(be, attn, L.o, L.oBias, residual, L.postAttentionNorm, c.rmsNormEps, readers);
      be.release?.(attn);
      observe?.(l, 'gate_up', be.toHost(n));
      const biases = { gate: L.gateBias, up: L.upBias, down: L.downBias };
      if (observe) {
        // Calibration reads the down linear's input, which `mlp` need not make.
        const act = linearSiluMul(be, n, L.gate, L.up, L.gateBias, L.upBias);
        observe(l, 'down', be.toHost(act));
        down = be.linear(act, L.down, L.downBias);
        be.release?.(act);
      } else {
        down = mlpAdd(be, n, L.gate, L.up, L.down, biases, residual);
      }
      be.release?.(n);
    }
    if (down) {
      be.addInPlace(residual, down);
      be.release?.(down);
    }
    keepHidden(c.numLayers);
    // A step of prefill chunks that all stop short of their prompt's end needs no logits.
    if (batch.logitRows.length === 0) return finish({ logits: new Float32Array(0) });
    const last = be.selectRows(residual, batch.logitRows);
    const normed = be.rmsNorm(last, W.norm, c.rmsNormEps);
    const logitsT = be.linear(normed, W.lmHead);
    if (opts.argmaxOnly) {
      const n = opts.argmaxOnly.vocab;
      const argmax = be.argmaxRows ? be.argmaxRows(logitsT, n) : argmaxRowsOnHost(be.toHost(logitsT), c.vocabSize, n);
      return finish({ logits: new Float32Array(0), argmax });
    }
    if (opts.sampleRows) return finish(this.drawRows(logitsT, opts.sampleRows, opts.logprobs, opts.logprobAlternates));
    const logits = be.toHost(logitsT);
    return finish({ logits });
  }

  /**
   * The sampleRows option: each row's penalties applied to a copy of the logits, the rows drawn (on
   * the backend where it samples), then the logprobs asked — of each row's draw and, where given, of
   * its alternate token — from the raw logits.
   */
  private drawRows(
    logitsT: Tensor,
    { vocab, rows, penalties, dist }: NonNullable<ForwardOptions['sampleRows']>,
    topNs?: readonly (number | undefined)[],
    alternates?: readonly (number | undefined)[],
  ): Omit<ForwardResult, 'hiddenStates'> {
    const be = this.backend;
    if (!be.sampleRows && rows.some((r) => r.distRow !== undefined)) throw new Error(`forward: rows with distRow (draft distributions kept on the backend) need a backend with sampleRows; the ${be.name} backend has none`);
    const excludedProbs = rows.some((r) => r.exclude !== undefined || r.distRow !== undefined) ? new Float32Array(rows.length) : undefined;
    const penalised = penalties?.some((p) => p !== undefined) ? this.penalisedLogits(logitsT, penalties) : logitsT;
    const host = be.sampleRows ? undefined : be.toHost(penalised);
    const sampled = be.sampleRows ? be.sampleRows(penalised, vocab, rows, excludedProbs, dist) : sampleRowsOnHost(host!, this.config.vocabSize, vocab, rows, excludedProbs);
    if (penalised !== logitsT) be.release?.(penalised);
    const result: Omit<ForwardResult, 'hiddenStates'> = { logits: new Float32Array(0), sampled, ...(excludedProbs ? { excludedProbs } : {}) };
    if (!topNs?.some((k) => k !== undefined)) return result;
    // The raw logits on the host at most once, where a backend has no logprobRows.
    let hostLogits = penalised === logitsT ? host : undefined;
    const hostOf = () => (hostLogits ??= be.toHost(logitsT));
    const asks = (tokenOf: (r: number) => number | undefined) => topNs.map((k, r) => (k === undefined || tokenOf(r) === undefined ? undefined : { token: tokenOf(r)!, topN: k }));
    result.logprobs = this.rowLogprobs(logitsT, hostOf, vocab, asks((r) => sampled[r]));
    if (alternates?.some((t) => t !== undefined)) result.alternateLogprobs = this.rowLogprobs(logitsT, hostOf, vocab, asks((r) => alternates[r]));
    return result;
  }

  /** The logits with each row's penalties applied (a copy): on the backend where it can, else on the host. */
  private penalisedLogits(logitsT: Tensor, penalties: readonly (PenaltyRow | undefined)[]): Tensor {
    const be = this.backend;
    if (be.applyPenalties) return be.applyPenalties(logitsT, penalties);
    const x = be.toHost(logitsT).slice();
    applyPenaltyRows(x, this.config.vocabSize, penalties);
    return be.fromHost(x, [penalties.length, this.config.vocabSize]);
  }

  /**
   * The logprobs of the rows that ask (a token and how many alternatives): on the backend where it
   * has logprobRows and can return that many alternatives, else from the rows' logits on the host
   * (`hostOf`, read back once for the step).
   */
  private rowLogprobs(logitsT: Tensor, hostOf: () => Float32Array, vocab: number, asks: readonly (LogprobRow | undefined)[]): (Logprobs | undefined)[] {
    const be = this.backend;
    const cols = this.config.vocabSize;
    const asked = asks.flatMap((a, r) => (a === undefined ? [] : [r]));
    if (be.logprobRows && asked.every((r) => asks[r]!.topN <= (be.maxTopLogprobs ?? 0))) {
      const rowsT = asked.length === asks.length ? logitsT : be.selectRows(logitsT, Int32Array.from(asked));
      const got = be.logprobRows(rowsT, vocab, asked.map((r) => asks[r]!));
      if (rowsT !== logitsT) be.release?.(rowsT);
      const out: (Logprobs | undefined)[] = new Array(asks.length).fill(undefined);
      asked.forEach((r, i) => (out[r] = got[i]));
      return out;
    }
    const x = hostOf();
    return asks.map((a, r) => (a === undefined ? undefined : computeLogprobs(x.subarray(r * cols, r * cols + vocab), a.topN, a.token)));
  }

  /** Per-token cos/sin; dynamic NTK rescales per sequence from its longest position in this step. */
  private ropeRows(batch: ForwardBatch): RopeRows {
    if (this.staticRope) return this.staticRope.at(batch.positions);
    const n = batch.numTokens;
    const seqLen = new Int32Array(batch.numSeqs);
    for (let i = 0; i < n; i++) seqLen[batch.seqIndex[i]] = Math.max(seqLen[batch.seqIndex[i]], batch.positions[i] + 1);
    const perSeq = Array.from(seqLen, (len) => ropeFrequencies(this.config.rope, len));
    const inv = Array.from(batch.seqIndex, (s) => perSeq[s].invFreq);
    const factors = Array.from(batch.seqIndex, (s) => perSeq[s].attentionFactor);
    return ropeCosSin(batch.positions, inv, factors);
  }

}

/** Backend.argmaxRows on the host: rows of `cols` values, the first `n` of each considered. */
function argmaxRowsOnHost(x: Float32Array, cols: number, n: number): Int32Array {
  const rows = x.length / cols;
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) out[r] = argmax(x.subarray(r * cols, r * cols + n));
  return out;
}

/** Backend.sampleRows on the host: rows of `cols` logits, each drawn over its first `n` by drawSamplingRow. */
function sampleRowsOnHost(x: Float32Array, cols: number, n: number, rows: readonly GpuSamplingRow[], excludedProbs?: Float32Array): Int32Array {
  checkSamplingRows(x.length / cols, cols, n, rows, excludedProbs);
  return Int32Array.from(rows, (r, i) => {
    const { token, excludedProb } = drawSamplingRow(x.subarray(i * cols, i * cols + n), r);
    if (excludedProbs) excludedProbs[i] = excludedProb;
    return token;
  });
}
