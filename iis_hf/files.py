"""Atomic writes and the output-folder lock: what iis-hf writes appears whole or not at all.

A file goes to a temporary name beside it, then `os.replace`; a folder is built beside its target, then
put in its place in one step, by the one process holding its lock (`filelock`). Reading: `iis_hf.reading`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError
from safetensors.torch import save_file

os.umask(_UMASK := os.umask(0o022))  # read the umask (only a change reads it) and restore it
FILE_MODE = 0o666 & ~_UMASK  # what open() would give; mkstemp alone gives 0600
DIR_MODE = 0o777 & ~_UMASK  # what mkdir() would give; mkdtemp alone gives 0700
TEMPORARY_NAME_CHARS = 100  # of the real name in a temporary one: never too long where the real one fits
COMMITTED: list[Path] = []  # the folders `atomic_directory` has put in place in this process
_HELD: set[str] = set()  # the lock files this process holds (`exclusive_lock`)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with temporary_sibling(path) as tmp:
        tmp.write_bytes(data)
        os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: object) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_safetensors_atomic(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """`safetensors.torch.save_file` through a temporary file; tensors are made contiguous first."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with temporary_sibling(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", **(metadata or {})})
        os.chmod(tmp, FILE_MODE)  # safetensors >= 0.7 writes a new file of mode 0600 over ours
        os.replace(tmp, path)


@contextlib.contextmanager
def temporary_sibling(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file beside `path` (same file system: `os.replace` is atomic), removed unless renamed. A
    failure naming no file (`write` on a full disk, safetensors' "(os error 28)") is made to name `path`."""
    (path := Path(path)).parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f".{path.name[:TEMPORARY_NAME_CHARS]}.", suffix=".tmp", dir=path.parent
    )
    os.close(fd)
    os.chmod(tmp := Path(name), FILE_MODE)
    try:
        yield tmp
    except SafetensorError as err:
        if (code := re.search(r"\(os error (\d+)\)", str(err))) is None:
            raise
        raise OSError(int(code[1]), os.strerror(int(code[1])), os.fspath(path)) from err
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, os.fspath(path)) from err
    finally:
        tmp.unlink(missing_ok=True)


def lock_path(output_dir: str | os.PathLike) -> Path:
    """The lock file of an output folder: `.<name>.lock` beside it, the same for every iis-hf command."""
    path = Path(os.path.abspath(output_dir))
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, holder: str, wait: bool = False) -> Iterator[Path]:
    """Hold the lock file `path` (filelock: the kernel releases it when the holder dies, so a stale lock
    never blocks). Another holder: wait when `wait`, else a FileExistsError naming it (`holder`, what
    runs with its pid, is written into the file for that message). The file is removed on release."""
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except Timeout:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            holder = path.read_text(encoding="utf-8").strip() or "another process"
        raise FileExistsError(errno.EEXIST, f"held by {holder}", str(path)) from None
    _HELD.add(str(path))
    try:
        path.write_text(holder, encoding="utf-8")
        yield path
    finally:
        _HELD.discard(str(path))
        with contextlib.suppress(OSError):
            path.unlink()  # still held: a waiter that opened this file finds it unlinked and retries
        lock.release()


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside `path` that replaces it in one step on success (nothing moves on an
    exception): a process killed at any moment leaves `path` as it was or complete, never a mix. The
    writer holds `path`'s lock (waiting for another writer), so every temporary folder beside `path` is a
    killed writer's and is removed first. Files get the umask's mode (libraries write some 0600)."""
    path, lock = Path(path), lock_path(path)
    held = str(lock) in _HELD  # by this process's command (`iis_hf.outputs.output_folder_lock`)
    with contextlib.nullcontext() if held else exclusive_lock(lock, f"pid {os.getpid()}", wait=True):
        remove_stale_folders(path)
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(path))
        if not overwrite and path.exists() and any(path.iterdir()):  # an empty folder holds nothing to lose
            raise FileExistsError(
                errno.EEXIST, "exists; pass overwrite=True or choose another folder", str(path)
            )
        tmp = Path(
            tempfile.mkdtemp(prefix=f".{path.name[:TEMPORARY_NAME_CHARS]}.", suffix=".tmp", dir=path.parent)
        )
        try:
            try:
                yield tmp
            except OSError as err:  # name the output, not the temporary folder (a full disk, say)
                written = err.filename is not None and os.path.abspath(os.fsdecode(err.filename))
                if written and Path(written).is_relative_to(os.path.abspath(tmp)):
                    raise OSError(err.errno, err.strerror, str(path)) from err
                raise
            os.chmod(tmp, DIR_MODE)
            for root, dirs, names in os.walk(tmp):
                for name in [*dirs, *names]:
                    if not os.path.islink(item := os.path.join(root, name)):
                        os.chmod(item, DIR_MODE if os.path.isdir(item) else FILE_MODE)
            _replace_folder(tmp, path)
            COMMITTED.append(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _replace_folder(new: Path, path: Path) -> None:
    """Put `new` in `path`'s place: one rename, or one exchange (`new` then holds the old content). With
    no exchange, two renames: a kill between leaves the old folder as `<new>.old.tmp`, put back later."""
    if not path.exists():
        os.rename(new, path)
    elif not _exchange(new, path):
        os.rename(path, old := Path(f"{new.with_suffix('')}.old.tmp"))
        try:
            os.rename(new, path)
        except BaseException:
            os.rename(old, path)
            raise
        os.rename(old, new)  # as after an exchange: `new` holds the old content


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where that is unsupported."""
    import ctypes

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if os.name == "posix" else None
    if renameat2 is not None and renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) == 0:
        return True  # -100: AT_FDCWD, 2: RENAME_EXCHANGE
    if renameat2 is None or (code := ctypes.get_errno()) in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def remove_stale_folders(path: str | os.PathLike) -> None:
    """Delete the temporary folders beside `path` (`.<name>.XXXXXXXX.tmp`, and the previous release's
    `.<name>.<host>-<pid>.XXXXXXXX.tmp`), holding `path`'s lock: no live writer has one. An old folder
    saved by an interrupted two-rename replacement is put back where `path` is missing."""
    name = re.escape((path := Path(path)).name[:TEMPORARY_NAME_CHARS])
    pattern = re.compile(rf"\.{name}\.(?:[0-9a-f]{{8}}-\d+\.)?[a-z0-9_]{{8}}(?P<old>\.old)?\.tmp")
    for item in sorted(path.parent.iterdir()):
        if (match := pattern.fullmatch(item.name)) is None or item.is_symlink() or not item.is_dir():
            continue
        if match["old"] and not path.exists():
            os.rename(item, path)
        else:
            shutil.rmtree(item, ignore_errors=True)


def remove_stale_temporaries(folder: str | os.PathLike, older_than_s: float) -> None:
    """Delete the temporary files (``.NAME.XXXX.tmp``) of writers killed before they renamed them, once
    older than `older_than_s`: a live writer sharing the folder renames its own within seconds."""
    for item in Path(folder).glob(".*.tmp"):
        with contextlib.suppress(OSError):  # removed by another process meanwhile
            if item.is_file() and item.stat().st_mtime < time.time() - older_than_s:
                item.unlink()
