// Automatic prefix caching: a full KV block is named by a hash chained over every token id up to
// its end, so two sequences that start with the same tokens find the same blocks and the second
// one skips computing them. The pool (kv-cache.ts) keeps the hash → block map, reference counts
// and LRU eviction; this file decides which blocks to look up and which to publish.

import { createHash } from 'node:crypto';
import type { SequenceBlocks } from './kv-cache.js';

/** The hash of a full block: its parent's hash and its own token ids (SHA-256, so never a false hit). */
export function blockHash(parent: string | undefined, tokenIds: ArrayLike<number>): string {
  const h = createHash('sha256');
  h.update(parent ?? 'root');
  h.update(new Uint8Array(Int32Array.from(tokenIds).buffer));
  return h.digest('base64');
}

export interface PrefixCacheStats {
  /** Prompt tokens looked up, as vLLM's prefix_cache_queries (token units). */
  queries: number;
  /** Of those, tokens found cached. */
  hits: number;
}

export class PrefixCache {
  readonly stats: PrefixCacheStats = { queries: 0, hits: 0 };

  constructor(readonly enabled: boolean) {}

  /**
   * For a sequence holding no blocks yet: adopt the longest run of cached full blocks that its
   * first `numTokens` tokens start with; returns how many tokens they cover. At most numTokens - 1
   * tokens are taken from the cache, so the last token is always computed (its logits are needed)
   * and no sequence ever writes into a shared block. Counted in the stats by `record`, once the
   * sequence is actually admitted.
   */
  match(seq: SequenceBlocks, numTokens: number, tokenAt: (i: number) => number): number {
    if (!this.enabled || seq.blocks.length > 0) return 0;
    const bs = seq.pool.blockSize;
    const limit = Math.floor((numTokens - 1) / bs);
    let parent: string | undefined;
    for (let b = 0; b < limit; b++) {
      const hash = blockHash(parent, blockTokens(tokenAt, b, bs));
      const block = seq.pool.lookup(hash);
      if (block === undefined) break;
      seq.adopt(block, hash);
      parent = hash;
    }
    return seq.blocks.length * bs;
  }

  record(queriedTokens: number, hitTokens: number): void {
    if (!this.enabled) return;
    this.stats.queries += queriedTokens;
    this.stats.hits += hitTokens;
  }

  /** Publish the sequence's full blocks whose tokens are all computed now (its first `numComputed`). */
  commit(seq: SequenceBlocks, numComputed: number, tokenAt: (i: number) => number): void {
    if (!this.enabled) return;
    const bs = seq.pool.blockSize;
    const full = Math.min(Math.floor(numComputed / bs), seq.blocks.length);
    for (let b = seq.hashes.length; b < full; b++) {
      const hash = blockHash(seq.hashes[b - 1], blockTokens(tokenAt, b, bs));
      seq.pool.markCached(seq.blocks[b], hash);
      seq.hashes.push(hash);
    }
  }
}

function blockTokens(tokenAt: (i: number) => number, block: number, blockSize: number): number[] {
  const out = new Array<number>(blockSize);
  for (let i = 0; i < blockSize; i++) out[i] = tokenAt(block * blockSize + i);
  return out;
}
