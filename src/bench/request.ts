// One streamed request to an OpenAI-compatible server, timed the way `vllm bench serve` times it:
// the clock is read just before the POST; every SSE event whose `choices` is non-empty is one
// "token event" (TTFT at the first, an ITL entry at each later one); E2EL ends at the last token
// event; usage.completion_tokens / prompt_tokens replace the client-side counts when present.

import http from 'node:http';
import https from 'node:https';
import { InvalidRequestError } from '../errors.js';
import type { RequestOutput } from './metrics.js';
import { SseParser } from './sse.js';

export const BACKENDS = ['openai', 'openai-chat'] as const;
export type BackendName = (typeof BACKENDS)[number];

/**
 * Which generation of `vllm bench serve` to match where they differ (bench-spec §0):
 * - vllm-main: no temperature sent unless asked; chat E2EL ends at the last chunk with choices;
 *   success needs at least one token event; usage.prompt_tokens replaces the prompt length;
 *   random datasets force ignore_eos.
 * - vllm-0.10: temperature 0.0 in every body; chat E2EL includes the usage-only chunk; a chat
 *   request succeeds on HTTP 200 alone; prompt lengths stay the client's; ignore_eos only if asked.
 */
export const COMPAT_MODES = ['vllm-main', 'vllm-0.10'] as const;
export type CompatMode = (typeof COMPAT_MODES)[number];

export interface RequestInput {
  apiUrl: string;
  /** Sent as the body's `model`. */
  model: string;
  prompt: string;
  /** Client-side prompt token count (the dataset's). */
  promptLen: number;
  /** Sent as max_tokens (completions) or max_completion_tokens (chat). */
  outputLen: number;
  ignoreEos: boolean;
  logprobs?: number;
  /** Sampling parameters and --extra-body, merged last. */
  extraBody?: Record<string, unknown>;
  headers?: Record<string, string>;
  requestId?: string;
}

export interface RequestContext {
  backend: BackendName;
  compat: CompatMode;
  /** Keep-alive connection pool (sized to --max-concurrency, unlimited without it). */
  agent?: http.Agent;
  /** Whole-request limit; vLLM uses 6 hours. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 6 * 60 * 60 * 1000;

export const now = (): number => performance.now() / 1000;

/** The JSON body vLLM's request function sends for this backend (bench-spec §1.1). */
export function requestBody(backend: BackendName, input: RequestInput, compat: CompatMode = 'vllm-main'): Record<string, unknown> {
  const body: Record<string, unknown> =
    backend === 'openai'
      ? {
          model: input.model,
          prompt: input.prompt,
          repetition_penalty: 1.0,
          max_tokens: input.outputLen,
          logprobs: input.logprobs ?? null,
          stream: true,
          stream_options: { include_usage: true },
        }
      : {
          model: input.model,
          messages: [{ role: 'user', content: [{ type: 'text', text: input.prompt }] }],
          max_completion_tokens: input.outputLen,
          stream: true,
          stream_options: { include_usage: true },
        };
  if (compat === 'vllm-0.10') body.temperature = 0.0;
  if (input.ignoreEos) body.ignore_eos = true;
  return { ...body, ...(input.extraBody ?? {}) };
}

/** Headers: JSON, OPENAI_API_KEY as a bearer token, --header pairs, then x-request-id. */
export function requestHeaders(input: RequestInput): Record<string, string> {
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'text/event-stream' };
  const key = process.env.OPENAI_API_KEY;
  if (key) headers.authorization = `Bearer ${key}`;
  Object.assign(headers, input.headers ?? {});
  if (input.requestId) headers['x-request-id'] = input.requestId;
  return headers;
}

/** Check the endpoint matches the backend the way vLLM does (by URL suffix). */
export function validateApiUrl(backend: BackendName, apiUrl: string): void {
  const suffix = backend === 'openai' ? 'completions' : 'chat/completions';
  if (!new URL(apiUrl).pathname.endsWith(suffix)) {
    throw new InvalidRequestError(`backend '${backend}' needs an endpoint ending in '${suffix}', got ${apiUrl} (use --endpoint ${backend === 'openai' ? '/v1/completions' : '/v1/chat/completions'})`);
  }
}

