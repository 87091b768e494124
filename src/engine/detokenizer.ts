// Streaming detokenization: one generated id in, the newly completed text out, such that the pieces
// add up to exactly tokenizer.decode(outputIds) and no partial UTF-8 character is ever emitted.
//
// Each step decodes only a short window of recent tokens and diffs it against the decode of the
// window's already-emitted prefix (the prefix-offset/read-offset scheme of vLLM and tokenizers'
// DecodeStream), so the cost per token does not grow with the output. Keeping one emitted chunk as
// the window's prefix is what makes this exact: decoders that treat the first token of a decode call
// specially (SentencePiece's Strip of one leading space, Metaspace) act on that prefix in both
// decodes, and the difference is unaffected.
//
// Text is held back while it ends in U+FFFD (an incomplete UTF-8 character of a byte-level
// tokenizer) and, with a ByteFallback decoder, while the output ends in a run of <0xXX> tokens: Rust
// decodes such a run as a whole and turns all of it into U+FFFD if any part is invalid, so even a
// completed character in a run is not final until the run ends.

import type { Tokenizer } from '../model/tokenizer.js';

/**
 * A window still ending in U+FFFD after this many undecided tokens is taken as final: bytes that no
 * character can complete. Bounds the work per token when a model emits a run of invalid bytes.
 */
const MAX_PENDING_TOKENS = 32;

/** Longest ByteFallback run held back whole; past it (a model spewing bytes) text streams again. */
const MAX_PENDING_BYTE_RUN = 256;

/** Drop consumed tokens once this many have piled up before the window. */
const COMPACT_AFTER = 1024;

export class IncrementalDetokenizer {
  /** Token strings of the output that survive decode (unknown ids and skipped specials removed). */
  private tokens: string[] = [];
  /** Start of the window: tokens already emitted that the next decode re-reads as context. */
  private prefixOffset = 0;
  /** End of what has been emitted. */
  private readOffset = 0;
  /** decode(tokens[prefixOffset, readOffset)), the text the next decode must start with. */
  private prefixText = '';

  /**
   * @param promptIds The prompt. The emitted text is the standalone decode of the output ids (what
   *   decode() gives, and what the API returns), so the prompt is not needed as decode context: the
   *   first output token's leading-space handling is the same as in decode(outputIds).
   * @param skipSpecialTokens Leave special tokens out of the text, as decode(ids, { skipSpecialTokens }).
   */
  constructor(
    private readonly tokenizer: Tokenizer,
    promptIds: readonly number[] = [],
    private readonly skipSpecialTokens = true,
  ) {
    void promptIds;
  }

  /** Add one generated id; returns the text it completes ('' while a character is incomplete). */
  push(id: number): string {
    const strings = this.tokenizer.idsToTokens([id], this.skipSpecialTokens);
    if (strings.length === 0) return ''; // contributes nothing to decode() either
    this.tokens.push(strings[0]!);
    return this.advance(false);
  }

  /** Release whatever is held back (an incomplete character at the end decodes to U+FFFD, as in decode()). */
  flush(): string {
    return this.advance(true);
  }

  private advance(final: boolean): string {
    let end = this.tokens.length;
    if (!final && this.tokens.length - this.readOffset < MAX_PENDING_BYTE_RUN) {
      while (end > this.readOffset && this.tokenizer.isByteFallbackToken(this.tokens[end - 1]!)) end--;
    }
    if (end === this.readOffset) return '';
    const newText = this.tokenizer.decodeTokens(this.tokens.slice(this.prefixOffset, end));
    if (!final) {
      if (newText.length <= this.prefixText.length) return '';
      if (newText.endsWith('\uFFFD') && end - this.readOffset < MAX_PENDING_TOKENS) return '';
    }
    // The new decode normally extends the prefix; it may not when a byte-fallback run that was valid
    // turns invalid (Rust then replaces every byte of the run), and then only the new part is emitted.
    const common = newText.startsWith(this.prefixText) ? this.prefixText.length : commonPrefixLength(newText, this.prefixText);
    const delta = newText.slice(common);
    this.prefixOffset = this.readOffset;
    this.readOffset = end;
    this.prefixText = this.tokenizer.decodeTokens(this.tokens.slice(this.prefixOffset, this.readOffset));
    if (this.prefixOffset >= COMPACT_AFTER) {
      this.tokens = this.tokens.slice(this.prefixOffset);
      this.readOffset -= this.prefixOffset;
      this.prefixOffset = 0;
    }
    return delta;
  }
}

function commonPrefixLength(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}
