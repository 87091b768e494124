// The `tachyon` command as a user runs it: generate (streamed and --json), chat --message, errors.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { packageRoot } from '../src/model/default-model.js';

const bin = join(packageRoot(), 'bin', 'tachyon.js');
const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });

describe('tachyon CLI', () => {
  it('generate streams a continuation to stdout and a speed line to stderr', () => {
    const r = run('generate', '--prompt', 'The robot', '--max-tokens', '12', '--temperature', '0');
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.trim().length > 0);
    assert.match(r.stderr, /prompt \d+ tokens, output \d+ tokens, prefill [\d.]+ tok\/s, decode [\d.]+ tok\/s/);
  });

  it('generate --json prints one object with text, token ids, usage and timings, matching the streamed text', () => {
    const streamed = run('generate', '--prompt', 'The robot', '--max-tokens', '12', '--temperature', '0');
    const r = run('generate', '--prompt', 'The robot', '--max-tokens', '12', '--temperature', '0', '--json');
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(typeof out.text, 'string');
    assert.equal(out.text + '\n', streamed.stdout);
    assert.equal(out.usage.completion_tokens, out.token_ids.length);
    assert.ok(out.usage.prompt_tokens > 0);
    assert.ok(out.timings.ttft_ms > 0);
    assert.ok(Object.values(out.weight_bytes as Record<string, number>).every((b) => b > 0));
  });

  it('chat --message answers through the chat template', () => {
    const r = run('chat', '--message', 'Hello, what can you do?', '--max-tokens', '24', '--temperature', '0');
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.trim().length > 0);
  });

  it('errors name the problem and exit non-zero', () => {
    const empty = mkdtempSync(join(tmpdir(), 'tachyon-cli-'));
    let r = run('generate', '--prompt', 'x', '--model', empty);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /missing config\.json/);
    r = run('generate', '--prompt', 'x', '--temperature', 'hot');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--temperature must be a number, got 'hot'/);
    r = run('generate', '--prompt', 'x', '--top-p', '2');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /top_p must be in \(0, 1\], got 2/);
    r = run('generate', '--prompt', 'word '.repeat(300), '--max-model-len', '64');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /maximum context length is 64 tokens, but the prompt has \d+ tokens/);
  });
});
