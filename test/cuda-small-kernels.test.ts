// The decode step's small kernels on CUDA: the vector RMSNorm kernels (a warp or a block per row,
// 16-byte loads) and the fused RoPE + KV write. Norms against the CPU (≤ 1e-6 relative) and
// independent of how many rows share a launch (bitwise); ropeWriteKv bitwise equal to rope, rope,
// writeKv on CUDA (q, k and both caches) and within 1e-6 of the CPU, on fresh random inputs with free
// memory poisoned; the default model's logits the same with and without the fused op. Without a GPU
// the CUDA suites skip with the reason; the CPU suite checks the fallback helper and the forward.

import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { KV_DTYPE_BYTES, ropeWriteKv, type Backend, type KvCacheStorage, type KvDtype, type RopeRows, type Tensor } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { normKernel, prefillNormKernel, type CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { GEMV_MAX_TOKENS } from '../src/engine/kv-budget.js';
import { DEFAULT_MODEL_NAME, embeddedModelDir } from '../src/model/default-model.js';
import { loadLlama, ModelRunner, runSteps } from './support/run-model.js';
import { comparisons, launchesOf, openTestGpu, testRandom } from './support/cuda.js';

const { gpu, skipReason } = await openTestGpu();

const cpu = new CpuBackend();
// Fresh inputs on every run; the seed is in every failure message so a failure can be replayed.
const { seed: SEED, rng, uniform, randInt } = testRandom();
const { assertClose, assertBitwise } = comparisons(SEED);

/** A float32 vector weight of random values on both backends. */
function vectorPair(n: number): { c: ReturnType<CpuBackend['loadDense']>; g: ReturnType<CudaBackend['loadDense']> } {
  const t = { dtype: 'F32', shape: [n], bytes: new Uint8Array(uniform(n, 0.5, 1.5).buffer) };
  return { c: cpu.loadDense('w', t), g: gpu!.loadDense('w', t) };
}

/** One layer's K and V store of a cache, read back (CUDA: device copy; CPU: its arrays). */
/**
 * One layer of a KV cache as stored: float32 values, or a bf16/fp8 cache's bytes held in a
 * Float32Array four at a time (compared bit for bit only).
 */
function cacheLayer(be: Backend, cache: KvCacheStorage, layer: number): { k: Float32Array; v: Float32Array } {
  const s = cache.spec;
  const elems = s.numBlocks * s.blockSize * s.numKvHeads * s.headDim;
  const bytes = elems * KV_DTYPE_BYTES[s.dtype ?? 'float32'];
  if (be instanceof CpuBackend) {
    const c = cache as unknown as { k: ArrayLike<number>[]; v: ArrayLike<number>[] };
    const raw = (x: ArrayLike<number>) => (x instanceof Float32Array ? x.slice() : new Float32Array((x as Uint8Array).slice().buffer));
    return { k: raw(c.k[layer]), v: raw(c.v[layer]) };
  }
  // The CUDA cache keeps all layers in one allocation each: [layer][slot][kvHeads·headDim].
  const c = cache as unknown as { k: number; v: number };
  const k = new Float32Array(bytes / 4);
  const v = new Float32Array(bytes / 4);
  gpu!.driver.download(k, c.k + layer * bytes);
  gpu!.driver.download(v, c.v + layer * bytes);
  return { k, v };
}

describe('the vector norm kernels are chosen from the row length alone (runs everywhere)', () => {
  it('picks warp, block or scalar kernels by cols and alignment', () => {
    assert.deepEqual(normKernel(128, true, [0, 256]), { kind: 'warp', vec: 1 });
    assert.deepEqual(normKernel(256, true, [0]), { kind: 'warp', vec: 2 });
    assert.deepEqual(normKernel(512, true, [0]), { kind: 'warp', vec: 4 });
    assert.deepEqual(normKernel(128, false, [0]), { kind: 'block', vec: 1, threads: 32 });
    assert.deepEqual(normKernel(4096, true, [0]), { kind: 'block', vec: 1, threads: 1024 });
    assert.deepEqual(normKernel(8192, true, [0]), { kind: 'block', vec: 2, threads: 1024 });
    assert.deepEqual(normKernel(5120, false, [0]), { kind: 'block', vec: 2, threads: 640 });
    assert.deepEqual(normKernel(16384, false, [0]), { kind: 'block', vec: 4, threads: 1024 });
    assert.deepEqual(normKernel(16388, false, [0]), { kind: 'scalar' });
    assert.deepEqual(normKernel(4098, true, [0]), { kind: 'scalar' });
    assert.deepEqual(normKernel(4096, true, [0, 8]), { kind: 'scalar' });
    // Prefill-sized steps: 256-thread blocks where a row fits 4 float4s a thread.
    const k4096 = normKernel(4096, true, [0]);
    assert.deepEqual(prefillNormKernel(k4096, GEMV_MAX_TOKENS, 4096), k4096);
    assert.deepEqual(prefillNormKernel(k4096, GEMV_MAX_TOKENS + 1, 4096), { kind: 'block', vec: 4, threads: 256 });
    assert.deepEqual(prefillNormKernel(normKernel(3072, true, [0]), 2048, 3072), { kind: 'block', vec: 3, threads: 256 });
    assert.deepEqual(prefillNormKernel(normKernel(1024, false, [0]), 2048, 1024), { kind: 'block', vec: 1, threads: 256 });
    assert.deepEqual(prefillNormKernel(normKernel(8192, true, [0]), 2048, 8192), { kind: 'block', vec: 2, threads: 1024 });
    assert.deepEqual(prefillNormKernel(normKernel(256, true, [0]), 2048, 256), { kind: 'warp', vec: 2 });
  });
});

describe('CUDA norms: vector kernels against the CPU (≤ 1e-6) and independent of the row count within a step kind', { skip: skipReason }, () => {
  const g = () => gpu!;
  const fresh = async () => {
    await nextTurn();
    g().poisonFreeMemory();
  };

  it('rmsNorm and addRmsNorm at 1, 3, 8 and 2048 rows of 4096 and 8192 (and odd lengths), each row as it is alone', async () => {
    // 4096/8192: Llama hidden sizes (block kernels, 1 and 2 float4s a thread); 5120: 640 threads;
    // 100 and 300: small blocks; 4098: scalar; 20000: over the vector limit, scalar.
    for (const cols of [4096, 8192, 5120, 100, 300, 4098, 20000]) {
      const w = vectorPair(cols);
      for (const T of [1, 3, 8, 2048]) {
        if (T * cols > 2048 * 8192) continue; // keeps the CPU reference quick
        await fresh();
        const x = uniform(T * cols, -2, 2);
        const res = uniform(T * cols, -2, 2);
        const what = `${T} × ${cols}`;
        const ng = g().toHost(g().rmsNorm(g().fromHost(x, [T, cols]), w.g, 1e-5));
        assertClose(ng, cpu.toHost(cpu.rmsNorm(cpu.fromHost(x.slice(), [T, cols]), w.c, 1e-5)), 1e-6, `rmsNorm ${what}`);
        const rg = g().fromHost(res, [T, cols]);
        const rc = cpu.fromHost(res.slice(), [T, cols]);
        const ag = g().toHost(g().addRmsNorm(g().fromHost(x, [T, cols]), rg, w.g, 1e-5));
        assertClose(ag, cpu.toHost(cpu.addRmsNorm(cpu.fromHost(x.slice(), [T, cols]), rc, w.c, 1e-5)), 1e-6, `addRmsNorm ${what}`);
        assertBitwise(g().toHost(rg), cpu.toHost(rc), `addRmsNorm residual ${what}`);
        // The last row gives the same bits in any step of the same kind: alone (decode-sized steps)
        // or after other rows in a step of GEMV_MAX_TOKENS + 1 (prefill-sized: prefillNormKernel).
        const last = (a: Float32Array) => a.slice(a.length - cols);
        const n = T > GEMV_MAX_TOKENS ? GEMV_MAX_TOKENS + 1 : 1;
        const withOthers = (row: Float32Array) => {
          const a = new Float32Array(n * cols);
          a.set(uniform((n - 1) * cols, -2, 2));
          a.set(row, (n - 1) * cols);
          return a;
        };
        const one = last(g().toHost(g().rmsNorm(g().fromHost(withOthers(last(x)), [n, cols]), w.g, 1e-5)));
        assertBitwise(one, last(ng), `rmsNorm ${what}: the last row in a step of ${n}`);
        const oneAdd = last(g().toHost(g().addRmsNorm(g().fromHost(withOthers(last(x)), [n, cols]), g().fromHost(withOthers(last(res)), [n, cols]), w.g, 1e-5)));
        assertBitwise(oneAdd, last(ag), `addRmsNorm ${what}: the last row in a step of ${n}`);
      }
    }
  });

  it('headRmsNorm (a warp per head) at head dims 64, 128, 256, 512 and 96, in place', async () => {
    for (const headDim of [64, 128, 256, 512, 96, 1024]) {
      await fresh();
      const w = vectorPair(headDim);
      const T = 3;
      const heads = 13; // not a multiple of the 8 rows a block
      const x = uniform(T * heads * headDim, -2, 2);
      const xg = g().fromHost(x, [T, heads * headDim]);
      const xc = cpu.fromHost(x.slice(), [T, heads * headDim]);
      g().headRmsNorm(xg, w.g, headDim, 1e-6);
      cpu.headRmsNorm(xc, w.c, headDim, 1e-6);
      assertClose(g().toHost(xg), cpu.toHost(xc), 1e-6, `headRmsNorm headDim ${headDim}`);
    }
  });

  it('launches the kernel normKernel names', async () => {
    await fresh();
    const w4 = vectorPair(4096);
    const w128 = vectorPair(128);
    const x = g().fromHost(uniform(4096, -2, 2), [1, 4096]);
    assert.deepEqual(launchesOf(g(), () => g().rmsNorm(x, w4.g, 1e-5)), ['rms_norm_b1']);
    assert.deepEqual(launchesOf(g(), () => g().addRmsNorm(x, g().fromHost(uniform(4096), [1, 4096]), w4.g, 1e-5)), ['add_rms_norm_b1']);
    assert.deepEqual(launchesOf(g(), () => g().headRmsNorm(x, w128.g, 128, 1e-5)), ['rms_norm_w1']);
  });
});

/** Random q, k, v for T tokens on both backends. */
function qkvPair(T: number, heads: number, kvHeads: number, headDim: number) {
  const qh = uniform(T * heads * headDim, -2, 2);
  const kh = uniform(T * kvHeads * headDim, -2, 2);
  const vh = uniform(T * kvHeads * headDim, -2, 2);
  const on = (be: Backend) => ({
    q: be.fromHost(qh.slice(), [T, heads * headDim]),
    k: be.fromHost(kh.slice(), [T, kvHeads * headDim]),
    v: be.fromHost(vh.slice(), [T, kvHeads * headDim]),
  });
  return on;
}

/** Distinct random slots among numSlots. */
function randomSlots(T: number, numSlots: number): Int32Array {
  const all = Array.from({ length: numSlots }, (_, i) => i);
  for (let i = all.length - 1; i > 0; i--) {
    const j = randInt(i + 1);
    [all[i], all[j]] = [all[j], all[i]];
  }
  return Int32Array.from(all.slice(0, T));
}

describe('CUDA ropeWriteKv against rope, rope, writeKv (bitwise) and the CPU (≤ 1e-6)', { skip: skipReason }, () => {
  const g = () => gpu!;
  const fresh = async () => {
    await nextTurn();
    g().poisonFreeMemory();
  };

  // [heads, kvHeads, headDim, rotaryDim, KV cache]: Llama-8B (also bf16 and fp8 caches), GQA 8:2 with
  // partial rotary, tachyon-tiny-like, MHA odd. Full rotary with half a multiple of 4 takes the 16-byte
  // kernel (rope_write_kv4), the others the scalar one.
  const SHAPES: Array<[number, number, number, number, KvDtype]> = [[32, 8, 128, 128, 'float32'], [32, 8, 128, 128, 'bf16'], [32, 8, 128, 128, 'fp8'], [8, 2, 64, 32, 'float32'], [8, 2, 64, 32, 'bf16'], [4, 2, 32, 32, 'float32'], [3, 3, 96, 64, 'float32']];
  for (const [heads, kvHeads, headDim, rotaryDim, dtype] of SHAPES) {
    const kernel = rotaryDim === headDim && (rotaryDim / 2) % 4 === 0 ? 'rope_write_kv4' : 'rope_write_kv';
    it(`${heads} heads over ${kvHeads} KV heads, head_dim ${headDim}, rotary ${rotaryDim}, ${dtype} KV (${kernel}): 1, 3, 8, 17 tokens`, async () => {
      const spec = { numLayers: 2, numBlocks: 8, blockSize: 4, numKvHeads: kvHeads, headDim, dtype };
      // Each token count with the step's own rows, and with a table's rows by index (RopeTable's form:
      // more rows than tokens, taken in any order).
      for (const [T, indexed] of [1, 3, 8, 17].flatMap((T) => [[T, false], [T, true]] as const)) {
        await fresh();
        const make = qkvPair(T, heads, kvHeads, headDim);
        const tableRows = indexed ? T + 7 : T;
        const ang = uniform((tableRows * rotaryDim) / 2, -50, 50);
        const rows: RopeRows = { cos: ang.map(Math.cos), sin: ang.map(Math.sin), index: indexed ? Int32Array.from({ length: T }, () => randInt(tableRows)) : undefined };
        const slots = randomSlots(T, spec.numBlocks * spec.blockSize);
        const layer = 1;
        const what = `${T} tokens${indexed ? ', rows by index' : ''}`;

        /** ropeWriteKv on `be` (CUDA: fused or as the separate ops); q, k, the written layer and the other one. */
        const run = (be: Backend, fused: boolean) => {
          const cache = be.allocKvCache(spec);
          const t = make(be);
          const call = () => ropeWriteKv(be, t.q, t.k, t.v, headDim, rotaryDim, rows, cache, layer, slots);
          let names: string[] = [];
          if (be === gpu) {
            g().fusedRopeKv = fused;
            try {
              names = launchesOf(g(), call);
            } finally {
              g().fusedRopeKv = true;
            }
          } else call();
          const written = cacheLayer(be, cache, layer);
          return { q: be.toHost(t.q), k: be.toHost(t.k), kc: written.k, vc: written.v, other: cacheLayer(be, cache, 0), names };
        };
        const fused = run(g(), true);
        const separate = run(g(), false);
        assert.deepEqual(fused.names, [kernel]);
        assert.deepEqual(separate.names, ['rope', 'rope', 'write_kv']);
        for (const key of ['q', 'k', 'kc', 'vc'] as const) assertBitwise(fused[key], separate[key], `${what}: ${key}`);
        // The other layer untouched (zero, as allocated).
        assert.ok(fused.other.k.every((x) => x === 0) && fused.other.v.every((x) => x === 0), `${what}: layer 0 was written`);
        const want = run(cpu, true);
        // (A bf16 or fp8 cache holds codes: compared with the CPU's through q and k only.)
        for (const key of dtype === 'float32' ? (['q', 'k', 'kc', 'vc'] as const) : (['q', 'k'] as const)) assertClose(fused[key], want[key], 1e-6, `${what}: ${key} vs CPU`);
      }
    });
  }

  it('checks shapes, slots and the layer before launching', async () => {
    await fresh();
    const spec = { numLayers: 2, numBlocks: 4, blockSize: 4, numKvHeads: 2, headDim: 32 };
    const cache = g().allocKvCache(spec);
    const t = qkvPair(2, 4, 2, 32)(g());
    const cs = uniform(32);
    const call = (over: { headDim?: number; rotary?: number; layer?: number; slots?: Int32Array; v?: Tensor }) =>
      g().ropeWriteKv(t.q, t.k, over.v ?? t.v, over.headDim ?? 32, over.rotary ?? 32, { cos: cs, sin: cs }, cache, over.layer ?? 0, over.slots ?? Int32Array.from([0, 5]));
    assert.throws(() => call({ slots: Int32Array.from([0, 16]) }), /ropeWriteKv: slot 16 \(token 1\) is outside the KV cache's 16 slots/);
    assert.throws(() => call({ slots: Int32Array.from([-1, 2]) }), /slot -1 \(token 0\)/);
    assert.throws(() => call({ layer: 2 }), /ropeWriteKv: layer 2 of a 2-layer KV cache/);
    assert.throws(() => call({ headDim: 64 }), /ropeWriteKv: head dim 64, the KV cache's is 32/);
    assert.throws(() => call({ rotary: 31 }), /rotary dim 31 must be even/);
    assert.throws(() => call({ v: g().fromHost(uniform(64), [1, 64]) }), /ropeWriteKv: k\/v must be \[2, 64\]/);
    assert.throws(() => g().ropeWriteKv(t.q, t.k, t.v, 32, 32, { cos: cs.subarray(0, 10), sin: cs }, cache, 0, Int32Array.from([0, 1])), /cos\/sin hold 10\/32 values, need 32/);
    assert.throws(() => g().ropeWriteKv(t.q, t.k, t.v, 32, 32, { cos: cs, sin: cs, index: Int32Array.from([0, 2]) }, cache, 0, Int32Array.from([0, 1])), /ropeWriteKv: token 1 takes RoPE row 2, the tables hold 2/);
    assert.throws(() => g().ropeWriteKv(t.q, t.k, t.v, 32, 32, { cos: cs, sin: cs, index: Int32Array.from([0]) }, cache, 0, Int32Array.from([0, 1])), /ropeWriteKv: the RoPE index has 1 rows for 2 tokens/);
    assert.throws(() => g().writeKv(cache, 0, t.k, t.v, Int32Array.from([0, 99])), /writeKv: slot 99/);
  });
});

describe('the model forward with and without the fused RoPE + KV write on CUDA', { skip: skipReason }, () => {
  it(`${DEFAULT_MODEL_NAME}: one rope_write_kv a layer, and the same logits bitwise as rope, rope, write_kv`, async () => {
    const be = gpu!;
    const model = loadLlama(embeddedModelDir(DEFAULT_MODEL_NAME), be);
    const vocab = model.config.vocabSize;
    const prompt = Array.from({ length: 12 }, () => randInt(vocab));
    const launches = launchesOf(be, () => {
      new ModelRunner(model, 16, 4).step([{ seq: 0, start: 0, tokens: [1] }]);
    });
    assert.equal(launches.filter((n) => /^rope_write_kv4?$/.test(n)).length, model.config.numLayers);
    assert.ok(!launches.includes('rope') && !launches.includes('write_kv'), launches.join(', '));
    const run = async (fused: boolean) => {
      await nextTurn();
      be.poisonFreeMemory();
      be.fusedRopeKv = fused;
      try {
        return runSteps(new ModelRunner(model, 16, 4), vocab, prompt);
      } finally {
        be.fusedRopeKv = true;
      }
    };
    const withFused = await run(true);
    const without = await run(false);
    withFused.forEach((l, i) => assertBitwise(l, without[i], `logits of chunk ${i}`));
  });
});

describe('ropeWriteKv falls back to rope, rope, writeKv, and the forward uses it (CPU)', () => {
  /** The CPU reference plus ropeWriteKv, done as the separate ops and counted. */
  class CountingCpu extends CpuBackend {
    calls = 0;
    ropeWriteKv(q: Tensor, k: Tensor, v: Tensor, headDim: number, rotaryDim: number, rope: RopeRows, cache: KvCacheStorage, layer: number, slots: Int32Array): void {
      this.calls++;
      this.rope(q, headDim, rotaryDim, rope);
      this.rope(k, headDim, rotaryDim, rope);
      this.writeKv(cache, layer, k, v, slots);
    }
  }

  it('the helper on a backend without the op equals the separate ops exactly', () => {
    const be = new CpuBackend();
    assert.equal((be as Backend).ropeWriteKv, undefined);
    const spec = { numLayers: 1, numBlocks: 4, blockSize: 4, numKvHeads: 2, headDim: 16 };
    const make = qkvPair(3, 4, 2, 16);
    const ang = uniform(3 * 6, -20, 20);
    const rope = { cos: ang.map(Math.cos), sin: ang.map(Math.sin) };
    const slots = Int32Array.from([5, 0, 11]);
    const a = make(be);
    const ca = be.allocKvCache(spec);
    ropeWriteKv(be, a.q, a.k, a.v, 16, 12, rope, ca, 0, slots);
    const b = make(be);
    const cb = be.allocKvCache(spec);
    be.rope(b.q, 16, 12, rope);
    be.rope(b.k, 16, 12, rope);
    be.writeKv(cb, 0, b.k, b.v, slots);
    assert.deepEqual(be.toHost(a.q), be.toHost(b.q));
    assert.deepEqual(be.toHost(a.k), be.toHost(b.k));
    assert.deepEqual(cacheLayer(cpu, ca, 0), cacheLayer(cpu, cb, 0));
  });

  it(`${DEFAULT_MODEL_NAME}: the same logits with the op (called once a layer) as without`, () => {
    const dir = embeddedModelDir(DEFAULT_MODEL_NAME);
    const counting = new CountingCpu();
    const withOp = loadLlama(dir, counting);
    const plain = loadLlama(dir, new CpuBackend());
    const vocab = plain.config.vocabSize;
    const prompt = Array.from({ length: 12 }, () => randInt(vocab));
    const a = runSteps(new ModelRunner(withOp, 16, 4), vocab, prompt);
    const b = runSteps(new ModelRunner(plain, 16, 4), vocab, prompt);
    assert.equal(counting.calls, 4 * plain.config.numLayers);
    a.forEach((l, i) => assert.deepEqual(l, b[i], `logits of chunk ${i}`));
  });
});
