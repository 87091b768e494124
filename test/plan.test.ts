// The memory planner against hand-computed figures: exact parameter counts and weight bytes of
// published shapes, KV bytes per token, format arithmetic and NVIDIA's rules of thumb for 70B
// models, EAGLE-3 and draft-model memory, verdicts and the limits they report, and the CLI.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadModelConfig, parseModelConfig } from '../src/model/config.js';
import { packageRoot } from '../src/model/default-model.js';
import { DEVICES, findDevice } from '../src/plan/devices.js';
import { eagle3Params, defaultEagle3Shape, kvBytesPerSequence, kvBytesPerToken, linearBytes, reservedBytes, weightBytes } from '../src/plan/memory.js';
import { detectCheckpointFormat, parseSpeculativeConfig, planAcrossFormats, planMemory, resolveModel, verdictText, type PlanInput } from '../src/plan/planner.js';
import { EAGLE3_PRESETS, findPreset, PRESETS } from '../src/plan/presets.js';
import { fixturesDir } from './support/paths.js';

const cfgOf = (name: string) => parseModelConfig(findPreset(name)!, name);
const GB = 1e9;

describe('presets', () => {
  it('are config.json objects parseModelConfig accepts, with the published shapes', () => {
    for (const [name, raw] of [...Object.entries(PRESETS), ...Object.entries(EAGLE3_PRESETS)]) {
      const c = parseModelConfig(raw, name);
      assert.ok(c.numLayers > 0 && c.vocabSize > 0, name);
    }
    const l8 = cfgOf('llama-3.1-8b');
    assert.deepEqual([l8.hiddenSize, l8.numLayers, l8.numHeads, l8.numKvHeads, l8.headDim, l8.intermediateSize, l8.vocabSize, l8.maxPositionEmbeddings, l8.tieWordEmbeddings], [4096, 32, 32, 8, 128, 14336, 128256, 131072, false]);
    assert.equal(l8.rope.type, 'llama3');
    const l3b = cfgOf('llama-3.2-3b');
    assert.deepEqual([l3b.hiddenSize, l3b.numLayers, l3b.numHeads, l3b.numKvHeads, l3b.headDim, l3b.tieWordEmbeddings], [3072, 28, 24, 8, 128, true]);
    assert.equal(cfgOf('qwen3-8b').qkNorm, true);
    assert.equal(findPreset('Llama-3.3-70B-Instruct')!.hidden_size, 8192, 'aliases, any case');
    assert.equal(findPreset('no-such-model'), undefined);
    // A copy: callers may mutate what they get.
    findPreset('llama-3.1-8b')!.hidden_size = 1;
    assert.equal(PRESETS['llama-3.1-8b']!.hidden_size, 4096);
  });
});

