// Runs a configuration (model + quantization) over held-out text and tasks and compares it with a
// baseline on the same tokens: perplexity, KL divergence and top-1 agreement per position, exact-match accuracy.
//
// The two configurations are loaded one after the other: the baseline's logits at every scored position are
// kept (positions × vocab float32: 134 MB for 8192 tokens of a 4096-id vocabulary), the baseline is closed,
// then the candidate is compared with them as it runs. So only one model's weights are in memory at a time,
// as with llama.cpp's --kl-divergence-base.

import { setImmediate as nextTurn } from 'node:timers/promises';
import { KvBlockPool, SequenceBlocks, DEFAULT_BLOCK_SIZE } from '../engine/kv-cache.js';
import { InvalidRequestError } from '../errors.js';
import { LLM, type LoadOptions } from '../llm.js';
import type { ForwardBatch, LlamaModel } from '../model/llama.js';
import type { Tokenizer } from '../model/tokenizer.js';
import type { TaskItem } from './inputs.js';
import {
  argmax,
  binomialStandardError,
  exactMatch,
  kldStats,
  klDivergence,
  logSoftmax,
  mean,
  perplexity,
  recoveryPercent,
  standardError,
  topOneAgreement,
  type KldStats,
} from './metrics.js';

export const DEFAULT_CONTEXT_LEN = 512;
export const DEFAULT_MAX_TOKENS_EVAL = 4096;
/** Greedy answers may take this many tokens beyond the answer's own (a leading space, a split word). */
export const ANSWER_MARGIN_TOKENS = 2;
/** Logits held per forward: a window longer than this is run as chunks over the KV cache. */
const MAX_LOGIT_BYTES_PER_FORWARD = 256 * 2 ** 20;

export interface EvalInputs {
  /** Token windows; each is scored at every position but its last (next-token prediction). */
  windows: number[][];
  /** The token each scored position predicts, windows concatenated. */
  targets: Int32Array;
  contextLen: number;
  /** Text tokens (after the --max-tokens-eval cap), and how many the text had before it. */
  textTokens: number;
  textTokensAvailable: number;
  tasks: TaskItem[];
}

/**
 * Cut text tokens into windows of `contextLen`. With a BOS token each window is BOS + (contextLen − 1) text
 * tokens, so every text token is predicted exactly once — unless the text itself has a BOS there (a document
 * start), which then serves as the window's BOS and is context, not a target. Without a BOS token the first
 * token of each window has no context and is not scored. A remainder too short to score anything is dropped.
 */
export function cutIntoWindows(ids: readonly number[], contextLen: number, bosTokenId?: number): number[][] {
  if (!(Number.isInteger(contextLen) && contextLen >= 2)) throw new InvalidRequestError(`context length must be an integer >= 2, got ${contextLen}`);
  const step = bosTokenId === undefined ? contextLen : contextLen - 1;
  const windows: number[][] = [];
  for (let i = 0; i < ids.length; i += step) {
    const w = ids.slice(i, i + step);
    if (bosTokenId !== undefined && w[0] !== bosTokenId) w.unshift(bosTokenId);
    if (w.length >= 2) windows.push(w);
  }
  return windows;
}

/**
 * The text's tokens, no special tokens added. Text that carries the BOS token literally is in the model's own
 * format (documents through the chat template or between BOS and end-of-text, as tachyon-tiny's heldout.txt):
 * it is read as one document per BOS, each without the newline a file of documents puts after it, so the
 * tokens are the stream the model was trained on — a separator the model never saw costs tachyon-tiny 14-19
 * nats at every document boundary (both configurations alike), a third of all the NLL of its held-out text. Other text is tokenized as it is.
 */
export function tokenizeText(tokenizer: Tokenizer, text: string): number[] {
  const bosId = tokenizer.bosTokenId;
  const bos = bosId === undefined ? undefined : tokenizer.idToToken(bosId);
  if (!bos || !text.includes(bos)) return tokenizer.encode(text, { addSpecialTokens: false });
  const [before, ...docs] = text.split(bos);
  const ids = before.trim() === '' ? [] : tokenizer.encode(before.replace(/\n$/, ''), { addSpecialTokens: false });
  for (const doc of docs) ids.push(...tokenizer.encode(bos + doc.replace(/\n$/, ''), { addSpecialTokens: false }));
  return ids;
}

