"""Real images that ship inside a package, so everything runs offline.

scikit-learn's digits (1,797 real 8x8 handwritten digits, 16 grey levels) become a `datasets`
image dataset: upscaled RGB PIL images with a `ClassLabel`, split into train and test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

from .splits import check_labels, random_subset, stratified_split


def load_digits_dataset(image_size: int = 32, test_fraction: float = 0.25, seed: int = 0) -> DatasetDict:
    """scikit-learn's digits as a DatasetDict with `image` (RGB, image_size^2) and `label` columns."""
    from PIL import Image as PILImage
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images / 16.0 * 255.0).round().astype(np.uint8)
    # Pillow sets NEAREST as a module global at run time, unseen by its type hints (Resampling needs 9.1)
    nearest = PILImage.NEAREST  # type: ignore[attr-defined]
    images = [
        PILImage.fromarray(p, mode="L").resize((image_size, image_size), nearest).convert("RGB")
        for p in pixels
    ]
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    full = Dataset.from_dict({"image": images, "label": digits.target.tolist()}, features=features)
    split = full.train_test_split(test_size=test_fraction, seed=seed, stratify_by_column="label")
    return DatasetDict(train=split["train"], test=split["test"])


EVAL_SPLIT_NAMES = ("validation", "valid", "val", "test", "eval")
IMAGE_COLUMN_NAMES = ("image", "img")
LABEL_COLUMN_NAMES = ("label", "labels")


def detect_columns(dataset, image_column: str | None, label_column: str | None) -> tuple[str, str | None]:
    """The image and label columns of a dataset: the given names (checked), else detected from its
    features (a `datasets.Image` / `ClassLabel` column), else the usual names; no label -> None."""
    from datasets import ClassLabel, Image

    columns = list(dataset.column_names)
    features = dataset.features or {}
    fix = "pass image_column='<name of the column holding the images>'"
    if image_column is not None:
        if image_column not in columns:
            raise ValueError(f"image_column={image_column!r} is not a column of the dataset; found {columns}")
    else:
        image_columns = [c for c in columns if isinstance(features.get(c), Image)]
        if len(image_columns) > 1:
            named = [c for c in image_columns if c in IMAGE_COLUMN_NAMES]
            if len(named) != 1:
                raise ValueError(f"the dataset has several image columns {image_columns}; {fix}")
            image_columns = named
        if not image_columns:
            image_columns = [c for c in IMAGE_COLUMN_NAMES if c in columns][:1]
        if not image_columns:
            raise ValueError(f"no image column found in the dataset (columns: {columns}); {fix}")
        image_column = image_columns[0]
    if label_column is not None:
        if label_column not in columns:
            raise ValueError(f"label_column={label_column!r} is not a column of the dataset; found {columns}")
    else:
        candidates = [c for c in columns if isinstance(features.get(c), ClassLabel) and c != image_column]
        candidates = candidates or [c for c in LABEL_COLUMN_NAMES if c in columns]
        label_column = candidates[0] if candidates else None
    return image_column, label_column


def load_image_dataset(source: str, config_name: str | None = None, **kwargs) -> DatasetDict | Dataset:
    """A Hub dataset id, a `save_to_disk` folder, or a folder of images (datasets' `imagefolder`)."""
    import os

    from datasets import load_dataset, load_from_disk

    if not isinstance(source, str) or not source.strip():
        raise ValueError(
            f"the dataset name is empty ({source!r}); give a Hub dataset id, a save_to_disk folder or a folder of images"
        )
    if os.path.isfile(source):
        raise ValueError(
            f"dataset {source} is a file, not a folder: give a folder of images (one sub-folder per class), a "
            "save_to_disk folder, or a Hub dataset id"
        )
    if os.path.isdir(source):
        saved = any(os.path.exists(os.path.join(source, f)) for f in ("dataset_dict.json", "state.json"))
        if saved:
            check_saved_dataset_not_empty(source)
        try:
            if saved:
                return load_from_disk(source)
            return load_dataset("imagefolder", data_dir=source, **kwargs)
        except Exception as err:  # datasets raises many types for a bad folder
            raise ValueError(f"could not read dataset folder {source}: {err}") from err
    if os.path.isabs(source) or source.startswith(".") or source.count("/") > 1 or os.path.exists(source):
        raise ValueError(f"dataset {source} does not exist (expected a folder, or a Hub dataset id)")
    try:
        return load_dataset(source, config_name, **kwargs)
    except Exception as err:
        raise ValueError(f"could not load dataset {source!r} from the Hub: {err}") from err


# Top-level folder names `imagefolder` reads as splits (datasets' split keywords), not as classes.
SPLIT_FOLDER_NAMES = frozenset(
    {"train", "training", "validation", "valid", "val", "dev", "test", "testing", "eval", "evaluation"}
)
ONE_CLASS = "one class"


def image_folder_problem(source: str) -> str | None:
    """Why an image folder (datasets' `imagefolder`) gave no labels, or None when it is not one."""
    issue = image_folder_issue(source)
    return issue[1] if issue else None


