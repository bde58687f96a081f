"""What iis-hf reads, read safely, and what it says when a file operation fails.

Only safetensors and JSON are read (never pickles: unpickling runs code), a file name read from JSON
stays inside its folder, and every failure is a ValueError or one line naming the file and the fix.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import first_line

PICKLE_SUFFIXES = (".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt")


_OS_ERROR_FIXES = {
    errno.ENOSPC: "free some space, or write somewhere else",
    errno.EDQUOT: "free some of your quota, or write somewhere else",
    errno.EACCES: "check its permissions, or write somewhere else",
    errno.EPERM: "check its permissions, or write somewhere else",
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.ENAMETOOLONG: "use a shorter name",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "it is a folder: name a file",
    errno.EEXIST: "remove it, or choose another name",
}


def describe_os_error(err: OSError, what: str | None = None) -> str:
    """One line for a failed file operation: what and which file, the system's reason, and the fix."""
    reason = first_line(err, err.strerror if (err.strerror or "").strip() else None)
    where = what or "path"
    if err.filename is not None:
        where += f" {os.fsdecode(err.filename)!r}"
    if getattr(err, "filename2", None) is not None:
        where += f" -> {os.fsdecode(err.filename2)!r}"
    fix = _OS_ERROR_FIXES.get(err.errno) if err.errno is not None else None
    return f"{where}: {reason[:1].lower()}{reason[1:]}" + (f"; {fix}" if fix else "")


def read_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """Read a JSON object, turning every failure into a ValueError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{what}: {path} is not valid JSON ({err})") from err
    except RecursionError:
        raise ValueError(
            f"{what}: {path} is nested too deeply to be read (a damaged or hostile file); re-create it"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{what}: {path} must hold a JSON object, found {type(data).__name__}")
    return data


def read_safetensors(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning a truncated or foreign file into a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise ValueError(f"{what}: {path} is not a readable safetensors file ({err})") from err


def refuse_pickles(folder: str | os.PathLike, what: str, stems: tuple[str, ...] | None = None) -> None:
    """Refuse a folder that offers pickled files for our artefacts: we never unpickle them.

    `stems` limits the check to the artefact's own names (``concept_bank.bin``, ``iis_head.pt``): a
    model or Trainer checkpoint folder also holds pickles of other tools (``optimizer.pt``, legacy
    ``pytorch_model.bin``) that iis-hf does not read, and those must not make our files unreadable.
    """
    folder = Path(folder)
    found = (
        sorted(
            p.name
            for p in folder.iterdir()
            if p.suffix in PICKLE_SUFFIXES and (stems is None or p.stem in stems)
        )
        if folder.is_dir()
        else []
    )
    if found:
        raise ValueError(
            f"{what}: {folder} contains pickle files {found}; iis-hf reads only safetensors and JSON. "
            "Re-save the artefact with save_pretrained() from iis-hf."
        )


def resolve_inside(folder: str | os.PathLike, name: str, what: str) -> Path:
    """Join a file name read from JSON to its folder, refusing names that escape the folder.

    The name must be one plain path component (no separator, not ``.`` or ``..``, not absolute). It is
    checked as written, not through symlinks: the Hub's cache holds every file as a symlink to a blob.
    """
    folder = Path(folder).resolve()
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what}: expected a file name, found {name!r}")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if len(parts) != 1 or parts[0] in (".", "..", "/") or os.path.isabs(name) or "\x00" in name:
        raise ValueError(f"{what}: file name {name!r} points outside {folder}; use a plain file name")
    return folder / name
