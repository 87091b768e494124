// The engine's bookkeeping over a real (small, random) checkpoint: batching, chunked prefill, stop
// conditions, aborts, preemption on KV-cache exhaustion, prefix caching and logprobs, each checked
// against the same request run alone.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { Engine, type EngineOptions, type RequestOutput } from '../src/engine/engine.js';
import { resolveSamplingParams } from '../src/engine/sampling-params.js';
import { CapacityError, InvalidRequestError } from '../src/errors.js';
import { loadLlama } from './support/run-model.js';
import { TINY_LLAMA, writeTinyCheckpoint } from './support/tiny-checkpoint.js';

const model = loadLlama(writeTinyCheckpoint(TINY_LLAMA), new CpuBackend());
const options = (o: Partial<EngineOptions> = {}): EngineOptions => ({ maxModelLen: 128, maxNumSeqs: 16, maxNumBatchedTokens: 256, kvCacheTokens: 1024, blockSize: 4, ...o });
const greedy = (maxTokens: number, extra = {}) => resolveSamplingParams({ temperature: 0, maxTokens, ...extra });

/** Run the engine until every request finishes; token ids and finish reasons by request. */
function drain(engine: Engine): Map<string, { tokens: number[]; outputs: RequestOutput[] }> {
  const res = new Map<string, { tokens: number[]; outputs: RequestOutput[] }>();
  for (let steps = 0; engine.hasWork(); steps++) {
    assert.ok(steps < 10_000, 'engine did not finish');
    for (const out of engine.step()) {
      const r = res.get(out.requestId) ?? { tokens: [], outputs: [] };
      r.tokens.push(...out.newTokenIds);
      r.outputs.push(out);
      res.set(out.requestId, r);
    }
  }
  return res;
}

const prompts = [
  [1, 2, 3],
  [5, 9, 11, 12, 40, 41, 42, 43, 44, 2, 7],
  [63],
  Array.from({ length: 37 }, (_, i) => (i * 7) % 64),
];

function alone(prompt: number[], maxTokens: number, o: Partial<EngineOptions> = {}): number[] {
  const engine = new Engine(model, undefined, [], options(o));
  engine.addRequest('a', prompt, greedy(maxTokens));
  return drain(engine).get('a')!.tokens;
}

