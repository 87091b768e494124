// The benchmark's metric math against hand-computed vectors: numpy-linear percentiles, population
// std, TPOT/ITL/E2EL, goodput, peak tokens/s and concurrency, spec-decode deltas, the result JSON
// and the console block in vLLM's layout.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { arrivalTimes, sampleGamma } from '../src/bench/arrivals.js';
import { computeMetrics, mean, median, parseGoodput, peakConcurrency, peakOutputTokensPerSecond, percentile, std, timePerOutputToken, type RequestOutput } from '../src/bench/metrics.js';
import { parseSampleLine, parseSpecDecodeCounters, specDecodeDelta } from '../src/bench/prometheus.js';
import { requestBody } from '../src/bench/request.js';
import { buildResult, formatSummary, pyFloat, resultFileName, type RunConfig } from '../src/bench/result.js';
import { ProgressBar } from '../src/bench/progress.js';
import { SseParser } from '../src/bench/sse.js';
import { Rng } from '../src/engine/rng.js';

const close = (actual: number, expected: number, tol = 1e-9, what = '') => assert.ok(Math.abs(actual - expected) <= tol, `${what} expected ${expected}, got ${actual}`);

function out(p: Partial<RequestOutput>): RequestOutput {
  return { success: true, generatedText: '', outputTokens: 0, promptLen: 0, ttft: 0, itl: [], latency: 0, startTime: 0, clientQueueTime: 0, error: '', sawDone: true, ...p };
}

describe('summary statistics (numpy semantics)', () => {
  it('percentiles interpolate linearly between order statistics', () => {
    close(percentile([1, 2, 3, 4], 99), 3.97);
    close(percentile([1, 2, 3, 4], 50), 2.5);
    close(percentile([4, 1, 3, 2], 99), 3.97, 1e-9, 'unsorted input');
    close(percentile([1, 2, 3, 4], 0), 1);
    close(percentile([1, 2, 3, 4], 100), 4);
    close(percentile([10, 20, 30, 40, 50], 25), 20);
    close(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90), 9.1);
    close(percentile([5], 99), 5);
    assert.equal(percentile([], 99), 0);
    assert.equal(median([3, 1, 2]), 2);
    assert.throws(() => percentile([1], 101), /\[0, 100\]/);
  });

  it('std is the population standard deviation; empty lists give 0', () => {
    close(std([2, 4, 4, 4, 5, 5, 7, 9]), 2);
    close(mean([2, 4, 4, 4, 5, 5, 7, 9]), 5);
    assert.equal(std([]), 0);
    assert.equal(mean([]), 0);
  });
});

