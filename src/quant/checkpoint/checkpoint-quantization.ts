// The one door every pre-quantized checkpoint layout goes through: a reader per method that answers,
// for each Linear module, "stored quantized (here it is, canonical), or stored as a plain float weight".

import type { ModuleClass } from './module-match.js';
import type { StoredLinear } from './stored-linear.js';

export const CHECKPOINT_QUANT_METHODS = ['compressed-tensors', 'gptq', 'awq', 'modelopt', 'fp8'] as const;
export type CheckpointQuantMethod = (typeof CHECKPOINT_QUANT_METHODS)[number];

export interface CheckpointQuantization {
  readonly method: CheckpointQuantMethod;
  /** For reports and errors, e.g. "GPTQ int4 (group 128, desc_act, format gptq)". */
  readonly description: string;
  /**
   * The weight of `module` (e.g. 'model.layers.0.self_attn.q_proj', nn.Linear layout [rows = out,
   * cols = in]) from its quantized tensors, or undefined when the checkpoint stores it as a plain float
   * `weight` (ignored / excluded modules, lm_head, embeddings). Throws ModelLoadError naming the tensor
   * when the quantized tensors are missing or misshapen.
   */
  readLinear(module: string, rows: number, cols: number, moduleClass?: ModuleClass): StoredLinear | undefined;
}
