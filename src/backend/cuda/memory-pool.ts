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

  constructor(private readonly driver: CudaDriver) {}

  /** A buffer of at least `bytes` for the current run. Persistent buffers stay lent until `release`. */
  alloc(bytes: number, persistent = false): PooledBuffer {
    const cls = sizeClass(bytes);
    this.counters.allocs++;
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

  /** Give back a persistent buffer. Work already queued on the stream still sees its data. */
  release(buf: PooledBuffer): void {
    buf.generation++;
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
