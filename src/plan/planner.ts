// `tachyon plan`: does model M in format F fit device D at context C and concurrency N, what is
// left for the KV cache, the largest concurrency at that context and the longest context at that
// concurrency, and the same across every weight format.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidRequestError } from '../errors.js';
import { loadModelConfig, parseModelConfig, type ModelConfig } from '../model/config.js';
import { customDevice, DEVICES, findDevice, type Device } from './devices.js';
import {
  activationBytes,
  cudaGraphBytes,
  defaultEagle3Shape,
  eagle3Params,
  eagle3ShapeFrom,
  isEagle3Config,
  KV_BLOCK_SIZE,
  kvBytesPerSequence,
  kvBytesPerToken,
  reservedBytes,
  WEIGHT_FORMATS,
  weightBytes,
  WORKSPACE_BYTES,
  type KvCacheDtype,
  type SpecMethod,
  type WeightFormat,
} from './memory.js';
import { findPreset, presetNames } from './presets.js';

export interface ResolvedModel {
  name: string;
  config: ModelConfig;
  /** The format a pre-quantized checkpoint is stored in, if config.json says so. */
  checkpointFormat?: WeightFormat;
}

/** A model directory (config.json) or a preset name. */
export function resolveModel(spec: string): ResolvedModel {
  if (existsSync(join(spec, 'config.json'))) {
    const config = loadModelConfig(spec);
    return { name: spec, config, checkpointFormat: detectCheckpointFormat(config.raw, spec) };
  }
  const preset = findPreset(spec);
  if (!preset) throw new InvalidRequestError(`--model '${spec}' is neither a model directory with config.json nor a preset; presets: ${presetNames().join(', ')}`);
  return { name: spec, config: parseModelConfig(preset, `preset ${spec}`) };
}

/** The weight format of a pre-quantized checkpoint (compressed-tensors, ModelOpt, GPTQ/AWQ), if any. */
export function detectCheckpointFormat(raw: Record<string, unknown>, dir?: string): WeightFormat | undefined {
  let q = raw.quantization_config as Record<string, unknown> | undefined;
  if (!q && dir && existsSync(join(dir, 'hf_quant_config.json'))) {
    try {
      q = (JSON.parse(readFileSync(join(dir, 'hf_quant_config.json'), 'utf8')) as { quantization?: Record<string, unknown> }).quantization;
      if (q) q = { quant_method: 'modelopt', ...q };
    } catch {
      return undefined;
    }
  }
  if (!q || typeof q !== 'object') return undefined;
  const method = String(q.quant_method ?? '').toLowerCase();
  if (method === 'modelopt' || q.quant_algo !== undefined) {
    const algo = String(q.quant_algo ?? '').toUpperCase();
    if (algo.includes('NVFP4')) return 'nvfp4';
    if (algo.includes('FP8')) return 'fp8';
    return undefined;
  }
  if (method === 'gptq' || method === 'awq') return Number(q.bits) === 8 ? 'w8a16' : 'w4a16';
  if (method === 'fp8') return 'fp8';
  if (method === 'compressed-tensors') {
    if (String(q.format ?? '').startsWith('nvfp4')) return 'nvfp4';
    const groups = Object.values((q.config_groups ?? {}) as Record<string, { weights?: { num_bits?: number; type?: string } }>);
    const w = groups[0]?.weights;
    if (!w) return undefined;
    if (w.num_bits === 4) return w.type === 'float' ? 'nvfp4' : 'w4a16';
    if (w.num_bits === 8) return w.type === 'float' ? 'fp8' : 'w8a16';
  }
  return undefined;
}

export interface SpeculativeInput {
  method: SpecMethod;
  /** Directory or preset of the draft model / EAGLE-3 head; EAGLE-3 without one is sized from the target. */
  model?: string;
  numSpeculativeTokens: number;
}

