// Offline quantization (`tachyon quantize`): a float checkpoint in, a compressed-tensors checkpoint out,
// laid out as llm-compressor saves it. RTN needs no data; GPTQ calibrates layer by layer.

import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Backend, Weight } from '../../backend/backend.js';
import { CpuBackend } from '../../backend/cpu/cpu-backend.js';
import { InvalidRequestError, ModelLoadError } from '../../errors.js';
import { loadModelConfig, type ModelConfig } from '../../model/config.js';
import { LlamaModel, type ForwardBatch, type LinearInputSite } from '../../model/llama.js';
import { toFloat32 } from '../../model/load/dtype.js';
import { SafetensorsCheckpoint } from '../../model/load/safetensors.js';
import { Tokenizer } from '../../model/tokenizer.js';
import { loadModelWeights } from '../../model/weights.js';
import type { QuantizedWeight } from '../format.js';
import { gptqQuantize, HessianAccumulator, prepareHessian, type PreparedHessian } from '../gptq.js';
import { calibrationSequences, CALIBRATION_FILE_NAMES, DEFAULT_CALIBRATION_SAMPLES, DEFAULT_CALIBRATION_SEQ_LEN, readCalibrationDocuments, shippedCalibrationFile } from './calibration.js';
import { intGridFor, quantizeForExport, scaleDtypeOf } from './export-quantize.js';
import { openCheckpointQuantization } from './open.js';
import { compressedTensorsConfig, recipeYaml, resolveSchemeSettings, type QuantizeMethod, type QuantizeScheme, type SchemeSettings } from './schemes.js';
import { compressedTensorsTensors, SafetensorsShardWriter } from './write-compressed-tensors.js';

export interface QuantizeCheckpointOptions {
  /** A float Hugging Face model directory. */
  model: string;
  /** Where the compressed-tensors checkpoint goes; must not exist or be empty. */
  output: string;
  scheme: QuantizeScheme;
  method?: QuantizeMethod;
  /** W4A16 / W4A16_ASYM (default 128; −1 = per output channel). */
  groupSize?: number;
  /** GPTQ act-order (desc_act). */
  actOrder?: boolean;
  /** GPTQ calibration: a text or JSONL file; default the held-out text the model directory ships. */
  calibrationFile?: string;
  /** GPTQ calibration as token windows, instead of a file (library callers, tests). */
  calibrationTokens?: number[][];
  numCalibrationSamples?: number;
  calibrationSeqLen?: number;
  /** GPTQ dampening as a fraction of the mean Hessian diagonal (default 0.01). */
  dampPercent?: number;
  /** GPTQ lazy-update block (default 128). */
  blockSize?: number;
  /**
   * GPTQ: calibrate every layer from one pass of the float model instead of layer by layer
   * (sequential, the default: layer l sees layers 0..l−1 already quantized). L forward layers
   * instead of L(L+1)/2, at the cost of ignoring the earlier layers' quantization error; holds
   * every layer's Hessians at once.
   */
  singlePass?: boolean;
  /** Largest safetensors shard (default 5 GB, as transformers' save_pretrained). */
  maxShardBytes?: number;
  /** Progress lines (one per layer). */
  log?: (line: string) => void;
  /** Each module's weight as written, in the canonical format (what a reader of the output will load). */
  onQuantized?: (module: string, weight: QuantizedWeight) => void;
}

export interface QuantizeCheckpointResult {
  output: string;
  settings: SchemeSettings;
  /** Files written, relative to `output`. */
  files: string[];
  quantizedModules: number;
  /** GPTQ: calibration windows and tokens used. */
  calibration?: { samples: number; tokens: number };
  seconds: number;
}

export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;
const DEFAULT_DAMP_PERCENT = 0.01;
const DEFAULT_BLOCK_SIZE = 128;
/** Tokens per calibration forward: bounds activation memory, Hessians add up across chunks. */
const CALIBRATION_TOKENS_PER_FORWARD = 4096;

