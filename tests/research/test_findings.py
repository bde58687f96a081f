"""`iis_hf.stats` against hand-computed values, and the reproduction (`iis_paper.reproduce`,
run by examples/research_projects/iis_paper/reproduce_findings.py) on a tiny slice."""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from iis_paper import data as experiment_data
from iis_paper import reproduce
from iis_paper.findings_analysis import analyse_finetuning
from iis_paper.findings_report import READING_BEGIN, READING_END, write_report
from iis_paper.findings_runs import default_scenarios, scenario_datasets
from iis_paper.models import build_model, with_new_classifier
from iis_paper.scoring import SCORE_RATIOS
from iis_paper.statistics import verdict

from iis_hf.stats import (
    bootstrap_ci,
    correlation_summary,
    holm,
    paired_tests,
    pearson,
    permutation_pvalue,
    spearman,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "research_projects" / "iis_paper" / "reproduce_findings.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------- statistics
def test_spearman_matches_hand_computed_values():
    # ranks of y are 1 2 4 3: d = 0 0 -1 1, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)
    # ties get average ranks: x ranks 1 2.5 2.5 4, y ranks 1 3 2 4
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 3, 2, 4])
    expected = ((rx - rx.mean()) * (ry - ry.mean())).sum() / math.sqrt(
        ((rx - rx.mean()) ** 2).sum() * ((ry - ry.mean()) ** 2).sum()
    )
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(expected)
    assert spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)


def test_pearson_matches_the_direct_formula():
    rng = np.random.default_rng(3)
    x = rng.normal(size=20)
    y = 0.5 * x + rng.normal(size=20)
    xc, yc = x - x.mean(), y - y.mean()
    assert pearson(x, y) == pytest.approx((xc * yc).sum() / math.sqrt((xc**2).sum() * (yc**2).sum()))
    # [1,2,3] vs [2,4,7]: sxy = 5, sxx = 2, syy = 12.667 -> r = 5 / sqrt(25.333)
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 38 / 3))


@pytest.mark.parametrize("function", [spearman, pearson])
def test_undefined_correlations_are_nan(function):
    assert math.isnan(function([1, 2], [3, 4]))  # fewer than 3 points
    assert math.isnan(function([1, 1, 1, 1], [1, 2, 3, 4]))  # constant x
    with pytest.raises(ValueError, match="same length"):
        function([1, 2, 3], [1, 2])


def test_permutation_pvalue_is_exact_for_few_points():
    # 4! = 24 pairings; only the identity and the reversal reach |rho| = 1, so p = 2 / 24
    assert permutation_pvalue([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(2 / 24)
    assert permutation_pvalue([1, 2, 3, 4], [1, 2, 3, 4], method="pearson") == pytest.approx(2 / 24)
    # 6! = 720 pairings (y permuted against a fixed x, not both samples): exact 2 / 720
    assert permutation_pvalue([1, 2, 3, 4, 5, 6], [3, 4, 5, 6, 7, 9]) == pytest.approx(2 / 720)
    # a strong correlation over many points: small p, and the same p again with the same seed
    x = np.arange(40.0)
    y = x + np.random.default_rng(0).normal(scale=5, size=40)
    p = permutation_pvalue(x, y, seed=1)
    assert p < 0.001 and p == permutation_pvalue(x, y, seed=1)


def test_bootstrap_interval_contains_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = x + rng.normal(scale=0.5, size=30)
    ci = bootstrap_ci(x, y, spearman, n_resamples=500, seed=7)
    assert ci.low <= spearman(x, y) <= ci.high
    assert 0.0 < ci.low < ci.high <= 1.0
    assert ci == bootstrap_ci(x, y, spearman, n_resamples=500, seed=7)
    assert ci != bootstrap_ci(x, y, spearman, n_resamples=500, seed=8)
    narrow = bootstrap_ci(x, y, spearman, n_resamples=500, seed=7, confidence=0.5)
    assert ci.low <= narrow.low <= narrow.high <= ci.high


def test_bootstrap_matches_an_independent_percentile_computation():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    draws = np.random.default_rng(11).integers(0, x.size, size=(300, x.size))
    means = x[draws].mean(axis=1)
    expected = np.quantile(means, [0.05, 0.95])
    ci = bootstrap_ci(x, None, np.mean, n_resamples=300, seed=11, confidence=0.9)
    assert (ci.low, ci.high) == pytest.approx(tuple(expected))
    assert ci.n_valid == 300


def test_bootstrap_resamples_pairs_together_and_drops_undefined_resamples():
    x = [1.0, 2.0, 3.0]
    ci = bootstrap_ci(x, x, spearman, n_resamples=300, seed=0)
    # y = x in every resample: rho is 1 wherever defined (resampling x and y apart would not give this)
    assert (ci.low, ci.high) == (pytest.approx(1.0), pytest.approx(1.0))
    assert 250 < ci.n_valid < 300  # the ~1/9 of resamples that repeat one point are dropped
    never = bootstrap_ci(x, x, lambda a, b: math.nan, n_resamples=50, seed=0)
    assert never.n_valid == 0 and math.isnan(never.low) and math.isnan(never.high)


def test_paired_tests_match_hand_computed_values():
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    b = [0.0, 0.0, 0.0, 0.0, 0.0]
    out = paired_tests(a, b)
    d = np.array(a) - np.array(b)
    assert out["mean_difference"] == pytest.approx(3.0)
    assert out["t_statistic"] == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(5)))
    assert out["wilcoxon_p"] == pytest.approx(2 / 32)  # all 5 signs positive: exact p = 2 * 2^-5
    assert out["n"] == 5 and out["n_nonzero"] == 5
    assert out["mean_a"] == pytest.approx(3.0) and out["sd_a"] == pytest.approx(math.sqrt(2.5))
    # one negative difference of rank 2 among 6: W = 2, P(W <= 2) = 3 / 64, two-sided 6 / 64
    out = paired_tests([1, -2, 3, 4, 5, 6], [0] * 6)
    assert out["wilcoxon_statistic"] == 2.0
    assert out["wilcoxon_p"] == pytest.approx(6 / 64)


