// `--load-format dummy`: random weights at a config's or a shape preset's shapes. On the CPU with small
// configs written to a temporary folder (config.json only), the preset names and their errors, the
// padded-vocabulary rule that keeps sampling inside the borrowed tokenizer; on a GPU (skipped without
// one) a real preset, the KV cache sized by --gpu-memory-utilization, and the activation estimate the
// sizing relies on checked against the memory pool.

import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, it } from 'node:test';
import type { Weight } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import type { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { stepActivationBytes } from '../src/engine/kv-budget.js';
import { kvBytesPerToken } from '../src/engine/kv-cache.js';
import { maskPaddedVocab } from '../src/engine/sampler.js';
import { CapacityError, InvalidRequestError, ModelLoadError } from '../src/errors.js';
import { LLM } from '../src/llm.js';
import { parseModelConfig, type ModelConfig } from '../src/model/config.js';
import { DEFAULT_MODEL_NAME, embeddedModelDir } from '../src/model/default-model.js';
import type { ForwardBatch } from '../src/model/llama.js';
import { LlamaModel } from '../src/model/llama.js';
import { describeDummySource, loadModel, resolveModelSource } from '../src/model/load-model.js';
import { f32ToF16, loadDummyWeights } from '../src/model/load/dummy.js';
import { f16ToF32 } from '../src/model/load/dtype.js';
import { weightBytes } from '../src/plan/memory.js';
import { findPreset } from '../src/plan/presets.js';
import { fixturesDir } from './support/paths.js';
import { writePaddedVocabCheckpoint } from './support/tiny-checkpoint.js';

let gpu: CudaBackend | undefined;
let skipReason: string | false = false;
try {
  const cuda = await import('../src/backend/cuda/cuda-backend.js');
  const opened = cuda.openCudaBackend();
  if ('backend' in opened) gpu = opened.backend;
  else skipReason = `no CUDA device: ${opened.reason}`;
} catch (err) {
  skipReason = `no CUDA device: the CUDA bindings did not load (${(err as Error).message.split('\n')[0]})`;
}

const GiB = 2 ** 30;
const TOKENIZER_SIZE = 4096; // the embedded tachyon-tiny's, which presets and weightless folders borrow

/** A folder holding only config.json, as a preset-like model with no checkpoint. */
function configDir(config: Record<string, unknown>, files: Record<string, unknown> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'tachyon-dummy-'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  for (const [name, value] of Object.entries(files)) writeFileSync(join(dir, name), JSON.stringify(value));
  return dir;
}

/** Llama-like, with a vocabulary larger than the borrowed tokenizer's (as every real preset has). */
const SMALL_LLAMA = {
  architectures: ['LlamaForCausalLM'],
  hidden_size: 64,
  intermediate_size: 160,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 5000,
  max_position_embeddings: 512,
  rms_norm_eps: 1e-5,
  torch_dtype: 'bfloat16',
  tie_word_embeddings: false,
};

/** Qwen3-like (q/k norms), float16, tied embeddings. */
const SMALL_QWEN3 = {
  ...SMALL_LLAMA,
  architectures: ['Qwen3ForCausalLM'],
  head_dim: 32,
  torch_dtype: 'float16',
  tie_word_embeddings: true,
  attention_bias: true,
};

/** Every weight's shape as config.json implies it, by LayerWeights key. */
function expectedShapes(c: ModelConfig): Record<string, number[]> {
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const h = c.hiddenSize;
  return {
    inputNorm: [h], postAttentionNorm: [h], q: [q, h], k: [kv, h], v: [kv, h], o: [h, q],
    gate: [c.intermediateSize, h], up: [c.intermediateSize, h], down: [h, c.intermediateSize],
    ...(c.qkNorm ? { qNorm: [c.headDim], kNorm: [c.headDim] } : {}),
    ...(c.qkvBias ? { qBias: [q], kBias: [kv], vBias: [kv] } : {}),
    ...(c.oBias ? { oBias: [h] } : {}),
  };
}

function checkShapes(c: ModelConfig, w: LlamaModel['weights']): void {
  assert.deepEqual(w.embedTokens.shape, [c.vocabSize, c.hiddenSize]);
  assert.deepEqual(w.lmHead.shape, [c.vocabSize, c.hiddenSize]);
  assert.deepEqual(w.norm.shape, [c.hiddenSize]);
  assert.equal(w.layers.length, c.numLayers);
  const want = expectedShapes(c);
  for (const [i, layer] of w.layers.entries()) {
    const got = Object.fromEntries(Object.entries(layer).filter(([, v]) => v !== undefined).map(([k, v]) => [k, [...(v as Weight).shape]]));
    assert.deepEqual(got, want, `layer ${i}`);
  }
}

describe('model names: directories and shape presets', () => {
  it('a preset name or alias resolves with dummy weights only', () => {
    const p = resolveModelSource('Llama-3.1-8B-Instruct', 'dummy');
    assert.equal(p.kind, 'preset');
    assert.equal(p.kind === 'preset' && p.name, 'llama-3.1-8b');
    assert.throws(() => resolveModelSource('llama-3.3-70b', 'auto'), (e: Error) =>
      e instanceof InvalidRequestError && /^'llama-3\.3-70b' is a shape preset, not a checkpoint; add --load-format dummy/.test(e.message));
    assert.throws(() => loadModel('qwen3-8b', new CpuBackend()), /'qwen3-8b' is a shape preset, not a checkpoint; add --load-format dummy/);
  });

  it('an unknown name lists the presets; an EAGLE-3 head preset cannot run alone', () => {
    assert.throws(() => resolveModelSource('llama-9b', 'dummy'), (e: Error) =>
      e instanceof ModelLoadError && /^'llama-9b' is neither a model directory nor a shape preset; presets: llama-3\.1-8b, .*llama-3\.3-70b.*qwen3-8b/.test(e.message));
    assert.throws(() => resolveModelSource('/no/such/dir', 'auto'), /\/no\/such\/dir: model directory does not exist/);
    assert.throws(() => resolveModelSource('eagle3-llama-3.1-8b', 'dummy'), /EAGLE-3 draft head: it drafts for a target model/);
  });

  it('a directory wins over a preset of the same name', () => {
    const root = mkdtempSync(join(tmpdir(), 'tachyon-dummy-'));
    const dir = join(root, 'llama-3.1-8b');
    mkdirSync(dir);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(SMALL_LLAMA));
    assert.deepEqual(resolveModelSource(dir, 'dummy'), { kind: 'dir', dir });
  });

  it('a preset has the preset\'s config and borrows the default model\'s tokenizer, with one warning', () => {
    const d = describeDummySource(resolveModelSource('llama-3.3-70b', 'dummy'));
    assert.deepEqual(d.config, parseModelConfig(findPreset('llama-3.3-70b')!, 'preset llama-3.3-70b'));
    assert.equal(d.config.numLayers, 80);
    assert.equal(d.dir, 'llama-3.3-70b');
    assert.equal(d.tokenizerDir, embeddedModelDir(DEFAULT_MODEL_NAME));
    assert.equal(d.ownTokenizer, false);
    assert.deepEqual(d.warnings, [`preset llama-3.3-70b has no tokenizer: using the embedded ${DEFAULT_MODEL_NAME}'s tokenizer and chat template (dummy weights; only its ids are sampled)`]);
    assert.equal(d.storedQuantization, undefined);
  });
});