/** Files besides weights and config that a model directory needs (and its held-out text), copied as they are. */
const COPIED_FILE = /^(tokenizer(_config)?\.json|tokenizer\.model|special_tokens_map\.json|added_tokens\.json|vocab\.(json|txt)|merges\.txt|generation_config\.json|chat_template\.(jinja|json)|preprocessor_config\.json)$/;
const isCopied = (f: string) => COPIED_FILE.test(f) || (CALIBRATION_FILE_NAMES as readonly string[]).includes(f);

interface Projection {
  /** Module name relative to the layer, e.g. 'self_attn.q_proj'. */
  module: string;
  key: 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down';
  rows: number;
  cols: number;
  site: LinearInputSite;
}

function projections(c: ModelConfig): Projection[] {
  const { hiddenSize: h, headDim, numHeads, numKvHeads, intermediateSize: ff } = c;
  return [
    { module: 'self_attn.q_proj', key: 'q', rows: numHeads * headDim, cols: h, site: 'qkv' },
    { module: 'self_attn.k_proj', key: 'k', rows: numKvHeads * headDim, cols: h, site: 'qkv' },
    { module: 'self_attn.v_proj', key: 'v', rows: numKvHeads * headDim, cols: h, site: 'qkv' },
    { module: 'self_attn.o_proj', key: 'o', rows: h, cols: numHeads * headDim, site: 'o' },
    { module: 'mlp.gate_proj', key: 'gate', rows: ff, cols: h, site: 'gate_up' },
    { module: 'mlp.up_proj', key: 'up', rows: ff, cols: h, site: 'gate_up' },
    { module: 'mlp.down_proj', key: 'down', rows: h, cols: ff, site: 'down' },
  ];
}

class StopForward extends Error {}

export function quantizeCheckpoint(options: QuantizeCheckpointOptions): QuantizeCheckpointResult {
  const t0 = performance.now();
  const settings = resolveSchemeSettings(options.scheme, { method: options.method, groupSize: options.groupSize, actOrder: options.actOrder });
  if (settings.method !== 'gptq') {
    const gptqOnly = { calibrationFile: '--calibration', calibrationTokens: 'calibration tokens', numCalibrationSamples: '--num-calibration-samples', calibrationSeqLen: '--calibration-seq-len', singlePass: '--single-pass' } as const;
    const given = Object.entries(gptqOnly).filter(([k]) => options[k as keyof typeof gptqOnly] !== undefined && options[k as keyof typeof gptqOnly] !== false);
    if (given.length > 0) throw new InvalidRequestError(`${given.map(([, flag]) => flag).join(', ')} appl${given.length > 1 ? 'y' : 'ies'} to --method gptq only`);
  }
  const modelDir = resolve(options.model);
  const output = resolve(options.output);
  if (output === modelDir) throw new InvalidRequestError(`--output must differ from --model (${modelDir})`);
  if (existsSync(output) && (!statSync(output).isDirectory() || readdirSync(output).length > 0)) {
    throw new InvalidRequestError(`--output ${output} already exists and is not an empty directory`);
  }
  const config = loadModelConfig(modelDir);
  const ckpt = SafetensorsCheckpoint.open(modelDir);
  try {
    const already = openCheckpointQuantization(ckpt, config.raw);
    if (already) throw new ModelLoadError(`${modelDir} is already quantized (${already.description}); tachyon quantize needs a float (F32/F16/BF16) checkpoint`);
    const projs = projections(config);
    for (let l = 0; l < config.numLayers; l++) {
      for (const p of projs) {
        const name = `model.layers.${l}.${p.module}.weight`;
        if (!ckpt.has(name)) throw new ModelLoadError(`${modelDir}: checkpoint is missing tensor '${name}'`);
        const info = ckpt.info(name);
        if (info.shape[0] !== p.rows || info.shape[1] !== p.cols) throw new ModelLoadError(`${info.file}: tensor '${name}' has shape [${info.shape.join(', ')}], config.json implies [${p.rows}, ${p.cols}]`);
        if (!['F32', 'F16', 'BF16'].includes(info.dtype)) throw new ModelLoadError(`${info.file}: tensor '${name}' has dtype ${info.dtype}; tachyon quantize needs float weights`);
      }
    }
    const gptq = settings.method === 'gptq' ? startGptq(options, modelDir, config, ckpt) : undefined;
    const created = !existsSync(output);
    mkdirSync(output, { recursive: true });
    try {
      const written = writeQuantizedCheckpoint({ options, settings, config, ckpt, projs, gptq, modelDir, output });
      return { output, settings, ...written, calibration: gptq?.summary, seconds: (performance.now() - t0) / 1000 };
    } catch (err) {
      // A half-written checkpoint would only be mistaken for a whole one (and block a rerun).
      if (created) rmSync(output, { recursive: true, force: true });
      throw err;
    }
  } finally {
    ckpt.close();
  }
}

