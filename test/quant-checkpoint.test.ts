// Pre-quantized checkpoints: tiny checkpoints packed BY HAND here from the published layouts
// (formats.md §3–5; this file's packers share no code with the readers), loaded through
// loadModelWeights and checked element by element against the values the codes and scales mean;
// then whole models loaded from them run and match the float model of the same weights.

import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { Rng } from '../src/engine/rng.js';
import { InvalidRequestError, ModelLoadError } from '../src/errors.js';
import { loadModelConfig } from '../src/model/config.js';
import { LlamaModel } from '../src/model/llama.js';
import { encodeSafetensors, SafetensorsCheckpoint, type HostTensor } from '../src/model/load/safetensors.js';
import { loadModelWeights, type ModelWeights } from '../src/model/weights.js';
import { ModelRunner } from './support/run-model.js';
import { TINY_LLAMA, tinyTensors, type TinyConfig } from './support/tiny-checkpoint.js';

// ---------------------------------------------------------------------------------------------
// Independent encoders for the on-disk dtypes and packings.

const bytes = (v: ArrayBufferView) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
const t = (dtype: string, shape: number[], data: ArrayBufferView): HostTensor => ({ dtype, shape, bytes: bytes(data) });
const f32 = (shape: number[], v: ArrayLike<number>) => t('F32', shape, Float32Array.from(v));
const i32 = (shape: number[], v: ArrayLike<number>) => t('I32', shape, Int32Array.from(v, (x) => x | 0));
const i64 = (v: number[]) => t('I64', [v.length], BigInt64Array.from(v, BigInt));

/** bf16 = the top half of the float32 bits; only for values that are exact in bf16. */
function bf16(shape: number[], v: ArrayLike<number>): HostTensor {
  const u = new Uint32Array(Float32Array.from(v).buffer);
  const out = Uint16Array.from(u, (x) => {
    assert.equal(x & 0xffff, 0, 'test scale must be exact in bf16');
    return x >>> 16;
  });
  return t('BF16', shape, out);
}

/** IEEE half for values exact in it (normal range): sign, 5-bit exponent, 10-bit mantissa. */
function f16(shape: number[], v: ArrayLike<number>): HostTensor {
  const out = Uint16Array.from(v, (x) => {
    if (x === 0) return 0;
    const e = Math.floor(Math.log2(Math.abs(x)));
    const m = (Math.abs(x) / 2 ** e - 1) * 1024;
    assert.ok(Number.isInteger(m) && e >= -14 && e <= 15, `test scale ${x} must be exact in f16`);
    return (x < 0 ? 0x8000 : 0) | ((e + 15) << 10) | m;
  });
  return t('F16', shape, out);
}

/** E4M3FN decode from the bit fields (formats.md §6). */
function e4m3(code: number): number {
  const s = code & 0x80 ? -1 : 1;
  const e = (code >> 3) & 0xf;
  const m = code & 7;
  return e === 0 ? s * 2 ** -6 * (m / 8) : s * 2 ** (e - 7) * (1 + m / 8);
}
const E2M1 = [0, 0.5, 1, 1.5, 2, 3, 4, 6];
const e2m1 = (code: number) => (code & 8 ? -1 : 1) * E2M1[code & 7];

/** Values laid into 32-bit words, `bits` each, value k at word k / (32/bits), bits (k % per)·bits. */
function packSequence(values: ArrayLike<number>, bits: number): number[] {
  const per = 32 / bits;
  const words = new Array(Math.ceil(values.length / per)).fill(0);
  for (let k = 0; k < values.length; k++) words[Math.floor(k / per)] += values[k] * 2 ** (bits * (k % per));
  return words;
}

/** Pack a [r, c] matrix along its last dim, row by row. */
function packRows(m: ArrayLike<number>, r: number, c: number, bits: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < r; i++) out.push(...packSequence(Array.from({ length: c }, (_, j) => m[i * c + j]), bits));
  return out;
}

/** Pack a [r, c] matrix along its FIRST dim: words [ceil(r·bits/32), c]. */
function packCols(m: ArrayLike<number>, r: number, c: number, bits: number): number[] {
  const perCol = Array.from({ length: c }, (_, j) => packSequence(Array.from({ length: r }, (_, i) => m[i * c + j]), bits));
  const wordsPerCol = perCol[0].length;
  const out: number[] = [];
  for (let w = 0; w < wordsPerCol; w++) for (let j = 0; j < c; j++) out.push(perCol[j][w]);
  return out;
}

const transpose = (m: ArrayLike<number>, r: number, c: number) => Array.from({ length: r * c }, (_, k) => m[(k % r) * c + Math.floor(k / r)]);

// ---------------------------------------------------------------------------------------------
// Known integer weights: codes, scales, zeros, optional act-order groups, and what they mean.

interface IntCase {
  rows: number;
  cols: number;
  groupSize: number;
  numGroups: number;
  /** Unsigned codes u ∈ [0, 2^bits), [rows, cols]. */
  u: number[];
  /** [rows, numGroups]; values exact in f16 and bf16. */
  scales: number[];
  /** Unsigned zero points [rows, numGroups]. */
  zeros: number[];
  gIdx?: number[];
  intended: Float32Array;
}

