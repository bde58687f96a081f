"""The IIS integral, the result object, and compute_iis end to end on planted features."""

from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pytest
import torch

from iis_hf import IISResult, compute_iis, inherent_interpretability_score
from iis_hf.config import DEFAULT_SPARSITY_RATIOS
from iis_hf.score import warn_if_probe_is_weak


def test_integral_matches_hand_computation():
    # y = A/A0 = [1, 0.75, 0.5]; trapezoids (1 + .75)/2 * .5 + (.75 + .5)/2 * .4 = .4375 + .25
    assert inherent_interpretability_score([0.0, 0.5, 0.9], [0.8, 0.6, 0.4], 0.8) == pytest.approx(0.6875)


def test_integral_is_not_renormalised_by_the_grid_span():
    perfect = inherent_interpretability_score(DEFAULT_SPARSITY_RATIOS, [0.9] * 8, 0.9)
    assert perfect == pytest.approx(0.98)
    half = inherent_interpretability_score(DEFAULT_SPARSITY_RATIOS, [0.45] * 8, 0.9)
    assert half == pytest.approx(0.49)


def test_integral_does_not_depend_on_input_order():
    ratios, accs = [0.0, 0.1, 0.5, 0.9], [0.9, 0.85, 0.6, 0.2]
    reference = inherent_interpretability_score(ratios, accs, 0.9)
    perm = [2, 0, 3, 1]
    shuffled = inherent_interpretability_score([ratios[i] for i in perm], [accs[i] for i in perm], 0.9)
    assert shuffled == pytest.approx(reference)
    assert reference == pytest.approx(
        sum((accs[i] + accs[i + 1]) / 0.9 * (ratios[i + 1] - ratios[i]) / 2 for i in range(3))
    )


