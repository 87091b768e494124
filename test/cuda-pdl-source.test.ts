// Programmatic dependent launch (programmatic-launch.ts) is only correct if each kernel launched so
// waits (pdl_wait, kernels/common.cuh) before it reads x, which the kernel before it wrote. A kernel
// that read early would race, on the GPU only and only sometimes, so the sources are checked here:
// the helpers those kernels run wait before their first read of x, and the kernel bodies pass x to
// nothing else. (test/cuda-pdl.test.ts runs them on the GPU against serialized launches.)

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { kernelSourceDir } from '../src/backend/cuda/kernel-modules.js';
import { letsDependentsStart, waitsForPredecessor } from '../src/backend/cuda/programmatic-launch.js';

/** A source without comments, macro continuations joined. */
function source(file: string): string {
  return readFileSync(join(kernelSourceDir(), file), 'utf8')
    .replace(/\\\n/g, '\n')
    .replace(/\/\/[^\n]*/g, '')
    .replace(/\/\*[\s\S]*?\*\//g, '');
}

/** The body of the function whose definition starts with `head` (the text up to its opening brace). */
function body(text: string, head: string): string {
  const at = text.indexOf(head);
  assert.ok(at >= 0, `no ${head}`);
  const open = text.indexOf('{', text.indexOf(')', at));
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) return text.slice(open + 1, i);
  }
  throw new Error(`unbalanced braces after ${head}`);
}

const quant = source('quant-linear.cu');
const mma = source('gemv-mma.cuh');

test('the v2 GEMVs load their first weights, then wait, then read x', () => {
  // Both walk their loads through v2_rounds: the first round's loads, a wait on them, the round.
  const walk = body(quant, 'void v2_rounds(');
  assert.match(walk, /load\(c, raw\);\s*pdl_wait_after\(raw\[ROWS - 1\]\.w\);[^]*?round\(c, raw\);/, 'v2_rounds: load, wait on the loads, then the round');
  // A plain wait there would be hoisted above the loads by ptxas (common.cuh, pdl_wait_after).
  const firstRound = walk.indexOf('round(c, raw)');
  assert.ok(walk.search(/pdl_wait(_after)?\(/) < firstRound, 'v2_rounds: a round before the wait');
  assert.ok(walk.indexOf('pdl_trigger()') > walk.lastIndexOf('round(c, raw)'), 'v2_rounds: the trigger after the last round');
  for (const fn of ['void gemv_q8_v2(', 'void gemv_q4_v2(']) {
    const b = body(quant, fn);
    assert.match(b, /v2_rounds<ROWS>\(loads, load, round\);/, `${fn} walks through v2_rounds`);
    // x is read only inside the round lambda, which v2_rounds runs after the wait.
    const roundDef = b.indexOf('const auto round');
    assert.ok(roundDef >= 0, `${fn}: no round`);
    const outsideRound = b.slice(0, roundDef) + b.slice(b.indexOf('};', roundDef));
    assert.doesNotMatch(outsideRound, /\bx\s*[+[]/, `${fn}: x read outside the round`);
    assert.doesNotMatch(b.slice(0, b.indexOf('v2_rounds<')), /finish_v2|out\(/, `${fn}: an output written before the walk`);
  }
});

test('the streamed GEMVs wait in stream_stage_x, before x is read, and read x nowhere else', () => {
  const stage = body(mma, 'void stream_stage_x(');
  const wait = stage.indexOf('pdl_wait()');
  assert.ok(wait >= 0 && wait < stage.indexOf('ldg_x4'), 'stream_stage_x reads x before its wait');
  for (const [file, fn] of [['gemv-mma-int4.cu', 'void i4s_body('], ['gemv-mma-q8.cu', 'void nvfp4s_body(']]) {
    const b = body(source(file), fn);
    const uses = [...b.matchAll(/[^\w.]x\b(?!\s*=)/g)].map((m) => b.slice(m.index! - 30, m.index! + 10));
    assert.ok(uses.length > 0, `${fn} does not take x`);
    for (const u of uses) assert.match(u, /stream_stage_x<\w+>\(xs, x/, `${file}: ${fn} uses x outside stream_stage_x: …${u}…`);
  }
});

test('the decode chain waits and triggers; nothing else does', () => {
  const chain = ['qgemv2_fp8_r16_t1', 'qgemv2silu_int8_r8_t1', 'qgemv2many_int4_r8_t1', 'qgemv2_nvfp4_r4_t8', 'gemv_mma_int4ssilu_zp', 'gemv_mma_int4smany',
    'gemv_mma_nvfp4s_r1', 'gemv_mma_nvfp4ssilu', 'add_rms_norm_b1', 'rms_norm_b2', 'rope_write_kv', 'rope_write_kv4', 'decode_attention_mma_d128_g4', 'decode_attention_d64_g8'];
  for (const name of chain) assert.ok(waitsForPredecessor(name) && letsDependentsStart(name), name);
  // Kernels that write weights (load time), or that neither wait nor trigger.
  for (const name of ['gemv_mma_int4_r1', 'gemv_splitk_bf16', 'rms_norm', 'rms_norm_w1', 'repack_4bit', 'random_int4', 'dequant_int4', 'sample_rows', 'prefill_attention_d128_w8'])
    assert.ok(!waitsForPredecessor(name) && !letsDependentsStart(name), name);
  const count = (file: string, call: string) => (source(file).match(new RegExp(`${call}\\(\\)`, 'g')) ?? []).length;
  // The small kernels trigger, then wait, first thing: rms_norm_b and add_rms_norm_b, both decode kernels, rope_write_kv(4).
  for (const [file, n] of [['norm.cu', 2], ['attention-decode.cu', 2], ['rope-kv.cu', 2]] as const) {
    assert.equal(count(file, 'pdl_trigger'), n, `${file}: pdl_trigger`);
    assert.equal(count(file, 'pdl_wait'), n, `${file}: pdl_wait`);
  }
  for (const fn of ['rope_write_kv', 'rope_write_kv4']) {
    const rope = body(source('rope-kv.cu'), `void __launch_bounds__(ROPE_THREADS) ${fn}(`);
    assert.match(rope, /^\s*pdl_trigger\(\);\s*pdl_wait\(\);/, `${fn} waits first thing`);
  }
  // The GEMVs trigger once their weights are read: after the v2 walk, at a streamed block's last item.
  assert.equal(count('quant-linear.cu', 'pdl_trigger'), 1);
  for (const f of ['gemv-mma-int4.cu', 'gemv-mma-q8.cu']) assert.match(source(f), /if \(i \+ gridDim\.x >= items\) pdl_trigger\(\);/, f);
});
