// Probe: what holds the one-token int4 tensor-core GEMV at ~50% of the copy bandwidth? (Its findings
// are in docs/cuda.md, "Streamed int4 kernels".) Standalone, run on the GPU machine:
//   nvcc -arch=sm_90a -O3 -std=c++17 -I src/backend/cuda/kernels -o bench/probes/int4-stream bench/probes/int4-stream.cu
//   ./bench/probes/int4-stream [N]      (N: only the shapes with N rows, e.g. for Nsight Compute)
// Per 8B-shaped matrix at one token, rotating over enough weight copies that nothing is served from
// L2, µs and GB/s, and each output's largest difference from the classic kernel's:
//   read:     a plain streaming read of the codes (the ceiling for a kernel of that size);
//   current:  the engine's classic gemv_mma_int4 (included from kernels/), split as planned;
//   streamed: the engine's gemv_mma_int4s (bitwise the classic: maxrel 0);
//   bulk:     the same decode + mma fed from a ring that one producer warp fills with cp.async.bulk
//             copies of a blocked layout (each 16-row × 256-column tile's codes and scales
//             contiguous), persistent blocks walking m-tiles; x from global as the classic kernel;
//   bulkx:    bulk with x staged in shared memory as bf16 pairs (the design the streamed kernel
//             follows in the engine's own layout);
//   bulkmem:  bulk's memory traffic with the decode replaced by an xor (its ceiling).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <cuda_runtime.h>
#include "gemv-mma-int4.cu"

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); exit(1); } } while (0)

// ---- ceiling --------------------------------------------------------------------------------------
__global__ void stream_read(const uint4* p, size_t n, u32* out) {
  u32 a = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const uint4 v = ld_w16(p + i);
    a ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (a == 0x12345678u) out[0] = a;
}

// ---- blocked layout: tile (mt, kt) = 128 uint4 of codes (load j = 2h + c of lane at [32j + lane])
// then 8 uint4 of scales (float [16 rows][2 groups]) --------------------------------------------------
constexpr int TILE_U4 = 136;
__global__ void to_blocked(const uint4* src, int loads, const float* scales, int G, int N, int KT, uint4* dst) {
  const int mt = blockIdx.x, kt = blockIdx.y;
  uint4* tile = dst + ((size_t)mt * KT + kt) * TILE_U4;
  const int i = threadIdx.x;  // 0..135
  if (i < 128) {
    const int j = i >> 5, lane = i & 31, g = lane >> 2, q = lane & 3, h = j >> 1, c = j & 1;
    const int row = min(mt * 16 + g + 8 * h, N - 1);
    tile[i] = src[(size_t)row * loads + 8 * kt + q + 4 * c];
  } else {
    float* s = reinterpret_cast<float*>(tile + 128);
    for (int f = 4 * (i - 128); f < 4 * (i - 127); f++) {
      const int r = f >> 1, gi = f & 1;
      const int row = min(mt * 16 + r, N - 1);
      s[f] = scales[(size_t)row * G + min(2 * kt + gi, G - 1)];
    }
  }
}

#define smem_addr smem_u32  // the helpers come from gemv-mma.cuh

