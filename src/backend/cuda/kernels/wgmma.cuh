// Hopper's warpgroup matrix multiply (wgmma, sm_90a only: the module must be compiled for the
// arch-specific target: KernelModules' '@a' modules, archSpecificModule) for the prefill attention kernel.
//
// A warpgroup (4 consecutive warps, the first a multiple of 4) issues wgmma.mma_async together: D
// (64 × N float32, in registers) += A (64 × 16 bf16) · B (16 × N bf16, in shared memory, read by
// the tensor cores through a descriptor). With A in registers each warp w holds rows 16w..16w+15 as
// an mma.m16n8k16 A fragment, and D's n8 column tile j sits in d[j][0..3] as an m16n8 C fragment
// (attention-prefill.cu's header has both layouts), so the mma.sync code's fragments carry over.
//
// Shared-memory operands here are in the 128-byte swizzle layout: rows of 128 bytes (64 bf16),
// 16-byte chunk c of row r stored at chunk c ^ (r & 7), groups of 8 rows (1,024 bytes) 1,024-aligned.
// Wider rows are panels of 64 columns one after another.
//   K-major (B's rows are its N index, the 16 k of one instruction inside a row): SBO = 1,024 bytes
//   from one 8-row group to the next; LBO unused; a k-step of 16 moves the start address 32 bytes.
//   MN-major (B's rows are its k index, N along the row: "transpose B"): SBO = 1,024 bytes from one
//   8-row k group to the next, LBO = the bytes from one 64-column panel of N to the next.
#pragma once
#include "common.cuh"

// Descriptor of a 128-byte-swizzled shared-memory operand at shared address `addr` (PTX ISA,
// "Matrix Descriptor Format": address, LBO and SBO in 16-byte units; bits 62–63 = 1: 128B swizzle).
__device__ __forceinline__ u64 wgmma_desc_sw128(u32 addr, u32 lbo, u32 sbo) {
  return (u64)((addr & 0x3ffffu) >> 4) | ((u64)((lbo >> 4) & 0x3fffu) << 16) | ((u64)((sbo >> 4) & 0x3fffu) << 32) | (1ull << 62);
}

// A descriptor `bytes` further on (a multiple of 16) in the same operand: the 14-bit address field
// holds shared addresses under 2¹⁸ bytes, so the sum never carries out of it, and the add stays a
// 32-bit one on the low word (a 64-bit add cost an add with carry and two more uniform-register
// moves for every wgmma of a tile).
__device__ __forceinline__ u64 wgmma_desc_add(u64 desc, u32 bytes) {
  return (desc & 0xffffffff00000000ull) | (u32)((u32)desc + (bytes >> 4));
}

// Orders this thread's register writes (A fragments, accumulators) before wgmma reads them.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
// Every committed group of this warpgroup but the newest N has completed (accumulators readable).
template <int N>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory"); }
// Shared memory written by ordinary stores or cp.async, read next by wgmma (the async proxy).
__device__ __forceinline__ void fence_proxy_async_shared() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

#define WG_D8(j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])

// The register-A forms below take B MN-major (imm-trans-b = 1: O += P·V with V's rows along k); scale-d
// is a predicate (true: accumulate into d).
// d (64 × 64) += a (registers) · B (descriptor, MN-major).
__device__ __forceinline__ void wgmma_m64n64k16_rs_tb(float (&d)[8][4], const u32 (&a)[4], u64 b) {
  asm volatile(
      "{ .reg .pred p; setp.ne.b32 p, 1, 0; "
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, 1; }"
      : WG_D8(0), WG_D8(1), WG_D8(2), WG_D8(3), WG_D8(4), WG_D8(5), WG_D8(6), WG_D8(7)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}

// d (64 × 128) += a (registers) · B (descriptor, MN-major).
__device__ __forceinline__ void wgmma_m64n128k16_rs_tb(float (&d)[16][4], const u32 (&a)[4], u64 b) {
  asm volatile(
      "{ .reg .pred p; setp.ne.b32 p, 1, 0; "
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %68, p, 1, 1, 1; }"
      : WG_D8(0), WG_D8(1), WG_D8(2), WG_D8(3), WG_D8(4), WG_D8(5), WG_D8(6), WG_D8(7),
        WG_D8(8), WG_D8(9), WG_D8(10), WG_D8(11), WG_D8(12), WG_D8(13), WG_D8(14), WG_D8(15)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}

// d (64 × 64) += A (descriptor, K-major) · B (descriptor, K-major). S = Q·Kᵀ takes q from shared
// memory rather than registers: with q's fragments held in registers across the K/V tiles, ptxas (CUDA
// 13.0) gave their registers to the probabilities written after the S wgmma at head_dim 64, so from the
// second tile on S multiplied P instead of q.
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[8][4], u64 a, u64 b) {
  asm volatile(
      "{ .reg .pred p; setp.ne.b32 p, 1, 0; "
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "%32, %33, p, 1, 1, 0, 0; }"
      : WG_D8(0), WG_D8(1), WG_D8(2), WG_D8(3), WG_D8(4), WG_D8(5), WG_D8(6), WG_D8(7)
      : "l"(a), "l"(b));
}

#undef WG_D8

// d (64 × N) += a · B (B MN-major) for N = 64 or 128 columns.
template <int N>
__device__ __forceinline__ void wgmma_bf16_tb(float (&d)[N / 8][4], const u32 (&a)[4], u64 b) {
  if constexpr (N == 64) wgmma_m64n64k16_rs_tb(d, a, b);
  else wgmma_m64n128k16_rs_tb(d, a, b);
}
