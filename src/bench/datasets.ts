// The prompts a benchmark sends, built the way `vllm bench serve` builds them (bench-spec §1.8):
// random (exact token lengths: random ids decoded to text and re-encoded until the length matches),
// sharegpt (a JSON file of conversations), prefix_repetition (shared prefixes, for prefix caching)
// and custom (JSONL with "prompt" and optional "output_tokens"). Seeded with our own generator, so
// the token counts and output lengths match vLLM's rules, not its exact numpy draws.

import { readFileSync } from 'node:fs';
import { Rng } from '../engine/rng.js';
import { InvalidRequestError } from '../errors.js';

export const DATASETS = ['random', 'sharegpt', 'prefix_repetition', 'custom'] as const;
export type DatasetName = (typeof DATASETS)[number];

/** One request to send: its prompt text, its prompt length in tokens and its max output tokens. */
export interface SampleRequest {
  prompt: string;
  promptLen: number;
  expectedOutputLen: number;
}

/** What the datasets need of a tokenizer (src/model/tokenizer.ts's Tokenizer has it). */
export interface DatasetTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: readonly number[]): string;
  readonly vocabSize: number;
  readonly specialTokenIds: Set<number>;
}

/** Tokens the tokenizer adds to one sequence (1 for a BOS-adding Llama tokenizer, 0 for Qwen). */
export function specialTokensAdded(tok: DatasetTokenizer): number {
  return tok.encode('', { addSpecialTokens: true }).length - tok.encode('', { addSpecialTokens: false }).length;
}

/**
 * Ids that random prompts may use: the vocabulary minus special tokens (as vLLM) and minus pieces
 * that decode to an incomplete UTF-8 sequence on their own (lone byte tokens): those decode to
 * U+FFFD, which re-encodes to other tokens and keeps decode/re-encode from converging on the target
 * length. Large vocabularies lose a few hundred of their 100k+ ids.
 */
export function allowedTokenIds(tok: DatasetTokenizer): number[] {
  const nonSpecial: number[] = [];
  for (let id = 0; id < tok.vocabSize; id++) if (!tok.specialTokenIds.has(id)) nonSpecial.push(id);
  const clean = nonSpecial.filter((id) => {
    const text = tok.decode([id]);
    return text.length > 0 && !text.includes('\uFFFD');
  });
  if (clean.length >= nonSpecial.length / 2) return clean;
  return nonSpecial.length > 0 ? nonSpecial : Array.from({ length: tok.vocabSize }, (_, i) => i);
}

/** An integer drawn uniformly from [lo, hi] inclusive. */
export function uniformInt(rng: Rng, lo: number, hi: number): number {
  return lo + Math.floor(rng.next() * (hi - lo + 1));
}

export function shuffleInPlace<T>(items: T[], rng: Rng): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

/**
 * Decode `ids` to text and re-encode (without special tokens) until the re-encoded length is
 * `target`: truncate when long, append random allowed ids when short, at most `maxRetry` times.
 * Returns the text, its token ids and the residual mismatch (final length − target).
 */
export function decodeToTargetLength(tok: DatasetTokenizer, ids: number[], target: number, rng: Rng, allowed: readonly number[], maxRetry = 10): { text: string; ids: number[]; mismatch: number } {
  let seq = ids;
  let text = '';
  for (let attempt = 0; ; attempt++) {
    text = tok.decode(seq);
    seq = tok.encode(text, { addSpecialTokens: false });
    if (seq.length === target || attempt >= maxRetry) break;
    if (seq.length > target) seq = seq.slice(0, target);
    else for (let k = seq.length; k < target; k++) seq.push(allowed[Math.floor(rng.next() * allowed.length)]!);
  }
  return { text, ids: seq, mismatch: seq.length - target };
}

export interface RandomDatasetOptions {
  numPrompts: number;
  inputLen: number;
  outputLen: number;
  /** Lengths are uniform in [L(1−r), L(1+r)]; must be in [0, 1). */
  rangeRatio: number;
  /** Random tokens shared by every prompt, on top of inputLen. */
  prefixLen: number;
  seed: number;
}

