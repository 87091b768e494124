// Builds the flattened batch of one forward pass (target, draft model or EAGLE-3 head) from runs of
// consecutive positions per sequence: the same layout engine.ts uses for prefill and decode.

import type { SequenceBlocks } from '../kv-cache.js';
import type { ForwardBatch } from '../../model/llama.js';

/** Positions [start, start + tokens.length) of one sequence, whose KV slots `blocks` already holds. */
export interface BatchRun {
  blocks: SequenceBlocks;
  start: number;
  tokens: ArrayLike<number>;
}

/** One batch over `runs`; logits for every row ('all'), the last row of each run ('last'), or none. */
export function buildForwardBatch(runs: readonly BatchRun[], logits: 'all' | 'last' | 'none'): ForwardBatch {
  const numTokens = runs.reduce((a, r) => a + r.tokens.length, 0);
  const maxBlocksPerSeq = Math.max(1, ...runs.map((r) => r.blocks.blocks.length));
  const tokens = new Int32Array(numTokens);
  const positions = new Int32Array(numTokens);
  const seqIndex = new Int32Array(numTokens);
  const slots = new Int32Array(numTokens);
  const blockTables = new Int32Array(runs.length * maxBlocksPerSeq).fill(-1);
  const logitRows: number[] = [];
  let i = 0;
  runs.forEach((r, s) => {
    if (r.blocks.capacity < r.start + r.tokens.length) throw new Error(`buildForwardBatch: sequence ${s} holds ${r.blocks.capacity} KV slots, needs ${r.start + r.tokens.length}`);
    blockTables.set(r.blocks.blocks, s * maxBlocksPerSeq);
    for (let j = 0; j < r.tokens.length; j++, i++) {
      tokens[i] = r.tokens[j];
      positions[i] = r.start + j;
      seqIndex[i] = s;
      slots[i] = r.blocks.slot(r.start + j);
      if (logits === 'all') logitRows.push(i);
    }
    if (logits === 'last' && r.tokens.length > 0) logitRows.push(i - 1);
  });
  return { numTokens, numSeqs: runs.length, tokens, positions, seqIndex, slots, blockTables, maxBlocksPerSeq, logitRows: Int32Array.from(logitRows) };
}
