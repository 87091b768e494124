// Bookkeeping of the paged KV cache: a pool of fixed-size blocks with a free list, and each
// sequence's block table mapping its token positions to physical slots.

import { CapacityError } from '../errors.js';

export const DEFAULT_BLOCK_SIZE = 16;

export class KvBlockPool {
  private readonly free: number[];

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number = DEFAULT_BLOCK_SIZE,
  ) {
    // Pop from the end, so low block ids are handed out first (easier to read in tests and dumps).
    this.free = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }

  get numFree(): number {
    return this.free.length;
  }

  allocate(): number | undefined {
    return this.free.pop();
  }

  release(blocks: Iterable<number>): void {
    for (const b of blocks) this.free.push(b);
  }
}

/** The blocks one sequence owns; position p lives in blocks[p / blockSize] at offset p % blockSize. */
export class SequenceBlocks {
  readonly blocks: number[] = [];

  constructor(private readonly pool: KvBlockPool) {}

  get capacity(): number {
    return this.blocks.length * this.pool.blockSize;
  }

  /** Grow to hold `numTokens` positions; false (and nothing taken) when the pool runs short. */
  tryReserve(numTokens: number): boolean {
    const needed = Math.ceil(numTokens / this.pool.blockSize) - this.blocks.length;
    if (needed <= 0) return true;
    if (needed > this.pool.numFree) return false;
    for (let i = 0; i < needed; i++) this.blocks.push(this.pool.allocate()!);
    return true;
  }

  reserve(numTokens: number): void {
    if (!this.tryReserve(numTokens)) {
      throw new CapacityError(
        `KV cache exhausted: ${numTokens} tokens need ${Math.ceil(numTokens / this.pool.blockSize)} blocks of ${this.pool.blockSize}, ` +
          `this sequence holds ${this.blocks.length} and ${this.pool.numFree} are free of ${this.pool.numBlocks}`,
      );
    }
  }

  slot(position: number): number {
    const bs = this.pool.blockSize;
    return this.blocks[Math.floor(position / bs)] * bs + (position % bs);
  }

  /** Keep only the blocks needed for `numTokens` positions (rollback of rejected speculation). */
  truncate(numTokens: number): void {
    const keep = Math.ceil(numTokens / this.pool.blockSize);
    if (keep < this.blocks.length) this.pool.release(this.blocks.splice(keep));
  }

  releaseAll(): void {
    this.pool.release(this.blocks.splice(0));
  }
}
