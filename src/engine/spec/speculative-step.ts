// One speculative decode step over the running sequences: draft k tokens each, verify all windows
// in ONE target forward pass ([newest token, drafts] per sequence, varlen), accept losslessly,
// report what each sequence gained and how much target KV to keep, and tell the proposer. A step of
// plain greedy sequences reads back only each window row's argmax, not the logits; one whose drafts
// are all deterministic (no penalties) reads back each row's draw and one probability.
// Takes a minimal view of the engine (model, KV storage, per-sequence state), not the Engine class.

import type { KvCacheStorage, Tensor } from '../../backend/backend.js';
import type { ForwardResult, LlamaModel } from '../../model/llama.js';
import type { SequenceBlocks } from '../kv-cache.js';
import { maskPaddedVocab, type PenaltyRow, type Sampler, type TokenCounts } from '../sampler.js';
import { buildForwardBatch, type BatchRun } from './batch.js';
import { SpecDecodeMetrics } from './metrics.js';
import { checkProposal, fuseHiddenStates, type Proposal, type ProposeInput, type Proposer, type SeqId, type TargetFeatures, type VerifiedOutcome } from './proposer.js';
import { planSampledVerification, verifyDrafts, verifyDraftsByArgmax, verifyDraftsSampled, type SampledVerification, type VerifyFn, type VerifyResult } from './verifier.js';

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
  /**
   * Target logits that chose/verified each new token (views; row i for tokens[i]), for logprobs.
   * Absent when the window was verified without the logits (`verifyArgmax`, `verifySampled`).
   */
  tokenLogits?: Float32Array[];
  numDraftTokens: number;
  numAccepted: number;
  /** Truncate the sequence's target KV to this many positions (= old tokens.length + numAccepted). */
  keepKvTokens: number;
}

export interface SpeculativeDecoderOptions {
  /** k: drafts per sequence per step. */
  numSpeculativeTokens: number;
  /**
   * Replace the verifier (tests use a deliberately broken one to show the statistics catch it). It is
   * given logits, so a step with a replaced verifier always reads them back.
   */
  verify?: VerifyFn;
  /**
   * Ids the target may emit in `step`: the tokenizer's, when the model's vocabulary is padded beyond it
   * (the padded ids are masked as the engine masks them). Default: the model's vocab_size.
   */
  samplingVocabSize?: number;
  /**
   * `step` verifies a step whose every sequence samples plain greedily from the target's per-row
   * argmax (one id a row read back instead of [rows × vocab] logits). Default true; false always
   * reads the logits (to compare the two paths).
   */
  argmaxVerification?: boolean;
  /**
   * Windows of sequences without penalties whose drafts are deterministic (no `probs`) may be verified
   * from the backend's draws (`verifySampled`: each row's token and p of its draft read back instead of
   * its logits). Default true; false always reads the logits (to compare the two paths).
   */
  sampledVerification?: boolean;
}

/** One window's draws for `verifySampled`: its plan, and the backend's answer to the plan's rows. */
export interface WindowDraws {
  plan: SampledVerification;
  /** tokens.length tokens drawn for plan.rows. */
  draws: ArrayLike<number>;
  /** tokens.length values: p(exclude) of each row (Backend.sampleRows' excludedProbs). */
  excludedProbs: ArrayLike<number>;
}

/**
 * The one tensor the plans' rows take draft distributions from (the forward's sampleRows `dist`);
 * nothing when every window's drafts are deterministic. One proposer writes them all, so two
 * different tensors in a step are a bug, named.
 */
export function planDist(plans: Iterable<SampledVerification>): { dist?: Tensor } {
  let dist: Tensor | undefined;
  for (const p of plans) {
    if (!p.dist) continue;
    if (dist && dist !== p.dist) throw new Error('speculative verification: the windows\' draft distributions are in different tensors (one proposer must write them all to one)');
    dist = p.dist;
  }
  return dist ? { dist } : {};
}

