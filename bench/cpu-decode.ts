// Prefill and decode speed of the CPU backend on a model (the embedded default unless --model),
// printed as a table and saved as JSON with the machine it ran on. Measures; never passes or fails.
//
//   node dist/bench/cpu-decode.js [--model DIR] [--prompt-len 128] [--decode-len 64] [--batch 1,4]

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { LLM } from '../src/llm.js';
import { packageRoot } from '../src/model/default-model.js';
import { randomTokenIds, timeBatchedGenerate } from './engine-timing.js';
import { machineInfo, measureCopyBandwidth } from './machine.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    'prompt-len': { type: 'string', default: '128' },
    'decode-len': { type: 'string', default: '64' },
    batch: { type: 'string', default: '1,4' },
    output: { type: 'string' },
  },
});
const promptLen = Number(values['prompt-len']);
const decodeLen = Number(values['decode-len']);
const batches = values.batch!.split(',').map(Number);

const llm = await LLM.load({ model: values.model, maxModelLen: promptLen + decodeLen + 1 });
const cfg = llm.config;
const weightBytes = Object.values(llm.loaded.weightBytes).reduce((a, b) => a + b, 0);
// The CPU backend holds weights as float32, so each decode step streams weightBytes × (4 / stored bytes per element).
const storedBytesPerParam = cfg.dtype === 'float32' ? 4 : 2;
const f32WeightBytes = (weightBytes / storedBytesPerParam) * 4;
const copyGBs = measureCopyBandwidth();

// Random prompts of exact length from a fixed seed: tokens drawn from the vocabulary.
const randomIds = randomTokenIds();

interface Row {
  batch: number;
  promptTokens: number;
  outputTokensPerSeq: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  decodeStepMs: number;
  rooflineTokensPerSecond: number;
  rooflineRatio: number;
}
const rows: Row[] = [];
for (const batch of batches) {
  const prompts = Array.from({ length: batch }, () => randomIds(promptLen, cfg.vocabSize));
  const { prefillMs, decodeMs } = await timeBatchedGenerate(llm, prompts, decodeLen);
  const prefillS = prefillMs / 1000;
  const decodeS = decodeMs / 1000;
  const decodeTokens = batch * (decodeLen - 1);
  const stepMs = (decodeS * 1000) / (decodeLen - 1);
  // Each decode step must read every weight once, whatever the batch: that is the memory-bound floor.
  const rooflineStepS = f32WeightBytes / (copyGBs * 1e9 / 2);
  rows.push({
    batch,
    promptTokens: promptLen,
    outputTokensPerSeq: decodeLen,
    prefillTokensPerSecond: (batch * promptLen) / prefillS,
    decodeTokensPerSecond: decodeTokens / decodeS,
    decodeStepMs: stepMs,
    rooflineTokensPerSecond: batch / rooflineStepS,
    rooflineRatio: rooflineStepS / (stepMs / 1000),
  });
}
await llm.close();

const machine = machineInfo();
console.log(`model ${llm.loaded.dir} (${cfg.architecture}, ${(weightBytes / 1e6).toFixed(1)} MB stored, ${(f32WeightBytes / 1e6).toFixed(1)} MB as float32)`);
console.log(`machine ${machine.cpu}, ${machine.cores} cores, node ${machine.node}; host copy bandwidth ${copyGBs.toFixed(1)} GB/s (read+write)`);
console.log('');
console.log('| batch | prompt | prefill tok/s | decode tok/s | step ms | memory-bound tok/s | ratio |');
console.log('|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(`| ${r.batch} | ${r.promptTokens} | ${r.prefillTokensPerSecond.toFixed(1)} | ${r.decodeTokensPerSecond.toFixed(1)} | ${r.decodeStepMs.toFixed(1)} | ${r.rooflineTokensPerSecond.toFixed(0)} | ${(r.rooflineRatio * 100).toFixed(1)}% |`);
}
const outDir = join(packageRoot(), 'bench', 'results');
mkdirSync(outDir, { recursive: true });
const file = values.output ?? join(outDir, `cpu-decode-${machine.hostname}-${machine.date.slice(0, 10)}.json`);
writeFileSync(file, JSON.stringify({ bench: 'cpu-decode', model: llm.loaded.dir, architecture: cfg.architecture, weightBytes, f32WeightBytes, hostCopyGBs: copyGBs, machine, rows }, null, 2) + '\n');
console.log(`\nsaved ${file}`);