describe('weights', () => {
  it('llama-3.1-8b bf16 = exact parameter count × 2', () => {
    const w = weightBytes(cfgOf('llama-3.1-8b'), 'bf16');
    // embed + lm_head 2 × 128256·4096; per layer q,o 4096², k,v 1024·4096, MLP 3 × 14336·4096, 2 norms; final norm.
    const perLayer = 2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 14336 * 4096 + 2 * 4096;
    const params = 2 * 128256 * 4096 + 32 * perLayer + 4096;
    assert.equal(params, 8_030_261_248);
    assert.equal(w.params, params);
    assert.equal(w.totalBytes, params * 2);
    assert.equal(w.scaleBytes, 0);
  });

  it('qwen3-8b counts its q/k norms: 8,190,735,360 parameters', () => {
    assert.equal(weightBytes(cfgOf('qwen3-8b'), 'bf16').params, 8_190_735_360);
  });

  it('parameter counts equal the tensors of real checkpoints (test fixtures)', () => {
    const dir = join(fixturesDir(), 'hf-models');
    for (const name of readdirSync(dir)) {
      let numel = 0;
      for (const file of readdirSync(join(dir, name)).filter((f) => f.endsWith('.safetensors'))) {
        const buf = readFileSync(join(dir, name, file));
        const n = Number(buf.readBigUInt64LE(0));
        const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { shape: number[] }>;
        for (const [k, v] of Object.entries(header)) if (k !== '__metadata__') numel += v.shape.reduce((a, b) => a * b, 1);
      }
      assert.equal(weightBytes(loadModelConfig(join(dir, name)), 'bf16').params, numel, name);
    }
  });

  it('formats: fp8/w8a16 1 byte + bf16 per-channel scale, w4a16 ½ byte + bf16 scale per 128, nvfp4 ½ byte + e4m3 scale per 16', () => {
    assert.deepEqual(linearBytes(4096, 4096, 'fp8'), { data: 4096 * 4096, scales: 4096 * 2 });
    assert.deepEqual(linearBytes(4096, 4096, 'w8a16'), { data: 4096 * 4096, scales: 4096 * 2 });
    assert.deepEqual(linearBytes(4096, 4096, 'w4a16'), { data: 4096 * 2048, scales: 4096 * 32 * 2 });
    assert.deepEqual(linearBytes(4096, 4096, 'nvfp4'), { data: 4096 * 2048, scales: 4096 * 256 + 8 });
    // Embeddings and lm_head stay bf16 in every format.
    const q = weightBytes(cfgOf('llama-3.1-8b'), 'w4a16');
    assert.equal(q.embeddingBytes + q.lmHeadBytes, 2 * 128256 * 4096 * 2);
    assert.equal(q.linearBytes, (32 * (2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 14336 * 4096)) / 2);
  });

  it('agrees with NVIDIA\'s rules of thumb for a 70B model: ~140 GB FP16, ~70 GB FP8, ~35 GB 4-bit', () => {
    const c = cfgOf('llama-3.3-70b');
    const bf16 = weightBytes(c, 'bf16');
    assert.equal(bf16.params, 70_553_706_496);
    assert.ok(Math.abs(bf16.totalBytes / GB - 140) / 140 < 0.02, `bf16 ${bf16.totalBytes / GB}`);
    const fp8 = weightBytes(c, 'fp8').totalBytes / GB;
    assert.ok(fp8 >= 70 && fp8 < 70 * 1.05, `fp8 ${fp8} (70 GB of layers + bf16 embeddings and lm_head)`);
    const w4 = weightBytes(c, 'w4a16');
    assert.ok(Math.abs(w4.linearBytes / GB - 35) / 35 < 0.03, `4-bit layers ${w4.linearBytes / GB}`);
    assert.ok(w4.totalBytes / GB > 35 && w4.totalBytes / GB < 42, `w4a16 with scales and bf16 embeddings ${w4.totalBytes / GB}`);
    // 140 GB of FP16 weights do not fit a 128 GB Thor.
    const p = planMemory(input('llama-3.3-70b', 'thor', { format: 'bf16' }));
    assert.equal(p.fits, false);
    assert.ok(p.kvAvailableBytes < 0);
    assert.match(verdictText(p), /does not fit: weights and runtime need [\d.]+ GB, the device leaves 116\.26 GB/);
  });
});

function input(model: string, device: string, o: Partial<PlanInput> = {}): PlanInput {
  return { model: resolveModel(model), device: findDevice(device)!, format: 'bf16', kvCacheDtype: 'bf16', maxModelLen: 8192, concurrency: 8, ...o };
}

describe('KV cache', () => {
  it('llama-3.1-8b bf16: 2 × 32 layers × 8 kv heads × 128 × 2 bytes = 131072 bytes per token; fp8 half', () => {
    assert.equal(kvBytesPerToken(cfgOf('llama-3.1-8b'), 'bf16'), 131072);
    assert.equal(kvBytesPerToken(cfgOf('llama-3.1-8b'), 'fp8'), 65536);
    assert.equal(kvBytesPerToken(cfgOf('llama-3.3-70b'), 'bf16'), 2 * 80 * 8 * 128 * 2);
    // Whole 16-token blocks per sequence.
    assert.equal(kvBytesPerSequence(cfgOf('llama-3.1-8b'), 'bf16', 17), 32 * 131072);
  });

  it('sliding-window layers keep at most their window', () => {
    const c = parseModelConfig({ ...findPreset('mistral-7b')!, sliding_window: 4096 });
    assert.equal(kvBytesPerSequence(c, 'bf16', 32768), kvBytesPerSequence(c, 'bf16', 4112));
    assert.ok(kvBytesPerSequence(c, 'bf16', 32768) < 32768 * kvBytesPerToken(c, 'bf16'));
  });
});

