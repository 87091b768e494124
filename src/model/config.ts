// What a Llama-family model is, read from a Hugging Face config.json: sizes, attention layout,
// RoPE variant, biases and norms that differ between Llama, Mistral, Qwen2 and Qwen3.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ModelLoadError } from '../errors.js';

export const SUPPORTED_ARCHITECTURES = ['LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM', 'Qwen3ForCausalLM'] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

export const SUPPORTED_ROPE_TYPES = ['default', 'linear', 'dynamic', 'llama3', 'yarn'] as const;
export type RopeType = (typeof SUPPORTED_ROPE_TYPES)[number];

export interface RopeConfig {
  type: RopeType;
  theta: number;
  /** Dimensions of each head that rotate (head_dim × partial_rotary_factor). */
  rotaryDim: number;
  factor: number;
  originalMaxPositionEmbeddings: number;
  maxPositionEmbeddings: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  attentionFactor?: number;
  betaFast: number;
  betaSlow: number;
  mscale?: number;
  mscaleAllDim?: number;
  truncate: boolean;
}

export interface ModelConfig {
  architecture: Architecture;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  rmsNormEps: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  rope: RopeConfig;
  /** Bias on q, k, v projections (Qwen2 always; Llama/Qwen3 with attention_bias). */
  qkvBias: boolean;
  /** Bias on o_proj (Llama/Qwen3 with attention_bias; never Qwen2). */
  oBias: boolean;
  mlpBias: boolean;
  /** Qwen3: RMSNorm over head_dim on q and k before RoPE. */
  qkNorm: boolean;
  /** Per layer: the attention window in tokens, or 0 for full attention. */
  slidingWindows: number[];
  bosTokenId?: number;
  eosTokenIds: number[];
  /** Storage dtype the checkpoint declares (torch_dtype / dtype), e.g. 'bfloat16'. */
  dtype: string;
  /** The raw JSON, for readers of fields we do not model (quantization_config, ...). */
  raw: Record<string, unknown>;
}

/** Read and validate `dir/config.json`. Every rejection names the file, the key and what is supported. */
export function loadModelConfig(dir: string): ModelConfig {
  const path = join(dir, 'config.json');
  if (!existsSync(path)) throw new ModelLoadError(`${dir}: missing config.json (is this a Hugging Face model directory?)`);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ModelLoadError(`${path}: not valid JSON (${(err as Error).message})`);
  }
  return parseModelConfig(raw, path);
}

