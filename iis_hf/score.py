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
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import (
    CHANCE_ALPHA,
    DEFAULT_SPARSITY_RATIOS,
    HeadsConfig,
    validate_sparsity_ratios,
    with_settings,
)
from .files import write_json_atomic
from .splits import check_labels
from .stats import above_chance, bootstrap_iis

if TYPE_CHECKING:
    import torch

    from .concepts.bank import ConceptsLike
    from .data_types import Features, IntArray, Labels, Numbers
    from .features.store import FeatureStore

BOOTSTRAP_RESAMPLES = 1000  # resamples of the eval rows behind a result's confidence interval
CONFIDENCE = 0.95

__all__ = [
    "DEFAULT_SPARSITY_RATIOS",
    "IISResult",
    "WeakProbeWarning",
    "compute_iis",
    "iis_from_predictions",
    "inherent_interpretability_score",
]


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
    ratios = validate_sparsity_ratios(sparsity_ratios, minimum=2)
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
        the score is valid (`valid`, `invalid_reason`: derived, ignored by `from_dict`)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ATTACHMENTS}
        data.update(valid=self.valid, invalid_reason=self.invalid_reason)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IISResult:
        known = set(cls.__dataclass_fields__) - set(ATTACHMENTS)
        missing = {"iis", "standard_accuracy", "accuracies", "sparsity_ratios"} - set(data)
        if missing:
            raise ValueError(f"not an IIS result: missing keys {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

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
        from .plotting import plot_iis_curve

        suffix = os.path.splitext(os.fspath(path))[1]
        if suffix.lower() not in ("", ".png"):
            raise ValueError(
                f"{os.fspath(path)!r}: the curve is written as PNG, so the name must end in .png"
            )

        plot_iis_curve(self, path, title=title)


class WeakProbeWarning(UserWarning):
    """A head beat the standard probe (A(rho) > A0): IIS then measures the probe, not the representation.

    Filter or catch it by class (``warnings.simplefilter("error", WeakProbeWarning)``), not by text.
    """


class UnseenClassWarning(UserWarning):
    """Some evaluation images belong to classes that have no training image: nothing can predict them,
    so A0 and every A(rho) are capped below 1."""


class UnconvergedHeadsWarning(UserWarning):
    """Some heads were still improving when head training reached `max_steps`: their accuracies, and so
    the IIS, may rise with a larger budget."""


def warn_if_heads_unconverged(result: IISResult) -> None:
    """Warn, naming the setting to raise, when a head reached the step cap still improving."""
    converged = result.metadata.get("heads_converged")
    heads = result.settings.get("heads") or {}
    if not converged or all(converged) or heads.get("epochs") is not None:  # a fixed budget was asked for
        return
    ratios = [r for r, done in zip(result.sparsity_ratios, converged) if not done]
    cap = heads.get("max_steps")
    warnings.warn(
        f"the interpretation heads at sparsity ratios {ratios} were still improving when they reached "
        f"max_steps={cap}: their accuracies and the IIS may rise with more steps; raise max_steps",
        UnconvergedHeadsWarning,
        stacklevel=3,
    )


class EmptyHeadWarning(UserWarning):
    """At some ratio the head drops every concept (``int(C * rho) + 1 >= C``): it predicts from its bias
    alone, and its accuracy says nothing about the representation."""


def warn_if_eval_classes_unseen(train_labels, eval_labels) -> None:
    """Warn when evaluation labels hold classes the training labels never show."""
    seen = set(np.unique(np.asarray(train_labels)).tolist())
    eval_labels = np.asarray(eval_labels)
    unseen = sorted(set(np.unique(eval_labels).tolist()) - seen)
    if unseen:
        rows = int(np.isin(eval_labels, unseen).sum())
        warnings.warn(
            f"{rows} of {len(eval_labels)} eval images belong to classes with no training image "
            f"(class ids {unseen[:10]}{' ...' if len(unseen) > 10 else ''}): nothing can predict them, so A0 and "
            f"every A(rho) are at most {1 - rows / len(eval_labels):.3f}; score on splits that share their classes",
            UnseenClassWarning,
            stacklevel=3,
        )


def warn_if_heads_keep_nothing(result: IISResult) -> None:
    """Warn about ratios whose heads drop all C concepts (``int(C * rho) + 1 >= C``)."""
    count = result.num_concepts
    if not count:
        return
    empty = [r for r in result.sparsity_ratios if int(count * r) + 1 >= count]
    if empty:
        needed = next(c for c in range(count + 1, 10**7) if all(int(c * r) + 1 < c for r in empty))
        warnings.warn(
            f"with {count} concepts the heads at sparsity ratio(s) {empty} drop every concept "
            f"(int(C * rho) + 1 of C are dropped), so they predict from their bias alone; use at least "
            f"{needed} concepts for this grid",
            EmptyHeadWarning,
            stacklevel=3,
        )


# What a head beating A0 means, by who gave A0: iis-hf's own probe (`compute_iis`, whose training the
# keywords set), or predictions the caller brings (`iis_from_predictions`: the metric's default
# config, a probe of theirs; its "classifier" config, the model's own classifier: no probe at all).
OWN_PROBE_ADVICE = (
    "the linear probe has not converged (or the eval rows are too few to tell), so IIS reflects the "
    "probe rather than the representation. Give it more steps (probe_min_steps=) or raise the learning "
    "rate (learning_rate=)."
)
GIVEN_A0_ADVICE = (
    "what A0 comes from (standard_predictions or standard_accuracy; in the 'classifier' config the "
    "classifier's own predictions) is weaker than the heads, so IIS reflects it rather than the "
    "representation. Check that it and the heads were measured on the same images, or bring a "
    "stronger one (a classifier or probe trained to convergence)."
)


def warn_if_probe_is_weak(result: IISResult, advice: str = OWN_PROBE_ADVICE) -> None:
    """Warn when a head beats the standard probe: then IIS measures the probe, not the representation.
    `advice` says what to do about it where A0 came from (`OWN_PROBE_ADVICE`, `GIVEN_A0_ADVICE`)."""
    above = [(r, a) for r, a in zip(result.sparsity_ratios, result.relative_accuracies) if a > 1.0 + 1e-9]
    if above:
        worst = max(a for _, a in above)
        warnings.warn(
            f"interpretation accuracy exceeds the standard accuracy at {len(above)} ratio(s) "
            f"(max A/A0 = {worst:.3f}): {advice}",
            WeakProbeWarning,
            stacklevel=3,
        )


def compute_iis(
    train_features: Features | FeatureStore,
    train_labels: Labels | None,
    eval_features: Features | FeatureStore,
    eval_labels: Labels | None,
    concepts: ConceptsLike,
    *,
    config: HeadsConfig | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    device=None,
    progress: bool = True,
    return_heads: bool = False,
    **settings,
) -> IISResult:
    """Score a representation: train the probe and one interpretation head per ratio, integrate.

    Args:
        train_features, eval_features: (N, D) representations: a tensor, an array, or a
            `FeatureStore` (float16 on disk, read memory-mapped in chunks); train fits the heads,
            eval measures them. Use `extract_features` to get them from a model.
        train_labels, eval_labels: (N,) integer class ids (None: the store's own labels).
        concepts: a `ConceptBank`, a (C, D) array of concept vectors, or a bank's folder / Hub id.
        config: the head-training recipe, a `HeadsConfig` (default: the published one). Keyword
            `settings` named like its fields override it: `sparsity_ratios` (the grid rho, at least
            2), `epochs`, `batch_size` (rows per step), `learning_rate` (a list is a grid: each ratio
            keeps its best, all trained in the same pass), `lr_decay`, `model_selection` ("eval":
            best eval top-1 over epochs, as published; "holdout": chosen on `holdout_fraction` of
            train; "last"), `probe_min_steps` (the standard probe, trained on standardised inputs in
            the same pass as the heads, continues alone until it has had this many Adam steps; 0
            gives it the heads' budget, which on small data sets leaves it below the heads and
            inflates IIS) and `precision` ("auto": bfloat16 matrix products where the hardware runs
            them natively; "fp32"; "bf16").
        num_classes: default: the largest label + 1.
        seed: initialises the heads and the probe, and orders the training rows.
        return_heads: attach the trained `InterpretationHeads` and probe as `result.heads` and
            `result.probe` (not serialised).
    """
    from .heads import fit_heads

    config = with_settings(config, HeadsConfig, settings, "compute_iis")
    validate_sparsity_ratios(config.sparsity_ratios, minimum=2)
    train_x, train_y = (
        _as_features(train_features, "train_features"),
        _as_labels(train_labels, train_features, "train_labels"),
    )
    eval_x, eval_y = (
        _as_features(eval_features, "eval_features"),
        _as_labels(eval_labels, eval_features, "eval_labels"),
    )
    num_classes = _check_data(train_x, train_y, eval_x, eval_y, num_classes)
    warn_if_eval_classes_unseen(train_y.numpy(), eval_y.numpy())
    fits = [
        fit_heads(
            train_x,
            train_y,
            eval_x,
            eval_y,
            concepts,
            num_classes=num_classes,
            config=config,
            seed=seed + offset,
            device=device,
            progress=progress,
        )
        for offset in range(config.num_seeds)
    ]
    result = result_of_fits(fits, config, seed, eval_y.numpy())
    result.num_classes = num_classes
    result.settings["data"] = {"num_train": int(train_y.shape[0]), "num_eval": int(eval_y.shape[0])}
    if return_heads:
        result.heads, result.probe = fits[0].heads, fits[0].probe
    warn_if_heads_keep_nothing(result)
    warn_if_heads_unconverged(result)
    if result.iis is not None:
        warn_if_probe_is_weak(result)
    return result


def result_of_fits(fits, config: HeadsConfig, seed: int, eval_labels: np.ndarray) -> IISResult:
    """One `IISResult` from the fits of one or more seeds: means, spread, interval, chance test."""
    ratios = list(config.sparsity_ratios)
    accuracies = np.array([fit.accuracies for fit in fits])  # (S, R)
    standard = np.array([fit.standard_accuracy for fit in fits])  # (S,)
    per_seed = [
        inherent_interpretability_score(ratios, acc, a0) if a0 > 0 else math.nan
        for acc, a0 in zip(accuracies, standard)
    ]
    interval = bootstrap_iis(
        ratios,
        np.stack([fit.eval_probe_correct.numpy() for fit in fits]),
        np.stack([fit.eval_heads_correct.numpy() for fit in fits]),
        n_resamples=BOOTSTRAP_RESAMPLES,
        seed=seed,
        confidence=CONFIDENCE,
    )
    first = fits[0]
    result = IISResult(
        iis=float(np.mean(per_seed)),
        standard_accuracy=float(standard.mean()),
        accuracies=accuracies.mean(0).tolist(),
        sparsity_ratios=ratios,
        num_concepts=first.heads.num_concepts,
        best_epochs=first.best_epochs,
        protocol=config.protocol,
        uncertainty={
            "num_seeds": len(fits),
            "seeds": [seed + offset for offset in range(len(fits))],
            "iis_per_seed": per_seed,
            "sd": float(np.std(per_seed, ddof=1)) if len(fits) > 1 else None,
            "accuracies_sd": accuracies.std(0, ddof=1).tolist() if len(fits) > 1 else None,
            "standard_accuracy_sd": float(standard.std(ddof=1)) if len(fits) > 1 else None,
            "ci": [interval.low, interval.high],
            "confidence": CONFIDENCE,
            "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
        },
        settings={"heads": config.recorded(), "seed": seed},
        metadata={
            "selected_learning_rates": first.learning_rates,
            "standard_learning_rate": first.standard_learning_rate,
            "standard_best_epoch": first.standard_best_epoch,
            "probe_steps": first.probe_steps,
            # Per ratio: the Adam steps its head trained and whether it had stopped improving (converged
            # protocol; the "paper" protocol trains a fixed number of epochs and records None).
            "head_steps": [max(fit.head_steps for fit in fits)] * len(ratios),
            "heads_converged": (
                [all(fit.converged[r] for fit in fits) for r in range(len(ratios))]
                if first.converged is not None
                else None
            ),
            "head_precision": first.precision,
        },
    )
    refuse_chance_level(result, eval_labels)
    return result


def refuse_chance_level(result: IISResult, eval_labels: np.ndarray) -> None:
    """Make the IIS undefined when A0 is not clearly above the majority-class rate.

    IIS is a ratio to A0: a representation the probe cannot classify better than by always naming
    the most frequent class gets heads and probe both at chance, a ratio near 1, and an IIS near the
    maximum. That number would mean nothing, so it is not given (one-sided binomial test, level
    `CHANCE_ALPHA`).
    """
    n = int(eval_labels.shape[0])
    test = above_chance(round(result.standard_accuracy * n), n, eval_labels)
    result.metadata.update(chance_rate=test.chance_rate, chance_p_value=test.p_value)
    if test.p_value >= CHANCE_ALPHA:
        result.undefined_reason = (
            f"IIS is undefined: the standard accuracy A0 = {result.standard_accuracy:.3f} is not clearly above "
            f"chance (the majority class is {test.chance_rate:.3f} of the {n} eval images; binomial p = "
            f"{test.p_value:.2g} >= {CHANCE_ALPHA}), so the representation does not separate the classes and a "
            "score relative to A0 measures nothing; check the model (a constant or diverged output?), "
            "or evaluate on more images"
        )
        result.iis = None


def iis_from_predictions(
    predictions: IntArray | torch.Tensor | Sequence[Sequence[int]],
    references: Labels,
    *,
    standard_predictions: Labels | None = None,
    standard_accuracy: float | None = None,
    sparsity_ratios: Sequence[float] | None = None,
) -> IISResult:
    """IIS from the predictions of heads you trained yourself (the evaluate metric's default config).

    Args:
        predictions: (N, R) integer class ids; column j holds the head at ``sparsity_ratios[j]``.
        references: (N,) integer class ids.
        standard_predictions: (N,) the linear probe's predictions; A0 is their accuracy. Or:
        standard_accuracy: A0 in (0, 1] directly (exactly one of the two).
        sparsity_ratios: one ratio per column (default: the published grid, for 8 columns).
    """
    preds = class_ids(predictions, "predictions", ndim=2)
    refs = class_ids(references, "references", ndim=1)
    if preds.shape[0] != refs.shape[0]:
        raise ValueError(f"got {preds.shape[0]} rows of predictions but {refs.shape[0]} references")
    if sparsity_ratios is None:
        if preds.shape[1] != len(DEFAULT_SPARSITY_RATIOS):
            raise ValueError(
                f"predictions have {preds.shape[1]} columns but no sparsity_ratios were given: pass "
                "sparsity_ratios= with one ratio per column (the default, the published grid "
                f"{list(DEFAULT_SPARSITY_RATIOS)}, needs 8 columns)"
            )
        sparsity_ratios = DEFAULT_SPARSITY_RATIOS
    ratios = validate_sparsity_ratios(sparsity_ratios, minimum=2)
    if preds.shape[1] != len(ratios):
        raise ValueError(
            f"got {len(ratios)} sparsity ratios but predictions have {preds.shape[1]} columns: "
            "each row of predictions must hold one predicted label per sparsity ratio"
        )
    a0, probe_rows = _standard_accuracy(standard_predictions, standard_accuracy, refs)
    heads_rows = (preds == refs[:, None]).T  # (R, N)
    accuracies = heads_rows.mean(1).tolist()
    interval = bootstrap_iis(ratios, probe_rows[None], heads_rows[None], BOOTSTRAP_RESAMPLES, 0, CONFIDENCE)
    result = IISResult(
        iis=inherent_interpretability_score(ratios, accuracies, a0),
        standard_accuracy=a0,
        accuracies=accuracies,
        sparsity_ratios=ratios,
        protocol=None,  # the caller trained the heads
        uncertainty={
            "num_seeds": 1,
            "ci": [interval.low, interval.high],
            "confidence": CONFIDENCE,
            "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
        },
        settings={"data": {"num_eval": int(refs.shape[0])}},
    )
    warn_if_probe_is_weak(result, GIVEN_A0_ADVICE)
    return result


def class_ids(values, name: str, ndim: int) -> np.ndarray:
    """`values` as an int64 array of `ndim` dimensions, refusing what is not a class id (floats with
    a fraction, non-finite numbers, strings, an empty input) with a ValueError naming `name`."""
    array = _label_array(values, name, ndim)
    _check_label_dtype(array, name)
    if array.ndim == 1 and ndim == 2:
        raise ValueError(f"{name} must be one row of labels per sample (N x number of ratios)")
    array = array.reshape(array.shape[0], -1) if ndim == 2 else array.reshape(-1)
    if np.abs(array).max() > np.iinfo(np.int64).max // 2:
        raise ValueError(f"{name} hold values too large to be class ids")
    return array.astype(np.int64)


def _label_array(values, name: str, ndim: int) -> np.ndarray:
    """`values` as a non-empty numpy array of numbers (ragged rows, strings and objects refused)."""
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name} must be integer class ids, got a string")
    if ndim == 2 and isinstance(values, (list, tuple)):
        lengths = {len(row) for row in values if hasattr(row, "__len__")}
        if len(lengths) > 1:
            raise ValueError(
                f"all rows of {name} must have the same length, got rows of lengths {sorted(lengths)}"
            )
    try:
        array = np.asarray(values)
    except ValueError as err:
        raise ValueError(f"{name} must be integer class ids ({err})") from err
    if array.dtype == object:
        raise ValueError(f"{name} must be integer class ids, found values like {list(values)[:3]}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: give at least one sample")
    return array


