"""Which checkpoint a run can resume from: complete ones only.

Trainer writes `checkpoint-N` in place (weights, optimizer, scheduler, RNG states, then
`trainer_state.json`), so a run killed while saving leaves a folder without its state. These
helpers tell complete checkpoints from such leftovers.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

from ..modeling import IIS_HEAD_NAME


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why `folder` is not a complete IISTrainer checkpoint, or None when it is one."""
    from transformers.trainer import TRAINER_STATE_NAME

    folder = Path(folder)
    if not folder.is_dir():
        return "no such folder"
    try:
        state = json.loads((folder / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return (
            f"its {TRAINER_STATE_NAME} is missing or unreadable: the run was stopped while saving this "
            "checkpoint; resume from an earlier one"
        )
    if not isinstance(state, dict) or "global_step" not in state:
        return f"its {TRAINER_STATE_NAME} holds no global_step"
    if not (folder / IIS_HEAD_NAME).is_file():
        return f"it has no {IIS_HEAD_NAME} (not an IISTrainer checkpoint)"
    return None


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest `checkpoint-N` under `output_dir` that was saved completely (None when there is none).

    Incomplete folders, left by a run killed while saving, are skipped with a warning.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = []
    for item in output_dir.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", item.name)
        if match and item.is_dir():
            found.append((int(match.group(1)), item))
    for _step, folder in sorted(found, reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return str(folder)
        warnings.warn(f"skipping incomplete checkpoint {folder}: {problem}", UserWarning, stacklevel=2)
    return None
