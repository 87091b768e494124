// Lossless verification of drafted tokens against the target's logits at the k+1 positions of one
// verification window. Greedy: accept while the draft equals the target's argmax (after penalties;
// without penalties `verifyDraftsByArgmax` does it from the backend's per-row argmax, no logits).
// Sampling: Leviathan/Chen rejection sampling against the target's FINAL distribution p (penalties,
// temperature, min-p, top-k, top-p exactly as without speculation), so the output is distributed
// exactly as if the target had sampled every token itself. Deterministic drafts, and sampled drafts
// whose distributions the backend holds, may be verified from the backend's draws instead of the
// logits (`verifyDraftsSampled`), with the same result.

import type { GpuSamplingRow, Tensor } from '../../backend/backend.js';
import { penaltyRow, type PenaltyRow, type Sampler, type TokenCounts } from '../sampler.js';
import { drawFrom, type DeviceDraftProbs } from './proposer.js';

export interface VerifyInput {
  /** Drafted target-vocabulary ids x_1..x_k. */
  drafts: readonly number[];
  /** q_i each draft was drawn from (over the target vocabulary); absent = deterministic drafts (q one-hot). */
  probs?: readonly Float32Array[];
  /** [(k + 1) × vocab] target logits: row i scores the token after the newest token and x_1..x_i. */
  logits: Float32Array;
  /** The sequence's sampler: its params shape p, its stream draws the acceptance tests. */
  sampler: Sampler;
  /** The sequence's counts before this step (penalties); left exactly as given on return. */
  counts: TokenCounts;
  /** LOSSY synthetic mode only: accept this many drafts whatever p says. */
  forcedAccept?: number;
}

export interface VerifyResult {
  /** How many drafts were accepted (0..k). */
  numAccepted: number;
  /** The accepted drafts, then the target's correction (on rejection) or bonus token: numAccepted + 1 ids. */
  tokens: number[];
}

export type VerifyFn = (input: VerifyInput) => VerifyResult;

/**
 * Verify one sequence's drafts. p at row i is computed with the counts of the tokens before it —
 * the accepted drafts x_1..x_i are added to `counts` while verifying (and removed before returning),
 * so presence/frequency/repetition penalties see the same history they would without speculation.
 *
 * Sampling, per draft i: accept with probability min(1, p_i(x_i) / q_i(x_i)) (one draw u ~ U[0,1)
 * from the sequence's stream: accept iff u·q < p); on rejection emit a token drawn from the residual
 * max(0, p_i − q_i) normalised, and stop; if all k are accepted, emit a bonus token drawn from p_{k+1}
 * by the sampler itself. Proof of losslessness: P(emit y at i) = min(p,q)(y) + (1 − Σ min(p,q))·
 * (p − q)⁺(y)/Σ(p − q)⁺ = p(y), since Σ(p − q)⁺ = 1 − Σ min(p, q).
 */
export function verifyDrafts(input: VerifyInput): VerifyResult {
  const { drafts, probs, logits, sampler, counts } = input;
  const k = drafts.length;
  const vocab = sampler.vocabSize;
  if (logits.length !== (k + 1) * vocab) throw new RangeError(`verifyDrafts: ${k} drafts need ${(k + 1) * vocab} logits (k+1 rows of ${vocab}), got ${logits.length}`);
  if (probs && probs.length !== k) throw new RangeError(`verifyDrafts: ${k} drafts but ${probs.length} draft distributions`);
  const row = (i: number) => logits.subarray(i * vocab, (i + 1) * vocab);
  const added: number[] = [];
  const accept = (x: number) => {
    counts.addOutput(x);
    added.push(x);
  };
  try {
    if (input.forcedAccept !== undefined) {
      const a = Math.max(0, Math.min(k, input.forcedAccept));
      for (let i = 0; i < a; i++) accept(drafts[i]);
      return { numAccepted: a, tokens: [...added, sampler.sample(row(a), counts)] };
    }
    for (let i = 0; i < k; i++) {
      const x = drafts[i];
      if (sampler.greedy) {
        const t = sampler.sample(row(i), counts); // argmax after penalties; draws nothing
        if (t !== x) return { numAccepted: i, tokens: [...added, t] };
        accept(x);
        continue;
      }
      const p = sampler.probabilities(row(i), counts);
      const q = probs?.[i];
      const qx = q ? q[x] : 1;
      const u = sampler.rng.next();
      if (qx > 0 && u * qx < p[x]) {
        accept(x);
        continue;
      }
      return { numAccepted: i, tokens: [...added, drawFrom(residual(p, q, x), sampler.rng.next())] };
    }
    return { numAccepted: k, tokens: [...added, sampler.sample(row(k), counts)] };
  } finally {
    for (let j = added.length - 1; j >= 0; j--) counts.removeOutput(added[j]);
  }
}

export interface ArgmaxVerifyInput {
  /** Drafted target-vocabulary ids x_1..x_k. */
  drafts: readonly number[];
  /** k + 1 ids: the target's argmax at each row of the window (-1 where every logit is -inf or NaN). */
  argmax: ArrayLike<number>;
  /** The sequence's sampler; must be plain greedy (`argmaxOnly`: no penalties), which is what makes the argmax enough. */
  sampler: Sampler;
  /** LOSSY synthetic mode only: accept this many drafts whatever the target says. */
  forcedAccept?: number;
}

