// Speculative-decoding counters, counted exactly as vLLM v1 counts them (vllm/v1/spec_decode/metrics.py):
// one "draft" per sequence per step that verified at least one drafted token.

/** The counters as the engine's stats and the server's /metrics expose them (all only grow). */
export interface SpecDecodeCounts {
  /** Sequences × steps that verified ≥ 1 drafted token. */
  numDrafts: number;
  /** Drafted tokens sent to verification. */
  numDraftTokens: number;
  /** Drafted tokens the verifier accepted (the bonus/correction token is not counted). */
  numAcceptedTokens: number;
  /** Accepted drafted tokens by position in the draft (0 = first drafted token). */
  acceptedTokensPerPos: number[];
}

export class SpecDecodeMetrics implements SpecDecodeCounts {
  numDrafts = 0;
  numDraftTokens = 0;
  numAcceptedTokens = 0;
  readonly acceptedTokensPerPos: number[];

  /** `numSpeculativeTokens` sizes the per-position counters (vLLM's position="0".."k-1" labels). */
  constructor(readonly numSpeculativeTokens: number) {
    this.acceptedTokensPerPos = new Array(numSpeculativeTokens).fill(0);
  }

  /**
   * One sequence's verification: `numDraftTokens` drafted, the first `numAccepted` accepted.
   * Does nothing for a sequence that drafted nothing this step (vLLM counts only scheduled drafts).
   */
  observe(numDraftTokens: number, numAccepted: number): void {
    if (!(Number.isInteger(numDraftTokens) && numDraftTokens >= 0 && Number.isInteger(numAccepted) && numAccepted >= 0 && numAccepted <= numDraftTokens)) {
      throw new RangeError(`SpecDecodeMetrics.observe: need 0 <= accepted (${numAccepted}) <= drafted (${numDraftTokens}), integers`);
    }
    if (numDraftTokens === 0) return;
    this.numDrafts++;
    this.numDraftTokens += numDraftTokens;
    this.numAcceptedTokens += numAccepted;
    for (let i = 0; i < numAccepted; i++) {
      while (this.acceptedTokensPerPos.length <= i) this.acceptedTokensPerPos.push(0);
      this.acceptedTokensPerPos[i]++;
    }
  }

  /** accepted / drafted tokens (0..1); NaN before any draft. */
  get acceptanceRate(): number {
    return acceptanceRate(this);
  }

  /** 1 + accepted / drafts: tokens each verification step yields per sequence; NaN before any draft. */
  get meanAcceptanceLength(): number {
    return meanAcceptanceLength(this);
  }

  /** accepted at position k / drafts, per position. */
  get perPositionAcceptanceRates(): number[] {
    return perPositionAcceptanceRates(this);
  }

  /** A copy of the counters (for stats endpoints and deltas). */
  snapshot(): SpecDecodeCounts {
    return { numDrafts: this.numDrafts, numDraftTokens: this.numDraftTokens, numAcceptedTokens: this.numAcceptedTokens, acceptedTokensPerPos: [...this.acceptedTokensPerPos] };
  }
}

export function acceptanceRate(c: SpecDecodeCounts): number {
  return c.numDraftTokens > 0 ? c.numAcceptedTokens / c.numDraftTokens : NaN;
}

export function meanAcceptanceLength(c: SpecDecodeCounts): number {
  return c.numDrafts > 0 ? 1 + c.numAcceptedTokens / c.numDrafts : NaN;
}

export function perPositionAcceptanceRates(c: SpecDecodeCounts): number[] {
  return c.acceptedTokensPerPos.map((a) => (c.numDrafts > 0 ? a / c.numDrafts : NaN));
}

/** Counters accumulated between two snapshots (what a benchmark scrapes before and after). */
export function specDecodeDelta(before: SpecDecodeCounts, after: SpecDecodeCounts): SpecDecodeCounts {
  const n = Math.max(before.acceptedTokensPerPos.length, after.acceptedTokensPerPos.length);
  return {
    numDrafts: after.numDrafts - before.numDrafts,
    numDraftTokens: after.numDraftTokens - before.numDraftTokens,
    numAcceptedTokens: after.numAcceptedTokens - before.numAcceptedTokens,
    acceptedTokensPerPos: Array.from({ length: n }, (_, i) => (after.acceptedTokensPerPos[i] ?? 0) - (before.acceptedTokensPerPos[i] ?? 0)),
  };
}