interface WriteJob {
  options: QuantizeCheckpointOptions;
  settings: SchemeSettings;
  config: ModelConfig;
  ckpt: SafetensorsCheckpoint;
  projs: Projection[];
  gptq?: GptqCalibration;
  modelDir: string;
  output: string;
}

/** Non-layer tensors first, then layer by layer (quantized as they come), then config, recipe and side files. */
function writeQuantizedCheckpoint(job: WriteJob): { files: string[]; quantizedModules: number } {
  const { options, settings, config, ckpt, projs, gptq, modelDir, output } = job;
  const log = options.log ?? (() => {});
  const dtypeOf = (module: string) => ckpt.info(`${module}.weight`).dtype;
  const writer = new SafetensorsShardWriter(output, options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES);
  // Everything outside the decoder layers (embeddings, final norm, lm_head) is copied as stored.
  for (const name of ckpt.names) if (!/^model\.layers\.\d+\./.test(name)) writer.add(name, ckpt.read(name));

  let quantizedModules = 0;
  for (let l = 0; l < config.numLayers; l++) {
    const tl = performance.now();
    const quantized = new Map<string, QuantizedWeight>();
    if (gptq) gptq.quantizeLayer(l, projs, settings, dtypeOf, quantized);
    else {
      for (const p of projs) {
        const module = `model.layers.${l}.${p.module}`;
        const name = `${module}.weight`;
        quantized.set(module, quantizeForExport(toFloat32(ckpt.read(name), name), p.rows, p.cols, settings, scaleDtypeOf(dtypeOf(module)), name));
      }
    }
    const prefix = `model.layers.${l}.`;
    for (const name of ckpt.names) {
      if (!name.startsWith(prefix)) continue;
      const module = name.slice(0, -'.weight'.length);
      const q = name.endsWith('.weight') ? quantized.get(module) : undefined;
      if (!q) {
        writer.add(name, ckpt.read(name));
        continue;
      }
      for (const [tn, t] of Object.entries(compressedTensorsTensors(module, q, scaleDtypeOf(dtypeOf(module))))) writer.add(tn, t);
      options.onQuantized?.(module, q);
      quantizedModules++;
    }
    log(`layer ${l + 1}/${config.numLayers}: ${projs.map((p) => p.module.split('.')[1]).join(' ')} → ${settings.scheme} (${settings.method}) in ${((performance.now() - tl) / 1000).toFixed(2)} s`);
  }
  const files = writer.finish();

  const outConfig = { ...config.raw, quantization_config: compressedTensorsConfig(settings) };
  writeFileSync(join(output, 'config.json'), JSON.stringify(outConfig, null, 2) + '\n');
  writeFileSync(join(output, 'recipe.yaml'), recipeYaml(settings, gptq ? { blockSize: options.blockSize ?? DEFAULT_BLOCK_SIZE, dampeningFrac: options.dampPercent ?? DEFAULT_DAMP_PERCENT } : undefined));
  files.push('config.json', 'recipe.yaml');
  for (const f of readdirSync(modelDir)) {
    if (isCopied(f) && statSync(join(modelDir, f)).isFile()) {
      copyFileSync(join(modelDir, f), join(output, f));
      files.push(f);
    }
  }
  return { files, quantizedModules };
}

