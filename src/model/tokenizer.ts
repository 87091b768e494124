// Text ⇄ token ids for a Hugging Face model directory (tokenizer.json + tokenizer_config.json),
// giving the same ids and text as the Rust `tokenizers` library that the models were released with.
//
// @huggingface/tokenizers supplies the normalizers, the regex translation of pre-tokenizers and the
// BPE merge loop. The parts where it departs from Rust are done here instead: splitting on added
// tokens (lstrip/rstrip/single_word, normalized vs raw matching), the post-processor, Metaspace
// (`split`, `prepend_scheme`, old `add_prefix_space`), Split behaviours, and the ByteLevel,
// ByteFallback and Metaspace decoders. Decoding never applies clean_up_tokenization_spaces: Rust does
// not, and a streaming decode could not reproduce it.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as hfTokenizers from '@huggingface/tokenizers';
import { ModelLoadError } from '../errors.js';

export interface EncodeOptions {
  /** Add the post-processor's template tokens (BOS for Llama). Default true. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop added tokens marked `special` (BOS, EOS, chat markers). Default false. */
  skipSpecialTokens?: boolean;
}

interface AddedToken {
  id: number;
  content: string;
  singleWord: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** One piece of the input after splitting on added tokens: either an added token or text. */
interface Piece {
  text: string;
  id?: number;
  /** Whether the piece starts at offset 0 of the original input (Metaspace prepend_scheme "first"). */
  atStart: boolean;
}

type Json = Record<string, unknown>;

// The package's .d.ts files use extensionless relative imports, which NodeNext resolution cannot
// follow, so the parts used here are typed locally.
interface LibModel {
  (pieces: string[]): string[];
  tokens_to_ids: Map<string, number>;
  vocab: (string | undefined)[];
}
interface LibTokenizer {
  normalizer: { normalize(text: string): string } | null;
  pre_tokenizer: unknown;
  model: LibModel | null;
  decoder: unknown;
}
type LibClass = abstract new (...args: never[]) => unknown;
const tk = hfTokenizers as unknown as {
  Tokenizer: new (tokenizerJson: object, config: object) => LibTokenizer;
  SequencePreTokenizer: LibClass;
  MetaspacePreTokenizer: LibClass;
  SplitPreTokenizer: LibClass;
  SequenceDecoder: LibClass;
  ByteLevelDecoder: LibClass;
  ByteFallbackDecoder: LibClass;
  MetaspaceDecoder: LibClass;
};

// Rust's `regex` crate classes used by the added-vocabulary matcher.
const WORD_CHAR = /[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]/u;
const WHITESPACE = /\p{White_Space}/u;

export class Tokenizer {
  /** Max id + 1 over the model vocabulary and the added tokens. */
  readonly vocabSize: number;
  readonly bosTokenId?: number;
  readonly eosTokenId?: number;
  readonly padTokenId?: number;
  /** Ids of added tokens marked special; skipSpecialTokens drops exactly these. */
  readonly specialTokenIds: Set<number>;
  /**
   * Whether the decoder has a ByteFallback step. Its runs of <0xXX> tokens decode as a whole (one
   * U+FFFD per byte if the run is not valid UTF-8), so a streaming decoder must wait for a run's end.
   */
  readonly hasByteFallbackDecoder: boolean;

  private readonly hf: LibTokenizer;
  private readonly model: LibModel;
  private readonly modelVocab: Map<string, number>;
  private readonly modelTokens: (string | undefined)[];
  private readonly added: Map<number, AddedToken>;
  private readonly addedByContent: Map<string, number>;
  private readonly addedDecoded: Map<number, string>;
  /** Rust skips special tokens by comparing token strings with these contents. */
  private readonly specialContents: Set<string>;
  private readonly rawMatcher: AddedTokenMatcher;
  private readonly normalizedMatcher: AddedTokenMatcher;
  private readonly normalizeText: (text: string) => string;
  private readonly preTokenize: (text: string, atStart: boolean) => string[];
  private readonly postProcess: (ids: number[]) => number[];
  private readonly decodeChain: (tokens: string[]) => string;

