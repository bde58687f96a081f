"""Every setting of an IIS measurement, declared once: the one source every entry point reads.

An IIS is only comparable with another one measured with the same settings: the same ratio grid,
the same kind and number of concepts, the same head-training recipe, the same representation
(layer, pooling, precision) and the same data. The settings live in four small dataclasses,
grouped as the data flows (`ExtractionConfig` -> `ConceptsConfig` -> `HeadsConfig`, all in a
`ScoringConfig`). Each field is declared with `setting(...)`, whose metadata (help, choices, the
flag's spelling, and whether two results must share it) generates the command line's flags
(`iis_hf.cli._arguments`), the Trainer's `iis_eval_*` / `iis_*` arguments
(`iis_hf.training.arguments`) and the metric's keywords (metrics/iis), and decides what a result
records and what `iis-hf compare` checks: a new setting is one field. Each config checks its values
when it is built, so a bad setting fails before any work starts, with an `IISError` that carries the
field, which every entry point names in its own spelling.

This module is the bottom of the package: it imports nothing from iis_hf but its error type.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from typing import Any, get_type_hints

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
# The model selection each protocol uses when `model_selection` is left unset: the published code
# reports the best eval epoch; converged heads report their final state (docs/METHOD.md says why).
PROTOCOL_SELECTION = {"converged": "last", "paper": "eval"}
PAPER_EPOCHS = 30  # the published recipe's fixed budget for heads and probe
# The version of the head-training recipe a result records ("recipe_version"): 2 trains converged
# heads in steps; a record without it (1) trained them a fixed 30 epochs, and the two never rank together.
HEADS_RECIPE_VERSION = 2
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


def _check_choices(config: Any) -> None:
    """Each field declared with `choices` holds one of them."""
    for f in fields(config):
        optional_and_unset = f.default is None and getattr(config, f.name) is None
        if f.metadata.get("choices") and not optional_and_unset:
            _check_choice(type(config).__name__, f.name, getattr(config, f.name), f.metadata["choices"])


def _check_finite(owner: str, name: str, value: Any, positive: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (positive and value <= 0)
    ):
        need = "a finite number > 0" if positive else "a finite number"
        raise IISError(f"{owner}.{name} must be {need}, got {value!r}", field=name, owner=owner)


# ---------------------------------------------------------------------------- field metadata
# What a field says about comparing two results (its metadata "compare"):
SAME = "same"  # recorded with every result, and two results must share it to be ranked together
RECORDED = "recorded"  # recorded with every result, but results may differ in it (more seeds: less noise)
NOT_RECORDED = None  # where or how fast the work runs, not what it measures


def setting(
    default: Any = MISSING,
    *,
    help: str,
    compare: str | None = SAME,
    recorded_if: Callable[[Any], bool] | None = None,
    choices: Sequence[str] | None = None,
    flag: str | None = None,
    default_factory: Callable[[], Any] | Any = MISSING,
) -> Any:
    """A config field with the metadata every entry point is generated from.

    `help` and `choices` become the command line's flag help (``--epochs``), the Trainer's
    ``iis_eval_epochs`` help and the metric's keyword check; `flag` overrides the flag spelled from the
    field's name where two configs share a name (``--head-batch-size``); `compare` says whether two
    results must share the value (`SAME`), only record it (`RECORDED`) or neither (`NOT_RECORDED`);
    `recorded_if(config)` drops a value that does not apply (the holdout fraction of a run without one).
    """
    metadata = {
        "help": help,
        "compare": compare,
        "recorded_if": recorded_if,
        "choices": tuple(choices) if choices is not None else None,
        "flag": flag,
    }
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


class _Config:
    """JSON round trip and recorded settings shared by the config dataclasses (from field metadata)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if unknown := sorted(set(data) - known):
            raise IISError(f"unknown {cls.__name__} settings {unknown}; known: {sorted(known)}")
        return cls(**data)

    def recorded(self) -> dict[str, Any]:
        """The settings a result records (fields whose metadata says `SAME` or `RECORDED`)."""
        settings = {}
        for f in fields(self):  # type: ignore[arg-type]
            applies = f.metadata.get("recorded_if")
            if f.metadata.get("compare") is not NOT_RECORDED and (applies is None or applies(self)):
                settings[f.name] = getattr(self, f.name)
        return settings

    @classmethod
    def shared_fields(cls) -> tuple[str, ...]:
        """The fields two results must share to be ranked together (metadata "compare" is `SAME`)."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("compare") == SAME)  # type: ignore[arg-type]


def setting_flag(config: type, name: str) -> str:
    """The command line's spelling of `config.name`: its `setting(flag=...)`, else ``--name-with-dashes``."""
    f = config.__dataclass_fields__[name]  # type: ignore[attr-defined]
    return f.metadata.get("flag") or "--" + name.replace("_", "-")