@pytest.mark.parametrize(
    "ratios, accs, a0, message",
    [
        ([0.0, 0.5], [0.5], 0.8, "one accuracy per ratio"),
        ([0.0], [0.5], 0.8, "at least 2"),
        ([0.0, 1.0], [0.5, 0.4], 0.8, "outside [0, 1)"),
        ([-0.1, 0.5], [0.5, 0.4], 0.8, "outside [0, 1)"),
        ([0.5, 0.5], [0.5, 0.4], 0.8, "duplicate"),
        ([0.0, 0.5], [0.5, 0.4], 0.0, "must be in (0, 1]"),
        ([0.0, 0.5], [0.5, 0.4], -1.0, "must be in (0, 1]"),
        ([0.0, 0.5], [0.5, 0.4], 1.5, "must be in (0, 1]"),
        ([0.0, 0.5], [1.5, 0.8], 1.0, "accuracies must be in [0, 1]"),
        ([0.0, 0.5], [-0.2, 0.8], 1.0, "accuracies must be in [0, 1]"),
        ([0.0, 0.5], [math.nan, 0.4], 0.8, "NaN"),
        ([0.0, math.nan], [0.5, 0.4], 0.8, "outside [0, 1)"),
        ([0.0, 0.5], [0.5, 0.4], math.nan, "NaN"),
    ],
)
def test_integral_rejects_bad_input(ratios, accs, a0, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        inherent_interpretability_score(ratios, accs, a0)


def test_result_round_trips_through_json(tmp_path):
    result = IISResult(iis=0.5, standard_accuracy=0.9, accuracies=[0.9, 0.3], sparsity_ratios=[0.0, 0.9])
    path = tmp_path / "iis.json"
    result.save_json(path)
    loaded = IISResult.from_dict(json.loads(path.read_text()))
    assert loaded == result
    assert loaded.relative_accuracies == pytest.approx([1.0, 1 / 3])
    assert "IIS = 0.5000" in result.table()
    with pytest.raises(ValueError, match="missing keys"):
        IISResult.from_dict({"iis": 1.0})


def test_plot_writes_a_png(tmp_path):
    result = IISResult(
        iis=0.5, standard_accuracy=0.9, accuracies=[0.9, 0.6, 0.3], sparsity_ratios=[0.0, 0.5, 0.9]
    )
    path = tmp_path / "curve.png"
    result.plot(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]  # no temporary file left behind


def test_weak_probe_warns():
    weak = IISResult(iis=1.2, standard_accuracy=0.5, accuracies=[0.6, 0.55], sparsity_ratios=[0.0, 0.5])
    with pytest.warns(UserWarning, match="has not converged"):
        warn_if_probe_is_weak(weak)
    fine = IISResult(iis=0.4, standard_accuracy=0.9, accuracies=[0.9, 0.7], sparsity_ratios=[0.0, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_probe_is_weak(fine)


def planted(n, dim=16, classes=4, noise=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 1.5
    labels = torch.randint(0, classes, (n,), generator=generator)
    return means[labels] + noise * torch.randn(n, dim, generator=generator), labels


def hidden_signal(x, seed=0):
    """Class signal shrunk under loud nuisance dimensions: a standardised probe still reads it, but
    the strongest concept activations are nuisance, so sparse interpretations lose accuracy."""
    noise = torch.randn(x.shape[0], 48, generator=torch.Generator().manual_seed(seed)) * 20
    return torch.cat([0.05 * x, noise], dim=1)


def test_compute_iis_separates_interpretable_from_entangled_representations():
    x, y = planted(1200)
    xe, ye = planted(400, seed=1)
    concepts = torch.randn(40, 16, generator=torch.Generator().manual_seed(5))
    good = compute_iis(x, y, xe, ye, concepts, epochs=8, progress=False)
    wide = torch.randn(40, 64, generator=torch.Generator().manual_seed(5))
    entangled = compute_iis(hidden_signal(x), y, hidden_signal(xe, 1), ye, wide, epochs=8, progress=False)
    assert good.standard_accuracy > 0.9 and entangled.standard_accuracy > 0.85
    assert good.iis > 0.8 and entangled.iis < good.iis - 0.2
    assert max(good.relative_accuracies) <= 1.0  # the converged probe is not beaten by the heads
    assert len(good.accuracies) == 8 and good.sparsity_ratios == list(DEFAULT_SPARSITY_RATIOS)
    assert good.num_concepts == 40 and good.num_classes == 4
    expected = inherent_interpretability_score(good.sparsity_ratios, good.accuracies, good.standard_accuracy)
    assert good.iis == pytest.approx(expected)
    json.dumps(good.to_dict())  # serialisable as is


def test_a_probe_with_the_heads_small_budget_stays_below_them_and_the_minimum_fixes_it():
    x, y = planted(1200)
    xe, ye = planted(400, seed=1)
    concepts = torch.randn(40, 16, generator=torch.Generator().manual_seed(5))
    with pytest.warns(UserWarning, match="has not converged"):
        published = compute_iis(x, y, xe, ye, concepts, epochs=3, progress=False, probe_min_steps=0)
    converged = compute_iis(x, y, xe, ye, concepts, epochs=3, progress=False)
    assert published.metadata["probe_steps"] == 6 and converged.metadata["probe_steps"] >= 1000
    assert converged.standard_accuracy > published.standard_accuracy
    assert converged.iis < published.iis and max(converged.relative_accuracies) <= 1.0


def test_compute_iis_model_selection_modes():
    x, y = planted(600)
    xe, ye = planted(300, seed=1)
    concepts = torch.randn(20, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        best = compute_iis(x, y, xe, ye, concepts, epochs=4, progress=False, sparsity_ratios=[0, 0.9])
        last = compute_iis(
            x, y, xe, ye, concepts, epochs=4, progress=False, sparsity_ratios=[0, 0.9], model_selection="last"
        )
        held = compute_iis(
            x,
            y,
            xe,
            ye,
            concepts,
            epochs=4,
            progress=False,
            sparsity_ratios=[0, 0.9],
            model_selection="holdout",
            holdout_fraction=0.2,
        )
    assert last.best_epochs == [3, 3]
    assert all(b >= a for b, a in zip(best.accuracies, last.accuracies))  # best-on-eval is optimistic
    assert held.settings["data"]["num_train"] == 600 and held.settings["heads"]["holdout_fraction"] == 0.2
    with pytest.raises(ValueError, match="model_selection"):
        compute_iis(x, y, xe, ye, concepts, epochs=1, progress=False, model_selection="best")


def test_compute_iis_learning_rate_grid_keeps_the_best_per_ratio():
    x, y = planted(600)
    xe, ye = planted(300, seed=1)
    concepts = torch.randn(20, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid = compute_iis(
            x,
            y,
            xe,
            ye,
            concepts,
            epochs=3,
            progress=False,
            learning_rate=[1e-3, 1e-2, 1e-1],
            sparsity_ratios=[0, 0.9],
        )
        singles = [
            compute_iis(
                x, y, xe, ye, concepts, epochs=3, progress=False, learning_rate=lr, sparsity_ratios=[0, 0.9]
            )
            for lr in (1e-3, 1e-2, 1e-1)
        ]
    for i in range(2):
        assert grid.accuracies[i] == pytest.approx(max(s.accuracies[i] for s in singles))
    assert grid.standard_accuracy == pytest.approx(max(s.standard_accuracy for s in singles))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(train_labels=np.zeros(50, dtype=int)), "single class"),
        (dict(train_labels=np.arange(49) % 3), "50 feature rows but 49 labels"),
        (dict(eval_labels=np.full(20, 7)), r"labels must be in \[0, 3\)"),
        (dict(train_features=np.full((50, 8), np.nan)), "NaN or inf"),
        (dict(eval_features=np.ones((20, 5))), "dimension"),
        (dict(concepts=np.ones((4, 5))), "built for another model"),
        (dict(train_features=np.ones(50)), "2-D"),
        (dict(train_labels=np.linspace(0, 2, 50)), "integer class ids"),
    ],
)
def test_compute_iis_rejects_bad_input(change, message):
    rng = np.random.default_rng(0)
    kwargs = dict(
        train_features=rng.normal(size=(50, 8)),
        train_labels=np.arange(50) % 3,
        eval_features=rng.normal(size=(20, 8)),
        eval_labels=np.arange(20) % 3,
        concepts=rng.normal(size=(6, 8)),
    )
    kwargs.update(change)
    with pytest.raises(ValueError, match=message):
        compute_iis(**kwargs, epochs=1, progress=False, num_classes=3 if "eval_labels" in change else None)
