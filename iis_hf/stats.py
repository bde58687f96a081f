"""Small statistics for IIS: uncertainty of a score, a chance test, and experiment reports.

These are thin, documented wrappers over `scipy.stats` (scipy is installed with scikit-learn, a
dependency of iis-hf) that fix the conventions used in the experiments (`iis_paper`) and
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
import numpy.typing as npt

from iis_hf.data_types import FloatArray, Labels, Numbers

__all__ = [
    "ChanceTest",
    "ConfidenceInterval",
    "above_chance",
    "bootstrap_ci",
    "bootstrap_iis",
    "correlation_summary",
    "detectable_effect",
    "holm",
    "paired_tests",
    "pearson",
    "permutation_pvalue",
    "spearman",
    "trapezoid_weights",
]


def _pair(x: Numbers, y: Numbers) -> tuple[FloatArray, FloatArray]:
    xs = np.asarray(x, dtype=np.float64).ravel()
    ys = np.asarray(y, dtype=np.float64).ravel()
    if xs.shape != ys.shape:
        raise ValueError(f"x and y must have the same length, got {xs.size} and {ys.size}")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("x and y must be finite numbers")
    return xs, ys


def _defined(x: FloatArray, y: FloatArray) -> bool:
    """A correlation needs 3 points and variation in both variables."""
    return bool(x.size >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0)


def pearson(x: Numbers, y: Numbers) -> float:
    """Pearson's linear correlation r of x and y (`scipy.stats.pearsonr`); NaN when undefined."""
    from scipy.stats import pearsonr

    xs, ys = _pair(x, y)
    if not _defined(xs, ys):
        return math.nan
    return float(pearsonr(xs, ys).statistic)


def spearman(x: Numbers, y: Numbers) -> float:
    """Spearman's rank correlation rho (`scipy.stats.spearmanr`, ties get average ranks); NaN when undefined."""
    from scipy.stats import spearmanr

    xs, ys = _pair(x, y)
    if not _defined(xs, ys):
        return math.nan
    return float(spearmanr(xs, ys).statistic)


class ConfidenceInterval(NamedTuple):
    """A percentile bootstrap interval; `n_valid` resamples had a defined statistic."""

    low: float
    high: float
    n_valid: int


def bootstrap_ci(
    x: Numbers,
    y: Numbers | None,
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
    xs: FloatArray
    ys: FloatArray | None
    if y is None:
        xs, ys = np.asarray(x, dtype=np.float64).ravel(), None
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


def _centred_correlation(a: FloatArray, b: FloatArray) -> FloatArray:
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=-1) / np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))


def _pearson_along(x: FloatArray, y: FloatArray, axis: int = -1) -> FloatArray:
    return _centred_correlation(np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1))


def _spearman_along(x: FloatArray, y: FloatArray, axis: int = -1) -> FloatArray:
    from scipy.stats import rankdata

    return _centred_correlation(
        rankdata(np.moveaxis(x, axis, -1), axis=-1), rankdata(np.moveaxis(y, axis, -1), axis=-1)
    )


