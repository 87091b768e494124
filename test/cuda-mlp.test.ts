// The CUDA backend's MLP (CudaBackend.mlp): prefill steps on cuBLASLt keep the intermediate in the
// weights' 16-bit type (gate and up written in bf16/f16, silu·mul over them, down reading it). Held
// against the CPU backend's float32 MLP on fresh random inputs, for dense bf16 and f16 weights and
// quantized ones (their bf16 copies), at prefill-sized steps and odd sizes; and where the path does
// not apply (decode steps, biases, FP8's W8A8 GEMM, fusedMlp off) it must give linearSiluMul and
// linear's bits. Without a GPU the suite skips with the reason.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mlp, mlpByLinears, type Backend, type Weight } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import type { HostTensor } from '../src/model/load/safetensors.js';
import { DEFAULT_SLICED_MAX_TOKENS } from '../src/backend/cuda/quantized-weights.js';
import { siluStaging } from '../src/backend/cuda/cublaslt.js';
import { comparisons, launchesOf, openTestGpu, testRandom } from './support/cuda.js';
import { weightPairs, type WeightKind } from './support/weight-pair.js';

const { gpu, skipReason } = await openTestGpu();
const cpu = new CpuBackend();
const { seed: SEED, uniform } = testRandom();
const { assertClose, assertBitwise } = comparisons(SEED);

type Kind = WeightKind;
/** One [rows, cols] weight of random values on both backends, dense in a 16-bit type or quantized. */
const weight = weightPairs(cpu, gpu, uniform);

function bias(n: number): { c: Weight; g: Weight } {
  const t: HostTensor = { dtype: 'F32', shape: [n], bytes: new Uint8Array(uniform(n, -0.1, 0.1).buffer) };
  return { c: cpu.loadDense('b', t), g: gpu!.loadDense('b', t) };
}

/** An MLP of hidden size H and intermediate size N on both backends. */
function mlpWeights(kind: Kind, H: number, N: number) {
  const gate = weight(kind, N, H);
  const up = weight(kind, N, H);
  const down = weight(kind, H, N);
  return { gate, up, down };
}

function run(be: Backend, x: Float32Array, T: number, H: number, w: ReturnType<typeof mlpWeights>, side: 'c' | 'g', viaLinears = false): Float32Array {
  const xt = be.fromHost(x, [T, H]);
  const y = (viaLinears ? mlpByLinears : mlp)(be, xt, w.gate[side], w.up[side], w.down[side]);
  const out = be.toHost(y);
  be.release?.(xt, y);
  return out;
}

