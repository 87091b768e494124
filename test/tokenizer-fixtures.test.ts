// Our Tokenizer against the Python `tokenizers` library: every test/fixtures/tokenizers/<kind>/ holds
// a tokenizer.json, its tokenizer_config.json and cases.json with the ids and texts Rust produced.

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { IncrementalDetokenizer } from '../src/engine/detokenizer.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { fixturesDir } from './support/paths.js';

interface TokenizerCase {
  text: string;
  ids: number[];
  ids_no_special: number[];
  tokens?: string[];
  decoded: string;
  decoded_skip_special: string;
}

const root = join(fixturesDir(), 'tokenizers');
const kinds = existsSync(root) ? readdirSync(root).filter((name) => statSync(join(root, name)).isDirectory()).sort() : [];

describe('tokenizer fixtures from the Rust tokenizers library', () => {
  it('has fixture folders', () => {
    assert.ok(existsSync(root), `${root} is missing: the tokenizer fixtures must be committed`);
    assert.ok(kinds.length > 0, `${root} holds no tokenizer kinds`);
  });

  for (const kind of kinds) {
    it(`${kind}: encodes and decodes every case exactly as Rust does`, () => {
      const dir = join(root, kind);
      const tok = Tokenizer.load(dir);
      const cases = JSON.parse(readFileSync(join(dir, 'cases.json'), 'utf8')) as TokenizerCase[];
      assert.ok(cases.length > 0, `${dir}/cases.json has no cases`);
      const mismatches: string[] = [];
      const check = (c: TokenizerCase, what: string, got: unknown, want: unknown) => {
        if (JSON.stringify(got) !== JSON.stringify(want)) mismatches.push(`${JSON.stringify(c.text)} ${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
      };
      for (const c of cases) {
        check(c, 'ids', tok.encode(c.text), c.ids);
        check(c, 'ids_no_special', tok.encode(c.text, { addSpecialTokens: false }), c.ids_no_special);
        check(c, 'decoded', tok.decode(c.ids), c.decoded);
        check(c, 'decoded_skip_special', tok.decode(c.ids, { skipSpecialTokens: true }), c.decoded_skip_special);
      }
      assert.deepEqual(mismatches, [], `${kind}: ${mismatches.length} mismatches of ${cases.length * 4} checks`);
    });

    it(`${kind}: streaming detokenization adds up to the same text`, () => {
      const dir = join(root, kind);
      const tok = Tokenizer.load(dir);
      const cases = JSON.parse(readFileSync(join(dir, 'cases.json'), 'utf8')) as TokenizerCase[];
      const mismatches: string[] = [];
      for (const c of cases) {
        for (const skip of [false, true]) {
          const d = new IncrementalDetokenizer(tok, [], skip);
          let text = '';
          for (const id of c.ids) text += d.push(id);
          text += d.flush();
          const want = skip ? c.decoded_skip_special : c.decoded;
          if (text !== want) mismatches.push(`${JSON.stringify(c.text)} skip=${skip}: streamed ${JSON.stringify(text)}, want ${JSON.stringify(want)}`);
        }
      }
      assert.deepEqual(mismatches, []);
    });
  }
});
