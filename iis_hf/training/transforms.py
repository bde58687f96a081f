"""Image transforms for fine-tuning, written with PIL (torchvision is not needed).

Training images get a random resized crop to the model's input size and a horizontal flip, then
the model's own image processor rescales and normalises them; evaluation images go through the
image processor unchanged (resize and centre crop as the model was pre-trained).
"""

from __future__ import annotations

import math
import random

import torch
from transformers import TrainerCallback

from ..images import load_image


def timm_input_size(image_processor, model=None) -> tuple[int, int] | None:
    """(height, width) from timm's settings, or None: a `TimmWrapperImageProcessor` has no `size`,
    but its `data_config` (timm's resolved one) and a timm model's `pretrained_cfg` hold
    ``input_size`` as (channels, height, width)."""
    config = getattr(model, "config", None)
    for settings in (
        getattr(image_processor, "data_config", None),
        getattr(image_processor, "pretrained_cfg", None),
        getattr(config, "pretrained_cfg", None),
    ):
        size = settings.get("input_size") if isinstance(settings, dict) else None
        if (
            isinstance(size, (list, tuple))
            and len(size) == 3
            and all(isinstance(v, int) and v > 0 for v in size)
        ):
            return int(size[1]), int(size[2])
    return None


def model_input_size(image_processor, model=None) -> tuple[int, int]:
    """(height, width) of the images the processor hands to the model.

    `image_processor.size` is a `SizeDict` in transformers 5 (a dict before): either `height`/`width`
    or `shortest_edge` (then the model sees a square, after a centre crop when the processor has one).
    A timm checkpoint's processor has no size: its input size comes from `timm_input_size`.
    """
    timm_size = timm_input_size(image_processor, model)
    if timm_size is not None:
        return timm_size

    def get(sizes, key):
        if sizes is None:
            return None
        return sizes.get(key) if isinstance(sizes, dict) else getattr(sizes, key, None)

    crop = (
        getattr(image_processor, "crop_size", None)
        if getattr(image_processor, "do_center_crop", False)
        else None
    )
    for sizes in (crop, getattr(image_processor, "size", None)):
        if get(sizes, "height") and get(sizes, "width"):
            return int(get(sizes, "height")), int(get(sizes, "width"))
        if get(sizes, "shortest_edge"):
            return int(get(sizes, "shortest_edge")), int(get(sizes, "shortest_edge"))
    raise ValueError(
        f"cannot tell the input size of {type(image_processor).__name__} (size={getattr(image_processor, 'size', None)}); "
        "pass an image processor whose size has height/width or shortest_edge (--image_processor_name)"
    )


def random_resized_crop(
    image, size: tuple[int, int], rng: random.Random, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
):
    """A crop of random area (fraction `scale`) and aspect ratio, resized to `size` (height, width).

    The sampling follows torchvision's `RandomResizedCrop`: 10 tries, then a centre crop.
    """
    from PIL import Image

    width, height = image.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            break
    else:  # centre crop at the nearest allowed aspect ratio
        w, h = width, height
        if width / height < ratio[0]:
            h = round(width / ratio[0])
        elif width / height > ratio[1]:
            w = round(height * ratio[1])
        left, top = (width - w) // 2, (height - h) // 2
    # Image.BILINEAR, not Image.Resampling.BILINEAR: the enum is missing from Pillow 9.0, which setup.py
    # allows; newer Pillow's stubs list only the enum.
    bilinear = Image.BILINEAR  # type: ignore[attr-defined]
    return image.resize((size[1], size[0]), resample=bilinear, box=(left, top, left + w, top + h))


ROW_INDEX = "__iis_row__"  # the column that tells the transform which row it is augmenting


class ImageClassificationTransform:
    """A `Dataset.with_transform` callable: raw rows -> ``{"pixel_values", "labels"}``.

    With ``augment=True`` each image gets a random resized crop to the model's input size and a
    horizontal flip (probability 0.5), then the image processor rescales and normalises it (its
    resize and centre crop are switched off). Without, the processor does everything, exactly as
    at inference.

    When the dataset has a `ROW_INDEX` column (`with_row_index`), each row's crop and flip are a
    function of (`seed`, `epoch`, row) alone: whatever order, process or DataLoader worker fetches
    the rows, and however many were fetched ahead before a run was killed, a resumed run augments
    every row of every epoch exactly as an uninterrupted one (`AugmentationEpochs` keeps `epoch`
    current). Without the column the draws come from one stream seeded by `seed`.
    """

    def __init__(
        self, image_processor, image_column: str, label_column: str, augment: bool = False, seed: int = 0
    ):
        self.image_processor = image_processor
        self.image_column = image_column
        self.label_column = label_column
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.size = model_input_size(image_processor)
        self.no_resize = {k: False for k in ("do_resize", "do_center_crop") if hasattr(image_processor, k)}
        self._rng: random.Random | None = None
        self._rng_owner: tuple[int, int] | None = None

    def rng(self) -> random.Random:
        """The stream of rows without an index (in a worker, seeded by `seed` and the worker's seed)."""
        info = torch.utils.data.get_worker_info()
        owner = None if info is None else (info.id, info.seed)
        if self._rng is None or owner != self._rng_owner:
            self._rng = random.Random(self.seed if info is None else self.seed * 1_000_003 + info.seed)
            self._rng_owner = owner
        return self._rng

    def row_rng(self, row: int) -> random.Random:
        """The generator of one row's draws in the current epoch."""
        return random.Random((self.seed * 1_000_003 + self.epoch) * 1_000_000_007 + int(row))

    def __call__(self, batch: dict) -> dict:
        images = [
            load_image(image, what=f"a value of column {self.image_column!r}")
            for image in batch[self.image_column]
        ]
        if self.augment:
            rows = batch.get(ROW_INDEX)
            generators = [self.row_rng(r) for r in rows] if rows is not None else [self.rng()] * len(images)
            images = [augment(image, self.size, rng) for image, rng in zip(images, generators)]
            processed = self.image_processor(images=images, return_tensors="pt", **self.no_resize)
        else:
            processed = self.image_processor(images=images, return_tensors="pt")
        return {"pixel_values": list(processed["pixel_values"]), "labels": list(batch[self.label_column])}


def augment(image, size: tuple[int, int], rng: random.Random):
    """A random resized crop to `size`, then a horizontal flip with probability 0.5."""
    from PIL.Image import Transpose

    image = random_resized_crop(image, size, rng)
    return image.transpose(Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


def with_row_index(dataset):
    """`dataset` with a `ROW_INDEX` column 0..N-1, so augmentations are a function of the row.

    Add it before `select`/`train_test_split`: on a dataset with an indices mapping, datasets writes
    the flattened table to a cache file in the dataset's folder first."""
    return dataset.add_column(ROW_INDEX, list(range(len(dataset))))


class AugmentationEpochs(TrainerCallback):
    """Keeps an `ImageClassificationTransform`'s epoch in step with the Trainer's (also on resume)."""

    def __init__(self, transform: ImageClassificationTransform):
        self.transform = transform

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.transform.epoch = int(state.epoch + 1e-9) if state.epoch else 0


def collate_fn(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack transformed rows into a batch for the model."""
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.tensor([int(example["labels"]) for example in examples]),
    }
