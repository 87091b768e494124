// The engine core: holds requests, and each step runs one flattened forward pass over what the
// scheduler picked (prefill chunks and decode tokens together), then samples and checks stop
// conditions. Counters and per-request timestamps are kept here for the server's metrics.

import type { Backend, GpuSamplingRow, KvCacheStorage } from '../backend/backend.js';
import { CapacityError, InvalidRequestError, TachyonError } from '../errors.js';
import type { LlamaModel, ForwardBatch } from '../model/llama.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { IncrementalDetokenizer } from './detokenizer.js';
import { DEFAULT_BLOCK_SIZE, KvBlockPool, SequenceBlocks } from './kv-cache.js';
import { PrefixCache } from './prefix-cache.js';
import { maskPaddedVocab, penaltyRow, Sampler, TokenCounts, type Logprobs, type PenaltyRow } from './sampler.js';
import type { SamplingParams } from './sampling-params.js';
import { Scheduler, type ScheduledChunk, type SchedulableSequence } from './scheduler.js';
import type { Proposer } from './spec/proposer.js';
import { planDist, SpeculativeDecoder, type SpecSequence, type SpecWindow, type WindowDraws } from './spec/speculative-step.js';
import type { SampledVerification } from './spec/verifier.js';
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
  /** Share full KV blocks between requests with the same prefix (default true, as vLLM v1). */
  enablePrefixCaching?: boolean;
  /**
   * Speculative decoding: every decode step verifies up to k drafts per sequence in the same pass;
   * a step with more than disableByBatchSize sequences decoding drafts nothing (vLLM's key).
   */
  speculative?: { proposer: Proposer; numSpeculativeTokens: number; disableByBatchSize?: number };
}

/** Per-request options that are not sampling knobs. */
export interface RequestOptions {
  /** Return the chosen token's logprob and this many top alternatives with every token. */
  logprobs?: number;
  /** When the request arrived (performance.now() ms); defaults to when it is added. */
  arrivalMs?: number;
}

/** A request's life in timestamps (performance.now() ms) and counts, sent with its last output. */
export interface RequestMetrics {
  arrivalMs: number;
  /** First time it was given tokens to compute (queue time ends). */
  firstScheduledMs?: number;
  firstTokenMs?: number;
  lastTokenMs?: number;
  finishedMs: number;
  promptTokens: number;
  outputTokens: number;
  /** Prompt tokens found in the prefix cache at first admission. */
  cachedTokens: number;
  numPreemptions: number;
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
  /** One entry per new token when the request asked for logprobs. */
  logprobs?: Logprobs[];
  /** On the last output only. */
  metrics?: RequestMetrics;
}

/** Counters and gauges for /metrics; counters only grow. */
export interface EngineStats {
  numRunning: number;
  numWaiting: number;
  /** Fraction of KV blocks held by requests (0..1). */
  kvCacheUsage: number;
  numKvBlocks: number;
  prefixCacheQueries: number;
  prefixCacheHits: number;
  /** Prompt tokens of requests whose prefill completed. */
  promptTokens: number;
  generationTokens: number;
  numPreemptions: number;
  /** Speculative decoding counters (vLLM's spec_decode_*); all zero until a proposer runs. */
  specDecode: SpecDecodeStats;
}

export interface SpecDecodeStats {
  numDrafts: number;
  numDraftTokens: number;
  numAcceptedTokens: number;
  /** Accepted draft tokens by position in the draft (0 = first drafted token). */
  acceptedTokensPerPos: number[];
}

class Request implements SchedulableSequence {
  readonly outputIds: number[] = [];
  readonly counts: TokenCounts;
  readonly sampler: Sampler;
  /** Absent when the engine runs without a tokenizer (token ids in, token ids out). */
  readonly detokenizer?: IncrementalDetokenizer;
  readonly stops: StopStringMatcher;
  /** Tokens whose K/V are in the cache. */
  numComputed = 0;
  finished = false;
  readonly arrivalMs: number;
  firstScheduledMs?: number;
  firstTokenMs?: number;
  lastTokenMs?: number;
  cachedTokens = 0;
  numPreemptions = 0;

