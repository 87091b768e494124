// The benchmark client's options as the tests use them: quiet, no readiness wait, every percentile
// metric, against one base URL; each test overrides what it is about.

import { DEFAULT_DATASET_OPTIONS, type ServeBenchOptions } from '../../src/bench/serve-benchmark.js';

export function benchOptions(baseUrl: string, o: Partial<ServeBenchOptions> = {}): ServeBenchOptions {
  return {
    backend: 'openai',
    compat: 'vllm-main',
    baseUrl,
    host: '127.0.0.1',
    port: 8000,
    dataset: { ...DEFAULT_DATASET_OPTIONS },
    numPrompts: 6,
    requestRate: Infinity,
    burstiness: 1,
    seed: 0,
    numWarmups: 0,
    ignoreEos: false,
    sampling: {},
    headers: {},
    metadata: {},
    percentileMetrics: ['ttft', 'tpot', 'itl', 'e2el'],
    percentiles: [50, 99],
    goodput: {},
    readyCheckTimeoutS: 0,
    saveDetailed: true,
    progress: false,
    log: () => {},
    ...o,
  };
}
