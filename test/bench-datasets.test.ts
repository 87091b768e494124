// Benchmark datasets on the fixture tokenizers: random prompts re-encode to exactly the asked
// length (as the server counts them, BOS included), range ratios and prefixes, ShareGPT's filter,
// prefix repetition and custom JSONL.

import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { customDataset, isValidSequence, prefixRepetitionDataset, randomDataset, shareGptDataset, specialTokensAdded } from '../src/bench/datasets.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { fixturesDir } from './support/paths.js';

const tok = (name: string) => Tokenizer.load(join(fixturesDir(), 'tokenizers', name));
const llama = tok('byte-level-llama3'); // adds BOS
const qwen = tok('byte-level-qwen'); // adds nothing
const work = mkdtempSync(join(tmpdir(), 'tachyon-datasets-'));

describe('random dataset', () => {
  it('knows how many special tokens each tokenizer adds', () => {
    assert.equal(specialTokensAdded(llama), 1);
    assert.equal(specialTokensAdded(qwen), 0);
  });

  for (const [name, t] of [
    ['llama3 (BOS)', llama],
    ['qwen (no BOS)', qwen],
    ['sentencepiece', tok('sentencepiece-bpe')],
  ] as const) {
    it(`prompts re-encode to exactly the input length the server sees (${name})`, () => {
      for (const inputLen of [2, 17, 128]) {
        const ds = randomDataset(t, { numPrompts: 20, inputLen, outputLen: 9, rangeRatio: 0, prefixLen: 0, seed: inputLen });
        assert.equal(ds.length, 20);
        for (const r of ds) {
          assert.equal(t.encode(r.prompt).length, inputLen, `prompt ${JSON.stringify(r.prompt)}`);
          assert.equal(r.promptLen, inputLen - specialTokensAdded(t), 'client count excludes special tokens, as vLLM');
          assert.equal(r.expectedOutputLen, 9);
        }
        assert.ok(new Set(ds.map((r) => r.prompt)).size > 15, 'prompts differ');
      }
    });
  }

  it('range ratio spreads input and output lengths over [L(1-r), L(1+r)]; seeds repeat', () => {
    const ds = randomDataset(qwen, { numPrompts: 200, inputLen: 40, outputLen: 20, rangeRatio: 0.5, prefixLen: 0, seed: 7 });
    const ins = ds.map((r) => qwen.encode(r.prompt).length);
    const outs = ds.map((r) => r.expectedOutputLen);
    assert.ok(Math.min(...ins) >= 20 && Math.max(...ins) <= 60, `inputs ${Math.min(...ins)}..${Math.max(...ins)}`);
    assert.ok(Math.min(...outs) >= 10 && Math.max(...outs) <= 30);
    assert.ok(new Set(outs).size > 10, 'spread, not constant');
    assert.deepEqual(randomDataset(qwen, { numPrompts: 200, inputLen: 40, outputLen: 20, rangeRatio: 0.5, prefixLen: 0, seed: 7 }), ds);
    assert.throws(() => randomDataset(qwen, { numPrompts: 1, inputLen: 4, outputLen: 4, rangeRatio: 1, prefixLen: 0, seed: 0 }), /\[0, 1\)/);
  });

  it('a random prefix is shared by every prompt and adds to the length', () => {
    const ds = randomDataset(llama, { numPrompts: 5, inputLen: 10, outputLen: 4, rangeRatio: 0, prefixLen: 12, seed: 1 });
    for (const r of ds) assert.equal(llama.encode(r.prompt).length, 22);
    const heads = ds.map((r) => llama.encode(r.prompt, { addSpecialTokens: false }).slice(0, 10).join(','));
    assert.equal(new Set(heads).size, 1, 'same leading tokens');
  });
});

