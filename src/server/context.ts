// What every route handler gets: the shared LLM, the served model's name, metrics, the admission
// limit, and the call itself (parsed body, abort signal of the client's connection, response).

import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { LLM } from '../llm.js';
import { ApiError } from './http-errors.js';
import type { ServerMetrics } from './metrics.js';

export interface ServerContext {
  llm: LLM;
  /** The name clients put in `model` (--served-model-name, else the --model argument). */
  modelName: string;
  /** Directory the model was loaded from (`root` in /v1/models). */
  modelRoot: string;
  metrics: ServerMetrics;
  /** Most sequences allowed to wait for the engine; beyond it requests get 503. */
  maxWaiting: number;
  /** Unix seconds the server started (`created` of the model). */
  startedAt: number;
  version: string;
}

export interface ApiCall {
  req: IncomingMessage;
  res: ServerResponse;
  /** Parsed JSON body of a POST (undefined for GET). */
  body: unknown;
  /** Aborted when the client disconnects before the response is complete. */
  signal: AbortSignal;
  /** performance.now() when the request came in: the start of TTFT and e2e latency. */
  arrivalMs: number;
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** 404 unless `model` is absent or names the served model (vLLM's check). */
export function checkModel(ctx: ServerContext, model: string | undefined): void {
  if (model !== undefined && model !== ctx.modelName) throw new ApiError(404, `The model \`${model}\` does not exist.`, 'model');
}

/** 503 when adding `numSequences` would overfill the waiting queue: shed load instead of queueing forever. */
export function admit(ctx: ServerContext, numSequences: number): void {
  if (numSequences > ctx.maxWaiting) {
    throw new ApiError(400, `this request asks for ${numSequences} sequences (prompts × n), more than the server queues at once (${ctx.maxWaiting})`, 'n');
  }
  const waiting = ctx.llm.engine.numWaiting;
  if (waiting + numSequences > ctx.maxWaiting) {
    throw new ApiError(503, `the server is overloaded: ${waiting} sequences are waiting (limit ${ctx.maxWaiting}); retry later`);
  }
}

export const requestId = (prefix: string) => `${prefix}-${randomUUID().replace(/-/g, '')}`;
export const unixSeconds = () => Math.floor(Date.now() / 1000);