describe('per-request and run metrics', () => {
  it('TPOT excludes the first token and is undefined for one-token outputs', () => {
    close(timePerOutputToken({ latency: 1.0, ttft: 0.2 }, 5)!, 0.2);
    assert.equal(timePerOutputToken({ latency: 1.0, ttft: 0.2 }, 1), undefined);
  });

  const outputs = [
    out({ ttft: 0.1, itl: [0.05, 0.05, 0.1], latency: 0.3, outputTokens: 4, promptLen: 10, startTime: 0 }),
    out({ ttft: 0.2, itl: [0.1], latency: 0.3, outputTokens: 0, promptLen: 20, startTime: 0.1, generatedText: 'two words' }),
    out({ success: false, error: 'HTTP 500', promptLen: 99, ttft: 9, latency: 9 }),
    out({ ttft: 0.5, itl: [], latency: 0.5, outputTokens: 1, promptLen: 5, startTime: 0.2 }),
  ];
  const countTokens = (t: string) => t.split(' ').length;

  it('computes every figure of vLLM calculate_metrics from hand-computed values', () => {
    const m = computeMetrics(outputs, 2.0, { percentiles: [50, 99], countTokens });
    assert.equal(m.completed, 3);
    assert.equal(m.failed, 1);
    assert.equal(m.totalInput, 35); // failed requests contribute nothing
    assert.deepEqual(m.outputLens, [4, 2, 0, 1]); // usage, else the tokenizer count
    assert.equal(m.totalOutput, 7);
    assert.deepEqual(m.outputTokenSources, { usage: 2, tokenizer: 1, fallback: 0 });
    close(m.requestThroughput, 1.5);
    close(m.outputThroughput, 3.5);
    close(m.totalTokenThroughput, 21);
    close(m.ttft.mean, 266.6666667, 1e-6);
    close(m.ttft.median, 200, 1e-9);
    close(m.ttft.std, 169.9673171, 1e-6);
    close(m.ttft.percentiles[1]![1], 494, 1e-9);
    // TPOT over requests with > 1 token: (0.3-0.1)/3 and (0.3-0.2)/1.
    close(m.tpot.mean, ((0.2 / 3 + 0.1) / 2) * 1000, 1e-9);
    // ITL is the flattened chunk gaps of every request.
    close(m.itl.mean, 75, 1e-9);
    close(m.itl.percentiles[0]![1], 75, 1e-9);
    close(m.e2el.mean, (1.1 / 3) * 1000, 1e-9);
    assert.equal(m.maxConcurrentRequests, 3);
    assert.equal(m.maxOutputTokensPerS, 7);
  });

  it('without usage or a tokenizer a request counts as one token, as in vLLM', () => {
    const m = computeMetrics([out({ ttft: 0.1, itl: [0.1, 0.1], latency: 0.3, generatedText: 'abc' })], 1, { percentiles: [99] });
    assert.deepEqual(m.outputLens, [1]);
    assert.equal(m.tpot.mean, 0); // no request with more than one token
    assert.deepEqual(m.outputTokenSources, { usage: 0, tokenizer: 0, fallback: 1 });
  });

  it('goodput counts requests meeting every SLO; one-token outputs have TPOT 0', () => {
    const m = computeMetrics(outputs, 2.0, { percentiles: [99], countTokens, goodput: { ttft: 250, tpot: 90 } });
    close(m.requestGoodput, 0.5); // only the first request
    const onlyTpot0 = computeMetrics(outputs, 2.0, { percentiles: [99], countTokens, goodput: { tpot: 0 } });
    close(onlyTpot0.requestGoodput, 0.5); // only the one-token request
    const loose = computeMetrics(outputs, 2.0, { percentiles: [99], countTokens, goodput: { e2el: 1000 } });
    close(loose.requestGoodput, 1.5);
    assert.deepEqual(parseGoodput(['ttft:500', 'tpot:50']), { ttft: 500, tpot: 50 });
    assert.throws(() => parseGoodput(['itl:5']), /not supported/);
    assert.throws(() => parseGoodput(['ttft=5']), /KEY:VALUE/);
    assert.throws(() => parseGoodput(['ttft:-1']), /non-negative/);
  });

  it('peak output tokens/s bins token events into seconds from the first start', () => {
    const a = out({ startTime: 0, ttft: 0.5, itl: [0.6, 0.6], latency: 1.7 }); // events at 0.5, 1.1, 1.7
    const b = out({ startTime: 1.0, ttft: 0.05, itl: [0.1], latency: 0.15 }); // 1.05, 1.15
    assert.equal(peakOutputTokensPerSecond([a, b]), 4); // second 1 holds 1.1, 1.7, 1.05, 1.15
    assert.equal(peakOutputTokensPerSecond([out({ success: false })]), 0);
  });

  it('peak concurrency treats intervals as half-open', () => {
    assert.equal(peakConcurrency([out({ startTime: 0, latency: 1 }), out({ startTime: 1, latency: 1 })]), 1);
    assert.equal(peakConcurrency([out({ startTime: 0, latency: 1 }), out({ startTime: 0.5, latency: 1 }), out({ startTime: 0.9, latency: 0.05 })]), 3);
  });
});

