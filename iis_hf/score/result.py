"""The IIS integral and the result object: what a score is, how it reads, and its record (iis.json).

IIS is the area under the curve "accuracy at sparsity rho / standard accuracy", integrated with
the trapezoid rule over the ratio grid and *not* renormalised by the grid's span: with the
published grid (0 ... 0.98) a representation that loses nothing under sparsification scores 0.98.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import MIN_IIS_RATIOS, SCHEMA_VERSION, upgrade_result_record, validate_sparsity_ratios
from ..files import write_json_atomic
from ..hub import public_record

if TYPE_CHECKING:
    from ..data_types import Numbers


def inherent_interpretability_score(
    sparsity_ratios: Sequence[float],
    accuracies: Numbers,
    standard_accuracy: float,
) -> float:
    """Trapezoid integral of ``accuracy(rho) / standard_accuracy`` over the ratios sorted ascending.

    >>> inherent_interpretability_score([0.0, 0.5], [0.8, 0.4], 0.8)
    0.375
    >>> inherent_interpretability_score([0.5, 0.0], [0.4, 0.8], 0.8)  # order does not matter
    0.375
    """
    ratios = validate_sparsity_ratios(sparsity_ratios, minimum=MIN_IIS_RATIOS)
    try:
        accs = [float(a) for a in accuracies]
        a0 = float(standard_accuracy)
    except (TypeError, ValueError) as err:
        raise ValueError("accuracies and standard_accuracy must be numbers") from err
    if len(accs) != len(ratios):
        raise ValueError(
            f"got {len(ratios)} sparsity ratios but {len(accs)} accuracies: give one accuracy per ratio"
        )
    if any(math.isnan(a) for a in accs) or math.isnan(a0):
        raise ValueError("accuracies and standard_accuracy must not be NaN")
    if not 0 < a0 <= 1:
        raise ValueError(
            f"standard_accuracy must be in (0, 1], got {a0}: an accuracy, and IIS is relative to it"
        )
    outside = [a for a in accs if not 0 <= a <= 1]
    if outside:
        raise ValueError(f"accuracies must be in [0, 1] (fractions of correct predictions), got {outside}")
    order = np.argsort(ratios)
    x = np.asarray(ratios, dtype=np.float64)[order]
    y = np.asarray(accs, dtype=np.float64)[order] / a0
    return float(np.sum((y[:-1] + y[1:]) * np.diff(x) / 2.0))


ATTACHMENTS = ("heads", "probe", "concept_bank")  # live objects a result may carry, never serialised


@dataclass
class IISResult:
    """What `compute_iis` measured: the score, the curve behind it, and how it was obtained.

    `iis` is None when the score is undefined (`undefined_reason` says why: a standard accuracy not
    above chance). With several seeds, `iis`, `accuracies` and `standard_accuracy` are means and
    `uncertainty` holds the per-seed values, their standard deviation and a bootstrap interval.
    """

    iis: float | None
    standard_accuracy: float
    accuracies: list[float]
    sparsity_ratios: list[float]
    num_concepts: int | None = None
    num_classes: int | None = None
    best_epochs: list[int] | None = None
    protocol: str | None = "converged"  # None: heads trained by the caller (`iis_from_predictions`)
    uncertainty: dict[str, Any] | None = None
    undefined_reason: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    heads: Any = field(default=None, repr=False, compare=False)  # attachments: see ATTACHMENTS
    probe: Any = field(default=None, repr=False, compare=False)
    concept_bank: Any = field(default=None, repr=False, compare=False)
    # The record's version (`iis_hf.config.SCHEMA_VERSION`); `filled_in`: the settings reading an older
    # record filled in with that version's values ("heads.min_steps"), so nothing is silently assumed.
    schema_version: int = SCHEMA_VERSION
    filled_in: list[str] = field(default_factory=list)

    @property
    def relative_accuracies(self) -> list[float]:
        """``A(rho) / A0`` per ratio: above 1 means the probe, not the representation, is the limit."""
        return [a / self.standard_accuracy for a in self.accuracies]

    @property
    def invalid_reason(self) -> str | None:
        """Why this number is not a valid IIS, or None: a head beat the standard probe by more than one
        evaluation image's worth (1 / num_eval; where the count is unknown, by anything). Then A(rho)/A0
        exceeds 1 and the score measures the probe, not the representation."""
        if self.iis is None or not self.accuracies:
            return None
        num_eval = (self.settings.get("data") or {}).get("num_eval")
        margin = 1.0 / num_eval if num_eval else 1e-9
        ratio, best = max(zip(self.sparsity_ratios, self.accuracies), key=lambda pair: pair[1])
        if best - self.standard_accuracy <= margin:
            if self.iis <= self.max_iis + 1e-9:
                return None
            return (  # each head within one row of A0, but together above what the grid allows
                f"above the grid's maximum: not a valid IIS ({self.iis:.4f} > {self.max_iis:.4f}, the score of a "
                "representation that loses nothing: the heads beat the probe on average); score with the "
                "converged protocol, or on more evaluation images"
            )
        return (
            f"probe weaker than heads: not a valid IIS (A({ratio:g}) = {best:.4f} > A0 = "
            f"{self.standard_accuracy:.4f}, by more than one evaluation image); score with the converged "
            "protocol, or on more evaluation images"
        )

    @property
    def valid(self) -> bool:
        """Whether `iis` is a valid score (defined, and no head beat the probe beyond noise)."""
        return self.iis is not None and self.invalid_reason is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the trained modules and the bank, if attached, are left out), and whether
        the score is valid (`valid`, `invalid_reason`: derived, ignored by `from_dict`). A local folder
        is named by its base name (`iis_hf.hub.public_record`): the record may be pushed."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ATTACHMENTS}
        if not self.filled_in:  # a record of this version fills in nothing
            del data["filled_in"]
        data.update(valid=self.valid, invalid_reason=self.invalid_reason)
        return public_record(data)  # a local model, dataset or bank by its base name: records get pushed

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IISResult:
        """A result from its record (iis.json) of any schema version, read as this version's
        (`iis_hf.config.upgrade_result_record`: old key names mapped, old defaults filled in)."""
        known = set(cls.__dataclass_fields__) - set(ATTACHMENTS)
        missing = {"iis", "standard_accuracy", "accuracies", "sparsity_ratios"} - set(data)
        if missing:
            raise ValueError(f"not an IIS result: missing keys {sorted(missing)}")
        return cls(**{k: v for k, v in upgrade_result_record(data).items() if k in known})

    def to_metrics(self, prefix: str = "") -> dict[str, float | None]:
        """Scalars named as every entry point logs them: ``iis``, ``iis_standard_accuracy``,
        ``iis_accuracy_<rho>``, the interval when known, and ``iis_valid`` (1.0, or 0.0 when the score is
        undefined or a head beat the probe: `invalid_reason`), prefixed (``eval_`` in a Trainer's metrics)."""
        metrics: dict[str, float | None] = {
            f"{prefix}iis": self.iis,
            f"{prefix}iis_standard_accuracy": self.standard_accuracy,
        }
        for ratio, accuracy in zip(self.sparsity_ratios, self.accuracies):
            metrics[f"{prefix}iis_accuracy_{ratio:g}"] = accuracy
        if self.uncertainty is not None:
            low, high = self.uncertainty["ci"]
            metrics.update({f"{prefix}iis_ci_low": low, f"{prefix}iis_ci_high": high})
            if self.uncertainty.get("sd") is not None:
                metrics[f"{prefix}iis_sd"] = self.uncertainty["sd"]
        metrics[f"{prefix}iis_valid"] = 1.0 if self.valid else 0.0  # 0: undefined, or probe weaker than heads
        return metrics

    def iis_text(self, digits: int = 4) -> str:
        """The score as a person reads it: "0.9658 ± 0.0031 (95% CI 0.95-0.97)", or "undefined"."""
        if self.iis is None:
            return "undefined"
        text = f"{self.iis:.{digits}f}"
        uncertainty = self.uncertainty or {}
        if uncertainty.get("sd") is not None:
            text += f" ± {uncertainty['sd']:.{digits}f} (sd over {uncertainty['num_seeds']} seeds)"
        low, high = uncertainty.get("ci") or (None, None)
        if low is not None and math.isfinite(low):
            text += f", {uncertainty['confidence']:.0%} CI [{low:.{digits}f}, {high:.{digits}f}]"
            if high is not None and high > self.max_iis + 1e-9:
                text += f" (past the grid's maximum {self.max_iis:g}: heads beat the probe in some resamples)"
        if self.invalid_reason is not None:
            text += f" (NOT A VALID IIS: {self.invalid_reason.split(':')[0]})"
        return text

    def save_json(self, path: str | os.PathLike) -> None:
        """Write the result as JSON through a temporary file, so a crash never leaves half a file."""
        write_json_atomic(path, self.to_dict())

    def table(self) -> str:
        """A short plain-text table of the curve, for terminals and logs."""
        steps = self.metadata.get("head_steps") or [None] * len(self.accuracies)
        converged = self.metadata.get("heads_converged")
        state = ["yes" if done else "NO" for done in converged] if converged else [""] * len(steps)
        lines = [f"{'sparsity':>9}  {'accuracy':>8}  {'A/A0':>6}  {'steps':>6}  converged"]
        for r, a, rel, n, done in zip(
            self.sparsity_ratios, self.accuracies, self.relative_accuracies, steps, state
        ):
            lines.append(f"{r:>9.2f}  {a:>8.4f}  {rel:>6.3f}  {n if n is not None else '–':>6}  {done}")
        lines.append(f"standard accuracy A0 = {self.standard_accuracy:.4f}")
        lines.append(
            f"IIS = {self.iis_text()}  (perfect on this grid: {self.max_iis:.4f}; {self.protocol} protocol)"
        )
        if self.undefined_reason:
            lines.append(self.undefined_reason)
        if self.invalid_reason:
            lines.append(self.invalid_reason)
        return "\n".join(lines)

    @property
    def max_iis(self) -> float:
        """The score of a representation that loses no accuracy at any ratio of this grid."""
        return max(self.sparsity_ratios) - min(self.sparsity_ratios)

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: str | os.PathLike, title: str | None = None) -> None:
        """Save the curve ``A(rho)/A0`` against rho as a PNG (a name ending in .png, or no extension);
        the shaded area is the IIS."""
        from ..plotting import plot_iis_curve

        suffix = os.path.splitext(os.fspath(path))[1]
        if suffix.lower() not in ("", ".png"):
            raise ValueError(
                f"{os.fspath(path)!r}: the curve is written as PNG, so the name must end in .png"
            )

        plot_iis_curve(self, path, title=title)
