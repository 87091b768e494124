// EAGLE-3 proposer: the head reads the target's fused hidden states and chains its own, as vLLM does.
// Its KV entry at position t holds (token t+1, target features of t); a step first feeds the positions
// whose target features arrived since the last step, then drafts k tokens chaining its own pre-norm
// output, writing provisional KV at later positions that the next step overwrites or rolls back.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { KvCacheStorage, Tensor } from '../../backend/backend.js';
import { ModelLoadError } from '../../errors.js';
import { Eagle3Model, defaultEagle3AuxLayers, loadEagle3Config, loadEagle3Weights } from '../../model/eagle3.js';
import type { LlamaModel } from '../../model/llama.js';
import { SafetensorsCheckpoint } from '../../model/load/safetensors.js';
import { DEFAULT_BLOCK_SIZE, KvBlockPool, SequenceBlocks } from '../kv-cache.js';
import { argmax } from '../sampler.js';
import { buildForwardBatch, type BatchRun } from './batch.js';
import { BackendDraws, DraftTokenSampler, type Proposal, type ProposeInput, type Proposer, type SeqId, type TargetFeatures, type VerifiedOutcome } from './proposer.js';

export interface Eagle3ProposerOptions {
  /** KV capacity of the head's own cache, in tokens (default 16384). */
  kvCacheTokens?: number;
  blockSize?: number;
  /**
   * Passes with sampled drafts draw them on the backend where it can (Backend.sampleRows and
   * gatherColumns, and a d2t map in increasing order), each q kept there for the verifier, so
   * neither the head's logits nor q cross to the host. Default true; false draws on the host.
   * (Passes of greedy drafters alone take the argmax on the backend either way, with argmaxRows.)
   */
  drawOnBackend?: boolean;
}

interface HeadSequence {
  blocks: SequenceBlocks;
  /** Positions 0..committed-1 of the head's KV were computed from target features. */
  committed: number;
  /** Target features of positions committed.. not yet fed to the head, in order. */
  pending: TargetFeatures[];
  drafter?: DraftTokenSampler;
}

/** Load an EAGLE-3 head directory for `target` and check that the two fit together. */
export function loadEagle3Head(dir: string, target: LlamaModel): Eagle3Model {
  if (!existsSync(join(dir, 'config.json'))) throw new ModelLoadError(`${dir}: no EAGLE-3 head here (missing config.json)`);
  const config = loadEagle3Config(dir);
  const tc = target.config;
  if (config.vocabSize !== tc.vocabSize) throw new ModelLoadError(`${dir}: EAGLE-3 head vocab_size ${config.vocabSize} does not match the target's ${tc.vocabSize}: it was trained for another model`);
  if (config.targetHiddenSize !== tc.hiddenSize) {
    throw new ModelLoadError(`${dir}: EAGLE-3 head reads target hidden states of width ${config.targetHiddenSize} (target_hidden_size), but the target's hidden_size is ${tc.hiddenSize}`);
  }
  if (!existsSync(join(dir, 'model.safetensors')) && !existsSync(join(dir, 'model.safetensors.index.json')) && existsSync(join(dir, 'pytorch_model.bin'))) {
    throw new ModelLoadError(`${dir}: only pytorch_model.bin is present; tachyon reads safetensors only — convert it (python: safetensors.torch.save_file(torch.load('pytorch_model.bin'), 'model.safetensors'))`);
  }
  const ckpt = SafetensorsCheckpoint.open(dir);
  try {
    const weights = loadEagle3Weights(ckpt, config, target.backend);
    return new Eagle3Model(config, weights, target.backend, weights.embedTokens ? undefined : target.weights.embedTokens);
  } finally {
    ckpt.close();
  }
}