describe('arrivals', () => {
  it('rate inf releases everything at once; finite rates end exactly at N / rate', () => {
    assert.deepEqual(arrivalTimes(4, { requestRate: Infinity, burstiness: 1, seed: 0 }), [0, 0, 0, 0]);
    const t = arrivalTimes(100, { requestRate: 10, burstiness: 1, seed: 3 });
    close(t[99]!, 10, 1e-9);
    assert.ok(t.every((v, i) => i === 0 || v >= t[i - 1]!));
    assert.deepEqual(arrivalTimes(100, { requestRate: 10, burstiness: 1, seed: 3 }), t, 'seeded');
    assert.notDeepEqual(arrivalTimes(100, { requestRate: 10, burstiness: 1, seed: 4 }), t);
    const even = arrivalTimes(5, { requestRate: 2, burstiness: Infinity, seed: 0 });
    even.forEach((v, i) => close(v, (i + 1) * 0.5, 1e-12));
  });

  it('ramp-ups follow the linear and exponential rate rules without rescaling', () => {
    const t = arrivalTimes(3, { requestRate: Infinity, burstiness: Infinity, seed: 0, rampUp: { strategy: 'linear', startRps: 1, endRps: 3 } });
    close(t[0]!, 1, 1e-12);
    close(t[1]!, 1 + 1 / 2, 1e-12);
    close(t[2]!, 1 + 1 / 2 + 1 / 3, 1e-12);
    const e = arrivalTimes(3, { requestRate: Infinity, burstiness: Infinity, seed: 0, rampUp: { strategy: 'exponential', startRps: 1, endRps: 4 } });
    close(e[1]! - e[0]!, 1 / 2, 1e-12);
  });

  it('gamma draws have the right mean and variance (shape above and below 1)', () => {
    for (const [shape, scale] of [
      [2, 3],
      [0.5, 2],
    ] as const) {
      const rng = new Rng(11);
      const xs = Array.from({ length: 40000 }, () => sampleGamma(shape, scale, rng));
      const m = mean(xs);
      const v = std(xs) ** 2;
      assert.ok(Math.abs(m - shape * scale) / (shape * scale) < 0.03, `mean ${m} for shape ${shape}`);
      assert.ok(Math.abs(v - shape * scale * scale) / (shape * scale * scale) < 0.08, `variance ${v} for shape ${shape}`);
      assert.ok(xs.every((x) => x >= 0));
    }
  });
});

describe('SSE parsing', () => {
  const enc = new TextEncoder();
  it('reassembles events split anywhere, including inside a UTF-8 character and across \\r\\n', () => {
    const text = ': ping\r\n\r\ndata: {"choices":[{"text":"é🙂"}]}\r\n\r\ndata: {"usage":{"completion_tokens":2}}\n\ndata: [DONE]\n\n';
    const bytes = enc.encode(text);
    for (let cut = 1; cut < bytes.length; cut += 3) {
      const p = new SseParser();
      const events = [...p.push(bytes.slice(0, cut)), ...p.push(bytes.slice(cut)), ...p.end()];
      const data = events.filter((e) => e.kind === 'data').map((e) => (e as { data: string }).data);
      assert.deepEqual(data, ['{"choices":[{"text":"é🙂"}]}', '{"usage":{"completion_tokens":2}}', '[DONE]'], `cut at ${cut}`);
      assert.equal(events.filter((e) => e.kind === 'comment').length, 1);
    }
  });

  it('accepts a complete final event without its blank line', () => {
    const p = new SseParser();
    assert.deepEqual(p.push(enc.encode('data: {"a":1}')), [{ kind: 'data', data: '{"a":1}' }]);
    assert.deepEqual(p.push(enc.encode('data: {"a":')), []);
    assert.deepEqual(p.push(enc.encode('2}\n\n')), [{ kind: 'data', data: '{"a":2}' }]);
  });
});

describe('request bodies', () => {
  const input = { apiUrl: 'http://x/v1/completions', model: 'm', prompt: 'hi', promptLen: 1, outputLen: 7, ignoreEos: true, extraBody: { temperature: 0.5 } };
  it('completions: vLLM fields, usage requested, extras merged last', () => {
    assert.deepEqual(requestBody('openai', input), { model: 'm', prompt: 'hi', repetition_penalty: 1.0, max_tokens: 7, logprobs: null, stream: true, stream_options: { include_usage: true }, ignore_eos: true, temperature: 0.5 });
  });
  it('chat: content as text parts, max_completion_tokens; vllm-0.10 mode sends temperature 0', () => {
    const b = requestBody('openai-chat', { ...input, extraBody: {}, ignoreEos: false }, 'vllm-0.10');
    assert.deepEqual(b, { model: 'm', messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }] }], max_completion_tokens: 7, stream: true, stream_options: { include_usage: true }, temperature: 0 });
  });
});

