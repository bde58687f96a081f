"""The feature cache: one safetensors file per chunk of rows, in a folder named by what made them.

The folder's name is a hash of everything that changes the features (the model's config and
weights, the dataset's fingerprint, the image processor and its backend, the versions of torch,
transformers and torchvision, the columns, layer, pooling, precision and chunk size), so a rerun with
the same inputs finds its chunks and anything else starts afresh. The backend matters although the
processor's settings are the same: installing torchvision switches transformers' processors from PIL
to torchvision, which moves pixel values by up to 2/255, so a PIL-backend extraction is never reused
for a torchvision run (nor one made by another torch or transformers version).
Each chunk is written to a temporary name and renamed, so a killed or concurrent run leaves every
chunk complete or absent; temporary files left by killed writers are removed later.

A chunk holds exactly the float32 features the extraction produced, so that a cache changes only the
time a run takes, never its features nor its score (a cached run and an uncached one are bit-identical).
Earlier versions stored every chunk in float16: the features of a cached run were then rounded (up to
5e-4 relative) and its IIS moved (0.6550 uncached vs 0.6652 cached on a random-init ResNet). Rounding
the uncached features too was not an option: `extract_features` promises the model's own pooled output
(a classification head applied to it gives the model's logits; concept vectors and `iis_hf.explain`
rely on it to 1e-4), which float16 breaks. A chunk is stored narrower only where that is lossless
(`storage_dtype`: features extracted under fp16 or bf16 autocast often are).

A chunk is trusted only after it passes its check: its metadata records, when it was written, a
sha256 of its tensors' bytes, their shapes and dtypes, the label range, whether the features were
finite and the rows it holds. A chunk damaged, edited or written by an older format fails, is said
in a `FeatureCacheWarning` and is extracted again; it is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ..files import remove_stale_temporaries, save_safetensors_atomic, write_json_atomic

# 2: every chunk carries its checksum and record (version 1 chunks fail); 3: features stored exactly
# (version 2 rounded them to float16), so no version-2 chunk is reused: its values differ
CACHE_FORMAT_VERSION = 3
# Temporary files older than this in a cache folder were left by a killed writer and are deleted.
STALE_TEMPORARY_AGE_S = 3600.0
# The dtypes a chunk's features may be stored in, narrowest first: the first that holds them exactly.
FEATURE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_NO_LABEL = -1  # what `datasets.ClassLabel` stores for a row without a label

Bounds = tuple[int, int]
Part = tuple[torch.Tensor, torch.Tensor | None]


class FeatureCacheWarning(UserWarning):
    """A cached chunk failed its check and is recomputed (filter it by this class, not by its text)."""


class FeatureCache:
    """The chunk files of one extraction under ``cache_dir/<key>/``."""

    def __init__(self, cache_dir: str | os.PathLike, settings: dict[str, Any]):
        self.settings = settings
        self.key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
        self.folder = Path(cache_dir) / self.key
        self.width: int | None = None  # the feature width every chunk must have, once known
        self.failed: dict[int, str] = {}  # the chunks that failed their check in this run, and why

    def write_settings(self, **description: Any) -> None:
        """`settings.json`: what the chunks were computed from, for a person reading the folder."""
        write_json_atomic(self.folder / "settings.json", {**self.settings, "key": self.key, **description})

    def path(self, chunk: int) -> Path:
        return self.folder / f"chunk-{chunk:06d}.safetensors"

    def write(self, chunk: int, features: torch.Tensor, labels: torch.Tensor | None, bounds: Bounds) -> None:
        """Features exactly as extracted (`storage_dtype`), labels as int64, and the record a later read
        checks them against."""
        features = features.detach().float()
        tensors = {"features": features.to(storage_dtype(features))}
        if labels is not None:
            tensors["labels"] = labels.to(torch.int64)
        tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
        metadata = {"start": str(bounds[0]), "stop": str(bounds[1]), **chunk_record(tensors)}
        try:
            save_safetensors_atomic(tensors, self.path(chunk), metadata=metadata)
        except OSError as err:
            if chunk not in self.failed:
                raise
            raise ValueError(
                self._unusable(chunk, f"{self.failed[chunk]}; rewriting it failed: {err}")
            ) from err
        self.width = features.shape[1]

    def to_compute(
        self,
        chunks: Sequence[int],
        bounds: Sequence[Bounds],
        has_labels: bool,
        num_classes: int | None = None,
    ) -> list[int]:
        """The chunks of `chunks` to extract: absent ones, and ones failing their check (each warned).

        The width the chunks must share is the model's once it has written one, else the most common
        width among the chunks that pass everything else: a chunk cut to another width then fails.
        """
        todo, widths = [], {}
        for c in chunks:
            tensors, problem = self.check(c, bounds[c], has_labels, num_classes, self.width)
            if tensors is not None:
                widths[c] = tensors["features"].shape[1]
                continue
            todo.append(c)
            if problem is not None:
                self._warn(c, problem)
        if self.width is None and widths:
            self.width = Counter(widths.values()).most_common(1)[0][0]
        for c, width in widths.items():
            if width != self.width:
                todo.append(c)
                self._warn(c, f"feature width {width}, the other chunks have {self.width}")
        return sorted(todo)

    def read(
        self,
        chunk: int,
        bounds: Bounds,
        has_labels: bool,
        num_classes: int | None = None,
        several_processes: bool = False,
    ) -> Part:
        """A chunk after extraction as (features float32, labels or None); if it is absent or still
        fails its check there is nothing left to recompute it with: a ValueError naming the fix."""
        tensors, problem = self.check(chunk, bounds, has_labels, num_classes, self.width)
        if tensors is None:
            shared = "; with several processes, cache_dir must be a folder all of them share"
            raise ValueError(
                self._unusable(chunk, problem or "missing after extraction")
                + (shared if several_processes else "")
            )
        features = tensors["features"]
        if self.width is None:
            self.width = features.shape[1]
        return features.float(), (tensors["labels"] if has_labels else None)

    def check(
        self,
        chunk: int,
        bounds: Bounds,
        has_labels: bool,
        num_classes: int | None = None,
        width: int | None = None,
    ) -> tuple[dict[str, torch.Tensor] | None, str | None]:
        """(the chunk's tensors, None) if it passes its check; (None, None) if absent; (None, why not)."""
        path = self.path(chunk)
        if not path.is_file():
            return None, None
        try:
            with safe_open(str(path), framework="pt") as file:
                metadata = file.metadata() or {}
                tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, RuntimeError, ValueError) as err:
            reason = (str(err).splitlines() or [type(err).__name__])[0]
            return None, f"not a readable safetensors file: {reason}"
        problems = chunk_problems(tensors, metadata, bounds, has_labels, num_classes, width)
        return (None, "; ".join(problems)) if problems else (tensors, None)

    def complete(self, num_chunks: int) -> bool:
        return all(self.path(c).is_file() for c in range(num_chunks))

    def remove_stale_temporaries(self) -> None:
        remove_stale_temporaries(self.folder, STALE_TEMPORARY_AGE_S)

    def _warn(self, chunk: int, problem: str) -> None:
        self.failed[chunk] = problem
        message = f"feature cache chunk {self.path(chunk)} failed its check ({problem}); recomputing it"
        warnings.warn(message, FeatureCacheWarning, stacklevel=3)

    def _unusable(self, chunk: int, problem: str) -> str:
        return (
            f"feature cache chunk {self.path(chunk)} cannot be used ({problem}) and extracting it again did "
            f"not mend it: remove the cache folder {self.folder}, or pass another --cache-dir (cache_dir=)"
        )


