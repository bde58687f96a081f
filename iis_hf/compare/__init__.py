"""Several models, one dataset, one setting: an IIS leaderboard (`iis-hf compare`, `iis_hf.compare_models`).

Models given as a Hub id or a `save_pretrained` folder are scored here, all with one `ScoringConfig`
and in one pass over the images (`iis_hf.pipeline.score_models`: each image decoded once and fed to
every backbone through its own image processor; `cache_dir` keeps each model's features). Models
given as ``card:<Hub id or folder>`` are read from their model card's ``model-index`` (the IIS entry
`iis_hf.model_card` writes, whose metric args hold the settings it was measured with).

Scores are ranked only when they were measured alike: the settings recorded with each one
(`IISResult.settings`: ratio grid, head recipe, protocol, concept kind, number and recipe,
extraction, data) must agree, and a difference is refused with a message naming the setting.
The seed is not part of that check: another seed is another draw of the same measurement.
Neither is which bank (each model has its own), but who embedded it is: a fresh score embeds its
bank with the scored weights themselves, so a card measured with a bank of other weights (a
fine-tuned model's IIS measured during training with the concepts of its starting backbone) is
refused next to fresh scores ("concepts: embedded by").

The leaderboard is printed, and `Leaderboard.save` writes ``leaderboard.md``, ``leaderboard.csv``,
``leaderboard.json``, the accuracy-vs-IIS scatter ``iis_vs_accuracy.png`` and the curves of the
models with per-ratio accuracies ``iis_curves.png``, together or not at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import ScoringConfig
from ..score import IISResult
from .cards import (
    CARD_PREFIX,
    IIS_METRIC_TYPE,
    INVALID_IIS_METRIC_TYPE,
    card_result,
    dataset_name,
    read_card_result,
)
from .comparable import (
    DATA_KEYS,
    EXTRACTION_KEYS,
    HEAD_RECIPE_KEYS,
    RECIPE_VERSION,
    REQUIRED,
    SCORED_MODEL,
    check_comparable,
    comparable_view,
    embedded_by,
    expected_result,
    settings_differences,
)
from .leaderboard import (
    CURVES_NAME,
    OUTPUT_NAMES,
    SCATTER_NAME,
    Leaderboard,
    LeaderboardEntry,
    is_leaderboard_entry,
)

__all__ = [
    "CARD_PREFIX",
    "CURVES_NAME",
    "DATA_KEYS",
    "EXTRACTION_KEYS",
    "HEAD_RECIPE_KEYS",
    "IIS_METRIC_TYPE",
    "INVALID_IIS_METRIC_TYPE",
    "OUTPUT_NAMES",
    "RECIPE_VERSION",
    "REQUIRED",
    "SCATTER_NAME",
    "SCORED_MODEL",
    "Leaderboard",
    "LeaderboardEntry",
    "ModelSpec",
    "card_result",
    "check_comparable",
    "comparable_view",
    "compare_models",
    "dataset_name",
    "embedded_by",
    "expected_result",
    "is_leaderboard_entry",
    "model_specs",
    "parse_model_spec",
    "read_card_result",
    "settings_differences",
]


# ---------------------------------------------------------------------------- which models
@dataclass
class ModelSpec:
    """One model of a comparison: its display name, and what to score or which card to read."""

    name: str
    target: Any  # a Hub id or folder (str), a model instance, or for a card its Hub id or folder
    from_card: bool = False


def parse_model_spec(spec: str) -> ModelSpec:
    """``[NAME=]LOCATION`` or ``[NAME=]card:LOCATION``, LOCATION a Hub id or folder.

    >>> parse_model_spec("trained=demo_output/model")
    ModelSpec(name='trained', target='demo_output/model', from_card=False)
    >>> parse_model_spec("card:me/vit-iis")
    ModelSpec(name='me/vit-iis', target='me/vit-iis', from_card=True)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a model must be a Hub id, a folder or card:<id or folder>, got {spec!r}")
    name, sep, rest = spec.partition("=")
    if not sep or not name or "/" in name or os.sep in name or os.path.exists(spec):
        name, rest = "", spec
    from_card = rest.startswith(CARD_PREFIX)
    location = rest[len(CARD_PREFIX) :] if from_card else rest
    if not location:
        raise ValueError(f"{spec!r} names no model: give a Hub id or a folder after {CARD_PREFIX!r}")
    return ModelSpec(name or location, location, from_card)


