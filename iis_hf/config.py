"""Every setting of an IIS measurement, with its default written once.

An IIS is only comparable with another one measured with the same settings: the same ratio grid,
the same kind and number of concepts, the same head-training recipe, the same representation
(layer, pooling, precision) and the same data. The settings live in four small dataclasses,
grouped as the data flows (`ExtractionConfig` -> `ConceptsConfig` -> `HeadsConfig`, all in a
`ScoringConfig`), and every entry point maps onto them: the command line's flags, the Python API's
keyword arguments, `IISTrainingArguments` and the evaluate metric. Each one checks its values when
it is built, so a bad setting fails before any work starts, with a message that names it.

This module is the bottom of the package: it imports nothing from iis_hf but its error type.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import IISError

DEFAULT_SPARSITY_RATIOS: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.98)
RATIO_TOLERANCE = 1e-9  # two ratios closer than this name the same head

CONCEPT_KINDS = ("prototype-patches", "prototype-segments", "cluster", "text", "learned")
POOLINGS = ("default", "cls", "mean")
EXTRACTION_PRECISIONS = ("fp32", "bf16", "fp16")
PREPROCESSINGS = ("processor", "tensor")  # who prepares pixel values: see iis_hf.features.preprocess
HEAD_PRECISIONS = ("auto", "fp32", "bf16")
MODEL_SELECTIONS = ("eval", "holdout", "last")
# "converged": iis-hf's default, a standardised probe trained to convergence (docs/METHOD.md);
# "paper": the published implementation's probe, initialisation and threshold gradient.
PROTOCOLS = ("converged", "paper")
CHANCE_ALPHA = 0.05  # A0 must beat the majority-class rate at this one-sided level, else IIS is undefined

# What a concept bank's provenance says about how it was built, recorded with every result (not the
# bank's fingerprint: two models' banks built the same way are comparable, yet never equal).
CONCEPT_RECIPE_KEYS = (
    "parts",
    "grid",
    "images_per_class",
    "clip_model",
    "clip_cutoff",
    "interpretability_cutoff",
)

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
DEFAULT_CLIP_CUTOFF = 0.25  # text concepts: drop words CLIP scores <= this (mean top-5 similarity)
DEFAULT_INTERPRETABILITY_CUTOFF = 0.45  # text concepts: drop words the backbone matches <= this


# ---------------------------------------------------------------------------- the ratio grid
RATIOS = "sparsity_ratios"  # the field a bad grid is reported against (`IISError.field`)


def validate_sparsity_ratios(sparsity_ratios: Sequence[float], minimum: int = 1) -> list[float]:
    """The ratios as floats, or an IISError (field "sparsity_ratios") naming what is wrong and how to fix it."""
    if isinstance(sparsity_ratios, (str, bytes)):  # iterable, but never a grid
        raise IISError(f"sparsity ratios must be numbers in [0, 1), got {sparsity_ratios!r}", field=RATIOS)
    try:
        ratios = [float(r) for r in sparsity_ratios]
    except (TypeError, ValueError) as err:
        raise IISError(
            f"sparsity ratios must be numbers in [0, 1), got {sparsity_ratios!r}", field=RATIOS
        ) from err
    if len(ratios) < minimum:
        raise IISError(
            f"need at least {minimum} sparsity ratio(s), got {len(ratios)}"
            + (
                f": pass e.g. sparsity_ratios={list(DEFAULT_SPARSITY_RATIOS)} (the published grid)"
                if minimum > 1
                else ""
            ),
            field=RATIOS,
        )
    for r in ratios:
        if math.isnan(r) or not 0.0 <= r < 1.0:
            raise IISError(
                f"sparsity ratio {r} is outside [0, 1): a ratio is the fraction of concepts dropped",
                field=RATIOS,
            )
    duplicates = sorted({r for r in ratios if ratios.count(r) > 1})
    if duplicates:
        raise IISError(f"duplicate sparsity ratios {duplicates}: give each ratio once", field=RATIOS)
    return ratios


def ratio_index(sparsity_ratios: Sequence[float], sparsity_ratio: float | None) -> int:
    """Position of `sparsity_ratio` in `sparsity_ratios` (None: the last one), to `RATIO_TOLERANCE`.

    >>> ratio_index([0.5, 0.9], 0.9), ratio_index([0.5, 0.9], None)
    (1, 1)
    """
    if sparsity_ratio is None:
        return len(sparsity_ratios) - 1
    try:
        wanted = float(sparsity_ratio)
    except (TypeError, ValueError) as err:
        raise IISError(
            f"sparsity ratio must be a number, got {sparsity_ratio!r}", field="sparsity_ratio"
        ) from err
    for i, ratio in enumerate(sparsity_ratios):
        if abs(float(ratio) - wanted) < RATIO_TOLERANCE:
            return i
    raise IISError(
        f"no interpretation head for sparsity ratio {wanted:g}; the heads are at {list(sparsity_ratios)}",
        field="sparsity_ratio",
    )


# ---------------------------------------------------------------------------- checks
def _check_int(owner: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise IISError(f"{owner}.{name} must be an int >= {minimum}, got {value!r}", field=name, owner=owner)


def _check_fraction(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < float(value) < 1.0:
        raise IISError(f"{owner}.{name} must be a number in (0, 1), got {value!r}", field=name, owner=owner)


def _check_choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise IISError(
            f"{owner}.{name} must be one of {', '.join(map(repr, choices))}, got {value!r}",
            field=name,
            owner=owner,
        )


def _check_finite(owner: str, name: str, value: Any, positive: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (positive and value <= 0)
    ):
        need = "a finite number > 0" if positive else "a finite number"
        raise IISError(f"{owner}.{name} must be {need}, got {value!r}", field=name, owner=owner)


class _Config:
    """JSON round trip shared by the config dataclasses (unknown keys are refused by name)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise IISError(f"unknown {cls.__name__} settings {unknown}; known: {sorted(known)}")
        return cls(**data)