export class Eagle3Proposer implements Proposer {
  readonly method = 'eagle3' as const;
  readonly lossy = false;
  /** HF hidden_states indices of the target fused low → high. */
  readonly targetHiddenStateLayers: readonly number[];
  readonly pool: KvBlockPool;
  readonly kv: KvCacheStorage;
  private readonly seqs = new Map<SeqId, HeadSequence>();
  private readonly featureWidth: number;
  /** Whether passes with sampled drafts draw on the backend (see Eagle3ProposerOptions.drawOnBackend). */
  readonly drawOnBackend: boolean;
  /** Per target id, its draft id (-1: not in the draft vocabulary): gatherColumns' map of the head's logits. */
  private readonly targetToDraft: Int32Array;

  constructor(
    readonly head: Eagle3Model,
    targetNumLayers: number,
    options: Eagle3ProposerOptions = {},
  ) {
    const layers = head.config.auxLayerIds ?? defaultEagle3AuxLayers(targetNumLayers);
    for (const l of layers) {
      if (l > targetNumLayers) throw new ModelLoadError(`EAGLE-3 head fuses target hidden state ${l}, but the target has ${targetNumLayers} layers (hidden states 0..${targetNumLayers})`);
    }
    this.targetHiddenStateLayers = [...layers].sort((a, b) => a - b);
    this.featureWidth = 3 * head.config.targetHiddenSize;
    const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
    const numBlocks = Math.ceil((options.kvCacheTokens ?? 16384) / blockSize);
    this.pool = new KvBlockPool(numBlocks, blockSize);
    this.kv = head.allocKvCache(numBlocks, blockSize);
    const d2t = head.weights.draftToTarget;
    this.targetToDraft = new Int32Array(head.config.vocabSize).fill(-1);
    d2t.forEach((t, d) => (this.targetToDraft[t] = d));
    // With d2t increasing, the lowest draft id among tied logits is the lowest target id too, so a
    // greedy row's argmax over the target vocabulary is the host's d2t[argmax(draft logits)].
    const increasing = d2t.every((t, d) => d === 0 || t > d2t[d - 1]);
    const be = head.backend;
    this.drawOnBackend = (options.drawOnBackend ?? true) && increasing && be.sampleRows !== undefined && be.gatherColumns !== undefined;
  }

  observeTarget(id: SeqId, f: TargetFeatures): void {
    if (f.rows.length !== f.count * this.featureWidth) throw new RangeError(`EAGLE-3: features of ${f.count} positions must hold ${f.count * this.featureWidth} values, got ${f.rows.length}`);
    const s = this.state(id);
    let end = s.committed + pendingCount(s);
    if (f.start < end) {
      // Recomputed positions (preemption, rollback): forget what the head derived from the old ones.
      if (f.start < s.committed) {
        s.committed = f.start;
        s.pending = [];
        s.blocks.truncate(f.start);
      } else {
        s.pending = cutFeatures(s.pending, f.start - s.committed, this.featureWidth);
      }
      end = f.start;
    }
    if (f.start > end) throw new Error(`EAGLE-3: sequence ${id} has target hidden states up to position ${end - 1}, got features starting at ${f.start} (a gap)`);
    if (f.count > 0) s.pending.push(f);
  }