function intCase(rng: Rng, rows: number, cols: number, bits: number, groupSize: number, opts: { symmetric?: boolean; actOrder?: boolean; zeroRange?: [number, number] } = {}): IntCase {
  const gs = groupSize === -1 ? cols : groupSize;
  const numGroups = Math.ceil(cols / gs);
  const levels = 2 ** bits;
  const int = (n: number) => Math.floor(rng.next() * n);
  const u = Array.from({ length: rows * cols }, () => int(levels));
  const scales = Array.from({ length: rows * numGroups }, () => (1 + int(64)) / 256);
  const [zlo, zhi] = opts.zeroRange ?? [0, levels - 1];
  const zeros = Array.from({ length: rows * numGroups }, () => (opts.symmetric ? levels / 2 : zlo + int(zhi - zlo + 1)));
  let gIdx: number[] | undefined;
  if (opts.actOrder) {
    const perm = Array.from({ length: cols }, (_, i) => i);
    for (let i = cols - 1; i > 0; i--) {
      const j = int(i + 1);
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    gIdx = new Array(cols);
    perm.forEach((col, pos) => (gIdx![col] = Math.floor(pos / gs)));
  }
  const intended = new Float32Array(rows * cols);
  for (let o = 0; o < rows; o++) {
    for (let i = 0; i < cols; i++) {
      const g = o * numGroups + (gIdx ? gIdx[i] : Math.floor(i / gs));
      intended[o * cols + i] = (u[o * cols + i] - zeros[g]) * scales[g];
    }
  }
  return { rows, cols, groupSize: gs, numGroups, u, scales, zeros, gIdx, intended };
}

// ---------------------------------------------------------------------------------------------
// Checkpoint assembly: every decoder Linear replaced by an encoder's tensors, the rest random float.

type Encoded = { tensors: Record<string, HostTensor>; intended: Float32Array } | undefined;
type Encoder = (module: string, rows: number, cols: number, rng: Rng) => Encoded;

const CFG: TinyConfig = { ...TINY_LLAMA };
const LINEARS: [string, (c: TinyConfig) => [number, number]][] = [
  ['self_attn.q_proj', (c) => [c.num_attention_heads * 8, c.hidden_size]],
  ['self_attn.k_proj', (c) => [c.num_key_value_heads * 8, c.hidden_size]],
  ['self_attn.v_proj', (c) => [c.num_key_value_heads * 8, c.hidden_size]],
  ['self_attn.o_proj', (c) => [c.hidden_size, c.num_attention_heads * 8]],
  ['mlp.gate_proj', (c) => [c.intermediate_size, c.hidden_size]],
  ['mlp.up_proj', (c) => [c.intermediate_size, c.hidden_size]],
  ['mlp.down_proj', (c) => [c.hidden_size, c.intermediate_size]],
];

interface Built {
  dir: string;
  /** The same model with every quantized Linear stored as its intended float32 weight. */
  floatDir: string;
  intended: Map<string, Float32Array>;
}

function writeDir(cfg: object, tensors: Record<string, HostTensor>, files: Record<string, unknown> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'tachyon-qckpt-'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg, null, 2));
  writeFileSync(join(dir, 'model.safetensors'), encodeSafetensors(tensors, { format: 'pt' }));
  for (const [f, v] of Object.entries(files)) writeFileSync(join(dir, f), JSON.stringify(v, null, 2));
  return dir;
}

function build(encode: Encoder, quantizationConfig?: object, files: Record<string, unknown> = {}, opts: { lmHead?: boolean; seed?: number } = {}): Built {
  const rng = new Rng(opts.seed ?? 7);
  const base = tinyTensors(CFG, 3);
  const quantized: Record<string, HostTensor> = { ...base };
  const floats: Record<string, HostTensor> = { ...base };
  const intended = new Map<string, Float32Array>();
  const modules: [string, number, number][] = [];
  for (let l = 0; l < CFG.num_hidden_layers; l++) for (const [m, shape] of LINEARS) modules.push([`model.layers.${l}.${m}`, ...shape(CFG)]);
  if (opts.lmHead) modules.push(['lm_head', CFG.vocab_size, CFG.hidden_size]);
  for (const [module, rows, cols] of modules) {
    const e = encode(module, rows, cols, rng);
    if (!e) continue;
    delete quantized[`${module}.weight`];
    Object.assign(quantized, e.tensors);
    floats[`${module}.weight`] = f32([rows, cols], e.intended);
    intended.set(module, e.intended);
  }
  const cfg = quantizationConfig ? { ...CFG, quantization_config: quantizationConfig } : CFG;
  return { dir: writeDir(cfg, quantized, files), floatDir: writeDir(CFG, floats), intended };
}

function loadWeights(dir: string, backend = new CpuBackend(), quantization?: 'fp8'): ModelWeights {
  const config = loadModelConfig(dir);
  const ckpt = SafetensorsCheckpoint.open(dir);
  try {
    return loadModelWeights(ckpt, config, backend, { quantization });
  } finally {
    ckpt.close();
  }
}

const KEYS: Record<string, keyof ModelWeights['layers'][number]> = {
  'self_attn.q_proj': 'q', 'self_attn.k_proj': 'k', 'self_attn.v_proj': 'v', 'self_attn.o_proj': 'o',
  'mlp.gate_proj': 'gate', 'mlp.up_proj': 'up', 'mlp.down_proj': 'down',
};

