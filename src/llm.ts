// The library entry: `LLM.load()` gives Node programs the same engine the CLI and server use;
// generate() and chat() stream chunks as async iterators.

import { KV_DTYPES, type Backend, type KvDtype, type KvScales } from './backend/backend.js';
import { CpuBackend } from './backend/cpu/cpu-backend.js';
import type { CudaBackend } from './backend/cuda/cuda-backend.js';
import { DEFAULT_BLOCK_SIZE, kvBytesPerToken, kvTokensForMemory } from './engine/kv-cache.js';
import { checkGpuMemoryUtilization, DEFAULT_GPU_MEMORY_UTILIZATION, draftDistributionBytes, fitBatchedTokens, GEMV_MAX_TOKENS, GRAPH_MAX_TOKENS, kvCacheBudget, kvCacheLine, stepActivationBytes, type ActivationShape, type StepWeightFormats } from './engine/kv-budget.js';
import { Engine, type FinishReason, type RequestMetrics, type RequestOutput } from './engine/engine.js';
import type { Logprobs } from './engine/sampler.js';
import { DEFAULT_SAMPLING, resolveSamplingParams, type SamplingParams } from './engine/sampling-params.js';
import { InvalidRequestError, TachyonError } from './errors.js';
import { renderChatTemplate, type ChatMessage } from './model/chat-template.js';
import type { LlamaModel } from './model/llama.js';
import { loadModel, parseLoadFormat, resolveModelSource, type LoadedModel, type LoadModelOptions, type ModelSource } from './model/load-model.js';
import { parseQuantizationMethod } from './quant/online.js';
import { parseSpeculativeConfig, type SpeculativeConfig } from './engine/spec/config.js';
import { DraftModelProposer, loadDraftModel } from './engine/spec/draft-model.js';
import { Eagle3Proposer, loadEagle3Head } from './engine/spec/eagle3.js';
import { loadProposer } from './engine/spec/load-proposer.js';
import type { Proposer } from './engine/spec/proposer.js';

export interface LoadOptions {
  /**
   * A Hugging Face model directory; the embedded default model when omitted. With loadFormat 'dummy'
   * also a shape preset's name (llama-3.1-8b, qwen3-8b, …: src/plan/presets.ts).
   */
  model?: string;
  /** 'auto' (default): read the checkpoint; 'dummy': random weights at its (or the preset's) shapes. */
  loadFormat?: 'auto' | 'dummy';
  /** 'auto' (default): CUDA when libcuda, NVRTC and a GPU are present, else the CPU (with a warning saying why);
   *  'cuda': fail clearly when CUDA is unavailable; 'cpu': the reference backend. */
  device?: 'auto' | 'cpu' | 'cuda';
  /** Longest prompt + output; defaults to the model's max_position_embeddings. */
  maxModelLen?: number;
  maxNumSeqs?: number;
  /** Most tokens in one step (default 2048; on CUDA, when not given, lowered until a step's activations fit). */
  maxNumBatchedTokens?: number;
  /** KV cache capacity in tokens. */
  kvCacheTokens?: number;
  /** KV cache capacity in bytes (of kvCacheDtype K and V); used when kvCacheTokens is not given. */
  kvCacheMemoryBytes?: number;
  /**
   * KV cache element type: 'auto' (default) is bf16 on CUDA (as vLLM's auto: the model's dtype; half
   * the memory and attention reads of float32) and float32 on the CPU (the reference); 'bf16',
   * 'float32' or 'fp8' (E4M3, a quarter of float32's memory; the checkpoint's calibrated k_scale/v_scale if any, else scale 1) on either backend.
   */
  kvCacheDtype?: 'auto' | KvDtype | 'bfloat16' | 'fp8_e4m3';
  /**
   * CUDA: the fraction of the GPU's total memory this engine may use for weights, activations and the
   * KV cache (vLLM's gpu_memory_utilization, default 0.9); the KV cache gets what the rest leaves.
   * Explicit sizes (kvCacheTokens, kvCacheMemoryBytes) win. Ignored on the CPU.
   */
  gpuMemoryUtilization?: number;
  /** Share KV blocks of common prefixes between requests (default true). */
  enablePrefixCaching?: boolean;
  /**
   * CUDA: run every step op by op, never as a recorded CUDA graph (vLLM's enforce_eager; default false:
   * decode steps of up to 32 tokens replay as graphs, see docs/cuda.md). Ignored on the CPU.
   */
  enforceEager?: boolean;
  /** Quantize the decoder's linear layers at load: fp8, w8a16, w4a16, nvfp4 (or 'none'). */
  quantization?: string;
  /** vLLM's --speculative-config: JSON text or an object ({method, model?, num_speculative_tokens, ...}). */
  speculativeConfig?: string | Record<string, unknown>;
  onProgress?: (done: number, total: number) => void;
}

