#!/usr/bin/env bash
# The prepared GPU run (issues 3 and 5): one call on a lent H100/H200. Wheels for the packages the
# GPU image lacks (or has older) travel in .whl/ (see the device tool's README).
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
run() { echo "== $*"; timeout "${STEP_TIMEOUT:-150}" python3 "$@" 2>&1 | grep -vE "Warning|warn\(|torchvision" | tail -4; }
# Issue 5: GPU anchors (random-init models, batch 256, bf16).
run benchmarks/bench_extract.py --arch vit-base --device cuda --precision bf16 --batch-size 256 --images 3072 --num-workers 12 --repeats 2 | tee "$OUT/extract_vit.txt"
run benchmarks/bench_extract.py --arch resnet-50 --device cuda --precision bf16 --batch-size 256 --images 3072 --num-workers 12 --repeats 2 | tee "$OUT/extract_resnet.txt"
run benchmarks/bench_heads.py --anchor --rows 1281167 --dim 768 --num-concepts 200 --classes 1000 --device cuda | tee "$OUT/heads_anchor.txt"
# Issue 3: a ViT-B/16-sized model, a few hundred steps, bf16 and fp16, with and without the IIS loss.
run benchmarks/bench_trainer_overhead.py --arch vit-base --image-size 224 --device cuda --bf16 --batch-size 64 --steps 100 --warmup 10 --repeats 2 --num-labels 1000 | tee "$OUT/trainer_bf16.txt"
run benchmarks/bench_trainer_overhead.py --arch vit-base --image-size 224 --device cuda --fp16 --batch-size 64 --steps 100 --warmup 10 --repeats 2 --num-labels 1000 | tee "$OUT/trainer_fp16.txt"
echo done
