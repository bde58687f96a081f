"""Run `extract_features` in every process of an `accelerate launch` / `torchrun` job (tests only).

usage: extract_distributed.py MODEL_DIR OUT_DIR CACHE_DIR [NUM_ROWS]

Each rank saves what it got back, without a cache (`rank{r}-nocache.safetensors`), with a fresh cache
(`rank{r}-cache.safetensors`) and again from that cache (`rank{r}-cached.safetensors`), plus how many
model forwards each of those runs made, so the test can compare every rank with a 1-process run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for iis_hf

from conftest import make_image_dataset

from iis_hf.features import extract_features
from iis_hf.features.backbones import load_vision_model
from iis_hf.files import save_safetensors_atomic, write_json_atomic

CHUNK_SIZE = 4
BATCH_SIZE = 3


def main() -> None:
    model_dir, out_dir, cache_dir = sys.argv[1:4]
    num_rows = int(sys.argv[4]) if len(sys.argv) > 4 else 13
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    dataset = make_image_dataset(num_classes=3, per_class=5).select(range(num_rows))
    model = load_vision_model(model_dir)
    calls = {"n": 0}
    model.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    forwards = {}
    for name, cache in (("nocache", None), ("cache", cache_dir), ("cached", cache_dir)):
        calls["n"] = 0
        result = extract_features(
            model, dataset, chunk_size=CHUNK_SIZE, batch_size=BATCH_SIZE, cache_dir=cache, progress=False
        )
        forwards[name] = calls["n"]
        save_safetensors_atomic(
            {"features": result.features, "labels": result.labels},
            Path(out_dir) / f"rank{rank}-{name}.safetensors",
            metadata={"num_processes": str(world)},
        )
    write_json_atomic(Path(out_dir) / f"rank{rank}-forwards.json", forwards)


if __name__ == "__main__":
    main()