// Both ring kernels: the barriers made, then warp 8's lane 0 streams every stage (up to 8 tiles of one
// m-tile, contiguous in the blocked layout) into the ring slot its consumers released. True for the
// producer warp, which then leaves.
template <int NS>
__device__ __forceinline__ bool ring_start(uint4* ring, u64* full, u64* empty, const uint4* blk, int KT, int mtiles) {
  if (threadIdx.x == 0) {
    for (int s = 0; s < NS; s++) mbar_init(&full[s], 1), mbar_init(&empty[s], 8);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if ((threadIdx.x >> 5) != 8) return false;
  if ((threadIdx.x & 31) == 0) {
    const int stagesPerTile = (KT + 7) / 8;
    int it = 0;
    for (int mt = blockIdx.x; mt < mtiles; mt += gridDim.x)
      for (int c = 0; c < stagesPerTile; c++, it++) {
        const int s = it % NS;
        if (it >= NS) mbar_wait(&empty[s], ((it / NS) - 1) & 1);
        const int bytes = min(8, KT - 8 * c) * TILE_U4 * 16;
        mbar_expect(&full[s], bytes);
        bulk_copy(ring + s * 8 * TILE_U4, blk + ((size_t)mt * KT + 8 * c) * TILE_U4, bytes, &full[s]);
      }
  }
  return true;
}

// A consumer warp's walk over one m-tile's stages (ring item `it` on, advanced): waits for each stage,
// calls work(tile, kt) on its k-tile (warp w takes k-tile w of the stage) if the stage has one, then
// frees the stage.
template <int NS, class Work>
__device__ __forceinline__ void ring_walk(const uint4* ring, u64* full, u64* empty, int KT, int& it, const Work& work) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int stagesPerTile = (KT + 7) / 8;
  for (int c = 0; c < stagesPerTile; c++, it++) {
    const int s = it % NS;
    mbar_wait(&full[s], (it / NS) & 1);
    const int kt = 8 * c + warp;
    if (kt < KT) work(ring + (s * 8 + warp) * TILE_U4, kt);
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[s]);
  }
}

// The m-tile's sums: each consumer warp's D fragment (acc, one token) into partial[par], then thread m < 16
// adds row m over the 8 warps and writes it. partial alternates between m-tiles, so one barrier a tile.
__device__ __forceinline__ void tile_finish(float (*partial)[8][32][4], int par, const float (&acc)[4], int mt, float* y, int N) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int i = 0; i < 4; i++) partial[par][warp][lane][i] = acc[i];
  asm volatile("bar.sync 1, 256;" ::: "memory");
  if (threadIdx.x < 16) {
    const int m = threadIdx.x, src = 4 * (m & 7), reg = 2 * (m >> 3);
    float v = partial[par][0][src][reg];
    for (int w = 1; w < 8; w++) v += partial[par][w][src][reg];
    if (mt * 16 + m < N) y[mt * 16 + m] = v;
  }
}

// Stage = up to 8 consecutive k-tiles of one m-tile (8 · 2176 bytes). Warp w of 8 consumers takes k-tile
// w of each stage; warp 8 produces. Blocks walk m-tiles blockIdx.x, + gridDim.x, ...
template <int NS, bool MEMONLY>
__global__ void __launch_bounds__(288, 1) i4_bulk(const uint4* blk, int KT, int mtiles, const float* x, int K, float* y, int N) {
  extern __shared__ __align__(128) uint4 ring[];
  __shared__ __align__(8) u64 full[NS], empty[NS];
  __shared__ float partial[2][8][32][4];
  const int lane = threadIdx.x & 31;
  if (ring_start<NS>(ring, full, empty, blk, KT, mtiles)) return;
  const int g = lane >> 2, q = lane & 3;
  const float* xrow[1] = {x};
  int it = 0, par = 0;
  for (int mt = blockIdx.x; mt < mtiles; mt += gridDim.x, par ^= 1) {
    float acc[1][4] = {{0.f, 0.f, 0.f, 0.f}};
    u32 junk = 0;
    ring_walk<NS>(ring, full, empty, KT, it, [&](const uint4* tile, int kt) {
      I4Stage<false, false> st;
#pragma unroll
      for (int j = 0; j < 4; j++) st.w[j >> 1][j & 1] = tile[32 * j + lane];
      const float* sc = reinterpret_cast<const float*>(tile + 128);
      st.s[0][0] = sc[2 * g], st.s[0][1] = sc[2 * g + 1], st.s[1][0] = sc[2 * (g + 8)], st.s[1][1] = sc[2 * (g + 8) + 1];
      if (MEMONLY) {
#pragma unroll
        for (int j = 0; j < 4; j++) junk ^= st.w[j >> 1][j & 1].x ^ st.w[j >> 1][j & 1].w;
        junk ^= __float_as_uint(st.s[0][0] + st.s[1][1]);
      } else {
        const float* xt[1] = {x + 16 * q + 256 * kt};
        i4_compute<false, false, 1>(st, kt, xt, xrow, K, q, acc);
      }
    });
    if (MEMONLY) acc[0][0] += __uint_as_float(junk & 0x007fffffu);
    tile_finish(partial, par, acc[0], mt, y, N);
  }
}


