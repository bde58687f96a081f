"""`iis_paper.finding2_real` end to end on a tiny random EfficientNet (no ImageNet weights): grid,
pre-registration before any confirmatory run, paired analysis, and a rerun that trains nothing."""

from __future__ import annotations

import json

import pytest
from iis_paper import finding2_real, findings_real

from research.test_findings_real import fake_convert, tiny_config

ARGS = ["--resolution", "32", "--train-size", "40", "--validation-size", "30", "--test-size", "30"]
ARGS += ["--epochs", "1", "--learning-rates", "1e-3", "3e-3", "--iis-weights", "0.5", "1"]
ARGS += ["--grid-seeds", "7", "--seeds", "2", "--num-concepts", "8", "--images-per-class", "2"]


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(findings_real, "efficientnet_lite_config", tiny_config)
    monkeypatch.setattr(findings_real, "convert", fake_convert)
    trained = []
    finetune = finding2_real.finetune
    monkeypatch.setattr(finding2_real, "finetune", lambda *a, **k: trained.append(a[3:]) or finetune(*a, **k))
    return trained


def test_grid_preregistration_confirm_and_resume(tiny, tmp_path):
    out = tmp_path / "out"
    assert finding2_real.main(["--output-dir", str(out), "--phase", "grid", *ARGS]) == 0
    assert len(tiny) == 2 * 3  # 2 rates x (CE, two lambdas) x 1 seed
    assert not (out / "preregistration.json").exists()  # written only when the confirmatory phase starts

    assert finding2_real.main(["--output-dir", str(out), *ARGS]) == 0
    prereg = json.loads((out / "preregistration.json").read_text())
    assert prereg["chosen"]["learning_rate"] in (1e-3, 3e-3)
    ce_means = {lr: m["ce"] for lr, m in prereg["chosen"]["validation_means"].items()}
    assert prereg["chosen"]["learning_rate"] == max(
        (float(k) for k in ce_means), key=lambda k: ce_means[f"{k:g}"]
    )
    results = json.loads((out / "results.json").read_text())
    confirm = [r for r in results["runs"] if r["phase"] == "confirm"]
    assert sorted({r["arm"] for r in confirm}) == ["ce", "lambda0.5", "lambda1", "off-the-shelf"]
    assert all(
        r["learning_rate"] == prereg["chosen"]["learning_rate"]
        for r in confirm
        if r["arm"] != "off-the-shelf"
    )
    comparisons = results["analysis"]["comparisons"]
    assert {
        "test_accuracy|lambda0.5-ce",
        "test_accuracy|lambda1-ce",
        "test_accuracy|lambda1-off-the-shelf",
    } <= set(comparisons)
    for test in comparisons.values():
        assert test["n"] == 2 and test["seeds"] == [0, 1]
        assert test["detectable_effect"] >= 0
    assert (out / finding2_real.FIGURE).stat().st_size > 0
    assert len(tiny) == 6 + 2 * 3

    # a rerun trains nothing; another design in the same folder is refused in one line
    assert finding2_real.main(["--output-dir", str(out), *ARGS]) == 0
    assert len(tiny) == 12
    assert finding2_real.main(["--output-dir", str(out), *ARGS, "--epochs", "2"]) == 2


def test_a_bad_shard_is_one_line(capsys):
    assert finding2_real.main(["--output-dir", "x", "--shard", "2/2"]) == 2
    assert "--shard K/N needs 0 <= K < N" in capsys.readouterr().err


def test_anyones_model_and_dataset(tmp_path):
    """--model takes any image classifier folder (or Hub id), --dataset any dataset the CLI accepts."""
    from datasets import DatasetDict

    from iis_hf.data import load_digits_dataset

    model = fake_convert("lite0", tmp_path / "my-model")
    digits = load_digits_dataset(image_size=32)["train"].select(range(200))
    DatasetDict(train=digits).save_to_disk(tmp_path / "my-data")
    out = tmp_path / "out"
    argv = ["--output-dir", str(out), "--model", str(model), "--dataset", str(tmp_path / "my-data")]
    argv += ["--resolution", "32", "--train-size", "60", "--validation-size", "40", "--test-size", "40"]
    argv += ["--epochs", "1", "--learning-rates", "1e-3", "--iis-weights", "0.5", "--grid-seeds", "3"]
    argv += ["--seeds", "2", "--num-concepts", "8", "--images-per-class", "2"]
    assert finding2_real.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["design"]["model"] == str(model) and results["design"]["dataset"] == str(
        tmp_path / "my-data"
    )
    confirm = [r for r in results["runs"] if r["phase"] == "confirm"]
    assert sorted({r["arm"] for r in confirm}) == ["ce", "lambda0.5", "off-the-shelf"]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in confirm)
    assert results["analysis"]["comparisons"]["test_accuracy|lambda0.5-ce"]["n"] == 2


def test_a_dataset_smaller_than_its_splits_is_one_line(tmp_path, capsys):
    from datasets import DatasetDict

    from iis_hf.data import load_digits_dataset

    DatasetDict(train=load_digits_dataset(image_size=32)["train"].select(range(50))).save_to_disk(
        tmp_path / "d"
    )
    argv = ["--output-dir", str(tmp_path / "out"), "--dataset", str(tmp_path / "d"), "--train-size", "40"]
    assert finding2_real.main([*argv, "--validation-size", "20", "--test-size", "20"]) == 2
    assert "50 rows, fewer than test + validation + train = 80" in capsys.readouterr().err
