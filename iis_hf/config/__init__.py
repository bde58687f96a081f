"""Every setting of an IIS measurement, declared once: the one source every entry point reads.

An IIS is only comparable with another one measured with the same settings: the same ratio grid,
the same kind and number of concepts, the same head-training recipe, the same representation
(layer, pooling, precision) and the same data. The settings live in four small dataclasses,
grouped as the data flows (`ExtractionConfig` -> `ConceptsConfig` -> `HeadsConfig`, all in a
`ScoringConfig`). Each field is declared with `setting(...)`, whose metadata (help, choices, bounds,
and whether two results must share it) generates the command line's flags (`iis_hf.cli._arguments`),
the Trainer's `iis_eval_*` / `iis_*` arguments (`iis_hf.training.arguments`) and the metric's
keywords (metrics/iis), and decides what a result records and what `iis-hf compare` checks: a new
setting is one field. A setting has one name: the field's, in Python, in iis.json and as a metric
keyword; its flag is that name with dashes (`setting_flag`). Each config checks every value from its
metadata when it is built (`check_settings`), so a bad setting fails before any work starts, with an
`IISError` naming the field, the bad value and what is allowed.

This module is the bottom of the package: it imports nothing from iis_hf but its error type.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from ..errors import IISError
from .metadata import (
    NOT_RECORDED,
    RECORDED,
    RENAMED,
    SAME,
    Bounds,
    check_settings,
    config_fields,
    field_type,
    renamed_settings,
    setting_flag,
    with_keywords,
)
from .metadata import Config as _Config
from .metadata import accepts_old_names as _accepts_old_names
from .records import SCHEMA_KEY, SCHEMA_VERSION, record_version, upgrade_card_args, upgrade_result_record

__all__ = [
    "NOT_RECORDED",
    "RECORDED",
    "RENAMED",
    "SAME",
    "SCHEMA_KEY",
    "SCHEMA_VERSION",
    "Bounds",
    "ConceptsConfig",
    "DataConfig",
    "ExtractionConfig",
    "HeadsConfig",
    "ScoringConfig",
    "check_settings",
    "config_fields",
    "field_type",
    "given_settings",
    "record_version",
    "renamed_settings",
    "setting",
    "setting_flag",
    "upgrade_card_args",
    "upgrade_result_record",
    "validate_sparsity_ratios",
    "with_keywords",
    "with_settings",
]

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
# The model selection each protocol uses when `model_selection` is left unset: the published code
# reports the best eval epoch; converged heads report their final state (docs/METHOD.md says why).
PROTOCOL_SELECTION = {"converged": "last", "paper": "eval"}
PAPER_EPOCHS = 30  # the published recipe's fixed budget for heads and probe
# The version of the head-training recipe a result records ("recipe_version"): 2 trains converged
# heads in steps; a record without it (1) trained them a fixed 30 epochs, and the two never rank together.
HEADS_RECIPE_VERSION = 2
# The interpretability loss of a fine-tuned model, lambda in loss = CE(model) + lambda * CE(heads), and
# its heads' ratios: the setting the pre-registered transfer test chose (docs/RESULTS.md, finding 2): no
# measurable accuracy cost; its IIS gain, measured with 10-step scoring heads, did not survive heads
# trained to convergence. Every signature that takes them defaults to these (tests/test_public_defaults.py).
DEFAULT_IIS_WEIGHT = 0.5
DEFAULT_LOSS_SPARSITY_RATIOS: tuple[float, ...] = (0.5,)
MIN_IIS_RATIOS = 2  # an IIS integrates accuracy over the ratio grid: a grid of one has no area
MIN_CONCEPTS = 2  # a head at ratio rho drops int(C * rho) + 1 concepts: with one, nothing is left
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


# ---------------------------------------------------------------------------- declaring a setting
def setting(
    default: Any = MISSING,
    *,
    help: str,
    compare: str | None = SAME,
    recorded_if: Callable[[Any], bool] | None = None,
    choices: Sequence[str] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    why: str = "",
    check: Callable[[Any], Any] | None = None,
    default_factory: Callable[[], Any] | Any = MISSING,
) -> Any:
    """A config field with the metadata every entry point is generated from and every value is checked by.

    `help` and `choices` become the command line's flag help (``--epochs``, always ``--`` + the field
    name with dashes; a bool that defaults to True is the switch ``--no-<name>``), the Trainer's
    ``iis_eval_epochs`` help and the metric's keyword check. `minimum`/`maximum` (inclusive unless
    `exclusive_*`) bound a number, `why` says why in an error; `check(value)` returns the value checked
    and normalised where bounds cannot say it (the ratio grid). `compare` says whether two results must
    share the value (`SAME`), only record it (`RECORDED`) or neither (`NOT_RECORDED`);
    `recorded_if(config)` drops a value that does not apply (the holdout fraction of a run without one).
    """
    bounds = Bounds(minimum, maximum, exclusive_minimum, exclusive_maximum)
    metadata = {
        "help": help,
        "compare": compare,
        "recorded_if": recorded_if,
        "choices": tuple(choices) if choices is not None else None,
        "bounds": bounds if (minimum, maximum) != (None, None) else None,
        "why": why,
        "check": check,
    }
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# ---------------------------------------------------------------------------- the configs
@dataclass
class ExtractionConfig(_Config):
    """Which vector is the representation, and how it is computed from the images."""

    layer: int | None = setting(
        None, help="hidden_states index of the representation (default: the model's final representation)"
    )
    pooling: str = setting("default", choices=POOLINGS, help="how a hidden state becomes one vector")
    batch_size: int = setting(64, compare=NOT_RECORDED, minimum=1, help="images per forward pass")
    precision: str = setting("fp32", choices=EXTRACTION_PRECISIONS, help="autocast of the backbone")
    num_workers: int | None = setting(
        None,
        compare=NOT_RECORDED,
        minimum=0,
        help="DataLoader workers that decode and preprocess images while the model runs (default: chosen "
        "from the number of images and the device, iis_hf.features.auto_num_workers)",
    )
    chunk_size: int = setting(
        4096,
        compare=NOT_RECORDED,
        minimum=1,
        help="images per feature-cache file, the unit an interrupted run resumes from",
    )
    cache_dir: str | None = setting(
        None, compare=NOT_RECORDED, help="reuse extracted features across runs (default: no cache)"
    )
    preprocessing: str = setting(
        "processor",
        choices=PREPROCESSINGS,
        help="'tensor': resize/crop/normalise batches on the model's device (processors it covers)",
    )


def _data_setting(default: Any = MISSING, **metadata: Any) -> Any:
    """A data setting: how images are picked, recorded apart from the rows read (never compared)."""
    return setting(default, compare=NOT_RECORDED, **metadata)


@dataclass
class DataConfig(_Config):
    """Which images a command reads and which of them it scores on (`iis_hf.data.load_scoring_splits`).

    What a score was measured on is recorded apart, from the rows actually read (`settings.data` in
    iis.json: the dataset, the eval split, the number of images); these fields say how to pick them."""

    dataset_config: str | None = _data_setting(
        None, help="dataset configuration name (Hub datasets; default: none)"
    )
    train_split: str = _data_setting("train", help="the split the heads and concepts are fitted on")
    eval_split: str | None = _data_setting(
        None,
        help="the split IIS is measured on (default: validation/test if present, else a stratified part of "
        "the train split)",
    )
    allow_same_split: bool = _data_setting(
        False,
        help="let eval_split name the train_split (the heads are then measured on the images they were "
        "fitted on; recorded in iis.json); without it that is refused",
    )
    eval_fraction: float = _data_setting(
        0.2,
        minimum=0.0,
        maximum=1.0,
        exclusive_minimum=True,
        exclusive_maximum=True,
        help="eval part of train when there is no eval split",
    )
    image_column: str | None = _data_setting(None, help="default: detected (the datasets.Image column)")
    label_column: str | None = _data_setting(None, help="default: detected (the ClassLabel column)")
    max_train_samples: int | None = _data_setting(
        None, minimum=1, help="a random subset (seeded) of train (default: all)"
    )
    max_eval_samples: int | None = _data_setting(
        None, minimum=1, help="a random subset (seeded) of eval (default: all)"
    )
    data_files: list[str] | None = _data_setting(
        None,
        help="the files of a folder or Hub dataset to read (paths or globs; SPLIT=GLOB names a split's), "
        "read by datasets' own builder (parquet, arrow, webdataset shards, images; default: every file)",
    )
    streaming: bool = _data_setting(
        False,
        help="stream the dataset instead of downloading it whole: the first max_train_samples / "
        "max_eval_samples rows of each split (all rows without them)",
    )
    shuffle_buffer: int | None = _data_setting(
        None,
        minimum=1,
        help="streaming: shuffle in a buffer of this many rows, seeded by the seed (default: stored order)",
    )


@_accepts_old_names
@dataclass
class ConceptsConfig(_Config):
    """Which concepts interpret the representation (the concept kind, or a saved concept bank).

    A result records the concepts by the bank that was used (`iis_hf.pipeline.concepts_settings`),
    which is what matters whether it was built from these settings or loaded.
    """

    concept_kind: str = setting(
        "prototype-patches",
        choices=CONCEPT_KINDS,
        help="prototype-patches (4x4 grid), prototype-segments (SLIC), cluster (k-means of patches), text "
        "(CLIP-scored words), learned (Gumbel selection from the patch library, trained with the heads)",
    )
    num_concepts: int = setting(
        200,
        minimum=MIN_CONCEPTS,
        why="every head drops int(C * rho) + 1 concepts, so with fewer nothing is left to predict from",
        help="C, the number of concepts",
    )
    images_per_class: int = setting(10, minimum=1, help="images per class the prototypes come from")
    concept_bank: str | None = setting(
        None, help="use a saved ConceptBank (folder or Hub id) instead of building one (default: build one)"
    )
    concept_file: str | None = setting(
        None, help="text concepts: one word per line (default: the starter vocabulary shipped with iis-hf)"
    )
    clip_model: str = setting(
        DEFAULT_CLIP_MODEL, help="text concepts: CLIP Hub id or folder with its processor"
    )
    clip_cutoff: float = setting(DEFAULT_CLIP_CUTOFF, help="text concepts: drop words CLIP scores <= this")
    interpretability_cutoff: float = setting(
        DEFAULT_INTERPRETABILITY_CUTOFF,
        help="text concepts: drop words the backbone matches <= this on held-out images",
    )
    projection_epochs: int = setting(
        1000,
        minimum=1,
        help="text concepts: Adam epochs of the projection fit (early-stopped on held-out images)",
    )

    @property
    def is_text(self) -> bool:
        return self.concept_kind == "text" and self.concept_bank is None


def _uses_holdout(heads: Any) -> bool:
    return heads.selection_rule == "holdout"


def _probe_trains_to_steps(heads: Any) -> bool:
    return heads.protocol != "paper"  # the published probe trains exactly `epochs`


def _converged(heads: Any) -> bool:
    return heads.protocol == "converged"


@_accepts_old_names
@dataclass
class HeadsConfig(_Config):
    """How the standard probe (A0) and the interpretation heads A(rho) are trained.

    Both protocols share the published optimiser (Adam at lr 1e-2, exponential decay 0.99 per epoch,
    batch 1024) and grid (0 ... 0.98). "paper" is the published code exactly: 30 epochs, the best eval
    top-1 over epochs, a probe on raw representations. "converged" (the default) trains in steps, not
    epochs, so that a 600-image set gets as converged a head as ImageNet: at least `min_steps`, then
    until neither the heads nor the probe (on standardised inputs, at least `probe_min_steps`) improved
    in `patience` steps, at most `max_steps`; docs/METHOD.md says why and what it selects.
    """

    sparsity_ratios: list[float] = setting(
        default_factory=lambda: list(DEFAULT_SPARSITY_RATIOS),
        check=validate_sparsity_ratios,
        help="the ratio grid rho (fractions of concepts dropped; an IIS needs at least 2)",
    )
    epochs: int | None = setting(
        None,
        minimum=1,
        help="a fixed number of epochs for heads and probe instead of the protocol's own budget (default: "
        f"'converged' trains until the heads stop improving, 'paper' trains {PAPER_EPOCHS})",
    )
    head_batch_size: int = setting(1024, minimum=1, help="rows per head-training step")
    learning_rate: float | list[float] = setting(
        1e-2,
        minimum=0,
        exclusive_minimum=True,
        help="Adam learning rate of the heads: one value, or a grid (each ratio keeps its best)",
    )
    lr_decay: float = setting(
        0.99,
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
        why="a factor per epoch (1 keeps the rate constant; above 1 it would grow without end)",
        help="exponential learning-rate decay per epoch of head training",
    )
    model_selection: str | None = setting(
        None,
        choices=MODEL_SELECTIONS,
        help="which state of each head is reported: 'eval': the best on the eval rows (published); "
        "'holdout': the best on part of train; 'last': the final one (default: the protocol's own, "
        f"{PROTOCOL_SELECTION})",
    )
    holdout_fraction: float = setting(
        0.1,
        recorded_if=_uses_holdout,
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
        exclusive_maximum=True,
        help="model selection 'holdout': the fraction of the training rows it chooses the epoch on",
    )
    min_steps: int = setting(
        300,
        recorded_if=_converged,
        minimum=1,
        help="protocol 'converged': the heads and the probe train at least this many Adam steps, then "
        "until they stop improving (patience) or reach max_steps",
    )
    max_steps: int = setting(
        20000,
        recorded_if=_converged,
        minimum=1,
        help="protocol 'converged': the most Adam steps the heads train; a head still improving there is "
        "reported as not converged, with a warning",
    )
    patience: int = setting(
        150,
        recorded_if=_converged,
        minimum=1,
        help="protocol 'converged': training stops once neither the heads nor the probe lowered their "
        "training loss (by 1 percent, and by at least 0.002) in this many steps",
    )
    probe_min_steps: int = setting(
        1000,
        recorded_if=_probe_trains_to_steps,
        minimum=0,
        help="protocol 'converged': the standard probe trains at least this many Adam steps "
        "(an unconverged probe inflates IIS)",
    )
    head_precision: str = setting(
        "auto",
        choices=HEAD_PRECISIONS,
        compare=NOT_RECORDED,  # float rounding, not the recipe
        help="matrix products of head training: 'auto' (bfloat16 where the hardware runs it natively), "
        "'fp32' or 'bf16'",
    )
    protocol: str = setting(
        "converged",
        choices=PROTOCOLS,
        help="'converged': a standardised probe trained to convergence (iis-hf's default); 'paper': the "
        "published code's probe, initialisation and threshold gradient (comparable with the paper's tables)",
    )
    num_seeds: int = setting(
        1,
        compare=RECORDED,
        minimum=1,
        help="train probe and heads with seeds seed, seed+1, ...; IIS is their mean, reported with its sd",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_steps < self.min_steps:  # a relation of two fields: the one check metadata cannot say
            raise IISError.invalid(
                "HeadsConfig", "max_steps", f"({self.max_steps}) must be >= min_steps ({self.min_steps})"
            )

    @property
    def fixed_epochs(self) -> int | None:
        """`epochs`, or the protocol's own fixed budget (`PAPER_EPOCHS`); None: train to convergence."""
        if self.epochs is not None:
            return self.epochs
        return PAPER_EPOCHS if self.protocol == "paper" else None

    @property
    def selection_rule(self) -> str:
        """`model_selection`, or the protocol's own rule when it was left unset (`PROTOCOL_SELECTION`)."""
        return self.model_selection or PROTOCOL_SELECTION[self.protocol]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """As `_Config.from_dict`; a recorded `recipe_version` is a fact about the result, not a setting."""
        return super().from_dict({k: v for k, v in data.items() if k != "recipe_version"})

    def recorded(self) -> dict[str, Any]:
        """As `_Config.recorded`, with the model selection actually used (never None)."""
        settings = super().recorded()
        settings["model_selection"] = self.selection_rule
        settings["epochs"] = self.fixed_epochs  # None: trained until converged
        settings["recipe_version"] = HEADS_RECIPE_VERSION
        return settings

    @property
    def learning_rates(self) -> list[float]:
        """The learning rate(s) as a list (a grid of one when a single value was given)."""
        return list(self.learning_rate) if isinstance(self.learning_rate, list) else [self.learning_rate]