/** Parse a vLLM-style --speculative-config JSON ({"method", "model", "num_speculative_tokens"}). */
export function parseSpeculativeConfig(json: string): SpeculativeInput {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(json) as Record<string, unknown>;
  } catch {
    throw new InvalidRequestError(`--speculative-config is not JSON: ${json}`);
  }
  if (typeof raw !== 'object' || raw === null) throw new InvalidRequestError('--speculative-config must be a JSON object');
  const model = typeof raw.model === 'string' ? raw.model : undefined;
  let method = typeof raw.method === 'string' ? raw.method.toLowerCase() : undefined;
  if (method === 'eagle-3' || method === 'eagle') method = 'eagle3';
  if (method === 'draft' || method === 'draft-model') method = 'draft_model';
  if (method === 'ngram_gpu' || method === '[ngram]') method = 'ngram';
  if (method === undefined) {
    if (!model) throw new InvalidRequestError('--speculative-config needs "method" (eagle3, draft_model, ngram) or a "model"');
    const r = findPreset(model) ?? (existsSync(join(model, 'config.json')) ? (JSON.parse(readFileSync(join(model, 'config.json'), 'utf8')) as Record<string, unknown>) : undefined);
    method = r && (r.draft_vocab_size !== undefined || JSON.stringify(r.architectures ?? '').toLowerCase().includes('eagle3')) ? 'eagle3' : 'draft_model';
  }
  if (!['eagle3', 'draft_model', 'ngram'].includes(method)) throw new InvalidRequestError(`--speculative-config method '${method}' is not supported; supported: eagle3, draft_model, ngram`);
  const k = raw.num_speculative_tokens ?? 3;
  if (!Number.isInteger(k) || (k as number) < 1) throw new InvalidRequestError(`--speculative-config num_speculative_tokens must be a positive integer, got ${JSON.stringify(k)}`);
  if (method === 'draft_model' && !model) throw new InvalidRequestError('--speculative-config with method draft_model needs "model"');
  return { method: method as SpecMethod, model, numSpeculativeTokens: k as number };
}

export interface PlanInput {
  model: ResolvedModel;
  device: Device;
  /** Weight format of the target's linear layers. */
  format: WeightFormat;
  kvCacheDtype: KvCacheDtype;
  maxModelLen: number;
  concurrency: number;
  spec?: SpeculativeInput;
  /** Discrete GPUs: the share of memory the engine may use (vLLM's default 0.9). */
  gpuMemoryUtilization?: number;
  /** Replace the reserve rule with a fixed reserve in bytes. */
  reserveBytes?: number;
  /** Chunked-prefill budget: most tokens per forward step (tachyon serve's default 2048). */
  maxNumBatchedTokens?: number;
  /** No CUDA graphs. */
  enforceEager?: boolean;
}

export interface DraftPlan {
  method: SpecMethod;
  name: string;
  numSpeculativeTokens: number;
  params: number;
  weightBytes: number;
  kvBytesPerToken: number;
}

export interface MemoryPlan {
  model: string;
  device: Device;
  format: WeightFormat;
  kvCacheDtype: KvCacheDtype;
  maxModelLen: number;
  concurrency: number;
  /** The model's max_position_embeddings (no context beyond it). */
  maxPositionEmbeddings: number;
  totalBytes: number;
  reservedBytes: number;
  reserveRule: string;
  usableBytes: number;
  weights: ReturnType<typeof weightBytes>;
  draft?: DraftPlan;
  activationBytes: number;
  workspaceBytes: number;
  cudaGraphBytes: number;
  /** usable − weights − draft − activation − workspace − graphs (negative = the model does not even load). */
  kvAvailableBytes: number;
  /** Target + draft KV per token (all layers). */
  kvBytesPerToken: number;
  /** KV for maxModelLen tokens of every one of `concurrency` sequences. */
  kvNeededBytes: number;
  fits: boolean;
  /** Largest concurrency whose sequences can all reach maxModelLen (0 = none). */
  maxConcurrencyAtContext: number;
  /** Longest context every one of `concurrency` sequences can reach (0 = none), capped at the model's max_position_embeddings. */
  maxContextAtConcurrency: number;
  notes: string[];
}

