// `tachyon quantize` as a user runs it: RTN and GPTQ checkpoints that `tachyon generate` then runs,
// the embedded default model as the default --model, and errors that name the problem.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { embeddedModelDir, DEFAULT_MODEL_NAME, packageRoot } from '../src/model/default-model.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { InvalidRequestError } from '../src/errors.js';
import { calibrationSequences, readCalibrationDocuments } from '../src/quant/checkpoint/calibration.js';
import { fixturesDir } from './support/paths.js';
import { TINY_LLAMA, writeTinyCheckpoint } from './support/tiny-checkpoint.js';

const bin = join(packageRoot(), 'bin', 'tachyon.js');
const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 120_000 });
const fresh = () => join(mkdtempSync(join(tmpdir(), 'tachyon-quantize-cli-')), 'out');

// A random tiny model with a real tokenizer (the byte-level Llama 3 fixture, 1009 ids).
const model = writeTinyCheckpoint({ ...TINY_LLAMA, vocab_size: 1024, hidden_size: 64, intermediate_size: 128, bos_token_id: 1004, eos_token_id: 1005 });
for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(fixturesDir(), 'tokenizers', 'byte-level-llama3', f), join(model, f));
const calibrationTxt = join(mkdtempSync(join(tmpdir(), 'tachyon-calib-')), 'calibration.txt');
writeFileSync(
  calibrationTxt,
  Array.from({ length: 12 }, (_, i) => `Robot ${i} checks its battery, then drives to the charging dock and reports the temperature of sensor ${i * 7}.`).join('\n\n'),
);
const calibrationJsonl = join(mkdtempSync(join(tmpdir(), 'tachyon-calib-')), 'calibration.jsonl');
writeFileSync(calibrationJsonl, Array.from({ length: 6 }, (_, i) => JSON.stringify({ text: `Line ${i}: the lidar on unit ${i} needs calibration before the next run.` })).join('\n'));

describe('tachyon quantize CLI', () => {
  it('RTN W4A16: progress per layer on stderr, the output directory on stdout, and generate runs on it', () => {
    const out = fresh();
    const r = run('quantize', '--model', model, '--scheme', 'W4A16', '--group-size', '32', '--output', out);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), out);
    assert.match(r.stderr, /^layer 1\/2: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj → W4A16 \(rtn\) in [\d.]+ s$/m);
    assert.match(r.stderr, /^layer 2\/2: /m);
    assert.match(r.stderr, /quantized 14 linear layers to W4A16 \(rtn\)/);
    assert.ok(existsSync(join(out, 'tokenizer.json')));
    const qc = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).quantization_config;
    assert.equal(qc.config_groups.group_0.weights.group_size, 32);
    const g = run('generate', '--model', out, '--prompt', 'The robot', '--max-tokens', '5', '--temperature', '0', '--json');
    assert.equal(g.status, 0, g.stderr);
    const res = JSON.parse(g.stdout);
    assert.ok(res.weight_bytes.int4 > 0, JSON.stringify(res.weight_bytes));
    assert.equal(res.usage.completion_tokens, 5);
  });

  it('GPTQ with act-order from a plain-text and a JSONL calibration file', () => {
    const out = fresh();
    const r = run('quantize', '--model', model, '--scheme', 'W4A16_ASYM', '--group-size', '16', '--method', 'gptq', '--act-order', '--calibration', calibrationTxt, '--num-calibration-samples', '6', '--calibration-seq-len', '16', '--output', out);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /layer 2\/2: .* → W4A16_ASYM \(gptq\)/);
    assert.match(r.stderr, /quantized 14 linear layers to W4A16_ASYM \(gptq, act-order, calibrated on 6 windows \/ \d+ tokens\)/);
    assert.equal(run('generate', '--model', out, '--prompt', 'Robot', '--max-tokens', '3', '--temperature', '0').status, 0);
    const out2 = fresh();
    const j = run('quantize', '--model', model, '--scheme', 'W8A16', '--method', 'gptq', '--single-pass', '--calibration', calibrationJsonl, '--output', out2);
    assert.equal(j.status, 0, j.stderr);
    assert.match(j.stderr, /calibrated on 6 windows/);
  });

  it('defaults to the embedded model', () => {
    const out = fresh();
    const r = run('quantize', '--scheme', 'FP8_DYNAMIC', '--output', out);
    if (!existsSync(join(embeddedModelDir(DEFAULT_MODEL_NAME), 'config.json'))) {
      assert.equal(r.status, 1);
      assert.match(r.stderr, /no default model is installed/);
      return;
    }
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /quantized \d+ linear layers to FP8_DYNAMIC \(rtn\)/);
    assert.ok(existsSync(join(out, 'heldout.txt')), 'the held-out text travels with the model');
    const g = run('generate', '--model', out, '--prompt', 'Once upon a time', '--max-tokens', '6', '--temperature', '0', '--json');
    assert.equal(g.status, 0, g.stderr);
    assert.ok(JSON.parse(g.stdout).weight_bytes.fp8 > 0);
  });

  it('errors name the problem and exit non-zero', () => {
    let r = run('quantize', '--model', model, '--scheme', 'W3A16', '--output', fresh());
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--scheme 'W3A16' is not supported; supported: FP8_DYNAMIC, W8A16, W4A16, W4A16_ASYM, NVFP4A16/);
    r = run('quantize', '--model', model, '--scheme', 'W4A16', '--method', 'gptq', '--output', fresh());
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--method gptq needs calibration text: pass --calibration FILE/);
    r = run('quantize', '--model', model, '--scheme', 'W4A16', '--calibration', calibrationTxt, '--output', fresh());
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--calibration applies to --method gptq only/);
    r = run('quantize', '--model', model, '--scheme', 'W4A16', '--max-shard-size', 'big', '--output', fresh());
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--max-shard-size must be a size like 5GB/);
    r = run('quantize', '--model', model, '--scheme', 'W4A16');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /required option '--output <dir>'/);
  });
});

