// `tachyon serve`: load a model and serve the OpenAI-compatible HTTP API (src/server) until SIGTERM
// or SIGINT, which stop accepting requests, let the running ones finish, and exit.

import { Command, InvalidArgumentError } from 'commander';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { kvBytesPerToken } from '../engine/kv-cache.js';
import { CapacityError, InvalidRequestError } from '../errors.js';
import { LLM } from '../llm.js';
import { DEFAULT_MODEL_NAME, packageRoot } from '../model/default-model.js';
import { DEFAULT_MAX_WAITING, startServer } from '../server/app.js';
import { addModelOptions, intArg, loadOptionsFrom, printLoadMessages, type ModelFlags } from './options.js';

interface ServeFlags extends ModelFlags {
  host: string;
  port: number;
  servedModelName?: string;
  maxNumSeqs: number;
  maxNumBatchedTokens?: number;
  kvCacheMemory?: number;
  enablePrefixCaching: boolean;
  apiKey?: string;
  maxWaiting: number;
}

/** "1073741824", "1GiB", "512MiB", "2GB", "1.5G": bytes (K/M/G/T are powers of 1000, KiB/MiB/GiB/TiB of 1024). */
export function parseBytes(v: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(i)?b?)?\s*$/i.exec(v);
  if (!m) throw new InvalidArgumentError(`--kv-cache-memory must be a number of bytes such as 1073741824, 512MiB or 2GB, got '${v}'`);
  const power = m[2] ? 'kmgt'.indexOf(m[2].toLowerCase()) + 1 : 0;
  const bytes = Math.floor(Number(m[1]) * (m[3] ? 1024 : 1000) ** power);
  if (bytes <= 0) throw new InvalidArgumentError(`--kv-cache-memory must be positive, got '${v}'`);
  return bytes;
}

export function serveCommand(): Command {
  const cmd = new Command('serve')
    .description('serve the OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /metrics, ...)')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0 = any free port)', intArg('--port'), 8000)
    .option('--served-model-name <name>', 'the model name clients send (default: the --model argument, or tachyon-tiny)')
    .option('--max-num-seqs <n>', 'most sequences in one engine step', intArg('--max-num-seqs'), 64)
    .option('--max-num-batched-tokens <n>', 'most tokens in one engine step; longer prompts are prefilled in chunks (default 2048; on CUDA lowered until a step\'s activations fit)', intArg('--max-num-batched-tokens'))
    .option('--kv-cache-memory <bytes>', 'memory for the KV cache, e.g. 268435456 or 256MiB (default: on CUDA what --gpu-memory-utilization leaves; on the CPU room for max(max-model-len, 8192) tokens)', parseBytes)
    .option('--no-enable-prefix-caching', 'do not share the KV blocks of common prompt prefixes between requests')
    .option('--api-key <key>', 'require Authorization: Bearer <key> on /v1/* requests')
    .option('--max-waiting <n>', 'most sequences queued for the engine; beyond it requests get 503', intArg('--max-waiting'), DEFAULT_MAX_WAITING);
  addModelOptions(cmd);
  return cmd.action(async (flags: ServeFlags) => {
    for (const [name, value] of [['--max-num-seqs', flags.maxNumSeqs], ['--max-num-batched-tokens', flags.maxNumBatchedTokens], ['--max-waiting', flags.maxWaiting]] as const) {
      if (value !== undefined && value < 1) throw new InvalidRequestError(`${name} must be >= 1, got ${value}`);
    }
    const llm = await LLM.load({
      ...loadOptionsFrom(flags),
      maxNumSeqs: flags.maxNumSeqs,
      maxNumBatchedTokens: flags.maxNumBatchedTokens,
      kvCacheMemoryBytes: flags.kvCacheMemory,
      enablePrefixCaching: flags.enablePrefixCaching,
    });
    printLoadMessages(llm);
    // As vLLM: a server whose cache cannot hold one request of the full context refuses to start.
    const { maxModelLen, blockSize } = llm.engine.options;
    const kvTokens = llm.engine.pool.numBlocks * blockSize;
    if (kvTokens < maxModelLen) {
      const perToken = kvBytesPerToken(llm.config, llm.loaded.model.backend.kvDtype);
      throw new CapacityError(
        `the KV cache holds ${kvTokens} tokens, fewer than max_model_len ${maxModelLen}: give --kv-cache-memory at least ` +
          `${Math.ceil(maxModelLen / blockSize) * blockSize * perToken} bytes (${perToken} bytes per token) or lower --max-model-len`,
      );
    }
    const version = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')).version as string;
    const modelName = flags.servedModelName ?? flags.model ?? DEFAULT_MODEL_NAME;
    const server = await startServer(llm, { host: flags.host, port: flags.port, modelName, apiKey: flags.apiKey, maxWaiting: flags.maxWaiting, version });
    process.stdout.write(`tachyon serve: ${modelName} at ${server.url} (OpenAI API under ${server.url}/v1; max_model_len ${maxModelLen}, KV cache ${kvTokens} tokens)\n`);

    await new Promise<void>((resolve) => {
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) process.exit(130); // a second signal: do not wait any longer
        stopping = true;
        process.stderr.write(`tachyon serve: ${signal}: no new requests; finishing ${llm.engine.numRunning + llm.engine.numWaiting} in flight\n`);
        void server.shutdown().then(async () => {
          await llm.close();
          resolve();
        });
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
    });
    process.stderr.write('tachyon serve: stopped\n');
  });
}
