"""How the experiments measure a trained model: its own classifier's accuracy and its IIS.

Every IIS here comes from the library's pipeline (`iis_hf.pipeline.build_concepts` and
`score_representations`) on features extracted once per model, with the published ratio grid.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from iis_hf.config import (
    DEFAULT_SPARSITY_RATIOS,
    ConceptsConfig,
    ExtractionConfig,
    HeadsConfig,
    ScoringConfig,
)
from iis_hf.demo import demo_image_processor
from iis_hf.features import extract_features
from iis_hf.pipeline import build_concepts, score_representations
from iis_hf.score import WeakProbeWarning

SCORE_RATIOS = DEFAULT_SPARSITY_RATIOS  # the published grid: every IIS of the experiments uses it
# The reports' names of the concept kinds -> the library's `ConceptsConfig.kind`.
CONCEPT_KINDS = {"prototype": "prototype-patches", "cluster": "cluster"}


def own_classifier_accuracy(model: Any, features: Any) -> float:
    """Top-1 accuracy of the model's own classifier on extracted `features` (what the classifier of a
    *ForImageClassification model sees is its default representation)."""
    head = copy.deepcopy(model.classifier).cpu().eval()
    with torch.no_grad():
        return float((head(features.features).argmax(-1) == features.labels).float().mean())


def classifier_accuracy(model: Any, dataset: Any, device: str = "cpu") -> float:
    """Top-1 accuracy of the model's own classifier on `dataset`."""
    features = extract_features(
        model, dataset, image_processor=demo_image_processor(), batch_size=256, device=device, progress=False
    )
    return own_classifier_accuracy(model, features)


def checkpoint_scoring_config(
    kind: str,
    seed: int,
    device: str,
    num_concepts: int,
    images_per_class: int,
    head_epochs: int | None,
    heads: dict | None = None,
) -> ScoringConfig:
    """The reproduction's measurement: `kind` concepts, the published grid, converged heads (or a fixed
    `head_epochs`, for a quick smoke run); `heads` overrides HeadsConfig fields (a budget check)."""
    return ScoringConfig(
        extraction=ExtractionConfig(batch_size=256),
        concepts=ConceptsConfig(
            concept_kind=kind, num_concepts=num_concepts, images_per_class=images_per_class
        ),
        heads=HeadsConfig(sparsity_ratios=list(SCORE_RATIOS), epochs=head_epochs, **(heads or {})),
        seed=seed,
        device=device,
        progress=False,
    )


def score_checkpoint(
    model: Any,
    data: Any,
    seed: int = 0,
    device: str = "cpu",
    kinds: Sequence[str] = tuple(CONCEPT_KINDS),
    num_concepts: int = 200,
    images_per_class: int = 10,
    head_epochs: int | None = None,
    heads: dict | None = None,
) -> dict:
    """One checkpoint's figures: its own classifier's test accuracy, and IIS with each kind of concept.

    "prototype": `num_concepts` patch prototypes (a 4 x 4 grid of `images_per_class` training images
    per class, embedded by the model itself, a seeded subset). "cluster": `num_concepts` k-means
    centres of the whole prototype library. Both are built by `iis_hf.pipeline.build_concepts` and
    scored by `score_representations` (A0 is its converged probe) on features extracted once.
    """
    configs = {
        label: checkpoint_scoring_config(
            CONCEPT_KINDS[label], seed, device, num_concepts, images_per_class, head_epochs, heads
        )
        for label in kinds
    }
    config = next(iter(configs.values()))
    processor = demo_image_processor()
    kwargs = dict(image_processor=processor, config=config.extraction, device=device, progress=False)
    train = extract_features(model, data["train"], **kwargs)
    test = extract_features(model, data["test"], **kwargs)
    out: dict[str, Any] = {
        "accuracy": own_classifier_accuracy(model, test),
        "feature_dim": int(train.features.shape[1]),
    }
    out["concepts"] = {}
    for label, kind_config in configs.items():
        bank = build_concepts(model, data["train"], kind_config, image_processor=processor)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = score_representations(
                train.features, train.labels, test.features, test.labels, bank, kind_config
            )
        out["concepts"][label] = {
            "iis": result.iis,
            "probe_accuracy": result.standard_accuracy,
            "interpretation_accuracy": dict(zip(map(str, result.sparsity_ratios), result.accuracies)),
            "max_relative_accuracy": max(result.relative_accuracies),
            "probe_warning": any(issubclass(w.category, WeakProbeWarning) for w in caught),
            "num_concepts": bank.num_concepts,
        }
    return out


# --------------------------------------------------------------- the paper's re-test (finetune_paper)
def backbone_scoring_config(
    num_concepts: int,
    images_per_class: int,
    head_epochs: int | None,
    head_batch_size: int,
    probe_min_steps: int,
    seed: int,
    device: str,
) -> ScoringConfig:
    """The IIS measurement of the paper's re-test (`iis-hf score`'s pipeline, `converged` protocol):
    M prototype-patch concepts, the published ratio grid, a small fast recipe (CPU: heads 10 epochs
    of batch 256, the standardised probe at least 100 steps), epochs chosen on a held-out part of
    the training rows (never on test)."""
    return ScoringConfig(
        extraction=ExtractionConfig(batch_size=256),
        concepts=ConceptsConfig(num_concepts=num_concepts, images_per_class=images_per_class),
        heads=HeadsConfig(
            sparsity_ratios=list(SCORE_RATIOS),
            epochs=head_epochs,
            head_batch_size=head_batch_size,
            model_selection="holdout",
            probe_min_steps=probe_min_steps,
        ),
        seed=seed,
        device=device,
        progress=False,
    )


def _bank_figures(train: Any, test: Any, bank: Any, config: ScoringConfig) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = score_representations(train.features, train.labels, test.features, test.labels, bank, config)
    return {
        "iis": result.iis,
        "probe_accuracy": result.standard_accuracy,
        "accuracies": {f"{r:g}": a for r, a in zip(result.sparsity_ratios, result.accuracies)},
        "num_concepts": bank.num_concepts,
    }


def score_backbone(
    model: Any,
    data: Any,
    trainer: Any,
    sparsity: float,
    config: ScoringConfig,
    probe_is_classifier: bool = False,
) -> dict:
    """Test accuracy, IIS with concepts rebuilt from `model` and with the bank the loss used (no
    trainer: the rebuilt one, which is the bank the loss would start from), the refitted head's
    accuracy A(s) over that bank, and the trained head's test accuracy.

    `probe_is_classifier`: the accuracy is the scoring's linear probe A0 (a new, untrained classifier)."""
    processor = demo_image_processor()
    kwargs = dict(image_processor=processor, config=config.extraction, device=config.device, progress=False)
    model = model.eval()
    train, test = (extract_features(model, data[split], **kwargs) for split in ("train", "test"))
    accuracy = own_classifier_accuracy(model, test)
    rebuilt = build_concepts(model, data["train"], config, image_processor=processor)
    out: dict[str, Any] = {"test_accuracy": accuracy, "rebuilt": _bank_figures(train, test, rebuilt, config)}
    if trainer is None:
        out["loss_bank"] = out["rebuilt"]
    else:
        out["trained_head_accuracy"] = trainer.head_accuracies(test.features, test.labels)[f"{sparsity:g}"]
        out["loss_bank"] = _bank_figures(train, test, trainer.iis_model.concept_bank, config)
    out["refitted_head_accuracy"] = out["loss_bank"]["accuracies"][f"{sparsity:g}"]
    if probe_is_classifier:
        out["classifier_accuracy"], out["test_accuracy"] = accuracy, out["rebuilt"]["probe_accuracy"]
    return out