# ---------------------------------------------------------------------------- the configs
@dataclass
class ExtractionConfig(_Config):
    """Which vector is the representation, and how it is computed from the images.

    Attributes:
        layer: None for the model's final representation; an int picks ``hidden_states[layer]``.
        pooling: "default" (the model's own pooled output), "cls" or "mean".
        batch_size: images per forward pass.
        precision: "fp32", "bf16" or "fp16" autocast (features are returned as float32).
        num_workers: DataLoader workers that decode images while the model runs.
        chunk_size: images per feature-cache file (the unit an interrupted run resumes from).
        cache_dir: reuse extracted features across runs (None: no cache).
        preprocessing: "processor" (the image processor prepares each image) or "tensor" (batched on
            the model's device where covered; pixel values at most two uint8 levels apart).
    """

    layer: int | None = None
    pooling: str = "default"
    batch_size: int = 64
    precision: str = "fp32"
    num_workers: int = 0
    chunk_size: int = 4096
    cache_dir: str | None = None
    preprocessing: str = "processor"

    def __post_init__(self):
        owner = "ExtractionConfig"
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int)):
            raise IISError(
                f"{owner}.layer must be None or an int index into hidden_states, got {self.layer!r}",
                field="layer",
                owner=owner,
            )
        _check_choice(owner, "pooling", self.pooling, POOLINGS)
        _check_choice(owner, "precision", self.precision, EXTRACTION_PRECISIONS)
        _check_choice(owner, "preprocessing", self.preprocessing, PREPROCESSINGS)
        _check_int(owner, "batch_size", self.batch_size, 1)
        _check_int(owner, "num_workers", self.num_workers, 0)
        _check_int(owner, "chunk_size", self.chunk_size, 1)

    def comparable(self) -> dict[str, Any]:
        """The settings that change the representation (not how fast it is computed)."""
        return {
            "layer": self.layer,
            "pooling": self.pooling,
            "precision": self.precision,
            "preprocessing": self.preprocessing,
        }


@dataclass
class ConceptsConfig(_Config):
    """Which concepts interpret the representation.

    Attributes:
        kind: "prototype-patches" (a 4 x 4 grid of image parts embedded by the model itself),
            "prototype-segments" (SLIC superpixels), "cluster" (k-means centres of patch
            prototypes), "text" (CLIP-scored words) or "learned" (a Gumbel selection from the patch
            library, trained with the heads).
        num_concepts: C.
        images_per_class: images per class the prototypes come from.
        bank: use this saved `ConceptBank` (folder or Hub id) instead of building one.
        concept_file, clip_model, clip_cutoff, interpretability_cutoff, projection_epochs: text
            concepts (None for `concept_file`: the starter vocabulary shipped with iis-hf).
    """

    kind: str = "prototype-patches"
    num_concepts: int = 200
    images_per_class: int = 10
    bank: str | None = None
    concept_file: str | None = None
    clip_model: str = DEFAULT_CLIP_MODEL
    clip_cutoff: float = DEFAULT_CLIP_CUTOFF
    interpretability_cutoff: float = DEFAULT_INTERPRETABILITY_CUTOFF
    projection_epochs: int = 1000

    def __post_init__(self):
        owner = "ConceptsConfig"
        _check_choice(owner, "kind", self.kind, CONCEPT_KINDS)
        # A head at ratio rho drops int(C * rho) + 1 concepts: with C = 1, all of them at every ratio.
        if type(self.num_concepts) is int and self.num_concepts == 1:
            raise IISError(
                f"{owner}.num_concepts must be an int >= 2, got 1: every head drops at least one concept "
                "(int(C * rho) + 1 at ratio rho), so with 1 concept nothing is left to predict from",
                field="num_concepts",
                owner=owner,
            )
        _check_int(owner, "num_concepts", self.num_concepts, 2)
        _check_int(owner, "images_per_class", self.images_per_class, 1)
        _check_int(owner, "projection_epochs", self.projection_epochs, 1)
        _check_finite(owner, "clip_cutoff", self.clip_cutoff)
        _check_finite(owner, "interpretability_cutoff", self.interpretability_cutoff)

    @property
    def is_text(self) -> bool:
        return self.kind == "text" and self.bank is None


