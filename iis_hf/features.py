"""Representations from any Hugging Face vision model.

`extract_features(model, dataset)` turns images into one pooled vector per image, the `x` that the
interpretation heads project onto concepts. It works with any `*ForImageClassification` model or bare
vision backbone (`AutoModel`), a model instance or a Hub id / local `save_pretrained` folder.

What "the representation" is, for each architecture, is decided in `iis_hf.backbones`.

Distributed: under ``accelerate launch`` / ``torchrun`` the rows are split into fixed-size chunks
(independent of the world size); rank r extracts chunks r, r+W, ... and every rank returns all features in
dataset order. With a ``cache_dir`` each chunk is written as its own safetensors file, so an interrupted
or repeated extraction reuses the finished chunks (the folder must be shared by all ranks).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .backbones import (
    as_vision_model,
    check_layer_type,
    check_pooling,
    load_image_processor,
    load_vision_model,
    model_digest,
    pooled_representation,
)
from .files import read_safetensors, remove_stale_temporaries, save_safetensors_atomic, write_json_atomic

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_CHUNK_SIZE = 4096
CACHE_FORMAT_VERSION = 1
# Temporary files older than this in a cache folder were left by a killed writer and are deleted.
STALE_TEMPORARY_AGE_S = 3600.0
_IMAGE_COLUMN_NAMES = ("image", "img")
_LABEL_COLUMN_NAMES = ("label", "labels")
_FP16_MAX = torch.finfo(torch.float16).max


class ExtractedFeatures(NamedTuple):
    features: torch.Tensor  # (N, D) float32 on the CPU, in dataset order
    labels: torch.Tensor | None  # (N,) int64, or None when the dataset has no label column


# --------------------------------------------------------------------------------------------------
# Datasets


def _column_names(dataset) -> list[str]:
    return list(dataset.column_names)


def detect_columns(dataset, image_column: str | None, label_column: str | None) -> tuple[str, str | None]:
    from datasets import ClassLabel, Image

    columns = _column_names(dataset)
    features = dataset.features or {}
    fix = "pass image_column='<name of the column holding the images>'"
    if image_column is not None:
        if image_column not in columns:
            raise ValueError(f"image_column={image_column!r} is not a column of the dataset; found {columns}")
    else:
        image_columns = [c for c in columns if isinstance(features.get(c), Image)]
        if len(image_columns) > 1:
            named = [c for c in image_columns if c in _IMAGE_COLUMN_NAMES]
            if len(named) != 1:
                raise ValueError(f"the dataset has several image columns {image_columns}; {fix}")
            image_columns = named
        if not image_columns:
            image_columns = [c for c in _IMAGE_COLUMN_NAMES if c in columns][:1]
        if not image_columns:
            raise ValueError(f"no image column found in the dataset (columns: {columns}); {fix}")
        image_column = image_columns[0]
    if label_column is not None:
        if label_column not in columns:
            raise ValueError(f"label_column={label_column!r} is not a column of the dataset; found {columns}")
    else:
        candidates = [c for c in columns if isinstance(features.get(c), ClassLabel) and c != image_column]
        candidates = candidates or [c for c in _LABEL_COLUMN_NAMES if c in columns]
        label_column = candidates[0] if candidates else None
    return image_column, label_column


def _to_rgb(image: Any, where: str, columns: Sequence[str], image_column: str | None):
    from PIL import Image as PILImage

    fix = (
        f"pass image_column= naming the column that holds the images (columns: {list(columns)})"
        if image_column is not None
        else "pass PIL images"
    )
    if isinstance(image, PILImage.Image):
        pass
    elif isinstance(image, (str, os.PathLike, dict)) and image:
        if isinstance(image, dict):
            import io

            image = io.BytesIO(image["bytes"]) if image.get("bytes") else image.get("path")
        try:
            image = PILImage.open(image)
        except (OSError, ValueError, TypeError) as err:
            found = type(image).__name__ if not isinstance(image, (str, os.PathLike)) else f"path {image!r}"
            raise ValueError(
                f"{where} is not an image (found {found} that PIL cannot open: {err}); {fix}"
            ) from None
    elif hasattr(image, "__array__") and not isinstance(image, (bytes, str)):
        import numpy as np

        array = np.asarray(image)
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = array.transpose(1, 2, 0)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        image = PILImage.fromarray(array if array.dtype == np.uint8 else array.astype(np.uint8))
    else:
        found = "None" if image is None else type(image).__name__
        raise ValueError(f"{where} is not an image (found {found}); {fix}")
    return image if image.mode == "RGB" else image.convert("RGB")


class _Preprocess:
    """The batched transform: images -> RGB -> pixel_values, labels -> int64."""

    def __init__(self, image_processor, image_column, label_column, columns):
        self.image_processor = image_processor
        self.image_column = image_column
        self.label_column = label_column
        self.columns = list(columns)

    def __call__(self, batch: dict[str, list]) -> dict[str, torch.Tensor]:
        images = [
            _to_rgb(img, f"a value of column {self.image_column!r}", self.columns, self.image_column)
            for img in batch[self.image_column]
        ]
        out = {"pixel_values": _pixel_values(self.image_processor, images)}
        if self.label_column is not None:
            out["labels"] = _labels(batch[self.label_column], self.label_column)
        return out


def _pixel_values(image_processor, images) -> torch.Tensor:
    encoded = image_processor(images=images, return_tensors="pt")
    pixel_values = encoded["pixel_values"] if hasattr(encoded, "__getitem__") else encoded
    return torch.as_tensor(pixel_values)


def _labels(values, column) -> torch.Tensor:
    try:
        return torch.as_tensor(list(values), dtype=torch.int64)
    except (TypeError, ValueError, RuntimeError):
        sample = list(values)[:3]
        raise ValueError(
            f"label column {column!r} must hold integer class ids, found values like {sample}; "
            "pass label_column= naming an integer or ClassLabel column"
        ) from None


class _ImageList:
    """A list of images indexable by a list of positions, like a transformed `datasets.Dataset`."""

    def __init__(self, images: Sequence, image_processor):
        self.images = images
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        images = [_to_rgb(self.images[i], f"item {i} of the image list", (), None) for i in indices]
        return {"pixel_values": _pixel_values(self.image_processor, images)}


class _PixelTensor:
    """Pixel values already prepared by the caller: (N, 3, H, W), batches are slices."""

    def __init__(self, pixels: torch.Tensor):
        self.pixels = pixels

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        if indices and indices[-1] - indices[0] + 1 == len(indices):  # contiguous: a view, no copy
            return {"pixel_values": self.pixels[indices[0] : indices[-1] + 1]}
        return {"pixel_values": self.pixels[indices]}


def _hash_tensor(tensor: torch.Tensor) -> str:
    digest = hashlib.sha256(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
    digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "pixels-" + digest.hexdigest()


class _Source(NamedTuple):
    batches: Any  # indexable by a list of row indices -> {"pixel_values", ["labels"]}
    num_rows: int
    has_labels: bool
    fingerprint: Any  # callable -> str (computed only when a cache is used)
    columns: dict[str, str | None]


def _prepare_source(dataset, image_processor, image_column, label_column) -> _Source:
    from datasets import Dataset, DatasetDict

    if isinstance(dataset, DatasetDict):
        raise ValueError(
            f"got a DatasetDict with splits {list(dataset)}; pass one split, e.g. dataset['train']"
        )
    if isinstance(dataset, Dataset):
        image_column, label_column = detect_columns(dataset, image_column, label_column)
        columns = _column_names(dataset)
        if len(dataset) == 0:
            raise ValueError(f"the dataset is empty (columns: {columns}); nothing to extract")
        first = dataset.select_columns([image_column])[0][image_column]
        _to_rgb(first, f"row 0 of column {image_column!r}", columns, image_column)
        keep = [image_column] + ([label_column] if label_column else [])
        transform = _Preprocess(image_processor, image_column, label_column, columns)
        transformed = dataset.select_columns(keep).with_transform(transform)
        return _Source(
            batches=transformed,
            num_rows=len(dataset),
            has_labels=label_column is not None,
            fingerprint=lambda: str(dataset._fingerprint),
            columns={"image_column": image_column, "label_column": label_column},
        )
    if torch.is_tensor(dataset):
        if dataset.dim() != 4 or not dataset.is_floating_point() or dataset.shape[0] == 0:
            raise ValueError(
                f"a tensor dataset must hold prepared pixel values (N, 3, H, W) floats, got {tuple(dataset.shape)} "
                f"{dataset.dtype}; pass images (a datasets.Dataset or a list of PIL images) instead"
            )
        return _Source(
            batches=_PixelTensor(dataset),
            num_rows=dataset.shape[0],
            has_labels=False,
            fingerprint=lambda: _hash_tensor(dataset),
            columns={"image_column": None, "label_column": None},
        )
    if isinstance(dataset, (list, tuple)):
        if image_column is not None or label_column is not None:
            raise ValueError(
                "image_column= and label_column= apply to a datasets.Dataset, not a list of images"
            )
        if len(dataset) == 0:
            raise ValueError("the list of images is empty; nothing to extract")
        _to_rgb(dataset[0], "item 0 of the image list", (), None)
        return _Source(
            batches=_ImageList(dataset, image_processor),
            num_rows=len(dataset),
            has_labels=False,
            fingerprint=lambda: _hash_images(dataset),
            columns={"image_column": None, "label_column": None},
        )
    raise ValueError(
        f"dataset must be a datasets.Dataset with an image column, a list of PIL images or a (N, 3, H, W) "
        f"tensor of pixel values, "
        f"got {type(dataset).__name__}"
    )


def _hash_images(images: Sequence) -> str:
    digest = hashlib.sha256()
    for i, image in enumerate(images):
        image = _to_rgb(image, f"item {i} of the image list", (), None)
        digest.update(f"{image.mode}{image.size}".encode())
        digest.update(image.tobytes())
    return "images-" + digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Cache identity


def _processor_config(image_processor) -> Any:
    to_dict = getattr(image_processor, "to_dict", None)
    if callable(to_dict):
        data = dict(to_dict())
        data.pop("processor_class", None)
        return json.loads(json.dumps(data, sort_keys=True, default=str))
    return repr(image_processor)


def _cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Extraction


def extract_features(
    model,
    dataset,
    *,
    image_processor=None,
    image_column: str | None = None,
    label_column: str | None = None,
    layer: int | None = None,
    pooling: str = "default",
    batch_size: int = 64,
    num_workers: int = 0,
    precision: str = "fp32",
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> ExtractedFeatures:
    """Pooled representations (N, D) of every image of `dataset`, in order, plus its labels.

    Args:
        model: a `PreTrainedModel` (moved to `device`, where it stays, and run in eval mode; its
            train/eval mode is restored afterwards), or a Hub id / local folder for `load_vision_model`.
        dataset: a `datasets.Dataset` with an image column, or a list of PIL images (labels are then None).
            Images are converted to RGB (greyscale, RGBA, palette); the image processor resizes them.
        image_processor: defaults to `AutoImageProcessor.from_pretrained(model.name_or_path)`.
        image_column: defaults to the column whose feature is `datasets.Image`, else "image" / "img".
        label_column: defaults to the `ClassLabel` column, else "label" / "labels"; none found -> labels None.
        layer: None for the model's final representation; an int picks ``hidden_states[layer]``.
        pooling: "default" (the model's own pooled output, or for a hidden state the CLS token of token
            sequences and the spatial mean of maps; the token mean for models without a CLS token such
            as Swin), "cls" (token 0) or "mean" (mean over all tokens, or over (H, W) of a map). With
            layer=None, "cls" and "mean" pool the backbone's ``last_hidden_state``.
        batch_size: images per forward (batches never cross chunk boundaries).
        num_workers: DataLoader workers, so that image decoding and preprocessing overlap compute.
        precision: "fp32", "bf16" or "fp16" (torch.autocast on the model's device); features are
            returned as float32 in every case.
        device: defaults to accelerate's ``PartialState().device`` (each process's own device).
        cache_dir: if given, features are cached under ``cache_dir/<key>/`` as one safetensors file per
            chunk, keyed by the model (config + weights digest), the dataset fingerprint, the image
            processor's config, the columns, layer, pooling, precision and chunk size. Features are
            stored as float16 (half the disk; returned as float32; a chunk with values beyond the
            float16 range is stored as float32); labels as int64. Finished chunks are reused, so a
            rerun after an interruption only extracts what is missing. With several processes the folder
            must be visible to all of them. Every chunk file is written to a temporary name and renamed,
            so a killed or concurrent run leaves each chunk complete or absent, never half-written;
            processes sharing the folder may compute the same chunk, and the last rename wins.
        progress: show a tqdm bar on the main process.
        chunk_size: rows per chunk, the unit of distribution and caching (independent of the world size).

    Returns:
        ExtractedFeatures(features (N, D) float32 CPU, labels (N,) int64 or None). Under several
        processes every process returns the complete result.
    """
    check_pooling(pooling)
    check_layer_type(layer)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(map(repr, PRECISIONS))}")
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("chunk_size", chunk_size, 1),
        ("num_workers", num_workers, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")

    if isinstance(model, (str, os.PathLike)):
        model = load_vision_model(str(model))
    elif not isinstance(model, nn.Module):
        raise TypeError(f"model must be a PreTrainedModel or a model name/folder, got {type(model).__name__}")
    else:
        model = as_vision_model(model)
    image_processor = load_image_processor(model, image_processor)
    source = _prepare_source(dataset, image_processor, image_column, label_column)

    world, rank, default_device = process_layout()
    is_main = rank == 0
    device = torch.device(device) if device is not None else default_device
    num_rows = source.num_rows
    num_chunks = math.ceil(num_rows / chunk_size)
    chunk_bounds = [(c * chunk_size, min(num_rows, (c + 1) * chunk_size)) for c in range(num_chunks)]
    my_chunks = list(range(rank, num_chunks, world))

    cache_folder = None
    if cache_dir is not None:
        settings = {
            "format_version": CACHE_FORMAT_VERSION,
            "model": model_digest(model),
            "dataset": source.fingerprint(),
            "num_rows": num_rows,
            "layer": layer,
            "pooling": pooling,
            "precision": precision,
            "image_processor": _processor_config(image_processor),
            "chunk_size": chunk_size,
            **source.columns,
        }
        key = _cache_key(settings)
        cache_folder = Path(cache_dir) / key
        if is_main:
            write_json_atomic(
                cache_folder / "settings.json",
                {
                    **settings,
                    "key": key,
                    "model_class": type(model).__name__,
                    "model_name_or_path": getattr(model, "name_or_path", "") or "",
                    "num_chunks": num_chunks,
                    "features_dtype": "float16 (float32 where a chunk exceeds the float16 range)",
                },
            )
    chunk_path = (lambda c: cache_folder / f"chunk-{c:06d}.safetensors") if cache_folder else None

    todo = my_chunks
    any_missing = True
    if cache_folder is not None:
        any_missing = not all(chunk_path(c).is_file() for c in range(num_chunks))
        todo = [
            c for c in my_chunks if _read_chunk(chunk_path(c), chunk_bounds[c], source.has_labels) is None
        ]

    computed: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    # Every process runs the model when anything is left to do, even with no chunk of its own: a bad
    # argument then fails on all ranks alike (no rank waits forever at a barrier), and the feature
    # width is known for the all-gather.
    if any_missing or todo:
        was_training = model.training
        model.eval()
        if getattr(model, "hf_device_map", None) is None:
            model.to(device)
        else:  # dispatched over devices by accelerate (device_map=...): inputs go where it starts
            device = next(model.parameters()).device
        try:
            with torch.inference_mode():
                probe = source.batches[[0]]
                width = _forward(model, probe["pixel_values"], device, layer, pooling, precision).shape[1]
                for c, features, labels in _run_chunks(
                    model,
                    source,
                    todo,
                    chunk_bounds,
                    batch_size,
                    num_workers,
                    device,
                    layer,
                    pooling,
                    precision,
                    progress and is_main,
                ):
                    if cache_folder is not None:
                        _write_chunk(chunk_path(c), features, labels, chunk_bounds[c])
                    else:
                        computed[c] = (features, labels)
        finally:
            model.train(was_training)
    else:
        width = None

    if cache_folder is not None:
        if world > 1:
            torch.distributed.barrier()
        parts = []
        for c in range(num_chunks):
            part = _read_chunk(chunk_path(c), chunk_bounds[c], source.has_labels)
            if part is None:
                raise ValueError(
                    f"feature cache chunk {chunk_path(c)} is missing or unreadable after extraction"
                    + (
                        " (with several processes, cache_dir must be a folder all of them share)"
                        if world > 1
                        else ""
                    )
                )
            parts.append(part)
        if is_main:
            remove_stale_temporaries(cache_folder, STALE_TEMPORARY_AGE_S)
    elif world > 1:
        parts = _all_gather_chunks(computed, my_chunks, chunk_bounds, world, width, source.has_labels)
    else:
        parts = [computed[c] for c in range(num_chunks)]

    features = torch.cat([p[0] for p in parts]).float()
    labels = torch.cat([p[1] for p in parts]) if source.has_labels else None
    return ExtractedFeatures(features, labels)


def process_layout() -> tuple[int, int, torch.device]:
    """(number of processes, this process's rank, its default device) for the current run.

    accelerate's `PartialState` sets up the process group under ``accelerate launch`` / ``torchrun``.
    On a machine without an accelerator it only does so when asked for the CPU, so a torchrun job there
    is detected from ``WORLD_SIZE`` and started with ``PartialState(cpu=True)``, or a gloo group when
    accelerate's state already exists without it. A process group made by the caller is used as it is.
    """
    import torch.distributed as dist
    from accelerate import PartialState

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("LOCAL_RANK") is not None
    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    state = PartialState(cpu=launched and not has_accelerator)
    if launched and dist.is_available() and not dist.is_initialized():
        # accelerate's state was created earlier without cpu=True: set up the CPU group ourselves.
        dist.init_process_group(backend="gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank(), state.device
    return 1, 0, state.device


def _forward(model, pixel_values, device, layer, pooling, precision) -> torch.Tensor:
    dtype = PRECISIONS[precision]
    param = next(model.parameters(), None)
    pixel_values = pixel_values.to(device, non_blocking=True)
    if param is not None and param.dtype.is_floating_point and dtype is None:
        pixel_values = pixel_values.to(param.dtype)
    autocast = (
        torch.autocast(device_type=device.type, dtype=dtype)
        if dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        pooled = pooled_representation(model, pixel_values, layer=layer, pooling=pooling)
    return pooled.float()


def _run_chunks(
    model, source, chunks, bounds, batch_size, num_workers, device, layer, pooling, precision, bar
):
    """Yield (chunk, features (n, D) float32 CPU, labels or None) for each chunk, in order."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    batches, owners = [], []
    for c in chunks:
        start, stop = bounds[c]
        for b in range(start, stop, batch_size):
            batches.append(list(range(b, min(stop, b + batch_size))))
            owners.append(c)
    if not batches:
        return
    loader = DataLoader(
        source.batches,
        batch_size=None,
        sampler=batches,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    total = sum(len(b) for b in batches)
    pending: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    with tqdm(total=total, desc="extracting features", unit="img", disable=not bar) as pbar:
        for i, batch in enumerate(loader):
            # Features stay on the device until the chunk is complete: no host sync per batch, so
            # the accelerator keeps working while the next batch is loaded.
            features = _forward(model, batch["pixel_values"], device, layer, pooling, precision)
            pending.append((features, batch.get("labels")))
            pbar.update(features.shape[0])
            if i + 1 == len(batches) or owners[i + 1] != owners[i]:
                labels = torch.cat([p[1] for p in pending]) if source.has_labels else None
                yield owners[i], torch.cat([p[0] for p in pending]).cpu(), labels
                pending = []


def _write_chunk(path: Path, features: torch.Tensor, labels: torch.Tensor | None, bounds) -> None:
    fits_fp16 = bool(features.abs().max() <= _FP16_MAX) if features.numel() else True
    tensors = {"features": features.to(torch.float16) if fits_fp16 else features.float()}
    if labels is not None:
        tensors["labels"] = labels.to(torch.int64)
    save_safetensors_atomic(tensors, path, metadata={"start": str(bounds[0]), "stop": str(bounds[1])})


def _read_chunk(path: Path, bounds, has_labels: bool):
    """A cached chunk as (features float32, labels or None), or None when absent or not what we expect."""
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


def _all_gather_chunks(computed, my_chunks, bounds, world, width, has_labels):
    """Share every rank's chunks with every rank; returns the list of all chunks, in order."""
    import torch.distributed as dist

    comm_device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        comm_device = torch.device("cuda", torch.cuda.current_device())
    num_chunks = len(bounds)
    owned = [list(range(r, num_chunks, world)) for r in range(world)]
    sizes = [sum(bounds[c][1] - bounds[c][0] for c in chunks) for chunks in owned]
    longest = max(sizes)

    def padded(tensors: list[torch.Tensor], trailing: tuple[int, ...], dtype) -> torch.Tensor:
        out = torch.zeros((longest, *trailing), dtype=dtype)
        if tensors:
            joined = torch.cat(tensors)
            out[: joined.shape[0]] = joined
        return out.to(comm_device)

    def gather(local: torch.Tensor) -> list[torch.Tensor]:
        bucket = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(bucket, local)
        return [t.cpu() for t in bucket]

    mine = [computed[c] for c in my_chunks]
    all_features = gather(padded([m[0] for m in mine], (width,), torch.float32))
    all_labels = gather(padded([m[1] for m in mine], (), torch.int64)) if has_labels else None
    parts: list[Any] = [None] * num_chunks
    for r in range(world):
        offset = 0
        for c in owned[r]:
            n = bounds[c][1] - bounds[c][0]
            labels = all_labels[r][offset : offset + n] if has_labels else None
            parts[c] = (all_features[r][offset : offset + n], labels)
            offset += n
    return parts
