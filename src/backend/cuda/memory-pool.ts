// Device memory for activations: size-class free lists over cuMemAlloc, recycled per step.
//
// The Backend interface has no free(), and garbage collection cannot tell us in time which tensors
// are dead (V8 clears WeakRefs only in full collections, tens of ms with a tokenizer in the heap).
// But every caller uses an activation only within the synchronous run that made it: a forward pass,
// a proposer's drafting, a test's body. So buffers lent during one synchronous run go back to their
// free lists at its end (a microtask), and the next step reuses them without touching the driver.
// A tensor kept past its run would read recycled memory; instead each buffer carries a generation
// and any use of a stale tensor throws (see CudaTensor.ptr), so a mistake is loud, never silent.

import { CudaError, type CudaDriver, type DevicePtr } from './driver.js';

/** A device buffer of one size class; `generation` changes each time it is recycled. */
export interface PooledBuffer {
  readonly ptr: DevicePtr;
  readonly bytes: number;
  generation: number;
  /** The recorded step that owns it (step-graphs.ts), if any: released buffers go back there. */
  arena?: PoolArena;
}

/**
 * The buffers of one recorded step (a CUDA graph, step-graphs.ts). A graph's kernels hold the
 * addresses they were recorded with, so every replay must get the same buffers in the same order:
 * `reset` before each run, then the same sequence of allocations and releases hands out exactly the
 * buffers the recording got (free lists first, last in first out, then the ones grown for it, in
 * order). Nothing else ever receives them, so a queued replay cannot be overwritten by other work.
 */
export class PoolArena {
  private readonly grown = new Map<number, PooledBuffer[]>();
  private readonly used = new Map<number, number>();
  private readonly free = new Map<number, PooledBuffer[]>();
  bytes = 0;

  /** Start a run: every buffer is free again, and tensors of the last run go stale. */
  reset(): void {
    for (const list of this.grown.values()) for (const b of list) b.generation++;
    this.used.clear();
    this.free.clear();
  }

  take(cls: number, grow: (cls: number) => PooledBuffer): PooledBuffer {
    const reused = this.free.get(cls)?.pop();
    if (reused) return reused;
    let list = this.grown.get(cls);
    if (!list) this.grown.set(cls, (list = []));
    const n = this.used.get(cls) ?? 0;
    this.used.set(cls, n + 1);
    if (n < list.length) return list[n];
    const b = grow(cls);
    b.arena = this;
    list.push(b);
    this.bytes += cls;
    return b;
  }

  give(buf: PooledBuffer): void {
    let list = this.free.get(buf.bytes);
    if (!list) this.free.set(buf.bytes, (list = []));
    list.push(buf);
  }

  /** Every buffer it holds (to hand back to the pool when its graph is dropped). */
  all(): PooledBuffer[] {
    return [...this.grown.values()].flat();
  }
}

/** Round up to a size class: 1 KiB minimum, then four classes per power of two (≤ 25% waste). */
export function sizeClass(bytes: number): number {
  if (bytes <= 1024) return 1024;
  const pow = 2 ** Math.floor(Math.log2(bytes));
  const quarter = pow / 4;
  return Math.ceil(bytes / quarter) * quarter;
}

export class DevicePool {
  private readonly free = new Map<number, PooledBuffer[]>();
  /** Lent during the current synchronous run; recycled when it ends. */
  private lentThisRun: Array<[PooledBuffer, number]> = [];
  private runOpen = false;
  /** Bytes held from cuMemAlloc (lent out or on the free lists). */
  reservedBytes = 0;
  /** Counters for tests and benchmarks. */
  readonly counters = { allocs: 0, reused: 0, cuMemAllocs: 0, runs: 0 };
  /** While a step is recorded (step-graphs.ts), every allocation comes from its arena. */
  arena: PoolArena | undefined;

  constructor(private readonly driver: CudaDriver) {}

  /** A buffer of at least `bytes` for the current run. Persistent buffers stay lent until `release`. */
  alloc(bytes: number, persistent = false): PooledBuffer {
    const cls = sizeClass(bytes);
    this.counters.allocs++;
    if (this.arena) return this.arena.take(cls, this.growForArena);
    let buf = this.free.get(cls)?.pop();
    if (buf) this.counters.reused++;
    else buf = this.grow(cls);
    if (!persistent) {
      if (!this.runOpen) {
        this.runOpen = true;
        this.counters.runs++;
        queueMicrotask(this.endRun);
      }
      this.lentThisRun.push([buf, buf.generation]);
    }
    return buf;
  }

