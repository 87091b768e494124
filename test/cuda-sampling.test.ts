// Sampling on the GPU (kernels/sampling.cu sample_rows through CudaBackend.sampleRows) against the
// host sampler (drawToken, engine/sampler.ts) given the same uniform u: the same token for every
// draw over fresh random logits (vocabularies of 31 to 128256 ids, padded ones, ties, -inf masks,
// NaN, +inf, very large logits) and random knobs, bar draws whose u × total lies within 1e-9 of the
// total from a boundary of the host's cumulative weights (where the host's own f64 rounding decides;
// they must be rare and each is checked to be one); the edge cases; frequencies of many draws of one
// row against its probabilities; rows that exclude a speculative draft (residual mode) against
// drawResidual, their p(draft) bit for bit bar the other float32 rounding of a quotient within the
// host's own rounding of its total; rows that keep a sampled draft's distribution or verify a draft
// against one (drawDistribution, drawResidualOf; the distributions written compared the same way);
// and the forward's sampleRows option, recorded and replayed as a
// CUDA graph with a new u each step. Without a GPU the suite skips with the reason; the same checks
// of the reference run on the CPU in test/sample-rows.test.ts and test/spec-sampled-verify.test.ts.

import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, it } from 'node:test';
import type { GpuSamplingRow } from '../src/backend/backend.js';
import { ALL_MASKED, drawSamplingRow, drawToken, GREEDY_TEMPERATURE_EPS, samplingSupport } from '../src/engine/sampler.js';
import { SAMPLE_MAX_VOCAB } from '../src/backend/cuda/sampling.js';
import { loadLlama } from './support/run-model.js';
import { openTestGpu, testRandom } from './support/cuda.js';
import { differingDraws, distributionRows, drawCase, forwardAll, MAX_EXCEPTIONS_PER_DRAW, SamplingInputs, type DrawCase } from './support/sampling.js';
import { TINY_LLAMA, writeTinyCheckpoint } from './support/tiny-checkpoint.js';

const { gpu, skipReason } = await openTestGpu();
const { seed: SEED, rng } = testRandom();
const inputs = new SamplingInputs(rng);

