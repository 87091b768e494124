// The quality ladder: the default model as stored (BF16), then FP8, W8A16, W4A16 (RTN) and NVFP4 quantized at
// load, and any pre-quantized checkpoints given, each compared with the baseline on the same held-out tokens
// (`tachyon eval`'s metrics). Prints a table and saves JSON with the machine. Measures; never passes or fails.
//
//   node dist/bench/quant-ladder.js [--model DIR] [--text FILE] [--tasks FILE.jsonl] [--max-tokens-eval 4096]
//        [--context-len 512] [--methods fp8,w8a16,w4a16,nvfp4] [--checkpoint "w4a16 gptq=DIR" ...] [--output FILE]

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { compareRuns, formatProgress, prepareInputs, runConfiguration, type ConfigurationRun, type EvalReport } from '../src/eval/evaluate.js';
import { findHeldoutTasks, findHeldoutText, readTaskFile, readTextFile } from '../src/eval/inputs.js';
import { formatBytes, formatNumber } from '../src/eval/report.js';
import { LLM } from '../src/llm.js';
import { packageRoot, resolveModelDir } from '../src/model/default-model.js';
import { machineInfo } from './machine.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    text: { type: 'string' },
    tasks: { type: 'string' },
    'max-tokens-eval': { type: 'string', default: '4096' },
    'context-len': { type: 'string' },
    methods: { type: 'string', default: 'fp8,w8a16,w4a16,nvfp4' },
    checkpoint: { type: 'string', multiple: true, default: [] },
    output: { type: 'string' },
  },
});

const modelDir = resolveModelDir(values.model);
const textPath = values.text ?? findHeldoutText(modelDir);
if (!textPath) throw new Error(`${modelDir} ships no held-out text; pass --text FILE`);
const tasksPath = values.tasks ?? findHeldoutTasks(modelDir);
const text = readTextFile(textPath);
const tasks = tasksPath ? readTaskFile(tasksPath) : [];

interface Rung {
  label: string;
  model: string;
  quantization?: string;
}
const rungs: Rung[] = values.methods!.split(',').filter(Boolean).map((q) => ({ label: q === 'w4a16' ? 'w4a16 (rtn)' : q, model: modelDir, quantization: q }));
for (const spec of values.checkpoint!) {
  const eq = spec.lastIndexOf('=');
  if (eq <= 0) throw new Error(`--checkpoint wants LABEL=DIR, got '${spec}'`);
  rungs.push({ label: spec.slice(0, eq), model: resolveModelDir(spec.slice(eq + 1)) });
}

const progress = (e: Parameters<typeof formatProgress>[0]) => {
  if (e.done === e.total) process.stderr.write(formatProgress(e) + '\n');
};

const base = await LLM.load({ model: modelDir });
const inputs = prepareInputs(base, text, tasks, { maxTokensEval: Number(values['max-tokens-eval']), contextLen: values['context-len'] ? Number(values['context-len']) : undefined });
const baselineLabel = `${base.config.dtype === 'bfloat16' ? 'bf16' : base.config.dtype} (as stored)`;
const baseRun: ConfigurationRun = await runConfiguration(base, inputs, { label: baselineLabel, keepLogits: true, onProgress: progress });
await base.close();

const reports: Array<{ label: string; report: EvalReport }> = [];
for (const rung of rungs) {
  const llm = await LLM.load({ model: rung.model, quantization: rung.quantization });
  try {
    const run = await runConfiguration(llm, inputs, { label: rung.label, reference: baseRun, onProgress: progress });
    reports.push({ label: rung.label, report: compareRuns(baseRun, run, inputs) });
  } finally {
    await llm.close();
  }
}

const machine = machineInfo();
const first = reports[0]?.report;
const b = first?.baseline;
console.log(`model ${modelDir}; text ${textPath}: ${inputs.textTokens} tokens scored in windows of ${inputs.contextLen}` + (tasks.length ? `; ${tasks.length} tasks from ${tasksPath}` : ''));
console.log(`machine ${machine.cpu}, ${machine.cores} cores, node ${machine.node}, commit ${machine.commit}; CPU backend (float32 compute)`);
console.log('');
const withTasks = tasks.length > 0;
console.log(`| configuration | weight bytes | PPL | PPL ratio | mean KLD | KLD p99 | top-1 agreement |${withTasks ? ' accuracy | recovery |' : ''}`);
console.log(`|---|---:|---:|---:|---:|---:|---:|${withTasks ? '---:|---:|' : ''}`);
if (b) {
  console.log(`| ${baselineLabel} | ${formatBytes(b.weightBytes)} | ${b.perplexity.toFixed(4)} | 1 | 0 | 0 | 100% |${withTasks ? ` ${(100 * b.accuracy!).toFixed(1)}% | 100% |` : ''}`);
}
for (const { label, report: r } of reports) {
  const c = r.candidate;
  const cmp = r.comparison;
  const acc = withTasks ? ` ${(100 * c.accuracy!).toFixed(1)}% | ${cmp.recoveryPercent === undefined ? 'n/a' : cmp.recoveryPercent.toFixed(1) + '%'} |` : '';
  console.log(
    `| ${label} | ${formatBytes(c.weightBytes)} | ${c.perplexity.toFixed(4)} | ${cmp.pplRatio.toFixed(4)} | ${formatNumber(cmp.kld.mean)} | ${formatNumber(cmp.kld.p99)} | ` +
      `${(100 * cmp.top1Agreement).toFixed(2)}% |${acc}`,
  );
}

const outDir = join(packageRoot(), 'bench', 'results');
mkdirSync(outDir, { recursive: true });
const file = values.output ?? join(outDir, `quant-ladder-${machine.hostname}-${machine.date.slice(0, 10)}.json`);
writeFileSync(
  file,
  JSON.stringify(
    {
      bench: 'quant-ladder',
      model: modelDir,
      text: textPath,
      tasks: tasksPath,
      inputs: first?.inputs,
      baseline: { ...b, label: baselineLabel },
      rungs: reports.map(({ label, report }) => ({ label, candidate: report.candidate, comparison: report.comparison })),
      machine,
    },
    null,
    2,
  ) + '\n',
);
console.log(`\nsaved ${file}`);
