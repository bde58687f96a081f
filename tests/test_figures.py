"""Figures a person reads: names whole and where they belong, titles that say what was measured."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib.figure
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

import iis_hf
import iis_hf.compare
from iis_hf.config import ExtractionConfig, HeadsConfig
from iis_hf.plotting import (
    _wrap,
    describe_settings,
    model_colors,
    plot_explanation,
    plot_iis_curve,
    plot_iis_curves,
    plot_iis_vs_accuracy,
)


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


# ---------------------------------------------------------------------------- what a figure says
def renderer_of(fig):
    return FigureCanvasAgg(fig).get_renderer()  # pyplot detached the closed figure from its canvas


def assert_title_fits(fig, ax, words: str) -> None:
    """The title keeps every word of `words` and lies within the axes' width, as the figure renders it."""
    renderer = renderer_of(fig)
    title = ax.title.get_window_extent(renderer)
    box = ax.get_window_extent(renderer)
    assert box.x0 - 1 <= title.x0 and title.x1 <= box.x1 + 1, (title, box, ax.get_title())
    assert ax.get_title().split() == words.split()  # rewrapped, nothing cut


def result(
    name_kind="prototype-patches", protocol="converged", seeds=None, a0=0.9, accuracies=(0.9, 0.7, 0.4)
):
    uncertainty = None
    if seeds:
        uncertainty = {"ci": [0.5, 0.7], "sd": 0.02, "num_seeds": seeds, "confidence": 0.95,
                       "accuracies_sd": [0.08, 0.12, 0.1]}  # fmt: skip
    return iis_hf.IISResult(
        iis=0.6,
        standard_accuracy=a0,
        accuracies=list(accuracies),
        sparsity_ratios=[0.0, 0.5, 0.9],
        protocol=protocol,
        uncertainty=uncertainty,
        settings={
            # a complete record, as iis-hf writes it (compare refuses one that lacks a setting)
            "heads": HeadsConfig(sparsity_ratios=[0.0, 0.5, 0.9], epochs=30, protocol=protocol).recorded(),
            "extraction": ExtractionConfig().recorded(),
            "concepts": {"kind": name_kind, "num_concepts": 200},
            "data": {
                "dataset": "/data/a-dataset-with-a-long-name/validation-images",
                "eval_split": "validation",
            },
        },
    )


def test_a_curve_title_names_the_concept_kind_and_the_protocol(tmp_path, figures):
    plot_iis_curves({"": result(protocol="paper", seeds=3)}, tmp_path / "c.png", title="IIS of m on d")
    ax = figures[-1].axes[0]
    assert ax.get_title().startswith("IIS of m on d\n")
    assert "200 prototype-patches concepts · paper protocol, 3 seeds" in ax.get_title()
    assert describe_settings([result(name_kind="text")]) == "200 text concepts · converged protocol"


def test_long_titles_are_wrapped_to_fit_the_axes(tmp_path, figures):
    heading = "IIS vs accuracy on /data/a-dataset-with-a-long-name/validation-images"
    settings = "200 prototype-patches concepts · 8 ratios up to 0.98 · converged protocol · eval: validation"
    points = [{"name": "m", "standard_accuracy": 0.9, "iis": 0.6}]
    plot_iis_vs_accuracy(points, tmp_path / "s.png", title=f"{heading}\n{settings}", max_iis=0.98)
    assert_title_fits(figures[-1], figures[-1].axes[0], f"{heading} {settings}")
    assert "eval: validation" in figures[-1].axes[0].get_title()  # not "eval: validatio"
    model = "someone/" + "a-very-long-model-name-" * 4  # one word, longer than the axes
    plot_iis_curve(result(), tmp_path / "c.png", title=f"IIS of {model}")
    title = figures[-1].axes[0].get_title()
    renderer = renderer_of(figures[-1])
    ax = figures[-1].axes[0]
    assert ax.title.get_window_extent(renderer).x1 <= ax.get_window_extent(renderer).x1 + 1
    assert model in title.replace("\n", "")  # broken across lines, whole


