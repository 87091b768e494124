// Tokenizer behaviour on small hand-built tokenizer.json files: a byte-level BPE with the Llama 3
// split regex and a SentencePiece-style BPE with byte fallback. Every expected id list below was
// also checked against the Rust `tokenizers` library (0.23) on the same JSON.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ModelLoadError } from '../src/errors.js';
import { Tokenizer } from '../src/model/tokenizer.js';

type Json = Record<string, unknown>;

const LLAMA3_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN_REGEX = LLAMA3_REGEX.replace('\\p{N}{1,3}', '\\p{N}');

/** GPT-2 bytes_to_unicode: the character standing for each byte in byte-level vocabularies. */
function byteChars(): string[] {
  const chars: string[] = [];
  let next = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    chars.push(String.fromCodePoint(printable ? b : 256 + next++));
  }
  return chars;
}

function added(id: number, content: string, special = true, extra: Json = {}): Json {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: !special, special, ...extra };
}

function template(bos: string, bosId: number): Json {
  return {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
  };
}

/**
 * Byte-level BPE in the Llama 3 layout: ids 0-255 are the bytes, then merged pieces, then
 * `xyz` (in the vocabulary but not reachable by merges), then added tokens from id 270.
 */
function byteLevelJson(opts: { ignoreMerges?: boolean; pairMerges?: boolean; regex?: string } = {}): Json {
  const vocab: Record<string, number> = {};
  byteChars().forEach((c, b) => (vocab[c] = b));
  const merges = [['H', 'e'], ['l', 'l'], ['He', 'll'], ['Hell', 'o'], ['Ġ', 'w'], ['o', 'r'], ['Ġw', 'or'], ['Ġwor', 'l'], ['Ġworl', 'd'], ['1', '2'], ['12', '3'], ['4', '5'], ['Ġ', 'Ġ']];
  for (const [a, b] of merges) vocab[a! + b!] = Object.keys(vocab).length;
  vocab['xyz'] = Object.keys(vocab).length;
  const n = Object.keys(vocab).length; // 270
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [added(n, '<|begin_of_text|>'), added(n + 1, '<|eot_id|>'), added(n + 2, '<mask>', true, { lstrip: true, rstrip: true }), added(n + 3, 'ab', false, { single_word: true })],
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: opts.regex ?? LLAMA3_REGEX }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: { type: 'Sequence', processors: [{ type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true }, template('<|begin_of_text|>', n)] },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: opts.ignoreMerges ?? true,
      vocab,
      merges: opts.pairMerges ? merges : merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

