// `--load-format dummy`: random weights at a real model's shapes, so speed and memory can be measured
// at scale with no checkpoint. Like vLLM's dummy loader, the values are small uniform noise: the
// output is meaningless, the bytes moved per step are the real model's.

import type { Backend, RandomWeightSpec, Weight } from '../../backend/backend.js';
import { f32ToBf16 } from './dtype.js';
import type { HostTensor } from './safetensors.js';
import { quantizeWeight, type QuantizationMethod } from '../../quant/online.js';
import type { ModelConfig } from '../config.js';
import type { LayerWeights, ModelWeights } from '../weights.js';

export interface DummyWeightsOptions {
  /** Decoder linears in this format (embeddings, lm_head and norms stay dense, as in real checkpoints). */
  quantization?: QuantizationMethod;
  /** The dtype dense weights pretend to have on disk (default bf16, what the presets' torch_dtype says). */
  dtype?: RandomWeightSpec['dtype'];
  seed?: number;
  onProgress?: (done: number, total: number) => void;
}

/** Every weight of `config`'s Llama-family model, random, made on `backend` (on the device where it can). */
export function loadDummyWeights(config: ModelConfig, backend: Backend, options: DummyWeightsOptions = {}): ModelWeights {
  const { hiddenSize: h, headDim, numHeads, numKvHeads, intermediateSize: ff, vocabSize } = config;
  const dtype = options.dtype ?? 'bf16';
  let seed = (options.seed ?? 0) * 1_000_003 + 1;
  const make = (name: string, shape: number[], scale: number, method?: QuantizationMethod): Weight =>
    randomWeight(backend, name, { shape, dtype, method, seed: seed++, scale });
  // Scales keep activations bounded through many layers: ~1/sqrt(fan-in) for matrices, 1 for norms.
  const linear = (name: string, rows: number, cols: number) => make(name, [rows, cols], 1 / Math.sqrt(cols), options.quantization);
  const norm = (name: string, n: number) => ones(backend, name, n, dtype);
  const total = config.numLayers + 2;
  const embedTokens = make('model.embed_tokens.weight', [vocabSize, h], 1);
  options.onProgress?.(1, total);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}.`;
    const vec = (name: string, n: number) => make(`${p}${name}`, [n], 0.01);
    layers.push({
      inputNorm: norm(`${p}input_layernorm.weight`, h),
      q: linear(`${p}self_attn.q_proj.weight`, numHeads * headDim, h),
      k: linear(`${p}self_attn.k_proj.weight`, numKvHeads * headDim, h),
      v: linear(`${p}self_attn.v_proj.weight`, numKvHeads * headDim, h),
      o: linear(`${p}self_attn.o_proj.weight`, h, numHeads * headDim),
      qBias: config.qkvBias ? vec('self_attn.q_proj.bias', numHeads * headDim) : undefined,
      kBias: config.qkvBias ? vec('self_attn.k_proj.bias', numKvHeads * headDim) : undefined,
      vBias: config.qkvBias ? vec('self_attn.v_proj.bias', numKvHeads * headDim) : undefined,
      oBias: config.oBias ? vec('self_attn.o_proj.bias', h) : undefined,
      qNorm: config.qkNorm ? norm(`${p}self_attn.q_norm.weight`, headDim) : undefined,
      kNorm: config.qkNorm ? norm(`${p}self_attn.k_norm.weight`, headDim) : undefined,
      postAttentionNorm: norm(`${p}post_attention_layernorm.weight`, h),
      gate: linear(`${p}mlp.gate_proj.weight`, ff, h),
      up: linear(`${p}mlp.up_proj.weight`, ff, h),
      down: linear(`${p}mlp.down_proj.weight`, h, ff),
      gateBias: config.mlpBias ? vec('mlp.gate_proj.bias', ff) : undefined,
      upBias: config.mlpBias ? vec('mlp.up_proj.bias', ff) : undefined,
      downBias: config.mlpBias ? vec('mlp.down_proj.bias', h) : undefined,
    });
    options.onProgress?.(i + 2, total);
  }
  const lmHead = config.tieWordEmbeddings ? embedTokens : make('lm_head.weight', [vocabSize, h], 1 / Math.sqrt(h));
  options.onProgress?.(total, total);
  return { embedTokens, layers, norm: norm('model.norm.weight', h), lmHead, checkpointQuantization: options.quantization ? `dummy ${options.quantization}` : undefined };
}

/** A random weight: made by the backend itself where it can (no host copy), else on the host. */
export function randomWeight(backend: Backend, name: string, spec: RandomWeightSpec): Weight {
  if (backend.randomWeight) return backend.randomWeight(name, spec);
  const values = uniform(spec.shape.reduce((a, b) => a * b, 1), spec.seed, spec.scale);
  if (spec.method && spec.shape.length === 2) return backend.loadQuantized(name, quantizeWeight(spec.method, values, spec.shape[0], spec.shape[1], name));
  return backend.loadDense(name, encode(values, spec.shape, spec.dtype));
}

/**
 * Norm weights are ones (as initialised models have them), so random layers keep a sane scale. Stored
 * in the dense dtype like a checkpoint's norms, so the weight bytes reported match the real model's.
 */
function ones(backend: Backend, name: string, n: number, dtype: RandomWeightSpec['dtype']): Weight {
  return backend.loadDense(name, encode(new Float32Array(n).fill(1), [n], dtype));
}

/** Host values as a checkpoint tensor of `dtype` (bf16/f16 rounded to nearest even). */
function encode(values: Float32Array, shape: readonly number[], dtype: RandomWeightSpec['dtype']): HostTensor {
  if (dtype === 'f32') return { dtype: 'F32', shape: [...shape], bytes: new Uint8Array(values.buffer) };
  const bits = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) bits[i] = dtype === 'bf16' ? f32ToBf16(values[i]) : f32ToF16(values[i]);
  return { dtype: dtype === 'bf16' ? 'BF16' : 'F16', shape: [...shape], bytes: new Uint8Array(bits.buffer) };
}

/** float32 → IEEE half bits, round to nearest even; enough for the finite, small values made here. */
export function f32ToF16(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00; // rounds past the largest half: infinity
  if (a < 2 ** -14) return sign | roundEven(a * 2 ** 24); // subnormal: units of 2^-24 (1024 rounds up into the normals)
  const exp = Math.floor(Math.log2(a));
  const e = a >= 2 ** (exp + 1) ? exp + 1 : a < 2 ** exp ? exp - 1 : exp; // log2 can be off by one at powers of two
  const mant = roundEven((a / 2 ** e - 1) * 1024);
  return sign | (mant === 1024 ? (e + 16) << 10 : ((e + 15) << 10) | mant);
}

function roundEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  return d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f;
}

/** Uniform in [-scale, scale) from a small seeded generator (mulberry32): reproducible, fast enough for tiny models. */
function uniform(n: number, seed: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  let a = seed >>> 0;
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    out[i] = (2 * u - 1) * scale;
  }
  return out;
}
