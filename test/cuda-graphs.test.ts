// CUDA graphs over decode steps (src/backend/cuda/step-graphs.ts): a replayed step must give the
// same bits as the same step run op by op, while contexts grow (nodes patched: block counts, decode
// attention's chunk count), batches change shape (other recordings), a recording is interrupted, and
// graphs are evicted; and the engine's greedy output must not change. Without a GPU the suite skips
// with the reason (the recording logic itself is tested on the CPU in step-graphs.test.ts).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { LLM } from '../src/llm.js';
import { parseModelConfig } from '../src/model/config.js';
import { embeddedModelDir, DEFAULT_MODEL_NAME } from '../src/model/default-model.js';
import { LlamaModel } from '../src/model/llama.js';
import { loadDummyWeights } from '../src/model/load/dummy.js';
import { comparisons, openTestGpu, testRandom } from './support/cuda.js';
import { argmax, loadLlama, ModelRunner, type Chunk } from './support/run-model.js';

const { gpu, skipReason } = await openTestGpu();
// Graphs record only when launches are not synchronized one by one (openTestGpu turns that on).
if (gpu) gpu.driver.syncEveryLaunch = false;
const { seed: SEED, randInt, uniform } = testRandom();
const { assertBitwise } = comparisons(SEED);

/** A small Llama at head_dim 64 with random weights: the split-K decode attention and tensor-core GEMVs run. */
function dummyModel(be: CudaBackend, quantization?: 'w4a16'): LlamaModel {
  const config = parseModelConfig({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: 1000, hidden_size: 256, intermediate_size: 640,
    num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 64, rms_norm_eps: 1e-5, rope_theta: 10000,
    max_position_embeddings: 4096, tie_word_embeddings: false, torch_dtype: 'bfloat16',
  });
  return new LlamaModel(config, loadDummyWeights(config, be, { seed: SEED, quantization }), be);
}

/**
 * Prompts of different lengths (each its own prefill step), then greedy decode steps of every
 * sequence still running; sequence 0 stops after `stopAfter` steps, so the batch changes shape (a
 * second recording). Every step's logits, in order.
 */
function decode(model: LlamaModel, prompts: number[][], steps: number, stopAfter: number): Float32Array[] {
  const runner = new ModelRunner(model, 256, 4);
  const out: Float32Array[] = [];
  const vocab = model.config.vocabSize;
  const lens = prompts.map((p) => p.length);
  const next = prompts.map((p, s) => {
    const [l] = runner.step([{ seq: s, start: 0, tokens: p }]);
    out.push(l);
    return argmax(l.subarray(l.length - vocab));
  });
  for (let i = 0; i < steps; i++) {
    const live = prompts.map((_, s) => s).filter((s) => s !== 0 || i < stopAfter);
    const chunks: Chunk[] = live.map((s) => ({ seq: s, start: lens[s] + i, tokens: [next[s]] }));
    const logits = runner.step(chunks);
    live.forEach((s, j) => {
      out.push(logits[j]);
      next[s] = argmax(logits[j]);
    });
  }
  return out;
}

