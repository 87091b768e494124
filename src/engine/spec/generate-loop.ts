// A complete batched generation loop over a target model with speculative decoding, without the
// engine: prefill every prompt but its last token, then speculative steps until each sequence stops.
// Tests and bench/spec-decode.ts drive it; the engine does the same through its scheduler.

import type { LlamaModel } from '../../model/llama.js';
import { DEFAULT_BLOCK_SIZE, KvBlockPool, SequenceBlocks } from '../kv-cache.js';
import { Sampler, TokenCounts } from '../sampler.js';
import type { SamplingParams } from '../sampling-params.js';
import { buildForwardBatch, type BatchRun } from './batch.js';
import type { SpecDecodeCounts } from './metrics.js';
import { NgramProposer } from './ngram.js';
import type { Proposer } from './proposer.js';
import { SpeculativeDecoder, type SpecSequence } from './speculative-step.js';
import type { VerifyFn } from './verifier.js';

export interface LoopRequest {
  promptIds: number[];
  params: SamplingParams;
}

export interface LoopOptions {
  /** Undefined: no speculation (every step verifies zero drafts, i.e. plain decoding). */
  proposer?: Proposer;
  numSpeculativeTokens: number;
  eosTokenIds?: number[];
  blockSize?: number;
  verify?: VerifyFn;
  /** Ids that may be generated when the model's vocabulary is padded beyond its tokenizer (default: all). */
  samplingVocabSize?: number;
  /** false: read every step's logits back even when all requests are plain greedy (default true). */
  argmaxVerification?: boolean;
  /** false: read the logits back for windows the backend could verify by its draws (default true; SpeculativeDecoderOptions). */
  sampledVerification?: boolean;
}

export interface LoopResult {
  /** Generated ids per request (eos included when it stopped there). */
  outputs: number[][];
  metrics: SpecDecodeCounts;
  /** Decode steps (target forward passes after the prefill). */
  steps: number;
  prefillMs: number;
  decodeMs: number;
  /** CPU time of this process during the decode (steadier than wall time on a shared machine). */
  decodeCpuMs: number;
}

interface LoopSequence extends SpecSequence {
  tokens: number[];
  output: number[];
  params: SamplingParams;
  done: boolean;
}

export function generateWithSpeculation(model: LlamaModel, requests: readonly LoopRequest[], options: LoopOptions): LoopResult {
  const c = model.config;
  const k = options.proposer ? options.numSpeculativeTokens : 0;
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  const tokensNeeded = requests.reduce((a, r) => a + Math.ceil((r.promptIds.length + r.params.maxTokens + k + 1) / blockSize) * blockSize, 0);
  const numBlocks = Math.ceil(tokensNeeded / blockSize) + 1;
  const pool = new KvBlockPool(numBlocks, blockSize);
  const kv = model.backend.allocKvCache(model.kvCacheSpec(numBlocks, blockSize));
  // Without a proposer k is 0: the proposer is never asked, and each step is a plain decode step.
  const decoder = new SpeculativeDecoder({ model, kv }, options.proposer ?? new NgramProposer(1, 1), {
    numSpeculativeTokens: k,
    verify: options.verify,
    samplingVocabSize: options.samplingVocabSize,
    argmaxVerification: options.argmaxVerification,
    sampledVerification: options.sampledVerification,
  });
  const eos = new Set(options.eosTokenIds ?? c.eosTokenIds);

  const seqs: LoopSequence[] = requests.map((r, i) => {
    if (r.promptIds.length === 0) throw new RangeError(`request ${i} has an empty prompt`);
    return {
      id: i,
      tokens: [...r.promptIds],
      output: [],
      params: r.params,
      blocks: new SequenceBlocks(pool),
      sampler: new Sampler(r.params, c.vocabSize),
      counts: new TokenCounts(r.promptIds),
      done: false,
    };
  });

  // Prefill all but each prompt's last token; the first step computes that token with the drafts.
  const t0 = performance.now();
  const runs: BatchRun[] = [];
  const prefilled = seqs.filter((s) => s.tokens.length > 1);
  for (const s of prefilled) {
    s.blocks.reserve(s.tokens.length - 1);
    runs.push({ blocks: s.blocks, start: 0, tokens: s.tokens.slice(0, -1) });
  }
  if (runs.length > 0) {
    const layers = decoder.captureHiddenStates;
    const out = model.forward(buildForwardBatch(runs, 'none'), kv, layers.length > 0 ? { captureHiddenStates: [...layers] } : {});
    let row = 0;
    for (const s of prefilled) {
      decoder.observePrefill(s.id, 0, s.tokens.length - 1, out.hiddenStates, row);
      row += s.tokens.length - 1;
    }
  }
  const t1 = performance.now();
  const cpu0 = process.cpuUsage();

  let steps = 0;
  for (;;) {
    const active = seqs.filter((s) => !s.done);
    if (active.length === 0) break;
    for (const s of active) s.maxDraftTokens = Math.max(0, s.params.maxTokens - s.output.length - 1);
    const results = decoder.step(active);
    steps++;
    results.forEach((r, i) => {
      const s = active[i];
      s.blocks.truncate(r.keepKvTokens);
      for (const t of r.tokens) {
        s.tokens.push(t);
        s.output.push(t);
        s.counts.addOutput(t);
        const stop = (!s.params.ignoreEos && eos.has(t)) || s.params.stopTokenIds.includes(t);
        if (stop || s.output.length >= s.params.maxTokens) {
          s.done = true;
          break;
        }
      }
      if (s.done) {
        s.blocks.releaseAll();
        decoder.release(s.id);
      }
    });
  }
  const t2 = performance.now();
  const cpu = process.cpuUsage(cpu0);
  return { outputs: seqs.map((s) => s.output), metrics: decoder.metrics.snapshot(), steps, prefillMs: t1 - t0, decodeMs: t2 - t1, decodeCpuMs: (cpu.user + cpu.system) / 1000 };
}