export type GenerateParams = Partial<SamplingParams>;

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

export interface GenerateChunk {
  /** New text (may be empty while a multi-byte character is incomplete). */
  text: string;
  tokenIds: number[];
  finished: boolean;
  finishReason?: FinishReason;
  usage: Usage;
  /** One per token in tokenIds, when logprobs were asked for. */
  logprobs?: Logprobs[];
  /** The request's timeline and counts, on the last chunk. */
  metrics?: RequestMetrics;
}

export interface GenerateOptions {
  /** Add BOS etc. when encoding a text prompt (default true). */
  addSpecialTokens?: boolean;
  signal?: AbortSignal;
  /** Return each token's logprob and this many top alternatives. */
  logprobs?: number;
  /** When the request arrived (performance.now() ms), for queue-time and TTFT metrics. */
  arrivalMs?: number;
}

export interface Timings {
  /** Request start to first output token. */
  ttftMs: number;
  totalMs: number;
  /** Prompt tokens / time to first token. */
  prefillTokensPerSecond: number;
  /** Output tokens after the first / time after the first. */
  decodeTokensPerSecond: number;
}

export interface GenerationResult {
  text: string;
  tokenIds: number[];
  finishReason: FinishReason;
  usage: Usage;
  timings: Timings;
  /** One per token in tokenIds, when logprobs were asked for. */
  logprobs?: Logprobs[];
}

interface Listener {
  push(out: RequestOutput): void;
}

export class LLM {
  private readonly listeners = new Map<string, Listener>();
  private pumping = false;
  private nextId = 0;
  private closed = false;

  private constructor(
    readonly loaded: LoadedModel,
    readonly engine: Engine,
  ) {}

  static async load(options: LoadOptions = {}): Promise<LLM> {
    const loadFormat = parseLoadFormat(options.loadFormat);
    const source = resolveModelSource(options.model, loadFormat);
    // Parse the speculative config before the (slow) weight load, so a typo fails at once.
    const specConfig = options.speculativeConfig === undefined ? undefined : parseSpeculativeConfig(options.speculativeConfig);
    if (options.gpuMemoryUtilization !== undefined) checkGpuMemoryUtilization(options.gpuMemoryUtilization);
    const kvDtype = parseKvCacheDtype(options.kvCacheDtype);
    const { loaded, deviceNote } = await loadOnDevice(options.device ?? 'auto', source, {
      quantization: parseQuantizationMethod(options.quantization),
      onProgress: options.onProgress,
      loadFormat,
    }, { cudaGraphs: options.enforceEager ? false : undefined, kvDtype });
    const maxModelLen = options.maxModelLen ?? loaded.config.maxPositionEmbeddings;
    if (!(Number.isInteger(maxModelLen) && maxModelLen > 0)) throw new InvalidRequestError(`max_model_len must be a positive integer, got ${maxModelLen}`);
    const maxNumSeqs = options.maxNumSeqs ?? 64;
    // The proposer's model is loaded before the cache is sized: on a GPU its weights take memory too.
    const proposer = specConfig && prepareProposer(specConfig, loaded);
    const sizing = sizeKvCache(loaded, options, { maxModelLen, maxNumSeqs, proposer, numSpeculativeTokens: specConfig?.numSpeculativeTokens ?? 0 });
    const speculative = specConfig && {
      proposer: proposer!.build(sizing.kvCacheTokens),
      numSpeculativeTokens: specConfig.numSpeculativeTokens,
      disableByBatchSize: specConfig.disableByBatchSize,
    };
    // Quantized decode GEMVs by the most tokens a step can carry (fixed for the engine: batch-invariant).
    cudaBackendOf(loaded.model.backend)?.quantized.chooseDecodeGemvs(maxNumSeqs * (1 + (specConfig?.numSpeculativeTokens ?? 0)));
    const engine = new Engine(loaded.model, loaded.tokenizer, loaded.eosTokenIds, {
      maxModelLen,
      maxNumSeqs,
      maxNumBatchedTokens: sizing.maxNumBatchedTokens,
      kvCacheTokens: sizing.kvCacheTokens,
      blockSize: DEFAULT_BLOCK_SIZE,
      enablePrefixCaching: options.enablePrefixCaching,
      speculative,
    });
    const llm = new LLM(loaded, engine);
    llm.warnings.push(...loaded.warnings);
    if (deviceNote) llm.warnings.push(deviceNote);
    if (specConfig?.warning) llm.warnings.push(specConfig.warning);
    llm.warnings.push(...sizing.warnings);
    llm.notes.push(...sizing.notes);
    const kvScalesNote = kvScalesLine(loaded.model.weights.kvScales, loaded.model.backend.kvDtype);
    if (kvScalesNote) llm.notes.push(kvScalesNote);
    return llm;
  }