  constructor(
    readonly id: string,
    readonly promptIds: number[],
    readonly params: SamplingParams,
    readonly opts: RequestOptions,
    readonly blocks: SequenceBlocks,
    tokenizer: Tokenizer | undefined,
    vocabSize: number,
    /** Called when the scheduler preempts this request (its KV, and any proposer state, is gone). */
    private readonly onPreempt: () => void,
  ) {
    this.counts = new TokenCounts(promptIds);
    this.sampler = new Sampler(params, vocabSize);
    if (tokenizer) this.detokenizer = new IncrementalDetokenizer(tokenizer, promptIds, params.skipSpecialTokens);
    this.stops = new StopStringMatcher(params.stop);
    this.arrivalMs = opts.arrivalMs ?? performance.now();
  }

  get numTokens(): number {
    return this.promptIds.length + this.outputIds.length;
  }

  tokenAt(i: number): number {
    return i < this.promptIds.length ? this.promptIds[i] : this.outputIds[i - this.promptIds.length];
  }

  onScheduled(cachedTokens: number): void {
    if (this.firstScheduledMs !== undefined) return;
    this.firstScheduledMs = performance.now();
    this.cachedTokens = cachedTokens;
  }

  onPreempted(): void {
    this.numPreemptions++;
    this.onPreempt();
  }

  /** Prompt + output as one list (what a proposer drafts from). */
  allTokens(): number[] {
    return this.promptIds.concat(this.outputIds);
  }
}

/** A step's draws on the backend (sampleRowsOf): per logit row its draw, the logprobs it asks and the penalties its logits take. */
interface SampleDraws {
  rows: GpuSamplingRow[];
  plans: Map<Request, SampledVerification>;
  logprobs: (number | undefined)[];
  /** A verification row's draft, whose logprobs the row also answers (emitted if it is accepted). */
  alternates: (number | undefined)[];
  penalties: (PenaltyRow | undefined)[];
}

/** Where a scheduled chunk's tokens sit in the step's batch, and its speculative window if any. */
interface PlannedChunk {
  chunk: ScheduledChunk<Request>;
  /** Batch row of the chunk's first token. */
  row: number;
  /** Logits row of the chunk's first logits (window) or its only one (prefill end). */
  logitRow: number;
  window?: SpecWindow;
}

export class Engine {
  readonly pool: KvBlockPool;
  readonly kv: KvCacheStorage;
  readonly prefixCache: PrefixCache;
  private readonly scheduler: Scheduler<Request>;
  private readonly byId = new Map<string, Request>();
  private readonly pendingOutputs: RequestOutput[] = [];
  private readonly eos: Set<number>;
  private promptTokensTotal = 0;
  private generationTokensTotal = 0;
  /** Ids that may be sampled: the tokenizer's, when the model's vocabulary is padded beyond it. */
  readonly samplingVocabSize: number;

  constructor(
    readonly model: LlamaModel,
    readonly tokenizer: Tokenizer | undefined,
    eosTokenIds: number[],
    readonly options: EngineOptions,
  ) {
    const c = model.config;
    const numBlocks = Math.ceil(options.kvCacheTokens / options.blockSize);
    this.pool = new KvBlockPool(numBlocks, options.blockSize);
    this.kv = model.backend.allocKvCache(model.kvCacheSpec(numBlocks, options.blockSize));
    this.eos = new Set(eosTokenIds);
    this.samplingVocabSize = tokenizer && tokenizer.vocabSize < c.vocabSize ? tokenizer.vocabSize : c.vocabSize;
    if (options.speculative) {
      this.spec = new SpeculativeDecoder({ model, kv: this.kv }, options.speculative.proposer, { numSpeculativeTokens: options.speculative.numSpeculativeTokens, samplingVocabSize: this.samplingVocabSize });
    }
    // A proposer that reads the target's hidden states (EAGLE-3) must see every position computed,
    // which blocks taken from the prefix cache never are.
    const prefixCaching = (options.enablePrefixCaching ?? true) && !(this.spec && this.spec.captureHiddenStates.length > 0);
    this.prefixCache = new PrefixCache(prefixCaching);
    this.scheduler = new Scheduler(options, this.prefixCache);
  }