// x staged once per block as bf16 B pairs: for 8-column block b, u32 (c0,c4),(c1,c5),(c2,c6),(c3,c7);
// gsum[group] = the float32 sum of the group's bf16 x (for the biased decode).
// BIASED: the A operand is 128 + code (one lop3 a pair, no fma); the group sum is corrected by
// −(128 + 8)·gsum before the scale.
template <int NS, bool BIASED>
__global__ void __launch_bounds__(288, 1) i4_bulkx(const uint4* blk, int KT, int mtiles, const float* x, int K, float* y, int N) {
  extern __shared__ __align__(128) uint4 ring[];
  __shared__ __align__(8) u64 full[NS], empty[NS];
  __shared__ float partial[2][8][32][4];
  uint4* xs = ring + NS * 8 * TILE_U4;
  float* gsum = reinterpret_cast<float*>(xs + K / 8);
  const int lane = threadIdx.x & 31;
  if (ring_start<NS>(ring, full, empty, blk, KT, mtiles)) return;
  for (int b = threadIdx.x; b < K / 8; b += 256) {
    const float4 lo = ld_x(x + 8 * b), hi = ld_x(x + 8 * b + 4);
    xs[b] = make_uint4(bf16x2(lo.x, hi.x), bf16x2(lo.y, hi.y), bf16x2(lo.z, hi.z), bf16x2(lo.w, hi.w));
  }
  asm volatile("bar.sync 1, 256;" ::: "memory");
  if (BIASED) {
    for (int gr = threadIdx.x; gr < K / 128; gr += 256) {
      float sum = 0.f;
      for (int b = 16 * gr; b < 16 * gr + 16; b++) {
        const uint4 v = xs[b];
        const u32 w[4] = {v.x, v.y, v.z, v.w};
        for (int i = 0; i < 4; i++) sum += __uint_as_float(w[i] << 16) + __uint_as_float(w[i] & 0xffff0000u);
      }
      gsum[gr] = sum;
    }
    asm volatile("bar.sync 1, 256;" ::: "memory");
  }
  const int g = lane >> 2, q = lane & 3;
  int it = 0, par = 0;
  for (int mt = blockIdx.x; mt < mtiles; mt += gridDim.x, par ^= 1) {
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    ring_walk<NS>(ring, full, empty, KT, it, [&](const uint4* tile, int kt) {
      uint4 wv[2][2];
#pragma unroll
      for (int j = 0; j < 4; j++) wv[j >> 1][j & 1] = tile[32 * j + lane];
      const float* sc = reinterpret_cast<const float*>(tile + 128);
      const float2 s0 = *reinterpret_cast<const float2*>(sc + 2 * g), s1 = *reinterpret_cast<const float2*>(sc + 2 * (g + 8));
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int c2 = 0; c2 < 2; c2++)
#pragma unroll
          for (int j = 0; j < 2; j++) {
            const u32 w0 = word_at(wv[0][c2], 2 * hf + j), w1 = word_at(wv[1][c2], 2 * hf + j);
            u32 a[8];
#pragma unroll
            for (int i = 0; i < 4; i++) {
              if (BIASED) {
                a[2 * i] = ((w0 >> (4 * i)) & 0x000f000fu) | 0x43004300u;
                a[2 * i + 1] = ((w1 >> (4 * i)) & 0x000f000fu) | 0x43004300u;
              } else {
                a[2 * i] = nib_pair(w0, i, I4_SYM_NEGZ);
                a[2 * i + 1] = nib_pair(w1, i, I4_SYM_NEGZ);
              }
            }
            const uint4 bb = xs[(256 * kt + 128 * hf + 64 * c2 + 16 * q + 8 * j) >> 3];
            mma_bf16(d, a[0], a[1], a[2], a[3], bb.x, bb.y);
            mma_bf16(d, a[4], a[5], a[6], a[7], bb.z, bb.w);
          }
        const float sa = hf ? s0.y : s0.x, sb = hf ? s1.y : s1.x;
        if (BIASED) {
          const float corr = -136.f * gsum[2 * kt + hf];
          acc[0] = fmaf(d[0] + corr, sa, acc[0]);
          acc[1] = fmaf(d[1] + corr, sa, acc[1]);
          acc[2] = fmaf(d[2] + corr, sb, acc[2]);
          acc[3] = fmaf(d[3] + corr, sb, acc[3]);
        } else {
          acc[0] = fmaf(d[0], sa, acc[0]);
          acc[1] = fmaf(d[1], sa, acc[1]);
          acc[2] = fmaf(d[2], sb, acc[2]);
          acc[3] = fmaf(d[3], sb, acc[3]);
        }
      }
    });
    tile_finish(partial, par, acc, mt, y, N);
  }
}

