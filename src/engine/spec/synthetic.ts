// LOSSY benchmarking proposer: drafts filler tokens and makes the verifier accept them at fixed
// per-position rates, so speed can be measured at a chosen acceptance without a trained draft.
// Its output is NOT the target model's; config.ts only builds it with an explicit "lossy": true.

import { Rng } from '../rng.js';
import { SYNTHETIC_WARNING } from './config.js';
import { promptLookup } from './ngram.js';
import type { Proposal, ProposeInput, Proposer, SeqId, TargetFeatures, VerifiedOutcome } from './proposer.js';

export class SyntheticProposer implements Proposer {
  readonly method = 'synthetic' as const;
  readonly lossy = true;
  readonly warning = SYNTHETIC_WARNING;
  readonly targetHiddenStateLayers: readonly number[] = [];
  private readonly rng: Rng;

  /**
   * `acceptanceRates[i]`: probability that draft position i+1 is accepted (unconditional, as vLLM's
   * per-position acceptance rate is defined), so non-increasing; mean acceptance length = 1 + Σ rates.
   */
  constructor(
    readonly acceptanceRates: readonly number[],
    seed = 0,
  ) {
    acceptanceRates.forEach((r, i) => {
      if (!(r >= 0 && r <= 1) || (i > 0 && r > acceptanceRates[i - 1])) throw new RangeError(`SyntheticProposer: acceptance rates must be non-increasing probabilities, got [${acceptanceRates.join(', ')}]`);
    });
    this.rng = new Rng(seed);
  }

  propose(inputs: ProposeInput[]): Proposal[] {
    return inputs.map((x) => {
      const k = Math.min(x.numDrafts, this.acceptanceRates.length);
      if (k === 0) return { tokens: [] };
      // Filler: what prompt lookup finds, else the last token repeated. Its content does not matter.
      const tokens = promptLookup(x.tokens, 1, 3, k);
      while (tokens.length < k) tokens.push(x.tokens[x.tokens.length - 1]);
      let accept = 0;
      let reached = 1;
      while (accept < k) {
        const rate = this.acceptanceRates[accept];
        // P(accept i+1 | accepted i) = rate[i] / rate[i-1], which makes rate[i] the unconditional rate.
        if (reached <= 0 || this.rng.next() >= rate / reached) break;
        reached = rate;
        accept++;
      }
      return { tokens, forcedAccept: accept };
    });
  }

  onVerified(_outcomes: VerifiedOutcome[]): void {}
  observeTarget(_id: SeqId, _features: TargetFeatures): void {}
  release(_id: SeqId): void {}
}
