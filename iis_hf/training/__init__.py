"""Fine-tuning with an interpretability loss: `IISTrainer`, its arguments, and the example run."""

from .arguments import IISTrainingArguments
from .trainer import IISTrainer

__all__ = ["IISTrainer", "IISTrainingArguments"]
