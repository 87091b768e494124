// Speculative decoding on the embedded default models: decode tokens/s and mean acceptance length
// without speculation and with each proposer at k = 1..6 (greedy, fixed held-out prompts, each
// output checked identical to plain greedy). Prints a table, saves JSON with the machine. Measures;
// never passes or fails.
//
//   node dist/bench/spec-decode.js [--k 1,2,3,4,5,6] [--methods ngram,draft_model,eagle3] [--prompts 8]
//                                  [--max-tokens 64] [--batch 1] [--output FILE]

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { DEFAULT_MODEL_NAME, embeddedModelDir, packageRoot } from '../src/model/default-model.js';
import { loadModelConfig } from '../src/model/config.js';
import { LlamaModel } from '../src/model/llama.js';
import { SafetensorsCheckpoint } from '../src/model/load/safetensors.js';
import { loadModelWeights } from '../src/model/weights.js';
import { resolveSamplingParams } from '../src/engine/sampling-params.js';
import { parseSpeculativeConfig } from '../src/engine/spec/config.js';
import { generateWithSpeculation, type LoopRequest } from '../src/engine/spec/generate-loop.js';
import { loadProposer } from '../src/engine/spec/load-proposer.js';
import { acceptanceRate, meanAcceptanceLength, perPositionAcceptanceRates, type SpecDecodeCounts } from '../src/engine/spec/metrics.js';
import type { Proposer } from '../src/engine/spec/proposer.js';
import { machineInfo } from './machine.js';

const { values } = parseArgs({
  options: {
    k: { type: 'string', default: '1,2,3,4,5,6' },
    methods: { type: 'string', default: 'ngram,draft_model,eagle3' },
    prompts: { type: 'string', default: '8' },
    'max-tokens': { type: 'string', default: '64' },
    batch: { type: 'string', default: '1' },
    output: { type: 'string' },
  },
});
const ks = values.k!.split(',').map(Number);
const methods = values.methods!.split(',');
const maxTokens = Number(values['max-tokens']);
const batch = Number(values.batch);

const dir = embeddedModelDir(DEFAULT_MODEL_NAME);
const backend = new CpuBackend();
const config = loadModelConfig(dir);
const ckpt = SafetensorsCheckpoint.open(dir);
const target = new LlamaModel(config, loadModelWeights(ckpt, config, backend), backend);
ckpt.close();

// Held-out prompts (the greedy fixture's), the first N; every run generates exactly maxTokens.
const fixture = JSON.parse(readFileSync(join(packageRoot(), 'test', 'fixtures', 'default-models', 'greedy.json'), 'utf8')) as { target: { prompt_ids: number[] }[] };
const prompts = fixture.target.slice(0, Number(values.prompts)).map((c) => c.prompt_ids);
const params = resolveSamplingParams({ temperature: 0, maxTokens, ignoreEos: true });

interface Row {
  method: string;
  k: number;
  /** Generated tokens / decode wall time. */
  decodeTokensPerSecond: number;
  /** Generated tokens / decode CPU time of this process: what the table's speedup is computed from. */
  decodeTokensPerCpuSecond: number;
  speedup: number;
  meanAcceptanceLength: number | null;
  acceptanceRate: number | null;
  perPositionAcceptanceRates: number[];
  steps: number;
  identicalToGreedy: boolean;
  counts: SpecDecodeCounts;
}

/** All prompts, `batch` at a time; decode time excludes the target's prefill. */
function run(proposer: Proposer | undefined, k: number): { outputs: number[][]; decodeMs: number; decodeCpuMs: number; steps: number; counts: SpecDecodeCounts } {
  const outputs: number[][] = [];
  let decodeMs = 0;
  let decodeCpuMs = 0;
  let steps = 0;
  const counts: SpecDecodeCounts = { numDrafts: 0, numDraftTokens: 0, numAcceptedTokens: 0, acceptedTokensPerPos: new Array(k).fill(0) };
  for (let i = 0; i < prompts.length; i += batch) {
    const requests: LoopRequest[] = prompts.slice(i, i + batch).map((p) => ({ promptIds: p, params }));
    const r = generateWithSpeculation(target, requests, { proposer, numSpeculativeTokens: k });
    outputs.push(...r.outputs);
    decodeMs += r.decodeMs;
    decodeCpuMs += r.decodeCpuMs;
    steps += r.steps;
    counts.numDrafts += r.metrics.numDrafts;
    counts.numDraftTokens += r.metrics.numDraftTokens;
    counts.numAcceptedTokens += r.metrics.numAcceptedTokens;
    r.metrics.acceptedTokensPerPos.forEach((a, j) => (counts.acceptedTokensPerPos[j] = (counts.acceptedTokensPerPos[j] ?? 0) + a));
  }
  return { outputs, decodeMs, decodeCpuMs, steps, counts };
}

