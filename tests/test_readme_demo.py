"""README's demo table: well-formed, self-consistent, and equal to the saved output of the run that
wrote it (`python benchmarks/readme_demo.py --write`).

These tests never run the demo (minutes); `python benchmarks/readme_demo.py --check` compares README
with a fresh run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from iis_hf.config import DEFAULT_SPARSITY_RATIOS
from iis_hf.errors import IISError
from iis_hf.score import inherent_interpretability_score

REPO = Path(__file__).resolve().parents[1]
ROWS = [f"{r:.2f}" for r in DEFAULT_SPARSITY_RATIOS] + ["A0", "IIS", "95% CI"]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_demo", REPO / "benchmarks" / "readme_demo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


readme_demo = _load_script()


@pytest.fixture(scope="module")
def block() -> tuple[str, str]:
    return readme_demo.readme_block((REPO / "README.md").read_text())


def test_readme_block_has_the_markers_a_table_and_a_timing_sentence(block):
    table, sentence = block
    assert table.splitlines()[0].split() == ["sparsity", "trained", "random-init"]
    assert list(readme_demo.parse_table(table)) == ROWS  # 11 rows, each number parses
    assert " s of wall time" in sentence and "-core " in sentence and "load average" in sentence


def test_readme_iis_is_the_integral_of_its_column_over_the_published_grid(block):
    """Each A(rho) is printed to 4 decimals (error <= 5e-5, the grid's width 0.98 times that over
    A0) and so is IIS: the integral of the printed cells is within 1e-4 of the printed IIS."""
    rows = readme_demo.parse_table(block[0])
    for j in range(2):
        accuracies = [rows[f"{r:.2f}"][j][0] for r in DEFAULT_SPARSITY_RATIOS]
        a0, iis = rows["A0"][j][0], rows["IIS"][j][0]
        assert abs(inherent_interpretability_score(DEFAULT_SPARSITY_RATIOS, accuracies, a0) - iis) <= 1e-4
        low, high = rows["95% CI"][j]
        assert low <= iis <= high


def test_readme_table_equals_the_saved_output_of_the_run_that_wrote_it(block):
    """README edited by hand (or a table from another run pasted in) fails here; rerun `--write`."""
    saved = readme_demo.extract_table(readme_demo.SAVED_OUTPUT.read_text())
    assert readme_demo.differences(block[0], saved) == []
    assert block[0] == saved


def test_a_changed_cell_is_reported_once_and_a_tolerance_absorbs_it(block):
    table = block[0]
    iis_row = next(line for line in table.splitlines() if line.split()[0] == "IIS")
    trained = iis_row.split()[1]
    changed = table.replace(iis_row, iis_row.replace(trained, f"{float(trained) + 0.002:.4f}", 1))
    found = readme_demo.differences(table, changed)
    assert found == [f"      IIS trained: README {trained}, run {float(trained) + 0.002:.4f}"]
    assert readme_demo.differences(table, changed, tolerance=0.003) == []


def test_missing_rows_and_other_columns_are_differences(block):
    table = block[0]
    shorter = "\n".join(line for line in table.splitlines() if not line.strip().startswith("95%"))
    assert readme_demo.differences(table, shorter) == ["row '95% CI': only in README"]
    renamed = table.replace("random-init", "random")
    assert readme_demo.differences(table, renamed)[0].startswith("columns:")


def test_the_table_is_taken_from_the_whole_demo_output():
    output = readme_demo.SAVED_OUTPUT.read_text()
    table = readme_demo.extract_table(output)
    assert table.splitlines()[0].split()[0] == "sparsity" and "total time" not in table
    with pytest.raises(IISError, match="no table"):
        readme_demo.extract_table("[1/3] scikit-learn digits\n")


def test_a_malformed_readme_block_is_refused_in_one_line():
    text = (REPO / "README.md").read_text()
    with pytest.raises(IISError, match="once"):
        readme_demo.readme_block(text.replace(readme_demo.END, ""))
    start = text.index(readme_demo.BEGIN) + len(readme_demo.BEGIN)
    with pytest.raises(IISError, match="code block"):
        readme_demo.readme_block(text[:start] + "\nno table\n" + text[text.index(readme_demo.END) :])


def test_replacing_the_block_keeps_the_rest_of_readme(block):
    text = (REPO / "README.md").read_text()
    new = readme_demo.replace_block(text, block[0], "A new timing sentence.")
    assert readme_demo.readme_block(new) == (block[0], "A new timing sentence.")
    assert new.split(readme_demo.BEGIN)[0] == text.split(readme_demo.BEGIN)[0]
    assert new.split(readme_demo.END)[1] == text.split(readme_demo.END)[1]


def test_the_command_line_default_thread_count_is_the_demos():
    """`iis-hf demo` declares the default without importing torch; it must be the one README used."""
    from iis_hf.cli.demo import DEMO_THREADS as CLI_THREADS
    from iis_hf.demo import DEMO_THREADS

    assert CLI_THREADS == DEMO_THREADS == 1


def test_pinned_threads_restores_the_callers_thread_count():
    import torch

    from iis_hf.demo import pinned_threads

    before = torch.get_num_threads()
    with pinned_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pinned_threads(None):
        assert torch.get_num_threads() == before


def test_a_thread_count_below_one_is_a_usage_error(tmp_path):
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "iis_hf.cli",
        "demo",
        "--threads",
        "0",
        "--output-dir",
        str(tmp_path / "d"),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["iis-hf demo: error: --threads must be 1 or more, got 0"]
    assert not (tmp_path / "d").exists()
