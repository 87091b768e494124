// The skeleton every quantized CPU kernel shares: decode one weight row at a time into float32 and
// use it for every token, so a full float copy of the matrix never exists (only one row of it).

/** Writes the float32 values of weight row `row` ([cols] of nn.Linear's [out, in]) into `dst`. */
export type RowDecoder = (row: number, dst: Float32Array) => void;

/** The whole matrix as float32 [rows, cols], row by row: what `dequantize` of any format returns. */
export function dequantizeRows(rows: number, cols: number, decodeRow: RowDecoder): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) decodeRow(r, out.subarray(r * cols, (r + 1) * cols));
  return out;
}

/**
 * y = x · Wᵀ for x [nTokens, cols] → [nTokens, rows]. Each row is decoded once and reused for all
 * tokens (the CPU backend's order: weight row outermost); sums run in float64 like its dense linear,
 * so the only difference from a dense linear over `dequantize` is summation order.
 */
export function linearOverDecodedRows(x: Float32Array, nTokens: number, rows: number, cols: number, decodeRow: RowDecoder, what: string): Float32Array {
  if (!Number.isInteger(nTokens) || nTokens < 0 || x.length !== nTokens * cols) {
    throw new RangeError(`${what} linear: x has ${x.length} values, expected nTokens ${nTokens} × in ${cols}`);
  }
  const out = new Float32Array(nTokens * rows);
  const row = new Float32Array(cols);
  for (let r = 0; r < rows; r++) {
    decodeRow(r, row);
    for (let t = 0; t < nTokens; t++) {
      const xOff = t * cols;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      let k = 0;
      for (; k + 3 < cols; k += 4) {
        s0 += x[xOff + k] * row[k];
        s1 += x[xOff + k + 1] * row[k + 1];
        s2 += x[xOff + k + 2] * row[k + 2];
        s3 += x[xOff + k + 3] * row[k + 3];
      }
      for (; k < cols; k++) s0 += x[xOff + k] * row[k];
      out[t * rows + r] = s0 + s1 + s2 + s3;
    }
  }
  return out;
}

/** Throws unless `values` has rows·cols entries and the shape is a real matrix. */
export function checkMatrixShape(values: { length: number }, rows: number, cols: number, what: string): void {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows <= 0 || cols <= 0) {
    throw new RangeError(`${what}: shape [${rows}, ${cols}] is not a matrix`);
  }
  if (values.length !== rows * cols) {
    throw new RangeError(`${what}: has ${values.length} values, expected [${rows}, ${cols}] = ${rows * cols}`);
  }
}
