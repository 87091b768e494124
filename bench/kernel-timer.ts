// Device time of a kernel call, as the microbenchmarks measure it: events around `reps` back-to-back
// calls queued behind a large device copy. The copy keeps the GPU busy while the host queues the
// launches (a launch through koffi costs 5–7 µs of host time, about what the smallest GEMVs take), so
// the events time the kernels back to back, as in a decode step where the GPU is the bottleneck. And
// the host wall time of a call, device work included (wallUs), for paths that read results back.

import { setImmediate as nextTurn } from 'node:timers/promises';
import type { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import type { DevicePtr } from '../src/backend/cuda/driver.js';

const SPACER_BYTES = 2 ** 31;

export class KernelTimer {
  private readonly src: DevicePtr;
  private readonly dst: DevicePtr;

  constructor(private readonly backend: CudaBackend) {
    this.src = backend.driver.memAlloc(SPACER_BYTES);
    this.dst = backend.driver.memAlloc(SPACER_BYTES);
  }

  /**
   * Device milliseconds per call of `fn`: the median of 3 trials after a warm-up one, each in its own
   * step (after `setup`) so outputs come from the pool.
   */
  async ms(setup: () => void, fn: (i: number) => void, reps = 20): Promise<number> {
    const d = this.backend.driver;
    const e0 = d.createEvent();
    const e1 = d.createEvent();
    const trials: number[] = [];
    for (let trial = 0; trial < 4; trial++) {
      await nextTurn(); // the last trial's activations go back to the pool
      setup();
      d.copyDeviceToDevice(this.dst, this.src, SPACER_BYTES);
      d.recordEvent(e0);
      for (let i = 0; i < reps; i++) fn(i);
      d.recordEvent(e1);
      if (trial > 0) trials.push(d.elapsedMs(e0, e1) / reps);
      else d.synchronize();
    }
    return median(trials);
  }

  /** The same in microseconds. */
  async us(setup: () => void, fn: (i: number) => void, reps = 20): Promise<number> {
    return (await this.ms(setup, fn, reps)) * 1000;
  }

  free(): void {
    this.backend.driver.memFree(this.src);
    this.backend.driver.memFree(this.dst);
  }
}

/**
 * Host wall µs per call of `fn`, device work included: the median of 5 trials of `n` calls after a
 * warm-up trial, each trial after a turn of the event loop (the last trial's activations go back to
 * the pool). `setup` runs untimed, the device idle after it, before each trial ('trial') or before
 * each call ('call': calls that consume what setup made, such as a request's random stream).
 */
export async function wallUs(backend: CudaBackend, setup: () => void, fn: () => void, n: number, setupBefore: 'trial' | 'call' = 'trial'): Promise<number> {
  const d = backend.driver;
  const ready = () => {
    setup();
    d.synchronize();
  };
  const trials: number[] = [];
  for (let trial = 0; trial < 6; trial++) {
    await nextTurn();
    let us = 0;
    if (setupBefore === 'trial') {
      ready();
      const t0 = performance.now();
      for (let i = 0; i < n; i++) fn();
      us = (performance.now() - t0) * 1000;
    } else {
      for (let i = 0; i < n; i++) {
        ready();
        const t0 = performance.now();
        fn();
        us += (performance.now() - t0) * 1000;
      }
    }
    if (trial > 0) trials.push(us / n);
  }
  return median(trials);
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}