export function resolveDevice(name: string | undefined, memoryGB: number | undefined, unified = false): Device {
  if (memoryGB !== undefined) {
    if (!(memoryGB > 0)) throw new InvalidRequestError(`--memory must be a positive number of GB, got ${memoryGB}`);
    return customDevice(memoryGB, unified);
  }
  if (!name) throw new InvalidRequestError(`give --device (${Object.keys(DEVICES).join(', ')}) or --memory GB`);
  const dev = findDevice(name);
  if (!dev) throw new InvalidRequestError(`--device '${name}' is not known; known: ${Object.keys(DEVICES).join(', ')} (or pass --memory GB)`);
  return dev;
}

function draftPlan(input: PlanInput): DraftPlan | undefined {
  const s = input.spec;
  if (!s) return undefined;
  const target = input.model.config;
  if (s.method === 'ngram') return { method: 'ngram', name: 'n-gram (prompt lookup)', numSpeculativeTokens: s.numSpeculativeTokens, params: 0, weightBytes: 0, kvBytesPerToken: 0 };
  if (s.method === 'eagle3') {
    const cfg = s.model ? resolveModel(s.model).config : undefined;
    const shape = cfg ? eagle3ShapeFrom(cfg, target) : defaultEagle3Shape(target);
    const p = eagle3Params(shape);
    return {
      method: 'eagle3',
      name: s.model ?? 'EAGLE-3 head sized from the target (1 layer, 32k draft vocabulary)',
      numSpeculativeTokens: s.numSpeculativeTokens,
      params: p.params,
      weightBytes: p.bytes,
      kvBytesPerToken: kvBytesPerToken({ numLayers: 1, numKvHeads: shape.numKvHeads, headDim: shape.headDim }, input.kvCacheDtype),
    };
  }
  const draft = resolveModel(s.model!);
  if (isEagle3Config(draft.config)) return draftPlan({ ...input, spec: { ...s, method: 'eagle3' } });
  const w = weightBytes(draft.config, draft.checkpointFormat ?? 'bf16');
  return {
    method: 'draft_model',
    name: s.model!,
    numSpeculativeTokens: s.numSpeculativeTokens,
    params: w.params,
    weightBytes: w.totalBytes,
    kvBytesPerToken: kvBytesPerToken(draft.config, input.kvCacheDtype),
  };
}

