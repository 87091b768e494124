// The fused decode linears' default kernels: the "unroll" variant (linear-fused.cuh) for each weight
// type, compiled for at most 1, 4 and 8 tokens.
#include "linear-fused.cuh"

#define DEFAULT_KERNELS(SUFFIX, W)                                      \
  FUSED_KERNELS(unroll, SUFFIX, W, 1, 4, 4, LOAD_STREAM, run_block, 1)  \
  FUSED_KERNELS(unroll, SUFFIX, W, 4, 4, 2, LOAD_STREAM, run_block, 1)  \
  FUSED_KERNELS(unroll, SUFFIX, W, 8, 4, 2, LOAD_STREAM, run_block, 1)
DEFAULT_KERNELS(bf16, WBf16)
DEFAULT_KERNELS(f16, WF16)
DEFAULT_KERNELS(f32, WF32)
