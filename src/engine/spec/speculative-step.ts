// One speculative decode step over the running sequences: draft k tokens each, verify all windows
// in ONE target forward pass ([newest token, drafts] per sequence, varlen), accept losslessly,
// report what each sequence gained and how much target KV to keep, and tell the proposer.
// Takes a minimal view of the engine (model, KV storage, per-sequence state), not the Engine class.

import type { KvCacheStorage } from '../../backend/backend.js';
import type { ForwardResult, LlamaModel } from '../../model/llama.js';
import type { SequenceBlocks } from '../kv-cache.js';
import type { Sampler, TokenCounts } from '../sampler.js';
import { buildForwardBatch, type BatchRun } from './batch.js';
import { SpecDecodeMetrics } from './metrics.js';
import { checkProposal, fuseHiddenStates, type Proposal, type ProposeInput, type Proposer, type SeqId, type TargetFeatures, type VerifiedOutcome } from './proposer.js';
import { verifyDrafts, type VerifyFn } from './verifier.js';

export interface SpecTarget {
  model: LlamaModel;
  kv: KvCacheStorage;
}

/** A running decode sequence, as the engine holds it. */
export interface SpecSequence {
  id: SeqId;
  /** Prompt + output so far. The target KV holds positions 0..tokens.length-2 (all but the newest). */
  tokens: readonly number[];
  /** Its target KV blocks; the step reserves tokens.length + drafts positions (CapacityError if it cannot). */
  blocks: SequenceBlocks;
  sampler: Sampler;
  /** Prompt + output counts (penalties); unchanged by the step — add the returned tokens yourself. */
  counts: TokenCounts;
  /** Cap on this sequence's drafts this step, e.g. max_tokens − output − 1 (default: k). */
  maxDraftTokens?: number;
}

/** One sequence's verification window: its newest token and drafts, at positions start.. */
export interface SpecWindow {
  seq: SpecSequence;
  proposal: Proposal;
  /** Position of the newest token (= tokens.length − 1 of the sequence). */
  start: number;
  /** [newest token, ...drafts]: the target computes all of them, with logits for every one. */
  tokens: number[];
}

export interface SpecStepResult {
  id: SeqId;
  /** New tokens in order: accepted drafts, then the target's correction or bonus token (1..k+1). */
  tokens: number[];
  /** Target logits that chose/verified each new token (views; row i for tokens[i]), for logprobs. */
  tokenLogits: Float32Array[];
  numDraftTokens: number;
  numAccepted: number;
  /** Truncate the sequence's target KV to this many positions (= old tokens.length + numAccepted). */
  keepKvTokens: number;
}

export interface SpeculativeDecoderOptions {
  /** k: drafts per sequence per step. */
  numSpeculativeTokens: number;
  /** Replace the verifier (tests use a deliberately broken one to show the statistics catch it). */
  verify?: VerifyFn;
}

export class SpeculativeDecoder {
  readonly numSpeculativeTokens: number;
  readonly metrics: SpecDecodeMetrics;
  private readonly verify_: VerifyFn;

  constructor(
    readonly target: SpecTarget,
    readonly proposer: Proposer,
    options: SpeculativeDecoderOptions,
  ) {
    const k = options.numSpeculativeTokens;
    if (!(Number.isInteger(k) && k >= 0)) throw new RangeError(`SpeculativeDecoder: numSpeculativeTokens must be an integer >= 0, got ${k}`);
    this.numSpeculativeTokens = k;
    this.metrics = new SpecDecodeMetrics(k);
    this.verify_ = options.verify ?? verifyDrafts;
  }

  /** Target hidden-state layers to capture in every target forward (prefill too); empty if none. */
  get captureHiddenStates(): readonly number[] {
    return this.proposer.targetHiddenStateLayers;
  }

  /**
   * Hand the proposer the target's hidden states of a forward pass run outside `step` (a prefill
   * chunk): rows [row, row + count) of the batch hold positions [start, start + count) of `id`.
   * Needed only when captureHiddenStates is non-empty.
   */
  observePrefill(id: SeqId, start: number, count: number, hiddenStates: Map<number, Float32Array> | undefined, row: number): void {
    const layers = this.proposer.targetHiddenStateLayers;
    if (layers.length === 0 || count === 0) return;
    if (!hiddenStates) throw new Error(`the ${this.proposer.method} proposer needs target hidden states: run the forward with captureHiddenStates: [${layers.join(', ')}]`);
    const rows = fuseHiddenStates(hiddenStates, layers, this.target.model.config.hiddenSize, row, count);
    this.proposer.observeTarget(id, { start, count, rows });
  }

  /** The sequence is finished or preempted: free the proposer's state for it. */
  release(id: SeqId): void {
    this.proposer.release(id);
  }

