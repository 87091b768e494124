// The library API on the embedded default model: streaming, chat, stop strings, seeds, cancellation.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CapacityError, InvalidRequestError, LLM } from '../src/index.js';

describe('LLM (library API)', () => {
  let llm: LLM;
  before(async () => {
    llm = await LLM.load();
  });
  after(() => llm.close());

  it('streams chunks whose text adds up to the whole completion', async () => {
    let text = '';
    const ids: number[] = [];
    let last;
    for await (const chunk of llm.generate('The robot', { maxTokens: 20, temperature: 0, ignoreEos: true })) {
      text += chunk.text;
      ids.push(...chunk.tokenIds);
      last = chunk;
    }
    assert.equal(ids.length, 20);
    assert.equal(last!.finishReason, 'length');
    assert.equal(last!.usage.completionTokens, 20);
    assert.equal(text, llm.tokenizer.decode(ids, { skipSpecialTokens: true }));
    assert.ok(text.trim().length > 0);
  });

  it('the same seed reproduces a sampled completion; another seed differs', async () => {
    const params = { maxTokens: 24, temperature: 1, topP: 0.95, ignoreEos: true };
    const a = await llm.complete('Once upon a time', { ...params, seed: 11 });
    const b = await llm.complete('Once upon a time', { ...params, seed: 11 });
    const c = await llm.complete('Once upon a time', { ...params, seed: 12 });
    assert.deepEqual(a.tokenIds, b.tokenIds);
    assert.notDeepEqual(a.tokenIds, c.tokenIds);
  });

  it('a stop string ends the text before it, even when split across tokens', async () => {
    const free = await llm.complete('The robot', { maxTokens: 30, temperature: 0, ignoreEos: true });
    // Pick a stop string that straddles a token boundary of the free-running text.
    const cut = Math.floor(free.text.length / 2);
    const stop = free.text.slice(cut - 2, cut + 3);
    const stopped = await llm.complete('The robot', { maxTokens: 30, temperature: 0, ignoreEos: true, stop: [stop] });
    assert.equal(stopped.finishReason, 'stop');
    assert.equal(stopped.text, free.text.slice(0, free.text.indexOf(stop)));
  });

  it('chat applies the chat template and answers', async () => {
    const prompt = llm.applyChatTemplate([{ role: 'user', content: 'What is your battery level?' }]);
    assert.ok(prompt.includes('What is your battery level?'));
    const reply = await llm.complete(llm.tokenizer.encode(prompt, { addSpecialTokens: false }), { maxTokens: 40, temperature: 0 });
    let streamed = '';
    for await (const chunk of llm.chat([{ role: 'user', content: 'What is your battery level?' }], { maxTokens: 40, temperature: 0 })) streamed += chunk.text;
    assert.equal(streamed, reply.text);
    assert.ok(streamed.trim().length > 0);
  });

  it('breaking out of a stream cancels the request and frees its KV blocks', async () => {
    const pool = llm.engine.pool;
    let n = 0;
    for await (const chunk of llm.generate('The robot', { maxTokens: 200, temperature: 0, ignoreEos: true })) {
      if (chunk.tokenIds.length && ++n === 3) break;
    }
    // Let the engine loop observe the abort.
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(pool.numFree, pool.numBlocks);
    assert.equal(llm.engine.hasWork(), false);
  });

  it('concurrent requests each get what they would get alone', async () => {
    const prompts = ['The robot', 'Once upon a time', 'Check the sensors', 'The battery'];
    const alone: Array<{ tokenIds: number[] }> = [];
    for (const p of prompts) alone.push(await llm.complete(p, { maxTokens: 16, temperature: 0, ignoreEos: true }));
    const together = await Promise.all(prompts.map((p) => llm.complete(p, { maxTokens: 16, temperature: 0, ignoreEos: true })));
    together.forEach((r, i) => assert.deepEqual(r.tokenIds, alone[i].tokenIds));
  });

  it('bad parameters and over-long prompts are rejected with the parameter or the numbers named', async () => {
    assert.throws(() => llm.generate('x', { temperature: -1 }), (e: unknown) => e instanceof InvalidRequestError && /temperature must be >= 0/.test(e.message));
    assert.throws(() => llm.generate('x', { topP: 0 }), /top_p must be in \(0, 1\]/);
    const long = Array(llm.engine.options.maxModelLen).fill(llm.tokenizer.encode('the', { addSpecialTokens: false })[0]);
    assert.throws(() => llm.generate(long, { maxTokens: 1 }), (e: unknown) => e instanceof CapacityError && /maximum context length is \d+ tokens, but the prompt has \d+ tokens/.test(e.message));
  });
});

describe('LLM KV cache element type', () => {
  it('bf16 K and V (kvCacheDtype, also spelled bfloat16) take half the bytes a token: twice the tokens from one budget, the same greedy answer here', async () => {
    const bytes = 1 << 20;
    const f32 = await LLM.load({ device: 'cpu', kvCacheMemoryBytes: bytes });
    const bf = await LLM.load({ device: 'cpu', kvCacheMemoryBytes: bytes, kvCacheDtype: 'bfloat16' });
    try {
      assert.equal(f32.loaded.model.backend.kvDtype, 'float32', "the CPU's auto");
      assert.equal(bf.loaded.model.backend.kvDtype, 'bf16');
      assert.equal(bf.engine.pool.numBlocks, 2 * f32.engine.pool.numBlocks);
      const prompt = 'The robot walked into the market and';
      const [a, b] = await Promise.all([f32, bf].map((m) => m.complete(prompt, { temperature: 0, maxTokens: 24, ignoreEos: true })));
      assert.deepEqual(b.tokenIds, a.tokenIds);
    } finally {
      await f32.close();
      await bf.close();
    }
  });

  it('fp8 K and V (also spelled fp8_e4m3) take a quarter of float32\'s bytes: four times the tokens from one budget', async () => {
    const bytes = 1 << 20;
    const f32 = await LLM.load({ device: 'cpu', kvCacheMemoryBytes: bytes });
    const fp8 = await LLM.load({ device: 'cpu', kvCacheMemoryBytes: bytes, kvCacheDtype: 'fp8_e4m3' });
    try {
      assert.equal(fp8.loaded.model.backend.kvDtype, 'fp8');
      assert.equal(fp8.engine.pool.numBlocks, 4 * f32.engine.pool.numBlocks);
      const r = await fp8.complete('The robot walked into the market and', { temperature: 0, maxTokens: 24, ignoreEos: true });
      assert.equal(r.tokenIds.length, 24);
    } finally {
      await f32.close();
      await fp8.close();
    }
  });

  it('an unknown KV dtype or E5M2 is refused, naming the supported ones', async () => {
    await assert.rejects(LLM.load({ device: 'cpu', kvCacheDtype: 'float16' as 'bf16' }), (e: unknown) =>
      e instanceof InvalidRequestError && /kv_cache_dtype 'float16' is not supported; supported: auto, float32, bf16, fp8 \(fp8 also as fp8_e4m3\)/.test(e.message));
    await assert.rejects(LLM.load({ device: 'cpu', kvCacheDtype: 'fp8_e5m2' as 'bf16' }), /kv_cache_dtype 'fp8_e5m2' is not supported \(FP8 K and V are E4M3 here\)/);
  });
});
