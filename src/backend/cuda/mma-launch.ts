// What the tensor-core decode GEMVs of quantized weights (gemv-mma-int4.ts, gemv-mma-q8.ts) share on
// the host: the launcher their owner (QuantizedWeights) gives them, and the sizes of a launch's
// split-K scratch, for one matrix or for a fused launch over several (kernels/gemv-mma.cuh
// mma_finish_emit and fused_slot lay them out).

import type { DevicePtr } from './driver.js';

/** What the GEMVs need from their owner (QuantizedWeights). */
export interface MmaLauncher {
  multiprocessors: number;
  /** Compute capability, major·10 + minor. */
  computeCapability: number;
  /** Shared memory a block may use (static and dynamic together). */
  sharedPerBlockOptin: number;
  /** The most tokens the streamed int4 and nvfp4 kernels take (0: none; QuantizedWeights.streamed, streamMaxTokens). */
  streamTokens: number;
  /** Launch a kernel of the GEMV's kernels file, with `shared` bytes of dynamic shared memory. */
  launch(kernel: string, grid: [number, number, number], block: number, kinds: string, args: number[], shared?: number): void;
  /** Float32 scratch of n values for this launch; released right after (stream order keeps it valid). */
  scratch(n: number): { ptr: DevicePtr; release(): void };
  /** At least n u32 counters, zero between launches (the kernel resets the ones it used). */
  counters(n: number): DevicePtr;
}

/** How a streamed launch (int4 or nvfp4, sm_90+) runs: its dynamic shared memory and the ring's stages. */
export interface StreamPlan {
  shared: number;
  stages: number;
}

/** A matrix's launch plan: row tiles (blocks along N) and blocks splitting each tile's K. */
export interface SplitPlan {
  tiles: number;
  splits: number;
}

/**
 * Float32 partial sums a matrix's blocks write when K is split: [tiles][S][m-tiles a block][16 rows][T]
 * (none where S = 1). Pure.
 */
export function splitPartFloats(p: SplitPlan, mTiles: number, T: number): number {
  return p.splits > 1 ? p.tiles * p.splits * mTiles * 16 * T : 0;
}

/**
 * A fused launch over matrices planned apart, one m-tile a block (fused_slot): its blocks, and the
 * scratch floats and tickets of the matrices that split K, one region after another. Pure.
 */
export function fusedLaunchSize(plans: readonly SplitPlan[], T: number): { blocks: number; partFloats: number; counters: number } {
  let blocks = 0;
  let partFloats = 0;
  let counters = 0;
  for (const p of plans) {
    blocks += p.tiles * p.splits;
    partFloats += splitPartFloats(p, 1, T);
    if (p.splits > 1) counters += p.tiles;
  }
  return { blocks, partFloats, counters };
}

/** Scratch and tickets for a launch's split K (none where nothing splits); release the scratch after the launch. */
export function splitScratch(l: MmaLauncher, partFloats: number, counters: number): { part: ReturnType<MmaLauncher['scratch']> | undefined; counters: DevicePtr } {
  return { part: partFloats > 0 ? l.scratch(partFloats) : undefined, counters: counters > 0 ? l.counters(counters) : 0 };
}
