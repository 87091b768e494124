// The metric math of `tachyon bench serve`, exactly as `vllm bench serve` defines it: numpy-linear
// percentiles, population std, TTFT/TPOT/ITL/E2EL, goodput, peak output tokens/s and peak concurrency.
// Pure functions over per-request outputs (times in seconds), so every figure is testable by hand.

/** What one timed request produced, as the request functions record it (times in seconds). */
export interface RequestOutput {
  success: boolean;
  generatedText: string;
  /** usage.completion_tokens when the server sent it (0 when it did not). */
  outputTokens: number;
  /** Prompt tokens: the dataset's count, replaced by usage.prompt_tokens when the server sent it. */
  promptLen: number;
  /** Time to the first token event (a chunk with non-empty `choices`). */
  ttft: number;
  /** Gaps between consecutive token events (one per chunk after the first). */
  itl: number[];
  /** Start to the last token event (E2EL). */
  latency: number;
  /** Clock reading (seconds, monotonic) just before the POST was issued. */
  startTime: number;
  /** Time the request waited for the client's --max-concurrency semaphore. */
  clientQueueTime: number;
  error: string;
  /** Whether the stream ended with `data: [DONE]` (a missing one is counted, not failed, as in vLLM). */
  sawDone: boolean;
}

/** mean / median / std / chosen percentiles of one metric, in milliseconds. */
export interface MetricStats {
  mean: number;
  median: number;
  std: number;
  /** [percentile, value] in the order asked for. */
  percentiles: [number, number][];
}

export type SloName = 'ttft' | 'tpot' | 'e2el';
export const SLO_NAMES: readonly SloName[] = ['ttft', 'tpot', 'e2el'];

export interface MetricsOptions {
  /** Percentiles to report, e.g. [99] or [50, 90, 99]. */
  percentiles: number[];
  /** Goodput SLOs in milliseconds; a request is good when every one holds. */
  goodput?: Partial<Record<SloName, number>>;
  /**
   * Output tokens of a request whose server sent no usage: vLLM re-tokenizes the generated text
   * (add_special_tokens=False). Without it a request counts as 1 token, as in vLLM.
   */
  countTokens?: (text: string) => number;
}

/** Where a request's output token count came from. */
export type OutputTokenSource = 'usage' | 'tokenizer' | 'fallback';

export interface BenchmarkMetrics {
  completed: number;
  failed: number;
  totalInput: number;
  totalOutput: number;
  requestThroughput: number;
  /** Good requests per second; 0 when no SLO is set (the result JSON then says null). */
  requestGoodput: number;
  outputThroughput: number;
  totalTokenThroughput: number;
  ttft: MetricStats;
  tpot: MetricStats;
  itl: MetricStats;
  e2el: MetricStats;
  /** Max token events (chunks) in any 1-second bin. */
  maxOutputTokensPerS: number;
  /** Exact peak of in-flight successful requests (sweep line over [start, end)). */
  maxConcurrentRequests: number;
  /** Per request, the output tokens counted (0 for failed requests). */
  outputLens: number[];
  outputTokenSources: Record<OutputTokenSource, number>;
}

/** Arithmetic mean; 0 for an empty list (vLLM substitutes 0 for an empty list). */
export function mean(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}

/** Population standard deviation (numpy's default ddof=0); 0 for an empty list. */
export function std(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  const m = mean(xs);
  let s = 0;
  for (const x of xs) s += (x - m) * (x - m);
  return Math.sqrt(s / xs.length);
}

/**
 * numpy.percentile's default "linear" method: sort, h = (n-1)·p/100, interpolate between the
 * neighbours of h. [1,2,3,4] → p50 2.5, p99 3.97. Empty → 0.
 */
