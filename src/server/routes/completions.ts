// POST /v1/completions: text (or token-id) prompts continued, one or more choices each, collected
// or streamed.

import { admit, checkModel, requestId, sendJson, unixSeconds, type ApiCall, type ServerContext } from '../context.js';
import { childSpecs, Generation } from '../generation.js';
import { completionLogprobs } from '../logprobs.js';
import { parseCompletionRequest } from '../openai-schemas.js';
import { collectChoices, streamChoices, usageOf } from './choices.js';

/** OpenAI's default for completions (chat instead fills the context, as vLLM does). */
const DEFAULT_MAX_TOKENS = 16;

export async function completions(ctx: ServerContext, call: ApiCall): Promise<void> {
  const r = parseCompletionRequest(call.body);
  checkModel(ctx, r.model);
  const tok = ctx.llm.tokenizer;
  const prompts = r.prompts.map((p) => (typeof p === 'string' ? tok.encode(p, { addSpecialTokens: true }) : p));
  const params = { ...r.params, maxTokens: r.maxTokens ?? DEFAULT_MAX_TOKENS };
  const specs = prompts.flatMap((ids, i) => childSpecs(i * r.n, r.n, ids, params, r.logprobs));
  admit(ctx, specs.length);
  const gen = new Generation(ctx.llm, ctx.metrics, specs, call.signal, call.arrivalMs);
  const promptTokens = prompts.reduce((a, p) => a + p.length, 0);
  const head = { id: requestId('cmpl'), object: 'text_completion', created: unixSeconds(), model: ctx.modelName };

  if (!r.stream) {
    const choices = await collectChoices(gen, specs.length);
    sendJson(call.res, 200, {
      ...head,
      choices: choices.map((c) => ({
        index: c.index,
        text: c.text,
        logprobs: r.logprobs === undefined ? null : completionLogprobs(tok, c.logprobs, 0),
        finish_reason: c.finishReason,
        stop_reason: null,
      })),
      usage: usageOf(promptTokens, gen),
    });
    return;
  }

  const textSoFar = new Array<number>(specs.length).fill(0);
  await streamChoices(call, gen, {
    chunk: (d) => {
      if (d.text === '' && !d.finishReason && !(r.logprobs !== undefined && d.tokenIds.length > 0)) return undefined;
      const logprobs = r.logprobs === undefined ? null : completionLogprobs(tok, d.logprobs ?? [], textSoFar[d.index]);
      textSoFar[d.index] += d.text.length;
      return {
        ...head,
        choices: [{ index: d.index, text: d.text, logprobs, finish_reason: d.finishReason ?? null, stop_reason: null }],
        ...(r.includeUsage ? { usage: null } : {}),
      };
    },
    usage: r.includeUsage ? () => ({ ...head, choices: [], usage: usageOf(promptTokens, gen) }) : undefined,
  });
}
