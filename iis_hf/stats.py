"""Small statistics for IIS: uncertainty of a score, a chance test, and experiment reports.

These are thin, documented wrappers over `scipy.stats` (scipy is installed with scikit-learn, a
dependency of iis-hf) that fix the conventions used in `examples/reproduce_findings.py` and
`docs/RESULTS.md`:

- a correlation of fewer than 3 points, or of a constant sequence, is undefined: NaN, never an
  exception or a warning;
- a bootstrap interval resamples (x, y) *pairs* with replacement and reports the percentile
  interval of the statistic over the resamples where it is defined;
- paired tests compare ``a - b`` per pair (e.g. the same seed fine-tuned two ways).

>>> round(spearman([1, 2, 3, 4], [10, 20, 40, 30]), 4)
0.8
>>> round(pearson([1, 2, 3], [2, 4, 7]), 4)
0.9934
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "ChanceTest",
    "ConfidenceInterval",
    "above_chance",
    "bootstrap_ci",
    "bootstrap_iis",
    "correlation_summary",
    "paired_tests",
    "pearson",
    "permutation_pvalue",
    "spearman",
    "trapezoid_weights",
]


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite numbers")
    return x, y


def _defined(x: np.ndarray, y: np.ndarray) -> bool:
    """A correlation needs 3 points and variation in both variables."""
    return x.size >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's linear correlation r of x and y (`scipy.stats.pearsonr`); NaN when undefined."""
    from scipy.stats import pearsonr

    x, y = _pair(x, y)
    if not _defined(x, y):
        return math.nan
    return float(pearsonr(x, y).statistic)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation rho (`scipy.stats.spearmanr`, ties get average ranks); NaN when undefined."""
    from scipy.stats import spearmanr

    x, y = _pair(x, y)
    if not _defined(x, y):
        return math.nan
    return float(spearmanr(x, y).statistic)


class ConfidenceInterval(NamedTuple):
    """A percentile bootstrap interval; `n_valid` resamples had a defined statistic."""

    low: float
    high: float
    n_valid: int


def bootstrap_ci(
    x: Sequence[float],
    y: Sequence[float] | None,
    statistic: Callable[..., float],
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> ConfidenceInterval:
    """Percentile bootstrap interval of ``statistic(x, y)`` (or ``statistic(x)`` when y is None).

    Each resample draws ``len(x)`` indices with replacement (a numpy Generator seeded with `seed`,
    so the interval is reproducible) and keeps the pairs ``(x[i], y[i])`` together. Resamples on
    which the statistic is NaN (e.g. a correlation of a resample whose x values are all equal) are
    dropped; the interval is NaN when fewer than half of them are defined.

    >>> ci = bootstrap_ci([1, 2, 3, 4, 5], None, np.mean, n_resamples=500, seed=0)
    >>> ci.low <= 3.0 <= ci.high
    True
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if y is None:
        xs = np.asarray(x, dtype=np.float64).ravel()
        ys = None
    else:
        xs, ys = _pair(x, y)
    if xs.size == 0:
        raise ValueError("cannot bootstrap an empty sample")
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, xs.size, size=(n_resamples, xs.size))
    values = np.empty(n_resamples)
    for k, idx in enumerate(indices):
        values[k] = statistic(xs[idx]) if ys is None else statistic(xs[idx], ys[idx])
    values = values[np.isfinite(values)]
    if values.size < max(1, n_resamples // 2):
        return ConfidenceInterval(math.nan, math.nan, int(values.size))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return ConfidenceInterval(float(low), float(high), int(values.size))


def _centred_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=-1) / np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))


def _pearson_along(x, y, axis=-1):
    return _centred_correlation(np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1))


def _spearman_along(x, y, axis=-1):
    from scipy.stats import rankdata

    return _centred_correlation(
        rankdata(np.moveaxis(x, axis, -1), axis=-1), rankdata(np.moveaxis(y, axis, -1), axis=-1)
    )


