// The server's Prometheus metrics under vLLM's names and labels (vllm:*, model_name, engine), so
// dashboards and `vllm bench serve`-style scrapers work unchanged. Gauges and token counters are
// read from the engine at scrape time; latency histograms are observed as requests finish, from
// the engine's per-request timestamps (arrival is when the HTTP request came in, as vLLM's frontend
// measures it).

import type { EngineStats, FinishReason, RequestMetrics } from '../engine/engine.js';
import { Counter, Gauge, Histogram, Registry } from './prometheus.js';

const TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560];
const TOKEN_LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
const REQUEST_LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680];

/** 1, 2, 5, 10, 20, 50, ... up to `max`, as vLLM's token-count histograms. */
export function oneTwoFive(max: number): number[] {
  const out: number[] = [];
  for (let scale = 1; ; scale *= 10) {
    for (const m of [1, 2, 5]) {
      if (m * scale > max) return out;
      out.push(m * scale);
    }
  }
}

export interface MetricsConfig {
  modelName: string;
  maxModelLen: number;
  blockSize: number;
  numKvBlocks: number;
  prefixCaching: boolean;
  /** Draft length of speculative decoding; per-position counters are exported for each. */
  numSpeculativeTokens?: number;
}

export interface FinishedSequence {
  finishReason: FinishReason;
  metrics: RequestMetrics;
  /** Gaps between this sequence's consecutive tokens, in seconds. */
  interTokenSeconds: number[];
}

export class ServerMetrics {
  private readonly registry = new Registry();
  private readonly labels: Record<string, string>;
  private readonly success: Counter;
  private readonly ttft: Histogram;
  private readonly itl: Histogram;
  private readonly tpotDeprecated: Histogram;
  private readonly requestTpot: Histogram;
  private readonly e2e: Histogram;
  private readonly queue: Histogram;
  private readonly prefill: Histogram;
  private readonly decode: Histogram;
  private readonly inference: Histogram;
  private readonly promptTokens: Histogram;
  private readonly generationTokens: Histogram;

