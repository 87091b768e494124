// `tachyon bench sweep`: the same benchmark over a list of concurrencies and, optionally, over
// server configurations it starts itself (a `tachyon serve` per configuration on a free port,
// waited for on /health, stopped after). Every run is a vLLM-compatible result with its config.

import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { InvalidRequestError } from '../errors.js';
import { packageRoot } from '../model/default-model.js';
import { httpGet } from './load-generator.js';
import { benchServe, type ServeBenchOptions } from './serve-benchmark.js';

/** One server configuration: a name for reports and the flags `tachyon serve` gets. */
export interface ServerConfig {
  name: string;
  args: string[];
}

/** Object keys as flags: {quantization: 'fp8', max_num_seqs: 8, enforce_eager: true} → --quantization fp8 --max-num-seqs 8 --enforce-eager. */
export function flagsFromObject(obj: Record<string, unknown>): string[] {
  const args: string[] = [];
  for (const [key, value] of Object.entries(obj)) {
    if (value === undefined || value === null || value === false) continue;
    const flag = `--${key.replace(/_/g, '-')}`;
    if (value === true) args.push(flag);
    else if (Array.isArray(value)) for (const v of value) args.push(flag, typeof v === 'object' ? JSON.stringify(v) : String(v));
    else args.push(flag, typeof value === 'object' ? JSON.stringify(value) : String(value));
  }
  return args;
}

/**
 * A --server-configs file: a JSON array whose entries are {"name"?, "args": [...]} or flag objects
 * in the style of `vllm bench sweep --serve-params` ({"quantization": "fp8", "speculative_config": {...}}).
 */
export function parseServerConfigs(raw: unknown, source: string): ServerConfig[] {
  if (!Array.isArray(raw) || raw.length === 0) throw new InvalidRequestError(`${source}: expected a non-empty JSON array of server configurations`);
  return raw.map((entry, i) => {
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw new InvalidRequestError(`${source}[${i}]: each configuration is a JSON object`);
    const { name, args, ...flags } = entry as Record<string, unknown>;
    if (args !== undefined && !(Array.isArray(args) && args.every((a) => typeof a === 'string'))) throw new InvalidRequestError(`${source}[${i}].args must be a list of strings`);
    const all = [...((args as string[] | undefined) ?? []), ...flagsFromObject(flags)];
    const label = typeof name === 'string' && name ? name : Object.keys(flags).length || all.length ? describeArgs(all) : 'default';
    return { name: label, args: all };
  });
}

/** The cross product of --quantization a,b and --speculative-config values ("none" = without). */
export function serverConfigsFromFlags(quantizations: string[] = [], speculativeConfigs: string[] = [], kvCacheDtypes: string[] = []): ServerConfig[] {
  const quants = quantizations.length ? quantizations : [undefined];
  const specs = speculativeConfigs.length ? speculativeConfigs : [undefined];
  const kvs = kvCacheDtypes.length ? kvCacheDtypes : [undefined];
  const out: ServerConfig[] = [];
  for (const q of quants) {
    for (const kv of kvs) for (const s of specs) {
      const args: string[] = [];
      const name: string[] = [];
      if (q && q !== 'none') args.push('--quantization', q);
      name.push(q ? `quantization=${q}` : 'quantization=none');
      if (kv) {
        args.push('--kv-cache-dtype', kv);
        name.push(`kv=${kv}`);
      }
      if (s && s !== 'none') {
        let parsed: unknown;
        try {
          parsed = JSON.parse(s);
        } catch {
          throw new InvalidRequestError(`--speculative-config '${s}' is not JSON (e.g. '{"method":"eagle3","model":"DIR","num_speculative_tokens":3}')`);
        }
        args.push('--speculative-config', JSON.stringify(parsed));
        const p = parsed as Record<string, unknown>;
        name.push(`spec=${String(p.method ?? 'draft')}${p.num_speculative_tokens !== undefined ? `x${String(p.num_speculative_tokens)}` : ''}`);
      } else if (speculativeConfigs.length) name.push('spec=none');
      out.push({ name: name.join(','), args });
    }
  }
  return out;
}

function describeArgs(args: string[]): string {
  const parts: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith('--')) continue;
    const next = args[i + 1];
    if (next !== undefined && !next.startsWith('--')) {
      parts.push(`${a.slice(2)}=${next.length > 40 ? next.slice(0, 37) + '...' : next}`);
      i++;
    } else parts.push(a.slice(2));
  }
  return parts.join(',') || 'default';
}

