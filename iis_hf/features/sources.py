"""What `extract_features` reads: a `datasets.Dataset`, a list of images or a tensor of pixel values.

Each kind of input becomes a `Source`: something indexable by a list of row indices that returns
``{"pixel_values", ["labels"]}`` batches (decoded with the one image loader, `iis_hf.images`, and
the model's own image processor), with its number of rows and a fingerprint for the feature cache.
On the tensor path (``preprocessing="tensor"``) a processor's slot holds `RawImages` instead, uint8
tensors that `iis_hf.features.preprocess` turns into pixel values on the model's device.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from ..data import detect_columns, undecoded
from ..images import load_image
from .preprocess import RawImages, TensorPreprocessor

# Decoding and preprocessing leave the critical path from this many images on. Measured on this
# project's 2-core CPU, otherwise idle, the forward on one thread (`benchmarks/bench_pipeline_stages.py
# --workers 64 128 256 512 --layers 4 --format jpeg --batch-size 64 --repeats 4`: a 4-layer ViT at
# 224 px, JPEGs of 200-500 px), one worker against none: 0.91x at 64 images, 1.01x at 128, 1.07x at
# 256, 1.14x at 512. The worker's start and the first batch, which nothing overlaps, are the cost.
WORKERS_FROM_IMAGES = 256
MAX_WORKERS = 16  # per process on an accelerator: the H200 runs measured 12 workers near their limit


def available_cpus() -> int:
    """The cores this process may run on (its affinity, where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_num_workers(
    num_images: int,
    requested: int | None = None,
    *,
    device: torch.device | str | None = None,
    decodes: bool = True,
    cpus: int | None = None,
    threads: int | None = None,
) -> int:
    """DataLoader workers for an extraction over `num_images`: `requested` where given, else chosen.

    Chosen (``requested=None``): none for pixel values that need no decoding (`decodes=False`) or
    fewer than `WORKERS_FROM_IMAGES` images. Otherwise, per process (``LOCAL_WORLD_SIZE`` processes
    share the node's `cpus`): for an accelerator, whose forward waits on them, all cores but one, at
    most `MAX_WORKERS`; on a CPU device, only the cores the forward's `threads`
    (``torch.get_num_threads()``) leave free, at most 4: a worker on a core the forward's threads use
    only competes with them (measured on 2 cores, 4,000 JPEGs: with 2 forward threads one worker
    gains nothing, 1.36x the bare forward against 1.35x without, and loses under load; with 1 thread
    it takes extraction from 1.25x the bare forward to 1.02x). The number of workers never changes
    the features, only how fast they come.
    """
    if requested is not None:
        return int(requested)
    if not decodes or num_images < WORKERS_FROM_IMAGES:
        return 0
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    per_process = max(1, (cpus or available_cpus()) // local)
    if torch.device(device if device is not None else "cpu").type == "cpu":
        spare = per_process - (threads if threads is not None else torch.get_num_threads())
        return max(0, min(4, spare))
    return max(1, min(MAX_WORKERS, per_process - 1))


def to_rgb(image: Any, where: str, columns: Sequence[str], image_column: str | None):
    """`load_image`, with the fix for a dataset whose chosen column does not hold images."""
    try:
        return load_image(image, what=where)
    except ValueError as err:
        if image_column is None or _is_stored_image(image):
            raise  # an image file or its bytes that will not decode: the column is right, the file is bad
        raise ValueError(
            f"{err}; if this is not the image column, pass image_column= naming the column that holds the "
            f"images (columns: {list(columns)})"
        ) from err


def _is_stored_image(value: Any) -> bool:
    """A `datasets` image as stored ({"bytes", "path"}) or a PIL image: certainly meant as an image."""
    from PIL import Image

    return isinstance(value, Image.Image) or (isinstance(value, dict) and {"bytes", "path"} <= set(value))


class _Preprocess:
    """The batched transform: images -> RGB -> pixel_values, labels -> int64."""

    def __init__(self, image_processor, image_column, label_column, columns):
        self.image_processor = image_processor
        self.image_column = image_column
        self.label_column = label_column
        self.columns = list(columns)

    def __call__(self, batch: dict[str, list]) -> dict[str, Any]:
        images = [
            to_rgb(img, f"a value of column {self.image_column!r}", self.columns, self.image_column)
            for img in batch[self.image_column]
        ]
        out = {"pixel_values": _pixel_values(self.image_processor, images)}
        if self.label_column is not None:
            out["labels"] = _labels(batch[self.label_column], self.label_column)
        return out


class ImageProcessors:
    """Several models' image processors applied to the same decoded images (`extract_features_of_models`).

    A batch is decoded once; its "pixel_values" is then a list with one tensor per distinct processor
    (identical processors, e.g. of two checkpoints of one family, run once), and `slots[i]` is the
    position of the i-th processor's tensor in that list.
    """

    def __init__(self, processors: Sequence):
        self.unique: list = []
        self.slots: list[int] = []
        keys: list[str] = []
        for processor in processors:
            key = _processor_key(processor)
            if key not in keys:
                keys.append(key)
                self.unique.append(processor)
            self.slots.append(keys.index(key))

    def __call__(self, images) -> list:
        return [_pixel_values(processor, images) for processor in self.unique]


def _processor_key(processor) -> str:
    to_dict = getattr(processor, "to_dict", None)
    if callable(to_dict):
        settings = json.dumps(to_dict(), sort_keys=True, default=str)
        return f"{type(processor).__module__}.{type(processor).__qualname__}:{settings}"
    return f"id:{id(processor)}"


def _pixel_values(image_processor, images) -> torch.Tensor | RawImages | list:
    if isinstance(image_processor, ImageProcessors):
        return image_processor(images)
    if isinstance(image_processor, TensorPreprocessor):  # prepared on the model's device (`preprocess`)
        return image_processor(images)
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

    def __getitem__(self, indices: list[int]) -> dict[str, Any]:
        images = [to_rgb(self.images[i], f"item {i} of the image list", (), None) for i in indices]
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


class Source(NamedTuple):
    batches: Any  # indexable by a list of row indices -> {"pixel_values", ["labels"]}
    num_rows: int
    has_labels: bool
    fingerprint: Any  # callable -> str (computed only when a cache is used)
    columns: dict[str, str | None]

    @property
    def decodes(self) -> bool:
        """Whether a batch is decoded from images (workers can take that off the forward's path)."""
        return not isinstance(self.batches, _PixelTensor)


def prepare_source(dataset, image_processor, image_column, label_column) -> Source:
    from datasets import Dataset, DatasetDict

    if isinstance(dataset, DatasetDict):
        raise ValueError(
            f"got a DatasetDict with splits {list(dataset)}; pass one split, e.g. dataset['train']"
        )
    if isinstance(dataset, Dataset):
        image_column, label_column = detect_columns(dataset, image_column, label_column)
        columns = list(dataset.column_names)
        if len(dataset) == 0:
            raise ValueError(f"the dataset is empty (columns: {columns}); nothing to extract")
        stored = undecoded(dataset, image_column)  # decoded by iis_hf.images only, never by datasets first
        first = stored.select_columns([image_column])[0][image_column]
        to_rgb(first, f"row 0 of column {image_column!r}", columns, image_column)
        keep = [image_column] + ([label_column] if label_column else [])
        transform = _Preprocess(image_processor, image_column, label_column, columns)
        transformed = stored.select_columns(keep).with_transform(transform)
        return Source(
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
        return Source(
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
        to_rgb(dataset[0], "item 0 of the image list", (), None)
        return Source(
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
        image = to_rgb(image, f"item {i} of the image list", (), None)
        digest.update(f"{image.mode}{image.size}".encode())
        digest.update(image.tobytes())
    return "images-" + digest.hexdigest()
