"""`IISTrainingArguments`: `TrainingArguments` plus the interpretability loss and IIS at evaluation.

The `iis_*` fields map onto the library's settings: the loss onto the model's head
(`iis_weight`, `iis_sparsity_ratios`), the concepts onto a `ConceptsConfig`, and the IIS measured
at each evaluation onto a `HeadsConfig` (`iis_eval_sparsity_ratios`, `iis_eval_epochs`, ...), so
`eval_iis` is scored exactly as `iis-hf score` scores (`scoring_config()`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..config import (
    DEFAULT_SPARSITY_RATIOS,
    PROTOCOLS,
    ConceptsConfig,
    HeadsConfig,
    ScoringConfig,
    validate_sparsity_ratios,
)
from ..modeling.head_config import DEFAULT_IIS_WEIGHT


@dataclass
class IISTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the interpretability loss and IIS at evaluation time.

    The defaults were set by measurement on scikit-learn's digits and animal silhouettes (README.md,
    docs/RESULTS.md, finding 2): `iis_weight=0.1` is the weight that cost no measurable accuracy
    (lambda = 1 cost 0.3-1.4 points; neither raised accuracy or IIS measurably), `iis_sparsity_ratios=[0.9]`
    the ratio of the earlier sweep (`benchmarks/results/finetune_digits_sweep.txt`), and
    `iis_head_learning_rate=1e-2` the head rate at which the head learns (its test accuracy 0.93 in
    domain, 0.61 at 1e-3) at no cost to the backbone. `iis_refit_head=True`: even at 1e-2 the trained
    head stays well below a converged one (`benchmarks/saved_head_accuracy.py`).
    """

    iis_weight: float = field(
        default=DEFAULT_IIS_WEIGHT,
        metadata={"help": "lambda in loss = CE(model) + lambda * CE(interpretation heads); 0 disables"},
    )
    iis_sparsity_ratios: list[float] = field(
        default_factory=lambda: [0.9],
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
    iis_concepts: str = field(
        default="auto",
        metadata={
            "help": "a ConceptBank folder or Hub id, or 'auto': prototype concepts built from the training set "
            "with the starting backbone"
        },
    )
    iis_num_concepts: int = field(
        default=ConceptsConfig.num_concepts, metadata={"help": "number of concepts C for 'auto' concepts"}
    )
    iis_concept_parts: str = field(
        default="patches",
        metadata={"help": "image parts of 'auto' prototypes", "choices": ["patches", "segments"]},
    )
    iis_images_per_class: int = field(
        default=ConceptsConfig.images_per_class, metadata={"help": "images per class for 'auto' prototypes"}
    )
    iis_eval: bool = field(
        default=True,
        metadata={
            "help": "at each evaluation, fit heads on current features and report eval_iis (--no_iis_eval: skip it)"
        },
    )
    iis_eval_sparsity_ratios: list[float] = field(
        default_factory=lambda: list(DEFAULT_SPARSITY_RATIOS),
        metadata={"help": "ratio grid of the IIS measured at evaluation"},
    )
    iis_eval_epochs: int = field(
        default=HeadsConfig.epochs, metadata={"help": "epochs of head training for eval_iis"}
    )
    iis_eval_protocol: str = field(
        default=HeadsConfig.protocol,
        metadata={
            "help": "how eval_iis is measured: 'converged' (default) or 'paper'",
            "choices": list(PROTOCOLS),
        },
    )
    iis_eval_seeds: int = field(
        default=HeadsConfig.num_seeds,
        metadata={"help": "seeds of the eval_iis heads (eval_iis is their mean)"},
    )
    iis_eval_max_train_samples: int = field(
        default=5000, metadata={"help": "training images whose features fit the eval_iis heads"}
    )
    iis_eval_ratios: list[float] | None = field(
        default=None, metadata={"help": "deprecated spelling of --iis_eval_sparsity_ratios"}
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

    def __post_init__(self):
        super().__post_init__()
        if self.iis_eval_ratios is not None:
            warnings.warn(
                "iis_eval_ratios is deprecated; use iis_eval_sparsity_ratios", FutureWarning, stacklevel=3
            )
            self.iis_eval_sparsity_ratios, self.iis_eval_ratios = self.iis_eval_ratios, None
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
        self.iis_eval_sparsity_ratios = validate_sparsity_ratios(self.iis_eval_sparsity_ratios, minimum=2)
        for name in (
            "iis_num_concepts",
            "iis_images_per_class",
            "iis_eval_epochs",
            "iis_eval_seeds",
            "iis_eval_max_train_samples",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def concepts_config(self) -> ConceptsConfig:
        """The concepts `iis_concepts` asks for ('auto': prototypes built from the training images)."""
        return ConceptsConfig(
            kind=f"prototype-{self.iis_concept_parts}",
            num_concepts=self.iis_num_concepts,
            images_per_class=self.iis_images_per_class,
            bank=None if self.iis_concepts == "auto" else self.iis_concepts,
        )

    def scoring_config(self) -> ScoringConfig:
        """How `eval_iis` is measured: the same `ScoringConfig` `iis-hf score` would use."""
        return ScoringConfig(
            concepts=self.concepts_config(),
            heads=HeadsConfig(
                sparsity_ratios=self.iis_eval_sparsity_ratios,
                epochs=self.iis_eval_epochs,
                protocol=self.iis_eval_protocol,
                num_seeds=self.iis_eval_seeds,
            ),
            seed=self.seed,
            device=str(self.device),
            progress=False,
        )