/** The plans' per-row penalties for the forward's sampleRows (nothing when no window is penalised). */
function penaltiesOf(plans: readonly SampledVerification[]): { penalties?: (PenaltyRow | undefined)[] } {
  if (!plans.some((p) => p.penalties)) return {};
  return { penalties: plans.flatMap((p) => p.penalties ?? p.rows.map(() => undefined)) };
}

export class SpeculativeDecoder {
  readonly numSpeculativeTokens: number;
  readonly metrics: SpecDecodeMetrics;
  readonly samplingVocabSize: number;
  /**
   * Whether plain greedy steps may be verified from the target's argmax alone (see `verifyArgmax`):
   * not with a replaced verifier, which needs the logits.
   */
  readonly argmaxVerification: boolean;
  /** Whether qualifying windows may be verified from the backend's draws (see `verifySampled`); not with a replaced verifier. */
  readonly sampledVerification: boolean;
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
    this.argmaxVerification = (options.argmaxVerification ?? true) && options.verify === undefined;
    this.sampledVerification = (options.sampledVerification ?? true) && options.verify === undefined;
    const vocab = target.model.config.vocabSize;
    const usable = options.samplingVocabSize ?? vocab;
    if (!(Number.isInteger(usable) && usable >= 1 && usable <= vocab)) throw new RangeError(`SpeculativeDecoder: samplingVocabSize must be an integer in 1..${vocab} (the model's vocab_size), got ${usable}`);
    this.samplingVocabSize = usable;
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
   * every window row, and hands the logits to `verify` (or, when `canVerifyByArgmax`, the rows'
   * argmax over the sampling vocabulary to `verifyArgmax`).
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
    const vocab = this.target.model.config.vocabSize;
    const probsOf = this.hostProbs();
    return this.settle(windows, hiddenStates, windowRows, (w, i) => {
      const logits = windowLogits[i];
      const v = this.verify_({ drafts: w.proposal.tokens, probs: probsOf(w.proposal), logits, sampler: w.seq.sampler, counts: w.seq.counts, forcedAccept: w.proposal.forcedAccept });
      return { v, tokenLogits: v.tokens.map((_, j) => logits.subarray(j * vocab, (j + 1) * vocab)) };
    });
  }

  /**
   * A proposal's q on the host for verifying from the logits: its `probs`, or the rows of its
   * distributions on the backend (`deviceProbs`: a proposer that drew on the backend, verified from the
   * logits all the same — sampledVerification off, a replaced verifier, a window beside one that needs
   * the logits), each tensor read back once a step.
   */
  private hostProbs(): (p: Proposal) => Float32Array[] | undefined {
    const read = new Map<Tensor, Float32Array>();
    return (p) => {
      const d = p.deviceProbs;
      if (p.probs || !d) return p.probs;
      let host = read.get(d.dist);
      if (!host) read.set(d.dist, (host = this.target.model.backend.toHost(d.dist)));
      const cols = d.dist.shape[1];
      return d.rows.map((r) => host!.subarray(r * cols, (r + 1) * cols));
    };
  }

  /**
   * `verify` for windows whose sequences all sample plain greedily (`Sampler.argmaxOnly`: temperature
   * ~0, no penalties): from the target's argmax of each window row (the forward's `argmaxOnly` over
   * the sampling vocabulary, `tokens.length` ids per window) instead of its logits. Token for token
   * what `verify` gives from the same rows' logits (padded ids masked); the results carry no
   * tokenLogits, so such sequences cannot have logprobs.
   */
  verifyArgmax(windows: readonly SpecWindow[], windowArgmax: readonly ArrayLike<number>[], hiddenStates?: Map<number, Float32Array>, windowRows?: readonly number[]): SpecStepResult[] {
    if (!this.argmaxVerification) throw new Error('SpeculativeDecoder.verifyArgmax: this decoder verifies from the logits (a replaced verifier, or argmaxVerification: false)');
    return this.settle(windows, hiddenStates, windowRows, (w, i) => ({
      v: verifyDraftsByArgmax({ drafts: w.proposal.tokens, argmax: windowArgmax[i], sampler: w.seq.sampler, forcedAccept: w.proposal.forcedAccept }),
    }));
  }

  /**
   * Whether this window may be verified from the backend's draws (`verifySampled`): its drafts are
   * deterministic (q one-hot: n-gram, or a greedy draft pass) or their distributions are on the
   * backend (`deviceProbs`: a draft model sampling through Backend.sampleRows), and not the synthetic
   * proposer's forced acceptances; a greedy sequence's (argmax rows) only where argmax verification is on. A penalised
   * sequence's rows carry their penalties (each row's counts with the drafts before it:
   * planSampledVerification). Logprobs need the logits; that is the caller's to check.
   */
  canVerifySampled(w: SpecWindow): boolean {
    const s = w.seq.sampler;
    return this.sampledVerification && (!s.greedy || this.argmaxVerification) && w.proposal.probs === undefined && w.proposal.forcedAccept === undefined;
  }

  /**
   * The backend's sampling rows for a window `canVerifySampled` allows (tokens.length rows, one a
   * window row, in order), and the stream values they were made with; the stream does not move until
   * `verifySampled`. Greedy sequences get plain greedy rows (the argmax).
   */
  planSampled(w: SpecWindow): SampledVerification {
    if (!this.canVerifySampled(w)) throw new Error(`SpeculativeDecoder.planSampled: sequence ${w.seq.id}'s window must be verified from the logits (drafts sampled on the host, forced acceptance, or sampledVerification off)`);
    return planSampledVerification(w.proposal.tokens, w.seq.sampler, w.seq.counts, w.proposal.deviceProbs);
  }

  /**
   * `verify` from the backend's draws over each window's `planSampled` rows (Backend.sampleRows, or
   * the forward's sampleRows option) instead of its logits: token for token what `verify` gives from
   * the same rows' logits, each sequence's stream left where verifyDrafts leaves it. The results
   * carry no tokenLogits (no logprobs).
   */
  verifySampled(windows: readonly SpecWindow[], windowDraws: readonly WindowDraws[], hiddenStates?: Map<number, Float32Array>, windowRows?: readonly number[]): SpecStepResult[] {
    return this.settle(windows, hiddenStates, windowRows, (w, i) => {
      const { plan, draws, excludedProbs } = windowDraws[i];
      return { v: verifyDraftsSampled({ drafts: w.proposal.tokens, sampler: w.seq.sampler, plan, draws, excludedProbs }) };
    });
  }

  /** Whether a step over these sequences may be verified from the argmax alone (`verifyArgmax`). */
  canVerifyByArgmax(seqs: readonly { sampler: Sampler }[]): boolean {
    return this.argmaxVerification && seqs.every((s) => s.sampler.argmaxOnly);
  }

  /** Verify each window with `check`, then the bookkeeping both paths share: metrics, KV to keep, the proposer. */
  private settle(
    windows: readonly SpecWindow[],
    hiddenStates: Map<number, Float32Array> | undefined,
    windowRows: readonly number[] | undefined,
    check: (w: SpecWindow, i: number) => { v: VerifyResult; tokenLogits?: Float32Array[] },
  ): SpecStepResult[] {
    const model = this.target.model;
    const layers = this.proposer.targetHiddenStateLayers;
    if (layers.length > 0 && (!hiddenStates || !windowRows)) {
      throw new Error(`the ${this.proposer.method} proposer needs the target's hidden states of the verification rows: forward with captureHiddenStates: [${layers.join(', ')}] and pass windowRows`);
    }
    const results: SpecStepResult[] = [];
    const outcomes: VerifiedOutcome[] = [];
    windows.forEach((w, i) => {
      const s = w.seq;
      const k = w.proposal.tokens.length;
      const { v, tokenLogits } = check(w, i);
      this.metrics.observe(k, v.numAccepted);
      const n = s.tokens.length;
      let targetFeatures: TargetFeatures | undefined;
      if (layers.length > 0) {
        // Features of the positions the target keeps: the newest token and the accepted drafts.
        const count = v.numAccepted + 1;
        targetFeatures = { start: n - 1, count, rows: fuseHiddenStates(hiddenStates!, layers, model.config.hiddenSize, windowRows![i], count) };
      }
      outcomes.push({ id: s.id, tokens: [...s.tokens, ...v.tokens], numDrafts: k, numAccepted: v.numAccepted, targetFeatures });
      results.push({ id: s.id, tokens: v.tokens, ...(tokenLogits ? { tokenLogits } : {}), numDraftTokens: k, numAccepted: v.numAccepted, keepKvTokens: n + v.numAccepted });
    });
    this.proposer.onVerified(outcomes);
    return results;
  }

  /**
   * propose + one target forward over all windows + verify: a whole decode step for these sequences.
   * When every sequence samples plain greedily the forward returns each row's argmax over the
   * sampling vocabulary instead of the logits (one id a row crosses back), verified by `verifyArgmax`;
   * otherwise, when every window `canVerifySampled`, each row's draw and p of its draft (two values a
   * row), verified by `verifySampled`.
   */
  step(seqs: readonly SpecSequence[]): SpecStepResult[] {
    if (seqs.length === 0) return [];
    const { model, kv } = this.target;
    const vocab = model.config.vocabSize;
    const windows = this.propose(seqs);
    const runs: BatchRun[] = windows.map((w) => ({ blocks: w.seq.blocks, start: w.start, tokens: w.tokens }));
    const layers = this.proposer.targetHiddenStateLayers;
    const byArgmax = this.canVerifyByArgmax(seqs);
    const plans = !byArgmax && windows.every((w) => this.canVerifySampled(w)) ? windows.map((w) => this.planSampled(w)) : undefined;
    const out: ForwardResult = model.forward(buildForwardBatch(runs, 'all'), kv, {
      ...(layers.length > 0 ? { captureHiddenStates: [...layers] } : {}),
      ...(byArgmax ? { argmaxOnly: { vocab: this.samplingVocabSize } } : {}),
      ...(plans ? { sampleRows: { vocab: this.samplingVocabSize, rows: plans.flatMap((p) => p.rows), ...penaltiesOf(plans), ...planDist(plans) } } : {}),
    });
    const windowRows: number[] = [];
    let row = 0;
    for (const w of windows) {
      windowRows.push(row);
      row += w.tokens.length;
    }
    if (byArgmax) {
      const ids = out.argmax;
      if (!ids || ids.length !== row) throw new Error(`SpeculativeDecoder.step: the forward returned ${ids?.length ?? 'no'} argmax ids for ${row} window rows`);
      return this.verifyArgmax(windows, windows.map((w, i) => ids.subarray(windowRows[i], windowRows[i] + w.tokens.length)), out.hiddenStates, windowRows);
    }
    if (plans) {
      const { sampled, excludedProbs } = out;
      if (!sampled || sampled.length !== row) throw new Error(`SpeculativeDecoder.step: the forward returned ${sampled?.length ?? 'no'} draws for ${row} window rows`);
      // Windows without drafts have no excluded rows, so a step of only those returns no probabilities.
      const probs = excludedProbs ?? new Float32Array(row);
      const draws = windows.map((w, i) => {
        const [a, b] = [windowRows[i], windowRows[i] + w.tokens.length];
        return { plan: plans[i], draws: sampled.subarray(a, b), excludedProbs: probs.subarray(a, b) };
      });
      return this.verifySampled(windows, draws, out.hiddenStates, windowRows);
    }
    maskPaddedVocab(out.logits, vocab, this.samplingVocabSize);
    const windowLogits = windows.map((w, i) => out.logits.subarray(windowRows[i] * vocab, (windowRows[i] + w.tokens.length) * vocab));
    return this.verify(windows, windowLogits, out.hiddenStates, windowRows);
  }
}