def with_settings(config: Any, kind: type, settings: dict[str, Any], where: str) -> Any:
    """`config` (None: `kind()`) with keyword `settings` named like `kind`'s fields (an old name works,
    with a FutureWarning), or one clear IISError: a config of another kind, or an unknown keyword with
    the closest field names."""
    import difflib

    if config is None:
        config = kind()
    elif not isinstance(config, kind):
        raise IISError(
            f"{where}(config=...) takes a {kind.__name__}, got {type(config).__name__}: pass "
            f"config={kind.__name__}(...), or its fields as keywords"
        )
    settings = renamed_settings(kind, settings, where)
    known = [f.name for f in fields(kind)]
    if unknown := [k for k in settings if k not in known]:
        hints = [_closest(k, difflib.get_close_matches(k, known, 2)) for k in unknown]
        raise IISError(
            f"{where}() got unknown setting(s) {', '.join(hints)}; the settings are {', '.join(known)}"
        )
    return replace(config, **settings) if settings else config


def given_settings(kind: type, arguments: dict[str, Any], deprecated: dict[str, Any]) -> dict[str, Any]:
    """The settings a builder's caller gave, for `with_settings`: its keyword parameters named like
    `kind`'s fields that are not None (None is "the config's value": a default read, never copied),
    and its `**deprecated` catch-all (old spellings; anything else is refused there by name).

    Why: the builders (`compute_iis`, `fit_heads`) declare each field as a keyword-only parameter, so
    their signatures show every setting, and this turns those parameters back into one config."""
    names = {f.name for f in fields(kind)}
    given = {name: value for name, value in arguments.items() if name in names and value is not None}
    return {**given, **deprecated}


