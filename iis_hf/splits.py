"""Seeded row selections shared by every entry point: stratified hold-outs and random subsets.

One function per idea, so that the command line, the metric, the Trainer and head training pick
the same rows for the same labels, fraction and seed (and an IIS measured one way can be
reproduced another way).
"""

from __future__ import annotations

import numpy as np


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
