// The scheduler and the block pool without a model: which sequences get how many tokens each step,
// FCFS admission, decode-first chunked prefill, preemption of the newest, and prefix-cache blocks
// that are shared, reference-counted and evicted least recently used first.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KvBlockPool, SequenceBlocks, kvBytesPerToken, kvTokensForMemory } from '../src/engine/kv-cache.js';
import { PrefixCache, blockHash } from '../src/engine/prefix-cache.js';
import { Scheduler, type SchedulableSequence } from '../src/engine/scheduler.js';

class FakeSeq implements SchedulableSequence {
  numComputed = 0;
  preemptions = 0;
  scheduledWithCache?: number;
  readonly blocks: SequenceBlocks;

  constructor(
    readonly name: string,
    pool: KvBlockPool,
    public tokens: number[],
  ) {
    this.blocks = new SequenceBlocks(pool);
  }
  get numTokens() {
    return this.tokens.length;
  }
  tokenAt(i: number) {
    return this.tokens[i];
  }
  onScheduled(cached: number) {
    this.scheduledWithCache ??= cached;
  }
  onPreempted() {
    this.preemptions++;
  }
}

const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i);

/** Apply a plan as the engine would: tokens computed, and a sampled token appended when a prefill completes. */
function run(s: Scheduler<FakeSeq>): Array<[string, number]> {
  const plan = s.schedule();
  for (const c of plan) {
    c.seq.numComputed += c.count;
    s.prefixCache.commit(c.seq.blocks, c.seq.numComputed, (i) => c.seq.tokenAt(i));
    if (c.seq.numComputed === c.seq.numTokens) c.seq.tokens.push(7);
  }
  return plan.map((c) => [c.seq.name, c.count]);
}

describe('scheduler', () => {
  it('admits waiting sequences first come first served up to max_num_seqs', () => {
    const pool = new KvBlockPool(100, 4);
    const s = new Scheduler<FakeSeq>({ maxNumSeqs: 2, maxNumBatchedTokens: 100 }, new PrefixCache(false));
    const [a, b, c] = ['a', 'b', 'c'].map((n) => new FakeSeq(n, pool, range(5)));
    s.add(a), s.add(b), s.add(c);
    assert.deepEqual(run(s), [['a', 5], ['b', 5]]);
    assert.deepEqual(s.waiting.map((x) => x.name), ['c']);
    assert.deepEqual(run(s), [['a', 1], ['b', 1]], 'c waits for a free slot');
    s.remove(a);
    a.blocks.releaseAll();
    assert.deepEqual(run(s), [['b', 1], ['c', 5]]);
  });

  it('schedules running decodes first, then prefill chunks in the budget left', () => {
    const pool = new KvBlockPool(100, 4);
    const s = new Scheduler<FakeSeq>({ maxNumSeqs: 8, maxNumBatchedTokens: 10 }, new PrefixCache(false));
    const long = new FakeSeq('long', pool, range(25));
    const short = new FakeSeq('short', pool, range(3));
    s.add(short);
    assert.deepEqual(run(s), [['short', 3]]);
    s.add(long);
    // short decodes (1 token), long takes the other 9; next steps the same until its prompt is done.
    assert.deepEqual(run(s), [['short', 1], ['long', 9]]);
    assert.deepEqual(run(s), [['short', 1], ['long', 9]]);
    assert.deepEqual(run(s), [['short', 1], ['long', 7]]);
    assert.deepEqual(run(s), [['short', 1], ['long', 1]]);
  });

  it('a long prefill does not delay an older sequence\'s decode, even when it is older itself', () => {
    const pool = new KvBlockPool(100, 4);
    const s = new Scheduler<FakeSeq>({ maxNumSeqs: 8, maxNumBatchedTokens: 8 }, new PrefixCache(false));
    const long = new FakeSeq('long', pool, range(30));
    const short = new FakeSeq('short', pool, range(2));
    s.add(long), s.add(short);
    assert.deepEqual(run(s), [['long', 8]], 'the head of the queue takes the whole budget');
    assert.deepEqual(run(s), [['long', 8]]);
    long.numComputed = 30 - 1; // pretend: one token of the prompt left
    assert.deepEqual(run(s), [['long', 1], ['short', 2]]);
    assert.deepEqual(run(s), [['long', 1], ['short', 1]]);
  });

  it('when blocks run out, the newest running sequence is preempted: blocks freed, back to the front of the queue, tokens kept', () => {
    const pool = new KvBlockPool(4, 4); // 16 tokens in all
    const s = new Scheduler<FakeSeq>({ maxNumSeqs: 8, maxNumBatchedTokens: 64 }, new PrefixCache(false));
    const a = new FakeSeq('a', pool, range(7));
    const b = new FakeSeq('b', pool, range(7));
    const c = new FakeSeq('c', pool, range(4));
    s.add(a), s.add(b), s.add(c);
    assert.deepEqual(run(s), [['a', 7], ['b', 7]], 'c does not fit');
    assert.deepEqual(run(s), [['a', 1], ['b', 1]]); // 9 tokens each: a and b need a third block each
    const plan = run(s);
    assert.deepEqual(plan, [['a', 1]], 'b (the newest) gave way to a');
    assert.equal(b.preemptions, 1);
    assert.equal(b.numComputed, 0);
    assert.deepEqual(b.blocks.blocks, []);
    assert.equal(b.numTokens, 9, 'its generated tokens are kept, to be recomputed');
    assert.deepEqual(s.waiting.map((x) => x.name), ['b', 'c']);
    assert.deepEqual(s.running.map((x) => x.name), ['a']);
  });

  it('a sequence that cannot grow with nobody newer left to preempt preempts itself', () => {
    const pool = new KvBlockPool(3, 4);
    const s = new Scheduler<FakeSeq>({ maxNumSeqs: 8, maxNumBatchedTokens: 64 }, new PrefixCache(false));
    const [a, b, c] = ['a', 'b', 'c'].map((n) => new FakeSeq(n, pool, range(4)));
    s.add(a), s.add(b), s.add(c);
    assert.deepEqual(run(s), [['a', 4], ['b', 4], ['c', 4]]); // one block each, all 5 tokens long now
    // a needs a second block: c goes. b needs one too: only b itself is newer than nothing, so b goes.
    assert.deepEqual(run(s), [['a', 1]]);
    assert.deepEqual([a.preemptions, b.preemptions, c.preemptions], [0, 1, 1]);
    assert.deepEqual(s.waiting.map((x) => x.name), ['b', 'c'], 'the older of the two preempted comes first');
    assert.equal(pool.numFree, 1);
  });

  it('prefix hits are adopted at admission and recorded; the last token is always computed', () => {
    const pool = new KvBlockPool(20, 4);
    const cache = new PrefixCache(true);
    const s = new Scheduler<FakeSeq>({ maxNumSeqs: 8, maxNumBatchedTokens: 64 }, cache);
    const a = new FakeSeq('a', pool, range(13));
    s.add(a);
    run(s);
    const b = new FakeSeq('b', pool, [...range(12), 99, 98]);
    s.add(b);
    assert.deepEqual(run(s), [['a', 1], ['b', 2]], 'b reuses the 3 full blocks of a');
    assert.equal(b.scheduledWithCache, 12);
    assert.deepEqual(b.blocks.blocks.slice(0, 3), a.blocks.blocks.slice(0, 3));
    assert.equal(pool.refCount(a.blocks.blocks[0]), 2);
    assert.deepEqual(cache.stats, { queries: 13 + 14, hits: 12 });
  });
});