  /** Present when speculative decoding is configured. */
  readonly spec?: SpeculativeDecoder;

  get backend(): Backend {
    return this.model.backend;
  }

  /** Queue a request; rejects prompts that can never fit, with the numbers. */
  addRequest(id: string, promptIds: number[], params: SamplingParams, opts: RequestOptions = {}): void {
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
    // Anything smaller always finishes: preemption frees the cache for the oldest request.
    const blocksNeeded = Math.ceil((promptIds.length + params.maxTokens) / this.options.blockSize);
    if (blocksNeeded > this.pool.numBlocks) {
      throw new CapacityError(
        `prompt (${promptIds.length} tokens) plus max_tokens (${params.maxTokens}) needs ${blocksNeeded} KV cache blocks of ${this.options.blockSize} tokens, ` +
          `but the whole cache has ${this.pool.numBlocks}; lower max_tokens or give the KV cache more memory`,
      );
    }
    if (opts.logprobs !== undefined && !(Number.isInteger(opts.logprobs) && opts.logprobs >= 0)) {
      throw new InvalidRequestError(`logprobs must be a non-negative integer, got ${opts.logprobs}`);
    }
    const req = new Request(id, promptIds, params, opts, new SequenceBlocks(this.pool), this.tokenizer, vocab, () => this.spec?.release(id));
    this.byId.set(id, req);
    this.scheduler.add(req);
  }

  /** Stop a request at once and free its KV blocks. */
  abort(id: string): void {
    const req = this.byId.get(id);
    if (req && !req.finished) this.finish(req, 'abort', '');
  }

  hasWork(): boolean {
    return this.scheduler.running.length > 0 || this.scheduler.waiting.length > 0 || this.pendingOutputs.length > 0;
  }

  get numRunning(): number {
    return this.scheduler.running.length;
  }

  get numWaiting(): number {
    return this.scheduler.waiting.length;
  }

  stats(): EngineStats {
    return {
      numRunning: this.numRunning,
      numWaiting: this.numWaiting,
      kvCacheUsage: this.pool.usage,
      numKvBlocks: this.pool.numBlocks,
      prefixCacheQueries: this.prefixCache.stats.queries,
      prefixCacheHits: this.prefixCache.stats.hits,
      promptTokens: this.promptTokensTotal,
      generationTokens: this.generationTokensTotal,
      numPreemptions: this.scheduler.numPreemptions,
      specDecode: this.spec ? this.spec.metrics.snapshot() : { numDrafts: 0, numDraftTokens: 0, numAcceptedTokens: 0, acceptedTokensPerPos: [] },
    };
  }

