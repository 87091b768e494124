// The kernels around the tensor-core GEMMs of prefill (cuBLASLt, see cublaslt.ts): activations are
// float32, the tensor cores take both operands in one narrow type, so x is first rounded to the
// weight's 16-bit type, or quantised per token to FP8 (e4m3) with a float32 scale per row; the FP8
// GEMM then runs with unit scales and its float32 result is rescaled here.
#include "common.cuh"
#include "tensor-core.cuh"  // cp.async

// y[i] = x[i] rounded to bf16 or f16, n values. Each step of the grid-stride loop takes 8 values:
// two 16-byte loads, one 16-byte store (both buffers are whole allocations, 256-byte aligned).
template <bool BF16>
__device__ __forceinline__ void to_half(const float* __restrict__ x, u16* __restrict__ y, u64 n) {
  const u64 stride = (u64)gridDim.x * blockDim.x;
  const u64 first = blockIdx.x * (u64)blockDim.x + threadIdx.x;
  const u64 groups = n / 8;
  for (u64 i = first; i < groups; i += stride) {
    const float4 a = reinterpret_cast<const float4*>(x)[2 * i];
    const float4 b = reinterpret_cast<const float4*>(x)[2 * i + 1];
    uint4 o;
    if (BF16) {
      o.x = pack_bf16x2(a.x, a.y); o.y = pack_bf16x2(a.z, a.w);
      o.z = pack_bf16x2(b.x, b.y); o.w = pack_bf16x2(b.z, b.w);
    } else {
      o.x = pack_f16x2(a.x, a.y); o.y = pack_f16x2(a.z, a.w);
      o.z = pack_f16x2(b.x, b.y); o.w = pack_f16x2(b.z, b.w);
    }
    reinterpret_cast<uint4*>(y)[i] = o;
  }
  for (u64 i = groups * 8 + first; i < n; i += stride) y[i] = (u16)(BF16 ? pack_bf16x2(x[i], 0.f) : pack_f16x2(x[i], 0.f));
}

extern "C" __global__ void __launch_bounds__(256) f32_to_bf16(const float* __restrict__ x, u16* __restrict__ y, u64 n) {
  to_half<true>(x, y, n);
}
extern "C" __global__ void __launch_bounds__(256) f32_to_f16(const float* __restrict__ x, u16* __restrict__ y, u64 n) {
  to_half<false>(x, y, n);
}

// The prefill MLP's middle (CudaBackend.mlp): y = silu(g) · u over n values of bf16 or f16 gate and
// up (the GEMMs' outputs), written in the same type as the down GEMM's input: silu_mul's float32
// expression (elementwise.cu) on the widened values, rounded once at the end. 8 values a step.
__device__ __forceinline__ float half_lo(u32 v, bool bf16) { return bf16 ? __uint_as_float(v << 16) : f16_to_f32((u16)(v & 0xffffu)); }
__device__ __forceinline__ float half_hi(u32 v, bool bf16) { return bf16 ? __uint_as_float(v & 0xffff0000u) : f16_to_f32((u16)(v >> 16)); }
template <bool BF16>
__device__ __forceinline__ void silu_mul_half(const u16* __restrict__ g, const u16* __restrict__ u, u16* __restrict__ y, u64 n) {
  const u64 stride = (u64)gridDim.x * blockDim.x;
  const u64 first = blockIdx.x * (u64)blockDim.x + threadIdx.x;
  const u64 groups = n / 8;
  for (u64 i = first; i < groups; i += stride) {
    const uint4 a = reinterpret_cast<const uint4*>(g)[i], b = reinterpret_cast<const uint4*>(u)[i];
    const u32 av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
    u32 o[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const float lo = silu_times(half_lo(av[j], BF16), half_lo(bv[j], BF16));
      const float hi = silu_times(half_hi(av[j], BF16), half_hi(bv[j], BF16));
      o[j] = BF16 ? pack_bf16x2(lo, hi) : pack_f16x2(lo, hi);
    }
    reinterpret_cast<uint4*>(y)[i] = make_uint4(o[0], o[1], o[2], o[3]);
  }
  for (u64 i = groups * 8 + first; i < n; i += stride) {
    const float v = silu_times(half_lo(g[i], BF16), half_lo(u[i], BF16));
    y[i] = (u16)(BF16 ? pack_bf16x2(v, 0.f) : pack_f16x2(v, 0.f));
  }
}
extern "C" __global__ void __launch_bounds__(256) silu_mul_bf16(const u16* __restrict__ g, const u16* __restrict__ u, u16* __restrict__ y, u64 n) {
  silu_mul_half<true>(g, u, y, n);
}
extern "C" __global__ void __launch_bounds__(256) silu_mul_f16(const u16* __restrict__ g, const u16* __restrict__ u, u16* __restrict__ y, u64 n) {
  silu_mul_half<false>(g, u, y, n);
}