/** Llama 2 layout: <unk> <s> </s>, byte tokens <0x00>..<0xFF> at 3..258, then pieces from 259. */
function sentencePieceJson(opts: { legacy?: boolean; byteFallback?: boolean } = {}): Json {
  const legacy = opts.legacy ?? true;
  const byteFallback = opts.byteFallback ?? true;
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  if (byteFallback) for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  for (const p of ['▁', 'h', 'e', 'l', 'o', 'w', 'r', 'd']) vocab[p] = Object.keys(vocab).length;
  const merges = [['▁', 'h'], ['▁h', 'e'], ['l', 'l'], ['▁he', 'll'], ['▁hell', 'o'], ['▁', 'w'], ['o', 'r'], ['▁w', 'or'], ['▁wor', 'l'], ['▁worl', 'd'], ['▁', '▁']];
  for (const [a, b] of merges) vocab[a! + b!] = Object.keys(vocab).length;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [added(0, '<unk>'), added(1, '<s>'), added(2, '</s>')],
    normalizer: legacy
      ? { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] }
      : null,
    pre_tokenizer: legacy ? null : { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false },
    post_processor: template('<s>', 1),
    decoder: {
      type: 'Sequence',
      decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: byteFallback,
      ignore_merges: false,
      vocab,
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

const BOS = 270;
const EOT = 271;
const MASK = 272;
const AB = 273;

describe('byte-level BPE with the Llama 3 regex', () => {
  const tok = new Tokenizer(byteLevelJson(), { bos_token: '<|begin_of_text|>', eos_token: { content: '<|eot_id|>', lstrip: false } });

  it('merges pieces and adds BOS through the post-processor', () => {
    assert.deepEqual(tok.encode('Hello world'), [BOS, 259, 264]);
    assert.deepEqual(tok.encode('Hello world', { addSpecialTokens: false }), [259, 264]);
    assert.deepEqual(tok.encode('Hello world!'), [BOS, 259, 264, 33]);
    assert.deepEqual(tok.encode(''), [BOS]);
  });

  it('splits digits in runs of three', () => {
    assert.deepEqual(tok.encode('12345', { addSpecialTokens: false }), [266, 267]); // 123 45
    assert.deepEqual(tok.encode('1234', { addSpecialTokens: false }), [266, 52]); // 123 4
  });

  it('splits contractions case-insensitively and whitespace as the regex says', () => {
    assert.deepEqual(tok.encode("I'm", { addSpecialTokens: false }), [73, 39, 109]);
    assert.deepEqual(tok.encode("I'M fine", { addSpecialTokens: false }), [73, 39, 77, 32, 102, 105, 110, 101]);
    assert.deepEqual(tok.encode('a\n\nb', { addSpecialTokens: false }), [97, 10, 10, 98]);
    // "a", " ", " b": the first space is its own pre-token, so the Ġ Ġ merge cannot apply.
    assert.deepEqual(tok.encode('a  b', { addSpecialTokens: false }), [97, 32, 32, 98]);
    assert.deepEqual(tok.encode('   ', { addSpecialTokens: false }), [268, 32]); // ĠĠ Ġ
  });

  it('emits a whole pre-token found in the vocabulary when ignore_merges is set', () => {
    assert.deepEqual(tok.encode('xyz', { addSpecialTokens: false }), [269]);
    assert.deepEqual(tok.encode(' xyz', { addSpecialTokens: false }), [32, 120, 121, 122]);
    const merging = new Tokenizer(byteLevelJson({ ignoreMerges: false }), {});
    assert.deepEqual(merging.encode('xyz', { addSpecialTokens: false }), [120, 121, 122]);
    assert.deepEqual(merging.encode('Hello', { addSpecialTokens: false }), [259]);
  });

  it('reads merges given as [a, b] pairs exactly like "a b" strings', () => {
    const pairs = new Tokenizer(byteLevelJson({ pairMerges: true }), {});
    for (const text of ['Hello world', '12345', 'xyz Hello   world\n']) assert.deepEqual(pairs.encode(text), tok.encode(text));
  });

  it('splits digits singly with the Qwen regex', () => {
    const qwen = new Tokenizer(byteLevelJson({ regex: QWEN_REGEX }), {});
    assert.deepEqual(qwen.encode('12345', { addSpecialTokens: false }), [49, 50, 51, 52, 53]);
  });

  it('encodes characters as their UTF-8 bytes and decodes them back', () => {
    assert.deepEqual(tok.encode('😀', { addSpecialTokens: false }), [240, 159, 152, 128]);
    assert.equal(tok.decode([240, 159, 152, 128]), '😀');
    // An incomplete sequence decodes to one replacement character (lossy UTF-8).
    assert.equal(tok.decode([240, 159]), '\uFFFD');
    assert.equal(tok.decode([BOS, 240, 159, 152, 128, EOT, 228]), '<|begin_of_text|>😀<|eot_id|>\uFFFD');
    assert.equal(tok.decode([BOS, 240, 159, 152, 128, EOT, 228], { skipSpecialTokens: true }), '😀\uFFFD');
  });

  it('matches special tokens inside text and skips them on request', () => {
    const ids = tok.encode('<|eot_id|>Hello<|begin_of_text|>');
    assert.deepEqual(ids, [BOS, EOT, 259, BOS]);
    assert.equal(tok.decode(ids), '<|begin_of_text|><|eot_id|>Hello<|begin_of_text|>');
    assert.equal(tok.decode(ids, { skipSpecialTokens: true }), 'Hello');
  });

  it('lets lstrip/rstrip added tokens swallow the whitespace around them', () => {
    assert.deepEqual(tok.encode('a <mask> b', { addSpecialTokens: false }), [97, MASK, 98]);
    assert.deepEqual(tok.encode('a  <mask>\n b', { addSpecialTokens: false }), [97, MASK, 98]);
    assert.equal(tok.decode([97, MASK, 98]), 'a<mask>b');
    assert.equal(tok.decode([97, MASK, 98], { skipSpecialTokens: true }), 'ab');
  });

  it('matches single_word added tokens only between non-word characters', () => {
    assert.deepEqual(
      tok.encode('ab cab ab. abc _ab ab', { addSpecialTokens: false }),
      [AB, 32, 99, 97, 98, 32, AB, 46, 32, 97, 98, 99, 32, 95, 97, 98, 32, AB],
    );
    // A non-special added token survives skipSpecialTokens.
    assert.equal(tok.decode([AB, 32, AB], { skipSpecialTokens: true }), 'ab ab');
  });

  it('drops ids that are in neither vocabulary and decodes an empty list to ""', () => {
    assert.equal(tok.decode([AB, 999, -1, 1.5]), 'ab');
    assert.equal(tok.decode([]), '');
  });

  it('exposes vocabulary facts', () => {
    assert.equal(tok.vocabSize, 274);
    assert.equal(tok.bosTokenId, BOS);
    assert.equal(tok.eosTokenId, EOT);
    assert.deepEqual([...tok.specialTokenIds].sort((a, b) => a - b), [BOS, EOT, MASK]);
    assert.ok(tok.isSpecial(EOT));
    assert.ok(!tok.isSpecial(AB) && !tok.isSpecial(259));
    assert.equal(tok.idToToken(264), 'Ġworld');
    assert.equal(tok.idToToken(EOT), '<|eot_id|>');
    assert.equal(tok.idToToken(5000), undefined);
    assert.equal(tok.tokenToId('Hello'), 259);
    assert.equal(tok.tokenToId('<mask>'), MASK);
    assert.equal(tok.tokenToId('nope'), undefined);
  });
});

describe('SentencePiece-style BPE with byte fallback', () => {
  const tok = new Tokenizer(sentencePieceJson(), { bos_token: { content: '<s>', __type: 'AddedToken' }, eos_token: '</s>', add_bos_token: true });

  it('prepends ▁ and replaces spaces (legacy normalizer)', () => {
    assert.deepEqual(tok.encode('hello'), [1, 271]);
    assert.deepEqual(tok.encode('hello world'), [1, 271, 276]);
    assert.deepEqual(tok.encode('hello  world'), [1, 271, 259, 276]);
    assert.deepEqual(tok.encode(' hello'), [1, 259, 271]);
    assert.deepEqual(tok.encode(''), [1]);
    assert.deepEqual(tok.encode('hello', { addSpecialTokens: false }), [271]);
  });

  it('falls back to <0xXX> byte tokens for characters outside the vocabulary', () => {
    assert.deepEqual(tok.encode('hé'), [1, 267, 3 + 0xc3, 3 + 0xa9]);
    assert.deepEqual(tok.encode('€'), [1, 259, 3 + 0xe2, 3 + 0x82, 3 + 0xac]);
    assert.equal(tok.decode([1, 267, 3 + 0xc3, 3 + 0xa9], { skipSpecialTokens: true }), 'hé');
  });

  it('decodes an invalid byte run to one U+FFFD per byte, as Rust does', () => {
    assert.equal(tok.decode([1, 3 + 0xe2, 3 + 0x82]), '<s>\uFFFD\uFFFD');
    assert.equal(tok.decode([1, 3 + 0xe2, 3 + 0x82, 3 + 0xac]), '<s>€');
    assert.equal(tok.decode([3 + 0xe2, 3 + 0x82, 3 + 0xac, 3 + 0xe2]), '\uFFFD'.repeat(4));
  });

  it('splits special tokens out before normalizing, so each section gets its own ▁', () => {
    assert.deepEqual(tok.encode('<s>hello'), [1, 1, 271]);
    assert.deepEqual(tok.encode('hello</s>'), [1, 271, 2]);
  });

  it('strips exactly one leading space when decoding and keeps special tokens unless skipped', () => {
    assert.equal(tok.decode([1, 271, 276]), '<s> hello world');
    assert.equal(tok.decode([1, 271, 276], { skipSpecialTokens: true }), 'hello world');
    assert.equal(tok.decode([259, 271]), ' hello');
  });

  it('reads bos/eos given as a string or as an AddedToken object', () => {
    assert.equal(tok.bosTokenId, 1);
    assert.equal(tok.eosTokenId, 2);
    assert.equal(tok.vocabSize, 278);
  });

  it('prepends ▁ only at the start of the input with Metaspace prepend_scheme "first"', () => {
    const meta = new Tokenizer(sentencePieceJson({ legacy: false }), {});
    assert.deepEqual(meta.encode('hello'), [1, 271]);
    assert.deepEqual(meta.encode(' hello'), [1, 271]); // the space becomes the ▁ itself
    assert.deepEqual(meta.encode('<s>hello'), [1, 1, 260, 261, 269, 263]); // h e ll o, no ▁
    assert.deepEqual(meta.encode('hello<s>hello'), [1, 271, 1, 260, 261, 269, 263]);
  });

  it('fuses consecutive unknown characters into one <unk> without byte fallback', () => {
    const noFallback = new Tokenizer(sentencePieceJson({ byteFallback: false }), {});
    assert.deepEqual(noFallback.encode('h€€'), [1, 11, 0]);
    assert.deepEqual(noFallback.encode('h€ €'), [1, 11, 0, 3, 0]);
  });
});

describe('Tokenizer.load', () => {
  const dir = (files: Record<string, string>) => {
    const d = mkdtempSync(join(tmpdir(), 'tachyon-tok-'));
    mkdirSync(d, { recursive: true });
    for (const [name, text] of Object.entries(files)) writeFileSync(join(d, name), text);
    return d;
  };

  it('reads tokenizer.json and tokenizer_config.json from a directory', () => {
    const d = dir({ 'tokenizer.json': JSON.stringify(sentencePieceJson()), 'tokenizer_config.json': JSON.stringify({ bos_token: '<s>', eos_token: '</s>' }) });
    const tok = Tokenizer.load(d);
    assert.deepEqual(tok.encode('hello world'), [1, 271, 276]);
    assert.equal(tok.eosTokenId, 2);
  });

  it('works without tokenizer_config.json', () => {
    const tok = Tokenizer.load(dir({ 'tokenizer.json': JSON.stringify(sentencePieceJson()) }));
    assert.equal(tok.bosTokenId, undefined);
    assert.deepEqual(tok.encode('hello'), [1, 271]);
  });

  it('names the file when tokenizer.json is missing or malformed', () => {
    const missing = dir({});
    assert.throws(() => Tokenizer.load(missing), (e: unknown) => e instanceof ModelLoadError && e.message.includes(join(missing, 'tokenizer.json')) && /not found/.test(e.message));
    const broken = dir({ 'tokenizer.json': '{"model": ' });
    assert.throws(() => Tokenizer.load(broken), (e: unknown) => e instanceof ModelLoadError && e.message.includes('tokenizer.json') && /not valid JSON/.test(e.message));
    const badConfig = dir({ 'tokenizer.json': JSON.stringify(sentencePieceJson()), 'tokenizer_config.json': '{,}' });
    assert.throws(() => Tokenizer.load(badConfig), (e: unknown) => e instanceof ModelLoadError && e.message.includes('tokenizer_config.json'));
    const noModel = dir({ 'tokenizer.json': '{"added_tokens": []}' });
    assert.throws(() => Tokenizer.load(noModel), (e: unknown) => e instanceof ModelLoadError && /missing "model"/.test(e.message));
  });
});