  /** Things the user must be told (e.g. a lossy benchmarking mode is on); the CLI prints them. */
  readonly warnings: string[] = [];
  /** What the load decided that is worth a line (the KV cache's size on a GPU); the CLI prints them. */
  readonly notes: string[] = [];

  /** vLLM's speculative-decoding counters, or undefined when speculation is off. */
  specDecodeStats() {
    return this.engine.spec?.metrics.snapshot();
  }

  get tokenizer() {
    return this.loaded.tokenizer;
  }

  get config() {
    return this.loaded.config;
  }

  /** Request parameters over generation_config.json defaults over the library defaults. */
  resolveParams(params: GenerateParams = {}): SamplingParams {
    return resolveSamplingParams(params, { ...DEFAULT_SAMPLING, ...this.loaded.samplingDefaults });
  }

  /** Render messages with the model's chat template. */
  applyChatTemplate(messages: ChatMessage[], addGenerationPrompt = true): string {
    if (!this.loaded.chatTemplate) throw new InvalidRequestError(`${this.loaded.dir} has no chat template (tokenizer_config.json chat_template or chat_template.jinja)`);
    return renderChatTemplate(this.loaded.chatTemplate, {
      messages,
      addGenerationPrompt,
      bosToken: this.tokenizer.bosTokenId === undefined ? undefined : this.tokenizer.idToToken(this.tokenizer.bosTokenId),
      eosToken: this.tokenizer.eosTokenId === undefined ? undefined : this.tokenizer.idToToken(this.tokenizer.eosTokenId),
    });
  }

  /** Stream a completion of `prompt` (text, or token ids as given). */
  generate(prompt: string | number[], params: GenerateParams = {}, opts: GenerateOptions = {}): AsyncIterable<GenerateChunk> {
    const promptIds = typeof prompt === 'string' ? this.tokenizer.encode(prompt, { addSpecialTokens: opts.addSpecialTokens ?? true }) : prompt;
    return this.stream(promptIds, this.resolveParams(params), opts);
  }

  /** Stream the assistant's reply to a conversation (chat template applied, no second BOS). */
  chat(messages: ChatMessage[], params: GenerateParams = {}, opts: { signal?: AbortSignal } = {}): AsyncIterable<GenerateChunk> {
    const text = this.applyChatTemplate(messages, true);
    return this.generate(text, params, { addSpecialTokens: false, signal: opts.signal });
  }

