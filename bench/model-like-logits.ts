// Logit rows for the sampling benchmarks, shaped like a language model's: most ids spread around 0
// (sd ~2.5), a few hundred well above the rest, one clear favourite, so top-k, top-p and residual
// draws cut where they would in practice.

import type { Rng } from '../src/engine/rng.js';

export function modelLikeLogits(rng: Rng, n: number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = 2.5 * (rng.next() + rng.next() + rng.next() + rng.next() - 2) * 1.7;
  for (let j = 0; j < 300; j++) x[Math.floor(rng.next() * n)] = 8 + 8 * rng.next();
  x[Math.floor(rng.next() * n)] = 18;
  return x;
}
