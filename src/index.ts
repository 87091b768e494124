// Public library surface of tachyon.
export { LLM, collect, type LoadOptions, type GenerateParams, type GenerateChunk, type GenerationResult, type Usage, type Timings } from './llm.js';
export type { SamplingParams } from './engine/sampling-params.js';
export type { FinishReason } from './engine/engine.js';
export type { ChatMessage } from './model/chat-template.js';
export { TachyonError, ModelLoadError, InvalidRequestError, CapacityError } from './errors.js';