  /** Run a generation to the end and return text, ids, usage and timings. */
  async complete(prompt: string | number[], params: GenerateParams = {}, opts: GenerateOptions = {}): Promise<GenerationResult> {
    return collect(this.generate(prompt, params, opts));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const id of this.listeners.keys()) this.engine.abort(id);
    // GPU memory goes back now, not when the collector gets to the weights.
    this.loaded.model.backend.dispose?.();
  }

  private stream(promptIds: number[], params: SamplingParams, opts: GenerateOptions): AsyncIterable<GenerateChunk> {
    if (this.closed) throw new InvalidRequestError('this LLM has been closed');
    const id = `req-${this.nextId++}`;
    const signal = opts.signal;
    this.engine.addRequest(id, promptIds, params, { logprobs: opts.logprobs, arrivalMs: opts.arrivalMs });
    const queue: RequestOutput[] = [];
    let wake: (() => void) | undefined;
    this.listeners.set(id, {
      push: (out) => {
        queue.push(out);
        wake?.();
      },
    });
    const onAbort = () => this.engine.abort(id);
    signal?.addEventListener('abort', onAbort, { once: true });
    this.pump();
    const self = this;
    return {
      async *[Symbol.asyncIterator]() {
        try {
          for (;;) {
            while (queue.length === 0) await new Promise<void>((r) => (wake = r));
            const out = queue.shift()!;
            if (out.error) throw out.error;
            const usage = { promptTokens: out.promptTokens, completionTokens: out.outputTokens, totalTokens: out.promptTokens + out.outputTokens };
            yield { text: out.text, tokenIds: out.newTokenIds, finished: out.finished, finishReason: out.finishReason, usage, logprobs: out.logprobs, metrics: out.metrics };
            if (out.finished) return;
          }
        } finally {
          // A consumer that stops early (break, error) cancels the request and frees its blocks.
          self.engine.abort(id);
          self.listeners.delete(id);
          signal?.removeEventListener('abort', onAbort);
        }
      },
    };
  }

  /** Step the engine while it has work, yielding to the event loop between steps. */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    const loop = () => {
      try {
        if (!this.engine.hasWork()) {
          this.pumping = false;
          return;
        }
        for (const out of this.engine.step()) this.listeners.get(out.requestId)?.push(out);
      } catch (err) {
        // A failure inside a step fails every request in flight rather than hanging them.
        const error = err instanceof TachyonError ? err : new TachyonError('internal', `engine step failed: ${(err as Error).message}`);
        for (const [id, l] of this.listeners) {
          l.push({ requestId: id, newTokenIds: [], text: '', finished: true, finishReason: 'error', error, promptTokens: 0, outputTokens: 0 });
          this.engine.abort(id);
        }
      }
      setImmediate(loop);
    };
    setImmediate(loop);
  }
}

/**
 * The model loaded on the backend `device` asks for. 'auto' takes CUDA when it opens (libcuda,
 * a GPU, NVRTC) and supports the weights, else the CPU with a note saying why; 'cuda' fails instead.
 * The CUDA module is imported only here, so a machine without it never loads its bindings.
 */
async function loadOnDevice(
  device: string, source: ModelSource, opts: LoadModelOptions, cudaOptions: import('./backend/cuda/cuda-backend.js').CudaBackendOptions = {},
): Promise<{ loaded: LoadedModel; deviceNote?: string }> {
  // The KV element type asked for holds on whichever backend the model lands.
  const cpu = () => new CpuBackend({ kvDtype: cudaOptions.kvDtype });
  if (device === 'cpu') return { loaded: loadModel(source, cpu(), opts) };
  if (device !== 'auto' && device !== 'cuda') throw new InvalidRequestError(`device '${device}' is not supported; supported: auto, cpu, cuda`);
  let cuda: typeof import('./backend/cuda/cuda-backend.js') | undefined;
  let reason: string;
  try {
    cuda = await import('./backend/cuda/cuda-backend.js');
    const opened = cuda.openCudaBackend(cudaOptions);
    if ('backend' in opened) {
      try {
        return { loaded: loadModel(source, opened.backend, opts) };
      } catch (err) {
        if (device === 'auto' && err instanceof cuda.CudaUnsupportedError) {
          return { loaded: loadModel(source, cpu(), opts), deviceNote: `device auto: running on the CPU: ${err.message}` };
        }
        throw err;
      }
    }
    reason = opened.reason;
  } catch (err) {
    if (cuda) throw err;
    reason = `the CUDA bindings could not be loaded: ${(err as Error).message.split('\n')[0]}`;
  }
  if (device === 'cuda') throw new InvalidRequestError(`device cuda: CUDA is not available: ${reason}`);
  return { loaded: loadModel(source, cpu(), opts), deviceNote: `device auto: running on the CPU (CUDA is not available: ${reason})` };
}