  /** A buffer lent until `release`, never from a recorded step's arena (a graph's upload slots). */
  allocOutsideArena(bytes: number): PooledBuffer {
    const arena = this.arena;
    this.arena = undefined;
    try {
      return this.alloc(bytes, true);
    } finally {
      this.arena = arena;
    }
  }

  /** Give back a persistent buffer. Work already queued on the stream still sees its data. */
  release(buf: PooledBuffer): void {
    buf.generation++;
    if (buf.arena) return buf.arena.give(buf);
    let list = this.free.get(buf.bytes);
    if (!list) this.free.set(buf.bytes, (list = []));
    list.push(buf);
  }

  private readonly endRun = (): void => {
    this.runOpen = false;
    const lent = this.lentThisRun;
    this.lentThisRun = [];
    // A buffer released early (CudaBackend.release) has a new generation: it is already free, or lent
    // again under a later entry of this list.
    for (const [b, generation] of lent) if (b.generation === generation) this.release(b);
  };

  private readonly growForArena = (cls: number): PooledBuffer => this.grow(cls);

  /** Take back the buffers of a dropped arena (its graph's queued launches still run first: stream order). */
  adopt(arena: PoolArena): void {
    for (const b of arena.all()) {
      b.arena = undefined;
      this.release(b);
    }
    arena.bytes = 0;
  }

  private grow(cls: number): PooledBuffer {
    let ptr = this.driver.tryMemAlloc(cls);
    if (ptr === undefined) {
      // Out of memory: hand cached buffers of other sizes back to the driver and try again.
      this.trim();
      ptr = this.driver.tryMemAlloc(cls);
      if (ptr === undefined) {
        const { freeBytes, totalBytes } = this.driver.memInfo();
        throw new CudaError(
          `out of GPU memory allocating ${fmtBytes(cls)} for activations (${fmtBytes(freeBytes)} free of ${fmtBytes(totalBytes)}; ` +
            `${fmtBytes(this.reservedBytes)} held for activations, ${this.lentThisRun.length} buffers in use by this step): ` +
            'lower max_num_batched_tokens or the KV cache size',
          2,
        );
      }
    }
    this.counters.cuMemAllocs++;
    this.reservedBytes += cls;
    return { ptr, bytes: cls, generation: 0 };
  }

  /** Fill every cached (unlent) buffer with a 32-bit pattern (tests: an output the op never wrote shows). */
  poisonFree(pattern: number): void {
    for (const [cls, list] of this.free) for (const b of list) this.driver.fill32(b.ptr, pattern, cls / 4);
  }

  /** Give every cached (unlent) buffer back to the driver. */
  trim(): void {
    for (const [cls, list] of this.free) {
      for (const b of list) {
        this.driver.memFree(b.ptr);
        this.reservedBytes -= cls;
      }
    }
    this.free.clear();
  }

  /** Buffers lent in the current synchronous run. */
  get lentCount(): number {
    return this.lentThisRun.length;
  }
}

export function fmtBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `${(n / 1024).toFixed(1)} KiB`;
}

/**
 * One thing derived from an activation and kept for the next op that wants the same (prefill's
 * bf16 cast of a linear's input, its per-token FP8 quantisation: q, k and v read one input). Valid
 * while it comes from the same tensor and kind, no in-place op ran since (the caller's epoch), and
 * the pool has not recycled its buffers. A new entry gives the old one's buffers back (stream order
 * keeps work already queued reading them first).
 */
export class DerivedInputCache<X> {
  private entry?: { x: X; kind: string; epoch: number; bufs: PooledBuffer[]; generations: number[] };

  constructor(private readonly pool: DevicePool) {}

  /** The kept buffers for (x, kind) at this epoch, or undefined. */
  get(x: X, kind: string, epoch: number): PooledBuffer[] | undefined {
    const e = this.entry;
    if (!e || e.x !== x || e.kind !== kind || e.epoch !== epoch) return undefined;
    return e.bufs.every((b, i) => b.generation === e.generations[i]) ? e.bufs : undefined;
  }

  /** Keep `bufs` for (x, kind) at this epoch; the previous entry's buffers not among them go back to the pool. */
  set(x: X, kind: string, epoch: number, bufs: PooledBuffer[]): void {
    const old = this.entry;
    if (old) old.bufs.forEach((b, i) => !bufs.includes(b) && b.generation === old.generations[i] && this.pool.release(b));
    this.entry = { x, kind, epoch, bufs, generations: bufs.map((b) => b.generation) };
  }
}
