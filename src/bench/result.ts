// A benchmark run as `vllm bench serve` reports it: the result JSON (same keys, same order, arrays
// dropped without --save-detailed), its file name, and the console block log scrapers expect.
// Our own additions live under x_* keys so vLLM tooling reads the files unchanged.

import type { RampUpStrategy } from './arrivals.js';
import { summarize, percentileLabel, type BenchmarkMetrics, type MetricStats, type RequestOutput } from './metrics.js';
import type { SpecDecodeStats } from './prometheus.js';

export const PERCENTILE_METRICS = ['ttft', 'tpot', 'itl', 'e2el', 'client_queue_time', 'e2el_including_client_queue'] as const;
export type PercentileMetric = (typeof PERCENTILE_METRICS)[number];
export const DEFAULT_PERCENTILE_METRICS: PercentileMetric[] = ['ttft', 'tpot', 'itl'];

/** The configuration of one run, as it goes into the result file. */
export interface RunConfig {
  backend: string;
  label?: string;
  modelId: string;
  tokenizerId?: string;
  numPrompts: number;
  metadata?: Record<string, string>;
  requestRate: number;
  burstiness: number;
  maxConcurrency?: number;
  rampUp?: { strategy: RampUpStrategy; startRps: number; endRps: number };
  percentileMetrics: PercentileMetric[];
  percentiles: number[];
  /** Whether goodput SLOs were set (request_goodput is null without them). */
  hasGoodput: boolean;
}

const HEADERS: Record<PercentileMetric, [name: string, header: string]> = {
  ttft: ['TTFT', 'Time to First Token'],
  tpot: ['TPOT', 'Time per Output Token (excl. 1st token)'],
  itl: ['ITL', 'Inter-token Latency'],
  e2el: ['E2EL', 'End-to-end Latency'],
  client_queue_time: ['Client Queue Time', 'Client-side Queueing'],
  e2el_including_client_queue: ['E2EL incl. Client Queue', 'Queue-inclusive End-to-end Latency'],
};

/** The statistics section of each selected metric, in vLLM's print order. */
export function metricSections(cfg: RunConfig, metrics: BenchmarkMetrics, outputs: readonly RequestOutput[]): [PercentileMetric, MetricStats][] {
  const ok = outputs.filter((o) => o.success);
  const stats: Partial<Record<PercentileMetric, MetricStats>> = { ttft: metrics.ttft, tpot: metrics.tpot, itl: metrics.itl, e2el: metrics.e2el };
  if (cfg.maxConcurrency !== undefined) {
    stats.client_queue_time = summarize(
      ok.map((o) => o.clientQueueTime),
      cfg.percentiles,
    );
    if (cfg.requestRate !== Infinity) {
      stats.e2el_including_client_queue = summarize(
        ok.map((o) => o.latency + o.clientQueueTime),
        cfg.percentiles,
      );
    }
  }
  return PERCENTILE_METRICS.filter((m) => cfg.percentileMetrics.includes(m) && stats[m]).map((m) => [m, stats[m]!]);
}