// y[t, n] += bias[n] over [T, N] (when cuBLASLt's bias epilogue is not used): grid (columns, rows),
// rows striding past the grid's 65535 limit.
extern "C" __global__ void add_bias_rows(float* __restrict__ y, const float* __restrict__ bias, int T, int N) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  for (int t = blockIdx.y; t < T; t += gridDim.y) y[(u64)t * N + n] += bias[n];
}

// One row quantised per token as quantize_rows_e4m3 defines it (block = row): absmax over the row's
// values, scale = absmax / 448 (float32 epsilon for an all-zero row), codes = e4m3(value · (1 /
// scale)) (common.cuh e4m3x4), round to nearest even, saturating. `values(i, v)` gives the row's
// values 4i..4i+3. A thread holds its first QUANT_HELD groups (i = thread + j · blockDim) in
// registers between the absmax and the codes, so the row is read once: the host launches enough
// threads for the whole row (quantRowThreads in cublaslt.ts). Groups past QUANT_HELD · blockDim, if any, are read twice.
// (Reading twice cost the FP8 MLP's middle a second pass over gate and up from DRAM: rows of 57 KiB
// with ~1,000 in flight do not stay in L2.)
#define QUANT_HELD 8
// The pipelined row kernel holds two rows' worth (raw and formed): ~90 registers, so at most this
// many threads a block (cublaslt.ts QUANT_PIPELINED_THREADS).
#ifndef QUANT_PIPELINED_THREADS
#define QUANT_PIPELINED_THREADS 640
#endif
template <typename Values>
__device__ __forceinline__ void quantize_row_e4m3(const Values& values, int groups, u32* __restrict__ codes, float* __restrict__ scales) {
#if __CUDA_ARCH__ >= 890
  const int stride = blockDim.x;
  float held[QUANT_HELD][4];
  float m = 0.f;
#pragma unroll
  for (int j = 0; j < QUANT_HELD; j++) {
    const int i = threadIdx.x + j * stride;
    if (i < groups) {
      values(i, held[j]);
      m = absmax4(m, held[j][0], held[j][1], held[j][2], held[j][3]);
    }
  }
  for (int i = threadIdx.x + QUANT_HELD * stride; i < groups; i += stride) {
    float v[4];
    values(i, v);
    m = absmax4(m, v[0], v[1], v[2], v[3]);
  }
  const float s = e4m3_row_scale(block_max(m));
  if (threadIdx.x == 0) scales[blockIdx.x] = s;
  u32* out = codes + (u64)blockIdx.x * groups;
  auto put = [&](int i, const float* v) { out[i] = e4m3x4(v[0], v[1], v[2], v[3], s); };
#pragma unroll
  for (int j = 0; j < QUANT_HELD; j++) {
    const int i = threadIdx.x + j * stride;
    if (i < groups) put(i, held[j]);
  }
  for (int i = threadIdx.x + QUANT_HELD * stride; i < groups; i += stride) {
    float v[4];
    values(i, v);
    put(i, v);
  }
#else
  __trap();
#endif
}

