"""iis-hf: the Inherent Interpretability Score (IIS) for Hugging Face vision models.

Names are imported lazily so `import iis_hf` and the command line start fast; the heavy
modules (transformers' Trainer, scikit-image) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .version import __version__

_EXPORTS = {
    # settings
    "DEFAULT_SPARSITY_RATIOS": "config",
    "ScoringConfig": "config",
    "ExtractionConfig": "config",
    "ConceptsConfig": "config",
    "HeadsConfig": "config",
    # the scoring API, named by what it takes (docs/METHOD.md, "Names: one per idea")
    "score_model": "pipeline",  # a model and images: the whole pipeline
    "score_models": "pipeline",  # several models, the same images
    "compute_iis": "score",  # representations and concepts (a HeadsConfig, or its fields as keywords)
    "iis_from_predictions": "score",  # the predictions of interpretation heads you trained
    "inherent_interpretability_score": "score",  # accuracies: the integral alone
    # the stages
    "compare_models": "compare",
    "Leaderboard": "compare",
    "extract_features": "features",
    "extract_features_of_models": "features",
    "ExtractedFeatures": "features",
    "ConceptBank": "concepts",
    "LearnedConcepts": "concepts",
    "read_concept_words": "concepts",
    "InterpretationHead": "heads",
    "InterpretationHeads": "heads",
    "IISResult": "score",
    "WeakProbeWarning": "score",
    # models, training, explanations
    "IISModelForImageClassification": "modeling",
    "IISHeadConfig": "modeling",
    "IISTrainer": "training",
    "IISTrainingArguments": "training",
    "ConceptClassifier": "explain",
    "Explanation": "explain",
    "ConceptContribution": "explain",
    "explain_prediction": "explain",  # `iis_hf.explain` is the module; its `explain` is this function
    "iis_model_from_heads": "explain",
    # data and the metric
    "load_digits_dataset": "data",
    "load_image": "images",
    "metric_path": "metric_install",
    "install_metric": "metric_install",
    "load_metric": "metric_install",
    # the error raised for input the user can fix
    "IISError": "errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .compare import Leaderboard, compare_models
    from .concepts import ConceptBank, LearnedConcepts, read_concept_words
    from .config import DEFAULT_SPARSITY_RATIOS, ConceptsConfig, ExtractionConfig, HeadsConfig, ScoringConfig
    from .data import load_digits_dataset
    from .errors import IISError
    from .explain import (
        ConceptClassifier,
        ConceptContribution,
        Explanation,
        explain_prediction,
        iis_model_from_heads,
    )
    from .features import ExtractedFeatures, extract_features, extract_features_of_models
    from .heads import InterpretationHead, InterpretationHeads
    from .images import load_image
    from .metric_install import install_metric, load_metric, metric_path
    from .modeling import IISHeadConfig, IISModelForImageClassification
    from .pipeline import score_model, score_models
    from .score import (
        IISResult,
        WeakProbeWarning,
        compute_iis,
        iis_from_predictions,
        inherent_interpretability_score,
    )
    from .training import IISTrainer, IISTrainingArguments


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'iis_hf' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