export function prepareInputs(llm: LLM, text: string | undefined, tasks: TaskItem[] = [], opts: { contextLen?: number; maxTokensEval?: number } = {}): EvalInputs {
  const maxPos = llm.config.maxPositionEmbeddings;
  const contextLen = opts.contextLen ?? Math.min(maxPos, DEFAULT_CONTEXT_LEN);
  if (!(Number.isInteger(contextLen) && contextLen >= 2)) throw new InvalidRequestError(`--context-len must be an integer >= 2, got ${contextLen}`);
  if (contextLen > maxPos) throw new InvalidRequestError(`--context-len ${contextLen} exceeds the model's max_position_embeddings (${maxPos})`);
  const maxTokensEval = opts.maxTokensEval ?? DEFAULT_MAX_TOKENS_EVAL;
  if (!(Number.isInteger(maxTokensEval) && maxTokensEval >= 0)) throw new InvalidRequestError(`--max-tokens-eval must be an integer >= 0 (0 = all), got ${maxTokensEval}`);
  const all = text === undefined ? [] : tokenizeText(llm.tokenizer, text);
  const ids = maxTokensEval > 0 ? all.slice(0, maxTokensEval) : all;
  const windows = cutIntoWindows(ids, contextLen, llm.tokenizer.bosTokenId);
  if (text !== undefined && windows.length === 0) throw new InvalidRequestError(`the text has ${all.length} tokens; at least 2 are needed to score anything`);
  const targets = Int32Array.from(windows.flatMap((w) => w.slice(1)));
  return { windows, targets, contextLen, textTokens: ids.length, textTokensAvailable: all.length, tasks };
}

/** Logits at every position of single sequences, run over a paged KV cache of one window's size. */
export class SequenceLogits {
  private readonly pool: KvBlockPool;
  private readonly kv;
  private readonly maxRowsPerForward: number;

  constructor(
    readonly model: LlamaModel,
    readonly maxLen: number,
  ) {
    const c = model.config;
    const numBlocks = Math.ceil(maxLen / DEFAULT_BLOCK_SIZE);
    this.pool = new KvBlockPool(numBlocks, DEFAULT_BLOCK_SIZE);
    this.kv = model.backend.allocKvCache(model.kvCacheSpec(numBlocks, DEFAULT_BLOCK_SIZE));
    this.maxRowsPerForward = Math.max(1, Math.floor(MAX_LOGIT_BYTES_PER_FORWARD / (4 * c.vocabSize)));
  }

  /** [tokens.length × vocab] logits; one forward unless the logits would pass the per-forward budget. */
  run(tokens: readonly number[]): Float32Array {
    if (tokens.length > this.maxLen) throw new RangeError(`sequence of ${tokens.length} tokens over the scorer's ${this.maxLen}`);
    const vocab = this.model.config.vocabSize;
    const seq = new SequenceBlocks(this.pool);
    try {
      seq.reserve(tokens.length);
      const out = new Float32Array(tokens.length * vocab);
      for (let start = 0; start < tokens.length; start += this.maxRowsPerForward) {
        const n = Math.min(this.maxRowsPerForward, tokens.length - start);
        const batch: ForwardBatch = {
          numTokens: n,
          numSeqs: 1,
          tokens: Int32Array.from(tokens.slice(start, start + n)),
          positions: Int32Array.from({ length: n }, (_, i) => start + i),
          seqIndex: new Int32Array(n),
          slots: Int32Array.from({ length: n }, (_, i) => seq.slot(start + i)),
          blockTables: Int32Array.from(seq.blocks),
          maxBlocksPerSeq: seq.blocks.length,
          logitRows: Int32Array.from({ length: n }, (_, i) => i),
        };
        out.set(this.model.forward(batch, this.kv).logits, start * vocab);
      }
      return out;
    } finally {
      seq.releaseAll();
    }
  }
}

