// The seedable random stream behind sampling: xoshiro128** seeded through splitmix64, so that one
// seed gives the same tokens on every platform and every run (the reference for GPU samplers too).

import { randomFillSync } from 'node:crypto';

const MASK64 = (1n << 64n) - 1n;
const TWO_POW_26 = 67108864;
const TWO_POW_53 = 9007199254740992;

/**
 * xoshiro128** (Blackman & Vigna). Chosen over PCG32 because every step is 32-bit integer work
 * (Math.imul, shifts), which V8 runs without BigInt or 64-bit emulation; its 2^128-1 period and
 * statistical quality are far beyond what sampling needs.
 */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /**
   * `seed` is any integer: numbers must be safe integers, bigints are taken modulo 2^64 (negative
   * seeds wrap, so -1 and 2^64-1 are the same stream). The 128-bit state is two splitmix64 outputs,
   * low word first, exactly as the reference C code would fill `uint32_t s[4]` on a little-endian
   * machine; splitmix64 spreads nearby seeds (0, 1, 2 ...) into unrelated states.
   */
  constructor(seed: number | bigint) {
    if (typeof seed === 'number' && !Number.isSafeInteger(seed)) {
      throw new RangeError(`Rng seed must be a safe integer or a bigint, got ${seed}`);
    }
    let state = BigInt.asUintN(64, BigInt(seed));
    const next64 = (): bigint => {
      state = (state + 0x9e3779b97f4a7c15n) & MASK64;
      let z = state;
      z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
      z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
      return z ^ (z >> 31n);
    };
    const a = next64();
    const b = next64();
    this.s0 = Number(a & 0xffffffffn);
    this.s1 = Number(a >> 32n);
    this.s2 = Number(b & 0xffffffffn);
    this.s3 = Number(b >> 32n);
    // The all-zero state is the one fixed point of xoshiro; splitmix64 never yields two zero
    // outputs in a row in practice, but a stuck generator would be silent, so rule it out.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** The next 32 random bits as an unsigned integer in [0, 2^32). */
  nextUint32(): number {
    const s1 = this.s1;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= s1;
    this.s1 = s1 ^ this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /**
   * A uniform double in [0, 1) with all 53 bits of mantissa random (two draws: 27 + 26 high bits,
   * the best-mixed bits of a xoshiro output). Every value k/2^53 is equally likely, so 1 is never
   * returned, which inverse-CDF sampling relies on.
   */
  next(): number {
    const a = this.nextUint32() >>> 5;
    const b = this.nextUint32() >>> 6;
    return (a * TWO_POW_26 + b) / TWO_POW_53;
  }

  /** An independent copy at the same position: both produce the same stream from here on. */
  clone(): Rng {
    const copy = Object.create(Rng.prototype) as Rng;
    copy.s0 = this.s0;
    copy.s1 = this.s1;
    copy.s2 = this.s2;
    copy.s3 = this.s3;
    return copy;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/**
 * A seed for a request that did not bring one: a safe integer (53 random bits from the OS), so it
 * can be logged or returned to the caller and passed back as `seed` to replay the same generation.
 */
export function randomSeed(): number {
  const words = new Uint32Array(2);
  randomFillSync(words);
  return (words[0] & 0x1fffff) * 4294967296 + words[1];
}
