// How many bytes a model needs on a device, term by term: weights in each format (embeddings and
// lm_head kept at the checkpoint's precision, as real quantized checkpoints keep them), the KV
// cache per token, a draft model or EAGLE-3 head, and the runtime's activation, workspace and
// CUDA-graph overheads. Every estimate that is not exact arithmetic says where it comes from.

import { DEFAULT_BLOCK_SIZE, kvBytesPerToken } from '../engine/kv-cache.js';
import type { ModelConfig } from '../model/config.js';

export const WEIGHT_FORMATS = ['bf16', 'fp8', 'w8a16', 'w4a16', 'nvfp4'] as const;
export type WeightFormat = (typeof WEIGHT_FORMATS)[number];

export const KV_CACHE_DTYPES = ['bf16', 'fp8'] as const;
export type KvCacheDtype = (typeof KV_CACHE_DTYPES)[number];

/** Tokens per paged-KV block (the engine's default): a sequence's KV is allocated in whole blocks. */
export const KV_BLOCK_SIZE = DEFAULT_BLOCK_SIZE;
/** Group size of W4A16 scales (compressed-tensors W4A16 preset, GPTQ/AWQ g128). */
export const INT4_GROUP_SIZE = 128;
/** NVFP4 block size: one E4M3 scale per 16 weights. */
export const NVFP4_GROUP_SIZE = 16;

/** Bytes per element of the checkpoint's storage dtype (config.json torch_dtype). */
export function dtypeBytes(dtype: string): number {
  const t = dtype.toLowerCase().replace('torch.', '');
  if (t === 'float32' || t === 'fp32' || t === 'f32') return 4;
  if (t === 'float8_e4m3fn' || t === 'fp8') return 1;
  return 2; // bfloat16, float16
}

/** [out, in] of every linear layer of one decoder layer (q, k, v, o, gate, up, down). */
export function layerLinearShapes(cfg: Pick<ModelConfig, 'hiddenSize' | 'numHeads' | 'numKvHeads' | 'headDim' | 'intermediateSize'>): [number, number][] {
  const h = cfg.hiddenSize;
  const q = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  const i = cfg.intermediateSize;
  return [
    [q, h],
    [kv, h],
    [kv, h],
    [h, q],
    [i, h],
    [i, h],
    [h, i],
  ];
}

/** Bytes of one [rows, cols] linear weight in `format`, scales included. */
export function linearBytes(rows: number, cols: number, format: WeightFormat): { data: number; scales: number } {
  switch (format) {
    case 'bf16':
      return { data: rows * cols * 2, scales: 0 };
    case 'fp8': // E4M3 weights, one bf16 scale per output channel (compressed-tensors FP8_DYNAMIC)
    case 'w8a16': // int8 weights, one bf16 scale per output channel
      return { data: rows * cols, scales: rows * 2 };
    case 'w4a16': // int4 packed two per byte, a bf16 scale per 128 inputs, symmetric (no zero points)
      return { data: Math.ceil((rows * cols) / 2), scales: rows * Math.ceil(cols / INT4_GROUP_SIZE) * 2 };
    case 'nvfp4': // E2M1 packed two per byte, an E4M3 scale per 16, FP32 global weight and input scales
      return { data: Math.ceil((rows * cols) / 2), scales: rows * Math.ceil(cols / NVFP4_GROUP_SIZE) + 8 };
  }
}

export interface WeightBreakdown {
  format: WeightFormat;
  /** Every parameter of the checkpoint (embedding, lm_head unless tied, linears, norms, biases). */
  params: number;
  linearParams: number;
  embeddingBytes: number;
  /** 0 when the embeddings are tied. */
  lmHeadBytes: number;
  linearBytes: number;
  scaleBytes: number;
  /** Norm weights and biases (checkpoint precision). */
  otherBytes: number;
  totalBytes: number;
}

/**
 * Weight bytes of a model in `format`. Embeddings, lm_head, norms and biases stay at the
 * checkpoint's precision (config.json torch_dtype; bf16 for every published model here).
 */
