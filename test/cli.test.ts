// The `tachyon` command as a user runs it: generate (streamed and --json), chat --message, errors.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { packageRoot } from '../src/model/default-model.js';

const bin = join(packageRoot(), 'bin', 'tachyon.js');
const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });

/** The CLI of the same build as this test (dist/ or another --outDir), as `tachyon ARGS`. */
const builtArgs = (args: string[]) => ['--input-type=module', '-e', `import { main } from ${JSON.stringify(new URL('../src/cli/main.js', import.meta.url).href)}; await main(process.argv);`, '--', 'tachyon', ...args];
const runBuilt = (...args: string[]) => spawnSync(process.execPath, builtArgs(args), { encoding: 'utf8', timeout: 120_000 });

let cudaReason: string | undefined;
try {
  const cuda = await import('../src/backend/cuda/cuda-backend.js');
  const opened = cuda.openCudaBackend();
  if ('reason' in opened) cudaReason = opened.reason;
} catch (err) {
  cudaReason = `the CUDA bindings did not load (${(err as Error).message.split('\n')[0]})`;
}

/** A folder with only a small Llama config.json (vocabulary 5000, beyond the default tokenizer's 4096). */
function dummyDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tachyon-cli-dummy-'));
  const config = {
    architectures: ['LlamaForCausalLM'], hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4,
    num_key_value_heads: 2, vocab_size: 5000, max_position_embeddings: 256, rms_norm_eps: 1e-5, torch_dtype: 'bfloat16',
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

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

describe('model-loading flags: --load-format, shape presets, --gpu-memory-utilization, eval --device', () => {
  it('a preset needs --load-format dummy; an unknown name lists the presets; bad values are named', () => {
    let r = runBuilt('generate', '--prompt', 'x', '--model', 'llama-3.1-8b');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^tachyon: 'llama-3\.1-8b' is a shape preset, not a checkpoint; add --load-format dummy/m);
    r = runBuilt('chat', '--message', 'x', '--model', 'llama-7b', '--load-format', 'dummy');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /'llama-7b' is neither a model directory nor a shape preset; presets: llama-3\.1-8b, .*qwen3-8b/);
    r = runBuilt('generate', '--prompt', 'x', '--load-format', 'safetensors');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--load-format 'safetensors' is not supported; supported: auto, dummy/);
    for (const bad of ['0', '1.5', '-0.2']) {
      r = runBuilt('serve', '--gpu-memory-utilization', bad);
      assert.equal(r.status, 1);
      assert.match(r.stderr, new RegExp(`--gpu-memory-utilization must be in \\(0, 1\\], got ${bad}`));
    }
    r = runBuilt('generate', '--prompt', 'x', '--gpu-memory-utilization', 'most');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--gpu-memory-utilization must be a number, got 'most'/);
    r = runBuilt('serve', '--max-num-batched-tokens', '0');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--max-num-batched-tokens must be >= 1, got 0/);
    r = runBuilt('generate', '--prompt', 'x', '--kv-cache-dtype', 'float16');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--kv-cache-dtype 'float16' is not supported; supported: auto, float32, bf16, fp8/);
    r = runBuilt('serve', '--kv-cache-dtype', 'fp8_e5m2');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--kv-cache-dtype 'fp8_e5m2' is not supported \(FP8 K and V are E4M3 here\)/);
  });

  it('generate and chat run dummy weights from a config.json-only folder, sampling only the borrowed tokenizer\'s ids', () => {
    const dir = dummyDir();
    const r = runBuilt('generate', '--model', dir, '--load-format', 'dummy', '--device', 'cpu', '--prompt', 'The robot', '--max-tokens', '16', '--temperature', '1', '--seed', '5', '--ignore-eos', '--json');
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.token_ids.length, 16);
    assert.ok(out.token_ids.every((t: number) => t < 4096), String(out.token_ids));
    assert.ok(out.weight_bytes.bf16 > 0);
    assert.match(r.stderr, /warning: .* has no tokenizer\.json: using the embedded tachyon-tiny's tokenizer/);
    // --enforce-eager (no CUDA graphs) is accepted everywhere and changes no output.
    const eager = runBuilt('generate', '--model', dir, '--load-format', 'dummy', '--device', 'cpu', '--prompt', 'The robot', '--max-tokens', '16', '--temperature', '1', '--seed', '5', '--ignore-eos', '--json', '--enforce-eager');
    assert.equal(eager.status, 0, eager.stderr);
    assert.deepEqual(JSON.parse(eager.stdout).token_ids, out.token_ids);
    // On the CPU --gpu-memory-utilization is ignored, with one warning only when it is given.
    assert.doesNotMatch(r.stderr, /gpu-memory-utilization/);
    const chat = runBuilt('chat', '--model', dir, '--load-format', 'dummy', '--device', 'cpu', '--message', 'Hi', '--max-tokens', '8', '--gpu-memory-utilization', '0.5');
    assert.equal(chat.status, 0, chat.stderr);
    assert.equal(chat.stderr.match(/warning: --gpu-memory-utilization applies to CUDA only/g)?.length, 1, chat.stderr);
  });

  it('serve takes the same flags: dummy weights from a folder start a server', async () => {
    const proc = spawn(process.execPath, builtArgs(['serve', '--model', dummyDir(), '--load-format', 'dummy', '--device', 'cpu', '--port', '0']), { stdio: ['ignore', 'pipe', 'pipe'] });
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
      const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'The robot', max_tokens: 8, ignore_eos: true }) });
      assert.equal(res.status, 200);
      const body = (await res.json()) as { usage: { completion_tokens: number } };
      assert.equal(body.usage.completion_tokens, 8);
      assert.match(stderr, /warning: .* has no tokenizer\.json/);
      proc.kill('SIGTERM');
      assert.equal(await exited, 0);
    } finally {
      proc.kill('SIGKILL');
    }
  });

  it('eval --device accepts cuda; without CUDA it fails with the reason, and an unknown device is refused', { skip: cudaReason === undefined ? 'CUDA is available here (the GPU test below runs instead)' : false }, () => {
    let r = runBuilt('eval', '--device', 'cuda', '--max-tokens-eval', '64', '--quiet');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^tachyon: device cuda: CUDA is not available: /m);
    r = runBuilt('eval', '--device', 'tpu', '--quiet');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--device 'tpu' is not supported; supported: auto, cpu, cuda/);
  });

  it('eval --device cuda scores the default model as the CPU does', { skip: cudaReason === undefined ? false : `no CUDA device: ${cudaReason}` }, () => {
    // The float32 path on both (tiled prefill GEMM, FMA decode GEMV, float32 KV): bf16 activations move logits by
    // ~1e-3 and can flip a near-tied greedy answer (cuda-cublaslt and cuda-gemv-mma tests check those).
    const report = (device: string) => {
      const args = builtArgs(['eval', '--device', device, '--kv-cache-dtype', 'float32', '--max-tokens-eval', '512', '--json', '--quiet']);
      // Each report takes about a minute alone on the GPU machine (the CPU one most); beside the other
      // suites' processes it took over two: a hang guard, not a speed bound.
      const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 360_000, env: { ...process.env, TACHYON_PREFILL_GEMM: 'tiled', TACHYON_DECODE_GEMV: 'fma' } });
      assert.equal(r.status, 0, r.signal ? `eval --device ${device} killed by ${r.signal} (over 6 minutes)` : r.stderr);
      return JSON.parse(r.stdout);
    };
    const gpu = report('cuda');
    const cpu = report('cpu');
    assert.equal(gpu.inputs.scoredTokens, cpu.inputs.scoredTokens);
    // Float32 on both; the GPU sums in another order: mean NLL within 1e-4 relative.
    const rel = Math.abs(gpu.baseline.meanNll - cpu.baseline.meanNll) / Math.abs(cpu.baseline.meanNll);
    assert.ok(rel <= 1e-4, `mean NLL ${gpu.baseline.meanNll} on CUDA, ${cpu.baseline.meanNll} on the CPU (relative difference ${rel})`);
    assert.equal(gpu.comparison.top1Agreement, 1);
    assert.deepEqual(gpu.taskResults?.map((t: { baseline: string }) => t.baseline), cpu.taskResults?.map((t: { baseline: string }) => t.baseline));
  });
});
