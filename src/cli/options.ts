// Flags shared by every command that runs a model (model, context, sampling), and their parsing
// into library options, so generate, chat and (later) serve accept the same spellings.

import { InvalidArgumentError, type Command } from 'commander';
import type { GenerateParams, LoadOptions } from '../llm.js';

export function intArg(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n)) throw new InvalidArgumentError(`${name} must be an integer, got '${v}'`);
    return n;
  };
}

export function floatArg(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number, got '${v}'`);
    return n;
  };
}

const collectStrings = (v: string, prev: string[] = []) => [...prev, v];

export function addModelOptions(cmd: Command): Command {
  return cmd
    .option('--model <dir>', 'Hugging Face model directory (default: the embedded tachyon-tiny)')
    .option('--max-model-len <n>', 'longest prompt + output in tokens (default: the model\'s max_position_embeddings)', intArg('--max-model-len'))
    .option('--device <device>', 'auto (CUDA when a GPU, libcuda and NVRTC are present, else CPU) | cpu | cuda', 'auto')
    .option('--quantization <method>', 'quantize weights at load: fp8 | w8a16 | w4a16 | nvfp4 (embeddings and lm_head stay as stored)')
    .option('--speculative-config <json>', 'speculative decoding, vLLM\'s keys: {"method": "draft_model"|"eagle3"|"ngram", "num_speculative_tokens": k, "model": DIR, ...}');
}

export function addSamplingOptions(cmd: Command, defaultMaxTokens: number): Command {
  return cmd
    .option('--max-tokens <n>', 'most tokens to generate', intArg('--max-tokens'), defaultMaxTokens)
    .option('--temperature <t>', '0 = greedy (default: generation_config.json, else 1)', floatArg('--temperature'))
    .option('--top-p <p>', 'nucleus sampling mass', floatArg('--top-p'))
    .option('--top-k <k>', 'keep the k most likely tokens (0 = off)', intArg('--top-k'))
    .option('--min-p <p>', 'drop tokens below p × the top probability', floatArg('--min-p'))
    .option('--presence-penalty <x>', 'OpenAI presence penalty', floatArg('--presence-penalty'))
    .option('--frequency-penalty <x>', 'OpenAI frequency penalty', floatArg('--frequency-penalty'))
    .option('--repetition-penalty <x>', 'multiplicative repetition penalty (1 = off)', floatArg('--repetition-penalty'))
    .option('--seed <s>', 'random seed, for reproducible sampling', intArg('--seed'))
    .option('--stop <text>', 'stop when this text appears (repeatable)', collectStrings)
    .option('--ignore-eos', 'keep generating past end-of-sequence tokens');
}

export interface ModelFlags {
  model?: string;
  maxModelLen?: number;
  device: string;
  quantization?: string;
  speculativeConfig?: string;
}

export interface SamplingFlags {
  maxTokens: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  repetitionPenalty?: number;
  seed?: number;
  stop?: string[];
  ignoreEos?: boolean;
}

export function loadOptionsFrom(flags: ModelFlags): LoadOptions {
  if (flags.device !== 'auto' && flags.device !== 'cpu' && flags.device !== 'cuda') {
    throw new InvalidArgumentError(`--device '${flags.device}' is not supported; supported: auto, cpu, cuda`);
  }
  return { model: flags.model, maxModelLen: flags.maxModelLen, device: flags.device, quantization: flags.quantization, speculativeConfig: flags.speculativeConfig };
}

export function samplingFrom(flags: SamplingFlags): GenerateParams {
  return {
    maxTokens: flags.maxTokens,
    temperature: flags.temperature,
    topP: flags.topP,
    topK: flags.topK,
    minP: flags.minP,
    presencePenalty: flags.presencePenalty,
    frequencyPenalty: flags.frequencyPenalty,
    repetitionPenalty: flags.repetitionPenalty,
    seed: flags.seed,
    stop: flags.stop,
    ignoreEos: flags.ignoreEos,
  };
}

/** "prompt 12 tokens, output 64 tokens, prefill 310.2 tok/s, decode 55.1 tok/s" for stderr. */
export function speedLine(r: { usage: { promptTokens: number; completionTokens: number }; timings: { ttftMs: number; decodeTokensPerSecond: number; prefillTokensPerSecond: number; totalMs: number } }): string {
  const u = r.usage;
  const t = r.timings;
  const overall = t.totalMs > 0 ? (u.completionTokens / t.totalMs) * 1000 : 0;
  return (
    `prompt ${u.promptTokens} tokens, output ${u.completionTokens} tokens, ` +
    `prefill ${t.prefillTokensPerSecond.toFixed(1)} tok/s, decode ${t.decodeTokensPerSecond.toFixed(1)} tok/s, ` +
    `${overall.toFixed(1)} output tok/s overall (TTFT ${t.ttftMs.toFixed(0)} ms)`
  );
}

/** "speculative: 40 drafts, 120 draft tokens, 97 accepted (80.8%), mean acceptance length 3.43" for stderr. */
export function specDecodeLine(s: { numDrafts: number; numDraftTokens: number; numAcceptedTokens: number } | undefined): string | undefined {
  if (!s || s.numDrafts === 0) return undefined;
  const rate = (100 * s.numAcceptedTokens) / s.numDraftTokens;
  const meanLength = 1 + s.numAcceptedTokens / s.numDrafts;
  return `speculative: ${s.numDrafts} drafts, ${s.numDraftTokens} draft tokens, ${s.numAcceptedTokens} accepted (${rate.toFixed(1)}%), mean acceptance length ${meanLength.toFixed(2)}`;
}