/**
 * Greedy verification from the target's per-row argmax alone (the backend's `argmaxRows`), with no
 * logits read back: accept while x_i equals the argmax of row i−1, then emit the argmax of the first
 * mismatching row, or of the last row (the bonus token) when all k are accepted. With no penalties
 * the sampler's greedy choice is exactly the row's argmax, so this is `verifyDrafts` token for token.
 */
export function verifyDraftsByArgmax(input: ArgmaxVerifyInput): VerifyResult {
  const { drafts, argmax, sampler } = input;
  const k = drafts.length;
  if (argmax.length !== k + 1) throw new RangeError(`verifyDraftsByArgmax: ${k} drafts need ${k + 1} argmax ids (one per window row), got ${argmax.length}`);
  if (!sampler.argmaxOnly) throw new Error('verifyDraftsByArgmax: the sequence does not sample plain greedily (temperature > 0 or penalties); its drafts must be verified from the logits');
  if (input.forcedAccept !== undefined) return emitGreedy(drafts, argmax, sampler, Math.max(0, Math.min(k, input.forcedAccept)));
  return acceptWhileGreedy(drafts, argmax, sampler);
}

/** Greedy verification from each row's greedy choice (`ids`, k + 1): accept while x_i equals row i − 1's choice, then emit the next choice. */
function acceptWhileGreedy(drafts: readonly number[], ids: ArrayLike<number>, sampler: Sampler): VerifyResult {
  let i = 0;
  while (i < drafts.length && drafts[i] === ids[i]) i++;
  return emitGreedy(drafts, ids, sampler, i);
}

function emitGreedy(drafts: readonly number[], ids: ArrayLike<number>, sampler: Sampler, numAccepted: number): VerifyResult {
  const t = ids[numAccepted];
  sampler.chose(t); // throws, as sampling the row would, when every logit of the row is -inf or NaN
  return { numAccepted, tokens: [...drafts.slice(0, numAccepted), t] };
}

/**
 * What the backend draws for one window verified without its logits (`verifyDraftsSampled`): a
 * sampling row per window row, and the values of the sequence's stream the verification may take.
 */
export interface SampledVerification {
  /**
   * k + 1 rows for Backend.sampleRows, in window order. Sampled requests: row i < k excludes draft x_i
   * with u = v_(i+1) (its residual draw, should x_i be rejected) and returns p_i(x_i); row k is the
   * bonus token's plain draw with u = v_k. Greedy requests: k + 1 plain greedy rows (the argmax).
   * Drafts with distributions on the backend: row i < k also names q_i's row of `dist` (its residual
   * is max(0, p_i − q_i)).
   */
  rows: GpuSamplingRow[];
  /** The tensor the rows' distRow index (sampled drafts' distributions on the backend); absent: drafts are deterministic. */
  dist?: Tensor;
  /** q_i(x_i) of each draft, with `dist`: the acceptance test compares v_i · q_i(x_i) with p_i(x_i). */
  draftProbs?: readonly number[];
  /** v_0..v_k, the stream's next k + 1 values (drawn from a copy: the stream itself has not moved); empty when greedy. */
  values: Float64Array;
  /**
   * A penalised request's k + 1 rows' penalties (Backend.applyPenalties before the draws): row i's
   * are those of the request's counts with drafts x_1..x_i added as output, as verifyDrafts counts
   * them when it computes p_i. Absent without penalties.
   */
  penalties?: (PenaltyRow | undefined)[];
}

/**
 * The rows to draw one window's verification on the backend, for drafts with q one-hot (no `probs`)
 * or with their distributions on the backend (`deviceProbs`: each draft's row then names q_i's row);
 * a penalised request's rows also get their penalties (`counts`: the request's, left as they were).
 * verifyDrafts takes from the stream, in order, one value per
 * acceptance test and one for the residual or bonus draw that ends the window, so the values it would
 * use are the stream's next k + 1 whatever happens: row i's residual draw would follow test i, and the
 * bonus draw would follow test k − 1. They are read from a clone; `verifyDraftsSampled` moves the
 * stream on by as many as verifyDrafts would have taken.
 */
