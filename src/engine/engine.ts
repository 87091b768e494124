// The engine core: holds requests, and each step runs one flattened forward pass over every running
// sequence (prefill chunks and decode tokens together), then samples and checks stop conditions.

import type { Backend, KvCacheStorage } from '../backend/backend.js';
import { CapacityError, InvalidRequestError, TachyonError } from '../errors.js';
import type { LlamaModel, ForwardBatch } from '../model/llama.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { IncrementalDetokenizer } from './detokenizer.js';
import { DEFAULT_BLOCK_SIZE, KvBlockPool, SequenceBlocks } from './kv-cache.js';
import { Sampler, TokenCounts } from './sampler.js';
import type { SamplingParams } from './sampling-params.js';
import { StopStringMatcher } from './stop-strings.js';

export type FinishReason = 'stop' | 'length' | 'abort' | 'error';

export interface EngineOptions {
  /** Longest sequence (prompt + output) a request may reach. */
  maxModelLen: number;
  /** Most sequences in one step. */
  maxNumSeqs: number;
  /** Most tokens in one step; longer prompts are prefilled in chunks. */
  maxNumBatchedTokens: number;
  /** KV cache size in tokens (rounded up to whole blocks). */
  kvCacheTokens: number;
  blockSize: number;
}

export interface RequestOutput {
  requestId: string;
  /** Tokens sampled this step (one, or none while a prompt is still being prefilled). */
  newTokenIds: number[];
  /** Text that became final this step (UTF-8 complete, stop strings held back and cut). */
  text: string;
  finished: boolean;
  finishReason?: FinishReason;
  /** Set when finishReason is 'error'. */
  error?: TachyonError;
  promptTokens: number;
  outputTokens: number;
}

class Request {
  readonly outputIds: number[] = [];
  readonly counts: TokenCounts;
  readonly sampler: Sampler;
  /** Absent when the engine runs without a tokenizer (token ids in, token ids out). */
  readonly detokenizer?: IncrementalDetokenizer;
  readonly stops: StopStringMatcher;
  /** Tokens whose K/V are in the cache. */
  numComputed = 0;
  finished = false;

  constructor(
    readonly id: string,
    readonly promptIds: number[],
    readonly params: SamplingParams,
    readonly blocks: SequenceBlocks,
    tokenizer: Tokenizer | undefined,
    vocabSize: number,
  ) {
    this.counts = new TokenCounts(promptIds);
    this.sampler = new Sampler(params, vocabSize);
    if (tokenizer) this.detokenizer = new IncrementalDetokenizer(tokenizer, promptIds, params.skipSpecialTokens);
    this.stops = new StopStringMatcher(params.stop);
  }

  get numTokens(): number {
    return this.promptIds.length + this.outputIds.length;
  }

  tokenAt(i: number): number {
    return i < this.promptIds.length ? this.promptIds[i] : this.outputIds[i - this.promptIds.length];
  }
}

export class Engine {
  readonly pool: KvBlockPool;
  readonly kv: KvCacheStorage;
  private readonly waiting: Request[] = [];
  private readonly running: Request[] = [];
  private readonly byId = new Map<string, Request>();
  private readonly pendingOutputs: RequestOutput[] = [];
  private readonly eos: Set<number>;

  constructor(
    readonly model: LlamaModel,
    readonly tokenizer: Tokenizer | undefined,
    eosTokenIds: number[],
    readonly options: EngineOptions,
  ) {
    const c = model.config;
    const numBlocks = Math.ceil(options.kvCacheTokens / options.blockSize);
    this.pool = new KvBlockPool(numBlocks, options.blockSize);
    this.kv = model.backend.allocKvCache({ numLayers: c.numLayers, numBlocks, blockSize: options.blockSize, numKvHeads: c.numKvHeads, headDim: c.headDim });
    this.eos = new Set(eosTokenIds);
  }

  get backend(): Backend {
    return this.model.backend;
  }