describe('speculative decoding memory', () => {
  it('an EAGLE-3 head is one decoder layer over 2H inputs + fc(3H→H) + lm_head over the draft vocabulary', () => {
    const target = cfgOf('llama-3.1-8b');
    const fromPreset = planMemory(input('llama-3.1-8b', 'h100', { spec: parseSpeculativeConfig('{"method":"eagle3","model":"eagle3-llama-3.1-8b","num_speculative_tokens":3}') }));
    const H = 4096;
    const params = 3 * H * H + 4096 * 2 * H + 2 * 1024 * 2 * H + H * 4096 + 3 * 14336 * H + 4 * H + 32000 * H;
    assert.equal(fromPreset.draft!.params, params);
    assert.equal(fromPreset.draft!.weightBytes, params * 2 + 32000 * 8 + 128256);
    assert.equal(fromPreset.draft!.kvBytesPerToken, 2 * 1 * 8 * 128 * 2);
    assert.equal(fromPreset.kvBytesPerToken, 131072 + 4096);
    // Without a model the head is sized from the target, the same shape here.
    assert.equal(eagle3Params(defaultEagle3Shape(target)).params, params);
    assert.equal(parseSpeculativeConfig('{"model":"eagle3-llama-3.1-8b"}').method, 'eagle3', 'method inferred from the head config');
  });

  it('a draft model adds its weights and its own KV cache; n-gram adds nothing', () => {
    const p = planMemory(input('llama-3.1-8b', 'h100', { spec: parseSpeculativeConfig('{"method":"draft_model","model":"llama-3.2-1b","num_speculative_tokens":4}') }));
    assert.equal(p.draft!.weightBytes, weightBytes(cfgOf('llama-3.2-1b'), 'bf16').totalBytes);
    assert.equal(p.draft!.kvBytesPerToken, 2 * 16 * 8 * 64 * 2);
    const base = planMemory(input('llama-3.1-8b', 'h100'));
    assert.ok(Math.abs(base.kvAvailableBytes - p.kvAvailableBytes - p.draft!.weightBytes) < 1);
    const ng = planMemory(input('llama-3.1-8b', 'h100', { spec: parseSpeculativeConfig('{"method":"ngram","num_speculative_tokens":3}') }));
    assert.equal(ng.draft!.weightBytes, 0);
    assert.throws(() => parseSpeculativeConfig('{"method":"medusa"}'), /not supported/);
    assert.throws(() => parseSpeculativeConfig('{"method":"draft_model"}'), /needs "model"/);
  });
});

describe('device budgets and verdicts', () => {
  it('Jetson memory is shared with the OS: Thor 128 GB leaves 110-120 GB; discrete GPUs keep 10%', () => {
    const thor = planMemory(input('llama-3.1-8b', 'thor'));
    assert.ok(thor.usableBytes / GB >= 110 && thor.usableBytes / GB <= 120, `${thor.usableBytes / GB}`);
    assert.match(thor.notes.join(' '), /shares its 128 GB between the CPU and the GPU/);
    const h100 = planMemory(input('llama-3.1-8b', 'h100'));
    assert.equal(h100.usableBytes, 72 * GB);
    assert.ok(Math.abs(reservedBytes(100 * GB, false, 0.8) - 20 * GB) < 1);
    assert.equal(planMemory(input('llama-3.1-8b', 'thor', { reserveBytes: 20 * GB })).usableBytes, 108 * GB);
  });

  it('70B: FP8 does not fit an 80 GB H100 but fits an H200; W4A16 fits Thor with room for 8 × 8k', () => {
    assert.equal(planMemory(input('llama-3.3-70b', 'h100', { format: 'fp8' })).fits, false);
    const h200 = planMemory(input('llama-3.3-70b', 'h200', { format: 'fp8' }));
    assert.equal(h200.fits, true);
    const thor = planMemory(input('llama-3.3-70b', 'thor', { format: 'w4a16' }));
    assert.equal(thor.fits, true);
    assert.ok(thor.maxConcurrencyAtContext >= 8);
  });

  it('the reported limits are tight: one more sequence or one more block does not fit', () => {
    for (const [model, device, format] of [
      ['llama-3.1-8b', 'rtx4090', 'bf16'],
      ['qwen3-32b', 'orin-agx-64', 'w4a16'],
      ['llama-3.3-70b', 'h200', 'fp8'],
    ] as const) {
      const p = planMemory(input(model, device, { format, maxModelLen: 4096, concurrency: 4 }));
      const n = p.maxConcurrencyAtContext;
      assert.ok(n > 0, `${model} on ${device}`);
      assert.equal(planMemory(input(model, device, { format, maxModelLen: 4096, concurrency: n })).fits, true);
      assert.equal(planMemory(input(model, device, { format, maxModelLen: 4096, concurrency: n + 1 })).fits, false);
      const ctx = p.maxContextAtConcurrency;
      assert.equal(ctx % 16, 0);
      if (ctx < p.maxPositionEmbeddings) {
        assert.equal(planMemory(input(model, device, { format, maxModelLen: ctx, concurrency: 4 })).fits, true);
        assert.equal(planMemory(input(model, device, { format, maxModelLen: ctx + 16, concurrency: 4 })).fits, false);
      }
    }
  });

  it('small devices: an 8B bf16 model does not fit an 8 GB Orin Nano, a 4-bit 1B one does', () => {
    assert.equal(planMemory(input('llama-3.1-8b', 'orin-nano-8', { maxModelLen: 2048, concurrency: 1 })).fits, false);
    assert.equal(planMemory(input('llama-3.2-1b', 'orin-nano-8', { format: 'w4a16', maxModelLen: 2048, concurrency: 1 })).fits, true);
  });

  it('the format table covers bf16, fp8, w8a16, w4a16, nvfp4 and notes formats a device cannot run natively', () => {
    const t = planAcrossFormats(input('llama-3.1-8b', 'orin-agx-64'));
    assert.deepEqual(
      t.map((p) => p.format),
      ['bf16', 'fp8', 'w8a16', 'w4a16', 'nvfp4'],
    );
    assert.ok(t[3]!.weights.totalBytes < t[1]!.weights.totalBytes && t[1]!.weights.totalBytes < t[0]!.weights.totalBytes);
    assert.match(t[1]!.notes.join(' '), /no FP8 tensor cores/);
    assert.match(t[4]!.notes.join(' '), /no FP4 tensor cores/);
    assert.equal(planMemory(input('llama-3.1-8b', 'thor', { format: 'nvfp4' })).notes.some((n) => /FP4/.test(n)), false, 'Thor runs NVFP4 natively');
    assert.equal(Object.keys(DEVICES).length >= 13, true);
  });

  it('a context beyond the model\'s positions does not fit', () => {
    const p = planMemory(input('qwen3-8b', 'h200', { maxModelLen: 65536, concurrency: 1 }));
    assert.equal(p.fits, false);
    assert.ok(p.maxContextAtConcurrency <= 40960);
  });
});

