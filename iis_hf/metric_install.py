"""Register the IIS `evaluate` module so that ``evaluate.load("iis")`` works offline, from any folder.

``evaluate.load("iis")`` first looks for ``./iis/iis.py``, then for the Hub Space
``evaluate-metric/iis``, and when that fails (offline with ``HF_EVALUATE_OFFLINE=1``, no network, or
no such Space) it falls back to its module cache (``CachedEvaluationModuleFactory`` in
``evaluate/loading.py``)::

    $HF_MODULES_CACHE/                          __init__.py
      evaluate_modules/                         __init__.py
        metrics/                                __init__.py
          evaluate-metric--iis/                 __init__.py
            <sha256 of iis.py, 64 hex>/         __init__.py, iis.py, iis.json

and imports ``evaluate_modules.metrics.evaluate-metric--iis.<hash>.iis``; when several hash folders
exist, the one whose ``iis.py`` is newest wins. `install_metric` writes exactly that layout, the way
evaluate itself would after a successful Hub download, from the copy of ``metrics/iis/iis.py`` that
ships inside this package (``iis_hf.evaluate_metric``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import IISError

METRIC_NAME = "iis"
# evaluate tries the namespaces evaluate-metric, evaluate-comparison, evaluate-measurement for a bare
# name; "evaluate-metric--iis" is the first one its cache fallback looks for.
CACHE_NAMESPACE = "evaluate-metric"


def metric_path() -> Path:
    """The folder holding ``iis.py`` (``metrics/iis`` in a checkout, ``iis_hf/evaluate_metric`` in a wheel)."""
    spec = importlib.util.find_spec("iis_hf.evaluate_metric")
    if spec is None or not spec.submodule_search_locations:
        raise IISError(
            "the IIS evaluate module (package iis_hf.evaluate_metric) is not installed: reinstall iis-hf"
        )
    for location in spec.submodule_search_locations:
        folder = Path(location)
        if (folder / f"{METRIC_NAME}.py").is_file():
            return folder
    raise IISError(
        f"no {METRIC_NAME}.py in {list(spec.submodule_search_locations)}: the iis-hf installation is incomplete"
    )


def load_metric(config_name: str | None = None, **kwargs):
    """``evaluate.load`` of this installation's IIS module, by its path: no network, no cache, no warning.

    Loading by path is the one way evaluate neither asks the Hub nor logs "Using the latest cached
    version of the module ... since it couldn't be found locally at evaluate-metric--iis, or remotely on
    the Hugging Face Hub" (what ``evaluate.load("iis")`` logs offline after `install_metric`, at
    WARNING level, whatever ``HF_EVALUATE_OFFLINE`` says). `config_name` is "default", "classifier" or
    "representations"; `kwargs` go to ``evaluate.load`` (``sparsity_ratios=``, ``cache_dir=``, ...).
    """
    import evaluate

    return evaluate.load(str(metric_path() / f"{METRIC_NAME}.py"), config_name, **kwargs)


def _module_hash(script: Path) -> str:
    """The folder name evaluate gives this script: sha256 of its lines without comments."""
    from evaluate.loading import files_to_hash

    return files_to_hash([str(script)])


def _touch_init(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    init = folder / "__init__.py"
    if not init.exists():
        init.touch()


def install_metric(modules_cache: str | os.PathLike | None = None) -> Path:
    """Copy ``iis.py`` into evaluate's module cache so ``evaluate.load("iis")`` resolves offline.

    Args:
        modules_cache: the ``HF_MODULES_CACHE`` folder to install into. Defaults to the one evaluate
            uses in this process (``$HF_MODULES_CACHE``, else ``~/.cache/huggingface/modules``).

    Returns:
        The path of the installed ``iis.py``.

    The hash folder is written under a temporary name and renamed into place, so a crash never leaves
    a half-written module that evaluate would pick up. Installing again is harmless: an identical copy
    is kept and only its modification time is refreshed, so it is the one evaluate picks even when an
    older or newer version was installed in between.
    """
    from evaluate import config as evaluate_config

    source = metric_path() / f"{METRIC_NAME}.py"
    cache = Path(
        modules_cache if modules_cache is not None else evaluate_config.HF_MODULES_CACHE
    ).expanduser()
    dynamic = cache / evaluate_config.MODULE_NAME_FOR_DYNAMIC_MODULES
    module_dir = dynamic / "metrics" / f"{CACHE_NAMESPACE}--{METRIC_NAME}"
    for folder in (cache, dynamic, dynamic / "metrics", module_dir):
        _touch_init(folder)

    digest = _module_hash(source)
    target = module_dir / digest
    installed = target / f"{METRIC_NAME}.py"
    if not (installed.is_file() and installed.read_bytes() == source.read_bytes()):
        staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}.", dir=module_dir))
        try:
            (staging / "__init__.py").touch()
            shutil.copyfile(source, staging / f"{METRIC_NAME}.py")
            meta = {"original file path": str(source), "local file path": str(installed)}
            (staging / f"{METRIC_NAME}.json").write_text(json.dumps(meta), encoding="utf-8")
            if target.exists():  # a broken or foreign copy under our hash: replace it
                shutil.rmtree(target)
            try:
                os.replace(staging, target)
            except OSError:
                if not (installed.is_file() and installed.read_bytes() == source.read_bytes()):
                    raise  # not a concurrent install of the same file
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    os.utime(installed)  # newest mtime wins among the cached versions
    importlib.invalidate_caches()
    return installed
