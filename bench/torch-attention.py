# A reference for bench/cuda-attention.ts's prefill rows: PyTorch's scaled_dot_product_attention on
# the same GPU, the same shapes (Llama-3.1-8B: 32 query heads, 8 KV heads, head_dim 128, bf16, causal)
# and the same method (device time per call from CUDA events, an L2 flush of 256 MiB before every
# call, median over calls), for each SDPA backend this PyTorch has (FlashAttention-2, cuDNN,
# memory-efficient). Run on the GPU machine, which has PyTorch but no Node:
#
#   python3 bench/torch-attention.py [--reps 9] [--output FILE]
#
# Prints a markdown table and saves JSON (GPU, PyTorch and CUDA versions) under bench/results/.
# Measures; never passes or fails. TFLOP/s counts QKᵀ and PV over visible positions only
# (4 · head_dim · heads per (query, visible position)), as cuda-attention.ts does.

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128

parser = argparse.ArgumentParser()
parser.add_argument("--reps", type=int, default=9)
parser.add_argument("--output")
args = parser.parse_args()

dev = torch.device("cuda")
flush = torch.empty(256 * 2**20, dtype=torch.uint8, device=dev)


def device_ms(fn, reps):
    """Median device time of fn over reps calls, each after an L2 flush (one warm-up call first)."""
    fn()
    times = []
    for _ in range(reps):
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


# (case, cached positions before the chunk, chunk tokens): the cases of cuda-attention.ts.
CASES = [("2048 tokens from 0", 0, 2048), ("512 tokens from 0", 0, 512), ("512-token chunk after 1536 cached", 1536, 512)]
BACKENDS = [("FlashAttention-2 (SDPA flash)", SDPBackend.FLASH_ATTENTION), ("cuDNN (SDPA)", SDPBackend.CUDNN_ATTENTION), ("memory-efficient (SDPA)", SDPBackend.EFFICIENT_ATTENTION)]

torch.manual_seed(0)
rows = []
for name, start, n in CASES:
    total = start + n
    q = torch.randn(1, HEADS, n, HEAD_DIM, dtype=torch.bfloat16, device=dev)
    k = torch.randn(1, KV_HEADS, total, HEAD_DIM, dtype=torch.bfloat16, device=dev)
    v = torch.randn(1, KV_HEADS, total, HEAD_DIM, dtype=torch.bfloat16, device=dev)
    visible = sum(start + i + 1 for i in range(n))
    flops = 4 * HEAD_DIM * HEADS * visible
    for label, backend in BACKENDS:
        # GQA as the kernels see it: K and V repeated to every query head of their group (what
        # enable_gqa does inside SDPA where a backend lacks it); the repeat is outside the timing.
        kr, vr = k.repeat_interleave(HEADS // KV_HEADS, dim=1), v.repeat_interleave(HEADS // KV_HEADS, dim=1)
        if start == 0:
            call = lambda: F.scaled_dot_product_attention(q, kr, vr, is_causal=True)  # noqa: E731
        else:
            mask = causal_lower_right(n, total)  # the chunk's last query sees every position
            call = lambda: F.scaled_dot_product_attention(q, kr, vr, attn_mask=mask)  # noqa: E731
        try:
            with sdpa_kernel(backend):
                ms = device_ms(call, args.reps)
            rows.append({"case": name, "tokens": n, "kernel": label, "ms": ms, "tflops": flops / (ms / 1000) / 1e12})
        except RuntimeError as e:
            rows.append({"case": name, "tokens": n, "kernel": label, "error": str(e).splitlines()[0][:200]})

print(f"\nPyTorch {torch.__version__} SDPA on {torch.cuda.get_device_name()}: prefill attention per layer, Llama-3.1-8B shapes, bf16, causal\n")
print("| case | kernel | ms | TFLOP/s |")
print("|---|---|---:|---:|")
for r in rows:
    print(f"| {r['case']} | {r['kernel']} | {r['ms']:.3f} | {r['tflops']:.1f} |" if "ms" in r else f"| {r['case']} | {r['kernel']} | — | {r['error']} |")

gpu = torch.cuda.get_device_name()
commit = os.environ.get("TACHYON_COMMIT")
if not commit:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        commit = "unknown"
result = {
    "bench": "torch-attention",
    "gpu": {"name": gpu, "computeCapability": "%d.%d" % torch.cuda.get_device_capability()},
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "cudnn": torch.backends.cudnn.version(),
    "machine": {"hostname": platform.node(), "python": platform.python_version(), "commit": commit, "date": datetime.datetime.now(datetime.timezone.utc).isoformat()},
    "reps": args.reps,
    "notes": "device ms per call, median over calls each after a 256 MiB L2 flush; K and V repeated to 32 heads (GQA) outside the timing; TFLOP/s = 4 · headDim · heads · Σ visible positions / time",
    "prefill": rows,
}
# The GPU's name as bench/machine.ts gpuResultFile writes it: no "NVIDIA ", runs of other characters as "-".
slug = re.sub(r"[^A-Za-z0-9]+", "-", re.sub(r"^NVIDIA\s+", "", gpu)).strip("-").lower()
out = args.output or os.path.join(os.path.dirname(__file__), "results", f"torch-attention-{slug}-{datetime.date.today().isoformat()}.json")
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as f:
    json.dump(result, f, indent=1)
print(f"\nsaved {out}")
