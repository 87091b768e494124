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
import { kvScalesLine, LLM } from '../src/llm.js';
import { loadLlama, ModelRunner } from './support/run-model.js';
import { f32Tensor, TINY_LLAMA, tinyTensors, writeKvScaledPair, writeTinyCheckpoint } from './support/tiny-checkpoint.js';

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

  it('reads calibrated FP8 KV-cache scales under compressed-tensors\' and ModelOpt\'s names, 1 where a layer has none', () => {
    const load = (d: string) => loadModelWeights(SafetensorsCheckpoint.open(d), loadModelConfig(d), new CpuBackend());
    assert.equal(load(writeTinyCheckpoint()).kvScales, undefined, 'none stored: no scales');
    const scalar = (x: number) => f32Tensor([], () => x);
    const tensors = tinyTensors(TINY_LLAMA);
    // compressed-tensors: self_attn.{k,v}_scale (shape [] here); ModelOpt: self_attn.{k,v}_proj.{k,v}_scale (shape [1]).
    tensors['model.layers.0.self_attn.k_scale'] = scalar(0.25);
    tensors['model.layers.0.self_attn.v_scale'] = scalar(0.5);
    tensors['model.layers.1.self_attn.k_proj.k_scale'] = f32Tensor([1], () => 2);
    const w = load(writeTinyCheckpoint(TINY_LLAMA, tensors));
    assert.deepEqual(w.kvScales, [{ k: 0.25, v: 0.5 }, { k: 2, v: 1 }]);

    tensors['model.layers.1.self_attn.k_proj.k_scale'] = f32Tensor([1], () => 0);
    throwsLoad(() => load(writeTinyCheckpoint(TINY_LLAMA, tensors)), /KV cache scale 'model\.layers\.1\.self_attn\.k_proj\.k_scale' must be one finite positive number, got \[0\]/);
    tensors['model.layers.1.self_attn.k_proj.k_scale'] = f32Tensor([2], () => 1);
    throwsLoad(() => load(writeTinyCheckpoint(TINY_LLAMA, tensors)), /must be one finite positive number, got \[1, 1\] \(shape \[2\]\)/);
  });
});

describe('FP8 KV-cache scales at load', () => {
  it('says whether the checkpoint\'s scales apply (fp8 cache) or would (other types)', () => {
    const scales = [{ k: 0.5, v: 0.25 }, { k: 2, v: 0.125 }];
    assert.equal(kvScalesLine(undefined, 'fp8'), undefined);
    assert.equal(kvScalesLine(scales, 'fp8'), "KV cache: fp8 with the checkpoint's calibrated scales (k_scale 0.500–2.00, v_scale 0.125–0.250 over 2 layers)");
    assert.match(kvScalesLine(scales, 'bf16')!, /--kv-cache-dtype fp8 stores the cache in FP8 with them \(now bf16, where they do not apply\)/);
  });

  it('a model on an fp8 cache applies them: a checkpoint rescaled by powers of two with matching scales gives bitwise the original\'s logits', async () => {
    const { cfg, plainDir, scaledDir } = writeKvScaledPair();
    const prompt = Array.from({ length: 12 }, (_, i) => (i * 37 + 5) % cfg.vocab_size);
    const logits = (dir: string, dropScales = false) => {
      const model = loadLlama(dir, new CpuBackend({ kvDtype: 'fp8' }));
      if (dropScales) model.weights.kvScales = undefined;
      // Prefill, then one decode step: both read K and V back from the cache.
      const runner = new ModelRunner(model, 16, 4);
      runner.step([{ seq: 0, start: 0, tokens: prompt }]);
      return runner.step([{ seq: 0, start: prompt.length, tokens: [7] }])[0];
    };
    const want = logits(plainDir);
    assert.deepEqual(logits(scaledDir), want);
    assert.notDeepEqual(logits(scaledDir, true), want, 'without its scales the rescaled checkpoint differs');

    const llm = await LLM.load({ model: scaledDir, device: 'cpu', kvCacheDtype: 'fp8', kvCacheTokens: 256 });
    try {
      assert.ok(llm.notes.some((n) => n.includes("calibrated scales (k_scale 4.00–4.00, v_scale 64.0–64.0 over 2 layers)")), llm.notes.join('\n'));
    } finally {
      await llm.close();
    }
  });
});
