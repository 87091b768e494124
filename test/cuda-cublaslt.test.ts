// cuBLASLt prefill GEMMs against the CPU reference on fresh random inputs (never zeros), outputs
// poisoned before every op: bf16/f16 weights (x rounded to the weight's type, then tensor cores),
// FP8 weights (per-token e4m3 activations), the bias epilogue and the kernel that replaces it, the
// tiled float32 fallback, then the default model end to end. Skips, saying why, without a GPU or
// without libcublasLt; the library search itself is checked everywhere.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import type { Weight } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import type { CudaBackend, CudaTensor } from '../src/backend/cuda/cuda-backend.js';
import { cublasLtCandidates, cublasStatusText, loadCublasLt, openCublasLtPrefill, prefillGemmFromEnv, siluStaging } from '../src/backend/cuda/cublaslt.js';
import type { CublasLt } from '../src/backend/cuda/cublaslt.js';
import { LLM } from '../src/llm.js';
import { DEFAULT_MODEL_NAME, embeddedModelDir } from '../src/model/default-model.js';
import { bf16ToF32, f16ToF32, f32ToBf16 } from '../src/model/load/dtype.js';
import type { HostTensor } from '../src/model/load/safetensors.js';
import { E4M3_MAX, E4M3_VALUES, encodeE4m3 } from '../src/quant/fp8-e4m3.js';
import { quantizeFp8 } from '../src/quant/fp8.js';
import { FLOAT32_EPSILON } from '../src/quant/rounding.js';
import { fixturesDir } from './support/paths.js';
import { openTestGpu, testRandom, comparisons } from './support/cuda.js';

// Decode GEMVs take the float32 FMA kernels here, held to the float32 CPU; the tensor-core GEMV
// (x rounded to bf16) has its own bounds in cuda-gemv-mma.test.ts. Each file runs in its own process.
process.env.TACHYON_DECODE_GEMV = 'fma';

const opened = await openTestGpu();
const gpu = opened.gpu;
let skipReason = opened.skipReason;
let lt: CublasLt | undefined;
if (gpu) {
  const p = openCublasLtPrefill(gpu.driver, gpu.kernels, gpu.pool);
  if ('reason' in p) skipReason = `no cuBLASLt: ${p.reason.split('\n')[0]}`;
  else lt = p.lt;
}
const fp8Skip = skipReason || (gpu!.device.computeCapability < 89 ? `FP8 tensor cores need sm_89 or newer; this GPU is sm_${gpu!.device.computeCapability}` : false);

const cpu = new CpuBackend();
// Fresh inputs on every run; the seed is in every failure message so a failure can be replayed.
const { seed: SEED, rng, uniform, randInt } = testRandom();
const { assertClose } = comparisons(SEED);

const halfEven = (v: number) => {
  const f = Math.floor(v);
  const r = v - f;
  return r > 0.5 || (r === 0.5 && f % 2 === 1) ? f + 1 : f;
};

/** float32 → IEEE half bits, round to nearest even, subnormals included (what cvt.rn.f16 does). */
function f32ToF16(x: number): number {
  const v = Math.fround(x);
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a < 2 ** -14) return sign | halfEven(a * 2 ** 24); // subnormal grid (a carry into 0x400 is the smallest normal)
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  let m = halfEven(a * 2 ** (10 - e));
  if (m === 2048) {
    m = 1024;
    e++;
  }
  return e + 15 >= 31 ? sign | 0x7c00 : sign | ((e + 15) << 10) | (m - 1024);
}

type Half = 'BF16' | 'F16';
/** x rounded to bf16 / f16 and back: what the GEMM's tensor cores see. */
const roundTo = (dtype: Half, x: Float32Array) =>
  x.map((v) => (dtype === 'BF16' ? bf16ToF32(f32ToBf16(v)) : f16ToF32(f32ToF16(v))));

function hostTensor(dtype: Half | 'F32', shape: number[], scale = 1): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const vals = uniform(n, -scale, scale);
  if (dtype === 'F32') return { dtype, shape, bytes: new Uint8Array(vals.buffer) };
  const bits = Uint16Array.from(vals, (v) => (dtype === 'BF16' ? f32ToBf16(v) : f32ToF16(v)));
  return { dtype, shape, bytes: new Uint8Array(bits.buffer) };
}

