// Where a forward's GPU time goes, op by op: a view of the CUDA backend that records an event before
// and after every Backend call the model makes (calls an op makes inside the backend are not split
// out), so after one forward each op's device time can be summed by name, and the time between one
// op's end and the next op's start (the GPU waiting for the host) shows as gaps. The events cost a
// few microseconds of host time each, so the forward runs a little slower than unprofiled: a
// breakdown, not a headline number.

import type { Backend } from '../src/backend/backend.js';
import type { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import type { Handle } from '../src/backend/cuda/driver.js';

export interface OpTime {
  op: string;
  calls: number;
  /** Device time between the events around its calls (the GPU idle inside a call included). */
  ms: number;
  /** Host time inside its calls. */
  hostMs: number;
}

export interface OpProfile {
  /** First event to last, ms. */
  spanMs: number;
  /** Per op name, largest first. */
  ops: OpTime[];
  /** Span minus the ops' sum: the GPU idle between ops (the host behind). */
  gapsMs: number;
  /** Host wall time of the profiled run, when the caller gave it. */
  wallMs?: number;
}

export class OpProfiler {
  private readonly events: Handle[] = [];
  private marks: Array<{ op: string; start: number; end: number; hostMs: number }> = [];
  private used = 0;
  /** The backend to give the model: every method call is bracketed by events. */
  readonly backend: Backend;

  constructor(private readonly target: CudaBackend) {
    const driver = target.driver;
    const event = (): number => {
      if (this.used === this.events.length) this.events.push(driver.createEvent());
      driver.recordEvent(this.events[this.used]);
      return this.used++;
    };
    this.backend = new Proxy(target, {
      get: (t, key) => {
        const value = Reflect.get(t, key);
        // replayable wraps a whole step (its ops are marked one by one inside it).
        if (typeof value !== 'function' || typeof key !== 'string' || key === 'replayable') return value;
        return (...args: unknown[]) => {
          const start = event();
          const t0 = performance.now();
          const out = value.apply(t, args);
          const hostMs = performance.now() - t0;
          this.marks.push({ op: key, start, end: event(), hostMs });
          return out;
        };
      },
    }) as Backend;
  }

  /** Forget the marks so far (events are reused). */
  reset(): void {
    this.marks = [];
    this.used = 0;
  }

  /** The marks since reset, summed by op (synchronizes). */
  collect(): OpProfile {
    const driver = this.target.driver;
    driver.synchronize();
    const byOp = new Map<string, OpTime>();
    let sum = 0;
    for (const m of this.marks) {
      const ms = driver.elapsedMs(this.events[m.start], this.events[m.end]);
      const t = byOp.get(m.op) ?? { op: m.op, calls: 0, ms: 0, hostMs: 0 };
      t.calls++;
      t.ms += ms;
      t.hostMs += m.hostMs;
      byOp.set(m.op, t);
      sum += ms;
    }
    const spanMs = this.marks.length ? driver.elapsedMs(this.events[this.marks[0].start], this.events[this.marks[this.marks.length - 1].end]) : 0;
    return { spanMs, ops: [...byOp.values()].sort((a, b) => b.ms - a.ms), gapsMs: spanMs - sum };
  }
}
