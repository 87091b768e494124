// What the GPU decode benches share: a model's forward driven over a fixed batch of sequences (a
// prefill of their prompts, then greedy decode steps, as the engine runs them: the argmax on the
// backend), and the bytes a decode step must read (the roofline's numerator).

import type { KvCacheStorage, Weight } from '../src/backend/backend.js';
import type { ForwardBatch, LlamaModel } from '../src/model/llama.js';
import type { ModelWeights } from '../src/model/weights.js';

/** `batch` sequences of up to `maxLen` tokens each, in contiguous blocks of one KV cache. */
export class DecodeRunner {
  readonly kv: KvCacheStorage;
  private readonly blocksPerSeq: number;
  private readonly blockTables: Int32Array;

  constructor(
    readonly model: LlamaModel,
    readonly batch: number,
    maxLen: number,
    readonly blockSize = 16,
  ) {
    const c = model.config;
    this.blocksPerSeq = Math.ceil(maxLen / blockSize);
    this.blockTables = Int32Array.from({ length: batch * this.blocksPerSeq }, (_, i) => i);
    this.kv = model.backend.allocKvCache({ numLayers: c.numLayers, numBlocks: batch * this.blocksPerSeq, blockSize, numKvHeads: c.numKvHeads, headDim: c.headDim });
  }

  /**
   * One forward: sequence s takes tokens[s] at positions start[s]…; returns each sequence's greedy
   * next token (its last row's argmax).
   */
  forward(tokens: number[][], start: readonly number[]): number[] {
    const tok: number[] = [];
    const pos: number[] = [];
    const seq: number[] = [];
    const logitRows: number[] = [];
    tokens.forEach((ts, s) => {
      ts.forEach((t, i) => {
        tok.push(t);
        pos.push(start[s] + i);
        seq.push(s);
      });
      logitRows.push(tok.length - 1);
    });
    const { blocksPerSeq, blockSize } = this;
    const b: ForwardBatch = {
      numTokens: tok.length, numSeqs: tokens.length, tokens: Int32Array.from(tok), positions: Int32Array.from(pos), seqIndex: Int32Array.from(seq),
      slots: Int32Array.from(pos, (p, i) => (seq[i] * blocksPerSeq + Math.floor(p / blockSize)) * blockSize + (p % blockSize)),
      blockTables: this.blockTables, maxBlocksPerSeq: blocksPerSeq, logitRows: Int32Array.from(logitRows),
    };
    return [...this.model.forward(b, this.kv, { argmaxOnly: { vocab: this.model.config.vocabSize } }).argmax!];
  }

  /** Prefill every prompt in one step (from position 0). */
  prefill(prompts: number[][]): number[] {
    return this.forward(prompts, new Array(prompts.length).fill(0));
  }

  /** One decode step: every sequence's `next` token at `position`. */
  step(next: readonly number[], position: number): number[] {
    return this.forward(next.map((t) => [t]), new Array(next.length).fill(position));
  }
}

/** Bytes a decode step must read: every weight except the embedding table (only its rows are read). */
export function weightBytesPerStep(w: ModelWeights): number {
  let total = w.norm.bytes + w.lmHead.bytes;
  for (const l of w.layers) for (const x of Object.values(l)) total += (x as Weight | undefined)?.bytes ?? 0;
  return total;
}

/**
 * Prefill `prompts`, then `steps` greedy decode steps, yielding to the event loop between them as
 * the engine does (the last step's activations go back to the pool). The median step in ms, the
 * prefill's, and the launches of one step where `launches` counts them (CudaDriver.launches).
 */
export async function timeDecodeSteps(runner: DecodeRunner, prompts: number[][], steps: number, launches?: () => number): Promise<{ stepMs: number; prefillMs: number; launchesPerStep?: number }> {
  const t = performance.now();
  let next = runner.prefill(prompts);
  const prefillMs = performance.now() - t;
  const promptLen = prompts[0].length;
  const times: number[] = [];
  let launchesPerStep: number | undefined;
  for (let i = 0; i < steps; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    const l0 = launches?.();
    const t0 = performance.now();
    next = runner.step(next, promptLen + i);
    times.push(performance.now() - t0);
    if (l0 !== undefined) launchesPerStep = launches!() - l0;
  }
  times.sort((a, b) => a - b);
  return { stepMs: times[times.length >> 1], prefillMs, launchesPerStep };
}
