#!/usr/bin/env bash
# The timm part of scoring "the way HF users hold it", for a lent GPU machine (its image has timm and
# torchvision; this project's CPU machine cannot import torchvision beside its torch): a random-init
# timm ResNet-18 saved in the Hub's timm layout (config.json with `architecture`, no `model_type`), then
# `iis-hf score` and `iis-hf finetune` on it, end to end. Run from the repository root; wheels for what
# the image lacks travel in .whl/ (see the device tool's README).
set -uo pipefail
source benchmarks/gpu_env.sh
work=/tmp/timm_check && rm -rf "$work" && mkdir -p "$work"
python3 - "$work" <<'PY' || exit 1
import json, sys
from pathlib import Path
import timm
from iis_hf.data import load_digits_dataset
work = Path(sys.argv[1])
model = timm.create_model("resnet18", pretrained=False, num_classes=10)
folder = work / "timm-resnet18"
folder.mkdir()
from safetensors.torch import save_file
save_file(model.state_dict(), str(folder / "model.safetensors"))
cfg = {"architecture": "resnet18", "num_classes": 10, "num_features": 512,
       "pretrained_cfg": {**model.pretrained_cfg, "input_size": [3, 64, 64]}}
(folder / "config.json").write_text(json.dumps(cfg, default=str))
load_digits_dataset(image_size=64).save_to_disk(str(work / "digits"))
print("timm", timm.__version__, "folder", sorted(p.name for p in folder.iterdir()))
PY
echo "== iis-hf score on a timm-layout folder"
timeout 240 python3 -m iis_hf.cli score --model "$work/timm-resnet18" --dataset "$work/digits" \
  --output-dir "$work/score" --max-train-samples 500 --device cuda 2>&1 | grep -vE "Warning|warn\(" | tail -14
echo "rc=$?"
echo "== iis-hf finetune on it (the transform reads the input size from data_config)"
timeout 240 python3 -m iis_hf.cli finetune --model_name_or_path "$work/timm-resnet18" --dataset_name "$work/digits" \
  --output_dir "$work/ft" --num_train_epochs 1 --per_device_train_batch_size 64 --max_train_samples 500 \
  --bf16 --report_to none 2>&1 | grep -vE "Warning|warn\(" | tail -8
echo "rc=$?"
echo done
