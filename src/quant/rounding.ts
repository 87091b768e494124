// Round-half-to-even and float32 emulation shared by every quantizer, so that our codes match what
// torch produces on float32 tensors (torch.round and every dtype cast round half to even).

/** Nearest integer, ties to the even one (torch.round, numpy.round, IEEE roundTiesToEven). */
export function roundHalfToEven(x: number): number {
  const floor = Math.floor(x);
  const fraction = x - floor; // exact for every |x| < 2^52
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** Smallest float32 x with 1 + x ≠ 1: compressed-tensors' replacement for a zero scale. */
export const FLOAT32_EPSILON = 2 ** -23;

/** The largest |value| of a float32 array (0 for an empty one); NaN is ignored. */
export function absMax(values: Float32Array, start = 0, end = values.length, stride = 1): number {
  let amax = 0;
  for (let i = start; i < end; i += stride) {
    const a = Math.abs(values[i]);
    if (a > amax) amax = a;
  }
  return amax;
}