/** The same weight on both backends. */
function weightPair(dtype: Half | 'F32', shape: number[], scale = 1): [Weight, Weight] {
  const t = hostTensor(dtype, shape, scale);
  return [cpu.loadDense('w', t), gpu!.loadDense('w', t)];
}

const g = () => gpu!;
/** End the synchronous run (recycling its activations), then poison every free buffer with NaN:
 *  an output element an op never writes then shows. Activations must be made after this. */
const fresh = async () => {
  await nextTurn();
  g().poisonFreeMemory();
};
const cpuLinear = (x: Float32Array, T: number, w: Weight, bias?: Weight) => cpu.toHost(cpu.linear(cpu.fromHost(x.slice(), [T, x.length / T]), w, bias));

describe('cuBLASLt library search (no GPU needed)', () => {
  it('names every place it tried, and how to fix it, when nothing is found', () => {
    assert.throws(
      () => loadCublasLt(['/nowhere/libcublasLt.so.13', 'libcublasLt-missing.so.99']),
      (err: Error) => {
        assert.match(err.message, /^cuBLASLt \(libcublasLt\.so, the tensor-core GEMM library\) was not found; set CUBLASLT=\/path\/to\/libcublasLt\.so\.N/);
        assert.match(err.message, /Tried: \/nowhere\/libcublasLt\.so\.13 \(no such file\); libcublasLt-missing\.so\.99 \(.+\)$/);
        return true;
      },
    );
  });

  it('tries $CUBLASLT first, then the loader\'s own search by name, then the toolkit folders', () => {
    const gen = cublasLtCandidates({ CUBLASLT: '/opt/x/libcublasLt.so.13', CUDA_HOME: '/nonexistent-cuda' });
    // Only the first four: the generator is lazy, so ldconfig and python3 are never asked here.
    const first = [gen.next().value, gen.next().value, gen.next().value, gen.next().value];
    assert.deepEqual(first, ['/opt/x/libcublasLt.so.13', 'libcublasLt.so', 'libcublasLt.so.13', 'libcublasLt.so.12']);
  });

  it('a library that is found binds, reports its version and names its statuses', (t) => {
    let lib;
    try {
      lib = loadCublasLt();
    } catch (err) {
      t.skip(`libcublasLt is not on this machine: ${(err as Error).message.slice(0, 120)}…`);
      return;
    }
    assert.match(lib.version, /^\d+\.\d+\.\d+$/);
    assert.match(cublasStatusText(lib, 15), /^CUBLAS_STATUS_NOT_SUPPORTED \(.+\)$/);
    assert.match(cublasStatusText(lib, 7), /^CUBLAS_STATUS_INVALID_VALUE/);
  });

  it("the FP8 MLP's middle is staged through shared memory where rows fit: 3 stages, else 2, else not at all", () => {
    const H100 = 232448; // cuDeviceGetAttribute(MAX_SHARED_MEMORY_PER_BLOCK_OPTIN) there
    const aligned = [0x7f0000000000, 0x7f0000100000, 0x7f0000200000];
    assert.deepEqual(siluStaging(14336, H100, aligned), { stages: 3, threads: 896, sharedBytes: 3 * 4 * 14336 });
    assert.deepEqual(siluStaging(20608, H100, aligned), { stages: 2, threads: 1024, sharedBytes: 2 * 4 * 20608 });
    assert.deepEqual(siluStaging(28672, H100, aligned), { stages: 2, threads: 1024, sharedBytes: 2 * 4 * 28672 }, "Llama-70B's rows: two fit");
    assert.equal(siluStaging(14336, 101376, aligned), undefined, 'sm_86-sized shared memory: not even two rows of 14336');
    assert.equal(siluStaging(14340, H100, aligned), undefined, 'N not a multiple of 8');
    assert.equal(siluStaging(14336, H100, [...aligned, 0x7f0000000008]), undefined, 'a pointer not 16-byte aligned');
    assert.equal(siluStaging(8 * 4 * 1024 + 8, 10 ** 7, aligned), undefined, 'more chunks than 1024 threads hold');
  });

  it('TACHYON_PREFILL_GEMM picks the default prefill GEMM and a wrong value is named', () => {
    assert.equal(prefillGemmFromEnv({}), 'auto');
    assert.equal(prefillGemmFromEnv({ TACHYON_PREFILL_GEMM: 'tiled' }), 'tiled');
    assert.equal(prefillGemmFromEnv({ TACHYON_PREFILL_GEMM: 'cublaslt' }), 'cublaslt');
    assert.throws(() => prefillGemmFromEnv({ TACHYON_PREFILL_GEMM: 'cublas' }), /TACHYON_PREFILL_GEMM must be auto, cublaslt or tiled, not 'cublas'/);
  });
});

