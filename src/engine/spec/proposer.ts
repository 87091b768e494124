// The one interface every speculative proposer implements (draft model, EAGLE-3, n-gram, synthetic),
// and what they share: drawing draft tokens with the request's sampling transforms, and the target
// hidden states EAGLE-3 reads.

import { emptyTensor, type Backend, type GpuSamplingRow, type Tensor } from '../../backend/backend.js';
import { InvalidRequestError } from '../../errors.js';
import { Rng } from '../rng.js';
import { Sampler, TokenCounts, argmax, type DrawParams } from '../sampler.js';
import type { SpecMethod } from './config.js';

export type SeqId = string | number;

export interface ProposeInput {
  id: SeqId;
  /** The sequence so far (prompt + output). The target has KV for all but the last token. */
  tokens: readonly number[];
  /** Tokens to draft for it this step (0 = none). */
  numDrafts: number;
  /** The request's sampler: greedy or not, and the temperature/top-k/top-p/min-p drafts are drawn with. */
  sampler: Sampler;
}

export interface Proposal {
  /** At most numDrafts target-vocabulary ids; fewer (even none) when the proposer has nothing to say. */
  tokens: number[];
  /**
   * q_i, the distribution over the target vocabulary each draft token was drawn from, when drafts were
   * sampled. Absent: the drafts are deterministic (greedy or looked up), q = one-hot.
   */
  probs?: Float32Array[];
  /**
   * The same for drafts drawn on the backend (Backend.sampleRows writing each q_i to a row of a
   * tensor there): the verifier then draws on the backend too, and no distribution crosses to the
   * host. Not together with `probs`.
   */
  deviceProbs?: DeviceDraftProbs;
  /** Synthetic (lossy) proposer only: accept this many drafts whatever the target says. */
  forcedAccept?: number;
}

/** Sampled drafts' distributions on the backend: q_i is row rows[i] of dist, and q_i(x_i) is tokenProbs[i]. */
export interface DeviceDraftProbs {
  /** [rows, ≥ the sampling vocabulary] float32 on the target's backend (GpuSamplingRow.distRow). */
  dist: Tensor;
  rows: number[];
  tokenProbs: number[];
}

/** Target hidden states of consecutive positions [start, start + count), fused as EAGLE-3 reads them. */
export interface TargetFeatures {
  start: number;
  count: number;
  /** [count × width] float32, the captured layers concatenated per row in the proposer's order. */
  rows: Float32Array;
}

export interface VerifiedOutcome {
  id: SeqId;
  /** The sequence after this step: the input tokens, the accepted drafts, then the target's token. */
  tokens: readonly number[];
  numDrafts: number;
  numAccepted: number;
  /** Hidden states the target computed for the positions it keeps (only if the proposer asked for them). */
  targetFeatures?: TargetFeatures;
}

export interface Proposer {
  readonly method: SpecMethod;
  /** True only for the synthetic benchmarking proposer: its accepted tokens are not the target's. */
  readonly lossy: boolean;
  /** HF `hidden_states` indices the target must capture (fused in this order); empty if none. */
  readonly targetHiddenStateLayers: readonly number[];
  /** Draft up to input.numDrafts tokens for each sequence, in one batch. */
  propose(inputs: ProposeInput[]): Proposal[];
  /** The verifier's outcome: keep accepted tokens, roll back the rest from the proposer's own state. */
  onVerified(outcomes: VerifiedOutcome[]): void;
  /**
   * Hidden states of target positions computed outside a speculative step (prefill chunks). Only
   * proposers with targetHiddenStateLayers need it; a start before what it holds rolls it back.
   */
  observeTarget(id: SeqId, features: TargetFeatures): void;
  /** The sequence finished or was preempted: free everything held for it. */
  release(id: SeqId): void;
}

