// Reads compressed-tensors checkpoints (llm-compressor; formats.md §3): pack-quantized and
// int-/naive-quantized integers, float-quantized FP8, nvfp4-pack-quantized, onto the canonical formats.

import { ModelLoadError } from '../../errors.js';
import { E4M3_VALUES } from '../fp8-e4m3.js';
import { createFp8Weight } from '../fp8.js';
import { createNvfp4Weight, globalScaleFromCompressedTensors, NVFP4_BLOCK_SIZE } from '../nvfp4.js';
import type { CheckpointQuantization } from './checkpoint-quantization.js';
import { matchesCompressedTensorsTarget, type ModuleClass } from './module-match.js';
import { numGroupsOf, toCanonical, unpackAlongColumns, unpackAlongRows, type StoredLinear, type UnpackedIntWeight } from './stored-linear.js';
import { isFloatWeight, type CheckpointTensors } from './tensors.js';

export const COMPRESSED_TENSORS_FORMATS = ['pack-quantized', 'int-quantized', 'naive-quantized', 'float-quantized', 'nvfp4-pack-quantized', 'dense'] as const;
type Format = (typeof COMPRESSED_TENSORS_FORMATS)[number];

/** The QuantizationArgs keys we act on (quant_args.py); the rest (observer, dynamic, ...) do not change the stored weights. */
export interface CompressedTensorsArgs {
  num_bits: number;
  type: 'int' | 'float';
  symmetric: boolean;
  group_size: number | null;
  strategy: 'tensor' | 'channel' | 'group' | 'block' | 'tensor_group' | 'token' | 'attn_head';
  block_structure: number[] | null;
}

interface Group {
  name: string;
  targets: string[];
  weights?: CompressedTensorsArgs;
  format: Format;
}

const where = (path: string, key: string) => `${path}: quantization_config.${key}`;

function parseArgs(raw: Record<string, unknown>, path: string, key: string): CompressedTensorsArgs {
  const numBits = raw.num_bits ?? 8;
  const type = raw.type ?? 'int';
  if (typeof numBits !== 'number' || (type !== 'int' && type !== 'float')) {
    throw new ModelLoadError(`${where(path, key)} has num_bits ${JSON.stringify(raw.num_bits)} / type ${JSON.stringify(raw.type)}; expected a number and "int" or "float"`);
  }
  const groupSize = raw.group_size == null ? null : Number(raw.group_size);
  // The strategy is inferred from group_size when absent (quant_args.py).
  const strategy = (raw.strategy ?? (groupSize == null ? 'tensor' : groupSize > 0 ? 'group' : 'channel')) as CompressedTensorsArgs['strategy'];
  return { num_bits: numBits, type, symmetric: raw.symmetric !== false, group_size: groupSize, strategy, block_structure: (raw.block_structure as number[] | null) ?? null };
}

/** Rejects, by name, what this reader cannot turn into canonical or exact float weights. */
function checkSupported(g: Group, path: string): void {
  const key = `config_groups.${g.name}`;
  const w = g.weights;
  if (g.format === 'dense' || !w) return;
  const what = `${where(path, key)}.weights (${w.type} ${w.num_bits}-bit, strategy '${w.strategy}')`;
  if (w.type === 'int') {
    if (g.format !== 'pack-quantized' && g.format !== 'int-quantized' && g.format !== 'naive-quantized') {
      throw new ModelLoadError(`${what} cannot be stored as format '${g.format}'`);
    }
    if (w.num_bits !== 4 && w.num_bits !== 8) throw new ModelLoadError(`${what}: ${w.num_bits}-bit integer weights are not supported; supported: 4, 8`);
    if (!['tensor', 'channel', 'group'].includes(w.strategy)) throw new ModelLoadError(`${what}: strategy '${w.strategy}' is not supported for integer weights; supported: tensor, channel, group`);
    if (w.strategy === 'group' && !(w.group_size && w.group_size > 0)) throw new ModelLoadError(`${what}: group strategy needs a positive group_size, got ${w.group_size}`);
    return;
  }
  if (w.num_bits === 8) {
    if (g.format !== 'float-quantized' && g.format !== 'naive-quantized') throw new ModelLoadError(`${what} cannot be stored as format '${g.format}'`);
    if (!['tensor', 'channel', 'block'].includes(w.strategy)) throw new ModelLoadError(`${what}: strategy '${w.strategy}' is not supported for FP8 weights; supported: tensor, channel, block`);
    if (w.strategy === 'block' && !(Array.isArray(w.block_structure) && w.block_structure.length === 2)) throw new ModelLoadError(`${what}: block strategy needs block_structure [rows, cols]`);
    return;
  }
  if (w.num_bits === 4) {
    if (g.format !== 'nvfp4-pack-quantized' || w.strategy !== 'tensor_group' || w.group_size !== NVFP4_BLOCK_SIZE) {
      throw new ModelLoadError(`${what}, group_size ${w.group_size}, format '${g.format}': only NVFP4 (format nvfp4-pack-quantized, strategy tensor_group, group_size 16) is supported for 4-bit floats; MXFP4 is not`);
    }
    return;
  }
  throw new ModelLoadError(`${what}: ${w.num_bits}-bit float weights are not supported; supported: 8 (FP8), 4 (NVFP4)`);
}

