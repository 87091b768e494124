// The GPU KV-cache sizing arithmetic (src/engine/kv-budget.ts) on made-up device numbers: the
// --gpu-memory-utilization formula, rounding to blocks, the cap, the errors, the activation estimate
// and the automatic --max-num-batched-tokens. Pure functions: no GPU needed.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkGpuMemoryUtilization, fitBatchedTokens, kvCacheBudget, kvCacheLine, SAMPLE_PRE_BYTES, stepActivationBytes, type KvBudgetInput } from '../src/engine/kv-budget.js';
import { kvBytesPerToken } from '../src/engine/kv-cache.js';
import { CapacityError, InvalidRequestError } from '../src/errors.js';
import { parseModelConfig } from '../src/model/config.js';
import { weightBytes, WORKSPACE_BYTES } from '../src/plan/memory.js';
import { findPreset } from '../src/plan/presets.js';

const GiB = 2 ** 30;
const MiB = 2 ** 20;
const preset = (name: string) => parseModelConfig(findPreset(name)!, name);
const llama8b = preset('llama-3.1-8b');
const llama70b = preset('llama-3.3-70b');

/** An 80 GiB GPU with 20 GiB in use after the weights, Llama-3.1-8B's float32 KV (256 KiB per token). */
const base: KvBudgetInput = {
  totalBytes: 80 * GiB,
  usedBytes: 20 * GiB,
  gpuMemoryUtilization: 0.9,
  activationBytes: 1 * GiB,
  kvBytesPerToken: kvBytesPerToken(llama8b, 'float32'),
  kvDtype: 'float32',
  blockSize: 16,
  maxModelLen: 4096,
  maxNumSeqs: 1000,
};

