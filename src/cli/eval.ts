// `tachyon eval`: quality of a configuration against its baseline on the same tokens — perplexity, KL
// divergence, top-1 agreement, task accuracy and recovery — as a table (or --json), progress on stderr.

import { Command } from 'commander';
import { InvalidRequestError } from '../errors.js';
import { DEFAULT_MAX_TOKENS_EVAL, evaluate, formatProgress, type Progress } from '../eval/evaluate.js';
import { findHeldoutTasks, findHeldoutText, HELDOUT_TEXT_FILES, readTaskFile, readTextFile, type TaskItem } from '../eval/inputs.js';
import { formatReportTable } from '../eval/report.js';
import { resolveModelDir } from '../model/default-model.js';
import { intArg, KV_CACHE_DTYPE_HELP, loadOptionsFrom, type ModelFlags } from './options.js';
import { parseKvCacheDtype, type LoadOptions } from '../llm.js';

interface EvalFlags extends ModelFlags {
  baselineModel?: string;
  baselineQuantization: string;
  baselineKvCacheDtype?: string;
  text?: string;
  tasks?: string;
  maxTokensEval: number;
  contextLen?: number;
  json?: boolean;
  quiet?: boolean;
}

export function evalCommand(): Command {
  return new Command('eval')
    .description('compare a configuration (model + quantization) with its baseline: perplexity, KL divergence, top-1 agreement, task accuracy')
    .option('--model <dir>', 'Hugging Face model directory to evaluate (default: the embedded tachyon-tiny)')
    .option('--quantization <method>', 'the candidate: quantize at load with fp8 | w8a16 | w4a16 | nvfp4 (or none)')
    .option('--baseline-model <dir>', 'the baseline\'s model directory (default: --model); e.g. the BF16 original of a quantized checkpoint')
    .option('--baseline-quantization <method>', 'the baseline\'s quantization', 'none')
    .option('--text <file>', 'text for perplexity and KL divergence (default: the model directory\'s held-out text)')
    .option('--tasks <file>', 'JSONL of {"prompt", "answer"}: greedy exact-match accuracy and recovery (default: the model\'s held-out tasks, if any)')
    .option('--max-tokens-eval <n>', 'score at most this many text tokens (0 = all)', intArg('--max-tokens-eval'), DEFAULT_MAX_TOKENS_EVAL)
    .option('--context-len <n>', 'window length in tokens (default: min(max_position_embeddings, 512))', intArg('--context-len'))
    .option('--max-model-len <n>', 'longest task prompt + answer (default: the model\'s max_position_embeddings)', intArg('--max-model-len'))
    .option('--device <device>', 'auto (CUDA when a GPU, libcuda and NVRTC are present, else CPU) | cpu | cuda', 'auto')
    .option('--kv-cache-dtype <dtype>', KV_CACHE_DTYPE_HELP, 'auto')
    .option('--baseline-kv-cache-dtype <dtype>', 'the baseline\'s KV cache element type (default: --kv-cache-dtype), e.g. bf16 against an fp8 candidate')
    .option('--json', 'print one JSON object instead of the table')
    .option('--quiet', 'no progress on stderr')
    .action(async (flags: EvalFlags) => {
      const candidateDir = resolveModelDir(flags.model);
      const baselineDir = flags.baselineModel ? resolveModelDir(flags.baselineModel) : candidateDir;
      const textPath = flags.text ?? findHeldoutText(baselineDir);
      const tasksPath = flags.tasks ?? findHeldoutTasks(baselineDir);
      if (textPath === undefined && flags.tasks === undefined) {
        throw new InvalidRequestError(`${baselineDir} ships no held-out text (looked for ${HELDOUT_TEXT_FILES.join(', ')}); pass --text FILE (and/or --tasks FILE.jsonl)`);
      }
      const text = textPath === undefined ? undefined : readTextFile(textPath);
      const tasks: TaskItem[] = tasksPath === undefined ? [] : readTaskFile(tasksPath);
      // The engine only answers the tasks (short prompts), so its KV cache is kept small rather than sized
      // to the GPU: the baseline's memory is still held while the candidate loads.
      const common = { ...loadOptionsFrom({ ...flags, model: undefined, quantization: undefined }, { progress: !flags.quiet }), kvCacheTokens: Math.max(flags.maxModelLen ?? 0, 8192) };
      const progress = flags.quiet ? undefined : throttledProgress(2000);
      const report = await evaluate({
        baseline: { ...common, model: baselineDir, quantization: flags.baselineQuantization, kvCacheDtype: baselineKvCacheDtype(flags) },
        candidate: { ...common, model: candidateDir, quantization: flags.quantization },
        text,
        tasks,
        contextLen: flags.contextLen,
        maxTokensEval: flags.maxTokensEval,
        onProgress: progress,
      });
      report.inputs.text = textPath;
      report.inputs.tasksFile = tasksPath;
      if (flags.json) process.stdout.write(JSON.stringify(report) + '\n');
      else process.stdout.write(formatReportTable(report) + '\n');
    });
}

/** --baseline-kv-cache-dtype, checked and named as typed; the candidate's when not given. */
function baselineKvCacheDtype(flags: EvalFlags): LoadOptions['kvCacheDtype'] {
  const v = flags.baselineKvCacheDtype ?? flags.kvCacheDtype;
  parseKvCacheDtype(v, flags.baselineKvCacheDtype === undefined ? '--kv-cache-dtype' : '--baseline-kv-cache-dtype');
  return v as LoadOptions['kvCacheDtype'];
}

/** Progress lines on stderr: the first and last of each stage, and at most one every `intervalMs` between. */
function throttledProgress(intervalMs: number): Progress {
  let last = 0;
  return (e) => {
    const now = performance.now();
    if (e.done === 1 || e.done === e.total || now - last >= intervalMs) {
      last = now;
      process.stderr.write(formatProgress(e) + '\n');
    }
  };
}