def model_specs(models) -> list[ModelSpec]:
    """`models` as specs: strings (see `parse_model_spec`), or a mapping of names to a model
    instance, a Hub id / folder, or ``card:<id or folder>``."""
    if isinstance(models, (str, os.PathLike)):
        raise ValueError("pass several models: a list of Hub ids / folders, or a mapping of names to models")
    if isinstance(models, Sequence) and all(isinstance(m, ModelSpec) for m in models):
        specs = list(models)
    elif isinstance(models, Mapping):
        specs = []
        for name, target in models.items():
            if isinstance(target, (str, os.PathLike)):
                spec = parse_model_spec(os.fspath(target))
                specs.append(ModelSpec(str(name), spec.target, spec.from_card))
            else:
                specs.append(ModelSpec(str(name), target))
    else:
        specs = [
            parse_model_spec(os.fspath(m)) if isinstance(m, (str, os.PathLike)) else ModelSpec(_name_of(m), m)
            for m in models
        ]
    if len(specs) < 1:
        raise ValueError("no models to compare")
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"two models are named {repeated[0]!r}: name them, e.g. a={repeated[0]} b=...")
    return specs


def _name_of(model) -> str:
    return getattr(model, "name_or_path", "") or type(model).__name__


# ---------------------------------------------------------------------------- the entry point
def compare_models(
    models,
    train_data=None,
    eval_data=None,
    config: ScoringConfig | None = None,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    data_settings: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> Leaderboard:
    """Score several models on one dataset with one config, read others from their cards, and rank them.

    Args:
        models: Hub ids or folders (scored here), ``card:<Hub id or folder>`` (read from the model
            card's model-index), each optionally named ``NAME=...``; or a mapping of names to a
            model instance, a Hub id / folder or ``card:...``.
        train_data, eval_data: labelled `datasets` image datasets (needed when a model is scored).
        config: the one `ScoringConfig` every scored model is measured with (a `concepts.concept_bank` is
            refused: concepts are built per model, from its own representation).
        data_settings: what names the data (dataset, splits, ...), recorded with each scored result
            and compared with the cards' (e.g. `iis_hf.data.ScoringSplits.settings()`).
        title: the leaderboard's title (default: "IIS on <dataset>").

    Returns:
        The `Leaderboard`. A ValueError names the setting that differs when the scores are not
        comparable; with cards, that is checked before any model is scored.
    """
    from ..pipeline import score_models

    config = config or ScoringConfig()
    specs = model_specs(models)
    if config.concepts.concept_bank is not None and any(not s.from_card for s in specs):
        raise ValueError(
            "a concept bank fits one model's representation: compare builds each model's own concepts "
            "(drop the concept bank)"
        )
    data = dict(data_settings or {})
    dataset = data.get("dataset")
    results: dict[str, IISResult] = {}
    sources, locations = {}, {}
    for spec in specs:
        if spec.from_card:
            results[spec.name] = read_card_result(spec.target, dataset)
            sources[spec.name], locations[spec.name] = "card", f"{CARD_PREFIX}{spec.target}"
    scored = [s for s in specs if not s.from_card]
    if scored:
        if train_data is None or eval_data is None:
            raise ValueError(
                f"models to score ({', '.join(s.name for s in scored)}) need train and eval images: pass a dataset"
            )
        if results:  # cheap first: refuse before any scoring when a card was measured differently
            check_comparable({**results, "the models to score": expected_result(config, data)})
        scores = score_models(
            [s.target for s in scored],
            train_data,
            eval_data,
            config,
            image_column=image_column,
            label_column=label_column,
        )
        for spec, result in zip(scored, scores):
            result.settings["data"].update(data)
            result.metadata.update(model=spec.name, **({"dataset": dataset} if dataset else {}))
            results[spec.name] = result
            sources[spec.name] = "scored"
            locations[spec.name] = spec.target if isinstance(spec.target, str) else _name_of(spec.target)
    ordered = {s.name: results[s.name] for s in specs}
    return Leaderboard.from_results(ordered, sources=sources, locations=locations, title=title)
