// RopeTable (rows of cos/sin by position, computed once) against ropeCosSin computed per step.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RopeRows } from '../src/backend/backend.js';
import { parseModelConfig } from '../src/model/config.js';
import { ropeCosSin, ropeFrequencies, RopeTable } from '../src/model/rope.js';
import { findPreset } from '../src/plan/presets.js';

/** The rows `rope` gives its tokens, gathered into per-token arrays (what ropeCosSin returns). */
function gathered(rope: RopeRows, tokens: number, half: number): { cos: Float32Array; sin: Float32Array } {
  const cos = new Float32Array(tokens * half);
  const sin = new Float32Array(tokens * half);
  for (let t = 0; t < tokens; t++) {
    const r = (rope.index ? rope.index[t] : t) * half;
    cos.set(rope.cos.subarray(r, r + half), t * half);
    sin.set(rope.sin.subarray(r, r + half), t * half);
  }
  return { cos, sin };
}

describe('RopeTable', () => {
  for (const preset of ['llama-3.1-8b', 'qwen3-8b']) {
    it(`gives ropeCosSin's values bit for bit as it grows (${preset}'s RoPE)`, () => {
      const config = parseModelConfig(findPreset(preset)!, preset);
      const { invFreq, attentionFactor } = ropeFrequencies(config.rope, 0);
      const table = new RopeTable(invFreq, attentionFactor);
      const direct = (positions: Int32Array) => ropeCosSin(positions, Array.from(positions, () => invFreq), Array.from(positions, () => attentionFactor));
      // A prefill from 0, a step past the table (growth), a step back inside it, scattered positions,
      // and a mixed step.
      const mixed = [...Array.from({ length: 40 }, (_, i) => 10 + i), 7, ...Array.from({ length: 20 }, (_, i) => i), 20, 20];
      for (const list of [Array.from({ length: 300 }, (_, i) => i), [5000, 3, 4999], [17], [131071, 0, 65536, 257], mixed]) {
        const positions = Int32Array.from(list);
        const rows = table.at(positions);
        assert.equal(rows.index, positions, 'the rows are indexed by the positions given');
        assert.deepEqual(gathered(rows, positions.length, invFreq.length), direct(positions), `positions ${list.slice(0, 4).join(', ')}…`);
      }
    });
  }

  it('hands out arrays that never change: the same ones until it grows, new ones after', () => {
    const table = new RopeTable(Float64Array.of(1, 0.5), 1);
    const a = table.at(Int32Array.of(0, 1, 2));
    const b = table.at(Int32Array.of(200));
    assert.equal(b.cos, a.cos);
    assert.equal(b.sin, a.sin);
    const before = { cos: a.cos.slice(), sin: a.sin.slice() };
    const c = table.at(Int32Array.of(1000));
    assert.notEqual(c.cos, a.cos);
    assert.deepEqual({ cos: a.cos, sin: a.sin }, before, 'the old arrays are left as they were');
    assert.ok(c.cos.length >= 1001 * 2);
  });

  it('refuses a negative position, naming it', () => {
    const table = new RopeTable(Float64Array.of(1, 0.5), 1);
    assert.throws(() => table.at(Int32Array.of(0, -1)), /RoPE: position -1 \(token 1\) is negative/);
  });
});
