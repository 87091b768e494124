// Draft-model proposer: a smaller LlamaModel with the target's vocabulary and a paged KV cache of its
// own drafts k tokens autoregressively per sequence, all sequences batched in each of its k passes.
// It keeps the tokens its cache holds; after verification it rolls back to the part the target kept.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KvCacheStorage } from '../../backend/backend.js';
import { ModelLoadError } from '../../errors.js';
import { loadModelConfig } from '../../model/config.js';
import { LlamaModel } from '../../model/llama.js';
import { SafetensorsCheckpoint } from '../../model/load/safetensors.js';
import { loadModelWeights } from '../../model/weights.js';
import { DEFAULT_BLOCK_SIZE, KvBlockPool, SequenceBlocks } from '../kv-cache.js';
import { buildForwardBatch, type BatchRun } from './batch.js';
import { BackendDraws, DraftTokenSampler, commonPrefixLength, type Proposal, type ProposeInput, type Proposer, type SeqId, type TargetFeatures, type VerifiedOutcome } from './proposer.js';

export interface DraftModelProposerOptions {
  /** KV capacity of the draft's own cache, in tokens (default 16384). */
  kvCacheTokens?: number;
  blockSize?: number;
  /**
   * Sampled drafts are drawn on the backend where it samples (Backend.sampleRows), their
   * distributions kept there for the verifier, so neither the draft's logits nor q cross to the host.
   * Default true; false reads the draft logits back and draws on the host (to compare the two paths).
   */
  drawOnBackend?: boolean;
}

interface DraftSequence {
  blocks: SequenceBlocks;
  /** Tokens whose K/V the draft cache holds, positions 0..fed.length-1. */
  fed: number[];
  drafter?: DraftTokenSampler;
}

/**
 * Load a draft model directory onto the target's backend, after checking it shares the target's
 * vocabulary: same vocab_size, and (when both directories have one) the same tokenizer.json vocabulary.
 */
export function loadDraftModel(dir: string, target: LlamaModel, targetDir?: string): LlamaModel {
  if (!existsSync(join(dir, 'config.json'))) throw new ModelLoadError(`${dir}: no draft model here (missing config.json)`);
  const config = loadModelConfig(dir);
  if (config.vocabSize !== target.config.vocabSize) {
    throw new ModelLoadError(`${dir}: the draft model's vocab_size is ${config.vocabSize} but the target's is ${target.config.vocabSize}; a draft model must use the target's tokenizer`);
  }
  if (targetDir) checkSameVocabulary(targetDir, dir);
  const ckpt = SafetensorsCheckpoint.open(dir);
  try {
    return new LlamaModel(config, loadModelWeights(ckpt, config, target.backend), target.backend);
  } finally {
    ckpt.close();
  }
}

/** Compare the token → id maps (model.vocab and added_tokens) of two tokenizer.json files. */
export function checkSameVocabulary(targetDir: string, draftDir: string): void {
  const read = (dir: string): Map<string, number> | undefined => {
    const path = join(dir, 'tokenizer.json');
    if (!existsSync(path)) return undefined;
    let json: { model?: { vocab?: Record<string, number> | [string, number][] }; added_tokens?: { id: number; content: string }[] };
    try {
      json = JSON.parse(readFileSync(path, 'utf8'));
    } catch (err) {
      throw new ModelLoadError(`${path}: not valid JSON (${(err as Error).message})`);
    }
    const map = new Map<string, number>();
    const vocab = json.model?.vocab;
    // BPE/WordPiece store {token: id}; Unigram stores [[token, score], ...] in id order.
    if (Array.isArray(vocab)) vocab.forEach(([tok], id) => map.set(tok, id));
    else if (vocab) for (const [tok, id] of Object.entries(vocab)) map.set(tok, id);
    for (const t of json.added_tokens ?? []) map.set(t.content, t.id);
    return map;
  };
  const a = read(targetDir);
  const b = read(draftDir);
  if (!a || !b) return;
  for (const [tok, id] of a) {
    const other = b.get(tok);
    if (other !== id) {
      throw new ModelLoadError(
        `${draftDir}: the draft model's tokenizer differs from the target's (${targetDir}): token ${JSON.stringify(tok)} is id ${id} in the target and ${other === undefined ? 'absent' : `id ${other}`} in the draft; a draft model must use the target's tokenizer`,
      );
    }
  }
  if (b.size !== a.size) throw new ModelLoadError(`${draftDir}: the draft model's tokenizer has ${b.size} tokens, the target's ${a.size}; a draft model must use the target's tokenizer`);
}

export class DraftModelProposer implements Proposer {
  readonly method = 'draft_model' as const;
  readonly lossy = false;
  readonly targetHiddenStateLayers: readonly number[] = [];
  readonly pool: KvBlockPool;
  readonly kv: KvCacheStorage;
  /** Whether sampled passes draw on the backend (see DraftModelProposerOptions.drawOnBackend). */
  readonly drawOnBackend: boolean;
  private readonly seqs = new Map<SeqId, DraftSequence>();

