// `tachyon bench serve` and `tachyon bench sweep`: flags spelled as `vllm bench serve` spells them,
// parsed into the benchmark library's options; results printed and saved.

import { Command, InvalidArgumentError } from 'commander';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DATASETS, type DatasetName } from '../bench/datasets.js';
import { parseGoodput } from '../bench/metrics.js';
import { BACKENDS, COMPAT_MODES, type BackendName, type CompatMode } from '../bench/request.js';
import { DEFAULT_PERCENTILE_METRICS, PERCENTILE_METRICS, resultDate, resultFileName, type PercentileMetric } from '../bench/result.js';
import { benchServe, DEFAULT_DATASET_OPTIONS, type ServeBenchOptions } from '../bench/serve-benchmark.js';
import { defaultServeCommand, parseServerConfigs, runSweep, serverConfigsFromFlags, splitCommandLine, type ServerConfig } from '../bench/sweep.js';
import { InvalidRequestError } from '../errors.js';
import { floatArg, intArg } from './options.js';

const rateArg = (v: string): number => {
  if (v === 'inf' || v === 'Infinity') return Infinity;
  const n = Number(v);
  if (!(n > 0)) throw new InvalidArgumentError(`--request-rate must be a positive number or inf, got '${v}'`);
  return n;
};
const burstArg = (v: string): number => {
  const n = v === 'inf' ? Infinity : Number(v);
  if (!(n > 0)) throw new InvalidArgumentError(`--burstiness must be positive, got '${v}'`);
  return n;
};
const choice = <T extends string>(name: string, values: readonly T[]) => (v: string): T => {
  if (!(values as readonly string[]).includes(v)) throw new InvalidArgumentError(`${name} '${v}' is not supported; supported: ${values.join(', ')}`);
  return v as T;
};
const collect = (v: string, prev: string[] = []) => [...prev, v];

interface BenchFlags {
  backend: BackendName;
  compat: CompatMode;
  baseUrl?: string;
  host: string;
  port: number;
  endpoint?: string;
  model?: string;
  servedModelName?: string;
  tokenizer?: string;
  datasetName: DatasetName;
  datasetPath?: string;
  numPrompts: number;
  inputLen?: number;
  outputLen?: number;
  randomInputLen: number;
  randomOutputLen: number;
  randomRangeRatio: number;
  randomPrefixLen: number;
  sharegptOutputLen?: number;
  prefixRepetitionPrefixLen: number;
  prefixRepetitionSuffixLen: number;
  prefixRepetitionNumPrefixes: number;
  prefixRepetitionOutputLen: number;
  customOutputLen: number;
  skipChatTemplate?: boolean;
  disableShuffle?: boolean;
  oversample: boolean;
  requestRate: number;
  burstiness: number;
  seed: number;
  rampUpStrategy?: 'linear' | 'exponential';
  rampUpStartRps?: number;
  rampUpEndRps?: number;
  maxConcurrency?: number;
  numWarmups: number;
  ignoreEos?: boolean;
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  frequencyPenalty?: number;
  presencePenalty?: number;
  repetitionPenalty?: number;
  logprobs?: number;
  extraBody?: string;
  header?: string[];
  metadata?: string[];
  label?: string;
  percentileMetrics: string;
  metricPercentiles: string;
  goodput?: string[];
  saveResult?: boolean;
  saveDetailed?: boolean;
  resultDir?: string;
  resultFilename?: string;
  requestIdPrefix?: string;
  readyCheckTimeoutSec: number;
  disableTqdm?: boolean;
  timeoutSec?: number;
}

