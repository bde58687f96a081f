"""iis-hf's progress bars and how talkative a run is: one place, following Hugging Face's conventions.

Every bar iis-hf draws (feature extraction, prototypes, text concepts, head training) comes from
`progress_bar`. A bar is shown unless one of these hides it:

- the caller's ``progress=False`` (``ScoringConfig.progress``, ``--no-progress``);
- the quiet verbosity (``--quiet``, `set_verbosity("quiet")`, the `verbosity` context manager);
- ``HF_HUB_DISABLE_PROGRESS_BARS=1`` or ``TQDM_DISABLE=1`` in the environment, or
  ``huggingface_hub.utils.disable_progress_bars("iis_hf")`` (iis-hf's bars form the hub's progress
  group ``"iis_hf"``, as peft's and datasets' do, so hub-wide switches cover them too).

A finished bar is left at its total ("1000/1000"), never erased half-drawn.

`set_verbosity` also sets the Hugging Face libraries the run uses: "quiet" hides their progress
bars (downloads, ``map``, Trainer) and their logs below errors; "verbose" shows their info logs;
"normal" leaves them as they are. This module imports nothing from iis_hf and loads tqdm and the
libraries only when a bar is drawn or a verbosity set, so the command line starts fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

VERBOSITIES = ("quiet", "normal", "verbose")
PROGRESS_GROUP = "iis_hf"  # the huggingface_hub progress-bar group of iis-hf's bars
# The libraries whose logs and bars follow the verbosity (each has get_verbosity / set_verbosity and
# is_progress_bar_enabled / enable_progress_bar / disable_progress_bar).
HF_LOGGING_MODULES = ("transformers.utils.logging", "datasets.utils.logging", "evaluate.utils.logging")
_TRUE = {"1", "true", "yes", "on"}

_level = "normal"


def get_verbosity() -> str:
    """The current verbosity: "quiet", "normal" or "verbose"."""
    return _level


def bars_enabled(enabled: bool = True) -> bool:
    """Whether an iis-hf bar the caller wants (`enabled`) is drawn now (see the module docstring)."""
    if not enabled or _level == "quiet":
        return False
    for variable in ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
        if os.environ.get(variable, "").strip().lower() in _TRUE:
            return False
    hub = sys.modules.get("huggingface_hub.utils")
    return hub is None or not hub.are_progress_bars_disabled(PROGRESS_GROUP)


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str,
    unit: str = "it",
    enabled: bool = True,
    **kwargs: Any,
):
    """A tqdm bar (``tqdm.auto``: a widget in notebooks) for iis-hf's work, hidden as described above.

    It stays on screen at its final count when it closes (``leave=True``): a bar erased on close
    shows, in a log, its last refresh before the end (e.g. "992/1000") as if the work had stopped.
    Use it as tqdm: iterate it, or ``with progress_bar(total=n, ...) as bar: bar.update(k)``.
    """
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", True)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not bars_enabled(enabled), **kwargs)


def set_verbosity(level: str) -> None:
    """Set iis-hf's verbosity and the Hugging Face libraries' ("normal" leaves theirs untouched).

    "quiet": no iis-hf bars, no huggingface_hub / transformers / datasets / evaluate bars, and their
    logs at error level only. "verbose": their logs at info level. Use `verbosity` to restore the
    previous state afterwards.
    """
    global _level
    if level not in VERBOSITIES:
        raise ValueError(f"verbosity must be one of {', '.join(VERBOSITIES)}, got {level!r}")
    _level = level
    if level == "normal":
        return
    import importlib
    import logging

    for name in HF_LOGGING_MODULES:
        module = importlib.import_module(name)
        module.set_verbosity(logging.ERROR if level == "quiet" else logging.INFO)
        if level == "quiet":
            module.disable_progress_bar()
    if level == "quiet":
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


@contextlib.contextmanager
def verbosity(level: str) -> Iterator[None]:
    """`set_verbosity(level)` for a block; the previous verbosity, log levels and bars come back after."""
    global _level
    if level not in VERBOSITIES:
        raise ValueError(f"verbosity must be one of {', '.join(VERBOSITIES)}, got {level!r}")
    saved_level = _level
    saved = _save_libraries() if level != "normal" else None
    try:
        set_verbosity(level)
        yield
    finally:
        _level = saved_level
        if saved is not None:
            _restore_libraries(saved)


def _save_libraries() -> dict[str, Any]:
    import importlib

    from huggingface_hub.utils import are_progress_bars_disabled

    saved: dict[str, Any] = {"huggingface_hub": are_progress_bars_disabled()}
    for name in HF_LOGGING_MODULES:
        module = importlib.import_module(name)
        saved[name] = (module.get_verbosity(), module.is_progress_bar_enabled())
    return saved


def _restore_libraries(saved: dict[str, Any]) -> None:
    import importlib

    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    for name in HF_LOGGING_MODULES:
        module = importlib.import_module(name)
        level, bars = saved[name]
        module.set_verbosity(level)
        (module.enable_progress_bar if bars else module.disable_progress_bar)()
    # Last: the libraries' switches above also flip the hub's global state.
    (disable_progress_bars if saved["huggingface_hub"] else enable_progress_bars)()