describe('pre-quantized checkpoints', () => {
  it('detects compressed-tensors, ModelOpt and GPTQ formats from config.json', () => {
    const ct = (bits: number, type: string, format = 'pack-quantized') => ({ quantization_config: { quant_method: 'compressed-tensors', format, config_groups: { group_0: { weights: { num_bits: bits, type } } } } });
    assert.equal(detectCheckpointFormat(ct(4, 'int')), 'w4a16');
    assert.equal(detectCheckpointFormat(ct(8, 'float', 'float-quantized')), 'fp8');
    assert.equal(detectCheckpointFormat(ct(4, 'float', 'nvfp4-pack-quantized')), 'nvfp4');
    assert.equal(detectCheckpointFormat({ quantization_config: { quant_method: 'modelopt', quant_algo: 'NVFP4' } }), 'nvfp4');
    assert.equal(detectCheckpointFormat({ quantization_config: { quant_method: 'gptq', bits: 4 } }), 'w4a16');
    assert.equal(detectCheckpointFormat({}), undefined);
  });
});

describe('tachyon plan (CLI)', () => {
  const bin = join(packageRoot(), 'bin', 'tachyon.js');
  const run = (...args: string[]) => spawnSync(process.execPath, [bin, 'plan', ...args], { encoding: 'utf8', timeout: 30_000 });

  it('prints the budget, the verdict and the format table', () => {
    const r = run('--model', 'llama-3.3-70b', '--device', 'thor', '--max-model-len', '8192', '--concurrency', '8');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /Verdict: does not fit/);
    assert.match(r.stdout, /total\s+141\.11 GB/);
    assert.match(r.stdout, /w4a16\s+39\.50 GB .* fits/);
    assert.match(r.stdout, /bf16\s+141\.11 GB .* does not fit/);
  });

  it('--json gives numbers; a model directory and --memory work too', () => {
    const work = mkdtempSync(join(tmpdir(), 'tachyon-plan-'));
    const dir = join(work, 'm');
    mkdirSync(dir);
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...findPreset('llama-3.1-8b'), quantization_config: { quant_method: 'compressed-tensors', format: 'pack-quantized', config_groups: { g: { weights: { num_bits: 4, type: 'int' } } } } }));
    const r = run('--model', dir, '--memory', '24', '--max-model-len', '4096', '--concurrency', '2', '--kv-cache-dtype', 'fp8', '--json');
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { format: string; weights: { total_bytes: number }; kv: { bytes_per_token: number }; verdict: { fits: boolean }; formats: unknown[]; memory: { usable_bytes: number } };
    assert.equal(j.format, 'w4a16', 'the checkpoint\'s own format by default');
    assert.equal(j.weights.total_bytes, weightBytes(cfgOf('llama-3.1-8b'), 'w4a16').totalBytes);
    assert.equal(j.kv.bytes_per_token, 65536);
    assert.equal(j.verdict.fits, true);
    assert.equal(j.formats.length, 5);
    assert.equal(j.memory.usable_bytes, 24e9 * 0.9);
  });

  it('errors name what is known', () => {
    let r = run('--model', 'llama-3.1-8b', '--device', 'tpu');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--device 'tpu' is not known; known: thor/);
    r = run('--model', 'gpt-5', '--device', 'h100');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /neither a model directory with config.json nor a preset; presets: llama-3.1-8b/);
  });
});
