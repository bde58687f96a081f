"""The concepts an `IISTrainer` run uses: the bank a plain model is wrapped with, and its refresh.

Why apart from the Trainer: building, sizing and rebuilding a bank from a backbone are steps of their
own (`iis_concepts_per_feature`, `iis_concept_refresh_epochs`), tested on their own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from transformers import TrainerCallback

from ..concepts import ConceptBank
from ..features.backbones import classifier_input_dim
from ..pipeline import build_concepts
from .arguments import IISTrainingArguments


def concepts_for(args: IISTrainingArguments, model, dataset, processing_class) -> ConceptBank:
    """`args.iis_concept_bank` as a ConceptBank: a folder / Hub id, or (None) prototypes built right now.

    With `iis_concepts_per_feature` the built bank has ``concept_count(ratio, D)`` concepts; the
    bank records the count (its `num_concepts`) and, in its provenance, the ratio and D.
    """
    config = args.scoring_config()
    if config.concepts.concept_bank is None and dataset is None:
        raise ValueError(
            "without iis_concept_bank, concepts are built from a dataset: pass train_dataset or concept_dataset"
        )
    sized = args.iis_concepts_per_feature is not None and config.concepts.concept_bank is None
    if sized:
        assert args.iis_concepts_per_feature is not None  # `sized` says so
        width = representation_width(model, args.iis_representation_module)
        count = concept_count(args.iis_concepts_per_feature, width)
        config = dataclasses.replace(
            config, concepts=dataclasses.replace(config.concepts, num_concepts=count)
        )
    raw = dataset.with_format(None) if hasattr(dataset, "with_format") else dataset
    config.progress = not args.disable_tqdm
    bank = build_concepts(model, raw, config, image_processor=processing_class)
    if sized:
        bank.provenance.update(
            num_concepts_per_feature=args.iis_concepts_per_feature, representation_dim=width
        )
    return bank


def concept_count(per_feature: float, width: int) -> int:
    """``iis_concepts_per_feature``: C = round(per_feature * D), at least 2 (a head drops one at any ratio)."""
    return max(2, round(per_feature * width))


def representation_width(model, representation_module: str | None = None) -> int:
    """D, the width of the representation the concepts live in (what the classifier reads)."""
    width = classifier_input_dim(model, representation_module)
    if width is None:
        raise ValueError(
            f"iis_concepts_per_feature needs the representation width, which iis-hf cannot read off "
            f"{type(model).__name__}'s classifier: set iis_num_concepts= instead"
        )
    return int(width)


PROTOTYPE_KINDS = ("prototype-patches", "prototype-segments")


def check_refreshable(bank: ConceptBank, dataset) -> None:
    """A refresh rebuilds prototypes from their recipe and images: say early when it cannot."""
    if bank.kind not in PROTOTYPE_KINDS or "images_per_class" not in bank.provenance:
        raise ValueError(
            f"iis_concept_refresh_epochs rebuilds prototype concepts from their recipe, but the concept bank is "
            f"{bank!r} without one: leave iis_concept_bank unset or use a bank from ConceptBank.from_prototypes"
        )
    if dataset is None:
        raise ValueError(
            "iis_concept_refresh_epochs embeds the concept images again: pass train_dataset or concept_dataset"
        )


def rebuilt_bank(
    bank: ConceptBank, backbone, dataset, processing_class, args: IISTrainingArguments
) -> ConceptBank:
    """`bank` built again by `backbone`: the same parts of the same images (its kind, size, images
    per class, grid and seed), so the result depends on the backbone only. No gradient flows."""
    recipe = bank.provenance
    extraction = args.scoring_config().extraction
    raw = dataset.with_format(None) if hasattr(dataset, "with_format") else dataset
    with torch.no_grad():
        fresh = ConceptBank.from_prototypes(
            backbone,
            raw,
            parts=recipe.get("parts", bank.kind.removeprefix("prototype-")),
            grid=recipe.get("grid") or 4,
            images_per_class=recipe["images_per_class"],
            num_concepts=bank.num_concepts,
            seed=recipe.get("seed", args.seed),
            image_processor=processing_class,
            batch_size=extraction.batch_size,
            precision=extraction.precision,
            device=args.device,
            progress=False,
        )
    fresh.provenance = {**recipe, **fresh.provenance}
    return fresh


class ConceptRefresh(TrainerCallback):
    """Calls `refresh` at the end of each step where training passes a multiple of `every` epochs.

    Counted from `state.epoch`, so a resumed run (whose checkpoint already holds the refreshed
    bank) refreshes at the same steps as an uninterrupted one, and never twice.
    """

    def __init__(self, every: float, refresh: Callable[[], object]):
        self.every = float(every)
        self.refresh = refresh
        self.done = 0

    def passed(self, epoch: float | None) -> int:
        return math.floor((epoch or 0.0) / self.every + 1e-9)

    def on_train_begin(self, args, state, control, **kwargs):
        self.done = self.passed(state.epoch)

    def on_step_end(self, args, state, control, **kwargs):
        if self.passed(state.epoch) > self.done:
            self.refresh()
            self.done = self.passed(state.epoch)
