"""An IIS outside the grid's range is not a result: a head that beats the probe marks the score invalid
in the result's own fields (iis.json, the table, the metric's output), and the "representations"
config refuses to score too few images."""

from __future__ import annotations

import json

import numpy as np
import pytest

import iis_hf
from iis_hf import IISResult


def result(accuracies, standard_accuracy, num_eval=None) -> IISResult:
    ratios = [0.0, 0.5, 0.9][: len(accuracies)]
    iis = iis_hf.inherent_interpretability_score(ratios, accuracies, standard_accuracy)
    settings = {"data": {"num_eval": num_eval}} if num_eval else {}
    return IISResult(iis, standard_accuracy, list(accuracies), ratios, settings=settings)


def test_a_head_beating_the_probe_makes_the_score_invalid_in_iis_json(tmp_path):
    weak_probe = result([0.90, 0.85, 0.80], 0.80, num_eval=200)  # A(0) beats A0 by 20 images
    assert weak_probe.iis > weak_probe.max_iis * 0.9 and not weak_probe.valid
    assert weak_probe.invalid_reason.startswith("probe weaker than heads: not a valid IIS (A(0) = 0.9000")
    weak_probe.save_json(tmp_path / "iis.json")
    saved = json.loads((tmp_path / "iis.json").read_text())
    assert saved["valid"] is False and saved["invalid_reason"] == weak_probe.invalid_reason
    assert IISResult.from_dict(saved).invalid_reason == weak_probe.invalid_reason  # derived, not stored twice
    assert "NOT A VALID IIS" in weak_probe.iis_text() and weak_probe.invalid_reason in weak_probe.table()
    assert weak_probe.to_metrics()["iis_valid"] == 0.0


def test_a_head_within_one_image_of_the_probe_is_noise_not_an_invalid_score():
    assert result([0.805, 0.7, 0.6], 0.80, num_eval=100).valid  # 0.5 images above A0
    assert not result([0.82, 0.7, 0.6], 0.80, num_eval=100).valid  # 2 images above A0
    assert (
        result([0.80, 0.7, 0.6], 0.80).valid
        and result([0.8, 0.7, 0.6], 0.80).to_metrics()["iis_valid"] == 1.0
    )
    assert not result([0.8 + 1e-6, 0.7, 0.6], 0.80).valid  # count unknown: any excess
    undefined = IISResult(None, 0.3, [0.3, 0.2], [0.0, 0.5])
    assert not undefined.valid and undefined.invalid_reason is None  # undefined has its own reason


def test_the_metric_flags_a_score_whose_heads_beat_the_standard_predictions():
    metric = iis_hf.load_metric()
    labels = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0] * 2
    heads = [[y, y] for y in labels]  # every head right
    standard = [1, 2, 0, *labels[3:]]  # the probe wrong 3 times in 20: heads beat it by 3 images
    out = metric.compute(
        predictions=heads, references=labels, standard_predictions=standard, sparsity_ratios=[0.0, 0.5]
    )
    assert out["iis"] > 0.5 and out["iis_valid"] == 0.0
    fine = metric.compute(
        predictions=heads, references=labels, standard_predictions=labels, sparsity_ratios=[0.0, 0.5]
    )
    assert fine["iis_valid"] == 1.0


def test_the_representations_config_refuses_too_few_scored_images():
    metric = iis_hf.load_metric("representations")
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    features = (rng.normal(size=(200, 8)) + labels[:, None] * 3).astype(np.float32)
    concepts = rng.normal(size=(6, 8)).astype(np.float32)
    with pytest.raises(ValueError) as refused:
        metric.compute(
            predictions=features,
            references=labels,
            concept_bank=concepts,
            epochs=1,
            sparsity_ratios=[0.0, 0.5],
        )
    message = str(refused.value)
    assert message.startswith("the representations config scored only 40 of the 200 representations")
    assert "\n" not in message and "at least 50 scored images" in message
    out = metric.compute(
        predictions=features,
        references=labels,
        concept_bank=concepts,
        epochs=1,
        sparsity_ratios=[0.0, 0.5],
        eval_fraction=0.3,
    )
    assert out["iis_num_eval"] == 60


def test_the_model_card_says_an_invalid_score_is_not_valid():
    from iis_hf.model_card import iis_section, results_table

    weak_probe = result([0.90, 0.85, 0.80], 0.80, num_eval=200)
    assert "NOT A VALID IIS" in results_table(weak_probe, None)
    assert "**Not a valid IIS.** Probe weaker than heads" in iis_section(weak_probe)
    assert "valid" not in iis_section(result([0.8, 0.7, 0.6], 0.8, num_eval=200)).lower()


def test_a_score_above_the_grids_maximum_is_invalid_even_when_each_head_is_within_noise():
    # every head under 1 image (of 200) above A0: each within noise, but the integral passes the grid's 0.9
    above = result([0.804, 0.804, 0.804], 0.80, num_eval=200)
    assert above.iis > above.max_iis and not above.valid
    assert (
        above.invalid_reason.startswith("above the grid's maximum") and above.to_metrics()["iis_valid"] == 0.0
    )
    flagged = result([0.8, 0.7, 0.6], 0.80, num_eval=200)
    flagged.uncertainty = {"ci": [0.7, 0.95], "confidence": 0.95}
    assert "past the grid's maximum 0.9" in flagged.iis_text()


def test_compare_lists_an_invalid_score_below_the_valid_ones_with_its_reason(tmp_path):
    from iis_hf.compare import Leaderboard

    invalid = result([0.90, 0.85, 0.80], 0.80, num_eval=200)  # the highest number, but not an IIS
    valid = result([0.8, 0.7, 0.6], 0.80, num_eval=200)
    board = Leaderboard.from_results({"beats-probe": invalid, "honest": valid})
    assert [e.name for e in board.entries] == ["honest", "beats-probe"]
    rows = board.rows()
    assert rows[0]["rank"] == 1 and rows[1]["rank"] is None and rows[1]["valid"] is False
    table = board.table().splitlines()
    assert table[2].lstrip().startswith("1") and "honest" in table[2]
    assert "beats-probe" in table[3] and "NOT A VALID IIS, not ranked: probe weaker than heads" in table[4]
    board.plot(tmp_path / "scatter.png")  # the invalid point is drawn as such, not as a result
    assert (tmp_path / "scatter.png").stat().st_size > 0


def test_model_index_never_carries_an_invalid_score_as_an_iis():
    from iis_hf.model_card import IIS_METRIC_TYPE, INVALID_IIS_METRIC_TYPE, eval_results

    invalid = result([0.90, 0.85, 0.80], 0.80, num_eval=200)
    (entry,) = eval_results(invalid, None, "digits", None, "test")
    assert (
        entry.metric_type == INVALID_IIS_METRIC_TYPE != IIS_METRIC_TYPE and "NOT VALID" in entry.metric_name
    )
    assert entry.metric_args["valid"] is False and "probe weaker" in entry.metric_args["not_valid_because"]
    (good,) = eval_results(result([0.8, 0.7, 0.6], 0.80, num_eval=200), None, "digits", None, "test")
    assert good.metric_type == IIS_METRIC_TYPE and good.metric_args["valid"] is True


def test_lr_decay_above_one_is_refused():
    from iis_hf import HeadsConfig
    from iis_hf.errors import IISError

    with pytest.raises(IISError, match=r"lr_decay must be a number in \(0, 1\], got 1.5: a factor per epoch"):
        HeadsConfig(lr_decay=1.5)
    assert HeadsConfig(lr_decay=1.0).lr_decay == 1.0
