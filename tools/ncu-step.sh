#!/usr/bin/env bash
# Nsight Compute over one decode step (bench/cuda-step-profile.ts): each kernel's GPU time, summed by
# kernel. Arguments go to the profile script (e.g. --batch 8 --quantization w4a16).
set -euo pipefail
cd "$(dirname "$0")/.."
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
plan=$(node dist/bench/cuda-step-profile.js --steps 6 "$@" | tee /dev/stderr | grep -o -- '--launch-skip [0-9]* --launch-count [0-9]*')
# shellcheck disable=SC2086
"$NCU" $plan --clock-control none --metrics gpu__time_duration.sum --csv node dist/bench/cuda-step-profile.js --steps 6 "$@" > /tmp/ncu-step.csv 2>/tmp/ncu-step.err || { tail -20 /tmp/ncu-step.err; exit 1; }
node dist/bench/ncu-summary.js /tmp/ncu-step.csv