/**
 * vLLM's random dataset: the tokenizer's special tokens are subtracted from the input length (so
 * the server, adding BOS, sees exactly inputLen), request i takes consecutive allowed ids from a
 * random offset, then decode/re-encode fixes the length.
 */
export function randomDataset(tok: DatasetTokenizer, o: RandomDatasetOptions): SampleRequest[] {
  if (!(o.rangeRatio >= 0 && o.rangeRatio < 1)) throw new InvalidRequestError(`--random-range-ratio must be in [0, 1), got ${o.rangeRatio}`);
  if (o.inputLen < 0 || o.outputLen < 1 || o.prefixLen < 0) throw new InvalidRequestError('random dataset lengths must be non-negative (output at least 1)');
  const rng = new Rng(o.seed);
  const realInput = Math.max(0, o.inputLen - specialTokensAdded(tok));
  const inLo = Math.floor(realInput * (1 - o.rangeRatio));
  const inHi = Math.ceil(realInput * (1 + o.rangeRatio));
  const outLo = Math.max(1, Math.floor(o.outputLen * (1 - o.rangeRatio)));
  const outHi = Math.max(1, Math.ceil(o.outputLen * (1 + o.rangeRatio)));
  const inputLens = Array.from({ length: o.numPrompts }, () => uniformInt(rng, inLo, inHi));
  const outputLens = Array.from({ length: o.numPrompts }, () => uniformInt(rng, outLo, outHi));
  const offsets = Array.from({ length: o.numPrompts }, () => uniformInt(rng, 0, tok.vocabSize - 1));
  const allowed = allowedTokenIds(tok);
  const prefix = Array.from({ length: o.prefixLen }, () => allowed[Math.floor(rng.next() * allowed.length)]!);

  return inputLens.map((len, i) => {
    const ids = [...prefix];
    for (let j = 0; j < len; j++) ids.push(allowed[(offsets[i]! + i + j) % allowed.length]!);
    const fixed = decodeToTargetLength(tok, ids, o.prefixLen + len, rng, allowed);
    return { prompt: fixed.text, promptLen: fixed.ids.length, expectedOutputLen: outputLens[i]! };
  });
}

export interface PrefixRepetitionOptions {
  numPrompts: number;
  prefixLen: number;
  suffixLen: number;
  numPrefixes: number;
  outputLen: number;
  seed: number;
}

/** numPrefixes random prefixes, each followed by numPrompts / numPrefixes random suffixes; shuffled. */
export function prefixRepetitionDataset(tok: DatasetTokenizer, o: PrefixRepetitionOptions): SampleRequest[] {
  if (o.numPrefixes < 1) throw new InvalidRequestError(`--prefix-repetition-num-prefixes must be at least 1, got ${o.numPrefixes}`);
  const rng = new Rng(o.seed);
  const allowed = allowedTokenIds(tok);
  const exact = (len: number) => {
    const ids = Array.from({ length: len }, () => allowed[Math.floor(rng.next() * allowed.length)]!);
    return decodeToTargetLength(tok, ids, len, rng, allowed).ids;
  };
  const perPrefix = Math.floor(o.numPrompts / o.numPrefixes);
  const out: SampleRequest[] = [];
  for (let p = 0; p < o.numPrefixes; p++) {
    const prefix = exact(o.prefixLen);
    for (let s = 0; s < perPrefix; s++) {
      const ids = [...prefix, ...exact(o.suffixLen)];
      out.push({ prompt: tok.decode(ids), promptLen: ids.length, expectedOutputLen: o.outputLen });
    }
  }
  shuffleInPlace(out, rng);
  return oversample(out, o.numPrompts, rng, true);
}

export interface ShareGptOptions {
  numPrompts: number;
  /** Fixed output length (--sharegpt-output-len); else the reference completion's length. */
  outputLen?: number;
  seed: number;
  shuffle: boolean;
  oversample: boolean;
}

/** Does a (prompt, output) pair pass vLLM's ShareGPT filter. */
export function isValidSequence(promptLen: number, outputLen: number, skipMinOutputCheck: boolean): boolean {
  return !(promptLen < 4 || (!skipMinOutputCheck && outputLen < 4) || promptLen > 1024 || promptLen + outputLen > 2048);
}

