// What the decode benchmarks share: seeded random prompts, and timing a batch of requests through
// the engine (all prompts submitted at once) split into prefill and decode.

import type { LLM } from '../src/llm.js';

/** A seeded stream of random token ids: the same prompts on every run, on any machine. */
export function randomTokenIds(seed = 12345): (n: number, vocabSize: number) => number[] {
  let state = seed;
  return (n, vocabSize) => Array.from({ length: n }, () => (state = (state * 1103515245 + 12345) % 2 ** 31) % vocabSize);
}

/**
 * Greedy-generate `decodeLen` tokens for every prompt at once. Prefill ends when the last request
 * has its first token; decode runs from there to the end, `decodeLen - 1` steps.
 */
export async function timeBatchedGenerate(llm: LLM, prompts: number[][], decodeLen: number): Promise<{ prefillMs: number; decodeMs: number }> {
  const params = { maxTokens: decodeLen, temperature: 0, ignoreEos: true };
  const start = performance.now();
  let firstAll = 0;
  let firstCount = 0;
  await Promise.all(
    prompts.map(async (p) => {
      let first = true;
      for await (const chunk of llm.generate(p, params)) {
        if (first && chunk.tokenIds.length > 0) {
          first = false;
          if (++firstCount === prompts.length) firstAll = performance.now();
        }
      }
    }),
  );
  return { prefillMs: firstAll - start, decodeMs: performance.now() - firstAll };
}
