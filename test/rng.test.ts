// The sampling RNG: pinned to the reference C xoshiro128** / splitmix64 output, reproducible,
// and uniform enough that sampling tests measure the sampler, not the generator.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, randomSeed } from '../src/engine/rng.js';

// Produced by Vigna's reference C code (splitmix64.c seeding xoshiro128starstar.c, state words
// s[0..3] = low and high halves of the first two splitmix64 outputs); the same harness reproduced
// the published splitmix64(1234567) vector 6457827717110365317, 3203168211198807973, ...
const GOLDEN: Array<[number | bigint, number[]]> = [
  [0, [3737715805, 2584255861, 2876756834, 3286328325, 1553311962, 1625202774, 3260698944, 2754151956]],
  [42, [1776835114, 4165204688, 17111135, 2317295270, 2792088233, 2554630222, 2940343271, 2244566231]],
  [0xffffffffffffffffn, [477689756, 2493998634, 555695776, 607808419, 61340979, 301466976, 2478485284, 2565876330]],
  [Number.MAX_SAFE_INTEGER, [1233166643, 1287031142, 661813442, 2960669951, 2601079046, 1036114921, 2300589652, 2591400186]],
];

test('matches the reference C implementation bit for bit', () => {
  for (const [seed, expected] of GOLDEN) {
    const rng = new Rng(seed);
    const got = expected.map(() => rng.nextUint32());
    assert.deepEqual(got, expected, `seed ${seed}`);
  }
});

test('next() builds a 53-bit double from two outputs, as the C reference (a>>5)*2^26+(b>>6)', () => {
  assert.equal(new Rng(42).next(), 0.41370166815658871);
});

test('number, bigint and negative seeds name the same streams', () => {
  const a = new Rng(7);
  const b = new Rng(7n);
  for (let i = 0; i < 100; i++) assert.equal(a.nextUint32(), b.nextUint32());
  const minusOne = new Rng(-1);
  assert.equal(minusOne.nextUint32(), 477689756); // -1 wraps to 2^64 - 1
});

test('same seed, same stream; different seeds, different streams', () => {
  const draw = (seed: number): number[] => {
    const rng = new Rng(seed);
    return Array.from({ length: 1000 }, () => rng.next());
  };
  assert.deepEqual(draw(123), draw(123));
  const a = draw(1);
  const b = draw(2);
  assert.ok(a.filter((v, i) => v === b[i]).length === 0, 'neighbouring seeds must not share values');
});

test('clone() continues the stream independently from the same position', () => {
  const rng = new Rng(99);
  rng.next();
  const copy = rng.clone();
  const fromOriginal = [rng.next(), rng.next(), rng.next()];
  assert.deepEqual([copy.next(), copy.next(), copy.next()], fromOriginal);
});

test('next() is uniform on [0, 1): 20-bucket chi-square over 200k draws', () => {
  const rng = new Rng(2024);
  const buckets = 20;
  const draws = 200_000;
  const counts = new Array<number>(buckets).fill(0);
  for (let i = 0; i < draws; i++) {
    const u = rng.next();
    assert.ok(u >= 0 && u < 1);
    counts[Math.floor(u * buckets)]++;
  }
  const expected = draws / buckets;
  const chi2 = counts.reduce((s, c) => s + (c - expected) ** 2 / expected, 0);
  assert.ok(chi2 < 43.82, `chi-square ${chi2.toFixed(2)} over 19 degrees of freedom exceeds the p=0.001 bound 43.82`);
  // The low bits feed the double too: every output bit must be set about half the time.
  const bitCounts = new Array<number>(32).fill(0);
  for (let i = 0; i < 20_000; i++) {
    const v = rng.nextUint32();
    for (let bit = 0; bit < 32; bit++) bitCounts[bit] += (v >>> bit) & 1;
  }
  for (const c of bitCounts) assert.ok(Math.abs(c - 10_000) < 600, `bit set ${c} times of 20000`);
});

test('rejects seeds that are not integers', () => {
  assert.throws(() => new Rng(1.5), RangeError);
  assert.throws(() => new Rng(Number.NaN), RangeError);
  assert.throws(() => new Rng(2 ** 60), RangeError); // not safe: would silently collide with neighbours
});

test('randomSeed() gives distinct safe integers usable as seeds', () => {
  const seeds = new Set<number>();
  for (let i = 0; i < 100; i++) {
    const s = randomSeed();
    assert.ok(Number.isSafeInteger(s) && s >= 0);
    seeds.add(s);
  }
  assert.equal(seeds.size, 100);
  new Rng(randomSeed()).next();
});