/** The whole memory budget for one configuration. */
export function planMemory(input: PlanInput): MemoryPlan {
  const cfg = input.model.config;
  if (!(input.maxModelLen > 0)) throw new InvalidRequestError(`--max-model-len must be positive, got ${input.maxModelLen}`);
  if (!(input.concurrency > 0)) throw new InvalidRequestError(`--concurrency must be positive, got ${input.concurrency}`);
  const dev = input.device;
  const total = dev.memoryGB * 1e9;
  const util = input.gpuMemoryUtilization ?? 0.9;
  if (!(util > 0 && util <= 1)) throw new InvalidRequestError(`--gpu-memory-utilization must be in (0, 1], got ${util}`);
  const reserved = reservedBytes(total, dev.unified, util, input.reserveBytes);
  const reserveRule =
    input.reserveBytes !== undefined
      ? `--reserve ${(input.reserveBytes / 1e9).toFixed(1)} GB`
      : dev.unified
        ? 'unified memory: 1.5 GB + 8% kept for the OS, JetPack services, the CPU side and other processes'
        : `gpu-memory-utilization ${util}: the rest covers the CUDA context, driver and fragmentation`;
  const usable = total - reserved;

  const weights = weightBytes(cfg, input.format);
  const draft = draftPlan(input);
  const budget = input.maxNumBatchedTokens ?? 2048;
  const act = activationBytes(cfg, budget, input.concurrency);
  const graphs = input.enforceEager ? 0 : cudaGraphBytes(cfg);
  const fixed = weights.totalBytes + (draft?.weightBytes ?? 0) + act + WORKSPACE_BYTES + graphs;
  const kvAvailable = usable - fixed;

  const draftPerToken = draft?.kvBytesPerToken ?? 0;
  // A speculative step writes k draft positions past the sequence's end before verifying them.
  const specSlack = draft ? draft.numSpeculativeTokens : 0;
  const seqBytes = (tokens: number) => kvBytesPerSequence(cfg, input.kvCacheDtype, tokens + specSlack) + draftPerToken * Math.ceil((tokens + specSlack) / KV_BLOCK_SIZE) * KV_BLOCK_SIZE;
  const kvNeeded = seqBytes(input.maxModelLen) * input.concurrency;
  const maxConc = kvAvailable > 0 ? Math.floor(kvAvailable / seqBytes(input.maxModelLen)) : 0;
  let maxCtx = 0;
  if (kvAvailable > 0) {
    // Largest whole-block context whose sequences all fit (binary search: sliding windows make it non-linear).
    let lo = 0;
    let hi = Math.ceil(cfg.maxPositionEmbeddings / KV_BLOCK_SIZE);
    while (lo < hi) {
      const mid = Math.floor((lo + hi + 1) / 2);
      if (seqBytes(mid * KV_BLOCK_SIZE) * input.concurrency <= kvAvailable) lo = mid;
      else hi = mid - 1;
    }
    maxCtx = Math.min(lo * KV_BLOCK_SIZE, cfg.maxPositionEmbeddings);
  }

  const notes: string[] = [];
  if (dev.unified) notes.push(`${dev.name} shares its ${dev.memoryGB} GB between the CPU and the GPU: ${(reserved / 1e9).toFixed(1)} GB are kept for the OS and other processes (override with --reserve GB).`);
  if (input.maxModelLen > cfg.maxPositionEmbeddings) notes.push(`max_model_len ${input.maxModelLen} exceeds the model's max_position_embeddings ${cfg.maxPositionEmbeddings}.`);
  notes.push(...formatNotes(input.format, dev));
  if (input.kvCacheDtype === 'fp8' && !dev.fp8) notes.push(`${dev.name} has no FP8 tensor cores (${dev.sm}); an FP8 KV cache still halves KV memory but is dequantized in the attention kernel.`);
  if (input.model.checkpointFormat && input.model.checkpointFormat !== input.format) {
    notes.push(`the checkpoint is stored as ${input.model.checkpointFormat}; planning for ${input.format} assumes a checkpoint in that format.`);
  }
  return {
    model: input.model.name,
    device: dev,
    format: input.format,
    kvCacheDtype: input.kvCacheDtype,
    maxModelLen: input.maxModelLen,
    concurrency: input.concurrency,
    maxPositionEmbeddings: cfg.maxPositionEmbeddings,
    totalBytes: total,
    reservedBytes: reserved,
    reserveRule,
    usableBytes: usable,
    weights,
    draft,
    activationBytes: act,
    workspaceBytes: WORKSPACE_BYTES,
    cudaGraphBytes: graphs,
    kvAvailableBytes: kvAvailable,
    kvBytesPerToken: kvBytesPerToken(cfg, input.kvCacheDtype) + draftPerToken,
    kvNeededBytes: kvNeeded,
    fits: kvAvailable > 0 && kvNeeded <= kvAvailable && input.maxModelLen <= cfg.maxPositionEmbeddings,
    maxConcurrencyAtContext: maxConc,
    maxContextAtConcurrency: maxCtx,
    notes,
  };
}

/** How a device runs a weight format. */
export function formatNotes(format: WeightFormat, dev: Device): string[] {
  if (format === 'fp8' && !dev.fp8) return [`${dev.name} (${dev.sm}) has no FP8 tensor cores: FP8 weights run as weight-only (W8A16-style) dequantizing kernels.`];
  if (format === 'nvfp4' && !dev.fp4) return [`${dev.name} (${dev.sm}) has no FP4 tensor cores: NVFP4 weights run as weight-only dequantizing kernels (as vLLM falls back to W4A16 Marlin).`];
  return [];
}