describe('CUDA graphs over decode steps', { skip: skipReason }, () => {
  const be = gpu!;

  it('replays decode steps bit for bit as the eager steps, patching nodes as contexts grow', () => {
    // Chunks of 16 positions: decode attention's grid grows every 16 tokens; blocks of 4 tokens: the
    // block tables' width every 4. Both reach the recorded nodes as patches.
    be.attentionChunk = 16;
    try {
      for (const model of [loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), be), dummyModel(be)]) {
        const vocab = model.config.vocabSize;
        const prompts = [5, 11, 23].map((n) => Array.from({ length: n }, () => randInt(vocab)));
        be.graphs.enabled = false;
        const want = decode(model, prompts, 40, 25);
        be.graphs.enabled = true;
        const before = { ...be.graphs.stats };
        const got = decode(model, prompts, 40, 25);
        const s = be.graphs.stats;
        assert.equal(got.length, want.length);
        got.forEach((g, i) => assertBitwise(g, want[i], `${model.config.hiddenSize}-wide model, logits ${i}`));
        assert.ok(s.builds - before.builds >= 2, `a recording per batch shape (${s.builds - before.builds} builds)`);
        assert.ok(s.replays - before.replays >= 30, `most decode steps replayed (${s.replays - before.replays})`);
        assert.ok(s.patchedNodes > before.patchedNodes, 'growing contexts patched recorded nodes');
        assert.equal(s.interrupted, before.interrupted, 'no decode step was interrupted');
      }
    } finally {
      be.attentionChunk = 0;
      be.graphs.enabled = true;
    }
  });

  it('replays decode steps of more than 8 sequences bit for bit: cuBLASLt GEMMs (bf16) and sliced quantized GEMVs (w4a16) captured', () => {
    be.attentionChunk = 16;
    const q = be.quantized;
    try {
      for (const quantization of [undefined, 'w4a16'] as const) {
        const model = dummyModel(be, quantization);
        // An engine of more than one token a step: the quantized GEMVs on the tensor cores.
        q.decodeGemv = q.q8DecodeGemv = 'mma';
        const vocab = model.config.vocabSize;
        // Prompts of more than 8 tokens: their prefill steps (each a new shape) run eagerly, unrecorded.
        const prompts = Array.from({ length: 12 }, (_, i) => Array.from({ length: 9 + 2 * i }, () => randInt(vocab)));
        be.graphs.enabled = false;
        const want = decode(model, prompts, 24, 12);
        be.graphs.enabled = true;
        const before = { ...be.graphs.stats };
        const got = decode(model, prompts, 24, 12);
        const s = be.graphs.stats;
        got.forEach((g, i) => assertBitwise(g, want[i], `${quantization ?? 'bf16'}: logits ${i}`));
        // Two batch shapes (12 then 11 sequences): each runs eagerly once, then is built and replayed.
        assert.equal(s.builds - before.builds, 2, `${quantization ?? 'bf16'}: builds`);
        assert.ok(s.replays - before.replays >= 18, `${quantization ?? 'bf16'}: decode steps replayed (${s.replays - before.replays})`);
        assert.equal(s.interrupted, before.interrupted, `${quantization ?? 'bf16'}: no step interrupted`);
      }
    } finally {
      be.attentionChunk = 0;
      be.graphs.enabled = true;
      q.decodeGemv = q.q8DecodeGemv = 'fma';
    }
  });

  it('replays steps that capture hidden states (EAGLE-3 target steps), the states bit for bit', () => {
    const model = dummyModel(be);
    const c = model.config;
    const blockSize = 16;
    const kvFor = () => be.allocKvCache({ numLayers: c.numLayers, numBlocks: 8, blockSize, numKvHeads: c.numKvHeads, headDim: c.headDim });
    const layers = [1, 2, c.numLayers];
    const prompt = Array.from({ length: 6 }, () => randInt(c.vocabSize));
    // One sequence: a 6-token prompt, then 20 decode steps of 2 tokens (a verification window's shape).
    const run = () => {
      const kv = kvFor();
      const out: Float32Array[] = [];
      const tokens = prompt;
      let pos = 0;
      for (let step = 0; step < 21; step++) {
        const ids = step === 0 ? tokens : [tokens[(step * 7) % 6], tokens[(step * 5) % 6]];
        const n = ids.length;
        const positions = Int32Array.from({ length: n }, (_, i) => pos + i);
        const r = model.forward(
          {
            numTokens: n, numSeqs: 1, tokens: Int32Array.from(ids), positions, seqIndex: new Int32Array(n), slots: positions.slice(),
            blockTables: Int32Array.from({ length: 8 }, (_, i) => i), maxBlocksPerSeq: 8, logitRows: Int32Array.from({ length: n }, (_, i) => i),
          },
          kv,
          { captureHiddenStates: layers, argmaxOnly: { vocab: c.vocabSize } },
        );
        out.push(Float32Array.from(r.argmax!), ...layers.map((l) => r.hiddenStates!.get(l)!));
        pos += n - 1; // the second token of each window is dropped, as a rejected draft's KV is
      }
      return out;
    };
    be.graphs.enabled = false;
    const want = run();
    be.graphs.enabled = true;
    const before = { ...be.graphs.stats };
    const got = run();
    got.forEach((g, i) => assertBitwise(g, want[i], `output ${i} (argmax ids, then hidden states ${layers.join(', ')} per step)`));
    assert.ok(be.graphs.stats.replays - before.replays >= 15, `window steps replayed (${be.graphs.stats.replays - before.replays})`);
    assert.equal(be.graphs.stats.interrupted, before.interrupted);
  });

  it('finishes an interrupted recording eagerly, in order', () => {
    const n = 256;
    const x = uniform(4 * n);
    const y = uniform(4 * n);
    const w = be.randomWeight('norm', { shape: [n], dtype: 'f32', seed: SEED, scale: 1 });
    const xt = be.fromHost(x, [4, n]);
    const step = () => {
      const a = be.rmsNorm(xt, w, 1e-5);
      const b = be.rmsNorm(a, w, 1e-5);
      // An upload mid-step (not a recorded step's slot) cannot wait in a graph: the two norms run first.
      be.addInPlace(b, be.fromHost(y, [4, n]));
      return be.toHost(be.rmsNorm(b, w, 1e-5));
    };
    be.graphs.enabled = false;
    const want = step();
    be.graphs.enabled = true;
    const before = be.graphs.stats.interrupted;
    for (let i = 0; i < 3; i++) assertBitwise(be.replayable('interrupt-test', 4, step), want, `run ${i}`);
    assert.equal(be.graphs.stats.interrupted - before, 3);
  });

  it('evicts the least recently used graph and rebuilds it when its key comes back', () => {
    const n = 128;
    const w = be.randomWeight('norm', { shape: [n], dtype: 'f32', seed: SEED + 1, scale: 1 });
    const inputs = [1, 2, 3].map((t) => be.fromHost(uniform(t * n), [t, n]));
    const step = (t: number) => () => be.toHost(be.rmsNorm(be.rmsNorm(inputs[t - 1], w, 1e-5), w, 1e-5));
    be.graphs.enabled = false;
    const want = [1, 2, 3].map((t) => step(t)());
    be.graphs.enabled = true;
    const keep = be.graphs.maxGraphs;
    be.graphs.clear();
    be.graphs.maxGraphs = 2;
    try {
      const before = { ...be.graphs.stats };
      for (const t of [1, 2, 3, 1, 3]) assertBitwise(be.replayable(`evict-${t}`, t, step(t)), want[t - 1], `key ${t}`);
      assert.equal(be.graphs.size.graphs, 2);
      assert.equal(be.graphs.stats.evicted - before.evicted, 2, 'key 1 dropped for 3, then key 2 for 1');
      assert.equal(be.graphs.stats.builds - before.builds, 4, 'keys 1, 2, 3 and 1 again built; 3 replayed');
    } finally {
      be.graphs.maxGraphs = keep;
    }
  });

  it('leaves steps of more tokens than maxTokens eager', () => {
    const before = { ...be.graphs.stats };
    const T = be.graphs.maxTokens + 1;
    const x = be.fromHost(uniform(T * 64), [T, 64]);
    const w = be.randomWeight('norm', { shape: [64], dtype: 'f32', seed: SEED + 2, scale: 1 });
    for (let i = 0; i < 3; i++) be.replayable('too-many-tokens', T, () => be.toHost(be.rmsNorm(x, w, 1e-5)));
    assert.equal(be.graphs.stats.eager - before.eager, 3);
    assert.equal(be.graphs.stats.builds, before.builds);
  });

  it('records steps up to the engine\'s largest decode step (max_num_seqs × (1 + k)), 8 at least and 32 at most', async () => {
    const cases: Array<[Record<string, unknown>, number]> = [
      [{ maxNumSeqs: 4 }, 8],
      [{ maxNumSeqs: 12, speculativeConfig: { method: 'ngram', num_speculative_tokens: 1 } }, 24],
      [{}, 32],
    ];
    for (const [opts, want] of cases) {
      const llm = await LLM.load({ device: 'cuda', ...opts });
      try {
        assert.equal((llm.loaded.model.backend as CudaBackend).graphs.maxTokens, want, JSON.stringify(opts));
      } finally {
        await llm.close();
      }
    }
  });

  it('gives the engine the same greedy output with graphs as with --enforce-eager', async () => {
    const prompts = ['The robot', 'Once upon a time', 'A B C D E F G', 'Hello'];
    const run = async (enforceEager: boolean) => {
      const llm = await LLM.load({ device: 'cuda', enforceEager });
      try {
        const outs = await Promise.all(prompts.map((p) => llm.complete(p, { maxTokens: 48, temperature: 0, ignoreEos: true })));
        const stats = { ...(llm.loaded.model.backend as CudaBackend).graphs.stats };
        return { ids: outs.map((o) => o.tokenIds), stats };
      } finally {
        await llm.close();
      }
    };
    const eager = await run(true);
    const graphed = await run(false);
    assert.deepEqual(graphed.ids, eager.ids);
    assert.equal(eager.stats.builds + eager.stats.replays, 0, '--enforce-eager records nothing');
    assert.ok(graphed.stats.replays > 40, `decode steps replayed (${graphed.stats.replays})`);
  });
});
