// Speculative decoding inside the engine (continuous batching, paged KV, stops, preemption): the
// output is the target's own, for every method, and the counters add up as vLLM counts them.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { InvalidRequestError, LLM } from '../src/index.js';

const prompts = ['Once upon a time, there was', 'The robot checked its battery', 'How do I calibrate the lidar?', '7 plus 5 is'];
const greedy = { temperature: 0, maxTokens: 32, ignoreEos: true };

async function completeAll(llm: LLM, params: Record<string, unknown> = greedy) {
  return Promise.all(prompts.map((p) => llm.complete(p, params)));
}

describe('speculative decoding in the engine', () => {
  let plain: LLM;
  let expected: Array<{ tokenIds: number[]; text: string }>;
  before(async () => {
    plain = await LLM.load();
    expected = await completeAll(plain);
  });
  after(() => plain.close());

  const configs = [
    { method: 'draft_model', num_speculative_tokens: 1 },
    { method: 'draft_model', num_speculative_tokens: 3 },
    { method: 'eagle3', num_speculative_tokens: 2 },
    { method: 'eagle3', num_speculative_tokens: 4 },
    { method: 'ngram', num_speculative_tokens: 3, prompt_lookup_min: 1, prompt_lookup_max: 3 },
  ];
  for (const cfg of configs) {
    it(`${cfg.method}, k=${cfg.num_speculative_tokens}: batched greedy output identical to the target alone`, async () => {
      const llm = await LLM.load({ speculativeConfig: cfg });
      try {
        const got = await completeAll(llm);
        got.forEach((r, i) => {
          assert.deepEqual(r.tokenIds, expected[i].tokenIds, `prompt ${i}`);
          assert.equal(r.text, expected[i].text);
        });
        const s = llm.specDecodeStats()!;
        assert.ok(s.numDrafts > 0 && s.numDraftTokens >= s.numDrafts);
        assert.ok(s.numDraftTokens <= s.numDrafts * cfg.num_speculative_tokens);
        assert.equal(s.acceptedTokensPerPos.reduce((a, b) => a + b, 0), s.numAcceptedTokens);
        if (cfg.method !== 'ngram') assert.ok(s.numAcceptedTokens / s.numDraftTokens > 0.4, `acceptance ${s.numAcceptedTokens}/${s.numDraftTokens}`);
        // Every output token was generated exactly once: drafts accepted + one target token per window.
        assert.equal(llm.engine.pool.numFree, llm.engine.pool.numBlocks);
      } finally {
        await llm.close();
      }
    });
  }

  it('disable_by_batch_size: no drafts while more sequences decode, drafts again once few are left; output unchanged', async () => {
    // Two short requests end after 6 tokens; the two long ones then decode alone.
    const params = prompts.map((_, i) => ({ ...greedy, maxTokens: i < 2 ? 32 : 6 }));
    const want = await Promise.all(prompts.map((p, i) => plain.complete(p, params[i])));
    const cfg = { method: 'draft_model', num_speculative_tokens: 3 };
    const run = async (extra: Record<string, unknown>, ps = params) => {
      const llm = await LLM.load({ speculativeConfig: { ...cfg, ...extra } });
      try {
        const got = await Promise.all(prompts.map((p, i) => llm.complete(p, ps[i])));
        return { got, stats: llm.specDecodeStats()! };
      } finally {
        await llm.close();
      }
    };
    const always = await run({});
    const limited = await run({ disable_by_batch_size: 2 });
    for (const r of [always, limited]) r.got.forEach((g, i) => assert.deepEqual(g.tokenIds, want[i].tokenIds, `prompt ${i}`));
    assert.ok(limited.stats.numDrafts > 0, 'drafts once two sequences are left');
    assert.ok(limited.stats.numDrafts < always.stats.numDrafts, `fewer drafts (${limited.stats.numDrafts} against ${always.stats.numDrafts})`);
    // Four equal requests decode together to the end: over the threshold throughout, so no drafts.
    const together = await run({ disable_by_batch_size: 3 }, prompts.map(() => greedy));
    together.got.forEach((g, i) => assert.deepEqual(g.tokenIds, expected[i].tokenIds, `prompt ${i}`));
    assert.equal(together.stats.numDrafts, 0);
  });

  it('stop strings, eos and max_tokens cut a verified window where they occur', async () => {
    const llm = await LLM.load({ speculativeConfig: { method: 'eagle3', num_speculative_tokens: 4 } });
    try {
      const free = expected[0].text;
      const stop = free.slice(20, 26);
      for (const params of [{ ...greedy, stop: [stop] }, { ...greedy, maxTokens: 7 }, { temperature: 0, maxTokens: 64 }]) {
        const want = await plain.complete(prompts[0], params);
        const got = await llm.complete(prompts[0], params);
        assert.deepEqual(got.tokenIds, want.tokenIds);
        assert.equal(got.text, want.text);
        assert.equal(got.finishReason, want.finishReason);
      }
    } finally {
      await llm.close();
    }
  });

  it('under KV pressure (preemption) the output is still the target alone', async () => {
    const llm = await LLM.load({ speculativeConfig: { method: 'draft_model', num_speculative_tokens: 3 }, kvCacheTokens: 96 });
    try {
      const got = await completeAll(llm);
      got.forEach((r, i) => assert.deepEqual(r.tokenIds, expected[i].tokenIds, `prompt ${i}`));
    } finally {
      await llm.close();
    }
  });

  it('logprobs come from the target for every accepted token', async () => {
    const llm = await LLM.load({ speculativeConfig: { method: 'draft_model', num_speculative_tokens: 3 } });
    try {
      const collect = async (m: LLM) => {
        const lps = [];
        for await (const c of m.generate(prompts[1], { ...greedy, maxTokens: 12 }, { logprobs: 2 })) lps.push(...(c.logprobs ?? []));
        return lps;
      };
      const [a, b] = [await collect(llm), await collect(plain)];
      assert.equal(a.length, 12);
      // On a GPU, windows of 4 tokens multiply 16-bit weights on cuBLASLt with activations rounded to
      // bf16, one-token steps on the GEMVs (float32 x for the tall matrices): logprobs agree to that
      // rounding, not to the bit. On the CPU they agree to float32.
      const bound = plain.loaded.model.backend.name === 'cuda' ? 1e-2 : 1e-4;
      a.forEach((lp, i) => {
        assert.equal(lp.tokenId, b[i].tokenId);
        assert.ok(Math.abs(lp.logprob - b[i].logprob) < bound, `token ${i}: ${lp.logprob} vs ${b[i].logprob}`);
      });
    } finally {
      await llm.close();
    }
  });

  it('a W4A16 target with the bf16 EAGLE-3 head and draft model gives the W4A16 target\'s own output', async () => {
    const quantized = await LLM.load({ quantization: 'w4a16' });
    try {
      const want = await completeAll(quantized);
      for (const cfg of [{ method: 'eagle3', num_speculative_tokens: 3 }, { method: 'draft_model', num_speculative_tokens: 3 }]) {
        const llm = await LLM.load({ quantization: 'w4a16', speculativeConfig: cfg });
        try {
          const got = await completeAll(llm);
          got.forEach((r, i) => assert.deepEqual(r.tokenIds, want[i].tokenIds, `${cfg.method} prompt ${i}`));
          assert.ok(llm.specDecodeStats()!.numAcceptedTokens > 0);
        } finally {
          await llm.close();
        }
      }
    } finally {
      await quantized.close();
    }
  });

  it('a bad --speculative-config is refused before the model loads, naming the key', async () => {
    await assert.rejects(LLM.load({ speculativeConfig: '{"method":"medusa","num_speculative_tokens":2}' }), (e: unknown) => e instanceof InvalidRequestError && /medusa/.test(e.message));
    await assert.rejects(LLM.load({ speculativeConfig: '{"method":"ngram","num_speculative_tokens":2,"draft_tp":1}' }), /draft_tp/);
  });

  it('the lossy synthetic mode says so', async () => {
    const llm = await LLM.load({ speculativeConfig: { method: 'synthetic', num_speculative_tokens: 2, acceptance_rates: [0.8, 0.5], lossy: true } });
    try {
      assert.match(llm.warnings.join('\n'), /lossy/i);
      await llm.complete(prompts[0], greedy);
      assert.ok(llm.specDecodeStats()!.numAcceptedTokens > 0);
    } finally {
      await llm.close();
    }
  });
});
