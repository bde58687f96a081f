"""Real images that ship inside a package, so everything runs offline.

scikit-learn's digits (1,797 real 8x8 handwritten digits, 16 grey levels) become a `datasets`
image dataset: upscaled RGB PIL images with a `ClassLabel`, split into train and test.
"""

from __future__ import annotations

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image


def load_digits_dataset(image_size: int = 32, test_fraction: float = 0.25, seed: int = 0) -> DatasetDict:
    """scikit-learn's digits as a DatasetDict with `image` (RGB, image_size^2) and `label` columns."""
    from PIL import Image as PILImage
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images / 16.0 * 255.0).round().astype(np.uint8)
    images = [
        PILImage.fromarray(p, mode="L").resize((image_size, image_size), PILImage.NEAREST).convert("RGB")
        for p in pixels
    ]
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    full = Dataset.from_dict({"image": images, "label": digits.target.tolist()}, features=features)
    split = full.train_test_split(test_size=test_fraction, seed=seed, stratify_by_column="label")
    return DatasetDict(train=split["train"], test=split["test"])


EVAL_SPLIT_NAMES = ("validation", "valid", "val", "test", "eval")


def load_image_dataset(source: str, config_name: str | None = None, **kwargs) -> DatasetDict | Dataset:
    """A Hub dataset id, a `save_to_disk` folder, or a folder of images (datasets' `imagefolder`)."""
    import os

    from datasets import load_dataset, load_from_disk

    if os.path.isdir(source):
        saved = any(os.path.exists(os.path.join(source, f)) for f in ("dataset_dict.json", "state.json"))
        if saved:
            check_saved_dataset_not_empty(source)
        try:
            if saved:
                return load_from_disk(source)
            return load_dataset("imagefolder", data_dir=source, **kwargs)
        except Exception as err:  # datasets raises many types for a bad folder
            raise ValueError(f"could not read dataset folder {source}: {err}") from None
    if os.path.isabs(source) or source.startswith(".") or source.count("/") > 1 or os.path.exists(source):
        raise ValueError(f"dataset {source} does not exist (expected a folder, or a Hub dataset id)")
    try:
        return load_dataset(source, config_name, **kwargs)
    except Exception as err:
        raise ValueError(f"could not load dataset {source!r} from the Hub: {err}") from None


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


def train_eval_splits(
    data: DatasetDict | Dataset,
    train_split: str = "train",
    eval_split: str | None = None,
    eval_fraction: float = 0.2,
    label_column: str | None = None,
    seed: int = 0,
) -> tuple[Dataset, Dataset, str]:
    """Pick the train and eval splits; carve a stratified eval split from train when there is none.

    Returns (train, eval, description of where eval came from).
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
        return data[train_split], data[eval_split], eval_split
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    train = data[train_split]
    stratify = (
        label_column if label_column and isinstance(train.features.get(label_column), ClassLabel) else None
    )
    split = train.train_test_split(test_size=eval_fraction, seed=seed, stratify_by_column=stratify)
    return split["train"], split["test"], f"{eval_fraction:.0%} of {train_split} (seed {seed})"