describe('cuBLASLt prefill GEMMs against the CPU reference', { skip: skipReason }, () => {
  after(() => {
    if (gpu) {
      gpu.prefillGemm = 'auto';
      lt!.biasEpilogue = true;
    }
  });

  // [N, K]: odd N, K not a multiple of 8 (rows not 16-byte aligned), a Llama-like K.
  const shapes: Array<[number, number]> = [[64, 256], [257, 1032], [37, 100], [1024, 4096]];
  const tokens = [9, 37, 130, 515];

  /**
   * Tight: against the CPU over x rounded to the weight's type (products exact in float32, float32
   * accumulation): ≤ 1e-5. Loose: against exact float32 x, the rounding of x itself: bf16 (8-bit
   * significand) ≤ 4e-3, f16 (11-bit) ≤ 5e-4.
   */
  const LOOSE: Record<Half, number> = { BF16: 4e-3, F16: 5e-4 };
  for (const dtype of ['BF16', 'F16'] as const) {
    it(`${dtype} weights: x rounded to ${dtype}, then tensor cores (≤ 1e-5 against the CPU on rounded x; ≤ ${LOOSE[dtype].toExponential(0)} on exact x), with and without bias`, async () => {
      g().prefillGemm = 'cublaslt';
      for (const [N, K] of shapes) {
        const [wc, wg] = weightPair(dtype, [N, K], 0.5);
        const [bc, bg] = weightPair('F32', [N]);
        for (const T of tokens) {
          if (N * K * T > 300e6) continue; // keep the CPU reference quick
          for (const withBias of [false, true]) {
            await fresh();
            const x = uniform(T * K);
            const before = lt!.counters.matmuls;
            const got = g().toHost(g().linear(g().fromHost(x, [T, K]), wg, withBias ? bg : undefined));
            assert.equal(lt!.counters.matmuls, before + 1, 'cuBLASLt ran');
            const what = `${dtype} [${N}, ${K}] × ${T} rows${withBias ? ' + bias' : ''}`;
            assertClose(got, cpuLinear(roundTo(dtype, x), T, wc, withBias ? bc : undefined), 1e-5, `${what} vs rounded x`);
            assertClose(got, cpuLinear(x, T, wc, withBias ? bc : undefined), LOOSE[dtype], `${what} vs exact x`);
          }
        }
      }
    });
  }

  it('bias by the add kernel when the epilogue is not used (≤ 1e-5)', async () => {
    g().prefillGemm = 'cublaslt';
    lt!.biasEpilogue = false;
    try {
      for (const [N, K, T] of [[257, 1032, 37], [64, 256, 130]]) {
        await fresh();
        const [wc, wg] = weightPair('BF16', [N, K], 0.5);
        const [bc, bg] = weightPair('F32', [N], 4);
        const x = uniform(T * K);
        const got = g().toHost(g().linear(g().fromHost(x, [T, K]), wg, bg));
        assertClose(got, cpuLinear(roundTo('BF16', x), T, wc, bc), 1e-5, `[${N}, ${K}] × ${T} + bias (add kernel)`);
      }
    } finally {
      lt!.biasEpilogue = true;
    }
  });

  it("prefillGemm 'tiled' forces the float32 kernel (≤ 2e-5 on exact x); f32 weights and ≤ 8 tokens never use cuBLASLt", async () => {
    const cases: Array<['BF16' | 'F16' | 'F32', number, 'tiled' | 'auto']> = [['BF16', 37, 'tiled'], ['F16', 130, 'tiled'], ['F32', 130, 'auto'], ['BF16', 8, 'auto']];
    for (const [dtype, T, mode] of cases) {
      g().prefillGemm = mode;
      await fresh();
      const [N, K] = [257, 1032];
      const [wc, wg] = weightPair(dtype, [N, K], 0.5);
      const [bc, bg] = weightPair('F32', [N]);
      const x = uniform(T * K);
      const before = lt!.counters.matmuls;
      const got = g().toHost(g().linear(g().fromHost(x, [T, K]), wg, bg));
      assert.equal(lt!.counters.matmuls, before, `${dtype} × ${T} (${mode}) did not use cuBLASLt`);
      assertClose(got, cpuLinear(x, T, wc, bc), 2e-5, `${dtype} [${N}, ${K}] × ${T} rows, prefillGemm ${mode}`);
    }
    g().prefillGemm = 'auto';
  });

  it('plans are cached per shape: the heuristic runs once for a repeated GEMM', async () => {
    g().prefillGemm = 'cublaslt';
    await fresh();
    const [, wg] = weightPair('BF16', [96, 512]);
    const x = g().fromHost(uniform(33 * 512), [33, 512]);
    g().linear(x, wg);
    const plans = lt!.counters.plans;
    for (let i = 0; i < 3; i++) g().linear(x, wg);
    assert.equal(lt!.counters.plans, plans);
    g().linear(g().fromHost(uniform(34 * 512), [34, 512]), wg);
    assert.equal(lt!.counters.plans, plans + 1, 'a new token count is a new plan');
  });

  /**
   * CPU emulation of matmulFp8: per token s = amax/448 (float32; an all-zero row gets float32
   * epsilon), codes = e4m3(x/s), then Σ code values × weight code values in float64, × s_x × s_w (+ b).
   */
  function fp8Reference(x: Float32Array, T: number, K: number, codes: Uint8Array, wScales: Float32Array, N: number, bias?: Float32Array): Float64Array {
    const xv = new Float64Array(T * K);
    const xs = new Float64Array(T);
    for (let t = 0; t < T; t++) {
      let amax = 0;
      for (let k = 0; k < K; k++) amax = Math.max(amax, Math.abs(x[t * K + k]));
      const s = amax > 0 ? Math.fround(amax / E4M3_MAX) : FLOAT32_EPSILON;
      xs[t] = s;
      for (let k = 0; k < K; k++) xv[t * K + k] = E4M3_VALUES[encodeE4m3(x[t * K + k] / s)];
    }
    const y = new Float64Array(T * N);
    for (let t = 0; t < T; t++) {
      for (let n = 0; n < N; n++) {
        let acc = 0;
        for (let k = 0; k < K; k++) acc += xv[t * K + k] * E4M3_VALUES[codes[n * K + k]];
        y[t * N + n] = acc * xs[t] * wScales[n] + (bias ? bias[n] : 0);
      }
    }
    return y;
  }

  /** Device copies of host arrays, freed after `fn`. */
  function withDevice<R>(arrays: ArrayBufferView[], fn: (ptrs: number[]) => R): R {
    const d = g().driver;
    const ptrs = arrays.map((a) => {
      const p = d.memAlloc(a.byteLength);
      d.upload(p, a);
      return p;
    });
    try {
      return fn(ptrs);
    } finally {
      d.synchronize();
      for (const p of ptrs) d.memFree(p);
    }
  }

  it('FP8 weights: per-token e4m3 activations, FP8 tensor cores (≤ 1e-3 against the CPU emulating the quantisation; ≤ 6e-2 against exact x × dequantised W)', { skip: fp8Skip }, async () => {
    g().prefillGemm = 'cublaslt';
    // N = 37: D goes through a padded scratch (rows not 16-byte aligned); 64, 1024: in place.
    for (const [N, K] of [[64, 256], [37, 512], [1024, 4096]]) {
      const w = uniform(N * K, -0.5, 0.5);
      const q = quantizeFp8(w, N, K);
      const wDequant = Float32Array.from(q.codes, (c, i) => E4M3_VALUES[c] * q.scales[Math.floor(i / K)]);
      const wc = cpu.loadDense('w', { dtype: 'F32', shape: [N, K], bytes: new Uint8Array(wDequant.buffer) });
      for (const T of [9, 37, 130]) {
        if (N * K * T > 150e6) continue;
        for (const withBias of [false, true]) {
          await fresh();
          // Rows of very different magnitudes (each gets its own scale), and one all-zero row.
          const x = uniform(T * K);
          for (let t = 0; t < T; t++) {
            const m = 10 ** (4 * rng.next() - 2);
            for (let k = 0; k < K; k++) x[t * K + k] *= t === 3 ? 0 : m;
          }
          const bias = withBias ? uniform(N, -2, 2) : undefined;
          const what = `FP8 [${N}, ${K}] × ${T} rows${withBias ? ' + bias' : ''}`;
          const got = withDevice([q.codes, q.scales, ...(bias ? [bias] : [])], ([codes, scales, b]) => {
            const before = lt!.counters.matmuls;
            const outerBefore = g().cublasLt()!.counters.fp8OuterScaled;
            const y = g().matmulFp8(g().fromHost(x, [T, K]) as CudaTensor, codes, scales, N, K, b ?? 0);
            // cuBLASLt may have no FP8 algorithm for an odd N (seen: 37 on the H100): refused, nothing run.
            if (!y) {
              assert.notEqual(N % 16, 0, `${what}: refused although N is a multiple of 16`);
              assert.equal(lt!.counters.matmuls, before, 'nothing ran');
              return undefined;
            }
            assert.equal(lt!.counters.matmuls, before + 1, 'cuBLASLt ran');
            // Without a bias and with 16-byte rows, cuBLAS ≥ 12.9 on Hopper scales inside the GEMM.
            const [major, minor] = lt!.version.split('.').map(Number);
            const outer = !bias && N % 4 === 0 && g().device.computeCapability >= 90 && major * 100 + minor >= 1209;
            assert.equal(g().cublasLt()!.counters.fp8OuterScaled - outerBefore, outer ? 1 : 0, `${what}: outer-vector scaling ${outer ? 'expected' : 'not expected'}`);
            return g().toHost(y);
          });
          if (!got) continue;
          assertClose(got, fp8Reference(x, T, K, q.codes, q.scales, N, bias), 1e-3, `${what} vs emulated quantisation`);
          const bc = bias ? cpu.loadDense('b', { dtype: 'F32', shape: [N], bytes: new Uint8Array(bias.buffer) }) : undefined;
          assertClose(got, cpuLinear(x, T, wc, bc), 6e-2, `${what} vs exact x`);
        }
      }
    }
  });

  it("GEMMs sharing a plan each use their own weight scales: pointers are set on the descriptor only when they change", { skip: fp8Skip }, async () => {
    g().prefillGemm = 'cublaslt';
    await fresh();
    const [N, K, T] = [256, 512, 33];
    const weights = [0, 1].map(() => quantizeFp8(uniform(N * K, -0.5, 0.5), N, K));
    const x = uniform(T * K);
    withDevice(weights.flatMap((w) => [w.codes, w.scales]), ([c0, s0, c1, s1]) => {
      const xt = g().fromHost(x, [T, K]) as CudaTensor;
      const run = (i: number) => {
        const y = g().matmulFp8(xt, i === 0 ? c0 : c1, i === 0 ? s0 : s1, N, K, 0)!;
        return g().toHost(y);
      };
      const first = run(0);
      const sets = lt!.counters.pointerSets;
      assert.deepEqual(run(0), first, 'the same GEMM again');
      assert.equal(lt!.counters.pointerSets, sets, 'the same pointers: nothing set again');
      // The other weight under the same plan, then the first again: each its own result.
      const other = run(1);
      assert.ok(lt!.counters.pointerSets > sets, 'a new weight scale pointer was set');
      assert.deepEqual(run(0), first, 'the first weight after the second');
      for (const [i, got] of [[0, first], [1, other]] as const) {
        assertClose(got, fp8Reference(x, T, K, weights[i].codes, weights[i].scales, N), 1e-3, `weight ${i} vs emulated quantisation`);
      }
    });
  });

  it('FP8 GEMMs are refused with the reason where they cannot run', { skip: fp8Skip }, () => {
    assert.equal(g().canMatmulFp8(4096), true);
    assert.equal(g().canMatmulFp8(100), false);
    const x = g().fromHost(uniform(9 * 100), [9, 100]);
    assert.throws(() => g().matmulFp8(x as CudaTensor, 0, 0, 64, 100, 0), /matmulFp8: cuBLASLt's FP8 GEMM needs K to be a multiple of 16 \(16-byte rows\), K is 100/);
    g().prefillGemm = 'tiled';
    assert.equal(g().canMatmulFp8(4096), false);
    assert.throws(() => g().matmulFp8(g().fromHost(uniform(9 * 256), [9, 256]) as CudaTensor, 0, 0, 64, 256, 0), /matmulFp8: cuBLASLt is not in use \(prefillGemm 'tiled'/);
    g().prefillGemm = 'auto';
  });
});

interface GreedyCase {
  prompt: string;
  prompt_ids: number[];
  output_ids: number[];
  logit_margins: number[];
  min_logit_margin: number;
}

describe('end to end: the default model (bf16) with cuBLASLt prefill', { skip: skipReason }, () => {
  let onGpu: LLM | undefined;
  let onCpu: LLM | undefined;
  after(async () => {
    await onGpu?.close();
    await onCpu?.close();
  });
  const fixture = () => JSON.parse(readFileSync(join(fixturesDir(), 'default-models', 'greedy.json'), 'utf8')) as { target: GreedyCase[] };

  /**
   * Prefill logits of the fixture prompts, batched in one step, against the CPU: the activations
   * entering every linear are rounded to bf16 here, ≈ 2⁻⁹ relative each, over 8 layers: ≤ 3e-2.
   */
  it('prefill logits of the fixture prompts match the CPU (relative error ≤ 3e-2) and ran on cuBLASLt', async () => {
    const dir = embeddedModelDir(DEFAULT_MODEL_NAME);
    onGpu ??= await LLM.load({ model: dir, device: 'cuda' });
    onCpu ??= await LLM.load({ model: dir, device: 'cpu', kvCacheDtype: 'bf16' }); // as CUDA's default
    (onGpu.loaded.model.backend as CudaBackend).prefillGemm = 'cublaslt';
    const prompts = fixture().target.map((c) => c.prompt_ids);
    const logitsOf = (m: LLM) => {
      const model = m.loaded.model;
      const c = model.config;
      const blocksPerSeq = 4;
      const kv = model.backend.allocKvCache({ numLayers: c.numLayers, numBlocks: prompts.length * blocksPerSeq, blockSize: 16, numKvHeads: c.numKvHeads, headDim: c.headDim });
      const tokens: number[] = [];
      const positions: number[] = [];
      const seqIndex: number[] = [];
      const slots: number[] = [];
      const logitRows: number[] = [];
      prompts.forEach((p, s) => {
        p.forEach((t, i) => {
          tokens.push(t);
          positions.push(i);
          seqIndex.push(s);
          slots.push((s * blocksPerSeq + Math.floor(i / 16)) * 16 + (i % 16));
        });
        logitRows.push(tokens.length - 1);
      });
      return model.forward(
        {
          numTokens: tokens.length, numSeqs: prompts.length, tokens: Int32Array.from(tokens), positions: Int32Array.from(positions), seqIndex: Int32Array.from(seqIndex),
          slots: Int32Array.from(slots), blockTables: Int32Array.from({ length: prompts.length * blocksPerSeq }, (_, i) => i), maxBlocksPerSeq: blocksPerSeq, logitRows: Int32Array.from(logitRows),
        },
        kv,
      ).logits;
    };
    const before = lt!.counters.matmuls;
    const got = logitsOf(onGpu);
    assert.ok(lt!.counters.matmuls > before, 'the prefill linears ran on cuBLASLt');
    assertClose(got, logitsOf(onCpu), 3e-2, 'prefill logits of the fixture prompts');
  });

  /**
   * Greedy continuations against transformers' (float32): equal, except that a prompt may part from
   * them at a step where transformers' own top-1/top-2 logit gap was under 0.25: a near tie that
   * bf16 activations may tip (17 of the 20 prompts have a step with a gap under 0.05).
   */
  it("greedy continuations of the fixture prompts equal transformers' up to the first near tie (top-2 gap < 0.25)", async (t) => {
    onGpu ??= await LLM.load({ model: embeddedModelDir(DEFAULT_MODEL_NAME), device: 'cuda' });
    (onGpu.loaded.model.backend as CudaBackend).prefillGemm = 'cublaslt';
    const cases = fixture().target;
    const before = lt!.counters.matmuls;
    const results = await Promise.all(cases.map((c) => onGpu!.complete(c.prompt_ids, { temperature: 0, maxTokens: c.output_ids.length, skipSpecialTokens: true })));
    assert.ok(lt!.counters.matmuls > before, 'the prefill ran on cuBLASLt');
    let parted = 0;
    cases.forEach((c, i) => {
      const got = results[i].tokenIds;
      const first = c.output_ids.findIndex((t, j) => got[j] !== t);
      if (first < 0) return;
      parted++;
      assert.ok(
        c.logit_margins[first] < 0.25,
        `prompt ${i}: parts from transformers at output token ${first}, where its top-2 gap was ${c.logit_margins[first]} (≥ 0.25): ${JSON.stringify(c.prompt)}`,
      );
    });
    t.diagnostic(`${parted} of ${cases.length} prompts parted from transformers at a near tie`);
  });
});
