// Token logprobs in the two OpenAI shapes: chat's {content: [{token, logprob, bytes, top_logprobs}]}
// and the legacy completions' {tokens, token_logprobs, top_logprobs, text_offset}. Token strings
// are each token decoded alone, as vLLM reports them.

import type { Logprobs } from '../engine/sampler.js';
import type { Tokenizer } from '../model/tokenizer.js';

export interface ChatTokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: Array<{ token: string; logprob: number; bytes: number[] }>;
}

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Array<Record<string, number>>;
  text_offset: number[];
}

// A token with no probability at all is reported at the lowest finite logprob (JSON has no -Infinity).
const finite = (lp: number) => (lp === -Infinity ? -9999 : lp);
const bytesOf = (s: string) => Array.from(Buffer.from(s, 'utf8'));
const tokenText = (tok: Tokenizer, id: number) => tok.decode([id]);

export function chatLogprobs(tok: Tokenizer, lps: Logprobs[]): ChatTokenLogprob[] {
  return lps.map((lp) => {
    const token = tokenText(tok, lp.tokenId);
    return {
      token,
      logprob: finite(lp.logprob),
      bytes: bytesOf(token),
      top_logprobs: lp.top.map((t) => {
        const s = tokenText(tok, t.id);
        return { token: s, logprob: finite(t.logprob), bytes: bytesOf(s) };
      }),
    };
  });
}

/** `textOffset` is where the first of these tokens starts in the choice's text so far. */
export function completionLogprobs(tok: Tokenizer, lps: Logprobs[], textOffset: number): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let offset = textOffset;
  for (const lp of lps) {
    const token = tokenText(tok, lp.tokenId);
    out.tokens.push(token);
    out.token_logprobs.push(finite(lp.logprob));
    // The top alternatives plus the chosen token, as vLLM returns them.
    const top: Record<string, number> = {};
    for (const t of lp.top) top[tokenText(tok, t.id)] = finite(t.logprob);
    top[token] = finite(lp.logprob);
    out.top_logprobs.push(top);
    out.text_offset.push(offset);
    offset += token.length;
  }
  return out;
}
