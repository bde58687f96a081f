"""A backbone and its interpretation head as one model, saved as an add-on beside the backbone."""

from .head_config import IIS_CONFIG_NAME, IIS_FILES, IIS_HEAD_NAME, IISHeadConfig, has_head
from .model import IISImageClassifierOutput, IISModelForImageClassification

__all__ = [
    "IIS_CONFIG_NAME",
    "IIS_FILES",
    "IIS_HEAD_NAME",
    "IISHeadConfig",
    "IISImageClassifierOutput",
    "IISModelForImageClassification",
    "has_head",
]