def image_folder_issue(source: str) -> tuple[str, str] | None:
    """(kind, message) of why an image folder gave no labels, or None when it is not one; kind is
    `ONE_CLASS` for a folder of one class (a message saying so, not that it has no labels).

    `imagefolder` takes each image's class from the name of the folder holding it, and adds labels only
    when there are at least two such names: images directly in the folder (or in split folders), all
    images in one class folder (``A/``, or ``train/A`` and ``validation/A``: top-level split folders
    are splits, not classes), or class folders holding further sub-folders (whose names are then
    all alike), give none.
    """
    from pathlib import Path

    root = Path(source)
    if not root.is_dir() or any((root / f).exists() for f in ("dataset_dict.json", "state.json")):
        return None
    folders = sorted(
        {
            p.parent.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        }
    )
    if not folders:
        return None
    splits = all(f != "." and f.split("/")[0].lower() in SPLIT_FOLDER_NAMES for f in folders)
    inner = sorted({(f.split("/", 1)[1] if "/" in f else ".") if splits else f for f in folders})
    where = ""
    if splits:
        where = f" (in its split folders {', '.join(sorted({f.split('/')[0] + '/' for f in folders}))})"
    if inner == ["."]:
        return "flat", (
            f"dataset folder {source} holds its images directly{where}, not in class folders: put the images "
            "of each class in its own sub-folder (e.g. cats/, dogs/)"
        )
    nested = [f for f in inner if f != "." and "/" in f]
    if nested:
        return "nested", (
            f"dataset folder {source} has images in nested folders (e.g. {nested[0]}/){where}: the class of an "
            "image is the folder that directly holds it, so put the images of each class directly in one "
            f"sub-folder per class (e.g. {nested[0].split('/')[0]}/)"
        )
    classes = sorted({f for f in inner if f != "."})
    if len(classes) == 1:
        return ONE_CLASS, (
            f"dataset folder {source} holds one class only ({classes[0]}/){where}: IIS compares classes, so "
            "it needs at least 2 class folders"
        )
    return None