  /** One step: schedule, run one forward over everything scheduled, sample, stop. */
  step(): RequestOutput[] {
    const outputs = this.pendingOutputs.splice(0);
    const scheduled = this.scheduler.schedule();
    if (scheduled.length === 0) return outputs;

    const windows = this.spec ? this.proposeWindows(scheduled) : new Map<Request, SpecWindow>();
    const { batch, planned } = this.buildBatch(scheduled, windows);
    const capture = this.spec?.captureHiddenStates ?? [];
    // A step whose every sampled token is a plain greedy choice needs only the argmax of each row: the
    // backend computes it and one id a row comes back instead of the vocabulary's logits. Verification
    // windows too (every window row is a greedy choice: accept while draft == argmax).
    const argmaxOnly = (this.spec?.argmaxVerification ?? true) && planned.every(({ chunk }) => {
      const req = chunk.seq;
      return req.numComputed + chunk.count < req.numTokens || (req.sampler.argmaxOnly && req.opts.logprobs === undefined);
    });
    // Otherwise a step whose sampled tokens all come without penalties or logprobs draws them on the
    // backend (temperature, min-p, top-k, top-p): each row's uniform comes from its request's stream as
    // Sampler.sample would take it, and one id a row comes back. Verification windows join when their
    // drafts are deterministic: each window row then also returns p of its draft (see verifySampled).
    const draws = argmaxOnly ? undefined : this.sampleRowsOf(planned);
    const sampleRows = draws?.rows;
    const wantLogprobs = draws?.logprobs.some((k) => k !== undefined);
    const { logits, hiddenStates, argmax, sampled, excludedProbs, logprobs: sampledLogprobs, alternateLogprobs } = this.model.forward(batch, this.kv, {
      ...(capture.length > 0 ? { captureHiddenStates: [...capture] } : {}),
      ...(argmaxOnly ? { argmaxOnly: { vocab: this.samplingVocabSize } } : {}),
      ...(sampleRows ? { sampleRows: { vocab: this.samplingVocabSize, rows: sampleRows, ...(draws!.penalties.some((p) => p) ? { penalties: draws!.penalties } : {}), ...planDist(draws!.plans.values()) } } : {}),
      ...(wantLogprobs ? { logprobs: draws!.logprobs, logprobAlternates: draws!.alternates } : {}),
    });
    const vocab = this.model.config.vocabSize;
    maskPaddedVocab(logits, vocab, this.samplingVocabSize);
    const rowLogits = (r: number, n = 1) => logits.subarray(r * vocab, (r + n) * vocab);

    // Verify every window at once (the proposer learns all outcomes together).
    const windowPlans = planned.filter((p) => p.window);
    const verified = new Map<Request, ReturnType<SpeculativeDecoder['verify']>[number]>();
    if (this.spec && windowPlans.length > 0) {
      const windows = windowPlans.map((p) => p.window!);
      const rows = windowPlans.map((p) => p.row);
      const span = (p: PlannedChunk): [number, number] => [p.logitRow, p.logitRow + p.window!.tokens.length];
      let results: ReturnType<SpeculativeDecoder['verify']>;
      if (argmax) {
        results = this.spec.verifyArgmax(windows, windowPlans.map((p) => argmax.subarray(...span(p))), hiddenStates, rows);
      } else if (sampled) {
        // Windows without drafts exclude nothing: a step of only those returns no probabilities.
        const probs = excludedProbs ?? new Float32Array(sampled.length);
        const windowDraws = windowPlans.map((p): WindowDraws => ({ plan: draws!.plans.get(p.chunk.seq)!, draws: sampled.subarray(...span(p)), excludedProbs: probs.subarray(...span(p)) }));
        results = this.spec.verifySampled(windows, windowDraws, hiddenStates, rows);
      } else {
        results = this.spec.verify(windows, windowPlans.map((p) => rowLogits(p.logitRow, p.window!.tokens.length)), hiddenStates, rows);
      }
      windowPlans.forEach((p, i) => verified.set(p.chunk.seq, results[i]));
    }

    for (const { chunk, row, logitRow, window } of planned) {
      const req = chunk.seq;
      const result = window && verified.get(req);
      if (result) {
        // Drawn windows' logprobs: row j answers for its draft (accepted) and for its own draw (emitted at the first rejection).
        const span = (a?: (Logprobs | undefined)[]) => a?.slice(logitRow, logitRow + window.tokens.length);
        const rowLogprobs = sampledLogprobs && { drawn: span(sampledLogprobs)!, drafts: span(alternateLogprobs) ?? [] };
        outputs.push(this.acceptVerified(req, result, rowLogprobs));
        continue;
      }
      req.numComputed += chunk.count;
      this.prefixCache.commit(req.blocks, req.numComputed, (i) => req.tokenAt(i));
      this.spec?.observePrefill(req.id, chunk.start, chunk.count, hiddenStates, row);
      if (req.numComputed < req.numTokens) continue; // still prefilling
      if (argmax || sampled) {
        const token = (argmax ?? sampled)![logitRow];
        req.sampler.chose(token);
        const lp = sampledLogprobs?.[logitRow];
        outputs.push(this.acceptToken(req, token, lp ? [lp] : undefined));
        continue;
      }
      const last = rowLogits(logitRow);
      const token = req.sampler.sample(last, req.counts);
      const logprobs = req.opts.logprobs === undefined ? undefined : [req.sampler.logprobs(last, req.opts.logprobs, token)];
      outputs.push(this.acceptToken(req, token, logprobs));
    }
    return outputs.concat(this.pendingOutputs.splice(0));
  }