interface GptqCalibration {
  summary: { samples: number; tokens: number };
  quantizeLayer(l: number, projs: Projection[], settings: SchemeSettings, dtypeOf: (module: string) => string, out: Map<string, QuantizedWeight>): void;
}

/** Calibration token windows: given, or from --calibration, or from the held-out text the model ships. */
function calibrationTokens(options: QuantizeCheckpointOptions, modelDir: string, vocabSize: number): number[][] {
  let windows = options.calibrationTokens;
  if (!windows) {
    const file = options.calibrationFile ?? shippedCalibrationFile(modelDir);
    if (!file) {
      throw new InvalidRequestError(
        `--method gptq needs calibration text: pass --calibration FILE (plain text, or JSONL with a "text" field per line); ${modelDir} ships none (looked for ${CALIBRATION_FILE_NAMES.join(', ')})`,
      );
    }
    const tokenizer = Tokenizer.load(modelDir);
    const bos = tokenizer.bosTokenId === undefined ? undefined : tokenizer.idToToken(tokenizer.bosTokenId);
    const docs = readCalibrationDocuments(file, bos);
    windows = calibrationSequences(docs, tokenizer, options.numCalibrationSamples ?? DEFAULT_CALIBRATION_SAMPLES, options.calibrationSeqLen ?? DEFAULT_CALIBRATION_SEQ_LEN);
  }
  if (windows.length === 0 || windows.some((w) => w.length === 0)) throw new InvalidRequestError('calibration needs at least one non-empty token window');
  for (const w of windows) for (const id of w) if (!(Number.isInteger(id) && id >= 0 && id < vocabSize)) throw new InvalidRequestError(`calibration token id ${id} is outside the vocabulary (0..${vocabSize - 1})`);
  return windows;
}

/** One forward batch per chunk of windows, each window its own sequence with contiguous KV blocks. */
function calibrationBatches(windows: number[][], blockSize: number): { batch: ForwardBatch; numBlocks: number }[] {
  const chunks: number[][][] = [];
  let current: number[][] = [];
  let tokens = 0;
  for (const w of windows) {
    if (current.length > 0 && tokens + w.length > CALIBRATION_TOKENS_PER_FORWARD) {
      chunks.push(current);
      current = [];
      tokens = 0;
    }
    current.push(w);
    tokens += w.length;
  }
  if (current.length > 0) chunks.push(current);
  return chunks.map((seqs) => {
    const numTokens = seqs.reduce((a, s) => a + s.length, 0);
    const maxBlocksPerSeq = Math.max(...seqs.map((s) => Math.ceil(s.length / blockSize)));
    const batch: ForwardBatch = {
      numTokens,
      numSeqs: seqs.length,
      tokens: new Int32Array(numTokens),
      positions: new Int32Array(numTokens),
      seqIndex: new Int32Array(numTokens),
      slots: new Int32Array(numTokens),
      blockTables: new Int32Array(seqs.length * maxBlocksPerSeq).fill(-1),
      maxBlocksPerSeq,
      logitRows: new Int32Array(0),
    };
    let t = 0;
    let nextBlock = 0;
    seqs.forEach((s, si) => {
      const first = nextBlock;
      const n = Math.ceil(s.length / blockSize);
      for (let b = 0; b < n; b++) batch.blockTables[si * maxBlocksPerSeq + b] = first + b;
      nextBlock += n;
      s.forEach((id, p) => {
        batch.tokens[t] = id;
        batch.positions[t] = p;
        batch.seqIndex[t] = si;
        batch.slots[t] = first * blockSize + p;
        t++;
      });
    });
    return { batch, numBlocks: nextBlock };
  });
}

