// The 8-bit float element formats: E4M3FN (FP8 weights, NVFP4 block scales) and E5M2, bit-exact with
// PyTorch's float32 → float8 casts (formats.md §6), plus the saturating variants quantizers use.

/*
 * E4M3FN: S.EEEE.MMM, bias 7, no infinities, only S.1111.111 (0x7F/0xFF) is NaN, max finite 448.
 * E5M2:   S.EEEEE.MM, bias 15, IEEE-like: S.11111.00 = ±Inf, S.11111.{01,10,11} = NaN, max 57344.
 *
 * Inputs are float32 values: a JS number is first rounded to float32 (as writing it into a
 * Float32Array would), then converted with round-to-nearest-even, subnormals included.
 *
 * A NaN input becomes 0x7F (E4M3) / 0x7F (E5M2). torch would keep a negative NaN's sign (0xFF), but a
 * JS number does not reliably carry the sign of a NaN, so we do not pretend to.
 */

export const E4M3_MAX = 448;
export const E4M3_NAN = 0x7f;
export const E5M2_MAX = 57344;
export const E5M2_INF = 0x7c;
export const E5M2_NAN = 0x7f;

const scratchFloat = new Float32Array(1);
const scratchBits = new Uint32Array(scratchFloat.buffer);

/** The float32 bit pattern of |x| (x rounded to float32 first). */
function float32MagnitudeBits(x: number): number {
  scratchFloat[0] = x;
  return scratchBits[0] & 0x7fffffff;
}

/**
 * Round a finite float32 magnitude (given by its bits) to the nearest minifloat code with
 * `mantissaBits` mantissa bits and exponent `bias`, ties to even. The result is exponent<<m | mantissa
 * and may run past the format's largest finite pattern; the callers decide what overflow means.
 * This is PyTorch's c10 algorithm: subnormals by exact scaling, normals by adding the rounding bias
 * to the float32 bit pattern so that a mantissa carry bumps the exponent for free.
 */
function roundMagnitudeToMinifloat(magnitudeBits: number, mantissaBits: number, bias: number): number {
  const minNormalBits = (127 - bias + 1) << 23;
  if (magnitudeBits < minNormalBits) {
    // Below the smallest normal the grid is uniform with step 2^(1 - bias - m); scaling by a power of
    // two is exact in float64, so only the final half-even rounding happens.
    scratchBits[0] = magnitudeBits;
    const units = scratchFloat[0] * 2 ** (bias - 1 + mantissaBits);
    const floor = Math.floor(units);
    const fraction = units - floor;
    return fraction > 0.5 || (fraction === 0.5 && floor % 2 === 1) ? floor + 1 : floor;
  }
  const dropped = 23 - mantissaBits;
  const keptLsb = Math.floor(magnitudeBits / 2 ** dropped) % 2;
  const rebiased = magnitudeBits + (bias - 127) * 2 ** 23 + (2 ** (dropped - 1) - 1) + keptLsb;
  return Math.floor(rebiased / 2 ** dropped);
}

/** The value of every E4M3FN code, from the bit fields: 2^(E−7)·(1+M/8), subnormal 2^−6·M/8. */
export const E4M3_VALUES: Float32Array = (() => {
  const values = new Float32Array(256);
  for (let code = 0; code < 256; code++) {
    const sign = code & 0x80 ? -1 : 1;
    const exponent = (code >> 3) & 0xf;
    const mantissa = code & 0x7;
    if (exponent === 0xf && mantissa === 0x7) values[code] = NaN;
    else if (exponent === 0) values[code] = sign * 2 ** -6 * (mantissa / 8);
    else values[code] = sign * 2 ** (exponent - 7) * (1 + mantissa / 8);
  }
  return values;
})();

/** The value of every E5M2 code: 2^(E−15)·(1+M/4), subnormal 2^−14·M/4, E=31 Inf/NaN. */
export const E5M2_VALUES: Float32Array = (() => {
  const values = new Float32Array(256);
  for (let code = 0; code < 256; code++) {
    const sign = code & 0x80 ? -1 : 1;
    const exponent = (code >> 2) & 0x1f;
    const mantissa = code & 0x3;
    if (exponent === 0x1f) values[code] = mantissa === 0 ? sign * Infinity : NaN;
    else if (exponent === 0) values[code] = sign * 2 ** -14 * (mantissa / 4);
    else values[code] = sign * 2 ** (exponent - 15) * (1 + mantissa / 4);
  }
  return values;
})();

export function decodeE4m3(code: number): number {
  return E4M3_VALUES[code & 0xff];
}

export function decodeE5m2(code: number): number {
  return E5M2_VALUES[code & 0xff];
}

/**
 * float32 → E4M3FN as every quantizer does it: clamp to ±448, then round to nearest even
 * (x_q = cast(clamp(x, −448, 448)); ±Inf become ±448). NaN → 0x7F.
 */
export function encodeE4m3(x: number): number {
  if (Number.isNaN(x)) return E4M3_NAN;
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  const magnitudeBits = float32MagnitudeBits(Math.min(Math.abs(x), E4M3_MAX));
  return sign | roundMagnitudeToMinifloat(magnitudeBits, 3, 7);
}

/**
 * torch's raw `x.to(torch.float8_e4m3fn)`, which does not saturate: |x| ≥ 480 is NaN outright, and
 * (464, 480) rounds up onto the NaN pattern 0x7F because it is 0x7E's successor. Kept for checking
 * what an unclamped cast in someone else's pipeline produced; quantizers use `encodeE4m3`.
 */
export function encodeE4m3Unsaturated(x: number): number {
  if (Number.isNaN(x)) return E4M3_NAN;
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  const magnitudeBits = float32MagnitudeBits(x);
  if (magnitudeBits >= float32MagnitudeBits(480)) return sign | E4M3_NAN;
  return sign | roundMagnitudeToMinifloat(magnitudeBits, 3, 7);
}

/** float32 → E5M2, saturating like NVIDIA's __NV_SATFINITE: beyond ±57344 (and ±Inf) → ±57344. */
export function encodeE5m2(x: number): number {
  if (Number.isNaN(x)) return E5M2_NAN;
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  const magnitudeBits = float32MagnitudeBits(Math.min(Math.abs(x), E5M2_MAX));
  return sign | roundMagnitudeToMinifloat(magnitudeBits, 2, 15);
}

/** torch's raw `x.to(torch.float8_e5m2)`: IEEE overflow, |x| ≥ 61440 rounds to ±Inf. */
export function encodeE5m2Unsaturated(x: number): number {
  if (Number.isNaN(x)) return E5M2_NAN;
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  const magnitudeBits = float32MagnitudeBits(x);
  if (magnitudeBits >= float32MagnitudeBits(65536)) return sign | E5M2_INF;
  return sign | roundMagnitudeToMinifloat(magnitudeBits, 2, 15);
}
