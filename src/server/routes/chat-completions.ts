// POST /v1/chat/completions: a conversation rendered with the model's chat template, the
// assistant's reply generated, collected or streamed (role chunk first, as vLLM streams).

import { admit, checkModel, requestId, sendJson, unixSeconds, type ApiCall, type ServerContext } from '../context.js';
import { childSpecs, Generation } from '../generation.js';
import { badRequest } from '../http-errors.js';
import { chatLogprobs } from '../logprobs.js';
import { parseChatRequest } from '../openai-schemas.js';
import { collectChoices, streamChoices, usageOf } from './choices.js';

export async function chatCompletions(ctx: ServerContext, call: ApiCall): Promise<void> {
  const r = parseChatRequest(call.body);
  checkModel(ctx, r.model);
  const llm = ctx.llm;
  // The template writes BOS itself, so the rendered text is encoded without special tokens.
  const promptIds = llm.tokenizer.encode(llm.applyChatTemplate(r.messages, r.addGenerationPrompt), { addSpecialTokens: false });
  const maxModelLen = llm.engine.options.maxModelLen;
  if (r.maxTokens === undefined && promptIds.length >= maxModelLen) {
    throw badRequest(`this model's maximum context length is ${maxModelLen} tokens, but the messages have ${promptIds.length} tokens; shorten them`, 'messages');
  }
  // Without a limit the reply may fill the rest of the context (vLLM's default).
  const params = { ...r.params, maxTokens: r.maxTokens ?? maxModelLen - promptIds.length };
  const specs = childSpecs(0, r.n, promptIds, params, r.logprobs);
  admit(ctx, specs.length);
  const gen = new Generation(llm, ctx.metrics, specs, call.signal, call.arrivalMs);
  const head = { id: requestId('chatcmpl'), object: 'chat.completion', created: unixSeconds(), model: ctx.modelName };

  if (!r.stream) {
    const choices = await collectChoices(gen, specs.length);
    sendJson(call.res, 200, {
      ...head,
      choices: choices.map((c) => ({
        index: c.index,
        message: { role: 'assistant', content: c.text, tool_calls: [] },
        logprobs: r.logprobs === undefined ? null : { content: chatLogprobs(llm.tokenizer, c.logprobs) },
        finish_reason: c.finishReason,
        stop_reason: null,
      })),
      usage: usageOf(promptIds.length, gen),
    });
    return;
  }

  const chunkHead = { ...head, object: 'chat.completion.chunk' };
  const usageNull = r.includeUsage ? { usage: null } : {};
  await streamChoices(call, gen, {
    start: () =>
      specs.map((s) => ({ ...chunkHead, choices: [{ index: s.index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }], ...usageNull })),
    chunk: (d) => {
      if (d.text === '' && !d.finishReason && !(r.logprobs !== undefined && d.tokenIds.length > 0)) return undefined;
      const logprobs = r.logprobs === undefined ? null : { content: chatLogprobs(llm.tokenizer, d.logprobs ?? []) };
      const delta = d.text === '' && d.finishReason ? {} : { content: d.text };
      return { ...chunkHead, choices: [{ index: d.index, delta, logprobs, finish_reason: d.finishReason ?? null }], ...usageNull };
    },
    usage: r.includeUsage ? () => ({ ...chunkHead, choices: [], usage: usageOf(promptIds.length, gen) }) : undefined,
  });
}
