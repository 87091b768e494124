// Programmatic dependent launch (sm_90+): a kernel launched with programmatic stream serialization
// may start while the kernel before it in the stream still runs, once every block of that one has
// called griddepcontrol.launch_dependents (pdl_trigger in kernels/common.cuh) or exited. It must then
// wait (griddepcontrol.wait, pdl_wait) before it reads anything an earlier kernel wrote or writes
// anything. What it may do before the wait is read its weights, which no kernel of a step writes:
// the decode GEMVs below start loading theirs while a norm or attention (a few blocks, the memory
// system nearly idle) finishes, instead of the GPU draining between kernels.
//
// Only the kernels named here are launched so, and only right after a kernel that triggers (these
// same kernels: they write activations, never weights; a weight written by the kernel just before,
// as at load time, must not be read early); every other launch starts after its predecessor has
// finished, as without programmatic launch. A decode layer on the quantized one-token path is then
// one chain: norm → q/k/v → RoPE + KV write → attention → o → norm → gate/up → down → norm.
// test/cuda-pdl-source.test.ts checks that these kernels' sources wait before touching activations.

/** Kernel names launched programmatically: each waits (pdl_wait) before reading activations. */
export const PROGRAMMATIC_KERNELS: readonly RegExp[] = [
  // fp8 / int8 / int4 / nvfp4 v2 GEMVs (quant-linear.cu): a thread's first round of weight loads, then the wait.
  /^qgemv2(many|silu)?_(fp8|int8|int4|nvfp4)_r\d+_t\d+$/,
  // Streamed int4 / nvfp4 GEMVs (gemv-mma-int4.cu, gemv-mma-q8.cu): the producer warp fills the ring;
  // the consumers wait before staging x.
  /^gemv_mma_int4s(many|silu)?(_zp)?(_g64)?$/,
  /^gemv_mma_nvfp4s(_r1|_r2|many|silu)$/,
  // The small kernels between them wait first thing: resident before their predecessor ends, they
  // start without a launch's delay (and let the next GEMV start, below).
  /^(add_)?rms_norm_b\d$/,
  /^rope_write_kv4?$/,
  /^decode_attention(_mma)?_d\d+_g\d+$/,
];

/**
 * Kernels that let the kernel after them start early (pdl_trigger): the small latency-bound ones
 * first thing, the GEMVs above once their weights are read (the next kernel's blocks then take the
 * SMs the GEMV leaves). All write activations only, never weights.
 */
export const TRIGGERING_KERNELS: readonly RegExp[] = [...PROGRAMMATIC_KERNELS];

export function letsDependentsStart(kernel: string): boolean {
  return TRIGGERING_KERNELS.some((re) => re.test(kernel));
}

export function waitsForPredecessor(kernel: string): boolean {
  return PROGRAMMATIC_KERNELS.some((re) => re.test(kernel));
}
