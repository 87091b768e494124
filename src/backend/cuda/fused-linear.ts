// Fused decode linears on CUDA: q/k/v (several linears of one input) in one launch, and gate/up with
// the SiLU product in one pass (kernels/linear-fused.cuh). They take dense bf16/f16/f32 weights and
// 1–8 tokens with K a whole number of 16-byte vectors, and quantized weights of one format on their
// v2 kernels (QuantizedWeights.gemvMany / gemvSiluMul, kernels/quant-linear.cu); anything else (mixed
// formats, act-order int4, prefill, odd K, the 'row' GEMV) runs the separate ops. Both paths give bitwise the same results: the kernels
// share gemv_splitk's loop (kernels/gemv-core.cuh) and silu_mul's expression.

import { GEMV_MAX_TOKENS } from '../../engine/kv-budget.js';
import type { Tensor, Weight } from '../backend.js';
import { CudaDenseWeight, CudaTensor, type CudaBackend } from './cuda-backend.js';
import type { CudaQuantizedWeight, QuantGemvFormat, QuantizedWeights } from './quantized-weights.js';

/**
 * The fused GEMV kernels (kernels/linear-fused.cuh describes each): 'unroll' is the default, the
 * others are the same arithmetic arranged differently, kept for bench/cuda-gemv.ts to compare.
 */
export const FUSED_GEMV_VARIANTS = ['unroll', 'base', 'rows8', 'persist'] as const;
export type FusedGemvVariant = (typeof FUSED_GEMV_VARIANTS)[number];

/**
 * What 'auto' runs, from bench/cuda-gemv.ts on the H100 (2026-11-23): at 1 token 'rows8' made the
 * 8B-shaped decode step fastest (7.44 ms against 7.78 for 'unroll' and 8.37 unfused); at 2–8 tokens
 * 'unroll' is the fastest q/k/v launch, while gate/up·SiLU ran fastest as the separate split-K
 * linears (168 µs against 186 fused at 8 tokens), so 'auto' leaves that one unfused. Every variant
 * gives the same bits, so the choice by token count keeps results independent of batch size.
 */
function autoVariant(T: number, op: 'many' | 'silu'): FusedGemvVariant | undefined {
  if (T === 1) return 'rows8';
  return op === 'many' ? 'unroll' : undefined;
}

interface VariantSpec {
  file: string;
  /** Weight rows a block reads (gate/up: half of each). */
  rows: number;
  /** Token bounds it is compiled for (kernel suffix _tN); a step takes the smallest that fits. */
  maxTokens: readonly number[];
  /** A fixed grid of PERSIST_BLOCKS_PER_SM blocks per SM looping over row groups. */
  persistent: boolean;
}

const VARIANTS: Record<FusedGemvVariant, VariantSpec> = {
  unroll: { file: 'linear-fused.cu', rows: 4, maxTokens: [1, 4, 8], persistent: false },
  base: { file: 'linear-fused-variants.cu', rows: 4, maxTokens: [8], persistent: false },
  rows8: { file: 'linear-fused-variants.cu', rows: 8, maxTokens: [1, 8], persistent: false },
  persist: { file: 'linear-fused-variants.cu', rows: 4, maxTokens: [1, 8], persistent: true },
};

const THREADS = 256;
/** The persistent kernels are built with __launch_bounds__(256, 2): two blocks fit on every SM. */
const PERSIST_BLOCKS_PER_SM = 2;
/** x goes to shared memory (persistent variant) when it fits here, under the 48 KiB a launch gets by default. */
const X_SHARED_MAX_BYTES = 40 * 1024;
/** Matrices one gemv_many launch takes. */
const MANY_PER_LAUNCH = 3;
const DTYPE_BYTES = { bf16: 2, f16: 2, f32: 4 } as const;