  /**
   * One sampling row per logit row of the step, in order: a row for each chunk that finishes its
   * prompt or decodes (its uniform drawn now), and a window's verification rows (planned from a copy
   * of its stream, which moves when the window is verified), and per row the penalties its logits
   * take before the draw and the logprobs its request asks (both on the backend where it can);
   * undefined, drawing nothing, where a window needs its logits (sampled drafts, forced acceptance:
   * SpeculativeDecoder.canVerifySampled).
   */
  private sampleRowsOf(planned: PlannedChunk[]): SampleDraws | undefined {
    const sampling = planned.filter(({ chunk, window }) => window || chunk.seq.numComputed + chunk.count >= chunk.seq.numTokens);
    if (sampling.length === 0) return undefined;
    const windowNeedsLogits = ({ window }: PlannedChunk) => window !== undefined && !this.spec!.canVerifySampled(window);
    if (sampling.some(windowNeedsLogits)) return undefined;
    const rows: GpuSamplingRow[] = [];
    const logprobs: (number | undefined)[] = [];
    const alternates: (number | undefined)[] = [];
    const penalties: (PenaltyRow | undefined)[] = [];
    const plans = new Map<Request, SampledVerification>();
    for (const { chunk, window } of sampling) {
      const req = chunk.seq;
      if (!window) {
        rows.push(req.sampler.drawRow());
        logprobs.push(req.opts.logprobs);
        alternates.push(undefined);
        penalties.push(req.sampler.penalised ? penaltyRow(req.counts, req.params) : undefined);
        continue;
      }
      const plan = this.spec!.planSampled(window);
      plans.set(req, plan);
      rows.push(...plan.rows);
      logprobs.push(...plan.rows.map(() => req.opts.logprobs));
      // Row i also answers for draft x_(i+1) (a draft past the sampling vocabulary is never accepted).
      const drafts = window.proposal.tokens;
      alternates.push(...plan.rows.map((_, i) => (req.opts.logprobs !== undefined && i < drafts.length && drafts[i] < this.samplingVocabSize ? drafts[i] : undefined)));
      penalties.push(...(plan.penalties ?? plan.rows.map(() => undefined)));
    }
    return { rows, plans, logprobs, alternates, penalties };
  }