/** The same plan across every weight format. */
export function planAcrossFormats(input: Omit<PlanInput, 'format'>): MemoryPlan[] {
  return WEIGHT_FORMATS.map((format) => planMemory({ ...input, format }));
}

// ---------------------------------------------------------------------------------------------
// Text output

const gb = (b: number) => (Math.abs(b) > 0 && Math.abs(b) < 1e7 ? `${(b / 1e6).toFixed(2)} MB` : `${(b / 1e9).toFixed(2)} GB`);
const pad = (s: string, n: number) => s.padEnd(n);
const padL = (s: string, n: number) => s.padStart(n);

export function formatPlan(plan: MemoryPlan, table: MemoryPlan[]): string {
  const L: string[] = [];
  const line = (label: string, value: string) => L.push(`  ${pad(label, 40)} ${value}`);
  const w = plan.weights;
  L.push(`Plan: ${plan.model} on ${plan.device.name}, ${plan.format} weights, ${plan.kvCacheDtype} KV cache, context ${plan.maxModelLen} × ${plan.concurrency} sequence${plan.concurrency === 1 ? '' : 's'}`);
  L.push('');
  L.push('Device');
  line('memory', gb(plan.totalBytes));
  line('reserved', `${gb(plan.reservedBytes)} (${plan.reserveRule})`);
  line('usable by the engine', gb(plan.usableBytes));
  L.push('');
  L.push(`Weights (${(w.params / 1e9).toFixed(2)}B parameters)`);
  line(`linear layers (${plan.format})`, gb(w.linearBytes));
  if (w.scaleBytes > 0) line('quantization scales', gb(w.scaleBytes));
  line('embeddings (checkpoint precision)', gb(w.embeddingBytes));
  line('lm_head (checkpoint precision)', w.lmHeadBytes > 0 ? gb(w.lmHeadBytes) : 'tied to the embeddings');
  line('norms and biases', gb(w.otherBytes));
  line('total', gb(w.totalBytes));
  if (plan.draft) {
    L.push('');
    L.push(`Speculative decoding (${plan.draft.method}, ${plan.draft.numSpeculativeTokens} tokens): ${plan.draft.name}`);
    line('weights', `${gb(plan.draft.weightBytes)} (${(plan.draft.params / 1e6).toFixed(0)}M parameters)`);
    line('KV per token', `${plan.draft.kvBytesPerToken} bytes`);
  }
  L.push('');
  L.push('Runtime (estimates)');
  line('activations (one forward step)', gb(plan.activationBytes));
  line('workspaces (cuBLASLt, attention)', gb(plan.workspaceBytes));
  line('CUDA graphs', plan.cudaGraphBytes > 0 ? gb(plan.cudaGraphBytes) : 'none (--enforce-eager)');
  L.push('');
  L.push('KV cache');
  line('bytes per token', `${plan.kvBytesPerToken}${plan.draft && plan.draft.kvBytesPerToken ? ' (target + draft)' : ''}`);
  line(`needed (${plan.maxModelLen} × ${plan.concurrency})`, gb(plan.kvNeededBytes));
  line('available', plan.kvAvailableBytes > 0 ? gb(plan.kvAvailableBytes) : `none (short by ${gb(-plan.kvAvailableBytes)})`);
  L.push('');
  L.push(`Verdict: ${verdictText(plan)}`);
  line(`largest concurrency at context ${plan.maxModelLen}`, String(plan.maxConcurrencyAtContext));
  line(`longest context at concurrency ${plan.concurrency}`, String(plan.maxContextAtConcurrency));
  for (const n of plan.notes) L.push(`  note: ${n}`);
  L.push('');
  L.push(`All formats (context ${plan.maxModelLen}, concurrency ${plan.concurrency}, ${plan.kvCacheDtype} KV cache)`);
  L.push(`  ${pad('format', 8)} ${padL('weights', 10)} ${padL('KV left', 10)} ${padL('max conc.', 10)} ${padL('max context', 12)}  verdict`);
  for (const p of table) {
    const native = formatNotes(p.format, p.device).length === 0 ? '' : ' (not native here)';
    L.push(
      `  ${pad(p.format, 8)} ${padL(gb(p.weights.totalBytes), 10)} ${padL(p.kvAvailableBytes > 0 ? gb(p.kvAvailableBytes) : '-', 10)} ${padL(String(p.maxConcurrencyAtContext), 10)} ${padL(String(p.maxContextAtConcurrency), 12)}  ${p.fits ? 'fits' : 'does not fit'}${native}`,
    );
  }
  return L.join('\n') + '\n';
}