describe('sampling on the GPU (CUDA sampleRows)', { skip: skipReason }, () => {
  const g = gpu!;

  /** The GPU's tokens for rows × cols logits over the first n ids, on poisoned free memory. */
  async function sampleOnGpu(x: Float32Array, rows: number, cols: number, n: number, knobs: GpuSamplingRow[]): Promise<Int32Array> {
    await nextTurn(); // the last call's buffers back in the pool, so poisoning reaches them
    g.poisonFreeMemory();
    return g.sampleRows(g.fromHost(x, [rows, cols]), n, knobs);
  }

  /** sampleOnGpu, with p of each row's excluded draft. */
  async function sampleWithProbs(x: Float32Array, rows: number, cols: number, n: number, knobs: GpuSamplingRow[]): Promise<{ ids: Int32Array; probs: Float32Array }> {
    await nextTurn();
    g.poisonFreeMemory();
    const probs = new Float32Array(rows).fill(Number.NaN);
    const ids = g.sampleRows(g.fromHost(x, [rows, cols]), n, knobs, probs);
    return { ids, probs };
  }

  /** Random knobs for each row of x, most rows excluding a draft as a verification window's rows do. */
  function residualKnobs(x: Float32Array, rows: number, cols: number, n: number): GpuSamplingRow[] {
    return Array.from({ length: rows }, (_, r) => {
      const k = inputs.row();
      return rng.next() < 0.8 ? { ...k, exclude: inputs.draft(x.subarray(r * cols, (r + 1) * cols), n, cols, k) } : k;
    });
  }

  /**
   * Draws over fresh random logits for each [rows, cols, n (the ids sampled over), calls] shape, each
   * row with the knobs `caseFor` gives (and the distributions its rows read or write); with
   * `withProbs` rows may exclude a draft and p(draft) is compared too, as are the distributions
   * written. At most MAX_EXCEPTIONS_PER_DRAW of the draws may differ (see differingDraws).
   */
  async function checkDraws(
    shapes: Array<[number, number, number, number]>,
    caseFor: (x: Float32Array, rows: number, cols: number, n: number) => GpuSamplingRow[] | DrawCase,
    withProbs: boolean,
  ): Promise<void> {
    let draws = 0;
    const exceptions: string[] = [];
    for (const [rows, cols, n, calls] of shapes) {
      for (let call = 0; call < calls; call++) {
        const x = new Float32Array(rows * cols);
        for (let r = 0; r < rows; r++) x.set(inputs.logits(cols, false), r * cols);
        const { knobs, dist, distRows } = drawCase(caseFor(x, rows, cols, n));
        const what = `[${rows}, ${cols}] n ${n} call ${call} (seed ${SEED})`;
        if (dist) {
          await nextTurn();
          g.poisonFreeMemory();
          const distT = g.fromHost(dist, [distRows!, cols]);
          const probs = new Float32Array(rows).fill(Number.NaN);
          const ids = g.sampleRows(g.fromHost(x, [rows, cols]), n, knobs, probs, distT);
          exceptions.push(...differingDraws(x, cols, n, knobs, ids, what, probs, { before: dist, after: g.toHost(distT), cols }));
        } else {
          const { ids, probs } = withProbs ? await sampleWithProbs(x, rows, cols, n, knobs) : { ids: await sampleOnGpu(x, rows, cols, n, knobs), probs: undefined };
          exceptions.push(...differingDraws(x, cols, n, knobs, ids, what, probs));
        }
        draws += rows;
      }
    }
    assert.ok(exceptions.length <= Math.max(1, draws * MAX_EXCEPTIONS_PER_DRAW), `${exceptions.length} of ${draws} draws differ:\n${exceptions.join('\n')} (seed ${SEED})`);
  }

  it('draws the host sampler’s token for every draw: vocabularies of 31 to 128256 ids, padded ones, ties, masks, NaN, +inf, large logits', async () => {
    // [rows, cols, n (the ids sampled over), calls]
    const shapes: Array<[number, number, number, number]> = [
      [8, 128256, 128256, 12],
      [8, 128256, 128000, 12],
      [1, 128256, 128256, 16],
      [64, 4096, 4096, 40],
      [64, 4099, 4096, 10],
      [32, 32000, 31990, 20],
      [256, 1000, 997, 20],
      [512, 31, 31, 10],
    ];
    await checkDraws(shapes, (_, rows) => Array.from({ length: rows }, () => inputs.row()), false);
  });

  it('rows that exclude a draft: drawResidual’s token and p(draft) bit for bit, beside plain rows, vocabularies of 31 to 128256 ids', async () => {
    // [rows, cols, n, calls]
    const shapes: Array<[number, number, number, number]> = [
      [8, 128256, 128256, 8],
      [8, 128256, 128000, 8],
      [64, 4096, 4096, 30],
      [32, 32000, 31990, 12],
      [256, 1000, 997, 12],
      [512, 31, 31, 8],
    ];
    await checkDraws(shapes, residualKnobs, true);
  });

  it('residual edge rows: the draft the only token left, the favourite of a peaked row, filtered out, masked, past n, greedy, u = 0 and just below 1', async () => {
    const V = 5000;
    const cases: Array<Partial<GpuSamplingRow> & { pick: 'top' | 'filtered' | 'past' | 'masked' }> = [
      { topK: 1, pick: 'top' }, { minP: 1, pick: 'top' }, { temperature: 0.01, pick: 'top' }, { temperature: 0.01, topK: 3, pick: 'filtered' },
      { topK: 5, pick: 'filtered' }, { topP: 0.3, pick: 'filtered' }, { pick: 'past' }, { pick: 'masked' }, { temperature: 0, pick: 'top' }, { temperature: 0, pick: 'filtered' },
      { u: 0, pick: 'top' }, { u: 0, pick: 'filtered' }, { u: 1 - 2 ** -53, pick: 'top' }, { u: 1 - 2 ** -53, topP: 0.5, pick: 'filtered' }, { temperature: 1e3, pick: 'top' },
    ];
    for (const { pick, ...c } of cases) {
      for (const inf of [false, true]) {
        const rows = 8;
        const x = new Float32Array(rows * V);
        for (let r = 0; r < rows; r++) x.set(inputs.logits(V, false), r * V);
        if (inf) for (const i of [V + 2, V + 9, 3 * V + 1]) x[i] = Infinity;
        const knobs = Array.from({ length: rows }, (_, r) => {
          const row = x.subarray(r * V, (r + 1) * V);
          let exclude = 0;
          for (let i = 0; i < V; i++) if (row[i] > row[exclude]) exclude = i;
          if (pick === 'filtered') exclude = (exclude + 1 + inputs.int(V - 1)) % V;
          if (pick === 'past') exclude = V - 1;
          if (pick === 'masked') row[(exclude = 17)] = -Infinity;
          return { ...inputs.row(false), ...c, exclude };
        });
        const n = pick === 'past' ? V - 1 : V;
        const { ids, probs } = await sampleWithProbs(x, rows, V, n, knobs);
        const want = knobs.map((k, r) => drawSamplingRow(x.subarray(r * V, r * V + n), k));
        const what = `${pick} ${JSON.stringify(c)}${inf ? ' with +inf logits' : ''} (seed ${SEED})`;
        // A token may differ only as a boundary case (u just below 1 puts u × total right at the host's
        // rounding of its last boundary, where tail probabilities vanish in its running sum).
        differingDraws(x, V, n, knobs, ids, what);
        assert.deepEqual([...probs], want.map((w) => w.excludedProb), `${what}: p(draft)`);
      }
    }
  });

  it('edge draws: u = 0 and u just below 1, one token left, a tiny top-p, greedy rows, +inf logits', async () => {
    const V = 5000;
    const cases: Array<Partial<GpuSamplingRow>> = [
      { u: 0 }, { u: 1 - 2 ** -53 }, { u: 2 ** -53 },
      { topK: 1 }, { minP: 1 }, { topP: 1e-12 }, { topK: 1, topP: 0.5, u: 0.99 },
      { temperature: 0 }, { temperature: GREEDY_TEMPERATURE_EPS / 2 }, { temperature: GREEDY_TEMPERATURE_EPS },
      { temperature: 1e3 }, { topK: V - 1 }, { topK: V + 5 },
    ];
    for (const c of cases) {
      for (const inf of [false, true]) {
        const rows = 8;
        const x = new Float32Array(rows * V);
        for (let r = 0; r < rows; r++) x.set(inputs.logits(V, false), r * V);
        // Ties at the very top in one row; +inf logits (which alone carry the mass) in the other variant.
        x[3] = x[17] = x[4000] = 30;
        if (inf) for (const i of [V + 2, V + 9, V + 4999, 3 * V + 1]) x[i] = Infinity;
        const knobs = Array.from({ length: rows }, () => ({ ...inputs.row(false), ...c }));
        const got = await sampleOnGpu(x, rows, V, V, knobs);
        const want = knobs.map((k, r) => drawToken(x.subarray(r * V, (r + 1) * V), k, k.u));
        assert.deepEqual([...got], want, `${JSON.stringify(c)}${inf ? ' with +inf logits' : ''} (seed ${SEED})`);
      }
    }
  });

  it('throws the sampler’s error for a row with nothing left, and refuses bad arguments', async () => {
    const rows = 3, V = 1000;
    const x = new Float32Array(rows * V);
    for (let r = 0; r < rows; r++) x.set(inputs.logits(V, false), r * V);
    x.fill(-Infinity, V, 2 * V);
    x[V + 5] = Number.NaN;
    for (const temperature of [0, 0.7]) {
      const knobs = Array.from({ length: rows }, () => ({ ...inputs.row(false), temperature }));
      await assert.rejects(sampleOnGpu(x, rows, V, V, knobs), { message: ALL_MASKED });
    }
    const t = g.fromHost(x, [rows, V]);
    const ok = { temperature: 1, topK: 0, topP: 1, minP: 0, u: 0.5 };
    assert.throws(() => g.sampleRows(t, V, [ok, ok]), /2 sampling rows for 3 logit rows/);
    assert.throws(() => g.sampleRows(t, V + 1, [ok, ok, ok]), /n must be in 1\.\.1000/);
    assert.throws(() => g.sampleRows(t, V, [ok, ok, { ...ok, u: 1 }]), /row 2: u must be in \[0, 1\)/);
    assert.throws(() => g.sampleRows(t, V, [ok, ok, { ...ok, exclude: -1 }]), /row 2: exclude must be a token id/);
    assert.throws(() => g.sampleRows(t, V, [ok, ok, ok], new Float32Array(2)), /excludedProbs has 2 values for 3 logit rows/);
    const long = g.fromHost(new Float32Array(SAMPLE_MAX_VOCAB + 1).fill(1), [1, SAMPLE_MAX_VOCAB + 1]);
    assert.throws(() => g.sampleRows(long, SAMPLE_MAX_VOCAB + 1, [ok]), /CUDA samples rows of up to 524288 ids/);
  });

  it('draws follow the distribution: 40,000 draws of one row against its probabilities (chi-square)', async () => {
    const V = 1000, rows = 4000, calls = 10;
    const row = inputs.logits(V, false);
    const knobs = { temperature: 0.8, topK: 50, topP: 0.9, minP: 0.01 };
    const { ids, weights, count, total } = samplingSupport(row, knobs);
    const x = new Float32Array(rows * V);
    for (let r = 0; r < rows; r++) x.set(row, r * V);
    const seen = new Map<number, number>();
    for (let call = 0; call < calls; call++) {
      const got = await sampleOnGpu(x, rows, V, V, Array.from({ length: rows }, () => ({ ...knobs, u: rng.next() })));
      for (const id of got) seen.set(id, (seen.get(id) ?? 0) + 1);
    }
    const N = rows * calls;
    const support = new Set(ids.subarray(0, count));
    for (const id of seen.keys()) assert.ok(support.has(id), `token ${id} was drawn but the knobs leave it out (seed ${SEED})`);
    // Chi-square over the support, tokens expected fewer than 5 times pooled into one cell.
    let chi = 0, cells = 0, pooledExpected = 0, pooledSeen = 0;
    for (const id of support) {
      const expected = (N * weights[id]) / total;
      const observed = seen.get(id) ?? 0;
      if (expected < 5) {
        pooledExpected += expected;
        pooledSeen += observed;
        continue;
      }
      chi += (observed - expected) ** 2 / expected;
      cells++;
    }
    if (pooledExpected > 0) {
      chi += (pooledSeen - pooledExpected) ** 2 / pooledExpected;
      cells++;
    }
    const df = Math.max(1, cells - 1);
    // About six standard deviations above the mean: a real bias fails it, chance (almost) never.
    const bound = df + 6 * Math.sqrt(2 * df);
    assert.ok(chi <= bound, `chi-square ${chi.toFixed(1)} over ${df} degrees of freedom, bound ${bound.toFixed(1)} (seed ${SEED})`);
  });

  it('sampled drafts’ distributions: rows that keep theirs (drawDistribution) and rows that verify a draft against one (drawResidualOf), beside plain and residual rows, vocabularies of 31 to 128256 ids', async () => {
    // [rows, cols, n, calls]
    const shapes: Array<[number, number, number, number]> = [
      [8, 128256, 128256, 2],
      [4, 128256, 128000, 2],
      [64, 4096, 4090, 3],
      [512, 31, 31, 3],
      [256, 1000, 999, 3],
    ];
    await checkDraws(shapes, (x, rows, cols, n) => distributionRows(inputs, rng, x, rows, cols, n), true);
  });

  it("the forward's sampleRows option draws drawToken's tokens, also replayed as a CUDA graph with a new u each step", () => {
    const model = loadLlama(writeTinyCheckpoint(TINY_LLAMA), g);
    const V = model.config.vocabSize;
    const prompts = [[1, 2, 3, 4, 5], [9, 8, 7]]; // 8 tokens: a step the graphs record
    const sync = g.driver.syncEveryLaunch;
    g.driver.syncEveryLaunch = false; // graphs record only when launches are not synchronised one by one
    try {
      const { logits } = forwardAll(model, prompts);
      const rows = logits.length / V;
      const replaysBefore = g.graphs.stats.replays;
      for (const n of [V, V - 5]) {
        for (let step = 0; step < 6; step++) {
          const knobs = Array.from({ length: rows }, () => inputs.row());
          const { sampled } = forwardAll(model, prompts, { sampleRows: { vocab: n, rows: knobs } });
          const want = knobs.map((k, r) => drawToken(logits.subarray(r * V, r * V + n), k, k.u));
          assert.deepEqual([...sampled!], want, `n ${n} step ${step}: ${JSON.stringify(knobs)} (seed ${SEED})`);
        }
        // Verification rows (residual mode) in the same recorded step: p(draft) comes back too.
        for (let step = 0; step < 6; step++) {
          const knobs = residualKnobs(logits, rows, V, n);
          const { sampled, excludedProbs } = forwardAll(model, prompts, { sampleRows: { vocab: n, rows: knobs } });
          const want = knobs.map((k, r) => drawSamplingRow(logits.subarray(r * V, r * V + n), k));
          assert.deepEqual([...sampled!], want.map((w) => w.token), `residual rows, n ${n} step ${step}: ${JSON.stringify(knobs)} (seed ${SEED})`);
          assert.deepEqual([...excludedProbs!], want.map((w) => w.excludedProb), `residual rows, n ${n} step ${step}: p(draft) (seed ${SEED})`);
        }
        // Rows with draft distributions (a draft model's passes, their verification) in the same step.
        for (let step = 0; step < 4; step++) {
          const { knobs, dist, distRows } = distributionRows(inputs, rng, logits, rows, V, n);
          const distT = g.fromHost(dist, [distRows, V]);
          const { sampled, excludedProbs } = forwardAll(model, prompts, { sampleRows: { vocab: n, rows: knobs, dist: distT } });
          const what = `distribution rows, n ${n} step ${step}: ${JSON.stringify(knobs)} (seed ${SEED})`;
          assert.deepEqual(differingDraws(logits, V, n, knobs, sampled!, what, excludedProbs, { before: dist, after: g.toHost(distT), cols: V }), [], what);
          g.release(distT);
        }
      }
      if (g.graphs.enabled) assert.ok(g.graphs.stats.replays > replaysBefore, 'the sampled steps were replayed from a graph');
    } finally {
      g.driver.syncEveryLaunch = sync;
    }
  });
});
