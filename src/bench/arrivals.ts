// When each benchmark request is released: all at once (rate inf), Poisson or gamma arrivals with a
// burstiness shape, or a linear/exponential ramp-up, following `vllm bench serve`'s rules (including
// the rescale that makes the last arrival land exactly at N / rate). Seeded, so runs repeat.

import { Rng } from '../engine/rng.js';

export type RampUpStrategy = 'linear' | 'exponential';

export interface ArrivalOptions {
  /** Requests per second; Infinity releases every request at t = 0. */
  requestRate: number;
  /** Gamma shape k: 1 = Poisson, < 1 burstier, > 1 more even, Infinity = fixed 1/rate gaps. */
  burstiness: number;
  seed: number;
  rampUp?: { strategy: RampUpStrategy; startRps: number; endRps: number };
}

/** The request rate for request i of n under a ramp-up (or the fixed rate without one). */
export function currentRate(i: number, n: number, opts: ArrivalOptions): number {
  const r = opts.rampUp;
  if (!r) return opts.requestRate;
  const progress = i / Math.max(n - 1, 1);
  return r.strategy === 'linear' ? r.startRps + (r.endRps - r.startRps) * progress : r.startRps * (r.endRps / r.startRps) ** progress;
}

/** Cumulative release times in seconds from the start of the run, one per request. */
export function arrivalTimes(n: number, opts: ArrivalOptions): number[] {
  if (!(opts.burstiness > 0)) throw new RangeError(`burstiness must be positive, got ${opts.burstiness}`);
  const rng = new Rng(opts.seed);
  const delays: number[] = [];
  for (let i = 0; i < n; i++) {
    const rate = currentRate(i, n, opts);
    if (!(rate > 0)) throw new RangeError(`request rate must be positive, got ${rate}`);
    if (rate === Infinity) delays.push(0);
    else if (opts.burstiness === Infinity) delays.push(1 / rate);
    else delays.push(sampleGamma(opts.burstiness, 1 / (rate * opts.burstiness), rng));
  }
  for (let i = 1; i < n; i++) delays[i]! += delays[i - 1]!;
  const lastDelay = delays[n - 1] ?? 0;
  if (!opts.rampUp && lastDelay !== 0) {
    // Gamma sums land 1-2% off N/rate; rescaling removes that noise from the run's duration.
    const factor = n / opts.requestRate / lastDelay;
    for (let i = 0; i < n; i++) delays[i]! *= factor;
  }
  return delays;
}

/** A standard normal draw (Box–Muller). */
export function sampleNormal(rng: Rng): number {
  const u1 = 1 - rng.next();
  const u2 = rng.next();
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

/** Gamma(shape, scale) by Marsaglia & Tsang (2000); shape < 1 via the U^(1/shape) boost. */
export function sampleGamma(shape: number, scale: number, rng: Rng): number {
  if (shape < 1) {
    const u = 1 - rng.next();
    return sampleGamma(shape + 1, scale, rng) * u ** (1 / shape);
  }
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      x = sampleNormal(rng);
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = 1 - rng.next();
    if (u < 1 - 0.0331 * x ** 4) return d * v * scale;
    if (Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v * scale;
  }
}