// Per-token dynamic FP8: one block per row of x [T, K] (K a multiple of 4). scale = absmax / 448,
// codes = e4m3(x · (1 / scale)), round to nearest even, saturating at ±448 (common.cuh e4m3x4). The
// e4m3 conversion instruction exists from sm_89 on, as do the FP8 tensor cores: the host launches
// this kernel only there.
extern "C" __global__ void __launch_bounds__(1024) quantize_rows_e4m3(const float* __restrict__ x, u32* __restrict__ codes,
                                                                                float* __restrict__ scales, int K) {
  const float4* row = reinterpret_cast<const float4*>(x + (u64)blockIdx.x * K);
  quantize_row_e4m3([&](int i, float* v) {
    const float4 a = row[i];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
  }, K / 4, codes, scales);
}

// The FP8 prefill MLP's middle (CudaBackend.mlp on W8A8): one block per token row t. From the FP8
// GEMMs' float32 outputs dg and du [T, ldd] it forms gate = dg · (xScale[t] · wsGate[n]) and up
// likewise (scale_fp8_product's values), a = silu(gate) · up (silu_mul's expression), and quantises
// the row of a for the down GEMM as quantize_rows_e4m3 does (absmax / 448, codes e4m3(a · (1 / scale))):
// bitwise what those three kernels give, without writing gate, up or a. N a multiple of 4.
__device__ __forceinline__ float fp8_silu_at(const float* dg, const float* du, float xs, const float* wsg, const float* wsu, int n) {
  const float g = dg[n] * (xs * wsg[n]);
  const float u = du[n] * (xs * wsu[n]);
  return silu_times(g, u);
}
extern "C" __global__ void __launch_bounds__(1024) silu_mul_quantize_e4m3(
    const float* __restrict__ dg, const float* __restrict__ du, const float* __restrict__ xScale, const float* __restrict__ wsGate,
    const float* __restrict__ wsUp, u32* __restrict__ codes, float* __restrict__ scales, int N, int ldd) {
  const float* g = dg + (u64)blockIdx.x * ldd;
  const float* u = du + (u64)blockIdx.x * ldd;
  const float xs = xScale[blockIdx.x];
  quantize_row_e4m3([&](int i, float* v) {
#pragma unroll
    for (int j = 0; j < 4; j++) v[j] = fp8_silu_at(g, u, xs, wsGate, wsUp, 4 * i + j);
  }, N / 4, codes, scales);
}