/** The flags `bench serve` and `bench sweep` share. */
function addBenchOptions(cmd: Command, withConcurrency: boolean): Command {
  cmd
    .option('--backend <name>', `request format: ${BACKENDS.join(' | ')}`, choice('--backend', BACKENDS), 'openai')
    .option('--compat <mode>', `which vllm bench generation to match where they differ: ${COMPAT_MODES.join(' | ')}`, choice('--compat', COMPAT_MODES), 'vllm-main')
    .option('--base-url <url>', 'server root, e.g. http://127.0.0.1:8000 (instead of --host/--port)')
    .option('--host <host>', 'server host', '127.0.0.1')
    .option('--port <n>', 'server port', intArg('--port'), 8000)
    .option('--endpoint <path>', 'API path (default /v1/completions, or /v1/chat/completions for openai-chat)')
    .option('--model <id>', 'model id (default: the first model of GET /v1/models)')
    .option('--served-model-name <name>', 'name sent in requests, when it differs from --model')
    .option('--tokenizer <dir>', 'Hugging Face model directory with tokenizer.json (default: --model or the server\'s model root, if a local directory)')
    .option('--dataset-name <name>', `${DATASETS.join(' | ')}`, choice('--dataset-name', DATASETS), 'random')
    .option('--dataset-path <file>', 'ShareGPT JSON or custom JSONL file')
    .option('--num-prompts <n>', 'number of timed requests', intArg('--num-prompts'), 1000)
    .option('--input-len <n>', 'alias of --random-input-len', intArg('--input-len'))
    .option('--output-len <n>', 'output length for every dataset (maps onto the dataset-specific flags)', intArg('--output-len'))
    .option('--random-input-len <n>', 'random: prompt tokens as the server counts them', intArg('--random-input-len'), DEFAULT_DATASET_OPTIONS.randomInputLen)
    .option('--random-output-len <n>', 'random: max_tokens', intArg('--random-output-len'), DEFAULT_DATASET_OPTIONS.randomOutputLen)
    .option('--random-range-ratio <r>', 'random: lengths uniform in [L(1-r), L(1+r)], r in [0, 1)', floatArg('--random-range-ratio'), 0)
    .option('--random-prefix-len <n>', 'random: shared prefix tokens added to every prompt', intArg('--random-prefix-len'), 0)
    .option('--sharegpt-output-len <n>', 'sharegpt: fixed max_tokens instead of the reference reply\'s length', intArg('--sharegpt-output-len'))
    .option('--prefix-repetition-prefix-len <n>', 'prefix_repetition: prefix tokens', intArg('--prefix-repetition-prefix-len'), 256)
    .option('--prefix-repetition-suffix-len <n>', 'prefix_repetition: suffix tokens', intArg('--prefix-repetition-suffix-len'), 256)
    .option('--prefix-repetition-num-prefixes <n>', 'prefix_repetition: distinct prefixes', intArg('--prefix-repetition-num-prefixes'), 10)
    .option('--prefix-repetition-output-len <n>', 'prefix_repetition: max_tokens', intArg('--prefix-repetition-output-len'), 128)
    .option('--custom-output-len <n>', 'custom: max_tokens for lines without "output_tokens"', intArg('--custom-output-len'), 256)
    .option('--skip-chat-template', 'custom: send prompts as they are, without the model\'s chat template')
    .option('--disable-shuffle', 'sharegpt/custom: keep the file\'s order')
    .option('--no-oversample', 'sharegpt/custom: do not repeat samples when the file has fewer than --num-prompts')
    .option('--request-rate <rps>', 'requests per second, or inf to send all at once', rateArg, Infinity)
    .option('--burstiness <k>', 'gamma shape of arrivals: 1 = Poisson, < 1 burstier, > 1 more even', burstArg, 1)
    .option('--seed <n>', 'seed for datasets and arrivals', intArg('--seed'), 0)
    .option('--ramp-up-strategy <s>', 'linear | exponential request-rate ramp', choice('--ramp-up-strategy', ['linear', 'exponential'] as const))
    .option('--ramp-up-start-rps <n>', 'ramp-up start rate', floatArg('--ramp-up-start-rps'))
    .option('--ramp-up-end-rps <n>', 'ramp-up end rate', floatArg('--ramp-up-end-rps'));
  if (withConcurrency) cmd.option('--max-concurrency <n>', 'most requests in flight at once (client-side semaphore)', intArg('--max-concurrency'));
  return cmd
    .option('--num-warmups <n>', 'untimed copies of the first request sent before timing starts', intArg('--num-warmups'), 0)
    .option('--ignore-eos', 'send ignore_eos: true (forced for the random dataset in vllm-main mode)')
    .option('--temperature <t>', 'sampling temperature sent with every request (default: the server\'s)', floatArg('--temperature'))
    .option('--top-p <p>', 'top_p', floatArg('--top-p'))
    .option('--top-k <k>', 'top_k', intArg('--top-k'))
    .option('--min-p <p>', 'min_p', floatArg('--min-p'))
    .option('--frequency-penalty <x>', 'frequency_penalty', floatArg('--frequency-penalty'))
    .option('--presence-penalty <x>', 'presence_penalty', floatArg('--presence-penalty'))
    .option('--repetition-penalty <x>', 'repetition_penalty', floatArg('--repetition-penalty'))
    .option('--logprobs <n>', 'logprobs per token (completions)', intArg('--logprobs'))
    .option('--extra-body <json>', 'JSON merged into every request body, last')
    .option('--header <k=v...>', 'extra HTTP headers (OPENAI_API_KEY in the environment becomes a bearer token)')
    .option('--metadata <k=v...>', 'key=value pairs stored in the result file')
    .option('--label <label>', 'result label (file name prefix; default: the backend)')
    .option('--percentile-metrics <list>', `metrics with statistics: ${PERCENTILE_METRICS.join(',')}`, DEFAULT_PERCENTILE_METRICS.join(','))
    .option('--metric-percentiles <list>', 'percentiles to report, e.g. 50,90,99', '99')
    .option('--goodput <slo...>', 'SLOs in ms for goodput, e.g. ttft:500 tpot:50 e2el:10000')
    .option('--save-result', 'save the result JSON')
    .option('--save-detailed', 'also save per-request arrays (ttfts, itls, texts, errors, ...)')
    .option('--result-dir <dir>', 'folder for result files')
    .option('--result-filename <name>', 'result file name (default: <label>-<rate>qps[-concurrency<N>]-<model>-<date>.json)')
    .option('--request-id-prefix <p>', 'x-request-id prefix (default bench-<8 hex>-)')
    .option('--ready-check-timeout-sec <s>', 'retry the first request until it succeeds, up to this long (0 = no check)', intArg('--ready-check-timeout-sec'), 0)
    .option('--timeout-sec <s>', 'limit per request (default 6 hours)', intArg('--timeout-sec'))
    .option('--disable-tqdm', 'no progress bar');
}

