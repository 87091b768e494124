// Building a kernel's CPU emulation (test/support/cuda-emulator: emu.h and a driver per kernel) for
// the *-emulated tests: the kernel source compiled by the host's C++ compiler, or why it cannot be.

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../../src/model/default-model.js';

const CXX = process.env.CXX ?? 'g++';
const FLAGS = ['-std=c++20', '-O2', '-frounding-math', '-Wno-unknown-pragmas', '-pthread'];

/**
 * The executable of cuda-emulator/<driver>.cpp (which includes its kernel from src/backend/cuda/kernels),
 * or the skip reason: a compiler that cannot build a C++20 probe cannot build the emulator, and the
 * suite skips saying so; one that can must build the driver (a failure then is the test's).
 */
export function buildEmulated(driver: string): { bin?: string; skipReason: string | false } {
  const dir = mkdtempSync(join(tmpdir(), 'tachyon-emu-'));
  writeFileSync(join(dir, 'probe.cpp'), '#include <barrier>\n#include <atomic>\nint main() { std::barrier<> b(1); int x = 0; std::atomic_ref<int>(x).fetch_add(1); b.arrive_and_wait(); return 0; }\n');
  const probe = spawnSync(CXX, [...FLAGS, '-o', join(dir, 'probe'), join(dir, 'probe.cpp')], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    return { skipReason: `no C++20 compiler to run the CUDA emulator (${CXX}: ${probe.error?.message ?? probe.stderr.split('\n')[0]})` };
  }
  const root = packageRoot();
  const bin = join(dir, driver);
  const emulator = join(root, 'test', 'support', 'cuda-emulator');
  execFileSync(CXX, [...FLAGS, `-I${join(root, 'src', 'backend', 'cuda', 'kernels')}`, `-I${emulator}`, '-o', bin, join(emulator, `${driver}.cpp`)], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return { bin, skipReason: false };
}
