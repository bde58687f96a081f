"""The experiments' images: scikit-learn's digits and the silhouettes of `animal-shape-mnist`.

Both ship inside Python packages, so the experiments run offline. The silhouettes are the pinned
package's own gzip'd pickles: `_read_package_pickle` is the one place that unpickles them, refusing
anything but numpy arrays.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iis_hf.demo import DEMO_IMAGE_SIZE
from iis_hf.errors import IISError

ANIMAL_SHAPES_DISTRIBUTION = "animal-shape-mnist"
ANIMAL_SHAPES_FILES = (
    "animal_shape_mnist/data/Animal Shape/animal_data_version_3.gz",
    "animal_shape_mnist/data/Animal Shape/animal_label_version_3.gz",
)
ANIMAL_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
DATASETS = ("digits", "animals")


# ------------------------------------------------------------------------- the silhouettes' files
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other class in the stream is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
            return getattr(np, name)
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            core = np._core if hasattr(np, "_core") else np.core  # numpy >= 2, numpy < 2
            return core.multiarray._reconstruct
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are expected")


def _read_package_pickle(path: Path) -> Any:
    """The one unpickling in the experiments: a data file of the pinned `animal-shape-mnist` 0.39.

    Whose file: the package installed by pip from the `reproduce` extra (`animal-shape-mnist==0.39`),
    read from its own installation folder, never a path a user or the Hub hands over. Why trusted,
    and still guarded: the package ships its images only as gzip'd pickles and its own loader calls
    `pickle.load` (and imports TensorFlow); `_ArrayUnpickler` accepts numpy arrays and refuses any
    other class, so even a tampered installation cannot run code here.
    """
    with gzip.open(path, "rb") as stream:
        return _ArrayUnpickler(stream).load()


def read_animal_shapes() -> tuple[np.ndarray, np.ndarray]:
    """The (10000, 28, 28) uint8 images and (10000,) labels shipped in `animal-shape-mnist` 0.39."""
    try:
        distribution = importlib.metadata.distribution(ANIMAL_SHAPES_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise IISError(
            "the 'animals' dataset needs the animal-shape-mnist package: "
            'pip install animal-shape-mnist==0.39 (or pip install -e ".[reproduce]"), '
            "or pass --datasets digits"
        ) from None
    images, labels = (
        _read_package_pickle(Path(str(distribution.locate_file(f)))) for f in ANIMAL_SHAPES_FILES
    )
    if not (
        isinstance(images, np.ndarray)
        and images.ndim == 3
        and isinstance(labels, np.ndarray)
        and labels.shape == images.shape[:1]
    ):
        raise IISError("animal-shape-mnist's files do not hold (N, 28, 28) images and N labels: reinstall it")
    return images.astype(np.uint8), labels.astype(np.int64)


def first_occurrences(images: np.ndarray) -> np.ndarray:
    """Sorted row numbers of the first copy of every distinct image (the 284 repeated silhouettes
    are kept once, so that no test image is also a training image)."""
    _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
    return np.sort(first)


def read_silhouettes() -> tuple[np.ndarray, np.ndarray]:
    """The de-duplicated (N, 28, 28) silhouettes and their labels."""
    images, labels = read_animal_shapes()
    keep = first_occurrences(images)
    return images[keep], labels[keep]


# ------------------------------------------------------------------------------------ as datasets
def image_dataset(
    pixels: np.ndarray, labels: np.ndarray, names, resample: int, size: int = DEMO_IMAGE_SIZE
) -> Any:
    """A `datasets` image dataset of RGB size^2 images (upscaled with `resample`) with a ClassLabel."""
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    pictures = [PILImage.fromarray(p, mode="L").resize((size, size), resample).convert("RGB") for p in pixels]
    features = Features({"image": Image(), "label": ClassLabel(names=list(names))})
    return Dataset.from_dict({"image": pictures, "label": labels.tolist()}, features=features)


def load_animal_shapes_dataset(
    image_size: int = DEMO_IMAGE_SIZE, train_size: int | None = 3000, test_size: int = 1000, seed: int = 0
) -> Any:
    """Animal silhouettes as a DatasetDict (`image` RGB image_size^2, `label` ClassLabel), train/test.

    Repeated images are kept once; train and test are stratified random draws (seeded) of
    `train_size` and `test_size` images.
    """
    from datasets import DatasetDict
    from PIL import Image as PILImage
    from sklearn.model_selection import train_test_split

    images, labels = read_animal_shapes()
    rows = first_occurrences(images)
    train_rows, test_rows = train_test_split(
        rows, test_size=test_size, stratify=labels[rows], random_state=seed
    )
    if train_size is not None and train_size < len(train_rows):
        train_rows, _ = train_test_split(
            train_rows, train_size=train_size, stratify=labels[train_rows], random_state=seed
        )

    def build(selected: np.ndarray) -> Any:
        selected = np.sort(selected)
        return image_dataset(
            images[selected], labels[selected], ANIMAL_CLASSES, PILImage.Resampling.BILINEAR, image_size
        )

    return DatasetDict(train=build(train_rows), test=build(test_rows))


def load_named_dataset(
    name: str, train_size: int | None = None, test_size: int | None = None, seed: int = 0
) -> Any:
    """`digits` or `animals` as a DatasetDict with `train` and `test`, optionally subsampled."""
    from iis_hf.data import load_digits_dataset

    if name == "digits":
        data = load_digits_dataset(seed=seed)
        if train_size is not None and train_size < len(data["train"]):
            data["train"] = data["train"].shuffle(seed=seed).select(range(train_size))
        if test_size is not None and test_size < len(data["test"]):
            data["test"] = data["test"].shuffle(seed=seed).select(range(test_size))
        return data
    if name == "animals":
        return load_animal_shapes_dataset(train_size=train_size, test_size=test_size or 1000, seed=seed)
    raise IISError(f"unknown dataset {name!r}: choose from {DATASETS}")


def dataset_description(name: str) -> str:
    """One line for a report: what the images are and how they were prepared."""
    if name == "digits":
        return "scikit-learn's handwritten digits (8 x 8, 10 classes), nearest-upscaled to 32 x 32 RGB"
    return (
        "animal silhouettes of `animal-shape-mnist` 0.39 (28 x 28, 10 classes: "
        + ", ".join(ANIMAL_CLASSES)
        + "), duplicates removed, bilinear-upscaled to 32 x 32 RGB"
    )


def split_rows(labels: np.ndarray, sizes: list[int | None], seed: int) -> list[np.ndarray]:
    """Stratified, seeded, disjoint row sets of the given sizes (None: all that is left)."""
    from sklearn.model_selection import train_test_split

    rows, out = np.arange(len(labels)), []
    for size in sizes:
        if size is None or size >= len(rows):
            out.append(rows)
            rows = rows[:0]
            continue
        rest, taken = train_test_split(rows, test_size=size, stratify=labels[rows], random_state=seed)
        out.append(np.sort(taken))
        rows = np.sort(rest)
    return out


# ----------------------------------------------------------------------------------- augmentation
def augmented(dataset: Any) -> Any:
    """The training rows, each with its row number: the collator shifts only rows that carry one."""
    return dataset.add_column("row", list(range(len(dataset))))


class Collator:
    """Rows -> pixel values and labels. A row with a `row` number is shifted by up to `shift` pixels,
    drawn from (seed, row, how often the row was seen), so that every arm of one seed sees the same
    augmented images whatever else (prototypes, head fits) reads the data in between."""

    def __init__(self, processor: Any, seed: int, shift: int = 2) -> None:
        self.processor, self.seed, self.shift = processor, seed, shift
        self.seen: Counter = Counter()

    def _shift(self, image: Any, row: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, row, self.seen[row]))
        self.seen[row] += 1
        dx, dy = rng.integers(-self.shift, self.shift + 1, size=2)
        pixels = np.pad(np.asarray(image), ((self.shift,) * 2, (self.shift,) * 2, (0, 0)), mode="edge")
        h, w = image.size[1], image.size[0]
        return pixels[self.shift + dy : self.shift + dy + h, self.shift + dx : self.shift + dx + w]

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        from iis_hf.images import load_image

        images: list[Any] = [load_image(r["image"]) for r in rows]  # PIL images, or shifted arrays
        if "row" in rows[0]:
            images = [self._shift(image, int(r["row"])) for image, r in zip(images, rows)]
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "labels": torch.tensor([int(r["label"]) for r in rows])}
