"""`iis_paper.findings_real` end to end on a tiny random EfficientNet (no ImageNet weights):
results.json's structure, the figure, and a rerun that measures only what results.jsonl lacks."""

from __future__ import annotations

import json

import pytest
from iis_paper import findings_real
from iis_paper.efficientnet_lite import VARIANTS, efficientnet_lite_config, image_processor


def tiny_config(variant: str = "lite0"):
    """Two small blocks (one stride 2) between the 32-channel stem and transformers' fixed 1280-channel top conv."""
    from transformers import EfficientNetConfig

    return EfficientNetConfig(
        width_coefficient=1.0,
        depth_coefficient=1.0,
        kernel_sizes=[3, 3],
        strides=[1, 2],
        expand_ratios=[1, 2],
        num_block_repeats=[1, 1],
        in_channels=[32, 8],  # the stem gives 32 channels whatever the config
        out_channels=[8, 16],
        hidden_dim=1280,  # transformers' top conv always gives 1280 channels at width 1.0
        hidden_act="relu6",
        num_labels=1000,
    )


def fake_convert(variant, folder):
    """A converted folder holding the tiny model with random weights (seeded) and Lite's processor."""
    from transformers import EfficientNetForImageClassification

    model = findings_real.standard_init(EfficientNetForImageClassification(tiny_config()), seed=1)
    model.save_pretrained(folder)
    image_processor(variant).save_pretrained(folder)
    return folder


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(findings_real, "efficientnet_lite_config", tiny_config)
    monkeypatch.setattr(findings_real, "convert", fake_convert)
    calls = []
    measure = findings_real.measure
    monkeypatch.setattr(findings_real, "measure", lambda *a, **k: calls.append(a) or measure(*a, **k))
    return calls


ARGS = ["--targets", "digits", "--resolution", "32", "--train-size", "60", "--eval-size", "40"]
ARGS += ["--finetune-epochs", "1", "--bootstrap", "50"]


def test_runs_end_to_end_and_resumes(tiny, tmp_path):
    out = tmp_path / "out"
    argv = ["--output-dir", str(out), *ARGS, "--models", "random-init", "lite0", "finetuned"]
    assert findings_real.main(argv) == 0
    assert len(tiny) == 3
    summary = json.loads((out / "results.json").read_text())
    assert summary["settings"]["resolution"] == 32
    entry = summary["targets"]["digits"]
    assert [r["model"] for r in entry["rows"]] == ["random-init", "lite0", "lite0-ft1"]
    for row in entry["rows"]:
        assert 0.0 <= row["a0"] <= 1.0
        assert set(row["accuracies"]) == {"0", "0.1", "0.3", "0.5", "0.7", "0.9", "0.95", "0.98"}
        if row["iis"] is not None:
            low, high = row["iis_ci"]
            assert low <= high
    assert {"iis_vs_a0", "iis_vs_a0_without_random_init"} <= set(entry)
    if entry["iis_vs_a0"] is not None:  # None: fewer than 3 defined IIS
        assert -1.0 <= entry["iis_vs_a0"]["spearman"] <= 1.0
        assert len(entry["iis_vs_a0"]["spearman_ci"]) == 2
    assert (out / findings_real.FIGURE).stat().st_size > 0
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3

    # a rerun measures nothing; one with another model measures only that model
    assert findings_real.main(argv) == 0
    assert len(tiny) == 3
    assert findings_real.main([*argv, "lite1"]) == 0
    assert len(tiny) == 4
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    rows = json.loads((out / "results.json").read_text())["targets"]["digits"]["rows"]
    assert [r["model"] for r in rows] == ["random-init", "lite0", "lite1", "lite0-ft1"]


def test_rows_measured_otherwise_are_refused(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert findings_real.main(["--output-dir", str(out), *ARGS, "--models", "random-init"]) == 0
    assert (
        findings_real.main(["--output-dir", str(out), *ARGS, "--models", "random-init", "--seed", "1"]) == 2
    )
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_padding_blocks_match_the_converted_configs_at_their_native_size(variant):
    config = efficientnet_lite_config(variant)
    native = findings_real.same_padding_blocks(config, VARIANTS[variant].resolution)
    assert native == list(config.depthwise_padding)
    assert findings_real.same_padding_blocks(config, 128) == []  # every stride-2 input even
