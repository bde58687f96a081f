"""Fine-tuning with an interpretability loss: `IISTrainer`, its arguments, and the example run.

The names load on first use (PEP 562), so `iis_hf.training.numbers` and `.output` import without
transformers' Trainer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["IISTrainer", "IISTrainingArguments"]

if TYPE_CHECKING:
    from .arguments import IISTrainingArguments
    from .trainer import IISTrainer


def __getattr__(name: str) -> Any:
    if name == "IISTrainer":
        from .trainer import IISTrainer

        return IISTrainer
    if name == "IISTrainingArguments":
        from .arguments import IISTrainingArguments

        return IISTrainingArguments
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