export function weightBytes(cfg: ModelConfig, format: WeightFormat): WeightBreakdown {
  const cb = dtypeBytes(cfg.dtype);
  const embParams = cfg.vocabSize * cfg.hiddenSize;
  const lmHeadParams = cfg.tieWordEmbeddings ? 0 : embParams;
  let linearParams = 0;
  let data = 0;
  let scales = 0;
  for (const [r, c] of layerLinearShapes(cfg)) {
    const b = linearBytes(r, c, format);
    linearParams += r * c;
    data += b.data;
    scales += b.scales;
  }
  const q = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  let otherPerLayer = 2 * cfg.hiddenSize; // input_layernorm, post_attention_layernorm
  if (cfg.qkNorm) otherPerLayer += 2 * cfg.headDim;
  if (cfg.qkvBias) otherPerLayer += q + 2 * kv;
  if (cfg.oBias) otherPerLayer += cfg.hiddenSize;
  if (cfg.mlpBias) otherPerLayer += 2 * cfg.intermediateSize + cfg.hiddenSize;
  const L = cfg.numLayers;
  const otherParams = L * otherPerLayer + cfg.hiddenSize; // + final norm
  const embeddingBytes = embParams * cb;
  const lmHeadBytes = lmHeadParams * cb;
  const otherBytes = otherParams * cb;
  return {
    format,
    params: embParams + lmHeadParams + L * linearParams + otherParams,
    linearParams: L * linearParams,
    embeddingBytes,
    lmHeadBytes,
    linearBytes: L * data,
    scaleBytes: L * scales,
    otherBytes,
    totalBytes: embeddingBytes + lmHeadBytes + L * (data + scales) + otherBytes,
  };
}

/** KV bytes for one token in every layer: the engine's count. */
export { kvBytesPerToken };

/**
 * KV bytes for one sequence of `tokens` tokens, allocated in whole blocks; a sliding-window layer
 * keeps at most its window (rounded up to a block) of them.
 */
export function kvBytesPerSequence(cfg: Pick<ModelConfig, 'numLayers' | 'numKvHeads' | 'headDim' | 'slidingWindows'>, kvDtype: KvCacheDtype, tokens: number): number {
  const perLayerToken = kvBytesPerToken({ numLayers: 1, numKvHeads: cfg.numKvHeads, headDim: cfg.headDim }, kvDtype);
  const rounded = Math.ceil(tokens / KV_BLOCK_SIZE) * KV_BLOCK_SIZE;
  let total = 0;
  for (let l = 0; l < cfg.numLayers; l++) {
    const w = cfg.slidingWindows[l] ?? 0;
    const kept = w > 0 ? Math.min(rounded, Math.ceil((w + 1) / KV_BLOCK_SIZE) * KV_BLOCK_SIZE) : rounded;
    total += kept * perLayerToken;
  }
  return total;
}

// ---------------------------------------------------------------------------------------------
// Speculative decoding: what the proposer adds.

export type SpecMethod = 'draft_model' | 'eagle3' | 'ngram';

/** The shape of an EAGLE-3 head (formats.md §7.1): one decoder layer over [embedding ‖ fused features]. */
export interface Eagle3Shape {
  hiddenSize: number;
  targetHiddenSize: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  draftVocabSize: number;
  /** Whether the head brings its own embed_tokens (else it shares the target's). */
  ownEmbedding: boolean;
}

/** EAGLE-3 head parameters: fc (3·Ht → H), q/k/v over 2H inputs, o, SwiGLU MLP, 4 norms, lm_head over the draft vocabulary. */
export function eagle3Params(s: Eagle3Shape): { params: number; bytes: number } {
  const H = s.hiddenSize;
  const q = s.numHeads * s.headDim;
  const kv = s.numKvHeads * s.headDim;
  const params =
    3 * s.targetHiddenSize * H + // fc
    q * 2 * H + 2 * kv * 2 * H + H * q + // attention over concat(embed, hidden)
    3 * s.intermediateSize * H + // gate, up, down
    4 * H + // hidden_norm, input_layernorm, post_attention_layernorm, norm
    s.draftVocabSize * H + // lm_head
    (s.ownEmbedding ? s.vocabSize * H : 0);
  // d2t (int64 per draft id) and t2d (bool per target id) map the draft vocabulary onto the target's.
  const mapBytes = s.draftVocabSize < s.vocabSize ? s.draftVocabSize * 8 + s.vocabSize : 0;
  return { params, bytes: params * 2 + mapBytes };
}

