// kernels/sampling.cu's sample_rows on the CPU (emu.h), driven by test/cuda-sampling-emulated.test.ts.
// stdin, little-endian: int32 rows, cols, n, threads; float32 x[rows × cols]; float64 params[rows × 8]
// (as src/backend/cuda/sampling.ts packs them). stdout: int32 ids[rows].
#include "emu.h"
#include "sampling.cu"
#include <cstdio>

int main() {
  int h[4];
  if (fread(h, 4, 4, stdin) != 4) return 1;
  const int rows = h[0], cols = h[1], n = h[2], threads = h[3];
  std::vector<float> x((size_t)rows * cols);
  std::vector<double> p((size_t)rows * SAMPLE_PARAMS);
  if (fread(x.data(), 4, x.size(), stdin) != x.size()) return 2;
  if (fread(p.data(), 8, p.size(), stdin) != p.size()) return 3;
  std::vector<int> out(rows, -2);
  emu::launch(rows, threads, [&] { sample_rows(x.data(), p.data(), out.data(), cols, n); });
  if (fwrite(out.data(), 4, rows, stdout) != (size_t)rows) return 4;
  return 0;
}