function weightOf(w: ModelWeights, module: string) {
  if (module === 'lm_head') return w.lmHead;
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(module)!;
  return w.layers[Number(m[1])][KEYS[m[2]]]!;
}

/** Loads `b.dir` and checks every quantized module's format and every element (`relTol` 0 = exact). */
function checkLoaded(b: Built, formats: Record<string, string> | string, relTol = 0): ModelWeights {
  const backend = new CpuBackend();
  const w = loadWeights(b.dir, backend);
  assert.ok(w.checkpointQuantization, 'a pre-quantized checkpoint is reported as one');
  for (const [module, expected] of b.intended) {
    const wt = weightOf(w, module);
    const fmt = typeof formats === 'string' ? formats : (formats[module.replace(/^model\.layers\.\d+\./, '')] ?? formats['*']);
    assert.equal(wt.format, fmt, `${module} format`);
    const got = backend.weightToHost(wt);
    assert.equal(got.length, expected.length);
    for (let i = 0; i < got.length; i++) {
      const ok = relTol === 0 ? Object.is(got[i], expected[i]) || got[i] === expected[i] : Math.abs(got[i] - expected[i]) <= relTol * Math.abs(expected[i]);
      if (!ok) assert.fail(`${module}[${Math.floor(i / (got.length / wt.shape[0]))}, ${i % wt.shape[1]}]: got ${got[i]}, expected ${expected[i]}`);
    }
  }
  return w;
}

/** Logits of the quantized checkpoint vs the float checkpoint holding the intended weights. */
function checkEndToEnd(b: Built, tol = 1e-5): void {
  const tokens = [3, 17, 29, 40, 8, 61, 5, 22];
  const run = (dir: string) => {
    const backend = new CpuBackend();
    const model = new LlamaModel(loadModelConfig(dir), loadWeights(dir, backend), backend);
    return new ModelRunner(model).step([{ seq: 0, start: 0, tokens }])[0];
  };
  const q = run(b.dir);
  const f = run(b.floatDir);
  assert.equal(q.length, f.length);
  let maxDiff = 0;
  for (let i = 0; i < q.length; i++) {
    assert.ok(Number.isFinite(q[i]), `logit ${i} is finite`);
    maxDiff = Math.max(maxDiff, Math.abs(q[i] - f[i]));
  }
  assert.ok(maxDiff <= tol, `logits differ from the float model of the same weights by ${maxDiff}`);
}

const throwsLoad = (fn: () => unknown, pattern: RegExp) =>
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ModelLoadError, `expected ModelLoadError, got ${err}`);
    assert.match(err.message, pattern);
    return true;
  });

// ---------------------------------------------------------------------------------------------
// compressed-tensors

const ctArgs = (a: object) => ({ num_bits: 4, type: 'int', symmetric: true, group_size: 16, strategy: 'group', dynamic: false, actorder: null, observer: 'minmax', ...a });
const ctConfig = (format: string, groups: Record<string, object>, ignore: string[] = ['lm_head']) => ({
  quant_method: 'compressed-tensors',
  format,
  quantization_status: 'compressed',
  config_groups: groups,
  ignore,
  kv_cache_scheme: null,
  version: '0.12.2',
});

/** pack-quantized: codes q+offset packed LSB-first along the input dim; zero points along the output dim. */
function ctPacked(bits: number, groupSize: number, opts: { symmetric?: boolean; actOrder?: boolean; zeroPoints?: 'packed' | 'i8'; scaleDtype?: 'bf16' | 'f32' } = {}): Encoder {
  return (module, rows, cols, rng) => {
    const c = intCase(rng, rows, cols, bits, groupSize, { symmetric: opts.symmetric ?? true, actOrder: opts.actOrder });
    const scaleShape = groupSize === -1 ? [rows, 1] : [rows, c.numGroups];
    const tensors: Record<string, HostTensor> = {
      [`${module}.weight_packed`]: i32([rows, Math.ceil((cols * bits) / 32)], packRows(c.u, rows, cols, bits)),
      [`${module}.weight_scale`]: (opts.scaleDtype === 'f32' ? f32 : bf16)(scaleShape, c.scales),
      [`${module}.weight_shape`]: i64([rows, cols]),
    };
    if (opts.symmetric === false) {
      const half = 2 ** (bits - 1);
      tensors[`${module}.weight_zero_point`] =
        opts.zeroPoints === 'i8'
          ? t('I8', scaleShape, Int8Array.from(c.zeros, (z) => z - half))
          : i32([Math.ceil((rows * bits) / 32), c.numGroups], packCols(c.zeros, rows, c.numGroups, bits));
    }
    if (c.gIdx) tensors[`${module}.weight_g_idx`] = i32([cols], c.gIdx);
    return { tensors, intended: c.intended };
  };
}

