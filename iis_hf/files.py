"""Safe, atomic file handling for everything iis-hf writes or reads.

Two rules hold everywhere: an output appears complete or not at all (write to a temporary name in
the same folder, then `os.replace`), and only safetensors and JSON are read (never pickles).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import first_line

PICKLE_SUFFIXES = (".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt")


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_current_umask()  # what open() would give; mkstemp alone gives 0600
DIR_MODE = 0o777 & ~_current_umask()  # what mkdir() would give; mkdtemp alone gives 0700
# Temporary names are `.<start of the name>.<tag>.<random>.tmp`: the name is cut to this many
# characters, so a temporary name is never too long for the file system when the real one fits.
TEMPORARY_NAME_CHARS = 100
# A temporary output folder whose writer cannot be seen to be alive (another machine sharing the file
# system) is removed once it is this old; one of a dead process on this machine at once.
STALE_OUTPUT_AGE_S = 3600.0


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    with temporary_sibling(path) as tmp:
        with naming_the_file(path):
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
        with naming_the_file(path):
            save_file(tensors, str(tmp), metadata={"format": "pt", **(metadata or {})})
        os.chmod(tmp, FILE_MODE)  # safetensors >= 0.7 writes a new file of mode 0600 over ours
        os.replace(tmp, path)


@contextlib.contextmanager
def naming_the_file(path: str | os.PathLike) -> Iterator[None]:
    """A failed write names the file it was writing: an OSError without a file name (what `write`
    raises on a full disk) and safetensors' "Error while serializing: I/O error: No space left on
    device (os error 28)" become an OSError of that error number naming `path`."""
    try:
        yield
    except SafetensorError as err:
        code = re.search(r"\(os error (\d+)\)", str(err))
        if code is None:
            raise
        raise OSError(int(code[1]), os.strerror(int(code[1])), os.fspath(path)) from err
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, os.fspath(path)) from err


