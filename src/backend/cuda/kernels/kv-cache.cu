// Paged KV cache writes and whole-block copies. Layout per layer and for K and V alike:
// [numBlocks·blockSize slots, numKvHeads·headDim] kv_t (float32, or bf16 under KV_BF16: common.cuh);
// all layers in one allocation each.
#include "common.cuh"

// Token blockIdx.x's k and v rows ([T, width]) into its slot (FP8: divided by the layer's scales).
extern "C" __global__ void write_kv(kv_t* __restrict__ kc, kv_t* __restrict__ vc, const float* __restrict__ k,
                                    const float* __restrict__ v, const int* __restrict__ slots, int width, float kScale, float vScale) {
  const u64 dst = (u64)slots[blockIdx.x] * width, src = (u64)blockIdx.x * width;
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    kc[dst + i] = f32_to_kv_scaled(k[src + i], kScale);
    vc[dst + i] = f32_to_kv_scaled(v[src + i], vScale);
  }
}

// Block srcBlock → dstBlock in every layer (blockIdx.x) of K (blockIdx.y = 0) and V (= 1), as 4-byte
// words whatever the element type (sizes in words).
extern "C" __global__ void copy_kv_block(u32* kc, u32* vc, u64 layerWords, u64 blockWords, int srcBlock, int dstBlock) {
  u32* base = (blockIdx.y == 0 ? kc : vc) + blockIdx.x * layerWords;
  const u32* src = base + (u64)srcBlock * blockWords;
  u32* dst = base + (u64)dstBlock * blockWords;
  for (u64 i = threadIdx.x; i < blockWords; i += blockDim.x) dst[i] = src[i];
}
