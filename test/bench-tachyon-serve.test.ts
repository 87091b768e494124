// The benchmark client against the real `tachyon serve` on the embedded default model: exact token
// counts from the server's usage (random prompts of exactly --random-input-len tokens, forced
// ignore_eos), completions and chat, a sweep that starts one server per quantization, and — when
// the server offers --speculative-config — acceptance metrics scraped from its /metrics.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_DATASET_OPTIONS, benchServe, type ServeBenchOptions } from '../src/bench/serve-benchmark.js';
import { benchOptions } from './support/bench-options.js';
import { defaultServeCommand, startServer, type ManagedServer } from '../src/bench/sweep.js';
import { embeddedModelDir, packageRoot } from '../src/model/default-model.js';

const bin = join(packageRoot(), 'bin', 'tachyon.js');
const work = mkdtempSync(join(tmpdir(), 'tachyon-bench-serve-'));

function options(baseUrl: string, o: Partial<ServeBenchOptions> = {}): ServeBenchOptions {
  return benchOptions(baseUrl, {
    dataset: { ...DEFAULT_DATASET_OPTIONS, randomInputLen: 32, randomOutputLen: 12 },
    numPrompts: 8,
    maxConcurrency: 4,
    numWarmups: 1,
    sampling: { temperature: 0 },
    ...o,
  });
}

describe('bench serve against tachyon serve (tachyon-tiny)', { timeout: 240_000 }, () => {
  let server: ManagedServer;
  before(async () => {
    server = await startServer(defaultServeCommand(), ['--max-model-len', '512'], 120);
  });
  after(async () => {
    await server?.stop();
  });

  it('completions: usage gives exact input and output token counts; timings are consistent', async () => {
    const run = await benchServe(options(server.baseUrl));
    const r = run.result;
    assert.equal(r.failed, 0, JSON.stringify(r.errors));
    assert.equal(r.completed, 8);
    assert.equal(r.model_id, 'tachyon-tiny');
    assert.equal(r.tokenizer_id, embeddedModelDir('tachyon-tiny'), 'tokenizer from the /v1/models root');
    assert.equal(r.total_input_tokens, 8 * 32, 'random prompts are exactly 32 tokens as the server counts them');
    assert.equal(r.total_output_tokens, 8 * 12, 'ignore_eos runs every request to max_tokens');
    assert.deepEqual(r.x_output_token_sources, { usage: 8, tokenizer: 0, fallback: 0 });
    assert.equal(r.x_prompts_realigned, 0, 'the server\'s /tokenize agrees with our tokenizer');
    const ttfts = r.ttfts as number[];
    const lat = r.latencies as number[];
    const itls = r.itls as number[][];
    for (let i = 0; i < 8; i++) {
      assert.ok(ttfts[i]! > 0 && lat[i]! >= ttfts[i]!);
      assert.ok(itls[i]!.length >= 1 && itls[i]!.length <= 11, `${itls[i]!.length} chunks after the first`);
      // The gaps between chunks add up to E2EL − TTFT.
      assert.ok(Math.abs(itls[i]!.reduce((a, b) => a + b, 0) - (lat[i]! - ttfts[i]!)) < 1e-6);
    }
    const tpots = lat.map((l, i) => (l - ttfts[i]!) / 11);
    assert.ok(Math.abs((r.mean_tpot_ms as number) - (tpots.reduce((a, b) => a + b, 0) / 8) * 1000) < 1e-6);
    assert.ok((r.max_concurrent_requests as number) <= 4 && (r.max_concurrent_requests as number) >= 1);
    assert.equal(r.spec_decode_acceptance_rate, undefined, 'no speculative decoding configured');
    assert.match(run.summary, /Successful requests:\s+8/);
  });

  it('chat completions through the chat template', async () => {
    const r = (await benchServe(options(server.baseUrl, { backend: 'openai-chat', numPrompts: 4, numWarmups: 0 }))).result;
    assert.equal(r.completed, 4, JSON.stringify(r.errors));
    assert.ok((r.total_input_tokens as number) > 4 * 32, 'the chat template adds tokens around the raw prompt');
    assert.equal(r.total_output_tokens, 4 * 12);
  });

  it('speculative decoding: acceptance from /metrics (when tachyon serve supports --speculative-config)', async (t) => {
    const help = spawnSync(process.execPath, [bin, 'serve', '--help'], { encoding: 'utf8', timeout: 30_000 });
    if (!help.stdout.includes('--speculative-config')) {
      t.skip('tachyon serve has no --speculative-config yet');
      return;
    }
    const spec = JSON.stringify({ method: 'draft_model', model: embeddedModelDir('tachyon-tiny-draft'), num_speculative_tokens: 3 });
    const s = await startServer(defaultServeCommand(), ['--max-model-len', '512', '--speculative-config', spec], 120);
    try {
      const r = (await benchServe(options(s.baseUrl, { numPrompts: 4 }))).result;
      assert.equal(r.completed, 4, JSON.stringify(r.errors));
      assert.equal(r.total_output_tokens, 4 * 12);
      assert.ok((r.spec_decode_num_drafts as number) > 0);
      const rate = r.spec_decode_acceptance_rate as number;
      assert.ok(rate >= 0 && rate <= 100);
      const len = r.spec_decode_acceptance_length as number;
      assert.ok(len >= 1 && len <= 4);
      const perPos = r.spec_decode_per_position_acceptance_rates as number[];
      assert.equal(perPos.length, 3);
      assert.ok(perPos.every((p, i) => p >= 0 && p <= 1 && (i === 0 || p <= perPos[i - 1]! + 1e-9)), 'a later position is accepted no more often than an earlier one');
    } finally {
      await s.stop();
    }
  });
});

describe('bench sweep starting tachyon serve per configuration, then report', { timeout: 240_000 }, () => {
  it('runs quantization none and fp8 at concurrency 1 and 2', () => {
    const out = join(work, 'sweep.json');
    const r = spawnSync(
      process.execPath,
      [bin, 'bench', 'sweep', '--concurrency', '1,2', '--quantization', 'none,fp8', '--serve-args', '--max-model-len 256', '--num-prompts', '3', '--random-input-len', '16', '--random-output-len', '6', '--temperature', '0', '--output', out, '--disable-tqdm'],
      { encoding: 'utf8', timeout: 200_000 },
    );
    assert.equal(r.status, 0, r.stderr + r.stdout);
    const runs = JSON.parse(readFileSync(out, 'utf8')) as Record<string, unknown>[];
    assert.deepEqual(
      runs.map((x) => [(x.x_config as { name: string }).name, x.max_concurrency, x.completed, x.total_output_tokens]),
      [
        ['quantization=none', 1, 3, 18],
        ['quantization=none', 2, 3, 18],
        ['quantization=fp8', 1, 3, 18],
        ['quantization=fp8', 2, 3, 18],
      ],
    );
    assert.deepEqual((runs[2]!.x_config as { server_args: string[] }).server_args, ['--max-model-len', '256', '--quantization', 'fp8']);
    const html = join(work, 'report.html');
    const rep = spawnSync(process.execPath, [bin, 'report', out, '--output', html], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(rep.status, 0, rep.stderr);
    const page = readFileSync(html, 'utf8');
    const throughput = page.slice(page.indexOf('id="throughput"'), page.indexOf('</svg>', page.indexOf('id="throughput"')));
    assert.equal(throughput.match(/class="point"/g)?.length, 4);
  });
});
