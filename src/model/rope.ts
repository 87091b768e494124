// Rotary position embedding frequencies for every RoPE variant Llama-family checkpoints use,
// computed the way transformers does (float32 inverse frequencies) so logits match its reference.

import { firstOutside, int32Bounds } from '../int32-bounds.js';
import type { RopeRows } from '../backend/backend.js';
import type { RopeConfig } from './config.js';

const f = Math.fround;

/** Base inverse frequencies 1 / theta^(2i/dim), in float32 like torch. */
function baseInvFreq(theta: number, dim: number): Float64Array {
  const out = new Float64Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) out[i] = f(1 / f(Math.pow(theta, f((2 * i) / dim))));
  return out;
}

function yarnMscale(scale: number, mscale = 1): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

/**
 * Inverse frequencies and the cos/sin multiplier for a sequence whose longest position so far is
 * `seqLen` (only dynamic NTK depends on it).
 */
export function ropeFrequencies(rope: RopeConfig, seqLen: number): { invFreq: Float64Array; attentionFactor: number } {
  const dim = rope.rotaryDim;
  switch (rope.type) {
    case 'default':
      return { invFreq: baseInvFreq(rope.theta, dim), attentionFactor: 1 };
    case 'linear': {
      const inv = baseInvFreq(rope.theta, dim).map((x) => f(x / rope.factor));
      return { invFreq: inv, attentionFactor: 1 };
    }
    case 'dynamic': {
      // NTK-aware: stretch the base only once the sequence outgrows the trained context.
      const maxPos = rope.originalMaxPositionEmbeddings;
      const len = Math.max(seqLen, maxPos);
      const base = rope.theta * Math.pow((rope.factor * len) / maxPos - (rope.factor - 1), dim / (dim - 2));
      return { invFreq: baseInvFreq(base, dim), attentionFactor: 1 };
    }
    case 'llama3': {
      const inv = baseInvFreq(rope.theta, dim);
      const orig = rope.originalMaxPositionEmbeddings;
      const lowWavelen = orig / rope.lowFreqFactor;
      const highWavelen = orig / rope.highFreqFactor;
      for (let i = 0; i < inv.length; i++) {
        const wavelen = (2 * Math.PI) / inv[i];
        if (wavelen < highWavelen) continue;
        if (wavelen > lowWavelen) {
          inv[i] = f(inv[i] / rope.factor);
        } else {
          const smooth = (orig / wavelen - rope.lowFreqFactor) / (rope.highFreqFactor - rope.lowFreqFactor);
          inv[i] = f((1 - smooth) * (inv[i] / rope.factor) + smooth * inv[i]);
        }
      }
      return { invFreq: inv, attentionFactor: 1 };
    }
    case 'yarn': {
      const { factor, theta } = rope;
      const orig = rope.originalMaxPositionEmbeddings;
      let attentionFactor = rope.attentionFactor;
      if (attentionFactor === undefined) {
        attentionFactor =
          rope.mscale !== undefined && rope.mscaleAllDim !== undefined
            ? yarnMscale(factor, rope.mscale) / yarnMscale(factor, rope.mscaleAllDim)
            : yarnMscale(factor);
      }
      const correctionDim = (numRotations: number) => (dim * Math.log(orig / (numRotations * 2 * Math.PI))) / (2 * Math.log(theta));
      let low = correctionDim(rope.betaFast);
      let high = correctionDim(rope.betaSlow);
      if (rope.truncate) {
        low = Math.floor(low);
        high = Math.ceil(high);
      }
      low = Math.max(low, 0);
      high = Math.min(high, dim - 1);
      if (low === high) high += 0.001;
      const extrapolation = baseInvFreq(theta, dim);
      const invFreq = new Float64Array(dim / 2);
      for (let i = 0; i < dim / 2; i++) {
        const posFreq = f(Math.pow(theta, f((2 * i) / dim)));
        const interp = f(1 / f(factor * posFreq));
        const ramp = Math.min(1, Math.max(0, f((i - low) / (high - low))));
        const extrapWeight = f(1 - ramp);
        invFreq[i] = f(f(interp * (1 - extrapWeight)) + f(extrapolation[i] * extrapWeight));
      }
      return { invFreq, attentionFactor };
    }
  }
}

/**
 * cos/sin tables [numTokens, rotaryDim/2] for the given positions, with the angle rounded to
 * float32 as torch computes it (position × inv_freq in float32), then scaled by attentionFactor.
 */
export function ropeCosSin(positions: ArrayLike<number>, invFreqs: ArrayLike<Float64Array>, attentionFactors: ArrayLike<number>): { cos: Float32Array; sin: Float32Array } {
  const n = positions.length;
  const half = invFreqs[0]?.length ?? 0;
  const cos = new Float32Array(n * half);
  const sin = new Float32Array(n * half);
  for (let t = 0; t < n; t++) {
    const inv = invFreqs[t];
    const a = attentionFactors[t];
    for (let i = 0; i < half; i++) {
      const angle = f(positions[t] * inv[i]);
      cos[t * half + i] = Math.cos(angle) * a;
      sin[t * half + i] = Math.sin(angle) * a;
    }
  }
  return { cos, sin };
}

/**
 * The cos/sin rows of one fixed frequency set (every RoPE type but dynamic NTK) by position, computed
 * once and grown by doubling to the largest position asked: a step's RoPE is then this table and its
 * positions (RopeRows with an index), nothing computed or gathered on the host per step. The rows are
 * the values ropeCosSin computes. Growing makes new arrays; the ones handed out before never change
 * (backends keep device copies by identity).
 */
export class RopeTable {
  private cos = new Float32Array(0);
  private sin = new Float32Array(0);
  private rows = 0;

  constructor(
    private readonly invFreq: Float64Array,
    private readonly attentionFactor: number,
  ) {}

  /** RoPE for tokens at `positions`: the table's rows, indexed by position (grown first where one is past its end). */
  at(positions: Int32Array): RopeRows {
    const { min, max } = int32Bounds(positions);
    if (min < 0) {
      const t = firstOutside(positions, 0, Infinity);
      throw new RangeError(`RoPE: position ${positions[t]} (token ${t}) is negative`);
    }
    const top = Math.max(0, max);
    if (top >= this.rows) this.grow(Math.max(top + 1, 2 * this.rows, 256));
    return { cos: this.cos, sin: this.sin, index: positions };
  }

  private grow(rows: number): void {
    const positions = Int32Array.from({ length: rows - this.rows }, (_, i) => this.rows + i);
    const more = ropeCosSin(positions, new Array(positions.length).fill(this.invFreq), new Array(positions.length).fill(this.attentionFactor));
    const half = this.invFreq.length;
    const cos = new Float32Array(rows * half);
    const sin = new Float32Array(rows * half);
    cos.set(this.cos);
    sin.set(this.sin);
    cos.set(more.cos, this.rows * half);
    sin.set(more.sin, this.rows * half);
    [this.cos, this.sin, this.rows] = [cos, sin, rows];
  }
}