describe('dummy weights on the CPU', () => {
  it('a preset larger than the machine\'s memory is refused before anything is made', (t) => {
    // 70.6B parameters as float32: 282 GB.
    if (totalmem() > 282e9) return t.skip(`this machine has ${(totalmem() / 1e9).toFixed(0)} GB`);
    assert.throws(() => loadModel('llama-3.3-70b', new CpuBackend(), { loadFormat: 'dummy' }), (e: Error) =>
      e instanceof ModelLoadError && /^llama-3\.3-70b: its 70\.6B parameters take 282\.\d GB on the CPU backend \(dense weights as float32\), more than this machine's [\d.]+ GB; run it on a GPU \(--device cuda\)/.test(e.message));
  });

  it('a config.json-only folder loads at its shapes in its dtype, with layer progress, and generates only decodable ids', async () => {
    const dir = configDir(SMALL_LLAMA);
    const progress: [number, number][] = [];
    const loaded = loadModel(dir, new CpuBackend(), { loadFormat: 'dummy', onProgress: (d, t) => progress.push([d, t]) });
    const c = loaded.config;
    checkShapes(c, loaded.model.weights);
    // Embedding, each layer, the end: as the checkpoint loader reports it.
    assert.deepEqual(progress, [[1, 5], [2, 5], [3, 5], [4, 5], [5, 5]]);
    assert.equal(loaded.loadFormat, 'dummy');
    assert.equal(loaded.tokenizer.vocabSize, TOKENIZER_SIZE);
    assert.match(loaded.warnings[0], /has no tokenizer\.json: using the embedded tachyon-tiny's tokenizer/);
    // bf16 like the torch_dtype says, every byte the real checkpoint would have (the planner's count).
    assert.deepEqual(loaded.weightBytes, { bf16: weightBytes(c, 'bf16').totalBytes });
    // Small uniform values, not zeros, and seeded: the same seed gives the same weights.
    const q0 = loaded.model.backend.weightToHost(loaded.model.weights.layers[0].q);
    assert.ok(q0.every((x) => Math.abs(x) <= 1 / Math.sqrt(c.hiddenSize)) && q0.some((x) => x !== 0));
    const again = loadModel(dir, new CpuBackend(), { loadFormat: 'dummy' });
    assert.deepEqual(again.model.backend.weightToHost(again.model.weights.layers[0].q), q0);
    const other = loadModel(dir, new CpuBackend(), { loadFormat: 'dummy', seed: 1 });
    assert.notDeepEqual(other.model.backend.weightToHost(other.model.weights.layers[0].q), q0);

    const llm = await LLM.load({ model: dir, loadFormat: 'dummy', device: 'cpu' });
    try {
      assert.ok(llm.warnings.some((w) => /has no tokenizer\.json/.test(w)));
      assert.equal(llm.engine.samplingVocabSize, TOKENIZER_SIZE);
      for (const seed of [1, 2, 3]) {
        const r = await llm.complete('The robot', { maxTokens: 24, temperature: 1.5, seed, ignoreEos: true });
        assert.equal(r.tokenIds.length, 24);
        assert.ok(r.tokenIds.every((t) => t < TOKENIZER_SIZE), `ids ${r.tokenIds.filter((t) => t >= TOKENIZER_SIZE)} are beyond the tokenizer`);
        assert.equal(r.text, llm.tokenizer.decode(r.tokenIds, { skipSpecialTokens: true }));
      }
    } finally {
      await llm.close();
    }
  });

  it('Qwen3 shapes (q/k norms, biases, tied embeddings) in float16, and --quantization on the decoder linears', () => {
    const dir = configDir(SMALL_QWEN3);
    const f16 = loadModel(dir, new CpuBackend(), { loadFormat: 'dummy' });
    checkShapes(f16.config, f16.model.weights);
    assert.equal(f16.model.weights.lmHead, f16.model.weights.embedTokens);
    assert.deepEqual(f16.weightBytes, { f16: weightBytes(f16.config, 'bf16').totalBytes });

    const q = loadModel(dir, new CpuBackend(), { loadFormat: 'dummy', quantization: 'w4a16' });
    checkShapes(q.config, q.model.weights);
    const l = q.model.weights.layers[1];
    for (const w of [l.q, l.k, l.v, l.o, l.gate, l.up, l.down]) assert.equal(w.format, 'int4');
    for (const w of [q.model.weights.embedTokens, l.inputNorm, l.qNorm!, l.qBias!]) assert.equal(w.format, 'f16');
    assert.equal(q.quantization, 'w4a16');
    assert.equal(q.checkpointQuantization, 'dummy w4a16');
    assert.deepEqual(Object.keys(q.weightBytes).sort(), ['f16', 'int4']);
  });

  it('a pre-quantized checkpoint\'s folder gives dummy weights in its format, or says why it cannot', () => {
    const w4 = { quant_method: 'compressed-tensors', format: 'pack-quantized', config_groups: { group_0: { targets: ['Linear'], weights: { num_bits: 4, type: 'int', group_size: 128, strategy: 'group', symmetric: true } } } };
    const dir = configDir({ ...SMALL_LLAMA, quantization_config: w4 });
    assert.equal(describeDummySource(resolveModelSource(dir, 'dummy')).storedQuantization, 'w4a16');
    const loaded = loadModel(dir, new CpuBackend(), { loadFormat: 'dummy' });
    assert.equal(loaded.model.weights.layers[0].down.format, 'int4');
    assert.throws(() => loadModel(dir, new CpuBackend(), { loadFormat: 'dummy', quantization: 'fp8' }), /is a w4a16 checkpoint; its dummy weights are made in that format, so --quantization fp8 cannot apply/);
    // GPTQ's own file, no quantization_config.
    const gptq = configDir(SMALL_LLAMA, { 'quantize_config.json': { bits: 8, group_size: 128 } });
    assert.equal(describeDummySource(resolveModelSource(gptq, 'dummy')).storedQuantization, 'w8a16');
    const bnb = configDir({ ...SMALL_LLAMA, quantization_config: { quant_method: 'bitsandbytes', load_in_4bit: true } });
    assert.throws(() => loadModel(bnb, new CpuBackend(), { loadFormat: 'dummy' }), (e: Error) =>
      e instanceof ModelLoadError && /config\.json quantization_config describes a quantization scheme with no tachyon counterpart \(supported for dummy weights: fp8, w8a16, w4a16, nvfp4\)/.test(e.message));
  });

  it('a folder with weights but --load-format dummy reads config.json only; without dummy, a weightless folder says to add it', () => {
    const dir = configDir(SMALL_LLAMA);
    assert.throws(() => loadModel(dir, new CpuBackend()), /no model weights found \(expected model\.safetensors or model\.safetensors\.index\.json\); add --load-format dummy/);
    // Its own tokenizer is used when it has one.
    const tok = join(fixturesDir(), 'tokenizers', 'byte-level-llama3');
    const withTok = configDir({ ...SMALL_LLAMA, vocab_size: 1009 });
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(tok, f), join(withTok, f));
    const loaded = loadModel(withTok, new CpuBackend(), { loadFormat: 'dummy' });
    assert.equal(loaded.tokenizerDir, withTok);
    assert.deepEqual(loaded.warnings, []);
  });

  it('float16 encoding rounds to nearest even, subnormals included', () => {
    for (const x of [0, 1, -1, 0.1, -0.3333, 65504, 1e-5, -6e-8, 2 ** -14, 2 ** -24, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 2047.5]) {
      const back = f16ToF32(f32ToF16(x));
      const e = x === 0 ? 0 : Math.floor(Math.log2(Math.abs(x)));
      const ulp = 2 ** (Math.max(e, -14) - 10);
      assert.ok(Math.abs(back - x) <= ulp / 2, `${x} → ${back}`);
    }
    assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00); // a tie goes to the even mantissa
    assert.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02);
    assert.equal(f32ToF16(-0), 0x8000);
    assert.equal(f32ToF16(70000), 0x7c00);
  });
});

