#!/usr/bin/env bash
# The second prepared GPU run (issues 5 and 6), one call on a lent H100/H200:
#   1. the heads' per-epoch time at ImageNet scale after the launch-bound fixes (one sort per stack,
#      no per-batch host-to-device copy, fused Adam), with a profile of one epoch;
#   2. a correctness check of the CUDA path against the reference pipeline on small features;
#   3. examples/research_projects/iis_paper/reproduce_findings.py's checkpoint grid for the "-l" models, per dataset.
# Wheels for the packages the GPU image lacks travel in .whl/ (see the device tool's README).
set -uo pipefail
source benchmarks/gpu_env.sh  # run from the repository root
quiet() { grep -vE "Warning|warn\(|torchvision|USDT"; }
echo "== heads anchor"
timeout 150 python3 benchmarks/bench_heads.py --anchor --no-in-turn --profile --rows 1281167 --dim 768 \
  --num-concepts 200 --classes 1000 --device cuda 2>&1 | quiet | tee "$OUT/heads_anchor.txt" | tail -22
echo "== CUDA heads vs the reference pipeline (CPU), small"
timeout 120 python3 benchmarks/bench_heads.py --rows 20000 --classes 100 --epochs 5 --device cuda 2>&1 | quiet | tee "$OUT/heads_check.txt" | tail -13
for dataset in digits animals; do
  echo "== reproduce_findings, large models, $dataset"
  timeout "${FINDINGS_TIMEOUT:-170}" python3 examples/research_projects/iis_paper/reproduce_findings.py --datasets "$dataset" \
    --models resnet-l vit-l convnext-l --skip-finetuning --device cuda --output-dir "/tmp/findings_$dataset" \
    > "$OUT/findings_$dataset.log" 2>&1
  echo "rc=$?"; quiet < "$OUT/findings_$dataset.log" | tail -4
  cp "/tmp/findings_$dataset/results.json" "$OUT/gpu_$dataset.json" 2>/dev/null
done
echo done
