"""Figures a person reads: names whole and where they belong, titles that say what was measured."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib.figure
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

from iis_hf.plotting import _wrap, plot_explanation, plot_iis_vs_accuracy


@pytest.fixture
def figures(monkeypatch):
    """Every matplotlib figure saved during the test, kept for inspection."""
    saved = []
    real = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kwargs):
        saved.append(fig)
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    return saved


def explanation(names, thumbnails=True):
    concepts = [
        SimpleNamespace(
            name=n, contribution=0.5 - 0.2 * i, thumbnail=torch.rand(3, 32, 32) if thumbnails else None
        )
        for i, n in enumerate(names)
    ]
    return SimpleNamespace(
        concepts=concepts, image=torch.rand(32, 32, 3).numpy(), num_active=40, concept_kind="prototype-patches",
        sparsity_ratio=0.9, other_contribution=0.3, bias=-0.1, logit=1.2, label="coffee", probability=0.8,
    )  # fmt: skip


def test_prototype_names_break_after_their_class_and_long_names_end_in_an_ellipsis():
    assert _wrap("coffee · image 186 · patch (0,2)") == "coffee\nimage 186 · patch (0,2)"
    long = _wrap(
        "a concept whose name goes on and on and on, far longer than any label of a bar should ever be"
    )
    assert long.count("\n") == 2 and long.endswith("…")
    assert _wrap("red") == "red"


@pytest.mark.parametrize("thumbnails", [True, False], ids=["thumbnails", "names only"])
def test_explanation_names_are_whole_and_sit_next_to_the_image(thumbnails, tmp_path, figures):
    names = ["coffee · image 186 · patch (0,2)", "espresso machine · image 7 · patch (3,3)", "red", "striped"]
    plot_explanation(explanation(names, thumbnails), tmp_path / "e.png")
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    fig = figures[-1]
    renderer = FigureCanvasAgg(fig).get_renderer()  # pyplot detached the closed figure from its canvas
    image_ax, bars = fig.axes[:2]
    labels = [t for t in bars.get_yticklabels() if t.get_text()]
    assert [t.get_text() for t in labels][:2] == [
        "coffee\nimage 186 · patch (0,2)",
        "espresso machine\nimage 7 · patch (3,3)",
    ]  # whole, not "coffee · image 186 · patch (0..."
    extents = [t.get_window_extent(renderer) for t in labels]
    image_right = image_ax.get_window_extent(renderer).x1
    names_left = min(e.x0 for e in extents)
    width = fig.bbox.width
    assert 0 <= names_left - image_right <= 0.05 * width  # no overlap with the image, and no wide empty band
    thumbnail = 36 * fig.dpi / 72 if thumbnails else 0
    assert max(e.x1 for e in extents) + thumbnail <= bars.get_window_extent(renderer).x0 + 1


def test_the_scatter_names_every_model_and_stops_at_accuracy_one(tmp_path, figures):
    points = [
        {"name": "trained", "standard_accuracy": 1.0, "iis": 0.96, "ci": [0.95, 0.97]},
        {"name": "random-init", "standard_accuracy": 0.97, "iis": 0.64, "ci": [0.61, 0.67]},
        {"name": "theirs", "standard_accuracy": 0.99, "iis": 0.9, "source": "card"},
        {"name": "broken", "standard_accuracy": 0.1, "iis": None},
    ]
    plot_iis_vs_accuracy(points, tmp_path / "s.png", title="IIS vs accuracy on digits", max_iis=0.98)
    ax = figures[-1].axes[0]
    texts = {t.get_text() for t in ax.texts}
    assert {"trained", "random-init", "theirs (card)"} <= texts
    assert "broken" in ax.get_title() and "undefined" in ax.get_title()
    assert max(ax.get_xticks()) <= 1.0 and ax.get_xlim()[1] < 1.01
    assert ax.get_legend() is not None  # filled: scored here; hollow: read from a card


def test_a_score_figure_names_the_model_and_the_dataset(tiny_models, tmp_path, monkeypatch):
    from conftest import make_image_dataset

    import iis_hf.outputs
    from iis_hf.cli import main

    dataset = tmp_path / "colours"
    make_image_dataset(num_classes=3, per_class=6).save_to_disk(str(dataset))
    titles = []
    real = iis_hf.outputs.plot_iis_curves
    monkeypatch.setattr(
        iis_hf.outputs, "plot_iis_curves", lambda r, p, title=None: titles.append(title) or real(r, p, title)
    )
    model = tiny_models("vit")
    args = ["score", "--model", model, "--dataset", str(dataset), "--output-dir", str(tmp_path / "out"),
            "--epochs", "2", "--num-concepts", "10", "--images-per-class", "2", "--sparsity-ratios", "0", "0.5",
            "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert titles == [f"IIS of {model} on {dataset}"]