describe('compressed-tensors checkpoints', () => {
  it('pack-quantized W4A16 (symmetric, group 16, bf16 scales) loads as canonical int4, exactly', () => {
    const b = build(ctPacked(4, 16), ctConfig('pack-quantized', { group_0: { targets: ['Linear'], weights: ctArgs({}), input_activations: null } }));
    const w = checkLoaded(b, 'int4');
    assert.match(w.checkpointQuantization!, /compressed-tensors pack-quantized/);
    assert.equal(w.lmHead.format, 'f32', 'lm_head is in the ignore list and stays as stored');
    checkEndToEnd(b);
  });

  it('pack-quantized W4A16_ASYM with act-order g_idx and zero points packed along the output dim', () => {
    const b = build(
      ctPacked(4, 16, { symmetric: false, actOrder: true }),
      ctConfig('pack-quantized', { group_0: { targets: ['Linear'], weights: ctArgs({ symmetric: false, actorder: 'group' }) } }),
    );
    checkLoaded(b, 'int4');
    checkEndToEnd(b);
  });

  it('older checkpoints with unpacked I8 zero points, channel strategy', () => {
    const b = build(
      ctPacked(4, -1, { symmetric: false, zeroPoints: 'i8', scaleDtype: 'f32' }),
      ctConfig('pack-quantized', { group_0: { targets: ['Linear'], weights: ctArgs({ symmetric: false, group_size: null, strategy: 'channel' }) } }),
    );
    checkLoaded(b, 'int4');
  });

  it('W8A16 per channel → canonical int8; W8A16 group 16 (the llm-compressor preset) → exact float32', () => {
    const channel = build(ctPacked(8, -1), ctConfig('pack-quantized', { group_0: { targets: ['Linear'], weights: ctArgs({ num_bits: 8, group_size: null, strategy: 'channel' }) } }));
    checkLoaded(channel, 'int8');
    checkEndToEnd(channel);
    const grouped = build(ctPacked(8, 16), ctConfig('pack-quantized', { group_0: { targets: ['Linear'], weights: ctArgs({ num_bits: 8 }) } }));
    checkLoaded(grouped, 'f32');
  });

  it('int-quantized: signed I8 codes', () => {
    const enc: Encoder = (module, rows, cols, rng) => {
      const c = intCase(rng, rows, cols, 8, -1, { symmetric: true });
      return {
        tensors: { [`${module}.weight`]: t('I8', [rows, cols], Int8Array.from(c.u, (x) => x - 128)), [`${module}.weight_scale`]: bf16([rows, 1], c.scales) },
        intended: c.intended,
      };
    };
    checkLoaded(build(enc, ctConfig('int-quantized', { group_0: { targets: ['Linear'], weights: ctArgs({ num_bits: 8, group_size: null, strategy: 'channel' }), input_activations: { num_bits: 8, type: 'int', strategy: 'token', dynamic: true } } })), 'int8');
  });

  const fp8Encoder = (strategy: 'channel' | 'tensor' | 'block'): Encoder => (module, rows, cols, rng) => {
    const codes = Uint8Array.from({ length: rows * cols }, () => {
      const c = Math.floor(rng.next() * 256);
      return (c & 0x7f) === 0x7f ? 0x3f : c; // no NaN codes
    });
    const nScales = strategy === 'channel' ? rows : strategy === 'tensor' ? 1 : Math.ceil(rows / 16) * Math.ceil(cols / 16);
    const scales = Array.from({ length: nScales }, () => (1 + Math.floor(rng.next() * 64)) / 4096);
    const scaleOf = (o: number, i: number) => (strategy === 'channel' ? scales[o] : strategy === 'tensor' ? scales[0] : scales[Math.floor(o / 16) * Math.ceil(cols / 16) + Math.floor(i / 16)]);
    const intended = Float32Array.from({ length: rows * cols }, (_, k) => e4m3(codes[k]) * scaleOf(Math.floor(k / cols), k % cols));
    const shape = strategy === 'channel' ? [rows, 1] : strategy === 'tensor' ? [1] : [Math.ceil(rows / 16), Math.ceil(cols / 16)];
    return { tensors: { [`${module}.weight`]: t('F8_E4M3', [rows, cols], codes), [`${module}.weight_scale`]: (strategy === 'tensor' ? f32 : bf16)(shape, scales) }, intended };
  };
  const fp8Args = (strategy: string, extra: object = {}) => ({ num_bits: 8, type: 'float', symmetric: true, group_size: null, strategy, dynamic: false, ...extra });

  it('float-quantized FP8: per channel (FP8_DYNAMIC, input scales ignored) and per tensor → canonical fp8; blocks → exact float32', () => {
    const dynamicInputs = { num_bits: 8, type: 'float', symmetric: true, strategy: 'token', dynamic: true };
    const channel = build(fp8Encoder('channel'), ctConfig('float-quantized', { group_0: { targets: ['Linear'], weights: fp8Args('channel'), input_activations: dynamicInputs } }));
    checkLoaded(channel, 'fp8');
    checkEndToEnd(channel);
    checkLoaded(build(fp8Encoder('tensor'), ctConfig('float-quantized', { group_0: { targets: ['Linear'], weights: fp8Args('tensor') } })), 'fp8');
    checkLoaded(build(fp8Encoder('block'), ctConfig('float-quantized', { group_0: { targets: ['Linear'], weights: fp8Args('block', { block_structure: [16, 16] }) } })), 'f32');
  });

  it('mixed-precision groups by regex target, and an ignored module stays float', () => {
    const int4 = ctPacked(4, 16);
    const fp8 = fp8Encoder('channel');
    const ignored = 'model.layers.1.mlp.down_proj';
    const b = build(
      (module, rows, cols, rng) => (module === ignored ? undefined : module.includes('self_attn') ? int4(module, rows, cols, rng) : fp8(module, rows, cols, rng)),
      ctConfig(
        'mixed-precision',
        {
          group_0: { targets: ['re:.*self_attn\\.(q|k|v|o)_proj$'], weights: ctArgs({}), format: 'pack-quantized' },
          group_1: { targets: ['Linear'], weights: fp8Args('channel'), format: 'float-quantized' },
        },
        ['lm_head', 're:.*layers\\.1\\.mlp\\.down_proj$'],
      ),
    );
    const w = checkLoaded(b, { 'self_attn.q_proj': 'int4', 'self_attn.k_proj': 'int4', 'self_attn.v_proj': 'int4', 'self_attn.o_proj': 'int4', '*': 'fp8' });
    assert.equal(w.layers[1].down.format, 'f32');
    assert.equal(w.layers[0].down.format, 'fp8');
    checkEndToEnd(b);
  });

  it('a quantized lm_head (not in ignore) loads quantized; embeddings stay as stored', () => {
    const b = build(ctPacked(4, 16), ctConfig('pack-quantized', { group_0: { targets: ['Linear'], weights: ctArgs({}) } }, []), {}, { lmHead: true });
    const w = checkLoaded(b, 'int4');
    assert.equal(w.lmHead.format, 'int4');
    assert.equal(w.embedTokens.format, 'f32');
    checkEndToEnd(b);
  });
});