/** kvCacheDtype's element type; undefined for 'auto' (the backend's default). `name` is the option as the user spelled it. */
export function parseKvCacheDtype(v: string | undefined, name = 'kv_cache_dtype'): KvDtype | undefined {
  if (v === undefined || v === 'auto') return undefined;
  if (v === 'bfloat16') return 'bf16'; // vLLM's spellings
  if (v === 'fp8_e4m3') return 'fp8';
  if ((KV_DTYPES as readonly string[]).includes(v)) return v as KvDtype;
  const e5m2 = v === 'fp8_e5m2' ? ' (FP8 K and V are E4M3 here)' : '';
  throw new InvalidRequestError(`${name} '${v}' is not supported${e5m2}; supported: auto, ${KV_DTYPES.join(', ')} (fp8 also as fp8_e4m3)`);
}

/** KV cache tokens that fit in `bytes` of `dtype` K and V; undefined when no budget is given. */
function kvCacheTokensFor(bytes: number | undefined, c: { numLayers: number; numKvHeads: number; headDim: number }, dtype: KvDtype): number | undefined {
  if (bytes === undefined) return undefined;
  const perToken = kvBytesPerToken(c, dtype);
  const tokens = kvTokensForMemory(bytes, perToken, DEFAULT_BLOCK_SIZE);
  if (tokens < DEFAULT_BLOCK_SIZE) throw new InvalidRequestError(`kv_cache_memory ${bytes} bytes holds no KV block: one block of ${DEFAULT_BLOCK_SIZE} tokens takes ${perToken * DEFAULT_BLOCK_SIZE} bytes`);
  return tokens;
}

/** A speculative proposer whose model (if any) is loaded, waiting for its KV cache size. */
interface PreparedProposer {
  /** KV bytes per token of its own cache, which gets the target's token count. */
  kvBytesPerToken: number;
  /** A draft model's shapes and formats: its forward passes share the target's steps (and their memory). */
  activationShape?: ActivationShape;
  formats?: StepWeightFormats;
  /** Its sampled drafts keep their distributions on the backend through the step (draftDistributionBytes). */
  keepsDistributions?: boolean;
  build(kvCacheTokens: number): Proposer;
}

function prepareProposer(config: SpeculativeConfig, loaded: LoadedModel): PreparedProposer {
  const opts = (kvCacheTokens: number) => ({ kvCacheTokens, blockSize: DEFAULT_BLOCK_SIZE });
  // The proposer's cache is allocated on the target's backend, in its KV dtype.
  const kvDtype = loaded.model.backend.kvDtype;
  if (config.method === 'draft_model') {
    const draft = loadDraftModel(config.model!, loaded.model, loaded.tokenizerDir);
    return { kvBytesPerToken: kvBytesPerToken(draft.config, kvDtype), activationShape: draft.config, formats: weightFormats(draft.weights), keepsDistributions: true, build: (t) => new DraftModelProposer(draft, opts(t)) };
  }
  if (config.method === 'eagle3') {
    const head = loadEagle3Head(config.model!, loaded.model);
    const perToken = kvBytesPerToken({ numLayers: 1, numKvHeads: head.config.numKvHeads, headDim: head.config.headDim }, kvDtype);
    return { kvBytesPerToken: perToken, keepsDistributions: true, build: (t) => new Eagle3Proposer(head, loaded.config.numLayers, opts(t)) };
  }
  // n-gram and synthetic proposers hold no model and no cache.
  return { kvBytesPerToken: 0, build: (t) => loadProposer(config, { model: loaded.model, dir: loaded.tokenizerDir }, opts(t)) };
}

interface KvSizing {
  kvCacheTokens: number;
  maxNumBatchedTokens: number;
  notes: string[];
  warnings: string[];
}

/**
 * The KV cache's size and the step budget. Explicit sizes win; on CUDA the cache otherwise gets what
 * --gpu-memory-utilization leaves after the weights (loaded by now) and one step's activations
 * (src/engine/kv-budget.ts); on the CPU it holds max(max_model_len, 8192) tokens.
 */
