"""`IISTrainingArguments`: `TrainingArguments` plus the interpretability loss and IIS at evaluation.

The `iis_*` fields map onto the library's settings: the loss onto the model's head
(`iis_weight`, `iis_sparsity_ratios`), the concepts onto a `ConceptsConfig`, and the IIS measured
at each evaluation onto a `HeadsConfig` (`iis_eval_sparsity_ratios`, `iis_eval_epochs`, ...), so
`eval_iis` is scored exactly as `iis-hf score` scores (`scoring_config()`).
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from transformers import TrainingArguments

from ..config import (
    DEFAULT_IIS_WEIGHT,
    DEFAULT_LOSS_SPARSITY_RATIOS,
    ConceptsConfig,
    HeadsConfig,
    ScoringConfig,
    config_fields,
    field_type,
    validate_sparsity_ratios,
)
from ..errors import IISError
from .numbers import check_number_fields

HEAD_INITS = ("random", "warm")
EVAL_PREFIX = "iis_eval_"  # HeadsConfig's settings, for the heads of eval_iis: iis_eval_epochs, ...
CONCEPTS_PREFIX = "iis_"  # ConceptsConfig's: iis_concept_kind, iis_num_concepts, ...
TRAINER_CONCEPT_SETTINGS = ("concept_kind", "num_concepts", "images_per_class", "concept_bank")
TRAINER_CONCEPT_KINDS = ("prototype-patches", "prototype-segments")  # built from the training images


def trainer_annotation(config: type, f: Field) -> tuple[Any, Any]:
    """(the annotation HfArgumentParser parses a setting with, its default): a setting that takes one
    value or a list (`learning_rate`) is a list here, so the command line can give either."""
    annotation = field_type(config, f.name)
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    if isinstance(annotation, types.UnionType) and any(
        typing.get_origin(a) is list for a in typing.get_args(annotation)
    ):
        annotation = next(a for a in typing.get_args(annotation) if typing.get_origin(a) is list)
        default = default if isinstance(default, list) else [default]
    return annotation, default


def with_config_fields(
    config: type,
    prefix: str,
    *,
    only: tuple[str, ...] | None = None,
    help_prefix: str = "",
    choices: Mapping[str, Sequence[str]] | None = None,
) -> Callable[[type], type]:
    """Add one `TrainingArguments` field per setting of `config` (prefix + the field's name, with its
    help, choices and default) before `@dataclass` reads the class: a new setting is one field there."""

    def add_fields(cls: type) -> type:
        annotations = dict(inspect.get_annotations(cls))
        for f in config_fields(config):
            if only is not None and f.name not in only:
                continue
            name = prefix + f.name
            annotations[name], default = trainer_annotation(config, f)
            metadata: dict[str, Any] = {"help": help_prefix + f.metadata["help"]}
            allowed = (choices or {}).get(f.name, f.metadata.get("choices"))
            if allowed:
                metadata["choices"] = list(allowed)
            if isinstance(default, list):
                setattr(cls, name, field(default_factory=functools.partial(list, default), metadata=metadata))
            else:
                setattr(cls, name, field(default=default, metadata=metadata))
        cls.__annotations__ = annotations
        return cls

    return add_fields


def trainer_names(config: type, prefix: str) -> dict[str, str]:
    """Field name -> the Trainer argument that sets it (``epochs`` -> ``iis_eval_epochs``)."""
    return {f.name: prefix + f.name for f in config_fields(config)}


def trainer_config(args: Any, config: type, prefix: str, only: tuple[str, ...] | None = None) -> Any:
    """An instance of `config` from the fields `with_config_fields` added; a bad value is an IISError
    that names the Trainer's argument (``iis_eval_epochs must be ...``)."""
    names = trainer_names(config, prefix)
    values = {k: getattr(args, v) for k, v in names.items() if only is None or k in only}
    try:
        return config(**values)
    except IISError as err:
        raise in_trainer_spelling(err, names) from err


