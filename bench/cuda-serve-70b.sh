#!/usr/bin/env bash
# Llama-3.3-70B W4A16 (dummy weights at the real shapes) served by `tachyon serve` on one GPU and
# measured by `tachyon bench serve` at input 2048 / output 128 tokens, concurrency 1 and 8: the
# configuration of NVIDIA's Jetson Thor table for this model (6.27 and 41.5 output tok/s there,
# reference/perf-anchors.md). Any preset and method serve the same way (e.g. --model llama-3.1-8b
# --quantization fp8, the edge guide's workload). Result JSON (vLLM's keys) lands in bench/results/.
#
#   bash bench/cuda-serve-70b.sh [--model llama-3.3-70b] [--quantization w4a16] [--kv-cache-dtype auto] [--port 8000]
#                                [--concurrency "1 8"] [--max-num-seqs 8]
# (--concurrency 16 --max-num-seqs 16 measures decode steps of more than 8 sequences.)
#
# Needs a GPU with about 45 GB free (35 GB of 4-bit weights; the KV cache for 8 × 4096 tokens is 10 GB
# in bf16, the default, 20 GB in float32). Measures; never passes or fails.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=llama-3.3-70b
QUANT=w4a16
KV=auto
PORT=8000
CONCURRENCY="1 8"
MAX_SEQS=8
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL=$2; shift 2 ;;
    --quantization) QUANT=$2; shift 2 ;;
    --kv-cache-dtype) KV=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --max-num-seqs) MAX_SEQS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

RESULTS=bench/results
mkdir -p "$RESULTS"
DATE=$(date -u +%Y-%m-%d)
LOG=$(mktemp)

# The server: dummy weights made on the GPU, a context of 4096, up to MAX_SEQS sequences at once.
node bin/tachyon.js serve --model "$MODEL" --load-format dummy --quantization "$QUANT" --device cuda \
  --kv-cache-dtype "$KV" --max-model-len 4096 --max-num-seqs "$MAX_SEQS" --port "$PORT" >"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  if node -e "fetch('http://127.0.0.1:$PORT/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"; then break; fi
  if ! kill -0 $SERVER 2>/dev/null; then cat "$LOG"; echo "the server exited" >&2; exit 1; fi
  sleep 1
done
cat "$LOG"

# The random dataset's prompts are token ids of the server's tokenizer (a preset has none of its own:
# the server uses the embedded model's, see docs/cuda.md), so the client reads the same one.
for CONC in $CONCURRENCY; do
  PROMPTS=$((CONC == 1 ? 4 : 2 * CONC))
  node bin/tachyon.js bench serve --port "$PORT" --tokenizer models/tachyon-tiny \
    --dataset-name random --random-input-len 2048 --random-output-len 128 --ignore-eos \
    --num-prompts "$PROMPTS" --max-concurrency "$CONC" --num-warmups 1 --disable-tqdm \
    --metadata "gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo unknown)" "quantization=$QUANT" "load_format=dummy" "kv_cache_dtype=$KV" \
    --save-result --result-dir "$RESULTS" --result-filename "cuda-serve-$MODEL-$QUANT-c$CONC-$DATE.json"
done
