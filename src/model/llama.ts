// The Llama-family forward pass (Llama, Mistral, Qwen2, Qwen3), written once against the Backend
// interface over a flattened batch: prefill chunks, decode tokens and verification windows alike.

import type { AttentionBatch, Backend, KvCacheStorage, Tensor } from '../backend/backend.js';
import type { ModelConfig } from './config.js';
import { ropeCosSin, ropeFrequencies } from './rope.js';
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
}

export interface ForwardResult {
  /** [logitRows.length × vocab] float32 logits. */
  logits: Float32Array;
  /** captured hidden states per requested index, [numTokens × hidden] each. */
  hiddenStates?: Map<number, Float32Array>;
}

export class LlamaModel {
  private readonly staticRope?: { invFreq: Float64Array; attentionFactor: number };
  readonly attentionScale: number;

  constructor(
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    readonly backend: Backend,
  ) {
    if (config.rope.type !== 'dynamic') this.staticRope = ropeFrequencies(config.rope, 0);
    this.attentionScale = 1 / Math.sqrt(config.headDim);
  }

  forward(batch: ForwardBatch, kv: KvCacheStorage, opts: ForwardOptions = {}): ForwardResult {
    const { backend: be, config: c, weights: W } = this;
    const { cos, sin } = this.ropeTables(batch);
    const capture = opts.captureHiddenStates ? new Map<number, Float32Array>() : undefined;

    let residual = be.embedding(W.embedTokens, batch.tokens);
    let x: Tensor = be.rmsNorm(residual, W.layers[0].inputNorm, c.rmsNormEps);
    for (let l = 0; l < c.numLayers; l++) {
      const L = W.layers[l];
      if (l > 0) x = be.addRmsNorm(x, residual, L.inputNorm, c.rmsNormEps);
      // HF's hidden_states[l]: the residual stream entering layer l.
      if (capture && opts.captureHiddenStates!.includes(l)) capture.set(l, be.toHost(residual).slice());

      const observe = opts.observeLinearInput;
      observe?.(l, 'qkv', be.toHost(x));
      const q = be.linear(x, L.q, L.qBias);
      const k = be.linear(x, L.k, L.kBias);
      const v = be.linear(x, L.v, L.vBias);
      if (L.qNorm && L.kNorm) {
        be.headRmsNorm(q, L.qNorm, c.headDim, c.rmsNormEps);
        be.headRmsNorm(k, L.kNorm, c.headDim, c.rmsNormEps);
      }
      be.rope(q, c.headDim, c.rope.rotaryDim, cos, sin);
      be.rope(k, c.headDim, c.rope.rotaryDim, cos, sin);
      be.writeKv(kv, l, k, v, batch.slots);
      const attn = be.attention(q, kv, l, batch, this.attentionScale, c.slidingWindows[l]);
      observe?.(l, 'o', be.toHost(attn));
      const o = be.linear(attn, L.o, L.oBias);

      const n = be.addRmsNorm(o, residual, L.postAttentionNorm, c.rmsNormEps);
      observe?.(l, 'gate_up', be.toHost(n));
      const gate = be.linear(n, L.gate, L.gateBias);
      const up = be.linear(n, L.up, L.upBias);
      const act = be.siluMul(gate, up);
      observe?.(l, 'down', be.toHost(act));
      x = be.linear(act, L.down, L.downBias);
    }
    be.addInPlace(residual, x);
    if (capture && opts.captureHiddenStates!.includes(c.numLayers)) capture.set(c.numLayers, be.toHost(residual).slice());
    // A step of prefill chunks that all stop short of their prompt's end needs no logits.
    if (batch.logitRows.length === 0) return { logits: new Float32Array(0), hiddenStates: capture };
    const last = be.selectRows(residual, batch.logitRows);
    const normed = be.rmsNorm(last, W.norm, c.rmsNormEps);
    const logits = be.toHost(be.linear(normed, W.lmHead));
    return { logits, hiddenStates: capture };
  }

  /** Per-token cos/sin; dynamic NTK rescales per sequence from its longest position in this step. */
  private ropeTables(batch: ForwardBatch): { cos: Float32Array; sin: Float32Array } {
    const n = batch.numTokens;
    if (this.staticRope) {
      return ropeCosSin(batch.positions, new Array(n).fill(this.staticRope.invFreq), new Array(n).fill(this.staticRope.attentionFactor));
    }
    const seqLen = new Int32Array(batch.numSeqs);
    for (let i = 0; i < n; i++) seqLen[batch.seqIndex[i]] = Math.max(seqLen[batch.seqIndex[i]], batch.positions[i] + 1);
    const perSeq = Array.from(seqLen, (len) => ropeFrequencies(this.config.rope, len));
    const inv = Array.from(batch.seqIndex, (s) => perSeq[s].invFreq);
    const factors = Array.from(batch.seqIndex, (s) => perSeq[s].attentionFactor);
    return ropeCosSin(batch.positions, inv, factors);
  }
}
