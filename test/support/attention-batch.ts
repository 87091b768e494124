// An attention step's batch for tests: sequences given as [first position this step, tokens this
// step], their block tables and each token's cache slot.

import type { AttentionBatch } from '../../src/backend/backend.js';

/** A batch over sequences given as [first position this step, tokens this step], in that order. */
export function batchOf(seqs: Array<[number, number]>, blockSize: number, blockIds: (s: number, b: number) => number): AttentionBatch {
  const maxBlocksPerSeq = Math.max(...seqs.map(([start, n]) => Math.ceil((start + n) / blockSize)));
  const blockTables = new Int32Array(seqs.length * maxBlocksPerSeq).fill(-1);
  seqs.forEach(([start, n], s) => {
    for (let b = 0; b < Math.ceil((start + n) / blockSize); b++) blockTables[s * maxBlocksPerSeq + b] = blockIds(s, b);
  });
  const positions: number[] = [];
  const seqIndex: number[] = [];
  seqs.forEach(([start, n], s) => {
    for (let p = start; p < start + n; p++) {
      positions.push(p);
      seqIndex.push(s);
    }
  });
  const slot = (s: number, p: number) => blockTables[s * maxBlocksPerSeq + Math.floor(p / blockSize)] * blockSize + (p % blockSize);
  return {
    numTokens: positions.length,
    numSeqs: seqs.length,
    positions: Int32Array.from(positions),
    seqIndex: Int32Array.from(seqIndex),
    slots: Int32Array.from(positions, (p, i) => slot(seqIndex[i], p)),
    blockTables,
    maxBlocksPerSeq,
  };
}
