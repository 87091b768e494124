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
  const dir = writeTinyCheckpoint(cfg, tensors);
  const tok = join(fixturesDir(), 'tokenizers', 'byte-level-llama3');
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(tok, f), join(dir, f));
  return { dir, cfg };
}