def setting_name(config: type, name: str) -> str:
    """The one name of `config.name` across entry points: its flag without dashes, in snake case
    (``--head-batch-size`` -> ``head_batch_size``; the Trainer adds its ``iis_eval_`` prefix); a
    ``--no-*`` switch is named by the field."""
    flag = setting_flag(config, name)
    return name if flag.startswith("--no-") else flag[2:].replace("-", "_")


def with_keywords(function: Callable[..., Any], keywords: Iterable[str]) -> Callable[..., Any]:
    """`function` (which takes ``**settings``) with a signature that names each of `keywords`
    (keyword-only, default None): introspection shows the settings a generated entry point takes."""
    signature = inspect.signature(function)
    kept = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    added = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None) for k in keywords]
    function.__signature__ = signature.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
    return function


def config_fields(config: type) -> tuple[Field, ...]:
    """The settings of a config class that an entry point exposes (those declared with `setting`)."""
    return tuple(f for f in fields(config) if "help" in f.metadata)


def field_type(config: type, name: str) -> Any:
    """The resolved annotation of `config.name` (annotations are strings under postponed evaluation)."""
    return get_type_hints(config)[name]


# ---------------------------------------------------------------------------- the configs
@dataclass
class ExtractionConfig(_Config):
    """Which vector is the representation, and how it is computed from the images."""

    layer: int | None = setting(
        None, help="hidden_states index of the representation (default: the model's final representation)"
    )
    pooling: str = setting("default", choices=POOLINGS, help="how a hidden state becomes one vector")
    batch_size: int = setting(64, compare=NOT_RECORDED, help="images per forward pass")
    precision: str = setting("fp32", choices=EXTRACTION_PRECISIONS, help="autocast of the backbone")
    num_workers: int | None = setting(
        None,
        compare=NOT_RECORDED,
        help="DataLoader workers that decode and preprocess images while the model runs (default: chosen "
        "from the number of images and the device, iis_hf.features.auto_num_workers)",
    )
    chunk_size: int = setting(
        4096,
        compare=NOT_RECORDED,
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

    def __post_init__(self) -> None:
        owner = "ExtractionConfig"
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int)):
            raise IISError(
                f"{owner}.layer must be None or an int index into hidden_states, got {self.layer!r}",
                field="layer",
                owner=owner,
            )
        _check_choices(self)
        _check_int(owner, "batch_size", self.batch_size, 1)
        if self.num_workers is not None:
            _check_int(owner, "num_workers", self.num_workers, 0)
        _check_int(owner, "chunk_size", self.chunk_size, 1)


@dataclass
class ConceptsConfig(_Config):
    """Which concepts interpret the representation (the concept kind, or a saved concept bank).

    A result records the concepts by the bank that was used (`iis_hf.pipeline.concepts_settings`),
    which is what matters whether it was built from these settings or loaded.
    """

    kind: str = setting(
        "prototype-patches",
        choices=CONCEPT_KINDS,
        flag="--concept-kind",
        help="prototype-patches (4x4 grid), prototype-segments (SLIC), cluster (k-means of patches), text "
        "(CLIP-scored words), learned (Gumbel selection from the patch library, trained with the heads)",
    )
    num_concepts: int = setting(200, help="C, the number of concepts")
    images_per_class: int = setting(10, help="images per class the prototypes come from")
    bank: str | None = setting(
        None,
        flag="--concept-bank",
        help="use a saved ConceptBank (folder or Hub id) instead of building one (default: build one)",
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
        1000, help="text concepts: Adam epochs of the projection fit (early-stopped on held-out images)"
    )

    def __post_init__(self) -> None:
        owner = "ConceptsConfig"
        _check_choices(self)
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


def _uses_holdout(heads: Any) -> bool:
    return heads.selection_rule == "holdout"


def _probe_trains_to_steps(heads: Any) -> bool:
    return heads.protocol != "paper"  # the published probe trains exactly `epochs`