def _check_label_dtype(array: np.ndarray, name: str) -> None:
    """Integers, booleans, or floats that are whole and finite: anything else is not a class id."""
    if array.dtype.kind in "USO":
        raise ValueError(f"{name} must be integer class ids, found strings like {array.ravel()[:3].tolist()}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contain NaN or inf; they must be integer class ids")
        if not np.array_equal(array, np.round(array)):
            raise ValueError(
                f"{name} must be integer class ids, found fractional values like "
                f"{array[array != np.round(array)][:3].tolist()} (pass predicted labels, e.g. logits.argmax(-1), "
                "not scores)"
            )
    elif array.dtype.kind not in "iub":
        raise ValueError(f"{name} must be integer class ids, got dtype {array.dtype}")


def check_nesting(values, name: str, ndim: int, expected: str) -> None:
    """Refuse `values` nested other than `ndim` deep (lists of lists, arrays, tensors) in one line naming
    `name` and the `expected` form, before `datasets` reports it with a dump of the whole input."""
    depth, kind = _nesting(values)
    if depth is not None and depth != ndim:
        got = f"a single {kind}" if depth == 0 else f"a {depth}-D {kind}"
        raise ValueError(f"{name} must be {expected}; got {got}")


def _nesting(values) -> tuple[int | None, str]:
    """How deep `values` nests (an array or tensor: its ndim; a list: through its first items) and what
    it is; depth None for an empty list, whose emptiness is reported elsewhere."""
    if hasattr(values, "ndim") and hasattr(values, "shape"):
        return int(values.ndim), "tensor" if hasattr(values, "detach") else "numpy array"
    if isinstance(values, (list, tuple)):
        if not values:
            return None, type(values).__name__
        inner = _nesting(values[0])[0]
        return 1 + (inner or 0), type(values).__name__
    return 0, "string" if isinstance(values, (str, bytes)) else type(values).__name__


