"""`iis_paper.budget_check`: every checkpoint scored at the default and at the doubled head budget,
rows appended as measured (a rerun scores nothing), and the summary of their differences."""

from __future__ import annotations

import json

import pytest
from iis_paper import budget_check

from iis_hf.config import HeadsConfig


def test_the_doubled_budget_doubles_every_budget_of_the_converged_recipe():
    for name, value in budget_check.DOUBLED.items():
        assert value == 2 * getattr(HeadsConfig(), name)


@pytest.fixture
def fake(monkeypatch):
    """Checkpoints without training, scores without heads: what each call was asked for."""
    calls = []
    monkeypatch.setattr(budget_check, "load_named_dataset", lambda *a, **k: {"train": [], "test": []})
    monkeypatch.setattr(
        budget_check,
        "train_with_checkpoints",
        lambda name, data, epochs, seed: {e: (name, e) for e in epochs},
    )

    def score(model, data, **kwargs):
        calls.append((model, kwargs["heads"]))
        name, epoch = model
        iis = 0.5 + 0.1 * epoch + (0.001 if kwargs["heads"] else 0.0) + (0.05 if name == "b" else 0.0)
        return {"concepts": {"prototype": {"iis": iis, "probe_accuracy": 0.6 + 0.1 * epoch}}}

    monkeypatch.setattr(budget_check, "score_checkpoint", score)
    return calls


def test_every_checkpoint_twice_resumable_and_summarised(fake, tmp_path):
    argv = ["--output-dir", str(tmp_path), "--models", "a", "b", "--epochs", "0", "1", "2"]
    assert budget_check.main(argv) == 0
    assert len(fake) == 12 and sum(heads == budget_check.DOUBLED for _, heads in fake) == 6
    summary = json.loads((tmp_path / "results.json").read_text())
    assert len(summary["checkpoints"]) == 6
    assert summary["max_abs_difference"] == pytest.approx(0.001)
    assert summary["spearman_default"] == pytest.approx(summary["spearman_doubled"])
    assert budget_check.main(argv) == 0 and len(fake) == 12  # a rerun scores nothing
