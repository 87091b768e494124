// What the sampleRows tests share (test/sample-rows.test.ts on the CPU, test/cuda-sampling.test.ts
// on a GPU): random logit rows with the cases the sampler has rules for, random request knobs, and
// a forward of several prompts with every token's row sampled; rows that exclude a draft (speculative
// verification's residual draws) and the rule for where a backend may differ from the host on them.

import assert from 'node:assert/strict';
import type { GpuSamplingRow } from '../../src/backend/backend.js';
import { drawDistribution, drawSamplingRow, drawToken, samplingSupport } from '../../src/engine/sampler.js';
import type { Rng } from '../../src/engine/rng.js';
import { drawFrom } from '../../src/engine/spec/proposer.js';
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
export function boundaryDistance(row: Float32Array, k: GpuSamplingRow, got: number, want: number, q?: ArrayLike<number>): number {
  if (k.exclude !== undefined || k.distRow !== undefined) {
    const walk = k.exclude === undefined ? probabilityWalk(row, k) : residualWalk(row, k, k.exclude, k.distRow === undefined ? undefined : q);
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

/** A float32 walk: ids in order and their values; the f64 quotient w(x) / total of the id asked about; the host total's number of weights. */
export interface FloatWalk {
  ids: number[];
  weights: number[];
  quotient: number;
  count: number;
}

/**
 * What drawResidual walks for a row excluding x: the surviving ids other than x whose float32
 * probability is above 0, with those probabilities, in id order (empty when the residual is p itself);
 * and the f64 quotient w(x) / total before its rounding to float32 (0 when x did not survive), with
 * the number of weights in the host's total. With a draft's distribution q, what drawResidualOf walks:
 * fround(p(y) − q(y)) where positive, or p itself where none is.
 */
export function residualWalk(row: Float32Array, k: Omit<GpuSamplingRow, 'u'>, x: number, q?: ArrayLike<number>): FloatWalk {
  const { ids, weights, count, total } = samplingSupport(row, k);
  const walk: FloatWalk = { ids: [], weights: [], quotient: 0, count };
  for (let j = 0; j < count; j++) {
    const y = ids[j];
    const p = Math.fround(weights[y] / total);
    if (y === x) walk.quotient = weights[y] / total;
    const r = q ? Math.fround(Math.max(0, p - q[y])) : y === x ? 0 : p;
    if (r > 0) {
      walk.ids.push(y);
      walk.weights.push(r);
    }
  }
  return q && walk.ids.length === 0 ? { ...probabilityWalk(row, k), quotient: walk.quotient } : walk;
}

/** What drawDistribution walks: the survivors' float32 probabilities above 0 in id order (quotient: of the favourite, unused). */
export function probabilityWalk(row: Float32Array, k: Omit<GpuSamplingRow, 'u'>): FloatWalk {
  const { ids, weights, count, total } = samplingSupport(row, k);
  const walk: FloatWalk = { ids: [], weights: [], quotient: 0, count };
  for (let j = 0; j < count; j++) {
    const p = Math.fround(weights[ids[j]] / total);
    if (p > 0) {
      walk.ids.push(ids[j]);
      walk.weights.push(p);
    }
  }
  return walk;
}

/** The host's f64 quotient w(y) / total of id y in a row under knobs k (0 when y did not survive). */
export function quotientOf(row: Float32Array, k: Omit<GpuSamplingRow, 'u'>, y: number): number {
  const { ids, weights, count, total } = samplingSupport(row, k);
  for (let j = 0; j < count; j++) if (ids[j] === y) return weights[y] / total;
  return 0;
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
 * Rows of sampled drafts' distributions around a backend's sampleRows call (GpuSamplingRow.distRow):
 * `before` as given to it (the q rows that verification rows read), `after` as it left them (the rows
 * drafts wrote), `cols` values a row.
 */
export interface DistRows {
  before: Float32Array;
  after: Float32Array;
  cols: number;
}

/**
 * A backend's tokens (`got`) for rows × cols logits, each drawn over its first n ids with `knobs`,
 * against drawToken (drawResidual for rows that exclude a draft; drawDistribution and drawResidualOf
 * for rows with a distRow of `dists`): each differing draw must be a boundary case (boundaryDistance ≤
 * BOUNDARY_REL); returns them, described, for the caller to count. With `gotProbs` (the backend's p of
 * each row's excluded draft, or of a distribution row's token) those are held to the host's bit for
 * bit, bar the other float32 rounding of a quotient that lies within the host's own rounding of its
 * total ((count + 4) · 2^-52 relative) of the midpoint, also returned (each checked to be one); so are
 * the distributions the rows wrote (first n values of their row of dists.after; the rest untouched).
 */
export function differingDraws(x: Float32Array, cols: number, n: number, knobs: readonly GpuSamplingRow[], got: Int32Array, where: string, gotProbs?: Float32Array, dists?: DistRows): string[] {
  const out: string[] = [];
  const distRow = (d: Float32Array, k: GpuSamplingRow) => d.subarray(k.distRow! * dists!.cols, (k.distRow! + 1) * dists!.cols);
  const rounding = (what: string, quotient: number, want: number, gotValue: number, count: number) => {
    assert.ok(otherRounding(quotient, want, gotValue, (count + 4) * 2 ** -52), `${what}: not a rounding of w / total ${quotient}`);
    out.push(`${what} (w / total = ${quotient}, at a float32 rounding boundary)`);
  };
  knobs.forEach((k, r) => {
    const row = x.subarray(r * cols, r * cols + n);
    const keeps = k.distRow !== undefined && k.exclude === undefined;
    const q = k.distRow === undefined ? undefined : keeps ? new Float32Array(n) : distRow(dists!.before, k);
    const { token: want, excludedProb } = drawSamplingRow(row, k, q);
    const what = `${where} row ${r}: ${JSON.stringify(k)}`;
    if (keeps) {
      // The distribution written: the host's p bit for bit (bar roundings at a boundary); past n untouched.
      const written = distRow(dists!.after, k);
      const { count } = samplingSupport(row, k);
      for (let y = 0; y < n; y++) {
        if (!Object.is(written[y], q![y])) rounding(`${what}: q(${y}) ${written[y]}, the host's ${q![y]}`, quotientOf(row, k, y), q![y], written[y], count);
      }
      assert.deepEqual([...written.subarray(n)], [...distRow(dists!.before, k).subarray(n)], `${what}: ids past n were written`);
    }
    // p(token) is compared only where the tokens agree (a boundary case may draw another token).
    if (gotProbs && !Object.is(gotProbs[r], excludedProb) && (!keeps || got[r] === want)) {
      const asked = keeps ? want : k.exclude;
      const message = `${what}: p(${asked}) ${gotProbs[r]}, the host's ${excludedProb}`;
      assert.ok(asked !== undefined, `${message}: a row without a probability to return`);
      rounding(message, quotientOf(row, k, asked), excludedProb, gotProbs[r], samplingSupport(row, k).count);
    }
    if (got[r] === want) return;
    const message = `${what}: got ${got[r]}, the host draws ${want}`;
    const d = boundaryDistance(row, k, got[r], want, q);
    assert.ok(d <= BOUNDARY_REL, `${message}; u × total is ${d.toExponential(2)} of the total from a boundary between them`);
    out.push(`${message} (${d.toExponential(2)} of the total from a boundary)`);
  });
  return out;
}

/** One sampleRows call's rows: their knobs, and (rows with distRow) the dist tensor's rows as given. */
export interface DrawCase {
  knobs: GpuSamplingRow[];
  dist?: Float32Array;
  distRows?: number;
}

/** A case's knobs and dist from either a plain list of knobs or a DrawCase. */
export function drawCase(c: GpuSamplingRow[] | DrawCase): DrawCase {
  return Array.isArray(c) ? { knobs: c } : c;
}

/**
 * A call's worth of rows with distributions, as a draft model's passes and the verification of its
 * drafts make them, mixed with plain and residual rows: each of `rows` rows of x (cols values, ids
 * 0..n-1 sampled) either keeps its distribution (a sampled draft: a distRow of its own), verifies a
 * draft x against a distribution q (x drawn from q as a draft would be; q a draft's distribution over
 * other logits, or the row's own p — nothing left in the residual: the fallback to p — or p at another
 * temperature), excludes a deterministic draft, or is plain. `dist` holds the q rows first (values
 * past n are a sentinel the backend must leave alone), then the rows drafts write.
 */
export function distributionRows(inputs: SamplingInputs, rng: Rng, x: Float32Array, rows: number, cols: number, n: number): Required<DrawCase> {
  const knobs: GpuSamplingRow[] = [];
  const qs: Float32Array[] = [];
  const keeps: number[] = [];
  for (let r = 0; r < rows; r++) {
    const row = x.subarray(r * cols, r * cols + n);
    const k = inputs.row(false);
    const c = rng.next();
    if (c < 0.35) {
      keeps.push(r);
      knobs.push(k);
    } else if (c < 0.8) {
      const kind = rng.next();
      let q: Float32Array;
      if (kind < 0.2) q = drawDistribution(row, k, 0).probs; // p itself: the residual is empty
      else if (kind < 0.45) q = drawDistribution(row, { ...k, temperature: k.temperature * (0.7 + 0.6 * rng.next()) }, 0).probs;
      else q = drawDistribution(inputs.logits(n, false), inputs.knobs(false), 0).probs;
      const padded = new Float32Array(cols).fill(-7);
      padded.set(q);
      // Mostly a draft drawn from q, as a draft model's is; else any draft (one q gives 0 included).
      knobs.push({ ...k, exclude: rng.next() < 0.85 ? drawFrom(q, rng.next()) : inputs.draft(row, n, cols, k), distRow: qs.length });
      qs.push(padded);
    } else if (c < 0.9) {
      knobs.push({ ...k, exclude: inputs.draft(row, n, cols, k) });
    } else {
      knobs.push(k);
    }
  }
  const distRows = qs.length + keeps.length;
  const dist = new Float32Array(Math.max(1, distRows) * cols).fill(-7);
  qs.forEach((q, i) => dist.set(q, i * cols));
  keeps.forEach((r, i) => (knobs[r] = { ...knobs[r], distRow: qs.length + i }));
  return { knobs, dist, distRows: Math.max(1, distRows) };
}