// The same middle from gate and up already scaled by their GEMMs and written as bf16 [T, N] (cuBLASLt's
// outer-vector scaling): a = silu(gate) · up (silu_mul_bf16's expression) quantised per row as
// quantize_rows_e4m3 does. N a multiple of 4; a thread reads 4 values of gate and of up (8 bytes
// each) a group.
//
// This one runs on Hopper for every FP8 prefill MLP, and its arithmetic (SiLU's expf and IEEE
// division, the codes) costs about as long as its reads: a block takes rows blockIdx.x,
// + gridDim.x, … (the host launches about one block an SM) and loads the next row's gate and up into
// registers while it forms, reduces and quantises this one, so the reads overlap the arithmetic
// instead of alternating with it. Rows longer than QUANT_HELD · blockDim read the rest twice.
__device__ __forceinline__ void silu_times4(const uint4& r, float* v) {
  v[0] = silu_times(__uint_as_float(r.x << 16), __uint_as_float(r.z << 16));
  v[1] = silu_times(__uint_as_float(r.x & 0xffff0000u), __uint_as_float(r.z & 0xffff0000u));
  v[2] = silu_times(__uint_as_float(r.y << 16), __uint_as_float(r.w << 16));
  v[3] = silu_times(__uint_as_float(r.y & 0xffff0000u), __uint_as_float(r.w & 0xffff0000u));
}
extern "C" __global__ void __launch_bounds__(QUANT_PIPELINED_THREADS) silu_mul_quantize_bf16_e4m3(
    const u16* __restrict__ gate, const u16* __restrict__ up, u32* __restrict__ codes, float* __restrict__ scales, int N, int T) {
#if __CUDA_ARCH__ >= 890
  const int groups = N / 4, stride = blockDim.x;
  // Group i of row t: gate's 4 bf16 values in (x, y), up's in (z, w).
  auto load = [&](int t, int i) {
    const uint2 a = reinterpret_cast<const uint2*>(gate + (u64)t * N)[i];
    const uint2 b = reinterpret_cast<const uint2*>(up + (u64)t * N)[i];
    return make_uint4(a.x, a.y, b.x, b.y);
  };
  uint4 raw[QUANT_HELD];
  auto fetch = [&](int t) {
#pragma unroll
    for (int j = 0; j < QUANT_HELD; j++) {
      const int i = threadIdx.x + j * stride;
      if (i < groups) raw[j] = load(t, i);
    }
  };
  if (blockIdx.x < T) fetch(blockIdx.x);
  for (int t = blockIdx.x; t < T; t += gridDim.x) {
    float held[QUANT_HELD][4];
    float m = 0.f;
#pragma unroll
    for (int j = 0; j < QUANT_HELD; j++) {
      if (threadIdx.x + j * stride < groups) {
        silu_times4(raw[j], held[j]);
        m = absmax4(m, held[j][0], held[j][1], held[j][2], held[j][3]);
      }
    }
    for (int i = threadIdx.x + QUANT_HELD * stride; i < groups; i += stride) {
      float v[4];
      silu_times4(load(t, i), v);
      m = absmax4(m, v[0], v[1], v[2], v[3]);
    }
    if (t + gridDim.x < T) fetch(t + gridDim.x);  // raw is free: the next row is on its way
    const float sc = e4m3_row_scale(block_max(m));
    if (threadIdx.x == 0) scales[t] = sc;
    u32* out = codes + (u64)t * groups;
#pragma unroll
    for (int j = 0; j < QUANT_HELD; j++) {
      const int i = threadIdx.x + j * stride;
      if (i < groups) out[i] = e4m3x4(held[j][0], held[j][1], held[j][2], held[j][3], sc);
    }
    for (int i = threadIdx.x + QUANT_HELD * stride; i < groups; i += stride) {
      float v[4];
      silu_times4(load(t, i), v);
      out[i] = e4m3x4(v[0], v[1], v[2], v[3], sc);
    }
  }
#else
  __trap();
#endif
}