/** Length of the common prefix of two token lists. */
export function commonPrefixLength(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/**
 * Fuse captured target hidden states for rows [row, row + count) of a forward batch: each row is the
 * concatenation of `layers` (HF hidden_states indices) in order → [count × layers.length·hidden].
 */
export function fuseHiddenStates(hidden: Map<number, Float32Array>, layers: readonly number[], hiddenSize: number, row: number, count: number): Float32Array {
  const width = layers.length * hiddenSize;
  const out = new Float32Array(count * width);
  layers.forEach((layer, j) => {
    const h = hidden.get(layer);
    if (!h) throw new Error(`target hidden state ${layer} was not captured (pass captureHiddenStates: [${layers.join(', ')}] to forward)`);
    for (let r = 0; r < count; r++) out.set(h.subarray((row + r) * hiddenSize, (row + r + 1) * hiddenSize), r * width + j * hiddenSize);
  });
  return out;
}

const NO_COUNTS = new TokenCounts();

/**
 * How one sequence's drafts are chosen from a proposer's logits over the target vocabulary: argmax
 * when the request is greedy; otherwise a draw from the request's own temperature / top-k / top-p /
 * min-p applied to the draft logits (no penalties: q may be any distribution, the verifier corrects
 * it) with a stream of its own, returning q for the verifier.
 */
export class DraftTokenSampler {
  readonly greedy: boolean;
  private readonly sampler?: Sampler;
  private readonly rng?: Rng;
  private readonly knobs: DrawParams;

  constructor(target: Sampler) {
    this.greedy = target.greedy;
    this.knobs = target.drawParams;
    if (!this.greedy) {
      // A stream independent of the request's (which the verifier draws from), reproducible from its seed.
      const seed = BigInt.asUintN(64, BigInt(target.seed) ^ 0x5deece66dn);
      this.sampler = new Sampler({ ...target.params, presencePenalty: 0, frequencyPenalty: 0, repetitionPenalty: 1, seed: 0 }, target.vocabSize);
      this.rng = new Rng(seed);
    }
  }

  /** A draft token from logits over the target vocabulary (not modified), and q when sampled. */
  choose(logits: Float32Array): { token: number; q?: Float32Array } {
    if (this.greedy) {
      const token = argmax(logits);
      if (token < 0) throw new RangeError('draft logits are all -inf or NaN');
      return { token };
    }
    const q = this.sampler!.probabilities(logits, NO_COUNTS);
    return { token: drawFrom(q, this.rng!.next()), q };
  }

  /**
   * `choose` on the backend (Backend.sampleRows), the uniform taken from this drafter's stream as
   * `choose` takes it: greedy, a greedy row (the argmax); sampled, a row that draws drawDistribution's
   * token and writes q to row `distRow` of the pass's dist tensor (p(token) comes back as the row's
   * excluded probability).
   */
  row(distRow: number): GpuSamplingRow {
    if (this.greedy) return { ...this.knobs, u: 0 };
    return { ...this.knobs, u: this.rng!.next(), distRow };
  }

  /** `choose` for a greedy drafter given its logits' argmax (computed on the backend) instead of the logits. */
  chooseArgmax(id: number): { token: number; q?: Float32Array } {
    if (!this.greedy) throw new Error('DraftTokenSampler.chooseArgmax: this request samples its drafts, which needs the draft logits');
    if (id < 0) throw new RangeError('draft logits are all -inf or NaN');
    return { token: id };
  }
}

/**
 * A step's sampled drafts drawn on the backend (Backend.sampleRows): one dist tensor, an activation
 * of the step that its verification reads, with a row for each sampled draft handed out in pass
 * order, and what each pass's draws give the proposals. Shared by the draft model and EAGLE-3.
 */
export class BackendDraws {
  private next = 0;

  private constructor(readonly dist: Tensor) {}

  /** For the sampled drafters among `drafts` (each with how many it drafts), none when there are none. */
  static forStep(backend: Backend, vocab: number, drafts: readonly { drafter: DraftTokenSampler; numDrafts: number }[]): BackendDraws | undefined {
    const rows = drafts.reduce((a, d) => a + (d.drafter.greedy ? 0 : d.numDrafts), 0);
    return rows === 0 ? undefined : new BackendDraws(emptyTensor(backend, [rows, vocab]));
  }

  /** A pass's sampleRows rows (DraftTokenSampler.row), each sampled drafter's writing the next row of dist. */
  rows(drafters: readonly DraftTokenSampler[]): GpuSamplingRow[] {
    return drafters.map((d) => {
      const row = d.row(this.next);
      if (row.distRow !== undefined) this.next++;
      return row;
    });
  }

  /** The pass's draws into the proposals (one a row): each row's token, and a sampled one's q row and q(token). */
  take(proposals: readonly Proposal[], rows: readonly GpuSamplingRow[], tokens: ArrayLike<number>, tokenProbs: ArrayLike<number>): void {
    proposals.forEach((p, r) => {
      p.tokens.push(tokens[r]);
      const at = rows[r].distRow;
      if (at === undefined) return;
      const d = (p.deviceProbs ??= { dist: this.dist, rows: [], tokenProbs: [] });
      d.rows.push(at);
      d.tokenProbs.push(tokenProbs[r]);
    });
  }
}

/** Inverse-CDF draw over ids in ascending order from weights that need not sum to one; u in [0, 1). */
export function drawFrom(weights: ArrayLike<number>, u: number): number {
  let total = 0;
  for (let i = 0; i < weights.length; i++) total += weights[i];
  if (!(total > 0)) throw new RangeError('drawFrom: no probability mass to draw from');
  const target = u * total;
  let acc = 0;
  let last = -1;
  for (let i = 0; i < weights.length; i++) {
    if (weights[i] <= 0) continue;
    acc += weights[i];
    last = i;
    if (target < acc) return i;
  }
  return last; // u·total rounded onto the total itself
}

/** Throws unless a proposal is well formed for its input (a bug in a proposer, named). */
export function checkProposal(p: Proposal, input: ProposeInput, vocabSize: number, method: string): void {
  if (p.tokens.length > input.numDrafts) throw new Error(`${method} proposer drafted ${p.tokens.length} tokens for sequence ${input.id}, asked for at most ${input.numDrafts}`);
  for (const t of p.tokens) {
    if (!Number.isInteger(t) || t < 0 || t >= vocabSize) throw new InvalidRequestError(`${method} proposer drafted token id ${t}, outside the target vocabulary (0..${vocabSize - 1})`);
  }
  if (p.probs && p.probs.length !== p.tokens.length) throw new Error(`${method} proposer gave ${p.probs.length} draft distributions for ${p.tokens.length} tokens`);
  const d = p.deviceProbs;
  if (d && p.probs) throw new Error(`${method} proposer gave draft distributions both on the host and on the backend for sequence ${input.id}`);
  if (d && (d.rows.length !== p.tokens.length || d.tokenProbs.length !== p.tokens.length)) {
    throw new Error(`${method} proposer gave ${d.rows.length} device distribution rows and ${d.tokenProbs.length} draft probabilities for ${p.tokens.length} tokens`);
  }
  if (d && input.sampler.greedy) throw new Error(`${method} proposer gave draft distributions for a greedy sequence ${input.id} (its drafts are deterministic)`);
}
