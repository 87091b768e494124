// The smallest and largest value of an int32 array: the one loop behind every per-token range check
// of a step (token ids, positions, sequence indices, cache slots).
//
// Why one shared function: V8 compiles a function to fast code only after it has run a while, and a
// check made once a forward (a 2048-token prefill's ids, positions, sequence indices) stayed in the
// interpreter for dozens of forwards — ~50 µs a loop on the GPU machine's host, each on the path to
// the first layer's kernels, while the GPU waited. The cache-slot check runs every layer, so this
// loop is compiled within the first forward and every other check then runs the compiled code.

export interface Int32Bounds {
  min: number;
  max: number;
}

/** Bounds of a[0..n) (n defaults to the whole array); { min: Infinity, max: -Infinity } when n is 0. */
export function int32Bounds(a: Int32Array, n = a.length): Int32Bounds {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = a[i];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { min, max };
}

/**
 * Index of the first value of a[0..n) outside [lo, hi), or -1: where a check whose bounds failed
 * finds the value to name in its error (the slow path, so a plain loop).
 */
export function firstOutside(a: Int32Array, lo: number, hi: number, n = a.length): number {
  for (let i = 0; i < n; i++) if (a[i] < lo || a[i] >= hi) return i;
  return -1;
}