  /**
   * Drafts for every scheduled decode (one new token to compute). A sequence drafts at most what
   * its max_tokens and the context leave, and none at all when the KV cache cannot hold its window
   * this step: speculation is an optimisation, never a reason to preempt.
   */
  private proposeWindows(scheduled: ScheduledChunk<Request>[]): Map<Request, SpecWindow> {
    const spec = this.spec!;
    const decoding = scheduled.filter(({ seq: req, start, count }) => count === 1 && start === req.numTokens - 1 && req.outputIds.length > 0);
    // Past disable_by_batch_size the step drafts nothing; the proposers still see every sequence.
    const limit = this.options.speculative?.disableByBatchSize;
    const k = limit !== undefined && decoding.length > limit ? 0 : spec.numSpeculativeTokens;
    const seqs: SpecSequence[] = [];
    const reqs: Request[] = [];
    for (const { seq: req } of decoding) {
      let maxDraftTokens = Math.max(0, Math.min(k, req.params.maxTokens - req.outputIds.length - 1, this.options.maxModelLen - req.numTokens - 1));
      if (maxDraftTokens > 0 && !req.blocks.tryReserve(req.numTokens + maxDraftTokens)) maxDraftTokens = 0;
      seqs.push({ id: req.id, tokens: req.allTokens(), blocks: req.blocks, sampler: req.sampler, counts: req.counts, maxDraftTokens });
      reqs.push(req);
    }
    const windows = seqs.length > 0 ? spec.propose(seqs) : [];
    return new Map(windows.map((w, i) => [reqs[i], w]));
  }

  private buildBatch(scheduled: ScheduledChunk<Request>[], windows: Map<Request, SpecWindow>): { batch: ForwardBatch; planned: PlannedChunk[] } {
    const lengthOf = (c: ScheduledChunk<Request>) => windows.get(c.seq)?.tokens.length ?? c.count;
    const numTokens = scheduled.reduce((a, c) => a + lengthOf(c), 0);
    const maxBlocksPerSeq = Math.max(...scheduled.map((s) => s.seq.blocks.blocks.length));
    const tokens = new Int32Array(numTokens);
    const positions = new Int32Array(numTokens);
    const seqIndex = new Int32Array(numTokens);
    const slots = new Int32Array(numTokens);
    const blockTables = new Int32Array(scheduled.length * maxBlocksPerSeq).fill(-1);
    const logitRows: number[] = [];
    const planned: PlannedChunk[] = [];
    let i = 0;
    scheduled.forEach((chunk, s) => {
      const { seq: req, start, count } = chunk;
      const window = windows.get(req);
      blockTables.set(req.blocks.blocks, s * maxBlocksPerSeq);
      planned.push({ chunk, row: i, logitRow: logitRows.length, window });
      const n = window ? window.tokens.length : count;
      for (let j = 0; j < n; j++, i++) {
        const p = start + j;
        tokens[i] = window ? window.tokens[j] : req.tokenAt(p);
        positions[i] = p;
        seqIndex[i] = s;
        slots[i] = req.blocks.slot(p);
        // A window needs the target's logits at every position; a prefill chunk only at the prompt's end.
        if (window) logitRows.push(i);
      }
      if (!window && start + count === req.numTokens) logitRows.push(i - 1);
    });
    const batch = { numTokens, numSeqs: scheduled.length, tokens, positions, seqIndex, slots, blockTables, maxBlocksPerSeq, logitRows: Int32Array.from(logitRows) };
    return { batch, planned };
  }

  /** Take a verified window's tokens one by one (a stop can cut them short) as one output. */
  /**
   * `rowLogprobs`: for a window verified from draws, its rows' logprobs of their draws and of their
   * drafts (the verified tokens are drafts x_1..x_a then row a's draw); else they come from the
   * window's logits in `result`.
   */
  private acceptVerified(req: Request, result: ReturnType<SpeculativeDecoder['verify']>[number], rowLogprobs?: { drawn: (Logprobs | undefined)[]; drafts: (Logprobs | undefined)[] }): RequestOutput {
    // The target keeps K/V for the newest token and the accepted drafts; the rest is rolled back.
    req.numComputed = result.keepKvTokens;
    req.blocks.truncate(result.keepKvTokens);
    const merged: RequestOutput = { requestId: req.id, newTokenIds: [], text: '', finished: false, promptTokens: req.promptIds.length, outputTokens: 0 };
    for (let j = 0; j < result.tokens.length && !merged.finished; j++) {
      const token = result.tokens[j];
      // A request with logprobs is never verified from the argmax alone: its logits are here, or its rows answered.
      const logprobs = req.opts.logprobs === undefined ? undefined : [this.verifiedLogprobs(req, result, j, token, rowLogprobs)];
      const out = this.acceptToken(req, token, logprobs);
      merged.newTokenIds.push(...out.newTokenIds);
      merged.text += out.text;
      if (out.logprobs) (merged.logprobs ??= []).push(...out.logprobs);
      merged.finished = out.finished;
      merged.finishReason = out.finishReason;
      merged.metrics = out.metrics;
      merged.outputTokens = out.outputTokens;
    }
    if (!merged.finished) this.prefixCache.commit(req.blocks, req.numComputed, (i) => req.tokenAt(i));
    return merged;
  }