describe('speculative-decoding counters', () => {
  const scrape = (d: number, t: number, a: number, pos: number[]) =>
    [
      '# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.',
      '# TYPE vllm:spec_decode_num_drafts_total counter',
      `vllm:spec_decode_num_drafts_total{model_name="m",engine="0"} ${d / 2}`,
      `vllm:spec_decode_num_drafts_total{model_name="m",engine="1"} ${d / 2}`,
      `vllm:spec_decode_num_drafts_created{model_name="m",engine="0"} 1.7e9`,
      `vllm:spec_decode_num_draft_tokens_total{model_name="m",engine="0"} ${t}`,
      `vllm:spec_decode_num_accepted_tokens_total{model_name="m",engine="0"} ${a}`,
      ...pos.map((v, i) => `vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="${i}"} ${v}.0`),
      'vllm:num_requests_running{model_name="m"} 3',
    ].join('\n');

  it('deltas give acceptance rate, mean acceptance length and per-position rates', () => {
    const before = parseSpecDecodeCounters(scrape(10, 30, 15, [8, 5, 2]))!;
    const after = parseSpecDecodeCounters(scrape(110, 330, 195, [98, 65, 32]))!;
    assert.equal(before.numDrafts, 10, 'summed over engines, _created ignored');
    const s = specDecodeDelta(before, after)!;
    assert.equal(s.numDrafts, 100);
    assert.equal(s.draftTokens, 300);
    assert.equal(s.acceptedTokens, 180);
    close(s.acceptanceRate, 60);
    close(s.acceptanceLength, 2.8);
    assert.deepEqual(s.perPositionAcceptanceRates, [0.9, 0.6, 0.3]);
  });

  it('is absent without spec-decode metrics or without draft tokens', () => {
    assert.equal(parseSpecDecodeCounters('vllm:num_requests_running 1\n'), undefined);
    const zero = parseSpecDecodeCounters(scrape(0, 0, 0, []))!;
    assert.equal(specDecodeDelta(zero, zero), undefined);
    assert.equal(specDecodeDelta(undefined, zero), undefined);
  });

  it('parses exposition lines with escaped labels and timestamps', () => {
    assert.deepEqual(parseSampleLine('a_total{x="q\\"z",y="1"} 2.5 1700000000'), { name: 'a_total', labels: { x: 'q"z', y: '1' }, value: 2.5 });
    assert.equal(parseSampleLine('not a sample'), undefined);
  });
});

