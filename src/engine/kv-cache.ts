// Bookkeeping of the paged KV cache: a pool of fixed-size blocks, reference-counted so that full
// blocks can be shared between sequences (prefix caching), and each sequence's block table mapping
// its token positions to physical slots.

import { KV_DTYPE_BYTES, type KvDtype } from '../backend/backend.js';
import { CapacityError } from '../errors.js';

export const DEFAULT_BLOCK_SIZE = 16;

/** Bytes one token's K and V take in every layer: 2 × layers × kv_heads × head_dim × the element's size. */
export function kvBytesPerToken(shape: { numLayers: number; numKvHeads: number; headDim: number }, dtype: KvDtype): number {
  return 2 * shape.numLayers * shape.numKvHeads * shape.headDim * KV_DTYPE_BYTES[dtype];
}

/** Whole tokens (a multiple of the block size) a KV cache of `bytes` holds. */
export function kvTokensForMemory(bytes: number, bytesPerToken: number, blockSize = DEFAULT_BLOCK_SIZE): number {
  return Math.floor(bytes / (bytesPerToken * blockSize)) * blockSize;
}

/**
 * The physical blocks. A block with no reference is free; if it holds a full block of a prefix it
 * stays findable by that prefix's hash until it is handed out again, so a later request can take it
 * back without recomputing. Free blocks are handed out least recently freed first (LRU eviction of
 * cached contents), through a doubly linked list over block ids: O(1) to take the oldest, append a
 * freed one, or pull a cached one out of the middle.
 */
export class KvBlockPool {
  private readonly refCounts: Int32Array;
  private readonly hashOf: (string | undefined)[];
  private readonly byHash = new Map<string, number>();
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private head = -1;
  private tail = -1;
  private freeCount = 0;

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number = DEFAULT_BLOCK_SIZE,
  ) {
    if (!(Number.isInteger(numBlocks) && numBlocks > 0)) throw new RangeError(`KvBlockPool: numBlocks must be a positive integer, got ${numBlocks}`);
    this.refCounts = new Int32Array(numBlocks);
    this.hashOf = new Array(numBlocks).fill(undefined);
    this.prev = new Int32Array(numBlocks).fill(-1);
    this.next = new Int32Array(numBlocks).fill(-1);
    // Low block ids are handed out first (easier to read in tests and dumps).
    for (let b = 0; b < numBlocks; b++) this.append(b);
  }

  /** Blocks no sequence holds (cached contents included: they are given up on demand). */
  get numFree(): number {
    return this.freeCount;
  }

  /** Fraction of blocks held by sequences, as vLLM's kv_cache_usage_perc. */
  get usage(): number {
    return 1 - this.freeCount / this.numBlocks;
  }

  /** Full blocks findable by prefix hash (held or free). */
  get numCached(): number {
    return this.byHash.size;
  }

  refCount(block: number): number {
    return this.refCounts[block];
  }

  /** Take the least recently freed block for a new owner; its cached contents (if any) are forgotten. */
  allocate(): number | undefined {
    const b = this.head;
    if (b < 0) return undefined;
    this.unlink(b);
    const hash = this.hashOf[b];
    if (hash !== undefined) {
      this.hashOf[b] = undefined;
      if (this.byHash.get(hash) === b) this.byHash.delete(hash);
    }
    this.refCounts[b] = 1;
    return b;
  }

  /** Drop one reference per block; a block nobody holds joins the free list as its most recent entry. */
  release(blocks: Iterable<number>): void {
    for (const b of blocks) {
      if (this.refCounts[b] <= 0) throw new Error(`KvBlockPool: block ${b} released more often than taken`);
      if (--this.refCounts[b] === 0) this.append(b);
    }
  }

  /** The block holding the full prefix block with this hash, if it is still cached. */
  lookup(hash: string): number | undefined {
    return this.byHash.get(hash);
  }

  /** Take a reference on a cached block (pulling it off the free list if nobody held it). */
  acquire(block: number): void {
    if (this.refCounts[block] === 0) this.unlink(block);
    this.refCounts[block]++;
  }

  /** Make a full, computed block findable by its prefix hash. A hash already cached keeps its block. */
  markCached(block: number, hash: string): void {
    if (this.hashOf[block] !== undefined || this.byHash.has(hash)) return;
    this.hashOf[block] = hash;
    this.byHash.set(hash, block);
  }

  private append(b: number): void {
    this.prev[b] = this.tail;
    this.next[b] = -1;
    if (this.tail >= 0) this.next[this.tail] = b;
    else this.head = b;
    this.tail = b;
    this.freeCount++;
  }

  private unlink(b: number): void {
    const p = this.prev[b];
    const n = this.next[b];
    if (p >= 0) this.next[p] = n;
    else this.head = n;
    if (n >= 0) this.prev[n] = p;
    else this.tail = p;
    this.prev[b] = this.next[b] = -1;
    this.freeCount--;
  }
}

/** The blocks one sequence holds; position p lives in blocks[p / blockSize] at offset p % blockSize. */
export class SequenceBlocks {
  readonly blocks: number[] = [];
  /** Prefix hashes of the leading full blocks already made findable (prefix caching), in order. */
  readonly hashes: string[] = [];

  constructor(readonly pool: KvBlockPool) {}

  get capacity(): number {
    return this.blocks.length * this.pool.blockSize;
  }

  /** Blocks still to take to hold `numTokens` positions. */
  blocksNeeded(numTokens: number): number {
    return Math.max(0, Math.ceil(numTokens / this.pool.blockSize) - this.blocks.length);
  }

  /** Grow to hold `numTokens` positions; false (and nothing taken) when the pool runs short. */
  tryReserve(numTokens: number): boolean {
    const needed = this.blocksNeeded(numTokens);
    if (needed === 0) return true;
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

  /** Append a cached block found by prefix lookup (the sequence takes a reference on it). */
  adopt(block: number, hash: string): void {
    this.pool.acquire(block);
    this.blocks.push(block);
    this.hashes.push(hash);
  }

  slot(position: number): number {
    const bs = this.pool.blockSize;
    return this.blocks[Math.floor(position / bs)] * bs + (position % bs);
  }

  /** Keep only the blocks needed for `numTokens` positions (rollback of rejected speculation). */
  truncate(numTokens: number): void {
    const keep = Math.ceil(numTokens / this.pool.blockSize);
    if (keep < this.blocks.length) this.pool.release(this.blocks.splice(keep).reverse());
    if (this.hashes.length > Math.floor(numTokens / this.pool.blockSize)) this.hashes.length = Math.floor(numTokens / this.pool.blockSize);
  }

  /** Give every block back. Last blocks first, so that they are evicted before the shared head of the prefix. */
  releaseAll(): void {
    this.pool.release(this.blocks.splice(0).reverse());
    this.hashes.length = 0;
  }
}
