// The benchmark client end to end against a scripted OpenAI-compatible server (node:http on
// 127.0.0.1, SSE chunks at fixed delays): TTFT/TPOT/ITL/E2EL within tolerances, usage vs client
// counts, chat role chunks, failures, spec-decode deltas from /metrics, the CLI's saved result,
// and `bench sweep` starting and stopping one server per configuration.

import assert from 'node:assert/strict';
import { spawnSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { before, describe, it } from 'node:test';
import { DEFAULT_DATASET_OPTIONS, benchServe, type ServeBenchOptions } from '../src/bench/serve-benchmark.js';
import { benchOptions } from './support/bench-options.js';
import { flagsFromObject, parseServerConfigs, runSweep, serverConfigsFromFlags, splitCommandLine, startServer } from '../src/bench/sweep.js';
import { packageRoot } from '../src/model/default-model.js';
import { fixturesDir } from './support/paths.js';

/**
 * A scripted server, as an ES module so the same code runs in this process and as a child process
 * (`node fake.mjs --port P [--quantization Q]`, for the sweep). Every chunk is sent at a fixed time
 * from the request's arrival: first at ttftMs, then one every itlMs.
 */
const FAKE_SERVER = String.raw`
import http from 'node:http';

export function startFake(opts = {}) {
  const o = { ttftMs: 60, itlMs: 20, usageDelayMs: 0, modelName: 'fake-model', root: undefined, spec: true, fail: () => undefined, usage: true, ...opts };
  const state = { requests: [], completed: 0 };
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/health') return res.end('ok');
    if (req.method === 'GET' && req.url === '/v1/models') {
      res.setHeader('content-type', 'application/json');
      return res.end(JSON.stringify({ object: 'list', data: [{ id: o.modelName, object: 'model', root: o.root ?? o.modelName }] }));
    }
    if (req.method === 'GET' && req.url === '/metrics') {
      if (!o.spec) return res.end('vllm:num_requests_running{model_name="x"} 0\n');
      const n = state.completed;
      const pos = [3, 2, 1].map((v, i) => 'vllm:spec_decode_num_accepted_tokens_per_pos_total{model_name="x",engine="0",position="' + i + '"} ' + v * n);
      return res.end(['# TYPE vllm:spec_decode_num_drafts_total counter', 'vllm:spec_decode_num_drafts_total{model_name="x",engine="0"} ' + 4 * n,
        'vllm:spec_decode_num_draft_tokens_total{model_name="x",engine="0"} ' + 12 * n, 'vllm:spec_decode_num_accepted_tokens_total{model_name="x",engine="0"} ' + 6 * n, ...pos].join('\n') + '\n');
    }
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      const body = JSON.parse(raw);
      // A server whose "tokenizer" makes two tokens of every character (to exercise prompt re-alignment).
      if (req.url === '/tokenize' || req.url === '/detokenize') {
        if (!o.charTokenizer) { res.writeHead(404); return res.end(); }
        res.setHeader('content-type', 'application/json');
        if (req.url === '/tokenize') return res.end(JSON.stringify({ tokens: [...body.prompt].flatMap((c) => [c.codePointAt(0), 0]), count: 2 * [...body.prompt].length }));
        return res.end(JSON.stringify({ prompt: String.fromCodePoint(...body.tokens.filter((t) => t !== 0)) }));
      }
      const index = state.requests.length;
      state.requests.push({ url: req.url, body, headers: req.headers });
      const failure = o.fail(index);
      if (failure === 'http') {
        res.writeHead(500, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ error: { message: 'scripted failure', type: 'InternalServerError', code: 500 } }));
      }
      const chat = req.url === '/v1/chat/completions';
      const n = body.max_tokens ?? body.max_completion_tokens;
      const promptTokens = chat ? body.messages[0].content[0].text.length : body.prompt.length;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const send = (obj) => res.write('data: ' + JSON.stringify(obj) + '\n\n');
      const chunk = (i) => chat ? { object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'tok' + i + ' ' }, finish_reason: null }] }
        : { object: 'text_completion', choices: [{ index: 0, text: 'tok' + i + ' ', finish_reason: null }] };
      const events = [];
      if (chat) events.push([o.ttftMs, () => send({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { role: 'assistant', content: '' } }] })]);
      for (let i = 0; i < n; i++) events.push([o.ttftMs + i * o.itlMs, () => {
        if (failure === 'midstream' && i === 1) return send({ error: { message: 'engine died', code: 500 } });
        send(chunk(i));
      }]);
      const lastAt = o.ttftMs + (n - 1) * o.itlMs;
      events.push([lastAt + o.usageDelayMs, () => {
        if (o.usage) send({ choices: [], usage: { prompt_tokens: promptTokens, completion_tokens: n, total_tokens: promptTokens + n } });
        res.end('data: [DONE]\n\n');
        state.completed++;
      }]);
      // Each event is due its gap after the previous one was sent, so a stalled event loop delays
      // the stream but never bunches chunks together.
      let k = 0;
      const next = () => {
        events[k][1]();
        const at = events[k][0];
        k++;
        if (k < events.length) setTimeout(next, events[k][0] - at);
      };
      setTimeout(next, events[0][0]);
    });
  });
  return new Promise((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', () => resolve({ url: 'http://127.0.0.1:' + server.address().port, state, server,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }) })));
}

const args = process.argv.slice(2);
if (args.includes('--port')) {
  const flag = (name) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
  const quant = flag('--quantization') ?? 'none';
  // A faster "format" gives the sweep's configurations different speeds.
  const itlMs = quant === 'fp8' ? 10 : 20;
  startFake({ port: Number(flag('--port')), modelName: 'fake-' + quant, root: flag('--root'), itlMs, ttftMs: 30 }).then(({ url }) => console.log('fake server at ' + url));
  process.on('SIGTERM', () => process.exit(0));
}
`;

interface Fake {
  url: string;
  state: { requests: { url: string; body: Record<string, unknown>; headers: Record<string, string> }[]; completed: number };
  close(): Promise<void>;
}
type StartFake = (opts?: Record<string, unknown>) => Promise<Fake>;

const work = mkdtempSync(join(tmpdir(), 'tachyon-bench-'));
const fakePath = join(work, 'fake-server.mjs');
const tokenizerDir = join(fixturesDir(), 'tokenizers', 'byte-level-llama3');
let startFake: StartFake;

before(async () => {
  writeFileSync(fakePath, FAKE_SERVER);
  startFake = ((await import(pathToFileURL(fakePath).href)) as { startFake: StartFake }).startFake;
});

function options(url: string, o: Partial<ServeBenchOptions> = {}): ServeBenchOptions {
  return benchOptions(url, { tokenizer: tokenizerDir, dataset: { ...DEFAULT_DATASET_OPTIONS, randomInputLen: 16, randomOutputLen: 5 }, ...o });
}

const within = (v: unknown, lo: number, hi: number, what: string) => {
  assert.equal(typeof v, 'number', what);
  assert.ok((v as number) >= lo && (v as number) <= hi, `${what} = ${String(v)}, expected in [${lo}, ${hi}]`);
};

describe('bench serve against a scripted server', { timeout: 60_000 }, () => {
  it('measures TTFT, TPOT, ITL and E2EL from fixed chunk delays (completions)', async () => {
    const fake = await startFake({ ttftMs: 80, itlMs: 25 });
    try {
      const run = await benchServe(options(fake.url, { maxConcurrency: 2, requestIdPrefix: 'test-' }));
      const r = run.result;
      assert.equal(r.completed, 6);
      assert.equal(r.failed, 0);
      // 5 tokens: first at 80 ms, then 4 gaps of 25 ms.
      within(r.mean_ttft_ms, 79, 125, 'mean TTFT');
      within(r.median_itl_ms, 22, 50, 'median ITL');
      within(r.mean_tpot_ms, 22, 50, 'mean TPOT');
      within(r.mean_e2el_ms, 179, 260, 'mean E2EL');
      assert.equal((r.itls as number[][]).every((l) => l.length === 4), true, 'one ITL per chunk after the first');
      // TPOT spreads E2EL - TTFT over the usage token count minus one.
      const tpot0 = ((r.latencies as number[])[0]! - (r.ttfts as number[])[0]!) / 4;
      assert.ok(Math.abs(tpot0 - (r.itls as number[][])[0]!.reduce((a, b) => a + b, 0) / 4) < 1e-9);
      assert.equal(r.total_output_tokens, 30, 'usage.completion_tokens');
      // The server's usage.prompt_tokens (here the prompt's characters) replaces the client count.
      const chars = fake.state.requests.map((q) => String(q.body.prompt).length).reduce((a, b) => a + b, 0);
      assert.equal(r.total_input_tokens, chars);
      assert.equal(r.max_concurrent_requests, 2);
      within(r.duration, 0.5, 2.5, 'duration of 3 rounds of ~180 ms');
      assert.ok((r.queue_times as number[]).filter((q) => q > 0.1).length >= 2, 'requests queued behind the semaphore');
      // Request bodies as vLLM sends them; ignore_eos forced for the random dataset.
      const b = fake.state.requests[0]!.body;
      assert.equal(b.max_tokens, 5);
      assert.equal(b.stream, true);
      assert.deepEqual(b.stream_options, { include_usage: true });
      assert.equal(b.ignore_eos, true);
      assert.equal(b.model, 'fake-model', 'model from GET /v1/models');
      assert.deepEqual(fake.state.requests.map((q) => q.headers['x-request-id']).sort(), ['test-0', 'test-1', 'test-2', 'test-3', 'test-4', 'test-5']);
      // Spec decode: per request 4 drafts, 12 draft tokens, 6 accepted, [3, 2, 1] per position.
      assert.equal(r.spec_decode_num_drafts, 24);
      assert.equal(r.spec_decode_acceptance_rate, 50);
      assert.equal(r.spec_decode_acceptance_length, 2.5);
      assert.deepEqual(r.spec_decode_per_position_acceptance_rates, [0.75, 0.5, 0.25]);
      assert.match(run.summary, /Acceptance length:\s+2\.50/);
      assert.equal(r.x_streams_without_done, 0);
    } finally {
      await fake.close();
    }
  });

  it('chat: the role chunk is the first token event; E2EL ends at the last content chunk (vllm-main) or the usage chunk (vllm-0.10)', async () => {
    const fake = await startFake({ ttftMs: 40, itlMs: 20, usageDelayMs: 80, spec: false });
    try {
      const common = { backend: 'openai-chat' as const, numPrompts: 2, maxConcurrency: 1, dataset: { ...DEFAULT_DATASET_OPTIONS, randomInputLen: 8, randomOutputLen: 3 } };
      const main = (await benchServe(options(fake.url, common))).result;
      assert.equal(fake.state.requests[0]!.url, '/v1/chat/completions');
      assert.deepEqual((fake.state.requests[0]!.body.messages as { content: unknown }[])[0]!.content, [{ type: 'text', text: (fake.state.requests[0]!.body.messages as { content: { text: string }[] }[])[0]!.content[0]!.text }]);
      const itls = (main.itls as number[][])[0]!;
      assert.equal(itls.length, 3, 'role chunk + 3 content chunks = 4 events');
      assert.ok(itls[0]! < 0.015, `near-zero gap between the role chunk and the first content chunk, got ${itls[0]}`);
      within(main.mean_ttft_ms, 39, 90, 'chat TTFT');
      within(main.mean_e2el_ms, 79, 140, 'E2EL without the usage chunk');
      assert.equal(main.spec_decode_acceptance_rate, undefined, 'no spec-decode keys without counters');
      const old = (await benchServe(options(fake.url, { ...common, compat: 'vllm-0.10' }))).result;
      within(old.mean_e2el_ms, 159, 240, 'E2EL with the usage chunk');
      assert.equal(fake.state.requests[2]!.body.temperature, 0, 'vllm-0.10 sends temperature 0');
      assert.equal(fake.state.requests[2]!.body.ignore_eos, undefined, 'vllm-0.10 does not force ignore_eos');
      // vllm-0.10 keeps the client-side prompt lengths (random: input length minus the BOS).
      assert.equal(old.total_input_tokens, 2 * 7);
    } finally {
      await fake.close();
    }
  });

  it('counts HTTP errors and in-stream errors as failed and keeps them out of the metrics', async () => {
    const fake = await startFake({ ttftMs: 10, itlMs: 5, fail: (i: number) => (i === 1 ? 'http' : i === 3 ? 'midstream' : undefined) });
    try {
      const run = await benchServe(options(fake.url, { numPrompts: 5, maxConcurrency: 1 }));
      const r = run.result;
      assert.equal(r.completed, 3);
      assert.equal(r.failed, 2);
      assert.deepEqual(r.output_lens, [5, 0, 5, 0, 5]);
      const errors = r.errors as string[];
      assert.match(errors[1]!, /HTTP 500 Internal Server Error: scripted failure/);
      assert.match(errors[3]!, /server error in stream: engine died/);
      assert.equal(r.total_output_tokens, 15);
    } finally {
      await fake.close();
    }
  });

  it('re-aligns random prompts to the server\'s tokenizer through /tokenize and /detokenize', async () => {
    const fake = await startFake({ ttftMs: 5, itlMs: 2, charTokenizer: true });
    try {
      const r = (await benchServe(options(fake.url, { numPrompts: 4 }))).result;
      assert.equal(r.x_prompts_realigned, 4);
      const prompts = fake.state.requests.map((q) => String(q.body.prompt));
      // 15 server tokens = 8 characters.
      assert.ok(prompts.every((p) => [...p].length === 8), `prompts cut to 15 server tokens: ${prompts.map((p) => p.length).join(',')}`);
      assert.equal(r.completed, 4);
    } finally {
      await fake.close();
    }
  });

  it('counts output tokens with the tokenizer when the server sends no usage', async () => {
    const fake = await startFake({ ttftMs: 5, itlMs: 2, usage: false });
    try {
      const r = (await benchServe(options(fake.url, { numPrompts: 2 }))).result;
      assert.deepEqual(r.x_output_token_sources, { usage: 0, tokenizer: 2, fallback: 0 });
      assert.ok((r.total_output_tokens as number) > 2, 'tokenized "tok0 tok1 ..." text');
    } finally {
      await fake.close();
    }
  });

  it('gives an actionable error when the server is not there', async () => {
    await assert.rejects(benchServe(options('http://127.0.0.1:9', {})), /cannot reach http:\/\/127\.0\.0\.1:9\/v1\/models/);
  });
});

describe('tachyon bench serve (CLI)', { timeout: 60_000 }, () => {
  const bin = join(packageRoot(), 'bin', 'tachyon.js');
  it('prints vLLM\'s summary block and saves a result file with vLLM keys and the machine', async () => {
    const fake = await startFake({ ttftMs: 20, itlMs: 5 });
    try {
      const dataset = join(work, 'custom.jsonl');
      writeFileSync(dataset, [JSON.stringify({ prompt: 'hello there', output_tokens: 3 }), JSON.stringify({ prompt: 'second prompt' })].join('\n') + '\n');
      const dir = join(work, 'results');
      const args = [bin, 'bench', 'serve', '--base-url', fake.url, '--dataset-name', 'custom', '--dataset-path', dataset, '--custom-output-len', '4', '--skip-chat-template', '--tokenizer', tokenizerDir, '--num-prompts', '4', '--max-concurrency', '2', '--goodput', 'ttft:1000', 'tpot:500', '--save-result', '--result-dir', dir, '--metadata', 'device=test', '--temperature', '0'];
      const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, args);
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
        child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
        child.on('exit', (status) => resolve({ status, stdout, stderr }));
      });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /============ Serving Benchmark Result ============/);
      assert.match(r.stdout, /Request goodput \(req\/s\):\s+\d/);
      const files = readdirSync(dir);
      assert.equal(files.length, 1);
      assert.match(files[0]!, /^openai-infqps-concurrency2-fake-model-\d{8}-\d{6}\.json$/);
      const saved = JSON.parse(readFileSync(join(dir, files[0]!), 'utf8')) as Record<string, unknown>;
      assert.equal(saved.completed, 4);
      assert.equal(saved.device, 'test');
      assert.equal(typeof saved.request_goodput, 'number');
      assert.ok(!('ttfts' in saved), 'no per-request arrays without --save-detailed');
      assert.equal((saved.x_machine as { cores: number }).cores > 0, true);
      assert.deepEqual(saved.x_sampling, { temperature: 0 });
      // output_tokens per line, --custom-output-len for the others.
      assert.deepEqual(fake.state.requests.map((q) => q.body.max_tokens).sort(), [3, 3, 4, 4]);
      assert.equal(fake.state.requests[0]!.body.temperature, 0);
      assert.equal(fake.state.requests[0]!.body.ignore_eos, undefined, 'custom prompts do not force ignore_eos');
    } finally {
      await fake.close();
    }
  });

  it('rejects bad flags with a message', () => {
    const r = spawnSync(process.execPath, [bin, 'bench', 'serve', '--backend', 'tgi'], { encoding: 'utf8', timeout: 20_000 });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--backend 'tgi' is not supported; supported: openai, openai-chat/);
    const r2 = spawnSync(process.execPath, [bin, 'bench', 'serve', '--base-url', 'http://127.0.0.1:9', '--model', 'm', '--tokenizer', tokenizerDir, '--percentile-metrics', 'ttft,foo'], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r2.status, 1);
    assert.match(r2.stderr, /--percentile-metrics 'foo' is not supported/);
  });
});