/** ShareGPT layout: [{conversations: [{from, value}, ...]}, ...]; turn 0 is the prompt, turn 1 the reference. */
export function shareGptDataset(path: string, tok: DatasetTokenizer, o: ShareGptOptions): SampleRequest[] {
  const raw = readJson(path);
  if (!Array.isArray(raw)) throw new InvalidRequestError(`${path}: a ShareGPT file is a JSON array of {conversations: [{from, value}, ...]}`);
  const entries = raw.filter((d): d is { conversations: { value: unknown }[] } => isRecord(d) && Array.isArray(d.conversations) && d.conversations.length >= 2);
  const rng = new Rng(o.seed);
  if (o.shuffle) shuffleInPlace(entries, rng);
  const out: SampleRequest[] = [];
  for (const e of entries) {
    if (out.length >= o.numPrompts) break;
    const prompt = String(e.conversations[0]!.value ?? '');
    const completion = String(e.conversations[1]!.value ?? '');
    const promptLen = tok.encode(prompt).length;
    const outputLen = o.outputLen ?? tok.encode(completion).length;
    if (!isValidSequence(promptLen, outputLen, o.outputLen !== undefined)) continue;
    out.push({ prompt, promptLen, expectedOutputLen: outputLen });
  }
  if (out.length === 0) throw new InvalidRequestError(`${path}: no conversation passed the ShareGPT filter (prompt 4..1024 tokens, prompt + output <= 2048)`);
  return oversample(out, o.numPrompts, rng, o.oversample);
}

export interface CustomDatasetOptions {
  numPrompts: number;
  /** Output tokens for lines without "output_tokens" (--custom-output-len, default 256). */
  outputLen: number;
  seed: number;
  shuffle: boolean;
  oversample: boolean;
  /** Turn a prompt into the text sent (the model's chat template), unless --skip-chat-template. */
  applyChatTemplate?: (prompt: string) => string;
}

/** JSONL, one {"prompt": "...", "output_tokens"?: N} per line. Without a tokenizer prompt lengths are 0 until the server's usage fills them in. */
export function customDataset(path: string, tok: DatasetTokenizer | undefined, o: CustomDatasetOptions): SampleRequest[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new InvalidRequestError(`--dataset-path ${path}: cannot read (${(err as Error).message})`);
  }
  const rows: SampleRequest[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (err) {
      throw new InvalidRequestError(`${path}:${i + 1}: not valid JSON (${(err as Error).message})`);
    }
    if (!isRecord(obj) || typeof obj.prompt !== 'string') throw new InvalidRequestError(`${path}:${i + 1}: each line needs a "prompt" string`);
    const outTokens = obj.output_tokens;
    if (outTokens !== undefined && !(Number.isInteger(outTokens) && (outTokens as number) > 0)) {
      throw new InvalidRequestError(`${path}:${i + 1}: "output_tokens" must be a positive integer, got ${JSON.stringify(outTokens)}`);
    }
    const prompt = o.applyChatTemplate ? o.applyChatTemplate(obj.prompt) : obj.prompt;
    // A templated prompt already carries its BOS, so it is counted as sent.
    const promptLen = tok ? tok.encode(prompt, { addSpecialTokens: !o.applyChatTemplate }).length : 0;
    rows.push({ prompt, promptLen, expectedOutputLen: (outTokens as number | undefined) ?? o.outputLen });
  });
  if (rows.length === 0) throw new InvalidRequestError(`${path}: no prompts`);
  const rng = new Rng(o.seed);
  if (o.shuffle) shuffleInPlace(rows, rng);
  return oversample(rows.slice(0, o.numPrompts), o.numPrompts, rng, o.oversample);
}

/** Fill up to n by re-drawing existing samples (vLLM's oversampling), unless disabled. */
function oversample(samples: SampleRequest[], n: number, rng: Rng, enabled: boolean): SampleRequest[] {
  const out = samples.slice(0, n);
  if (!enabled || out.length === 0) return out;
  const base = out.length;
  while (out.length < n) out.push(out[Math.floor(rng.next() * base)]!);
  return out;
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new InvalidRequestError(`--dataset-path ${path}: cannot read a JSON file (${(err as Error).message})`);
  }
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}