/** One configuration's results on the inputs, per scored position and per task. */
export interface ConfigurationRun {
  label: string;
  model: string;
  quantization: string;
  /** The KV cache's element type (float32, bf16, fp8). */
  kvCacheDtype: string;
  weightBytes: number;
  weightBytesByFormat: Record<string, number>;
  /** Per scored position. */
  nll: Float64Array;
  top1: Int32Array;
  /** Scored rows' logits per window, kept when this run is a reference for KL divergence. */
  logits?: Float32Array[];
  /** KL(reference ‖ this) per scored position, when run against a reference. */
  kld?: Float64Array;
  taskOutputs: string[];
  taskCorrect: boolean[];
  seconds: number;
}

/** Where a run is: `done` of `total` text windows, then of tasks, for `label`'s configuration. */
export interface ProgressEvent {
  label: string;
  stage: 'text' | 'tasks';
  done: number;
  total: number;
}
export type Progress = (event: ProgressEvent) => void;

export function formatProgress(e: ProgressEvent): string {
  return `${e.label}: ${e.stage === 'text' ? 'text window' : 'task'} ${e.done}/${e.total}`;
}

/** Score the inputs with a loaded model; with `reference`, also KL divergence against its logits. */
export async function runConfiguration(
  llm: LLM,
  inputs: EvalInputs,
  opts: { label?: string; keepLogits?: boolean; reference?: ConfigurationRun; onProgress?: Progress } = {},
): Promise<ConfigurationRun> {
  const t0 = performance.now();
  const vocab = llm.config.vocabSize;
  const label = opts.label ?? llm.loaded.quantization ?? 'none';
  const ref = opts.reference;
  if (ref?.logits && ref.logits.length !== inputs.windows.length) throw new RangeError('reference run was made on other inputs');
  const n = inputs.targets.length;
  const nll = new Float64Array(n);
  const top1 = new Int32Array(n);
  const kld = ref ? new Float64Array(n) : undefined;
  const logits: Float32Array[] | undefined = opts.keepLogits ? [] : undefined;
  const scorer = inputs.windows.length > 0 ? new SequenceLogits(llm.loaded.model, Math.max(...inputs.windows.map((w) => w.length))) : undefined;
  let pos = 0;
  for (const [wi, window] of inputs.windows.entries()) {
    // The last position predicts past the window: no target, no row kept.
    const scored = window.length - 1;
    const all = scorer!.run(window).subarray(0, scored * vocab);
    const refLogits = ref?.logits?.[wi];
    if (ref && !refLogits) throw new RangeError('the reference run kept no logits (run it with keepLogits)');
    if (refLogits && refLogits.length !== all.length) {
      throw new InvalidRequestError(`baseline and candidate vocabularies differ (${refLogits.length / scored} vs ${vocab}); KL divergence needs the same tokenizer`);
    }
    for (let r = 0; r < scored; r++, pos++) {
      const lp = logSoftmax(all, r * vocab, vocab);
      nll[pos] = -lp[inputs.targets[pos]];
      top1[pos] = argmax(all, r * vocab, vocab);
      if (kld && refLogits) kld[pos] = klDivergence(logSoftmax(refLogits, r * vocab, vocab), lp);
    }
    logits?.push(all.slice());
    opts.onProgress?.({ label, stage: 'text', done: wi + 1, total: inputs.windows.length });
    // The logits are host copies (forward returns them so), but the CUDA backend gives a step's device
    // activations back only when the synchronous run ends: yield, or every window's would pile up.
    await nextTurn();
  }
  let taskOutputs: string[] = [];
  if (inputs.tasks.length > 0) {
    let done = 0;
    taskOutputs = await greedyAnswers(llm, inputs.tasks, () => opts.onProgress?.({ label, stage: 'tasks', done: ++done, total: inputs.tasks.length }));
  }
  const weightBytesByFormat = { ...llm.loaded.weightBytes };
  return {
    label,
    model: llm.loaded.dir,
    quantization: llm.loaded.quantization ?? 'none',
    kvCacheDtype: llm.loaded.model.backend.kvDtype,
    weightBytes: Object.values(weightBytesByFormat).reduce((a, b) => a + b, 0),
    weightBytesByFormat,
    nll,
    top1,
    logits,
    kld,
    taskOutputs,
    taskCorrect: taskOutputs.map((o, i) => exactMatch(o, inputs.tasks[i].answer)),
    seconds: (performance.now() - t0) / 1000,
  };
}

