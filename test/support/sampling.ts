// What the sampleRows tests share (test/sample-rows.test.ts on the CPU, test/cuda-sampling.test.ts
// on a GPU): random logit rows with the cases the sampler has rules for, random request knobs, and
// a forward of several prompts with every token's row sampled; rows that exclude a draft (speculative
// verification's residual draws) and the rule for where a backend may differ from the host on them.

import assert from 'node:assert/strict';
import type { GpuSamplingRow } from '../../src/backend/backend.js';
import { drawSamplingRow, drawToken, samplingSupport } from '../../src/engine/sampler.js';
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

  /**
   * A draft to exclude from a row of `logits` (the ids 0..n-1 sampled over, `cols` in all) under
   * `knobs`, as speculative drafts come: the row's favourite (often accepted; with a peaked row, the
   * residual may be empty), another survivor, any id (often one top-k or min-p filtered out, or a
   * -inf/NaN one), an id past n (a padded vocabulary's), or the last survivor.
   */
  draft(logits: Float32Array, n: number, cols: number, knobs: Omit<GpuSamplingRow, 'u'>): number {
    let ids: number[] = [];
    try {
      const s = samplingSupport(logits.subarray(0, n), knobs);
      ids = [...s.ids.subarray(0, s.count)];
    } catch {
      // nothing survives: any id will do
    }
    const r = this.rng.next();
    if (ids.length > 0 && r < 0.35) {
      let best = ids[0];
      for (const id of ids) if (logits[id] > logits[best]) best = id;
      return best;
    }
    if (ids.length > 0 && r < 0.6) return this.pick(ids);
    if (ids.length > 0 && r < 0.7) return ids[ids.length - 1];
    if (n < cols && r < 0.78) return n + this.int(cols - n);
    return this.int(n);
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
 * flip one into the other. Infinity when `got` is not a token the host could draw. Rows that exclude
 * a draft walk the residual's float32 probabilities instead (residualWalk).
 */
export function boundaryDistance(row: Float32Array, k: GpuSamplingRow, got: number, want: number): number {
  if (k.exclude !== undefined) {
    const walk = residualWalk(row, k, k.exclude);
    return walkDistance(walk.ids, walk.weights, k.u, got, want);
  }
  const { ids, weights, count } = samplingSupport(row, k);
  const list = [...ids.subarray(0, count)];
  return walkDistance(list, list.map((id) => weights[id]), k.u, got, want);
}

/** boundaryDistance over a walk: ids in order, their weights, the host's running f64 sum. */
function walkDistance(list: readonly number[], weights: readonly number[], u: number, got: number, want: number): number {
  const a = list.indexOf(got);
  const b = list.indexOf(want);
  if (a < 0 || b < 0) return Infinity;
  let total = 0;
  for (const w of weights) total += w;
  const target = u * total;
  let acc = 0;
  let nearest = Infinity;
  for (let j = 0; j < Math.max(a, b); j++) {
    acc += weights[j]; // the host's own running sum: the boundary after list[j]
    if (j >= Math.min(a, b)) nearest = Math.min(nearest, Math.abs(target - acc) / total);
  }
  return nearest;
}

/**
 * What drawResidual walks for a row excluding x: the surviving ids other than x whose float32
 * probability is above 0, with those probabilities, in id order (empty when the residual is p itself);
 * and the f64 quotient w(x) / total before its rounding to float32 (0 when x did not survive), with
 * the number of weights in the host's total.
 */
export function residualWalk(row: Float32Array, k: Omit<GpuSamplingRow, 'u'>, x: number): { ids: number[]; weights: number[]; quotient: number; count: number } {
  const { ids, weights, count, total } = samplingSupport(row, k);
  const walk: { ids: number[]; weights: number[]; quotient: number; count: number } = { ids: [], weights: [], quotient: 0, count };
  for (let j = 0; j < count; j++) {
    const y = ids[j];
    const q = Math.fround(weights[y] / total);
    if (y === x) walk.quotient = weights[y] / total;
    else if (q > 0) {
      walk.ids.push(y);
      walk.weights.push(q);
    }
  }
  return walk;
}

/**
 * Whether float32 `got` is the other rounding of the f64 `quotient` (the host rounded it to `want`)
 * and the quotient lies within `rel` (relative) of the midpoint between the two: where a total
 * that differs from the host's by its own rounding could round the quotient the other way.
 */
export function otherRounding(quotient: number, want: number, got: number, rel: number): boolean {
  if (!(quotient > 0) || got === want) return false;
  const bits = new Uint32Array(new Float32Array([want]).buffer)[0];
  const neighbour = new Float32Array(new Uint32Array([quotient > want ? bits + 1 : bits - 1]).buffer)[0];
  if (got !== neighbour) return false;
  return Math.abs(quotient - (want + neighbour) / 2) <= rel * quotient;
}

/**
 * A backend's tokens (`got`) for rows × cols logits, each drawn over its first n ids with `knobs`,
 * against drawToken (drawResidual for rows that exclude a draft): each differing draw must be a
 * boundary case (boundaryDistance ≤ BOUNDARY_REL); returns them, described, for the caller to count.
 * With `gotProbs` (the backend's p of each row's excluded draft) those are held to drawResidual's
 * bit for bit, bar the other float32 rounding of a quotient that lies within the host's own rounding
 * of its total ((count + 4) · 2^-52 relative) of the midpoint, also returned (each checked to be one).
 */
export function differingDraws(x: Float32Array, cols: number, n: number, knobs: readonly GpuSamplingRow[], got: Int32Array, where: string, gotProbs?: Float32Array): string[] {
  const out: string[] = [];
  knobs.forEach((k, r) => {
    const row = x.subarray(r * cols, r * cols + n);
    const { token: want, excludedProb } = drawSamplingRow(row, k);
    if (gotProbs && !Object.is(gotProbs[r], excludedProb)) {
      const what = `${where} row ${r}: ${JSON.stringify(k)}: p(excluded) ${gotProbs[r]}, the host's ${excludedProb}`;
      const walk = k.exclude === undefined ? undefined : residualWalk(row, k, k.exclude);
      assert.ok(walk && otherRounding(walk.quotient, excludedProb, gotProbs[r], (walk.count + 4) * 2 ** -52), `${what}: not a rounding of w(x) / total ${walk?.quotient}`);
      out.push(`${what} (w(x) / total = ${walk.quotient}, at a float32 rounding boundary)`);
    }
    if (got[r] === want) return;
    const what = `${where} row ${r}: ${JSON.stringify(k)}: got ${got[r]}, the host draws ${want}`;
    const d = boundaryDistance(row, k, got[r], want);
    assert.ok(d <= BOUNDARY_REL, `${what}; u × total is ${d.toExponential(2)} of the total from a boundary between them`);
    out.push(`${what} (${d.toExponential(2)} of the total from a boundary)`);
  });
  return out;
}