function parseFormat(value: unknown, path: string, key: string): Format {
  if ((COMPRESSED_TENSORS_FORMATS as readonly unknown[]).includes(value)) return value as Format;
  throw new ModelLoadError(`${where(path, key)}: compressed-tensors format '${String(value)}' is not supported; supported: ${COMPRESSED_TENSORS_FORMATS.join(', ')}`);
}

export function openCompressedTensors(qc: Record<string, unknown>, path: string, tensors: CheckpointTensors): CheckpointQuantization {
  const status = qc.quantization_status ?? 'compressed';
  const sparsity = qc.sparsity_config as Record<string, unknown> | null | undefined;
  if (sparsity && Object.keys(sparsity).length > 0 && sparsity.format !== 'dense') {
    throw new ModelLoadError(`${where(path, 'sparsity_config')}: sparse format '${String(sparsity.format)}' is not supported (dense weights only)`);
  }
  const transform = qc.transform_config as Record<string, unknown> | null | undefined;
  const transformGroups = (transform?.config_groups ?? transform) as object | null | undefined;
  if (transformGroups && Object.keys(transformGroups).length > 0) {
    throw new ModelLoadError(`${where(path, 'transform_config')}: weight transforms (rotations such as SpinQuant/QuIP) are not supported`);
  }
  const topFormat = qc.format ?? 'dense';
  const groupsRaw = (qc.config_groups ?? {}) as Record<string, Record<string, unknown>>;
  const groups: Group[] = Object.entries(groupsRaw).map(([name, g]) => {
    const fmt = g.format ?? (topFormat === 'mixed-precision' ? undefined : topFormat);
    if (fmt === undefined) throw new ModelLoadError(`${where(path, `config_groups.${name}`)} has no "format", which a mixed-precision checkpoint needs per group`);
    const targets = g.targets;
    if (!Array.isArray(targets) || !targets.every((t) => typeof t === 'string')) throw new ModelLoadError(`${where(path, `config_groups.${name}.targets`)} must be a list of strings`);
    const weights = g.weights ? parseArgs(g.weights as Record<string, unknown>, path, `config_groups.${name}.weights`) : undefined;
    const group: Group = { name, targets, weights, format: parseFormat(fmt, path, `config_groups.${name}.format`) };
    checkSupported(group, path);
    return group;
  });
  const ignore = ((qc.ignore ?? []) as unknown[]).filter((x): x is string => typeof x === 'string');
  // A checkpoint not yet compressed (status frozen/calibration) stores fake-quantized float weights.
  const compressed = status === 'compressed';

  const groupOf = (module: string, cls: ModuleClass): Group | undefined => {
    if (ignore.some((t) => matchesCompressedTensorsTarget(t, module, cls))) return undefined;
    // compressed-tensors' priority: an exact name beats a regex beats a class name.
    const rank = (t: string) => (t === module ? 0 : t.startsWith('re:') ? 1 : 2);
    let best: { group: Group; rank: number } | undefined;
    for (const g of groups) {
      for (const t of g.targets) {
        if (matchesCompressedTensorsTarget(t, module, cls) && (!best || rank(t) < best.rank)) best = { group: g, rank: rank(t) };
      }
    }
    return best?.group;
  };

  const formats = [...new Set(groups.map((g) => g.format))].join(' + ') || 'dense';
  return {
    method: 'compressed-tensors',
    description: `compressed-tensors ${formats}${compressed ? '' : ` (status '${String(status)}': float weights)`}`,
    readLinear(module, rows, cols, cls = 'Linear') {
      const g = groupOf(module, cls);
      if (!compressed || !g || !g.weights || g.format === 'dense') {
        const storedQuantized = tensors.has(`${module}.weight_packed`) || (tensors.has(`${module}.weight_scale`) && !isFloatWeight(tensors, module));
        if (compressed && storedQuantized) {
          throw new ModelLoadError(`${path}: '${module}' is stored quantized but no quantization_config.config_groups entry targets it (or "ignore" lists it)`);
        }
        return undefined;
      }
      return readModule(tensors, module, rows, cols, g);
    },
  };
}