// ---------------------------------------------------------------------------------------------
// NVFP4: compressed-tensors (weight_global_scale divides) vs ModelOpt (weight_scale_2 multiplies)

interface Nvfp4Case {
  packed: Uint8Array;
  blockScales: Uint8Array;
  intended: Float32Array;
}

function nvfp4Case(rng: Rng, rows: number, cols: number, multiplier: number): Nvfp4Case {
  const codes = Uint8Array.from({ length: rows * cols }, () => Math.floor(rng.next() * 16));
  // Block scales: positive E4M3 codes between 2^-3 and 2^5.
  const blockScales = Uint8Array.from({ length: (rows * cols) / 16 }, () => 0x20 + Math.floor(rng.next() * 64));
  const packed = new Uint8Array((rows * cols) / 2);
  for (let k = 0; k < packed.length; k++) packed[k] = codes[2 * k] | (codes[2 * k + 1] << 4); // even index low nibble
  const intended = Float32Array.from({ length: rows * cols }, (_, k) => e2m1(codes[k]) * e4m3(blockScales[Math.floor(k / 16)]) * multiplier);
  return { packed, blockScales, intended };
}

describe('NVFP4 checkpoints', () => {
  const multiplier = 2 ** -6; // a power of two: 1/multiplier is exact, so both conventions give exact values
  const ctNvfp4: Encoder = (module, rows, cols, rng) => {
    const c = nvfp4Case(rng, rows, cols, multiplier);
    return {
      tensors: {
        [`${module}.weight_packed`]: t('U8', [rows, cols / 2], c.packed),
        [`${module}.weight_scale`]: t('F8_E4M3', [rows, cols / 16], c.blockScales),
        [`${module}.weight_global_scale`]: f32([1], [1 / multiplier]),
      },
      intended: c.intended,
    };
  };
  const modeloptNvfp4 = (scale2: number): Encoder => (module, rows, cols, rng) => {
    const c = nvfp4Case(rng, rows, cols, scale2);
    return {
      tensors: {
        [`${module}.weight`]: t('U8', [rows, cols / 2], c.packed),
        [`${module}.weight_scale`]: t('F8_E4M3', [rows, cols / 16], c.blockScales),
        [`${module}.weight_scale_2`]: f32([], [scale2]),
        [`${module}.input_scale`]: f32([], [0.01]),
      },
      intended: c.intended,
    };
  };
  const nvfp4Args = { num_bits: 4, type: 'float', symmetric: true, group_size: 16, strategy: 'tensor_group', dynamic: false, scale_dtype: 'torch.float8_e4m3fn' };

  it('compressed-tensors nvfp4-pack-quantized: the stored global scale is inverted', () => {
    const b = build(ctNvfp4, ctConfig('nvfp4-pack-quantized', { group_0: { targets: ['Linear'], weights: nvfp4Args } }));
    checkLoaded(b, 'nvfp4');
    checkEndToEnd(b);
  });

  it('ModelOpt NVFP4 (config.json quant_method modelopt): weight_scale_2 is used as is', () => {
    const b = build(modeloptNvfp4(multiplier), { quant_method: 'modelopt', quant_algo: 'NVFP4', group_size: 16, ignore: ['lm_head'] });
    checkLoaded(b, 'nvfp4');
    checkEndToEnd(b);
  });

  it('the same codes and block scales dequantize identically under both conventions, also for a non-power-of-two global scale', () => {
    const g = 0.0123;
    const fromCt = build((m, r, c, rng) => {
      const e = modeloptNvfp4(g)(m, r, c, rng)!;
      return {
        intended: e.intended,
        tensors: {
          [`${m}.weight_packed`]: e.tensors[`${m}.weight`],
          [`${m}.weight_scale`]: e.tensors[`${m}.weight_scale`],
          [`${m}.weight_global_scale`]: f32([1], [1 / g]),
        },
      };
    }, ctConfig('nvfp4-pack-quantized', { group_0: { targets: ['Linear'], weights: nvfp4Args } }));
    const fromModelOpt = build(modeloptNvfp4(g), undefined, { 'hf_quant_config.json': { producer: { name: 'modelopt', version: '0.29' }, quantization: { quant_algo: 'NVFP4', group_size: 16, kv_cache_quant_algo: null, exclude_modules: ['lm_head'] } } });
    // float32 rounding of 1/(1/g) costs at most an ulp or two; reading the CT scale as a multiplier would be off by 1/g² ≈ 6600×.
    checkLoaded(fromCt, 'nvfp4', 1e-6);
    checkLoaded(fromModelOpt, 'nvfp4', 1e-6);
  });
});

