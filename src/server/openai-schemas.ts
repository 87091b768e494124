// The request bodies the server accepts, checked field by field into typed requests. A wrong type
// or value is a 400 naming the field. Fields we do not know are ignored, as vLLM and OpenAI do;
// fields we know but cannot honour (echo, tools, logit_bias, ...) are refused rather than silently
// dropped, because dropping them would change what the caller gets.

import type { ChatContentPart, ChatMessage } from '../model/chat-template.js';
import type { GenerateParams } from '../llm.js';
import { badRequest } from './http-errors.js';

/** Most logprobs alternatives per token (vLLM's default max_logprobs). */
export const MAX_LOGPROBS = 20;
/** Most choices per request: a bound on the work one request can ask for. */
export const MAX_N = 128;

type Json = Record<string, unknown>;

/** The sampling and streaming fields completions and chat share. */
export interface GenerationFields {
  model?: string;
  /** Absent: 16 for completions (OpenAI's default), the rest of the context for chat (vLLM). */
  maxTokens?: number;
  params: GenerateParams;
  n: number;
  stream: boolean;
  includeUsage: boolean;
}

export interface CompletionRequest extends GenerationFields {
  /** One or more prompts, each text or token ids. */
  prompts: Array<string | number[]>;
  /** Top alternatives per token; undefined = no logprobs. */
  logprobs?: number;
}

export interface ChatRequest extends GenerationFields {
  messages: ChatMessage[];
  /** Top alternatives per token; undefined = no logprobs. */
  logprobs?: number;
  addGenerationPrompt: boolean;
}

export interface TokenizeRequest {
  model?: string;
  prompt?: string;
  messages?: ChatMessage[];
  addSpecialTokens: boolean;
  addGenerationPrompt: boolean;
  returnTokenStrs: boolean;
}

export interface DetokenizeRequest {
  model?: string;
  tokens: number[];
}

/** Typed reads of one JSON object's fields; `null` counts as absent, as in the OpenAI API. */
class Fields {
  constructor(readonly body: Json) {}

  has(name: string): boolean {
    return this.body[name] !== undefined && this.body[name] !== null;
  }

