#!/usr/bin/env bash
# The third prepared GPU run (issue 5): head training with each full batch's step replayed from a
# CUDA graph. First the same fit with and without graphs (accuracies, weights), then the per-epoch
# time at ImageNet scale with graphs, without, and with again, then the check against the reference.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
ANCHOR="--anchor --no-in-turn --rows 1281167 --dim 768 --num-concepts 200 --classes 1000 --device cuda"
echo "== graphed vs eager, same fit"
timeout 120 python3 benchmarks/check_graphed_heads.py --device cuda 2>&1 | tail -12
for flags in "" "--no-cuda-graphs" ""; do
  echo "== anchor $flags"
  timeout 90 python3 benchmarks/bench_heads.py $ANCHOR $flags 2>&1 | grep -v "^USDT" | tail -3
done
echo "== CUDA heads (graphed) vs the reference pipeline (CPU), small"
timeout 90 python3 benchmarks/bench_heads.py --rows 20000 --classes 100 --epochs 5 --device cuda 2>&1 | tail -2
echo done
