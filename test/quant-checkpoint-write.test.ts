// Offline quantization writes compressed-tensors checkpoints as llm-compressor lays them out: the
// config, tensor names, dtypes and shapes are checked, and the written checkpoint loads back to
// exactly the weights quantized in memory.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { InvalidRequestError, ModelLoadError } from '../src/errors.js';
import { loadModelConfig } from '../src/model/config.js';
import { LlamaModel } from '../src/model/llama.js';
import { f32ToBf16 } from '../src/model/load/dtype.js';
import { readSafetensorsHeader, SafetensorsCheckpoint, type HostTensor } from '../src/model/load/safetensors.js';
import { loadModelWeights, type ModelWeights } from '../src/model/weights.js';
import { dequantize, type QuantizedWeight } from '../src/quant/format.js';
import { quantizeFp8 } from '../src/quant/fp8.js';
import { quantizeInt4 } from '../src/quant/int4.js';
import { quantizeInt8 } from '../src/quant/int8.js';
import { quantizeNvfp4 } from '../src/quant/nvfp4.js';
import { f32ToF16, roundToScaleDtype } from '../src/quant/checkpoint/export-quantize.js';
import { quantizeCheckpoint, type QuantizeCheckpointOptions } from '../src/quant/checkpoint/quantize-checkpoint.js';
import { QUANTIZE_SCHEMES, type QuantizeScheme } from '../src/quant/checkpoint/schemes.js';
import { ModelRunner } from './support/run-model.js';
import { TINY_LLAMA, tinyTensors, writeTinyCheckpoint } from './support/tiny-checkpoint.js';

const cfg = { ...TINY_LLAMA, hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, num_key_value_heads: 2 };

function toBf16(tensors: Record<string, HostTensor>): Record<string, HostTensor> {
  return Object.fromEntries(
    Object.entries(tensors).map(([n, t]) => {
      const f = new Float32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 4);
      return [n, { dtype: 'BF16', shape: t.shape, bytes: new Uint8Array(Uint16Array.from(f, f32ToBf16).buffer) }];
    }),
  );
}