def permutation_pvalue(
    x: Sequence[float],
    y: Sequence[float],
    method: str = "spearman",
    n_permutations: int = 9999,
    seed: int = 0,
) -> float:
    """Two-sided permutation p-value of a correlation (`scipy.stats.permutation_test`, pairings).

    Exact (every pairing enumerated) when ``len(x)! <= n_permutations``, i.e. up to 7 points with the
    default; otherwise a seeded Monte Carlo estimate ``(k + 1) / (n_permutations + 1)``. Unlike the
    asymptotic p-values of `scipy.stats.spearmanr` / `pearsonr`, it is valid for a handful of points
    (a model's few checkpoints). NaN when the correlation is undefined.
    """
    from scipy.stats import permutation_test

    x, y = _pair(x, y)
    if not _defined(x, y):
        return math.nan
    along = {"spearman": _spearman_along, "pearson": _pearson_along}[method]

    def statistic(permuted_y, axis=-1):  # x stays fixed: n! distinct pairings, not (n!)^2
        permuted_y = np.moveaxis(permuted_y, axis, -1)
        return along(np.broadcast_to(x, permuted_y.shape), permuted_y)

    result = permutation_test(
        (y,),
        statistic,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=n_permutations,
        alternative="two-sided",
        random_state=seed,
    )
    return float(result.pvalue)


def correlation_summary(
    x: Sequence[float],
    y: Sequence[float],
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    n_permutations: int = 9999,
) -> dict:
    """Pearson and Spearman of (x, y) with permutation p-values and bootstrap intervals (JSON-ready).

    Keys: n, pearson, pearson_p, pearson_ci ([low, high]), spearman, spearman_p, spearman_ci.
    """
    x, y = _pair(x, y)
    out: dict = {"n": int(x.size)}
    for name, function in (("pearson", pearson), ("spearman", spearman)):
        ci = bootstrap_ci(x, y, function, n_resamples=n_resamples, seed=seed, confidence=confidence)
        out[name] = function(x, y)
        out[f"{name}_p"] = permutation_pvalue(x, y, name, n_permutations=n_permutations, seed=seed)
        out[f"{name}_ci"] = [ci.low, ci.high]
    return out


def paired_tests(a: Sequence[float], b: Sequence[float]) -> dict:
    """Paired t-test and Wilcoxon signed-rank test of ``a - b`` (two-sided), as a JSON-ready dict.

    Keys: n, mean_a, mean_b, sd_a, sd_b (sample sd), mean_difference, sd_difference,
    t_statistic, t_p (`scipy.stats.ttest_rel`), wilcoxon_statistic, wilcoxon_p
    (`scipy.stats.wilcoxon`, zero differences dropped as in Wilcoxon's original test) and
    n_nonzero. When every difference is 0 both p-values are 1; when the differences are all equal
    but not 0, the t-test is undefined (NaN) and only Wilcoxon answers.
    """
    from scipy.stats import ttest_rel, wilcoxon

    a, b = _pair(a, b)
    if a.size < 2:
        raise ValueError(f"paired tests need at least 2 pairs, got {a.size}")
    d = a - b
    out = {
        "n": int(a.size),
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "sd_a": float(a.std(ddof=1)),
        "sd_b": float(b.std(ddof=1)),
        "mean_difference": float(d.mean()),
        "sd_difference": float(d.std(ddof=1)),
        "n_nonzero": int(np.count_nonzero(d)),
    }
    if not np.any(d):
        out.update(t_statistic=0.0, t_p=1.0, wilcoxon_statistic=0.0, wilcoxon_p=1.0)
        return out
    if np.ptp(d) == 0:
        out.update(t_statistic=math.nan, t_p=math.nan)
    else:
        t = ttest_rel(a, b)
        out.update(t_statistic=float(t.statistic), t_p=float(t.pvalue))
    w = wilcoxon(a, b)
    out.update(wilcoxon_statistic=float(w.statistic), wilcoxon_p=float(w.pvalue))
    return out