describe('KV block pool', () => {
  it('hands out low ids first, counts references, and frees a block when the last holder lets go', () => {
    const pool = new KvBlockPool(4, 16);
    assert.deepEqual([pool.allocate(), pool.allocate()], [0, 1]);
    pool.acquire(0);
    pool.release([0]);
    assert.equal(pool.numFree, 2, 'block 0 still has a holder');
    pool.release([0]);
    assert.equal(pool.numFree, 3);
    assert.equal(pool.usage, 1 / 4);
    assert.throws(() => pool.release([0]), /released more often than taken/);
  });

  it('keeps freed cached blocks findable until they are reused, least recently freed first', () => {
    const pool = new KvBlockPool(3, 2);
    const [x, y, z] = [pool.allocate()!, pool.allocate()!, pool.allocate()!];
    pool.markCached(x, 'hx');
    pool.markCached(y, 'hy');
    pool.release([y]);
    pool.release([x]);
    assert.equal(pool.lookup('hx'), x);
    assert.equal(pool.lookup('hy'), y);
    // y was freed first, so it is evicted first.
    assert.equal(pool.allocate(), y);
    assert.equal(pool.lookup('hy'), undefined);
    assert.equal(pool.lookup('hx'), x);
    // Taking x back from the cache pulls it off the free list.
    pool.acquire(x);
    assert.equal(pool.numFree, 0);
    assert.equal(pool.allocate(), undefined);
    pool.release([z]);
    assert.equal(pool.allocate(), z);
  });

  it('block hashes chain over the whole prefix', () => {
    const h1 = blockHash(undefined, [1, 2]);
    assert.equal(blockHash(undefined, [1, 2]), h1);
    assert.notEqual(blockHash(undefined, [2, 1]), h1);
    assert.notEqual(blockHash(h1, [3, 4]), blockHash(blockHash(undefined, [9, 9]), [3, 4]), 'same block after a different prefix');
  });

  it('sizes the cache from a memory budget: 2 × layers × kv_heads × head_dim × element bytes per token', () => {
    const perToken = kvBytesPerToken({ numLayers: 8, numKvHeads: 2, headDim: 32 }, 'float32');
    assert.equal(perToken, 4096);
    assert.equal(kvBytesPerToken({ numLayers: 8, numKvHeads: 2, headDim: 32 }, 'bf16'), 2048, 'bf16');
    assert.equal(kvTokensForMemory(1 << 20, perToken, 16), 256);
    assert.equal(kvTokensForMemory(perToken * 16 * 3 + 100, perToken, 16), 48, 'whole blocks only');
  });
});