def in_trainer_spelling(err: IISError, names: Mapping[str, str]) -> IISError:
    """`err` with its setting named as the Trainer argument `names` maps its field to (its field's
    name with the Trainer's prefix: ``iis_eval_head_batch_size must be an int >= 1, got 0``)."""
    key = err.field
    if key is None or key not in names:
        return err
    return IISError(err.named(names[key]), field=names[key])


@dataclass
@with_config_fields(HeadsConfig, EVAL_PREFIX, help_prefix="eval_iis heads: ")
@with_config_fields(
    ConceptsConfig,
    CONCEPTS_PREFIX,
    only=TRAINER_CONCEPT_SETTINGS,
    help_prefix="concepts: ",
    choices={"concept_kind": TRAINER_CONCEPT_KINDS},  # built from the training images
)
class IISTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the interpretability loss and IIS at evaluation time.

    The defaults were set by the pre-registered test of finding 2 (docs/RESULTS.md: backbones
    pre-trained to a plateau, M << D, 20 paired seeds): `iis_weight=0.5` with `iis_sparsity_ratios=[0.5]`
    is the setting the validation grid chose for transfer to a new, small data set; on the test split it
    left accuracy unchanged (within +-0.2 points, the smallest effect the run could see). What rests on
    that is only this: the setting costs no accuracy. Its gains in IIS and in predictions from concepts
    were measured with scoring heads of 10 Adam steps; with heads trained to convergence (recipe
    version 2) they shrank to within noise (IIS +0.004 [-0.016, +0.023]), so these defaults are not
    evidence that the loss raises a converged IIS (docs/RESULTS.md, finding 2). The grid chose neither a
    warm head nor refreshed concepts, so `iis_head_init="random"` and `iis_concept_refresh_epochs=None`
    stay. `iis_head_learning_rate=1e-2`: the rate at which the head learns (its test accuracy 0.93 in
    domain, 0.61 at 1e-3) at no cost to the backbone. `iis_refit_head=True`: even at 1e-2 the trained
    head stays well below a converged one (`benchmarks/saved_head_accuracy.py`).
    """

    if TYPE_CHECKING:
        # Generated by `with_config_fields` from ConceptsConfig, so the type checker does not see them:
        # declared here for it alone (never executed, so `@dataclass` never sees these annotations).
        iis_concept_kind: str = ConceptsConfig.concept_kind
        iis_num_concepts: int = ConceptsConfig.num_concepts
        iis_images_per_class: int = ConceptsConfig.images_per_class
        iis_concept_bank: str | None = ConceptsConfig.concept_bank

    iis_weight: float = field(
        default=DEFAULT_IIS_WEIGHT,
        metadata={"help": "lambda in loss = CE(model) + lambda * CE(interpretation heads); 0 disables"},
    )
    iis_sparsity_ratios: list[float] = field(
        default_factory=lambda: list(DEFAULT_LOSS_SPARSITY_RATIOS),
        metadata={
            "help": "sparsity ratios of the interpretation heads in the loss (the loss averages over them)"
        },
    )
    iis_head_learning_rate: float | None = field(
        default=1e-2,
        metadata={
            "help": "learning rate of the interpretation head (a new linear layer: the published heads use 1e-2); "
            "None: the backbone's --learning_rate"
        },
    )
    iis_head_weight_decay: float = field(
        default=0.0, metadata={"help": "weight decay of the interpretation head"}
    )
    iis_refit_head: bool = field(
        default=True,
        metadata={
            "help": "after training, refit the saved head on the final backbone's features with the scoring "
            "recipe, so predictions from concepts use a converged head (--no_iis_refit_head: keep the trained one)"
        },
    )
    iis_representation_module: str | None = field(
        default=None,
        metadata={
            "help": "the backbone's submodule whose input is the representation (default: its classifier, found "
            "by name)"
        },
    )
    iis_concepts_per_feature: float | None = field(
        default=None,
        metadata={
            "help": "size 'auto' concepts by the representation width D: C = max(2, round(this * D)), "
            "overriding --iis_num_concepts (recorded as the bank's num_concepts); None: --iis_num_concepts"
        },
    )
    iis_head_init: str = field(
        default="random",
        metadata={
            "help": "the interpretation head before the first step: 'random' (seeded init) or 'warm' (fitted on "
            "the starting backbone's training features with the scoring recipe, as --iis_refit_head refits "
            "it after training); a resumed run takes the checkpoint's head either way",
            "choices": list(HEAD_INITS),
        },
    )
    iis_concept_refresh_epochs: float | None = field(
        default=None,
        metadata={
            "help": "every this many epochs (a fraction is allowed), rebuild the prototype concepts with the "
            "current backbone from the same image parts (same kind, number, images and seed; no gradient), "
            "and project the head onto them; the refreshed bank is saved with the model and in checkpoints. "
            "None: the starting backbone's concepts throughout"
        },
    )
    iis_eval: bool = field(
        default=True,
        metadata={
            "help": "at each evaluation, fit heads on current features and report eval_iis (--no_iis_eval: skip it)"
        },
    )
    iis_eval_max_train_samples: int = field(
        default=5000, metadata={"help": "training images whose features fit the eval_iis heads"}
    )
    # Image datasets keep their raw `image` column until the collator transforms it; Trainer's
    # default (True) would drop it first.
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "keep dataset columns the forward does not name (images need them)"}
    )
    # The head runs in every forward (even at iis_weight=0), so no parameter is ever unused: DDP's
    # search for unused parameters would only cost time (and warn).
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "DDP find_unused_parameters (IISTrainer uses every parameter)"}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "replace an --output_dir that holds files a fine-tuning run did not write, and start afresh "
            "instead of resuming from its checkpoints (the folder is replaced only when the run has finished)"
        },
    )

    def __post_init__(self):
        check_number_fields(self)  # before Trainer's own checks: their errors do not name the flag
        super().__post_init__()
        if self.iis_weight < 0:
            raise ValueError(f"iis_weight must be >= 0, got {self.iis_weight}")
        if self.iis_head_learning_rate is not None and not (
            math.isfinite(self.iis_head_learning_rate) and self.iis_head_learning_rate > 0
        ):
            raise ValueError(
                f"iis_head_learning_rate must be a finite number > 0, got {self.iis_head_learning_rate}"
            )
        if not (math.isfinite(self.iis_head_weight_decay) and self.iis_head_weight_decay >= 0):
            raise ValueError(
                f"iis_head_weight_decay must be a finite number >= 0, got {self.iis_head_weight_decay}"
            )
        self.iis_sparsity_ratios = validate_sparsity_ratios(self.iis_sparsity_ratios)
        if self.iis_eval_max_train_samples < 1:
            raise IISError(
                f"iis_eval_max_train_samples must be >= 1, got {self.iis_eval_max_train_samples}",
                field="iis_eval_max_train_samples",
            )
        self.validate_training_options()
        self.scoring_config()  # every generated setting checked now, named as this class names it

    def validate_training_options(self) -> None:
        """Check `iis_head_init`, `iis_concept_refresh_epochs` and `iis_concepts_per_feature`
        (a ValueError naming the argument)."""
        if self.iis_head_init not in HEAD_INITS:
            raise ValueError(
                f"iis_head_init must be one of {', '.join(map(repr, HEAD_INITS))}, got {self.iis_head_init!r}"
            )
        for name in ("iis_concept_refresh_epochs", "iis_concepts_per_feature"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value > 0)
            ):
                raise ValueError(f"{name} must be a finite number > 0 (or None), got {value!r}")
        if self.iis_concepts_per_feature is not None and self.iis_concept_bank is not None:
            raise ValueError(
                "iis_concepts_per_feature sizes the concepts built from the training set, but iis_concept_bank "
                f"is {self.iis_concept_bank!r} (a saved bank has its own size): drop one of them"
            )
        if self.iis_concept_kind not in TRAINER_CONCEPT_KINDS:
            raise IISError(
                f"iis_concept_kind must be one of {', '.join(map(repr, TRAINER_CONCEPT_KINDS))} (the concepts "
                f"IISTrainer builds from its training images), got {self.iis_concept_kind!r}",
                field="iis_concept_kind",
            )

    @classmethod
    def from_training_arguments(
        cls, args: TrainingArguments | None, iis_args: Mapping[str, Any] | None = None
    ) -> IISTrainingArguments:
        """`args` as IISTrainingArguments, so that `IISTrainer` is a drop-in for `Trainer`.

        Every `TrainingArguments` field of `args` is kept as given (the fields its `__post_init__`
        derives are derived again from them, as `dataclasses.replace` would); the `iis_*` settings
        come from `iis_args` (a mapping of `iis_*` field names) and take their defaults otherwise.
        `ddp_find_unused_parameters=None` becomes False: IISTrainer uses every parameter. `args`
        that already are IISTrainingArguments are returned as they are (then `iis_args` must be None).
        """
        settings = iis_settings(iis_args)
        if isinstance(args, cls):
            if settings:
                raise ValueError(
                    f"iis_args={dict(settings)} next to IISTrainingArguments: set the IIS settings in one place "
                    "(the IISTrainingArguments, or iis_args next to a plain TrainingArguments)"
                )
            return args
        if args is None:
            return cls(output_dir="trainer_output", **settings)
        if not isinstance(args, TrainingArguments):
            raise TypeError(
                f"IISTrainer's args must be TrainingArguments or IISTrainingArguments, got {type(args).__name__}"
            )
        values = {f.name: copy.deepcopy(getattr(args, f.name)) for f in fields(TrainingArguments) if f.init}
        if values.get("ddp_find_unused_parameters") is None:
            values["ddp_find_unused_parameters"] = False
        return cls(**values, **settings)

    def concepts_config(self) -> ConceptsConfig:
        """The concepts of the loss: `iis_concept_bank`, or (None) prototypes built from the training images."""
        return trainer_config(self, ConceptsConfig, CONCEPTS_PREFIX, TRAINER_CONCEPT_SETTINGS)

    def eval_heads_config(self) -> HeadsConfig:
        """How the heads of `eval_iis` are trained: the `iis_eval_*` arguments."""
        return trainer_config(self, HeadsConfig, EVAL_PREFIX)

    def scoring_config(self) -> ScoringConfig:
        """How `eval_iis` is measured: the same `ScoringConfig` `iis-hf score` would use."""
        heads = self.eval_heads_config()
        try:
            return ScoringConfig(
                concepts=self.concepts_config(),
                heads=heads,
                seed=self.seed,
                device=str(self.device),
                progress=False,
            )
        except IISError as err:  # the grid of an IIS needs two ratios: named as iis_eval_sparsity_ratios
            raise in_trainer_spelling(err, trainer_names(HeadsConfig, EVAL_PREFIX)) from err


def iis_field_names() -> tuple[str, ...]:
    """The settings `IISTrainingArguments` adds to `TrainingArguments` (its `iis_*` fields)."""
    inherited = {f.name for f in fields(TrainingArguments)}
    return tuple(f.name for f in fields(IISTrainingArguments) if f.init and f.name not in inherited)


def iis_settings(iis_args: Mapping[str, Any] | None) -> dict[str, Any]:
    """`iis_args` checked: only `iis_*` field names (a TypeError names the others, as a dataclass would)."""
    if iis_args is None:
        return {}
    if not isinstance(iis_args, Mapping):
        raise TypeError(
            f"iis_args must be a mapping of iis_* settings, e.g. {{'iis_weight': 0.1}}; got {type(iis_args).__name__}"
        )
    known = iis_field_names()
    inherited = {f.name for f in fields(TrainingArguments)}
    for name in iis_args:
        if name in inherited:
            raise TypeError(
                f"iis_args: {name!r} is a TrainingArguments field: set it on the TrainingArguments"
            )
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else "the settings are IISTrainingArguments' iis_* fields"
            )
            raise TypeError(f"iis_args: unknown IIS setting {name!r}; {hint}")
    return dict(iis_args)