# --------------------------------------------------------------------------------------- IIS itself
def trapezoid_weights(sparsity_ratios: Sequence[float]) -> np.ndarray:
    """Weights w with ``IIS = sum_r w_r * A(r) / A0`` (the trapezoid rule over the sorted ratios),
    in the order the ratios are given."""
    ratios = np.asarray(sparsity_ratios, dtype=np.float64)
    order = np.argsort(ratios)
    gaps = np.diff(ratios[order])
    sorted_weights = np.zeros(ratios.size)
    sorted_weights[:-1] += gaps / 2.0
    sorted_weights[1:] += gaps / 2.0
    weights = np.empty(ratios.size)
    weights[order] = sorted_weights
    return weights


def bootstrap_iis(
    sparsity_ratios: Sequence[float],
    probe_correct: np.ndarray,
    heads_correct: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> ConfidenceInterval:
    """Percentile interval of the IIS over bootstrap resamples of the eval rows and over seeds.

    Args:
        probe_correct: (S, N) whether the probe of each of S seeds classifies eval row n correctly.
        heads_correct: (S, R, N) the same for the head of each ratio.

    Each resample draws N eval rows with replacement (one draw shared by every seed, so the seeds
    are compared on the same rows) and gives one IIS per seed; the interval is taken over all
    S x `n_resamples` values, so it covers both the eval set's sampling noise and the seeds' spread.
    Resamples on which a probe gets nothing right (IIS undefined) are left out.

    >>> ci = bootstrap_iis([0.0, 0.5], np.ones((1, 20), bool), np.ones((1, 2, 20), bool), n_resamples=50)
    >>> round(ci.low, 3), round(ci.high, 3)
    (0.5, 0.5)
    """
    probe = np.asarray(probe_correct, dtype=np.float64)
    heads = np.asarray(heads_correct, dtype=np.float64)
    if (
        probe.ndim != 2
        or heads.ndim != 3
        or heads.shape[0] != probe.shape[0]
        or heads.shape[2] != probe.shape[1]
    ):
        raise ValueError(
            f"expected (S, N) and (S, R, N) correctness arrays, got {probe.shape} and {heads.shape}"
        )
    n = probe.shape[1]
    rng = np.random.default_rng(seed)
    # counts[b, i]: how often resample b drew row i; accuracies are then matrix products
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_resamples)]) / n
    a0 = probe @ counts.T  # (S, B)
    accuracies = np.einsum("srn,bn->srb", heads, counts)  # (S, R, B)
    weights = trapezoid_weights(sparsity_ratios)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.einsum("r,srb->sb", weights, accuracies) / a0
    values = values[np.isfinite(values)]
    if values.size == 0:
        return ConfidenceInterval(math.nan, math.nan, 0)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return ConfidenceInterval(float(low), float(high), int(values.size))


class ChanceTest(NamedTuple):
    """Whether an accuracy is above the majority-class rate (one-sided exact binomial test)."""

    chance_rate: float
    p_value: float


def above_chance(correct: int, total: int, labels: Sequence[int]) -> ChanceTest:
    """Binomial test of `correct` successes in `total` trials against the majority-class rate of `labels`.

    A classifier that always answers the most frequent class reaches that rate without looking at
    the input; an accuracy not clearly above it says nothing about the representation.

    >>> above_chance(10, 10, [0, 1] * 5).p_value < 0.01
    True
    >>> above_chance(5, 10, [0, 1] * 5).p_value > 0.5
    True
    """
    from scipy.stats import binomtest

    labels = np.asarray(labels).reshape(-1)
    if total < 1 or labels.size == 0:
        raise ValueError("the chance test needs at least one eval row")
    rate = float(np.bincount(labels - labels.min()).max() / labels.size)
    return ChanceTest(rate, float(binomtest(int(correct), int(total), rate, alternative="greater").pvalue))