@contextlib.contextmanager
def temporary_sibling(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f".{path.name[:TEMPORARY_NAME_CHARS]}.", suffix=".tmp", dir=path.parent
    )
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, FILE_MODE)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` in one step.

    A new `path` appears in one rename; an existing one (`overwrite=True`) is exchanged with the new
    folder in one `renameat2(RENAME_EXCHANGE)` and the old content is then deleted. A process killed at
    any moment therefore leaves `path` either as it was or complete, never a mix of both. On an exception
    nothing is moved. Temporary folders left beside `path` by killed writers are removed first
    (`remove_stale_folders`); every file is given the mode the umask gives (libraries write some 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_folders(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(path))
    if not overwrite and _has_content(path):
        raise FileExistsError(errno.EEXIST, "exists; pass overwrite=True or choose another folder", str(path))
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        try:
            yield tmp
        except OSError as err:  # name the output, not the temporary folder (a full disk, say)
            written = err.filename is not None and os.path.abspath(os.fsdecode(err.filename))
            if written and Path(written).is_relative_to(os.path.abspath(tmp)):
                raise OSError(err.errno, err.strerror, str(path)) from err
            raise
        normalise_modes(tmp)
        if not path.exists():
            with contextlib.suppress(FileExistsError, OSError):
                os.rename(tmp, path)  # atomic; fails if another process created `path` meanwhile
                COMMITTED.append(path)
                return
        if not overwrite and _has_content(path):  # created by another process meanwhile
            raise FileExistsError(
                errno.EEXIST, "exists; pass overwrite=True or choose another folder", str(path)
            )
        _replace_folder(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _has_content(path: Path) -> bool:
    """Whether `path` exists and is not an empty folder (an empty folder holds nothing to lose)."""
    if not path.exists():
        return False
    return not path.is_dir() or any(path.iterdir())


COMMITTED: list[Path] = []  # the folders `atomic_directory` has put in place in this process


def _host_tag() -> str:
    """Which process on which machine writes a temporary folder: `<hash of the host name>-<pid>`."""
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
    return f"{host}-{os.getpid()}"


def _temporary_prefix(path: Path) -> str:
    return f".{path.name[:TEMPORARY_NAME_CHARS]}.{_host_tag()}."


def normalise_modes(folder: Path) -> None:
    """Give every file and folder under `folder` (and itself) the mode open() and mkdir() would give.

    For folders written by libraries that create private files (safetensors >= 0.7 writes 0600, so does
    transformers' `save_pretrained` through it): call it on what they wrote before publishing it.
    """
    os.chmod(folder, DIR_MODE)
    for root, dirs, names in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), DIR_MODE)
        for name in names:
            item = os.path.join(root, name)
            if not os.path.islink(item):
                os.chmod(item, FILE_MODE)


def _replace_folder(new: Path, path: Path) -> None:
    """Put `new` in the place of the existing folder `path` (then delete the old content)."""
    if _exchange(new, path):  # `new` now holds the old content
        COMMITTED.append(path)
        shutil.rmtree(new, ignore_errors=True)
        return
    # No atomic exchange here (not Linux, or a file system without it): two renames. A process killed
    # between them leaves the old folder under the temporary name `.<name>.<tag>.old.tmp`, which the
    # next writer of `path` renames back (`remove_stale_folders`).
    old = Path(tempfile.mkdtemp(prefix=_temporary_prefix(path), suffix=".old.tmp", dir=path.parent))
    os.rmdir(old)
    os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        raise
    COMMITTED.append(path)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where that is unsupported."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def remove_stale_folders(path: str | os.PathLike, older_than_s: float = STALE_OUTPUT_AGE_S) -> list[str]:
    """Delete the temporary folders that killed writers of `path` left beside it; returns their names.

    A folder written by a process of this machine that has exited goes at once; one whose writer runs
    on another machine (a shared file system: its process cannot be checked), or one of an older release
    (`.<name>.XXXXXXXX.tmp`), once it is `older_than_s` old; a live writer's folder is never touched. An
    old folder saved by an interrupted two-rename replacement (`.old.tmp`) is renamed back to `path`
    when `path` is missing.
    """
    path = Path(path)
    pattern = re.compile(
        rf"\.{re.escape(path.name[:TEMPORARY_NAME_CHARS])}\."
        r"(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.)?[a-z0-9_]{8}(?P<old>\.old)?\.tmp"
    )
    here = _host_tag().split("-")[0]
    removed: list[str] = []
    try:
        candidates = sorted(path.parent.iterdir())
    except OSError:
        return removed
    for item in candidates:
        match = pattern.fullmatch(item.name)
        if match is None:
            continue
        try:
            if item.is_symlink() or not item.is_dir():
                continue
            if match["host"] == here:
                stale = not _process_alive(int(match["pid"]))
            else:
                stale = time.time() - item.stat().st_mtime > older_than_s
            if not stale:
                continue
            if match["old"] and not path.exists():
                os.rename(item, path)
                continue
            shutil.rmtree(item)
            removed.append(item.name)
        except OSError:  # removed by another process meanwhile
            pass
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


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


def remove_stale_temporaries(folder: str | os.PathLike, older_than_s: float) -> list[str]:
    """Delete the temporary files (``.NAME.XXXX.tmp``) of writers killed before they renamed them.

    Only files older than `older_than_s` go: a live writer (another process sharing the folder)
    renames its temporary file within seconds, so it is never touched. Returns the names removed.
    """
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


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, holder: str) -> Iterator[Path]:
    """Hold the lock file `path` (`flock`, released by the kernel when the process dies, so a killed
    holder never leaves a stale lock); a FileExistsError naming the holder when another process has it.

    The lock file holds the holder's description (`holder`: what runs, with its pid) for the message.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 4096).decode("utf-8", errors="replace").strip() or "another process"
            os.close(fd)
            raise FileExistsError(errno.EEXIST, f"held by {other}", str(path)) from None
        try:  # the holder before us may have deleted the file after we opened it: lock the live one
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, holder.encode("utf-8"))
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def link_tree(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Copy a file or folder as hard links (instant, no extra space; a full copy where links are refused), so
    that the copy survives the original's deletion and the original stays whole until then."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if Path(source).is_dir() and not Path(source).is_symlink():
        shutil.copytree(source, destination, copy_function=link_or_copy, symlinks=True)
    elif Path(source).is_symlink():
        os.symlink(os.readlink(Path(source)), destination)
    else:
        link_or_copy(os.fspath(source), os.fspath(destination))