function sizeKvCache(loaded: LoadedModel, options: LoadOptions, s: { maxModelLen: number; maxNumSeqs: number; proposer?: PreparedProposer; numSpeculativeTokens: number }): KvSizing {
  const notes: string[] = [];
  const warnings: string[] = [];
  const kvDtype = loaded.model.backend.kvDtype;
  const perToken = kvBytesPerToken(loaded.config, kvDtype);
  const explicit = options.kvCacheTokens ?? kvCacheTokensFor(options.kvCacheMemoryBytes, loaded.config, kvDtype);
  const gpu = gpuMemory(loaded.model.backend);
  if (!gpu) {
    if (options.gpuMemoryUtilization !== undefined) {
      warnings.push('--gpu-memory-utilization applies to CUDA only: on the CPU the KV cache holds max(max_model_len, 8192) tokens unless --kv-cache-memory is given');
    }
    return { kvCacheTokens: explicit ?? Math.max(s.maxModelLen, 8192), maxNumBatchedTokens: options.maxNumBatchedTokens ?? 2048, notes, warnings };
  }
  const utilization = options.gpuMemoryUtilization ?? DEFAULT_GPU_MEMORY_UTILIZATION;
  const { totalBytes, freeBytes } = gpu.memInfo();
  const usedBytes = totalBytes - freeBytes;
  // A verification step asks for logits at every drafted position of every sequence, and each of its
  // decodes (at most one per sequence) grows into a window of 1 + k tokens.
  const k = s.numSpeculativeTokens;
  const logitRows = s.maxNumSeqs * (1 + k);
  const stepTokens = (budget: number) => budget + Math.min(s.maxNumSeqs, budget) * k;
  const draft = s.proposer?.activationShape && s.proposer.formats ? { shape: s.proposer.activationShape, formats: s.proposer.formats } : undefined;
  // Recorded decode steps (CUDA graphs) keep their own activations: up to maxGraphs steps of at most
  // maxTokens tokens (the target's and a draft model's alike), no more than the engine's largest
  // decode step (larger ones are prefill chunks, rarely the same shape twice).
  const graphs = cudaBackendOf(loaded.model.backend)?.graphs;
  if (graphs) graphs.maxTokens = Math.min(GRAPH_MAX_TOKENS, Math.max(GEMV_MAX_TOKENS, logitRows));
  const graphBytes = (shape: ActivationShape, formats: StepWeightFormats) =>
    graphs?.enabled ? graphs.maxGraphs * stepActivationBytes(shape, graphs.maxTokens, graphs.maxTokens, formats) : 0;
  const activationFor = (budget: number) =>
    stepActivationBytes(loaded.config, stepTokens(budget), logitRows, weightFormats(loaded.model.weights)) +
    graphBytes(loaded.config, weightFormats(loaded.model.weights)) +
    (draft ? stepActivationBytes(draft.shape, stepTokens(budget), logitRows, draft.formats) + graphBytes(draft.shape, draft.formats) : 0) +
    (s.proposer?.keepsDistributions && k > 0 ? draftDistributionBytes(s.maxNumSeqs, k, loaded.config.vocabSize) : 0);
  let maxNumBatchedTokens = options.maxNumBatchedTokens ?? 2048;
  if (options.maxNumBatchedTokens === undefined) {
    maxNumBatchedTokens = fitBatchedTokens({ totalBytes, usedBytes, gpuMemoryUtilization: utilization, activationBytesFor: activationFor, preferred: 2048 });
    if (maxNumBatchedTokens < 2048) {
      notes.push(
        `max_num_batched_tokens ${maxNumBatchedTokens} (not 2048): a step of 2048 tokens would hold ${(activationFor(2048) / 2 ** 30).toFixed(1)} GiB until it ends ` +
          'on the CUDA backend (every layer\'s activations, and bf16 copies of quantized weights in steps of more than 8 tokens); ' +
          'longer prompts are prefilled in chunks (pass --max-num-batched-tokens to choose)',
      );
    }
  }
  if (explicit !== undefined) {
    notes.push(`KV cache: ${explicit} tokens as given (${((explicit * perToken) / 2 ** 30).toFixed(2)} GiB, ${kvDtype})`);
    return { kvCacheTokens: explicit, maxNumBatchedTokens, notes, warnings };
  }
  const budget = kvCacheBudget({
    totalBytes,
    usedBytes,
    gpuMemoryUtilization: utilization,
    activationBytes: activationFor(maxNumBatchedTokens),
    kvBytesPerToken: perToken + (s.proposer?.kvBytesPerToken ?? 0),
    kvDtype,
    blockSize: DEFAULT_BLOCK_SIZE,
    maxModelLen: s.maxModelLen,
    maxNumSeqs: s.maxNumSeqs,
  });
  notes.push(kvCacheLine(budget, s.maxModelLen, s.maxNumSeqs));
  return { kvCacheTokens: budget.tokens, maxNumBatchedTokens, notes, warnings };
}