@dataclass
class HeadsConfig(_Config):
    """How the standard probe (A0) and the interpretation heads A(rho) are trained.

    The defaults are the published recipe: Adam at lr 1e-2, exponential decay 0.99 per epoch,
    30 epochs, batch 1024, the best eval top-1 over epochs, on the grid 0 ... 0.98.

    Attributes:
        sparsity_ratios: the grid rho (each in [0, 1); an IIS needs at least 2).
        epochs, batch_size (rows per head step), learning_rate (one value, or a grid from which
            each ratio keeps its best), lr_decay: the recipe.
        model_selection: "eval" (best eval epoch, as published), "holdout" (chosen on
            `holdout_fraction` of the training rows) or "last".
        probe_min_steps: the standard probe trains at least this many Adam steps (it converges;
            an unconverged probe inflates IIS).
        precision: "auto" (bfloat16 matrix products where the hardware runs them natively),
            "fp32" or "bf16".
        protocol: "converged" (default: the probe reads standardised representations and trains
            at least `probe_min_steps` steps; the heads hard-mask) or "paper" (the published code:
            a probe on raw representations trained like the heads, trunc_normal(0.02) initial
            weights, the half gradient at the threshold element); docs/METHOD.md compares them.
        num_seeds: train probe and heads with seeds seed, seed+1, ...; IIS is their mean, reported
            with its standard deviation and a bootstrap interval.
    """

    sparsity_ratios: list[float] = field(default_factory=lambda: list(DEFAULT_SPARSITY_RATIOS))
    epochs: int = 30
    batch_size: int = 1024
    learning_rate: float | list[float] = 1e-2
    lr_decay: float = 0.99
    model_selection: str = "eval"
    holdout_fraction: float = 0.1
    probe_min_steps: int = 1000
    precision: str = "auto"
    protocol: str = "converged"
    num_seeds: int = 1

    def __post_init__(self):
        owner = "HeadsConfig"
        self.sparsity_ratios = validate_sparsity_ratios(self.sparsity_ratios)
        _check_int(owner, "epochs", self.epochs, 1)
        _check_int(owner, "batch_size", self.batch_size, 1)
        _check_int(owner, "probe_min_steps", self.probe_min_steps, 0)
        self.learning_rate = _learning_rates(self.learning_rate)
        _check_finite(owner, "lr_decay", self.lr_decay, positive=True)
        _check_choice(owner, "model_selection", self.model_selection, MODEL_SELECTIONS)
        _check_fraction(owner, "holdout_fraction", self.holdout_fraction)
        _check_choice(owner, "precision", self.precision, HEAD_PRECISIONS)
        _check_choice(owner, "protocol", self.protocol, PROTOCOLS)
        _check_int(owner, "num_seeds", self.num_seeds, 1)

    @property
    def learning_rates(self) -> list[float]:
        """The learning rate(s) as a list (a grid of one when a single value was given)."""
        return list(self.learning_rate) if isinstance(self.learning_rate, list) else [self.learning_rate]

    def comparable(self) -> dict[str, Any]:
        settings = self.to_dict()
        if self.model_selection != "holdout":
            settings.pop("holdout_fraction")
        settings.pop("precision")  # float rounding, not the recipe
        if self.protocol == "paper":
            settings.pop("probe_min_steps")  # the published probe trains exactly `epochs`
        return settings


def _learning_rates(value: Any) -> float | list[float]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise IISError(
            "HeadsConfig.learning_rate needs at least one value", field="learning_rate", owner="HeadsConfig"
        )
    for lr in values:
        _check_finite("HeadsConfig", "learning_rate", lr, positive=True)
    return [float(v) for v in values] if len(values) > 1 else float(values[0])


@dataclass
class ScoringConfig(_Config):
    """All settings of one IIS measurement: extraction -> concepts -> heads, and the seed.

    `seed` seeds everything random: the prototype images, k-means, the heads' initialisation and
    data order. `device` and `progress` change where and how visibly it runs, not the result.
    """

    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    concepts: ConceptsConfig = field(default_factory=ConceptsConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    seed: int = 0
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        for name, kind in (
            ("extraction", ExtractionConfig),
            ("concepts", ConceptsConfig),
            ("heads", HeadsConfig),
        ):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, kind.from_dict(value))
            elif not isinstance(value, kind):
                raise IISError(
                    f"ScoringConfig.{name} must be a {kind.__name__}, got {type(value).__name__}",
                    field=name,
                    owner="ScoringConfig",
                )
        _check_int("ScoringConfig", "seed", self.seed, 0)
        validate_sparsity_ratios(self.heads.sparsity_ratios, minimum=2)  # an IIS integrates over the grid

    def comparable(self) -> dict[str, Any]:
        """The settings two IIS values must share to be compared (recorded in every output).

        The concepts are described by the bank that was used (`iis_hf.pipeline.concepts_settings`),
        which is what matters whether it was built from these settings or loaded.
        """
        return {
            "extraction": self.extraction.comparable(),
            "heads": self.heads.comparable(),
            "seed": self.seed,
        }