// ---- host --------------------------------------------------------------------------------------------
__global__ void fill_rand(u32* p, size_t n, u32 seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    u32 v = (u32)i * 2654435761u ^ seed;
    v ^= v >> 13, v *= 0x5bd1e995u, v ^= v >> 15;
    p[i] = v;
  }
}
__global__ void fill_scales(float* p, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) p[i] = 0.01f + 0.001f * (i % 7);
}

int main(int argc, char** argv) {
  int dev = 0, sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  printf("%s, %d SMs\n", prop.name, sms);
  const int shapes[][2] = {{4096, 14336}, {14336, 4096}, {28672, 4096}, {6144, 4096}, {4096, 4096}, {1024, 4096}};
  const int reps = 40;
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  printf("%-12s %-18s %9s %9s %8s\n", "shape", "kernel", "us", "GB/s", "maxrel");
  for (auto& sh : shapes) {
    const int N = sh[0], K = sh[1];
    if (argc > 1 && atoi(argv[1]) != N) continue;  // one shape (for Nsight Compute)
    const int loads = K / 32, KT = K / 256, G = K / 128, mtiles = (N + 15) / 16;
    const size_t codeU4 = (size_t)N * loads, blkU4 = (size_t)mtiles * KT * TILE_U4;
    const size_t bytes = codeU4 * 16 + (size_t)N * G * 4;
    const int copies = (int)(400e6 / bytes) + 2;
    std::vector<uint4*> w(copies), b(copies);
    std::vector<float*> s(copies);
    for (int i = 0; i < copies; i++) {
      CK(cudaMalloc(&w[i], codeU4 * 16));
      CK(cudaMalloc(&s[i], (size_t)N * G * 4));
      CK(cudaMalloc(&b[i], blkU4 * 16));
      fill_rand<<<1024, 256>>>((u32*)w[i], codeU4 * 4, 77);  // the same weights in every copy
      fill_scales<<<1024, 256>>>(s[i], (size_t)N * G);
      to_blocked<<<dim3(mtiles, KT), TILE_U4>>>(w[i], loads, s[i], G, N, KT, b[i]);
    }
    float *x, *y0, *y1, *part;
    u32 *cnt, *sink;
    CK(cudaMalloc(&x, K * 4));
    CK(cudaMalloc(&y0, N * 4));
    CK(cudaMalloc(&y1, N * 4));
    std::vector<float> hx(K);
    for (int i = 0; i < K; i++) hx[i] = (float)((i * 37 % 101) - 50) / 50.f;
    CK(cudaMemcpy(x, hx.data(), K * 4, cudaMemcpyHostToDevice));
    const int tiles = mtiles;
    int S = 1;
    if (tiles < sms) S = std::max(1, std::min((2 * sms + tiles - 1) / tiles, KT / 4));
    CK(cudaMalloc(&part, (size_t)tiles * S * 16 * 4));
    CK(cudaMalloc(&cnt, tiles * 4));
    CK(cudaMemset(cnt, 0, tiles * 4));
    CK(cudaMalloc(&sink, 4));
    CK(cudaDeviceSynchronize());
    auto time = [&](const char* name, auto launch, double movedBytes) {
      for (int i = 0; i < copies; i++) launch(i);
      CK(cudaGetLastError());
      CK(cudaEventRecord(e0));
      for (int r = 0; r < reps; r++) launch(r % copies);
      CK(cudaEventRecord(e1));
      CK(cudaEventSynchronize(e1));
      CK(cudaGetLastError());
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      const double us = 1000.0 * ms / reps;
      return std::make_pair(us, movedBytes / us / 1e3);
    };
    auto report = [&](const char* name, std::pair<double, double> r, float* yy) {
      double maxrel = 0;
      if (yy) {
        std::vector<float> a(N), c(N);
        CK(cudaMemcpy(a.data(), y0, N * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(c.data(), yy, N * 4, cudaMemcpyDeviceToHost));
        double scale = 0;
        for (int i = 0; i < N; i++) scale = std::max(scale, (double)fabsf(a[i]));
        for (int i = 0; i < N; i++) maxrel = std::max(maxrel, fabs((double)a[i] - c[i]) / scale);
      }
      char sh2[32];
      snprintf(sh2, sizeof sh2, "%dx%d", N, K);
      printf("%-12s %-18s %9.2f %9.0f %8.1e\n", sh2, name, r.first, r.second, maxrel);
    };
    report("read", time("read", [&](int i) { stream_read<<<sms * 8, 256>>>(w[i], codeU4, sink); }, codeU4 * 16.0), nullptr);
    report("current", time("current", [&](int i) {
      gemv_mma_int4<<<dim3(tiles, S), MMA_THREADS>>>(w[i], loads, s[i], nullptr, G, 7, x, nullptr, y0, part, cnt, 1, N, K, S);
    }, bytes), nullptr);
    auto bulk = [&](const char* name, auto kern, int NS, int grid, bool check, bool withX = false) {
      const int smem = NS * 8 * TILE_U4 * 16 + (withX ? 2 * K + 4 * G : 0);
      CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
      report(name, time(name, [&](int i) { kern<<<grid, 288, smem>>>(b[i], KT, mtiles, x, K, y1, N); }, blkU4 * 16.0), check ? y1 : nullptr);
    };
    auto streamed = [&](const char* name, int T) {
      // A ring of 4 stages, x (a padded bf16 row a token) and the splits' sums, as gemv-mma-int4.ts int4StreamPlan sizes them.
      const int stages = 4, smem = stages * 16 * I4S_STAGE_ROW(false) + T * (2 * K + 16) + S * 8 * 32 * 16;
      CK(cudaFuncSetAttribute(gemv_mma_int4s, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
      const int grid = std::min(tiles * S, sms);
      report(name, time(name, [&](int i) {
        gemv_mma_int4s<<<grid, I4S_THREADS, smem>>>(w[i], loads, s[i], nullptr, G, 7, x, nullptr, y1, part, cnt, T, N, K, S, stages);
      }, bytes), y1);
    };
    streamed("streamed", 1);
    bulk("bulk ns3 g2", i4_bulk<3, false>, 3, 2 * sms, true);
    bulk("bulkx ns4 g1", i4_bulkx<4, false>, 4, sms, true, true);
    bulk("bulkmem ns4 g2", i4_bulk<4, true>, 4, 2 * sms, false);
    for (int i = 0; i < copies; i++) cudaFree(w[i]), cudaFree(s[i]), cudaFree(b[i]);
    cudaFree(x), cudaFree(y0), cudaFree(y1), cudaFree(part), cudaFree(cnt), cudaFree(sink);
  }
  return 0;
}
