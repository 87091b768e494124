// Load on the OpenAI-compatible server: N streaming completions at each concurrency, measured from
// the client as `vllm bench serve` measures them (TTFT = first chunk with choices, TPOT = (latency -
// TTFT) / (output tokens - 1), output tokens from the usage chunk), printed as a table and saved as
// JSON with the machine. Starts `tachyon serve` in-process on the default model unless --url is
// given. Measures; never passes or fails.
//
//   node dist/bench/serve-load.js [--url http://host:port] [--model DIR] [--num-requests 32]
//                                 [--concurrency 1,4,16] [--input-len 128] [--output-len 64]
//                                 [--max-num-batched-tokens 2048] (in-process server only)

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Rng } from '../src/engine/rng.js';
import { LLM } from '../src/llm.js';
import { DEFAULT_MODEL_NAME, packageRoot } from '../src/model/default-model.js';
import { startServer } from '../src/server/app.js';
import { machineInfo } from './machine.js';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    model: { type: 'string' },
    'served-model-name': { type: 'string' },
    'num-requests': { type: 'string', default: '32' },
    concurrency: { type: 'string', default: '1,4,16' },
    'input-len': { type: 'string', default: '128' },
    'output-len': { type: 'string', default: '64' },
    seed: { type: 'string', default: '0' },
    'max-num-batched-tokens': { type: 'string', default: '2048' },
    output: { type: 'string' },
  },
});
const numRequests = Number(values['num-requests']);
const concurrencies = values.concurrency!.split(',').map(Number);
const inputLen = Number(values['input-len']);
const outputLen = Number(values['output-len']);

let llm: LLM | undefined;
let stopServer: (() => Promise<void>) | undefined;
let baseUrl = values.url;
let modelName = values['served-model-name'] ?? values.model ?? DEFAULT_MODEL_NAME;
if (!baseUrl) {
  llm = await LLM.load({ model: values.model, maxNumSeqs: Math.max(...concurrencies), maxNumBatchedTokens: Number(values['max-num-batched-tokens']) });
  const server = await startServer(llm, { port: 0, modelName, version: 'bench' });
  baseUrl = server.url;
  stopServer = () => server.close();
} else if (!values['served-model-name']) {
  const models = (await (await fetch(`${baseUrl}/v1/models`)).json()) as { data: Array<{ id: string }> };
  modelName = models.data[0].id;
}

// Prompts of about inputLen tokens: seeded random words, different for every request so prefix
// caching does not flatter the figures.
const WORDS = 'robot battery sensor door corridor signal light motor wheel arm camera map charge station route report check status alert quiet'.split(' ');
const rng = new Rng(Number(values.seed));
const prompt = () => Array.from({ length: inputLen }, () => WORDS[Math.floor(rng.next() * WORDS.length)]).join(' ');

interface RequestResult {
  ttftS: number;
  latencyS: number;
  promptTokens: number;
  outputTokens: number;
}

/** One streaming completion, timed from the client. */
async function send(text: string): Promise<RequestResult> {
  const t0 = performance.now();
  const res = await fetch(`${baseUrl}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: modelName, prompt: text, max_tokens: outputLen, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } }),
  });
  if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let ttft = 0;
  let usage: { prompt_tokens: number; completion_tokens: number } | undefined;
  let buffer = '';
  const decoder = new TextDecoder();
  for await (const bytes of res.body) {
    buffer += decoder.decode(bytes as Uint8Array, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 2);
      if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
      const data = JSON.parse(event.slice(6));
      if (data.error) throw new Error(data.error.message);
      if (ttft === 0 && data.choices?.length > 0) ttft = performance.now() - t0;
      if (data.usage) usage = data.usage;
    }
  }
  const latency = performance.now() - t0;
  if (!usage) throw new Error('the stream ended without a usage chunk');
  return { ttftS: ttft / 1000, latencyS: latency / 1000, promptTokens: usage.prompt_tokens, outputTokens: usage.completion_tokens };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return 0;
  const rank = (p / 100) * (s.length - 1);
  const lo = Math.floor(rank);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (rank - lo);
}

interface Row {
  concurrency: number;
  requests: number;
  durationS: number;
  outputTokensPerSecond: number;
  requestsPerSecond: number;
  meanPromptTokens: number;
  ttftMs: { mean: number; p50: number; p99: number };
  tpotMs: { mean: number; p50: number; p99: number };
}

await send(prompt()); // warm-up: JIT and first-touch allocations are not part of the figures
const rows: Row[] = [];
for (const concurrency of concurrencies) {
  const prompts = Array.from({ length: numRequests }, prompt);
  const results: RequestResult[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < prompts.length) results.push(await send(prompts[next++]));
    }),
  );
  const durationS = (performance.now() - t0) / 1000;
  const ttfts = results.map((r) => r.ttftS * 1000);
  const tpots = results.filter((r) => r.outputTokens > 1).map((r) => ((r.latencyS - r.ttftS) / (r.outputTokens - 1)) * 1000);
  rows.push({
    concurrency,
    requests: results.length,
    durationS,
    outputTokensPerSecond: results.reduce((a, r) => a + r.outputTokens, 0) / durationS,
    requestsPerSecond: results.length / durationS,
    meanPromptTokens: mean(results.map((r) => r.promptTokens)),
    ttftMs: { mean: mean(ttfts), p50: percentile(ttfts, 50), p99: percentile(ttfts, 99) },
    tpotMs: { mean: mean(tpots), p50: percentile(tpots, 50), p99: percentile(tpots, 99) },
  });
}
const engineStats = llm?.engine.stats();
await stopServer?.();
await llm?.close();

const machine = machineInfo();
console.log(`server ${values.url ?? `in-process, model ${llm!.loaded.dir}, max-num-batched-tokens ${llm!.engine.options.maxNumBatchedTokens}`}; ${numRequests} requests per concurrency, ~${inputLen} words in, ${outputLen} tokens out (greedy, ignore_eos)`);
console.log(`machine ${machine.cpu}, ${machine.cores} cores, node ${machine.node}`);
console.log('');
console.log('| concurrency | prompt tokens | output tok/s | req/s | TTFT mean ms | TTFT p50 | TTFT p99 | TPOT mean ms | TPOT p50 | TPOT p99 |');
console.log('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
const f = (x: number) => x.toFixed(1);
for (const r of rows) {
  console.log(`| ${r.concurrency} | ${r.meanPromptTokens.toFixed(0)} | ${f(r.outputTokensPerSecond)} | ${r.requestsPerSecond.toFixed(2)} | ${f(r.ttftMs.mean)} | ${f(r.ttftMs.p50)} | ${f(r.ttftMs.p99)} | ${f(r.tpotMs.mean)} | ${f(r.tpotMs.p50)} | ${f(r.tpotMs.p99)} |`);
}
const outDir = join(packageRoot(), 'bench', 'results');
mkdirSync(outDir, { recursive: true });
const file = values.output ?? join(outDir, `serve-load-${machine.hostname}-${machine.date.slice(0, 10)}.json`);
const settings = {
  url: values.url ?? null,
  model: llm?.loaded.dir ?? modelName,
  numRequests,
  inputWords: inputLen,
  outputLen,
  seed: Number(values.seed),
  maxNumBatchedTokens: llm ? llm.engine.options.maxNumBatchedTokens : null,
};
writeFileSync(file, JSON.stringify({ bench: 'serve-load', settings, machine, engineStats, rows }, null, 2) + '\n');
console.log(`\nsaved ${file}`);
