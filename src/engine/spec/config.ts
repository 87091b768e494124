// `--speculative-config JSON`: vLLM's keys (method, model, num_speculative_tokens,
// prompt_lookup_min/max, disable_by_batch_size) plus tachyon's lossy benchmarking mode, validated with
// errors that name the key.

import { resolve } from 'node:path';
import { InvalidRequestError } from '../../errors.js';
import { DEFAULT_DRAFT_MODEL_NAME, DEFAULT_EAGLE3_MODEL_NAME, embeddedModelDir } from '../../model/default-model.js';

export const SPEC_METHODS = ['draft_model', 'eagle3', 'ngram', 'synthetic'] as const;
export type SpecMethod = (typeof SPEC_METHODS)[number];

/** Every key the JSON may hold; which method each applies to is checked too. */
export const SPEC_CONFIG_KEYS = ['method', 'model', 'num_speculative_tokens', 'prompt_lookup_min', 'prompt_lookup_max', 'disable_by_batch_size', 'acceptance_rates', 'lossy', 'seed'] as const;

/** vLLM's defaults when neither prompt_lookup_min nor prompt_lookup_max is given. */
export const DEFAULT_PROMPT_LOOKUP = 5;

/** The warning the synthetic mode prints (and returns) every time it is enabled. */
export const SYNTHETIC_WARNING =
  'speculative method "synthetic" is LOSSY: drafted tokens are accepted at the configured rates whatever the target model says, ' +
  'so the generated text is NOT the target model\'s output. Use it only to benchmark speed at a chosen acceptance rate.';

export interface SpeculativeConfig {
  method: SpecMethod;
  /** Draft model or EAGLE-3 head directory (absolute); undefined for ngram and synthetic. */
  model?: string;
  /** k: tokens drafted per sequence per step. */
  numSpeculativeTokens: number;
  /** ngram only: the n-gram sizes tried, longest first. */
  promptLookupMin?: number;
  promptLookupMax?: number;
  /** synthetic only: unconditional acceptance probability of draft position 1..k (vLLM's per-position rate). */
  acceptanceRates?: number[];
  /** synthetic only: seed of the acceptance draws. */
  seed?: number;
  /**
   * vLLM's disable_by_batch_size: a step with more sequences decoding than this drafts nothing (at a
   * large batch a verification pass costs more than the tokens it accepts; bench/cuda-spec.ts shows
   * where). Undefined: always speculate.
   */
  disableByBatchSize?: number;
  /** True only for synthetic: the output is not the target model's. */
  lossy: boolean;
  /** Set when the configuration changes what is generated; print it. */
  warning?: string;
}

const KEYS_OF: Record<string, readonly SpecMethod[]> = {
  prompt_lookup_min: ['ngram'],
  prompt_lookup_max: ['ngram'],
  acceptance_rates: ['synthetic'],
  lossy: ['synthetic'],
  seed: ['synthetic'],
};

/**
 * Parse the JSON text (or an already parsed object) of `--speculative-config`. As in vLLM, an
 * absent `method` is inferred from `model` ("ngram" → ngram, a path containing "eagle3" → eagle3,
 * else draft_model), and `num_speculative_tokens` is required (synthetic: defaults to the number of
 * acceptance rates). An absent `model` is the embedded default draft model / EAGLE-3 head.
 */
