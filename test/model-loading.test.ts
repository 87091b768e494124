// Loading a model directory: every kind of bad input gets an error naming the file and the problem.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { ModelLoadError } from '../src/errors.js';
import { loadModelConfig, parseModelConfig } from '../src/model/config.js';
import { bf16ToF32, f16ToF32, f32ToBf16, toFloat32 } from '../src/model/load/dtype.js';
import { encodeSafetensors, readSafetensorsHeader, SafetensorsCheckpoint } from '../src/model/load/safetensors.js';
import { loadModelWeights } from '../src/model/weights.js';
import { f32Tensor, TINY_LLAMA, tinyTensors, writeTinyCheckpoint } from './support/tiny-checkpoint.js';

const throwsLoad = (fn: () => unknown, pattern: RegExp) => assert.throws(fn, (err: unknown) => err instanceof ModelLoadError && pattern.test(err.message));

describe('safetensors', () => {
  it('reads tensors back exactly, single file and sharded', () => {
    const tensors = tinyTensors(TINY_LLAMA);
    const dir = writeTinyCheckpoint(TINY_LLAMA, tensors);
    const single = SafetensorsCheckpoint.open(dir);
    assert.deepEqual(single.names.sort(), Object.keys(tensors).sort());
    const q = single.read('model.layers.1.self_attn.q_proj.weight');
    assert.deepEqual(q.shape, [32, 32]);
    assert.deepEqual(Buffer.from(q.bytes), Buffer.from(tensors['model.layers.1.self_attn.q_proj.weight'].bytes));
    single.close();

    // Split the same tensors over two shards with an index.
    const names = Object.keys(tensors);
    const shardDir = mkdtempSync(join(tmpdir(), 'tachyon-shard-'));
    const weightMap: Record<string, string> = {};
    const halves = [names.slice(0, 5), names.slice(5)];
    halves.forEach((part, i) => {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      writeFileSync(join(shardDir, file), encodeSafetensors(Object.fromEntries(part.map((n) => [n, tensors[n]]))));
      for (const n of part) weightMap[n] = file;
    });
    writeFileSync(join(shardDir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
    const sharded = SafetensorsCheckpoint.open(shardDir);
    for (const n of names) assert.deepEqual(Buffer.from(sharded.read(n).bytes), Buffer.from(tensors[n].bytes), n);
    sharded.close();
  });

  it('rejects a truncated file, a corrupt header and data past the end, naming the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tachyon-bad-'));
    const good = encodeSafetensors({ a: f32Tensor([4, 4], (i) => i) });
    const file = join(dir, 'model.safetensors');
    writeFileSync(file, good.subarray(0, 5));
    throwsLoad(() => readSafetensorsHeader(file), /model\.safetensors: truncated/);
    writeFileSync(file, good.subarray(0, good.length - 8));
    throwsLoad(() => readSafetensorsHeader(file), /tensor 'a' data \[0, 64\) lies outside/);
    const corrupt = Buffer.from(good);
    corrupt.write('#', 8);
    writeFileSync(file, corrupt);
    throwsLoad(() => readSafetensorsHeader(file), /corrupt safetensors header \(not valid JSON/);
    const huge = Buffer.from(good);
    huge.writeBigUInt64LE(1n << 40n, 0);
    writeFileSync(file, huge);
    throwsLoad(() => readSafetensorsHeader(file), /corrupt safetensors header \(declares/);
  });

  it('rejects a size that does not match dtype × shape and an unsupported dtype', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tachyon-bad-'));
    const file = join(dir, 'model.safetensors');
    writeFileSync(file, encodeSafetensors({ a: { dtype: 'F32', shape: [3, 3], bytes: new Uint8Array(32) } }));
    throwsLoad(() => readSafetensorsHeader(file), /'a' holds 32 bytes but F32\[3, 3\] needs 36/);
    writeFileSync(file, encodeSafetensors({ a: { dtype: 'Q4_K', shape: [2], bytes: new Uint8Array(2) } }));
    throwsLoad(() => readSafetensorsHeader(file), /unsupported dtype Q4_K/);
  });

  it('names a shard the index lists but the folder lacks', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tachyon-bad-'));
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: 'model-00001-of-00002.safetensors' } }));
    throwsLoad(() => SafetensorsCheckpoint.open(dir), /names shard model-00001-of-00002\.safetensors, which is missing/);
  });

  it('says when there are no weights at all', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tachyon-empty-'));
    throwsLoad(() => SafetensorsCheckpoint.open(dir), /no model weights found/);
  });
});

