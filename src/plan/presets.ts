// Real published model shapes, as the config.json objects their Hugging Face repositories ship
// (parseModelConfig accepts them), for planning without downloading a checkpoint and, later, for
// `--load-format dummy`. Values from the models' config.json files as published (Meta Llama 3.1 /
// 3.2 / 3.3, Qwen3, Qwen2.5, Mistral 7B v0.3, DeepSeek-R1 distills; cross-checked against
// formats.md §2 and the parameter counts in perf-anchors.md §0) and the EAGLE-3 heads of
// yuhuili/EAGLE3-* (formats.md §7.1).

type Config = Record<string, unknown>;

const LLAMA3_ROPE = (factor: number): Config => ({
  rope_scaling: { factor, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0,
  max_position_embeddings: 131072,
});

const llama = (shape: Config, ropeFactor = 8): Config => ({
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  attention_bias: false,
  attention_dropout: 0.0,
  mlp_bias: false,
  hidden_act: 'silu',
  initializer_range: 0.02,
  rms_norm_eps: 1e-5,
  vocab_size: 128256,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  torch_dtype: 'bfloat16',
  tie_word_embeddings: false,
  ...LLAMA3_ROPE(ropeFactor),
  ...shape,
});

const qwen3 = (shape: Config): Config => ({
  architectures: ['Qwen3ForCausalLM'],
  model_type: 'qwen3',
  attention_bias: false,
  attention_dropout: 0.0,
  hidden_act: 'silu',
  head_dim: 128,
  initializer_range: 0.02,
  max_position_embeddings: 40960,
  max_window_layers: 36,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 1000000,
  sliding_window: null,
  use_sliding_window: false,
  vocab_size: 151936,
  bos_token_id: 151643,
  eos_token_id: 151645,
  torch_dtype: 'bfloat16',
  ...shape,
});

/** Target models by preset name. */
export const PRESETS: Record<string, Record<string, unknown>> = {
  'llama-3.1-8b': llama({ hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 128 }),
  'llama-3.1-70b': llama({ hidden_size: 8192, intermediate_size: 28672, num_hidden_layers: 80, num_attention_heads: 64, num_key_value_heads: 8, head_dim: 128 }),
  'llama-3.3-70b': llama({ hidden_size: 8192, intermediate_size: 28672, num_hidden_layers: 80, num_attention_heads: 64, num_key_value_heads: 8, head_dim: 128 }),
  'llama-3.2-1b': llama({ hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 64, tie_word_embeddings: true }, 32),
  'llama-3.2-3b': llama({ hidden_size: 3072, intermediate_size: 8192, num_hidden_layers: 28, num_attention_heads: 24, num_key_value_heads: 8, head_dim: 128, tie_word_embeddings: true }, 32),
  'deepseek-r1-distill-llama-8b': llama({ hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, eos_token_id: 128001 }),
  'deepseek-r1-distill-llama-70b': llama({ hidden_size: 8192, intermediate_size: 28672, num_hidden_layers: 80, num_attention_heads: 64, num_key_value_heads: 8, eos_token_id: 128001 }),
  'qwen3-0.6b': qwen3({ hidden_size: 1024, intermediate_size: 3072, num_hidden_layers: 28, num_attention_heads: 16, num_key_value_heads: 8, max_window_layers: 28, tie_word_embeddings: true }),
  'qwen3-1.7b': qwen3({ hidden_size: 2048, intermediate_size: 6144, num_hidden_layers: 28, num_attention_heads: 16, num_key_value_heads: 8, max_window_layers: 28, tie_word_embeddings: true }),
  'qwen3-4b': qwen3({ hidden_size: 2560, intermediate_size: 9728, num_hidden_layers: 36, num_attention_heads: 32, num_key_value_heads: 8, tie_word_embeddings: true }),
  'qwen3-8b': qwen3({ hidden_size: 4096, intermediate_size: 12288, num_hidden_layers: 36, num_attention_heads: 32, num_key_value_heads: 8, tie_word_embeddings: false }),
  'qwen3-14b': qwen3({ hidden_size: 5120, intermediate_size: 17408, num_hidden_layers: 40, num_attention_heads: 40, num_key_value_heads: 8, max_window_layers: 40, tie_word_embeddings: false }),
  'qwen3-32b': qwen3({ hidden_size: 5120, intermediate_size: 25600, num_hidden_layers: 64, num_attention_heads: 64, num_key_value_heads: 8, max_window_layers: 64, tie_word_embeddings: false }),
  'qwen2.5-7b': {
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    hidden_act: 'silu',
    hidden_size: 3584,
    intermediate_size: 18944,
    num_hidden_layers: 28,
    num_attention_heads: 28,
    num_key_value_heads: 4,
    max_position_embeddings: 32768,
    max_window_layers: 28,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000.0,
    sliding_window: 131072,
    use_sliding_window: false,
    tie_word_embeddings: false,
    vocab_size: 152064,
    bos_token_id: 151643,
    eos_token_id: 151645,
    torch_dtype: 'bfloat16',
  },
  'mistral-7b': {
    architectures: ['MistralForCausalLM'],
    model_type: 'mistral',
    hidden_act: 'silu',
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    head_dim: 128,
    max_position_embeddings: 32768,
    rms_norm_eps: 1e-5,
    rope_theta: 1000000.0,
    sliding_window: null,
    tie_word_embeddings: false,
    vocab_size: 32768,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: 'bfloat16',
  },
};

/** Other names people use for the same shapes. */
export const PRESET_ALIASES: Record<string, string> = {
  'llama-3.1-8b-instruct': 'llama-3.1-8b',
  'llama-3-8b': 'llama-3.1-8b',
  'llama-3.3-70b-instruct': 'llama-3.3-70b',
  'llama-3.1-70b-instruct': 'llama-3.1-70b',
  'llama-3.2-1b-instruct': 'llama-3.2-1b',
  'llama-3.2-3b-instruct': 'llama-3.2-3b',
  'mistral-7b-instruct': 'mistral-7b',
  'mistral-7b-v0.3': 'mistral-7b',
  'deepseek-r1-70b': 'deepseek-r1-distill-llama-70b',
  'deepseek-r1-8b': 'deepseek-r1-distill-llama-8b',
};

/**
 * EAGLE-3 draft heads (config.json of the published yuhuili/EAGLE3-* checkpoints): a one-layer
 * Llama decoder over [embedding, fused target features], with its own lm_head over a 32k draft
 * vocabulary mapped onto the target's by d2t/t2d.
 */
export const EAGLE3_PRESETS: Record<string, Record<string, unknown>> = {
  'eagle3-llama-3.1-8b': llama({ hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 1, num_attention_heads: 32, num_key_value_heads: 8, draft_vocab_size: 32000, max_position_embeddings: 2048, rope_scaling: null, rope_theta: 500000.0 }),
  'eagle3-llama-3.3-70b': llama({ hidden_size: 8192, intermediate_size: 28672, num_hidden_layers: 1, num_attention_heads: 64, num_key_value_heads: 8, draft_vocab_size: 32000, max_position_embeddings: 2048, rope_scaling: null, rope_theta: 500000.0 }),
  'eagle3-deepseek-r1-distill-llama-8b': llama({ hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 1, num_attention_heads: 32, num_key_value_heads: 8, draft_vocab_size: 32000, max_position_embeddings: 2048, rope_scaling: null }),
};

/** A preset's config.json object by name or alias (case-insensitive), or undefined. */
export function findPreset(name: string): Record<string, unknown> | undefined {
  const key = name.toLowerCase();
  const canonical = PRESET_ALIASES[key] ?? key;
  const hit = PRESETS[canonical] ?? EAGLE3_PRESETS[canonical];
  return hit ? structuredClone(hit) : undefined;
}

export function presetNames(): string[] {
  return [...Object.keys(PRESETS), ...Object.keys(EAGLE3_PRESETS)];
}

/** The preset's own name for a name or alias (case-insensitive), or undefined when it is none. */
export function canonicalPresetName(name: string): string | undefined {
  const key = name.toLowerCase();
  const canonical = PRESET_ALIASES[key] ?? key;
  return canonical in PRESETS || canonical in EAGLE3_PRESETS ? canonical : undefined;
}