// ---------------------------------------------------------------------------------------------
// ModelOpt FP8 and quant_method "fp8"

describe('ModelOpt FP8 and quant_method fp8 checkpoints', () => {
  const modeloptFp8 = (perChannel: boolean): Encoder => (module, rows, cols, rng) => {
    const codes = Uint8Array.from({ length: rows * cols }, () => Math.floor(rng.next() * 0x7f) | (rng.next() < 0.5 ? 0x80 : 0));
    const scales = Array.from({ length: perChannel ? rows : 1 }, () => (1 + Math.floor(rng.next() * 100)) / 1000);
    const intended = Float32Array.from({ length: rows * cols }, (_, k) => e4m3(codes[k]) * Math.fround(scales[perChannel ? Math.floor(k / cols) : 0]));
    return {
      tensors: {
        [`${module}.weight`]: t('F8_E4M3', [rows, cols], codes),
        [`${module}.weight_scale`]: f32(perChannel ? [rows] : [], scales),
        ...(perChannel ? {} : { [`${module}.input_scale`]: f32([], [0.5]) }),
      },
      intended,
    };
  };

  it('hf_quant_config.json FP8 (per-tensor scalar scales) with fnmatch exclude_modules', () => {
    const excluded = (m: string) => m.startsWith('model.layers.0.self_attn');
    const enc = modeloptFp8(false);
    const b = build((m, r, c, rng) => (excluded(m) ? undefined : enc(m, r, c, rng)), undefined, {
      'hf_quant_config.json': { producer: { name: 'modelopt', version: '0.27.1' }, quantization: { quant_algo: 'FP8', kv_cache_quant_algo: 'FP8', exclude_modules: ['lm_head', 'model.layers.0.self_attn*'] } },
    });
    const w = checkLoaded(b, 'fp8');
    assert.equal(w.layers[0].q.format, 'f32');
    assert.equal(w.layers[0].o.format, 'f32');
    assert.equal(w.layers[0].gate.format, 'fp8');
    assert.equal(w.checkpointQuantization, 'ModelOpt FP8');
    checkEndToEnd(b);
  });

  it('FP8_PER_CHANNEL_PER_TOKEN (scale per output row)', () => {
    checkLoaded(build(modeloptFp8(true), { quant_method: 'modelopt', quant_algo: 'FP8_PER_CHANNEL_PER_TOKEN', ignore: ['lm_head'] }), 'fp8');
  });

  it('quant_method fp8 with 16×16 weight blocks (weight_scale_inv multiplies) → exact float32', () => {
    const enc: Encoder = (module, rows, cols, rng) => {
      const codes = Uint8Array.from({ length: rows * cols }, () => Math.floor(rng.next() * 0x7e));
      const bc = Math.ceil(cols / 16);
      const scales = Array.from({ length: Math.ceil(rows / 16) * bc }, () => (1 + Math.floor(rng.next() * 64)) / 512);
      const intended = Float32Array.from({ length: rows * cols }, (_, k) => e4m3(codes[k]) * scales[Math.floor(Math.floor(k / cols) / 16) * bc + Math.floor((k % cols) / 16)]);
      return { tensors: { [`${module}.weight`]: t('F8_E4M3', [rows, cols], codes), [`${module}.weight_scale_inv`]: f32([Math.ceil(rows / 16), bc], scales) }, intended };
    };
    const b = build(enc, { quant_method: 'fp8', activation_scheme: 'dynamic', weight_block_size: [16, 16] });
    checkLoaded(b, 'f32');
    checkEndToEnd(b);
  });
});

// ---------------------------------------------------------------------------------------------
// GPTQ: qweight [in/8, out] packed along the input dim, qzeros [groups, out/8], scales [groups, out]

