// Comparing token logprobs from a backend (GPU or its CPU emulation) with computeLogprobs' on the host.

import assert from 'node:assert/strict';
import type { Logprobs } from '../../src/engine/sampler.js';

/** The same token, rank and top ids in the same order; logprobs equal to float64 rounding of a sum's order (1e-9). */
export function assertSameLogprobs(got: Logprobs, want: Logprobs, what: string, seed: number): void {
  assert.equal(got.tokenId, want.tokenId, `${what}: token (seed ${seed})`);
  assert.equal(got.rank, want.rank, `${what}: rank (seed ${seed})`);
  const close = (a: number, b: number) => a === b || Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
  assert.ok(close(got.logprob, want.logprob), `${what}: logprob ${got.logprob}, expected ${want.logprob} (seed ${seed})`);
  assert.deepEqual(got.top.map((t) => t.id), want.top.map((t) => t.id), `${what}: top ids (seed ${seed})`);
  got.top.forEach((t, j) => assert.ok(close(t.logprob, want.top[j].logprob), `${what}: top ${j} logprob ${t.logprob}, expected ${want.top[j].logprob} (seed ${seed})`));
}
