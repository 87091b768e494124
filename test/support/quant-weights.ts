// Shared by the quantized-format tests: random weights that exercise scales, and the float linear
// every packed linear is compared with.

import assert from 'node:assert/strict';
import { CpuBackend, CpuDenseWeight } from '../../src/backend/cpu/cpu-backend.js';
import type { Rng } from '../../src/engine/rng.js';

const backend = new CpuBackend();

/** Random weights with row magnitudes spread over ~3 decades, and never an exact zero. */
export function randomWeightsFrom(rng: Rng, rows: number, cols: number): Float32Array {
  const w = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const rowScale = 10 ** (rng.next() * 3 - 2);
    for (let i = 0; i < cols; i++) w[r * cols + i] = ((rng.next() * 2 - 1) || 0.5) * rowScale;
  }
  return w;
}

/** y = x · Wᵀ through the CPU backend's float path: the reference for every packed linear. */
export function denseLinear(x: Float32Array, nTokens: number, w: Float32Array, rows: number, cols: number): Float32Array {
  return backend.toHost(backend.linear(backend.fromHost(x, [nTokens, cols]), new CpuDenseWeight(w, [rows, cols], w.byteLength)));
}

/** Element-wise relative closeness, with a floor of 1% of the largest magnitude for tiny elements. */
export function assertClose(actual: Float32Array, expected: Float32Array, relative: number): void {
  assert.equal(actual.length, expected.length);
  const scale = expected.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  for (let i = 0; i < actual.length; i++) {
    const tolerance = relative * Math.max(Math.abs(expected[i]), 0.01 * scale);
    assert.ok(Math.abs(actual[i] - expected[i]) <= tolerance, `element ${i}: ${actual[i]} vs ${expected[i]}`);
  }
}