describe('prefix_repetition dataset', () => {
  it('builds num_prefixes groups sharing a prefix, shuffled, with fixed output length', () => {
    const ds = prefixRepetitionDataset(qwen, { numPrompts: 12, prefixLen: 16, suffixLen: 8, numPrefixes: 3, outputLen: 5, seed: 2 });
    assert.equal(ds.length, 12);
    const prefixes = new Map<string, number>();
    for (const r of ds) {
      assert.equal(r.promptLen, 24);
      assert.equal(r.expectedOutputLen, 5);
      const p = r.prompt.slice(0, 6);
      prefixes.set(p, (prefixes.get(p) ?? 0) + 1);
    }
    assert.deepEqual([...prefixes.values()].sort(), [4, 4, 4]);
  });
});

describe('sharegpt dataset', () => {
  const convo = (q: string, a: string) => ({ id: q, conversations: [{ from: 'human', value: q }, { from: 'gpt', value: a }] });
  const file = join(work, 'sharegpt.json');
  const long = 'word '.repeat(2000);
  writeFileSync(
    file,
    JSON.stringify([
      convo('What is the capital of France and why?', 'Paris is the capital of France, for historical reasons.'),
      { id: 'single turn', conversations: [{ from: 'human', value: 'only one turn here' }] },
      convo('Hi', 'Too short a prompt to keep.'),
      convo(long, 'A prompt longer than 1024 tokens is dropped.'),
      convo('Tell me a story about a robot who checks its battery.', 'Once upon a time a robot checked its battery and found it full.'),
    ]),
  );

  it('keeps valid two-turn conversations and takes the reference reply length as max_tokens', () => {
    const ds = shareGptDataset(file, llama, { numPrompts: 10, seed: 0, shuffle: false, oversample: false });
    assert.deepEqual(
      ds.map((r) => r.prompt.slice(0, 12)),
      ['What is the ', 'Tell me a st'],
    );
    assert.equal(ds[0]!.promptLen, llama.encode(ds[0]!.prompt).length);
    assert.equal(ds[0]!.expectedOutputLen, llama.encode('Paris is the capital of France, for historical reasons.').length);
    assert.equal(isValidSequence(3, 10, false), false);
    assert.equal(isValidSequence(10, 3, true), true);
    assert.equal(isValidSequence(1000, 1049, false), false);
  });

  it('oversamples to --num-prompts and honours a fixed output length', () => {
    const ds = shareGptDataset(file, llama, { numPrompts: 7, outputLen: 2, seed: 0, shuffle: true, oversample: true });
    assert.equal(ds.length, 7);
    assert.ok(ds.every((r) => r.expectedOutputLen === 2));
  });
});

describe('custom dataset', () => {
  it('reads "prompt" and optional "output_tokens" per JSONL line', () => {
    const file = join(work, 'custom.jsonl');
    writeFileSync(file, '{"prompt": "first", "output_tokens": 7}\n\n{"prompt": "second"}\n');
    const ds = customDataset(file, llama, { numPrompts: 2, outputLen: 256, seed: 0, shuffle: false, oversample: true });
    assert.deepEqual(ds, [
      { prompt: 'first', promptLen: llama.encode('first').length, expectedOutputLen: 7 },
      { prompt: 'second', promptLen: llama.encode('second').length, expectedOutputLen: 256 },
    ]);
    const templated = customDataset(file, llama, { numPrompts: 1, outputLen: 4, seed: 0, shuffle: false, oversample: false, applyChatTemplate: (p) => `<|begin_of_text|>[user] ${p}` });
    assert.equal(templated[0]!.prompt, '<|begin_of_text|>[user] first');
    assert.equal(templated[0]!.promptLen, llama.encode(templated[0]!.prompt, { addSpecialTokens: false }).length, 'a templated prompt carries its own BOS');
    const bad = join(work, 'bad.jsonl');
    writeFileSync(bad, '{"text": "no prompt"}\n');
    assert.throws(() => customDataset(bad, llama, { numPrompts: 1, outputLen: 4, seed: 0, shuffle: false, oversample: false }), /bad\.jsonl:1: each line needs a "prompt" string/);
  });
});