export function percentile(xs: readonly number[], p: number): number {
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be in [0, 100], got ${p}`);
  if (xs.length === 0) return 0;
  const sorted = [...xs].sort((a, b) => a - b);
  const h = ((sorted.length - 1) * p) / 100;
  const lo = Math.floor(h);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo]! + (h - lo) * (sorted[hi]! - sorted[lo]!);
}

export function median(xs: readonly number[]): number {
  return percentile(xs, 50);
}

/** Statistics of values in seconds, reported in milliseconds. */
export function summarize(valuesSeconds: readonly number[], percentiles: readonly number[]): MetricStats {
  return {
    mean: mean(valuesSeconds) * 1000,
    median: median(valuesSeconds) * 1000,
    std: std(valuesSeconds) * 1000,
    percentiles: percentiles.map((p) => [p, percentile(valuesSeconds, p) * 1000]),
  };
}

/** How vLLM prints a percentile in key names: 99 → "99", 99.9 → "99.9". */
export function percentileLabel(p: number): string {
  return String(p);
}

/**
 * TPOT of one request: (E2EL − TTFT) / (output tokens − 1), defined only when it produced more
 * than one token (the first token's time is TTFT's, so it is excluded).
 */
export function timePerOutputToken(out: Pick<RequestOutput, 'latency' | 'ttft'>, outputLen: number): number | undefined {
  return outputLen > 1 ? (out.latency - out.ttft) / (outputLen - 1) : undefined;
}

/** Parse goodput SLO pairs like ["ttft:500", "tpot:50"] (milliseconds). */
export function parseGoodput(pairs: readonly string[]): Partial<Record<SloName, number>> {
  const slos: Partial<Record<SloName, number>> = {};
  for (const pair of pairs.flatMap((p) => p.split(/[\s,]+/)).filter((p) => p.length > 0)) {
    const m = /^([a-z0-9_]+):([^:]+)$/.exec(pair);
    const value = m ? Number(m[2]) : NaN;
    if (!m || !Number.isFinite(value)) {
      throw new RangeError(`goodput SLO '${pair}' is not KEY:VALUE with VALUE in milliseconds (e.g. ttft:500 tpot:50)`);
    }
    if (!(SLO_NAMES as readonly string[]).includes(m[1]!)) {
      throw new RangeError(`goodput SLO '${m[1]}' is not supported; supported: ${SLO_NAMES.join(', ')}`);
    }
    if (value < 0) throw new RangeError(`goodput SLO ${m[1]} must be non-negative, got ${value}`);
    slos[m[1] as SloName] = value;
  }
  return slos;
}

/**
 * Peak output throughput as vLLM computes it: every token event (start + ttft, then cumulative
 * ITLs) of every successful request, bucketed into 1-second bins from the earliest start; the
 * fullest bin. It counts chunks, not tokens.
 */
export function peakOutputTokensPerSecond(outputs: readonly RequestOutput[]): number {
  const ok = outputs.filter((o) => o.success);
  if (ok.length === 0) return 0;
  const minStart = Math.min(...ok.map((o) => o.startTime));
  const maxEnd = Math.max(...ok.map((o) => o.startTime + o.latency));
  const bins = new Array<number>(Math.ceil(maxEnd - minStart) + 1).fill(0);
  for (const o of ok) {
    let t = o.startTime + o.ttft;
    const times = [t];
    for (const gap of o.itl) {
      t += gap;
      times.push(t);
    }
    for (const time of times) {
      const bin = Math.trunc(time - minStart);
      if (bin >= 0 && bin < bins.length) bins[bin]! += 1;
    }
  }
  return Math.max(...bins);
}

/** Exact peak of concurrent successful requests over half-open [start, start + latency) intervals. */
export function peakConcurrency(outputs: readonly RequestOutput[]): number {
  const events: [number, number][] = [];
  for (const o of outputs) {
    if (!o.success) continue;
    events.push([o.startTime, 1], [o.startTime + o.latency, -1]);
  }
  // A departure at the same instant as an arrival goes first (half-open intervals).
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let current = 0;
  let peak = 0;
  for (const [, delta] of events) {
    current += delta;
    if (current > peak) peak = current;
  }
  return peak;
}

/** Every figure of a run, from its per-request outputs and its duration (seconds). */
export function computeMetrics(outputs: readonly RequestOutput[], durationS: number, opts: MetricsOptions): BenchmarkMetrics {
  const outputLens: number[] = [];
  const sources: Record<OutputTokenSource, number> = { usage: 0, tokenizer: 0, fallback: 0 };
  const ttfts: number[] = [];
  const tpots: number[] = [];
  const allTpots: number[] = [];
  const itls: number[] = [];
  const e2els: number[] = [];
  let totalInput = 0;
  let completed = 0;

  for (const o of outputs) {
    if (!o.success) {
      outputLens.push(0);
      continue;
    }
    let outputLen = o.outputTokens;
    if (outputLen) sources.usage++;
    else if (opts.countTokens) {
      outputLen = opts.countTokens(o.generatedText);
      sources.tokenizer++;
    } else {
      outputLen = 1;
      sources.fallback++;
    }
    outputLens.push(outputLen);
    totalInput += o.promptLen;
    const tpot = timePerOutputToken(o, outputLen);
    if (tpot !== undefined) tpots.push(tpot);
    // For goodput a request with at most one token has TPOT 0.
    allTpots.push(tpot ?? 0);
    itls.push(...o.itl);
    ttfts.push(o.ttft);
    e2els.push(o.latency);
    completed++;
  }

  let good = 0;
  const slos = opts.goodput ?? {};
  const sloNames = SLO_NAMES.filter((n) => slos[n] !== undefined);
  if (sloNames.length > 0) {
    const per: Record<SloName, number[]> = { ttft: ttfts, tpot: allTpots, e2el: e2els };
    for (let i = 0; i < completed; i++) {
      if (sloNames.every((n) => per[n][i]! <= slos[n]! / 1000)) good++;
    }
  }

  const totalOutput = outputLens.reduce((a, b) => a + b, 0);
  return {
    completed,
    failed: outputs.length - completed,
    totalInput,
    totalOutput,
    requestThroughput: completed / durationS,
    requestGoodput: good / durationS,
    outputThroughput: totalOutput / durationS,
    totalTokenThroughput: (totalInput + totalOutput) / durationS,
    ttft: summarize(ttfts, opts.percentiles),
    tpot: summarize(tpots, opts.percentiles),
    itl: summarize(itls, opts.percentiles),
    e2el: summarize(e2els, opts.percentiles),
    maxOutputTokensPerS: peakOutputTokensPerSecond(outputs),
    maxConcurrentRequests: peakConcurrency(outputs),
    outputLens,
    outputTokenSources: sources,
  };
}