def permutation_pvalue(
    x: Numbers,
    y: Numbers,
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

    xs, ys = _pair(x, y)
    if not _defined(xs, ys):
        return math.nan
    along = {"spearman": _spearman_along, "pearson": _pearson_along}[method]

    # x stays fixed: n! distinct pairings, not (n!)^2
    def statistic(permuted_y: FloatArray, axis: int = -1) -> FloatArray:
        permuted_y = np.moveaxis(permuted_y, axis, -1)
        return along(np.broadcast_to(xs, permuted_y.shape), permuted_y)

    result = permutation_test(
        (ys,),
        statistic,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=n_permutations,
        alternative="two-sided",
        random_state=seed,
    )
    return float(result.pvalue)


def correlation_summary(
    x: Numbers,
    y: Numbers,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    n_permutations: int = 9999,
) -> dict:
    """Pearson and Spearman of (x, y) with permutation p-values and bootstrap intervals (JSON-ready).

    Keys: n, pearson, pearson_p, pearson_ci ([low, high]), spearman, spearman_p, spearman_ci.
    """
    xs, ys = _pair(x, y)
    out: dict = {"n": int(xs.size)}
    for name, function in (("pearson", pearson), ("spearman", spearman)):
        ci = bootstrap_ci(xs, ys, function, n_resamples=n_resamples, seed=seed, confidence=confidence)
        out[name] = function(xs, ys)
        out[f"{name}_p"] = permutation_pvalue(xs, ys, name, n_permutations=n_permutations, seed=seed)
        out[f"{name}_ci"] = [ci.low, ci.high]
    return out


def paired_tests(a: Numbers, b: Numbers) -> dict:
    """Paired t-test and Wilcoxon signed-rank test of ``a - b`` (two-sided), as a JSON-ready dict.

    Keys: n, mean_a, mean_b, sd_a, sd_b (sample sd), mean_difference, sd_difference,
    t_statistic, t_p (`scipy.stats.ttest_rel`), wilcoxon_statistic, wilcoxon_p
    (`scipy.stats.wilcoxon`, zero differences dropped as in Wilcoxon's original test) and
    n_nonzero. When every difference is 0 both p-values are 1; when the differences are all equal
    but not 0, the t-test is undefined (NaN) and only Wilcoxon answers.
    """
    from scipy.stats import ttest_rel, wilcoxon

    xa, xb = _pair(a, b)
    if xa.size < 2:
        raise ValueError(f"paired tests need at least 2 pairs, got {xa.size}")
    d = xa - xb
    out = {
        "n": int(xa.size),
        "mean_a": float(xa.mean()),
        "mean_b": float(xb.mean()),
        "sd_a": float(xa.std(ddof=1)),
        "sd_b": float(xb.std(ddof=1)),
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
        t = ttest_rel(xa, xb)
        out.update(t_statistic=float(t.statistic), t_p=float(t.pvalue))
    w = wilcoxon(xa, xb)
    out.update(wilcoxon_statistic=float(w.statistic), wilcoxon_p=float(w.pvalue))
    return out


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (Holm 1979), in the order given (scipy has none).

    The k-th smallest of m p-values is multiplied by (m - k + 1), then made non-decreasing and capped
    at 1. A missing or NaN p-value (an undefined test) counts as 1 in the family and stays None.
    """
    raw = [p if p is not None and math.isfinite(p) else None for p in pvalues]
    filled = [1.0 if p is None else float(p) for p in raw]
    adjusted, running = [1.0] * len(filled), 0.0
    for rank, i in enumerate(sorted(range(len(filled)), key=filled.__getitem__)):
        running = max(running, min(1.0, (len(filled) - rank) * filled[i]))
        adjusted[i] = running
    return [None if p is None else a for p, a in zip(raw, adjusted)]


def detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true mean difference a two-sided paired t-test of `n` pairs finds with `power` at
    `alpha`, given the sd of the differences (noncentral t); 0 when it cannot be computed."""
    from scipy.optimize import brentq
    from scipy.stats import nct
    from scipy.stats import t as student

    if n < 2 or not sd > 0:
        return 0.0
    df, crit = n - 1, student.ppf(1 - alpha / 2, n - 1)

    def shortfall(delta: float) -> float:
        nc = delta * math.sqrt(n) / sd
        lower = nct.cdf(-crit, df, nc)  # negligible here; scipy can return NaN for it
        return nct.sf(crit, df, nc) + (0.0 if math.isnan(lower) else lower) - power

    high = sd
    while shortfall(high) < 0:  # widen the bracket (n = 2 needs about 10 sd)
        high *= 2
    return float(brentq(shortfall, 1e-12 * sd, high))


# --------------------------------------------------------------------------------------- IIS itself
def trapezoid_weights(sparsity_ratios: Numbers) -> FloatArray:
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


RESAMPLE_BLOCK = 64  # bootstrap resamples drawn and counted at a time


def bootstrap_iis(
    sparsity_ratios: Numbers,
    probe_correct: npt.NDArray[np.bool_] | FloatArray,
    heads_correct: npt.NDArray[np.bool_] | FloatArray,
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
    # counts[b, i]: how often resample b drew row i; accuracies are then matrix products, taken over
    # blocks of resamples so that memory holds (block, N) counts, not (n_resamples, N)
    a0_parts, accuracy_parts = [], []
    for start in range(0, n_resamples, RESAMPLE_BLOCK):
        block = min(RESAMPLE_BLOCK, n_resamples - start)
        counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(block)]) / n
        a0_parts.append(probe @ counts.T)
        accuracy_parts.append(np.einsum("srn,bn->srb", heads, counts))
    a0 = np.concatenate(a0_parts, axis=-1)  # (S, B)
    accuracies = np.concatenate(accuracy_parts, axis=-1)  # (S, R, B)
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


def above_chance(correct: int, total: int, labels: Labels) -> ChanceTest:
    """Binomial test of `correct` successes in `total` trials against the majority-class rate of `labels`.

    A classifier that always answers the most frequent class reaches that rate without looking at
    the input; an accuracy not clearly above it says nothing about the representation.

    >>> above_chance(10, 10, [0, 1] * 5).p_value < 0.01
    True
    >>> above_chance(5, 10, [0, 1] * 5).p_value > 0.5
    True
    """
    from scipy.stats import binomtest

    ids = np.asarray(labels).reshape(-1)
    if total < 1 or ids.size == 0:
        raise ValueError("the chance test needs at least one eval row")
    rate = float(np.bincount(ids - ids.min()).max() / ids.size)
    return ChanceTest(rate, float(binomtest(int(correct), int(total), rate, alternative="greater").pvalue))
