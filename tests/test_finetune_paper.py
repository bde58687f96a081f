"""Smoke test of benchmarks/finetune_paper.py (issue 19) at its micro configuration.

The script is run end to end in this process (a few tiny runs: pre-training with early stopping,
the validation grid, the pre-registration, the confirmatory arms, the analysis and the report),
then again to check that it resumes without redoing anything. The statistics' helpers are checked
against known values. The numbers of the micro run mean nothing and are not checked.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "finetune_paper.py"


@pytest.fixture(scope="module")
def script():
    """The script as a module (registered in sys.modules, where its dataclasses look themselves up)."""
    spec = importlib.util.spec_from_file_location("finetune_paper_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)
        yield module


@pytest.fixture(scope="module")
def micro_run(script, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune_paper")
    report = out / "report" / "finding2.md"
    results = script.main(["--scale", "micro", "--output-dir", str(out), "--write-report", str(report)])
    return script, out, report, results


def _strict(text: str):
    def refuse(value):
        raise ValueError(f"non-standard JSON constant {value}")

    return json.loads(text, parse_constant=refuse)


def test_micro_run_writes_runs_preregistration_results_and_report(micro_run):
    script, out, report, _ = micro_run
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    grid = [r for r in runs if r["phase"] == "grid"]
    confirm = [r for r in runs if r["phase"] == "confirm"]
    assert len(grid) == 2 * 2  # 2 scenarios x (CE only + the grid's first setting), 1 seed
    assert len(confirm) == 2 * 2 * 3  # 2 seeds x 2 scenarios x (off-the-shelf, CE only, chosen)
    assert all("validation" in r and "scores" not in r for r in grid)  # the grid never reads test
    prereg = _strict((out / "preregistration.json").read_text())
    assert set(prereg["chosen"]) == set(script.SCENARIOS)
    assert max(r["finished"] for r in grid) <= prereg["created"] <= min(r["finished"] for r in confirm)
    assert {e["name"] for e in prereg["plan"]["endpoints"]} == {e[0] for e in script.ENDPOINTS}

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
    script, out, _, results = micro_run

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run or a saved backbone was redone")

    monkeypatch.setattr(script, "run_arm", refuse)
    monkeypatch.setattr(script, "build_backbone", refuse)
    again = script.main(["--scale", "micro", "--output-dir", str(out)])
    assert len(again["runs"]) == len(results["runs"])
    assert again["confirmatory"]["endpoints"] == results["confirmatory"]["endpoints"]


def test_holm_and_the_detectable_effect_match_known_values(script):
    # m = 4 (the undefined p counts as 1): 0.01 x 4, then max(0.04, 0.03 x 3), then max(0.09, 0.04 x 2)
    adjusted = script.holm([0.01, 0.04, 0.03, None])
    assert adjusted[:3] == pytest.approx([0.04, 0.09, 0.09]) and adjusted[3] is None
    # G*Power: a paired t-test with 20 pairs detects d_z = 0.6604 at 80% power, alpha 0.05.
    assert script.detectable_effect(1.0, 20) == pytest.approx(0.6604, abs=1e-3)
    assert script.detectable_effect(0.02, 20) == pytest.approx(0.6604 * 0.02, rel=1e-3)
    assert script.detectable_effect(0.0, 20) == 0.0


def test_choice_takes_the_largest_mean_gain_and_the_earlier_setting_on_ties(script):
    def row(scenario, arm, gain):
        return {"scenario": scenario, "arm": arm, "gain": gain, "setting": {"arm": arm}}

    summary = [
        row(sc, arm, gain) for sc in script.SCENARIOS for arm, gain in (("a", 0.01), ("b", 0.02), ("c", 0.02))
    ]
    assert script.choose(summary) == {sc: [{"arm": "b"}] for sc in script.SCENARIOS}


def test_augmentation_depends_on_seed_row_and_visit_only(script):
    from PIL import Image

    image = Image.fromarray((torch.arange(32 * 32 * 3) % 251).reshape(32, 32, 3).numpy().astype("uint8"))
    rows = [{"image": image, "label": 0, "row": i} for i in range(4)]
    processor = script.processor()
    first, second = script.Collator(processor, seed=3), script.Collator(processor, seed=3)
    a = first(rows)["pixel_values"]
    second([{"image": image, "label": 0}])  # an un-augmented pass (prototypes, head fits) in between
    b = second(rows)["pixel_values"]
    assert torch.equal(a, b)
    assert not torch.equal(first(rows)["pixel_values"], a)  # the next visit is shifted anew
