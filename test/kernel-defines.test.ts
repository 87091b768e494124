// $TACHYON_NVRTC_DEFINES: macros for every kernel module (benchmarks compare compile-time kernel
// variants with it), validated before they reach NVRTC's command line.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { archSpecificModule, kernelDefinesFromEnv, moduleVariant, parseModuleName } from '../src/backend/cuda/kernel-modules.js';

test('TACHYON_NVRTC_DEFINES becomes -D options, one per word', () => {
  assert.deepEqual(kernelDefinesFromEnv({}), []);
  assert.deepEqual(kernelDefinesFromEnv({ TACHYON_NVRTC_DEFINES: '  ' }), []);
  assert.deepEqual(kernelDefinesFromEnv({ TACHYON_NVRTC_DEFINES: 'QGEMV_PIPELINE=0  DEBUG_X' }), ['-DQGEMV_PIPELINE=0', '-DDEBUG_X']);
});

test('TACHYON_NVRTC_DEFINES refuses what is not NAME or NAME=VALUE', () => {
  for (const bad of ['-O3', 'A=b;c', '9X=1', 'A="x"', '--include-path=/tmp']) {
    assert.throws(() => kernelDefinesFromEnv({ TACHYON_NVRTC_DEFINES: bad }), new RegExp(`TACHYON_NVRTC_DEFINES: '${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}' is not NAME or NAME=VALUE`));
  }
});

test('module names: a file, its macros, and the arch-specific target (sm_90a) marked by archSpecificModule', () => {
  assert.deepEqual(parseModuleName('linear.cu'), { file: 'linear.cu', variant: [], archSpecific: false });
  const prefill = moduleVariant('attention-prefill.cu', 'KV_BF16', 'PF_WGMMA');
  assert.deepEqual(parseModuleName(prefill), { file: 'attention-prefill.cu', variant: ['KV_BF16', 'PF_WGMMA'], archSpecific: false });
  assert.deepEqual(parseModuleName(archSpecificModule(prefill)), { file: 'attention-prefill.cu', variant: ['KV_BF16', 'PF_WGMMA'], archSpecific: true });
  assert.notEqual(archSpecificModule(prefill), prefill, 'a separate module (and cache entry) from the portable build');
});