def float_rows(values, name: str) -> np.ndarray:
    """(N, D) float32 rows (e.g. representation vectors), refusing ragged, empty or non-finite input."""
    if isinstance(values, np.ndarray) or hasattr(values, "detach"):
        array = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float32)
    else:
        lengths = {len(row) for row in values if hasattr(row, "__len__")}
        if len(lengths) > 1:
            raise ValueError(
                f"all rows of {name} must have the same length, got rows of lengths {sorted(lengths)}"
            )
        try:
            array = np.asarray(values, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be rows of numbers ({err})") from err
    if array.size == 0:
        raise ValueError(f"{name} is empty: give at least one sample")
    if array.ndim != 2:
        raise ValueError(f"{name} must be N rows of D numbers, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contain NaN or inf values (or values beyond float32's range)")
    return array


def _standard_accuracy(
    standard_predictions, standard_accuracy, references: np.ndarray
) -> tuple[float, np.ndarray]:
    """A0 from the probe's predictions or given directly (exactly one of the two), and the per-row
    correctness behind it (a constant A0 per row when only the number is known)."""
    given = standard_predictions is not None
    if given and standard_accuracy is not None:
        raise ValueError(
            "got both standard_predictions and standard_accuracy: give only one (A0 is either the accuracy "
            "of standard_predictions or the number you pass)"
        )
    if given:
        probe = class_ids(standard_predictions, "standard_predictions", ndim=1)
        if probe.shape != references.shape:
            raise ValueError(
                f"got {probe.shape[0]} standard_predictions for {references.shape[0]} references"
            )
        rows = (probe == references).astype(np.float64)
        a0 = float(rows.mean())
    elif standard_accuracy is not None:
        try:
            a0 = float(standard_accuracy)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"standard_accuracy must be a number in (0, 1], got {standard_accuracy!r}"
            ) from err
        if math.isnan(a0):
            raise ValueError(
                "standard_accuracy is NaN: pass the accuracy of the linear probe, a number in (0, 1]"
            )
        if a0 > 1:
            raise ValueError(
                f"standard_accuracy must be at most 1, got {a0}: give a fraction, not a percentage"
            )
    else:
        raise ValueError(
            "the standard accuracy A0 is missing: pass standard_predictions= (the linear probe's "
            "predictions, one per sample) or standard_accuracy= (a float in (0, 1])"
        )
    if a0 <= 0:
        raise ValueError(
            f"standard_accuracy must be > 0, got {a0}: IIS is relative to the standard accuracy, "
            "so the linear probe must get at least one sample right"
        )
    return a0, rows if given else np.full(references.shape[0], a0)


