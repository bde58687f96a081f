"""The research code lives beside the package: not importable from iis_hf, not in its wheel."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from research.conftest import RESEARCH

REPO = Path(__file__).resolve().parents[2]


def test_the_experiments_are_not_part_of_iis_hf():
    done = subprocess.run([sys.executable, "-c", "import iis_hf.experiments"], capture_output=True, text=True)
    assert done.returncode != 0 and "No module named 'iis_hf.experiments'" in done.stderr, done.stderr


def test_the_wheel_holds_the_library_only(tmp_path):
    pytest.importorskip("setuptools", reason="builds the wheel without network: needs setuptools in the venv")
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
        str(REPO),
    ]
    subprocess.run(command, check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("iis_hf-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"iis_hf", wheel.name.split("-py")[0] + ".dist-info"}
    assert not [name for name in names if "iis_paper" in name or "experiments" in name or "research" in name]


def test_the_research_code_imports_no_private_name_of_iis_hf():
    """It imports iis_hf's public modules and names only, so it uses the library as a user would."""
    private = []
    for path in sorted(RESEARCH.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("iis_hf"):
                parts = node.module.split(".") + [alias.name for alias in node.names]
                private += [f"{path.name}:{node.lineno} {node.module}" for p in parts if p.startswith("_")]
    assert not private, private
