// Builds the proposer a parsed --speculative-config asks for, loading its model onto the target's backend.

import type { LlamaModel } from '../../model/llama.js';
import type { SpeculativeConfig } from './config.js';
import { DraftModelProposer, loadDraftModel } from './draft-model.js';
import { Eagle3Proposer, loadEagle3Head } from './eagle3.js';
import { NgramProposer } from './ngram.js';
import type { Proposer } from './proposer.js';
import { SyntheticProposer } from './synthetic.js';

export interface ProposerTarget {
  model: LlamaModel;
  /** The target's directory: lets the draft model's tokenizer be checked against it. */
  dir?: string;
}

export interface LoadProposerOptions {
  /** KV capacity of a draft model's / EAGLE-3 head's own cache, in tokens (default 16384). */
  kvCacheTokens?: number;
  blockSize?: number;
}

export function loadProposer(config: SpeculativeConfig, target: ProposerTarget, options: LoadProposerOptions = {}): Proposer {
  switch (config.method) {
    case 'ngram':
      return new NgramProposer(config.promptLookupMin!, config.promptLookupMax!);
    case 'synthetic':
      return new SyntheticProposer(config.acceptanceRates!, config.seed ?? 0);
    case 'draft_model':
      return new DraftModelProposer(loadDraftModel(config.model!, target.model, target.dir), options);
    case 'eagle3':
      return new Eagle3Proposer(loadEagle3Head(config.model!, target.model), target.model.config.numLayers, options);
  }
}
