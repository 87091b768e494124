// What the caller may ask of one generation: the sampling knobs vLLM and the OpenAI API expose,
// with their defaults, and the check that rejects values a sampler cannot honour.

import { InvalidRequestError } from '../errors.js';

export interface SamplingParams {
  /** 0 means greedy (argmax). */
  temperature: number;
  /** 0 or -1 disables top-k. */
  topK: number;
  /** 1 disables top-p (nucleus). */
  topP: number;
  /** 0 disables min-p. */
  minP: number;
  /** OpenAI-style additive penalties over the generated tokens, in [-2, 2]. */
  presencePenalty: number;
  frequencyPenalty: number;
  /** HF/vLLM multiplicative penalty over prompt and generated tokens; 1 disables. */
  repetitionPenalty: number;
  /** Seed for this request's random stream; undefined picks one at random. */
  seed?: number;
  maxTokens: number;
  /** Strings that end generation; the text returned stops before them. */
  stop: string[];
  /** Token ids that end generation besides the model's eos ids. */
  stopTokenIds: number[];
  /** Keep generating past eos ids (benchmarks). */
  ignoreEos: boolean;
  /** Do not count eos as an output token to skip: keep special tokens out of the text. */
  skipSpecialTokens: boolean;
}

export const DEFAULT_SAMPLING: SamplingParams = {
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  presencePenalty: 0,
  frequencyPenalty: 0,
  repetitionPenalty: 1,
  seed: undefined,
  maxTokens: 16,
  stop: [],
  stopTokenIds: [],
  ignoreEos: false,
  skipSpecialTokens: true,
};

/** Fill defaults and reject values no sampler can honour, naming the parameter. */
export function resolveSamplingParams(partial: Partial<SamplingParams> = {}, defaults: SamplingParams = DEFAULT_SAMPLING): SamplingParams {
  const p: SamplingParams = { ...defaults };
  for (const [key, value] of Object.entries(partial)) {
    if (value !== undefined) (p as unknown as Record<string, unknown>)[key] = value;
  }
  const bad = (name: string, why: string): never => {
    throw new InvalidRequestError(`${name} ${why}`);
  };
  if (!Number.isFinite(p.temperature) || p.temperature < 0) bad('temperature', `must be >= 0, got ${p.temperature}`);
  if (!Number.isInteger(p.topK) || p.topK < -1) bad('top_k', `must be an integer >= -1 (-1 or 0 disables), got ${p.topK}`);
  if (!(p.topP > 0 && p.topP <= 1)) bad('top_p', `must be in (0, 1], got ${p.topP}`);
  if (!(p.minP >= 0 && p.minP <= 1)) bad('min_p', `must be in [0, 1], got ${p.minP}`);
  if (!(p.presencePenalty >= -2 && p.presencePenalty <= 2)) bad('presence_penalty', `must be in [-2, 2], got ${p.presencePenalty}`);
  if (!(p.frequencyPenalty >= -2 && p.frequencyPenalty <= 2)) bad('frequency_penalty', `must be in [-2, 2], got ${p.frequencyPenalty}`);
  if (!(p.repetitionPenalty > 0 && Number.isFinite(p.repetitionPenalty))) bad('repetition_penalty', `must be > 0, got ${p.repetitionPenalty}`);
  if (!Number.isInteger(p.maxTokens) || p.maxTokens < 1) bad('max_tokens', `must be an integer >= 1, got ${p.maxTokens}`);
  if (p.seed !== undefined && !Number.isSafeInteger(p.seed)) bad('seed', `must be an integer, got ${p.seed}`);
  if (!Array.isArray(p.stop) || p.stop.some((s) => typeof s !== 'string' || s.length === 0)) bad('stop', 'must be a list of non-empty strings');
  if (!Array.isArray(p.stopTokenIds) || p.stopTokenIds.some((t) => !Number.isInteger(t) || t < 0)) bad('stop_token_ids', 'must be a list of non-negative integers');
  return p;
}
