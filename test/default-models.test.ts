// The embedded default models (models/, trained by tools/train) generate on the CPU exactly what
// transformers generates from the same bf16 checkpoints (fixture computed in float32 on the GPU).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { LLM } from '../src/llm.js';
import { DEFAULT_DRAFT_MODEL_NAME, DEFAULT_MODEL_NAME, embeddedModelDir } from '../src/model/default-model.js';
import { fixturesDir } from './support/paths.js';

interface GreedyCase {
  prompt: string;
  prompt_ids: number[];
  output_ids: number[];
  output_text: string;
}
const fixture = JSON.parse(readFileSync(join(fixturesDir(), 'default-models', 'greedy.json'), 'utf8')) as Record<'target' | 'draft', GreedyCase[]>;

for (const [role, name] of [['target', DEFAULT_MODEL_NAME], ['draft', DEFAULT_DRAFT_MODEL_NAME]] as const) {
  describe(`default ${role} model (${name})`, () => {
    let llm: LLM;
    after(() => llm?.close());

    it('tokenizes the held-out prompts as the tokenizers library does', async () => {
      llm = await LLM.load({ model: embeddedModelDir(name), device: 'cpu' });
      assert.ok(fixture[role].length >= 20);
      for (const c of fixture[role]) assert.deepEqual(llm.tokenizer.encode(c.prompt), c.prompt_ids, c.prompt);
    });

    it('greedy continuations are identical to transformers', async () => {
      llm ??= await LLM.load({ model: embeddedModelDir(name), device: 'cpu' });
      // All prompts at once: batching must not change a single token.
      const results = await Promise.all(fixture[role].map((c) => llm.complete(c.prompt_ids, { temperature: 0, maxTokens: c.output_ids.length, skipSpecialTokens: true })));
      fixture[role].forEach((c, i) => {
        assert.deepEqual(results[i].tokenIds, c.output_ids, `prompt ${i}: ${JSON.stringify(c.prompt)}`);
        assert.equal(results[i].text, llm.tokenizer.decode(c.output_ids, { skipSpecialTokens: true }));
      });
    });
  });
}
