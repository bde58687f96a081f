"""Scoring: train the probe and the interpretation heads on a representation and integrate (`compute_iis`),
or integrate heads' predictions the caller brings (`iis_from_predictions`).

The result object and the integral live in `iis_hf.score.result`, the warnings and input checks in
`iis_hf.score.checks`; every public name is importable from `iis_hf.score` as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import (
    CHANCE_ALPHA,
    DEFAULT_SPARSITY_RATIOS,
    MIN_IIS_RATIOS,
    HeadsConfig,
    given_settings,
    validate_sparsity_ratios,
    with_settings,
)
from ..stats import above_chance, bootstrap_iis
from .checks import (
    GIVEN_A0_ADVICE,
    OWN_PROBE_ADVICE,
    EmptyHeadWarning,
    UnconvergedHeadsWarning,
    UnseenClassWarning,
    WeakProbeWarning,
    _as_features,
    _as_labels,
    _check_data,
    check_nesting,
    class_ids,
    float_rows,
    warn_if_eval_classes_unseen,
    warn_if_heads_keep_nothing,
    warn_if_heads_unconverged,
    warn_if_probe_is_weak,
)
from .result import ATTACHMENTS, IISResult, inherent_interpretability_score

if TYPE_CHECKING:
    import torch

    from ..concepts.bank import ConceptsLike
    from ..data_types import Features, IntArray, Labels
    from ..features.store import FeatureStore

BOOTSTRAP_RESAMPLES = 1000  # resamples of the eval rows behind a result's confidence interval
CONFIDENCE = 0.95

__all__ = [
    "ATTACHMENTS",
    "DEFAULT_SPARSITY_RATIOS",
    "OWN_PROBE_ADVICE",
    "EmptyHeadWarning",
    "IISResult",
    "UnconvergedHeadsWarning",
    "UnseenClassWarning",
    "WeakProbeWarning",
    "check_nesting",
    "class_ids",
    "compute_iis",
    "float_rows",
    "iis_from_predictions",
    "inherent_interpretability_score",
    "warn_if_probe_is_weak",
]


# One keyword per `HeadsConfig` field (tests/test_signatures.py holds every field to it), so the
# signature is longer than the argument-count rule allows; the settings are one idea, the recipe.
def compute_iis(  # noqa: PLR0913
    train_features: Features | FeatureStore,
    train_labels: Labels | None,
    eval_features: Features | FeatureStore,
    eval_labels: Labels | None,
    concepts: ConceptsLike,
    *,
    config: HeadsConfig | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    return_heads: bool = False,
    sparsity_ratios: Sequence[float] | None = None,
    epochs: int | None = None,
    head_batch_size: int | None = None,
    learning_rate: float | Sequence[float] | None = None,
    lr_decay: float | None = None,
    model_selection: str | None = None,
    holdout_fraction: float | None = None,
    min_steps: int | None = None,
    max_steps: int | None = None,
    patience: int | None = None,
    probe_min_steps: int | None = None,
    head_precision: str | None = None,
    protocol: str | None = None,
    num_seeds: int | None = None,
    **deprecated: Any,
) -> IISResult:
    """Score a representation: train the probe and one interpretation head per ratio, integrate.

    Each head setting defaults to None, "the value in `config`" (a `HeadsConfig()`'s field default
    when no config is given): the default is read from the field, never copied, and a keyword
    overrides only what it names. `deprecated` takes the old names (`batch_size`, `precision`) for
    one release, with a FutureWarning.

    Args:
        train_features, eval_features: (N, D) representations: a tensor, an array, or a
            `FeatureStore` (float16 on disk, read in chunks); train fits the heads, eval measures them.
        train_labels, eval_labels: (N,) integer class ids (None: the store's own labels).
        concepts: a `ConceptBank`, a (C, D) array of concept vectors, or a bank's folder / Hub id.
        config: the head-training recipe, a `HeadsConfig` (default: `HeadsConfig()`).
        num_classes: default: the largest label + 1.
        seed: initialises the heads and the probe, and orders the training rows.
        device: where the heads train (default: CUDA if available, else CPU).
        progress: show a progress bar.
        return_heads: attach the trained `InterpretationHeads` and probe as `result.heads` and
            `result.probe` (not serialised).
        sparsity_ratios: the grid rho, fractions of concepts each head drops (at least 2).
        epochs: a fixed number of epochs instead of the protocol's own budget.
        head_batch_size: rows per head-training step.
        learning_rate: Adam's learning rate; a list is a grid (each ratio keeps its best).
        lr_decay: exponential learning-rate decay per epoch.
        model_selection: which state of each head is reported: "eval", "holdout" or "last".
        holdout_fraction: model selection "holdout": the share of train rows it chooses on.
        min_steps, max_steps, patience: protocol "converged": at least `min_steps` Adam steps, then
            until no loss improved in `patience` steps, at most `max_steps`.
        probe_min_steps: the standard probe (standardised inputs) trains at least this many steps;
            fewer leaves it below the heads on small data and inflates IIS.
        head_precision: matrix products of head training: "auto" (bfloat16 where native), "fp32", "bf16".
        protocol: "converged" (iis-hf's) or "paper" (the published code's probe and recipe).
        num_seeds: train with seeds seed, seed+1, ...; IIS is their mean, with its sd.
    """
    settings = given_settings(HeadsConfig, locals(), deprecated)
    config = with_settings(config, HeadsConfig, settings, "compute_iis")
    return _score(
        train_features, train_labels, eval_features, eval_labels, concepts,
        config, num_classes, seed, device, progress, return_heads,
    )  # fmt: skip


def _score(
    train_features: Features | FeatureStore,
    train_labels: Labels | None,
    eval_features: Features | FeatureStore,
    eval_labels: Labels | None,
    concepts: ConceptsLike,
    config: HeadsConfig,
    num_classes: int | None,
    seed: int,
    device: str | torch.device | None,
    progress: bool,
    return_heads: bool,
) -> IISResult:
    """`compute_iis` once its settings are one `HeadsConfig`: check the data, fit each seed, integrate."""
    from ..heads import fit_heads

    validate_sparsity_ratios(config.sparsity_ratios, minimum=MIN_IIS_RATIOS)
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
    ratios = validate_sparsity_ratios(sparsity_ratios, minimum=MIN_IIS_RATIOS)
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