/** An EAGLE-3 head as one would train it for `target` (same width, heads and MLP; a 32k draft vocabulary). */
export function defaultEagle3Shape(target: ModelConfig): Eagle3Shape {
  return {
    hiddenSize: target.hiddenSize,
    targetHiddenSize: target.hiddenSize,
    numHeads: target.numHeads,
    numKvHeads: target.numKvHeads,
    headDim: target.headDim,
    intermediateSize: target.intermediateSize,
    vocabSize: target.vocabSize,
    draftVocabSize: Math.min(32000, target.vocabSize),
    ownEmbedding: false,
  };
}

/** The EAGLE-3 shape a head's config.json describes. */
export function eagle3ShapeFrom(cfg: ModelConfig, target: ModelConfig): Eagle3Shape {
  const raw = cfg.raw;
  const targetHidden = typeof raw.target_hidden_size === 'number' ? raw.target_hidden_size : target.hiddenSize;
  return {
    hiddenSize: cfg.hiddenSize,
    targetHiddenSize: targetHidden,
    numHeads: cfg.numHeads,
    numKvHeads: cfg.numKvHeads,
    headDim: cfg.headDim,
    intermediateSize: cfg.intermediateSize,
    vocabSize: cfg.vocabSize,
    draftVocabSize: typeof raw.draft_vocab_size === 'number' ? raw.draft_vocab_size : cfg.vocabSize,
    // A head whose width differs from the target's cannot share its embedding (formats.md §7.1).
    ownEmbedding: cfg.hiddenSize !== target.hiddenSize,
  };
}

/** Does a config.json describe an EAGLE-3 head rather than a standalone draft model. */
export function isEagle3Config(cfg: ModelConfig): boolean {
  const archs = Array.isArray(cfg.raw.architectures) ? (cfg.raw.architectures as unknown[]).map(String) : [];
  return archs.some((a) => /eagle3/i.test(a)) || cfg.raw.draft_vocab_size !== undefined || cfg.raw.eagle_config !== undefined;
}

// ---------------------------------------------------------------------------------------------
// Runtime overheads (estimates; see docs/planning.md for the reasoning).

/**
 * Peak activation memory of one forward step over `tokens` tokens (the chunked-prefill budget,
 * --max-num-batched-tokens): per token the residual, the normed input, q/k/v, the attention output,
 * gate, up and their product live at once (bf16), plus fp32 logits and probabilities for the rows
 * that sample (at most one per running sequence). vLLM measures the same peak with a profiling run.
 */
export function activationBytes(cfg: ModelConfig, tokens: number, samplingRows: number): number {
  const qkv = (cfg.numHeads + 2 * cfg.numKvHeads) * cfg.headDim;
  const perToken = 2 * (3 * cfg.hiddenSize + qkv + 3 * cfg.intermediateSize);
  const rows = Math.min(tokens, samplingRows);
  return tokens * perToken + rows * cfg.vocabSize * 4 * 2;
}

/**
 * Fixed workspaces: 32 MiB for cuBLASLt (NVIDIA's recommended workspace on Hopper) plus 256 MiB of
 * split-KV attention buffers (the order FlashInfer-style decode kernels reserve in vLLM).
 */
export const WORKSPACE_BYTES = (32 + 256) * 2 ** 20;

/**
 * CUDA graphs for the decode step at each captured batch size: their private memory pools and
 * node state. vLLM reports "Graph capturing ... took 0.3-1 GiB" for 1B-70B models; we model it as
 * 256 MiB plus 6 MiB per layer (8B: 0.44 GiB, 70B: 0.72 GiB).
 */
export function cudaGraphBytes(cfg: ModelConfig): number {
  return (256 + 6 * cfg.numLayers) * 2 ** 20;
}

/**
 * What the device leaves to the engine.
 * - Discrete GPUs: total × gpu-memory-utilization (0.90 by default, as vLLM); the rest covers the
 *   CUDA context, driver allocations, other processes and fragmentation.
 * - Jetson (memory shared with the CPU): the OS, JetPack services, the CPU side of this process and
 *   other processes live in the same pool. We reserve 1.5 GB + 8% of the total (Thor 128 GB keeps
 *   11.7 GB → 116.3 GB usable; AGX Orin 64 GB keeps 6.6 GB; Orin Nano 8 GB keeps 2.1 GB).
 */
export function reservedBytes(totalBytes: number, unified: boolean, gpuMemoryUtilization = 0.9, reserveOverrideBytes?: number): number {
  if (reserveOverrideBytes !== undefined) return reserveOverrideBytes;
  if (unified) return 1.5e9 + 0.08 * totalBytes;
  return totalBytes * (1 - gpuMemoryUtilization);
}