describe('calibration text', () => {
  const tokenizer = Tokenizer.load(model);
  const bos = '<|begin_of_text|>';

  it('plain text: paragraphs, each tokenized with BOS; windows cut and sampled deterministically', () => {
    const docs = readCalibrationDocuments(calibrationTxt, bos);
    assert.equal(docs.length, 12);
    assert.ok(docs.every((d) => d.addSpecialTokens && d.text.startsWith('Robot ')));
    const a = calibrationSequences(docs, tokenizer, 5, 8);
    assert.equal(a.length, 5);
    assert.ok(a.every((w) => w.length === 8));
    assert.equal(a[0][0], 1004, 'a document starts with BOS');
    assert.deepEqual(calibrationSequences(docs, tokenizer, 5, 8), a, 'same windows every time');
  });

  it("text in the model's own format (BOS written in it) splits per document, without a second BOS", () => {
    const file = join(mkdtempSync(join(tmpdir(), 'tachyon-calib-')), 'heldout.txt');
    writeFileSync(file, `${bos}First document.\n\nWith a blank line inside.<|end_of_text|>\n${bos}Second one.<|end_of_text|>\n`);
    const docs = readCalibrationDocuments(file, bos);
    assert.deepEqual(docs, [
      { text: `${bos}First document.\n\nWith a blank line inside.<|end_of_text|>`, addSpecialTokens: false },
      { text: `${bos}Second one.<|end_of_text|>`, addSpecialTokens: false },
    ]);
    const [w] = calibrationSequences(docs.slice(1), tokenizer, 1, 64);
    assert.equal(w.filter((id) => id === 1004).length, 1);
  });

  it('JSONL rows need a "text" string, named by line', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'tachyon-calib-')), 'bad.jsonl');
    writeFileSync(file, '{"text": "fine"}\n{"prompt": "no text"}\n');
    assert.throws(() => readCalibrationDocuments(file, bos), (e: unknown) => e instanceof InvalidRequestError && /bad\.jsonl:2: has no "text" string/.test(e.message));
  });

  it("the default model's heldout.txt is found and read as whole documents", { skip: !existsSync(join(embeddedModelDir(DEFAULT_MODEL_NAME), 'heldout.txt')) && 'no embedded default model' }, () => {
    const docs = readCalibrationDocuments(join(embeddedModelDir(DEFAULT_MODEL_NAME), 'heldout.txt'), bos);
    assert.ok(docs.length >= 100, `${docs.length} documents`);
    assert.ok(docs.every((d) => d.text.startsWith(bos) && !d.addSpecialTokens));
  });
});
