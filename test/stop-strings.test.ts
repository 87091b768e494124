// StopStringMatcher: stops split across pushes are caught and never leaked, overlapping and multiple
// stops, and the same result however the text is cut into chunks.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Rng } from '../src/engine/rng.js';
import { StopStringMatcher } from '../src/engine/stop-strings.js';

/** Push chunks one by one; returns what was emitted (plus flush when not stopped) and the matcher. */
function run(stops: string[], chunks: string[]) {
  const m = new StopStringMatcher(stops);
  let text = '';
  const emits: string[] = [];
  for (const chunk of chunks) {
    const r = m.push(chunk);
    emits.push(r.emit);
    text += r.emit;
    if (r.stopped) break;
  }
  if (!m.stopped) text += m.flush();
  return { text, emits, m };
}

/** Reference: cut `text` before the stop occurrence that a character-by-character reader completes first. */
function reference(stops: string[], text: string): { text: string; stop?: string } {
  for (let end = 1; end <= text.length; end++) {
    let best: { start: number; stop: string } | undefined;
    for (const s of stops) {
      if (s.length > 0 && end >= s.length && text.slice(end - s.length, end) === s) {
        if (!best || end - s.length < best.start) best = { start: end - s.length, stop: s };
      }
    }
    if (best) return { text: text.slice(0, best.start), stop: best.stop };
  }
  return { text };
}

describe('StopStringMatcher', () => {
  it('passes text through when there are no stops', () => {
    const m = new StopStringMatcher([]);
    assert.deepEqual(m.push('hello'), { emit: 'hello', stopped: false });
    assert.equal(m.flush(), '');
  });

  it('catches a stop split across many pushes and never emits any of it', () => {
    const { text, emits, m } = run(['</answer>'], ['The result', ' is 4', '</', 'ans', 'w', 'er', '> and more']);
    assert.equal(text, 'The result is 4');
    assert.ok(m.stopped);
    assert.equal(m.matched, '</answer>');
    for (const e of emits) assert.ok(!e.includes('<'), `leaked part of the stop: ${JSON.stringify(e)}`);
  });

  it('holds back a possible stop start and releases it once it cannot be one', () => {
    const m = new StopStringMatcher(['STOP']);
    assert.deepEqual(m.push('abc ST'), { emit: 'abc ', stopped: false });
    assert.deepEqual(m.push('O'), { emit: '', stopped: false });
    assert.deepEqual(m.push('RM'), { emit: 'STORM', stopped: false });
    assert.deepEqual(m.push(' S'), { emit: ' ', stopped: false });
    assert.equal(m.flush(), 'S');
    assert.ok(!m.stopped);
  });

  it('stops at the very start with nothing emitted', () => {
    const { text, m } = run(['\n\n'], ['\n', '\nrest']);
    assert.equal(text, '');
    assert.ok(m.stopped);
    assert.deepEqual(new StopStringMatcher(['Hi']).push('Hi there'), { emit: '', stopped: true });
  });

  it('stops on whichever of several stops completes first', () => {
    assert.equal(run(['world', 'lo'], ['hello world']).text, 'hel');
    assert.equal(run(['xyz', 'o w'], ['hello', ' world']).text, 'hell');
    const { m } = run(['END', 'STOP'], ['go STOP now END']);
    assert.equal(m.matched, 'STOP');
  });

  it('handles overlapping stops: the one that completes first wins, on a tie the longer', () => {
    // "bc" completes at the third character, before "abcd" does.
    assert.equal(run(['abcd', 'bc'], ['abcd']).text, 'a');
    assert.equal(run(['abcd', 'bc'], ['a', 'b', 'c', 'd']).text, 'a');
    // Both end at the same character: cut before the longer one.
    const { text, m } = run(['cd', 'bcd'], ['xabcd']);
    assert.equal(text, 'xa');
    assert.equal(m.matched, 'bcd');
    // A self-overlapping stop split oddly.
    assert.equal(run(['aab'], ['a', 'aa', 'ab']).text, 'aa'); // "aaaab"
  });

  it('emits nothing after stopping, and flush is empty', () => {
    const m = new StopStringMatcher(['.']);
    assert.deepEqual(m.push('One. Two.'), { emit: 'One', stopped: true });
    assert.deepEqual(m.push('more'), { emit: '', stopped: true });
    assert.equal(m.flush(), '');
  });

  it('ignores empty stop strings', () => {
    assert.equal(run(['', 'x'], ['abc']).text, 'abc');
  });

  it('gives the same text however the input is chunked (randomized against a reference)', () => {
    const rng = new Rng(7);
    const alphabet = 'ab c\n';
    const randomString = (min: number, max: number) => {
      const n = min + Math.floor(rng.next() * (max - min + 1));
      let s = '';
      for (let i = 0; i < n; i++) s += alphabet[Math.floor(rng.next() * alphabet.length)];
      return s;
    };
    for (let trial = 0; trial < 500; trial++) {
      const stops = Array.from({ length: 1 + Math.floor(rng.next() * 3) }, () => randomString(1, 4));
      const text = randomString(0, 30);
      const chunks: string[] = [];
      for (let i = 0; i < text.length; ) {
        const n = Math.floor(rng.next() * 5); // empty chunks too
        chunks.push(text.slice(i, i + n));
        i += n;
      }
      const want = reference(stops, text);
      const got = run(stops, chunks);
      const ctx = JSON.stringify({ stops, chunks });
      assert.equal(got.text, want.text, ctx);
      assert.equal(got.m.stopped, want.stop !== undefined, ctx);
      assert.equal(got.m.matched, want.stop, ctx);
    }
  });
});