/**
 * GPTQ calibration. Sequential (default), as llm-compressor's sequential pipeline: layer l is
 * calibrated on the inputs it receives from layers 0..l−1 already quantized, with its own weights
 * still float (its four input sites from one pass that stops after its last projection's input),
 * then quantized. Single pass: every layer's Hessians from one pass of the float model.
 */
function startGptq(options: QuantizeCheckpointOptions, modelDir: string, config: ModelConfig, ckpt: SafetensorsCheckpoint): GptqCalibration {
  const windows = calibrationTokens(options, modelDir, config.vocabSize);
  const backend: Backend = new CpuBackend();
  const model = new LlamaModel(config, loadModelWeights(ckpt, config, backend), backend);
  const kvBlockSize = 16;
  const batches = calibrationBatches(windows, kvBlockSize);
  const numBlocks = Math.max(...batches.map((b) => b.numBlocks));
  const kv = backend.allocKvCache({ numLayers: config.numLayers, numBlocks, blockSize: kvBlockSize, numKvHeads: config.numKvHeads, headDim: config.headDim });
  const siteCols: Record<LinearInputSite, number> = {
    qkv: config.hiddenSize,
    o: config.numHeads * config.headDim,
    gate_up: config.hiddenSize,
    down: config.intermediateSize,
  };
  const newAccumulators = () => Object.fromEntries(Object.entries(siteCols).map(([site, cols]) => [site, new HessianAccumulator(cols)])) as Record<LinearInputSite, HessianAccumulator>;
  /** Runs the calibration batches, handing each (layer, site) input to `accumulatorOf`; stops after `lastLayer`'s down_proj input. */
  const calibrate = (lastLayer: number, accumulatorOf: (layer: number, site: LinearInputSite) => HessianAccumulator | undefined) => {
    for (const { batch } of batches) {
      try {
        model.forward(batch, kv, {
          observeLinearInput: (layer, site, x) => {
            accumulatorOf(layer, site)?.add(x, batch.numTokens);
            if (layer === lastLayer && site === 'down') throw new StopForward();
          },
        });
      } catch (err) {
        if (!(err instanceof StopForward)) throw err;
      }
    }
  };
  let allLayers: Record<LinearInputSite, HessianAccumulator>[] | undefined;
  const accumulatorsFor = (l: number): Record<LinearInputSite, HessianAccumulator> => {
    if (options.singlePass) {
      if (!allLayers) {
        const all = Array.from({ length: config.numLayers }, newAccumulators);
        calibrate(config.numLayers - 1, (layer, site) => all[layer][site]);
        allLayers = all;
      }
      return allLayers[l];
    }
    const acc = newAccumulators();
    calibrate(l, (layer, site) => (layer === l ? acc[site] : undefined));
    return acc;
  };
  return {
    summary: { samples: windows.length, tokens: windows.reduce((a, w) => a + w.length, 0) },
    quantizeLayer(l, projs, settings, dtypeOf, out) {
      const acc = accumulatorsFor(l);
      const layer = model.weights.layers[l] as unknown as Record<Projection['key'], Weight>;
      const gptqOptions = { dampPercent: options.dampPercent ?? DEFAULT_DAMP_PERCENT, blockSize: options.blockSize ?? DEFAULT_BLOCK_SIZE, actOrder: settings.actOrder };
      // q/k/v (and gate/up) read the same input: one inverse-Hessian factor serves them all.
      const prepared = new Map<LinearInputSite, PreparedHessian>();
      for (const p of projs) {
        const module = `model.layers.${l}.${p.module}`;
        if (!prepared.has(p.site)) prepared.set(p.site, prepareHessian(acc[p.site].hessian(), p.cols, gptqOptions));
        const w = backend.weightToHost(layer[p.key]);
        const q = gptqQuantize(w, p.rows, p.cols, prepared.get(p.site)!, intGridFor(settings, scaleDtypeOf(dtypeOf(module))), gptqOptions);
        // Later layers calibrate on this layer's quantized outputs.
        layer[p.key] = backend.loadQuantized(`${module}.weight`, q);
        out.set(module, q);
      }
    },
  };
}