export function parseSpeculativeConfig(input: string | Record<string, unknown>): SpeculativeConfig {
  let raw: unknown = input;
  if (typeof input === 'string') {
    try {
      raw = JSON.parse(input);
    } catch (err) {
      throw new InvalidRequestError(`--speculative-config: not valid JSON (${(err as Error).message}); example: '{"method": "eagle3", "num_speculative_tokens": 3}'`);
    }
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new InvalidRequestError('--speculative-config: must be a JSON object');
  const obj = raw as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (!(SPEC_CONFIG_KEYS as readonly string[]).includes(key)) {
      throw new InvalidRequestError(`--speculative-config: key '${key}' is not supported; supported keys: ${SPEC_CONFIG_KEYS.join(', ')}`);
    }
  }
  const bad = (key: string, why: string): never => {
    throw new InvalidRequestError(`--speculative-config: ${key} ${why}`);
  };

  const model = obj.model;
  if (model !== undefined && (typeof model !== 'string' || model.length === 0)) bad('model', `must be a directory path, got ${JSON.stringify(model)}`);
  let method = obj.method;
  if (method === undefined) {
    if (model === 'ngram' || model === '[ngram]') method = 'ngram';
    else if (typeof model === 'string' && model.toLowerCase().includes('eagle3')) method = 'eagle3';
    else method = 'draft_model';
  }
  if (method === '[ngram]') method = 'ngram';
  if (typeof method !== 'string' || !(SPEC_METHODS as readonly string[]).includes(method)) {
    throw new InvalidRequestError(`--speculative-config: method ${JSON.stringify(method)} is not supported; supported methods: ${SPEC_METHODS.join(', ')}`);
  }
  const m = method as SpecMethod;
  for (const [key, methods] of Object.entries(KEYS_OF)) {
    if (obj[key] !== undefined && !methods.includes(m)) bad(key, `applies to method ${methods.map((x) => `'${x}'`).join(', ')} only, not '${m}'`);
  }

  const positiveInt = (key: string): number | undefined => {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) bad(key, `must be a positive integer, got ${JSON.stringify(v)}`);
    return v as number;
  };
  let k = positiveInt('num_speculative_tokens');
  const config: SpeculativeConfig = { method: m, numSpeculativeTokens: 0, lossy: false };

  switch (m) {
    case 'draft_model':
    case 'eagle3': {
      config.model = typeof model === 'string' ? resolve(model) : embeddedModelDir(m === 'eagle3' ? DEFAULT_EAGLE3_MODEL_NAME : DEFAULT_DRAFT_MODEL_NAME);
      break;
    }
    case 'ngram': {
      if (model !== undefined && model !== 'ngram' && model !== '[ngram]') bad('model', `is not used by method 'ngram' (got ${JSON.stringify(model)}); leave it out`);
      let lo = positiveInt('prompt_lookup_min');
      let hi = positiveInt('prompt_lookup_max');
      if (lo === undefined && hi === undefined) lo = hi = DEFAULT_PROMPT_LOOKUP;
      lo ??= hi;
      hi ??= lo;
      if (lo! > hi!) bad('prompt_lookup_min', `(${lo}) must be <= prompt_lookup_max (${hi})`);
      config.promptLookupMin = lo;
      config.promptLookupMax = hi;
      break;
    }
    case 'synthetic': {
      if (obj.lossy !== true) {
        bad('lossy', 'must be true to use method \'synthetic\': it accepts drafted tokens at fixed rates, so the output is NOT the target model\'s (a benchmarking tool only)');
      }
      if (model !== undefined) bad('model', "is not used by method 'synthetic'; leave it out");
      const rates = obj.acceptance_rates;
      if (!Array.isArray(rates) || rates.length === 0) bad('acceptance_rates', "is required for method 'synthetic': a list of per-position acceptance probabilities, e.g. [0.9, 0.7, 0.5]");
      const list = rates as unknown[];
      list.forEach((r, i) => {
        if (typeof r !== 'number' || !(r >= 0 && r <= 1)) bad('acceptance_rates', `[${i}] must be a probability in [0, 1], got ${JSON.stringify(r)}`);
        if (i > 0 && (r as number) > (list[i - 1] as number)) {
          bad('acceptance_rates', `must not increase with position (position ${i + 1} is accepted only if position ${i} was): ${JSON.stringify(list)}`);
        }
      });
      if (k !== undefined && k !== list.length) bad('num_speculative_tokens', `(${k}) must equal the number of acceptance_rates (${list.length})`);
      k = list.length;
      config.acceptanceRates = list as number[];
      const seed = obj.seed;
      if (seed !== undefined && !(typeof seed === 'number' && Number.isSafeInteger(seed))) bad('seed', `must be an integer, got ${JSON.stringify(seed)}`);
      config.seed = (seed as number | undefined) ?? 0;
      config.lossy = true;
      config.warning = SYNTHETIC_WARNING;
      break;
    }
  }
  if (k === undefined) bad('num_speculative_tokens', `is required (as in vLLM there is no default), e.g. {"method": "${m}", "num_speculative_tokens": 3}`);
  config.numSpeculativeTokens = k!;
  const disable = positiveInt('disable_by_batch_size');
  // As vLLM: a threshold of 1 would never speculate.
  if (disable !== undefined && disable < 2) bad('disable_by_batch_size', `must be at least 2 (speculation stays on up to that many sequences decoding), got ${disable}`);
  if (disable !== undefined) config.disableByBatchSize = disable;
  return config;
}
