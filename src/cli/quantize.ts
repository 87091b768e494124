// `tachyon quantize`: write an FP8 / W8A16 / W4A16 / NVFP4 compressed-tensors checkpoint from a float one.

import { Command, InvalidArgumentError } from 'commander';
import { resolveModelDir } from '../model/default-model.js';
import { quantizeCheckpoint } from '../quant/checkpoint/quantize-checkpoint.js';
import { parseMethod, parseScheme, QUANTIZE_METHODS, QUANTIZE_SCHEMES } from '../quant/checkpoint/schemes.js';
import { intArg } from './options.js';

interface QuantizeFlags {
  model?: string;
  scheme: string;
  output: string;
  method: string;
  calibration?: string;
  groupSize?: number;
  numCalibrationSamples?: number;
  calibrationSeqLen?: number;
  actOrder?: boolean;
  singlePass?: boolean;
  maxShardSize?: number;
}

const SIZE_UNITS: Record<string, number> = { '': 1, B: 1, KB: 1e3, MB: 1e6, GB: 1e9, KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30 };

/** "5GB", "500MB", "2GiB" or a byte count, as transformers' max_shard_size. */
export function parseByteSize(v: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v);
  const unit = m ? SIZE_UNITS[m[2].toUpperCase()] : undefined;
  if (!m || unit === undefined || !(Number(m[1]) > 0)) throw new InvalidArgumentError(`--max-shard-size must be a size like 5GB, 500MB or a byte count, got '${v}'`);
  return Math.floor(Number(m[1]) * unit);
}

function positive(name: string) {
  const parse = intArg(name);
  return (v: string): number => {
    const n = parse(v);
    if (n <= 0) throw new InvalidArgumentError(`${name} must be a positive integer, got '${v}'`);
    return n;
  };
}

export function quantizeCommand(): Command {
  return new Command('quantize')
    .description('write a quantized checkpoint (compressed-tensors, as llm-compressor lays it out) from a float one')
    .option('--model <dir>', 'float Hugging Face model directory (default: the embedded tachyon-tiny)')
    .requiredOption('--scheme <scheme>', QUANTIZE_SCHEMES.join(' | '))
    .requiredOption('--output <dir>', 'directory to write (must not exist, or be empty)')
    .option('--method <method>', `${QUANTIZE_METHODS.join(' | ')}: round-to-nearest, or GPTQ with calibration text`, 'rtn')
    .option('--calibration <file>', 'GPTQ calibration text: plain text, or JSONL with a "text" field (default: held-out text the model ships)')
    .option('--group-size <n>', 'W4A16 / W4A16_ASYM: input columns per scale, -1 = per output channel (default 128)', intArg('--group-size'))
    .option('--num-calibration-samples <n>', 'GPTQ: calibration windows (default 64)', positive('--num-calibration-samples'))
    .option('--calibration-seq-len <n>', 'GPTQ: tokens per calibration window (default 256)', positive('--calibration-seq-len'))
    .option('--act-order', 'GPTQ: quantize columns by decreasing activation energy (desc_act; adds weight_g_idx)')
    .option('--single-pass', 'GPTQ: calibrate all layers from one pass of the float model (faster) instead of layer by layer')
    .option('--max-shard-size <size>', 'largest safetensors file, e.g. 5GB (default 5GB)', parseByteSize)
    .action((flags: QuantizeFlags) => {
      const result = quantizeCheckpoint({
        model: resolveModelDir(flags.model),
        output: flags.output,
        scheme: parseScheme(flags.scheme),
        method: parseMethod(flags.method),
        groupSize: flags.groupSize,
        actOrder: flags.actOrder,
        singlePass: flags.singlePass,
        calibrationFile: flags.calibration,
        numCalibrationSamples: flags.numCalibrationSamples,
        calibrationSeqLen: flags.calibrationSeqLen,
        maxShardBytes: flags.maxShardSize,
        log: (line) => process.stderr.write(line + '\n'),
      });
      const s = result.settings;
      const calib = result.calibration ? `, calibrated on ${result.calibration.samples} windows / ${result.calibration.tokens} tokens` : '';
      process.stderr.write(`quantized ${result.quantizedModules} linear layers to ${s.scheme} (${s.method}${s.actOrder ? ', act-order' : ''}${calib}) in ${result.seconds.toFixed(1)} s\n`);
      process.stdout.write(`${result.output}\n`);
    });
}