def _closest(name: str, close: list[str]) -> str:
    return f"{name} (did you mean {' or '.join(close)}?)" if close else name


@dataclass
class ScoringConfig(_Config):
    """All settings of one IIS measurement: extraction -> concepts -> heads, and the seed.

    `seed` seeds everything random: the prototype images, k-means, the heads' initialisation and
    data order. `device` and `progress` change where and how visibly it runs, not the result.
    """

    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    concepts: ConceptsConfig = field(default_factory=ConceptsConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    seed: int = setting(
        0, compare=RECORDED, minimum=0, help="seeds data subsets, prototypes and head training"
    )
    device: str | None = setting(None, compare=NOT_RECORDED, help="default: cuda if available, else cpu")
    progress: bool = setting(
        True, compare=NOT_RECORDED, help="hide iis-hf's progress bars (--quiet: all bars)"
    )

    def __post_init__(self) -> None:
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
        super().__post_init__()
        validate_sparsity_ratios(self.heads.sparsity_ratios, minimum=MIN_IIS_RATIOS)

    def recorded(self) -> dict[str, Any]:
        """The settings every output records (`setting` metadata). The concepts are described by the
        bank that was used (`iis_hf.pipeline.concepts_settings`), built from these settings or loaded."""
        return {
            "extraction": self.extraction.recorded(),
            "heads": self.heads.recorded(),
            "seed": self.seed,
        }