/**
 * Greedy answers (temperature 0, no penalties) stopped at a newline or eos, with room for the answer's tokens
 * plus a small margin: enough to produce the answer, not enough to ramble far past it. All tasks are
 * submitted at once; the engine batches them (greedy results do not depend on the batch). The prompt gets the
 * tokenizer's BOS unless it starts with one itself.
 */
export async function greedyAnswers(llm: LLM, tasks: TaskItem[], onAnswer?: () => void): Promise<string[]> {
  return Promise.all(
    tasks.map(async (t) => {
      const answerTokens = llm.tokenizer.encode(t.answer, { addSpecialTokens: false }).length;
      // A prompt that carries its own BOS (a rendered chat template) gets no second one.
      const raw = llm.tokenizer.encode(t.prompt, { addSpecialTokens: false });
      const promptIds = raw[0] !== undefined && raw[0] === llm.tokenizer.bosTokenId ? raw : llm.tokenizer.encode(t.prompt);
      const r = await llm.complete(promptIds, {
        temperature: 0,
        topK: 0,
        topP: 1,
        minP: 0,
        repetitionPenalty: 1,
        presencePenalty: 0,
        frequencyPenalty: 0,
        maxTokens: answerTokens + ANSWER_MARGIN_TOKENS,
        stop: ['\n'],
        ignoreEos: false,
      });
      onAnswer?.();
      return r.text;
    }),
  );
}

export interface ConfigurationSummary {
  label: string;
  model: string;
  quantization: string;
  kvCacheDtype: string;
  weightBytes: number;
  weightBytesByFormat: Record<string, number>;
  scoredTokens: number;
  meanNll: number;
  meanNllStandardError: number;
  perplexity: number;
  /** exp(mean NLL) × standard error of the mean NLL: the ± llama.cpp prints. */
  perplexityStandardError: number;
  accuracy?: number;
  correct?: number;
  tasks?: number;
  seconds: number;
}

export interface Comparison {
  pplRatio: number;
  /** mean(NLL_candidate − NLL_baseline) = ln(PPL ratio), with its standard error over positions. */
  lnPplRatio: number;
  lnPplRatioStandardError: number;
  kld: KldStats;
  top1Agreement: number;
  top1AgreementStandardError: number;
  /** Mean and RMS of p_candidate(correct token) − p_baseline(correct token). */
  meanDeltaP: number;
  rmsDeltaP: number;
  /** Exact-match accuracy difference, candidate − baseline, and RedHatAI recovery %. */
  accuracyDelta?: number;
  recoveryPercent?: number;
}

export interface EvalReport {
  inputs: { contextLen: number; windows: number; textTokens: number; textTokensAvailable: number; scoredTokens: number; tasks: number; text?: string; tasksFile?: string };
  baseline: ConfigurationSummary;
  candidate: ConfigurationSummary;
  comparison: Comparison;
  /** Each task's greedy output under both configurations. */
  taskResults?: Array<{ prompt: string; answer: string; baseline: string; candidate: string }>;
}

export function summarize(run: ConfigurationRun, inputs: EvalInputs): ConfigurationSummary {
  const scored = run.nll.length;
  const meanNll = mean(run.nll);
  const se = standardError(run.nll);
  const ppl = scored > 0 ? perplexity(run.nll) : NaN;
  const correct = run.taskCorrect.filter(Boolean).length;
  const tasks = inputs.tasks.length;
  return {
    label: run.label,
    model: run.model,
    quantization: run.quantization,
    kvCacheDtype: run.kvCacheDtype,
    weightBytes: run.weightBytes,
    weightBytesByFormat: run.weightBytesByFormat,
    scoredTokens: scored,
    meanNll,
    meanNllStandardError: se,
    perplexity: ppl,
    perplexityStandardError: ppl * se,
    ...(tasks > 0 ? { accuracy: correct / tasks, correct, tasks } : {}),
    seconds: run.seconds,
  };
}

