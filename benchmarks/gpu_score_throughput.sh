#!/usr/bin/env bash
# The prepared GPU run of issue 22: `iis-hf score`'s stages end to end on 100k synthetic 256 px JPEGs
# (benchmarks/gpu_score_throughput.py), images per second and the stage that bounds it, once with the
# tensor preprocessing path (the GPU default of the script) and, if time is left, with the processor.
# One call on a lent H100/H200; wheels for the packages the GPU image lacks travel in .whl/.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
echo "== 100k JPEGs, ViT-B/16, bf16, tensor preprocessing"
timeout "${STEP_TIMEOUT:-420}" python3 benchmarks/gpu_score_throughput.py --num-images "${NUM_IMAGES:-100000}" \
  --device cuda --workdir /tmp/iis_gpu_score 2>&1 | grep -vE "Warning|warn\(|torchvision" | tee "$OUT/gpu_score_tensor.txt" | tail -12
echo "== the same images, processor preprocessing"
timeout "${STEP_TIMEOUT2:-150}" python3 benchmarks/gpu_score_throughput.py --num-images "${NUM_IMAGES:-100000}" \
  --device cuda --workdir /tmp/iis_gpu_score --preprocessing processor --loader-images 5000 2>&1 \
  | grep -vE "Warning|warn\(|torchvision" | tee "$OUT/gpu_score_processor.txt" | tail -4
echo done
