// kernels/sampling.cu's sample_rows on the CPU (emu.h), driven by test/cuda-sampling-emulated.test.ts.
// stdin, little-endian: int32 rows, cols, n, threads; float32 x[rows × cols]; float64 params[rows × 8]
// (as src/backend/cuda/sampling.ts packs them); int32 distRows, distCols; float32 dist[distRows ×
// distCols] (sampled drafts' distributions; 0 × 0 for none). stdout: int32 ids[rows], then float32
// prob[rows] (p of each row's excluded draft or of a distribution row's token, 0 without either),
// then dist as the kernel left it.
#include "emu.h"
// The kernel finds the second half of `out` (p of excluded drafts) from the grid's size.
inline EmuDim gridDim;
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
  int d[2];
  if (fread(d, 4, 2, stdin) != 2) return 5;
  std::vector<float> dist((size_t)d[0] * d[1]);
  if (fread(dist.data(), 4, dist.size(), stdin) != dist.size()) return 6;
  // ids (-2 until written), then p's float32 bits (rows without an excluded draft leave theirs at 0).
  std::vector<int> out(2 * (size_t)rows, 0);
  std::fill(out.begin(), out.begin() + rows, -2);
  // The row passes a block per (row, warp segment of sample_rows), then the block a row that draws,
  // as src/backend/cuda/sampling.ts launches them (the passes' blocks at 64 threads here).
  const int segs = threads / 32;
  std::vector<RowPre> pre(rows);
  emu::launch(rows * segs, 64, [&] { sample_rows_max(x.data(), pre.data(), cols, n, segs); });
  emu::launch(rows * segs, 64, [&] { sample_rows_weights(x.data(), p.data(), pre.data(), cols, n, segs); });
  gridDim.x = rows;
  emu::launch(rows, threads, [&] { sample_rows(x.data(), p.data(), pre.data(), out.data(), dist.empty() ? nullptr : dist.data(), cols, n, d[1]); });
  if (fwrite(out.data(), 4, out.size(), stdout) != out.size()) return 4;
  if (fwrite(dist.data(), 4, dist.size(), stdout) != dist.size()) return 7;
  return 0;
}
