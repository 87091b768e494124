// An EAGLE-3 draft head (formats.md §7.1): fc fuses the target's low/mid/high hidden states, one
// decoder layer attends over concat(input_layernorm(embed), hidden_norm(hidden)), then norm and an
// lm_head over a draft vocabulary mapped to target ids by d2t. Written against the Backend ops:
// the concatenated attention input is never built — q/k/v are split at load into the columns that
// read the embedding and those that read the hidden state, and the two products are added.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { linearMany, mlp, ropeWriteKv, type AttentionBatch, type Backend, type KvCacheStorage, type Tensor, type Weight } from '../backend/backend.js';
import { ModelLoadError } from '../errors.js';
import { parseModelConfig, type RopeConfig } from './config.js';
import type { SafetensorsCheckpoint, HostTensor } from './load/safetensors.js';
import { ropeFrequencies, RopeTable } from './rope.js';

export const EAGLE3_ARCHITECTURES = ['LlamaForCausalLMEagle3', 'LlamaForCausalLM', 'Eagle3LlamaForCausalLM'] as const;

export interface Eagle3Config {
  architecture: string;
  /** H: the head's width. */
  hiddenSize: number;
  /** Ht: width of each fused target hidden state (= H unless target_hidden_size says otherwise). */
  targetHiddenSize: number;
  intermediateSize: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  /** The target's vocabulary size. */
  vocabSize: number;
  draftVocabSize: number;
  /** The head's own RoPE (not the target's). */
  rope: RopeConfig;
  /** Explicit eagle_aux_hidden_state_layer_ids (vLLM's sense: HF hidden_states[k] = input of layer k). */
  auxLayerIds?: number[];
  /** speculators' norm_before_residual: the residual is hidden_norm(g) instead of g. */
  normBeforeResidual: boolean;
  raw: Record<string, unknown>;
}

/** Default fused target layers for an L-layer target: (2, L/2, L−3) as HF hidden_states indices. */
export function defaultEagle3AuxLayers(numTargetLayers: number): number[] {
  return [2, Math.floor(numTargetLayers / 2), numTargetLayers - 3];
}

export function loadEagle3Config(dir: string): Eagle3Config {
  const path = join(dir, 'config.json');
  if (!existsSync(path)) throw new ModelLoadError(`${dir}: missing config.json (is this an EAGLE-3 head directory?)`);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ModelLoadError(`${path}: not valid JSON (${(err as Error).message})`);
  }
  return parseEagle3Config(raw, path);
}

