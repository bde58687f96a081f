"""The experiments' verdicts: paired comparisons with their interval, and what a corrected family says.

The tests themselves (paired t and Wilcoxon, Holm's correction, the detectable effect) are
`iis_hf.stats`'; this module only fixes how the experiments read them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from iis_hf.stats import detectable_effect, holm, paired_tests

__all__ = ["holm", "paired_comparison", "verdict"]


def verdict(test: dict, alpha: float = 0.05, corrected: bool = False) -> str:
    """'higher' / 'lower' when both paired tests reject at alpha (with `corrected`: their
    Holm-adjusted p-values), else 'no detectable difference'."""
    suffix = "_holm" if corrected else ""
    ps = [test.get(f"t_p{suffix}"), test.get(f"wilcoxon_p{suffix}")]
    if all(p is not None and math.isfinite(p) and p < alpha for p in ps):
        return "higher" if test["mean_difference"] > 0 else "lower"
    return "no detectable difference"


def paired_comparison(
    a: Sequence[float], b: Sequence[float], alpha: float = 0.05, power: float = 0.8
) -> dict:
    """`paired_tests` of a - b, with the 95% t interval of the mean difference ("ci95") and the
    smallest difference the test detects with `power` at `alpha` ("detectable_effect")."""
    from scipy.stats import ttest_rel

    out = paired_tests(a, b)
    d = np.asarray(a) - np.asarray(b)
    if np.ptp(d) > 0:
        ci = ttest_rel(a, b).confidence_interval(0.95)
        out["ci95"] = [float(ci.low), float(ci.high)]
    else:
        out["ci95"] = [float(d.mean()), float(d.mean())]
    out["detectable_effect"] = detectable_effect(out["sd_difference"], out["n"], alpha, power)
    return out
