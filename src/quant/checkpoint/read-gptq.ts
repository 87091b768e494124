// Reads GPTQ checkpoints (AutoGPTQ / GPTQModel; formats.md §4.1–4.2): qweight packed along the input
// dimension and transposed against nn.Linear, qzeros along the output, scales [groups, out], g_idx.

import { ModelLoadError } from '../../errors.js';
import type { CheckpointQuantization } from './checkpoint-quantization.js';
import { gptqDynamicOverride } from './module-match.js';
import { numGroupsOf, toCanonical, transposeBytes, transposeFloats, unpackAlongColumns, unpackAlongRows, type UnpackedIntWeight } from './stored-linear.js';
import type { CheckpointTensors } from './tensors.js';

export const GPTQ_BITS = [4, 8] as const;
export const GPTQ_CHECKPOINT_FORMATS = ['gptq', 'gptq_v2'] as const;

interface GptqArgs {
  bits: 4 | 8;
  groupSize: number;
  descAct: boolean;
}

export function openGptq(qc: Record<string, unknown>, path: string, tensors: CheckpointTensors): CheckpointQuantization {
  // GPTQModel renamed checkpoint_format to format; AutoGPTQ files have neither (v1).
  const format = String(qc.checkpoint_format ?? qc.format ?? 'gptq');
  if (!(GPTQ_CHECKPOINT_FORMATS as readonly string[]).includes(format)) {
    throw new ModelLoadError(`${path}: GPTQ checkpoint_format '${format}' is not supported; supported: ${GPTQ_CHECKPOINT_FORMATS.join(', ')}`);
  }
  const packDtype = qc.pack_dtype ?? 'int32';
  if (packDtype !== 'int32' && packDtype !== 'torch.int32') throw new ModelLoadError(`${path}: GPTQ pack_dtype '${String(packDtype)}' is not supported; supported: int32`);
  const v1 = format === 'gptq';
  const base = parseArgs(qc, path, 'GPTQ');
  const dynamic = qc.dynamic as Record<string, unknown> | undefined;
  if (dynamic) for (const v of Object.values(dynamic)) if (v && typeof v === 'object') parseArgs({ ...qc, ...(v as object) }, path, 'GPTQ dynamic override');

  return {
    method: 'gptq',
    description: `GPTQ int${base.bits} (group ${base.groupSize}${base.descAct ? ', desc_act' : ''}, format ${format})`,
    readLinear(module, rows, cols) {
      if (!tensors.has(`${module}.qweight`)) return undefined;
      const override = gptqDynamicOverride(dynamic, module);
      if (override === 'skip') throw new ModelLoadError(`${tensors.dir}: '${module}' is excluded by the GPTQ "dynamic" config but stored quantized (${module}.qweight)`);
      const args = override ? parseArgs({ ...qc, ...override }, path, `GPTQ dynamic override for ${module}`) : base;
      return toCanonical(readGptqModule(tensors, module, rows, cols, args, v1));
    },
  };
}

function parseArgs(qc: Record<string, unknown>, path: string, what: string): GptqArgs {
  const bits = Number(qc.bits ?? qc.w_bit);
  if (!(GPTQ_BITS as readonly number[]).includes(bits)) throw new ModelLoadError(`${path}: ${what} bits ${String(qc.bits)} is not supported; supported: ${GPTQ_BITS.join(', ')}`);
  const groupSize = Number(qc.group_size ?? -1);
  if (!(groupSize === -1 || (Number.isInteger(groupSize) && groupSize > 0))) throw new ModelLoadError(`${path}: ${what} group_size ${String(qc.group_size)} must be a positive integer or -1`);
  return { bits: bits as 4 | 8, groupSize, descAct: qc.desc_act === true };
}

function readGptqModule(t: CheckpointTensors, module: string, rows: number, cols: number, args: GptqArgs, v1: boolean): UnpackedIntWeight {
  const { bits } = args;
  const p = `${module}.`;
  const why = `${module}: GPTQ int${bits}`;
  const perWord = 32 / bits;
  const groupSize = args.groupSize === -1 ? cols : args.groupSize;
  const numGroups = numGroupsOf(cols, groupSize);
  const qweight = t.words(`${p}qweight`, why, [Math.ceil(cols / perWord), rows]);
  const qzeros = t.words(`${p}qzeros`, why, [numGroups, Math.ceil(rows / perWord)]);
  const scales = transposeFloats(t.floats(`${p}scales`, why, [[numGroups, rows]]), numGroups, rows);

  // v1 ("gptq") stores zero − 1 and every v1 kernel adds the 1 back; gptq_v2 stores the zero itself.
  const storedZeros = unpackAlongRows(qzeros, numGroups, rows, bits);
  const zeros = new Uint16Array(rows * numGroups);
  for (let g = 0; g < numGroups; g++) for (let o = 0; o < rows; o++) zeros[o * numGroups + g] = storedZeros[g * rows + o] + (v1 ? 1 : 0);

  const w: UnpackedIntWeight = { rows, cols, bits, groupSize, scales, zeros };
  if (bits === 4) {
    // Word (r, o) holds inputs 8r..8r+7 of output o, LSB-first: the canonical word (o, r) exactly.
    const wordsPerRow = Math.ceil(cols / 8);
    const packed = new Uint32Array(rows * wordsPerRow);
    for (let r = 0; r < wordsPerRow; r++) for (let o = 0; o < rows; o++) packed[o * wordsPerRow + r] = qweight[r * rows + o];
    w.packed = packed;
  } else {
    w.codes = transposeBytes(unpackAlongColumns(qweight, cols, rows, bits), cols, rows);
  }
  if (t.has(`${p}g_idx`)) w.gIdx = t.int32(`${p}g_idx`, why, [cols]);
  else if (args.descAct) throw new ModelLoadError(`${t.dir}: checkpoint is missing tensor '${p}g_idx' (${why} with desc_act)`);
  if (w.gIdx) {
    const bad = w.gIdx.findIndex((g) => g < 0 || g >= numGroups);
    if (bad >= 0) throw new ModelLoadError(`${t.dir}: '${p}g_idx'[${bad}] = ${w.gIdx[bad]} is not a group (0..${numGroups - 1})`);
  }
  return w;
}