/** The dense weights if the fused kernels can run this call, else undefined (run the separate ops). */
function fusable(be: CudaBackend, x: Tensor, weights: readonly Weight[]): CudaDenseWeight[] | undefined {
  if (!be.fusedLinears || be.gemvKernel === 'row') return undefined; // 'row' sums in another order
  const t = x as CudaTensor;
  if (t.rows < 1 || t.rows > GEMV_MAX_TOKENS || t.shape.length !== 2) return undefined;
  const dense: CudaDenseWeight[] = [];
  for (const w of weights) {
    if (!(w instanceof CudaDenseWeight) || w.shape.length !== 2) return undefined;
    dense.push(w);
  }
  const { dtype, shape } = dense[0];
  if (!(dtype in DTYPE_BYTES)) return undefined;
  const K = shape[1];
  // Mismatched inputs go to linear, which names the problem.
  if (K !== t.cols || dense.some((w) => w.dtype !== dtype || w.shape[1] !== K)) return undefined;
  // 16-byte loads need every row of W (and x) 16-byte aligned; gemv_scalar serves the rest.
  if (K === 0 || K % (16 / DTYPE_BYTES[dtype]) !== 0) return undefined;
  return dense;
}

/** A bias as the kernels take it: a float32 vector of n values, or 0 for none (linear's check and message). */
function biasPtr(bias: Weight | undefined, n: number): number {
  if (!bias) return 0;
  if (!(bias instanceof CudaDenseWeight) || bias.dtype !== 'f32' || bias.numel !== n) {
    throw new RangeError(`linear bias: expected a float32 vector of ${n} values, got ${bias instanceof CudaDenseWeight ? bias.dtype : bias.format} [${bias.shape.join(', ')}]`);
  }
  return bias.ptr;
}

/** The kernel for `variant` at T tokens, its grid for `groups` row groups, and x's shared-memory bytes. */
function plan(be: CudaBackend, variant: FusedGemvVariant, T: number, K: number, groups: number) {
  const spec = VARIANTS[variant];
  const maxT = spec.maxTokens.find((m) => m >= T)!;
  const blocks = spec.persistent ? Math.min(groups, be.device.multiprocessors * PERSIST_BLOCKS_PER_SM) : groups;
  const xBytes = T * K * 4;
  const shared = spec.persistent && xBytes <= X_SHARED_MAX_BYTES ? xBytes : 0;
  return { spec, maxT, blocks, shared };
}

function launch(be: CudaBackend, file: string, kernel: string, blocks: number, kinds: string, args: number[], shared: number): void {
  if (blocks === 0) return;
  be.driver.launch(be.kernels.fn(file, kernel), kernel, [blocks, 1, 1], THREADS, kinds, args, shared);
}

// ---- quantized weights (QuantizedWeights.gemvMany / gemvSiluMul, kernels/quant-linear.cu) --------------

/** The backend's quantized-weight half (private in CudaBackend; a getter there would replace this). */
const quantOf = (be: CudaBackend) => be.quantized;

/**
 * The format if the fused quantized kernels can run this call: fused linears on, 1–8 tokens (or a
 * decode step the backend runs in slices, CudaBackend.quantSlices), every weight quantized
 * alike (QuantizedWeights.fusedFormat). They run for every token count: the v2 kernels' results do
 * not depend on it, and fused they read the same bytes in fewer launches.
 */
function quantFusable(be: CudaBackend, x: Tensor, weights: readonly Weight[], op: 'many' | 'silu'): QuantGemvFormat | undefined {
  const t = x as CudaTensor;
  if (!be.fusedLinears || t.rows < 1 || t.shape.length !== 2) return undefined;
  if (t.rows > GEMV_MAX_TOKENS && !be.quantSlices(weights, t.rows)) return undefined;
  return quantOf(be).fusedFormat(weights, t.cols, op);
}

