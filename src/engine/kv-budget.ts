// How big the KV cache may be on a GPU, with vLLM's --gpu-memory-utilization semantics: the engine
// may use that fraction of the device's total memory for weights, activations and the KV cache; the
// rest covers the CUDA context, fragmentation and anything else on the device. Pure arithmetic over
// numbers the backend reports, so it is tested without a GPU (test/kv-budget.test.ts).

import { CapacityError, InvalidRequestError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { WORKSPACE_BYTES } from '../plan/memory.js';

export const DEFAULT_GPU_MEMORY_UTILIZATION = 0.9;

/** Steps of at most this many tokens take the CUDA backend's GEMVs, more its GEMMs (or, quantized, the GEMVs in slices). */
export const GEMV_MAX_TOKENS = 8;

/**
 * Decode steps of this many tokens or more (up to GEMV_MAX_TOKENS) multiply 16-bit dense weights on
 * cuBLASLt, which from 4 tokens streams the weights faster than the GEMVs (CudaBackend.decodeGemmFor).
 */
export const DECODE_GEMM_MIN_TOKENS = 4;

/**
 * Steps of up to this many tokens may be recorded as CUDA graphs (decode steps of up to 32 sequences,
 * speculative windows of as many tokens); an engine whose largest decode step is smaller records no
 * larger step (LLM.load), so the memory set aside for the graphs' activations follows max_num_seqs.
 */
export const GRAPH_MAX_TOKENS = 32;

/** Smallest step the automatic --max-num-batched-tokens choice goes down to: the GEMV size. */
export const MIN_AUTO_BATCHED_TOKENS = GEMV_MAX_TOKENS;

export function checkGpuMemoryUtilization(f: number): number {
  if (!(typeof f === 'number' && f > 0 && f <= 1)) throw new InvalidRequestError(`gpu_memory_utilization must be in (0, 1], got ${f}`);
  return f;
}

/** The shapes one step's activations depend on. */
export type ActivationShape = Pick<ModelConfig, 'hiddenSize' | 'numLayers' | 'numHeads' | 'numKvHeads' | 'headDim' | 'intermediateSize' | 'vocabSize'>;

/** Weight formats (Weight.format) of the decoder linears and of the lm_head. */
export interface StepWeightFormats {
  linears: string;
  lmHead: string;
}

/**
 * Scratch a sampled logit row takes on the CUDA backend (sampling.cu's RowPre: the row passes' per
 * segment maxima and sums and the first histogram): 32 × 16 + 32 × 24 + 2048 × (4 + 8 + 8) bytes.
 */
export const SAMPLE_PRE_BYTES = 32 * 16 + 32 * 24 + 2048 * (4 + 8 + 8);

/**
 * Device bytes one forward step over `tokens` tokens (`logitRows` of them with logits) holds at its
 * peak on the CUDA backend. The forward gives each intermediate back as soon as it is used
 * (Backend.release), so at any moment a step holds:
 * - the residual stream and the current normed input (float32, per token);
 * - one layer's float32 intermediates: q, k, v, the attention output, o, the post-attention norm and
 *   down, and the MLP's middle (counted all at once: an upper bound). The MLP's middle: for a step of
 *   more than 8 tokens (GEMMs, CudaBackend.mlp) its input rounded to 16 bits and gate, up and their
 *   product in bf16 — or, for FP8 weights on the FP8 tensor cores, the quantised input, gate's and
 *   up's float32 GEMM outputs and the product's FP8 codes; for fewer tokens gate, up and product in
 *   float32 (the fused decode kernels make none of them, so an upper bound there too);
 * - for a step of more than 8 tokens, one linear's input rounded to bf16/f16 for cuBLASLt (the
 *   widest of q/k/v and o; a copy is released when the next replaces it). Quantized weights are
 *   dequantised into one scratch allocated at load, already counted in the memory in use after loading;
 * - the logits rows, each with the sampling kernel's scratch (SAMPLE_PRE_BYTES), and the per-step
 *   uploads (ids, positions, slots, RoPE tables).
 * Each buffer is rounded up to the pool's size class (at most 25% more, 1 KiB at least). An upper
 * bound the GPU test holds the pool's measured growth to (test/dummy-load.test.ts), for the default
 * path (CudaBackend.fusedMlp; turning it off for a comparison takes the float32 middle at any size).
 */
export function stepActivationBytes(cfg: ActivationShape, tokens: number, logitRows: number, formats: StepWeightFormats = { linears: 'bf16', lmHead: 'bf16' }): number {
  const h = cfg.hiddenSize;
  const q = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  const ff = cfg.intermediateSize;
  const buffer = (bytes: number) => Math.max(1024, Math.ceil(bytes * 1.25));
  const f32 = (n: number) => buffer(n * 4);
  const gemms = tokens > GEMV_MAX_TOKENS && formats.linears !== 'f32';
  // Decode steps of 4-8 tokens on 16-bit weights take cuBLASLt where the backend has it, else the
  // GEMVs: counted both ways (their buffers are small).
  const half = (f: string) => f === 'bf16' || f === 'f16';
  const decodeGemms = tokens >= DECODE_GEMM_MIN_TOKENS && tokens <= GEMV_MAX_TOKENS && half(formats.linears);
  let perLayer = [h, q, kv, kv, q, h, h, h].reduce((a, n) => a + f32(tokens * n), 0);
  if (!gemms) perLayer += 3 * f32(tokens * ff);
  if (gemms && formats.linears === 'fp8') perLayer += 2 * f32(tokens * Math.ceil(ff / 4) * 4) + buffer(tokens * h) + buffer(tokens * ff) + 2 * f32(tokens);
  else if (gemms || decodeGemms) perLayer += 3 * buffer(tokens * ff * 2) + buffer(tokens * h * 2);
  // The input copy for cuBLASLt: the widest input of q/k/v and o (one alive at a time).
  if (gemms || decodeGemms) perLayer += buffer(tokens * Math.max(h, q) * 2);
  const rows = Math.min(tokens, logitRows);
  let head = rows > 0 ? f32(rows * h) * 2 + f32(rows * cfg.vocabSize) + buffer(rows * SAMPLE_PRE_BYTES) : 0;
  if ((rows > GEMV_MAX_TOKENS && formats.lmHead !== 'f32') || (rows >= DECODE_GEMM_MIN_TOKENS && half(formats.lmHead))) head += buffer(rows * h * 2);
  const uploads = 4 * f32(tokens) + 2 * f32((tokens * cfg.headDim) / 2);
  return 2 * f32(tokens * h) + perLayer + head + uploads;
}

/**
 * What sampled drafts' distributions hold on the CUDA backend through a step (GpuSamplingRow.distRow:
 * a float32 row of the target vocabulary for every drafted token of a sampled request, read by the
 * verification in the same step): maxNumSeqs · k rows at most, rounded up as an activation is.
 */
export function draftDistributionBytes(maxNumSeqs: number, numSpeculativeTokens: number, vocabSize: number): number {
  return Math.max(1024, Math.ceil(maxNumSeqs * numSpeculativeTokens * vocabSize * 4 * 1.25));
}

export interface KvBudgetInput {
  totalBytes: number;
  /** Device memory in use once the weights are loaded (total − free). */
  usedBytes: number;
  gpuMemoryUtilization: number;
  /** Activations held: one step's (stepActivationBytes), plus the recorded decode steps' (CUDA graphs); WORKSPACE_BYTES is added to it here. */
  activationBytes: number;
  /** KV bytes per token of every cache sized with the target's token count (target + draft model). */
  kvBytesPerToken: number;
  /** Their element type, for messages. */
  kvDtype: string;
  blockSize: number;
  maxModelLen: number;
  /** More than maxNumSeqs × maxModelLen tokens can never be held by running sequences at once. */
  maxNumSeqs: number;
}

export interface KvBudget {
  tokens: number;
  bytes: number;
  /** The element type (KvBudgetInput.kvDtype). */
  dtype: string;
  /** F × total − used − reserve: what the KV cache could take before rounding and the cap. */
  availableBytes: number;
  /** Activations + workspace set aside for the largest step. */
  reserveBytes: number;
  /** tokens / max_model_len: how many full-length sequences fit at once. */
  maxConcurrency: number;
  /** Limited to max_num_seqs × max_model_len rather than by memory. */
  capped: boolean;
}

const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;

/**
 * KV cache tokens = floor((F · total − used − activations − workspace) / bytes per token), rounded down
 * to whole blocks and capped at max_num_seqs × max_model_len. Throws, naming the numbers and the two
 * fixes, when the result cannot hold one sequence of max_model_len (as vLLM refuses to start).
 */
export function kvCacheBudget(input: KvBudgetInput): KvBudget {
  const { totalBytes, usedBytes, gpuMemoryUtilization: f, blockSize, maxModelLen, kvBytesPerToken: perToken } = input;
  checkGpuMemoryUtilization(f);
  const reserveBytes = input.activationBytes + WORKSPACE_BYTES;
  const allowed = f * totalBytes;
  const availableBytes = allowed - usedBytes - reserveBytes;
  const blockBytes = perToken * blockSize;
  const byMemory = availableBytes > 0 ? Math.floor(availableBytes / blockBytes) * blockSize : 0;
  const seqTokens = Math.ceil(maxModelLen / blockSize) * blockSize;
  const cap = input.maxNumSeqs * seqTokens;
  const tokens = Math.min(byMemory, cap);
  const situation =
    `--gpu-memory-utilization ${f} allows ${gib(allowed)} of the GPU's ${gib(totalBytes)}; ${gib(usedBytes)} is in use after the weights ` +
    `and ${gib(reserveBytes)} is kept for activations (one step's, and recorded CUDA-graph steps') and workspaces`;
  if (availableBytes <= 0) {
    throw new CapacityError(`no memory is left for the KV cache: ${situation}; raise --gpu-memory-utilization, lower --max-num-batched-tokens, or use a smaller or quantized model`);
  }
  if (tokens < seqTokens) {
    const fits = tokens > 0 ? `at most ${tokens} tokens fit` : 'not one KV block fits';
    throw new CapacityError(
      `the KV cache cannot hold one sequence of max_model_len ${maxModelLen}: that needs ${gib(seqTokens * perToken)} ` +
        `(${perToken} bytes per token, ${input.kvDtype}), but only ${gib(Math.max(0, availableBytes))} is left (${situation}); ` +
        `lower --max-model-len (${fits}) or raise --gpu-memory-utilization`,
    );
  }
  return { tokens, bytes: tokens * perToken, dtype: input.kvDtype, availableBytes, reserveBytes, maxConcurrency: tokens / maxModelLen, capped: byMemory > cap };
}

/** vLLM's two start-up lines in one: the cache's size and how many full-length requests it holds. */
export function kvCacheLine(b: KvBudget, maxModelLen: number, maxNumSeqs: number): string {
  const capped = b.capped ? ` (capped at max_num_seqs ${maxNumSeqs} × max_model_len; ${gib(b.availableBytes)} was available)` : '';
  return `KV cache: ${b.tokens} tokens (${gib(b.bytes)}, ${b.dtype}), max concurrency ${b.maxConcurrency.toFixed(2)}× at max_model_len ${maxModelLen}${capped}`;
}

/**
 * The default --max-num-batched-tokens on a GPU: `preferred`, halved while one step's memory would
 * take more than half of what the weights leave (F · total − used), down to `min`. With a layer's
 * activations alive at a time (see stepActivationBytes) a 70B model's 2048-token step needs about
 * 1.5 GiB, so this only bites on small devices.
 */
export function fitBatchedTokens(input: { totalBytes: number; usedBytes: number; gpuMemoryUtilization: number; activationBytesFor: (tokens: number) => number; preferred: number; min?: number }): number {
  const left = input.gpuMemoryUtilization * input.totalBytes - input.usedBytes;
  const min = Math.min(input.min ?? MIN_AUTO_BATCHED_TOKENS, input.preferred);
  let tokens = input.preferred;
  while (tokens > min && input.activationBytesFor(tokens) > left / 2) tokens = Math.max(min, Math.floor(tokens / 2));
  return tokens;
}
