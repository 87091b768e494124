// POST /tokenize and /detokenize, in vLLM's shapes: text (or a chat) to token ids and back.

import { checkModel, sendJson, type ApiCall, type ServerContext } from '../context.js';
import { badRequest } from '../http-errors.js';
import { parseDetokenizeRequest, parseTokenizeRequest } from '../openai-schemas.js';

export function tokenize(ctx: ServerContext, call: ApiCall): void {
  const r = parseTokenizeRequest(call.body);
  checkModel(ctx, r.model);
  const { llm } = ctx;
  const text = r.messages ? llm.applyChatTemplate(r.messages, r.addGenerationPrompt) : r.prompt!;
  const tokens = llm.tokenizer.encode(text, { addSpecialTokens: r.addSpecialTokens });
  sendJson(call.res, 200, {
    count: tokens.length,
    max_model_len: llm.engine.options.maxModelLen,
    tokens,
    token_strs: r.returnTokenStrs ? tokens.map((t) => llm.tokenizer.idToToken(t) ?? '') : null,
  });
}

export function detokenize(ctx: ServerContext, call: ApiCall): void {
  const r = parseDetokenizeRequest(call.body);
  checkModel(ctx, r.model);
  const vocab = ctx.llm.config.vocabSize;
  const bad = r.tokens.find((t) => t < 0 || t >= vocab);
  if (bad !== undefined) throw badRequest(`token id ${bad} is outside the vocabulary (0..${vocab - 1})`, 'tokens');
  sendJson(call.res, 200, { prompt: ctx.llm.tokenizer.decode(r.tokens) });
}