describe('CUDA MLP with a 16-bit intermediate', { skip: skipReason }, () => {
  const be = gpu!;

  const cases: { kind: Kind; H: number; N: number; T: number; bound: number }[] = [
    // Llama-like widths at prefill sizes; odd token counts; an intermediate that is not a multiple of 8.
    { kind: 'BF16', H: 512, N: 1408, T: 64, bound: 1e-2 },
    { kind: 'BF16', H: 256, N: 680, T: 9, bound: 1e-2 },
    { kind: 'BF16', H: 384, N: 1030, T: 137, bound: 1e-2 },
    { kind: 'F16', H: 512, N: 1408, T: 33, bound: 3e-3 },
    // Quantized: more tokens than run in slices on the decode GEMVs (CudaBackend.quantSlices).
    { kind: 'w4a16', H: 512, N: 1408, T: DEFAULT_SLICED_MAX_TOKENS.int4 + 16, bound: 1e-2 },
    { kind: 'w8a16', H: 256, N: 768, T: DEFAULT_SLICED_MAX_TOKENS.int8 + 3, bound: 1e-2 },
  ];
  for (const c of cases) {
    it(`${c.kind} [${c.N}×${c.H}] at ${c.T} tokens: the CPU's float32 MLP within ${c.bound}, through the 16-bit path`, () => {
      const w = mlpWeights(c.kind, c.H, c.N);
      const x = uniform(c.T * c.H, -2, 2);
      const want = run(cpu, x, c.T, c.H, w, 'c');
      const names = launchesOf(be, () => {
        const got = run(be, x, c.T, c.H, w, 'g');
        assertClose(got, want, c.bound, `${c.kind} mlp, ${c.T} tokens`);
      });
      // The 16-bit silu·mul ran, the float32 one did not.
      const half = c.kind === 'F16' ? 'silu_mul_f16' : 'silu_mul_bf16';
      assert.ok(names.includes(half), `${half} launched (${names.join(', ')})`);
      assert.ok(!names.includes('silu_mul'), 'no float32 silu_mul');
    });
  }

  it('rounds no more than the gate and up outputs: close to the float32 path', () => {
    const H = 512, N = 1408, T = 96;
    const w = mlpWeights('BF16', H, N);
    const x = uniform(T * H, -2, 2);
    const half = run(be, x, T, H, w, 'g');
    be.fusedMlp = false;
    try {
      const f32 = run(be, x, T, H, w, 'g');
      // bf16 has 8 significant bits: one more rounding of gate and up moves the result by ~2⁻⁹.
      assertClose(half, f32, 5e-3, '16-bit against float32 intermediate');
      assert.ok(half.some((v, i) => v !== f32[i]), 'the two paths are different computations');
    } finally {
      be.fusedMlp = true;
    }
  });

  it('leaves decode steps of up to 3 tokens, biases, FP8 and fusedMlp = false to linearSiluMul and linear, bit for bit', () => {
    const H = 256, N = 640;
    const bf = mlpWeights('BF16', H, N);
    const checks: Array<{ what: string; T: number; w: ReturnType<typeof mlpWeights>; biased?: boolean; off?: boolean }> = [
      { what: 'a decode step of 3 tokens', T: 3, w: bf },
      { what: 'one token', T: 1, w: bf },
      { what: 'biases', T: 40, w: bf, biased: true },
      { what: 'fusedMlp off', T: 40, w: bf, off: true },
    ];
    for (const c of checks) {
      const x = uniform(c.T * H, -2, 2);
      const biases = c.biased ? { gate: bias(N).g, up: bias(N).g, down: bias(H).g } : {};
      be.fusedMlp = !c.off;
      try {
        const xt = be.fromHost(x, [c.T, H]);
        const got = be.toHost(mlp(be, xt, c.w.gate.g, c.w.up.g, c.w.down.g, biases));
        const want = be.toHost(mlpByLinears(be, xt, c.w.gate.g, c.w.up.g, c.w.down.g, biases));
        assertBitwise(got, want, c.what);
      } finally {
        be.fusedMlp = true;
      }
    }
  });

  it('decode steps of 4-8 tokens on 16-bit weights take the 16-bit path on cuBLASLt (decodeGemv auto); mma or fma keep the GEMVs', () => {
    const H = 256, N = 640;
    const bf = mlpWeights('BF16', H, N);
    for (const T of [4, 8]) {
      const x = uniform(T * H, -2, 2);
      const want = run(cpu, x, T, H, bf, 'c');
      const names = launchesOf(be, () => assertClose(run(be, x, T, H, bf, 'g'), want, 1e-2, `${T} tokens`));
      assert.ok(names.includes('silu_mul_bf16') && !names.some((n) => n.startsWith('gemv')), `${T} tokens: ${names.join(', ')}`);
      const keep = be.decodeGemv;
      be.decodeGemv = 'mma';
      try {
        const gemv = launchesOf(be, () => void run(be, x, T, H, bf, 'g'));
        assert.ok(gemv.some((n) => n.startsWith('gemv')) && !gemv.includes('silu_mul_bf16'), `${T} tokens, decodeGemv mma: ${gemv.join(', ')}`);
      } finally {
        be.decodeGemv = keep;
      }
    }
  });

  it('FP8 weights on the FP8 tensor cores: one kernel from the GEMMs to down\'s input, the values of the separate ops', { skip: !be?.canMatmulFp8(256) && 'no FP8 GEMMs on this GPU' }, () => {
    const H = 256, N = 640, T = 72;
    const w = mlpWeights('fp8', H, N);
    const x = uniform(T * H, -2, 2);
    let got: Float32Array = new Float32Array(0);
    const names = launchesOf(be, () => (got = run(be, x, T, H, w, 'g')));
    // cuBLAS 12.9 and newer scale FP8 GEMMs by per-row and per-token vectors themselves on Hopper and
    // newer (outer-vector scaling): there down's product needs no scaling kernel.
    const [major, minor] = be.cublasLt()!.lt.version.split('.').map(Number);
    const outerScaled = be.device.computeCapability >= 90 && major * 100 + minor >= 1209;
    // (The bf16 middle streams rows through shared memory where they fit: siluStaging.)
    // (The pool's buffers are 256-byte aligned: 256 stands for their pointers.)
    const stages = siluStaging(N, be.device.sharedPerBlockOptin, [256])?.stages;
    const middle = stages ? `silu_mul_quantize_bf16_e4m3_staged${stages}` : 'silu_mul_quantize_bf16_e4m3';
    assert.deepEqual(
      names.filter((n) => /quantize|silu|scale_fp8/.test(n)),
      outerScaled ? ['quantize_rows_e4m3', middle] : ['quantize_rows_e4m3', 'silu_mul_quantize_e4m3', 'scale_fp8_product'],
      outerScaled ? 'x quantised once, gate and up scaled by their GEMMs into bf16, the middle in one kernel, down scaled by its GEMM' : 'x quantised once, the middle in one kernel, down scaled',
    );
    be.fusedMlp = false;
    try {
      const want = run(be, x, T, H, w, 'g');
      // Without outer scaling: the same float32 expressions in one kernel instead of three, equal but
      // for a zero's sign. With it, gate and up are rounded to bf16 first (2⁻⁹ relative), which tips
      // a few percent of down's e4m3 input codes to the neighbouring code (a step of 2⁻³): seen
      // 1.6e-2 relative, bounded at 5e-2 (the FP8 quantisation itself is held to 1e-1 below).
      assertClose(got, want, outerScaled ? 5e-2 : 1e-6, 'fused FP8 MLP against the separate linears, silu_mul, quantise');
    } finally {
      be.fusedMlp = true;
    }
    assertClose(got, run(cpu, x, T, H, w, 'c'), 1e-1, 'fused FP8 MLP against the CPU (exact activations, two FP8 roundings of them on the GPU)');
  });

  it('the FP8 MLP\'s middle with its rows pipelined through a few blocks, in registers or through shared memory, gives the bits of a block per row', { skip: !be?.canMatmulFp8(256) && 'no FP8 GEMMs on this GPU' }, (t) => {
    const blas = be.cublasLt()!;
    const [major, minor] = blas.lt.version.split('.').map(Number);
    if (!(be.device.computeCapability >= 90 && major * 100 + minor >= 1209)) return t.skip('the bf16 middle runs where cuBLASLt scales FP8 GEMMs by vectors (cuBLAS 12.9+, sm_90+)');
    // More rows than SMs (blocks loop over rows), and a row longer than the register kernel holds (its
    // rest read twice) which the staged kernel takes in 2 stages (3 at N 640 and 14336).
    for (const [H, N, T] of [[256, 640, 300], [256, 14336, 40], [256, 20608, 150]]) {
      const w = mlpWeights('fp8', H, N);
      const x = uniform(T * H, -2, 2);
      const withBlocks = (blocks: number | undefined, staged: boolean) => {
        blas.pipelinedRowBlocks = blocks;
        blas.stagedSiluRows = staged;
        try {
          let out: ReturnType<typeof run> | undefined;
          const names = launchesOf(be, () => void (out = run(be, x, T, H, w, 'g')));
          return { out: out!, names };
        } finally {
          blas.pipelinedRowBlocks = undefined;
          blas.stagedSiluRows = true;
        }
      };
      const stages = siluStaging(N, be.device.sharedPerBlockOptin, [256])?.stages; // (256: an aligned pool pointer)
      assert.ok(withBlocks(undefined, false).names.includes('silu_mul_quantize_bf16_e4m3'), 'the register kernel ran');
      assert.ok(stages === undefined || withBlocks(undefined, true).names.includes(`silu_mul_quantize_bf16_e4m3_staged${stages}`), `the ${stages}-stage kernel ran`);
      const perRow = withBlocks(T, false).out;
      for (const staged of [false, true]) {
        const kind = staged ? `staged (${stages ?? 'refused'})` : 'in registers';
        assertBitwise(withBlocks(undefined, staged).out, perRow, `N ${N}, T ${T}, ${kind}: a block an SM against a block per row`);
        assertBitwise(withBlocks(3, staged).out, perRow, `N ${N}, T ${T}, ${kind}: 3 blocks against a block per row`);
      }
    }
  });

  it('FP8 linears of one input (q, k, v) quantise it once, and again after it changes in place', { skip: !be?.canMatmulFp8(256) && 'no FP8 GEMMs on this GPU' }, () => {
    const H = 256, T = 40;
    const ws = [weight('fp8', 256, H), weight('fp8', 64, H), weight('fp8', 64, H)];
    const x = uniform(T * H, -2, 2);
    const xt = be.fromHost(x, [T, H]);
    let got: Float32Array[] = [];
    const names = launchesOf(be, () => (got = ws.map((w) => be.toHost(be.linear(xt, w.g)))));
    assert.equal(names.filter((n) => n === 'quantize_rows_e4m3').length, 1, `one quantisation for three linears (${names.join(', ')})`);
    // Each against a linear of its own fresh copy of x (quantised for it alone).
    ws.forEach((w, i) => assertBitwise(got[i], be.toHost(be.linear(be.fromHost(x, [T, H]), w.g)), `FP8 linear ${i} from the shared quantisation`));
    const twice = uniform(T * H, -2, 2);
    const again = launchesOf(be, () => {
      be.addInPlace(xt, be.fromHost(twice, [T, H]));
      be.linear(xt, ws[0].g);
    });
    assert.equal(again.filter((n) => n === 'quantize_rows_e4m3').length, 1, 'x changed in place: quantised again');
  });

  // A prefill step's norms write their output in the form the GEMMs after them read (normSideOutput):
  // E4M3 codes for FP8 weights, bf16 / f16 for dense and dequantised ones; the linears and the MLP
  // then skip their conversion. The same bits as converting separately, and no conversion launched.
  const sideCases: { kind: Kind; side: string; conversion: string }[] = [
    { kind: 'fp8', side: 'e4m3', conversion: 'quantize_rows_e4m3' },
    { kind: 'BF16', side: 'bf16', conversion: 'f32_to_bf16' },
    { kind: 'F16', side: 'f16', conversion: 'f32_to_f16' },
    { kind: 'w4a16', side: 'bf16', conversion: 'f32_to_bf16' },
  ];
  for (const { kind, side, conversion } of sideCases) {
    it(`a prefill step's norms write their output for ${kind} GEMMs (${side}): the conversion's bits, without it`, { skip: kind === 'fp8' && !be?.canMatmulFp8(256) && 'no FP8 GEMMs on this GPU' }, () => {
      // Rows wider than a warp's norm (> 512 values), so decode and prefill norms are the same kernel;
      // more tokens than quantized weights take in slices on the decode GEMVs.
      const H = 1024, N = 1536, T = DEFAULT_SLICED_MAX_TOKENS.int4 + 9;
      const qkv = [weight(kind, H, H), weight(kind, 128, H)];
      const w = mlpWeights(kind, H, N);
      const normW = be.loadDense('norm', { dtype: 'F32', shape: [H], bytes: new Uint8Array(uniform(H, 0.5, 1.5).buffer) });
      const x = uniform(T * H, -2, 2);
      const res = uniform(T * H, -2, 2);
      const forward = (fused: boolean) => {
        be.fusedNormOutput = fused;
        let outs: Float32Array[] = [];
        const names = launchesOf(be, () => {
          const residual = be.fromHost(res, [T, H]);
          const h = be.rmsNorm(be.fromHost(x, [T, H]), normW, 1e-5);
          const [q, k] = qkv.map((l) => be.linear(h, l.g));
          const h2 = be.addRmsNorm(q, residual, normW, 1e-5);
          const y = mlp(be, h2, w.gate.g, w.up.g, w.down.g);
          outs = [h, q, k, residual, h2, y].map((t) => be.toHost(t));
        });
        return { outs, names };
      };
      try {
        forward(true); // the GEMMs' input type is learned from the GEMMs themselves
        const fused = forward(true);
        const plain = forward(false);
        assert.equal(plain.names.filter((n) => n === conversion).length, 2, `without: the linears and the MLP convert (${plain.names.join(', ')})`);
        assert.deepEqual(fused.names.filter((n) => n === conversion || /norm/.test(n)), [`rms_norm_${side}_b1`, `add_rms_norm_${side}_b1`], 'the norms convert; nothing else does');
        ['norm', 'q', 'k', 'residual', 'add-norm', 'mlp'].forEach((name, i) => assertBitwise(fused.outs[i], plain.outs[i], `${name}: converted by the norm against by ${conversion}`));
      } finally {
        be.fusedNormOutput = true;
      }
    });
  }

  // At 4096 columns the prefill norms walk rows in 256-thread blocks (prefillNormKernel), not the
  // 1024 of a decode step's row kernel: their side output must be the conversion of their own
  // float32 rows (made later, deferred, with the same blocks).
  for (const { kind, side, conversion } of sideCases.slice(0, 2)) {
    it(`at 4096 columns a prefill norm's ${side} output is the ${conversion} of its own (deferred) float32 rows`, { skip: kind === 'fp8' && !be?.canMatmulFp8(256) && 'no FP8 GEMMs on this GPU' }, () => {
      const H = 4096, T = 40;
      const lin = weight(kind, 256, H);
      const normW = be.loadDense('norm', { dtype: 'F32', shape: [H], bytes: new Uint8Array(uniform(H, 0.5, 1.5).buffer) });
      const x = uniform(T * H, -2, 2);
      be.linear(be.rmsNorm(be.fromHost(x, [T, H]), normW, 1e-5, 'linears'), lin.g); // the GEMMs' input type, learned
      let yFused: Float32Array | undefined;
      let hRows: Float32Array | undefined;
      const names = launchesOf(be, () => {
        const h = be.rmsNorm(be.fromHost(x, [T, H]), normW, 1e-5, 'linears');
        yFused = be.toHost(be.linear(h, lin.g));
        hRows = be.toHost(h); // the deferred float32 rows, made now
      });
      assert.ok(names.includes(`rms_norm_${side}_b4`) && !names.includes(conversion), `the norm converts, in 256-thread blocks (${names.join(', ')})`);
      const yConverted = be.toHost(be.linear(be.fromHost(hRows!, [T, H]), lin.g));
      assertBitwise(yFused!, yConverted, `${kind}: the norm's ${side} output against ${conversion} of its float32 rows`);
    });
  }

  it('refuses weights that do not chain, naming their shapes', () => {
    const w = mlpWeights('BF16', 256, 640);
    const bad = weight('BF16', 256, 512);
    const xt = be.fromHost(uniform(40 * 256), [40, 256]);
    assert.throws(() => be.mlp(xt, w.gate.g, w.up.g, bad.g), /mlp: gate \[640, 256\], up \[640, 256\] and down \[256, 512\] do not chain/);
  });
});
