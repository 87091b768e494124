// `tachyon eval` over a small random model with a real tokenizer: a model against itself, against its
// quantized versions, greedy task accuracy, and the command line.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { evaluate, prepareInputs, SequenceLogits, tokenizeText, type EvalReport } from '../src/eval/evaluate.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { LLM } from '../src/llm.js';
import { packageRoot } from '../src/model/default-model.js';
import { fixturesDir } from './support/paths.js';
import { argmax, loadLlama, ModelRunner } from './support/run-model.js';
import { TINY_LLAMA, tinyTensors, writeTinyCheckpoint } from './support/tiny-checkpoint.js';

const TEXT =
  'Once upon a time, a small robot named Pico lived in a workshop by the sea. Every morning Pico checked its battery, ' +
  'calibrated the lidar and rolled to the window to watch the boats. One day the power went out, and the workshop was dark. ' +
  'Pico remembered the old solar panel on the roof. It climbed the ladder, wiped the dust away and plugged the cable in. ' +
  'Slowly the lights came back. The engineer smiled: "Good work, Pico." The robot beeped twice, which meant thank you.';

/**
 * A random Llama checkpoint whose vocabulary covers the byte-level Llama 3 fixture tokenizer (1009 ids). Its
 * projections are scaled down to std 0.06: at tinyTensors' 0.3 every layer amplifies its input several times,
 * so the network is chaotic and any rounding flips most argmaxes — unlike a trained model, whose layers add
 * small updates to the residual stream.
 */
function modelDir(): string {
  // A third of the ids end generation, so greedy answers of a random model stop after a few tokens.
  const eos = Array.from({ length: 1024 }, (_, i) => i).filter((i) => i % 3 === 0);
  const cfg = { ...TINY_LLAMA, vocab_size: 1024, max_position_embeddings: 256, bos_token_id: 1004, eos_token_id: eos };
  const tensors = tinyTensors(cfg);
  for (const [name, t] of Object.entries(tensors)) {
    if (!name.endsWith('_proj.weight')) continue;
    const w = new Float32Array(t.bytes.slice().buffer);
    for (let i = 0; i < w.length; i++) w[i] *= 0.2;
    tensors[name] = { ...t, bytes: new Uint8Array(w.buffer) };
  }
  const dir = writeTinyCheckpoint(cfg, tensors);
  const tok = join(fixturesDir(), 'tokenizers', 'byte-level-llama3');
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(tok, f), join(dir, f));
  return dir;
}

