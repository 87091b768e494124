// kernels/logprobs.cu's logprob_rows on the CPU (emu.h), driven by test/cuda-logprobs-emulated.test.ts.
// stdin, little-endian: int32 rows, cols, n; float32 x[rows × cols]; int32 tokens[rows].
// stdout: float64 sums[rows], then int32 out[rows × LP_STRIDE].
#include "emu.h"
#include "logprobs.cu"
#include <cstdio>

int main() {
  int h[3];
  if (fread(h, 4, 3, stdin) != 3) return 1;
  const int rows = h[0], cols = h[1], n = h[2];
  std::vector<float> x((size_t)rows * cols);
  std::vector<int> tokens(rows);
  if (fread(x.data(), 4, x.size(), stdin) != x.size()) return 2;
  if (fread(tokens.data(), 4, tokens.size(), stdin) != tokens.size()) return 3;
  std::vector<double> sums(rows, -1.0);
  std::vector<int> out((size_t)rows * LP_STRIDE, -7);
  emu::launch(rows, LP_THREADS, [&] { logprob_rows(x.data(), tokens.data(), cols, n, sums.data(), out.data()); });
  if (fwrite(sums.data(), 8, sums.size(), stdout) != sums.size()) return 4;
  if (fwrite(out.data(), 4, out.size(), stdout) != out.size()) return 5;
  return 0;
}