def test_paired_tests_of_identical_and_constant_differences():
    same = paired_tests([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])
    assert same["t_p"] == 1.0 and same["wilcoxon_p"] == 1.0 and same["n_nonzero"] == 0
    shifted = paired_tests([1.5, 2.5, 3.5, 4.5, 5.5, 6.5], [1, 2, 3, 4, 5, 6])
    assert math.isnan(shifted["t_p"])  # zero variance of the differences: t undefined
    assert shifted["wilcoxon_p"] == pytest.approx(2 / 64)
    with pytest.raises(ValueError, match="at least 2"):
        paired_tests([1.0], [2.0])


def test_correlation_summary_keys_and_values():
    x = [0.1, 0.4, 0.35, 0.8, 0.9, 0.7]
    y = [0.2, 0.5, 0.3, 0.9, 0.95, 0.6]
    s = correlation_summary(x, y, n_resamples=200, seed=0)
    assert set(s) == {"n", "pearson", "pearson_p", "pearson_ci", "spearman", "spearman_p", "spearman_ci"}
    assert s["n"] == 6
    assert s["spearman"] == pytest.approx(spearman(x, y)) and s["pearson"] == pytest.approx(pearson(x, y))
    for name in ("pearson", "spearman"):
        low, high = s[f"{name}_ci"]
        assert low <= s[name] <= high
        assert 0 < s[f"{name}_p"] < 0.1


