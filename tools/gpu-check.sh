#!/usr/bin/env bash
# Everything that needs an NVIDIA GPU, in one go: the CUDA test suites, then (unless --tests-only)
# the CUDA benchmarks. Run from a built checkout (npm run build) on the GPU machine; logs go to
# gpu-check-out/ and, with the benches' result JSON, into one archive $OUT/gpu-check.tgz when $OUT is
# set (the lent GPU machine returns few files). CI has no GPU and skips these suites.
#
#   bash tools/gpu-check.sh [--tests-only | --bench-only] [--tests "cuda-quant cuda-attention"] [--benches "cuda-decode cuda-prefill"]
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=gpu-check-out
mkdir -p "$LOGS"
MODE=all
TESTS="cuda-pdl cuda-rope-attention cuda-residual-add cuda-penalties cuda-logprobs cuda-logprobs-emulated cuda-mlp cuda-graphs step-graphs cuda-backend cuda-quant cuda-quant-mma cuda-quant-mma-q8 cuda-quant-sliced spec-argmax spec-sampled-verify cuda-sampling sample-rows cuda-cublaslt cuda-attention cuda-fused cuda-small-kernels cuda-gemv-mma greedy-argmax dummy-load kv-budget default-models llm engine eval hf-reference model-loading quant-online spec spec-engine spec-greedy spec-sampling cli"
BENCHES="cuda-sampling cuda-spec-sampled cuda-gemv cuda-gemv-mma cuda-quant-gemv cuda-quant-mma cuda-quant-mma-q8 cuda-attention cuda-small-kernels cuda-prefill cuda-decode cuda-decode-batches cuda-spec"
while [ $# -gt 0 ]; do
  case "$1" in
    --tests-only) MODE=tests; shift ;;
    --bench-only) MODE=bench; shift ;;
    --tests) TESTS=$2; shift 2 ;;
    --benches) BENCHES=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$LOGS/gpu.txt"
status=0
if [ "$MODE" != bench ]; then
  files=()
  for t in $TESTS; do [ -f "dist/test/$t.test.js" ] && files+=("dist/test/$t.test.js"); done
  # One process per file, files in parallel; the reporter prints each failure with its message.
  node --test --test-reporter=spec "${files[@]}" >"$LOGS/tests.log" 2>&1 || status=1
  grep -E "^ℹ (tests|pass|fail|skipped)|✖" "$LOGS/tests.log" | head -60
fi
if [ "$MODE" != tests ]; then
  for b in $BENCHES; do
    [ -f "dist/bench/$b.js" ] || continue
    echo "== $b"
    timeout 300 node --expose-gc "dist/bench/$b.js" >"$LOGS/bench-$b.log" 2>&1 || { echo "$b failed (exit $?)"; status=1; }
    grep -E "^\|" "$LOGS/bench-$b.log" | tail -30
  done
fi
if [ -n "${OUT:-}" ]; then tar czf "$OUT/gpu-check.tgz" "$LOGS" bench/results; fi
exit $status