describe('padded vocabulary', () => {
  it('masks every row past the tokenizer\'s ids', () => {
    const logits = Float32Array.from({ length: 3 * 6 }, (_, i) => i);
    maskPaddedVocab(logits, 6, 4);
    assert.deepEqual([...logits], [0, 1, 2, 3, -Infinity, -Infinity, 6, 7, 8, 9, -Infinity, -Infinity, 12, 13, 14, 15, -Infinity, -Infinity]);
    const same = Float32Array.from([1, 2, 3]);
    maskPaddedVocab(same, 3, 3);
    assert.deepEqual([...same], [1, 2, 3]);
  });

  it('a model whose vocab_size exceeds its tokenizer never emits an id the tokenizer cannot decode', async () => {
    // 1024 ids over a 1009-token tokenizer; every real id's lm_head row is zero and the padded ones are
    // random, so without the rule the padded ids would win almost every step.
    const { dir, cfg } = writePaddedVocabCheckpoint(0);

    const llm = await LLM.load({ model: dir, device: 'cpu' });
    try {
      assert.equal(llm.tokenizer.vocabSize, 1009);
      assert.equal(llm.engine.samplingVocabSize, 1009);
      // The raw logits do favour the padded ids (so the test can fail).
      const ids = llm.tokenizer.encode('Hello there, robot');
      const n = ids.length;
      const m = llm.loaded.model;
      const kv = m.backend.allocKvCache({ numLayers: cfg.num_hidden_layers, numBlocks: 2, blockSize: 16, numKvHeads: 2, headDim: 8 });
      const batch: ForwardBatch = {
        numTokens: n, numSeqs: 1, tokens: Int32Array.from(ids), positions: Int32Array.from(ids, (_, i) => i), seqIndex: new Int32Array(n),
        slots: Int32Array.from(ids, (_, i) => i), blockTables: Int32Array.from([0, 1]), maxBlocksPerSeq: 2, logitRows: Int32Array.from([n - 1]),
      };
      const raw = m.forward(batch, kv).logits;
      let best = 0;
      for (let i = 1; i < raw.length; i++) if (raw[i] > raw[best]) best = i;
      assert.ok(best >= 1009, `raw argmax ${best}`);
      for (const params of [{ temperature: 0 }, { temperature: 1, seed: 7 }, { temperature: 2, topK: 0, seed: 8 }]) {
        const r = await llm.complete('Hello there, robot', { ...params, maxTokens: 40, ignoreEos: true }, { addSpecialTokens: true });
        assert.equal(r.tokenIds.length, 40);
        assert.ok(r.tokenIds.every((t) => t < 1009), `${JSON.stringify(params)}: ids ${r.tokenIds.filter((t) => t >= 1009)}`);
      }
      // Logprobs over the masked row: the padded ids have none of the mass.
      for await (const chunk of llm.generate('Hello', { temperature: 1, seed: 3, maxTokens: 2 }, { logprobs: 5 })) {
        for (const lp of chunk.logprobs ?? []) assert.ok(lp.top.every((t) => t.id < 1009) && Number.isFinite(lp.logprob));
      }
    } finally {
      await llm.close();
    }
  });
});

