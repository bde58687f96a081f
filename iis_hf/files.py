"""Safe, atomic file handling for everything iis-hf writes or reads.

Two rules hold everywhere: an output appears complete or not at all (write to a temporary name in
the same folder, then `os.replace`), and only safetensors and JSON are read (never pickles).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

PICKLE_SUFFIXES = (".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt")


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_current_umask()  # what open() would give; mkstemp alone gives 0600


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    with temporary_sibling(path) as tmp:
        tmp.write_bytes(data)
        os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_safetensors_atomic(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """`safetensors.torch.save_file` through a temporary file; tensors are made contiguous first."""
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with temporary_sibling(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", **(metadata or {})})
        os.replace(tmp, path)


@contextlib.contextmanager
def temporary_sibling(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, FILE_MODE)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success its files are moved into `path`.

    On an exception nothing is moved, so `path` keeps its previous content (or stays absent).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if not path.exists():  # a new folder appears in one rename, even if the process dies right after
            os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp's 0700 -> what mkdir would give
            try:
                os.replace(tmp, path)
                return
            except OSError:  # another process created `path` meanwhile: merge file by file below
                pass
        path.mkdir(parents=True, exist_ok=True)
        for item in sorted(tmp.iterdir()):
            target = path / item.name
            if target.exists() and not overwrite:
                raise FileExistsError(f"{target} exists; pass overwrite=True or choose another folder")
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """Read a JSON object, turning every failure into a ValueError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{what}: {path} is not valid JSON ({err})") from err
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


def remove_stale_temporaries(folder: str | os.PathLike, older_than_s: float) -> list[str]:
    """Delete the temporary files (``.NAME.XXXX.tmp``) of writers killed before they renamed them.

    Only files older than `older_than_s` go: a live writer (another process sharing the folder)
    renames its temporary file within seconds, so it is never touched. Returns the names removed.
    """
    import time

    removed = []
    limit = time.time() - older_than_s
    for item in Path(folder).glob(".*.tmp"):
        try:
            if item.is_file() and item.stat().st_mtime < limit:
                item.unlink()
                removed.append(item.name)
        except OSError:  # removed by another process meanwhile
            pass
    return removed
