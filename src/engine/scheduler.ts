// Continuous batching: which sequences run in the next step, and how many of their tokens. FCFS
// over a waiting and a running queue within a token budget and a KV block budget, as vLLM v1:
// running decodes first, then running prefills continue in chunks, then waiting requests are
// admitted in the budget left. When KV blocks run out the newest running sequence is preempted:
// its blocks are freed and it goes back to the front of the waiting queue, to be recomputed later
// from its prompt and the tokens it had already generated (which it keeps).

import type { SequenceBlocks } from './kv-cache.js';
import type { PrefixCache } from './prefix-cache.js';

/** What the scheduler needs to know of a sequence; the engine's requests implement it. */
export interface SchedulableSequence {
  readonly blocks: SequenceBlocks;
  /** Prompt plus generated tokens. */
  readonly numTokens: number;
  /** Tokens whose K/V are in the cache. */
  numComputed: number;
  tokenAt(i: number): number;
  /** Called when the sequence is first given tokens to compute (after each admission). */
  onScheduled(cachedTokens: number): void;
  onPreempted(): void;
}

export interface SchedulerOptions {
  /** Most sequences running at once. */
  maxNumSeqs: number;
  /** Most tokens in one step. */
  maxNumBatchedTokens: number;
}

export interface ScheduledChunk<S> {
  seq: S;
  /** First position computed this step. */
  start: number;
  count: number;
}

export class Scheduler<S extends SchedulableSequence> {
  readonly waiting: S[] = [];
  /** Oldest first: the end of the list is the first to be preempted. */
  readonly running: S[] = [];
  numPreemptions = 0;

  constructor(
    readonly options: SchedulerOptions,
    readonly prefixCache: PrefixCache,
  ) {}

  add(seq: S): void {
    this.waiting.push(seq);
  }

  /** Take a sequence out of whichever queue holds it (it finished or was aborted). */
  remove(seq: S): void {
    for (const list of [this.running, this.waiting]) {
      const i = list.indexOf(seq);
      if (i >= 0) list.splice(i, 1);
    }
  }

  /** Plan one step. Blocks for every scheduled token are reserved before this returns. */
  schedule(): ScheduledChunk<S>[] {
    let budget = this.options.maxNumBatchedTokens;
    const chunks = new Map<S, ScheduledChunk<S>>();
    let preempted = false;

    // Make room for `seq` to hold `numTokens` by preempting the newest running sequences; false
    // if `seq` itself had to go. A victim already scheduled this step is unscheduled first: its
    // blocks were only reserved, nothing was written yet.
    const makeRoom = (seq: S, numTokens: number): boolean => {
      while (!seq.blocks.tryReserve(numTokens)) {
        const victim = this.running.pop()!;
        const chunk = chunks.get(victim);
        if (chunk) {
          budget += chunk.count;
          chunks.delete(victim);
        }
        this.preempt(victim);
        preempted = true;
        if (victim === seq) return false;
      }
      return true;
    };

    // Running sequences: decodes first (one token each keeps every stream moving), then the
    // prefills under way, in chunks that fit what the budget has left.
    for (const decoding of [true, false]) {
      for (const seq of [...this.running]) {
        if (budget <= 0) break;
        if (!this.running.includes(seq)) continue; // preempted by an older sequence this step
        const remaining = seq.numTokens - seq.numComputed;
        if (remaining <= 0 || (remaining === 1) !== decoding) continue;
        const count = Math.min(remaining, budget);
        if (!makeRoom(seq, seq.numComputed + count)) continue;
        chunks.set(seq, { seq, start: seq.numComputed, count });
        budget -= count;
      }
    }

    // Waiting sequences, first come first served: the head of the queue blocks the rest, so a
    // long prompt is not overtaken forever. None are admitted in a step that had to preempt.
    while (!preempted && budget > 0 && this.waiting.length > 0 && this.running.length < this.options.maxNumSeqs) {
      const seq = this.waiting[0];
      const cached = this.prefixCache.match(seq.blocks, seq.numTokens, (i) => seq.tokenAt(i));
      seq.numComputed = cached;
      const count = Math.min(seq.numTokens - seq.numComputed, budget);
      if (!seq.blocks.tryReserve(seq.numComputed + count)) {
        // Not now: give the cached blocks back (they stay cached) and retry next step.
        seq.blocks.releaseAll();
        seq.numComputed = 0;
        break;
      }
      this.waiting.shift();
      this.running.push(seq);
      this.prefixCache.record(seq.numTokens, cached);
      seq.onScheduled(cached);
      chunks.set(seq, { seq, start: seq.numComputed, count });
      budget -= count;
    }
    return [...chunks.values()];
  }

  private preempt(seq: S): void {
    seq.blocks.releaseAll();
    seq.numComputed = 0;
    seq.onPreempted();
    this.waiting.unshift(seq);
    this.numPreemptions++;
  }
}
