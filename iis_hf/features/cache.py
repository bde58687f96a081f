"""The feature cache: one safetensors file per chunk of rows, in a folder named by what made them.

The folder's name is a hash of everything that changes the features (the model's config and
weights, the dataset's fingerprint, the image processor, the columns, layer, pooling, precision
and chunk size), so a rerun with the same inputs finds its chunks and anything else starts afresh.
Each chunk is written to a temporary name and renamed, so a killed or concurrent run leaves every
chunk complete or absent; temporary files left by killed writers are removed later.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..files import read_safetensors, remove_stale_temporaries, save_safetensors_atomic, write_json_atomic

CACHE_FORMAT_VERSION = 1
# Temporary files older than this in a cache folder were left by a killed writer and are deleted.
STALE_TEMPORARY_AGE_S = 3600.0
_FP16_MAX = torch.finfo(torch.float16).max


class FeatureCache:
    """The chunk files of one extraction under ``cache_dir/<key>/``."""

    def __init__(self, cache_dir: str | os.PathLike, settings: dict[str, Any]):
        self.settings = settings
        self.key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
        self.folder = Path(cache_dir) / self.key

    def write_settings(self, **description: Any) -> None:
        """`settings.json`: what the chunks were computed from, for a person reading the folder."""
        write_json_atomic(self.folder / "settings.json", {**self.settings, "key": self.key, **description})

    def path(self, chunk: int) -> Path:
        return self.folder / f"chunk-{chunk:06d}.safetensors"

    def write(self, chunk: int, features: torch.Tensor, labels: torch.Tensor | None, bounds) -> None:
        """Features as float16 (float32 when a value exceeds float16's range), labels as int64."""
        fits_fp16 = bool(features.abs().max() <= _FP16_MAX) if features.numel() else True
        tensors = {"features": features.to(torch.float16) if fits_fp16 else features.float()}
        if labels is not None:
            tensors["labels"] = labels.to(torch.int64)
        save_safetensors_atomic(
            tensors, self.path(chunk), metadata={"start": str(bounds[0]), "stop": str(bounds[1])}
        )

    def read(self, chunk: int, bounds, has_labels: bool):
        """A cached chunk as (features float32, labels or None), or None when absent or not as expected."""
        path = self.path(chunk)
        if not path.is_file():
            return None
        try:
            tensors = read_safetensors(path, "feature cache chunk")
        except ValueError:
            return None
        features = tensors.get("features")
        rows = bounds[1] - bounds[0]
        if features is None or features.dim() != 2 or features.shape[0] != rows:
            return None
        labels = tensors.get("labels")
        if has_labels and (labels is None or labels.shape != (rows,)):
            return None
        return features.float(), (labels if has_labels else None)

    def complete(self, num_chunks: int) -> bool:
        return all(self.path(c).is_file() for c in range(num_chunks))

    def remove_stale_temporaries(self) -> None:
        remove_stale_temporaries(self.folder, STALE_TEMPORARY_AGE_S)


def processor_config(image_processor) -> Any:
    """The image processor's settings as JSON-ready data (its class name left out)."""
    to_dict = getattr(image_processor, "to_dict", None)
    if callable(to_dict):
        data = dict(to_dict())
        data.pop("processor_class", None)
        return json.loads(json.dumps(data, sort_keys=True, default=str))
    return repr(image_processor)