export function parseEagle3Config(raw: Record<string, unknown>, path = 'config.json'): Eagle3Config {
  const archs = raw.architectures;
  const architecture = Array.isArray(archs) && typeof archs[0] === 'string' ? archs[0] : undefined;
  if (!architecture || !(EAGLE3_ARCHITECTURES as readonly string[]).includes(architecture)) {
    throw new ModelLoadError(`${path}: architecture ${JSON.stringify(architecture ?? null)} is not an EAGLE-3 head we can read; supported: ${EAGLE3_ARCHITECTURES.join(', ')} (a 1-layer Llama config with draft_vocab_size)`);
  }
  if (raw.num_hidden_layers !== undefined && raw.num_hidden_layers !== 1) {
    throw new ModelLoadError(`${path}: an EAGLE-3 head has one decoder layer, but num_hidden_layers is ${JSON.stringify(raw.num_hidden_layers)}`);
  }
  // The head is a 1-layer Llama config plus draft keys: read sizes and RoPE as for Llama.
  const llama = parseModelConfig({ ...raw, architectures: ['LlamaForCausalLM'], num_hidden_layers: 1 }, path);
  const intKey = (key: string, fallback: number): number => {
    const v = raw[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new ModelLoadError(`${path}: "${key}" must be a positive integer, got ${JSON.stringify(raw[key])}`);
    return v;
  };
  const draftVocabSize = intKey('draft_vocab_size', llama.vocabSize);
  if (draftVocabSize > llama.vocabSize) throw new ModelLoadError(`${path}: draft_vocab_size (${draftVocabSize}) exceeds vocab_size (${llama.vocabSize})`);
  const eagle = (raw.eagle_config ?? {}) as Record<string, unknown>;
  const ids = eagle.eagle_aux_hidden_state_layer_ids ?? raw.eagle_aux_hidden_state_layer_ids;
  let auxLayerIds: number[] | undefined;
  if (ids !== undefined && ids !== null) {
    if (!Array.isArray(ids) || ids.length !== 3 || ids.some((x) => !Number.isInteger(x) || x < 0)) {
      throw new ModelLoadError(`${path}: eagle_aux_hidden_state_layer_ids must be three non-negative layer indices, got ${JSON.stringify(ids)}`);
    }
    auxLayerIds = ids as number[];
  }
  return {
    architecture,
    hiddenSize: llama.hiddenSize,
    targetHiddenSize: intKey('target_hidden_size', llama.hiddenSize),
    intermediateSize: llama.intermediateSize,
    numHeads: llama.numHeads,
    numKvHeads: llama.numKvHeads,
    headDim: llama.headDim,
    rmsNormEps: llama.rmsNormEps,
    vocabSize: llama.vocabSize,
    draftVocabSize,
    rope: llama.rope,
    auxLayerIds,
    normBeforeResidual: (raw.norm_before_residual ?? eagle.norm_before_residual) === true,
    raw,
  };
}

export interface Eagle3Weights {
  /** Absent in checkpoints that share the target's embedding. */
  embedTokens?: Weight;
  fc: Weight;
  hiddenNorm: Weight;
  inputNorm: Weight;
  /** q/k/v columns reading the normed embedding (first H inputs) and the normed hidden state (last H). */
  qEmbed: Weight;
  qHidden: Weight;
  kEmbed: Weight;
  kHidden: Weight;
  vEmbed: Weight;
  vHidden: Weight;
  o: Weight;
  postAttentionNorm: Weight;
  gate: Weight;
  up: Weight;
  down: Weight;
  norm: Weight;
  lmHead: Weight;
  /** Target id of each draft id (d + d2t[d]). */
  draftToTarget: Int32Array;
}

/** Layer tensors may be stored as `midlayer.` (EAGLE/SGLang) or `layers.0.` (vLLM-renamed). */
const LAYER_PREFIXES = ['midlayer.', 'layers.0.'];

export function loadEagle3Weights(ckpt: SafetensorsCheckpoint, config: Eagle3Config, backend: Backend): Eagle3Weights {
  const { hiddenSize: H, targetHiddenSize: Ht, intermediateSize: I, numHeads, numKvHeads, headDim, vocabSize, draftVocabSize } = config;
  const prefix = LAYER_PREFIXES.find((p) => ckpt.has(`${p}self_attn.q_proj.weight`));
  if (!prefix) {
    throw new ModelLoadError(`${ckpt.dir}: not an EAGLE-3 checkpoint: no 'midlayer.self_attn.q_proj.weight' (or 'layers.0.…'); tensors present: ${ckpt.names.slice(0, 8).join(', ')}${ckpt.names.length > 8 ? ', …' : ''}`);
  }
  const host = (name: string, shape: number[]): HostTensor => {
    if (!ckpt.has(name)) throw new ModelLoadError(`${ckpt.dir}: EAGLE-3 checkpoint is missing tensor '${name}'`);
    const info = ckpt.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new ModelLoadError(`${info.file}: tensor '${name}' has shape [${info.shape.join(', ')}], config.json implies [${shape.join(', ')}]`);
    }
    return ckpt.read(name);
  };
  const load = (name: string, shape: number[]): Weight => backend.loadDense(name, host(name, shape));
  // [out, 2H] → the columns that multiply the embedding half and those that multiply the hidden half.
  const split = (name: string, out: number): [Weight, Weight] => {
    const t = host(name, [out, 2 * H]);
    return [backend.loadDense(`${name}[:, :${H}]`, sliceColumns(t, 0, H, name)), backend.loadDense(`${name}[:, ${H}:]`, sliceColumns(t, H, H, name))];
  };
  const p = prefix;
  const [qEmbed, qHidden] = split(`${p}self_attn.q_proj.weight`, numHeads * headDim);
  const [kEmbed, kHidden] = split(`${p}self_attn.k_proj.weight`, numKvHeads * headDim);
  const [vEmbed, vHidden] = split(`${p}self_attn.v_proj.weight`, numKvHeads * headDim);

  let draftToTarget: Int32Array;
  if (ckpt.has('d2t')) {
    const t = host('d2t', [draftVocabSize]);
    if (t.dtype !== 'I64' && t.dtype !== 'I32') throw new ModelLoadError(`${ckpt.dir}: tensor 'd2t' must be I64 (offsets target − draft id), got ${t.dtype}`);
    const offsets = t.dtype === 'I64' ? Array.from(new BigInt64Array(t.bytes.buffer, t.bytes.byteOffset, draftVocabSize), Number) : Array.from(new Int32Array(t.bytes.buffer, t.bytes.byteOffset, draftVocabSize));
    draftToTarget = Int32Array.from(offsets, (off, d) => d + off);
    const seen = new Set<number>();
    draftToTarget.forEach((id, d) => {
      if (!(id >= 0 && id < vocabSize)) throw new ModelLoadError(`${ckpt.dir}: d2t maps draft id ${d} to target id ${id}, outside the vocabulary (0..${vocabSize - 1})`);
      if (seen.has(id)) throw new ModelLoadError(`${ckpt.dir}: d2t maps two draft ids to target id ${id}`);
      seen.add(id);
    });
  } else if (draftVocabSize === vocabSize) {
    draftToTarget = Int32Array.from({ length: vocabSize }, (_, i) => i);
  } else {
    throw new ModelLoadError(`${ckpt.dir}: draft_vocab_size (${draftVocabSize}) differs from vocab_size (${vocabSize}) but the checkpoint has no 'd2t' tensor`);
  }
  if (ckpt.has('t2d')) {
    const t = ckpt.info('t2d');
    if (t.shape.length !== 1 || t.shape[0] !== vocabSize || t.dtype !== 'BOOL') throw new ModelLoadError(`${ckpt.dir}: tensor 't2d' must be BOOL [${vocabSize}], got ${t.dtype} [${t.shape.join(', ')}]`);
  }

  return {
    embedTokens: ckpt.has('embed_tokens.weight') ? load('embed_tokens.weight', [vocabSize, H]) : undefined,
    fc: load('fc.weight', [H, 3 * Ht]),
    hiddenNorm: load(`${p}hidden_norm.weight`, [H]),
    inputNorm: load(`${p}input_layernorm.weight`, [H]),
    qEmbed,
    qHidden,
    kEmbed,
    kHidden,
    vEmbed,
    vHidden,
    o: load(`${p}self_attn.o_proj.weight`, [H, numHeads * headDim]),
    postAttentionNorm: load(`${p}post_attention_layernorm.weight`, [H]),
    gate: load(`${p}mlp.gate_proj.weight`, [I, H]),
    up: load(`${p}mlp.up_proj.weight`, [I, H]),
    down: load(`${p}mlp.down_proj.weight`, [H, I]),
    norm: load('norm.weight', [H]),
    lmHead: load('lm_head.weight', [draftVocabSize, H]),
    draftToTarget,
  };
}