  /**
   * Draft for each sequence and reserve its verification window in the target KV
   * (tokens.length + drafts positions; CapacityError if the pool is short — reserve k+1 beforehand).
   * The engine puts each window's tokens at positions start.. into its step's batch, with logits for
   * every window row, and hands the logits to `verify`.
   */
  propose(seqs: readonly SpecSequence[]): SpecWindow[] {
    const vocab = this.target.model.config.vocabSize;
    const inputs: ProposeInput[] = seqs.map((s) => {
      if (s.tokens.length === 0) throw new RangeError(`sequence ${s.id} has no tokens`);
      const cap = s.maxDraftTokens ?? this.numSpeculativeTokens;
      return { id: s.id, tokens: s.tokens, numDrafts: Math.max(0, Math.min(this.numSpeculativeTokens, cap)), sampler: s.sampler };
    });
    const active = inputs.filter((x) => x.numDrafts > 0);
    const drafted = active.length > 0 ? this.proposer.propose(active) : [];
    const proposalOf = new Map(active.map((x, j) => [x, drafted[j]]));
    return seqs.map((s, i) => {
      const proposal: Proposal = proposalOf.get(inputs[i]) ?? { tokens: [] };
      checkProposal(proposal, inputs[i], vocab, this.proposer.method);
      const n = s.tokens.length;
      s.blocks.reserve(n + proposal.tokens.length);
      return { seq: s, proposal, start: n - 1, tokens: [s.tokens[n - 1], ...proposal.tokens] };
    });
  }

  /**
   * Verify every window from the target's logits of its rows ([tokens.length × vocab] per window),
   * update the metrics and tell the proposer. `hiddenStates` (the forward's captured layers) and
   * `windowRows` (batch row of each window's first token) are required when captureHiddenStates is
   * non-empty. The sequences' counts are left unchanged.
   */
  verify(windows: readonly SpecWindow[], windowLogits: readonly Float32Array[], hiddenStates?: Map<number, Float32Array>, windowRows?: readonly number[]): SpecStepResult[] {
    const model = this.target.model;
    const vocab = model.config.vocabSize;
    const layers = this.proposer.targetHiddenStateLayers;
    if (layers.length > 0 && (!hiddenStates || !windowRows)) {
      throw new Error(`the ${this.proposer.method} proposer needs the target's hidden states of the verification rows: forward with captureHiddenStates: [${layers.join(', ')}] and pass windowRows`);
    }
    const results: SpecStepResult[] = [];
    const outcomes: VerifiedOutcome[] = [];
    windows.forEach((w, i) => {
      const { seq: s, proposal: p } = w;
      const k = p.tokens.length;
      const logits = windowLogits[i];
      const v = this.verify_({ drafts: p.tokens, probs: p.probs, logits, sampler: s.sampler, counts: s.counts, forcedAccept: p.forcedAccept });
      this.metrics.observe(k, v.numAccepted);
      const n = s.tokens.length;
      let targetFeatures: TargetFeatures | undefined;
      if (layers.length > 0) {
        // Features of the positions the target keeps: the newest token and the accepted drafts.
        const count = v.numAccepted + 1;
        targetFeatures = { start: n - 1, count, rows: fuseHiddenStates(hiddenStates!, layers, model.config.hiddenSize, windowRows![i], count) };
      }
      outcomes.push({ id: s.id, tokens: [...s.tokens, ...v.tokens], numDrafts: k, numAccepted: v.numAccepted, targetFeatures });
      results.push({
        id: s.id,
        tokens: v.tokens,
        tokenLogits: v.tokens.map((_, j) => logits.subarray(j * vocab, (j + 1) * vocab)),
        numDraftTokens: k,
        numAccepted: v.numAccepted,
        keepKvTokens: n + v.numAccepted,
      });
    });
    this.proposer.onVerified(outcomes);
    return results;
  }

  /** propose + one target forward over all windows + verify: a whole decode step for these sequences. */
  step(seqs: readonly SpecSequence[]): SpecStepResult[] {
    if (seqs.length === 0) return [];
    const { model, kv } = this.target;
    const vocab = model.config.vocabSize;
    const windows = this.propose(seqs);
    const runs: BatchRun[] = windows.map((w) => ({ blocks: w.seq.blocks, start: w.start, tokens: w.tokens }));
    const layers = this.proposer.targetHiddenStateLayers;
    const out: ForwardResult = model.forward(buildForwardBatch(runs, 'all'), kv, layers.length > 0 ? { captureHiddenStates: [...layers] } : {});
    const windowRows: number[] = [];
    let row = 0;
    const windowLogits = windows.map((w) => {
      windowRows.push(row);
      const l = out.logits.subarray(row * vocab, (row + w.tokens.length) * vocab);
      row += w.tokens.length;
      return l;
    });
    return this.verify(windows, windowLogits, out.hiddenStates, windowRows);
  }
}