export function compareRuns(baseline: ConfigurationRun, candidate: ConfigurationRun, inputs: EvalInputs): EvalReport {
  if (!candidate.kld) throw new RangeError('the candidate run was made without the baseline as reference');
  const n = baseline.nll.length;
  const dNll = new Float64Array(n);
  const dP = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    dNll[i] = candidate.nll[i] - baseline.nll[i];
    dP[i] = Math.exp(-candidate.nll[i]) - Math.exp(-baseline.nll[i]);
  }
  const b = summarize(baseline, inputs);
  const c = summarize(candidate, inputs);
  let sq = 0;
  for (const d of dP) sq += d * d;
  const agree = topOneAgreement(baseline.top1, candidate.top1);
  return {
    inputs: { contextLen: inputs.contextLen, windows: inputs.windows.length, textTokens: inputs.textTokens, textTokensAvailable: inputs.textTokensAvailable, scoredTokens: n, tasks: inputs.tasks.length },
    baseline: b,
    candidate: c,
    comparison: {
      pplRatio: c.perplexity / b.perplexity,
      lnPplRatio: mean(dNll),
      lnPplRatioStandardError: standardError(dNll),
      kld: kldStats(candidate.kld),
      top1Agreement: agree,
      top1AgreementStandardError: binomialStandardError(agree, n),
      meanDeltaP: mean(dP),
      rmsDeltaP: Math.sqrt(sq / n),
      ...(b.accuracy !== undefined && c.accuracy !== undefined ? { accuracyDelta: c.accuracy - b.accuracy, recoveryPercent: recoveryPercent(c.accuracy, b.accuracy) } : {}),
    },
    ...(inputs.tasks.length > 0
      ? { taskResults: inputs.tasks.map((t, i) => ({ prompt: t.prompt, answer: t.answer, baseline: baseline.taskOutputs[i], candidate: candidate.taskOutputs[i] })) }
      : {}),
  };
}

export interface EvaluateOptions {
  baseline: LoadOptions;
  candidate: LoadOptions;
  text?: string;
  tasks?: TaskItem[];
  contextLen?: number;
  maxTokensEval?: number;
  onProgress?: Progress;
}

/** Baseline, then candidate, on the same tokens (one model in memory at a time). */
export async function evaluate(opts: EvaluateOptions): Promise<EvalReport> {
  if (opts.text === undefined && (opts.tasks ?? []).length === 0) throw new InvalidRequestError('nothing to evaluate: give a text, tasks, or both');
  const base = await LLM.load(opts.baseline);
  let inputs: EvalInputs;
  let baseRun: ConfigurationRun;
  try {
    inputs = prepareInputs(base, opts.text, opts.tasks, { contextLen: opts.contextLen, maxTokensEval: opts.maxTokensEval });
    baseRun = await runConfiguration(base, inputs, { label: `baseline (${opts.baseline.quantization ?? 'none'})`, keepLogits: true, onProgress: opts.onProgress });
  } finally {
    await base.close();
  }
  const cand = await LLM.load(opts.candidate);
  try {
    checkSameTokens(cand, opts.text, inputs);
    const candRun = await runConfiguration(cand, inputs, { label: `candidate (${opts.candidate.quantization ?? 'none'})`, reference: baseRun, onProgress: opts.onProgress });
    return compareRuns(baseRun, candRun, inputs);
  } finally {
    await cand.close();
  }
}

/** The candidate must see the very tokens the baseline saw: same tokenizer, same vocabulary. */
export function checkSameTokens(llm: LLM, text: string | undefined, inputs: EvalInputs): void {
  if (text === undefined) return;
  const ids = tokenizeText(llm.tokenizer, text).slice(0, inputs.textTokens);
  const again = cutIntoWindows(ids, inputs.contextLen, llm.tokenizer.bosTokenId);
  const same = again.length === inputs.windows.length && again.every((w, i) => w.length === inputs.windows[i].length && w.every((t, j) => t === inputs.windows[i][j]));
  if (!same) throw new InvalidRequestError(`${llm.loaded.dir}: its tokenizer splits the text differently from the baseline's; the two configurations must share a tokenizer`);
}