# ------------------------------------------------------------------------------- the script
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One --smoke run (a few seconds): 1 model x 3 checkpoints, 2 seeds x 3 fine-tuning settings."""
    root = tmp_path_factory.mktemp("reproduce")
    output, report = root / "out", root / "docs" / "RESULTS.md"
    argv = ["--smoke", "--output-dir", str(output), "--write-report", str(report), "--quiet"]
    results = reproduce.run(argv)
    return results, output, report


def test_smoke_run_writes_strict_json_with_every_part(smoke_run):
    returned, output, _ = smoke_run
    text = (output / "results.json").read_text()
    results = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert {
        "command",
        "mode",
        "config",
        "environment",
        "datasets",
        "checkpoints",
        "finetuning",
        "finding1_3",
        "finding2",
        "figures",
        "phase_seconds",
        "runtime_seconds",
    } <= set(results)
    assert results["mode"] == "smoke" and results["runtime_seconds"] > 0
    assert {"python", "versions"} <= set(results["environment"])
    assert {"iis-hf", "torch", "transformers"} <= set(results["environment"]["versions"])
    # 1 model x epochs 0, 1, 2; each checkpoint scored with both kinds of concept
    assert [(r["model"], r["epoch"]) for r in results["checkpoints"]] == [("resnet-s", e) for e in (0, 1, 2)]
    for row in results["checkpoints"]:
        assert set(row["concepts"]) == {"prototype", "cluster"}
        for kind in row["concepts"].values():
            assert 0 < kind["probe_accuracy"] <= 1 and set(kind["interpretation_accuracy"]) == {
                str(r) for r in SCORE_RATIOS
            }
    # seeds 0, 1 x (Trainer, IISTrainer at each head learning rate of the grid)
    settings = {(r["iis_weight"], r["head_learning_rate"], tuple(r["ratios"])) for r in results["finetuning"]}
    assert settings == {(None, None, (0.9,)), (0.5, 1e-3, (0.9,)), (0.5, 1e-2, (0.9,))}
    assert len(results["finetuning"]) == 6
    assert {r["scenario"] for r in results["finetuning"]} == {"digits"}
    for run in results["finetuning"]:  # the loss head's own test accuracy: only IISTrainer has one
        head = run["trained_head_accuracy"]
        assert (head is None) == (run["iis_weight"] is None)
        assert head is None or (set(head) == {"0.9"} and 0 <= head["0.9"] <= 1)
    assert results["config"]["iis_refit_head"] is False and results["config"]["head_weight_decay"] == 0.0
    assert results["scenarios"]["digits"]["pretraining"]["epochs"] == 1.0
    digits = results["finding1_3"]["digits"]
    assert set(digits) == {"prototype", "cluster"}
    assert set(digits["prototype"]["finding1"]["all_checkpoints"]) >= {"spearman", "spearman_ci", "pearson_p"}
    assert digits["prototype"]["finding1"]["all_checkpoints"]["n"] == 3
    finding2 = results["finding2"]["digits"]
    assert (finding2["source"], finding2["target"], finding2["trainer"]["seeds"]) == (
        "digits",
        "digits",
        [0, 1],
    )
    assert [s["head_learning_rate"] for s in finding2["settings"]] == [1e-3, 1e-2]
    for setting in finding2["settings"]:
        assert setting["accuracy"]["n"] == 2 and setting["seeds"] == [0, 1]
        assert setting["finding2"].startswith(("reproduced", "not reproduced"))
        for metric in ("accuracy", "iis"):
            test = setting[metric]
            assert {"wilcoxon_p", "t_p_holm", "wilcoxon_p_holm", "verdict", "verdict_uncorrected"} <= set(
                test
            )
            if test["t_p"] is not None and math.isfinite(test["t_p"]):  # Holm never lowers a p-value
                assert test["t_p"] <= test["t_p_holm"] <= 1
    assert returned["checkpoints"] == results["checkpoints"]


def test_smoke_run_writes_png_figures_and_a_report_that_links_them(smoke_run):
    results, output, report = smoke_run
    expected = {"finding1_digits.png", "finding3_digits.png", "finding2_digits.png"}
    assert set(results["figures"]) == expected
    for name in expected:
        for folder in (output, report.parent / "figures"):
            data = (folder / name).read_bytes()
            assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, (folder, name)
    text = report.read_text()
    for heading in ("## Finding 1", "## Finding 2", "## Finding 3", "## Reading", "## How this was run"):
        assert heading in text
    for name in expected:
        assert f"(figures/{name})" in text
    assert "--smoke" in text and "torch" in text
    finding2 = text.split("## Finding 2")[1].split("## Finding 3")[0]
    assert "Holm" in finding2 and "| digits, pre-trained on digits | 0.5 | 0.001 | 2 |" in finding2
    assert "| IISTrainer λ=0.5 | 0.01 | 2 |" in finding2  # the head learning rate is stated per row


def test_report_keeps_a_hand_written_reading(smoke_run, tmp_path):
    results, output, _ = smoke_run
    target = tmp_path / "RESULTS.md"
    write_report(results, target, output)
    text = target.read_text()
    assert READING_BEGIN in text and READING_END in text
    mine = f"{READING_BEGIN}\nThe figures agree on digits.\n{READING_END}"
    start, end = text.index(READING_BEGIN), text.index(READING_END) + len(READING_END)
    target.write_text(text[:start] + mine + text[end:])
    write_report(results, target, output)
    assert mine in target.read_text()


def test_report_can_be_rebuilt_from_results_json_alone(smoke_run, tmp_path):
    results, output, report = smoke_run
    again = reproduce.run(
        [
            "--from-results",
            str(output / "results.json"),
            "--output-dir",
            str(tmp_path / "figs"),
            "--write-report",
            str(tmp_path / "RESULTS.md"),
            "--quiet",
        ]
    )
    assert set(again["figures"]) == set(results["figures"])
    assert all((tmp_path / "figs" / name).read_bytes().startswith(PNG_SIGNATURE) for name in again["figures"])
    rebuilt = (tmp_path / "RESULTS.md").read_text()
    # the same tables (the report's own file name differs only in the link to its JSON)
    assert rebuilt.split("## Finding 1")[1] == report.read_text().split("## Finding 1")[1]
    assert json.loads((tmp_path / "RESULTS.json").read_text())["checkpoints"] == results["checkpoints"]


def test_extra_runs_get_their_own_section_marked_with_their_device(smoke_run, tmp_path):
    results, output, report = smoke_run
    other = json.loads((output / "results.json").read_text())
    other["environment"]["cuda"] = "NVIDIA Test GPU"  # as if it had run on a GPU
    for row in other["checkpoints"]:
        row["model"] = "resnet-l"
    extra = tmp_path / "gpu.json"
    extra.write_text(json.dumps(other))
    argv = ["--from-results", str(output / "results.json"), "--extra-results", str(extra), str(extra)]
    argv += [
        "--output-dir",
        str(tmp_path / "figs"),
        "--write-report",
        str(tmp_path / "RESULTS.md"),
        "--quiet",
    ]
    again = reproduce.run(argv)
    (run,) = again["extra_runs"]  # two files from one device: one section
    assert run["device"] == "NVIDIA Test GPU"
    assert len(run["checkpoints"]) == 2 * len(results["checkpoints"])
    text = (tmp_path / "RESULTS.md").read_text()
    section = text.split("## Larger models on NVIDIA Test GPU")[1].split("## Reading")[0]
    rows = [line for line in section.splitlines() if line.startswith("| digits | resnet-l |")]
    assert len(rows) == 2 * len(results["checkpoints"])
    assert all("| NVIDIA Test GPU |" in line for line in rows)
    # the main run's tables are unchanged by the extra section
    assert (
        text.split("## Finding 1")[1].split("## Larger")[0]
        == report.read_text().split("## Finding 1")[1].split("## Reading")[0]
    )
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--extra-results", str(extra)])  # needs --from-results


def test_the_example_script_is_the_experiments_command_line(tmp_path):
    """examples/research_projects/iis_paper/reproduce_findings.py runs `iis_paper.reproduce.main` (no sys.path tricks):
    a fixable error is one line and exit code 2."""
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"finetuning": []}))
    argv = ["--from-results", str(empty), "--finetuning-results", str(empty), "--output-dir", str(tmp_path)]
    done = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "no fine-tuning runs" in line and "--skip-finetuning" in line
    assert "sys.path" not in SCRIPT.read_text()


def test_verdict_needs_both_tests():
    assert verdict({"t_p": 0.01, "wilcoxon_p": 0.02, "mean_difference": 0.1}) == "higher"
    assert verdict({"t_p": 0.01, "wilcoxon_p": 0.02, "mean_difference": -0.1}) == "lower"
    assert verdict({"t_p": 0.01, "wilcoxon_p": 0.0625, "mean_difference": 0.1}) == "no detectable difference"
    assert (
        verdict({"t_p": float("nan"), "wilcoxon_p": 0.01, "mean_difference": 0.1})
        == "no detectable difference"
    )
    corrected = {
        "t_p": 0.01,
        "wilcoxon_p": 0.02,
        "t_p_holm": 0.04,
        "wilcoxon_p_holm": 0.08,
        "mean_difference": 1,
    }
    assert verdict(corrected) == "higher"
    assert verdict(corrected, corrected=True) == "no detectable difference"


def test_holm_matches_hand_computed_values():
    # sorted 0.01, 0.02, 0.03, 0.04 times 4, 3, 2, 1: 0.04, 0.06, 0.06 (kept non-decreasing), 0.06
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.2]) == pytest.approx([0.2])
    # an undefined test counts as p = 1 in the family and stays undefined
    assert holm([0.01, float("nan"), None]) == [pytest.approx(0.03), None, None]


def _run(scenario, seed, weight, accuracy, iis, head_lr=1e-2):
    return {
        "scenario": scenario,
        "source": scenario.split("-to-")[0],
        "dataset": scenario.split("-to-")[-1],
        "seed": seed,
        "iis_weight": weight,
        "head_learning_rate": None if weight is None else head_lr,
        "ratios": [0.9],
        "accuracy": accuracy,
        "iis": iis,
        "trained_head_accuracy": None if weight is None else {"0.9": 0.9},
    }


def test_finding2_is_corrected_over_every_setting_of_every_scenario():
    runs = []
    for seed in range(8):
        for scenario in ("digits", "animals-to-digits"):
            runs.append(_run(scenario, seed, None, 0.90, 0.9))
            # +1 point on every seed at lr 1e-2 (both raw p-values small); nothing at lr 1e-3
            runs.append(_run(scenario, seed, 1.0, 0.91 + 0.001 * seed, 0.9, head_lr=1e-2))
            runs.append(_run(scenario, seed, 1.0, 0.90 + 0.01 * (-1) ** seed, 0.9, head_lr=1e-3))
    out = analyse_finetuning(runs)
    assert list(out) == ["digits", "animals-to-digits"]
    assert out["animals-to-digits"]["source"] == "animals" and out["animals-to-digits"]["target"] == "digits"
    tests = [s["accuracy"] for entry in out.values() for s in entry["settings"]]
    for name in ("t_p", "wilcoxon_p"):
        assert [t[f"{name}_holm"] for t in tests] == pytest.approx(holm([t[name] for t in tests]))
    verdicts = {
        (scenario, s["head_learning_rate"]): s["finding2"]
        for scenario, e in out.items()
        for s in e["settings"]
    }
    assert verdicts[("digits", 1e-2)] == verdicts[("animals-to-digits", 1e-2)] == "reproduced"
    assert verdicts[("digits", 1e-3)] == "not reproduced (no detectable difference)"
    # Wilcoxon with 8 pairs all positive: raw 2 / 2^8, times 4 settings after Holm (the largest factor)
    assert tests[0]["wilcoxon_p"] == pytest.approx(2 / 256)
    assert tests[0]["wilcoxon_p_holm"] == pytest.approx(4 * 2 / 256)


def test_finding2_of_an_older_results_file_is_still_analysed():
    """Runs written before scenarios and head learning rates (dataset, iis_weight and ratios only)."""
    runs = []
    for seed in range(3):
        for weight, accuracy in ((None, 0.9), (0.1, 0.91), (0.5, 0.89)):
            run = {"dataset": "digits", "seed": seed, "iis_weight": weight, "ratios": [0.9]}
            runs.append({**run, "accuracy": accuracy + 0.001 * seed, "iis": 0.95})
    out = analyse_finetuning(runs)
    labels = [s["label"] for s in out["digits"]["settings"]]
    assert labels == ["IISTrainer λ=0.1", "IISTrainer λ=0.5"]
    assert out["digits"]["settings"][0]["head_learning_rate"] is None


def test_a_new_classifier_keeps_every_other_pretrained_weight():
    source = build_model("resnet-s", [f"s{i}" for i in range(10)], seed=5)
    names = [f"t{i}" for i in range(10)]
    moved = with_new_classifier(source, build_model("resnet-s", names, seed=3))
    fresh = build_model("resnet-s", names, seed=3)
    assert moved.config.id2label == dict(enumerate(names))
    for key, value in moved.state_dict().items():
        expected = (fresh if key.startswith("classifier.") else source).state_dict()[key]
        assert torch.equal(value, expected), key
    assert not torch.equal(moved.classifier[1].weight, source.classifier[1].weight)
    again = with_new_classifier(source, build_model("resnet-s", names, seed=3))  # seeded: the same head
    assert torch.equal(again.classifier[1].weight, moved.classifier[1].weight)


def test_scenarios_and_their_data_sets():
    assert default_scenarios(["digits", "animals"]) == [
        "digits",
        "animals",
        "digits-to-animals",
        "animals-to-digits",
    ]
    assert scenario_datasets("animals-to-digits") == ("animals", "digits")
    assert scenario_datasets("digits") == ("digits", "digits")
    assert reproduce.parse_args(["--smoke"]).scenarios == ["digits"]
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--smoke", "--scenarios", "animals-to-digits"])  # animals not in --datasets
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--smoke", "--scenarios", "cifar-to-digits"])
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--finetuning-results", "x.json"])  # needs --from-results


# ------------------------------------------------------------------------------- the second data set
def _has_animal_shapes() -> bool:
    try:
        importlib.metadata.distribution("animal-shape-mnist")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(
    not _has_animal_shapes(), reason="animal-shape-mnist is not installed (extra 'reproduce')"
)
def test_animal_shapes_load_offline_without_duplicates_across_splits():
    data = experiment_data.load_animal_shapes_dataset(train_size=200, test_size=100, seed=0)
    assert len(data["train"]) == 200 and len(data["test"]) == 100
    assert data["train"].features["label"].names[:3] == ["bear", "bird", "cat"]
    # stratified: each class in proportion to its share of the de-duplicated images
    images, labels = experiment_data.read_animal_shapes()
    assert images.shape == (10000, 28, 28) and np.bincount(labels).tolist() == [1000] * 10
    _, first = np.unique(images.reshape(10000, -1), axis=0, return_index=True)
    share = np.bincount(labels[first], minlength=10) / first.size
    for split, size in (("train", 200), ("test", 100)):
        counts = np.bincount(data[split]["label"], minlength=10)
        assert np.all(np.abs(counts - share * size) <= 1.5), (split, counts, share * size)
    first = data["test"][0]["image"]
    assert first.mode == "RGB" and first.size == (32, 32)
    train = {np.asarray(im).tobytes() for im in data["train"]["image"]}
    test = {np.asarray(im).tobytes() for im in data["test"]["image"]}
    assert not train & test


@pytest.mark.skipif(
    not _has_animal_shapes(), reason="animal-shape-mnist is not installed (extra 'reproduce')"
)
def test_transfer_finetuning_run_merges_into_a_report(smoke_run, tmp_path):
    """Finding 2 alone (--skip-checkpoints) in a transfer scenario, then merged into the smoke run's report."""
    results, output, _ = smoke_run
    argv = ["--smoke", "--datasets", "digits", "animals", "--skip-checkpoints"]
    argv += ["--scenarios", "animals-to-digits", "--head-learning-rates", "0.01", "--quiet"]
    transfer = reproduce.run([*argv, "--output-dir", str(tmp_path / "transfer")])
    assert not transfer["checkpoints"] and len(transfer["finetuning"]) == 4  # 2 seeds x (Trainer, 1 setting)
    assert {(r["scenario"], r["source"], r["dataset"]) for r in transfer["finetuning"]} == {
        ("animals-to-digits", "animals", "digits")
    }
    pretraining = transfer["scenarios"]["animals-to-digits"]["pretraining"]
    assert pretraining["epochs"] == 1.0 and 0 <= pretraining["source_test_accuracy"] <= 1
    assert transfer["figures"] == ["finding2_animals-to-digits.png"]
    merged = reproduce.run(
        [
            "--from-results",
            str(output / "results.json"),
            "--finetuning-results",
            str(tmp_path / "transfer" / "results.json"),
            "--output-dir",
            str(tmp_path / "figs"),
            "--write-report",
            str(tmp_path / "RESULTS.md"),
            "--quiet",
        ]
    )
    assert merged["checkpoints"] == results["checkpoints"]  # findings 1 and 3 from the first run
    assert list(merged["finding2"]) == ["animals-to-digits"]  # finding 2 from the second
    assert merged["finetuning_run"]["config"]["scenarios"] == ["animals-to-digits"]
    text = (tmp_path / "RESULTS.md").read_text()
    assert "--skip-checkpoints" in text.split("## Finding 1")[0]  # both commands are given
    assert "### digits, pre-trained on animals" in text and "finding2_animals-to-digits.png" in text
    assert "animals test images:" in text  # the starting model's accuracy on its own data
    saved = json.loads((tmp_path / "RESULTS.json").read_text())
    assert "--skip-checkpoints" in saved["finetuning_run"]["command"]
    # a later redraw of the merged file keeps finding 2's provenance without being told again
    again = reproduce.run(
        ["--from-results", str(tmp_path / "RESULTS.json"), "--output-dir", str(tmp_path / "f2"), "--quiet"]
    )
    assert again["finding2"] == merged["finding2"]


def test_array_unpickler_refuses_anything_but_numpy_arrays(tmp_path):
    path = tmp_path / "evil.gz"
    with gzip.open(path, "wb") as stream:
        pickle.dump(print, stream)  # a global other than numpy's array machinery
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        experiment_data._read_package_pickle(path)
    with gzip.open(path, "wb") as stream:
        pickle.dump(np.arange(6, dtype=np.uint8).reshape(2, 3), stream)
    np.testing.assert_array_equal(experiment_data._read_package_pickle(path), [[0, 1, 2], [3, 4, 5]])