/** Split a command line on spaces, honouring single and double quotes (no other shell syntax). */
export function splitCommandLine(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quote: string | undefined;
  let has = false;
  for (const ch of line) {
    if (quote) {
      if (ch === quote) quote = undefined;
      else cur += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      has = true;
    } else if (/\s/.test(ch)) {
      if (has || cur) out.push(cur);
      cur = '';
      has = false;
    } else cur += ch;
  }
  if (quote) throw new InvalidRequestError(`unbalanced quote in '${line}'`);
  if (has || cur) out.push(cur);
  return out;
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface ManagedServer {
  baseUrl: string;
  child: ChildProcess;
  /** The last lines the server printed (for error messages). */
  logTail(): string;
  stop(): Promise<void>;
}

/** The command that starts a server: this package's `tachyon serve`. */
export function defaultServeCommand(): string[] {
  return [process.execPath, join(packageRoot(), 'bin', 'tachyon.js'), 'serve'];
}

/** Start `command ... --host 127.0.0.1 --port P args` and wait until GET /health answers 200. */
export async function startServer(command: string[], args: string[], timeoutS: number): Promise<ManagedServer> {
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const [exe, ...pre] = command;
  if (!exe) throw new InvalidRequestError('empty --serve-command');
  const child = spawn(exe, [...pre, '--host', '127.0.0.1', '--port', String(port), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const keep = (b: Buffer) => {
    for (const l of b.toString('utf8').split('\n')) if (l.trim()) lines.push(l);
    if (lines.length > 40) lines.splice(0, lines.length - 40);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exited: string | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    child.on('exit', (code, signal) => {
      exited = signal ? `signal ${signal}` : `exit code ${code}`;
      resolve();
    });
    child.on('error', (err) => {
      exited = err.message;
      resolve();
    });
  });
  const server: ManagedServer = {
    baseUrl,
    child,
    logTail: () => lines.slice(-15).join('\n'),
    stop: async () => {
      if (exited !== undefined) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exitPromise;
      clearTimeout(timer);
    },
  };
  const deadline = Date.now() + timeoutS * 1000;
  for (;;) {
    if (exited !== undefined) throw new InvalidRequestError(`the server (${[exe, ...pre].join(' ')} ${args.join(' ')}) stopped before it was ready (${exited}):\n${server.logTail()}`);
    const res = await httpGet(`${baseUrl}/health`, {}, 2000).catch(() => undefined);
    if (res?.status === 200) return server;
    if (Date.now() > deadline) {
      await server.stop();
      throw new InvalidRequestError(`the server did not answer ${baseUrl}/health within ${timeoutS} s:\n${server.logTail()}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

export interface SweepOptions {
  /** The benchmark every run repeats; maxConcurrency is set per run. */
  bench: ServeBenchOptions;
  concurrencies: number[];
  /** Servers to start; none = benchmark the server at --base-url / --host / --port as it is. */
  serverConfigs?: ServerConfig[];
  serveCommand: string[];
  /** Flags every started server gets (before its configuration's). */
  serveArgs: string[];
  serverTimeoutS: number;
  /** Called after every run with the runs so far (to save progress). */
  onRun?: (runs: Record<string, unknown>[]) => void;
}

/** Run the sweep; returns the list of run results (each with x_config). */
export async function runSweep(o: SweepOptions): Promise<Record<string, unknown>[]> {
  if (o.concurrencies.length === 0 || o.concurrencies.some((c) => !(Number.isInteger(c) && c > 0))) {
    throw new InvalidRequestError(`--concurrency needs positive integers, got ${o.concurrencies.join(',')}`);
  }
  const runs: Record<string, unknown>[] = [];
  const configs: (ServerConfig | undefined)[] = o.serverConfigs?.length ? o.serverConfigs : [undefined];
  const errors: string[] = [];
  for (const cfg of configs) {
    let server: ManagedServer | undefined;
    // Ctrl-C must not leave a server behind: stop it, then exit as the signal would have.
    const stopOnSignal = () => void (server ? server.stop() : Promise.resolve()).finally(() => process.exit(130));
    try {
      if (cfg) {
        o.bench.log(`Starting server '${cfg.name}': ${[...o.serveCommand, ...o.serveArgs, ...cfg.args].join(' ')}`);
        server = await startServer(o.serveCommand, [...o.serveArgs, ...cfg.args], o.serverTimeoutS);
        process.once('SIGINT', stopOnSignal);
        o.bench.log(`Server '${cfg.name}' is ready at ${server.baseUrl}`);
      }
      for (const c of o.concurrencies) {
        o.bench.log(`--- ${cfg ? `config '${cfg.name}', ` : ''}max concurrency ${c} ---`);
        const run = await benchServe({
          ...o.bench,
          ...(server ? { baseUrl: server.baseUrl } : {}),
          maxConcurrency: c,
          extras: { ...(o.bench.extras ?? {}), x_config: { name: cfg?.name ?? 'default', server_args: cfg ? [...o.serveArgs, ...cfg.args] : null } },
        });
        o.bench.log(run.summary.trimEnd());
        runs.push(run.result);
        o.onRun?.(runs);
      }
    } catch (err) {
      if (!cfg) throw err;
      const msg = `configuration '${cfg.name}' failed: ${(err as Error).message}`;
      errors.push(msg);
      o.bench.log(msg);
    } finally {
      process.removeListener('SIGINT', stopOnSignal);
      await server?.stop();
    }
  }
  if (runs.length === 0) throw new InvalidRequestError(`every configuration failed:\n${errors.join('\n')}`);
  return runs;
}
