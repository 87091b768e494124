// The library entry: `LLM.load()` gives Node programs the same engine the CLI and server use;
// generate() and chat() stream chunks as async iterators.

import { CpuBackend } from './backend/cpu/cpu-backend.js';
import { DEFAULT_BLOCK_SIZE, kvBytesPerToken, kvTokensForMemory } from './engine/kv-cache.js';
import { Engine, type FinishReason, type RequestMetrics, type RequestOutput } from './engine/engine.js';
import type { Logprobs } from './engine/sampler.js';
import { DEFAULT_SAMPLING, resolveSamplingParams, type SamplingParams } from './engine/sampling-params.js';
import { InvalidRequestError, TachyonError } from './errors.js';
import { renderChatTemplate, type ChatMessage } from './model/chat-template.js';
import { resolveModelDir } from './model/default-model.js';
import { loadModel, type LoadedModel } from './model/load-model.js';
import type { LoadWeightsOptions } from './model/weights.js';
import { parseQuantizationMethod } from './quant/online.js';
import { parseSpeculativeConfig } from './engine/spec/config.js';
import { loadProposer } from './engine/spec/load-proposer.js';

export interface LoadOptions {
  /** A Hugging Face model directory; the embedded default model when omitted. */
  model?: string;
  /** 'auto' (default): CUDA when libcuda, NVRTC and a GPU are present, else the CPU (with a warning saying why);
   *  'cuda': fail clearly when CUDA is unavailable; 'cpu': the reference backend. */
  device?: 'auto' | 'cpu' | 'cuda';
  /** Longest prompt + output; defaults to the model's max_position_embeddings. */
  maxModelLen?: number;
  maxNumSeqs?: number;
  maxNumBatchedTokens?: number;
  /** KV cache capacity in tokens. */
  kvCacheTokens?: number;
  /** KV cache capacity in bytes (float32 K and V on the CPU); used when kvCacheTokens is not given. */
  kvCacheMemoryBytes?: number;
  /** Share KV blocks of common prefixes between requests (default true). */
  enablePrefixCaching?: boolean;
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
    const dir = resolveModelDir(options.model);
    // Parse the speculative config before the (slow) weight load, so a typo fails at once.
    const specConfig = options.speculativeConfig === undefined ? undefined : parseSpeculativeConfig(options.speculativeConfig);
    const { loaded, deviceNote } = await loadOnDevice(options.device ?? 'auto', dir, { quantization: parseQuantizationMethod(options.quantization), onProgress: options.onProgress });
    const maxModelLen = options.maxModelLen ?? loaded.config.maxPositionEmbeddings;
    if (!(Number.isInteger(maxModelLen) && maxModelLen > 0)) throw new InvalidRequestError(`max_model_len must be a positive integer, got ${maxModelLen}`);
    const kvCacheTokens = options.kvCacheTokens ?? kvCacheTokensFor(options.kvCacheMemoryBytes, loaded.config) ?? Math.max(maxModelLen, 8192);
    const speculative = specConfig && {
      proposer: loadProposer(specConfig, { model: loaded.model, dir }, { kvCacheTokens, blockSize: DEFAULT_BLOCK_SIZE }),
      numSpeculativeTokens: specConfig.numSpeculativeTokens,
    };
    const engine = new Engine(loaded.model, loaded.tokenizer, loaded.eosTokenIds, {
      maxModelLen,
      maxNumSeqs: options.maxNumSeqs ?? 64,
      maxNumBatchedTokens: options.maxNumBatchedTokens ?? 2048,
      kvCacheTokens,
      blockSize: DEFAULT_BLOCK_SIZE,
      enablePrefixCaching: options.enablePrefixCaching,
      speculative,
    });
    const llm = new LLM(loaded, engine);
    if (deviceNote) llm.warnings.push(deviceNote);
    if (specConfig?.warning) llm.warnings.push(specConfig.warning);
    return llm;
  }

  /** Things the user must be told (e.g. a lossy benchmarking mode is on); the CLI prints them. */
  readonly warnings: string[] = [];

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
  async complete(prompt: string | number[], params: GenerateParams = {}, opts: { addSpecialTokens?: boolean } = {}): Promise<GenerationResult> {
    return collect(this.generate(prompt, params, opts));
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const id of this.listeners.keys()) this.engine.abort(id);
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
async function loadOnDevice(device: string, dir: string, opts: LoadWeightsOptions): Promise<{ loaded: LoadedModel; deviceNote?: string }> {
  if (device === 'cpu') return { loaded: loadModel(dir, new CpuBackend(), opts) };
  if (device !== 'auto' && device !== 'cuda') throw new InvalidRequestError(`device '${device}' is not supported; supported: auto, cpu, cuda`);
  let cuda: typeof import('./backend/cuda/cuda-backend.js') | undefined;
  let reason: string;
  try {
    cuda = await import('./backend/cuda/cuda-backend.js');
    const opened = cuda.openCudaBackend();
    if ('backend' in opened) {
      try {
        return { loaded: loadModel(dir, opened.backend, opts) };
      } catch (err) {
        if (device === 'auto' && err instanceof cuda.CudaUnsupportedError) {
          return { loaded: loadModel(dir, new CpuBackend(), opts), deviceNote: `device auto: running on the CPU: ${err.message}` };
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
  return { loaded: loadModel(dir, new CpuBackend(), opts), deviceNote: `device auto: running on the CPU (CUDA is not available: ${reason})` };
}

/** KV cache tokens that fit in `bytes` of float32 K and V; undefined when no budget is given. */
function kvCacheTokensFor(bytes: number | undefined, c: { numLayers: number; numKvHeads: number; headDim: number }): number | undefined {
  if (bytes === undefined) return undefined;
  const perToken = kvBytesPerToken(c);
  const tokens = kvTokensForMemory(bytes, perToken, DEFAULT_BLOCK_SIZE);
  if (tokens < DEFAULT_BLOCK_SIZE) throw new InvalidRequestError(`kv_cache_memory ${bytes} bytes holds no KV block: one block of ${DEFAULT_BLOCK_SIZE} tokens takes ${perToken * DEFAULT_BLOCK_SIZE} bytes`);
  return tokens;
}

/** Drain a stream into one result, timing the first token and the decode rate. */
export async function collect(stream: AsyncIterable<GenerateChunk>): Promise<GenerationResult> {
  const t0 = performance.now();
  let first = 0;
  let text = '';
  const tokenIds: number[] = [];
  let last: GenerateChunk | undefined;
  for await (const chunk of stream) {
    if (chunk.tokenIds.length > 0 && first === 0) first = performance.now();
    text += chunk.text;
    tokenIds.push(...chunk.tokenIds);
    last = chunk;
  }
  const end = performance.now();
  return { text, tokenIds, finishReason: last?.finishReason ?? 'stop', usage: last!.usage, timings: timingsOf(t0, first || end, end, last!.usage) };
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