const generated = prompts.length * maxTokens;
run(undefined, 0); // warm-up (JIT)
const base = run(undefined, 0);
const baseCpuTps = generated / (base.decodeCpuMs / 1000);
const rows: Row[] = [{ method: 'none', k: 0, decodeTokensPerSecond: generated / (base.decodeMs / 1000), decodeTokensPerCpuSecond: baseCpuTps, speedup: 1, meanAcceptanceLength: null, acceptanceRate: null, perPositionAcceptanceRates: [], steps: base.steps, identicalToGreedy: true, counts: base.counts }];
const nan = (x: number) => (Number.isNaN(x) ? null : x);
for (const method of methods) {
  const extra = method === 'ngram' ? { prompt_lookup_min: 1, prompt_lookup_max: 4 } : {};
  const proposer = loadProposer(parseSpeculativeConfig({ method, num_speculative_tokens: 1, ...extra }), { model: target, dir });
  for (const k of ks) {
    const r = run(proposer, k);
    const tps = generated / (r.decodeMs / 1000);
    const cpuTps = generated / (r.decodeCpuMs / 1000);
    rows.push({
      method,
      k,
      decodeTokensPerSecond: tps,
      decodeTokensPerCpuSecond: cpuTps,
      speedup: cpuTps / baseCpuTps,
      meanAcceptanceLength: nan(meanAcceptanceLength(r.counts)),
      acceptanceRate: nan(acceptanceRate(r.counts)),
      perPositionAcceptanceRates: perPositionAcceptanceRates(r.counts),
      steps: r.steps,
      identicalToGreedy: r.outputs.every((o, i) => o.length === base.outputs[i].length && o.every((t, j) => t === base.outputs[i][j])),
      counts: r.counts,
    });
    const last = rows[rows.length - 1];
    console.error(`${method} k=${k}: ${cpuTps.toFixed(1)} tok/CPU-s (${tps.toFixed(1)} tok/s wall), mean acceptance length ${last.meanAcceptanceLength?.toFixed(2)}`);
  }
}

const machine = machineInfo();
const fmt = (x: number | null, d = 2) => (x === null ? '–' : x.toFixed(d));
console.log(`target ${dir}; ${prompts.length} held-out prompts, ${maxTokens} tokens each (greedy, eos ignored), batch ${batch}; CPU backend`);
console.log(`machine ${machine.cpu}, ${machine.cores} cores, node ${machine.node}, commit ${machine.commit}`);
console.log('');
console.log('| method | k | decode tok/s (CPU time) | speedup | decode tok/s (wall) | mean acceptance length | acceptance rate | target steps | identical to greedy |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---|');
for (const r of rows) {
  console.log(`| ${r.method} | ${r.k || '–'} | ${r.decodeTokensPerCpuSecond.toFixed(1)} | ${r.speedup.toFixed(2)}× | ${r.decodeTokensPerSecond.toFixed(1)} | ${fmt(r.meanAcceptanceLength)} | ${r.acceptanceRate === null ? '–' : (r.acceptanceRate * 100).toFixed(0) + '%'} | ${r.steps} | ${r.identicalToGreedy ? 'yes' : 'NO'} |`);
}
const outDir = join(packageRoot(), 'bench', 'results');
mkdirSync(outDir, { recursive: true });
const file = values.output ?? join(outDir, `spec-decode-${machine.hostname}-${machine.date.slice(0, 10)}.json`);
writeFileSync(file, JSON.stringify({ bench: 'spec-decode', target: dir, prompts: prompts.length, maxTokens, batch, backend: 'cpu', machine, rows }, null, 2) + '\n');
console.log(`\nsaved ${file}`);