export function verdictText(p: MemoryPlan): string {
  if (p.kvAvailableBytes <= 0) return `does not fit: weights and runtime need ${gb(p.usableBytes - p.kvAvailableBytes)}, the device leaves ${gb(p.usableBytes)}`;
  if (p.maxModelLen > p.maxPositionEmbeddings) return `does not fit: context ${p.maxModelLen} is longer than the model's ${p.maxPositionEmbeddings} positions`;
  if (!p.fits) {
    return `does not fit: the KV cache needs ${gb(p.kvNeededBytes)} for ${p.concurrency} × ${p.maxModelLen} tokens, ${gb(p.kvAvailableBytes)} are left`;
  }
  return `fits, with ${gb(p.kvAvailableBytes - p.kvNeededBytes)} to spare`;
}

/** The plan as JSON-friendly numbers (bytes and GB). */
export function planToJson(plan: MemoryPlan, table: MemoryPlan[]): Record<string, unknown> {
  const w = plan.weights;
  return {
    model: plan.model,
    device: { id: plan.device.id, name: plan.device.name, memory_gb: plan.device.memoryGB, unified: plan.device.unified, sm: plan.device.sm },
    format: plan.format,
    kv_cache_dtype: plan.kvCacheDtype,
    max_model_len: plan.maxModelLen,
    concurrency: plan.concurrency,
    memory: { total_bytes: plan.totalBytes, reserved_bytes: plan.reservedBytes, reserve_rule: plan.reserveRule, usable_bytes: plan.usableBytes },
    weights: {
      params: w.params,
      linear_bytes: w.linearBytes,
      scale_bytes: w.scaleBytes,
      embedding_bytes: w.embeddingBytes,
      lm_head_bytes: w.lmHeadBytes,
      other_bytes: w.otherBytes,
      total_bytes: w.totalBytes,
    },
    draft: plan.draft
      ? { method: plan.draft.method, name: plan.draft.name, num_speculative_tokens: plan.draft.numSpeculativeTokens, params: plan.draft.params, weight_bytes: plan.draft.weightBytes, kv_bytes_per_token: plan.draft.kvBytesPerToken }
      : null,
    runtime: { activation_bytes: plan.activationBytes, workspace_bytes: plan.workspaceBytes, cuda_graph_bytes: plan.cudaGraphBytes },
    kv: { bytes_per_token: plan.kvBytesPerToken, needed_bytes: plan.kvNeededBytes, available_bytes: plan.kvAvailableBytes },
    verdict: { fits: plan.fits, text: verdictText(plan), max_concurrency_at_context: plan.maxConcurrencyAtContext, max_context_at_concurrency: plan.maxContextAtConcurrency },
    notes: plan.notes,
    formats: table.map((p) => ({
      format: p.format,
      weight_bytes: p.weights.totalBytes,
      kv_available_bytes: p.kvAvailableBytes,
      fits: p.fits,
      max_concurrency_at_context: p.maxConcurrencyAtContext,
      max_context_at_concurrency: p.maxContextAtConcurrency,
      native: formatNotes(p.format, p.device).length === 0,
    })),
  };
}