describe('KV cache budget', () => {
  it('gives the cache F · total − used − activations − workspace, in whole blocks', () => {
    assert.equal(base.kvBytesPerToken, 2 * 32 * 8 * 128 * 4);
    const b = kvCacheBudget(base);
    // 72 GiB − 20 GiB − 1 GiB − 288 MiB = 51936 MiB; a block of 16 tokens takes 4 MiB: 12984 blocks.
    assert.equal(WORKSPACE_BYTES, 288 * MiB);
    assert.equal(b.tokens, 12984 * 16);
    assert.equal(b.bytes, b.tokens * base.kvBytesPerToken);
    assert.equal(b.reserveBytes, 1 * GiB + 288 * MiB);
    assert.equal(b.availableBytes, 51936 * MiB);
    assert.equal(b.maxConcurrency, (12984 * 16) / 4096);
    assert.equal(b.capped, false);
    assert.equal(kvCacheLine(b, 4096, 1000), 'KV cache: 207744 tokens (50.72 GiB, float32), max concurrency 50.72× at max_model_len 4096');
  });

  it('a bf16 cache (half the bytes a token) holds twice the tokens in the same memory, and the line says bf16', () => {
    const b = kvCacheBudget({ ...base, kvBytesPerToken: kvBytesPerToken(llama8b, 'bf16'), kvDtype: 'bf16' });
    assert.equal(b.tokens, 2 * 12984 * 16);
    assert.equal(kvCacheLine(b, 4096, 1000), 'KV cache: 415488 tokens (50.72 GiB, bf16), max concurrency 101.44× at max_model_len 4096');
  });

  it('rounds down to whole blocks', () => {
    const blockBytes = base.kvBytesPerToken * 16;
    // Memory for 10 blocks and all but one byte of an eleventh.
    const usedBytes = 0.9 * base.totalBytes - base.activationBytes - WORKSPACE_BYTES - (11 * blockBytes - 1);
    const b = kvCacheBudget({ ...base, usedBytes, maxModelLen: 64 });
    assert.equal(b.tokens, 160);
    assert.equal(kvCacheBudget({ ...base, usedBytes: usedBytes - 1, maxModelLen: 64 }).tokens, 176);
  });

  it('holds at most max_num_seqs sequences of max_model_len (rounded up to blocks)', () => {
    const b = kvCacheBudget({ ...base, maxNumSeqs: 8, maxModelLen: 4000 });
    assert.equal(b.tokens, 8 * 4000);
    assert.equal(b.capped, true);
    assert.match(kvCacheLine(b, 4000, 8), /^KV cache: 32000 tokens \(7\.81 GiB, float32\), max concurrency 8\.00× at max_model_len 4000 \(capped at max_num_seqs 8 × max_model_len; 50\.72 GiB was available\)$/);
    assert.equal(kvCacheBudget({ ...base, maxNumSeqs: 2, maxModelLen: 4001 }).tokens, 2 * 4016);
  });

  it('refuses a cache that cannot hold one max_model_len sequence, naming the numbers and both fixes', () => {
    // Llama-3.1's default context: 131072 tokens need 32 GiB of float32 KV, more than the 30.72 GiB left.
    const err = catchErr(() => kvCacheBudget({ ...base, usedBytes: 40 * GiB, maxModelLen: 131072 }));
    assert.ok(err instanceof CapacityError, String(err));
    assert.match(err.message, /cannot hold one sequence of max_model_len 131072: that needs 32\.00 GiB \(262144 bytes per token, float32\), but only 30\.72 GiB is left/);
    assert.match(err.message, /--gpu-memory-utilization 0\.9 allows 72\.00 GiB of the GPU's 80\.00 GiB; 40\.00 GiB is in use after the weights and 1\.28 GiB is kept/);
    assert.match(err.message, /lower --max-model-len \(at most 125824 tokens fit\) or raise --gpu-memory-utilization$/);
    // Not one block.
    const none = catchErr(() => kvCacheBudget({ ...base, usedBytes: 72 * GiB - base.activationBytes - WORKSPACE_BYTES - 1000 }));
    assert.match(none.message, /lower --max-model-len \(not one KV block fits\)/);
  });

  it('says so when the weights alone take all the allowed memory', () => {
    const err = catchErr(() => kvCacheBudget({ ...base, usedBytes: 75 * GiB }));
    assert.ok(err instanceof CapacityError);
    assert.match(err.message, /^no memory is left for the KV cache: --gpu-memory-utilization 0\.9 allows 72\.00 GiB of the GPU's 80\.00 GiB; 75\.00 GiB is in use/);
    assert.match(err.message, /raise --gpu-memory-utilization, lower --max-num-batched-tokens, or use a smaller or quantized model/);
  });

  it('accepts a utilization in (0, 1] only', () => {
    assert.equal(checkGpuMemoryUtilization(1), 1);
    assert.equal(kvCacheBudget({ ...base, gpuMemoryUtilization: 1 }).tokens, Math.floor((80 * GiB - 21 * GiB - WORKSPACE_BYTES) / (4 * MiB)) * 16);
    for (const bad of [0, -0.5, 1.01, Number.NaN]) {
      assert.throws(() => kvCacheBudget({ ...base, gpuMemoryUtilization: bad }), (e: Error) => e instanceof InvalidRequestError && /gpu_memory_utilization must be in \(0, 1\]/.test(e.message));
    }
  });
});

describe('one step\'s memory on the CUDA backend', () => {
  it('counts one layer\'s float32 tensors (the forward releases each after use) and, from 4 tokens (16-bit weights on cuBLASLt), the widest half-precision input copy, each rounded up by at most a quarter', () => {
    const c = llama8b;
    const q = c.numHeads * c.headDim;
    const kv = c.numKvHeads * c.headDim;
    const h = c.hiddenSize;
    const ff = c.intermediateSize;
    for (const tokens of [1, 3, 4, 8, 9, 256, 2048]) {
      const rows = Math.min(tokens, 64);
      const gemm = tokens > 8;
      // Decode steps of 4-8 tokens take cuBLASLt where it is present, else the GEMVs: both counted.
      const decodeGemm = tokens >= 4 && tokens <= 8;
      // A GEMM step's MLP keeps gate, up and their product in bf16 (with its input's bf16 copy); a
      // decode step counts them in float32.
      const layerFloats = 4 * h + 2 * q + 2 * kv + (gemm ? 0 : 3 * ff);
      const mlpHalf = gemm || decodeGemm ? tokens * 2 * (3 * ff + h) : 0;
      // One bf16 copy alive at a time: the widest input of q/k/v and o, and the lm_head's.
      const copies = gemm || decodeGemm ? tokens * 2 * Math.max(h, q) + rows * h * 2 : 0;
      // Each logit row also has the sampling kernel's scratch (SAMPLE_PRE_BYTES).
      const raw = 4 * (tokens * (2 * h + layerFloats) + rows * (2 * h + c.vocabSize) + tokens * (4 + c.headDim)) + rows * SAMPLE_PRE_BYTES + mlpHalf + copies;
      const buffers = 2 + (gemm ? 8 + 4 + 1 : decodeGemm ? 11 + 4 + 1 : 11) + 4 + 7 + (gemm || decodeGemm ? 1 : 0);
      const est = stepActivationBytes(c, tokens, 64);
      assert.ok(est >= raw, `${tokens} tokens: ${est} < ${raw}`);
      assert.ok(est <= raw * 1.25 + buffers * 1024, `${tokens} tokens: ${est} is more than a quarter over ${raw}`);
    }
    // Llama-3.1-8B at the default 2048 tokens: about 0.5 GiB; a 70B model's 2048-token step under 2 GiB.
    const at2048 = stepActivationBytes(c, 2048, 64);
    assert.ok(at2048 > 0.3 * GiB && at2048 < 1 * GiB, `${at2048 / GiB} GiB`);
    assert.ok(stepActivationBytes(llama70b, 2048, 64) < 2 * GiB);
    // No logits rows, no logits; float32 weights take the float32 kernel, no copies.
    assert.ok(stepActivationBytes(c, 16, 0) < stepActivationBytes(c, 16, 1) - c.vocabSize * 4);
    assert.ok(stepActivationBytes(c, 16, 16, { linears: 'f32', lmHead: 'f32' }) < stepActivationBytes(c, 16, 16, { linears: 'f32', lmHead: 'bf16' }));
    // FP8 on its tensor cores: gate's and up's float32 GEMM outputs, more than the bf16 middle.
    assert.ok(stepActivationBytes(c, 2048, 1, { linears: 'fp8', lmHead: 'bf16' }) > stepActivationBytes(c, 2048, 1));
  });

  it('quantized linears cost no per-step weight copies (their bf16 scratch is allocated at load)', () => {
    const w4 = { linears: 'int4', lmHead: 'bf16' };
    for (const tokens of [1, 9, 2048]) assert.equal(stepActivationBytes(llama70b, tokens, 8, w4), stepActivationBytes(llama70b, tokens, 8));
    // At 4-8 tokens int4 stays on its GEMVs: no more than bf16 weights, which may take cuBLASLt.
    for (const tokens of [4, 8]) assert.ok(stepActivationBytes(llama70b, tokens, 8, w4) < stepActivationBytes(llama70b, tokens, 8));
  });

  it('the default step shrinks until it takes at most half of what the weights leave', () => {
    const act70 = (t: number) => stepActivationBytes(llama70b, t, 64);
    // A 70B model on an 80 GiB GPU with about 40 GiB in use after the weights: 32 GiB left at 0.9, plenty.
    const fit = { totalBytes: 80 * GiB, usedBytes: 40 * GiB, gpuMemoryUtilization: 0.9, activationBytesFor: act70, preferred: 2048 };
    assert.equal(fitBatchedTokens(fit), 2048);
    // With 2 GiB left the step halves until it takes at most 1 GiB.
    const tight = { ...fit, usedBytes: 0.9 * 80 * GiB - 2 * GiB };
    const t = fitBatchedTokens(tight);
    assert.ok(t < 2048 && act70(t) <= GiB && act70(2 * t) > GiB, `${t} tokens: ${act70(t) / GiB} GiB`);
    // Never below the floor (the KV budget then says what does not fit), nor above what is preferred.
    assert.equal(fitBatchedTokens({ ...fit, usedBytes: 79 * GiB }), 8);
    assert.equal(fitBatchedTokens({ ...fit, usedBytes: 79 * GiB, preferred: 4 }), 4);
  });
});

function catchErr(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  assert.fail('expected an error');
}