  /** The logprobs of a window's j-th verified token (see acceptVerified). */
  private verifiedLogprobs(req: Request, result: ReturnType<SpeculativeDecoder['verify']>[number], j: number, token: number, rowLogprobs?: { drawn: (Logprobs | undefined)[]; drafts: (Logprobs | undefined)[] }): Logprobs {
    if (!rowLogprobs) return req.sampler.logprobs(result.tokenLogits![j], req.opts.logprobs!, token);
    const lp = j < result.numAccepted ? rowLogprobs.drafts[j] : rowLogprobs.drawn[j];
    if (!lp || lp.tokenId !== token) throw new Error(`engine: no logprobs for token ${token} at row ${j} of ${req.id}'s window`);
    return lp;
  }

  private acceptToken(req: Request, token: number, logprobs?: Logprobs[]): RequestOutput {
    const now = performance.now();
    if (req.firstTokenMs === undefined) {
      req.firstTokenMs = now;
      this.promptTokensTotal += req.promptIds.length;
    }
    req.lastTokenMs = now;
    this.generationTokensTotal++;
    req.outputIds.push(token);
    req.counts.addOutput(token);
    const p = req.params;
    const isEos = !p.ignoreEos && this.eos.has(token);
    const isStopToken = p.stopTokenIds.includes(token);
    const { emit, stopped } = req.stops.push(req.detokenizer?.push(token) ?? '');
    if (stopped || isEos || isStopToken) return this.finish(req, 'stop', emit, undefined, [token], logprobs);
    if (req.outputIds.length >= p.maxTokens || req.numTokens >= this.options.maxModelLen) return this.finish(req, 'length', emit, undefined, [token], logprobs);
    return { requestId: req.id, newTokenIds: [token], text: emit, finished: false, promptTokens: req.promptIds.length, outputTokens: req.outputIds.length, logprobs };
  }

  private finish(req: Request, reason: FinishReason, text: string, error?: TachyonError, newTokenIds: number[] = [], logprobs?: Logprobs[]): RequestOutput {
    req.finished = true;
    // A stop string ends the text where it began; otherwise release what was held back.
    if (reason !== 'stop' || !req.stops.stopped) {
      if (reason !== 'abort' && reason !== 'error') text += req.stops.push(req.detokenizer?.flush() ?? '').emit + req.stops.flush();
    }
    req.blocks.releaseAll();
    this.spec?.release(req.id);
    this.byId.delete(req.id);
    this.scheduler.remove(req);
    const metrics: RequestMetrics = {
      arrivalMs: req.arrivalMs,
      firstScheduledMs: req.firstScheduledMs,
      firstTokenMs: req.firstTokenMs,
      lastTokenMs: req.lastTokenMs,
      finishedMs: performance.now(),
      promptTokens: req.promptIds.length,
      outputTokens: req.outputIds.length,
      cachedTokens: req.cachedTokens,
      numPreemptions: req.numPreemptions,
    };
    const out: RequestOutput = {
      requestId: req.id,
      newTokenIds,
      text,
      finished: true,
      finishReason: reason,
      error,
      promptTokens: req.promptIds.length,
      outputTokens: req.outputIds.length,
      logprobs,
      metrics,
    };
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
