// generation_config.json → stop ids and sampling defaults; the eos union of config.json,
// generation_config.json and the tokenizer.

import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { resolveSamplingParams } from '../src/engine/sampling-params.js';
import { ModelLoadError } from '../src/errors.js';
import { eosTokenIds, loadGenerationConfig, parseGenerationConfig } from '../src/model/generation-config.js';

function dirWith(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'tachyon-gencfg-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

describe('loadGenerationConfig', () => {
  it('maps the Llama 3.1 Instruct file (eos list, sampling defaults)', () => {
    const dir = dirWith({
      'generation_config.json': JSON.stringify({ bos_token_id: 128000, do_sample: true, eos_token_id: [128001, 128008, 128009], temperature: 0.6, top_p: 0.9, transformers_version: '4.43.0' }),
    });
    const g = loadGenerationConfig(dir);
    assert.deepEqual(g.eosTokenIds, [128001, 128008, 128009]);
    assert.equal(g.bosTokenId, 128000);
    assert.equal(g.padTokenId, undefined);
    assert.deepEqual(g.sampling, { temperature: 0.6, topP: 0.9 });
  });

  it('maps the Qwen2.5 Instruct file (pad, top_k, repetition penalty)', () => {
    const g = parseGenerationConfig({ bos_token_id: 151643, pad_token_id: 151643, do_sample: true, eos_token_id: [151645, 151643], repetition_penalty: 1.05, temperature: 0.7, top_p: 0.8, top_k: 20 });
    assert.deepEqual(g.eosTokenIds, [151645, 151643]);
    assert.equal(g.padTokenId, 151643);
    assert.deepEqual(g.sampling, { temperature: 0.7, topP: 0.8, topK: 20, repetitionPenalty: 1.05 });
    // The defaults are valid SamplingParams.
    const p = resolveSamplingParams({}, { ...resolveSamplingParams(), ...g.sampling });
    assert.equal(p.topK, 20);
  });

  it('reads a single eos id, min_p and max_new_tokens', () => {
    const g = parseGenerationConfig({ eos_token_id: 2, min_p: 0.05, max_new_tokens: 256 });
    assert.deepEqual(g.eosTokenIds, [2]);
    assert.deepEqual(g.sampling, { minP: 0.05, maxTokens: 256 });
  });

  it('decodes greedily when do_sample is false, whatever the temperature', () => {
    assert.equal(parseGenerationConfig({ do_sample: false, temperature: 0.9, top_p: 0.5 }).sampling.temperature, 0);
    assert.equal(parseGenerationConfig({ do_sample: false }).sampling.temperature, 0);
    // Absent do_sample does not force greedy decoding.
    assert.equal(parseGenerationConfig({ temperature: 0.8 }).sampling.temperature, 0.8);
  });

  it('treats a missing file as an empty config and null ids as absent', () => {
    assert.deepEqual(loadGenerationConfig(dirWith({})), { eosTokenIds: [], sampling: {} });
    const g = parseGenerationConfig({ eos_token_id: null, pad_token_id: null });
    assert.deepEqual(g.eosTokenIds, []);
    assert.equal(g.padTokenId, undefined);
  });

  it('names the file and the key when something is malformed', () => {
    const broken = dirWith({ 'generation_config.json': '{"eos_token_id": [1,' });
    assert.throws(() => loadGenerationConfig(broken), (e: unknown) => e instanceof ModelLoadError && e.message.includes(join(broken, 'generation_config.json')) && /not valid JSON/.test(e.message));
    const bad = (raw: unknown, key: string) =>
      assert.throws(() => parseGenerationConfig(raw, 'gc.json'), (e: unknown) => e instanceof ModelLoadError && e.message.startsWith('gc.json: ') && e.message.includes(key));
    bad([], 'expected a JSON object');
    bad({ eos_token_id: [1, 'x'] }, 'eos_token_id');
    bad({ eos_token_id: -1 }, 'eos_token_id');
    bad({ temperature: -0.5 }, 'temperature');
    bad({ top_p: 0 }, 'top_p');
    bad({ top_k: 2.5 }, 'top_k');
    bad({ repetition_penalty: 0 }, 'repetition_penalty');
    bad({ max_new_tokens: 0 }, 'max_new_tokens');
    bad({ do_sample: 'yes' }, 'do_sample');
  });
});

describe('eosTokenIds', () => {
  it('unions config.json, generation_config.json and tokenizer eos ids, sorted and deduplicated', () => {
    // Llama 3.1 Instruct: config.json [128001, 128008, 128009], tokenizer eos <|eot_id|>.
    assert.deepEqual(eosTokenIds([128009, 128001, 128008], [128001, 128008, 128009], 128009), [128001, 128008, 128009]);
    // Llama 3 base tokenizer eos alone would miss <|eot_id|>.
    assert.deepEqual(eosTokenIds(128001, [128001, 128009], 128001), [128001, 128009]);
    assert.deepEqual(eosTokenIds([151645, 151643], undefined, 151645), [151643, 151645]);
  });

  it('accepts missing sources and drops invalid entries', () => {
    assert.deepEqual(eosTokenIds(undefined, null, undefined), []);
    assert.deepEqual(eosTokenIds([], [], 2), [2]);
    assert.deepEqual(eosTokenIds([3, -1, 1.5], [2]), [2, 3]);
  });
});