/** Send one streaming request and time it. Never throws: failures come back as success: false. */
export function sendStreamingRequest(ctx: RequestContext, input: RequestInput): Promise<RequestOutput> {
  const body = JSON.stringify(requestBody(ctx.backend, input, ctx.compat));
  const url = new URL(input.apiUrl);
  const client = url.protocol === 'https:' ? https : http;
  const chat = ctx.backend === 'openai-chat';
  const old = ctx.compat === 'vllm-0.10';

  return new Promise((resolve) => {
    const out: RequestOutput = {
      success: false,
      generatedText: '',
      outputTokens: 0,
      promptLen: input.promptLen,
      ttft: 0,
      itl: [],
      latency: 0,
      startTime: 0,
      clientQueueTime: 0,
      error: '',
      sawDone: false,
    };
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (error?: string) => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      if (error !== undefined) {
        out.success = false;
        out.error = error;
      }
      resolve(out);
    };

    let firstEvent = false;
    let streamError: string | undefined;
    const st = now();
    out.startTime = st;
    let last = st;

    const onData = (data: string) => {
      if (data === '[DONE]') {
        out.sawDone = true;
        return;
      }
      const t = now();
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(data) as Record<string, unknown>;
      } catch {
        streamError ??= `malformed stream event: ${data.slice(0, 200)}`;
        return;
      }
      if (msg.error !== undefined && msg.error !== null) {
        // An error after streaming began arrives as an event on an HTTP 200 stream; vLLM's bench
        // would still count the request if a token preceded it, we count it as failed.
        const e = msg.error as { message?: unknown };
        streamError ??= `server error in stream: ${typeof e === 'object' && e && typeof e.message === 'string' ? e.message : JSON.stringify(msg.error)}`;
        return;
      }
      const choices = msg.choices;
      if (Array.isArray(choices) && choices.length > 0) {
        const c = choices[0] as Record<string, unknown>;
        const text = chat ? ((c.delta as Record<string, unknown> | undefined)?.content as string | null | undefined) : (c.text as string | null | undefined);
        if (!firstEvent) {
          firstEvent = true;
          out.ttft = t - st;
        } else {
          out.itl.push(t - last);
        }
        last = t;
        out.generatedText += text ?? '';
      } else if (msg.usage && typeof msg.usage === 'object') {
        const u = msg.usage as Record<string, unknown>;
        if (typeof u.completion_tokens === 'number') out.outputTokens = u.completion_tokens;
        if (!old && typeof u.prompt_tokens === 'number') out.promptLen = u.prompt_tokens;
        // The older chat request function advanced the end time on every data message.
        if (old && chat) last = t;
      }
    };

    const req = client.request(url, { method: 'POST', headers: requestHeaders(input), agent: ctx.agent }, (res) => {
      if (res.statusCode !== 200) {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (s: string) => {
          if (text.length < 4096) text += s;
        });
        res.on('end', () => finish(`HTTP ${res.statusCode} ${res.statusMessage ?? ''}`.trim() + errorDetail(text)));
        res.on('error', (e) => finish(`HTTP ${res.statusCode}: ${e.message}`));
        return;
      }
      const parser = new SseParser();
      const handle = (events: ReturnType<SseParser['push']>) => {
        for (const ev of events) if (ev.kind === 'data') onData(ev.data);
      };
      res.on('data', (chunk: Buffer) => handle(parser.push(chunk)));
      res.on('end', () => {
        handle(parser.end());
        out.latency = last - st;
        if (streamError !== undefined) return finish(streamError);
        if (firstEvent || (old && chat)) {
          out.success = true;
          return finish();
        }
        finish('Never received a valid chunk to calculate TTFT. This response will be marked as failed!');
      });
      res.on('error', (e) => finish(`stream interrupted: ${e.message}`));
      res.on('close', () => finish('the server closed the stream before its end'));
    });
    req.on('error', (e) => finish(`${(e as NodeJS.ErrnoException).code ?? 'request failed'}: ${e.message}`));
    timer = setTimeout(() => {
      req.destroy();
      finish(`timed out after ${((ctx.timeoutMs ?? DEFAULT_TIMEOUT_MS) / 1000).toFixed(0)} s`);
    }, ctx.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    req.end(body);
  });
}

/** ": message" from an OpenAI-shaped error body, if there is one. */
function errorDetail(text: string): string {
  try {
    const j = JSON.parse(text) as { error?: { message?: unknown }; message?: unknown };
    const m = j.error?.message ?? j.message;
    return typeof m === 'string' ? `: ${m}` : '';
  } catch {
    return text.trim() ? `: ${text.trim().slice(0, 200)}` : '';
  }
}
