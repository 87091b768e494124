// One API request's sequences (n choices per prompt, one or more prompts) run through the shared
// LLM together: their chunks merged in the order they come, usage added up, each sequence's
// latencies recorded in the metrics when it finishes, and all of them cancelled together.

import type { FinishReason } from '../engine/engine.js';
import type { Logprobs } from '../engine/sampler.js';
import type { GenerateChunk, GenerateParams, LLM } from '../llm.js';
import type { ServerMetrics } from './metrics.js';

export interface SequenceSpec {
  /** The choice's index in the response. */
  index: number;
  promptIds: number[];
  params: GenerateParams;
  logprobs?: number;
}

/** What one choice produced since its last event. */
export interface ChoiceDelta {
  index: number;
  text: string;
  tokenIds: number[];
  logprobs?: Logprobs[];
  finishReason?: FinishReason;
}

/**
 * The n children of one prompt, as vLLM makes them: each its own sequence, with seed + i when the
 * request has a seed (so the choices differ but the whole response is reproducible).
 */
export function childSpecs(firstIndex: number, n: number, promptIds: number[], params: GenerateParams, logprobs?: number): SequenceSpec[] {
  return Array.from({ length: n }, (_, i) => ({
    index: firstIndex + i,
    promptIds,
    params: params.seed === undefined ? params : { ...params, seed: params.seed + i },
    logprobs,
  }));
}

export class Generation implements AsyncIterable<ChoiceDelta> {
  completionTokens = 0;
  /** Prompt tokens found in the prefix cache, over all sequences. */
  cachedTokens = 0;
  private readonly abort = new AbortController();
  private readonly streams: Array<{ spec: SequenceSpec; chunks: AsyncIterable<GenerateChunk> }>;

  /** Adds every sequence to the engine now, so that a request that cannot run fails before any output. */
  constructor(
    private readonly llm: LLM,
    private readonly metrics: ServerMetrics,
    specs: SequenceSpec[],
    signal: AbortSignal,
    arrivalMs: number,
  ) {
    const onAbort = () => this.abort.abort();
    if (signal.aborted) onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    this.streams = [];
    try {
      for (const spec of specs) {
        this.streams.push({ spec, chunks: llm.generate(spec.promptIds, spec.params, { signal: this.abort.signal, logprobs: spec.logprobs, arrivalMs }) });
      }
    } catch (err) {
      this.cancel();
      throw err;
    }
  }

  /** Stop every sequence of this request and free their KV blocks. */
  cancel(): void {
    this.abort.abort();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ChoiceDelta> {
    const queue: ChoiceDelta[] = [];
    let wake: (() => void) | undefined;
    let pending = this.streams.length;
    let failure: unknown;
    const notify = () => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    for (const { spec, chunks } of this.streams) {
      void (async () => {
        let lastTokenAt: number | undefined;
        const gaps: number[] = [];
        try {
          for await (const c of chunks) {
            if (c.tokenIds.length > 0) {
              const now = performance.now();
              if (lastTokenAt !== undefined) gaps.push((now - lastTokenAt) / 1000);
              lastTokenAt = now;
            }
            this.completionTokens += c.tokenIds.length;
            if (c.finished && c.metrics) {
              this.cachedTokens += c.metrics.cachedTokens;
              this.metrics.sequenceFinished({ finishReason: c.finishReason!, metrics: c.metrics, interTokenSeconds: gaps });
            }
            queue.push({ index: spec.index, text: c.text, tokenIds: c.tokenIds, logprobs: c.logprobs, finishReason: c.finished ? c.finishReason : undefined });
            notify();
          }
        } catch (err) {
          failure ??= err;
        } finally {
          pending--;
          notify();
        }
      })();
    }
    try {
      for (;;) {
        if (queue.length > 0) yield queue.shift()!;
        else if (failure !== undefined) throw failure;
        else if (pending === 0) return;
        else await new Promise<void>((r) => (wake = r));
      }
    } finally {
      // The consumer stopped (finished, failed or the client left): nothing of this request runs on.
      this.cancel();
    }
  }
}