/**
 * What a checkpoint's calibrated FP8 KV-cache scales (load/kv-scales.ts) do with this cache type:
 * applied to an fp8 cache, else a hint that they would be (vLLM's auto keeps the model's dtype too).
 */
export function kvScalesLine(scales: readonly KvScales[] | undefined, kvDtype: KvDtype): string | undefined {
  if (!scales) return undefined;
  const ks = scales.map((x) => x.k);
  const vs = scales.map((x) => x.v);
  const range = (xs: number[]) => `${Math.min(...xs).toPrecision(3)}–${Math.max(...xs).toPrecision(3)}`;
  if (kvDtype === 'fp8') return `KV cache: fp8 with the checkpoint's calibrated scales (k_scale ${range(ks)}, v_scale ${range(vs)} over ${scales.length} layers)`;
  return `the checkpoint has calibrated FP8 KV-cache scales: --kv-cache-dtype fp8 stores the cache in FP8 with them (now ${kvDtype}, where they do not apply)`;
}

/** The formats a step's memory depends on: the decoder linears' (layer 0 stands for all) and the lm_head's. */
function weightFormats(w: LlamaModel['weights']): StepWeightFormats {
  return { linears: w.layers[0]?.q.format ?? 'bf16', lmHead: w.lmHead.format };
}

/** `backend` as the CUDA one, when it is (the type import loads no bindings). */
function cudaBackendOf(backend: Backend): CudaBackend | undefined {
  return backend.name === 'cuda' ? (backend as CudaBackend) : undefined;
}

/** The device's memory counters when `backend` is the CUDA one. */
function gpuMemory(backend: Backend): { memInfo(): { freeBytes: number; totalBytes: number } } | undefined {
  return cudaBackendOf(backend)?.driver;
}

/** Drain a stream into one result, timing the first token and the decode rate. */
export async function collect(stream: AsyncIterable<GenerateChunk>): Promise<GenerationResult> {
  const t0 = performance.now();
  let first = 0;
  let text = '';
  const tokenIds: number[] = [];
  let logprobs: Logprobs[] | undefined;
  let last: GenerateChunk | undefined;
  for await (const chunk of stream) {
    if (chunk.tokenIds.length > 0 && first === 0) first = performance.now();
    text += chunk.text;
    tokenIds.push(...chunk.tokenIds);
    if (chunk.logprobs) (logprobs ??= []).push(...chunk.logprobs);
    last = chunk;
  }
  const end = performance.now();
  return { text, tokenIds, finishReason: last?.finishReason ?? 'stop', usage: last!.usage, timings: timingsOf(t0, first || end, end, last!.usage), ...(logprobs ? { logprobs } : {}) };
}

export function timingsOf(start: number, firstToken: number, end: number, usage: Usage): Timings {
  const ttftMs = firstToken - start;
  const decodeMs = end - firstToken;
  return {
    ttftMs,
    totalMs: end - start,
    prefillTokensPerSecond: ttftMs > 0 ? (usage.promptTokens / ttftMs) * 1000 : 0,
    decodeTokensPerSecond: decodeMs > 0 && usage.completionTokens > 1 ? ((usage.completionTokens - 1) / decodeMs) * 1000 : 0,
  };
}
