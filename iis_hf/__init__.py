"""iis-hf: the Inherent Interpretability Score (IIS) for Hugging Face vision models.

Names are imported lazily so `import iis_hf` and the command line start fast; the heavy
modules (transformers' Trainer, scikit-image) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .version import __version__

_EXPORTS = {
    "inherent_interpretability_score": "score",
    "compute_iis": "score",
    "IISResult": "score",
    "DEFAULT_SPARSITY_RATIOS": "score",
    "InterpretationHead": "heads",
    "InterpretationHeads": "heads",
    "extract_features": "features",
    "ExtractedFeatures": "features",
    "ConceptBank": "concepts",
    "load_digits_dataset": "data",
    "metric_path": "metric_install",
    "install_metric": "metric_install",
    "IISTrainer": "trainer",
    "IISTrainingArguments": "trainer",
    "IISModelForImageClassification": "modeling",
    "ConceptClassifier": "explain",
    "Explanation": "explain",
    "ConceptContribution": "explain",
    "explain_prediction": "explain",  # `iis_hf.explain` is the module; its `explain` is this function
    "iis_model_from_heads": "explain",
    "read_concept_words": "text_concepts",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .concepts import ConceptBank
    from .data import load_digits_dataset
    from .explain import (
        ConceptClassifier,
        ConceptContribution,
        Explanation,
        explain_prediction,
        iis_model_from_heads,
    )
    from .features import ExtractedFeatures, extract_features
    from .heads import InterpretationHead, InterpretationHeads
    from .metric_install import install_metric, metric_path
    from .modeling import IISModelForImageClassification
    from .score import DEFAULT_SPARSITY_RATIOS, IISResult, compute_iis, inherent_interpretability_score
    from .text_concepts import read_concept_words
    from .trainer import IISTrainer, IISTrainingArguments


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'iis_hf' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