describe('bench sweep', { timeout: 90_000 }, () => {
  it('turns flags and config files into server configurations', () => {
    assert.deepEqual(flagsFromObject({ quantization: 'fp8', max_num_seqs: 8, enforce_eager: true, skip: false, speculative_config: { method: 'ngram' } }), ['--quantization', 'fp8', '--max-num-seqs', '8', '--enforce-eager', '--speculative-config', '{"method":"ngram"}']);
    assert.deepEqual(parseServerConfigs([{ name: 'base', args: ['--max-num-seqs', '4'] }, { quantization: 'w4a16' }], 'f.json'), [
      { name: 'base', args: ['--max-num-seqs', '4'] },
      { name: 'quantization=w4a16', args: ['--quantization', 'w4a16'] },
    ]);
    assert.throws(() => parseServerConfigs({}, 'f.json'), /non-empty JSON array/);
    const c = serverConfigsFromFlags(['none', 'fp8'], ['none', '{"method":"eagle3","num_speculative_tokens":3}']);
    assert.deepEqual(
      c.map((x) => x.name),
      ['quantization=none,spec=none', 'quantization=none,spec=eagle3x3', 'quantization=fp8,spec=none', 'quantization=fp8,spec=eagle3x3'],
    );
    assert.deepEqual(c[3]!.args, ['--quantization', 'fp8', '--speculative-config', '{"method":"eagle3","num_speculative_tokens":3}']);
    const kv = serverConfigsFromFlags(['w4a16'], [], ['bf16', 'fp8']);
    assert.deepEqual(kv, [
      { name: 'quantization=w4a16,kv=bf16', args: ['--quantization', 'w4a16', '--kv-cache-dtype', 'bf16'] },
      { name: 'quantization=w4a16,kv=fp8', args: ['--quantization', 'w4a16', '--kv-cache-dtype', 'fp8'] },
    ]);
    assert.deepEqual(splitCommandLine(`node "my dir/x.js" --a 'b c'`), ['node', 'my dir/x.js', '--a', 'b c']);
  });

  it('without server configurations sweeps the concurrencies against the running server', async () => {
    const fake = await startFake({ ttftMs: 5, itlMs: 2 });
    try {
      const saved: number[] = [];
      const runs = await runSweep({ bench: options(fake.url, { numPrompts: 4 }), concurrencies: [1, 2, 4], serveCommand: [], serveArgs: [], serverTimeoutS: 1, onRun: (r) => saved.push(r.length) });
      assert.deepEqual(runs.map((r) => [r.max_concurrency, r.completed, (r.x_config as { name: string }).name]), [
        [1, 4, 'default'],
        [2, 4, 'default'],
        [4, 4, 'default'],
      ]);
      assert.deepEqual(saved, [1, 2, 3], 'progress saved after every run');
      await assert.rejects(runSweep({ bench: options(fake.url), concurrencies: [0], serveCommand: [], serveArgs: [], serverTimeoutS: 1 }), /positive integers/);
    } finally {
      await fake.close();
    }
  });

  it('reports a server that dies before it is ready, with its output', async () => {
    await assert.rejects(startServer([process.execPath, '-e', 'console.error("no model here"); process.exit(3)', '--'], [], 10), /stopped before it was ready \(exit code 3\):\n.*no model here/s);
  });

  it('starts a server per configuration on a free port, runs every concurrency, stops the servers', async () => {
    const out = join(work, 'sweep.json');
    const bin = join(packageRoot(), 'bin', 'tachyon.js');
    const r = spawnSync(
      process.execPath,
      [bin, 'bench', 'sweep', '--concurrency', '1,2', '--quantization', 'none,fp8', '--serve-command', `${process.execPath} ${fakePath}`, '--serve-args', `--root ${tokenizerDir}`, '--num-prompts', '4', '--random-input-len', '16', '--random-output-len', '4', '--server-timeout', '20', '--output', out, '--disable-tqdm'],
      { encoding: 'utf8', timeout: 80_000 },
    );
    assert.equal(r.status, 0, r.stderr + r.stdout);
    const runs = JSON.parse(readFileSync(out, 'utf8')) as Record<string, unknown>[];
    assert.equal(runs.length, 4);
    assert.deepEqual(
      runs.map((x) => [(x.x_config as { name: string }).name, x.max_concurrency, x.model_id]),
      [
        ['quantization=none', 1, 'fake-none'],
        ['quantization=none', 2, 'fake-none'],
        ['quantization=fp8', 1, 'fake-fp8'],
        ['quantization=fp8', 2, 'fake-fp8'],
      ],
    );
    assert.ok(runs.every((x) => x.completed === 4 && x.tokenizer_id === tokenizerDir), 'tokenizer found through /v1/models root');
    // The fp8 fake streams twice as fast.
    assert.ok((runs[2]!.median_tpot_ms as number) < (runs[0]!.median_tpot_ms as number));
    // Every started server is gone: its port refuses connections.
    const ports = [...r.stdout.matchAll(/is ready at http:\/\/127\.0\.0\.1:(\d+)/g)].map((m) => Number(m[1]));
    assert.equal(ports.length, 2);
    for (const port of ports) {
      const refused = await new Promise<boolean>((resolve) => {
        const s = createConnection({ host: '127.0.0.1', port });
        s.on('connect', () => {
          s.destroy();
          resolve(false);
        });
        s.on('error', () => resolve(true));
      });
      assert.ok(refused, `server on port ${port} still running`);
    }
    assert.ok(existsSync(out));
  });
});
