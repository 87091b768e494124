// Writes small random Llama-family checkpoints to a temporary folder, for tests that need a model
// on disk but not a transformers reference (loader errors, engine bookkeeping).

import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeSafetensors, type HostTensor } from '../../src/model/load/safetensors.js';
import { Rng } from '../../src/engine/rng.js';
import { fixturesDir } from './paths.js';

export interface TinyConfig {
  architectures: string[];
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  intermediate_size: number;
  vocab_size: number;
  max_position_embeddings: number;
  rms_norm_eps: number;
  tie_word_embeddings: boolean;
  [key: string]: unknown;
}

export const TINY_LLAMA: TinyConfig = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  intermediate_size: 64,
  vocab_size: 64,
  max_position_embeddings: 128,
  rms_norm_eps: 1e-5,
  tie_word_embeddings: false,
  rope_theta: 10000,
  torch_dtype: 'float32',
};

export function f32Tensor(shape: number[], values: (i: number) => number): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = values(i);
  return { dtype: 'F32', shape, bytes: new Uint8Array(data.buffer) };
}

/** The tensors a Llama checkpoint of this config holds, random normal(0, 0.3), norms around 1. */
export function tinyTensors(cfg: TinyConfig, seed = 1): Record<string, HostTensor> {
  const rng = new Rng(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
  const w = (shape: number[]) => f32Tensor(shape, () => 0.3 * normal());
  const norm = (n: number) => f32Tensor([n], () => 1 + 0.1 * normal());
  const h = cfg.hidden_size;
  const hd = (cfg.head_dim as number | undefined) ?? h / cfg.num_attention_heads;
  const t: Record<string, HostTensor> = { 'model.embed_tokens.weight': w([cfg.vocab_size, h]), 'model.norm.weight': norm(h) };
  if (!cfg.tie_word_embeddings) t['lm_head.weight'] = w([cfg.vocab_size, h]);
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    t[`${p}input_layernorm.weight`] = norm(h);
    t[`${p}post_attention_layernorm.weight`] = norm(h);
    t[`${p}self_attn.q_proj.weight`] = w([cfg.num_attention_heads * hd, h]);
    t[`${p}self_attn.k_proj.weight`] = w([cfg.num_key_value_heads * hd, h]);
    t[`${p}self_attn.v_proj.weight`] = w([cfg.num_key_value_heads * hd, h]);
    t[`${p}self_attn.o_proj.weight`] = w([h, cfg.num_attention_heads * hd]);
    t[`${p}mlp.gate_proj.weight`] = w([cfg.intermediate_size, h]);
    t[`${p}mlp.up_proj.weight`] = w([cfg.intermediate_size, h]);
    t[`${p}mlp.down_proj.weight`] = w([h, cfg.intermediate_size]);
  }
  return t;
}

/** Write config.json and model.safetensors into a fresh temporary folder and return it. */
export function writeTinyCheckpoint(cfg: TinyConfig = TINY_LLAMA, tensors = tinyTensors(cfg)): string {
  const dir = mkdtempSync(join(tmpdir(), 'tachyon-tiny-'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg, null, 2));
  writeFileSync(join(dir, 'model.safetensors'), encodeSafetensors(tensors, { format: 'pt' }));
  return dir;
}

/** The ids the byte-level Llama-3 test tokenizer decodes; a padded checkpoint's vocabulary goes past them. */
export const PADDED_TOKENIZER_SIZE = 1009;

/**
 * A tiny checkpoint of 1024 ids over the 1009-token byte-level tokenizer (a padded vocabulary, as
 * Qwen pads its lm_head): the lm_head rows of the real ids scaled by `realRows`, the padded ones by
 * `paddedRows`, so a test can make the raw logits favour ids the tokenizer cannot decode.
 */
export function writePaddedVocabCheckpoint(realRows: number, paddedRows = 1): { dir: string; cfg: TinyConfig } {
  const cfg = { ...TINY_LLAMA, vocab_size: 1024 };
  const tensors = tinyTensors(cfg);
  const head = new Float32Array(tensors['lm_head.weight'].bytes.slice().buffer);
  for (let i = 0; i < head.length; i++) head[i] *= i < PADDED_TOKENIZER_SIZE * cfg.hidden_size ? realRows : paddedRows;
  tensors['lm_head.weight'] = { ...tensors['lm_head.weight'], bytes: new Uint8Array(head.buffer) };
  return { dir: withByteTokenizer(writeTinyCheckpoint(cfg, tensors)), cfg };
}

/** `dir` with the 1009-token byte-level tokenizer added (for a model of at least that many ids), so LLM.load takes it. */
export function withByteTokenizer(dir: string): string {
  const tok = join(fixturesDir(), 'tokenizers', 'byte-level-llama3');
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(tok, f), join(dir, f));
  return dir;
}

/**
 * Two tiny checkpoints (1024 ids, the byte-level tokenizer) that compute the same thing on an FP8 KV
 * cache: A as made, and B = A with q_proj / 4, k_proj · 4, v_proj · 64, o_proj / 64 and calibrated
 * KV scales k_scale 4, v_scale 64 in every layer (compressed-tensors' names). Every power-of-two
 * rescaling is exact, so B's cache holds A's codes (e4m3(4k / 4) = e4m3(k)), reads them back 4× and
 * 64× larger, and the q and o_proj factors take that out again: B's logits are A's, bitwise, when
 * the scales are applied. `overrides` change the config (e.g. a head_dim the GPU's tiled attention takes).
 */
export function writeKvScaledPair(overrides: Partial<TinyConfig> = {}): { cfg: TinyConfig; plainDir: string; scaledDir: string } {
  const cfg = { ...TINY_LLAMA, vocab_size: 1024, ...overrides };
  const tensors = tinyTensors(cfg);
  const plainDir = withByteTokenizer(writeTinyCheckpoint(cfg, tensors));
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    for (const [m, f] of [['q_proj', 1 / 4], ['k_proj', 4], ['v_proj', 64], ['o_proj', 1 / 64]] as const) {
      const name = `model.layers.${l}.self_attn.${m}.weight`;
      const t = new Float32Array(tensors[name].bytes.slice().buffer);
      tensors[name] = f32Tensor(tensors[name].shape, (i) => t[i] * f);
    }
    tensors[`model.layers.${l}.self_attn.k_scale`] = f32Tensor([], () => 4);
    tensors[`model.layers.${l}.self_attn.v_scale`] = f32Tensor([], () => 64);
  }
  return { cfg, plainDir, scaledDir: withByteTokenizer(writeTinyCheckpoint(cfg, tensors)) };
}