  /** Queue a request; rejects prompts that can never fit, with the numbers. */
  addRequest(id: string, promptIds: number[], params: SamplingParams): void {
    if (this.byId.has(id)) throw new InvalidRequestError(`request id '${id}' is already in use`);
    if (promptIds.length === 0) throw new InvalidRequestError('the prompt is empty: at least one token is needed');
    const vocab = this.model.config.vocabSize;
    const bad = promptIds.find((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
    if (bad !== undefined) throw new InvalidRequestError(`prompt token id ${bad} is outside the vocabulary (0..${vocab - 1})`);
    const { maxModelLen } = this.options;
    if (promptIds.length + params.maxTokens > maxModelLen) {
      throw new CapacityError(
        `this model's maximum context length is ${maxModelLen} tokens, but the prompt has ${promptIds.length} tokens ` +
          `and max_tokens is ${params.maxTokens} (${promptIds.length + params.maxTokens} in all); shorten the prompt or lower max_tokens`,
      );
    }
    // A request that could not finish even with the whole cache to itself is refused now, not midway.
    const blocksNeeded = Math.ceil((promptIds.length + params.maxTokens) / this.options.blockSize);
    if (blocksNeeded > this.pool.numBlocks) {
      throw new CapacityError(
        `prompt (${promptIds.length} tokens) plus max_tokens (${params.maxTokens}) needs ${blocksNeeded} KV cache blocks of ${this.options.blockSize} tokens, ` +
          `but the whole cache has ${this.pool.numBlocks}; lower max_tokens or give the KV cache more memory`,
      );
    }
    const req = new Request(id, promptIds, params, new SequenceBlocks(this.pool), this.tokenizer, vocab);
    this.byId.set(id, req);
    this.waiting.push(req);
  }

  /** Stop a request at once and free its KV blocks. */
  abort(id: string): void {
    const req = this.byId.get(id);
    if (req && !req.finished) this.finish(req, 'abort', '');
  }

  hasWork(): boolean {
    return this.running.length > 0 || this.waiting.length > 0 || this.pendingOutputs.length > 0;
  }

  get numRunning(): number {
    return this.running.length;
  }

  get numWaiting(): number {
    return this.waiting.length;
  }

  /** One scheduling step: admit, run one forward over everything scheduled, sample, stop. */
  step(): RequestOutput[] {
    const outputs = this.pendingOutputs.splice(0);
    while (this.waiting.length > 0 && this.running.length < this.options.maxNumSeqs) this.running.push(this.waiting.shift()!);
    if (this.running.length === 0) return outputs;

    // First come, first served within the token budget; prompts beyond it continue next step.
    let budget = this.options.maxNumBatchedTokens;
    const scheduled: Array<{ req: Request; start: number; count: number }> = [];
    for (const req of this.running) {
      if (budget <= 0) break;
      const count = Math.min(req.numTokens - req.numComputed, budget);
      if (count <= 0) continue;
      if (!req.blocks.tryReserve(req.numComputed + count)) continue;
      scheduled.push({ req, start: req.numComputed, count });
      budget -= count;
    }
    if (scheduled.length === 0) {
      // Nothing fits: the newest request gives way so the others can finish (preemption comes with the scheduler).
      const victim = this.running[this.running.length - 1];
      const err = new CapacityError(`KV cache exhausted: ${this.pool.numBlocks} blocks of ${this.options.blockSize} tokens are all in use`);
      this.finish(victim, 'error', '', err);
      return outputs.concat(this.pendingOutputs.splice(0));
    }

    const batch = this.buildBatch(scheduled);
    const { logits } = this.model.forward(batch, this.kv);
    const vocab = this.model.config.vocabSize;
    let row = 0;
    for (const { req, count } of scheduled) {
      req.numComputed += count;
      if (req.numComputed < req.numTokens) continue; // still prefilling
      const token = req.sampler.sample(logits.subarray(row * vocab, (row + 1) * vocab), req.counts);
      row++;
      outputs.push(this.acceptToken(req, token));
    }
    return outputs.concat(this.pendingOutputs.splice(0));
  }

  private buildBatch(scheduled: Array<{ req: Request; start: number; count: number }>): ForwardBatch {
    const numTokens = scheduled.reduce((a, s) => a + s.count, 0);
    const maxBlocksPerSeq = Math.max(...scheduled.map((s) => s.req.blocks.blocks.length));
    const tokens = new Int32Array(numTokens);
    const positions = new Int32Array(numTokens);
    const seqIndex = new Int32Array(numTokens);
    const slots = new Int32Array(numTokens);
    const blockTables = new Int32Array(scheduled.length * maxBlocksPerSeq).fill(-1);
    const logitRows: number[] = [];
    let i = 0;
    scheduled.forEach(({ req, start, count }, s) => {
      blockTables.set(req.blocks.blocks, s * maxBlocksPerSeq);
      for (let p = start; p < start + count; p++, i++) {
        tokens[i] = req.tokenAt(p);
        positions[i] = p;
        seqIndex[i] = s;
        slots[i] = req.blocks.slot(p);
      }
      if (start + count === req.numTokens) logitRows.push(i - 1);
    });
    return { numTokens, numSeqs: scheduled.length, tokens, positions, seqIndex, slots, blockTables, maxBlocksPerSeq, logitRows: Int32Array.from(logitRows) };
  }

  private acceptToken(req: Request, token: number): RequestOutput {
    req.outputIds.push(token);
    req.counts.addOutput(token);
    const p = req.params;
    const isEos = !p.ignoreEos && this.eos.has(token);
    const isStopToken = p.stopTokenIds.includes(token);
    const { emit, stopped } = req.stops.push(req.detokenizer?.push(token) ?? '');
    if (stopped) return this.finish(req, 'stop', emit, undefined, [token]);
    if (isEos || isStopToken) return this.finish(req, 'stop', emit, undefined, [token]);
    if (req.outputIds.length >= p.maxTokens || req.numTokens >= this.options.maxModelLen) return this.finish(req, 'length', emit, undefined, [token]);
    return { requestId: req.id, newTokenIds: [token], text: emit, finished: false, promptTokens: req.promptIds.length, outputTokens: req.outputIds.length };
  }

  private finish(req: Request, reason: FinishReason, text: string, error?: TachyonError, newTokenIds: number[] = []): RequestOutput {
    req.finished = true;
    // A stop string ends the text where it began; otherwise release what was held back.
    if (reason !== 'stop' || !req.stops.stopped) {
      if (reason !== 'abort' && reason !== 'error') text += req.stops.push(req.detokenizer?.flush() ?? '').emit + req.stops.flush();
    }
    req.blocks.releaseAll();
    this.byId.delete(req.id);
    for (const list of [this.running, this.waiting]) {
      const i = list.indexOf(req);
      if (i >= 0) list.splice(i, 1);
    }
    const out: RequestOutput = { requestId: req.id, newTokenIds, text, finished: true, finishReason: reason, error, promptTokens: req.promptIds.length, outputTokens: req.outputIds.length };
    if (reason === 'abort' || reason === 'error') this.pendingOutputs.push(out);
    return out;
  }
}

export const DEFAULT_ENGINE_OPTIONS = (maxModelLen: number): EngineOptions => ({
  maxModelLen,
  maxNumSeqs: 64,
  maxNumBatchedTokens: 2048,
  kvCacheTokens: Math.max(maxModelLen, 16384),
  blockSize: DEFAULT_BLOCK_SIZE,
});
