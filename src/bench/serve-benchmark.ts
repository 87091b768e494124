// `tachyon bench serve` as a library call: resolve the server, model and tokenizer, build the
// dataset, run the load, compute vLLM's metrics, and return the result object and console block.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { machineInfo } from '../../bench/machine.js';
import { InvalidRequestError } from '../errors.js';
import { loadChatTemplate, renderChatTemplate } from '../model/chat-template.js';
import { packageRoot } from '../model/default-model.js';
import { Tokenizer } from '../model/tokenizer.js';
import type { RampUpStrategy } from './arrivals.js';
import { customDataset, prefixRepetitionDataset, randomDataset, shareGptDataset, type DatasetName, type SampleRequest } from './datasets.js';
import { httpGet, httpPostJson, runLoad, type LoadResult } from './load-generator.js';
import { computeMetrics, type BenchmarkMetrics, type RequestOutput, type SloName } from './metrics.js';
import { ProgressBar } from './progress.js';
import { validateApiUrl, type BackendName, type CompatMode } from './request.js';
import { buildResult, formatSummary, resultDate, type PercentileMetric, type RunConfig } from './result.js';

export interface DatasetOptions {
  name: DatasetName;
  path?: string;
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
  skipChatTemplate: boolean;
  disableShuffle: boolean;
  noOversample: boolean;
}

export const DEFAULT_DATASET_OPTIONS: DatasetOptions = {
  name: 'random',
  randomInputLen: 1024,
  randomOutputLen: 128,
  randomRangeRatio: 0,
  randomPrefixLen: 0,
  prefixRepetitionPrefixLen: 256,
  prefixRepetitionSuffixLen: 256,
  prefixRepetitionNumPrefixes: 10,
  prefixRepetitionOutputLen: 128,
  customOutputLen: 256,
  skipChatTemplate: false,
  disableShuffle: false,
  noOversample: false,
};

export interface ServeBenchOptions {
  backend: BackendName;
  compat: CompatMode;
  /** Server root; else http://host:port. */
  baseUrl?: string;
  host: string;
  port: number;
  /** Default: /v1/completions for openai, /v1/chat/completions for openai-chat. */
  endpoint?: string;
  /** Model id; default: the first entry of GET /v1/models. */
  model?: string;
  /** Name sent in requests when it differs from --model. */
  servedModelName?: string;
  /** A Hugging Face model directory holding tokenizer.json. */
  tokenizer?: string;
  dataset: DatasetOptions;
  numPrompts: number;
  requestRate: number;
  burstiness: number;
  seed: number;
  rampUp?: { strategy: RampUpStrategy; startRps: number; endRps: number };
  maxConcurrency?: number;
  numWarmups: number;
  ignoreEos: boolean;
  logprobs?: number;
  /** Sampling parameters that are set (temperature, top_p, ...), merged into every body. */
  sampling: Record<string, number>;
  extraBody?: Record<string, unknown>;
  headers: Record<string, string>;
  metadata: Record<string, string>;
  label?: string;
  percentileMetrics: PercentileMetric[];
  percentiles: number[];
  goodput: Partial<Record<SloName, number>>;
  requestIdPrefix?: string;
  readyCheckTimeoutS: number;
  saveDetailed: boolean;
  timeoutMs?: number;
  /** Show a progress bar on stderr. */
  progress: boolean;
  /** Where informational lines go (stdout for the CLI). */
  log: (line: string) => void;
  /** x_* keys to add to the result (a sweep's configuration). */
  extras?: Record<string, unknown>;
}

export interface ServeBenchRun {
  result: Record<string, unknown>;
  summary: string;
  metrics: BenchmarkMetrics;
  outputs: RequestOutput[];
  load: LoadResult;
}

/** Server root and request URL from --base-url / --host / --port / --endpoint. */
export function resolveUrls(o: Pick<ServeBenchOptions, 'baseUrl' | 'host' | 'port' | 'endpoint' | 'backend'>): { baseUrl: string; apiUrl: string } {
  const host = o.host.includes(':') && !o.host.startsWith('[') ? `[${o.host}]` : o.host;
  const baseUrl = (o.baseUrl ?? `http://${host}:${o.port}`).replace(/\/+$/, '');
  const endpoint = o.endpoint ?? (o.backend === 'openai-chat' ? '/v1/chat/completions' : '/v1/completions');
  return { baseUrl, apiUrl: `${baseUrl}${endpoint.startsWith('/') ? '' : '/'}${endpoint}` };
}

