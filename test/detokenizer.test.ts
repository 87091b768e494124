// IncrementalDetokenizer: streamed pieces add up to exactly tokenizer.decode(ids), never show half a
// character, and each step decodes only a short window.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IncrementalDetokenizer } from '../src/engine/detokenizer.js';
import { Rng } from '../src/engine/rng.js';
import { Tokenizer } from '../src/model/tokenizer.js';

type Json = Record<string, unknown>;

const LLAMA3_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

function added(id: number, content: string): Json {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

function template(bos: string, id: number): Json {
  return { type: 'TemplateProcessing', single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [], special_tokens: { [bos]: { id: bos, ids: [id], tokens: [bos] } } };
}

/**
 * Byte-level BPE whose merges cut characters between tokens: 你 = [ä½, <A0>], 好 = [å¥, ½],
 * 😀 = [ðŁ, ĺĢ]. Ids 0-255 are the bytes themselves.
 */
function byteLevelTokenizer(): Tokenizer {
  const vocab: Record<string, number> = {};
  let next = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    vocab[String.fromCodePoint(printable ? b : 256 + next++)] = b;
  }
  const merges = [['ä', '½'], ['å', '¥'], ['ð', 'Ł'], ['ĺ', 'Ģ'], ['H', 'e'], ['l', 'l'], ['He', 'll'], ['Hell', 'o'], ['Ġ', 'w'], ['o', 'r'], ['Ġw', 'or'], ['Ġwor', 'ld']];
  vocab['ld'] = Object.keys(vocab).length;
  for (const [a, b] of merges) vocab[a! + b!] = Object.keys(vocab).length;
  const n = Object.keys(vocab).length;
  return new Tokenizer(
    {
      added_tokens: [added(n, '<|begin_of_text|>'), added(n + 1, '<|eot_id|>')],
      normalizer: null,
      pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: LLAMA3_REGEX }, behavior: 'Isolated', invert: false }, { type: 'ByteLevel', add_prefix_space: false, use_regex: false }] },
      post_processor: template('<|begin_of_text|>', n),
      decoder: { type: 'ByteLevel' },
      model: { type: 'BPE', unk_token: null, fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab, merges: [['l', 'd'], ...merges] },
    },
    { bos_token: '<|begin_of_text|>', eos_token: '<|eot_id|>' },
  );
}

/** Llama 2 style: <unk> <s> </s>, <0x00>..<0xFF> at 3..258, a few ▁ pieces; everything else falls back to bytes. */
function byteFallbackTokenizer(): Tokenizer {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  for (const p of ['▁', 'h', 'e', 'l', 'o', 'w', 'r', 'd']) vocab[p] = Object.keys(vocab).length;
  const merges = [['▁', 'h'], ['▁h', 'e'], ['l', 'l'], ['▁he', 'll'], ['▁hell', 'o'], ['▁', 'w'], ['o', 'r'], ['▁w', 'or'], ['▁wor', 'l'], ['▁worl', 'd'], ['▁', '▁']];
  for (const [a, b] of merges) vocab[a! + b!] = Object.keys(vocab).length;
  return new Tokenizer(
    {
      added_tokens: [added(0, '<unk>'), added(1, '<s>'), added(2, '</s>')],
      normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
      pre_tokenizer: null,
      post_processor: template('<s>', 1),
      decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
      model: { type: 'BPE', unk_token: '<unk>', fuse_unk: true, byte_fallback: true, vocab, merges: merges.map(([a, b]) => `${a} ${b}`) },
    },
    { bos_token: '<s>', eos_token: '</s>' },
  );
}

const TEXTS = [
  'Hello world',
  'Hello 你好 world',
  '你好你好',
  '😀😀 😀',
  '👋🏽 hello\n\n  world 👨‍👩‍👧!',
  ' leading space',
  'tabs\tand\u00a0nbsp 日本語テキスト',
  '',
];

/** Stream `ids` one at a time; returns the pieces. */
function stream(tok: Tokenizer, ids: number[], skip: boolean, prompt: number[] = []): string[] {
  const d = new IncrementalDetokenizer(tok, prompt, skip);
  const pieces = ids.map((id) => d.push(id));
  pieces.push(d.flush());
  return pieces;
}

function assertStreamsLikeDecode(tok: Tokenizer, ids: number[], skip: boolean) {
  const pieces = stream(tok, ids, skip);
  const whole = tok.decode(ids, { skipSpecialTokens: skip });
  assert.equal(pieces.join(''), whole, `ids ${JSON.stringify(ids)}`);
  if (!whole.includes('\uFFFD')) {
    for (const p of pieces) assert.ok(!p.includes('\uFFFD'), `a partial character leaked: ${JSON.stringify(pieces)}`);
  }
  for (const p of pieces) assert.ok(!/[\uD800-\uDBFF]$/.test(p) && !/^[\uDC00-\uDFFF]/.test(p), `a surrogate pair was split: ${JSON.stringify(pieces)}`);
}

