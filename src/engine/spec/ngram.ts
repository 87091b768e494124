// Prompt-lookup (n-gram) proposer, as vLLM's: find the longest suffix n-gram of the sequence
// (n from prompt_lookup_max down to prompt_lookup_min) that occurred earlier, and propose the tokens
// that followed its earliest occurrence. No model, no state; drafts are deterministic (q one-hot).

import type { Proposal, ProposeInput, Proposer, SeqId, TargetFeatures, VerifiedOutcome } from './proposer.js';

/**
 * The tokens that followed the earliest earlier occurrence of the longest suffix n-gram with
 * min <= n <= max, at most k of them (fewer near the end of the sequence); [] when nothing matches.
 */
export function promptLookup(tokens: readonly number[], min: number, max: number, k: number): number[] {
  const len = tokens.length;
  for (let n = Math.min(max, len - 1); n >= min; n--) {
    const suffixStart = len - n;
    // An occurrence at i must be followed by at least one token, so i + n <= len - 1.
    for (let i = 0; i + n < len; i++) {
      let j = 0;
      while (j < n && tokens[i + j] === tokens[suffixStart + j]) j++;
      if (j === n) return tokens.slice(i + n, Math.min(i + n + k, len));
    }
  }
  return [];
}

export class NgramProposer implements Proposer {
  readonly method = 'ngram' as const;
  readonly lossy = false;
  readonly targetHiddenStateLayers: readonly number[] = [];

  constructor(
    readonly promptLookupMin: number,
    readonly promptLookupMax: number,
  ) {
    if (!(Number.isInteger(promptLookupMin) && promptLookupMin >= 1 && promptLookupMax >= promptLookupMin)) {
      throw new RangeError(`NgramProposer: need 1 <= prompt_lookup_min (${promptLookupMin}) <= prompt_lookup_max (${promptLookupMax})`);
    }
  }

  propose(inputs: ProposeInput[]): Proposal[] {
    return inputs.map((x) => ({ tokens: x.numDrafts > 0 ? promptLookup(x.tokens, this.promptLookupMin, this.promptLookupMax, x.numDrafts) : [] }));
  }

  onVerified(_outcomes: VerifiedOutcome[]): void {}
  observeTarget(_id: SeqId, _features: TargetFeatures): void {}
  release(_id: SeqId): void {}
}