  propose(inputs: ProposeInput[]): Proposal[] {
    const proposals: Proposal[] = inputs.map(() => ({ tokens: [] }));
    // Step 1: feed every position whose target features arrived, drafting the first token from the last.
    const active: number[] = [];
    const runs: BatchRun[] = [];
    const features: Float32Array[] = [];
    inputs.forEach((x, i) => {
      if (x.numDrafts <= 0) return;
      const s = this.state(x.id);
      const n = x.tokens.length;
      const have = s.committed + pendingCount(s);
      if (have < n - 1) {
        throw new Error(`EAGLE-3: sequence ${x.id} has ${n} tokens but target hidden states only for positions 0..${have - 1}; ` +
          'pass the target\'s hidden states of every computed position (prefill chunks included) through observeTarget');
      }
      if (have > n - 1) throw new Error(`EAGLE-3: sequence ${x.id} has target hidden states beyond its last computed position ${n - 2}`);
      if (n - 1 - s.committed === 0) return; // nothing to read yet (a one-token prompt)
      s.drafter ??= new DraftTokenSampler(x.sampler);
      // Slots for the fed positions and the k-1 chained ones after them.
      s.blocks.reserve(n - 1 + x.numDrafts - 1);
      runs.push({ blocks: s.blocks, start: s.committed, tokens: x.tokens.slice(s.committed + 1, n) });
      features.push(concatFeatures(s.pending, this.featureWidth));
      active.push(i);
    });
    if (active.length === 0) return proposals;
    // Sampled drafts drawn on the backend, each q in a row of one dist tensor of the step.
    const be = this.head.backend;
    const drafterOf = (i: number) => this.seqs.get(inputs[i].id)!.drafter!;
    const draws = this.drawOnBackend ? BackendDraws.forStep(be, this.head.config.vocabSize, active.map((i) => ({ drafter: drafterOf(i), numDrafts: inputs[i].numDrafts }))) : undefined;
    // A pass of greedy drafters alone takes each row's argmax on the backend where it can (one id a row
    // read back, as a draft model's argmaxOnly pass); one with sampled drafters draws there.
    const greedyPass = (rows: number[]) => rows.every((i) => drafterOf(i).greedy);
    const onDevice = (rows: number[]) => (greedyPass(rows) ? be.argmaxRows !== undefined : draws !== undefined);
    const forward = (b: ReturnType<typeof buildForwardBatch>, gIn: Tensor, rows: number[]) => this.head.forward(b, gIn, this.kv, onDevice(rows));
    const take = (out: ReturnType<Eagle3Model['forward']>, rows: number[]) => {
      if (!out.logitsTensor) this.takeDrafts(out.logits, rows, inputs, proposals);
      else if (greedyPass(rows)) this.argmaxDrafts(out.logitsTensor, rows, proposals);
      else this.drawDrafts(out.logitsTensor, rows.map(drafterOf), rows.map((i) => proposals[i]), draws!);
    };
    const batch = buildForwardBatch(runs, 'last');
    const g = this.head.fuse(concatArrays(features), batch.numTokens);
    let out = forward(batch, g, active);
    let hidden = be.selectRows(out.hidden, batch.logitRows);
    for (const i of active) {
      const s = this.seqs.get(inputs[i].id)!;
      s.committed = inputs[i].tokens.length - 1;
      s.pending = [];
    }
    let rowsOf = active; // which input each row of `hidden` / `out.logits` belongs to
    take(out, rowsOf);

    // Steps 2..k: one chained token per sequence still drafting, hidden input = the head's own h'.
    for (let j = 1; ; j++) {
      const next = rowsOf.filter((i) => inputs[i].numDrafts > j);
      if (next.length === 0) break;
      const keep = Int32Array.from(next, (i) => rowsOf.indexOf(i));
      const gIn: Tensor = keep.length === rowsOf.length ? hidden : be.selectRows(hidden, keep);
      const chainRuns: BatchRun[] = next.map((i) => {
        const x = inputs[i];
        return { blocks: this.seqs.get(x.id)!.blocks, start: x.tokens.length - 1 + (j - 1), tokens: [proposals[i].tokens[j - 1]] };
      });
      const chainBatch = buildForwardBatch(chainRuns, 'last');
      out = forward(chainBatch, gIn, next);
      hidden = out.hidden;
      rowsOf = next;
      take(out, rowsOf);
    }
    return proposals;
  }

  onVerified(outcomes: VerifiedOutcome[]): void {
    for (const o of outcomes) {
      const s = this.seqs.get(o.id);
      if (!s) continue;
      // Provisional chain KV goes; the target's features of the kept positions replace it next step.
      s.blocks.truncate(s.committed);
      if (o.targetFeatures) this.observeTarget(o.id, o.targetFeatures);
    }
  }

