// GPTQ (Frantar et al. 2022): quantize a Linear's weight column by column, pushing each column's
// rounding error onto the columns not yet quantized through the inverse Hessian of the layer's
// inputs, so that X·Ŵᵀ stays close to X·Wᵀ. Also the integer grid it shares with our RTN export.

import { checkMatrixShape } from './decoded-row-linear.js';
import type { QuantizedWeight } from './format.js';
import { createInt4Weight, packInt4 } from './int4.js';
import { createInt8Weight, INT8_SCALE_DIVISOR } from './int8.js';
import { FLOAT32_EPSILON, roundHalfToEven } from './rounding.js';

/**
 * An integer grid: codes u ∈ [0, 2^bits), w ≈ (u − zero) · scale per group of input columns.
 * The scale and zero conventions are the canonical quantizers' (int4.ts, int8.ts):
 *   symmetric 4-bit  s = amax / 7.5, zero 8        symmetric 8-bit  s = amax / 127, zero 128
 *   asymmetric       s = (max − min) / (2^bits − 1) over a range widened to include 0,
 *                    zero = clamp(round(−min / s), 0, 2^bits − 1)
 * `roundScale` maps a scale to the value it will have once stored (bf16 for a bf16 checkpoint), so
 * codes are chosen against the scale a reader will see.
 */
export interface IntGrid {
  bits: 4 | 8;
  symmetric: boolean;
  /** Input columns per group; `cols` (or −1) for one group per output row. */
  groupSize: number;
  roundScale?: (scale: number) => number;
}

export interface GroupParams {
  scale: number;
  /** Unsigned zero point. */
  zero: number;
}

/** Scale and zero point of one group from its value range (min ≤ 0 ≤ max is enforced here). */
export function intGroupParams(min: number, max: number, grid: IntGrid): GroupParams {
  const lo = Math.min(min, 0);
  const hi = Math.max(max, 0);
  const levels = (1 << grid.bits) - 1;
  const mid = 1 << (grid.bits - 1);
  let scale = grid.symmetric
    ? Math.fround(Math.max(-lo, hi) / (grid.bits === 4 ? 7.5 : INT8_SCALE_DIVISOR))
    : Math.fround(Math.fround(hi - lo) / levels);
  if (!(scale > 0)) scale = FLOAT32_EPSILON;
  if (grid.roundScale) scale = grid.roundScale(scale);
  const zero = grid.symmetric ? mid : Math.min(levels, Math.max(0, roundHalfToEven(Math.fround(-lo / scale))));
  return { scale, zero };
}

/** The code of x on the grid, in the signed domain as torch computes it: clamp(round(x/s + z − mid)) + mid. */
export function intCode(x: number, p: GroupParams, bits: number): number {
  const mid = 1 << (bits - 1);
  const scaled = Math.fround(Math.fround(x / p.scale) + (p.zero - mid));
  return Math.min(mid - 1, Math.max(-mid, roundHalfToEven(scaled))) + mid;
}

function groupSizeOf(grid: IntGrid, cols: number): number {
  return grid.groupSize === -1 || grid.groupSize >= cols ? cols : grid.groupSize;
}

/** Packs codes [rows, cols], scales and zeros [rows, numGroups] into the canonical int4 / int8 weight. */
export function intWeightFromCodes(rows: number, cols: number, grid: IntGrid, codes: Uint8Array, scales: Float32Array, zeros: Uint8Array, gIdx?: Int32Array): QuantizedWeight {
  const groupSize = groupSizeOf(grid, cols);
  if (grid.bits === 4) {
    return createInt4Weight({ rows, cols, groupSize, packed: packInt4(codes, rows, cols), scales, zeros: grid.symmetric ? undefined : zeros, gIdx });
  }
  if (!grid.symmetric || groupSize !== cols || gIdx) throw new RangeError('int8 weights are symmetric with one scale per output row (canonical int8)');
  return createInt8Weight(rows, cols, Int8Array.from(codes, (u) => u - 128), scales);
}