function keyValues(pairs: string[] | undefined, flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs ?? []) {
    const i = p.indexOf('=');
    if (i <= 0) throw new InvalidRequestError(`${flag} '${p}' is not KEY=VALUE`);
    out[p.slice(0, i).trim()] = p.slice(i + 1).trim();
  }
  return out;
}

function benchOptionsFrom(f: BenchFlags): ServeBenchOptions {
  const percentileMetrics = f.percentileMetrics.split(',').map((s) => s.trim()).filter(Boolean);
  for (const m of percentileMetrics) {
    if (!(PERCENTILE_METRICS as readonly string[]).includes(m)) throw new InvalidRequestError(`--percentile-metrics '${m}' is not supported; supported: ${PERCENTILE_METRICS.join(', ')}`);
  }
  const percentiles = f.metricPercentiles.split(',').map((s) => Number(s.trim()));
  if (percentiles.some((p) => !(p >= 0 && p <= 100))) throw new InvalidRequestError(`--metric-percentiles needs numbers in [0, 100], got '${f.metricPercentiles}'`);
  let extraBody: Record<string, unknown> | undefined;
  if (f.extraBody !== undefined) {
    try {
      extraBody = JSON.parse(f.extraBody) as Record<string, unknown>;
    } catch {
      throw new InvalidRequestError(`--extra-body is not JSON: ${f.extraBody}`);
    }
    if (typeof extraBody !== 'object' || extraBody === null || Array.isArray(extraBody)) throw new InvalidRequestError('--extra-body must be a JSON object');
  }
  let goodput;
  try {
    goodput = parseGoodput(f.goodput ?? []);
  } catch (err) {
    throw new InvalidRequestError(`--goodput: ${(err as Error).message}`);
  }
  let rampUp: ServeBenchOptions['rampUp'];
  if (f.rampUpStrategy) {
    if (f.requestRate !== Infinity) throw new InvalidRequestError('with --ramp-up-strategy do not pass --request-rate: the ramp sets the rate');
    if (f.rampUpStartRps === undefined || f.rampUpEndRps === undefined) throw new InvalidRequestError('--ramp-up-strategy needs --ramp-up-start-rps and --ramp-up-end-rps');
    if (f.rampUpStartRps < 0 || f.rampUpStartRps > f.rampUpEndRps) throw new InvalidRequestError('ramp-up rates must satisfy 0 <= start <= end');
    if (f.rampUpStrategy === 'exponential' && f.rampUpStartRps === 0) throw new InvalidRequestError('an exponential ramp-up cannot start at 0 rps');
    rampUp = { strategy: f.rampUpStrategy, startRps: f.rampUpStartRps, endRps: f.rampUpEndRps };
  }
  const sampling: Record<string, number> = {};
  const set = (k: string, v: number | undefined) => {
    if (v !== undefined) sampling[k] = v;
  };
  set('top_p', f.topP);
  set('top_k', f.topK);
  set('min_p', f.minP);
  set('temperature', f.temperature);
  set('frequency_penalty', f.frequencyPenalty);
  set('presence_penalty', f.presencePenalty);
  set('repetition_penalty', f.repetitionPenalty);
  const out = f.outputLen;
  return {
    backend: f.backend,
    compat: f.compat,
    baseUrl: f.baseUrl,
    host: f.host,
    port: f.port,
    endpoint: f.endpoint,
    model: f.model,
    servedModelName: f.servedModelName,
    tokenizer: f.tokenizer,
    dataset: {
      name: f.datasetName,
      path: f.datasetPath,
      randomInputLen: f.inputLen ?? f.randomInputLen,
      randomOutputLen: out ?? f.randomOutputLen,
      randomRangeRatio: f.randomRangeRatio,
      randomPrefixLen: f.randomPrefixLen,
      sharegptOutputLen: out ?? f.sharegptOutputLen,
      prefixRepetitionPrefixLen: f.prefixRepetitionPrefixLen,
      prefixRepetitionSuffixLen: f.prefixRepetitionSuffixLen,
      prefixRepetitionNumPrefixes: f.prefixRepetitionNumPrefixes,
      prefixRepetitionOutputLen: out ?? f.prefixRepetitionOutputLen,
      customOutputLen: out ?? f.customOutputLen,
      skipChatTemplate: f.skipChatTemplate === true,
      disableShuffle: f.disableShuffle === true,
      noOversample: f.oversample === false,
    },
    numPrompts: f.numPrompts,
    requestRate: f.requestRate,
    burstiness: f.burstiness,
    seed: f.seed,
    rampUp,
    maxConcurrency: f.maxConcurrency,
    numWarmups: f.numWarmups,
    ignoreEos: f.ignoreEos === true,
    logprobs: f.logprobs,
    sampling,
    extraBody,
    headers: keyValues(f.header, '--header'),
    metadata: keyValues(f.metadata, '--metadata'),
    label: f.label,
    percentileMetrics: percentileMetrics as PercentileMetric[],
    percentiles,
    goodput,
    requestIdPrefix: f.requestIdPrefix,
    readyCheckTimeoutS: f.readyCheckTimeoutSec,
    saveDetailed: f.saveDetailed === true,
    timeoutMs: f.timeoutSec !== undefined ? f.timeoutSec * 1000 : undefined,
    progress: f.disableTqdm !== true,
    log: (line) => process.stdout.write(line + '\n'),
  };
}