// silu_mul_quantize_bf16_e4m3 with the rows streamed through shared memory: the same values, the
// same bits. In the kernel above a block's loads of its next row wait until this row's SiLU is done,
// and that arithmetic (expf and an IEEE division a value) costs about as long as the reads: the two
// alternate (~72 µs at 2048 × 14336 on the H100 against ~45 µs for its bytes). Here a block (one an
// SM; rows blockIdx.x, + gridDim.x, …) keeps STAGES rows in shared memory, gate's then up's, copied
// by cp.async: while it works on one row, the next STAGES - 1 are on their way. A thread takes
// 16-byte chunks c = threadIdx.x + j · blockDim (8 values of gate and of up), holds their SiLU
// products in registers across the row's absmax, and writes 8 codes a chunk. The host launches it
// where STAGES rows fit in shared memory, N is a multiple of 8, the pointers 16-byte aligned and
// N / 8 ≤ SILU_STAGED_HELD · blockDim (cublaslt.ts siluMulQuantizeBf16).
#define SILU_STAGED_HELD 4
template <int STAGES>
__device__ __forceinline__ void silu_mul_quantize_staged(const u16* __restrict__ gate, const u16* __restrict__ up,
                                                          u32* __restrict__ codes, float* __restrict__ scales, int N, int T) {
#if __CUDA_ARCH__ >= 890
  extern __shared__ __align__(16) unsigned char silu_smem[];
  const int chunks = N / 8, stride = blockDim.x;
  const u32 base = shared_addr(silu_smem);
  const u32 stageBytes = 2u * N * 2u;  // a row of gate, then a row of up
  // Row t into stage s (nothing past the last row), always one commit group, so a thread's groups
  // count rows whether or not they had anything to copy.
  auto issue = [&](int t, int s) {
    if (t < T) {
      const u16* g = gate + (u64)t * N;
      const u16* u = up + (u64)t * N;
      const u32 at = base + s * stageBytes;
      for (int c = threadIdx.x; c < chunks; c += stride) {
        cp_async16(at + 16u * c, g + 8 * c, true);
        cp_async16(at + N * 2u + 16u * c, u + 8 * c, true);
      }
    }
    cp_async_commit();
  };
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) issue(blockIdx.x + s * gridDim.x, s);
  int it = 0;
  for (int t = blockIdx.x; t < T; t += gridDim.x, it++) {
    // The stage read in the previous round takes the row STAGES - 1 ahead: every thread finished
    // reading it before that round's block_max barrier.
    issue(t + (STAGES - 1) * gridDim.x, (it + STAGES - 1) % STAGES);
    asm volatile("cp.async.wait_group %0;" ::"n"(STAGES - 1) : "memory");  // this thread's copies of row t are in
    __syncthreads();                                                        // and everyone's
    const unsigned char* row = silu_smem + (it % STAGES) * stageBytes;
    float held[SILU_STAGED_HELD][8];
    float m = 0.f;
#pragma unroll
    for (int j = 0; j < SILU_STAGED_HELD; j++) {
      const int c = threadIdx.x + j * stride;
      if (c < chunks) {
        const uint4 g = *reinterpret_cast<const uint4*>(row + 16 * c);
        const uint4 u = *reinterpret_cast<const uint4*>(row + N * 2 + 16 * c);
        silu_times4(make_uint4(g.x, g.y, u.x, u.y), held[j]);
        silu_times4(make_uint4(g.z, g.w, u.z, u.w), held[j] + 4);
        m = absmax4(m, held[j][0], held[j][1], held[j][2], held[j][3]);
        m = absmax4(m, held[j][4], held[j][5], held[j][6], held[j][7]);
      }
    }
    const float sc = e4m3_row_scale(block_max(m));
    if (threadIdx.x == 0) scales[t] = sc;
    uint2* out = reinterpret_cast<uint2*>(codes + (u64)t * (N / 4));
#pragma unroll
    for (int j = 0; j < SILU_STAGED_HELD; j++) {
      const int c = threadIdx.x + j * stride;
      const float* v = held[j];
      if (c < chunks) out[c] = make_uint2(e4m3x4(v[0], v[1], v[2], v[3], sc), e4m3x4(v[4], v[5], v[6], v[7], sc));
    }
  }
  cp_async_wait_all();  // no copy outlives the block (the last rounds' groups are empty)
#else
  __trap();
#endif
}
extern "C" __global__ void __launch_bounds__(1024) silu_mul_quantize_bf16_e4m3_staged2(const u16* __restrict__ gate, const u16* __restrict__ up,
                                                                                      u32* __restrict__ codes, float* __restrict__ scales, int N, int T) {
  silu_mul_quantize_staged<2>(gate, up, codes, scales, N, T);
}
extern "C" __global__ void __launch_bounds__(1024) silu_mul_quantize_bf16_e4m3_staged3(const u16* __restrict__ gate, const u16* __restrict__ up,
                                                                                      u32* __restrict__ codes, float* __restrict__ scales, int N, int T) {
  silu_mul_quantize_staged<3>(gate, up, codes, scales, N, T);
}

// The FP8 GEMM's epilogue: y[t, n] = d[t, n] · xScale[t] · wScale[n] (+ bias[n]), d [T, ldd] float32
// from cuBLASLt (ldd ≥ N, padded to 16 bytes); d may be y itself (ldd = N). Grid (columns, rows).
extern "C" __global__ void scale_fp8_product(const float* d, const float* __restrict__ xScale, const float* __restrict__ wScale,
                                             const float* __restrict__ bias, float* y, int T, int N, int ldd) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const float ws = wScale[n], b = bias ? bias[n] : 0.f;
  for (int t = blockIdx.y; t < T; t += gridDim.y) y[(u64)t * N + n] = d[(u64)t * ldd + n] * (xScale[t] * ws) + b;
}
