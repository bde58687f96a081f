"""Where and with what a run ran: versions, machine, threads, the checkout's commit.

Written into every results.json so that a report can say how its numbers were produced.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path

import torch

from .data import ANIMAL_SHAPES_DISTRIBUTION

REPRODUCE_PACKAGES = (
    "iis-hf",
    "torch",
    "transformers",
    "datasets",
    "scikit-learn",
    "scipy",
    "numpy",
    ANIMAL_SHAPES_DISTRIBUTION,
)
PAPER_PACKAGES = (
    "torch",
    "transformers",
    "datasets",
    "accelerate",
    "scipy",
    "scikit-learn",
    "numpy",
    ANIMAL_SHAPES_DISTRIBUTION,
    "iis-hf",
)


def package_versions(names: Iterable[str], keep_missing: bool = False) -> dict[str, str | None]:
    """{distribution: version}; one not installed is left out (or None with `keep_missing`)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if keep_missing:
                out[name] = None
    return out


def code_revision(where: Path | None = None) -> dict:
    """The checkout's commit, and whether tracked files differ from it (read-only git queries);
    empty outside a git checkout. `where`: a folder of the checkout (default: this package's)."""
    here = where or Path(__file__).resolve().parent
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        return {"git_commit": commit, "git_dirty": bool(changes)}
    return {}


def environment() -> dict:
    """The reproduction's provenance block: commit, Python, machine, threads, device, versions."""
    return {
        **code_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": package_versions(REPRODUCE_PACKAGES),
    }


def versions() -> dict:
    """The paper re-test's provenance block: Python, platform and every package (None: missing)."""
    out: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    return out | package_versions(PAPER_PACKAGES, keep_missing=True)