function writeJson(path: string, value: unknown): void {
  writeFileSync(path, JSON.stringify(value, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v)) + '\n');
}

function serveCommand(): Command {
  const cmd = new Command('serve').description('load-test an OpenAI-compatible server with vLLM-compatible metrics (TTFT, TPOT, ITL, E2EL, throughput, goodput, spec-decode acceptance)');
  addBenchOptions(cmd, true);
  return cmd.action(async (f: BenchFlags) => {
    const o = benchOptionsFrom(f);
    const run = await benchServe(o);
    process.stdout.write(run.summary);
    if (f.saveResult || f.saveDetailed) {
      let file = f.resultFilename ?? resultFileName({ label: f.label, backend: f.backend, requestRate: o.requestRate, maxConcurrency: o.maxConcurrency, modelId: String(run.result.model_id), rampUp: o.rampUp }, String(run.result.date));
      if (f.resultDir) {
        mkdirSync(f.resultDir, { recursive: true });
        file = join(f.resultDir, file);
      }
      writeJson(file, run.result);
      process.stdout.write(`Result saved to ${file}\n`);
    }
  });
}

interface SweepFlags extends BenchFlags {
  concurrency: string;
  serverConfigs?: string;
  quantization?: string;
  kvCacheDtype?: string;
  speculativeConfig?: string[];
  serveCommand?: string;
  serveArgs?: string;
  serverTimeout: number;
  output?: string;
}

