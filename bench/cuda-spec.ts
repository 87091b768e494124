// Speculative decoding speed on the GPU at real model shapes: a Llama-3.1-8B-shaped model with dummy
// weights, decoding with no speculation and with the lossy synthetic proposer at a per-position
// acceptance profile (what a trained EAGLE-3 head reaches on chat data), k = 1..5. With dummy weights
// no real draft can agree with the target, so the synthetic proposer stands in for one at a known
// acceptance: the figure is the verification machinery's speed, not a draft model's quality.
// Prints a table, saves JSON with the GPU. Measures; never passes or fails.
//
//   node dist/bench/cuda-spec.js [--model llama-3.1-8b] [--quantization none] [--rates 0.8,0.6,0.45,0.33,0.25]
//                                [--batch 1,8] [--prompt-len 512] [--decode-len 128] [--output FILE]

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { LLM } from '../src/llm.js';
import { packageRoot } from '../src/model/default-model.js';
import { randomTokenIds, timeBatchedGenerate } from './engine-timing.js';
import { gpuResultFile, machineInfo } from './machine.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'llama-3.1-8b' },
    quantization: { type: 'string', default: 'none' },
    rates: { type: 'string', default: '0.8,0.6,0.45,0.33,0.25' },
    batch: { type: 'string', default: '1,8' },
    'prompt-len': { type: 'string', default: '512' },
    'decode-len': { type: 'string', default: '128' },
    output: { type: 'string' },
  },
});
const rates = values.rates!.split(',').map(Number);
const batches = values.batch!.split(',').map(Number);
const promptLen = Number(values['prompt-len']);
const decodeLen = Number(values['decode-len']);
const maxModelLen = promptLen + decodeLen + rates.length + 8;

interface Row {
  batch: number;
  k: number;
  acceptanceRates: number[];
  /** 1 + Σ rates: the expected tokens per target step. */
  expectedAcceptanceLength: number;
  measuredAcceptanceLength: number | null;
  decodeMs: number;
  decodeTokensPerSecond: number;
  speedup: number;
}
const rows: Row[] = [];
let gpuName: string | undefined;

async function measure(k: number, batch: number): Promise<{ decodeMs: number; acceptance: number | null }> {
  const speculativeConfig = k === 0 ? undefined : { method: 'synthetic', num_speculative_tokens: k, acceptance_rates: rates.slice(0, k), lossy: true, seed: 0 };
  const llm = await LLM.load({
    model: values.model, loadFormat: 'dummy', device: 'cuda', quantization: values.quantization, maxModelLen,
    maxNumSeqs: Math.max(...batches), kvCacheTokens: Math.max(...batches) * (maxModelLen + 16), speculativeConfig,
  });
  try {
    gpuName ??= (llm.loaded.model.backend as { device?: { name: string } }).device?.name;
    const ids = randomTokenIds();
    const vocab = llm.tokenizer.vocabSize;
    // One warm-up request (kernel compilation, pool growth), then the timed batch.
    await timeBatchedGenerate(llm, [ids(promptLen, vocab)], 8);
    const before = llm.specDecodeStats();
    const { decodeMs } = await timeBatchedGenerate(llm, Array.from({ length: batch }, () => ids(promptLen, vocab)), decodeLen);
    const after = llm.specDecodeStats();
    const drafts = (after?.numDrafts ?? 0) - (before?.numDrafts ?? 0);
    const accepted = (after?.numAcceptedTokens ?? 0) - (before?.numAcceptedTokens ?? 0);
    return { decodeMs, acceptance: drafts > 0 ? 1 + accepted / drafts : null };
  } finally {
    await llm.close();
  }
}

for (const batch of batches) {
  let baseTps = 0;
  for (let k = 0; k <= rates.length; k++) {
    (globalThis as { gc?: () => void }).gc?.();
    const { decodeMs, acceptance } = await measure(k, batch);
    // The first token of each request comes from the prefill; decode makes the other decodeLen - 1.
    const tps = (batch * (decodeLen - 1)) / (decodeMs / 1000);
    if (k === 0) baseTps = tps;
    const rs = rates.slice(0, k);
    rows.push({
      batch, k, acceptanceRates: rs, expectedAcceptanceLength: 1 + rs.reduce((a, b) => a + b, 0), measuredAcceptanceLength: acceptance,
      decodeMs, decodeTokensPerSecond: tps, speedup: tps / baseTps,
    });
    console.error(`batch ${batch} k=${k}: ${tps.toFixed(1)} tok/s, acceptance length ${acceptance?.toFixed(2) ?? '–'}`);
  }
}

const machine = machineInfo();
console.log(`GPU ${gpuName}; ${values.model} (dummy weights, ${values.quantization}), prompt ${promptLen}, ${decodeLen} tokens per request, greedy; synthetic acceptance profile [${rates.join(', ')}]`);
console.log('');
console.log('| batch | k | expected acceptance length | measured | decode tok/s | speedup vs no speculation |');
console.log('|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(`| ${r.batch} | ${r.k || '– (none)'} | ${r.k ? r.expectedAcceptanceLength.toFixed(2) : '1'} | ${r.measuredAcceptanceLength?.toFixed(2) ?? '–'} | ${r.decodeTokensPerSecond.toFixed(1)} | ${r.speedup.toFixed(2)}× |`);
}
const outDir = join(packageRoot(), 'bench', 'results');
mkdirSync(outDir, { recursive: true });
const file = values.output ?? gpuResultFile('cuda-spec', gpuName ?? 'gpu', machine.date);
writeFileSync(file, JSON.stringify({ bench: 'cuda-spec', gpu: gpuName, model: values.model, loadFormat: 'dummy', quantization: values.quantization, promptLen, decodeLen, rates, machine, rows }, null, 2) + '\n');
console.log(`\nsaved ${file}`);
