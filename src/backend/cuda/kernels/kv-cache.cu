// Paged KV cache writes and whole-block copies. Layout per layer and for K and V alike:
// [numBlocks·blockSize slots, numKvHeads·headDim] float32; all layers in one allocation each.
#include "common.cuh"

// Token blockIdx.x's k and v rows ([T, width]) into its slot.
extern "C" __global__ void write_kv(float* __restrict__ kc, float* __restrict__ vc, const float* __restrict__ k,
                                    const float* __restrict__ v, const int* __restrict__ slots, int width) {
  const u64 dst = (u64)slots[blockIdx.x] * width, src = (u64)blockIdx.x * width;
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    kc[dst + i] = k[src + i];
    vc[dst + i] = v[src + i];
  }
}

// Block srcBlock → dstBlock in every layer (blockIdx.x) of K (blockIdx.y = 0) and V (= 1).
extern "C" __global__ void copy_kv_block(float* kc, float* vc, u64 layerFloats, u64 blockFloats, int srcBlock, int dstBlock) {
  float* base = (blockIdx.y == 0 ? kc : vc) + blockIdx.x * layerFloats;
  const float* src = base + (u64)srcBlock * blockFloats;
  float* dst = base + (u64)dstBlock * blockFloats;
  for (u64 i = threadIdx.x; i < blockFloats; i += blockDim.x) dst[i] = src[i];
}