  string(name: string): string | undefined {
    const v = this.body[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') throw badRequest(`${name} must be a string, got ${describe(v)}`, name);
    return v;
  }

  boolean(name: string): boolean | undefined {
    const v = this.body[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') throw badRequest(`${name} must be true or false, got ${describe(v)}`, name);
    return v;
  }

  number(name: string): number | undefined {
    const v = this.body[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw badRequest(`${name} must be a number, got ${describe(v)}`, name);
    return v;
  }

  integer(name: string, min?: number, max?: number): number | undefined {
    const v = this.body[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v)) throw badRequest(`${name} must be an integer, got ${describe(v)}`, name);
    if (min !== undefined && v < min) throw badRequest(`${name} must be >= ${min}, got ${v}`, name);
    if (max !== undefined && v > max) throw badRequest(`${name} must be <= ${max}, got ${v}`, name);
    return v;
  }

  integerList(name: string): number[] | undefined {
    const v = this.body[name];
    if (v === undefined || v === null) return undefined;
    if (!isIntList(v)) throw badRequest(`${name} must be a list of integers`, name);
    return v;
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${JSON.stringify(v)}`;
}

const isIntList = (v: unknown): v is number[] => Array.isArray(v) && v.every((x) => typeof x === 'number' && Number.isInteger(x));

function object(body: unknown): Fields {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the request body must be a JSON object');
  return new Fields(body as Json);
}

/** Fields of both generation endpoints. */
function generationFields(f: Fields, maxTokensNames: string[]): GenerationFields {
  let maxTokens: number | undefined;
  for (const name of maxTokensNames) maxTokens = f.integer(name, 1) ?? maxTokens;
  const stopValue = f.body.stop;
  let stop: string[] | undefined;
  if (typeof stopValue === 'string') stop = [stopValue];
  else if (Array.isArray(stopValue) && stopValue.every((s) => typeof s === 'string')) stop = stopValue as string[];
  else if (stopValue !== undefined && stopValue !== null) throw badRequest('stop must be a string or a list of strings', 'stop');

  const stream = f.boolean('stream') ?? false;
  let includeUsage = false;
  if (f.has('stream_options')) {
    const so = f.body.stream_options;
    if (typeof so !== 'object' || Array.isArray(so)) throw badRequest('stream_options must be an object', 'stream_options');
    if (!stream) throw badRequest('stream_options can only be set when stream is true', 'stream_options');
    const inner = new Fields(so as Json);
    includeUsage = inner.boolean('include_usage') ?? false;
  }

  const ignoreEos = f.boolean('ignore_eos');
  const minTokens = f.integer('min_tokens', 0);
  if (minTokens && !ignoreEos) throw badRequest('min_tokens is not supported (it is honoured only together with ignore_eos: true)', 'min_tokens');
  if (f.has('logit_bias')) {
    const lb = f.body.logit_bias;
    if (typeof lb !== 'object' || Array.isArray(lb)) throw badRequest('logit_bias must be an object of token id → bias', 'logit_bias');
    if (Object.keys(lb as object).length > 0) throw badRequest('logit_bias is not supported', 'logit_bias');
  }
  const n = f.integer('n', 1, MAX_N) ?? 1;
  const bestOf = f.integer('best_of', 1);
  if (bestOf !== undefined && bestOf !== n) throw badRequest('best_of is not supported (it must equal n)', 'best_of');

  const params: GenerateParams = {
    temperature: f.number('temperature'),
    topP: f.number('top_p'),
    topK: f.integer('top_k'),
    minP: f.number('min_p'),
    presencePenalty: f.number('presence_penalty'),
    frequencyPenalty: f.number('frequency_penalty'),
    repetitionPenalty: f.number('repetition_penalty'),
    seed: f.integer('seed'),
    stop,
    stopTokenIds: f.integerList('stop_token_ids'),
    ignoreEos,
    skipSpecialTokens: f.boolean('skip_special_tokens'),
  };
  return { model: f.string('model'), maxTokens, params, n, stream, includeUsage };
}

export function parseCompletionRequest(body: unknown): CompletionRequest {
  const f = object(body);
  const g = generationFields(f, ['max_tokens']);
  const p = f.body.prompt;
  let prompts: Array<string | number[]>;
  if (typeof p === 'string') prompts = [p];
  else if (isIntList(p) && p.length > 0) prompts = [p];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string' || (isIntList(x) && x.length > 0))) prompts = p as Array<string | number[]>;
  else if (p === undefined || p === null) throw badRequest('prompt is required', 'prompt');
  else throw badRequest('prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids (none empty)', 'prompt');
  if (f.boolean('echo')) throw badRequest('echo is not supported', 'echo');
  if (f.string('suffix')) throw badRequest('suffix is not supported', 'suffix');
  const logprobs = f.integer('logprobs', 0, MAX_LOGPROBS);
  return { ...g, prompts, logprobs };
}

export function parseChatRequest(body: unknown): ChatRequest {
  const f = object(body);
  // max_completion_tokens is the current name; max_tokens the deprecated one.
  const g = generationFields(f, ['max_tokens', 'max_completion_tokens']);
  const messages = parseMessages(f.body.messages);
  const logprobs = f.boolean('logprobs') ?? false;
  const top = f.integer('top_logprobs', 0, MAX_LOGPROBS);
  if (top !== undefined && !logprobs) throw badRequest('top_logprobs requires logprobs to be true', 'top_logprobs');
  if (f.has('response_format')) {
    const rf = f.body.response_format as Json;
    if (typeof rf !== 'object' || Array.isArray(rf)) throw badRequest('response_format must be an object such as {"type": "text"}', 'response_format');
    if (rf.type !== 'text') throw badRequest(`response_format type ${JSON.stringify(rf.type)} is not supported; only "text"`, 'response_format');
  }
  const tools = f.body.tools;
  if (Array.isArray(tools) && tools.length > 0 && f.body.tool_choice !== 'none') throw badRequest('tool calling is not supported (send tool_choice: "none" or no tools)', 'tools');
  return { ...g, messages, logprobs: logprobs ? (top ?? 0) : undefined, addGenerationPrompt: f.boolean('add_generation_prompt') ?? true };
}

function parseMessages(v: unknown): ChatMessage[] {
  if (v === undefined || v === null) throw badRequest('messages is required', 'messages');
  if (!Array.isArray(v)) throw badRequest('messages must be a list of {role, content} objects', 'messages');
  if (v.length === 0) throw badRequest('messages must not be empty', 'messages');
  return v.map((m, i) => {
    const where = `messages[${i}]`;
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw badRequest(`${where} must be an object with role and content`, 'messages');
    const msg = m as Json;
    if (typeof msg.role !== 'string' || msg.role === '') throw badRequest(`${where}.role must be a non-empty string`, 'messages');
    const c = msg.content;
    if (c === undefined || c === null) return { ...msg, role: msg.role, content: null };
    if (typeof c === 'string') return { ...msg, role: msg.role, content: c };
    if (!Array.isArray(c)) throw badRequest(`${where}.content must be a string or a list of content parts`, 'messages');
    c.forEach((part, j) => {
      const p = part as ChatContentPart;
      if (typeof p !== 'object' || p === null || p.type !== 'text' || typeof p.text !== 'string') {
        throw badRequest(`${where}.content[${j}] must be a text part {type: "text", text}; other content types are not supported`, 'messages');
      }
    });
    return { ...msg, role: msg.role, content: c as ChatContentPart[] };
  });
}

export function parseTokenizeRequest(body: unknown): TokenizeRequest {
  const f = object(body);
  const hasMessages = f.has('messages');
  if (hasMessages === f.has('prompt')) throw badRequest('give exactly one of prompt or messages', hasMessages ? 'messages' : 'prompt');
  return {
    model: f.string('model'),
    prompt: hasMessages ? undefined : f.string('prompt'),
    messages: hasMessages ? parseMessages(f.body.messages) : undefined,
    // vLLM's defaults: BOS for a plain prompt, none for a chat (the template writes its own).
    addSpecialTokens: f.boolean('add_special_tokens') ?? !hasMessages,
    addGenerationPrompt: f.boolean('add_generation_prompt') ?? true,
    returnTokenStrs: f.boolean('return_token_strs') ?? false,
  };
}

export function parseDetokenizeRequest(body: unknown): DetokenizeRequest {
  const f = object(body);
  const tokens = f.integerList('tokens');
  if (tokens === undefined) throw badRequest('tokens is required', 'tokens');
  return { model: f.string('model'), tokens };
}
