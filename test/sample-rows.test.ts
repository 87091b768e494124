// The reference every backend's sampleRows is held to, on the CPU: drawToken (engine/sampler.ts) is
// what Sampler.sample draws for requests without penalties, token for token and at the same position
// of the random stream; the CPU backend's sampleRows and the forward's sampleRows option (through the
// backend's op, and on the host for a backend without one) give drawToken's tokens, and for rows that
// exclude a speculative draft drawResidual's token and p of the draft; bad arguments are refused with
// the problem named. Fresh random inputs each run (TACHYON_TEST_SEED replays one).
// test/spec-sampled-verify.test.ts holds drawResidual to verifyDrafts.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkSamplingRows, type Backend } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { Rng } from '../src/engine/rng.js';
import { ALL_MASKED, applyPenaltiesFromCounts, applyPenaltyRow, drawSamplingRow, drawToken, GREEDY_TEMPERATURE_EPS, penaltyRow, Sampler, TokenCounts } from '../src/engine/sampler.js';
import { resolveSamplingParams } from '../src/engine/sampling-params.js';
import { loadLlama } from './support/run-model.js';
import { TINY_LLAMA, writeTinyCheckpoint } from './support/tiny-checkpoint.js';
import { testRandom } from './support/cuda.js';
import { forwardAll, SamplingInputs } from './support/sampling.js';

const { seed: SEED, rng } = testRandom();
const none = new TokenCounts();
const inputs = new SamplingInputs(rng);
const pick = <T>(xs: readonly T[]): T => inputs.pick(xs);
const randomLogits = (n: number) => inputs.logits(n);
const randomRow = () => inputs.knobs();

/** The token, or the error's message. */
function outcome(f: () => number): number | string {
  try {
    return f();
  } catch (err) {
    return (err as Error).message;
  }
}

describe('drawToken is Sampler.sample without penalties', () => {
  it('the same token for random logits, knobs and seeds, and the random stream at the same place', () => {
    for (let c = 0; c < 300; c++) {
      const V = pick([1, 2, 7, 100, 1000, 5000]);
      const knobs = randomRow();
      const seed = inputs.int(2 ** 31);
      const sampler = new Sampler(resolveSamplingParams({ ...knobs, seed }), V);
      const twin = new Rng(seed);
      for (let step = 0; step < 4; step++) {
        const logits = randomLogits(V);
        const want = outcome(() => sampler.sample(logits, none));
        // A random draw takes one number from the stream; greedy and a failed call take none.
        const u = typeof want === 'number' && knobs.temperature >= GREEDY_TEMPERATURE_EPS ? twin.next() : 0;
        const got = outcome(() => drawToken(logits, knobs, u));
        assert.equal(got, want, `case ${c} step ${step}: V ${V}, ${JSON.stringify(knobs)}, u ${u} (seed ${SEED})`);
      }
      assert.equal(sampler.rng.next(), twin.next(), `case ${c}: the stream moved on as drawToken's caller's did (seed ${SEED})`);
    }
  });

  it('throws the sampler error when every logit is -inf or NaN, greedy or not', () => {
    const x = Float32Array.from([-Infinity, Number.NaN, -Infinity]);
    for (const temperature of [0, 1]) assert.throws(() => drawToken(x, { temperature, topK: 0, topP: 1, minP: 0 }, 0.5), { message: ALL_MASKED });
  });

  it('u picks by cumulative weight in id order: u = 0 the first survivor, u just below 1 the last', () => {
    const x = Float32Array.from([0, -Infinity, 1, 2, Number.NaN, 0.5]);
    const p = { temperature: 1, topK: 0, topP: 1, minP: 0 };
    assert.equal(drawToken(x, p, 0), 0);
    assert.equal(drawToken(x, p, 1 - 2 ** -53), 5);
    // With top-k 2 only ids 2 and 3 survive; ids in ascending order along the CDF.
    assert.equal(drawToken(x, { ...p, topK: 2 }, 0), 2);
    assert.equal(drawToken(x, { ...p, topK: 2 }, 0.99), 3);
  });
});

/** Rows × cols logits, each row random; a padded vocabulary is modelled by n < cols. */
function randomBatch(rows: number, cols: number): Float32Array {
  const x = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) x.set(randomLogits(cols), r * cols);
  return x;
}