def storage_dtype(features: torch.Tensor) -> torch.dtype:
    """The narrowest of `FEATURE_DTYPES` that holds the float32 `features` exactly (read back, they
    are bit-identical): float32 for most fp32 extractions, float16 or bfloat16 for those under autocast."""
    for dtype in FEATURE_DTYPES[:-1]:
        if torch.equal(features.to(dtype).float().view(torch.int32), features.view(torch.int32)):
            return dtype  # compared bit for bit: -0.0 and NaN too
    return torch.float32


def chunk_record(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """What a chunk holds, as safetensors metadata: shapes, dtypes, label range, finiteness, sha256."""
    features = tensors["features"]
    record = {
        "cache_format": str(CACHE_FORMAT_VERSION),
        "features_shape": json.dumps(list(features.shape)),
        "features_dtype": str(features.dtype).removeprefix("torch."),
        "features_finite": str(bool(features.isfinite().all())).lower(),
    }
    labels = tensors.get("labels")
    if labels is not None:
        record["labels_shape"] = json.dumps(list(labels.shape))
        record["labels_dtype"] = str(labels.dtype).removeprefix("torch.")
        if labels.numel() and not labels.is_floating_point():
            record["labels_min"], record["labels_max"] = str(int(labels.min())), str(int(labels.max()))
    digest = hashlib.sha256()
    for name in ("features", "labels"):  # in this order, features then labels
        if name in tensors:
            # numpy's stubs declare ndarray's buffer protocol only for Python >= 3.12
            digest.update(tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]
    record["sha256"] = digest.hexdigest()
    return record


def chunk_problems(
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str],
    bounds: Bounds,
    has_labels: bool,
    num_classes: int | None,
    width: int | None,
) -> list[str]:
    """Everything wrong with a chunk read back: against its own record, and against what the reader
    expects (its rows, the common width, the class count). Empty when the chunk can be used."""
    if "sha256" not in metadata:
        return ["it records no checksum: written by an older version of iis-hf"]
    expected = ["features", "labels"] if has_labels else ["features"]
    if sorted(tensors) != expected:
        return [f"it holds the tensors {sorted(tensors)}, expected {expected}"]
    problems = []
    recorded_rows = (metadata.get("start"), metadata.get("stop"))
    if recorded_rows != (str(bounds[0]), str(bounds[1])):
        problems.append(
            f"rows {recorded_rows[0]}:{recorded_rows[1]} recorded, expected {bounds[0]}:{bounds[1]}"
        )
    actual = chunk_record(tensors)
    for key in sorted(set(actual) | (set(metadata) - {"format", "start", "stop"})):
        if key == "sha256" and actual[key] != metadata[key]:
            problems.append("checksum mismatch")
        elif key == "features_finite" and actual.get(key) != metadata.get(key):
            problems.append(
                "NaN or inf features" if actual[key] == "false" else "finite features recorded as not"
            )
        elif actual.get(key) != metadata.get(key):
            problems.append(f"{key} {actual.get(key)}, recorded {metadata.get(key)}")
    features, rows = tensors["features"], bounds[1] - bounds[0]
    if features.dim() != 2 or features.shape[0] != rows:
        problems.append(f"features of shape {tuple(features.shape)}, expected {rows} rows")
    elif width is not None and features.shape[1] != width:
        problems.append(f"feature width {features.shape[1]}, expected {width}")
    if features.dtype not in FEATURE_DTYPES:
        problems.append(f"features of dtype {features.dtype}, expected float16, bfloat16 or float32")
    if has_labels:
        problems.extend(_label_problems(tensors["labels"], rows, num_classes))
    return problems


def _label_problems(labels: torch.Tensor, rows: int, num_classes: int | None) -> list[str]:
    """Labels must be (rows,) int64 class ids: in [0, num_classes) when the class count is known
    (-1, `datasets`' mark of a row without a label, is allowed: the data holds it, not the cache)."""
    if labels.dtype != torch.int64 or labels.shape != (rows,):
        return [f"labels of shape {tuple(labels.shape)} and dtype {labels.dtype}, expected ({rows},) int64"]
    if labels.numel() == 0:
        return []
    low, high = int(labels.min()), int(labels.max())
    if low < _NO_LABEL or (num_classes is not None and high >= num_classes):
        allowed = f"outside [0, {num_classes})" if num_classes is not None else "negative"
        return [f"labels {low}..{high}, {allowed}"]
    return []


def processor_config(image_processor) -> Any:
    """The image processor's settings as JSON-ready data (its class name left out)."""
    to_dict = getattr(image_processor, "to_dict", None)
    if callable(to_dict):
        data = dict(to_dict())
        data.pop("processor_class", None)
        return json.loads(json.dumps(data, sort_keys=True, default=str))
    return repr(image_processor)
