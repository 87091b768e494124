// Loads everything a model directory holds: config, weights onto a backend, tokenizer, chat
// template and generation defaults, with the eos ids of all three files merged. With
// `--load-format dummy` the weights are random at the config's shapes instead (nothing is read but
// config.json), and the model may also be a shape preset (src/plan/presets.ts) with no files at all.

import { existsSync, readFileSync, statSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import type { Backend, RandomWeightSpec } from '../backend/backend.js';
import { InvalidRequestError, ModelLoadError } from '../errors.js';
import type { SamplingParams } from '../engine/sampling-params.js';
import { weightBytes } from '../plan/memory.js';
import { detectCheckpointFormat } from '../plan/planner.js';
import { canonicalPresetName, EAGLE3_PRESETS, findPreset, PRESETS } from '../plan/presets.js';
import type { QuantizationMethod } from '../quant/online.js';
import { loadChatTemplate } from './chat-template.js';
import { loadModelConfig, parseModelConfig, type ModelConfig } from './config.js';
import { DEFAULT_MODEL_NAME, embeddedModelDir, resolveModelDir } from './default-model.js';
import { eosTokenIds, loadGenerationConfig } from './generation-config.js';
import { LlamaModel } from './llama.js';
import { loadDummyWeights } from './load/dummy.js';
import { SafetensorsCheckpoint } from './load/safetensors.js';
import { Tokenizer } from './tokenizer.js';
import { loadModelWeights, weightBytesByFormat, type LoadWeightsOptions, type ModelWeights } from './weights.js';

/** How weights are obtained: 'auto' reads the checkpoint; 'dummy' makes random ones at its shapes (vLLM's names). */
export const LOAD_FORMATS = ['auto', 'dummy'] as const;
export type LoadFormat = (typeof LOAD_FORMATS)[number];

export function parseLoadFormat(value: string | undefined): LoadFormat {
  if (value === undefined) return 'auto';
  if ((LOAD_FORMATS as readonly string[]).includes(value)) return value as LoadFormat;
  throw new InvalidRequestError(`load format '${value}' is not supported; supported: ${LOAD_FORMATS.join(', ')}`);
}

export interface LoadModelOptions extends LoadWeightsOptions {
  loadFormat?: LoadFormat;
  /** Seed of dummy weights (default 0). */
  seed?: number;
}

export interface LoadedModel {
  /** The model directory, or the preset's name for a dummy preset. */
  dir: string;
  /** Where the tokenizer, chat template and generation defaults were read from. */
  tokenizerDir: string;
  loadFormat: LoadFormat;
  config: ModelConfig;
  model: LlamaModel;
  tokenizer: Tokenizer;
  chatTemplate?: string;
  /** Sampling defaults from generation_config.json. */
  samplingDefaults: Partial<SamplingParams>;
  eosTokenIds: number[];
  weightBytes: Record<string, number>;
  /** The online quantization applied at load (for dummy weights: the format they were made in), if any. */
  quantization?: string;
  /** How a pre-quantized checkpoint stores its weights, if it is one (e.g. "compressed-tensors pack-quantized"). */
  checkpointQuantization?: string;
  /** Things the user must be told about this load (a borrowed tokenizer); the CLI prints them. */
  warnings: string[];
  loadMs: number;
}

/** What `--model` names: a model directory, or (dummy weights only) a shape preset. */
export type ModelSource = { kind: 'dir'; dir: string } | { kind: 'preset'; name: string; raw: Record<string, unknown> };

/**
 * A directory wins over a preset of the same name; a preset is accepted only with dummy weights,
 * since it has no checkpoint to read. Undefined means the embedded default model.
 */
export function resolveModelSource(model: string | undefined, loadFormat: LoadFormat = 'auto'): ModelSource {
  const dir = resolveModelDir(model);
  if (existsSync(dir) && statSync(dir).isDirectory()) return { kind: 'dir', dir };
  const preset = model === undefined ? undefined : canonicalPresetName(model);
  if (model !== undefined && preset !== undefined) {
    if (preset in EAGLE3_PRESETS) {
      throw new InvalidRequestError(`'${model}' is the shape preset of an EAGLE-3 draft head: it drafts for a target model (--speculative-config) and cannot run alone`);
    }
    if (loadFormat !== 'dummy') throw new InvalidRequestError(presetNeedsDummy(model));
    return { kind: 'preset', name: preset, raw: findPreset(preset)! };
  }
  if (loadFormat === 'dummy' && model !== undefined) {
    throw new ModelLoadError(`'${model}' is neither a model directory nor a shape preset; presets: ${Object.keys(PRESETS).join(', ')}`);
  }
  throw new ModelLoadError(`${dir}: model directory does not exist`);
}

function presetNeedsDummy(name: string): string {
  return `'${name}' is a shape preset, not a checkpoint; add --load-format dummy to run it with random weights at its shapes (no download), or pass a model directory`;
}

/** Load `model` (a directory, a ModelSource, or with dummy weights a preset name) onto `backend`. */
export function loadModel(model: string | ModelSource, backend: Backend, options: LoadModelOptions = {}): LoadedModel {
  const t0 = performance.now();
  const loadFormat = options.loadFormat ?? 'auto';
  const source = typeof model === 'string' ? resolveModelSource(model, loadFormat) : model;
  if (loadFormat === 'dummy') return loadDummyModel(source, backend, options, t0);
  if (source.kind === 'preset') throw new InvalidRequestError(presetNeedsDummy(source.name));
  const dir = source.dir;
  const config = loadModelConfig(dir);
  if (!existsSync(join(dir, 'model.safetensors')) && !existsSync(join(dir, 'model.safetensors.index.json'))) {
    throw new ModelLoadError(`${dir}: no model weights found (expected model.safetensors or model.safetensors.index.json); add --load-format dummy to run its config.json with random weights`);
  }
  const tokenizer = Tokenizer.load(dir);
  const generation = loadGenerationConfig(dir);
  const ckpt = SafetensorsCheckpoint.open(dir);
  try {
    const weights = loadModelWeights(ckpt, config, backend, options);
    return assemble({ dir, tokenizerDir: dir, loadFormat, config, weights, backend, tokenizer, ownTokenizer: true, quantization: options.quantization, warnings: [], t0 });
  } finally {
    ckpt.close();
  }
}

/** What a dummy load reads: the config, and the tokenizer's folder (the embedded default model's when the source has none). */
export interface DummySource {
  dir: string;
  config: ModelConfig;
  tokenizerDir: string;
  /** False when the tokenizer is borrowed from the default model (its ids are not the config's). */
  ownTokenizer: boolean;
  /** The format a pre-quantized checkpoint's weights are in, mapped onto ours. */
  storedQuantization?: QuantizationMethod;
  warnings: string[];
}

export function describeDummySource(source: ModelSource): DummySource {
  const config = source.kind === 'preset' ? parseModelConfig(source.raw, `preset ${source.name}`) : loadModelConfig(source.dir);
  const dir = source.kind === 'preset' ? source.name : source.dir;
  const warnings: string[] = [];
  const ownTokenizer = source.kind === 'dir' && existsSync(join(source.dir, 'tokenizer.json'));
  const tokenizerDir = ownTokenizer ? source.dir : embeddedModelDir(DEFAULT_MODEL_NAME);
  if (!ownTokenizer) {
    const what = source.kind === 'preset' ? `preset ${source.name} has no tokenizer` : `${source.dir} has no tokenizer.json`;
    warnings.push(`${what}: using the embedded ${DEFAULT_MODEL_NAME}'s tokenizer and chat template (dummy weights; only its ids are sampled)`);
  }
  return { dir, config, tokenizerDir, ownTokenizer, storedQuantization: source.kind === 'dir' ? storedQuantizationOf(config, source.dir) : undefined, warnings };
}

/**
 * A pre-quantized checkpoint's weight format as one of ours, so its dummy weights take the bytes its
 * real ones would; undefined for a float checkpoint. A scheme with no counterpart is an error.
 */
function storedQuantizationOf(config: ModelConfig, dir: string): QuantizationMethod | undefined {
  const raw = config.raw;
  const files = ['hf_quant_config.json', 'quantize_config.json', 'quant_config.json'].filter((f) => existsSync(join(dir, f)));
  if (raw.quantization_config == null && files.length === 0) return undefined;
  // GPTQ's quantize_config.json and AutoAWQ's quant_config.json carry the bits the planner's reader looks for in config.json.
  const qc = raw.quantization_config as Record<string, unknown> | null | undefined;
  // The checkpoint readers accept compressed-tensors' underscore spelling too; the planner's check does not.
  const spelled = qc && qc.quant_method === 'compressed_tensors' ? { ...raw, quantization_config: { ...qc, quant_method: 'compressed-tensors' } } : raw;
  let format = detectCheckpointFormat(spelled, dir);
  if (format === undefined && raw.quantization_config == null && (files.includes('quantize_config.json') || files.includes('quant_config.json'))) {
    format = files.includes('quantize_config.json') ? detectCheckpointFormat({ quantization_config: { quant_method: 'gptq', ...readJsonObject(join(dir, 'quantize_config.json')) } }) : 'w4a16';
  }
  if (format === undefined || format === 'bf16') {
    const where = raw.quantization_config != null ? `${dir}/config.json quantization_config` : `${dir}/${files[0]}`;
    throw new ModelLoadError(
      `${where} describes a quantization scheme with no tachyon counterpart (supported for dummy weights: fp8, w8a16, w4a16, nvfp4); ` +
        'use a float checkpoint\'s config.json (with --quantization to choose a format) instead',
    );
  }
  return format;
}

function readJsonObject(path: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ModelLoadError(`${path}: not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ModelLoadError(`${path}: expected a JSON object`);
  return value as Record<string, unknown>;
}

function loadDummyModel(source: ModelSource, backend: Backend, options: LoadModelOptions, t0: number): LoadedModel {
  const d = describeDummySource(source);
  let quantization = options.quantization;
  if (d.storedQuantization) {
    if (quantization && quantization !== d.storedQuantization) {
      throw new InvalidRequestError(`${d.dir} is a ${d.storedQuantization} checkpoint; its dummy weights are made in that format, so --quantization ${quantization} cannot apply`);
    }
    quantization = d.storedQuantization;
  }
  if (backend.name === 'cpu') checkFitsOnHost(d, quantization);
  const tokenizer = Tokenizer.load(d.tokenizerDir);
  const weights = loadDummyWeights(d.config, backend, { quantization, dtype: dummyDtype(d.config.dtype), seed: options.seed, onProgress: options.onProgress });
  return assemble({ ...d, loadFormat: 'dummy', weights, backend, tokenizer, quantization, t0 });
}

/**
 * The CPU backend holds dense weights as float32: a preset meant for a GPU (llama-3.1-8b: 32 GB) would
 * exhaust the host long before it finished, so a model larger than the machine's memory is refused.
 */
function checkFitsOnHost(d: DummySource, quantization: QuantizationMethod | undefined): void {
  const w = weightBytes(d.config, quantization ?? 'bf16');
  // Planner bytes are at 2 bytes per dense value; the CPU keeps dense values (all of them, or the
  // embeddings, lm_head and norms of a quantized model) at 4.
  const bytes = quantization ? w.totalBytes + w.embeddingBytes + w.lmHeadBytes + w.otherBytes : w.params * 4;
  const total = totalmem();
  if (bytes > total) {
    throw new ModelLoadError(
      `${d.dir}: its ${(w.params / 1e9).toFixed(1)}B parameters take ${(bytes / 1e9).toFixed(1)} GB on the CPU backend (dense weights as float32), ` +
        `more than this machine's ${(total / 1e9).toFixed(1)} GB; run it on a GPU (--device cuda) or pick a smaller model`,
    );
  }
}