/** linear(x, weights[i], biases?.[i]) for every i; matrices three to a launch where the kernels apply. */
export function fusedLinearMany(be: CudaBackend, x: Tensor, weights: readonly Weight[], biases?: readonly (Weight | undefined)[], requested: FusedGemvVariant | 'auto' = be.fusedGemv): Tensor[] {
  if (biases && biases.length > weights.length) throw new RangeError(`linearMany: ${biases.length} biases for ${weights.length} weights`);
  const format = quantFusable(be, x, weights, 'many');
  if (format) {
    const src = x as CudaTensor;
    const outs = weights.map((w) => new CudaTensor(be.pool, [src.rows, w.shape[0]]));
    for (let first = 0; first < weights.length; first += MANY_PER_LAUNCH) {
      const idx = [...weights.keys()].slice(first, first + MANY_PER_LAUNCH);
      quantOf(be).gemvMany(format, idx.map((i) => weights[i] as CudaQuantizedWeight), idx.map((i) => biasPtr(biases?.[i], weights[i].shape[0])), src.ptr, src.rows, idx.map((i) => outs[i].ptr));
    }
    return outs;
  }
  const variant = requested === 'auto' ? autoVariant((x as CudaTensor).rows, 'many') : requested;
  const dense = weights.length > 0 && variant ? fusable(be, x, weights) : undefined;
  if (!dense || !variant) return weights.map((w, i) => be.linear(x, w, biases?.[i]));
  const src = x as CudaTensor;
  const T = src.rows;
  const K = src.cols;
  const outs = dense.map((w) => new CudaTensor(be.pool, [T, w.shape[0]]));
  for (let first = 0; first < dense.length; first += MANY_PER_LAUNCH) {
    const args: number[] = [src.ptr, T, K];
    let groups = 0;
    for (let i = first; i < first + MANY_PER_LAUNCH; i++) {
      if (i < dense.length) {
        const N = dense[i].shape[0];
        args.push(dense[i].ptr, biasPtr(biases?.[i], N), outs[i].ptr, N);
        groups += Math.ceil(N / VARIANTS[variant].rows);
      } else {
        args.push(0, 0, 0, 0); // an empty matrix: no row groups
      }
    }
    const { spec, maxT, blocks, shared } = plan(be, variant, T, K, groups);
    args.push(shared > 0 ? 1 : 0);
    launch(be, spec.file, `gemv_many_${variant}_${dense[0].dtype}_t${maxT}`, blocks, 'piipppipppipppii', args, shared);
  }
  return outs;
}

/** siluMul(linear(x, gate, gateBias), linear(x, up, upBias)), one pass over gate and up where the kernels apply. */
export function fusedLinearSiluMul(be: CudaBackend, x: Tensor, gate: Weight, up: Weight, gateBias?: Weight, upBias?: Weight, requested: FusedGemvVariant | 'auto' = be.fusedGemv): Tensor {
  const format = quantFusable(be, x, [gate, up], 'silu');
  if (format && gate.shape[0] === up.shape[0]) {
    const src = x as CudaTensor;
    const N = gate.shape[0];
    const out = new CudaTensor(be.pool, [src.rows, N]);
    quantOf(be).gemvSiluMul(format, gate as CudaQuantizedWeight, up as CudaQuantizedWeight, biasPtr(gateBias, N), biasPtr(upBias, N), src.ptr, src.rows, out.ptr);
    return out;
  }
  const variant = requested === 'auto' ? autoVariant((x as CudaTensor).rows, 'silu') : requested;
  const dense = variant ? fusable(be, x, [gate, up]) : undefined;
  if (!dense || !variant || dense[0].shape[0] !== dense[1].shape[0]) {
    const g = be.linear(x, gate, gateBias);
    const u = be.linear(x, up, upBias);
    const out = be.siluMul(g, u);
    be.release(g, u);
    return out;
  }
  const [g, u] = dense;
  const src = x as CudaTensor;
  const T = src.rows;
  const K = src.cols;
  const N = g.shape[0];
  const out = new CudaTensor(be.pool, [T, N]);
  // A block reads rows/2 rows of gate and the same rows of up.
  const { spec, maxT, blocks, shared } = plan(be, variant, T, K, Math.ceil(N / (VARIANTS[variant].rows / 2)));
  launch(be, spec.file, `gemv_silu_${variant}_${g.dtype}_t${maxT}`, blocks, 'piipppppii', [
    src.ptr, T, K, g.ptr, biasPtr(gateBias, N), u.ptr, biasPtr(upBias, N), out.ptr, N, shared > 0 ? 1 : 0,
  ], shared);
  return out;
}