/** The first model a server lists: its id (sent as `model`) and root (where its tokenizer is). */
export async function firstServedModel(baseUrl: string, headers: Record<string, string>): Promise<{ id: string; root?: string }> {
  let res;
  try {
    res = await httpGet(`${baseUrl}/v1/models`, headers);
  } catch (err) {
    throw new InvalidRequestError(`cannot reach ${baseUrl}/v1/models to find the model (${(err as Error).message}); is the server running? (or pass --model)`);
  }
  if (res.status !== 200) throw new InvalidRequestError(`${baseUrl}/v1/models answered HTTP ${res.status}; pass --model`);
  let data: unknown;
  try {
    data = (JSON.parse(res.body) as { data?: unknown }).data;
  } catch {
    throw new InvalidRequestError(`${baseUrl}/v1/models did not answer JSON; pass --model`);
  }
  const first = Array.isArray(data) ? (data[0] as { id?: unknown; root?: unknown } | undefined) : undefined;
  if (!first || typeof first.id !== 'string') throw new InvalidRequestError(`no models found on the server at ${baseUrl}; pass --model`);
  return { id: first.id, root: typeof first.root === 'string' ? first.root : undefined };
}

/** The tokenizer directory: --tokenizer, else the model id or the server's root when it is a local directory. */
export function findTokenizerDir(candidates: (string | undefined)[]): string | undefined {
  return candidates.find((d): d is string => d !== undefined && existsSync(join(d, 'tokenizer.json')));
}

export function buildDataset(d: DatasetOptions, numPrompts: number, seed: number, tok: Tokenizer | undefined, tokDir: string | undefined): SampleRequest[] {
  const needTokenizer = (what: string): Tokenizer => {
    if (!tok) throw new InvalidRequestError(`the ${what} dataset needs a tokenizer: pass --tokenizer DIR (a Hugging Face model directory with tokenizer.json)`);
    return tok;
  };
  const needPath = (): string => {
    if (!d.path) throw new InvalidRequestError(`--dataset-name ${d.name} needs --dataset-path`);
    return d.path;
  };
  if ((d.name === 'random' || d.name === 'prefix_repetition') && d.path) {
    throw new InvalidRequestError(`--dataset-name ${d.name} does not read --dataset-path; use sharegpt or custom for a file`);
  }
  switch (d.name) {
    case 'random':
      return randomDataset(needTokenizer('random'), { numPrompts, inputLen: d.randomInputLen, outputLen: d.randomOutputLen, rangeRatio: d.randomRangeRatio, prefixLen: d.randomPrefixLen, seed });
    case 'prefix_repetition':
      return prefixRepetitionDataset(needTokenizer('prefix_repetition'), {
        numPrompts,
        prefixLen: d.prefixRepetitionPrefixLen,
        suffixLen: d.prefixRepetitionSuffixLen,
        numPrefixes: d.prefixRepetitionNumPrefixes,
        outputLen: d.prefixRepetitionOutputLen,
        seed,
      });
    case 'sharegpt':
      return shareGptDataset(needPath(), needTokenizer('sharegpt'), { numPrompts, outputLen: d.sharegptOutputLen, seed, shuffle: !d.disableShuffle, oversample: !d.noOversample });
    case 'custom': {
      const path = needPath();
      const template = !d.skipChatTemplate && tokDir ? loadChatTemplate(tokDir) : undefined;
      const cfg = tokDir ? readTokenizerConfig(tokDir) : {};
      const applyChatTemplate = template
        ? (prompt: string) => renderChatTemplate(template, { messages: [{ role: 'user', content: prompt }], addGenerationPrompt: true, bosToken: cfg.bos, eosToken: cfg.eos })
        : undefined;
      return customDataset(path, tok, { numPrompts, outputLen: d.customOutputLen, seed, shuffle: !d.disableShuffle, oversample: !d.noOversample, applyChatTemplate });
    }
  }
}

