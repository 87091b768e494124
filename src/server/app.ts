// The OpenAI-compatible HTTP server on node:http: a route table, JSON bodies, the API key, errors in
// OpenAI's shape, cancellation when a client disconnects, and a graceful shutdown that stops
// accepting, lets running requests finish, then closes. The engine itself is stepped by the LLM on
// the event loop (one step per macrotask), so requests are served while generations run.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { LLM } from '../llm.js';
import { sendJson, type ApiCall, type ServerContext } from './context.js';
import { ApiError, badRequest, errorBody, toApiError } from './http-errors.js';
import { ServerMetrics } from './metrics.js';
import { chatCompletions } from './routes/chat-completions.js';
import { completions } from './routes/completions.js';
import { health, listModels, metrics, version } from './routes/info.js';
import { detokenize, tokenize } from './routes/tokenize.js';

type Handler = (ctx: ServerContext, call: ApiCall) => void | Promise<void>;

const ROUTES: Record<string, Partial<Record<string, Handler>>> = {
  '/v1/models': { GET: listModels },
  '/v1/completions': { POST: completions },
  '/v1/chat/completions': { POST: chatCompletions },
  '/tokenize': { POST: tokenize },
  '/detokenize': { POST: detokenize },
  '/health': { GET: health },
  '/version': { GET: version },
  '/metrics': { GET: metrics },
};

/** Largest request body accepted (a prompt of a few million characters). */
const MAX_BODY_BYTES = 32 * 2 ** 20;
/** How long an idle keep-alive connection stays open. */
const KEEP_ALIVE_MS = 65_000;
/** Default bound of the waiting queue, in sequences. */
export const DEFAULT_MAX_WAITING = 1024;

export interface ServerOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 8000; 0 picks a free port. */
  port?: number;
  /** Name clients use in `model`. */
  modelName: string;
  /** When set, /v1/* requests need `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Most sequences waiting for the engine before requests are refused with 503. */
  maxWaiting?: number;
  version: string;
  /** Where to report server-side failures (500s); default stderr. */
  log?: (line: string) => void;
}

export interface RunningServer {
  /** http://host:port */
  url: string;
  port: number;
  server: Server;
  metrics: ServerMetrics;
  /** Stop accepting, let requests in flight finish, then close every connection. */
  shutdown(): Promise<void>;
  /** Close now: requests in flight are cancelled. */
  close(): Promise<void>;
}

export async function startServer(llm: LLM, opts: ServerOptions): Promise<RunningServer> {
  const engine = llm.engine;
  const metricsRegistry = new ServerMetrics(
    {
      modelName: opts.modelName,
      maxModelLen: engine.options.maxModelLen,
      blockSize: engine.options.blockSize,
      numKvBlocks: engine.pool.numBlocks,
      prefixCaching: engine.prefixCache.enabled,
    },
    () => engine.stats(),
  );
  const ctx: ServerContext = {
    llm,
    modelName: opts.modelName,
    modelRoot: llm.loaded.dir,
    metrics: metricsRegistry,
    maxWaiting: opts.maxWaiting ?? DEFAULT_MAX_WAITING,
    startedAt: Math.floor(Date.now() / 1000),
    version: opts.version,
  };
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const inFlight = new Set<ServerResponse>();
  let draining = false;
  let drained: (() => void) | undefined;

  const server = createServer((req, res) => {
    inFlight.add(res);
    res.on('close', () => {
      inFlight.delete(res);
      if (inFlight.size === 0) drained?.();
    });
    void handle(req, res);
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const arrivalMs = performance.now();
    const abort = new AbortController();
    // A client that goes away before its response is complete cancels the request (and frees its KV blocks).
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    try {
      const path = new URL(req.url ?? '/', 'http://localhost').pathname.replace(/\/+$/, '') || '/';
      const route = ROUTES[path];
      if (!route) throw new ApiError(404, `Not Found: ${req.method} ${path}`);
      const handler = route[req.method ?? ''];
      if (!handler) throw new ApiError(405, `Method ${req.method} is not allowed on ${path}; use ${Object.keys(route).join(', ')}`);
      if (draining) throw new ApiError(503, 'the server is shutting down');
      if (opts.apiKey !== undefined && path.startsWith('/v1/') && req.headers.authorization !== `Bearer ${opts.apiKey}`) {
        throw new ApiError(401, 'Unauthorized: a valid API key is required (Authorization: Bearer <key>)');
      }
      const body = req.method === 'POST' ? await readJson(req) : undefined;
      await handler(ctx, { req, res, body, signal: abort.signal, arrivalMs });
    } catch (err) {
      const e = toApiError(err);
      if (e.status >= 500 && e.status !== 503 && !abort.signal.aborted) log(`tachyon serve: ${req.method} ${req.url}: ${(err as Error)?.stack ?? String(err)}`);
      if (!res.headersSent) sendJson(res, e.status, errorBody(e.status, e.message, e.param));
      else res.destroy();
    }
  }

  // An engine step blocks the event loop for up to a prefill chunk; a short keep-alive would then
  // close idle sockets just as a client reuses them (ECONNRESET). Headers must outlast it (Node's rule).
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  server.headersTimeout = KEEP_ALIVE_MS + 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 8000, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const closed = new Promise<void>((resolve) => server.once('close', () => resolve()));

  return {
    url: `http://${host}:${addr.port}`,
    port: addr.port,
    server,
    metrics: metricsRegistry,
    async shutdown() {
      draining = true;
      server.close();
      server.closeIdleConnections();
      if (inFlight.size > 0) await new Promise<void>((resolve) => (drained = resolve));
      server.closeAllConnections();
      await closed;
    },
    async close() {
      draining = true;
      server.close();
      server.closeAllConnections();
      await closed;
    },
  };
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_BODY_BYTES) throw new ApiError(413, `the request body is larger than ${MAX_BODY_BYTES} bytes`);
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw badRequest('the connection closed before the request body was complete');
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw badRequest('the request body is empty; send a JSON object');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw badRequest(`the request body is not valid JSON: ${(err as Error).message}`);
  }
}
