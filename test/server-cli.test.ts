// `tachyon serve` as a user runs it: the embedded default model served on a free port, the URL
// printed when ready, SIGTERM finishing the request in flight before exiting, and start-up errors.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import OpenAI from 'openai';
import { packageRoot } from '../src/model/default-model.js';

const bin = join(packageRoot(), 'bin', 'tachyon.js');

describe('tachyon serve (command line)', () => {
  it('serves the default model, prints its URL, and on SIGTERM finishes the request in flight, then exits 0', async () => {
    const proc = spawn(process.execPath, [bin, 'serve', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        proc.stdout.on('data', (d) => {
          out += d;
          const m = /at (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
          if (m) resolve(m[1]);
        });
        proc.on('exit', () => reject(new Error(`serve exited before it was ready: ${stderr}`)));
      });
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
      const models = await client.models.list();
      assert.equal(models.data[0].id, 'tachyon-tiny');

      const stream = await client.completions.create({ model: 'tachyon-tiny', prompt: 'The robot', max_tokens: 64, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } } as OpenAI.CompletionCreateParamsStreaming);
      let last: OpenAI.Completion | undefined;
      let signalled = false;
      for await (const c of stream) {
        last = c;
        if (!signalled) {
          proc.kill('SIGTERM');
          signalled = true;
        }
      }
      assert.equal(last!.usage!.completion_tokens, 64, 'the request in flight ran to the end');
      assert.equal(await exited, 0);
      assert.match(stderr, /SIGTERM: no new requests/);
    } finally {
      proc.kill('SIGKILL');
    }
  });

  it('refuses to start when the KV cache cannot hold one request of max_model_len, naming the bytes needed', () => {
    const r = spawnSync(process.execPath, [bin, 'serve', '--port', '0', '--kv-cache-memory', '1MiB'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 1);
    // tachyon-tiny: 2 × 8 layers × 2 kv heads × 32 dims × 4 bytes = 4096 bytes per token; 1 MiB = 256 tokens < 2048.
    assert.match(r.stderr, /the KV cache holds 256 tokens, fewer than max_model_len 2048: give --kv-cache-memory at least 8388608 bytes/);
    const bad = spawnSync(process.execPath, [bin, 'serve', '--kv-cache-memory', 'lots'], { encoding: 'utf8', timeout: 60_000 });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /--kv-cache-memory must be a number of bytes/);
  });
});