/** Round-to-nearest on the grid: each group's parameters from its own min/max. */
export function quantizeIntRtn(w: Float32Array, rows: number, cols: number, grid: IntGrid): QuantizedWeight {
  checkMatrixShape(w, rows, cols, 'quantizeIntRtn input');
  const groupSize = groupSizeOf(grid, cols);
  const numGroups = Math.ceil(cols / groupSize);
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows * numGroups);
  const zeros = new Uint8Array(rows * numGroups);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < numGroups; g++) {
      const start = r * cols + g * groupSize;
      const end = r * cols + Math.min(cols, (g + 1) * groupSize);
      let min = 0, max = 0;
      for (let i = start; i < end; i++) {
        if (w[i] < min) min = w[i];
        if (w[i] > max) max = w[i];
      }
      const p = intGroupParams(min, max, grid);
      scales[r * numGroups + g] = p.scale;
      zeros[r * numGroups + g] = p.zero;
      for (let i = start; i < end; i++) codes[i] = intCode(w[i], p, grid.bits);
    }
  }
  return intWeightFromCodes(rows, cols, grid, codes, scales, zeros);
}

const HESSIAN_CHUNK_ROWS = 64;

/** H = 2/N · Σ xᵀx over the N input rows seen (the GPTQ Hessian of ‖X·Wᵀ − X·Ŵᵀ‖²), in float64. */
export class HessianAccumulator {
  /** Sums over a dimension padded to a multiple of 4 (the kernel's row block); upper triangle valid. */
  private readonly padded: number;
  private readonly sum: Float64Array;
  private readonly xt: Float64Array;
  private rowsSeen = 0;

  constructor(readonly cols: number) {
    this.padded = Math.ceil(cols / 4) * 4;
    this.sum = new Float64Array(this.padded * this.padded);
    this.xt = new Float64Array(this.padded * HESSIAN_CHUNK_ROWS);
  }

  get samples(): number {
    return this.rowsSeen;
  }

  /** Adds x [nRows, cols] (row-major). */
  add(x: Float32Array, nRows: number): void {
    const n = this.cols;
    if (x.length !== nRows * n) throw new RangeError(`HessianAccumulator: x has ${x.length} values, expected ${nRows} × ${n}`);
    for (let t0 = 0; t0 < nRows; t0 += HESSIAN_CHUNK_ROWS) this.addChunk(x, t0, Math.min(HESSIAN_CHUNK_ROWS, nRows - t0));
    this.rowsSeen += nRows;
  }

  /**
   * Rows t0..t0+m transposed to float64 columns (padding columns stay zero), then H += XᵀX by
   * blocks of 4 × 2 entries, each a contiguous dot product over the chunk's rows: the register
   * blocking roughly doubles the speed of a plain per-entry loop in V8.
   */
  private addChunk(x: Float32Array, t0: number, m: number): void {
    const n = this.cols;
    const np = this.padded;
    const xt = this.xt;
    const h = this.sum;
    for (let t = 0; t < m; t++) for (let i = 0; i < n; i++) xt[i * m + t] = x[(t0 + t) * n + i];
    for (let i = n * m; i < np * m; i++) xt[i] = 0;
    for (let i = 0; i < np; i += 4) {
      const r0 = i * m, r1 = r0 + m, r2 = r1 + m, r3 = r2 + m;
      for (let j = i; j < np; j += 2) {
        const q0 = j * m, q1 = q0 + m;
        let a0 = 0, a1 = 0, b0 = 0, b1 = 0, c0 = 0, c1 = 0, d0 = 0, d1 = 0;
        for (let t = 0; t < m; t++) {
          const y0 = xt[q0 + t], y1 = xt[q1 + t];
          const x0 = xt[r0 + t], x1 = xt[r1 + t], x2 = xt[r2 + t], x3 = xt[r3 + t];
          a0 += x0 * y0; a1 += x0 * y1;
          b0 += x1 * y0; b1 += x1 * y1;
          c0 += x2 * y0; c1 += x2 * y1;
          d0 += x3 * y0; d1 += x3 * y1;
        }
        const o = i * np + j;
        h[o] += a0; h[o + 1] += a1;
        h[o + np] += b0; h[o + np + 1] += b1;
        h[o + 2 * np] += c0; h[o + 2 * np + 1] += c1;
        h[o + 3 * np] += d0; h[o + 3 * np + 1] += d1;
      }
    }
  }

  hessian(): Float64Array {
    const n = this.cols;
    const np = this.padded;
    const out = new Float64Array(n * n);
    const f = this.rowsSeen > 0 ? 2 / this.rowsSeen : 0;
    for (let i = 0; i < n; i++) {
      for (let j = i; j < n; j++) {
        const v = this.sum[i * np + j] * f;
        out[i * n + j] = v;
        out[j * n + i] = v;
      }
    }
    return out;
  }
}

