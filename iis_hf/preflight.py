"""Checks that run before any work: the paths, device and model a command was given.

`iis-hf score`, `demo` and `explain` call these before the first image is decoded, so a run that
cannot finish stops at once, with one line naming the argument and the fix, and writes nothing: an
output folder that is a file, read-only, on a full disk, named too long for the file system, already
there (without ``--overwrite``) or one of the command's own inputs; a cache folder it cannot write; a
device this machine does not have; a model folder whose config or weights are damaged, or whose image
processor asks for images over `MAX_PROCESSOR_SIDE` px a side. Every check raises `PreflightError`, a
ValueError. Checks that write (a probe file, to learn whether a folder takes files) leave nothing behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .devices import resolve_device
from .errors import first_line
from .reading import describe_os_error, read_json, resolve_inside

MIN_FREE_BYTES = 1 << 20  # a file system with less than this free is full for our purposes
# config.json entries that must be positive integers (or lists of them) when a model's config sets them.
POSITIVE_INT_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "image_size",
    "patch_size",
    "num_channels",
    "embedding_size",
    "embed_dim",
)
POSITIVE_INT_LIST_KEYS = ("hidden_sizes", "depths", "num_heads")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
# The largest side (px) an image processor may resize or crop to: one image of 100000 x 100000 px is
# 120 GB as float32 RGB, a MemoryError (or the OOM killer) before the first feature. Models use 224-1024.
MAX_PROCESSOR_SIDE = 8192
PROCESSOR_SIZE_KEYS = ("size", "crop_size")


class PreflightError(ValueError):
    """A problem found before any work started; reported as one line (exit code 2 on the command line)."""


# ---------------------------------------------------------------------------- path arguments
def path_argument(value: Any, flag: str) -> Path:
    """`value` as a Path, refusing an empty one (which would mean the current folder) or a NUL byte."""
    if value is None or not str(value).strip():
        raise PreflightError(f"{flag} is empty; give a path")
    if "\x00" in str(value):
        raise PreflightError(f"{flag} {value!r} contains a NUL byte; give a path")
    return Path(os.path.expanduser(str(value)))


def is_read_only(path: Path) -> bool:
    """No write permission for us, or (for root, who may write anyway) no write bit at all: the owner
    marked it read-only, and iis-hf respects that."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not os.access(path, os.W_OK) or not mode & 0o222


def existing_ancestor(path: Path) -> Path:
    """The nearest of `path` and its parents that exists (where a missing folder would be created)."""
    path = Path(os.path.abspath(path))
    while path != path.parent:
        try:
            if path.exists():
                break
        except OSError:  # a name too long for the file system
            pass
        path = path.parent
    return path


