// Flags shared by every command that runs a model (model, context, sampling), and their parsing
// into library options, so generate, chat and (later) serve accept the same spellings.

import { InvalidArgumentError, type Command } from 'commander';
import { InvalidRequestError } from '../errors.js';
import { parseKvCacheDtype, type GenerateParams, type LLM, type LoadOptions } from '../llm.js';
import { LOAD_FORMATS } from '../model/load-model.js';

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

/** --kv-cache-dtype's help (model commands and eval). */
export const KV_CACHE_DTYPE_HELP = 'KV cache element type: auto (bf16 on CUDA, float32 on the CPU) | bf16 | float32 | fp8 (E4M3; scaled by the k_scale/v_scale of a quantized checkpoint that has them, else scale 1)';

export function addModelOptions(cmd: Command): Command {
  return cmd
    .option('--model <dir|preset>', 'Hugging Face model directory (default: the embedded tachyon-tiny); with --load-format dummy also a shape preset (llama-3.1-8b, llama-3.3-70b, qwen3-8b, ...: tachyon plan --list)')
    .option('--load-format <format>', 'auto (read the checkpoint) | dummy (random weights at the model\'s shapes: real-scale speed with no download)', 'auto')
    .option('--max-model-len <n>', 'longest prompt + output in tokens (default: the model\'s max_position_embeddings)', intArg('--max-model-len'))
    .option('--device <device>', 'auto (CUDA when a GPU, libcuda and NVRTC are present, else CPU) | cpu | cuda', 'auto')
    .option('--quantization <method>', 'quantize weights at load: fp8 | w8a16 | w4a16 | nvfp4 (embeddings and lm_head stay as stored)')
    .option('--gpu-memory-utilization <f>', 'CUDA: fraction of the GPU\'s memory for weights, activations and the KV cache, in (0, 1] (default 0.9); the KV cache gets what is left', floatArg('--gpu-memory-utilization'))
    .option('--kv-cache-dtype <dtype>', KV_CACHE_DTYPE_HELP, 'auto')
    .option('--enforce-eager', 'CUDA: run every decode step op by op instead of replaying it as a CUDA graph (slower; for debugging and comparison)')
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
  loadFormat?: string;
  maxModelLen?: number;
  device: string;
  quantization?: string;
  gpuMemoryUtilization?: number;
  kvCacheDtype?: string;
  enforceEager?: boolean;
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

export function loadOptionsFrom(flags: ModelFlags, opts: { progress?: boolean } = {}): LoadOptions {
  // Thrown from an action (not a parser), so a TachyonError: the CLI prints its message and exits 1.
  if (flags.device !== 'auto' && flags.device !== 'cpu' && flags.device !== 'cuda') {
    throw new InvalidRequestError(`--device '${flags.device}' is not supported; supported: auto, cpu, cuda`);
  }
  const loadFormat = flags.loadFormat ?? 'auto';
  if (!(LOAD_FORMATS as readonly string[]).includes(loadFormat)) {
    throw new InvalidRequestError(`--load-format '${loadFormat}' is not supported; supported: ${LOAD_FORMATS.join(', ')}`);
  }
  parseKvCacheDtype(flags.kvCacheDtype, '--kv-cache-dtype'); // named as typed, before the (slow) load
  const f = flags.gpuMemoryUtilization;
  if (f !== undefined && !(f > 0 && f <= 1)) throw new InvalidRequestError(`--gpu-memory-utilization must be in (0, 1], got ${f}`);
  return {
    model: flags.model,
    loadFormat: loadFormat as LoadOptions['loadFormat'],
    maxModelLen: flags.maxModelLen,
    device: flags.device,
    quantization: flags.quantization,
    gpuMemoryUtilization: f,
    kvCacheDtype: flags.kvCacheDtype as LoadOptions['kvCacheDtype'],
    enforceEager: flags.enforceEager,
    speculativeConfig: flags.speculativeConfig,
    onProgress: opts.progress === false ? undefined : loadProgress(),
  };
}

/**
 * Weight-loading progress for stderr: nothing for a load that finishes within `intervalMs` (the small
 * models), else a line per `intervalMs` naming the layer reached and one when it is done, so a long
 * load (a 70B checkpoint) shows it is moving.
 */
export function loadProgress(write: (line: string) => void = (l) => process.stderr.write(l + '\n'), intervalMs = 2000): (done: number, total: number) => void {
  const t0 = performance.now();
  let last = t0;
  let shown = false;
  return (done, total) => {
    const now = performance.now();
    const secs = ((now - t0) / 1000).toFixed(1);
    // done counts the embedding (1), each layer, and the final norm with lm_head (total).
    const layers = total - 2;
    if (done >= total) {
      if (shown) write(`loading weights: done, ${layers} layers in ${secs} s`);
      return;
    }
    if (now - last < intervalMs) return;
    last = now;
    shown = true;
    write(`loading weights: layer ${Math.max(0, Math.min(done - 1, layers))}/${layers} (${secs} s)`);
  };
}

/** The load's warnings ("warning: …") and notes (the KV cache's size) on stderr. */
export function printLoadMessages(llm: LLM): void {
  for (const w of llm.warnings) process.stderr.write(`warning: ${w}\n`);
  for (const n of llm.notes) process.stderr.write(`${n}\n`);
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