def _converged(heads: Any) -> bool:
    return heads.protocol == "converged"


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
        help="the ratio grid rho (fractions of concepts dropped; an IIS needs at least 2)",
    )
    epochs: int | None = setting(
        None,
        help="a fixed number of epochs for heads and probe instead of the protocol's own budget (default: "
        f"'converged' trains until the heads stop improving, 'paper' trains {PAPER_EPOCHS})",
    )
    batch_size: int = setting(1024, flag="--head-batch-size", help="rows per head-training step")
    learning_rate: float | list[float] = setting(
        1e-2, help="Adam learning rate of the heads: one value, or a grid (each ratio keeps its best)"
    )
    lr_decay: float = setting(0.99, help="exponential learning-rate decay per epoch of head training")
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
        help="model selection 'holdout': the fraction of the training rows it chooses the epoch on",
    )
    min_steps: int = setting(
        300,
        recorded_if=_converged,
        help="protocol 'converged': the heads and the probe train at least this many Adam steps, then "
        "until they stop improving (patience) or reach max_steps",
    )
    max_steps: int = setting(
        20000,
        recorded_if=_converged,
        help="protocol 'converged': the most Adam steps the heads train; a head still improving there is "
        "reported as not converged, with a warning",
    )
    patience: int = setting(
        150,
        recorded_if=_converged,
        help="protocol 'converged': training stops once neither the heads nor the probe lowered their "
        "training loss (by 1 percent, and by at least 0.002) in this many steps",
    )
    probe_min_steps: int = setting(
        1000,
        recorded_if=_probe_trains_to_steps,
        help="protocol 'converged': the standard probe trains at least this many Adam steps "
        "(an unconverged probe inflates IIS)",
    )
    precision: str = setting(
        "auto",
        choices=HEAD_PRECISIONS,
        compare=NOT_RECORDED,  # float rounding, not the recipe
        flag="--head-precision",
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
        help="train probe and heads with seeds seed, seed+1, ...; IIS is their mean, reported with its sd",
    )

    def __post_init__(self) -> None:
        owner = "HeadsConfig"
        self.sparsity_ratios = validate_sparsity_ratios(self.sparsity_ratios)
        _check_choices(self)
        if self.epochs is not None:
            _check_int(owner, "epochs", self.epochs, 1)
        _check_int(owner, "batch_size", self.batch_size, 1)
        _check_int(owner, "probe_min_steps", self.probe_min_steps, 0)
        _check_int(owner, "min_steps", self.min_steps, 1)
        _check_int(owner, "max_steps", self.max_steps, 1)
        _check_int(owner, "patience", self.patience, 1)
        if self.max_steps < self.min_steps:
            raise IISError(
                f"{owner}.max_steps ({self.max_steps}) must be >= min_steps ({self.min_steps})",
                field="max_steps",
                owner=owner,
            )
        self.learning_rate = _learning_rates(self.learning_rate)
        _check_finite(owner, "lr_decay", self.lr_decay, positive=True)
        if self.lr_decay > 1:  # a factor per epoch: above 1 the learning rate would grow without end
            message = f"{owner}.lr_decay must be in (0, 1] (1 keeps the rate constant), got {self.lr_decay!r}"
            raise IISError(message, field="lr_decay", owner=owner)
        _check_fraction(owner, "holdout_fraction", self.holdout_fraction)
        _check_int(owner, "num_seeds", self.num_seeds, 1)

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
    """`config` (None: `kind()`) with keyword `settings` named like `kind`'s fields, or one clear
    IISError: a config of another kind, or an unknown keyword with the closest field names."""
    import difflib

    if config is None:
        config = kind()
    elif not isinstance(config, kind):
        raise IISError(
            f"{where}(config=...) takes a {kind.__name__}, got {type(config).__name__}: pass "
            f"config={kind.__name__}(...), or its fields as keywords"
        )
    known = [f.name for f in fields(kind)]
    if unknown := [k for k in settings if k not in known]:
        hints = [_closest(k, difflib.get_close_matches(k, known, 2)) for k in unknown]
        raise IISError(
            f"{where}() got unknown setting(s) {', '.join(hints)}; the settings are {', '.join(known)}"
        )
    return replace(config, **settings) if settings else config


def _closest(name: str, close: list[str]) -> str:
    return f"{name} (did you mean {' or '.join(close)}?)" if close else name


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
    seed: int = setting(0, compare=RECORDED, help="seeds data subsets, prototypes and head training")
    device: str | None = setting(None, compare=NOT_RECORDED, help="default: cuda if available, else cpu")
    progress: bool = setting(
        True,
        compare=NOT_RECORDED,
        flag="--no-progress",
        help="hide iis-hf's progress bars (--quiet: all bars)",
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
        _check_int("ScoringConfig", "seed", self.seed, 0)
        validate_sparsity_ratios(self.heads.sparsity_ratios, minimum=2)  # an IIS integrates over the grid

    def recorded(self) -> dict[str, Any]:
        """The settings every output records (`setting` metadata). The concepts are described by the
        bank that was used (`iis_hf.pipeline.concepts_settings`), built from these settings or loaded."""
        return {
            "extraction": self.extraction.recorded(),
            "heads": self.heads.recorded(),
            "seed": self.seed,
        }