/** In-place lower Cholesky factor of a symmetric positive definite n×n matrix; false if it is not PD. */
function choleskyLower(a: Float64Array, n: number): boolean {
  for (let j = 0; j < n; j++) {
    let d = a[j * n + j];
    for (let k = 0; k < j; k++) d -= a[j * n + k] * a[j * n + k];
    if (!(d > 0)) return false;
    const ljj = Math.sqrt(d);
    a[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let s = a[i * n + j];
      const ri = i * n, rj = j * n;
      for (let k = 0; k < j; k++) s -= a[ri + k] * a[rj + k];
      a[ri + j] = s / ljj;
    }
    for (let k = j + 1; k < n; k++) a[j * n + k] = 0;
  }
  return true;
}

/** L⁻¹ of a lower-triangular L (n×n), row by row so every inner loop runs over contiguous memory. */
function invertLower(l: Float64Array, n: number): Float64Array {
  const inv = new Float64Array(n * n);
  const acc = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    acc.fill(0, 0, i);
    // inv[i][j] = −(Σ_{k=j}^{i−1} L[i][k] · inv[k][j]) / L[i][i] for j < i.
    for (let k = 0; k < i; k++) {
      const a = l[i * n + k];
      if (a === 0) continue;
      const rk = k * n;
      for (let j = 0; j <= k; j++) acc[j] += a * inv[rk + j];
    }
    const d = l[i * n + i];
    for (let j = 0; j < i; j++) inv[i * n + j] = -acc[j] / d;
    inv[i * n + i] = 1 / d;
  }
  return inv;
}

/**
 * The upper Cholesky factor U of H⁻¹ (H⁻¹ = Uᵀ·U), as GPTQ uses it: row i of U, scaled by 1/U[i,i],
 * is how the error of column i spreads over the columns after it. With P the order-reversing
 * permutation and P·H·P = M·Mᵀ, H = R·Rᵀ for the upper-triangular R = P·M·P, so U = R⁻¹ = P·M⁻¹·P:
 * one Cholesky and one triangular inverse. Undefined when H is not positive definite.
 */
export function inverseHessianFactor(h: Float64Array, n: number): Float64Array | undefined {
  const m = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) m[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
  if (!choleskyLower(m, n)) return undefined;
  const minv = invertLower(m, n);
  const u = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) u[i * n + j] = minv[(n - 1 - i) * n + (n - 1 - j)];
  return u;
}

export interface GptqHessianOptions {
  /** Dampening added to H's diagonal, as a fraction of its mean (default 0.01). */
  dampPercent?: number;
  /**
   * Quantize columns in order of decreasing H diagonal (act-order / desc_act). Groups are then the
   * runs of that order and `gIdx` maps each original column to its group.
   */
  actOrder?: boolean;
}

export interface GptqOptions extends GptqHessianOptions {
  /** Columns quantized between the lazy updates of the rest of the matrix (default 128). */
  blockSize?: number;
}

/** What GPTQ needs from a Hessian, computed once and shared by the projections that read the same input. */
export interface PreparedHessian {
  cols: number;
  /** Columns in quantization order (identity without act-order). */
  perm: Int32Array;
  /** Upper Cholesky factor of the damped, permuted H⁻¹. */
  u: Float64Array;
  /** Input columns that were always zero: their weights are dropped. */
  dead: Int32Array;
}

export function prepareHessian(h: Float64Array, cols: number, options: GptqHessianOptions = {}): PreparedHessian {
  if (h.length !== cols * cols) throw new RangeError(`GPTQ: Hessian has ${h.length} values, expected ${cols}² = ${cols * cols}`);
  const H = Float64Array.from(h);
  // Inputs that were always zero carry no information: their weights are irrelevant.
  const dead: number[] = [];
  for (let j = 0; j < cols; j++) {
    if (H[j * cols + j] === 0) {
      H[j * cols + j] = 1;
      dead.push(j);
    }
  }
  const perm = Int32Array.from({ length: cols }, (_, j) => j);
  if (options.actOrder) perm.sort((a, b) => H[b * cols + b] - H[a * cols + a] || a - b);
  const Hp = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) Hp[i * cols + j] = H[perm[i] * cols + perm[j]];
  let meanDiag = 0;
  for (let j = 0; j < cols; j++) meanDiag += Hp[j * cols + j];
  meanDiag /= cols;
  // Escalate dampening if H is numerically singular (too few or degenerate calibration inputs).
  let u: Float64Array | undefined;
  for (let attempt = 0, d = options.dampPercent ?? 0.01; attempt < 6 && !u; attempt++, d *= 10) {
    const damped = Float64Array.from(Hp);
    for (let j = 0; j < cols; j++) damped[j * cols + j] += d * meanDiag;
    u = inverseHessianFactor(damped, cols);
  }
  if (!u) throw new RangeError(`GPTQ: the Hessian [${cols}, ${cols}] is not positive definite even with dampening; use more (and more varied) calibration text`);
  return { cols, perm, u, dead: Int32Array.from(dead) };
}

