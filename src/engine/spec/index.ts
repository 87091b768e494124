// Speculative decoding: the public surface the engine, CLI and benchmarks use.

export { parseSpeculativeConfig, SPEC_METHODS, SPEC_CONFIG_KEYS, SYNTHETIC_WARNING, DEFAULT_PROMPT_LOOKUP, type SpeculativeConfig, type SpecMethod } from './config.js';
export { loadProposer, type ProposerTarget, type LoadProposerOptions } from './load-proposer.js';
export { SpeculativeDecoder, type SpecTarget, type SpecSequence, type SpecWindow, type SpecStepResult, type SpeculativeDecoderOptions } from './speculative-step.js';
export { verifyDrafts, type VerifyInput, type VerifyResult, type VerifyFn } from './verifier.js';
export { SpecDecodeMetrics, acceptanceRate, meanAcceptanceLength, perPositionAcceptanceRates, specDecodeDelta, type SpecDecodeCounts } from './metrics.js';
export type { Proposer, Proposal, ProposeInput, VerifiedOutcome, TargetFeatures, SeqId } from './proposer.js';
export { DraftModelProposer, loadDraftModel, checkSameVocabulary } from './draft-model.js';
export { Eagle3Proposer, loadEagle3Head } from './eagle3.js';
export { NgramProposer, promptLookup } from './ngram.js';
export { SyntheticProposer } from './synthetic.js';
export { generateWithSpeculation, type LoopRequest, type LoopOptions, type LoopResult } from './generate-loop.js';