  constructor(
    readonly draft: LlamaModel,
    options: DraftModelProposerOptions = {},
  ) {
    const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
    const numBlocks = Math.ceil((options.kvCacheTokens ?? 16384) / blockSize);
    this.pool = new KvBlockPool(numBlocks, blockSize);
    this.kv = draft.backend.allocKvCache(draft.kvCacheSpec(numBlocks, blockSize));
    this.drawOnBackend = (options.drawOnBackend ?? true) && draft.backend.sampleRows !== undefined;
  }

  propose(inputs: ProposeInput[]): Proposal[] {
    const proposals: Proposal[] = inputs.map(() => ({ tokens: [] }));
    let rows: number[] = [];
    let runs: BatchRun[] = [];
    // Pass 1 catches each sequence up on the tokens its cache lacks (the whole prompt the first time).
    inputs.forEach((x, i) => {
      if (x.numDrafts <= 0) return;
      const s = this.state(x.id);
      s.drafter ??= new DraftTokenSampler(x.sampler);
      // Normally the newest token is one the draft has not fed yet; if it has (propose called twice
      // without a verification), feed the last token again to get its logits.
      const keep = Math.min(commonPrefixLength(s.fed, x.tokens), x.tokens.length - 1);
      if (keep < s.fed.length) this.rollback(s, keep);
      const fresh = x.tokens.slice(keep);
      // Slots for the catch-up and the k-1 drafts fed after it (the last draft is never fed).
      s.blocks.reserve(x.tokens.length + x.numDrafts - 1);
      runs.push({ blocks: s.blocks, start: s.fed.length, tokens: fresh });
      for (const t of fresh) s.fed.push(t);
      rows.push(i);
    });
    const vocab = this.draft.config.vocabSize;
    const drafterOf = (i: number) => this.seqs.get(inputs[i].id)!.drafter!;
    // Sampled drafts drawn on the backend, each q in a row of one dist tensor of the step.
    const draws = this.drawOnBackend ? BackendDraws.forStep(this.draft.backend, vocab, rows.map((i) => ({ drafter: drafterOf(i), numDrafts: inputs[i].numDrafts }))) : undefined;
    for (let j = 0; rows.length > 0; j++) {
      // A pass whose every sequence drafts greedily needs only each row's argmax (over the whole draft
      // vocabulary, as DraftTokenSampler takes it): the backend computes it and one id a row comes back.
      // Otherwise, on a backend that samples, each row is drawn there (DraftTokenSampler.row) and a
      // sampled draft's q stays in its row of dist; else the logits come back and the host draws.
      const greedy = rows.every((i) => drafterOf(i).greedy);
      if (!greedy && draws) {
        const drawRows = draws.rows(rows.map(drafterOf));
        const { sampled, excludedProbs } = this.draft.forward(buildForwardBatch(runs, 'last'), this.kv, { sampleRows: { vocab, rows: drawRows, dist: draws.dist } });
        draws.take(rows.map((i) => proposals[i]), drawRows, sampled!, excludedProbs!);
      } else {
        const { logits, argmax } = this.draft.forward(buildForwardBatch(runs, 'last'), this.kv, greedy ? { argmaxOnly: { vocab } } : {});
        rows.forEach((i, r) => {
          const drafter = drafterOf(i);
          const { token, q } = greedy ? drafter.chooseArgmax(argmax![r]) : drafter.choose(logits.subarray(r * vocab, (r + 1) * vocab));
          proposals[i].tokens.push(token);
          if (q) (proposals[i].probs ??= []).push(q);
        });
      }
      rows = rows.filter((i) => inputs[i].numDrafts > j + 1);
      runs = rows.map((i) => {
        const s = this.seqs.get(inputs[i].id)!;
        const token = proposals[i].tokens[j];
        const run = { blocks: s.blocks, start: s.fed.length, tokens: [token] };
        s.fed.push(token);
        return run;
      });
    }
    return proposals;
  }

  onVerified(outcomes: VerifiedOutcome[]): void {
    for (const o of outcomes) {
      const s = this.seqs.get(o.id);
      if (s) this.rollback(s, commonPrefixLength(s.fed, o.tokens));
    }
  }

  observeTarget(_id: SeqId, _features: TargetFeatures): void {}

  release(id: SeqId): void {
    const s = this.seqs.get(id);
    if (!s) return;
    s.blocks.releaseAll();
    this.seqs.delete(id);
  }

  private state(id: SeqId): DraftSequence {
    let s = this.seqs.get(id);
    if (!s) {
      s = { blocks: new SequenceBlocks(this.pool), fed: [] };
      this.seqs.set(id, s);
    }
    return s;
  }

  private rollback(s: DraftSequence, keep: number): void {
    s.fed.length = keep;
    s.blocks.truncate(keep);
  }
}