describe('CpuBackend.sampleRows', () => {
  const cpu = new CpuBackend();

  it('is drawToken over each row’s first n ids', () => {
    for (const [rows, cols] of [[1, 1000], [5, 257], [8, 4096], [3, 1]] as const) {
      for (const n of [cols, Math.max(1, cols - 7)]) {
        const x = randomBatch(rows, cols);
        // No row without a token here (that case throws; below).
        for (let r = 0; r < rows; r++) x[r * cols] = 1;
        const knobs = Array.from({ length: rows }, () => ({ ...randomRow(), u: rng.next() }));
        const got = cpu.sampleRows(cpu.fromHost(x, [rows, cols]), n, knobs);
        const want = knobs.map((k, r) => drawToken(x.subarray(r * cols, r * cols + n), k, k.u));
        assert.deepEqual([...got], want, `[${rows}, ${cols}], n ${n} (seed ${SEED})`);
      }
    }
  });

  it('rows that exclude a draft: drawResidual’s token and p(draft), beside plain rows', () => {
    for (const [rows, cols] of [[1, 1000], [7, 257], [8, 4096]] as const) {
      for (const n of [cols, cols - 7]) {
        const x = randomBatch(rows, cols);
        for (let r = 0; r < rows; r++) x[r * cols] = 1;
        const knobs = Array.from({ length: rows }, (_, r) => {
          const k = { ...randomRow(), u: rng.next() };
          return r % 3 === 2 ? k : { ...k, exclude: inputs.draft(x.subarray(r * cols, (r + 1) * cols), n, cols, k) };
        });
        const probs = new Float32Array(rows).fill(Number.NaN);
        const got = cpu.sampleRows(cpu.fromHost(x, [rows, cols]), n, knobs, probs);
        const want = knobs.map((k, r) => drawSamplingRow(x.subarray(r * cols, r * cols + n), k));
        assert.deepEqual([...got], want.map((w) => w.token), `[${rows}, ${cols}], n ${n} (seed ${SEED})`);
        assert.deepEqual([...probs], want.map((w) => w.excludedProb), `[${rows}, ${cols}], n ${n}: p(draft) (seed ${SEED})`);
      }
    }
  });

  it('throws the sampler error for a row with nothing left', () => {
    const x = Float32Array.from([1, 2, 3, -Infinity, -Infinity, Number.NaN]);
    const row = { temperature: 1, topK: 0, topP: 1, minP: 0, u: 0.5 };
    assert.throws(() => cpu.sampleRows(cpu.fromHost(x, [2, 3]), 3, [row, row]), { message: ALL_MASKED });
  });

  it('refuses bad arguments, naming them', () => {
    const x = cpu.fromHost(Float32Array.from([1, 2, 3, 4]), [2, 2]);
    const ok = { temperature: 1, topK: 0, topP: 1, minP: 0, u: 0.5 };
    assert.throws(() => cpu.sampleRows(x, 2, [ok]), /1 sampling rows for 2 logit rows/);
    assert.throws(() => cpu.sampleRows(x, 3, [ok, ok]), /n must be in 1\.\.2, got 3/);
    assert.throws(() => cpu.sampleRows(x, 0, [ok, ok]), /n must be in 1\.\.2, got 0/);
    for (const [bad, message] of [
      [{ u: 1 }, /row 1: u must be in \[0, 1\), got 1/],
      [{ u: -0.1 }, /row 1: u must be in/],
      [{ topP: 0 }, /row 1: topP must be in \(0, 1\], got 0/],
      [{ minP: 1.5 }, /row 1: minP must be in \[0, 1\]/],
      [{ topK: 2.5 }, /row 1: topK must be an integer >= -1/],
      [{ temperature: Number.NaN }, /row 1: temperature must be finite/],
    ] as const) {
      assert.throws(() => cpu.sampleRows(x, 2, [ok, { ...ok, ...bad }]), message);
    }
    assert.doesNotThrow(() => checkSamplingRows(0, 5, 5, []));
  });
});

// ---- the forward's sampleRows option ----

const checkpoint = writeTinyCheckpoint(TINY_LLAMA);

