// The fused decode linears' other variants (linear-fused.cuh), for benchmarks and the tests that
// check they match the default bitwise: compiled for at most 1 and 8 tokens (base: 8).
#include "linear-fused.cuh"

#define VARIANT_KERNELS(SUFFIX, W)                                           \
  FUSED_KERNELS(base, SUFFIX, W, 8, 4, 1, LOAD_CACHED, run_block, 1)         \
  FUSED_KERNELS(rows8, SUFFIX, W, 1, 8, 2, LOAD_STREAM, run_block, 1)        \
  FUSED_KERNELS(rows8, SUFFIX, W, 8, 8, 1, LOAD_STREAM, run_block, 1)        \
  FUSED_KERNELS(persist, SUFFIX, W, 1, 4, 2, LOAD_STREAM, run_persistent, 2) \
  FUSED_KERNELS(persist, SUFFIX, W, 8, 4, 1, LOAD_STREAM, run_persistent, 2)
VARIANT_KERNELS(bf16, WBf16)
VARIANT_KERNELS(f16, WF16)
VARIANT_KERNELS(f32, WF32)
