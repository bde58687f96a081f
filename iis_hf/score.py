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
from dataclasses import dataclass, field, fields
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
            raise ValueError(
                f"sparsity ratio {r} is outside [0, 1): a ratio is the fraction of concepts dropped"
            )
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
    heads: Any = field(default=None, repr=False, compare=False)
    probe: Any = field(default=None, repr=False, compare=False)

    @property
    def relative_accuracies(self) -> list[float]:
        """``A(rho) / A0`` per ratio: above 1 means the probe, not the representation, is the limit."""
        return [a / self.standard_accuracy for a in self.accuracies]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the trained modules, if attached, are left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("heads", "probe")}

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


def compute_iis(
    train_features,
    train_labels,
    eval_features,
    eval_labels,
    concepts,
    *,
    sparsity_ratios: Sequence[float] = DEFAULT_SPARSITY_RATIOS,
    num_classes: int | None = None,
    epochs: int = 30,
    batch_size: int = 1024,
    learning_rate: float | Sequence[float] = 1e-2,
    lr_decay: float = 0.99,
    model_selection: str = "eval",
    holdout_fraction: float = 0.1,
    seed: int = 0,
    device=None,
    progress: bool = True,
    probe_min_steps: int = 1000,
    precision: str = "auto",
    return_heads: bool = False,
) -> IISResult:
    """Score a representation: train the probe and one interpretation head per ratio, integrate.

    Args:
        train_features, eval_features: (N, D) representations: a tensor, an array, or a
            `FeatureStore` (float16 on disk, read memory-mapped in chunks); train fits the heads,
            eval measures them. Use `extract_features` to get them from a model.
        train_labels, eval_labels: (N,) integer class ids (None: the store's own labels).
        concepts: a `ConceptBank`, a (C, D) array of concept vectors, or a bank's folder / Hub id.
        sparsity_ratios: the grid rho; defaults to the published one (0 ... 0.98).
        epochs, batch_size, learning_rate, lr_decay: the published recipe (Adam, 30 epochs,
            batch 1024, lr 1e-2, decay 0.99 per epoch). A list of learning rates is a grid: each
            ratio (and the probe) keeps the best one, all trained in the same pass.
        model_selection: "eval" (best eval top-1 over epochs, as published; optimistic),
            "holdout" (choose on `holdout_fraction` of train, report eval) or "last".
        probe_min_steps: the standard probe (standardised inputs, trained in the same pass as the
            heads) continues alone until it has had at least this many Adam steps. 0 gives the
            published budget, which on small data sets leaves the probe below the heads and
            inflates IIS.
        precision: "auto" runs the heads' and the probe's matrix products in bfloat16 where the
            hardware does so natively (CUDA, or CPUs with AVX512-BF16/AMX), "fp32" or "bf16"
            force it; thresholds, losses and optimizer state are float32 either way.
        return_heads: attach the trained `InterpretationHeads` and probe as `result.heads` and
            `result.probe` (not serialised).
    """
    from .head_training import fit_heads

    ratios = validate_sparsity_ratios(sparsity_ratios, minimum=2)
    train_x, train_y = (
        _as_features(train_features, "train_features"),
        _as_labels(train_labels, train_features, "train_labels"),
    )
    eval_x, eval_y = (
        _as_features(eval_features, "eval_features"),
        _as_labels(eval_labels, eval_features, "eval_labels"),
    )
    for name, x, y in (("train", train_x, train_y), ("eval", eval_x, eval_y)):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{name}: {x.shape[0]} feature rows but {y.shape[0]} labels")
        if x.shape[0] == 0:
            raise ValueError(f"{name} features are empty")
    if train_x.shape[1] != eval_x.shape[1]:
        raise ValueError(f"train features have dimension {train_x.shape[1]}, eval features {eval_x.shape[1]}")
    if num_classes is None:
        num_classes = int(max(train_y.max(), eval_y.max())) + 1
    for name, y in (("train", train_y), ("eval", eval_y)):
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise ValueError(
                f"{name} labels must be in [0, {num_classes}); found {int(y.min())}..{int(y.max())}"
            )
    if train_y.unique().numel() < 2:
        raise ValueError("the training labels hold a single class; IIS needs at least 2 classes")

    fit = fit_heads(
        train_x,
        train_y,
        eval_x,
        eval_y,
        concepts,
        num_classes=num_classes,
        sparsity_ratios=ratios,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        lr_decay=lr_decay,
        model_selection=model_selection,
        holdout_fraction=holdout_fraction,
        seed=seed,
        device=device,
        progress=progress,
        probe_min_steps=probe_min_steps,
        precision=precision,
    )
    if fit.standard_accuracy <= 0:
        raise ValueError("the standard probe reached 0% accuracy, so IIS is undefined; check the labels")
    result = IISResult(
        iis=inherent_interpretability_score(ratios, fit.accuracies, fit.standard_accuracy),
        standard_accuracy=fit.standard_accuracy,
        accuracies=fit.accuracies,
        sparsity_ratios=ratios,
        num_concepts=fit.heads.num_concepts,
        num_classes=num_classes,
        best_epochs=fit.best_epochs,
        settings={
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "lr_decay": lr_decay,
            "model_selection": model_selection,
            "seed": seed,
            "num_train": int(train_y.shape[0]),
            "num_eval": int(eval_y.shape[0]),
            "selected_learning_rates": fit.learning_rates,
            "standard_learning_rate": fit.standard_learning_rate,
            "standard_best_epoch": fit.standard_best_epoch,
            "probe_steps": fit.probe_steps,
            "precision": fit.precision,
            **({"holdout_fraction": holdout_fraction} if model_selection == "holdout" else {}),
        },
    )
    if return_heads:
        result.heads, result.probe = fit.heads, fit.probe
    warn_if_probe_is_weak(result)
    return result


def _as_features(features, name: str):
    """A float tensor or a FeatureStore, validated (finite values are checked chunk by chunk)."""
    import torch

    from .feature_store import FeatureStore

    if isinstance(features, FeatureStore):
        return features  # validated when it was written
    if hasattr(features, "features") and not hasattr(features, "shape"):  # an ExtractedFeatures
        features = features.features
    tensor = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features)
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        tensor = tensor.float()
    for start in range(0, tensor.shape[0], 65536):
        if not torch.isfinite(tensor[start : start + 65536]).all():
            raise ValueError(f"{name} contain NaN or inf values; check the model's precision or the inputs")
    return tensor


def _as_labels(labels, features, name: str):
    import torch

    if labels is None:
        labels = getattr(features, "labels", None)
        if labels is None:
            raise ValueError(f"{name} are missing: pass them, or a FeatureStore written with labels")
    tensor = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class ids, got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() and not torch.equal(tensor, tensor.round()):
        raise ValueError(f"{name} must be integer class ids")
    return tensor.long()
