// The two ways a generation is answered, shared by completions and chat: collected into one JSON
// body, or streamed as SSE chunks (with an error event, then [DONE], if it fails midway).

import type { FinishReason } from '../../engine/engine.js';
import type { Logprobs } from '../../engine/sampler.js';
import type { ApiCall } from '../context.js';
import type { ChoiceDelta, Generation } from '../generation.js';
import { errorBody, toApiError } from '../http-errors.js';
import { SseStream } from '../sse.js';

export interface CollectedChoice {
  index: number;
  text: string;
  tokenIds: number[];
  logprobs: Logprobs[];
  finishReason: FinishReason;
}

export async function collectChoices(gen: Generation, count: number): Promise<CollectedChoice[]> {
  const choices: CollectedChoice[] = Array.from({ length: count }, (_, index) => ({ index, text: '', tokenIds: [], logprobs: [], finishReason: 'stop' }));
  for await (const d of gen) {
    const c = choices[d.index];
    c.text += d.text;
    c.tokenIds.push(...d.tokenIds);
    if (d.logprobs) c.logprobs.push(...d.logprobs);
    if (d.finishReason) c.finishReason = d.finishReason;
  }
  return choices;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

export function usageOf(promptTokens: number, gen: Generation): Usage {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: gen.completionTokens,
    total_tokens: promptTokens + gen.completionTokens,
    prompt_tokens_details: { cached_tokens: gen.cachedTokens },
  };
}

export interface StreamShape {
  /** Chunks sent before any token (chat's role chunks). */
  start?: () => unknown[];
  /** The chunk for one delta, or undefined to send nothing (no text, no logprobs, not finished). */
  chunk: (d: ChoiceDelta) => unknown | undefined;
  /** The closing usage-only chunk when stream_options.include_usage is set. */
  usage?: () => unknown;
}

export async function streamChoices(call: ApiCall, gen: Generation, shape: StreamShape): Promise<void> {
  const sse = new SseStream(call.res);
  try {
    for (const c of shape.start?.() ?? []) sse.send(c);
    for await (const d of gen) {
      const c = shape.chunk(d);
      if (c !== undefined) sse.send(c);
    }
    if (shape.usage) sse.send(shape.usage());
  } catch (err) {
    // Headers (200) are already out: the failure travels as an error event, as vLLM sends it.
    const e = toApiError(err);
    sse.send(errorBody(e.status, e.message, e.param));
  }
  sse.done();
}