def test_the_seed_band_stays_inside_the_axes_and_leaves_the_a0_label_visible(tmp_path, figures):
    # The paper protocol with 3 seeds: A(rho)/A0 near and above 1, with a wide band around it.
    above = result(protocol="paper", seeds=3, a0=0.9, accuracies=(0.93, 0.92, 0.85))
    plot_iis_curve(above, tmp_path / "c.png")
    fig = figures[-1]
    ax = fig.axes[0]
    band_top = max(
        path.vertices[:, 1].max() for collection in ax.collections for path in collection.get_paths()
    )
    assert band_top <= ax.get_ylim()[1]  # the band does not run off the top
    (label,) = [t for t in ax.texts if t.get_text() == "standard accuracy A0"]
    renderer = renderer_of(fig)
    inside = ax.get_window_extent(renderer)
    extent = label.get_window_extent(renderer)
    assert (
        inside.x0 <= extent.x0
        and extent.x1 <= inside.x1
        and inside.y0 <= extent.y0
        and extent.y1 <= inside.y1
    )
    assert label.get_zorder() > max(c.get_zorder() for c in [*ax.collections, *ax.lines])  # drawn on top
    assert (
        label.get_bbox_patch() is not None and label.get_bbox_patch().get_alpha() >= 0.8
    )  # on its own ground


def drawn_colors(fig) -> dict[str, tuple]:
    """The colour each model is drawn in: the scatter's point beside its name, or a curve's legend line."""
    from matplotlib.colors import to_rgba

    ax = fig.axes[0]
    legend = ax.get_legend()
    if legend is not None and any(": IIS" in t.get_text() for t in legend.get_texts()):
        return {
            text.get_text().split(": IIS")[0]: to_rgba(line.get_color())
            for text, line in zip(legend.get_texts(), legend.get_lines())
        }
    colors = {}
    for text in ax.texts:
        for collection in ax.collections:
            offsets = collection.get_offsets()
            if len(offsets) == 1 and tuple(offsets[0]) == tuple(text.xy):
                colors[text.get_text()] = tuple(collection.get_edgecolor()[0])
    return colors


def test_compare_gives_each_model_the_same_colour_in_both_figures(tmp_path, figures):
    # Ranked by IIS: b, c, a; by accuracy (the scatter's old order): c, a, b.
    results = {
        "a": result(a0=0.95, accuracies=(0.95, 0.5, 0.2)),
        "b": result(a0=0.99, accuracies=(0.99, 0.98, 0.95)),
        "c": result(a0=0.90, accuracies=(0.9, 0.8, 0.6)),
    }
    for name, r in results.items():
        r.iis = {"a": 0.4, "b": 0.9, "c": 0.7}[name]
    board = iis_hf.compare.Leaderboard.from_results(results)
    board.save(tmp_path / "board")
    scatter, curves = figures[-2:]
    assert drawn_colors(scatter) == drawn_colors(curves) and set(drawn_colors(scatter)) == set(results)
    assert len(set(drawn_colors(scatter).values())) == 3
    assert model_colors(["b", "c", "a"]) == board.colors() == {"b": "C0", "c": "C1", "a": "C2"}
    assert_title_fits(scatter, scatter.axes[0], scatter.axes[0].get_title())
    assert_title_fits(curves, curves.axes[0], curves.axes[0].get_title())
    assert (
        "prototype-patches" in curves.axes[0].get_title()
        and "converged protocol" in curves.axes[0].get_title()
    )


def test_no_plotting_function_is_over_80_lines():
    import ast
    import inspect

    import iis_hf.plotting

    tree = ast.parse(inspect.getsource(iis_hf.plotting))
    lengths = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    assert max(lengths.values()) <= 80, {name: n for name, n in lengths.items() if n > 80}
