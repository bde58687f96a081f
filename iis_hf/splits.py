"""Seeded row selections shared by every entry point: stratified hold-outs and random subsets.

One function per idea, so that the command line, the metric, the Trainer and head training pick
the same rows for the same labels, fraction and seed (and an IIS measured one way can be
reproduced another way).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

LABELS_MUST_BE = "labels must be integer class ids 0..K-1 (or a ClassLabel)"
LARGEST_LABEL = 2**53  # beyond it a float is no longer exact, and no class count comes near it


def check_labels(values: Any, what: str) -> np.ndarray:
    """`values` (one label per row) as int64 class ids, refusing the first missing or non-integer one
    by its row: numpy would truncate 0.5 to 0 without a word, and a None fails far from the input.

    `what` names the labels in the message ("label column 'label'", "train_labels"). Whole floats
    (1.0) are class ids; the range (0..K-1) is checked where K is known.

    >>> check_labels([0, 1.0, 2], "labels").tolist()
    [0, 1, 2]
    """
    try:
        array = np.asarray(values)
    except ValueError:  # ragged rows (a column of lists)
        array = np.empty(len(values), dtype=object)
        for row, value in enumerate(values):
            array[row] = value
    if array.ndim == 1 and array.dtype.kind in "iub":
        return array.astype(np.int64)
    if array.ndim == 1 and array.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(array) | (array != np.round(array)) | (np.abs(array) >= LARGEST_LABEL)
        if not bad.any():
            return array.astype(np.int64)
        row = int(np.argmax(bad))
        raise ValueError(_label_problem(array[row].item(), row, what))
    rows = array if array.ndim == 1 else list(values)
    for row, value in enumerate(rows):
        if not _is_class_id(value):
            raise ValueError(_label_problem(value, row, what))
    return np.asarray([int(value) for value in rows], dtype=np.int64)


def _is_class_id(value: Any) -> bool:
    """An integer, or a float that is a whole number (1.0); not None, NaN, 0.5, a string or a list."""
    if isinstance(value, (int, np.integer)):
        return abs(int(value)) < LARGEST_LABEL
    return (
        isinstance(value, (float, np.floating))
        and math.isfinite(value)
        and float(value).is_integer()
        and abs(value) < LARGEST_LABEL
    )


def _label_problem(value: Any, row: int, what: str) -> str:
    """The one line naming the labels, the row and the bad value."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (
            f"{what} holds a missing label ({value}) at row {row}: {LABELS_MUST_BE}; drop or label that row"
        )
    text = repr(value)
    shown = text if len(text) <= 40 else text[:37] + "..."
    large = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if large and abs(value) >= LARGEST_LABEL:
        return f"{what} holds the value {shown} at row {row}, too large for a class id: {LABELS_MUST_BE}"
    return f"{what} holds a non-integer value {shown} at row {row}: {LABELS_MUST_BE}"


def stratified_split(labels, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted row indices (kept, held out) with about `fraction` of every class held out.

    Per class of n rows, ``round(n * fraction)`` rows are held out, at least one and at most n - 1
    (a class of one row stays in the kept part). The rows are drawn with a NumPy generator seeded
    by `seed`, class by class in label order.

    >>> kept, held = stratified_split([0, 0, 0, 0, 1, 1], 0.5, seed=0)
    >>> len(held), len(kept)
    (3, 3)
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        count = min(max(round(rows.size * fraction), 1), rows.size - 1) if rows.size > 1 else 0
        held.append(rows[:count])
        kept.append(rows[count:])
    empty = np.zeros(0, dtype=np.int64)
    return (
        np.sort(np.concatenate(kept)) if kept else empty,
        np.sort(np.concatenate(held)) if held else empty,
    )


def random_subset(num_rows: int, max_rows: int | None, seed: int) -> np.ndarray:
    """Sorted indices of `max_rows` rows drawn without replacement (all rows when there are fewer).

    >>> random_subset(5, None, seed=0).tolist()
    [0, 1, 2, 3, 4]
    >>> len(random_subset(100, 10, seed=0))
    10
    """
    if max_rows is None or max_rows >= num_rows:
        return np.arange(num_rows)
    if max_rows < 1:
        raise ValueError(f"the number of rows to keep must be >= 1, got {max_rows}")
    return np.sort(np.random.default_rng(seed).choice(num_rows, size=max_rows, replace=False))