describe('IncrementalDetokenizer on a byte-level BPE', () => {
  const tok = byteLevelTokenizer();

  it('adds up to decode() for emoji and CJK split across tokens, with and without special tokens', () => {
    for (const text of TEXTS) {
      const ids = [...tok.encode(text), tok.eosTokenId!];
      for (const skip of [true, false]) assertStreamsLikeDecode(tok, ids, skip);
    }
  });

  it('holds a character back until its last byte arrives', () => {
    const ni = tok.encode('你', { addSpecialTokens: false });
    assert.equal(ni.length, 2, 'the test vocabulary splits 你 into two tokens');
    const d = new IncrementalDetokenizer(tok, [], true);
    assert.equal(d.push(0xe4), '');
    assert.equal(d.push(0xbd), '');
    assert.equal(d.push(0xa0), '你');
    assert.equal(d.push(0x21), '!');
    assert.equal(d.flush(), '');
  });

  it('releases an incomplete character at flush as decode() shows it', () => {
    const d = new IncrementalDetokenizer(tok, [], true);
    assert.equal(d.push(0x61) + d.push(0xf0) + d.push(0x9f), 'a');
    assert.equal(d.flush(), '\uFFFD');
    assert.equal(tok.decode([0x61, 0xf0, 0x9f]), 'a\uFFFD');
  });

  it('keeps invalid bytes followed by text exactly as decode() renders them', () => {
    for (const ids of [[0x80, 0x61], [0xff, 0xe4, 0xbd, 0xa0], [0xe4, 0x61, 0xbd], [0xf0, 0x9f, 0x98, 0x20]]) assertStreamsLikeDecode(tok, ids, true);
  });

  it('streams special tokens as text unless skipped', () => {
    const ids = [tok.bosTokenId!, ...tok.encode('Hello', { addSpecialTokens: false }), tok.eosTokenId!];
    assert.deepEqual(stream(tok, ids, false), ['<|begin_of_text|>', 'Hello', '<|eot_id|>', '']);
    assert.deepEqual(stream(tok, ids, true), ['', 'Hello', '', '']);
  });

  it('matches decode() on random id sequences', () => {
    const rng = new Rng(3);
    for (let trial = 0; trial < 300; trial++) {
      const ids = Array.from({ length: 1 + Math.floor(rng.next() * 16) }, () => Math.floor(rng.next() * tok.vocabSize));
      assertStreamsLikeDecode(tok, ids, trial % 2 === 0);
    }
  });

  it('decodes only a short window per token however long the output grows', () => {
    let widest = 0;
    let calls = 0;
    const spy = Object.create(tok) as Tokenizer;
    spy.decodeTokens = (tokens: string[]) => {
      widest = Math.max(widest, tokens.length);
      calls++;
      return tok.decodeTokens(tokens);
    };
    const ids = tok.encode('Hello 你好 world 😀 '.repeat(400), { addSpecialTokens: false });
    assert.ok(ids.length > 3000);
    const d = new IncrementalDetokenizer(spy, [], true);
    let text = '';
    for (const id of ids) text += d.push(id);
    text += d.flush();
    assert.equal(text, tok.decode(ids));
    assert.ok(widest <= 6, `a decode call read ${widest} tokens`);
    assert.ok(calls <= 2 * ids.length + 1, `${calls} decode calls for ${ids.length} tokens`);
  });
});

describe('IncrementalDetokenizer on a SentencePiece-style BPE with byte fallback', () => {
  const tok = byteFallbackTokenizer();

  it('adds up to decode(), including the first token whose leading space decode() strips', () => {
    for (const text of TEXTS) {
      const ids = [...tok.encode(text), tok.eosTokenId!];
      for (const skip of [true, false]) assertStreamsLikeDecode(tok, ids, skip);
    }
    const ids = tok.encode('hello world');
    assert.deepEqual(stream(tok, ids, true), ['', 'hello', ' world', '']);
    // Interior spaces survive: each window re-reads an emitted token, so Strip never eats a real space.
    assert.deepEqual(stream(tok, tok.encode('hello  world', { addSpecialTokens: false }), true), ['hello', ' ', ' world', '']);
  });

  it('holds a run of byte tokens until the run ends, since Rust decodes the run as a whole', () => {
    const ids = tok.encode('你 hello', { addSpecialTokens: false });
    assert.deepEqual(ids.slice(0, 4), [tok.tokenToId('▁'), 3 + 0xe4, 3 + 0xbd, 3 + 0xa0]);
    assert.deepEqual(stream(tok, ids, true), ['', '', '', '', '你 hello', '']);
  });

  it('matches decode() when a run turns invalid after a complete character', () => {
    // 你 then a lone lead byte: Rust renders all four bytes as U+FFFD.
    const ids = [3 + 0xe4, 3 + 0xbd, 3 + 0xa0, 3 + 0xe5];
    assert.equal(tok.decode(ids), '\uFFFD'.repeat(4));
    assertStreamsLikeDecode(tok, ids, true);
    assertStreamsLikeDecode(tok, [...ids, tok.tokenToId('▁hello')!], true);
  });

  it('is not changed by the prompt ids given as context', () => {
    const prompt = tok.encode('hello hello');
    const ids = tok.encode('world 你好', { addSpecialTokens: false });
    assert.equal(stream(tok, ids, true, prompt).join(''), tok.decode(ids));
  });

  it('matches decode() on random id sequences', () => {
    const rng = new Rng(5);
    for (let trial = 0; trial < 300; trial++) {
      const ids = Array.from({ length: 1 + Math.floor(rng.next() * 16) }, () => Math.floor(rng.next() * tok.vocabSize));
      assertStreamsLikeDecode(tok, ids, trial % 2 === 0);
    }
  });
});
