"""Representations: which vector is "the representation" of an image, and extracting it at scale.

`backbones` loads models and pools their outputs; `sources` reads datasets, image lists and pixel
tensors; `extract` runs the model over them (`extract_features`), with a chunk `cache` and several
processes (`distributed`); `store` keeps features on disk, memory-mapped (`FeatureStore`).
"""

from .backbones import (
    as_vision_model,
    capture_classifier_input,
    load_image_processor,
    load_vision_model,
    pooled_representation,
)
from .extract import ExtractedFeatures, extract_features, extract_features_of_models
from .sources import auto_num_workers
from .store import FeatureStore, write_feature_store

__all__ = [
    "ExtractedFeatures",
    "FeatureStore",
    "as_vision_model",
    "auto_num_workers",
    "capture_classifier_input",
    "extract_features",
    "extract_features_of_models",
    "load_image_processor",
    "load_vision_model",
    "pooled_representation",
    "write_feature_store",
]
