"""Smoke test of the paper's finding-2 re-test (issue 19; `iis_paper.finetune_paper`, run by
examples/research_projects/iis_paper/finetune_paper.py) at its micro configuration.

The experiment is run end to end in this process (a few tiny runs: pre-training with early stopping,
the validation grid, the pre-registration, the confirmatory arms, the analysis and the report),
then again to check that it resumes without redoing anything. The statistics' helpers are checked
against known values. The numbers of the micro run mean nothing and are not checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from iis_paper import finetune_paper, paper_runs
from iis_paper.data import Collator
from iis_paper.paper_analysis import choose
from iis_paper.paper_design import ENDPOINTS, SCENARIOS

from iis_hf.demo import demo_image_processor
from iis_hf.stats import detectable_effect, holm

SCRIPT = (
    Path(__file__).resolve().parents[2] / "examples" / "research_projects" / "iis_paper" / "finetune_paper.py"
)


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune_paper")
    report = out / "report" / "finding2.md"
    results = finetune_paper.run(
        ["--scale", "micro", "--output-dir", str(out), "--write-report", str(report)]
    )
    return out, report, results


def _strict(text: str):
    def refuse(value):
        raise ValueError(f"non-standard JSON constant {value}")

    return json.loads(text, parse_constant=refuse)


def test_micro_run_writes_runs_preregistration_results_and_report(micro_run):
    out, report, _ = micro_run
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    grid = [r for r in runs if r["phase"] == "grid"]
    confirm = [r for r in runs if r["phase"] == "confirm"]
    assert len(grid) == 2 * 2  # 2 scenarios x (CE only + the grid's first setting), 1 seed
    assert len(confirm) == 2 * 2 * 3  # 2 seeds x 2 scenarios x (off-the-shelf, CE only, chosen)
    assert all("validation" in r and "scores" not in r for r in grid)  # the grid never reads test
    prereg = _strict((out / "preregistration.json").read_text())
    assert set(prereg["chosen"]) == set(SCENARIOS)
    assert max(r["finished"] for r in grid) <= prereg["created"] <= min(r["finished"] for r in confirm)
    assert {e["name"] for e in prereg["plan"]["endpoints"]} == {e[0] for e in ENDPOINTS}

    saved = _strict((out / "results.json").read_text())
    assert len(saved["runs"]) == len(runs) and saved["preregistration"] == prereg
    for key in ("command", "versions", "scale", "shrunk", "wall_seconds", "backbones", "grid", "data"):
        assert key in saved
    assert saved["backbones"]["resnet-d16"]["validation_accuracy_per_epoch"]
    for name, endpoint in saved["confirmatory"]["endpoints"].items():
        assert len(endpoint["cells"]) == 2
        for cell in endpoint["cells"]:
            if "iis" in name and cell["verdict"] == "not measured":
                continue  # a micro backbone at chance has no IIS (A0 not above chance)
            assert cell["n"] == 2 and cell["verdict"] in ("higher", "lower", "no detectable difference")
            assert {"ci95", "t_p_holm", "wilcoxon_p_holm", "detectable_effect"} <= set(cell)
    text = report.read_text()
    assert text.startswith("## Finding 2") and "| the paper | this run |" in text and "primary" in text
    assert (report.parent / "finding2_differences.png").stat().st_size > 0
    assert (out / "backbones" / "resnet-d16" / "config.json").is_file()


def test_a_rerun_resumes_without_training_again(micro_run, monkeypatch):
    out, _, results = micro_run

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run or a saved backbone was redone")

    monkeypatch.setattr(paper_runs, "run_arm", refuse)
    monkeypatch.setattr(paper_runs, "build_resnet", refuse)
    again = finetune_paper.run(["--scale", "micro", "--output-dir", str(out)])
    assert len(again["runs"]) == len(results["runs"])
    assert again["confirmatory"]["endpoints"] == results["confirmatory"]["endpoints"]


def test_the_benchmark_script_is_the_experiments_command_line(micro_run):
    """examples/research_projects/iis_paper/finetune_paper.py runs `iis_paper.finetune_paper.main` (no sys.path
    tricks): --report-only rewrites the report from results.json, in a fresh process."""
    out, _, _ = micro_run
    report = out / "again" / "finding2.md"
    argv = ["--output-dir", str(out), "--report-only", "--write-report", str(report)]
    done = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        report.read_text().startswith("## Finding 2")
        and (report.parent / "finding2_differences.png").is_file()
    )
    assert "sys.path" not in SCRIPT.read_text()


def test_holm_and_the_detectable_effect_match_known_values():
    # m = 4 (the undefined p counts as 1): 0.01 x 4, then max(0.04, 0.03 x 3), then max(0.09, 0.04 x 2)
    adjusted = holm([0.01, 0.04, 0.03, None])
    assert adjusted[:3] == pytest.approx([0.04, 0.09, 0.09]) and adjusted[3] is None
    # G*Power: a paired t-test with 20 pairs detects d_z = 0.6604 at 80% power, alpha 0.05.
    assert detectable_effect(1.0, 20) == pytest.approx(0.6604, abs=1e-3)
    assert detectable_effect(0.02, 20) == pytest.approx(0.6604 * 0.02, rel=1e-3)
    assert detectable_effect(0.0, 20) == 0.0


def test_choice_takes_the_largest_mean_gain_and_the_earlier_setting_on_ties():
    def row(scenario, arm, gain):
        return {"scenario": scenario, "arm": arm, "gain": gain, "setting": {"arm": arm}}

    summary = [
        row(sc, arm, gain) for sc in SCENARIOS for arm, gain in (("a", 0.01), ("b", 0.02), ("c", 0.02))
    ]
    assert choose(summary) == {sc: [{"arm": "b"}] for sc in SCENARIOS}


def test_augmentation_depends_on_seed_row_and_visit_only():
    from PIL import Image

    image = Image.fromarray((torch.arange(32 * 32 * 3) % 251).reshape(32, 32, 3).numpy().astype("uint8"))
    rows = [{"image": image, "label": 0, "row": i} for i in range(4)]
    processor = demo_image_processor()
    first, second = Collator(processor, seed=3), Collator(processor, seed=3)
    a = first(rows)["pixel_values"]
    second([{"image": image, "label": 0}])  # an un-augmented pass (prototypes, head fits) in between
    b = second(rows)["pixel_values"]
    assert torch.equal(a, b)
    assert not torch.equal(first(rows)["pixel_values"], a)  # the next visit is shifted anew
