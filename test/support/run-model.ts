// Test helpers that drive a LlamaModel directly over the paged KV cache, without the engine.

import type { Backend } from '../../src/backend/backend.js';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.js';
import { KvBlockPool, SequenceBlocks } from '../../src/engine/kv-cache.js';
import { loadModelConfig } from '../../src/model/config.js';
import { LlamaModel, type ForwardBatch } from '../../src/model/llama.js';
import { SafetensorsCheckpoint } from '../../src/model/load/safetensors.js';
import { loadModelWeights } from '../../src/model/weights.js';

export function loadLlama(dir: string, backend: Backend = new CpuBackend()): LlamaModel {
  const config = loadModelConfig(dir);
  const ckpt = SafetensorsCheckpoint.open(dir);
  try {
    return new LlamaModel(config, loadModelWeights(ckpt, config, backend), backend);
  } finally {
    ckpt.close();
  }
}

/** One chunk of one sequence in a step: positions [start, start + tokens.length). */
export interface Chunk {
  seq: number;
  start: number;
  tokens: number[];
}

/**
 * Runs steps over several sequences sharing one KV cache; returns, per step, logits of every token
 * of every chunk in order ([tokens × vocab] per chunk).
 */
export class ModelRunner {
  readonly pool: KvBlockPool;
  readonly kv;
  readonly seqs = new Map<number, SequenceBlocks>();

  constructor(
    readonly model: LlamaModel,
    numBlocks = 64,
    blockSize = 4,
  ) {
    this.pool = new KvBlockPool(numBlocks, blockSize);
    this.kv = model.backend.allocKvCache(model.kvCacheSpec(numBlocks, blockSize));
  }

  step(chunks: Chunk[]): Float32Array[] {
    const numTokens = chunks.reduce((a, c) => a + c.tokens.length, 0);
    for (const c of chunks) {
      if (!this.seqs.has(c.seq)) this.seqs.set(c.seq, new SequenceBlocks(this.pool));
      this.seqs.get(c.seq)!.reserve(c.start + c.tokens.length);
    }
    const maxBlocksPerSeq = Math.max(...chunks.map((c) => this.seqs.get(c.seq)!.blocks.length));
    const batch: ForwardBatch = {
      numTokens,
      numSeqs: chunks.length,
      tokens: new Int32Array(numTokens),
      positions: new Int32Array(numTokens),
      seqIndex: new Int32Array(numTokens),
      slots: new Int32Array(numTokens),
      blockTables: new Int32Array(chunks.length * maxBlocksPerSeq).fill(-1),
      maxBlocksPerSeq,
      logitRows: Int32Array.from({ length: numTokens }, (_, i) => i),
    };
    let i = 0;
    chunks.forEach((c, s) => {
      const blocks = this.seqs.get(c.seq)!;
      batch.blockTables.set(blocks.blocks, s * maxBlocksPerSeq);
      c.tokens.forEach((tok, j) => {
        batch.tokens[i] = tok;
        batch.positions[i] = c.start + j;
        batch.seqIndex[i] = s;
        batch.slots[i] = blocks.slot(c.start + j);
        i++;
      });
    });
    const { logits } = this.model.forward(batch, this.kv);
    const vocab = this.model.config.vocabSize;
    const out: Float32Array[] = [];
    let row = 0;
    for (const c of chunks) {
      out.push(logits.slice(row * vocab, (row + c.tokens.length) * vocab));
      row += c.tokens.length;
    }
    return out;
  }
}

// The model tests pick greedy tokens with the same argmax eval uses (first on ties).
export { argmax } from '../../src/eval/metrics.js';

/**
 * A fixed mix of steps over `runner` for comparing two ways of running the same model: a 12-token
 * prompt (prefill), a 5-token chunk beside a second sequence's prefill, single-token decodes of both,
 * then one more decode. Returns every step's logits.
 */
export function runSteps(runner: ModelRunner, vocab: number, prompt: number[]): Float32Array[] {
  const steps: Chunk[][] = [
    [{ seq: 0, start: 0, tokens: prompt }],
    [{ seq: 0, start: 12, tokens: prompt.slice(0, 5) }, { seq: 1, start: 0, tokens: prompt.slice(3, 6) }],
    [{ seq: 0, start: 17, tokens: [prompt[7]] }, { seq: 1, start: 3, tokens: [prompt[8]] }],
    [{ seq: 0, start: 18, tokens: [(prompt[9] + 1) % vocab] }],
  ];
  return steps.flatMap((chunks) => runner.step(chunks));
}