/** YYYYMMDD-HHMMSS in local time, as vLLM stamps results. */
export function resultDate(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** A number as Python prints a float: 2 → "2.0", 2.5 → "2.5", Infinity → "inf". */
export function pyFloat(x: number): string {
  if (x === Infinity) return 'inf';
  return Number.isInteger(x) ? x.toFixed(1) : String(x);
}

/** `<label or backend>-<rate>qps[-concurrency<N>]-<model basename>-<date>.json`. */
export function resultFileName(cfg: Pick<RunConfig, 'label' | 'backend' | 'requestRate' | 'maxConcurrency' | 'modelId' | 'rampUp'>, date: string): string {
  const label = cfg.label || cfg.backend;
  const conc = cfg.maxConcurrency !== undefined ? `-concurrency${cfg.maxConcurrency}` : '';
  const model = cfg.modelId.split('/').filter((s) => s.length > 0).pop() ?? cfg.modelId;
  const rate = cfg.rampUp ? `ramp-up-${cfg.rampUp.strategy}-${cfg.rampUp.startRps}qps-${cfg.rampUp.endRps}qps` : `${pyFloat(cfg.requestRate)}qps`;
  return `${label}-${rate}${conc}-${model}-${date}.json`;
}

export interface BuildResultOptions {
  date: string;
  saveDetailed: boolean;
  specDecode?: SpecDecodeStats;
  durationS: number;
  /** x_* extras (machine, dataset, compat mode, ...), appended after vLLM's keys. */
  extras?: Record<string, unknown>;
}

/** The result object with vLLM's keys in vLLM's order. */
export function buildResult(cfg: RunConfig, metrics: BenchmarkMetrics, outputs: readonly RequestOutput[], o: BuildResultOptions): Record<string, unknown> {
  const r: Record<string, unknown> = {
    date: o.date,
    endpoint_type: cfg.backend,
    backend: cfg.backend,
    label: cfg.label ?? null,
    model_id: cfg.modelId,
    tokenizer_id: cfg.tokenizerId ?? null,
    num_prompts: cfg.numPrompts,
  };
  for (const [k, v] of Object.entries(cfg.metadata ?? {})) r[k] = v;
  r.request_rate = cfg.requestRate === Infinity ? 'inf' : cfg.requestRate;
  r.burstiness = cfg.burstiness;
  r.max_concurrency = cfg.maxConcurrency ?? null;
  if (cfg.rampUp) {
    r.ramp_up_strategy = cfg.rampUp.strategy;
    r.ramp_up_start_rps = cfg.rampUp.startRps;
    r.ramp_up_end_rps = cfg.rampUp.endRps;
  }
  Object.assign(r, {
    duration: o.durationS,
    completed: metrics.completed,
    failed: metrics.failed,
    total_input_tokens: metrics.totalInput,
    total_output_tokens: metrics.totalOutput,
    request_throughput: metrics.requestThroughput,
    request_goodput: cfg.hasGoodput ? metrics.requestGoodput : null,
    output_throughput: metrics.outputThroughput,
    total_token_throughput: metrics.totalTokenThroughput,
  });
  if (o.saveDetailed) {
    Object.assign(r, {
      input_lens: outputs.map((x) => x.promptLen),
      output_lens: metrics.outputLens,
      ttfts: outputs.map((x) => x.ttft),
      itls: outputs.map((x) => x.itl),
    });
  }
  r.latencies = outputs.map((x) => x.latency);
  if (o.saveDetailed) r.start_times = outputs.map((x) => x.startTime);
  r.queue_times = outputs.map((x) => x.clientQueueTime);
  if (o.saveDetailed) {
    r.generated_texts = outputs.map((x) => x.generatedText);
    r.errors = outputs.map((x) => x.error);
  }
  r.max_output_tokens_per_s = metrics.maxOutputTokensPerS;
  r.max_concurrent_requests = metrics.maxConcurrentRequests;
  r.rtfx = 0;
  if (o.specDecode) {
    r.spec_decode_acceptance_rate = o.specDecode.acceptanceRate;
    r.spec_decode_acceptance_length = o.specDecode.acceptanceLength;
    r.spec_decode_num_drafts = o.specDecode.numDrafts;
    r.spec_decode_draft_tokens = o.specDecode.draftTokens;
    r.spec_decode_accepted_tokens = o.specDecode.acceptedTokens;
    r.spec_decode_per_position_acceptance_rates = o.specDecode.perPositionAcceptanceRates;
  }
  for (const [m, s] of metricSections(cfg, metrics, outputs)) {
    r[`mean_${m}_ms`] = s.mean;
    r[`median_${m}_ms`] = s.median;
    r[`std_${m}_ms`] = s.std;
    for (const [p, v] of s.percentiles) r[`p${percentileLabel(p)}_${m}_ms`] = v;
  }
  Object.assign(r, o.extras ?? {});
  return r;
}

// Python's "{:<40} {:<10}" and "{:<40} {:<10.2f}".
const row = (label: string, value: string) => `${label.padEnd(40)} ${value.padEnd(10)}`;
const f2 = (x: number) => x.toFixed(2);
const centered = (title: string, fill: string) => {
  const total = 50 - title.length;
  const left = Math.floor(total / 2);
  return fill.repeat(Math.max(0, left)) + title + fill.repeat(Math.max(0, total - left));
};

/** The console block, laid out exactly like vLLM's (so its log parsers work on ours). */
export function formatSummary(cfg: RunConfig, metrics: BenchmarkMetrics, outputs: readonly RequestOutput[], durationS: number, spec?: SpecDecodeStats): string {
  const lines: string[] = [];
  lines.push(centered(' Serving Benchmark Result ', '='));
  lines.push(row('Successful requests:', String(metrics.completed)));
  lines.push(row('Failed requests:', String(metrics.failed)));
  if (cfg.maxConcurrency !== undefined) lines.push(row('Maximum request concurrency:', String(cfg.maxConcurrency)));
  if (cfg.requestRate !== Infinity) lines.push(row('Request rate configured (RPS):', f2(cfg.requestRate)));
  lines.push(row('Benchmark duration (s):', f2(durationS)));
  lines.push(row('Total input tokens:', String(metrics.totalInput)));
  lines.push(row('Total generated tokens:', String(metrics.totalOutput)));
  lines.push(row('Request throughput (req/s):', f2(metrics.requestThroughput)));
  if (cfg.hasGoodput) lines.push(row('Request goodput (req/s):', f2(metrics.requestGoodput)));
  lines.push(row('Output token throughput (tok/s):', f2(metrics.outputThroughput)));
  lines.push(row('Peak output token throughput (tok/s):', f2(metrics.maxOutputTokensPerS)));
  lines.push(row('Peak concurrent requests:', f2(metrics.maxConcurrentRequests)));
  lines.push(row('Total token throughput (tok/s):', f2(metrics.totalTokenThroughput)));
  for (const [m, s] of metricSections(cfg, metrics, outputs)) {
    const [name, header] = HEADERS[m];
    lines.push(centered(header, '-'));
    lines.push(row(`Mean ${name} (ms):`, f2(s.mean)));
    lines.push(row(`Median ${name} (ms):`, f2(s.median)));
    for (const [p, v] of s.percentiles) lines.push(row(`P${percentileLabel(p)} ${name} (ms):`, f2(v)));
  }
  if (spec) {
    lines.push(centered('Speculative Decoding', '-'));
    lines.push(row('Acceptance rate (%):', f2(spec.acceptanceRate)));
    lines.push(row('Acceptance length:', f2(spec.acceptanceLength)));
    lines.push(row('Drafts:', String(spec.numDrafts)));
    lines.push(row('Draft tokens:', String(spec.draftTokens)));
    lines.push(row('Accepted tokens:', String(spec.acceptedTokens)));
    if (spec.perPositionAcceptanceRates.length > 0) {
      lines.push('Per-position acceptance (%):');
      spec.perPositionAcceptanceRates.forEach((rate, i) => lines.push(row(`  Position ${i}:`, f2(rate * 100))));
    }
  }
  lines.push('='.repeat(50));
  return lines.join('\n') + '\n';
}