describe('dummy presets on CUDA', { skip: skipReason }, () => {
  const memInfo = () => gpu!.driver.memInfo();

  it('a preset loads at its shapes on the GPU, the KV cache takes what --gpu-memory-utilization leaves, and only tokenizer ids come out', async () => {
    // This engine may use about 6 GiB beyond what the device already holds (other suites may share it).
    const { totalBytes, freeBytes } = memInfo();
    const f = Math.min(1, (totalBytes - freeBytes + 6 * GiB) / totalBytes);
    const llm = await LLM.load({ model: 'llama-3.2-1b', loadFormat: 'dummy', device: 'cuda', maxModelLen: 4096, gpuMemoryUtilization: f });
    try {
      const c = llm.config;
      assert.equal(llm.loaded.model.backend.name, 'cuda');
      checkShapes(c, llm.loaded.model.weights);
      assert.deepEqual(llm.loaded.weightBytes, { bf16: weightBytes(c, 'bf16').totalBytes });
      const tokens = llm.engine.pool.numBlocks * llm.engine.options.blockSize;
      assert.equal(llm.loaded.model.backend.kvDtype, 'bf16', 'the CUDA default');
      const kvBytes = tokens * kvBytesPerToken(c, 'bf16');
      assert.ok(tokens >= 4096, `${tokens} tokens`);
      // 6 GiB less the weights, plus slack: other test files share the GPU and may free memory while
      // this one loads (seen: 6.7 GiB once), which the utilization then rightly hands to the cache.
      assert.ok(kvBytes <= 8 * GiB, `KV cache of ${kvBytes} bytes is over the 6 GiB allowed (+2 GiB slack)`);
      const line = llm.notes.find((n) => n.startsWith('KV cache:'));
      assert.match(line ?? '', new RegExp(`^KV cache: ${tokens} tokens \\([\\d.]+ GiB, bf16\\), max concurrency ${(tokens / 4096).toFixed(2)}× at max_model_len 4096`));
      const r = await llm.complete('The robot', { maxTokens: 32, temperature: 1, seed: 1, ignoreEos: true });
      assert.equal(r.tokenIds.length, 32);
      assert.ok(r.tokenIds.every((t) => t < TOKENIZER_SIZE), `ids ${r.tokenIds.filter((t) => t >= TOKENIZER_SIZE)}`);
    } finally {
      await llm.close();
    }
  });

  it('refuses to start when the cache cannot hold one sequence of the preset\'s default context, naming the fix', async () => {
    const { totalBytes, freeBytes } = memInfo();
    const f = (totalBytes - freeBytes + 4 * GiB) / totalBytes;
    await assert.rejects(LLM.load({ model: 'llama-3.2-1b', loadFormat: 'dummy', device: 'cuda', gpuMemoryUtilization: f }), (e: Error) =>
      e instanceof CapacityError && /max_model_len 131072/.test(e.message) && /lower --max-model-len \(.*\) or raise --gpu-memory-utilization/.test(e.message));
    (globalThis as { gc?: () => void }).gc?.();
  });

  it('one step\'s activations in the pool stay within stepActivationBytes (the reserve the KV sizing keeps)', async (t) => {
    const cuda = await import('../src/backend/cuda/cuda-backend.js');
    const config = parseModelConfig(findPreset('llama-3.2-1b')!, 'llama-3.2-1b');
    for (const quantization of [undefined, 'w4a16'] as const) {
      const backend = new cuda.CudaBackend(); // its own pool, empty
      let model: LlamaModel;
      try {
        model = new LlamaModel(config, loadDummyWeights(config, backend, { quantization }), backend);
      } catch (err) {
        if (err instanceof cuda.CudaUnsupportedError) {
          t.diagnostic(`${quantization}: ${err.message}`);
          continue;
        }
        throw err;
      }
      for (const [tokens, rows] of [[512, 1], [1, 1], [64, 64]]) {
        await nextTurn(); // the previous step's buffers go back to the pool
        backend.pool.trim();
        const before = backend.pool.reservedBytes;
        const numBlocks = Math.ceil(tokens / 16);
        const kv = backend.allocKvCache({ numLayers: config.numLayers, numBlocks, blockSize: 16, numKvHeads: config.numKvHeads, headDim: config.headDim });
        const batch: ForwardBatch = {
          numTokens: tokens, numSeqs: 1,
          tokens: Int32Array.from({ length: tokens }, (_, i) => (i * 7919) % TOKENIZER_SIZE),
          positions: Int32Array.from({ length: tokens }, (_, i) => i),
          seqIndex: new Int32Array(tokens),
          slots: Int32Array.from({ length: tokens }, (_, i) => i),
          blockTables: Int32Array.from({ length: numBlocks }, (_, i) => i),
          maxBlocksPerSeq: numBlocks,
          logitRows: Int32Array.from({ length: rows }, (_, i) => tokens - rows + i),
        };
        const logits = model.forward(batch, kv).logits;
        assert.ok(logits.every(Number.isFinite), 'finite logits');
        const grown = backend.pool.reservedBytes - before;
        const est = stepActivationBytes(config, tokens, rows);
        const what = `${quantization ?? 'bf16'}, ${tokens} tokens, ${rows} logit rows: the pool grew ${grown} bytes, the estimate is ${est}`;
        assert.ok(grown <= est, what);
        // Steps of 1-8 tokens may take fused decode kernels that make no gate/up tensors; the sizing
        // uses max_num_batched_tokens, where the estimate should also not be needlessly large.
        if (tokens > 8) assert.ok(grown >= 0.5 * est, `${what} (more than twice what is used: the KV cache would be needlessly small)`);
      }
    }
  });
});
