// `tachyon serve`'s HTTP API driven by the official `openai` client on an ephemeral port: chat and
// completions, streamed and not, concurrency (each output as if alone), logprobs, n, stop strings,
// prefix caching, tokenize, metrics, cancellation, and errors while other requests keep running.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { LLM } from '../src/llm.js';
import { startServer, type RunningServer } from '../src/server/app.js';
import { writeServerTestModel } from './support/server-model.js';

const MODEL = 'tiny-test';
const API_KEY = 'test-key';

type CompletionBody = OpenAI.CompletionCreateParamsNonStreaming;
type ChatBody = OpenAI.ChatCompletionCreateParamsNonStreaming;

/** Parse /metrics into `name{labels}` → value (buckets included). */
async function scrape(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

const metric = (m: Map<string, number>, name: string, extra = '') => m.get(`${name}{model_name="${MODEL}",engine="0"${extra}}`);

describe('tachyon serve (OpenAI API)', () => {
  let llm: LLM;
  let server: RunningServer;
  let client: OpenAI;

  before(async () => {
    llm = await LLM.load({ model: writeServerTestModel() });
    server = await startServer(llm, { port: 0, modelName: MODEL, apiKey: API_KEY, version: '9.9.9' });
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: API_KEY, maxRetries: 0 });
  });
  after(async () => {
    await server.close();
    await llm.close();
  });

  const complete = (prompt: string, maxTokens: number, extra: Record<string, unknown> = {}) =>
    client.completions.create({ model: MODEL, prompt, max_tokens: maxTokens, temperature: 0, ...extra } as CompletionBody);

  /** Stream a completion and return its text, usage and the raw chunks. */
  async function streamCompletion(prompt: string, maxTokens: number, extra: Record<string, unknown> = {}) {
    const stream = await client.completions.create({ model: MODEL, prompt, max_tokens: maxTokens, temperature: 0, stream: true, stream_options: { include_usage: true }, ...extra } as OpenAI.CompletionCreateParamsStreaming);
    const chunks: OpenAI.Completion[] = [];
    let text = '';
    for await (const c of stream) {
      chunks.push(c);
      for (const ch of c.choices) text += ch.text;
    }
    return { text, chunks, usage: chunks.at(-1)!.usage!, finishReason: chunks.at(-2)?.choices[0]?.finish_reason };
  }

  it('lists the served model', async () => {
    const models = await client.models.list();
    assert.deepEqual(
      models.data.map((m) => m.id),
      [MODEL],
    );
    assert.equal((models.data[0] as unknown as { max_model_len: number }).max_model_len, 512);
  });

  it('a completion equals the library run of the same prompt, with usage', async () => {
    const lib = await llm.complete('The robot', { maxTokens: 12, temperature: 0, ignoreEos: true });
    const res = await complete('The robot', 12, { ignore_eos: true });
    assert.equal(res.object, 'text_completion');
    assert.equal(res.model, MODEL);
    assert.equal(res.choices[0].text, lib.text);
    assert.equal(res.choices[0].finish_reason, 'length');
    assert.deepEqual(res.usage, { prompt_tokens: lib.usage.promptTokens, completion_tokens: 12, total_tokens: lib.usage.promptTokens + 12, prompt_tokens_details: { cached_tokens: res.usage!.prompt_tokens_details!.cached_tokens } });
  });

  it('a streamed completion adds up to the same text and ends with a usage-only chunk', async () => {
    const whole = await complete('Once upon a time', 20, { ignore_eos: true });
    const s = await streamCompletion('Once upon a time', 20, { ignore_eos: true });
    assert.equal(s.text, whole.choices[0].text);
    assert.ok(s.chunks.length >= 3, 'several chunks, not one');
    assert.deepEqual(s.chunks.at(-1)!.choices, []);
    assert.equal(s.usage.completion_tokens, 20);
    assert.equal(s.usage.prompt_tokens, whole.usage!.prompt_tokens);
    assert.ok(s.chunks.slice(0, -1).every((c) => c.usage === null), 'earlier chunks carry usage: null');
    assert.equal(s.finishReason, 'length');
  });

  it('completions take token ids, and several prompts give one choice each', async () => {
    const ids = llm.tokenizer.encode('The robot', { addSpecialTokens: true });
    const byText = await complete('The robot', 8, { ignore_eos: true });
    const res = await client.completions.create({ model: MODEL, prompt: [ids, ids.slice(0, 2)], max_tokens: 8, temperature: 0, ignore_eos: true } as CompletionBody);
    assert.equal(res.choices.length, 2);
    assert.equal(res.choices[0].text, byText.choices[0].text);
    assert.equal(res.usage!.prompt_tokens, ids.length + 2);
    assert.equal(res.usage!.completion_tokens, 16);
  });

  it('chat, streamed and not, answers through the chat template, role chunk first', async () => {
    const messages = [{ role: 'user' as const, content: 'What is your battery level?' }];
    const lib = await llm.complete(llm.tokenizer.encode(llm.applyChatTemplate(messages), { addSpecialTokens: false }), { maxTokens: 16, temperature: 0 });
    const res = await client.chat.completions.create({ model: MODEL, messages, max_completion_tokens: 16, temperature: 0 });
    assert.equal(res.object, 'chat.completion');
    assert.equal(res.choices[0].message.role, 'assistant');
    assert.equal(res.choices[0].message.content, lib.text);
    assert.equal(res.usage!.prompt_tokens, lib.usage.promptTokens);

    const stream = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 16, temperature: 0, stream: true });
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' });
    assert.equal(chunks.map((c) => c.choices[0]?.delta.content ?? '').join(''), lib.text);
    assert.equal(chunks.at(-1)!.choices[0].finish_reason, res.choices[0].finish_reason);
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id));
  });

  it('32 simultaneous streaming requests all complete, each exactly as when run alone, batched together', async () => {
    const prompts = Array.from({ length: 32 }, (_, i) => `Request ${i}: the robot number ${i * 7} checks ${['sensors', 'wheels', 'battery', 'arms'][i % 4]}`);
    const alone: string[] = [];
    for (const p of prompts) alone.push((await complete(p, 24, { ignore_eos: true })).choices[0].text);
    let maxRunning = 0;
    const sampler = setInterval(() => (maxRunning = Math.max(maxRunning, llm.engine.numRunning)), 1);
    try {
      const together = await Promise.all(prompts.map((p) => streamCompletion(p, 24, { ignore_eos: true })));
      together.forEach((r, i) => {
        assert.equal(r.text, alone[i], `request ${i}`);
        assert.equal(r.usage.completion_tokens, 24);
      });
    } finally {
      clearInterval(sampler);
    }
    assert.ok(maxRunning > 8, `requests ran in the same steps (at most ${maxRunning} at once)`);
  });

  it('logprobs: chat top_logprobs and legacy completions logprobs, greedy token first', async () => {
    const res = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3 });
    const content = res.choices[0].logprobs!.content!;
    assert.equal(content.length, res.usage!.completion_tokens);
    for (const t of content) {
      assert.equal(t.top_logprobs.length, 3);
      assert.equal(t.top_logprobs[0].logprob, t.logprob, 'greedy picks the most likely token');
      assert.equal(t.top_logprobs[0].token, t.token);
      assert.deepEqual(t.bytes, Array.from(Buffer.from(t.token, 'utf8')));
      assert.ok(t.logprob <= 0);
    }
    const c = await complete('The robot', 5, { logprobs: 2, ignore_eos: true });
    const lp = c.choices[0].logprobs!;
    assert.equal(lp.tokens!.length, 5);
    assert.equal(lp.tokens!.join(''), c.choices[0].text);
    assert.deepEqual(lp.text_offset!.slice(0, 2), [0, lp.tokens![0].length]);
    assert.ok(lp.top_logprobs!.every((top, i) => Object.keys(top).length === 2 && top[lp.tokens![i]] === lp.token_logprobs![i]));
    const none = await complete('The robot', 3);
    assert.equal(none.choices[0].logprobs, null);
  });

  it('n choices: different with sampling, reproducible with a seed, usage added up', async () => {
    const body = { model: MODEL, prompt: 'Once upon a time', max_tokens: 12, temperature: 1, n: 3, seed: 42, ignore_eos: true } as CompletionBody;
    const a = await client.completions.create(body);
    const b = await client.completions.create(body);
    assert.deepEqual(
      a.choices.map((c) => c.index),
      [0, 1, 2],
    );
    assert.deepEqual(
      a.choices.map((c) => c.text),
      b.choices.map((c) => c.text),
    );
    assert.equal(new Set(a.choices.map((c) => c.text)).size, 3, 'each choice has its own seed');
    assert.equal(a.usage!.completion_tokens, 36);
    // The first child uses the request's seed itself.
    const single = await client.completions.create({ ...body, n: 1 });
    assert.equal(single.choices[0].text, a.choices[0].text);
    const chat = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 5, n: 2, seed: 1, temperature: 1, stream: true });
    const seen = new Set<number>();
    for await (const c of chat) for (const ch of c.choices) seen.add(ch.index);
    assert.deepEqual([...seen].sort(), [0, 1]);
  });

  it('a stop string ends the text before it; stop_token_ids end with the token', async () => {
    const free = await complete('The robot', 30, { ignore_eos: true });
    const text = free.choices[0].text;
    const cut = Math.floor(text.length / 2);
    const stop = text.slice(cut, cut + 3);
    const stopped = await complete('The robot', 30, { ignore_eos: true, stop });
    assert.equal(stopped.choices[0].finish_reason, 'stop');
    assert.equal(stopped.choices[0].text, text.slice(0, text.indexOf(stop)));
    const ids = (await llm.complete('The robot', { maxTokens: 30, temperature: 0, ignoreEos: true })).tokenIds;
    const byId = await complete('The robot', 30, { ignore_eos: true, stop_token_ids: [ids[2]] });
    assert.equal(byId.choices[0].finish_reason, 'stop');
    assert.equal(byId.usage!.completion_tokens, ids.indexOf(ids[2]) + 1);
  });

  it('a second request with the same long prompt reuses its cached prefix and gives the same output', async () => {
    const prompt = 'The robot walked along the long corridor, checking every door and every sensor it passed, '.repeat(3);
    const first = await complete(prompt, 10, { ignore_eos: true });
    const second = await complete(prompt, 10, { ignore_eos: true });
    assert.equal(second.choices[0].text, first.choices[0].text);
    const prompt_tokens = first.usage!.prompt_tokens;
    assert.equal(second.usage!.prompt_tokens_details!.cached_tokens, Math.floor((prompt_tokens - 1) / 16) * 16);
    assert.ok(second.usage!.prompt_tokens_details!.cached_tokens! >= 32);
  });

  it('tokenize and detokenize round-trip, in vLLM\'s shapes', async () => {
    const post = async (path: string, body: unknown) => (await fetch(`${server.url}${path}`, { method: 'POST', body: JSON.stringify(body) })).json() as Promise<Record<string, unknown>>;
    const t = await post('/tokenize', { prompt: 'Hello robot', return_token_strs: true });
    assert.deepEqual(t.tokens, llm.tokenizer.encode('Hello robot'));
    assert.equal(t.count, (t.tokens as number[]).length);
    assert.equal(t.max_model_len, 512);
    assert.equal((t.token_strs as string[]).length, t.count);
    const d = await post('/detokenize', { tokens: (t.tokens as number[]).slice(1) });
    assert.equal(d.prompt, 'Hello robot');
    const messages = [{ role: 'user', content: 'Hi' }];
    const chat = await post('/tokenize', { messages });
    const res = await client.chat.completions.create({ model: MODEL, messages: messages as OpenAI.ChatCompletionMessageParam[], max_tokens: 1 });
    assert.equal(chat.count, res.usage!.prompt_tokens);
    const bad = await fetch(`${server.url}/detokenize`, { method: 'POST', body: JSON.stringify({ tokens: [5000] }) });
    assert.equal(bad.status, 400);
  });

  it('health, version, and Prometheus metrics under vLLM\'s names that count what was served', async () => {
    assert.equal((await fetch(`${server.url}/health`)).status, 200);
    assert.deepEqual(await (await fetch(`${server.url}/version`)).json(), { version: '9.9.9' });
    const before = await scrape(server.url);
    const res = await complete('Metrics please', 7, { ignore_eos: true });
    const after = await scrape(server.url);
    const delta = (name: string, extra = '') => metric(after, name, extra)! - (metric(before, name, extra) ?? 0);
    assert.equal(delta('vllm:generation_tokens_total'), 7);
    assert.equal(delta('vllm:prompt_tokens_total'), res.usage!.prompt_tokens);
    assert.equal(delta('vllm:request_success_total', ',finished_reason="length"'), 1);
    assert.equal(delta('vllm:time_to_first_token_seconds_count'), 1);
    assert.equal(delta('vllm:e2e_request_latency_seconds_count'), 1);
    assert.equal(delta('vllm:inter_token_latency_seconds_count'), 6);
    assert.equal(delta('vllm:request_time_per_output_token_seconds_count'), 1);
    assert.equal(delta('vllm:prefix_cache_queries_total'), res.usage!.prompt_tokens);
    assert.equal(metric(after, 'vllm:num_requests_running'), 0);
    assert.equal(metric(after, 'vllm:num_requests_waiting'), 0);
    assert.equal(metric(after, 'vllm:kv_cache_usage_perc'), 0);
    for (const name of ['vllm:num_preemptions_total', 'vllm:prefix_cache_hits_total', 'vllm:spec_decode_num_drafts_total', 'vllm:spec_decode_num_draft_tokens_total', 'vllm:spec_decode_num_accepted_tokens_total']) {
      assert.ok(metric(after, name) !== undefined, `${name} is exported`);
    }
    assert.equal(metric(after, 'vllm:spec_decode_num_accepted_tokens_per_pos_total', ',position="0"'), 0);
    // Histograms are cumulative: the +Inf bucket equals the count.
    assert.equal(metric(after, 'vllm:time_to_first_token_seconds_bucket', ',le="+Inf"'), metric(after, 'vllm:time_to_first_token_seconds_count'));
    const text = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(text, /# TYPE vllm:e2e_request_latency_seconds histogram/);
    assert.match(text, /# TYPE vllm:generation_tokens_total counter/);
  });

  it('a client that disconnects mid-stream cancels its request: blocks freed at once, counted as abort', async () => {
    const before = await scrape(server.url);
    const abort = new AbortController();
    const stream = await client.completions.create({ model: MODEL, prompt: 'The robot', max_tokens: 400, temperature: 0, ignore_eos: true, stream: true } as OpenAI.CompletionCreateParamsStreaming, { signal: abort.signal });
    let n = 0;
    // The client ends the iteration quietly when its own signal aborts it.
    for await (const _ of stream) if (++n === 3) abort.abort();
    assert.equal(n, 3);
    // The server notices the closed socket on its next turn of the event loop.
    for (let i = 0; i < 100 && llm.engine.hasWork(); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(llm.engine.hasWork(), false);
    assert.equal(llm.engine.pool.numFree, llm.engine.pool.numBlocks);
    const after = await scrape(server.url);
    assert.equal(metric(after, 'vllm:request_success_total', ',finished_reason="abort"')! - metric(before, 'vllm:request_success_total', ',finished_reason="abort"')!, 1);
    assert.ok(metric(after, 'vllm:generation_tokens_total')! - metric(before, 'vllm:generation_tokens_total')! < 400, 'it stopped early');
    assert.equal(metric(after, 'vllm:kv_cache_usage_perc'), 0);

    // The same for a non-streaming request whose client gives up waiting.
    const gone = new AbortController();
    const pending = client.completions.create({ model: MODEL, prompt: 'The robot', max_tokens: 400, temperature: 0, ignore_eos: true } as CompletionBody, { signal: gone.signal });
    while (llm.engine.numRunning === 0) await new Promise((r) => setTimeout(r, 1));
    gone.abort();
    await assert.rejects(pending);
    for (let i = 0; i < 100 && llm.engine.hasWork(); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(llm.engine.pool.numFree, llm.engine.pool.numBlocks);
    const final = await scrape(server.url);
    assert.equal(metric(final, 'vllm:request_success_total', ',finished_reason="abort"')! - metric(after, 'vllm:request_success_total', ',finished_reason="abort"')!, 1);
  });

  it('bad requests get the documented errors while a long request in flight completes correctly', async () => {
    const longPrompt = 'A long story about a robot';
    const expected = (await complete(longPrompt, 150, { ignore_eos: true })).choices[0].text;
    const inFlight = streamCompletion(longPrompt, 150, { ignore_eos: true });

    const raw = async (path: string, body: string, headers: Record<string, string> = { authorization: `Bearer ${API_KEY}` }) => {
      const r = await fetch(`${server.url}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
      return { status: r.status, body: (await r.json()) as { error: { message: string; type: string; param: string | null; code: number } } };
    };
    const expectError = async (p: Promise<unknown>, status: number, param: string | null, message: RegExp) => {
      await assert.rejects(p, (e: unknown) => {
        assert.ok(e instanceof OpenAI.APIError, String(e));
        assert.equal(e.status, status, e.message);
        assert.equal(e.param ?? null, param, e.message);
        assert.match(e.message, message);
        return true;
      });
    };

    // Malformed JSON
    const malformed = await raw('/v1/completions', '{"model": "tiny-test", "prompt": ');
    assert.equal(malformed.status, 400);
    assert.equal(malformed.body.error.type, 'BadRequestError');
    assert.equal(malformed.body.error.code, 400);
    assert.match(malformed.body.error.message, /not valid JSON/);
    assert.equal((await raw('/v1/completions', '[1, 2]')).status, 400);
    // Wrong types and values, each naming the parameter
    await expectError(complete('x', 5, { temperature: 'hot' }), 400, 'temperature', /temperature must be a number, got the string "hot"/);
    await expectError(complete('x', 5, { temperature: -1 }), 400, 'temperature', /temperature must be >= 0/);
    await expectError(complete('x', 5, { top_p: 2 }), 400, 'top_p', /top_p must be in \(0, 1\]/);
    await expectError(complete('x', 5, { stop: [1, 2] }), 400, 'stop', /stop must be a string or a list of strings/);
    await expectError(complete('x', 5, { n: 0 }), 400, 'n', /n must be >= 1/);
    await expectError(complete('x', 5, { logprobs: 50 }), 400, 'logprobs', /logprobs must be <= 20/);
    await expectError(complete('x', 5, { stream_options: { include_usage: true } }), 400, 'stream_options', /only be set when stream is true/);
    await expectError(complete('x', 5, { echo: true }), 400, 'echo', /echo is not supported/);
    await expectError(client.completions.create({ model: MODEL, prompt: [], max_tokens: 3 }), 400, 'prompt', /prompt must be/);
    await expectError(client.completions.create({ model: MODEL, prompt: [[1, 99999]], max_tokens: 3 }), 400, 'prompt', /token id 99999 is outside the vocabulary/);
    // Too long for the context, with the numbers
    await expectError(complete('x', 1_000_000), 400, null, /maximum context length is 512 tokens, but the prompt has 2 tokens and max_tokens is 1000000/);
    // Chat: empty and malformed messages, top_logprobs without logprobs
    await expectError(client.chat.completions.create({ model: MODEL, messages: [] }), 400, 'messages', /messages must not be empty/);
    await expectError(client.chat.completions.create({ model: MODEL, messages: [{ content: 'hi' }] as unknown as OpenAI.ChatCompletionMessageParam[] }), 400, 'messages', /messages\[0\]\.role must be a non-empty string/);
    await expectError(client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], top_logprobs: 2 }), 400, 'top_logprobs', /requires logprobs/);
    // Unknown model, unknown route
    await expectError(client.completions.create({ model: 'gpt-4', prompt: 'x', max_tokens: 1 }), 404, 'model', /The model `gpt-4` does not exist/);
    const route = await raw('/v1/embeddings', '{}');
    assert.equal(route.status, 404);
    // Wrong or missing API key
    const badKey = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
    await expectError(badKey.completions.create({ model: MODEL, prompt: 'x', max_tokens: 1 }), 401, null, /Unauthorized/);
    assert.equal((await raw('/v1/completions', '{}', {})).status, 401);
    // Unknown fields are ignored, as vLLM does
    const ok = await complete('x', 3, { some_future_field: { a: 1 }, user: 'me' });
    assert.equal(ok.usage!.completion_tokens <= 3, true);

    const done = await inFlight;
    assert.equal(done.text, expected);
    assert.equal(done.usage.completion_tokens, 150);
  });
});

describe('tachyon serve under load limits', () => {
  it('a tiny KV budget preempts and recomputes, and every output still equals running alone', async () => {
    const model = writeServerTestModel(256);
    // 24 blocks of 16 tokens (2 layers × 2 kv heads × 8 dims × 4 bytes × 2 = 256 bytes per token).
    const llm = await LLM.load({ model, kvCacheMemoryBytes: 256 * 16 * 24, kvCacheDtype: 'float32' });
    assert.equal(llm.engine.pool.numBlocks, 24);
    const server = await startServer(llm, { port: 0, modelName: MODEL, version: '0' });
    try {
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none', maxRetries: 0 });
      const prompts = Array.from({ length: 8 }, (_, i) => `Robot ${i} reports on the state of sector ${i * 3}`);
      const run = (p: string) => client.completions.create({ model: MODEL, prompt: p, max_tokens: 60, temperature: 0, ignore_eos: true } as CompletionBody);
      const alone: string[] = [];
      for (const p of prompts) alone.push((await run(p)).choices[0].text);
      const together = await Promise.all(prompts.map(run));
      together.forEach((r, i) => assert.equal(r.choices[0].text, alone[i], `request ${i}`));
      const m = await scrape(server.url);
      assert.ok(metric(m, 'vllm:num_preemptions_total')! > 0, 'the budget forced preemptions');
      assert.equal(llm.engine.pool.numFree, 24);
    } finally {
      await server.close();
      await llm.close();
    }
  });

  it('a full waiting queue answers 503 while queued requests are still served', async () => {
    const llm = await LLM.load({ model: writeServerTestModel(), maxNumSeqs: 1 });
    const server = await startServer(llm, { port: 0, modelName: MODEL, maxWaiting: 2, version: '0' });
    try {
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none', maxRetries: 0 });
      const body = (maxTokens: number) => ({ model: MODEL, prompt: 'The robot', max_tokens: maxTokens, temperature: 0, ignore_eos: true }) as CompletionBody;
      const first = client.completions.create(body(200));
      while (llm.engine.numRunning === 0) await new Promise((r) => setTimeout(r, 1));
      const queued = [client.completions.create(body(5)), client.completions.create(body(5))];
      while (llm.engine.numWaiting < 2) await new Promise((r) => setTimeout(r, 1));
      await assert.rejects(client.completions.create(body(5)), (e: unknown) => e instanceof OpenAI.APIError && e.status === 503 && /overloaded/.test(e.message));
      const results = await Promise.all([first, ...queued]);
      assert.deepEqual(
        results.map((r) => r.usage!.completion_tokens),
        [200, 5, 5],
      );
    } finally {
      await server.close();
      await llm.close();
    }
  });

  it('shutdown stops accepting, lets the request in flight finish, then closes', async () => {
    const llm = await LLM.load({ model: writeServerTestModel() });
    const server = await startServer(llm, { port: 0, modelName: MODEL, version: '0' });
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none', maxRetries: 0 });
    const stream = await client.completions.create({ model: MODEL, prompt: 'The robot', max_tokens: 100, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } } as OpenAI.CompletionCreateParamsStreaming);
    let last: OpenAI.Completion | undefined;
    let finishReason: string | null = null;
    let shutdown: Promise<void> | undefined;
    for await (const c of stream) {
      last = c;
      finishReason = c.choices[0]?.finish_reason ?? finishReason;
      if (!shutdown) {
        shutdown = server.shutdown();
        await assert.rejects(fetch(`${server.url}/health`), 'no new connections are accepted');
      }
    }
    await shutdown;
    assert.equal(last!.usage!.completion_tokens, 100, 'the in-flight request ran to the end');
    assert.equal(finishReason, 'length');
    await llm.close();
  });
});