  /**
   * @param tokenizerJson parsed tokenizer.json
   * @param tokenizerConfig parsed tokenizer_config.json (bos/eos/pad names, extra added tokens)
   * @param source file name used in error messages
   */
  constructor(tokenizerJson: unknown, tokenizerConfig: unknown = {}, source = 'tokenizer.json') {
    const fail = (why: string): never => {
      throw new ModelLoadError(`${source}: ${why}`);
    };
    if (!isObject(tokenizerJson)) fail('expected a JSON object');
    const tj = tokenizerJson as Json;
    if (!isObject(tj.model)) fail('missing "model" object');
    const config: Json = isObject(tokenizerConfig) ? (tokenizerConfig as Json) : {};

    // Added tokens are handled here, so the library's model keeps only its own vocabulary (otherwise
    // ignore_merges and byte_fallback would see added tokens as model pieces).
    const libJson: Json = {
      ...tj,
      normalizer: tj.normalizer ?? null,
      pre_tokenizer: tj.pre_tokenizer ?? null,
      post_processor: null,
      decoder: tj.decoder ?? null,
      added_tokens: [],
    };
    try {
      this.hf = new tk.Tokenizer(libJson, {});
    } catch (err) {
      throw new ModelLoadError(`${source}: unsupported or malformed tokenizer (${(err as Error).message})`);
    }
    const model = this.hf.model ?? fail('missing "model"');
    this.model = model;
    this.modelVocab = model.tokens_to_ids;
    this.modelTokens = model.vocab;

    this.added = new Map();
    this.addedByContent = new Map();
    const addedList = Array.isArray(tj.added_tokens) ? tj.added_tokens : [];
    for (const raw of addedList) this.addAddedToken(parseAddedToken(raw, fail));
    // transformers also registers tokens that only tokenizer_config.json lists.
    if (isObject(config.added_tokens_decoder)) {
      for (const [idText, raw] of Object.entries(config.added_tokens_decoder as Json)) {
        const id = Number(idText);
        if (!Number.isInteger(id) || this.added.has(id) || !isObject(raw)) continue;
        if (typeof (raw as Json).content !== 'string') continue;
        this.addAddedToken(parseAddedToken({ ...(raw as Json), id }, fail));
      }
    }
    this.specialTokenIds = new Set([...this.added.values()].filter((t) => t.special).map((t) => t.id));
    this.specialContents = new Set([...this.added.values()].filter((t) => t.special).map((t) => t.content));

    let maxId = -1;
    for (const id of this.modelVocab.values()) if (id > maxId) maxId = id;
    for (const id of this.added.keys()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;

    const normalizer = this.hf.normalizer;
    this.normalizeText = normalizer ? (text) => (text.length === 0 ? text : normalizer.normalize(text)) : (text) => text;
    // A normalized added token is matched (and, as in tokenizers 0.23, read back) in normalized form.
    const all = [...this.added.values()];
    this.addedDecoded = new Map(all.map((t) => [t.id, t.normalized ? this.normalizeText(t.content) : t.content]));
    this.rawMatcher = new AddedTokenMatcher(all.filter((t) => !t.normalized).map((t) => [t.content, t]));
    this.normalizedMatcher = new AddedTokenMatcher(all.filter((t) => t.normalized).map((t) => [this.addedDecoded.get(t.id)!, t]));

    this.preTokenize = buildPreTokenizer(this.hf.pre_tokenizer, tj.pre_tokenizer);
    this.postProcess = buildPostProcessor(tj.post_processor, (name) => this.tokenToId(name), fail);
    this.decodeChain = buildDecoder(this.hf.decoder, tj.decoder);
    this.hasByteFallbackDecoder = containsDecoder(tj.decoder, 'ByteFallback');

    this.bosTokenId = this.specialTokenId(config.bos_token);
    this.eosTokenId = this.specialTokenId(config.eos_token);
    this.padTokenId = this.specialTokenId(config.pad_token);
  }

  /** Read `dir`/tokenizer.json and (optional) `dir`/tokenizer_config.json. */
  static load(dir: string): Tokenizer {
    const tokenizerPath = join(dir, 'tokenizer.json');
    const configPath = join(dir, 'tokenizer_config.json');
    const tokenizerJson = readJsonFile(tokenizerPath, true);
    const config = readJsonFile(configPath, false) ?? {};
    return new Tokenizer(tokenizerJson, config, tokenizerPath);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const ids: number[] = [];
    for (const piece of this.splitAddedTokens(text)) {
      if (piece.id !== undefined) {
        ids.push(piece.id);
        continue;
      }
      for (const preToken of this.preTokenize(piece.text, piece.atStart)) {
        if (preToken.length === 0) continue;
        // One model call per pre-token: Rust fuses unknowns only within a word.
        for (const token of this.model([preToken])) {
          const id = this.modelVocab.get(token);
          if (id !== undefined) ids.push(id);
        }
      }
    }
    return opts.addSpecialTokens === false ? ids : this.postProcess(ids);
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    return this.decodeChain(this.idsToTokens(ids, opts.skipSpecialTokens ?? false));
  }

  /**
   * Token strings for `ids` as the decoder sees them: unknown ids dropped, special tokens dropped when
   * asked (by id, and like Rust also any token whose string is a special token's).
   */
  idsToTokens(ids: readonly number[], skipSpecialTokens = false): string[] {
    const tokens: string[] = [];
    for (const id of ids) {
      const token = this.idToToken(id);
      if (token === undefined) continue;
      if (skipSpecialTokens && (this.specialTokenIds.has(id) || this.specialContents.has(token))) continue;
      tokens.push(token);
    }
    return tokens;
  }

  /** Run the decoder chain on token strings (what decode() does after mapping ids). */
  decodeTokens(tokens: string[]): string {
    return this.decodeChain(tokens);
  }

  /** Like Rust (tokenizers ≥ 0.23), a `normalized` added token reads back in its normalized form. */
  idToToken(id: number): string | undefined {
    return this.addedDecoded.get(id) ?? (Number.isInteger(id) && id >= 0 ? this.modelTokens[id] : undefined);
  }

  tokenToId(token: string): number | undefined {
    return this.addedByContent.get(token) ?? this.modelVocab.get(token);
  }

  isSpecial(id: number): boolean {
    return this.specialTokenIds.has(id);
  }

  /** Whether the ByteFallback decoder step reads this token string as one raw byte. */
  isByteFallbackToken(token: string): boolean {
    return this.hasByteFallbackDecoder && token.length === 6 && BYTE_TOKEN.test(token);
  }

  private addAddedToken(token: AddedToken): void {
    if (token.content.length === 0) return;
    const previous = this.added.get(token.id);
    if (previous) this.addedByContent.delete(previous.content);
    this.added.set(token.id, token);
    this.addedByContent.set(token.content, token.id);
  }

  private specialTokenId(value: unknown): number | undefined {
    const content = typeof value === 'string' ? value : isObject(value) && typeof (value as Json).content === 'string' ? ((value as Json).content as string) : undefined;
    return content === undefined ? undefined : this.tokenToId(content);
  }

  /**
   * Rust's AddedVocabulary::extract_and_normalize: split the raw text on non-normalized added tokens,
   * normalize the rest piece by piece, then split those on normalized added tokens.
   */
  private splitAddedTokens(text: string): Piece[] {
    const pieces: Piece[] = [];
    for (const raw of this.rawMatcher.split(text)) {
      if (raw.id !== undefined) {
        pieces.push({ text: raw.text, id: raw.id, atStart: raw.start === 0 });
        continue;
      }
      const normalized = this.normalizeText(raw.text);
      for (const sub of this.normalizedMatcher.split(normalized)) {
        pieces.push({ text: sub.text, id: sub.id, atStart: raw.start === 0 && sub.start === 0 });
      }
    }
    return pieces;
  }
}

// ---------------------------------------------------------------------------------------------
// Added tokens

/** Leftmost-longest matcher over added-token contents with Rust's single_word/lstrip/rstrip rules. */
class AddedTokenMatcher {
  private readonly root: TrieNode = { children: new Map() };
  private readonly empty: boolean;

