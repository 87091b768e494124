// The quantization schemes `tachyon quantize` writes, as llm-compressor's presets name them, and the
// compressed-tensors quantization_config each one puts in config.json.

import { InvalidRequestError } from '../../errors.js';

export const QUANTIZE_SCHEMES = ['FP8_DYNAMIC', 'W8A16', 'W4A16', 'W4A16_ASYM', 'NVFP4A16'] as const;
export type QuantizeScheme = (typeof QUANTIZE_SCHEMES)[number];

export const QUANTIZE_METHODS = ['rtn', 'gptq'] as const;
export type QuantizeMethod = (typeof QUANTIZE_METHODS)[number];

export const DEFAULT_GROUP_SIZE = 128;

/** The compressed-tensors version whose layout we write (pack-quantized zero points packed along dim 0). */
export const COMPRESSED_TENSORS_VERSION = '0.12.2';

export function parseScheme(value: string): QuantizeScheme {
  const upper = value.toUpperCase();
  if ((QUANTIZE_SCHEMES as readonly string[]).includes(upper)) return upper as QuantizeScheme;
  throw new InvalidRequestError(`--scheme '${value}' is not supported; supported: ${QUANTIZE_SCHEMES.join(', ')}`);
}

export function parseMethod(value: string): QuantizeMethod {
  if ((QUANTIZE_METHODS as readonly string[]).includes(value)) return value as QuantizeMethod;
  throw new InvalidRequestError(`--method '${value}' is not supported; supported: ${QUANTIZE_METHODS.join(', ')}`);
}

export interface SchemeSettings {
  scheme: QuantizeScheme;
  method: QuantizeMethod;
  /** W4A16 / W4A16_ASYM: input columns per scale (−1 = one per output channel). */
  groupSize: number;
  /** GPTQ act-order (compressed-tensors actorder "group": columns carry weight_g_idx). */
  actOrder: boolean;
}

/** Checks the combination and fills defaults; every rejection says what would work. */
export function resolveSchemeSettings(scheme: QuantizeScheme, opts: { method?: QuantizeMethod; groupSize?: number; actOrder?: boolean }): SchemeSettings {
  const method = opts.method ?? 'rtn';
  const isInt4 = scheme === 'W4A16' || scheme === 'W4A16_ASYM';
  if (opts.groupSize !== undefined) {
    if (!isInt4) throw new InvalidRequestError(`--group-size applies to W4A16 and W4A16_ASYM; ${scheme} has a fixed layout (${scheme === 'NVFP4A16' ? 'blocks of 16' : 'one scale per output channel'})`);
    if (!(opts.groupSize === -1 || (Number.isInteger(opts.groupSize) && opts.groupSize > 0))) {
      throw new InvalidRequestError(`--group-size must be a positive integer or -1 (one group per output channel), got ${opts.groupSize}`);
    }
  }
  if (method === 'gptq' && !(isInt4 || scheme === 'W8A16')) {
    throw new InvalidRequestError(`--method gptq supports the integer schemes W4A16, W4A16_ASYM, W8A16; use --method rtn for ${scheme}`);
  }
  if (opts.actOrder && method !== 'gptq') throw new InvalidRequestError('--act-order needs --method gptq');
  return { scheme, method, groupSize: isInt4 ? (opts.groupSize ?? DEFAULT_GROUP_SIZE) : -1, actOrder: opts.actOrder === true };
}

/** The compressed-tensors `format` a scheme is stored in. */
export function schemeFormat(scheme: QuantizeScheme): string {
  return scheme === 'FP8_DYNAMIC' ? 'float-quantized' : scheme === 'NVFP4A16' ? 'nvfp4-pack-quantized' : 'pack-quantized';
}

/** QuantizationArgs as compressed-tensors serialises them (every key, in its order). */
function quantArgs(a: { num_bits: number; type: 'int' | 'float'; symmetric: boolean; group_size: number | null; strategy: string; dynamic: boolean; actorder?: string | null; observer?: string | null; scale_dtype?: string | null; zp_dtype?: string | null }) {
  return {
    num_bits: a.num_bits,
    type: a.type,
    symmetric: a.symmetric,
    group_size: a.group_size,
    strategy: a.strategy,
    block_structure: null,
    dynamic: a.dynamic,
    actorder: a.actorder ?? null,
    scale_dtype: a.scale_dtype ?? null,
    zp_dtype: a.zp_dtype ?? null,
    observer: a.observer === undefined ? 'minmax' : a.observer,
    observer_kwargs: {},
  };
}

function weightArgs(s: SchemeSettings) {
  switch (s.scheme) {
    case 'FP8_DYNAMIC':
      return quantArgs({ num_bits: 8, type: 'float', symmetric: true, group_size: null, strategy: 'channel', dynamic: false });
    case 'W8A16':
      // Per output channel: what canonical int8 holds (llm-compressor's preset groups by 128).
      return quantArgs({ num_bits: 8, type: 'int', symmetric: true, group_size: null, strategy: 'channel', dynamic: false, actorder: s.actOrder ? 'weight' : null });
    case 'W4A16':
    case 'W4A16_ASYM': {
      const channel = s.groupSize === -1;
      return quantArgs({
        num_bits: 4,
        type: 'int',
        symmetric: s.scheme === 'W4A16',
        group_size: channel ? null : s.groupSize,
        strategy: channel ? 'channel' : 'group',
        dynamic: false,
        actorder: s.actOrder ? (channel ? 'weight' : 'group') : null,
      });
    }
    case 'NVFP4A16':
      return quantArgs({ num_bits: 4, type: 'float', symmetric: true, group_size: 16, strategy: 'tensor_group', dynamic: false, scale_dtype: 'torch.float8_e4m3fn', zp_dtype: 'torch.float8_e4m3fn' });
  }
}

/** config.json's quantization_config for a checkpoint written with `s` (lm_head left unquantized). */
export function compressedTensorsConfig(s: SchemeSettings): Record<string, unknown> {
  const inputActivations =
    s.scheme === 'FP8_DYNAMIC' ? quantArgs({ num_bits: 8, type: 'float', symmetric: true, group_size: null, strategy: 'token', dynamic: true, observer: null }) : null;
  return {
    config_groups: {
      group_0: {
        targets: ['Linear'],
        weights: weightArgs(s),
        input_activations: inputActivations,
        output_activations: null,
        format: schemeFormat(s.scheme),
      },
    },
    format: schemeFormat(s.scheme),
    global_compression_ratio: null,
    ignore: ['lm_head'],
    kv_cache_scheme: null,
    quant_method: 'compressed-tensors',
    quantization_status: 'compressed',
    sparsity_config: {},
    transform_config: {},
    version: COMPRESSED_TENSORS_VERSION,
  };
}

/** llm-compressor's recipe.yaml for the same run, so the checkpoint says how it was made. */
export function recipeYaml(s: SchemeSettings, gptq?: { blockSize: number; dampeningFrac: number }): string {
  const modifier = s.method === 'gptq' ? 'GPTQModifier' : 'QuantizationModifier';
  const lines = ['default_stage:', '  default_modifiers:', `    ${modifier}:`, '      targets: [Linear]', '      ignore: [lm_head]', `      scheme: ${s.scheme}`];
  if (gptq) {
    lines.push(`      block_size: ${gptq.blockSize}`, `      dampening_frac: ${gptq.dampeningFrac}`);
    if (s.actOrder) lines.push(`      actorder: ${s.groupSize === -1 ? 'weight' : 'group'}`);
  }
  return lines.join('\n') + '\n';
}