export function planSampledVerification(drafts: readonly number[], sampler: Sampler, counts?: TokenCounts, deviceProbs?: DeviceDraftProbs): SampledVerification {
  if (sampler.penalised && !counts) throw new RangeError('planSampledVerification: a penalised request needs its token counts (each row\'s penalties see the drafts before it)');
  const k = drafts.length;
  if (deviceProbs && (sampler.greedy || deviceProbs.rows.length !== k || deviceProbs.tokenProbs.length !== k)) {
    throw new RangeError(`planSampledVerification: draft distributions need a sampled request and one row and probability a draft (${k} drafts, ${deviceProbs.rows.length} rows, ${deviceProbs.tokenProbs.length} probabilities${sampler.greedy ? ', greedy request' : ''})`);
  }
  const penalties = sampler.penalised ? windowPenalties(drafts, counts!, sampler) : undefined;
  if (sampler.greedy) return { rows: Array.from({ length: k + 1 }, () => sampler.drawRow()), values: new Float64Array(0), ...(penalties ? { penalties } : {}) };
  const stream = sampler.rng.clone();
  const values = Float64Array.from({ length: k + 1 }, () => stream.next());
  const knobs = sampler.drawParams;
  const rows: GpuSamplingRow[] = drafts.map((x, i) => ({ ...knobs, u: values[i + 1], exclude: x, ...(deviceProbs ? { distRow: deviceProbs.rows[i] } : {}) }));
  rows.push({ ...knobs, u: values[k] });
  return { rows, values, ...(penalties ? { penalties } : {}), ...(deviceProbs ? { dist: deviceProbs.dist, draftProbs: deviceProbs.tokenProbs } : {}) };
}

/** Row i's penalties: `counts` with x_1..x_i added as output (and taken out again before returning). */
function windowPenalties(drafts: readonly number[], counts: TokenCounts, sampler: Sampler): (PenaltyRow | undefined)[] {
  const rows: (PenaltyRow | undefined)[] = [penaltyRow(counts, sampler.params)];
  try {
    for (const x of drafts) {
      counts.addOutput(x);
      rows.push(penaltyRow(counts, sampler.params));
    }
  } finally {
    for (let j = rows.length - 2; j >= 0; j--) counts.removeOutput(drafts[j]);
  }
  return rows;
}

export interface SampledVerifyInput {
  /** Drafted target-vocabulary ids x_1..x_k (deterministic, q one-hot, or with q on the backend: plan.draftProbs). */
  drafts: readonly number[];
  /** The sequence's sampler; its stream is moved on here. */
  sampler: Sampler;
  /** What `planSampledVerification` gave for these drafts (before the stream moved). */
  plan: SampledVerification;
  /** k + 1 tokens the backend drew for plan.rows. */
  draws: ArrayLike<number>;
  /** k + 1 values: for row i < k, p_i(x_i) as the backend returned it for the excluded draft (row k's is unused). */
  excludedProbs: ArrayLike<number>;
}

/**
 * `verifyDrafts` for deterministic drafts, and for sampled drafts whose distributions the backend
 * holds, from the backend's draws (Backend.sampleRows over the rows of `planSampledVerification`)
 * instead of the logits: token for token what verifyDrafts gives from the same rows, with the stream
 * left at the same place. Draft i is accepted iff q_i(x_i) > 0 and v_i · q_i(x_i) < p_i(x_i) (q one-hot:
 * v_i < p_i(x_i)), and a rejection at i emits drawFrom(max(0, p_i − q_i), v_(i+1)), which is row i's
 * draw; all accepted emits sampler.sample(row k) with v_k, row k's draw. verifyDrafts took
 * i + 2 values on a rejection at i, k + 1 when all were accepted. Greedy: the argmax rows, verified as
 * `verifyDraftsByArgmax` does. (A row whose logits are all -inf or NaN fails the backend's draw even
 * where verifyDrafts would have stopped before it: the same error, for a model that is broken anyway.)
 */
export function verifyDraftsSampled(input: SampledVerifyInput): VerifyResult {
  const { drafts, sampler, plan, draws, excludedProbs } = input;
  const k = drafts.length;
  if (draws.length !== k + 1 || excludedProbs.length !== k + 1 || plan.rows.length !== k + 1) {
    throw new RangeError(`verifyDraftsSampled: ${k} drafts need ${k + 1} rows, draws and excluded probabilities, got ${plan.rows.length}, ${draws.length} and ${excludedProbs.length}`);
  }
  // Greedy: each row's draw is its argmax (after the row's penalties, when the plan has them).
  if (sampler.greedy) return acceptWhileGreedy(drafts, draws, sampler);
  if (plan.values.length !== k + 1) throw new RangeError('verifyDraftsSampled: the plan is not a sampled one of these drafts (planSampledVerification)');
  const q = plan.draftProbs;
  const accepts = (i: number) => (q ? q[i] > 0 && plan.values[i] * q[i] < excludedProbs[i] : plan.values[i] < excludedProbs[i]);
  let i = 0;
  while (i < k && accepts(i)) i++;
  const token = draws[i];
  sampler.chose(token); // throws, as sampling the row would, when every logit of the row is -inf or NaN
  const taken = i < k ? i + 2 : k + 1;
  for (let j = 0; j < taken; j++) sampler.rng.next();
  return { numAccepted: i, tokens: [...drafts.slice(0, i), token] };
}

/** max(0, p − q), with q one-hot at x when absent; p itself if rounding left no mass. */
function residual(p: Float32Array, q: Float32Array | undefined, x: number): Float32Array {
  const r = new Float32Array(p.length);
  let total = 0;
  for (let y = 0; y < p.length; y++) {
    const v = p[y] - (q ? q[y] : y === x ? 1 : 0);
    if (v > 0) {
      r[y] = v;
      total += v;
    }
  }
  return total > 0 ? r : p;
}