/** Run one benchmark against a live server. */
export async function benchServe(o: ServeBenchOptions): Promise<ServeBenchRun> {
  const { baseUrl, apiUrl } = resolveUrls(o);
  validateApiUrl(o.backend, apiUrl);
  if (o.maxConcurrency !== undefined && !(o.maxConcurrency > 0)) throw new InvalidRequestError('--max-concurrency must be greater than 0');
  if (!(o.numPrompts > 0)) throw new InvalidRequestError('--num-prompts must be greater than 0');

  let modelId = o.model;
  let root: string | undefined;
  if (!modelId) {
    o.log('Model not specified, fetching first model from server...');
    const first = await firstServedModel(baseUrl, o.headers);
    modelId = first.id;
    root = first.root;
    o.log(`First model name: ${first.id}, first model id: ${first.root ?? first.id}`);
  }
  const tokDir = findTokenizerDir([o.tokenizer, modelId, root]);
  if (o.tokenizer && tokDir !== o.tokenizer) throw new InvalidRequestError(`--tokenizer ${o.tokenizer}: no tokenizer.json there`);
  const tok = tokDir ? Tokenizer.load(tokDir) : undefined;

  let requests = buildDataset(o.dataset, o.numPrompts, o.seed, tok, tokDir);
  let realigned = 0;
  if (o.compat === 'vllm-main' && (o.dataset.name === 'random' || o.dataset.name === 'prefix_repetition')) {
    ({ requests, realigned } = await alignPromptsToServer(baseUrl, o.servedModelName ?? modelId, requests, o.headers, o.log));
  }
  // vLLM (main) forces ignore_eos for random prompts so every request runs to its output length.
  const ignoreEos = o.ignoreEos || (o.compat === 'vllm-main' && o.dataset.name === 'random');
  const extraBody = { ...o.sampling, ...(o.extraBody ?? {}) };
  if (o.sampling.temperature === undefined && o.compat === 'vllm-main' && o.extraBody?.temperature === undefined) {
    o.log('WARNING: no --temperature given: the server\'s default sampling applies (pass --temperature 0 for greedy, as older vLLM benches did).');
  }

  o.log(`Traffic request rate: ${o.requestRate === Infinity ? 'inf' : o.requestRate}`);
  o.log(`Burstiness factor: ${o.burstiness} (${o.burstiness === 1 ? 'Poisson process' : 'Gamma distribution'})`);
  o.log(`Maximum request concurrency: ${o.maxConcurrency ?? 'None'}`);
  let bar: ProgressBar | undefined;
  let warmBar: ProgressBar | undefined;
  const load = await runLoad({
    backend: o.backend,
    compat: o.compat,
    apiUrl,
    baseUrl,
    model: o.servedModelName ?? modelId,
    requests,
    requestRate: o.requestRate,
    burstiness: o.burstiness,
    seed: o.seed,
    rampUp: o.rampUp,
    maxConcurrency: o.maxConcurrency,
    numWarmups: o.numWarmups,
    ignoreEos,
    logprobs: o.logprobs,
    extraBody,
    headers: o.headers,
    requestIdPrefix: o.requestIdPrefix ?? `bench-${randomBytes(4).toString('hex')}-`,
    readyCheckTimeoutS: o.readyCheckTimeoutS,
    timeoutMs: o.timeoutMs,
    log: o.log,
    onProgress: (phase, done, total) => {
      if (phase === 'warmup') {
        warmBar ??= new ProgressBar('warm-up', total, process.stderr, o.progress);
        warmBar.tick();
        if (done === total) warmBar.finish();
      } else {
        bar ??= new ProgressBar('benchmark', total, process.stderr, o.progress);
        bar.tick();
        if (done === total) bar.finish();
      }
    },
  });

  const failed = load.outputs.filter((x) => !x.success);
  if (failed.length === load.outputs.length) o.log('WARNING: All requests failed. This is likely due to a misconfiguration of the benchmark arguments or the server.');
  if (failed.length > 0) {
    o.log('Failed requests during benchmark run detected (capping to 10):');
    failed.slice(0, 10).forEach((f, i) => o.log(`Error ${i}: ${f.error}`));
  }
  const metrics = computeMetrics(load.outputs, load.durationS, {
    percentiles: o.percentiles,
    goodput: o.goodput,
    countTokens: tok ? (text) => tok.encode(text, { addSpecialTokens: false }).length : undefined,
  });
  const cfg: RunConfig = {
    backend: o.backend,
    label: o.label,
    modelId,
    tokenizerId: tokDir,
    numPrompts: o.numPrompts,
    metadata: o.metadata,
    requestRate: o.requestRate,
    burstiness: o.burstiness,
    maxConcurrency: o.maxConcurrency,
    rampUp: o.rampUp,
    percentileMetrics: o.percentileMetrics,
    percentiles: o.percentiles,
    hasGoodput: Object.keys(o.goodput).length > 0,
  };
  const result = buildResult(cfg, metrics, load.outputs, {
    date: resultDate(),
    saveDetailed: o.saveDetailed,
    specDecode: load.specDecode,
    durationS: load.durationS,
    extras: {
      x_tachyon_version: tachyonVersion(),
      x_compat: o.compat,
      x_api_url: apiUrl,
      x_served_model_name: o.servedModelName ?? modelId,
      x_dataset: datasetDescriptor(o.dataset, requests),
      x_prompts_realigned: realigned,
      x_sampling: extraBody,
      x_ignore_eos: ignoreEos,
      x_seed: o.seed,
      x_num_warmups: o.numWarmups,
      x_goodput_slos_ms: o.goodput,
      x_output_token_sources: metrics.outputTokenSources,
      x_streams_without_done: load.outputs.filter((x) => x.success && !x.sawDone).length,
      x_machine: machineInfo(),
      ...(o.extras ?? {}),
    },
  });
  return { result, summary: formatSummary(cfg, metrics, load.outputs, load.durationS, load.specDecode), metrics, outputs: load.outputs, load };
}