  constructor(entries: [string, AddedToken][]) {
    for (const [content, token] of entries) {
      if (content.length === 0) continue;
      let node = this.root;
      for (const ch of content) {
        let next = node.children.get(ch);
        if (!next) node.children.set(ch, (next = { children: new Map() }));
        node = next;
      }
      node.token = token;
    }
    this.empty = this.root.children.size === 0;
  }

  /** Pieces covering `text` in order; matched ones carry the token id. `start` is the offset in `text`. */
  split(text: string): { text: string; id?: number; start: number }[] {
    if (text.length === 0) return [];
    if (this.empty) return [{ text, start: 0 }];
    const out: { text: string; id?: number; start: number }[] = [];
    let offset = 0; // end of the previous emitted piece
    let i = 0;
    while (i < text.length) {
      const m = this.longestAt(text, i);
      if (!m) {
        i += codePointLength(text, i);
        continue;
      }
      let start = i;
      let stop = i + m.length;
      const token = m.token;
      if (token.singleWord) {
        const before = start === 0 ? '' : lastCodePoint(text, start);
        const after = stop === text.length ? '' : String.fromCodePoint(text.codePointAt(stop)!);
        if ((before && WORD_CHAR.test(before)) || (after && WORD_CHAR.test(after))) {
          // Rust's aho-corasick resumes after the rejected match, not inside it.
          i = stop;
          continue;
        }
      }
      if (token.lstrip) {
        let s = start;
        while (s > offset) {
          const ch = lastCodePoint(text, s);
          if (!WHITESPACE.test(ch)) break;
          s -= ch.length;
        }
        start = s;
      }
      const matchEnd = stop;
      if (token.rstrip) {
        while (stop < text.length) {
          const ch = String.fromCodePoint(text.codePointAt(stop)!);
          if (!WHITESPACE.test(ch)) break;
          stop += ch.length;
        }
      }
      if (offset < start) out.push({ text: text.slice(offset, start), start: offset });
      out.push({ text: text.slice(start, stop), id: token.id, start });
      offset = stop;
      // The automaton keeps scanning right after the match itself; whitespace that rstrip swallowed
      // cannot hold another added token start in practice, so continue from the extended stop.
      i = Math.max(matchEnd, stop);
    }
    if (offset < text.length) out.push({ text: text.slice(offset), start: offset });
    return out;
  }