def check_images_decode(
    dataset, image_column: str, split: str | None = None, threads: int | None = None
) -> None:
    """Decode every image of `dataset` now (`iis_hf.images.load_image`, the decoder of every entry
    point), so that a truncated, corrupt or oversized image fails before any work, with a ValueError
    naming its file, as `iis-hf score` fails before it writes anything, and not in the middle of
    training. Images are decoded in `threads` (Pillow releases the GIL while it decodes) and dropped."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from .images import load_image

    what = f"a value of column {image_column!r}" + (f" of split {split!r}" if split else "")
    column = undecoded(dataset, image_column).select_columns([image_column])
    workers = threads or max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        for batch in column.iter(batch_size=256):
            for _ in pool.map(lambda image: load_image(image, what=what).size, batch[image_column]):
                pass


def check_saved_dataset_not_empty(folder: str) -> None:
    """`save_to_disk` writes no data file for a split of 0 rows, and `load_from_disk` then fails with
    an IndexError: name the empty split instead."""
    import json
    import os

    def data_files(split_folder: str) -> list | None:
        try:
            with open(os.path.join(split_folder, "state.json"), encoding="utf-8") as handle:
                return json.load(handle).get("_data_files")
        except (OSError, ValueError, AttributeError):
            return None  # not readable here: let load_from_disk report it

    splits = {"": folder}
    try:
        with open(os.path.join(folder, "dataset_dict.json"), encoding="utf-8") as handle:
            splits = {name: os.path.join(folder, name) for name in json.load(handle)["splits"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    empty = [name for name, path in splits.items() if data_files(path) == []]
    if empty:
        which = f"its split {empty[0]!r} is" if empty[0] else "it is"
        raise ValueError(f"dataset folder {folder}: {which} empty (0 rows); there is nothing to score")


def label_values(dataset, column: str):
    """The label column's values, read as one Arrow column (fast even for millions of rows): a NumPy
    array when it holds no nulls, else a list keeping each None where it is."""
    try:
        values = dataset.select_columns([column]).with_format("arrow")[:][column]
    except (AttributeError, TypeError, KeyError):  # not a `datasets.Dataset`: read it as it comes
        return dataset[column]
    return values.to_numpy() if values.null_count == 0 else values.to_pylist()


def checked_labels(dataset, column: str, split: str | None = None) -> np.ndarray:
    """The label column as int64 class ids, refusing a missing (None) or non-integer (0.5) label by
    its first row: floats would be truncated to class ids without a word, and None fail deep in NumPy."""
    where = f" of split {split!r}" if split else ""
    return check_labels(label_values(dataset, column), f"label column {column!r}{where}")


def check_split_names(train_split: str, eval_split: str | None, allow_same_split: bool = False) -> None:
    """Refuse to measure IIS on the split the heads were fitted on, unless asked to (the score would
    reward memorising the training images)."""
    if eval_split is not None and eval_split == train_split and not allow_same_split:
        raise ValueError(
            f"--train-split and --eval-split are both {train_split!r}: IIS would be measured on the images the "
            "heads were fitted on; pass another --eval-split (or none, to hold out part of the train split), "
            "or --allow-same-split to score on the same split on purpose"
        )


def train_eval_splits(
    data: DatasetDict | Dataset,
    train_split: str = "train",
    eval_split: str | None = None,
    eval_fraction: float = 0.2,
    label_column: str | None = None,
    seed: int = 0,
) -> tuple[Dataset, Dataset, str]:
    """Pick the train and eval splits; carve a stratified eval split from train when there is none.

    Returns (train, eval, description of where eval came from). The carved split is
    `iis_hf.splits.stratified_split` of the labels, the same rows the metric and the Trainer hold out.
    """
    if isinstance(data, Dataset):
        data = DatasetDict(train=data)
        train_split = "train"
    if train_split not in data:
        raise ValueError(
            f"no split {train_split!r} in the dataset; splits are {sorted(data)}: pass --train-split"
        )
    if eval_split is None:
        eval_split = next((s for s in EVAL_SPLIT_NAMES if s in data and s != train_split), None)
    if eval_split is not None:
        if eval_split not in data:
            raise ValueError(f"no split {eval_split!r} in the dataset; splits are {sorted(data)}")
        if label_column:
            for name in dict.fromkeys((train_split, eval_split)):
                checked_labels(data[name], label_column, name)
        return data[train_split], data[eval_split], eval_split
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    train = data[train_split]
    labels = (
        checked_labels(train, label_column, train_split)
        if label_column
        else np.zeros(len(train), dtype=np.int64)
    )
    kept, held = stratified_split(labels, eval_fraction, seed)
    # keep_in_memory: no index files in the user's dataset folder
    return (
        train.select(kept, keep_in_memory=True),
        train.select(held, keep_in_memory=True),
        f"{eval_fraction:.0%} of {train_split} (stratified, seed {seed})",
    )


def limit_rows(dataset: Dataset, max_samples: int | None, seed: int) -> Dataset:
    """A random subset (`iis_hf.splits.random_subset`) of at most `max_samples` rows, in row order."""
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    return dataset.select(random_subset(len(dataset), max_samples, seed), keep_in_memory=True)


def undecoded(dataset, image_column: str):
    """`dataset` with its `datasets.Image` column left as stored ({"bytes", "path"}), so that every image
    is decoded by `iis_hf.images.load_image` (errors naming the file, the decompression-bomb limit, the
    same pixels as everywhere else) rather than by `datasets` first."""
    feature = (getattr(dataset, "features", None) or {}).get(image_column)
    if isinstance(feature, Image) and feature.decode and hasattr(dataset, "cast_column"):
        return dataset.cast_column(image_column, Image(decode=False))
    return dataset


@dataclass
class ScoringSplits:
    """The train and eval images of a scoring run, their columns, and where they came from."""

    train: Dataset
    eval: Dataset
    image_column: str
    label_column: str
    source: dict[str, Any]

    def settings(self) -> dict[str, Any]:
        """What decides which images were used (recorded in iis.json's settings["data"])."""
        return dict(self.source)


def load_scoring_splits(
    dataset: str,
    *,
    config_name: str | None = None,
    train_split: str = "train",
    eval_split: str | None = None,
    eval_fraction: float = 0.2,
    image_column: str | None = None,
    label_column: str | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 0,
    allow_same_split: bool = False,
) -> ScoringSplits:
    """Load a dataset (Hub id, `save_to_disk` folder or image folder) and pick the rows to score on.

    An eval split equal to the train split is refused unless `allow_same_split` (then recorded).
    """
    check_split_names(train_split, eval_split, allow_same_split)
    data = load_image_dataset(dataset, config_name)
    first = data if isinstance(data, Dataset) else data[next(iter(data.keys()))]
    image_column, label_column = detect_columns(first, image_column, label_column)
    if label_column is None:
        raise ValueError(
            image_folder_problem(dataset)
            or f"dataset {dataset} has no label column (columns: {first.column_names}); pass --label-column"
        )
    train, evaluation, eval_source = train_eval_splits(
        data, train_split, eval_split, eval_fraction, label_column, seed
    )
    train, evaluation = (
        undecoded(limit_rows(train, max_train_samples, seed), image_column),
        undecoded(limit_rows(evaluation, max_eval_samples, seed), image_column),
    )
    return ScoringSplits(
        train=train,
        eval=evaluation,
        image_column=image_column,
        label_column=label_column,
        source={
            "dataset": dataset,
            "dataset_config": config_name,
            "train_split": train_split,
            "eval_split": eval_source,
            "max_train_samples": max_train_samples,
            "max_eval_samples": max_eval_samples,
            **({"allow_same_split": True} if eval_split == train_split else {}),
        },
    )
