"""The one scoring pipeline: images -> features -> concepts -> heads -> IIS.

Every entry point that measures an IIS goes through here, with one `ScoringConfig`: `iis-hf score`
and `iis-hf demo`, `IISTrainer`'s evaluation, the evaluate metric's "representations" config and
the examples. So the same model, data, concepts and settings give the same number wherever it is
asked for, and every result records the settings it was measured with
(`IISResult.settings`, which is `ScoringConfig.recorded()` plus the data's sizes).

- `score_model(model, train, eval, config)`: the whole chain from images.
- `score_models(models, train, eval, config)`: the same for several models, each image decoded once.
- `build_concepts(model, train, config)`: the concept bank the config asks for.
- `score_representations(train_x, train_y, eval_x, eval_y, concepts, config)`: from features on
  (the Trainer and the metric already have them).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .concepts import ConceptBank, LearnedConcepts, as_concept_projection
from .config import CONCEPT_RECIPE_KEYS, MIN_CONCEPTS, ScoringConfig
from .data import as_map_dataset, checked_labels, detect_columns
from .features import extract_features_of_models, load_image_processor, load_vision_model
from .features.backbones import preprocessing_environment
from .features.distributed import current_layout, on_main_process
from .model_card import bank_provenance, weights_fingerprint
from .preflight import check_processor_size
from .score import ATTACHMENTS, IISResult, compute_iis
from .splits import stratified_split

if TYPE_CHECKING:
    from .concepts.bank import ConceptsLike
    from .data_types import Features, FloatArray, ImageData, Labels
    from .features.store import FeatureStore

# Where a bank came from, recorded with every result (`iis_hf.compare` refuses to rank a score whose
# bank other weights embedded against one whose bank the scored model embedded itself).
PROVENANCE_KEYS = ("model", "embedded_by", "refreshed_at_step", "dataset_fingerprint", "seed")


def score_model(
    model,
    train_data: ImageData,
    eval_data: ImageData,
    config: ScoringConfig | None = None,
    *,
    image_processor=None,
    image_column: str | None = None,
    label_column: str | None = None,
    concept_bank: ConceptBank | None = None,
    num_classes: int | None = None,
) -> IISResult:
    """Score `model`'s representation: extract, build (or take) the concepts, fit the heads, integrate.

    Args:
        model: a vision model instance, Hub id or `save_pretrained` folder.
        train_data, eval_data: labelled `datasets` image datasets; the heads are fitted on the
            first and measured on the second.
        config: every setting (default: `ScoringConfig()`, the published recipe).
        concept_bank: use this bank instead of building one (`config.concepts.concept_bank` names one on disk).
        num_classes: default: the number of names of the label column's `ClassLabel`, else labels + 1.

    Returns:
        The `IISResult`; `result.concept_bank` is the bank it used (not serialised).
    """
    return score_models(
        [model],
        train_data,
        eval_data,
        config,
        image_processors=[image_processor],
        image_column=image_column,
        label_column=label_column,
        concept_banks=[concept_bank],
        num_classes=num_classes,
    )[0]


def score_models(
    models,
    train_data,
    eval_data,
    config: ScoringConfig | None = None,
    *,
    image_processors=None,
    image_column: str | None = None,
    label_column: str | None = None,
    concept_banks=None,
    num_classes: int | None = None,
) -> list[IISResult]:
    """Score several models on the same images with one config (`score_model` for each, in one pass).

    Every image is decoded once per split and fed to every model through its own image processor
    (`iis_hf.features.extract_features_of_models`; `config.extraction.cache_dir` keeps one feature
    cache per model). Then each model gets its own concepts (built from its own representation, as
    `score_model` builds them) and its own heads, with the same settings and seed. Returns one
    `IISResult` per model, in order, each equal to what `score_model` gives that model alone.
    Each records its image processor's backend and the library versions (``settings["environment"]``).
    Under ``torchrun`` / ``accelerate launch`` the heads are trained once (`fit_heads_once`).
    """
    config = config or ScoringConfig()
    models = [load_vision_model(str(m)) if isinstance(m, (str, os.PathLike)) else m for m in models]
    processors = list(image_processors) if image_processors is not None else [None] * len(models)
    banks = list(concept_banks) if concept_banks is not None else [None] * len(models)
    if not len(processors) == len(banks) == len(models):
        raise ValueError(
            f"got {len(models)} models, {len(processors)} image processors and {len(banks)} concept banks"
        )
    processors = [load_image_processor(m, p) for m, p in zip(models, processors)]
    for processor in processors:
        check_processor_size(processor)
    for bank in banks:  # a given bank that cannot be scored fails before any image is read
        if bank is not None:
            check_concept_count(bank)
    train_data, eval_data = as_map_dataset(train_data), as_map_dataset(eval_data)  # a stream: read once
    image_column, label_column = detect_columns(train_data, image_column, label_column)
    if label_column is None:
        raise ValueError(
            f"the dataset has no label column (columns: {train_data.column_names}); pass label_column="
        )
    for data, split in ((train_data, "train"), (eval_data, "eval")):
        checked_labels(data, label_column, split)
    train = _extract(models, train_data, config, processors, image_column, label_column, "train")
    evaluation = _extract(models, eval_data, config, processors, image_column, label_column, "eval")
    if num_classes is None:
        num_classes = len(getattr(train_data.features[label_column], "names", None) or []) or None
    results = []
    for model, processor, bank, train_part, eval_part in zip(models, processors, banks, train, evaluation):
        bank = bank or build_concepts(
            model,
            train_data,
            config,
            features=train_part.features,
            image_processor=processor,
            image_column=image_column,
            label_column=label_column,
        )
        if bank.dim != train_part.features.shape[1]:
            raise ValueError(
                f"the concept bank has dimension {bank.dim} but the model gives "
                f"{train_part.features.shape[1]}-dimensional representations: the bank was built for another "
                "model or layer"
            )
        fit = functools.partial(
            score_representations, train_part.features, train_part.labels, eval_part.features,
            eval_part.labels, bank, config, num_classes=num_classes, scored_weights=weights_fingerprint(model),
        )  # fmt: skip
        result = fit_heads_once(fit, bank)
        result.settings["environment"] = preprocessing_environment(processor)
        result.metadata.update(model=_model_name(model), image_column=image_column, label_column=label_column)
        results.append(result)
    return results


def fit_heads_once(fit: Callable[[], IISResult], bank: ConceptBank) -> IISResult:
    """`fit()` (the heads' training and the integral) on one process; under ``torchrun`` /
    ``accelerate launch`` on rank 0 only, every other rank receiving its record.

    Every rank extracted its share of the features and built the same concept bank (both collective),
    but the heads are trained once: W ranks training W copies would cost W times the CPU or GPU time
    and give the same numbers. Every rank returns an equal `IISResult` (its metadata says
    ``num_processes`` and ``heads_trained_on_rank``: 0), with its own `bank` attached; the trained
    modules (`heads`, `probe`), when kept, live on rank 0 only.
    """
    world, _ = current_layout()
    if world == 1:
        return fit()

    def record(result: IISResult) -> dict[str, Any]:
        return {f.name: getattr(result, f.name) for f in fields(result) if f.name not in ATTACHMENTS}

    value = on_main_process(fit, record, "training the interpretation heads")
    result = value if isinstance(value, IISResult) else IISResult(**value)
    result.metadata.update(num_processes=world, heads_trained_on_rank=0)
    result.concept_bank = result.concept_bank or bank
    return result


def _model_name(model) -> str:
    return getattr(model, "name_or_path", "") or type(model).__name__


def _extract(models, data, config: ScoringConfig, processors, image_column, label_column, split: str):
    extracted = extract_features_of_models(
        models,
        data,
        config=config.extraction,
        image_processors=processors,
        image_column=image_column,
        label_column=label_column,
        device=config.device,
        progress=config.progress,
    )
    for model, features in zip(models, extracted):
        bad = int((~features.features.isfinite().all(dim=1)).sum())
        if bad:  # say it here: the concepts, built from the same model, would fail less clearly
            who = "the model" if len(models) == 1 else f"the model {_model_name(model)}"
            raise ValueError(
                f"{who} gives NaN or inf representations for {bad} of {len(features.features)} {split} "
                f"images; check its weights, or extract in fp32 (precision {config.extraction.precision!r} "
                "was used)"
            )
        if not bool(features.features.abs().amax() > 0):  # e.g. batch-norm scales drawn near 0 at init
            who = "the model" if len(models) == 1 else f"the model {_model_name(model)}"
            raise ValueError(
                f"{who} gives all-zero representations for every {split} image, so nothing can be scored "
                "(its concepts, embedded by the same model, would be zero too); check its weights: a "
                "random initialisation that leaves every activation at zero (a normalisation scale of 0) "
                "needs another initialisation"
            )
    return extracted


def build_concepts(
    model,
    train_data,
    config: ScoringConfig,
    *,
    features: torch.Tensor | None = None,
    image_processor=None,
    image_column: str | None = None,
    label_column: str | None = None,
) -> ConceptBank:
    """The concept bank `config.concepts` asks for, built from the training images.

    For ``concept_kind="learned"`` this is the prototype library the heads learn to select from. `features`
    (the training images' representations, in order) spare text concepts a second extraction.
    """
    concepts = config.concepts
    if concepts.concept_bank is not None:
        return ConceptBank.from_pretrained(concepts.concept_bank)
    common = dict(
        image_processor=image_processor,
        image_column=image_column,
        batch_size=config.extraction.batch_size,
        precision=config.extraction.precision,
        device=config.device,
        seed=config.seed,
        progress=config.progress,
    )
    if concepts.concept_kind == "text":
        return ConceptBank.from_text(
            config=concepts,
            backbone=model,
            probe_dataset=train_data,
            features=features,
            layer=config.extraction.layer,
            pooling=config.extraction.pooling,
            **common,
        )
    prototypes = dict(
        label_column=label_column,
        images_per_class=concepts.images_per_class,
        preprocessing=config.extraction.preprocessing,  # parts are resized as the images are
        **common,
    )
    if concepts.concept_kind == "cluster":
        library = ConceptBank.from_prototypes(model, train_data, parts="patches", **prototypes)
        return ConceptBank.from_clusters(library, concepts.num_concepts, seed=config.seed)
    if concepts.concept_kind == "learned":
        return ConceptBank.from_prototypes(model, train_data, parts="patches", **prototypes)
    parts = "patches" if concepts.concept_kind == "prototype-patches" else "segments"
    return ConceptBank.from_prototypes(
        model, train_data, parts=parts, num_concepts=concepts.num_concepts, **prototypes
    )


def score_representations(
    train_features: FloatArray | torch.Tensor | FeatureStore,
    train_labels: Labels | None,
    eval_features: FloatArray | torch.Tensor | FeatureStore,
    eval_labels: Labels | None,
    concepts: ConceptsLike,
    config: ScoringConfig | None = None,
    *,
    num_classes: int | None = None,
    return_heads: bool = False,
    scored_weights: str | None = None,
) -> IISResult:
    """Fit the heads on features already extracted and integrate; record every setting.

    `concepts` is a `ConceptBank` (or its folder / Hub id, or a (C, D) array). With
    ``config.concepts.concept_kind == "learned"`` (and no saved bank) it is the library the heads learn to
    select ``config.concepts.num_concepts`` concepts from. `scored_weights` is the
    `weights_fingerprint` of the model the features come from: the result then says whether those
    weights embedded the bank (``settings["concepts"]["provenance"]["embedded_by_scored_model"]``).
    """
    config = config or ScoringConfig()
    if isinstance(concepts, (str, os.PathLike)):
        concepts = ConceptBank.from_pretrained(concepts)
    check_concept_dim(concepts, int(train_features.shape[1]))
    if not (config.concepts.concept_kind == "learned" and config.concepts.concept_bank is None):
        check_concept_count(concepts)  # a learned selection's size is its config's (>= 2)
    learned = None
    if (
        config.concepts.concept_kind == "learned"
        and config.concepts.concept_bank is None
        and isinstance(concepts, ConceptBank)
    ):
        learned = LearnedConcepts(concepts, config.concepts.num_concepts, seed=config.seed)
    result = compute_iis(
        train_features,
        train_labels,
        eval_features,
        eval_labels,
        learned if learned is not None else concepts,
        config=config.heads,
        num_classes=num_classes,
        seed=config.seed,
        device=config.device,
        progress=config.progress,
        return_heads=return_heads or learned is not None,
    )
    result.settings = {
        **config.recorded(),
        "concepts": concepts_settings(concepts, learned, scored_weights),
        "data": result.settings["data"],
    }
    if learned is not None:  # what each ratio's head chose from the library
        assert isinstance(concepts, ConceptBank)  # a learned selection is built from a bank only
        chosen = result.heads.concepts.selected_indices().tolist()
        result.metadata["learned_concepts"] = {
            f"{ratio:g}": {"library_rows": rows, "names": [concepts.names[r] for r in rows]}
            for ratio, rows in zip(result.sparsity_ratios, chosen)
        }
        if not return_heads:
            result.heads = result.probe = None
    result.concept_bank = concepts if isinstance(concepts, ConceptBank) else None
    return result


def score_labelled_representations(
    features: Features,
    labels: Labels,
    concepts: ConceptsLike,
    config: ScoringConfig | None = None,
    *,
    eval_fraction: float = 0.2,
) -> IISResult:
    """Score (N, D) representations of one labelled set: hold out a stratified `eval_fraction` of each
    class (`iis_hf.splits.stratified_split`, seeded by ``config.seed``), fit on the rest.

    Label ids need not be 0..K-1: they are mapped to their rank. This is the evaluate metric's
    "representations" config.
    """
    config = config or ScoringConfig()
    if (
        isinstance(eval_fraction, bool)
        or not isinstance(eval_fraction, (int, float))
        or not 0 < eval_fraction < 1
    ):
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction!r}")
    features = torch.as_tensor(np.asarray(features, dtype=np.float32))
    classes, labels = np.unique(np.asarray(labels, dtype=np.int64), return_inverse=True)
    if classes.size < 2:
        raise ValueError("the labels hold a single class: IIS needs at least 2 classes")
    train, held_out = stratified_split(labels, eval_fraction, config.seed)
    if len(train) == 0 or len(held_out) == 0:
        raise ValueError(
            f"the split left no samples for {'evaluation' if len(held_out) == 0 else 'training'}: "
            "pass more samples or change eval_fraction="
        )
    labels = torch.from_numpy(labels.astype(np.int64))
    result = score_representations(
        features[train], labels[train], features[held_out], labels[held_out], concepts, config,
        num_classes=int(classes.size),
    )  # fmt: skip
    result.settings["data"].update(eval_fraction=eval_fraction, split="stratified_split")
    return result


def check_concept_dim(concepts, dim: int) -> None:
    """The concepts must live in the representation's space: say so before any training."""
    projection = as_concept_projection(concepts)
    if projection.dim != dim:
        raise ValueError(
            f"the concepts have dimension {projection.dim} but the representations have {dim}: concept vectors "
            "must live in the representation's space (a bank built for this model and layer)"
        )


def check_concept_count(concepts) -> None:
    """Refuse fewer than 2 concepts before any head is trained: every head drops ``int(C * rho) + 1``
    of them, so with one each head predicts from its bias alone and the number would mean nothing."""
    count = int(as_concept_projection(concepts).num_concepts)
    if count >= MIN_CONCEPTS:
        return
    if isinstance(concepts, ConceptBank) and concepts.kind == "text":
        words = concepts.provenance.get("num_words", "its")
        kept = ", ".join(map(repr, concepts.names))
        raise ValueError(
            f"the text concept bank keeps {count} of {words} words ({kept}) after its cutoffs, and IIS needs "
            f"at least {MIN_CONCEPTS} concepts (every head drops int(C * rho) + 1 of them): lower "
            "clip_cutoff= or interpretability_cutoff=, or supply more words (concept_file=)"
        )
    raise ValueError(
        f"the concept bank has {count} concept, and IIS needs at least {MIN_CONCEPTS} (every head drops "
        "int(C * rho) + 1 of them): build one with more concepts (num_concepts=) or pass another "
        "(concept_bank=)"
    )


def concepts_settings(
    concepts: Any, learned: LearnedConcepts | None = None, scored_weights: str | None = None
) -> dict[str, Any]:
    """Which concepts interpreted the representation: kind, number, how they were built, fingerprint,
    and where the bank came from (`PROVENANCE_KEYS`: which weights embedded it, from which data,
    with which seed; whether they are the scored weights, when `scored_weights` is known)."""
    if not isinstance(concepts, ConceptBank):
        projection = as_concept_projection(concepts)
        return {"kind": "custom", "num_concepts": int(projection.num_concepts)}
    settings = {
        "kind": concepts.kind,
        "num_concepts": concepts.num_concepts,
        "fingerprint": concepts.fingerprint(),
    }
    settings.update({k: concepts.provenance[k] for k in CONCEPT_RECIPE_KEYS if k in concepts.provenance})
    recorded = {k: concepts.provenance[k] for k in PROVENANCE_KEYS if concepts.provenance.get(k) is not None}
    provenance = bank_provenance({"provenance": recorded}, scored_weights)
    if provenance:
        settings["provenance"] = provenance
    if learned is not None:
        return {"kind": "learned", "num_concepts": learned.num_concepts, "library": settings}
    return settings