  private longestAt(text: string, i: number): { length: number; token: AddedToken } | undefined {
    let node: TrieNode | undefined = this.root;
    let best: { length: number; token: AddedToken } | undefined;
    let j = i;
    while (j < text.length) {
      const cp = text.codePointAt(j)!;
      const ch = String.fromCodePoint(cp);
      node = node.children.get(ch);
      if (!node) break;
      j += ch.length;
      if (node.token) best = { length: j - i, token: node.token };
    }
    return best;
  }
}

interface TrieNode {
  children: Map<string, TrieNode>;
  token?: AddedToken;
}

function parseAddedToken(raw: unknown, fail: (why: string) => never): AddedToken {
  if (!isObject(raw)) return fail('added_tokens entries must be objects');
  const r = raw as Json;
  if (!Number.isInteger(r.id) || (r.id as number) < 0) fail(`added token ${JSON.stringify(r.content)} has no valid id`);
  if (typeof r.content !== 'string') fail(`added token ${String(r.id)} has no content string`);
  const special = r.special === true;
  return {
    id: r.id as number,
    content: r.content as string,
    singleWord: r.single_word === true,
    lstrip: r.lstrip === true,
    rstrip: r.rstrip === true,
    // Rust's default: special tokens match the raw text, others the normalized text.
    normalized: typeof r.normalized === 'boolean' ? r.normalized : !special,
    special,
  };
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers

type PreTokenizeFn = (text: string, atStart: boolean) => string[];
type SplitBehavior = 'removed' | 'isolated' | 'mergedwithprevious' | 'mergedwithnext' | 'contiguous';

/**
 * Wrap the library's pre-tokenizer, replacing the node kinds it gets wrong: Metaspace (ignores
 * `split` and old `add_prefix_space`) and Split (no merged/contiguous behaviours, and `invert` drops
 * the gaps even when they should be kept).
 */
function buildPreTokenizer(lib: unknown, config: unknown): PreTokenizeFn {
  if (!lib || !isObject(config)) return (text) => [text];
  const cfg = config as Json;
  if (lib instanceof tk.SequencePreTokenizer && Array.isArray(cfg.pretokenizers)) {
    const children = (lib as unknown as { tokenizers: unknown[] }).tokenizers;
    const steps = (cfg.pretokenizers as unknown[]).map((c, i) => buildPreTokenizer(children[i], c));
    return (text, atStart) => {
      let pieces = [text];
      for (const step of steps) {
        const next: string[] = [];
        // Only the first piece of a split can still start at offset 0.
        pieces.forEach((p, i) => next.push(...step(p, atStart && i === 0)));
        pieces = next;
      }
      return pieces;
    };
  }
  if (lib instanceof tk.MetaspacePreTokenizer) {
    const replacement = typeof cfg.replacement === 'string' ? cfg.replacement : '\u2581';
    const scheme = typeof cfg.prepend_scheme === 'string' ? cfg.prepend_scheme : cfg.add_prefix_space === false ? 'never' : 'always';
    const split = cfg.split !== false;
    return (text, atStart) => {
      let s = text.replaceAll(' ', replacement);
      if (!s.startsWith(replacement) && (scheme === 'always' || (scheme === 'first' && atStart))) s = replacement + s;
      if (!split) return [s];
      return splitWithBehavior(s, literalMatches(s, replacement), 'mergedwithnext');
    };
  }
  if (lib instanceof tk.SplitPreTokenizer) {
    const pattern = (lib as unknown as { pattern: RegExp | null }).pattern;
    const behavior = String(cfg.behavior ?? 'Isolated').toLowerCase() as SplitBehavior;
    const invert = cfg.invert === true;
    if (!pattern) return (text) => [text];
    return (text) => {
      const matches = regexMatches(text, pattern).map(([a, b, isMatch]) => [a, b, invert ? !isMatch : isMatch] as Span);
      return splitWithBehavior(text, matches, behavior);
    };
  }
  const pre = lib as { pre_tokenize_text(text: string, options?: unknown): string[] };
  return (text, atStart) => pre.pre_tokenize_text(text, { section_index: atStart ? 0 : 1 });
}

type Span = [start: number, end: number, isMatch: boolean];

/** Spans covering `text`: gaps and matches of `pattern` (a global regex), empty matches skipped. */
function regexMatches(text: string, pattern: RegExp): Span[] {
  const spans: Span[] = [];
  let prev = 0;
  for (const m of text.matchAll(pattern)) {
    const start = m.index!;
    const end = start + m[0].length;
    if (end === start) continue;
    if (prev < start) spans.push([prev, start, false]);
    spans.push([start, end, true]);
    prev = end;
  }
  if (prev < text.length) spans.push([prev, text.length, false]);
  return spans;
}

function literalMatches(text: string, needle: string): Span[] {
  const spans: Span[] = [];
  let prev = 0;
  for (let i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + needle.length)) {
    if (prev < i) spans.push([prev, i, false]);
    spans.push([i, i + needle.length, true]);
    prev = i + needle.length;
  }
  if (prev < text.length) spans.push([prev, text.length, false]);
  return spans;
}

/** Rust's NormalizedString::split with a SplitDelimiterBehavior. */
function splitWithBehavior(text: string, spans: Span[], behavior: SplitBehavior): string[] {
  let ranges: [number, number][] = [];
  switch (behavior) {
    case 'removed':
      ranges = spans.filter((s) => !s[2]).map(([a, b]) => [a, b]);
      break;
    case 'isolated':
      ranges = spans.map(([a, b]) => [a, b]);
      break;
    case 'mergedwithprevious': {
      let previousMatch = false;
      for (const [a, b, isMatch] of spans) {
        if (isMatch && !previousMatch && ranges.length > 0) ranges[ranges.length - 1]![1] = b;
        else ranges.push([a, b]);
        previousMatch = isMatch;
      }
      break;
    }
    case 'mergedwithnext': {
      let previousMatch = false;
      for (let i = spans.length - 1; i >= 0; i--) {
        const [a, b, isMatch] = spans[i]!;
        if (isMatch && !previousMatch && ranges.length > 0) ranges[ranges.length - 1]![0] = a;
        else ranges.push([a, b]);
        previousMatch = isMatch;
      }
      ranges.reverse();
      break;
    }
    case 'contiguous': {
      let previousMatch = false;
      for (const [a, b, isMatch] of spans) {
        if (isMatch === previousMatch && ranges.length > 0) ranges[ranges.length - 1]![1] = b;
        else ranges.push([a, b]);
        previousMatch = isMatch;
      }
      break;
    }
    default:
      throw new ModelLoadError(`tokenizer.json: Split behavior '${behavior}' is not supported; supported: Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous`);
  }
  return ranges.filter(([a, b]) => b > a).map(([a, b]) => text.slice(a, b));
}

// ---------------------------------------------------------------------------------------------
// Post-processors

type PostProcessFn = (ids: number[]) => number[];

/** The single-sequence template of TemplateProcessing / Bert / Roberta; Sequence composes them. */
function buildPostProcessor(config: unknown, tokenToId: (t: string) => number | undefined, fail: (why: string) => never): PostProcessFn {
  if (!isObject(config)) return (ids) => ids;
  const cfg = config as Json;
  switch (cfg.type) {
    case 'Sequence': {
      const steps = (Array.isArray(cfg.processors) ? cfg.processors : []).map((c) => buildPostProcessor(c, tokenToId, fail));
      return (ids) => steps.reduce((acc, step) => step(acc), ids);
    }
    case 'ByteLevel':
      return (ids) => ids; // only trims offsets
    case 'TemplateProcessing': {
      const special = isObject(cfg.special_tokens) ? (cfg.special_tokens as Json) : {};
      const items = Array.isArray(cfg.single) ? cfg.single : fail('TemplateProcessing has no "single" template');
      const parts: (number[] | 'A')[] = [];
      for (const item of items as unknown[]) {
        if (!isObject(item)) fail('TemplateProcessing template items must be objects');
        const it = item as Json;
        if (isObject(it.Sequence)) {
          parts.push('A');
        } else if (isObject(it.SpecialToken)) {
          const name = String((it.SpecialToken as Json).id);
          const entry = special[name];
          const ids = isObject(entry) && Array.isArray((entry as Json).ids) ? ((entry as Json).ids as number[]) : undefined;
          if (!ids) fail(`TemplateProcessing uses special token '${name}' missing from special_tokens`);
          parts.push(ids!.slice());
        }
      }
      return (ids) => parts.flatMap((p) => (p === 'A' ? ids : p));
    }
    case 'BertProcessing':
    case 'RobertaProcessing': {
      const idOf = (pair: unknown, what: string): number => {
        if (Array.isArray(pair) && typeof pair[1] === 'number') return pair[1];
        if (Array.isArray(pair) && typeof pair[0] === 'string' && tokenToId(pair[0]) !== undefined) return tokenToId(pair[0])!;
        return fail(`${String(cfg.type)} has no valid ${what}`);
      };
      const cls = idOf(cfg.cls, 'cls');
      const sep = idOf(cfg.sep, 'sep');
      return (ids) => [cls, ...ids, sep];
    }
    default:
      return fail(`post_processor type '${String(cfg.type)}' is not supported; supported: TemplateProcessing, ByteLevel, Sequence, BertProcessing, RobertaProcessing`);
  }
}

// ---------------------------------------------------------------------------------------------
// Decoders

type DecodeChainFn = (tokens: string[]) => string[];

function buildDecoder(lib: unknown, config: unknown): (tokens: string[]) => string {
  // Rust joins the raw tokens with spaces when there is no decoder.
  if (!lib || !isObject(config)) return (tokens) => tokens.join(' ');
  const chain = buildDecodeChain(lib, config as Json);
  return (tokens) => chain(tokens).join('');
}

function buildDecodeChain(lib: unknown, cfg: Json): DecodeChainFn {
  if (lib instanceof tk.SequenceDecoder && Array.isArray(cfg.decoders)) {
    const children = (lib as unknown as { decoders: unknown[] }).decoders;
    const steps = (cfg.decoders as unknown[]).map((c, i) => buildDecodeChain(children[i], isObject(c) ? (c as Json) : {}));
    return (tokens) => steps.reduce((acc, step) => step(acc), tokens);
  }
  if (lib instanceof tk.ByteLevelDecoder) return byteLevelDecode;
  if (lib instanceof tk.ByteFallbackDecoder) return byteFallbackDecode;
  if (lib instanceof tk.MetaspaceDecoder) {
    const replacement = typeof cfg.replacement === 'string' ? cfg.replacement : '\u2581';
    const scheme = typeof cfg.prepend_scheme === 'string' ? cfg.prepend_scheme : cfg.add_prefix_space === false ? 'never' : 'always';
    // Rust drops every replacement char of the first token (not just a leading one) unless "never".
    return (tokens) => tokens.map((t, i) => (i === 0 && scheme !== 'never' ? t.replaceAll(replacement, '') : t.replaceAll(replacement, ' ')));
  }
  const dec = lib as { decode_chain(tokens: string[]): string[] };
  return (tokens) => dec.decode_chain(tokens);
}

const BYTE_OF_CHAR: Map<number, number> = (() => {
  // GPT-2 bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100 onwards.
  const map = new Map<number, number>();
  let next = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    map.set(printable ? b : 256 + next++, b);
  }
  return map;
})();

const utf8Lossy = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
const utf8Strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

/** Rust ByteLevel decoder: all tokens to bytes (raw UTF-8 for a token with an unmapped char), one lossy decode. */
function byteLevelDecode(tokens: string[]): string[] {
  const bytes: number[] = [];
  for (const token of tokens) {
    const mapped: number[] = [];
    let ok = true;
    for (const ch of token) {
      const b = BYTE_OF_CHAR.get(ch.codePointAt(0)!);
      if (b === undefined) {
        ok = false;
        break;
      }
      mapped.push(b);
    }
    if (ok) for (const b of mapped) bytes.push(b);
    else for (const b of utf8Encoder.encode(token)) bytes.push(b);
  }
  return [utf8Lossy.decode(Uint8Array.from(bytes))];
}

// Rust: 6 bytes, "<0x" + two characters u8::from_str_radix accepts + ">".
const BYTE_TOKEN = /^<0x([+]?[0-9A-Fa-f]{1,2})>$/;

function containsDecoder(config: unknown, type: string): boolean {
  if (!isObject(config)) return false;
  const cfg = config as Json;
  if (cfg.type === type) return true;
  return cfg.type === 'Sequence' && Array.isArray(cfg.decoders) && cfg.decoders.some((d) => containsDecoder(d, type));
}

/** Rust ByteFallback: runs of <0xXX> become their UTF-8 text, or one U+FFFD per byte if invalid. */
function byteFallbackDecode(tokens: string[]): string[] {
  const out: string[] = [];
  let pending: number[] = [];
  const flush = () => {
    if (pending.length === 0) return;
    try {
      out.push(utf8Strict.decode(Uint8Array.from(pending)));
    } catch {
      for (let i = 0; i < pending.length; i++) out.push('\uFFFD');
    }
    pending = [];
  };
  for (const token of tokens) {
    const m = token.length === 6 ? BYTE_TOKEN.exec(token) : null;
    if (m) {
      pending.push(parseInt(m[1]!, 16));
    } else {
      flush();
      out.push(token);
    }
  }
  flush();
  return out;
}

// ---------------------------------------------------------------------------------------------

function readJsonFile(path: string, required: true): unknown;
function readJsonFile(path: string, required: false): unknown | undefined;
function readJsonFile(path: string, required: boolean): unknown | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      if (!required) return undefined;
      throw new ModelLoadError(`${path}: file not found (a Hugging Face tokenizer.json is required)`);
    }
    throw new ModelLoadError(`${path}: cannot read (${(err as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ModelLoadError(`${path}: not valid JSON (${(err as Error).message})`);
  }
}

function isObject(x: unknown): boolean {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function codePointLength(text: string, i: number): number {
  return text.codePointAt(i)! > 0xffff ? 2 : 1;
}

function lastCodePoint(text: string, end: number): string {
  const low = text.charCodeAt(end - 1);
  if (end >= 2 && low >= 0xdc00 && low <= 0xdfff) {
    const high = text.charCodeAt(end - 2);
    if (high >= 0xd800 && high <= 0xdbff) return text.slice(end - 2, end);
  }
  return text.slice(end - 1, end);
}