/**
 * GPTQ of w [rows, cols] (nn.Linear layout) against the Hessian h [cols, cols] of its inputs (or a
 * PreparedHessian of it). Group scales and zero points are computed when quantization reaches a
 * group's first column, from the group's columns as updated so far (AutoGPTQ's behaviour); a block
 * always holds whole groups.
 */
export function gptqQuantize(w: Float32Array, rows: number, cols: number, h: Float64Array | PreparedHessian, grid: IntGrid, options: GptqOptions = {}): QuantizedWeight {
  checkMatrixShape(w, rows, cols, 'gptqQuantize weight');
  const prepared = h instanceof Float64Array ? prepareHessian(h, cols, options) : h;
  if (prepared.cols !== cols) throw new RangeError(`gptqQuantize: the Hessian is for ${prepared.cols} inputs, the weight has ${cols}`);
  const { perm, u: U } = prepared;
  const groupSize = groupSizeOf(grid, cols);
  const numGroups = Math.ceil(cols / groupSize);
  const requestedBlock = options.blockSize ?? 128;
  const blockSize = groupSize >= cols ? requestedBlock : groupSize * Math.max(1, Math.floor(requestedBlock / groupSize));

  const W = Float64Array.from(w);
  for (const j of prepared.dead) for (let r = 0; r < rows; r++) W[r * cols + j] = 0;
  const Wp = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) Wp[r * cols + j] = W[r * cols + perm[j]];

  const codes = new Uint8Array(rows * cols); // in permuted column order
  const scales = new Float32Array(rows * numGroups);
  const zeros = new Uint8Array(rows * numGroups);
  const params: GroupParams[] = new Array(rows);
  const err = new Float64Array(rows * blockSize);

  const setGroupParams = (g: number, start: number, end: number) => {
    for (let r = 0; r < rows; r++) {
      let min = 0, max = 0;
      for (let j = start; j < end; j++) {
        const v = Math.fround(Wp[r * cols + j]);
        if (v < min) min = v;
        if (v > max) max = v;
      }
      params[r] = intGroupParams(min, max, grid);
      scales[r * numGroups + g] = params[r].scale;
      zeros[r * numGroups + g] = params[r].zero;
    }
  };

  for (let i1 = 0; i1 < cols; i1 += blockSize) {
    const i2 = Math.min(cols, i1 + blockSize);
    const count = i2 - i1;
    for (let i = 0; i < count; i++) {
      const col = i1 + i;
      if (col % groupSize === 0) setGroupParams(col / groupSize, col, Math.min(cols, col + groupSize));
      const d = U[col * cols + col];
      for (let r = 0; r < rows; r++) {
        const x = Wp[r * cols + col];
        const p = params[r];
        const u = intCode(Math.fround(x), p, grid.bits);
        codes[r * cols + col] = u;
        const e = (x - Math.fround((u - p.zero) * p.scale)) / d;
        err[r * blockSize + i] = e;
        // Spread this column's error over the rest of the block now.
        const rowOff = r * cols;
        const uRow = col * cols;
        for (let j = col + 1; j < i2; j++) Wp[rowOff + j] -= e * U[uRow + j];
      }
    }
    // And over every later block at once (the "lazy batch" update).
    for (let r = 0; r < rows; r++) {
      const rowOff = r * cols;
      for (let i = 0; i < count; i++) {
        const e = err[r * blockSize + i];
        if (e === 0) continue;
        const uRow = (i1 + i) * cols;
        for (let j = i2; j < cols; j++) Wp[rowOff + j] -= e * U[uRow + j];
      }
    }
  }

  // Back to the original column order; with act-order each column remembers its group.
  const outCodes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) outCodes[r * cols + perm[j]] = codes[r * cols + j];
  let gIdx: Int32Array | undefined;
  if (!isIdentity(perm) && numGroups > 1) {
    gIdx = new Int32Array(cols);
    for (let j = 0; j < cols; j++) gIdx[perm[j]] = Math.floor(j / groupSize);
  }
  return intWeightFromCodes(rows, cols, grid, outCodes, scales, zeros, gIdx);
}

function isIdentity(perm: Int32Array): boolean {
  return perm.every((p, i) => p === i);
}