function gptqEncoder(bits: number, groupSize: number, opts: { format: 'v1' | 'v2'; symmetric?: boolean; actOrder?: boolean; zeroRange?: [number, number] }): Encoder {
  return (module, rows, cols, rng) => {
    const c = intCase(rng, rows, cols, bits, groupSize, { symmetric: opts.symmetric, actOrder: opts.actOrder, zeroRange: opts.zeroRange });
    const storedZeros = c.zeros.map((z) => (opts.format === 'v1' ? z - 1 : z)); // v1 stores zero − 1
    assert.ok(storedZeros.every((z) => z >= 0 && z < 2 ** bits));
    const qweight = packCols(transpose(c.u, rows, cols), cols, rows, bits); // u as [in, out], packed along in
    const qzeros = packRows(transpose(storedZeros, rows, c.numGroups), c.numGroups, rows, bits); // [groups, out], along out
    const gIdx = c.gIdx ?? Array.from({ length: cols }, (_, i) => Math.floor(i / c.groupSize));
    return {
      tensors: {
        [`${module}.qweight`]: i32([(cols * bits) / 32, rows], qweight),
        [`${module}.qzeros`]: i32([c.numGroups, (rows * bits) / 32], qzeros),
        [`${module}.scales`]: f16([c.numGroups, rows], transpose(c.scales, rows, c.numGroups)),
        [`${module}.g_idx`]: i32([cols], gIdx),
      },
      intended: c.intended,
    };
  };
}

const gptqConfig = (a: object) => ({ quant_method: 'gptq', bits: 4, group_size: 16, desc_act: false, sym: true, damp_percent: 0.01, ...a });

describe('GPTQ checkpoints', () => {
  it('v1 symmetric: stored zeros 7 (0x77777777 words) mean zero point 8', () => {
    const b = build(gptqEncoder(4, 16, { format: 'v1', symmetric: true }), gptqConfig({}));
    const ckpt = SafetensorsCheckpoint.open(b.dir);
    const qz = new Uint32Array(ckpt.read('model.layers.0.self_attn.q_proj.qzeros').bytes.buffer);
    ckpt.close();
    assert.ok(qz.every((w) => w === 0x77777777));
    checkLoaded(b, 'int4');
    checkEndToEnd(b);
  });

  it('v1 asymmetric with desc_act (g_idx) vs gptq_v2: the +1 zero-point quirk applies to v1 only', () => {
    // Zeros 1..15 so that v1 can store them (zero − 1 ≥ 0).
    const v1 = build(gptqEncoder(4, 16, { format: 'v1', symmetric: false, actOrder: true, zeroRange: [1, 15] }), gptqConfig({ sym: false, desc_act: true }));
    checkLoaded(v1, 'int4');
    checkEndToEnd(v1);
    const v2 = build(gptqEncoder(4, 16, { format: 'v2', symmetric: false, actOrder: true, zeroRange: [0, 15] }), gptqConfig({ sym: false, desc_act: true, checkpoint_format: 'gptq_v2' }));
    checkLoaded(v2, 'int4');
    checkEndToEnd(v2);
    // The same v2 tensors read as v1 would shift every zero by one: the reader must not do that.
    const misread = loadWeights(build(gptqEncoder(4, 16, { format: 'v2', symmetric: false, zeroRange: [0, 14] }), gptqConfig({ sym: false })).dir);
    const intended = build(gptqEncoder(4, 16, { format: 'v2', symmetric: false, zeroRange: [0, 14] }), gptqConfig({ sym: false, checkpoint_format: 'gptq_v2' }));
    const backend = new CpuBackend();
    const a = backend.weightToHost(misread.layers[0].q);
    const e = intended.intended.get('model.layers.0.self_attn.q_proj')!;
    assert.ok(a.some((x, i) => x !== e[i]), 'v1 and v2 readings of the same tensors differ');
  });

  it('quantize_config.json (AutoGPTQ) and a v1 zero point of 16 (stored 15) read exactly as float32', () => {
    const b = build(gptqEncoder(4, 32, { format: 'v1', symmetric: false, zeroRange: [16, 16] }), undefined, { 'quantize_config.json': gptqConfig({ group_size: 32, sym: false }) });
    checkLoaded(b, 'f32');
  });

  it('8-bit, one group per row, symmetric → canonical int8; 8-bit groups → float32', () => {
    checkLoaded(build(gptqEncoder(8, -1, { format: 'v2', symmetric: true }), gptqConfig({ bits: 8, group_size: -1, checkpoint_format: 'gptq_v2' })), 'int8');
    checkLoaded(build(gptqEncoder(8, 16, { format: 'v1', symmetric: true }), gptqConfig({ bits: 8 })), 'f32');
  });
});

// ---------------------------------------------------------------------------------------------
// AWQ gemm: qweight [in, out/8] with the interleaved nibble order [0, 2, 4, 6, 1, 3, 5, 7]