/** Columns [start, start + count) of a row-major [rows, cols] float tensor, in its own dtype. */
function sliceColumns(t: HostTensor, start: number, count: number, name: string): HostTensor {
  const [rows, cols] = t.shape;
  const elem = t.dtype === 'F32' ? 4 : t.dtype === 'BF16' || t.dtype === 'F16' ? 2 : 0;
  if (!elem) throw new ModelLoadError(`tensor '${name}' has dtype ${t.dtype}; supported for EAGLE-3 weights: F32, F16, BF16`);
  const out = new Uint8Array(rows * count * elem);
  for (let r = 0; r < rows; r++) out.set(t.bytes.subarray((r * cols + start) * elem, (r * cols + start + count) * elem), r * count * elem);
  return { dtype: t.dtype, shape: [rows, count], bytes: out };
}

/** One step of the head over a flattened batch (its own one-layer paged KV cache). */
export interface Eagle3Batch extends AttentionBatch {
  /** Target-vocabulary ids: the token at position p + 1 of each row's sequence. */
  tokens: Int32Array;
  /** Rows whose draft logits are wanted. */
  logitRows: Int32Array;
}

export interface Eagle3Output {
  /** The pre-norm output h' of every row [T × H]: fed back as the next step's hidden input. */
  hidden: Tensor;
  /** [logitRows.length × draftVocabSize] draft logits (empty with logitsOnDevice). */
  logits: Float32Array;
  /** With logitsOnDevice: the same logits on the backend (an activation of the step). */
  logitsTensor?: Tensor;
}

export class Eagle3Model {
  readonly embedTokens: Weight;
  readonly attentionScale: number;
  private readonly rope: RopeTable;