describe('engine', () => {
  it('batched greedy outputs equal each prompt run alone', () => {
    const expected = prompts.map((p) => alone(p, 12));
    const engine = new Engine(model, undefined, [], options());
    prompts.forEach((p, i) => engine.addRequest(`r${i}`, p, greedy(12)));
    const res = drain(engine);
    prompts.forEach((_, i) => assert.deepEqual(res.get(`r${i}`)!.tokens, expected[i], `request ${i}`));
  });

  it('chunked prefill (a tiny token budget) changes nothing', () => {
    const expected = prompts.map((p) => alone(p, 8));
    const engine = new Engine(model, undefined, [], options({ maxNumBatchedTokens: 5 }));
    prompts.forEach((p, i) => engine.addRequest(`r${i}`, p, greedy(8)));
    const res = drain(engine);
    prompts.forEach((_, i) => assert.deepEqual(res.get(`r${i}`)!.tokens, expected[i], `request ${i}`));
  });

  it('requests that join later are batched with running ones and still match', () => {
    const expected = prompts.map((p) => alone(p, 10));
    const engine = new Engine(model, undefined, [], options({ maxNumSeqs: 2 }));
    engine.addRequest('r0', prompts[0], greedy(10));
    const res = new Map<string, number[]>();
    let added = 1;
    while (engine.hasWork()) {
      for (const out of engine.step()) res.set(out.requestId, [...(res.get(out.requestId) ?? []), ...out.newTokenIds]);
      if (added < prompts.length) engine.addRequest(`r${added}`, prompts[added], greedy(10)), added++;
    }
    prompts.forEach((_, i) => assert.deepEqual(res.get(`r${i}`), expected[i], `request ${i}`));
  });

  it('stops on max_tokens with "length", on eos and stop token ids with "stop"', () => {
    const free = alone(prompts[1], 10);
    const engine = new Engine(model, undefined, [free[3]], options());
    engine.addRequest('eos', prompts[1], greedy(10));
    engine.addRequest('len', prompts[1], greedy(2));
    engine.addRequest('ignore', prompts[1], greedy(10, { ignoreEos: true }));
    engine.addRequest('stopid', prompts[1], greedy(10, { stopTokenIds: [free[1]] }));
    const res = drain(engine);
    const last = (id: string) => res.get(id)!.outputs.at(-1)!;
    assert.deepEqual(res.get('eos')!.tokens, free.slice(0, free.indexOf(free[3]) + 1));
    assert.equal(last('eos').finishReason, 'stop');
    assert.deepEqual(res.get('len')!.tokens, free.slice(0, 2));
    assert.equal(last('len').finishReason, 'length');
    assert.deepEqual(res.get('ignore')!.tokens, free);
    assert.equal(last('ignore').finishReason, 'length');
    assert.deepEqual(res.get('stopid')!.tokens, free.slice(0, free.indexOf(free[1]) + 1));
  });

  it('rejects a prompt that cannot fit the context, with the numbers, and bad token ids', () => {
    const engine = new Engine(model, undefined, [], options({ maxModelLen: 16 }));
    assert.throws(() => engine.addRequest('x', Array(10).fill(1), greedy(8)), (e: unknown) => e instanceof CapacityError && /maximum context length is 16 tokens, but the prompt has 10 tokens and max_tokens is 8/.test(e.message));
    assert.throws(() => engine.addRequest('y', [], greedy(1)), InvalidRequestError);
    assert.throws(() => engine.addRequest('z', [1, 64], greedy(1)), /token id 64 is outside the vocabulary \(0\.\.63\)/);
  });

  it('abort frees the KV blocks at once and the others carry on', () => {
    const expected = alone(prompts[3], 10);
    const engine = new Engine(model, undefined, [], options());
    engine.addRequest('keep', prompts[3], greedy(10));
    engine.addRequest('drop', prompts[3], greedy(10));
    engine.step();
    const freeBefore = engine.pool.numFree;
    engine.abort('drop');
    assert.ok(engine.pool.numFree > freeBefore, 'aborted request released its blocks');
    const res = drain(engine);
    assert.equal(res.get('drop')!.outputs.at(-1)!.finishReason, 'abort');
    assert.deepEqual(res.get('keep')!.tokens, expected.slice(1));
    assert.equal(engine.pool.numFree, engine.pool.numBlocks, 'every block returned');
  });

  it('a request that does not fit beside a running one waits for its blocks, then matches running alone', () => {
    // 12 blocks of 4 tokens: 37 + 10 tokens take all 12, so the second request must wait.
    const expected = alone(prompts[3], 10);
    const engine = new Engine(model, undefined, [], options({ kvCacheTokens: 48 }));
    engine.addRequest('a', prompts[3], greedy(10));
    engine.addRequest('b', prompts[3], greedy(10));
    const res = drain(engine);
    assert.deepEqual(res.get('a')!.tokens, expected);
    assert.deepEqual(res.get('b')!.tokens, expected);
    assert.equal(engine.pool.numFree, engine.pool.numBlocks);
  });

  it('refuses at once a request that could not finish even with the whole KV cache', () => {
    const engine = new Engine(model, undefined, [], options({ kvCacheTokens: 40 }));
    assert.throws(() => engine.addRequest('a', prompts[3], greedy(10)), (e: unknown) => e instanceof CapacityError && /prompt \(37 tokens\) plus max_tokens \(10\) needs 12 KV cache blocks of 4 tokens, but the whole cache has 10/.test(e.message));
  });

  it('when running sequences outgrow the cache together, the newest is preempted, recomputed later, and still matches running alone', () => {
    // Each needs 10 of the 12 blocks alone; after both prefill (5 + 5 blocks) they cannot both grow to the end.
    const prompt = prompts[3].slice(0, 20);
    const expected = alone(prompt, 20);
    const engine = new Engine(model, undefined, [], options({ kvCacheTokens: 48 }));
    engine.addRequest('a', prompt, greedy(20));
    engine.addRequest('b', prompt, greedy(20));
    const res = drain(engine);
    assert.deepEqual(res.get('a')!.tokens, expected);
    assert.deepEqual(res.get('b')!.tokens, expected);
    assert.equal(res.get('b')!.outputs.at(-1)!.finishReason, 'length');
    assert.ok(res.get('b')!.outputs.at(-1)!.metrics!.numPreemptions >= 1, 'b was preempted');
    assert.equal(res.get('a')!.outputs.at(-1)!.metrics!.numPreemptions, 0, 'the oldest request is never preempted');
    assert.ok(engine.stats().numPreemptions >= 1);
    assert.equal(engine.pool.numFree, engine.pool.numBlocks);
  });

  it('many requests on a tiny KV budget all finish with their own greedy and seeded-sampled outputs', () => {
    const params = (i: number) => (i % 2 === 0 ? greedy(16) : resolveSamplingParams({ temperature: 0.8, topP: 0.9, seed: 100 + i, maxTokens: 16 }));
    const ps = Array.from({ length: 8 }, (_, i) => prompts[3].slice(i, i + 12 + i));
    const soloOutputs = ps.map((p, i) => {
      const e = new Engine(model, undefined, [], options());
      e.addRequest('x', p, params(i));
      return drain(e).get('x')!.tokens;
    });
    // 16 blocks of 4 tokens: two or three of these fit at a time.
    const engine = new Engine(model, undefined, [], options({ kvCacheTokens: 64, maxNumBatchedTokens: 16 }));
    ps.forEach((p, i) => engine.addRequest(`r${i}`, p, params(i)));
    const res = drain(engine);
    ps.forEach((_, i) => assert.deepEqual(res.get(`r${i}`)!.tokens, soloOutputs[i], `request ${i}`));
    assert.ok(engine.stats().numPreemptions > 0, 'the budget forced preemptions');
    assert.equal(engine.pool.numFree, engine.pool.numBlocks);
  });

  it('a second request with the same long prefix computes fewer tokens and gives identical output', () => {
    const prefix = prompts[3]; // 37 tokens: 9 full blocks of 4
    const second = [...prefix, 3, 4, 5];
    const expected = alone(second, 8, { enablePrefixCaching: false });
    let forwarded = 0;
    const counting = Object.create(model) as typeof model;
    counting.forward = (batch, kv, o) => {
      forwarded += batch.numTokens;
      return model.forward(batch, kv, o);
    };
    const engine = new Engine(counting, undefined, [], options());
    engine.addRequest('first', prefix, greedy(4));
    drain(engine);
    const before = engine.stats();
    forwarded = 0;
    engine.addRequest('second', second, greedy(8));
    const res = drain(engine);
    assert.deepEqual(res.get('second')!.tokens, expected);
    const after = engine.stats();
    assert.equal(after.prefixCacheQueries - before.prefixCacheQueries, second.length);
    assert.equal(after.prefixCacheHits - before.prefixCacheHits, 36, 'the 9 full prefix blocks were found');
    assert.equal(res.get('second')!.outputs.at(-1)!.metrics!.cachedTokens, 36);
    // 40 prompt tokens, 36 cached: 4 prefilled, then 7 decode steps.
    assert.equal(forwarded, 4 + 7);
    assert.equal(engine.pool.numFree, engine.pool.numBlocks, 'cached blocks count as free');
  });

  it('an identical prompt reuses every full block but always recomputes its last token', () => {
    const prompt = prompts[3].slice(0, 32); // exactly 8 blocks of 4
    const engine = new Engine(model, undefined, [], options());
    engine.addRequest('a', prompt, greedy(6));
    const a = drain(engine).get('a')!.tokens;
    engine.addRequest('b', prompt, greedy(6));
    const b = drain(engine).get('b')!;
    assert.deepEqual(b.tokens, a);
    assert.equal(b.outputs.at(-1)!.metrics!.cachedTokens, 28, 'the block of the last token is recomputed');
  });

  it('logprobs: the chosen token and its top alternatives, most likely first', () => {
    const engine = new Engine(model, undefined, [], options());
    engine.addRequest('lp', prompts[1], greedy(5), { logprobs: 3 });
    engine.addRequest('none', prompts[1], greedy(5));
    const res = drain(engine);
    const lps = res.get('lp')!.outputs.flatMap((o) => o.logprobs ?? []);
    assert.equal(lps.length, 5);
    lps.forEach((lp, i) => {
      assert.equal(lp.tokenId, res.get('lp')!.tokens[i]);
      assert.equal(lp.top.length, 3);
      assert.equal(lp.top[0].id, lp.tokenId, 'greedy picks the most likely token');
      assert.equal(lp.logprob, lp.top[0].logprob);
      assert.ok(lp.top[0].logprob >= lp.top[1].logprob && lp.top[1].logprob >= lp.top[2].logprob);
      assert.ok(lp.logprob < 0);
    });
    assert.ok(res.get('none')!.outputs.every((o) => o.logprobs === undefined));
  });

  it('counts prompt and generation tokens and stamps each request with its timeline', () => {
    const engine = new Engine(model, undefined, [], options({ enablePrefixCaching: false }));
    engine.addRequest('a', prompts[1], greedy(6), { arrivalMs: performance.now() - 5 });
    engine.addRequest('b', prompts[0], greedy(3));
    const res = drain(engine);
    const s = engine.stats();
    assert.equal(s.promptTokens, prompts[1].length + prompts[0].length);
    assert.equal(s.generationTokens, 9);
    assert.equal(s.numRunning + s.numWaiting, 0);
    assert.equal(s.kvCacheUsage, 0);
    const m = res.get('a')!.outputs.at(-1)!.metrics!;
    assert.ok(m.arrivalMs <= m.firstScheduledMs! && m.firstScheduledMs! <= m.firstTokenMs! && m.firstTokenMs! <= m.lastTokenMs! && m.lastTokenMs! <= m.finishedMs);
    assert.ok(m.firstScheduledMs! - m.arrivalMs >= 5, 'the given arrival time is used');
    assert.equal(m.outputTokens, 6);
  });
});
