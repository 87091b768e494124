// Calibration text for GPTQ: a plain-text or JSONL ("text" per line) file, sampled deterministically
// into token windows; by default the held-out text a model directory ships (models/*/heldout.txt).

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Rng } from '../../engine/rng.js';
import { InvalidRequestError } from '../../errors.js';
import type { Tokenizer } from '../../model/tokenizer.js';

/** Held-out text a model directory may ship for calibration, in the order they are looked for. */
export const CALIBRATION_FILE_NAMES = ['calibration.jsonl', 'calibration.txt', 'heldout.jsonl', 'heldout.txt'] as const;

export const DEFAULT_CALIBRATION_SAMPLES = 64;
export const DEFAULT_CALIBRATION_SEQ_LEN = 256;
const CALIBRATION_SEED = 42;
/** Shorter windows (a document's tail) teach the Hessian little and are dropped. */
const MIN_WINDOW_TOKENS = 8;

/** One calibration document and whether the tokenizer should add BOS (false when the text carries it). */
export interface CalibrationDocument {
  text: string;
  addSpecialTokens: boolean;
}

/** The calibration file a model directory ships, if any. */
export function shippedCalibrationFile(modelDir: string): string | undefined {
  return CALIBRATION_FILE_NAMES.map((f) => join(modelDir, f)).find((p) => existsSync(p));
}

/**
 * The documents of a calibration file:
 * - JSONL (`.jsonl`, or content starting with `{`): each line's "text";
 * - plain text that contains the tokenizer's BOS token literally (text in the model's own format, as
 *   tachyon-tiny's heldout.txt): one document per BOS, tokenized without adding special tokens;
 * - other plain text: paragraphs separated by blank lines.
 */
export function readCalibrationDocuments(file: string, bosToken?: string): CalibrationDocument[] {
  if (!existsSync(file)) throw new InvalidRequestError(`--calibration ${file}: file does not exist`);
  const content = readFileSync(file, 'utf8');
  const startsWithBos = (s: string) => bosToken !== undefined && s.startsWith(bosToken);
  if (/\.jsonl?$/i.test(file) || content.trimStart().startsWith('{')) {
    const docs: CalibrationDocument[] = [];
    content.split('\n').forEach((line, i) => {
      if (line.trim() === '') return;
      let row: unknown;
      try {
        row = JSON.parse(line);
      } catch (err) {
        throw new InvalidRequestError(`${file}:${i + 1}: not valid JSON (${(err as Error).message}); calibration JSONL needs one {"text": ...} object per line`);
      }
      const text = (row as { text?: unknown } | null)?.text;
      if (typeof text !== 'string') throw new InvalidRequestError(`${file}:${i + 1}: has no "text" string; calibration JSONL needs one {"text": ...} object per line`);
      if (text.trim() !== '') docs.push({ text, addSpecialTokens: !startsWithBos(text) });
    });
    return docs;
  }
  if (bosToken && content.includes(bosToken)) {
    const [before, ...rest] = content.split(bosToken);
    const docs = rest.map((part) => ({ text: bosToken + part.replace(/\n$/, ''), addSpecialTokens: false }));
    return before.trim() === '' ? docs : [{ text: before.trim(), addSpecialTokens: true }, ...docs];
  }
  return content
    .split(/\n\s*\n/)
    .map((p) => p.trim())
    .filter((p) => p.length > 0)
    .map((text) => ({ text, addSpecialTokens: true }));
}

/**
 * `numSamples` token windows of at most `seqLen` tokens: documents in a seeded shuffle, each
 * tokenized and cut into consecutive windows, until enough are taken.
 */
export function calibrationSequences(docs: CalibrationDocument[], tokenizer: Tokenizer, numSamples: number, seqLen: number): number[][] {
  const rng = new Rng(CALIBRATION_SEED);
  const order = docs.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const windows: number[][] = [];
  for (const k of order) {
    const ids = tokenizer.encode(docs[k].text, { addSpecialTokens: docs[k].addSpecialTokens });
    for (let start = 0; start < ids.length && windows.length < numSamples; start += seqLen) {
      const w = ids.slice(start, start + seqLen);
      if (w.length >= Math.min(MIN_WINDOW_TOKENS, seqLen)) windows.push(w);
    }
    if (windows.length >= numSamples) break;
  }
  if (windows.length === 0) throw new InvalidRequestError(`the calibration text gave no windows of at least ${MIN_WINDOW_TOKENS} tokens`);
  return windows;
}
