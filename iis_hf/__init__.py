"""iis-hf: the Inherent Interpretability Score (IIS) for Hugging Face vision models.

The top level answers each question one way: score a model (`score_model`), score representations
(`compute_iis`, or `inherent_interpretability_score` from accuracies), the metric (`load_metric`),
fine-tuning (`IISTrainer`, `IISTrainingArguments`, `IISModelForImageClassification`) and compare
(`compare_models`), with the types those calls take and return. Every other name lives in its module
(`iis_hf.explain`, `iis_hf.features`, ...); the names this level exported before still work for one
release, with a FutureWarning naming their module (`_MOVED`).

Names are imported lazily so `import iis_hf` and the command line start fast; the heavy modules
(transformers' Trainer, scikit-image) load on first use.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from .version import __version__

_EXPORTS = {
    # score a model: the whole pipeline, from a model and images
    "score_model": "pipeline",
    # score representations: probe and heads on features and concepts; the integral alone from accuracies
    "compute_iis": "score",
    "inherent_interpretability_score": "score",
    "extract_features": "features",
    "ConceptBank": "concepts",
    "InterpretationHead": "heads",
    # the metric
    "load_metric": "metric_install",
    # fine-tuning
    "IISTrainer": "training",
    "IISTrainingArguments": "training",
    "IISModelForImageClassification": "modeling",
    # compare
    "compare_models": "compare",
    # what those calls take and return
    "ScoringConfig": "config",
    "ExtractionConfig": "config",
    "ConceptsConfig": "config",
    "HeadsConfig": "config",
    "IISResult": "score",
    "IISError": "errors",
}

# Exported here before, now imported from their module; `from iis_hf import ...` warns for one release.
_MOVED = {
    "DEFAULT_SPARSITY_RATIOS": "config",
    "score_models": "pipeline",
    "iis_from_predictions": "score",
    "WeakProbeWarning": "score",
    "Leaderboard": "compare",
    "extract_features_of_models": "features",
    "ExtractedFeatures": "features",
    "LearnedConcepts": "concepts",
    "read_concept_words": "concepts",
    "InterpretationHeads": "heads",
    "IISHeadConfig": "modeling",
    "ConceptClassifier": "explain",
    "Explanation": "explain",
    "ConceptContribution": "explain",
    "explain_prediction": "explain",
    "iis_model_from_heads": "explain",
    "load_digits_dataset": "data",
    "load_image": "images",
    "metric_path": "metric_install",
    "install_metric": "metric_install",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .compare import compare_models
    from .concepts import ConceptBank
    from .config import ConceptsConfig, ExtractionConfig, HeadsConfig, ScoringConfig
    from .errors import IISError
    from .features import extract_features
    from .heads import InterpretationHead
    from .metric_install import load_metric
    from .modeling import IISModelForImageClassification
    from .pipeline import score_model
    from .score import IISResult, compute_iis, inherent_interpretability_score
    from .training import IISTrainer, IISTrainingArguments


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _MOVED:  # not cached: every use warns, until the next release removes it
        module = f"{__name__}.{_MOVED[name]}"
        warnings.warn(
            f"iis_hf.{name} is deprecated at the top level and will be removed in the next release: "
            f"use `from {module} import {name}`",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'iis_hf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