/** The dense dtype dummy weights take: the checkpoint's torch_dtype (bf16 for every preset). */
function dummyDtype(torchDtype: string): RandomWeightSpec['dtype'] {
  const t = torchDtype.toLowerCase().replace('torch.', '');
  if (t === 'float32' || t === 'float') return 'f32';
  if (t === 'float16' || t === 'half') return 'f16';
  return 'bf16';
}

function assemble(p: {
  dir: string;
  tokenizerDir: string;
  loadFormat: LoadFormat;
  config: ModelConfig;
  weights: ModelWeights;
  backend: Backend;
  tokenizer: Tokenizer;
  ownTokenizer: boolean;
  quantization?: string;
  warnings: string[];
  t0: number;
}): LoadedModel {
  const generation = loadGenerationConfig(p.tokenizerDir);
  return {
    dir: p.dir,
    tokenizerDir: p.tokenizerDir,
    loadFormat: p.loadFormat,
    config: p.config,
    model: new LlamaModel(p.config, p.weights, p.backend),
    tokenizer: p.tokenizer,
    chatTemplate: loadChatTemplate(p.tokenizerDir),
    samplingDefaults: generation.sampling,
    // A borrowed tokenizer's ids are not the config's: its eos ids would name other tokens.
    eosTokenIds: eosTokenIds(p.ownTokenizer ? p.config.eosTokenIds : [], generation.eosTokenIds, p.tokenizer.eosTokenId),
    weightBytes: weightBytesByFormat(p.weights, p.config.tieWordEmbeddings),
    quantization: p.quantization,
    checkpointQuantization: p.weights.checkpointQuantization,
    warnings: p.warnings,
    loadMs: performance.now() - p.t0,
  };
}
