// What the sampleRows tests share (test/sample-rows.test.ts on the CPU, test/cuda-sampling.test.ts
// on a GPU): random logit rows with the cases the sampler has rules for, random request knobs, and
// a forward of several prompts with every token's row sampled.

import assert from 'node:assert/strict';
import type { GpuSamplingRow } from '../../src/backend/backend.js';
import { drawToken, samplingSupport } from '../../src/engine/sampler.js';
import type { Rng } from '../../src/engine/rng.js';
import type { ForwardBatch, ForwardOptions, ForwardResult, LlamaModel } from '../../src/model/llama.js';

/** Random inputs from one seeded stream. */
export class SamplingInputs {
  constructor(private readonly rng: Rng) {}

  int(n: number): number {
    return Math.floor(this.rng.next() * n);
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }

  /**
   * Logits as a model's look (roughly normal, spread 0.5 to 10), never all zeros, with what the
   * sampler has rules for mixed in: -inf masks, NaN, exact ties (a third of rows), a few very large
   * values; rarely +inf, and (with `empty`) rarely a row with nothing left.
   */
  logits(n: number, empty = true): Float32Array {
    const rng = this.rng;
    const x = new Float32Array(n);
    const spread = this.pick([0.5, 3, 10]);
    const ties = rng.next() < 0.3;
    for (let i = 0; i < n; i++) {
      let v = spread * (rng.next() + rng.next() + rng.next() - 1.5);
      if (ties) v = Math.round(v * 2) / 2;
      const r = rng.next();
      if (r < 0.05) v = -Infinity;
      else if (r < 0.06) v = Number.NaN;
      else if (r < 0.065) v = 20 + 5 * rng.next();
      x[i] = v;
    }
    const s = rng.next();
    if (s < 0.05) for (let j = 0; j < 3; j++) x[this.int(n)] = Infinity;
    else if (s < 0.08 && empty) x.fill(-Infinity);
    // Without `empty`, a row the masks emptied by chance gets one finite logit back.
    if (!empty && !x.some((v) => v > -Infinity)) x[this.int(n)] = 1;
    return x;
  }

  /**
   * A request's knobs: sometimes greedy, else temperature 0.05..2; top-k off or 1, 2, 5, 50, 1000 or
   * random; top-p off or 0.05..1; min-p off or 0..0.3 (continuous values, so a top-p cut never lands
   * exactly on topP).
   */
  knobs(greedy = true): Omit<GpuSamplingRow, 'u'> {
    const rng = this.rng;
    return {
      temperature: greedy && rng.next() < 0.15 ? 0 : 0.05 + 1.95 * rng.next(),
      topK: this.pick([0, -1, 1, 2, 5, 50, 1000, 1 + this.int(300)]),
      topP: rng.next() < 0.4 ? 1 : 0.05 + 0.95 * rng.next(),
      minP: rng.next() < 0.5 ? 0 : 0.3 * rng.next(),
    };
  }

  row(greedy = true): GpuSamplingRow {
    return { ...this.knobs(greedy), u: this.rng.next() };
  }
}

/** One prefill forward of several prompts (one sequence each), every token's row with logits. */
export function forwardAll(model: LlamaModel, prompts: number[][], opts: ForwardOptions = {}): ForwardResult {
  const tokens = prompts.flat();
  const seqIndex = prompts.flatMap((p, s) => p.map(() => s));
  const positions = prompts.flatMap((p) => p.map((_, i) => i));
  const blocksPerSeq = 32;
  const batch: ForwardBatch = {
    numTokens: tokens.length, numSeqs: prompts.length, tokens: Int32Array.from(tokens), positions: Int32Array.from(positions), seqIndex: Int32Array.from(seqIndex),
    slots: Int32Array.from(positions, (p, i) => seqIndex[i] * blocksPerSeq * 4 + p), blockTables: Int32Array.from({ length: prompts.length * blocksPerSeq }, (_, i) => i),
    maxBlocksPerSeq: blocksPerSeq, logitRows: Int32Array.from(tokens, (_, i) => i),
  };
  const c = model.config;
  const kv = model.backend.allocKvCache({ numLayers: c.numLayers, numBlocks: prompts.length * blocksPerSeq, blockSize: 4, numKvHeads: c.numKvHeads, headDim: c.headDim });
  return model.forward(batch, kv, opts);
}

/**
 * A GPU draw may differ from the host's only where u × total lies this close (relative to the total)
 * to a boundary of the host's cumulative weights: there the host's own f64 rounding of its running
 * sum decides (the GPU's sums are exact).
 */
export const BOUNDARY_REL = 1e-9;
/** ... and at most this often (in practice never: the host's rounding is about 1e-16 of the total). */
export const MAX_EXCEPTIONS_PER_DRAW = 1e-4;

/**
 * How far (relative to the total) the host's u × total lies from the nearest boundary of its
 * cumulative weights between the host's token and another one: where a rounding in the sum could
 * flip one into the other. Infinity when `got` is not a token the host could draw.
 */
export function boundaryDistance(row: Float32Array, k: GpuSamplingRow, got: number, want: number): number {
  const { ids, weights, count, total } = samplingSupport(row, k);
  const list = [...ids.subarray(0, count)];
  const a = list.indexOf(got);
  const b = list.indexOf(want);
  if (a < 0 || b < 0) return Infinity;
  const target = k.u * total;
  let acc = 0;
  let nearest = Infinity;
  for (let j = 0; j < Math.max(a, b); j++) {
    acc += weights[list[j]]; // the host's own running sum: the boundary after list[j]
    if (j >= Math.min(a, b)) nearest = Math.min(nearest, Math.abs(target - acc) / total);
  }
  return nearest;
}

/**
 * A backend's tokens (`got`) for rows × cols logits, each drawn over its first n ids with `knobs`,
 * against drawToken: each differing draw must be a boundary case (boundaryDistance ≤ BOUNDARY_REL);
 * returns them, described, for the caller to count.
 */
export function differingDraws(x: Float32Array, cols: number, n: number, knobs: readonly GpuSamplingRow[], got: Int32Array, where: string): string[] {
  const out: string[] = [];
  knobs.forEach((k, r) => {
    const row = x.subarray(r * cols, r * cols + n);
    const want = drawToken(row, k, k.u);
    if (got[r] === want) return;
    const what = `${where} row ${r}: ${JSON.stringify(k)}: got ${got[r]}, the host draws ${want}`;
    const d = boundaryDistance(row, k, got[r], want);
    assert.ok(d <= BOUNDARY_REL, `${what}; u × total is ${d.toExponential(2)} of the total from a boundary between them`);
    out.push(`${what} (${d.toExponential(2)} of the total from a boundary)`);
  });
  return out;
}
