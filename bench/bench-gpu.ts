// The CUDA backend as a benchmark opens it: the kernels it will time compiled first (so no NVRTC run
// lands in a timed region), the device-to-device copy bandwidth measured (the memory roofline every
// decode figure is a share of), and one banner line for each.

import { CudaBackend, type CudaBackendOptions } from '../src/backend/cuda/cuda-backend.js';
import type { DeviceInfo } from '../src/backend/cuda/driver.js';

export interface BenchGpu {
  backend: CudaBackend;
  gpu: DeviceInfo;
  /** Device-to-device copy, GB/s of bytes read + written. */
  copyGBs: number;
  /** Compiling or loading the kernel modules. */
  kernelsMs: number;
}

/**
 * Loads every kernel module the backend runs (CudaBackend.warmUp; `warmUp: false` skips that) and
 * `modules` besides. `note` ends the banner (e.g. the KV cache's element type).
 */
export function openBenchGpu(opts: { options?: CudaBackendOptions; warmUp?: boolean; modules?: string[]; note?: string } = {}): BenchGpu {
  const backend = new CudaBackend(opts.options);
  const t0 = performance.now();
  if (opts.warmUp !== false) backend.warmUp();
  for (const f of opts.modules ?? []) backend.kernels.module(f);
  const kernelsMs = performance.now() - t0;
  const copyGBs = backend.measureCopyBandwidth();
  const gpu = backend.device;
  console.log(
    `GPU ${gpu.name} (sm_${gpu.computeCapability}, ${gpu.multiprocessors} SMs, ${(gpu.totalMemoryBytes / 2 ** 30).toFixed(1)} GiB), ` +
      `device-to-device copy ${copyGBs.toFixed(0)} GB/s (read + write)${opts.note ? `; ${opts.note}` : ''}`,
  );
  console.log(`kernels ready in ${kernelsMs.toFixed(0)} ms: ${backend.kernels.stats.map((s) => `${s.file} ${s.fromCache ? 'cached' : 'compiled'} ${s.ms.toFixed(0)} ms`).join(', ')}`);
  return { backend, gpu, copyGBs, kernelsMs };
}