function sweepCommand(): Command {
  const cmd = new Command('sweep')
    .description('run `bench serve` over concurrencies (and server configurations it starts itself); one JSON file of runs')
    .requiredOption('--concurrency <list>', 'max concurrencies to run, e.g. 1,4,16')
    .option('--server-configs <file>', 'JSON list of server configurations: {"name", "args": [...]} or flag objects like {"quantization": "fp8"}')
    .option('--quantization <list>', 'start a server per quantization, e.g. none,fp8,w4a16')
    .option('--kv-cache-dtype <list>', 'and per KV cache element type, e.g. bf16,fp8')
    .option('--speculative-config <json>', 'start servers with this speculative config (repeatable; "none" for without)', collect)
    .option('--serve-command <cmd>', 'command that starts a server; gets --host, --port and the configuration\'s flags (default: this tachyon\'s `serve`)')
    .option('--serve-args <args>', 'flags every started server gets, e.g. "--model /models/llama --max-model-len 4096"')
    .option('--server-timeout <s>', 'seconds to wait for a started server\'s /health', intArg('--server-timeout'), 600)
    .option('--output <file>', 'where to write the runs (default: <result-dir>/sweep-<date>.json)');
  addBenchOptions(cmd, false);
  return cmd.action(async (f: SweepFlags) => {
    const bench = benchOptionsFrom(f);
    const concurrencies = f.concurrency.split(',').map((s) => Number(s.trim()));
    let configs: ServerConfig[] | undefined;
    if (f.serverConfigs) {
      if (f.quantization || f.speculativeConfig || f.kvCacheDtype) throw new InvalidRequestError('use either --server-configs or --quantization/--kv-cache-dtype/--speculative-config, not both');
      let raw: unknown;
      try {
        raw = JSON.parse(readFileSync(f.serverConfigs, 'utf8'));
      } catch (err) {
        throw new InvalidRequestError(`--server-configs ${f.serverConfigs}: ${(err as Error).message}`);
      }
      configs = parseServerConfigs(raw, f.serverConfigs);
    } else if (f.quantization || f.speculativeConfig || f.kvCacheDtype) {
      const list = (v?: string) => v?.split(',').map((s) => s.trim());
      configs = serverConfigsFromFlags(list(f.quantization), f.speculativeConfig, list(f.kvCacheDtype));
    }
    let output = f.output ?? `sweep-${resultDate()}.json`;
    if (!f.output && f.resultDir) {
      mkdirSync(f.resultDir, { recursive: true });
      output = join(f.resultDir, output);
    }
    const runs = await runSweep({
      bench,
      concurrencies,
      serverConfigs: configs,
      serveCommand: f.serveCommand ? splitCommandLine(f.serveCommand) : defaultServeCommand(),
      serveArgs: f.serveArgs ? splitCommandLine(f.serveArgs) : [],
      serverTimeoutS: f.serverTimeout,
      onRun: (soFar) => writeJson(output, soFar),
    });
    writeJson(output, runs);
    process.stdout.write(`${runs.length} runs saved to ${output}\n`);
  });
}

export function benchCommand(): Command {
  return new Command('bench')
    .description('benchmark a server: `bench serve` (one run), `bench sweep` (concurrencies × server configurations)')
    .addCommand(serveCommand().exitOverride())
    .addCommand(sweepCommand().exitOverride());
}