function readModule(t: CheckpointTensors, module: string, rows: number, cols: number, g: Group): StoredLinear {
  const w = g.weights!;
  const p = `${module}.`;
  const why = `${module}: compressed-tensors ${g.format}, ${w.type} ${w.num_bits}-bit ${w.strategy}`;
  if (w.type === 'float' && w.num_bits === 4) {
    const packed = t.bytes(`${p}weight_packed`, why, ['U8'], [rows, cols / 2]);
    const blockScales = t.bytes(`${p}weight_scale`, why, ['F8_E4M3'], [rows, cols / NVFP4_BLOCK_SIZE]);
    const globalScale = globalScaleFromCompressedTensors(t.scalar(`${p}weight_global_scale`, why));
    return { kind: 'quantized', weight: createNvfp4Weight(rows, cols, packed, blockScales, globalScale) };
  }
  if (w.type === 'float') {
    const codes = t.bytes(`${p}weight`, why, ['F8_E4M3'], [rows, cols]);
    if (w.strategy === 'block') {
      const [bh, bw] = w.block_structure!;
      const blockScales = t.floats(`${p}weight_scale`, why, [[Math.ceil(rows / bh), Math.ceil(cols / bw)]]);
      return { kind: 'dequantized', values: dequantizeFp8Blocks(codes, rows, cols, [bh, bw], blockScales), why: 'canonical fp8 has no block scales' };
    }
    const scales = t.floats(`${p}weight_scale`, why, w.strategy === 'tensor' ? [[1], []] : [[rows, 1], [rows]]);
    return { kind: 'quantized', weight: createFp8Weight(rows, cols, codes, scales) };
  }
  return toCanonical(readInt(t, module, rows, cols, g));
}

function readInt(t: CheckpointTensors, module: string, rows: number, cols: number, g: Group): UnpackedIntWeight {
  const w = g.weights!;
  const p = `${module}.`;
  const why = `${module}: compressed-tensors ${g.format}, int ${w.num_bits}-bit ${w.strategy}`;
  const bits = w.num_bits as 4 | 8;
  const mid = 1 << (bits - 1);
  const groupSize = w.strategy === 'group' ? w.group_size! : cols;
  const numGroups = numGroupsOf(cols, groupSize);
  const out: UnpackedIntWeight = { rows, cols, bits, groupSize, scales: new Float32Array(0) };

  if (g.format === 'pack-quantized') {
    const shape = t.integers(`${p}weight_shape`, why, [2]);
    if (shape[0] !== rows || shape[1] !== cols) throw new ModelLoadError(`${t.dir}: '${p}weight_shape' is [${shape.join(', ')}], config.json implies [${rows}, ${cols}]`);
    const words = t.words(`${p}weight_packed`, why, [rows, Math.ceil((cols * bits) / 32)]);
    // 4-bit pack-quantized words are the canonical int4 layout bit for bit (codes q + 8, LSB-first).
    if (bits === 4) out.packed = words;
    else out.codes = unpackAlongRows(words, rows, cols, bits);
  } else {
    const signed = t.int8(`${p}weight`, why, [[rows, cols]]);
    out.codes = Uint8Array.from(signed, (q) => q + mid);
  }

  const scaleShapes = w.strategy === 'tensor' ? [[1], []] : w.strategy === 'channel' ? [[rows, 1], [rows]] : [[rows, numGroups]];
  const scales = t.floats(`${p}weight_scale`, why, scaleShapes);
  out.scales = scales.length === 1 ? new Float32Array(rows).fill(scales[0]) : scales;

  if (!w.symmetric) out.zeros = readZeroPoints(t, `${p}weight_zero_point`, why, rows, numGroups, bits, w.strategy === 'tensor');
  if (t.has(`${p}weight_g_idx`)) {
    const gIdx = t.int32(`${p}weight_g_idx`, why, [cols]);
    // compressed-tensors initialises g_idx to −1 and only fills it for actorder "group".
    if (!gIdx.every((x) => x === -1)) out.gIdx = gIdx;
  }
  return out;
}

/**
 * Zero points: signed like the codes (z ∈ [−8, 7] for 4 bits). pack-quantized (since 2025-04) packs
 * group/channel zero points along the OUTPUT dimension, offset to unsigned like the codes; older
 * checkpoints and int-quantized keep them as I8 [rows, groups]. Returned unsigned (z + 2^(bits−1)).
 */
function readZeroPoints(t: CheckpointTensors, name: string, why: string, rows: number, numGroups: number, bits: 4 | 8, perTensor: boolean): Uint16Array {
  const mid = 1 << (bits - 1);
  const info = t.info(name, `${why}, asymmetric`);
  if (info.dtype === 'I32') {
    const words = t.words(name, `${why}, asymmetric`, [Math.ceil((rows * bits) / 32), numGroups]);
    return Uint16Array.from(unpackAlongColumns(words, rows, numGroups, bits));
  }
  const signed = t.int8(name, `${why}, asymmetric`, perTensor ? [[1], []] : [[rows, numGroups], ...(numGroups === 1 ? [[rows]] : [])]);
  const zeros = Uint16Array.from(signed, (z) => z + mid);
  return zeros.length === 1 ? new Uint16Array(rows).fill(zeros[0]) : zeros;
}

/** FP8 with [ceil(rows/bh), ceil(cols/bw)] block scales, dequantized exactly: w = e4m3 · scale[block]. */
export function dequantizeFp8Blocks(codes: Uint8Array, rows: number, cols: number, block: readonly number[], scales: Float32Array): Float32Array {
  const [bh, bw] = block;
  const bc = Math.ceil(cols / bw);
  const out = new Float32Array(rows * cols);
  for (let o = 0; o < rows; o++) {
    for (let i = 0; i < cols; i++) out[o * cols + i] = E4M3_VALUES[codes[o * cols + i]] * scales[Math.floor(o / bh) * bc + Math.floor(i / bw)];
  }
  return out;
}
