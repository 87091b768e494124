// RopeTable (rows of cos/sin by position, computed once) against ropeCosSin computed per step.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseModelConfig } from '../src/model/config.js';
import { ropeCosSin, ropeFrequencies, RopeTable } from '../src/model/rope.js';
import { findPreset } from '../src/plan/presets.js';

describe('RopeTable', () => {
  for (const preset of ['llama-3.1-8b', 'qwen3-8b']) {
    it(`gives ropeCosSin's values bit for bit as it grows (${preset}'s RoPE)`, () => {
      const config = parseModelConfig(findPreset(preset)!, preset);
      const { invFreq, attentionFactor } = ropeFrequencies(config.rope, 0);
      const table = new RopeTable(invFreq, attentionFactor);
      const direct = (positions: number[]) => ropeCosSin(positions, positions.map(() => invFreq), positions.map(() => attentionFactor));
      // A prefill from 0, a step past the table (growth), a step back inside it, scattered positions,
      // and a mixed step (runs of consecutive positions, copied a run at a time, with breaks between).
      const mixed = [...Array.from({ length: 40 }, (_, i) => 10 + i), 7, ...Array.from({ length: 20 }, (_, i) => i), 20, 20];
      for (const positions of [Array.from({ length: 300 }, (_, i) => i), [5000, 3, 4999], [17], [131071, 0, 65536, 257], mixed]) {
        assert.deepEqual(table.lookup(positions), direct(positions), `positions ${positions.slice(0, 4).join(', ')}…`);
      }
    });
  }

  it('refuses a negative or fractional position, naming it', () => {
    const table = new RopeTable(Float64Array.of(1, 0.5), 1);
    assert.throws(() => table.lookup([0, -1]), /RoPE: position -1 \(token 1\) is not a non-negative integer/);
    assert.throws(() => table.lookup([1.5]), /RoPE: position 1\.5 \(token 0\)/);
  });
});
