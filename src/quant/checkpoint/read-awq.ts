// Reads AutoAWQ "gemm" checkpoints (formats.md §4.3): qweight [in, out/8] and qzeros packed along the
// OUTPUT dimension in AWQ's interleaved nibble order, scales [in/group, out], zeros without GPTQ's −1.

import { ModelLoadError } from '../../errors.js';
import type { CheckpointQuantization } from './checkpoint-quantization.js';
import { numGroupsOf, toCanonical, type UnpackedIntWeight } from './stored-linear.js';
import type { CheckpointTensors } from './tensors.js';

export const AWQ_VERSIONS = ['gemm'] as const;

/** Output column 8c + j sits in nibble slot AWQ_SLOT_OF_COLUMN[j] of word c (AWQ_REVERSE_ORDER). */
export const AWQ_SLOT_OF_COLUMN = [0, 4, 1, 5, 2, 6, 3, 7] as const;

export function openAwq(qc: Record<string, unknown>, path: string, tensors: CheckpointTensors): CheckpointQuantization {
  const version = String(qc.version ?? 'gemm').toLowerCase();
  if (!(AWQ_VERSIONS as readonly string[]).includes(version)) {
    throw new ModelLoadError(`${path}: AWQ version '${version}' is not supported; supported: ${AWQ_VERSIONS.join(', ')}`);
  }
  const bits = Number(qc.bits ?? qc.w_bit ?? 4);
  if (bits !== 4) throw new ModelLoadError(`${path}: AWQ bits ${bits} is not supported; supported: 4`);
  const groupSize = Number(qc.group_size ?? qc.q_group_size ?? 128);
  if (!(groupSize === -1 || (Number.isInteger(groupSize) && groupSize > 0))) throw new ModelLoadError(`${path}: AWQ group_size ${String(qc.group_size)} must be a positive integer or -1`);
  return {
    method: 'awq',
    description: `AWQ int4 (group ${groupSize}, ${version})`,
    readLinear(module, rows, cols) {
      if (!tensors.has(`${module}.qweight`)) return undefined;
      return toCanonical(readAwqModule(tensors, module, rows, cols, groupSize === -1 ? cols : groupSize));
    },
  };
}

/** AWQ words [n, ceil(outDim/8)] (interleaved slots along the output dimension) → values [outDim, n]. */
function unpackAwqTransposed(words: Uint32Array, n: number, outDim: number): Uint8Array {
  const wordsPerRow = Math.ceil(outDim / 8);
  const out = new Uint8Array(outDim * n);
  for (let r = 0; r < n; r++) {
    for (let o = 0; o < outDim; o++) out[o * n + r] = (words[r * wordsPerRow + (o >> 3)] >>> (4 * AWQ_SLOT_OF_COLUMN[o & 7])) & 0xf;
  }
  return out;
}

function readAwqModule(t: CheckpointTensors, module: string, rows: number, cols: number, groupSize: number): UnpackedIntWeight {
  const p = `${module}.`;
  const why = `${module}: AWQ int4 gemm`;
  const numGroups = numGroupsOf(cols, groupSize);
  const outWords = Math.ceil(rows / 8);
  const qweight = t.words(`${p}qweight`, why, [cols, outWords]);
  const qzeros = t.words(`${p}qzeros`, why, [numGroups, outWords]);
  const scalesIn = t.floats(`${p}scales`, why, [[numGroups, rows]]);
  const scales = new Float32Array(rows * numGroups);
  for (let g = 0; g < numGroups; g++) for (let o = 0; o < rows; o++) scales[o * numGroups + g] = scalesIn[g * rows + o];
  return {
    rows,
    cols,
    bits: 4,
    groupSize,
    codes: unpackAwqTransposed(qweight, cols, rows),
    scales,
    zeros: Uint16Array.from(unpackAwqTransposed(qzeros, numGroups, rows)),
  };
}