/** The forward's sampled tokens against drawToken over its logits, over all and over the first third of the ids. */
function checkForward(backend: Backend): void {
  const model = loadLlama(checkpoint, backend);
  const V = model.config.vocabSize;
  const prompts = [[1, 2, 3, 4, 5], [9, 8, 7], [33]];
  const { logits } = forwardAll(model, prompts);
  const rows = logits.length / V;
  for (const n of [V, Math.floor(V / 3)]) {
    for (let trial = 0; trial < 5; trial++) {
      const knobs = Array.from({ length: rows }, () => ({ ...randomRow(), u: rng.next() }));
      const { sampled, logits: none } = forwardAll(model, prompts, { sampleRows: { vocab: n, rows: knobs } });
      assert.equal(none.length, 0, 'no logits come back');
      const want = knobs.map((k, r) => drawToken(logits.subarray(r * V, r * V + n), k, k.u));
      assert.deepEqual([...sampled!], want, `over the first ${n} of ${V} ids, ${JSON.stringify(knobs)} (seed ${SEED})`);
    }
    // Verification rows: most exclude a draft, and p of each comes back too.
    for (let trial = 0; trial < 5; trial++) {
      const knobs = Array.from({ length: rows }, (_, r) => {
        const k = { ...randomRow(), u: rng.next() };
        return r % 4 === 3 ? k : { ...k, exclude: inputs.draft(logits.subarray(r * V, (r + 1) * V), n, V, k) };
      });
      const { sampled, excludedProbs } = forwardAll(model, prompts, { sampleRows: { vocab: n, rows: knobs } });
      const want = knobs.map((k, r) => drawSamplingRow(logits.subarray(r * V, r * V + n), k));
      assert.deepEqual([...sampled!], want.map((w) => w.token), `residual rows over the first ${n} of ${V} ids (seed ${SEED})`);
      assert.deepEqual([...excludedProbs!], want.map((w) => w.excludedProb), `p(draft) over the first ${n} of ${V} ids (seed ${SEED})`);
    }
  }
}

describe('penalties as a backend applies them (PenaltyRow)', () => {
  it('penaltyRow + applyPenaltyRow change the logits bit for bit as applyPenaltiesFromCounts, and CpuBackend.applyPenalties leaves x alone', () => {
    const rng = new Rng(SEED);
    const V = 500;
    for (let trial = 0; trial < 20; trial++) {
      const logits = Float32Array.from({ length: V }, () => 20 * (rng.next() - 0.5));
      // Prompt and output ids, some repeated, some past the vocabulary (ignored), and knobs of either sign.
      const ids = (n: number) => Array.from({ length: n }, () => Math.floor(rng.next() * (V + 20)));
      const counts = new TokenCounts(ids(30), ids(40));
      const params = resolveSamplingParams({ repetitionPenalty: 0.5 + 1.5 * rng.next(), frequencyPenalty: 2 * rng.next() - 1, presencePenalty: 2 * rng.next() - 1 });
      const want = logits.slice();
      applyPenaltiesFromCounts(want, counts, params);
      const row = penaltyRow(counts, params)!;
      const got = logits.slice();
      applyPenaltyRow(got, row);
      assert.deepEqual(new Uint32Array(got.buffer), new Uint32Array(want.buffer), `trial ${trial}`);
      const be = new CpuBackend();
      const x = be.fromHost(new Float32Array([...logits, ...logits]), [2, V]);
      const y = be.toHost(be.applyPenalties(x, [row, undefined]));
      assert.deepEqual(y.subarray(0, V), want);
      assert.deepEqual(y.subarray(V), logits, 'a row without penalties is copied as it is');
      assert.deepEqual(be.toHost(x).subarray(0, V), logits, 'x keeps its raw logits');
    }
    assert.equal(penaltyRow(new TokenCounts([1, 2], [3]), resolveSamplingParams({})), undefined, 'no penalties: no row');
    assert.equal(penaltyRow(new TokenCounts(), resolveSamplingParams({ repetitionPenalty: 1.2 })), undefined, 'nothing seen: no row');
  });
});