describe('float storage dtypes', () => {
  it('decodes bf16 and f16 bit patterns exactly', () => {
    assert.equal(bf16ToF32(0x3f80), 1);
    assert.equal(bf16ToF32(0xc049), -3.140625);
    assert.equal(f16ToF32(0x3c00), 1);
    assert.equal(f16ToF32(0xc248), -3.140625);
    assert.equal(f16ToF32(0x0001), 2 ** -24); // smallest subnormal
    assert.equal(f16ToF32(0x7c00), Infinity);
    assert.ok(Number.isNaN(f16ToF32(0x7e00)));
    assert.equal(f32ToBf16(1), 0x3f80);
    // Round to nearest even at the halfway point: 1 + 2^-8 lies between 0x3f80 and 0x3f81.
    assert.equal(f32ToBf16(1 + 2 ** -8), 0x3f80);
    assert.equal(f32ToBf16(1 + 3 * 2 ** -8), 0x3f82);
  });

  it('rejects integer tensors where float weights are needed, naming the tensor', () => {
    throwsLoad(() => toFloat32({ dtype: 'I32', shape: [1], bytes: new Uint8Array(4) }, 'model.norm.weight'), /'model\.norm\.weight' has dtype I32; supported for unquantized weights: F32, F16, BF16/);
  });
});

describe('config.json', () => {
  const base = { ...TINY_LLAMA };

  it('reads sizes, GQA, explicit head_dim and eos lists', () => {
    const c = parseModelConfig({ ...base, head_dim: 16, eos_token_id: [5, 6] });
    assert.equal(c.headDim, 16);
    assert.equal(c.numKvHeads, 2);
    assert.deepEqual(c.eosTokenIds, [5, 6]);
    assert.equal(c.rope.type, 'default');
    assert.equal(c.rope.rotaryDim, 16);
  });

  it('knows the per-family differences: Qwen2 qkv bias, Qwen3 q/k norm, Mistral sliding window', () => {
    const qwen2 = parseModelConfig({ ...base, architectures: ['Qwen2ForCausalLM'] });
    assert.equal(qwen2.qkvBias, true);
    assert.equal(qwen2.oBias, false);
    const qwen3 = parseModelConfig({ ...base, architectures: ['Qwen3ForCausalLM'] });
    assert.equal(qwen3.qkNorm, true);
    assert.equal(qwen3.qkvBias, false);
    const mistral = parseModelConfig({ ...base, architectures: ['MistralForCausalLM'], sliding_window: 4096 });
    assert.deepEqual(mistral.slidingWindows, [4096, 4096]);
  });

  it('accepts rope_scaling (older files) and rope_parameters (transformers 5)', () => {
    const a = parseModelConfig({ ...base, rope_scaling: { type: 'linear', factor: 2 } });
    assert.equal(a.rope.type, 'linear');
    const b = parseModelConfig({ ...base, rope_parameters: { rope_type: 'llama3', rope_theta: 500000, factor: 8, original_max_position_embeddings: 8192 } });
    assert.equal(b.rope.type, 'llama3');
    assert.equal(b.rope.theta, 500000);
    assert.equal(b.rope.originalMaxPositionEmbeddings, 8192);
  });

  it('rejects an unknown architecture and an unsupported rope type with the supported lists', () => {
    assert.throws(() => parseModelConfig({ ...base, architectures: ['GPT2LMHeadModel'] }), /architecture 'GPT2LMHeadModel' is not supported; supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM/);
    assert.throws(() => parseModelConfig({ ...base, rope_scaling: { rope_type: 'foo', factor: 2 } }), /rope_scaling\.rope_type 'foo' is not supported; supported: default, linear, dynamic, llama3, yarn/);
    assert.throws(() => parseModelConfig({ ...base, hidden_size: 'big' }), /"hidden_size" must be a positive integer/);
    assert.throws(() => parseModelConfig({ ...base, num_key_value_heads: 3 }), /must be a multiple of num_key_value_heads/);
  });

  it('names a missing or unreadable config.json', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tachyon-cfg-'));
    throwsLoad(() => loadModelConfig(dir), /missing config\.json/);
    writeFileSync(join(dir, 'config.json'), '{ not json');
    throwsLoad(() => loadModelConfig(dir), /config\.json: not valid JSON/);
    rmSync(dir, { recursive: true });
  });
});

describe('weights', () => {
  it('names a missing tensor and a shape that disagrees with config.json', () => {
    const tensors = tinyTensors(TINY_LLAMA);
    delete tensors['model.layers.1.mlp.up_proj.weight'];
    let dir = writeTinyCheckpoint(TINY_LLAMA, tensors);
    const load = (d: string) => loadModelWeights(SafetensorsCheckpoint.open(d), loadModelConfig(d), new CpuBackend());
    throwsLoad(() => load(dir), /missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight'/);

    const wrong = tinyTensors(TINY_LLAMA);
    wrong['model.layers.0.self_attn.k_proj.weight'] = f32Tensor([32, 32], () => 0.1);
    dir = writeTinyCheckpoint(TINY_LLAMA, wrong);
    throwsLoad(() => load(dir), /'model\.layers\.0\.self_attn\.k_proj\.weight' has shape \[32, 32\], config\.json implies \[16, 32\]/);
    assert.ok(readFileSync(join(dir, 'config.json'), 'utf8').includes('LlamaForCausalLM'));
  });
});