  release(id: SeqId): void {
    const s = this.seqs.get(id);
    if (!s) return;
    s.blocks.releaseAll();
    this.seqs.delete(id);
  }

  private state(id: SeqId): HeadSequence {
    let s = this.seqs.get(id);
    if (!s) {
      s = { blocks: new SequenceBlocks(this.pool), committed: 0, pending: [] };
      this.seqs.set(id, s);
    }
    return s;
  }

  /** `takeDrafts` for greedy drafters from the backend's argmax of each row (ties to the lowest draft id, as the host's). */
  private argmaxDrafts(logits: Tensor, rowsOf: number[], proposals: Proposal[]): void {
    const d2t = this.head.weights.draftToTarget;
    const ids = this.head.backend.argmaxRows!(logits, this.head.config.draftVocabSize);
    rowsOf.forEach((i, r) => {
      if (ids[r] < 0) throw new RangeError('EAGLE-3 draft logits are all -inf or NaN');
      proposals[i].tokens.push(d2t[ids[r]]);
    });
  }

  /**
   * `takeDrafts` on the backend: the head's logits moved onto the target vocabulary (-inf where the
   * draft vocabulary has no id), then one sampleRows call — a greedy row (the argmax) per greedy
   * drafter, a row keeping q in the next row of the step's dist per sampled one. The same tokens and q
   * as the host's scatter and choose.
   */
  private drawDrafts(logits: Tensor, drafters: readonly DraftTokenSampler[], proposals: readonly Proposal[], draws: BackendDraws): void {
    const be = this.head.backend;
    const full = be.gatherColumns!(logits, this.targetToDraft, -Infinity);
    const rows = draws.rows(drafters);
    const probs = new Float32Array(rows.length);
    const ids = be.sampleRows!(full, this.head.config.vocabSize, rows, probs, draws.dist);
    be.release?.(full);
    draws.take(proposals, rows, ids, probs);
  }

  /** Append one draft per row: draft-vocabulary logits → a target id (and q when sampling). */
  private takeDrafts(logits: Float32Array, rowsOf: number[], inputs: ProposeInput[], proposals: Proposal[]): void {
    const { draftVocabSize, vocabSize } = this.head.config;
    const d2t = this.head.weights.draftToTarget;
    rowsOf.forEach((i, r) => {
      const row = logits.subarray(r * draftVocabSize, (r + 1) * draftVocabSize);
      const drafter = this.seqs.get(inputs[i].id)!.drafter!;
      const p = proposals[i];
      if (drafter.greedy) {
        p.tokens.push(d2t[argmax(row)]);
        return;
      }
      // q over the target vocabulary: the draft logits scattered to their target ids, -inf elsewhere.
      const full = new Float32Array(vocabSize).fill(-Infinity);
      for (let d = 0; d < draftVocabSize; d++) full[d2t[d]] = row[d];
      const { token, q } = drafter.choose(full);
      p.tokens.push(token);
      (p.probs ??= []).push(q!);
    });
  }
}

function pendingCount(s: HeadSequence): number {
  return s.pending.reduce((a, f) => a + f.count, 0);
}

function concatFeatures(list: TargetFeatures[], width: number): Float32Array {
  if (list.length === 1) return list[0].rows;
  return concatArrays(list.map((f) => f.rows.subarray(0, f.count * width)));
}

/** The first `keep` positions of a list of consecutive feature runs. */
function cutFeatures(list: TargetFeatures[], keep: number, width: number): TargetFeatures[] {
  const out: TargetFeatures[] = [];
  let left = keep;
  for (const f of list) {
    if (left <= 0) break;
    const n = Math.min(f.count, left);
    out.push(n === f.count ? f : { start: f.start, count: n, rows: f.rows.subarray(0, n * width) });
    left -= n;
  }
  return out;
}

function concatArrays(parts: Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0];
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