  constructor(
    readonly config: MetricsConfig,
    private readonly stats: () => EngineStats,
  ) {
    const L = (this.labels = { model_name: config.modelName, engine: '0' });
    const r = this.registry;
    const one = (value: (s: EngineStats) => number) => () => [{ labels: L, value: value(this.stats()) }];

    r.register(new Gauge('vllm:num_requests_running', 'Number of requests in model execution batches.', one((s) => s.numRunning)));
    r.register(new Gauge('vllm:num_requests_waiting', 'Number of requests waiting to be processed.', one((s) => s.numWaiting)));
    r.register(new Gauge('vllm:kv_cache_usage_perc', 'KV-cache usage. 1 means 100 percent usage.', one((s) => s.kvCacheUsage)));
    const info = { ...L, block_size: String(config.blockSize), num_gpu_blocks: String(config.numKvBlocks), enable_prefix_caching: String(config.prefixCaching), cache_dtype: 'float32' };
    r.register(new Gauge('vllm:cache_config_info', 'Information of the KV cache configuration.', () => [{ labels: info, value: 1 }]));

    r.register(new Counter('vllm:prompt_tokens_total', 'Number of prefill tokens processed.', one((s) => s.promptTokens)));
    r.register(new Counter('vllm:generation_tokens_total', 'Number of generation tokens processed.', one((s) => s.generationTokens)));
    r.register(new Counter('vllm:num_preemptions_total', 'Cumulative number of preemptions from the engine.', one((s) => s.numPreemptions)));
    r.register(new Counter('vllm:prefix_cache_queries_total', 'Prefix cache queries, in terms of number of queried tokens.', one((s) => s.prefixCacheQueries)));
    r.register(new Counter('vllm:prefix_cache_hits_total', 'Prefix cache hits, in terms of number of cached tokens.', one((s) => s.prefixCacheHits)));
    this.success = r.register(new Counter('vllm:request_success_total', 'Count of successfully processed requests.'));
    for (const reason of ['stop', 'length', 'abort']) this.success.inc({ ...L, finished_reason: reason }, 0);

    r.register(new Counter('vllm:spec_decode_num_drafts_total', 'Number of spec decoding drafts.', one((s) => s.specDecode.numDrafts)));
    r.register(new Counter('vllm:spec_decode_num_draft_tokens_total', 'Number of draft tokens.', one((s) => s.specDecode.numDraftTokens)));
    r.register(new Counter('vllm:spec_decode_num_accepted_tokens_total', 'Number of accepted tokens.', one((s) => s.specDecode.numAcceptedTokens)));
    const positions = Math.max(1, config.numSpeculativeTokens ?? 0);
    r.register(
      new Counter('vllm:spec_decode_num_accepted_tokens_per_pos_total', 'Accepted tokens per draft position.', () => {
        const perPos = this.stats().specDecode.acceptedTokensPerPos;
        return Array.from({ length: Math.max(positions, perPos.length) }, (_, k) => ({ labels: { ...L, position: String(k) }, value: perPos[k] ?? 0 }));
      }),
    );

    const histogram = (name: string, help: string, buckets: number[]) => {
      const h = r.register(new Histogram(name, help, buckets));
      h.touch(L);
      return h;
    };
    this.ttft = histogram('vllm:time_to_first_token_seconds', 'Histogram of time to first token in seconds.', TTFT_BUCKETS);
    this.itl = histogram('vllm:inter_token_latency_seconds', 'Histogram of inter-token latency in seconds.', TOKEN_LATENCY_BUCKETS);
    this.tpotDeprecated = histogram('vllm:time_per_output_token_seconds', 'Histogram of time per output token in seconds (deprecated alias of inter_token_latency).', TOKEN_LATENCY_BUCKETS);
    this.requestTpot = histogram('vllm:request_time_per_output_token_seconds', 'Histogram of time_per_output_token_seconds per request.', TOKEN_LATENCY_BUCKETS);
    this.e2e = histogram('vllm:e2e_request_latency_seconds', 'Histogram of e2e request latency in seconds.', REQUEST_LATENCY_BUCKETS);
    this.queue = histogram('vllm:request_queue_time_seconds', 'Histogram of time spent in WAITING phase for request.', REQUEST_LATENCY_BUCKETS);
    this.prefill = histogram('vllm:request_prefill_time_seconds', 'Histogram of time spent in PREFILL phase for request.', REQUEST_LATENCY_BUCKETS);
    this.decode = histogram('vllm:request_decode_time_seconds', 'Histogram of time spent in DECODE phase for request.', REQUEST_LATENCY_BUCKETS);
    this.inference = histogram('vllm:request_inference_time_seconds', 'Histogram of time spent in RUNNING phase for request.', REQUEST_LATENCY_BUCKETS);
    const tokenBuckets = oneTwoFive(config.maxModelLen);
    this.promptTokens = histogram('vllm:request_prompt_tokens', 'Number of prefill tokens processed.', tokenBuckets);
    this.generationTokens = histogram('vllm:request_generation_tokens', 'Number of generation tokens processed.', tokenBuckets);
  }

  /** Record one finished sequence (each of a request's n choices counts as one, as in vLLM). */
  sequenceFinished(f: FinishedSequence): void {
    const L = this.labels;
    if (f.finishReason === 'stop' || f.finishReason === 'length' || f.finishReason === 'abort') this.success.inc({ ...L, finished_reason: f.finishReason });
    // Latencies describe completed work only; an aborted or failed request would skew them.
    if (f.finishReason !== 'stop' && f.finishReason !== 'length') return;
    const m = f.metrics;
    const s = (ms: number) => ms / 1000;
    for (const gap of f.interTokenSeconds) {
      this.itl.observe(L, gap);
      this.tpotDeprecated.observe(L, gap);
    }
    this.e2e.observe(L, s(m.finishedMs - m.arrivalMs));
    this.promptTokens.observe(L, m.promptTokens);
    this.generationTokens.observe(L, m.outputTokens);
    if (m.firstScheduledMs !== undefined) {
      this.queue.observe(L, s(m.firstScheduledMs - m.arrivalMs));
      this.inference.observe(L, s(m.finishedMs - m.firstScheduledMs));
    }
    if (m.firstTokenMs !== undefined) {
      this.ttft.observe(L, s(m.firstTokenMs - m.arrivalMs));
      if (m.firstScheduledMs !== undefined) this.prefill.observe(L, s(m.firstTokenMs - m.firstScheduledMs));
      if (m.lastTokenMs !== undefined) {
        this.decode.observe(L, s(m.lastTokenMs - m.firstTokenMs));
        if (m.outputTokens > 1) this.requestTpot.observe(L, s(m.lastTokenMs - m.firstTokenMs) / (m.outputTokens - 1));
      }
    }
  }

  render(): string {
    return this.registry.render();
  }
}