def _check_data(train_x, train_y, eval_x, eval_y, num_classes: int | None) -> int:
    """Shapes, labels and class count agree; returns the number of classes."""
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
    return num_classes


def _as_features(features, name: str):
    """A float tensor or a FeatureStore, validated (finite values are checked chunk by chunk)."""
    import torch

    from .features.store import FeatureStore

    if isinstance(features, FeatureStore):
        return features  # validated when it was written
    if hasattr(features, "features") and not hasattr(features, "shape"):  # an ExtractedFeatures
        features = features.features
    if not torch.is_tensor(features):
        try:
            features = np.asarray(features)
        except ValueError as err:  # ragged rows
            raise ValueError(f"{name} must be a 2-D (N, D) array of numbers ({err})") from None
        if features.dtype.kind not in "biuf":  # strings, objects, complex: not representations
            raise ValueError(
                f"{name} must be a 2-D (N, D) array of numbers, found {features.dtype} values like "
                f"{features.ravel()[:3].tolist()}"
            )
    tensor = torch.as_tensor(features)
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        tensor = tensor.float()
    limit = torch.finfo(torch.float32).max
    for start in range(0, tensor.shape[0], 65536):
        chunk = tensor[start : start + 65536]
        if not torch.isfinite(chunk).all():
            raise ValueError(f"{name} contain NaN or inf values; check the model's precision or the inputs")
        if chunk.numel() and float(chunk.abs().max()) > limit:
            raise ValueError(
                f"{name} reach {float(chunk.abs().max()):.3g}, beyond the float32 range ({limit:.3g}) the heads "
                "compute in; rescale them (e.g. standardise) before scoring"
            )
    return tensor


def _as_labels(labels, features, name: str):
    import torch

    if labels is None:
        labels = getattr(features, "labels", None)
        if labels is None:
            raise ValueError(f"{name} are missing: pass them, or a FeatureStore written with labels")
    if torch.is_tensor(labels) and not labels.is_floating_point():
        tensor = labels
    else:  # the check `iis-hf score` makes of a label column: the first missing or non-integer row
        values = labels.detach().cpu().double().numpy() if torch.is_tensor(labels) else labels
        try:
            shape = f"shape {np.shape(values)}" if np.ndim(values) != 1 else None
        except ValueError:
            shape = "rows of different lengths"
        if shape is not None:
            raise ValueError(f"{name} must be a 1-D array of class ids, got {shape}")
        tensor = torch.from_numpy(check_labels(values, name))
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class ids, got shape {tuple(tensor.shape)}")
    return tensor.long()