describe("the forward's sampleRows option (CPU)", () => {
  it('draws drawToken’s tokens through the backend’s sampleRows', () => checkForward(new CpuBackend()));

  it('draws them on the host for a backend without sampleRows', () => {
    const bare = new CpuBackend();
    Object.assign(bare, { sampleRows: undefined });
    checkForward(bare);
  });

  it('is refused together with argmaxOnly', () => {
    const model = loadLlama(checkpoint, new CpuBackend());
    const row = { temperature: 1, topK: 0, topP: 1, minP: 0, u: 0.5 };
    assert.throws(() => forwardAll(model, [[1, 2]], { argmaxOnly: { vocab: 10 }, sampleRows: { vocab: 10, rows: [row, row] } }), /argmaxOnly and sampleRows cannot both/);
  });
});

describe('the engine draws sampled tokens through sampleRows', () => {
  it('takes the path for every request outside a verified window, with the tokens and logprobs the logits path gives', async () => {
    const { LLM } = await import('../src/llm.js');
    const llm = await LLM.load({ device: 'cpu' });
    try {
      const model = llm.loaded.model;
      const forward = model.forward.bind(model);
      let sampleRowSteps = 0;
      let logitSteps = 0;
      model.forward = (batch, kv, opts = {}) => {
        if (opts.sampleRows) sampleRowSteps++;
        else if (!opts.argmaxOnly && batch.logitRows.length > 0) logitSteps++;
        return forward(batch, kv, opts);
      };
      const params = { maxTokens: 24, temperature: 0.9, topP: 0.92, topK: 40, minP: 0.02, seed: SEED % 100_000, ignoreEos: true };
      // The same request twice through sampleRows (logprobs computed after the draw, from the logits
      // on this backend: it has no logprobRows), then through the engine's logits path.
      const drawn = await llm.complete('The robot', params, { logprobs: 3 });
      const steps = sampleRowSteps;
      const viaLogits = await throughLogits(llm, () => llm.complete('The robot', params, { logprobs: 3 }));
      assert.equal(steps, 24, 'every sampled token of the first request came from sampleRows');
      assert.ok(logitSteps >= 24, 'the second request read the logits');
      assert.deepEqual(drawn.tokenIds, viaLogits.tokenIds, `seed ${SEED}`);
      assert.deepEqual(drawn.logprobs, viaLogits.logprobs, `seed ${SEED}: logprobs`);
      assert.equal(drawn.logprobs?.length, 24);
      // Penalised requests draw on the backend too (their logits penalised there first), with the
      // logits path's tokens; a greedy request in the same batch is still right.
      sampleRowSteps = 0;
      const penalties = { repetitionPenalty: 1.3, frequencyPenalty: 0.4, presencePenalty: 0.3 };
      const both = () =>
        Promise.all([
          llm.complete('Once upon a time', { ...params, ...penalties }),
          llm.complete('Once upon a time', { ...params, temperature: 0, ...penalties, seed: undefined }),
          llm.complete('Once upon a time', { maxTokens: 24, temperature: 0, ignoreEos: true }),
        ]);
      const [penalised, penalisedGreedy, greedy] = await both();
      assert.equal(penalised.tokenIds.length, 24);
      assert.ok(sampleRowSteps >= 24, `penalised requests sampled on the backend (${sampleRowSteps} steps)`);
      const [penalisedLogits, penalisedGreedyLogits] = await throughLogits(llm, both);
      assert.deepEqual(penalised.tokenIds, penalisedLogits.tokenIds, `seed ${SEED}: penalised, sampled`);
      assert.deepEqual(penalisedGreedy.tokenIds, penalisedGreedyLogits.tokenIds, 'penalised, greedy');
      const greedyAlone = await llm.complete('Once upon a time', { maxTokens: 24, temperature: 0, ignoreEos: true });
      assert.deepEqual(greedy.tokenIds, greedyAlone.tokenIds);
    } finally {
      await llm.close();
    }
  });
});

/** `run` with the engine's backend draws turned off, so every sampled token comes from the logits on the host. */
async function throughLogits<T>(llm: import('../src/llm.js').LLM, run: () => Promise<T>): Promise<T> {
  const engine = llm.engine as unknown as { sampleRowsOf: (planned: unknown) => unknown };
  const own = Object.getOwnPropertyDescriptor(engine, 'sampleRowsOf');
  engine.sampleRowsOf = () => undefined;
  try {
    return await run();
  } finally {
    if (own) Object.defineProperty(engine, 'sampleRowsOf', own);
    else delete (engine as { sampleRowsOf?: unknown }).sampleRowsOf;
  }
}