def check_name_lengths(path: Path, flag: str) -> None:
    """Every component of `path`, and the whole, within what the file system takes (ENAMETOOLONG)."""
    base = existing_ancestor(path)
    try:
        name_max = os.pathconf(base, "PC_NAME_MAX")
        path_max = os.pathconf(base, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        name_max, path_max = 255, 4096
    for part in Path(os.path.abspath(path)).parts:
        if len(os.fsencode(part)) > name_max:
            raise PreflightError(
                f"{flag} {str(path)!r}: the name {part[:40]!r}... is {len(os.fsencode(part))} bytes, longer than "
                f"the file system takes ({name_max}); use a shorter name"
            )
    if len(os.fsencode(os.path.abspath(path))) >= path_max:
        raise PreflightError(f"{flag} {str(path)!r} is longer than the file system takes ({path_max} bytes)")


def check_writable_folder(folder: Path, flag: str, shown: Path) -> None:
    """`folder` (an existing folder) takes new files: permission, free space, and a probe file."""
    if is_read_only(folder):
        where = "is read-only" if folder == shown else f"cannot be created: {str(folder)!r} is read-only"
        raise PreflightError(f"{flag} {str(shown)!r} {where}; make it writable or choose another folder")
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < MIN_FREE_BYTES:
        raise PreflightError(
            f"{flag} {str(shown)!r}: no space left on the device holding {str(folder)!r} ({free} bytes free); "
            "free some space, or choose another folder"
        )
    try:
        fd, name = tempfile.mkstemp(prefix=".iis-hf-probe.", suffix=".tmp", dir=folder)
        try:
            os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as err:
        raise PreflightError(f"{flag}: {describe_os_error(err, 'cannot write in folder')}") from None


def _real(path: Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def _local_inputs(inputs: Mapping[str, Any]) -> list[tuple[str, Path]]:
    """The inputs that are local files or folders: the existing ones among names that may also be Hub
    ids (str), and every `Path` (always local, e.g. a cache folder created later). Unset ones are left out."""
    found = []
    for flag, value in inputs.items():
        if value is None or not str(value).strip():
            continue
        path = Path(os.path.expanduser(str(value)))
        try:
            if isinstance(value, Path) or path.exists():
                found.append((flag, _real(path)))
        except OSError:  # a name the file system cannot hold is no local input
            pass
    return found


def check_not_an_input(path: Path, flag: str, inputs: Mapping[str, Any], kind: str) -> None:
    """An output must be none of the inputs, contain none of them and lie inside none of them."""
    target = _real(path)
    for input_flag, source in _local_inputs(inputs):
        if target == source:
            raise PreflightError(
                f"{flag} {str(path)!r} is the {input_flag} input; writing it would destroy the input: "
                f"choose another {kind}"
            )
        if source.is_relative_to(target):
            raise PreflightError(
                f"{flag} {str(path)!r} contains the {input_flag} input {str(source)!r}; replacing it would "
                f"destroy the input: choose another {kind}"
            )
        if (source.is_dir() or not source.exists()) and target.is_relative_to(source):
            raise PreflightError(
                f"{flag} {str(path)!r} is inside the {input_flag} folder {str(source)!r}; iis-hf never writes "
                f"into its inputs: choose a {kind} outside it"
            )


# ---------------------------------------------------------------------------- outputs
def check_output_folder(
    value: Any,
    flag: str,
    *,
    inputs: Mapping[str, Any] = {},
    overwrite: bool = False,
    ours: Callable[[str], bool] = lambda name: False,
) -> Path:
    """An output folder the command can create or replace (see the module docstring); returns it.

    An existing folder is replaced only with `overwrite`, and only when it holds nothing but what
    iis-hf writes there (`ours(name)` for each entry), so no option ever deletes a user's own files.
    """
    path = path_argument(value, flag)
    check_name_lengths(path, flag)
    if path.exists() and not path.is_dir():
        raise PreflightError(f"{flag} {str(path)!r} is a file, not a folder; choose a folder name")
    check_not_an_input(path, flag, inputs, "folder")
    if Path.cwd().resolve().is_relative_to(_real(path)):
        raise PreflightError(
            f"{flag} {str(path)!r} is the current folder or holds it; an output folder is replaced as a whole: "
            "choose a new sub-folder"
        )
    if path.is_dir():
        entries = sorted(p.name for p in path.iterdir())
        if entries and not overwrite:
            raise PreflightError(
                f"{flag} {str(path)!r} exists; pass --overwrite to replace it, or choose another folder"
            )
        foreign = [name for name in entries if not ours(name)]
        if foreign:
            raise PreflightError(
                f"{flag} {str(path)!r} holds files iis-hf did not write ({', '.join(foreign[:5])}"
                f"{', ...' if len(foreign) > 5 else ''}); --overwrite replaces only an iis-hf output folder: "
                "choose another folder"
            )
        if entries and any(is_read_only(p) for p in (path, *path.rglob("*")) if p.is_dir()):
            raise PreflightError(
                f"{flag} {str(path)!r} is read-only; make it writable or choose another folder"
            )
    check_writable_folder(existing_ancestor(path.parent), flag, path)
    return path


def check_output_file(
    value: Any, flag: str, *, inputs: Mapping[str, Any] = {}, suffixes: tuple[str, ...] = (".png",)
) -> Path:
    """A file the command can write: not a folder, a suffix it writes, none of the inputs, writable."""
    path = path_argument(value, flag)
    check_name_lengths(path, flag)
    if path.is_dir() or str(value).endswith(("/", os.sep)):
        raise PreflightError(
            f"{flag} {str(path)!r} is a folder; name a file, e.g. {str(path / 'figure.png')!r}"
        )
    if path.suffix.lower() not in suffixes:
        raise PreflightError(
            f"{flag} {str(path)!r}: the figure is written as {suffixes[0][1:].upper()}, so the file name must end "
            f"in {' or '.join(suffixes)} (got {path.suffix or 'no extension'!r})"
        )
    check_not_an_input(path, flag, inputs, "file name")
    if path.exists() and is_read_only(path):
        raise PreflightError(f"{flag} {str(path)!r} is read-only; make it writable or choose another file")
    check_writable_folder(existing_ancestor(path.parent), flag, path)
    return path


def check_cache_dir(value: Any, flag: str = "--cache-dir") -> Path | None:
    """A cache folder the run can read and write (created later, by the first chunk written)."""
    if value is None:
        return None
    path = path_argument(value, flag)
    check_name_lengths(path, flag)
    if path.exists() and not path.is_dir():
        raise PreflightError(f"{flag} {str(path)!r} is a file, not a folder; choose a folder")
    check_writable_folder(existing_ancestor(path), flag, path)
    return path


# ---------------------------------------------------------------------------- devices and models
def check_device(value: Any, flag: str = "--device") -> None:
    try:
        resolve_device(value)
    except ValueError as err:
        raise PreflightError(f"{flag}: {err}") from None


def check_model_folder(value: Any, flag: str = "--model") -> None:
    """A local model folder's config.json, image processor size and safetensors weights are sound.

    Hub ids and missing folders are left to the loader (which names them); weights in other formats
    are left to transformers, whose failure `model_loading` reports in one line.
    """
    folder = Path(os.path.expanduser(str(value)))
    if not folder.is_dir() or not (folder / "config.json").exists():
        return
    config = read_json(folder / "config.json", f"{flag} config")
    _check_config(config, folder / "config.json", flag)
    processor_config = folder / "preprocessor_config.json"
    if processor_config.is_file():
        settings = read_json(processor_config, f"{flag} image processor config")
        check_processor_size(settings, f"{flag}: {processor_config}: the image processor's")
    index = folder / "model.safetensors.index.json"
    shards = [folder / "model.safetensors"] if (folder / "model.safetensors").exists() else []
    if index.exists():
        weight_map = read_json(index, f"{flag} weights index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise PreflightError(
                f"{flag}: {index} has no 'weight_map'; re-save the model with save_pretrained()"
            )
        shards += [
            resolve_inside(folder, name, f"{flag} weights index") for name in sorted(set(weight_map.values()))
        ]
    for shard in shards:
        _check_safetensors_header(shard, flag)


def _check_config(config: dict, path: Path, flag: str, where: str = "") -> None:
    if not where and is_timm_config(config):  # transformers' TimmWrapper reads it, when timm is there
        check_timm_installed(f"{flag} {path.parent}")
        return
    if not where and not (isinstance(config.get("model_type"), str) and config["model_type"]):
        raise PreflightError(
            f"{flag}: {path} has no 'model_type' (found keys {sorted(config)[:8]}); it is not a transformers "
            "model config: re-save the model with save_pretrained()"
        )
    for key in (*POSITIVE_INT_KEYS, *POSITIVE_INT_LIST_KEYS):
        value = config.get(key)
        if value is not None and not _positive_ints(value):
            raise PreflightError(
                f"{flag}: {path}: '{where}{key}' must be a positive integer (or a list of them), got {value!r}; "
                "the config is damaged"
            )
    for key, value in config.items():
        if key.endswith("_config") and isinstance(value, dict):
            _check_config(value, path, flag, where=f"{where}{key}.")


TIMM_MESSAGE = "this is a timm checkpoint: pip install timm"


def is_timm_config(config: Any) -> bool:
    """Whether a config.json is in the layout of the Hub's `timm/` models: no `model_type`, and
    timm's `architecture` or `pretrained_cfg` (transformers then loads it as `TimmWrapperModel`)."""
    if not isinstance(config, Mapping) or config.get("model_type"):
        return False
    return "pretrained_cfg" in config or isinstance(config.get("architecture"), str)


def timm_installed() -> bool:
    """Whether timm imports here (it needs torchvision, which a CPU-only torch may lack)."""
    import importlib

    try:
        importlib.import_module("timm")
    except Exception:  # any failure to import means transformers cannot use it
        return False
    return True


def check_timm_installed(what: str) -> None:
    """Say in one line that a timm checkpoint needs timm, instead of transformers' ImportError."""
    if not timm_installed():
        raise PreflightError(f"{what}: {TIMM_MESSAGE}")


def check_processor_size(processor: Any, where: str = "the image processor's") -> None:
    """Refuse an image processor (or its saved config) whose size or crop size is over
    `MAX_PROCESSOR_SIDE` px a side: resizing one image to it would exhaust memory."""
    to_dict = getattr(processor, "to_dict", None)
    settings = processor if isinstance(processor, Mapping) else to_dict() if callable(to_dict) else {}
    for key in PROCESSOR_SIZE_KEYS:
        value = settings.get(key) if isinstance(settings, Mapping) else None
        sides = _sides(value)
        if sides and max(sides) > MAX_PROCESSOR_SIDE:
            raise PreflightError(
                f"{where} {key} {value!r} asks for images of {max(sides)} px a side, over the limit of "
                f"{MAX_PROCESSOR_SIDE} px; set {key!r} to the model's input size (e.g. 224)"
            )


def _sides(value: Any) -> list[float]:
    """The numbers of a processor size: an int, a list of them, or a dict (height, width, shortest_edge...)."""
    if isinstance(value, Mapping):
        value = list(value.values())
    values = value if isinstance(value, (list, tuple)) else [value]
    return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _positive_ints(value: Any) -> bool:
    """A positive int, or a non-empty list of them (sizes per stage, (height, width), ...)."""
    if isinstance(value, list):
        return bool(value) and all(_positive_ints(v) for v in value if not isinstance(v, list))
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_safetensors_header(path: Path, flag: str) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = first_line(err)
        raise PreflightError(
            f"{flag}: {path} is truncated or not a safetensors file ({reason}); re-download or re-save the model"
        ) from None


@contextlib.contextmanager
def model_loading(name: Any, flag: str = "--model") -> Iterator[None]:
    """Load a model inside this block: a failure becomes one PreflightError naming it, and transformers'
    log lines are held back (shown after a success; summarised in the error after a failure)."""
    with held_transformers_logs() as held:
        try:
            yield
        except ValueError:
            raise  # iis-hf's and transformers' own messages name the model already
        except Exception as err:  # transformers, torch and safetensors raise many types for a bad folder
            if not _expected_load_error(err):
                raise
            raise PreflightError(
                f"cannot load the model {str(name)!r} ({flag}): {_load_reason(err, held, name)}"
            ) from err


class _Hold(logging.Handler):
    """On transformers' handlers, as their filter (anything with a `filter` method is one): keep each
    record instead of printing it; as a handler of its own: keep it."""

    def __init__(self, held: list[logging.LogRecord]) -> None:
        logging.Handler.__init__(self)
        self.held = held

    def filter(self, record: logging.LogRecord) -> bool:
        if not any(record is r for r in self.held):
            self.held.append(record)
        return False

    def emit(self, record: logging.LogRecord) -> None:
        self.filter(record)


@contextlib.contextmanager
def held_transformers_logs() -> Iterator[list[logging.LogRecord]]:
    """Hold transformers' log records while the block runs; pass on, after a success, those the
    verbosity would have shown. The load report (e.g. which weights do not fit the config) is logged at
    warning level: it is heard even under a quieter verbosity, so a failure can be explained."""
    from transformers.utils import logging as transformers_logging

    logger = transformers_logging.get_logger("transformers")  # configures its default handler first
    held: list[logging.LogRecord] = []
    hold = _Hold(held)
    own_level, level = logger.level, logger.getEffectiveLevel()
    logger.setLevel(min(level, logging.WARNING))
    handlers = logger.handlers[:]
    for handler in handlers:
        handler.addFilter(hold)  # transformers may re-add its default handler while loading: filter it
    logger.addHandler(hold)
    failed = True
    try:
        yield held
        failed = False
    finally:
        logger.removeHandler(hold)
        logger.setLevel(own_level)
        for handler in {*handlers, *logger.handlers}:
            handler.removeFilter(hold)
        if not failed:
            for record in held:
                if record.levelno >= level:
                    logger.handle(record)


# What a damaged or foreign model folder makes transformers, torch and safetensors raise (by name:
# SafetensorError and pickle's UnpicklingError are not imported here).
EXPECTED_LOAD_ERRORS = (
    "ValueError", "OSError", "RuntimeError", "TypeError", "KeyError", "EOFError", "RecursionError",
    "SafetensorError", "UnpicklingError",
)  # fmt: skip


def _expected_load_error(err: BaseException) -> bool:
    return any(cls.__name__ in EXPECTED_LOAD_ERRORS for cls in type(err).__mro__)


def _load_reason(err: BaseException, held: list[logging.LogRecord], name: Any) -> str:
    text = "\n".join(_plain(record.getMessage()) for record in held)
    mismatched = re.findall(
        r"^(\S+)\s*\|\s*MISMATCH\s*\|.*?ckpt: torch\.Size\(\[([\d, ]*)\]\) vs model:\s*torch\.Size\(\[([\d, ]*)\]\)",
        text,
        flags=re.MULTILINE,
    )
    if mismatched:
        key, saved, expected = mismatched[0]
        return (
            f"its weights do not fit its config.json ({len(mismatched)} tensor group(s) differ, e.g. {key}: "
            f"[{saved}] in the weights, [{expected}] from the config); the config was edited or belongs to "
            "other weights"
        )
    folder = Path(os.path.expanduser(str(name)))
    weights = (
        sorted(p.name for p in folder.glob("*") if p.suffix in WEIGHT_SUFFIXES) if folder.is_dir() else []
    )
    if type(err).__name__ == "UnpicklingError":
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        return (
            f"its weights{f' ({weights[0]})' if weights else ''} are a pickle that torch.load(weights_only=True) "
            f"refuses{f' (it would call {found.group(1)})' if found else ''}; iis-hf never runs code from a "
            "weights file: get the model's safetensors weights from a source you trust"
        )
    return first_line(err, _plain(str(err))) + (f" (weights: {', '.join(weights[:4])})" if weights else "")


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
