// Drives one benchmark run against a server: optional ready check and warm-ups, a /metrics scrape,
// requests released on their arrival schedule and gated by the --max-concurrency semaphore, the
// duration clock around the dispatch loop only, and a second scrape for spec-decode deltas.

import http from 'node:http';
import https from 'node:https';
import { arrivalTimes, type RampUpStrategy } from './arrivals.js';
import type { SampleRequest } from './datasets.js';
import type { RequestOutput } from './metrics.js';
import { parseSpecDecodeCounters, specDecodeDelta, type SpecDecodeStats } from './prometheus.js';
import { now, sendStreamingRequest, type BackendName, type CompatMode, type RequestInput } from './request.js';

export interface LoadOptions {
  backend: BackendName;
  compat: CompatMode;
  apiUrl: string;
  /** Server root, for /metrics. */
  baseUrl: string;
  /** The body's `model`. */
  model: string;
  requests: SampleRequest[];
  requestRate: number;
  burstiness: number;
  seed: number;
  rampUp?: { strategy: RampUpStrategy; startRps: number; endRps: number };
  maxConcurrency?: number;
  numWarmups: number;
  ignoreEos: boolean;
  logprobs?: number;
  extraBody?: Record<string, unknown>;
  headers?: Record<string, string>;
  requestIdPrefix: string;
  /** Send request #0 until it succeeds, up to this many seconds, before anything else (0 = skip). */
  readyCheckTimeoutS?: number;
  timeoutMs?: number;
  onProgress?: (phase: 'warmup' | 'benchmark', done: number, total: number) => void;
  log?: (line: string) => void;
}

export interface LoadResult {
  outputs: RequestOutput[];
  /** From just before the dispatch loop to the last request's end, in seconds. */
  durationS: number;
  specDecode?: SpecDecodeStats;
  /** Whether the server answered /metrics with spec-decode counters at all. */
  serverHasSpecDecodeMetrics: boolean;
}

/** A counting semaphore: at most `limit` holders at once (Infinity = no limit). */
export class Semaphore {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly limit: number) {}
  async acquire(): Promise<void> {
    if (this.active < this.limit) {
      this.active++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }
  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.active--;
  }
}

const sleep = (s: number) => new Promise((r) => setTimeout(r, Math.max(0, s * 1000)));

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  if (o.requests.length === 0) throw new RangeError('no requests to send');
  const limit = o.maxConcurrency ?? Infinity;
  const client = new URL(o.apiUrl).protocol === 'https:' ? https : http;
  const agent = new client.Agent({ keepAlive: true, maxSockets: limit });
  const ctx = { backend: o.backend, compat: o.compat, agent, timeoutMs: o.timeoutMs };
  const input = (r: SampleRequest, id?: string): RequestInput => ({
    apiUrl: o.apiUrl,
    model: o.model,
    prompt: r.prompt,
    promptLen: r.promptLen,
    outputLen: r.expectedOutputLen,
    ignoreEos: o.ignoreEos,
    logprobs: o.logprobs,
    extraBody: o.extraBody,
    headers: o.headers,
    requestId: id,
  });
  const log = o.log ?? (() => {});
  try {
    const test = input(o.requests[0]!);
    if (o.readyCheckTimeoutS && o.readyCheckTimeoutS > 0) {
      const deadline = now() + o.readyCheckTimeoutS;
      for (;;) {
        const out = await sendStreamingRequest(ctx, test);
        if (out.success) break;
        if (now() > deadline) throw new Error(`the endpoint was not ready within ${o.readyCheckTimeoutS} s: ${out.error}`);
        await sleep(1);
      }
    }

    if (o.numWarmups > 0) {
      log(`Warming up with ${o.numWarmups} requests...`);
      const sem = new Semaphore(limit);
      let done = 0;
      await Promise.all(
        Array.from({ length: o.numWarmups }, async () => {
          await sem.acquire();
          try {
            await sendStreamingRequest(ctx, test);
          } finally {
            sem.release();
            o.onProgress?.('warmup', ++done, o.numWarmups);
          }
        }),
      );
      log('Warmup run completed.');
    }

    const before = await scrapeSpecDecode(o.baseUrl, o.headers);
    const times = arrivalTimes(o.requests.length, { requestRate: o.requestRate, burstiness: o.burstiness, seed: o.seed, rampUp: o.rampUp });
    const sem = new Semaphore(limit);
    let done = 0;
    const t0 = now();
    const tasks: Promise<RequestOutput>[] = [];
    for (let i = 0; i < o.requests.length; i++) {
      const wait = t0 + times[i]! - now();
      if (wait > 0) await sleep(wait);
      const arrival = now();
      const req = input(o.requests[i]!, `${o.requestIdPrefix}${i}`);
      tasks.push(
        (async () => {
          await sem.acquire();
          let out: RequestOutput;
          try {
            out = await sendStreamingRequest(ctx, req);
          } finally {
            sem.release();
          }
          // start_time stays the send time; the semaphore wait is recorded separately.
          out.clientQueueTime = out.startTime - arrival;
          o.onProgress?.('benchmark', ++done, o.requests.length);
          return out;
        })(),
      );
    }
    const outputs = await Promise.all(tasks);
    const durationS = now() - t0;
    const after = await scrapeSpecDecode(o.baseUrl, o.headers);
    return { outputs, durationS, specDecode: specDecodeDelta(before, after), serverHasSpecDecodeMetrics: after !== undefined };
  } finally {
    agent.destroy();
  }
}

async function scrapeSpecDecode(baseUrl: string, headers?: Record<string, string>) {
  const res = await httpGet(`${baseUrl}/metrics`, headers, 10_000).catch(() => undefined);
  return res && res.status === 200 ? parseSpecDecodeCounters(res.body) : undefined;
}

/** A plain GET with its own connection (no pool left open behind it). */
export function httpGet(url: string, headers: Record<string, string> = {}, timeoutMs = 30_000): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  const client = u.protocol === 'https:' ? https : http;
  const key = process.env.OPENAI_API_KEY;
  const h: Record<string, string> = { ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers };
  return new Promise((resolve, reject) => {
    const req = client.get(u, { headers: h, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => (body += s));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${url} timed out after ${timeoutMs / 1000} s`)));
  });
}

/** A JSON POST with its own connection; resolves with the status and parsed body (undefined if not JSON). */
export function httpPostJson(url: string, body: unknown, headers: Record<string, string> = {}, timeoutMs = 30_000): Promise<{ status: number; json: unknown }> {
  const u = new URL(url);
  const client = u.protocol === 'https:' ? https : http;
  const key = process.env.OPENAI_API_KEY;
  const h: Record<string, string> = { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers };
  return new Promise((resolve, reject) => {
    const req = client.request(u, { method: 'POST', headers: h, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => (text += s));
      res.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`POST ${url} timed out after ${timeoutMs / 1000} s`)));
    req.end(JSON.stringify(body));
  });
}
