"""The IIS integral and the result object.

IIS is the area under the curve "accuracy at sparsity rho / standard accuracy", integrated with
the trapezoid rule over the ratio grid and *not* renormalised by the grid's span: with the
published grid (0 ... 0.98) a representation that loses nothing under sparsification scores 0.98.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .files import write_json_atomic

DEFAULT_SPARSITY_RATIOS: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.98)


def validate_sparsity_ratios(sparsity_ratios: Sequence[float], minimum: int = 1) -> list[float]:
    """Return the ratios as floats, or raise a ValueError naming what is wrong and how to fix it."""
    try:
        ratios = [float(r) for r in sparsity_ratios]
    except (TypeError, ValueError):
        raise ValueError(f"sparsity ratios must be numbers in [0, 1), got {sparsity_ratios!r}") from None
    if len(ratios) < minimum:
        raise ValueError(f"need at least {minimum} sparsity ratio(s), got {len(ratios)}")
    for r in ratios:
        if math.isnan(r) or not 0.0 <= r < 1.0:
            raise ValueError(f"sparsity ratio {r} is outside [0, 1): a ratio is the fraction of concepts dropped")
    duplicates = sorted({r for r in ratios if ratios.count(r) > 1})
    if duplicates:
        raise ValueError(f"duplicate sparsity ratios {duplicates}: give each ratio once")
    return ratios


def inherent_interpretability_score(
    sparsity_ratios: Sequence[float],
    accuracies: Sequence[float],
    standard_accuracy: float,
) -> float:
    """Trapezoid integral of ``accuracy(rho) / standard_accuracy`` over the ratios sorted ascending.

    >>> inherent_interpretability_score([0.0, 0.5], [0.8, 0.4], 0.8)
    0.375
    >>> inherent_interpretability_score([0.5, 0.0], [0.4, 0.8], 0.8)  # order does not matter
    0.375
    """
    ratios = validate_sparsity_ratios(sparsity_ratios, minimum=2)
    try:
        accs = [float(a) for a in accuracies]
        a0 = float(standard_accuracy)
    except (TypeError, ValueError):
        raise ValueError("accuracies and standard_accuracy must be numbers") from None
    if len(accs) != len(ratios):
        raise ValueError(
            f"got {len(ratios)} sparsity ratios but {len(accs)} accuracies: give one accuracy per ratio"
        )
    if any(math.isnan(a) for a in accs) or math.isnan(a0):
        raise ValueError("accuracies and standard_accuracy must not be NaN")
    if a0 <= 0:
        raise ValueError(f"standard_accuracy must be > 0, got {a0}: IIS is relative to the standard accuracy")
    order = np.argsort(ratios)
    x = np.asarray(ratios, dtype=np.float64)[order]
    y = np.asarray(accs, dtype=np.float64)[order] / a0
    return float(np.sum((y[:-1] + y[1:]) * np.diff(x) / 2.0))


@dataclass
class IISResult:
    """What `compute_iis` measured: the score, the curve behind it, and how it was obtained."""

    iis: float
    standard_accuracy: float
    accuracies: list[float]
    sparsity_ratios: list[float]
    num_concepts: int | None = None
    num_classes: int | None = None
    best_epochs: list[int] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def relative_accuracies(self) -> list[float]:
        """``A(rho) / A0`` per ratio: above 1 means the probe, not the representation, is the limit."""
        return [a / self.standard_accuracy for a in self.accuracies]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IISResult:
        known = {f for f in cls.__dataclass_fields__}
        missing = {"iis", "standard_accuracy", "accuracies", "sparsity_ratios"} - set(data)
        if missing:
            raise ValueError(f"not an IIS result: missing keys {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def save_json(self, path: str | os.PathLike) -> None:
        """Write the result as JSON through a temporary file, so a crash never leaves half a file."""
        write_json_atomic(path, self.to_dict())

    def table(self) -> str:
        """A short plain-text table of the curve, for terminals and logs."""
        lines = [f"{'sparsity':>9}  {'accuracy':>8}  {'A/A0':>6}"]
        for r, a, rel in zip(self.sparsity_ratios, self.accuracies, self.relative_accuracies):
            lines.append(f"{r:>9.2f}  {a:>8.4f}  {rel:>6.3f}")
        lines.append(f"standard accuracy A0 = {self.standard_accuracy:.4f}")
        lines.append(f"IIS = {self.iis:.4f}  (perfect on this grid: {self.max_iis:.4f})")
        return "\n".join(lines)

    @property
    def max_iis(self) -> float:
        """The score of a representation that loses no accuracy at any ratio of this grid."""
        return max(self.sparsity_ratios) - min(self.sparsity_ratios)

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: str | os.PathLike, title: str | None = None) -> None:
        """Save the curve ``A(rho)/A0`` against rho as a PNG; the shaded area is the IIS."""
        from .plotting import plot_iis_curve

        plot_iis_curve(self, path, title=title)


def warn_if_probe_is_weak(result: IISResult) -> None:
    """Warn when a head beats the standard probe: then IIS measures the probe, not the representation."""
    above = [(r, a) for r, a in zip(result.sparsity_ratios, result.relative_accuracies) if a > 1.0 + 1e-9]
    if above:
        worst = max(a for _, a in above)
        warnings.warn(
            f"interpretation accuracy exceeds the standard accuracy at {len(above)} ratio(s) "
            f"(max A/A0 = {worst:.3f}): the linear probe has not converged, so IIS reflects the probe "
            "rather than the representation. Train longer (epochs=) or raise the learning rate.",
            UserWarning,
            stacklevel=3,
        )


