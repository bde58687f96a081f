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


def load_image_dataset(
    source: str,
    config_name: str | None = None,
    *,
    split: str | None = None,
    data_files: str | list[str] | dict[str, Any] | None = None,
    streaming: bool = False,
    max_samples: int | dict[str, int] | None = None,
    shuffle_buffer: int | None = None,
    seed: int = 0,
    **kwargs,
):
    """A Hub dataset id, a `save_to_disk` folder, a folder of parquet / arrow / webdataset shards
    (read by `datasets.load_dataset`'s own builder, which keeps their `ClassLabel`), or a folder of
    images (datasets' `imagefolder`).

    `data_files` (a path, glob, list or {split: files}) picks the files of a folder or Hub dataset.
    With `streaming` nothing is downloaded up front: the result is an `IterableDataset(Dict)` whose
    splits are shuffled in a `shuffle_buffer` of rows (seeded by `seed`; None: in stored order) and
    cut to their first `max_samples` rows (an int for every split, or {split: rows}); `as_map_dataset`
    reads those rows once into a `Dataset`. Without streaming `max_samples` and `shuffle_buffer`
    do nothing here (`limit_rows` subsamples a `Dataset`).
    """
    if not isinstance(source, str) or not source.strip():
        raise ValueError(
            f"the dataset name is empty ({source!r}); give a Hub dataset id, a save_to_disk folder or a folder of images"
        )
    if split is not None:
        kwargs["split"] = split
    if data_files is not None:
        kwargs["data_files"] = data_files
    data = _load_dataset(source, config_name, streaming=streaming, **kwargs)
    if streaming and is_stream(data):  # a save_to_disk folder is memory-mapped, not streamed
        return limit_stream(data, max_samples, shuffle_buffer, seed)
    return data


def _load_dataset(source: str, config_name: str | None, streaming: bool = False, **kwargs):
    """`load_image_dataset` without the stream's limits: which reader reads `source`."""
    import os

    from datasets import load_dataset, load_from_disk

    if os.path.isfile(source):
        raise ValueError(
            f"dataset {source} is a file, not a folder: give a folder of images (one sub-folder per class), a "
            "save_to_disk folder, a folder of parquet / arrow / webdataset shards, or a Hub dataset id "
            "(a file goes in data_files=)"
        )
    if streaming:
        kwargs["streaming"] = True
    if os.path.isdir(source):
        saved = any(os.path.exists(os.path.join(source, f)) for f in ("dataset_dict.json", "state.json"))
        if saved:
            check_saved_dataset_not_empty(source)
        try:
            if saved:  # memory-mapped already: streaming would gain nothing
                data = load_from_disk(source)
                return data[kwargs["split"]] if "split" in kwargs else data
            if "data_files" in kwargs or holds_data_files(source):  # datasets picks the builder
                return load_dataset(source, config_name, **kwargs)
            return load_dataset("imagefolder", data_dir=source, **kwargs)
        except Exception as err:  # datasets raises many types for a bad folder
            raise ValueError(f"could not read dataset folder {source}: {err}") from err
    if os.path.isabs(source) or source.startswith(".") or source.count("/") > 1 or os.path.exists(source):
        raise ValueError(f"dataset {source} does not exist (expected a folder, or a Hub dataset id)")
    try:
        return load_dataset(source, config_name, **kwargs)
    except Exception as err:
        raise ValueError(f"could not load dataset {source!r} from the Hub: {err}") from err


# Files that make a folder a data set of shards rather than of images: `datasets.load_dataset(folder)`
# reads them with its own builder (parquet, arrow, webdataset), which keeps their features.
DATA_FILE_SUFFIXES = (".parquet", ".arrow", ".tar")


def holds_data_files(folder: str) -> bool:
    """Whether `folder` (at any depth) holds parquet, arrow or webdataset shards."""
    import os

    for _, _, files in os.walk(folder):
        if any(name.lower().endswith(DATA_FILE_SUFFIXES) for name in files):
            return True
    return False


def limit_stream(data, max_samples: int | dict[str, int] | None, shuffle_buffer: int | None, seed: int):
    """An `IterableDataset(Dict)` shuffled in a seeded buffer of `shuffle_buffer` rows (None: not
    shuffled) and cut to its first `max_samples` rows per split (an int, or {split: rows})."""
    from datasets import IterableDatasetDict

    if isinstance(data, IterableDatasetDict):
        return IterableDatasetDict(
            {
                name: limit_stream(
                    split,
                    max_samples.get(name) if isinstance(max_samples, dict) else max_samples,
                    shuffle_buffer,
                    seed,
                )
                for name, split in data.items()
            }
        )
    if shuffle_buffer is not None:
        if int(shuffle_buffer) < 1:
            raise ValueError(f"the shuffle buffer must hold at least 1 row, got {shuffle_buffer}")
        data = data.shuffle(seed=seed, buffer_size=int(shuffle_buffer))
    if isinstance(max_samples, dict):
        raise ValueError("max_samples as {split: rows} needs a dataset with splits")
    if max_samples is not None:
        data = data.take(int(max_samples))
    return data


def is_stream(data) -> bool:
    """Whether `data` is a `datasets` stream (an `IterableDataset` or `IterableDatasetDict`)."""
    from datasets import IterableDataset, IterableDatasetDict

    return isinstance(data, (IterableDataset, IterableDatasetDict))