describe('tachyon eval', () => {
  let dir: string;
  before(() => {
    dir = modelDir();
  });

  it('scores every position from one forward, with the logits token-by-token decoding gives', async () => {
    // float32 K and V (CUDA's default is bf16), as the CPU runner below keeps them.
    const llm = await LLM.load({ model: dir, kvCacheDtype: 'float32' });
    const inputs = prepareInputs(llm, TEXT, [], { contextLen: 24, maxTokensEval: 40 });
    assert.equal(inputs.textTokens, 40);
    assert.ok(inputs.textTokensAvailable > 100);
    // BOS + 23 text tokens, then BOS + 17: all 40 text tokens are targets.
    assert.deepEqual(inputs.windows.map((w) => w.length), [24, 18]);
    assert.ok(inputs.windows.every((w) => w[0] === 1004));
    assert.equal(inputs.targets.length, 40);
    const window = inputs.windows[0];
    const all = new SequenceLogits(llm.loaded.model, 24).run(window);
    const runner = new ModelRunner(loadLlama(dir), 16, 4);
    const vocab = llm.config.vocabSize;
    for (let p = 0; p < window.length; p++) {
      const [step] = runner.step([{ seq: 0, start: p, tokens: [window[p]] }]);
      for (let v = 0; v < vocab; v++) assert.ok(Math.abs(step[v] - all[p * vocab + v]) < 1e-4, `position ${p} token ${v}`);
      assert.equal(argmax(step), argmax(all, p * vocab, vocab));
    }
    await llm.close();
  });

  it('text in the model\'s own format is read as documents, without the newline between them', () => {
    const tok = Tokenizer.load(join(fixturesDir(), 'tokenizers', 'byte-level-llama3'));
    const a = '<|begin_of_text|>Hello there.<|end_of_text|>';
    const b = '<|begin_of_text|>Second doc.\n\nWith a blank line.<|end_of_text|>';
    const ids = tokenizeText(tok, `${a}\n${b}\n`);
    assert.deepEqual(ids, [...tok.encode(a, { addSpecialTokens: false }), ...tok.encode(b, { addSpecialTokens: false })]);
    assert.equal(ids.filter((t) => t === tok.bosTokenId).length, 2);
    // Plain text is tokenized as it is, newlines included.
    assert.deepEqual(tokenizeText(tok, 'One.\nTwo.\n'), tok.encode('One.\nTwo.\n', { addSpecialTokens: false }));
  });

  it('a model against itself: PPL ratio 1, KLD 0, top-1 agreement 1', async () => {
    const r = await evaluate({ baseline: { model: dir }, candidate: { model: dir }, text: TEXT, contextLen: 64, maxTokensEval: 200 });
    assert.equal(r.inputs.scoredTokens, 200);
    assert.equal(r.inputs.windows, 4);
    assert.equal(r.comparison.pplRatio, 1);
    assert.equal(r.comparison.lnPplRatio, 0);
    assert.equal(r.comparison.kld.mean, 0);
    assert.equal(r.comparison.kld.max, 0);
    assert.equal(r.comparison.top1Agreement, 1);
    assert.equal(r.baseline.perplexity, r.candidate.perplexity);
    // A random model predicts text badly: perplexity in the thousands for 1024 ids.
    assert.ok(r.baseline.perplexity > 100 && Number.isFinite(r.baseline.perplexity), `perplexity ${r.baseline.perplexity}`);
    assert.equal(r.baseline.weightBytes, r.candidate.weightBytes);
  });

  it('the KV cache\'s element type as the candidate: bf16 and fp8 K and V against float32, fp8 further off, the types in the report', async () => {
    const against = (kvCacheDtype: 'bf16' | 'fp8') =>
      evaluate({ baseline: { model: dir, kvCacheDtype: 'float32' }, candidate: { model: dir, kvCacheDtype }, text: TEXT, contextLen: 64, maxTokensEval: 200 });
    const bf16 = await against('bf16');
    const fp8 = await against('fp8');
    assert.equal(fp8.baseline.kvCacheDtype, 'float32');
    assert.equal(fp8.candidate.kvCacheDtype, 'fp8');
    assert.equal(fp8.candidate.weightBytes, fp8.baseline.weightBytes);
    assert.ok(bf16.comparison.kld.mean > 0, 'bf16 rounding of K and V moves the logits');
    assert.ok(fp8.comparison.kld.mean > bf16.comparison.kld.mean, `fp8 ${fp8.comparison.kld.mean} vs bf16 ${bf16.comparison.kld.mean}`);
    assert.ok(fp8.comparison.top1Agreement > 0.9, `agreement ${fp8.comparison.top1Agreement}`);
  });

  describe('against quantized versions', () => {
    const reports: Record<string, EvalReport> = {};
    before(async () => {
      for (const q of ['fp8', 'w4a16']) reports[q] = await evaluate({ baseline: { model: dir }, candidate: { model: dir, quantization: q }, text: TEXT, contextLen: 64, maxTokensEval: 200 });
    });

    it('4-bit weights: KLD > 0, agreement < 1, perplexity close to the baseline, fewer weight bytes', () => {
      const r = reports.w4a16;
      assert.ok(r.comparison.kld.mean > 0);
      assert.ok(r.comparison.kld.max >= r.comparison.kld.p99 && r.comparison.kld.p99 >= r.comparison.kld.median);
      assert.ok(r.comparison.top1Agreement < 1, `agreement ${r.comparison.top1Agreement}`);
      assert.ok(r.comparison.top1Agreement > 0.5, `agreement ${r.comparison.top1Agreement}`);
      assert.ok(Math.abs(r.comparison.pplRatio - 1) < 0.1, `PPL ratio ${r.comparison.pplRatio}`);
      assert.ok(Math.abs(Math.log(r.comparison.pplRatio) - r.comparison.lnPplRatio) < 1e-9);
      assert.ok(r.candidate.weightBytes < r.baseline.weightBytes);
      assert.equal(r.candidate.quantization, 'w4a16');
    });

    it('FP8 is closer to the baseline than 4-bit weights', () => {
      assert.ok(reports.fp8.comparison.kld.mean > 0);
      assert.ok(reports.fp8.comparison.kld.mean < reports.w4a16.comparison.kld.mean, `fp8 ${reports.fp8.comparison.kld.mean} vs w4a16 ${reports.w4a16.comparison.kld.mean}`);
      assert.ok(reports.fp8.comparison.top1Agreement >= reports.w4a16.comparison.top1Agreement);
    });
  });

  it('tasks whose answers are the model\'s own greedy outputs score 100% for the baseline', async () => {
    const llm = await LLM.load({ model: dir });
    const prompts = ['Q: What day comes after Friday?\nA:', 'The robot', 'Once upon a time', 'Check the sensors:', 'Battery level', 'Pico said', 'The lidar', 'A: '];
    const tasks = [];
    for (const prompt of prompts) {
      const r = await llm.complete(prompt, { temperature: 0, maxTokens: 12, repetitionPenalty: 1, stop: ['\n'] });
      // Keep answers that ended by themselves (eos or newline) and say something.
      if (r.finishReason === 'stop' && r.text.trim() !== '') tasks.push({ prompt, answer: r.text });
    }
    await llm.close();
    assert.ok(tasks.length >= 3, `only ${tasks.length} usable greedy answers`);
    // One item the model does not answer: the baseline gets all but that one.
    const withWrong = [...tasks, { prompt: prompts[0], answer: 'certainly not this' }];
    const r = await evaluate({ baseline: { model: dir }, candidate: { model: dir, quantization: 'w4a16' }, tasks: withWrong });
    const n = withWrong.length;
    assert.equal(r.baseline.tasks, n);
    assert.equal(r.baseline.correct, tasks.length);
    assert.equal(r.baseline.accuracy, tasks.length / n);
    assert.equal(r.inputs.scoredTokens, 0);
    assert.ok(r.candidate.accuracy! >= 0 && r.candidate.accuracy! <= 1);
    assert.equal(r.comparison.recoveryPercent, (100 * r.candidate.accuracy!) / r.baseline.accuracy!);
    assert.deepEqual(r.taskResults!.map((t) => t.baseline.trim()), [...tasks.map((t) => t.answer.trim()), r.taskResults![n - 1].baseline.trim()]);
    assert.notEqual(r.taskResults![n - 1].baseline.trim(), 'certainly not this');
    const self = await evaluate({ baseline: { model: dir }, candidate: { model: dir }, tasks });
    assert.equal(self.baseline.accuracy, 1);
    assert.equal(self.comparison.recoveryPercent, 100);
  });

  describe('command line', () => {
    const bin = join(packageRoot(), 'bin', 'tachyon.js');
    const run = (...args: string[]) => spawnSync(process.execPath, [bin, 'eval', ...args], { encoding: 'utf8', timeout: 120_000 });
    let work: string;
    before(() => {
      work = mkdtempSync(join(tmpdir(), 'tachyon-eval-'));
      writeFileSync(join(work, 'text.txt'), TEXT);
      writeFileSync(join(work, 'tasks.jsonl'), JSON.stringify({ prompt: 'Q: What day comes after Friday?\nA:', answer: 'Saturday' }) + '\n');
    });

    it('prints a table of metric, baseline, candidate, ratio, with progress on stderr', () => {
      const r = run('--model', dir, '--quantization', 'nvfp4', '--text', join(work, 'text.txt'), '--tasks', join(work, 'tasks.jsonl'), '--context-len', '64', '--max-tokens-eval', '120');
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /\| metric \| baseline \| candidate \| ratio \/ delta \|/);
      assert.match(r.stdout, /\| perplexity \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \| [\d.]+× /);
      assert.match(r.stdout, /\| mean KLD \| 0 \| [\d.e+-]+ ± /);
      assert.match(r.stdout, /\| top-1 agreement \| 100% \| [\d.]+% ± /);
      assert.match(r.stdout, /\| exact-match accuracy \| [\d.]+% \(\d\/1\) \| [\d.]+% \(\d\/1\) \|/);
      assert.match(r.stderr, /baseline \(none\): text window 1\/2/);
      assert.match(r.stderr, /candidate \(nvfp4\): text window 2\/2/);
      assert.match(r.stderr, /candidate \(nvfp4\): task 1\/1/);
    });

    it('--json prints one object with both configurations and the comparison', () => {
      const r = run('--model', dir, '--quantization', 'w8a16', '--text', join(work, 'text.txt'), '--context-len', '64', '--max-tokens-eval', '120', '--json', '--quiet');
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, '');
      const out = JSON.parse(r.stdout);
      assert.equal(out.inputs.scoredTokens, 120);
      assert.equal(out.inputs.contextLen, 64);
      assert.equal(out.inputs.text, join(work, 'text.txt'));
      assert.equal(out.baseline.quantization, 'none');
      assert.equal(out.candidate.quantization, 'w8a16');
      assert.ok(out.candidate.weightBytes < out.baseline.weightBytes);
      assert.ok(out.comparison.kld.mean > 0 && out.comparison.kld.mean < 0.05);
      assert.ok(out.comparison.top1Agreement > 0.9);
      assert.equal(out.baseline.accuracy, undefined);
      const kv = run('--model', dir, '--kv-cache-dtype', 'fp8', '--baseline-kv-cache-dtype', 'float32', '--text', join(work, 'text.txt'), '--context-len', '64', '--max-tokens-eval', '60', '--json', '--quiet');
      assert.equal(kv.status, 0, kv.stderr);
      const kvOut = JSON.parse(kv.stdout);
      assert.deepEqual([kvOut.baseline.kvCacheDtype, kvOut.candidate.kvCacheDtype], ['float32', 'fp8']);
      const bad = run('--model', dir, '--baseline-kv-cache-dtype', 'int8', '--text', join(work, 'text.txt'));
      assert.equal(bad.status, 1);
      assert.match(bad.stderr, /--baseline-kv-cache-dtype 'int8' is not supported; supported: auto, float32, bf16, fp8/);
    });

    it('without --text the default model is scored on the held-out text it ships; FP8 is nearly lossless there', () => {
      const r = run('--quantization', 'fp8', '--max-tokens-eval', '300', '--json', '--quiet');
      assert.equal(r.status, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      assert.equal(out.inputs.text, join(packageRoot(), 'models', 'tachyon-tiny', 'heldout.txt'));
      assert.equal(out.inputs.textTokens, 300);
      // A trained model on text like its training data: far below the 4096-id vocabulary.
      assert.ok(out.baseline.perplexity > 1 && out.baseline.perplexity < 5, `perplexity ${out.baseline.perplexity}`);
      assert.ok(Math.abs(out.comparison.pplRatio - 1) < 0.01, `PPL ratio ${out.comparison.pplRatio}`);
      assert.ok(out.comparison.kld.mean > 0 && out.comparison.kld.mean < 1e-3, `KLD ${out.comparison.kld.mean}`);
      assert.ok(out.comparison.top1Agreement > 0.97, `agreement ${out.comparison.top1Agreement}`);
    });

    it('errors name the problem: no held-out text, a bad task file, a context over the model\'s', () => {
      let r = run('--model', dir);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /ships no held-out text \(looked for heldout\.txt.*\); pass --text FILE/);
      writeFileSync(join(work, 'bad.jsonl'), '{"prompt": "x"}\n');
      r = run('--model', dir, '--tasks', join(work, 'bad.jsonl'));
      assert.equal(r.status, 1);
      assert.match(r.stderr, /bad\.jsonl line 1: expected an object with string fields "prompt" and "answer"/);
      r = run('--model', dir, '--text', join(work, 'text.txt'), '--context-len', '1000');
      assert.equal(r.status, 1);
      assert.match(r.stderr, /--context-len 1000 exceeds the model's max_position_embeddings \(256\)/);
      r = run('--model', dir, '--text', join(work, 'text.txt'), '--quantization', 'int3');
      assert.equal(r.status, 1);
      assert.match(r.stderr, /quantization 'int3' is not supported/);
    });
  });
});