const f32Dir = writeTinyCheckpoint(cfg);
const bf16Dir = writeTinyCheckpoint({ ...cfg, torch_dtype: 'bfloat16' }, toBf16(tinyTensors(cfg)));
writeFileSync(join(f32Dir, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: 2 }));
writeFileSync(join(f32Dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>' }));
writeFileSync(join(f32Dir, 'chat_template.jinja'), '{{ messages }}');

const outDir = () => join(mkdtempSync(join(tmpdir(), 'tachyon-quantized-')), 'out');

function quantize(model: string, scheme: QuantizeScheme, extra: Partial<QuantizeCheckpointOptions> = {}) {
  const inMemory = new Map<string, QuantizedWeight>();
  const lines: string[] = [];
  const result = quantizeCheckpoint({ model, output: outDir(), scheme, log: (l) => lines.push(l), onQuantized: (m, w) => inMemory.set(m, w), ...extra });
  return { result, inMemory, lines };
}

function load(dir: string, backend = new CpuBackend()): ModelWeights {
  const ckpt = SafetensorsCheckpoint.open(dir);
  try {
    return loadModelWeights(ckpt, loadModelConfig(dir), backend);
  } finally {
    ckpt.close();
  }
}

const KEY: Record<string, 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down'> = { q_proj: 'q', k_proj: 'k', v_proj: 'v', o_proj: 'o', gate_proj: 'gate', up_proj: 'up', down_proj: 'down' };
const FORMAT: Record<QuantizeScheme, string> = { FP8_DYNAMIC: 'fp8', W8A16: 'int8', W4A16: 'int4', W4A16_ASYM: 'int4', NVFP4A16: 'nvfp4' };

/** Every module of the written checkpoint loads to exactly the in-memory weight. */
function assertLoadsBack(dir: string, inMemory: Map<string, QuantizedWeight>, scheme: QuantizeScheme): ModelWeights {
  const backend = new CpuBackend();
  const w = load(dir, backend);
  assert.equal(inMemory.size, 14);
  for (const [module, q] of inMemory) {
    const m = /^model\.layers\.(\d+)\.\w+\.(\w+)$/.exec(module)!;
    const loaded = w.layers[Number(m[1])][KEY[m[2]]];
    assert.equal(loaded.format, FORMAT[scheme], module);
    assert.deepEqual(backend.weightToHost(loaded), dequantize(q), `${module} loads back to the in-memory quantization`);
  }
  return w;
}

function header(dir: string) {
  return new Map(readSafetensorsHeader(join(dir, 'model.safetensors')).tensors.map((t) => [t.name, t]));
}

describe('tachyon quantize (compressed-tensors writer)', () => {
  for (const scheme of QUANTIZE_SCHEMES) {
    it(`${scheme} from a bf16 checkpoint: llm-compressor's layout, loads back exactly`, () => {
      const { result, inMemory, lines } = quantize(bf16Dir, scheme, scheme.startsWith('W4') ? { groupSize: 32 } : {});
      assert.equal(result.quantizedModules, 14);
      assert.equal(lines.length, 2, 'one progress line per layer');
      assert.match(lines[0], new RegExp(`^layer 1/2: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj → ${scheme} \\(rtn\\)`));
      assertLoadsBack(result.output, inMemory, scheme);

      const qc = JSON.parse(readFileSync(join(result.output, 'config.json'), 'utf8')).quantization_config;
      assert.equal(qc.quant_method, 'compressed-tensors');
      assert.equal(qc.quantization_status, 'compressed');
      assert.deepEqual(qc.ignore, ['lm_head']);
      const g = qc.config_groups.group_0;
      assert.deepEqual(g.targets, ['Linear']);
      const h = header(result.output);
      const p = 'model.layers.1.mlp.down_proj';
      assert.ok(!h.has(`${p}.weight`) || scheme === 'FP8_DYNAMIC');
      // Embeddings, norms and lm_head are copied as stored (bf16, same bytes).
      for (const name of ['model.embed_tokens.weight', 'lm_head.weight', 'model.norm.weight', 'model.layers.0.input_layernorm.weight']) assert.equal(h.get(name)?.dtype, 'BF16', name);
      switch (scheme) {
        case 'FP8_DYNAMIC':
          assert.equal(qc.format, 'float-quantized');
          assert.deepEqual({ ...g.weights, observer: undefined, observer_kwargs: undefined }, { num_bits: 8, type: 'float', symmetric: true, group_size: null, strategy: 'channel', block_structure: null, dynamic: false, actorder: null, scale_dtype: null, zp_dtype: null, observer: undefined, observer_kwargs: undefined });
          assert.equal(g.input_activations.strategy, 'token');
          assert.equal(g.input_activations.dynamic, true);
          assert.deepEqual([h.get(`${p}.weight`)!.dtype, h.get(`${p}.weight`)!.shape], ['F8_E4M3', [64, 128]]);
          assert.deepEqual([h.get(`${p}.weight_scale`)!.dtype, h.get(`${p}.weight_scale`)!.shape], ['BF16', [64, 1]]);
          break;
        case 'W8A16':
          assert.equal(qc.format, 'pack-quantized');
          assert.equal(g.input_activations, null);
          assert.deepEqual([g.weights.num_bits, g.weights.type, g.weights.strategy], [8, 'int', 'channel']);
          assert.deepEqual([h.get(`${p}.weight_packed`)!.dtype, h.get(`${p}.weight_packed`)!.shape], ['I32', [64, 32]]);
          assert.deepEqual([h.get(`${p}.weight_scale`)!.dtype, h.get(`${p}.weight_scale`)!.shape], ['BF16', [64, 1]]);
          assert.deepEqual([h.get(`${p}.weight_shape`)!.dtype, h.get(`${p}.weight_shape`)!.shape], ['I64', [2]]);
          break;
        case 'W4A16':
        case 'W4A16_ASYM':
          assert.equal(qc.format, 'pack-quantized');
          assert.deepEqual([g.weights.num_bits, g.weights.type, g.weights.strategy, g.weights.group_size, g.weights.symmetric], [4, 'int', 'group', 32, scheme === 'W4A16']);
          assert.deepEqual([h.get(`${p}.weight_packed`)!.dtype, h.get(`${p}.weight_packed`)!.shape], ['I32', [64, 16]]);
          assert.deepEqual([h.get(`${p}.weight_scale`)!.dtype, h.get(`${p}.weight_scale`)!.shape], ['BF16', [64, 4]]);
          assert.equal(h.has(`${p}.weight_zero_point`), scheme === 'W4A16_ASYM');
          if (scheme === 'W4A16_ASYM') assert.deepEqual([h.get(`${p}.weight_zero_point`)!.dtype, h.get(`${p}.weight_zero_point`)!.shape], ['I32', [8, 4]]);
          break;
        case 'NVFP4A16':
          assert.equal(qc.format, 'nvfp4-pack-quantized');
          assert.deepEqual([g.weights.num_bits, g.weights.type, g.weights.strategy, g.weights.group_size], [4, 'float', 'tensor_group', 16]);
          assert.deepEqual([h.get(`${p}.weight_packed`)!.dtype, h.get(`${p}.weight_packed`)!.shape], ['U8', [64, 64]]);
          assert.deepEqual([h.get(`${p}.weight_scale`)!.dtype, h.get(`${p}.weight_scale`)!.shape], ['F8_E4M3', [64, 8]]);
          assert.deepEqual([h.get(`${p}.weight_global_scale`)!.dtype, h.get(`${p}.weight_global_scale`)!.shape], ['F32', [1]]);
          break;
      }
      // Scales are chosen as stored: every in-memory scale is exactly a bf16 value.
      for (const q of inMemory.values()) {
        if (q.format === 'nvfp4') continue;
        for (const s of q.scales) assert.equal(s, roundToScaleDtype('BF16')(s));
      }
    });
  }

  it('from float32, RTN gives exactly the canonical quantizers (online --quantization) results', () => {
    const src = SafetensorsCheckpoint.open(f32Dir);
    const floatOf = (m: string) => new Float32Array(src.read(`${m}.weight`).bytes.buffer);
    const same = (a: QuantizedWeight, b: QuantizedWeight) => assert.deepEqual(dequantize(a), dequantize(b));
    const cases: [QuantizeScheme, (w: Float32Array, r: number, c: number) => QuantizedWeight][] = [
      ['W4A16', (w, r, c) => quantizeInt4(w, r, c, { groupSize: 128 })],
      ['W4A16_ASYM', (w, r, c) => quantizeInt4(w, r, c, { groupSize: 128, symmetric: false })],
      ['W8A16', (w, r, c) => quantizeInt8(w, r, c)],
      ['FP8_DYNAMIC', (w, r, c) => quantizeFp8(w, r, c)],
      ['NVFP4A16', (w, r, c) => quantizeNvfp4(w, r, c)],
    ];
    for (const [scheme, canonical] of cases) {
      const { inMemory } = quantize(f32Dir, scheme);
      for (const [m, q] of inMemory) {
        const expected = canonical(floatOf(m), q.rows, q.cols);
        if (scheme === 'NVFP4A16') {
          // Our global multiplier is 1/(448·6/amax) as compressed-tensors stores it, not amax/(448·6):
          // an ulp apart, so values agree to float32 rounding and codes everywhere but at rare ties.
          const a = dequantize(q);
          const b = dequantize(expected);
          const off = a.filter((x, i) => Math.abs(x - b[i]) > 1e-6 * Math.abs(b[i])).length;
          assert.ok(off <= a.length / 500, `${m}: ${off} of ${a.length} values differ`);
        } else same(q, expected);
      }
    }
    src.close();
  });

  it('copies tokenizer, generation and chat-template files, writes recipe.yaml, keeps the config', () => {
    const { result } = quantize(f32Dir, 'FP8_DYNAMIC');
    for (const f of ['generation_config.json', 'tokenizer_config.json', 'chat_template.jinja', 'recipe.yaml', 'config.json', 'model.safetensors']) assert.ok(existsSync(join(result.output, f)), f);
    assert.match(readFileSync(join(result.output, 'recipe.yaml'), 'utf8'), /QuantizationModifier:[\s\S]*scheme: FP8_DYNAMIC/);
    const written = JSON.parse(readFileSync(join(result.output, 'config.json'), 'utf8'));
    assert.equal(written.hidden_size, 64);
    assert.equal(written.rope_theta, 10000);
    // Copied tensors are byte-identical.
    const a = SafetensorsCheckpoint.open(f32Dir);
    const b = SafetensorsCheckpoint.open(result.output);
    assert.deepEqual(Buffer.from(b.read('lm_head.weight').bytes), Buffer.from(a.read('lm_head.weight').bytes));
    a.close();
    b.close();
  });

  it('writes shards with an index when over --max-shard-size, and the shards load', () => {
    const { result, inMemory } = quantize(bf16Dir, 'W4A16_ASYM', { groupSize: 16, maxShardBytes: 20_000 });
    const index = JSON.parse(readFileSync(join(result.output, 'model.safetensors.index.json'), 'utf8'));
    const shards = new Set(Object.values(index.weight_map as Record<string, string>));
    assert.ok(shards.size > 2, `${shards.size} shards`);
    for (const s of shards) assert.match(s, new RegExp(`^model-\\d{5}-of-${String(shards.size).padStart(5, '0')}\\.safetensors$`));
    assert.ok(!existsSync(join(result.output, 'model.safetensors')));
    assertLoadsBack(result.output, inMemory, 'W4A16_ASYM');
  });

  it('a quantized model runs and stays close to the float one (closer for 8-bit)', () => {
    const tokens = [3, 17, 29, 40, 8, 61, 5, 22];
    const logits = (dir: string) => {
      const backend = new CpuBackend();
      return new ModelRunner(new LlamaModel(loadModelConfig(dir), load(dir, backend), backend)).step([{ seq: 0, start: 0, tokens }])[0];
    };
    const ref = logits(f32Dir);
    const err = (scheme: QuantizeScheme) => {
      const q = logits(quantize(f32Dir, scheme).result.output);
      let num = 0, den = 0;
      for (let i = 0; i < q.length; i++) {
        assert.ok(Number.isFinite(q[i]));
        num += (q[i] - ref[i]) ** 2;
        den += ref[i] ** 2;
      }
      return Math.sqrt(num / den);
    };
    const e8 = err('W8A16');
    const e4 = err('W4A16');
    assert.ok(e8 > 0 && e8 < 0.1, `W8A16 logits error ${e8}`);
    assert.ok(e4 > e8 && e4 < 1, `W4A16 logits error ${e4}`);
  });

  it('refuses what it cannot do, naming it', () => {
    const out = outDir();
    quantizeCheckpoint({ model: f32Dir, output: out, scheme: 'W8A16' });
    assert.throws(() => quantizeCheckpoint({ model: f32Dir, output: out, scheme: 'W8A16' }), (e: unknown) => e instanceof InvalidRequestError && /already exists and is not an empty directory/.test(e.message));
    assert.throws(() => quantizeCheckpoint({ model: out, output: outDir(), scheme: 'W4A16' }), (e: unknown) => e instanceof ModelLoadError && /is already quantized \(compressed-tensors pack-quantized\)/.test(e.message));
    assert.throws(() => quantizeCheckpoint({ model: f32Dir, output: outDir(), scheme: 'FP8_DYNAMIC', method: 'gptq' }), /--method gptq supports the integer schemes W4A16, W4A16_ASYM, W8A16/);
    assert.throws(() => quantizeCheckpoint({ model: f32Dir, output: outDir(), scheme: 'NVFP4A16', groupSize: 32 }), /--group-size applies to W4A16 and W4A16_ASYM/);
    assert.throws(() => quantizeCheckpoint({ model: f32Dir, output: outDir(), scheme: 'W4A16', method: 'gptq' }), (e: unknown) => e instanceof InvalidRequestError && /--method gptq needs calibration text: pass --calibration FILE/.test(e.message));
    // A failure halfway leaves no half-written checkpoint behind.
    const odd = writeTinyCheckpoint({ ...TINY_LLAMA, hidden_size: 40, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 48 });
    const failed = outDir();
    assert.throws(() => quantizeCheckpoint({ model: odd, output: failed, scheme: 'NVFP4A16' }), (e: unknown) => e instanceof InvalidRequestError && /NVFP4A16 needs input dimensions that are multiples of 16; 'model\.layers\.0\.self_attn\.q_proj\.weight' has 40/.test(e.message));
    assert.ok(!existsSync(failed));
  });

  it('f16 scale rounding is round-to-nearest-even', () => {
    assert.equal(f32ToF16(1), 0x3c00);
    assert.equal(f32ToF16(-2), 0xc000);
    assert.equal(f32ToF16(65504), 0x7bff);
    assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00); // tie → even
    assert.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02); // tie → even (up)
    assert.equal(f32ToF16(2 ** -24), 0x0001);
    assert.equal(f32ToF16(2 - 2 ** -12), 0x4000); // mantissa carry into the exponent
  });
});
