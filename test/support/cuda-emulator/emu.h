// Runs a CUDA kernel's source on the CPU, for tests on machines without a GPU: every CUDA thread is
// a std::thread, a grid's blocks run one after another, __syncthreads is a barrier over the block's
// threads, and a warp shuffle is an exchange between two barriers over the warp's 32 threads. The
// threads run in no fixed order, so a kernel that leans on anything CUDA does not promise (lockstep
// warps, unsynchronised shared memory) tends to fail here too. Only what the kernels that use it
// need is here: full-warp shuffles of 32-bit values, shared-memory atomics, the conversions and
// intrinsics below. Floating point is the host's IEEE arithmetic (math functions: the host libm,
// which may differ from CUDA's in the last ulp). Requires C++20 (<barrier>, std::atomic_ref).
#pragma once
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
using std::max;
using std::min;

#define __global__
#define __device__
#define __forceinline__ inline
// One block runs at a time, so a function-static variable is the block's shared memory.
#define __shared__ static
#define __restrict__ __restrict
#define __launch_bounds__(x)
// Inline PTX cannot run here; kernels under test must not depend on it (common.cuh's f16 helper has some).
#define asm(...) ((void)0)

struct uint4 {
  unsigned x, y, z, w;
};
struct float4 {
  float x, y, z, w;
};
struct EmuDim {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local EmuDim threadIdx;
inline EmuDim blockIdx;
inline EmuDim blockDim;

namespace emu {
inline std::barrier<>* block;
inline std::vector<std::barrier<>*> warps;
inline uint32_t exchange[32][32];

inline uint32_t shuffle(uint32_t v, int src) {
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  exchange[w][lane] = v;
  warps[w]->arrive_and_wait();
  const uint32_t r = exchange[w][src];
  warps[w]->arrive_and_wait();  // nobody overwrites a slot before every lane has read
  return r;
}
template <typename T>
inline uint32_t bits(T v) {
  static_assert(sizeof(T) == 4, "32-bit shuffles only");
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}
template <typename T>
inline T from(uint32_t b) {
  T v;
  std::memcpy(&v, &b, 4);
  return v;
}

/** Runs grid × threads of `kernel` (a callable that calls the __global__ function). */
template <typename K>
void launch(int grid, int threads, K kernel) {
  blockDim.x = threads;
  for (int b = 0; b < grid; b++) {
    blockIdx.x = b;
    std::barrier<> blockBarrier(threads);
    block = &blockBarrier;
    warps.clear();
    for (int w = 0; w < threads / 32; w++) warps.push_back(new std::barrier<>(32));
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; t++) ts.emplace_back([t, &kernel] {
      threadIdx.x = t;
      kernel();
    });
    for (auto& t : ts) t.join();
    for (auto* w : warps) delete w;
    warps.clear();
  }
}
}  // namespace emu

inline void __syncthreads() { emu::block->arrive_and_wait(); }
template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int o) {
  return emu::from<T>(emu::shuffle(emu::bits(v), (threadIdx.x & 31) ^ o));
}
template <typename T>
inline T __shfl_up_sync(unsigned, T v, int d) {
  const int l = threadIdx.x & 31;
  return emu::from<T>(emu::shuffle(emu::bits(v), l >= d ? l - d : l));
}
template <typename T>
inline T __shfl_down_sync(unsigned, T v, int d) {
  const int l = threadIdx.x & 31;
  return emu::from<T>(emu::shuffle(emu::bits(v), l + d < 32 ? l + d : l));
}
inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return std::atomic_ref<unsigned long long>(*p).fetch_add(v); }
inline int atomicMin(int* p, int v) {
  std::atomic_ref<int> a(*p);
  int o = a.load();
  while (v < o && !a.compare_exchange_weak(o, v)) {
  }
  return o;
}
inline int atomicMax(int* p, int v) {
  std::atomic_ref<int> a(*p);
  int o = a.load();
  while (v > o && !a.compare_exchange_weak(o, v)) {
  }
  return o;
}
inline int __clz(unsigned x) { return x == 0 ? 32 : __builtin_clz(x); }
inline int __ffs(int x) { return x == 0 ? 0 : __builtin_ctz((unsigned)x) + 1; }
inline float __fmul_rn(float a, float b) { return a * b; }
// One rounding of a·b + c, as the device's fma.rn.f32 (common.cuh rope_rotate).
inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
inline float __frcp_rn(float x) { return 1.f / x; }
// A device-side abort: here the process's.
inline void __trap() { std::abort(); }
inline float __int_as_float(int b) { return emu::from<float>((uint32_t)b); }
inline float __uint_as_float(unsigned b) { return emu::from<float>(b); }
inline unsigned __float_as_uint(float f) { return emu::bits(f); }
inline long long __double_as_longlong(double d) {
  long long b;
  std::memcpy(&b, &d, 8);
  return b;
}
// The rounding mode is per thread; compile with -frounding-math so the sum is not folded.
inline double __dadd_rz(double a, double b) {
  std::fesetround(FE_TOWARDZERO);
  volatile double r = a + b;
  std::fesetround(FE_TONEAREST);
  return r;
}
inline unsigned long long __double2ull_rz(double d) { return (unsigned long long)d; }
inline float fminf(float a, float b) { return std::fmin(a, b); }