export function parseModelConfig(raw: Record<string, unknown>, path = 'config.json'): ModelConfig {
  const archs = raw.architectures;
  const architecture = Array.isArray(archs) ? archs[0] : undefined;
  if (typeof architecture !== 'string') throw new ModelLoadError(`${path}: no "architectures" entry; supported: ${SUPPORTED_ARCHITECTURES.join(', ')}`);
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(architecture)) {
    throw new ModelLoadError(`${path}: architecture '${architecture}' is not supported; supported: ${SUPPORTED_ARCHITECTURES.join(', ')}`);
  }
  const arch = architecture as Architecture;

  const int = (key: string, fallback?: number): number => {
    const v = raw[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new ModelLoadError(`${path}: "${key}" must be a positive integer, got ${JSON.stringify(raw[key])}`);
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = raw[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ModelLoadError(`${path}: "${key}" must be a number, got ${JSON.stringify(raw[key])}`);
    return v;
  };

  const hiddenSize = int('hidden_size');
  const numHeads = int('num_attention_heads');
  const numKvHeads = int('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) throw new ModelLoadError(`${path}: num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  const headDim = raw.head_dim == null ? hiddenSize / numHeads : int('head_dim');
  if (!Number.isInteger(headDim)) throw new ModelLoadError(`${path}: hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads} and no head_dim is given`);
  const numLayers = int('num_hidden_layers');
  const maxPositionEmbeddings = int('max_position_embeddings', 2048);
  const act = raw.hidden_act ?? raw.hidden_activation ?? 'silu';
  if (act !== 'silu') throw new ModelLoadError(`${path}: hidden_act '${String(act)}' is not supported; supported: silu`);

  const attentionBias = raw.attention_bias === true;
  const qkvBias = arch === 'Qwen2ForCausalLM' ? true : attentionBias;
  const oBias = arch === 'Qwen2ForCausalLM' ? false : attentionBias;

  const eos = raw.eos_token_id;
  const eosTokenIds = (Array.isArray(eos) ? eos : eos == null ? [] : [eos]).filter((x): x is number => typeof x === 'number');

  return {
    architecture: arch,
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: int('intermediate_size'),
    rmsNormEps: num('rms_norm_eps', 1e-6),
    vocabSize: int('vocab_size'),
    maxPositionEmbeddings,
    tieWordEmbeddings: raw.tie_word_embeddings === true,
    rope: parseRope(raw, path, headDim, maxPositionEmbeddings),
    qkvBias,
    oBias,
    mlpBias: raw.mlp_bias === true,
    qkNorm: arch === 'Qwen3ForCausalLM',
    slidingWindows: parseSlidingWindows(raw, arch, numLayers),
    bosTokenId: typeof raw.bos_token_id === 'number' ? raw.bos_token_id : undefined,
    eosTokenIds,
    dtype: String(raw.torch_dtype ?? raw.dtype ?? 'float32'),
    raw,
  };
}

function parseRope(raw: Record<string, unknown>, path: string, headDim: number, maxPos: number): RopeConfig {
  // transformers >= 5 writes `rope_parameters` (holding rope_theta too); older files `rope_scaling` + `rope_theta`.
  const params = (raw.rope_parameters ?? raw.rope_scaling ?? {}) as Record<string, unknown> | null;
  const p = params ?? {};
  const type = String(p.rope_type ?? p.type ?? 'default');
  if (!(SUPPORTED_ROPE_TYPES as readonly string[]).includes(type)) {
    throw new ModelLoadError(`${path}: rope_scaling.rope_type '${type}' is not supported; supported: ${SUPPORTED_ROPE_TYPES.join(', ')}`);
  }
  const theta = Number(p.rope_theta ?? raw.rope_theta ?? 10000);
  const partial = Number(p.partial_rotary_factor ?? raw.partial_rotary_factor ?? 1);
  const rotaryDim = Math.floor(headDim * partial);
  const orig = Number(p.original_max_position_embeddings ?? raw.original_max_position_embeddings ?? maxPos);
  let factor = Number(p.factor ?? 1);
  if (type === 'yarn' && p.factor == null) factor = maxPos / orig;
  if (type !== 'default' && !(factor > 0)) throw new ModelLoadError(`${path}: rope_scaling.factor must be > 0 for rope_type '${type}'`);
  const opt = (k: string): number | undefined => (p[k] == null ? undefined : Number(p[k]));
  return {
    type: type as RopeType,
    theta,
    rotaryDim,
    factor,
    originalMaxPositionEmbeddings: orig,
    maxPositionEmbeddings: maxPos,
    lowFreqFactor: Number(p.low_freq_factor ?? 1),
    highFreqFactor: Number(p.high_freq_factor ?? 4),
    attentionFactor: opt('attention_factor'),
    betaFast: Number(p.beta_fast ?? 32),
    betaSlow: Number(p.beta_slow ?? 1),
    mscale: opt('mscale'),
    mscaleAllDim: opt('mscale_all_dim'),
    truncate: p.truncate !== false,
  };
}

function parseSlidingWindows(raw: Record<string, unknown>, arch: Architecture, numLayers: number): number[] {
  const window = typeof raw.sliding_window === 'number' ? raw.sliding_window : 0;
  const layerTypes = raw.layer_types;
  if (Array.isArray(layerTypes) && layerTypes.length === numLayers) {
    return layerTypes.map((t) => (t === 'sliding_attention' ? window : 0));
  }
  if (arch === 'MistralForCausalLM') return new Array(numLayers).fill(window);
  if ((arch === 'Qwen2ForCausalLM' || arch === 'Qwen3ForCausalLM') && raw.use_sliding_window === true) {
    const from = typeof raw.max_window_layers === 'number' ? raw.max_window_layers : numLayers;
    return Array.from({ length: numLayers }, (_, i) => (i >= from ? window : 0));
  }
  return new Array(numLayers).fill(0);
}
