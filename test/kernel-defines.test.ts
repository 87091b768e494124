// $TACHYON_NVRTC_DEFINES: macros for every kernel module (benchmarks compare compile-time kernel
// variants with it), validated before they reach NVRTC's command line.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { kernelDefinesFromEnv } from '../src/backend/cuda/kernel-modules.js';

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
