// What `tachyon eval` measures on: a text file for perplexity/KLD and a JSONL file of {prompt, answer}
// tasks, given by the user or found in the model directory's held-out files.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidRequestError } from '../errors.js';

export interface TaskItem {
  prompt: string;
  answer: string;
}

/** Held-out text a model directory may ship, first match wins (relative to the directory). */
export const HELDOUT_TEXT_FILES = ['heldout.txt', 'eval/heldout.txt'];
/** Held-out {prompt, answer} tasks a model directory may ship. */
export const HELDOUT_TASK_FILES = ['heldout-tasks.jsonl', 'eval/tasks.jsonl'];

export function findHeldoutText(modelDir: string): string | undefined {
  return HELDOUT_TEXT_FILES.map((f) => join(modelDir, f)).find((p) => existsSync(p));
}

export function findHeldoutTasks(modelDir: string): string | undefined {
  return HELDOUT_TASK_FILES.map((f) => join(modelDir, f)).find((p) => existsSync(p));
}

export function readTextFile(path: string): string {
  if (!existsSync(path)) throw new InvalidRequestError(`--text ${path}: file does not exist`);
  const text = readFileSync(path, 'utf8');
  if (text.trim().length === 0) throw new InvalidRequestError(`--text ${path}: file is empty`);
  return text;
}

/** One {prompt, answer} object per non-blank line; extra keys are ignored. */
export function parseTasksJsonl(text: string, source = 'tasks'): TaskItem[] {
  const items: TaskItem[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (err) {
      throw new InvalidRequestError(`${source} line ${i + 1}: not valid JSON (${(err as Error).message})`);
    }
    const o = obj as Record<string, unknown>;
    if (typeof o !== 'object' || o === null || typeof o.prompt !== 'string' || typeof o.answer !== 'string') {
      throw new InvalidRequestError(`${source} line ${i + 1}: expected an object with string fields "prompt" and "answer"`);
    }
    if (o.prompt.length === 0) throw new InvalidRequestError(`${source} line ${i + 1}: "prompt" is empty`);
    items.push({ prompt: o.prompt, answer: o.answer });
  });
  if (items.length === 0) throw new InvalidRequestError(`${source}: no tasks (expected one {"prompt": ..., "answer": ...} object per line)`);
  return items;
}

export function readTaskFile(path: string): TaskItem[] {
  if (!existsSync(path)) throw new InvalidRequestError(`--tasks ${path}: file does not exist`);
  return parseTasksJsonl(readFileSync(path, 'utf8'), path);
}
