// `tachyon plan`: does a model fit a device at a context and concurrency, in every weight format.

import { Command, InvalidArgumentError } from 'commander';
import { DEVICES } from '../plan/devices.js';
import { KV_CACHE_DTYPES, WEIGHT_FORMATS, type KvCacheDtype, type WeightFormat } from '../plan/memory.js';
import { formatPlan, parseSpeculativeConfig, planAcrossFormats, planMemory, planToJson, resolveDevice, resolveModel } from '../plan/planner.js';
import { EAGLE3_PRESETS, PRESETS } from '../plan/presets.js';
import { floatArg, intArg } from './options.js';

interface PlanFlags {
  model?: string;
  device?: string;
  memory?: number;
  unified?: boolean;
  quantization?: string;
  kvCacheDtype: string;
  maxModelLen?: number;
  concurrency: number;
  speculativeConfig?: string;
  gpuMemoryUtilization: number;
  reserve?: number;
  maxNumBatchedTokens: number;
  enforceEager?: boolean;
  json?: boolean;
  list?: boolean;
}

function weightFormat(q: string | undefined): WeightFormat | undefined {
  if (q === undefined) return undefined;
  const v = q.toLowerCase();
  if (v === 'none' || v === 'bfloat16' || v === 'fp16' || v === 'float16') return 'bf16';
  if (v === 'int4' || v === 'awq' || v === 'gptq') return 'w4a16';
  if ((WEIGHT_FORMATS as readonly string[]).includes(v)) return v as WeightFormat;
  throw new InvalidArgumentError(`--quantization '${q}' is not supported; supported: none, ${WEIGHT_FORMATS.join(', ')}`);
}

export function planCommand(): Command {
  return new Command('plan')
    .description('does a model fit a device: weights, KV cache, draft model and runtime memory, in every format')
    .option('--model <dir|preset>', 'Hugging Face model directory or preset (see --list)')
    .option('--device <device>', 'device (see --list)')
    .option('--memory <GB>', 'any other device: its memory in GB', floatArg('--memory'))
    .option('--unified', 'with --memory: the memory is shared with the CPU (Jetson-like)')
    .option('--quantization <q>', `weight format: none (bf16), ${WEIGHT_FORMATS.slice(1).join(', ')} (default: the checkpoint's)`)
    .option('--kv-cache-dtype <dtype>', `KV cache element type: ${KV_CACHE_DTYPES.join(' | ')}`, 'bf16')
    .option('--max-model-len <n>', 'context per sequence in tokens (default: the model\'s max_position_embeddings)', intArg('--max-model-len'))
    .option('--concurrency <n>', 'sequences running at once', intArg('--concurrency'), 1)
    .option('--speculative-config <json>', 'e.g. \'{"method":"eagle3","model":"eagle3-llama-3.1-8b","num_speculative_tokens":3}\' or a draft_model with "model"')
    .option('--gpu-memory-utilization <f>', 'discrete GPUs: share of memory the engine may use', floatArg('--gpu-memory-utilization'), 0.9)
    .option('--reserve <GB>', 'memory kept for everything else, instead of the default rule', floatArg('--reserve'))
    .option('--max-num-batched-tokens <n>', 'tokens per forward step (sizes the activation peak)', intArg('--max-num-batched-tokens'), 2048)
    .option('--enforce-eager', 'no CUDA graphs')
    .option('--json', 'print the plan as JSON')
    .option('--list', 'list the presets and devices')
    .action((f: PlanFlags) => {
      if (f.list) {
        process.stdout.write(`presets: ${Object.keys(PRESETS).join(', ')}\nEAGLE-3 heads: ${Object.keys(EAGLE3_PRESETS).join(', ')}\n`);
        process.stdout.write(`devices:\n${Object.values(DEVICES).map((d) => `  ${d.id.padEnd(12)} ${d.name}, ${d.bandwidthGBs} GB/s${d.unified ? ', unified memory' : ''}`).join('\n')}\n`);
        return;
      }
      if (!f.model) throw new InvalidArgumentError('--model is required (a model directory or a preset; see --list)');
      if (!(KV_CACHE_DTYPES as readonly string[]).includes(f.kvCacheDtype)) {
        if (f.kvCacheDtype === 'auto') f.kvCacheDtype = 'bf16';
        else if (f.kvCacheDtype === 'fp8_e4m3' || f.kvCacheDtype === 'fp8_e5m2') f.kvCacheDtype = 'fp8';
        else throw new InvalidArgumentError(`--kv-cache-dtype '${f.kvCacheDtype}' is not supported; supported: ${KV_CACHE_DTYPES.join(', ')}`);
      }
      const model = resolveModel(f.model);
      const device = resolveDevice(f.device, f.memory, f.unified === true);
      const base = {
        model,
        device,
        kvCacheDtype: f.kvCacheDtype as KvCacheDtype,
        maxModelLen: f.maxModelLen ?? model.config.maxPositionEmbeddings,
        concurrency: f.concurrency,
        spec: f.speculativeConfig ? parseSpeculativeConfig(f.speculativeConfig) : undefined,
        gpuMemoryUtilization: f.gpuMemoryUtilization,
        reserveBytes: f.reserve !== undefined ? f.reserve * 1e9 : undefined,
        maxNumBatchedTokens: f.maxNumBatchedTokens,
        enforceEager: f.enforceEager === true,
      };
      const plan = planMemory({ ...base, format: weightFormat(f.quantization) ?? model.checkpointFormat ?? 'bf16' });
      const table = planAcrossFormats(base);
      process.stdout.write(f.json ? JSON.stringify(planToJson(plan, table), null, 2) + '\n' : formatPlan(plan, table));
    });
}
