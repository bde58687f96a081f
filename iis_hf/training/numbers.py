"""The numbers a fine-tuning run cannot start with, checked before anything heavy is imported.

`iis-hf finetune --num_train_epochs nan` must fail in a second, naming the flag, not after importing
transformers' Trainer (10 s here) and loading a model and data; `IISTrainingArguments` runs the same
check on its fields (`check_number_fields`), so Python users get the same message. This module imports
nothing from transformers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..errors import IISError

# name -> (smallest allowed, whether that value itself is allowed); ints mean "a whole number".
NUMBER_LIMITS: dict[str, tuple[float, bool]] = {
    "num_train_epochs": (0.0, False),
    "learning_rate": (0.0, False),
    "weight_decay": (0.0, True),
    "max_grad_norm": (0.0, True),
    "iis_weight": (0.0, True),
    "per_device_train_batch_size": (1, True),
    "per_device_eval_batch_size": (1, True),
    "gradient_accumulation_steps": (1, True),
}


OWNER = "TrainingArguments"  # whose setting these are (not a scoring config's of the same name)


def check_number(name: str, value: Any) -> None:
    """An IISError naming `--name` when `value` is not a finite number within `NUMBER_LIMITS[name]`."""
    smallest, inclusive = NUMBER_LIMITS[name]
    kind = "a whole number" if isinstance(smallest, int) else "a number"
    bound = f">= {smallest:g}" if inclusive else f"> {smallest:g}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise IISError(f"--{name} must be {kind} {bound}, got {value!r}", field=name, owner=OWNER) from None
    whole = not isinstance(smallest, int) or number.is_integer()
    if not math.isfinite(number) or number < smallest or (number == smallest and not inclusive) or not whole:
        raise IISError(f"--{name} must be {kind} {bound}, got {value}", field=name, owner=OWNER)


def check_number_fields(args: Any) -> None:
    """`check_number` on each field of `args` (a TrainingArguments) named in `NUMBER_LIMITS`."""
    for name in NUMBER_LIMITS:
        value = getattr(args, name, None)
        if isinstance(value, str):  # from Python: the command line's parser has converted its strings
            raise IISError(f"{name} must be a number, got the string {value!r}", field=name, owner=OWNER)
        if value is not None and not isinstance(value, bool):
            check_number(name, value)


def check_number_flags(argv: Sequence[str]) -> None:
    """`check_number` on the values of the `NUMBER_LIMITS` flags in a command line (`--name value` or
    `--name=value`), before the arguments are parsed for real."""
    argv = list(argv)
    for i, token in enumerate(argv):
        name, _, value = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        name = name.replace("-", "_")
        if name not in NUMBER_LIMITS:
            continue
        if not value and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
        if value:
            check_number(name, value)