describe('result file and console block', () => {
  const cfg: RunConfig = {
    backend: 'openai',
    modelId: 'meta-llama/Llama-3.1-8B-Instruct',
    tokenizerId: '/models/llama',
    numPrompts: 4,
    metadata: { device: 'thor' },
    requestRate: Infinity,
    burstiness: 1,
    maxConcurrency: 2,
    percentileMetrics: ['ttft', 'tpot', 'itl', 'e2el', 'client_queue_time'],
    percentiles: [50, 99.9],
    hasGoodput: false,
  };
  const outputs = [out({ ttft: 0.1, itl: [0.05, 0.05], latency: 0.2, outputTokens: 3, promptLen: 8, clientQueueTime: 0.01 }), out({ success: false, error: 'boom' })];
  const metrics = computeMetrics(outputs, 1, { percentiles: cfg.percentiles });

  it('names files like vLLM', () => {
    assert.equal(resultFileName(cfg, '20260101-120000'), 'openai-infqps-concurrency2-Llama-3.1-8B-Instruct-20260101-120000.json');
    assert.equal(resultFileName({ ...cfg, label: 'thor', requestRate: 2, maxConcurrency: undefined }, 'D'), 'thor-2.0qps-Llama-3.1-8B-Instruct-D.json');
    assert.equal(pyFloat(2.5), '2.5');
  });

  it('keeps vLLM keys and order, drops per-request arrays unless detailed', () => {
    const r = buildResult(cfg, metrics, outputs, { date: 'D', saveDetailed: false, durationS: 1, extras: { x_machine: { cores: 1 } } });
    const keys = Object.keys(r);
    assert.deepEqual(keys.slice(0, 12), ['date', 'endpoint_type', 'backend', 'label', 'model_id', 'tokenizer_id', 'num_prompts', 'device', 'request_rate', 'burstiness', 'max_concurrency', 'duration']);
    assert.equal(r.request_rate, 'inf');
    assert.equal(r.request_goodput, null);
    for (const k of ['ttfts', 'itls', 'input_lens', 'output_lens', 'generated_texts', 'errors', 'start_times']) assert.ok(!(k in r), k);
    for (const k of ['latencies', 'queue_times', 'p50_ttft_ms', 'p99.9_ttft_ms', 'mean_tpot_ms', 'std_itl_ms', 'median_e2el_ms', 'mean_client_queue_time_ms', 'max_concurrent_requests', 'x_machine']) assert.ok(k in r, k);
    assert.ok(!('mean_e2el_including_client_queue_ms' in r), 'only selected metrics');
    assert.ok(keys.indexOf('x_machine') > keys.indexOf('p99.9_client_queue_time_ms'), 'extras come last');
    const detailed = buildResult(cfg, metrics, outputs, { date: 'D', saveDetailed: true, durationS: 1 });
    assert.deepEqual(detailed.output_lens, [3, 0]);
    assert.deepEqual(detailed.errors, ['', 'boom']);
  });

  it('prints the summary in vLLM\'s layout', () => {
    const text = formatSummary(cfg, metrics, outputs, 1.2345, { numDrafts: 10, draftTokens: 30, acceptedTokens: 15, acceptanceRate: 50, acceptanceLength: 2.5, perPositionAcceptanceRates: [0.8, 0.5, 0.2] });
    const lines = text.split('\n');
    assert.equal(lines[0], '============ Serving Benchmark Result ============');
    assert.equal(lines[1], 'Successful requests:                     1         ');
    assert.ok(lines.includes('Maximum request concurrency:             2         '));
    assert.ok(lines.includes('Benchmark duration (s):                  1.23      '));
    assert.ok(lines.includes('---------------Time to First Token----------------'));
    assert.ok(lines.includes('-----Time per Output Token (excl. 1st token)------'));
    assert.ok(lines.includes('P99.9 TTFT (ms):                         100.00    '));
    assert.ok(lines.includes('---------------Speculative Decoding---------------'));
    assert.ok(lines.includes('  Position 2:                            20.00     '));
    assert.ok(!lines.some((l) => l.startsWith('Request rate configured')), 'rate inf is not printed');
    assert.equal(lines[lines.length - 2], '='.repeat(50));
  });
});

describe('progress bar', () => {
  const sink = (isTTY: boolean) => {
    const writes: string[] = [];
    return { writes, stream: { isTTY, columns: 100, write: (s: string) => writes.push(s) } };
  };
  it('redraws in place on a terminal and ends its line', () => {
    const { writes, stream } = sink(true);
    const bar = new ProgressBar('benchmark', 4, stream);
    for (let i = 0; i < 4; i++) bar.tick();
    bar.finish();
    assert.ok(writes.every((w, i) => (i === writes.length - 1 ? w === '\n' : w.startsWith('\r'))));
    assert.match(writes[writes.length - 2]!, /benchmark \|█+\| 4\/4 \[00:00, [\d.]+ it\/s\]/);
    assert.match(bar.render(60), /\|█+\| 4\/4 /, 'full bar at the end');
  });
  it('writes one plain line per quarter to a file or pipe, and nothing when disabled', () => {
    const { writes, stream } = sink(false);
    const bar = new ProgressBar('benchmark', 8, stream);
    for (let i = 0; i < 8; i++) bar.tick();
    bar.finish();
    assert.deepEqual(writes.map((w) => w.replace(/ \(.*\)/, '')), ['benchmark: 2/8\n', 'benchmark: 4/8\n', 'benchmark: 6/8\n', 'benchmark: 8/8\n']);
    const off = sink(true);
    const quiet = new ProgressBar('benchmark', 2, off.stream, false);
    quiet.tick();
    quiet.finish();
    assert.deepEqual(off.writes, []);
  });
});