describe('AWQ checkpoints', () => {
  const ORDER = [0, 2, 4, 6, 1, 3, 5, 7]; // slot k holds column 8c + ORDER[k]
  /** [n, out] → words [n, out/8], AutoAWQ's pack loop. */
  const awqPack = (m: ArrayLike<number>, n: number, out: number) => {
    const words: number[] = [];
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < out / 8; c++) {
        let w = 0;
        for (let k = 0; k < 8; k++) w += m[r * out + 8 * c + ORDER[k]] * 2 ** (4 * k);
        words.push(w);
      }
    }
    return words;
  };
  const awq: Encoder = (module, rows, cols, rng) => {
    const c = intCase(rng, rows, cols, 4, 16, { symmetric: false });
    return {
      tensors: {
        [`${module}.qweight`]: i32([cols, rows / 8], awqPack(transpose(c.u, rows, cols), cols, rows)),
        [`${module}.qzeros`]: i32([c.numGroups, rows / 8], awqPack(transpose(c.zeros, rows, c.numGroups), c.numGroups, rows)),
        [`${module}.scales`]: f16([c.numGroups, rows], transpose(c.scales, rows, c.numGroups)),
      },
      intended: c.intended,
    };
  };

  it('gemm layout: interleaved order, zeros without an offset, scales [groups, out]', () => {
    const b = build(awq, { quant_method: 'awq', bits: 4, group_size: 16, zero_point: true, version: 'gemm', modules_to_not_convert: null });
    const w = checkLoaded(b, 'int4');
    assert.equal(w.checkpointQuantization, 'AWQ int4 (group 16, gemm)');
    checkEndToEnd(b);
  });

  it('AutoAWQ quant_config.json (w_bit, q_group_size)', () => {
    checkLoaded(build(awq, undefined, { 'quant_config.json': { zero_point: true, q_group_size: 16, w_bit: 4, version: 'GEMM' } }), 'int4');
  });
});

// ---------------------------------------------------------------------------------------------
// What is not supported is named.

describe('unsupported quantized checkpoints are named', () => {
  const load = (b: Built) => () => loadWeights(b.dir);
  const none: Encoder = () => undefined;

  it('unknown quant_method', () => {
    throwsLoad(load(build(none, { quant_method: 'bitsandbytes', load_in_4bit: true })), /quantization_config\.quant_method 'bitsandbytes' is not supported; supported: compressed-tensors, gptq, awq, modelopt, fp8/);
  });

  it('compressed-tensors formats and schemes', () => {
    throwsLoad(load(build(none, ctConfig('marlin-24', { group_0: { targets: ['Linear'], weights: ctArgs({}) } }))), /compressed-tensors format 'marlin-24' is not supported; supported: pack-quantized/);
    throwsLoad(load(build(none, ctConfig('pack-quantized', { group_0: { targets: ['Linear'], weights: ctArgs({ num_bits: 2 }) } }))), /2-bit integer weights are not supported; supported: 4, 8/);
    throwsLoad(load(build(none, ctConfig('mxfp4-pack-quantized', { group_0: { targets: ['Linear'], weights: ctArgs({ type: 'float', group_size: 32 }) } }))), /format 'mxfp4-pack-quantized' is not supported/);
    throwsLoad(load(build(none, { ...ctConfig('pack-quantized', {}), sparsity_config: { format: 'sparse-24-bitmask' } })), /sparse format 'sparse-24-bitmask' is not supported/);
  });

  it('a module stored quantized that no config group targets', () => {
    const b = build(ctPacked(4, 16), ctConfig('pack-quantized', { group_0: { targets: ['re:.*mlp\\..*'], weights: ctArgs({}) } }));
    throwsLoad(load(b), /'model\.layers\.0\.self_attn\.q_proj' is stored quantized but no quantization_config\.config_groups entry targets it/);
  });

  it('GPTQ bits, formats; AWQ versions; ModelOpt algorithms', () => {
    throwsLoad(load(build(none, gptqConfig({ bits: 3 }))), /GPTQ bits 3 is not supported; supported: 4, 8/);
    throwsLoad(load(build(none, gptqConfig({ checkpoint_format: 'marlin' }))), /GPTQ checkpoint_format 'marlin' is not supported; supported: gptq, gptq_v2/);
    throwsLoad(load(build(none, { quant_method: 'awq', bits: 4, group_size: 128, version: 'gemv' })), /AWQ version 'gemv' is not supported; supported: gemm/);
    throwsLoad(load(build(none, { quant_method: 'modelopt', quant_algo: 'NVFP4_AWQ' })), /ModelOpt quant_algo 'NVFP4_AWQ' is not supported; supported: FP8, FP8_PER_CHANNEL_PER_TOKEN/);
  });

  it('a missing or misshapen quantized tensor is named', () => {
    const drop: Encoder = (m, r, c, rng) => {
      const e = gptqEncoder(4, 16, { format: 'v1', symmetric: true })(m, r, c, rng)!;
      if (m === 'model.layers.1.mlp.up_proj') delete e.tensors[`${m}.scales`];
      return e;
    };
    throwsLoad(load(build(drop, gptqConfig({}))), /checkpoint is missing tensor 'model\.layers\.1\.mlp\.up_proj\.scales' \(model\.layers\.1\.mlp\.up_proj: GPTQ int4\)/);
    const wrongGroup = build(gptqEncoder(4, 16, { format: 'v1', symmetric: true }), gptqConfig({ group_size: 32 }));
    throwsLoad(load(wrongGroup), /tensor 'model\.layers\.0\.self_attn\.q_proj\.qzeros' has shape \[2, 4\]; .* expects \[1, 4\]/);
  });

  it('online quantization of an already quantized checkpoint is refused', () => {
    const b = build(ctPacked(4, 16), ctConfig('pack-quantized', { group_0: { targets: ['Linear'], weights: ctArgs({}) } }));
    assert.throws(() => loadWeights(b.dir, new CpuBackend(), 'fp8'), (e: unknown) => e instanceof InvalidRequestError && /is already quantized \(compressed-tensors pack-quantized\); online quantization 'fp8' applies to float checkpoints only/.test(e.message));
  });
});
