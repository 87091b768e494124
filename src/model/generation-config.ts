// generation_config.json: the model's stop ids and its author's default sampling settings, mapped onto
// our SamplingParams; and the union of every eos id a model directory declares.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SamplingParams } from '../engine/sampling-params.js';
import { ModelLoadError } from '../errors.js';

export interface GenerationConfig {
  /** eos_token_id (an int or a list); empty when absent. */
  eosTokenIds: number[];
  bosTokenId?: number;
  padTokenId?: number;
  /** Defaults for requests that do not set these knobs (vLLM's --generation-config auto). */
  sampling: Partial<SamplingParams>;
}

/** Read `dir`/generation_config.json; the file is optional (empty config when absent). */
export function loadGenerationConfig(dir: string): GenerationConfig {
  const path = join(dir, 'generation_config.json');
  if (!existsSync(path)) return { eosTokenIds: [], sampling: {} };
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ModelLoadError(`${path}: not valid JSON (${(err as Error).message})`);
  }
  return parseGenerationConfig(raw, path);
}

/** Map a parsed generation_config.json; `source` names the file in errors. */
export function parseGenerationConfig(raw: unknown, source = 'generation_config.json'): GenerationConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ModelLoadError(`${source}: expected a JSON object`);
  const cfg = raw as Record<string, unknown>;
  const bad = (key: string, want: string): never => {
    throw new ModelLoadError(`${source}: ${key} must be ${want}, got ${JSON.stringify(cfg[key])}`);
  };
  const present = (key: string) => cfg[key] !== undefined && cfg[key] !== null;
  const tokenId = (key: string): number | undefined => {
    if (!present(key)) return undefined;
    const v = cfg[key];
    // Some configs repeat a list here too (pad_token_id: [x]); the first entry is the one used.
    const id = Array.isArray(v) ? v[0] : v;
    return isTokenId(id) ? id : bad(key, 'a non-negative integer');
  };
  const number = (key: string, ok: (x: number) => boolean, want: string): number | undefined => {
    if (!present(key)) return undefined;
    const v = cfg[key];
    return typeof v === 'number' && Number.isFinite(v) && ok(v) ? v : bad(key, want);
  };

  let eosTokenIds: number[] = [];
  if (present('eos_token_id')) {
    const v = cfg.eos_token_id;
    const list = Array.isArray(v) ? v : [v];
    if (!list.every(isTokenId)) bad('eos_token_id', 'a non-negative integer or a list of them');
    eosTokenIds = list as number[];
  }

  const sampling: Partial<SamplingParams> = {};
  const temperature = number('temperature', (x) => x >= 0, 'a number >= 0');
  const topP = number('top_p', (x) => x > 0 && x <= 1, 'a number in (0, 1]');
  const topK = number('top_k', (x) => Number.isInteger(x) && x >= -1, 'an integer >= -1');
  const minP = number('min_p', (x) => x >= 0 && x <= 1, 'a number in [0, 1]');
  const repetitionPenalty = number('repetition_penalty', (x) => x > 0, 'a number > 0');
  const maxNewTokens = number('max_new_tokens', (x) => Number.isInteger(x) && x >= 1, 'an integer >= 1');
  if (present('do_sample') && typeof cfg.do_sample !== 'boolean') bad('do_sample', 'true or false');
  if (temperature !== undefined) sampling.temperature = temperature;
  if (topP !== undefined) sampling.topP = topP;
  if (topK !== undefined) sampling.topK = topK;
  if (minP !== undefined) sampling.minP = minP;
  if (repetitionPenalty !== undefined) sampling.repetitionPenalty = repetitionPenalty;
  if (maxNewTokens !== undefined) sampling.maxTokens = maxNewTokens;
  // transformers decodes greedily when do_sample is false, whatever the temperature says. An absent
  // do_sample is not taken as false: vLLM applies the temperature then, and so do we.
  if (cfg.do_sample === false) sampling.temperature = 0;

  return { eosTokenIds, bosTokenId: tokenId('bos_token_id'), padTokenId: tokenId('pad_token_id'), sampling };
}

type EosSource = number | readonly number[] | null | undefined;

/**
 * Every id that ends generation: config.json's eos_token_id, generation_config.json's and the
 * tokenizer's eos token, merged and sorted. The tokenizer's alone is not enough (Llama 3 Instruct
 * ends turns with <|eot_id|> while its base eos is <|end_of_text|>).
 */
export function eosTokenIds(configEos: EosSource, generationEos: EosSource, tokenizerEos?: EosSource): number[] {
  const ids = new Set<number>();
  for (const source of [configEos, generationEos, tokenizerEos]) {
    if (source === null || source === undefined) continue;
    for (const id of typeof source === 'number' ? [source] : source) if (isTokenId(id)) ids.add(id);
  }
  return [...ids].sort((a, b) => a - b);
}

function isTokenId(x: unknown): x is number {
  return typeof x === 'number' && Number.isInteger(x) && x >= 0;
}