  /** `targetEmbedding` is used when the checkpoint has no embed_tokens (it must be [vocab, H]). */
  constructor(
    readonly config: Eagle3Config,
    readonly weights: Eagle3Weights,
    readonly backend: Backend,
    targetEmbedding?: Weight,
  ) {
    const embed = weights.embedTokens ?? targetEmbedding;
    if (!embed) throw new ModelLoadError('EAGLE-3 head has no embed_tokens.weight and no target embedding was given');
    if (embed.shape[0] !== config.vocabSize || embed.shape[1] !== config.hiddenSize) {
      throw new ModelLoadError(`EAGLE-3 head has no embed_tokens.weight and the target's embedding is [${embed.shape.join(', ')}], not [${config.vocabSize}, ${config.hiddenSize}]: this head cannot share it`);
    }
    this.embedTokens = embed;
    if (config.rope.type === 'dynamic') throw new ModelLoadError('EAGLE-3 head: rope_scaling type "dynamic" is not supported for the head');
    const f = ropeFrequencies(config.rope, 0);
    this.rope = new RopeTable(f.invFreq, f.attentionFactor);
    this.attentionScale = 1 / Math.sqrt(config.headDim);
  }

  /** The head's KV cache: one layer. */
  allocKvCache(numBlocks: number, blockSize: number): KvCacheStorage {
    const c = this.config;
    return this.backend.allocKvCache({ numLayers: 1, numBlocks, blockSize, numKvHeads: c.numKvHeads, headDim: c.headDim });
  }

  /** g = fc(concat(h_low, h_mid, h_high)) for target features [T × 3·Ht] (host) → [T × H]. */
  fuse(features: Float32Array, numRows: number): Tensor {
    const width = 3 * this.config.targetHiddenSize;
    if (features.length !== numRows * width) throw new RangeError(`Eagle3Model.fuse: expected ${numRows} × ${width} features, got ${features.length} values`);
    return this.backend.linear(this.backend.fromHost(features, [numRows, width]), this.weights.fc);
  }

  /**
   * One draft step. `g` [T × H] is the hidden input (fc of target features, or the head's previous
   * h'); it is consumed (becomes the residual stream of the output). Writes K/V at batch.slots.
   * `logitsOnDevice`: leave the logits on the backend (logitsTensor) for draws there.
   */
  forward(batch: Eagle3Batch, g: Tensor, kv: KvCacheStorage, logitsOnDevice = false): Eagle3Output {
    const { backend: be, config: c, weights: W } = this;
    const e = be.embedding(this.embedTokens, batch.tokens);
    const a = be.rmsNorm(e, W.inputNorm, c.rmsNormEps);
    const b = be.rmsNorm(g, W.hiddenNorm, c.rmsNormEps);
    // linear(concat(a, b), [W_e | W_g]) = linear(a, W_e) + linear(b, W_g); each input's q, k and v
    // in one launch where the backend fuses them.
    const [q, k, v] = linearMany(be, a, [W.qEmbed, W.kEmbed, W.vEmbed]);
    const [qg, kg, vg] = linearMany(be, b, [W.qHidden, W.kHidden, W.vHidden]);
    be.addInPlace(q, qg);
    be.addInPlace(k, kg);
    be.addInPlace(v, vg);
    // RoPE on q and k, then k and v into the cache: one launch where the backend fuses them.
    ropeWriteKv(be, q, k, v, c.headDim, c.rope.rotaryDim, this.rope.at(batch.positions), kv, 0, batch.slots);
    const attn = be.attention(q, kv, 0, batch, this.attentionScale, 0);
    const o = be.linear(attn, W.o);
    const residual = c.normBeforeResidual ? b : g;
    const m = be.addRmsNorm(o, residual, W.postAttentionNorm, c.rmsNormEps);
    const down = mlp(be, m, W.gate, W.up, W.down);
    be.addInPlace(residual, down);
    if (batch.logitRows.length === 0) return { hidden: residual, logits: new Float32Array(0) };
    const last = be.selectRows(residual, batch.logitRows);
    const logitsTensor = be.linear(be.rmsNorm(last, W.norm, c.rmsNormEps), W.lmHead);
    if (logitsOnDevice) return { hidden: residual, logits: new Float32Array(0), logitsTensor };
    return { hidden: residual, logits: be.toHost(logitsTensor) };
  }
}
