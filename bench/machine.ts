// What machine a benchmark ran on, saved with every result so figures are never compared blind.

import { execSync } from 'node:child_process';
import { cpus, hostname, totalmem, platform, arch } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../src/model/default-model.js';

export interface MachineInfo {
  hostname: string;
  platform: string;
  arch: string;
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  commit: string;
  date: string;
}

export function machineInfo(): MachineInfo {
  // The GPU machine gets a copy of the working tree without .git: the run passes the commit in.
  let commit = process.env.TACHYON_COMMIT ?? 'unknown';
  if (!process.env.TACHYON_COMMIT) {
    try {
      commit = execSync('git rev-parse --short HEAD', { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    } catch {
      // not a git checkout
    }
  }
  return {
    hostname: hostname(),
    platform: platform(),
    arch: arch(),
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    commit,
    date: new Date().toISOString(),
  };
}

/** Host memory copy bandwidth in GB/s (bytes read + written), the CPU's practical roofline. */
export function measureCopyBandwidth(bytes = 256 * 2 ** 20, repeats = 5): number {
  const src = new Float32Array(bytes / 4).fill(1);
  const dst = new Float32Array(bytes / 4);
  dst.set(src);
  let best = Infinity;
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    dst.set(src);
    best = Math.min(best, performance.now() - t0);
  }
  return (2 * bytes) / (best / 1000) / 1e9;
}

/**
 * Where a GPU benchmark saves its JSON unless told: bench/results/<bench>-<the GPU's name as a slug,
 * e.g. h100-80gb-hbm3>-<date><suffix>.json.
 */
export function gpuResultFile(bench: string, gpuName: string, date: string, suffix = ''): string {
  const slug = gpuName.replace(/^NVIDIA\s+/, '').replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '').toLowerCase();
  return join(packageRoot(), 'bench', 'results', `${bench}-${slug}-${date.slice(0, 10)}${suffix}.json`);
}