/**
 * vLLM (main) checks the first synthetic prompt with the server's POST /tokenize; if the server's
 * tokenizer counts it differently from ours, every prompt longer than intended on the server is cut
 * to its length there and turned back into text with /detokenize. A server without /tokenize is
 * left as it is.
 */
export async function alignPromptsToServer(baseUrl: string, model: string, requests: SampleRequest[], headers: Record<string, string>, log: (line: string) => void): Promise<{ requests: SampleRequest[]; realigned: number }> {
  const tokenize = async (prompt: string): Promise<number[]> => {
    const r = await httpPostJson(`${baseUrl}/tokenize`, { model, prompt, add_special_tokens: false }, headers);
    const tokens = (r.json as { tokens?: unknown } | undefined)?.tokens;
    if (r.status !== 200 || !Array.isArray(tokens)) throw new Error(`/tokenize answered HTTP ${r.status}`);
    return tokens as number[];
  };
  let first: number[];
  try {
    first = await tokenize(requests[0]!.prompt);
  } catch {
    log('WARNING: /tokenize unavailable, skipping alignment.');
    return { requests, realigned: 0 };
  }
  if (first.length === requests[0]!.promptLen) return { requests, realigned: 0 };
  log(`WARNING: tokenizer mismatch (server=${first.length}, expected=${requests[0]!.promptLen}), re-aligning prompts.`);
  let realigned = 0;
  const out: SampleRequest[] = [];
  for (const req of requests) {
    try {
      const tokens = await tokenize(req.prompt);
      if (tokens.length <= req.promptLen) {
        out.push(req);
        continue;
      }
      const r = await httpPostJson(`${baseUrl}/detokenize`, { model, tokens: tokens.slice(0, req.promptLen) }, headers);
      const prompt = (r.json as { prompt?: unknown } | undefined)?.prompt;
      if (r.status !== 200 || typeof prompt !== 'string') throw new Error(`/detokenize answered HTTP ${r.status}`);
      out.push({ ...req, prompt });
      realigned++;
    } catch {
      out.push(req);
    }
  }
  return { requests: out, realigned };
}

function datasetDescriptor(d: DatasetOptions, requests: SampleRequest[]): Record<string, unknown> {
  const lens = requests.map((r) => r.promptLen);
  const outs = requests.map((r) => r.expectedOutputLen);
  const base: Record<string, unknown> = { name: d.name, path: d.path ?? null };
  if (d.name === 'random') Object.assign(base, { input_len: d.randomInputLen, output_len: d.randomOutputLen, range_ratio: d.randomRangeRatio, prefix_len: d.randomPrefixLen });
  if (d.name === 'prefix_repetition') Object.assign(base, { prefix_len: d.prefixRepetitionPrefixLen, suffix_len: d.prefixRepetitionSuffixLen, num_prefixes: d.prefixRepetitionNumPrefixes, output_len: d.prefixRepetitionOutputLen });
  if (d.name === 'sharegpt') base.output_len = d.sharegptOutputLen ?? null;
  if (d.name === 'custom') Object.assign(base, { output_len: d.customOutputLen, chat_template: !d.skipChatTemplate });
  base.client_prompt_tokens = { min: Math.min(...lens), max: Math.max(...lens), total: lens.reduce((a, b) => a + b, 0) };
  base.max_output_tokens = { min: Math.min(...outs), max: Math.max(...outs) };
  return base;
}

function readTokenizerConfig(dir: string): { bos?: string; eos?: string } {
  try {
    const cfg = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    const name = (v: unknown) => (typeof v === 'string' ? v : v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string' ? (v as { content: string }).content : undefined);
    return { bos: name(cfg.bos_token), eos: name(cfg.eos_token) };
  } catch {
    return {};
  }
}

export function tachyonVersion(): string {
  try {
    return String((JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version?: unknown }).version ?? 'unknown');
  } catch {
    return 'unknown';
  }
}