def as_map_dataset(data):
    """`data` with every stream read once into a `Dataset` (its rows in stream order; `.take(n)` and
    `.shuffle(seed=, buffer_size=)` on the stream decide which); anything else unchanged.

    The heads, the stratified split and the feature cache need random access and a length: a
    stream's rows are written once to a temporary Arrow file (memory-mapped, so a large image set
    stays on disk), images as stored (no decode and re-encode, so the pixels are those of the same
    rows read as a `Dataset`). The `Dataset`'s fingerprint is a digest of its rows, so the feature
    cache finds the same rows again.
    """
    from datasets import DatasetDict, IterableDataset, IterableDatasetDict

    if isinstance(data, IterableDatasetDict):
        return DatasetDict({name: stream_to_dataset(split) for name, split in data.items()})
    if isinstance(data, IterableDataset):
        return stream_to_dataset(data)
    return data


def stream_to_dataset(stream) -> Dataset:
    """One `IterableDataset` read into a `Dataset` (see `as_map_dataset`)."""
    import hashlib
    import json
    import uuid

    features = stream.features
    images = [name for name, f in (features or {}).items() if isinstance(f, Image)]
    if images:  # rows as stored: {"bytes", "path"}, never decoded to PIL and encoded again
        stream = stream.cast(Features({**features, **{c: Image(decode=False) for c in images}}))
    digest = hashlib.sha256(json.dumps(features.to_dict() if features else None, sort_keys=True).encode())

    def rows():
        for row in stream:
            for column in images:
                row[column] = stored_image_bytes(row[column])
            for key in sorted(row):
                value = row[key]
                digest.update(key.encode())
                if key in images:
                    digest.update((value or {}).get("bytes") or b"")
                else:
                    digest.update(repr(value).encode())
            yield row

    folder = stream_folder()
    dataset = Dataset.from_generator(
        rows,
        features=stream.features,
        cache_dir=folder,
        fingerprint=uuid.uuid4().hex,
    )
    if len(dataset) == 0:
        raise ValueError("the stream holds no rows; there is nothing to score")
    for column in images:
        dataset = dataset.cast_column(column, features[column])
    dataset._fingerprint = "stream-" + digest.hexdigest()[:32]
    return dataset


def stored_image_bytes(value):
    """A stored image ({"bytes", "path"}) with its bytes read where the stream gave only a path
    (remote paths included), so the `Dataset` does not depend on where the stream read it."""
    import os

    if not isinstance(value, dict) or value.get("bytes") is not None or not value.get("path"):
        return value
    path = value["path"]
    if os.path.isfile(path):
        with open(path, "rb") as handle:
            return {"bytes": handle.read(), "path": path}
    from datasets.utils.file_utils import xopen

    with xopen(path, "rb") as handle:
        return {"bytes": handle.read(), "path": path}


def stream_folder() -> str:
    """A temporary folder for one stream's rows, removed when the process exits."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="iis-hf-stream-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


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
    if is_stream(dataset):  # an IterableDataset: read its label column as it streams
        return [row[column] for row in dataset.select_columns([column])]
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
    data_files: str | list[str] | dict[str, Any] | None = None,
    streaming: bool = False,
    shuffle_buffer: int | None = None,
) -> ScoringSplits:
    """Load a dataset (Hub id, `save_to_disk` folder, folder of images or of parquet / arrow /
    webdataset shards; `data_files` picks files) and pick the rows to score on.

    With `streaming` nothing is downloaded whole: the train and eval splits are streamed (shuffled
    in a seeded buffer of `shuffle_buffer` rows when given) and their first `max_train_samples` /
    `max_eval_samples` rows are read once (`as_map_dataset`); without a limit a split is read whole.
    An eval split equal to the train split is refused unless `allow_same_split` (then recorded).
    """
    check_split_names(train_split, eval_split, allow_same_split)
    data = load_image_dataset(
        dataset,
        config_name,
        data_files=data_files,
        streaming=streaming,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
    )
    if streaming and is_stream(data):
        data = streamed_splits(data, train_split, eval_split, max_train_samples, max_eval_samples)
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
            **({"data_files": data_files} if data_files is not None else {}),
            **({"streaming": True, "shuffle_buffer": shuffle_buffer} if streaming else {}),
        },
    )


def streamed_splits(
    data, train_split: str, eval_split: str | None, max_train: int | None, max_eval: int | None
) -> DatasetDict:
    """The splits a scoring run reads from a stream, each cut to its limit and read once: the train
    split, and the eval split (named, or the first of `EVAL_SPLIT_NAMES` the stream has)."""
    from datasets import IterableDataset

    if isinstance(data, IterableDataset):
        data = {train_split: data}
    if train_split not in data:
        raise ValueError(
            f"no split {train_split!r} in the dataset; splits are {sorted(data)}: pass --train-split"
        )
    if eval_split is None:
        eval_split = next((s for s in EVAL_SPLIT_NAMES if s in data and s != train_split), None)
    limits = {train_split: max_train}
    if eval_split is not None:
        if eval_split not in data:
            raise ValueError(f"no split {eval_split!r} in the dataset; splits are {sorted(data)}")
        limits.setdefault(eval_split, max_eval)
    return DatasetDict(
        {name: stream_to_dataset(limit_stream(data[name], rows, None, 0)) for name, rows in limits.items()}
    )
