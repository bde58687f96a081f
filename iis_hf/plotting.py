"""Every figure iis-hf draws: IIS curves, leaderboards (IIS vs accuracy), and explanations of predictions.

Functions take result objects by duck typing (`IISResult`, `Explanation`) and write PNGs atomically.
Each figure says what was measured (the concept kind and the protocol), gives a model the same colour
in every figure of a comparison (`model_colors`), and keeps its titles inside the axes (`fit_text`).
"""

from __future__ import annotations

import contextlib
import io
import os
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .files import write_bytes_atomic

PALETTE_SIZE = 10  # matplotlib's default colour cycle, "C0" ... "C9"
LEGEND_CHARS = 64  # a curve's legend entry (its IIS, interval and validity) wraps at this many characters


@contextlib.contextmanager
def png_figure(path: str | os.PathLike, **figure_kwargs) -> Iterator:
    """A matplotlib figure (Agg: no display needed) written to `path` as a PNG when the block ends
    without error: atomically, so a failed drawing leaves no half-written file; always closed."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig = plt.figure(**figure_kwargs)
    try:
        yield fig
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------------------- shared pieces
def model_colors(names: Sequence[str]) -> dict[str, str]:
    """One colour per model, from its position in `names` (a leaderboard's order): figures drawn with
    the same names give a model the same colour (colours repeat after `PALETTE_SIZE` models)."""
    return {name: f"C{i % PALETTE_SIZE}" for i, name in enumerate(dict.fromkeys(names))}


def describe_settings(results: Sequence) -> str:
    """What the scores were measured with, for a title: the concepts (number and kind) and the protocol
    (with the number of seeds when several), e.g. "200 prototype-patches concepts · converged protocol".
    Results measured differently each get their phrase, joined by " / "."""
    phrases = []
    for result in results:
        concepts = (getattr(result, "settings", None) or {}).get("concepts") or {}
        kind = concepts.get("kind")
        number = concepts.get("num_concepts") or getattr(result, "num_concepts", None)
        parts = [f"{number} {kind} concepts" if number and kind else f"{kind} concepts" if kind else None]
        protocol = getattr(result, "protocol", "converged")
        seeds = (getattr(result, "uncertainty", None) or {}).get("num_seeds")
        if protocol is None:
            parts.append("heads trained by the caller")
        else:
            parts.append(f"{protocol} protocol" + (f", {seeds} seeds" if seeds and seeds > 1 else ""))
        phrase = " · ".join(p for p in parts if p)
        if phrase not in phrases:
            phrases.append(phrase)
    return " / ".join(phrases)


def renderer_of(fig):
    """The figure's renderer, to measure text (a canvas is attached when pyplot's backend has none)."""
    if not hasattr(fig.canvas, "get_renderer"):  # a pyplot backend that does not render with Agg
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    return fig.canvas.get_renderer()


def fit_text(text, width: float, renderer) -> bool:
    """Rewrap a matplotlib Text (title, suptitle) at spaces until it is at most `width` pixels wide,
    as measured by `renderer`; a word longer than a line (a model path) is broken. Returns whether
    it was rewrapped."""
    if text.get_window_extent(renderer).width <= width:
        return False
    lines = text.get_text().split("\n")
    for chars in range(max(len(line) for line in lines) - 1, 7, -1):
        text.set_text("\n".join(wrapped for line in lines for wrapped in _wrap_line(line, chars)))
        if text.get_window_extent(renderer).width <= width:
            break
    return True


def _wrap_line(line: str, chars: int) -> list[str]:
    return textwrap.wrap(line, chars, break_on_hyphens=False) or [line]


def layout_with_title(fig, ax) -> None:
    """`tight_layout`, with the axes' title rewrapped to fit the axes' width (a long model path, Hub id
    or settings line stays whole and inside the figure instead of running off its edge)."""
    renderer = renderer_of(fig)
    fit_text(ax.title, 0.8 * fig.bbox.width, renderer)  # first a safe width, so the layout is sane
    fig.tight_layout()
    for _ in range(3):  # the layout's axes may be narrower than guessed: fit, lay out again
        if not fit_text(ax.title, ax.get_window_extent(renderer).width, renderer):
            break
        fig.tight_layout()


def _short(text: str, width: int = 38) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------------------- IIS curves
def plot_iis_curve(result, path: str | os.PathLike, title: str | None = None) -> None:
    """One curve `A(rho)/A0` with its area (the IIS) shaded."""
    plot_iis_curves({"": result}, path, title=title)


def plot_iis_curves(
    results: Mapping[str, object],
    path: str | os.PathLike,
    title: str | None = None,
    *,
    colors: Mapping[str, str] | None = None,
    subtitle: str | None = None,
) -> None:
    """Several labelled curves on one figure (e.g. a random-init and a trained backbone).

    Each curve is ``A(rho)/A0`` with its area (the IIS) shaded; with several seeds a band shows
    one standard deviation of the seeds' accuracies around the mean. The title's second line says
    what was measured (`subtitle`, default `describe_settings`: concept kind and protocol);
    `colors` maps each label to its colour (default `model_colors` of the labels, in order).
    """
    colors = {**model_colors(list(results)), **(colors or {})}
    with png_figure(path, figsize=(6.6, 4.3), dpi=120) as fig:
        ax = fig.add_subplot()
        tops = [
            _draw_curve(ax, label, result, colors[label], shade=0.15 if len(results) > 1 else 0.25)
            for label, result in results.items()
        ]
        _draw_standard_accuracy_line(ax)
        ax.set_ylim(0, max(1.1, max(tops) * 1.06))  # the seed bands stay inside, under the A0 label
        ax.set_xlim(-0.02, 1.0)  # room for the markers at rho = 0
        ax.set_xlabel("sparsity ratio ρ (fraction of concepts dropped)")
        ax.set_ylabel("interpretation accuracy / standard accuracy")
        heading = title or "Inherent interpretability: accuracy kept under sparse interpretation"
        settings = describe_settings(list(results.values())) if subtitle is None else subtitle
        ax.set_title(heading + (f"\n{settings}" if settings else ""), fontsize=10)
        ax.legend(loc="lower left", fontsize=8)
        ax.grid(alpha=0.3)
        layout_with_title(fig, ax)


def _draw_standard_accuracy_line(ax) -> None:
    """The dashed line at A(rho)/A0 = 1, labelled at its right end (where curves have fallen), on a
    background of its own so a curve or a seed band under it never hides it."""
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.annotate(
        "standard accuracy A0",
        xy=(1.0, 1.0),
        xycoords=("axes fraction", "data"),
        xytext=(-4, 3),
        textcoords="offset points",
        color="grey",
        fontsize=8,
        ha="right",
        va="bottom",
        zorder=5,
        bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
    )


def _draw_curve(ax, label: str, result, color: str, shade: float) -> float:
    """One result's curve, its shaded area and its seed band; returns the highest value drawn."""
    order = sorted(range(len(result.sparsity_ratios)), key=lambda j: result.sparsity_ratios[j])
    x = [result.sparsity_ratios[j] for j in order]
    y = [result.relative_accuracies[j] for j in order]
    score = result.iis_text(3) if hasattr(result, "iis_text") else f"{result.iis:.3f}"
    name = f"{label}: IIS {score}" if label else f"IIS {score}"
    label = "\n".join(_wrap_line(f"{name} (A0 {result.standard_accuracy:.3f})", LEGEND_CHARS))
    ax.plot(x, y, "o-", color=color, label=label, clip_on=False)  # a long interval wraps, inside the axes
    ax.fill_between(x, y, alpha=shade, color=color)
    spread = (getattr(result, "uncertainty", None) or {}).get("accuracies_sd")
    if not spread:
        return max(y)
    sd = [spread[j] / result.standard_accuracy for j in order]
    upper = [a + d for a, d in zip(y, sd)]
    ax.fill_between(x, [a - d for a, d in zip(y, sd)], upper, alpha=0.3, color=color, lw=0)
    return max(upper)


# ---------------------------------------------------------------------------- comparisons
def plot_iis_vs_accuracy(
    points: Sequence[Mapping],
    path: str | os.PathLike,
    title: str | None = None,
    max_iis: float | None = None,
    *,
    colors: Mapping[str, str] | None = None,
) -> None:
    """The accuracy-vs-IIS scatter of a leaderboard: x = A0, y = IIS, one named point per model.

    Each point is a mapping with ``name``, ``standard_accuracy``, ``iis`` and optionally ``ci``
    ((low, high): drawn as an error bar), ``source`` ("card": read from a model card, drawn
    hollow) and ``valid`` (False: drawn as a grey cross labelled NOT A VALID IIS, no error bar). Points whose IIS is None are left out (listed under the axes). `max_iis` draws the
    score of a representation that loses nothing on the ratio grid. `colors` maps names to colours
    (default `model_colors` of the names in the order given, a leaderboard's).
    """
    shown = [p for p in points if p.get("iis") is not None]
    missing = [p["name"] for p in points if p.get("iis") is None]
    colors = {**model_colors([p["name"] for p in points]), **(colors or {})}
    low_x, high_x = _accuracy_range([p["standard_accuracy"] for p in shown])
    with png_figure(path, figsize=(6.6, 4.6), dpi=120) as fig:
        ax = fig.add_subplot()
        for i, point in enumerate(sorted(shown, key=lambda p: (p["standard_accuracy"], p["iis"]))):
            left = point["standard_accuracy"] > low_x + 0.6 * (high_x - low_x)
            _draw_point(ax, point, colors[point["name"]], left=left, above=i % 2 == 0)
        ys = [v for p in shown for v in (p["iis"], *(c for c in (p.get("ci") or ()) if c is not None))]
        if max_iis is not None:
            _draw_max_iis(ax, max_iis)
            ys.append(max_iis)
        ys = ys or [0.0]
        y_pad = max(0.02, 0.08 * (max(ys) - min(ys)))
        ax.set_xlim(low_x, high_x)
        ax.set_xticks([t for t in ax.get_xticks() if low_x <= t <= 1.0 + 1e-9])  # no tick above accuracy 1
        ax.set_ylim(max(0.0, min(ys) - y_pad), max(ys) + y_pad)
        if any(p.get("source") == "card" for p in shown):
            _source_legend(ax)
        ax.set_xlabel("standard accuracy A0 (linear probe on the representation)")
        ax.set_ylabel("IIS (error bar: 95% interval)")
        note = "\nnot shown, IIS undefined (A0 at chance): " + ", ".join(missing) if missing else ""
        ax.set_title((title or "Interpretability vs accuracy") + note, fontsize=10)
        ax.grid(alpha=0.3)
        layout_with_title(fig, ax)


def _accuracy_range(xs: Sequence[float]) -> tuple[float, float]:
    """The scatter's x range: the accuracies with a margin, and no axis beyond accuracy 1."""
    xs = list(xs) or [0.0, 1.0]
    x_pad = max(0.01, 0.08 * (max(xs) - min(xs)))
    low_x, high_x = min(xs) - x_pad, max(xs) + x_pad
    if high_x > 1.0:  # accuracy stops at 1: no axis beyond it, only room for the marker
        high_x = 1.0 + 0.2 * x_pad
    return low_x, high_x


def _draw_point(ax, point: Mapping, color: str, *, left: bool, above: bool) -> None:
    """One model: its interval as an error bar, its point (hollow when read from a card), and its name
    beside it on the side with more room (`left`), a little above or below it (`above`, alternated
    along the accuracy axis so that neighbours do not write over each other)."""
    x, y = point["standard_accuracy"], point["iis"]
    low, high = point.get("ci") or (None, None)
    card = point.get("source") == "card"
    invalid = point.get("valid") is False
    if invalid:  # a number that is not an IIS: a grey cross, named as such
        ax.scatter([x], [y], s=70, zorder=3, marker="x", color="0.45", linewidths=2.0)
        ax.annotate(
            _short(point["name"], 30) + " (NOT A VALID IIS)", xy=(x, y), xytext=(-9 if left else 9, 7 if above else -9),
            textcoords="offset points", fontsize=8, color="0.35", ha="right" if left else "left", va="center",
        )  # fmt: skip
        return
    if low is not None and high is not None:
        ax.errorbar(
            x, y, yerr=[[max(0.0, y - low)], [max(0.0, high - y)]], fmt="none", ecolor=color,
            elinewidth=1.2, capsize=4, alpha=0.8, zorder=2,
        )  # fmt: skip
    ax.scatter([x], [y], s=60, zorder=3, color="white" if card else color, edgecolors=color, linewidths=1.8)
    ax.annotate(
        _short(point["name"], 34) + (" (card)" if card else ""),
        xy=(x, y),
        xytext=(-9 if left else 9, 7 if above else -9),
        textcoords="offset points",
        fontsize=8,
        color="0.15",
        ha="right" if left else "left",
        va="center",
    )


def _draw_max_iis(ax, max_iis: float) -> None:
    """The dashed line of a representation that loses nothing on the ratio grid."""
    ax.axhline(max_iis, color="grey", linestyle="--", linewidth=1)
    ax.annotate(
        f"no accuracy lost at any ratio ({max_iis:g})",
        xy=(0.0, max_iis),
        xycoords=("axes fraction", "data"),
        xytext=(6, -3),
        textcoords="offset points",
        color="grey",
        fontsize=8,
        va="top",
    )


def _source_legend(ax) -> None:
    """Filled: scored here; hollow: read from a model card."""
    from matplotlib.lines import Line2D

    marker: dict[str, Any] = dict(
        marker="o", linestyle="", markersize=7, markeredgecolor="0.3", markeredgewidth=1.5
    )
    ax.legend(
        handles=[
            Line2D([], [], markerfacecolor="0.3", label="scored here", **marker),
            Line2D([], [], markerfacecolor="white", label="read from a model card", **marker),
        ],
        loc="lower right",
        fontsize=8,
    )


# ---------------------------------------------------------------------------- explanations
POSITIVE, NEGATIVE = "#2e7d32", "#c62828"
THUMB_POINTS = 26  # thumbnails are about this many points high, whatever their pixel size


def _wrap(name: str, width: int = 30, max_lines: int = 3) -> str:
    """A concept name on at most `max_lines` lines, never cut mid-way without an ellipsis.

    A prototype's name ("coffee · image 186 · patch (0,2)") breaks after its class, so the class and
    where the part comes from each get a line.
    """
    head, sep, rest = name.partition(" · ")
    lines = [
        line for piece in ([head, rest] if sep else [name]) for line in textwrap.wrap(piece, width) or [""]
    ]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _short(lines[-1] + " …", width)
    return "\n".join(lines)


def plot_explanation(explanation, path: str | os.PathLike, title: str | None = None) -> None:
    """The figure `Explanation.plot` writes (atomically): the image, and the top concepts as signed
    bars with the thumbnail of each concept's source part; the title gives the prediction from
    concepts and, when known, the backbone's own beside it.

    The bars' axes start right after the widest concept name (measured, not guessed), so names are
    not cut and no empty band separates the image from them.
    """
    items = explanation.concepts
    thumbnails = all(c.thumbnail is not None for c in items) and bool(items)
    labels = [_wrap(c.name) for c in items]
    lines = max([label.count("\n") + 1 for label in labels] + [1])
    width, height = 10.5, max(3.8, (0.32 + 0.16 * lines) * max(len(items), 4) + 1.9)
    with png_figure(path, figsize=(width, height), dpi=110) as fig:
        bottom, top = 1.05 / height, 1 - 0.75 / height  # inches kept for the x labels and the titles
        image_ax = _draw_input_image(fig, explanation.image, (0.015, bottom, 0.25, top - bottom))
        ax = fig.add_axes((0.5, bottom, 0.47, top - bottom))  # moved right of the names below
        _draw_contributions(ax, [c.contribution for c in items])
        _draw_concept_names(ax, items, labels, thumbnails)
        heading = _label_explanation(fig, ax, explanation, title)
        renderer = _place_bars_after_names(fig, ax, image_ax, thumbnails)
        fit_text(ax.title, ax.get_window_extent(renderer).width, renderer)
        fit_text(heading, 0.97 * fig.bbox.width, renderer)


def _draw_input_image(fig, image, rect: tuple[float, float, float, float]):
    image_ax = fig.add_axes(rect)
    if image is not None:
        image_ax.imshow(image)
    image_ax.set_axis_off()
    image_ax.set_title("input image", fontsize=10)
    return image_ax


def _draw_contributions(ax, values: Sequence[float]) -> None:
    """The signed bars, top concept first, each with its value, and room for the values on the
    side(s) where bars are (no empty half when all are positive)."""
    from matplotlib.patches import Patch

    positions = list(range(len(values)))
    ax.barh(positions, values, color=[POSITIVE if v >= 0 else NEGATIVE for v in values], height=0.65)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_ylim(max(len(values), 4) - 0.5, -0.5)  # top concept first; bars keep their thickness
    ax.legend(
        handles=[
            Patch(color=POSITIVE, label="for the prediction"),
            Patch(color=NEGATIVE, label="against it"),
        ],
        loc="lower right",
        fontsize=7,
        frameon=False,
    )
    span = max([abs(v) for v in values] + [1e-6])
    low, high = min([*values, 0.0]), max([*values, 0.0])
    left = low - (0.28 * span if low < 0 else 0.03 * span)
    right = high + (0.28 * span if high > 0 else 0.03 * span)
    ax.set_xlim(left, right)
    for y, v in zip(positions, values):
        ax.text(
            v + (0.02 if v >= 0 else -0.02) * span,
            y,
            f"{v:+.2f}",
            va="center",
            ha="left" if v >= 0 else "right",
            fontsize=8,
        )
    ax.grid(axis="x", alpha=0.3)


def _draw_concept_names(ax, items, labels: Sequence[str], thumbnails: bool) -> None:
    """Each bar's concept name, and left of the bars the thumbnail of the part it came from (framed
    in the colour of its bar)."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    ax.set_yticks(list(range(len(items))))
    ax.set_yticklabels(labels, fontsize=8, linespacing=1.15)
    ax.tick_params(axis="y", length=0, pad=_name_pad(thumbnails))
    if not thumbnails:
        return
    for y, c in enumerate(items):
        picture = c.thumbnail.permute(1, 2, 0).cpu().numpy()
        box = AnnotationBbox(
            OffsetImage(picture, zoom=THUMB_POINTS / max(picture.shape[:2])),
            (0.0, y),
            xycoords=("axes fraction", "data"),
            xybox=(-(THUMB_POINTS / 2 + 4), 0),
            boxcoords="offset points",
            frameon=True,
            pad=0.1,
            bboxprops={"edgecolor": POSITIVE if c.contribution >= 0 else NEGATIVE, "linewidth": 1.5},
            annotation_clip=False,
        )
        ax.add_artist(box)


def _name_pad(thumbnails: bool) -> float:
    """Points between the bars and their names: room for the thumbnails when there are some."""
    return THUMB_POINTS + 10 if thumbnails else 6


def _label_explanation(fig, ax, explanation, title: str | None):
    """The x label (what a contribution is, and what the listed bars leave out), the bars' title (how
    many concepts of which kind, at which sparsity) and the figure's (the prediction from concepts,
    and the backbone's own when known), which it returns."""
    ax.set_xlabel(
        "contribution to the predicted class's logit (activation × class weight)\n"
        f"other concepts {explanation.other_contribution:+.2f}  ·  bias {explanation.bias:+.2f}  ·  "
        f"logit {explanation.logit:+.2f}",
        fontsize=8,
        linespacing=1.6,
    )
    ax.set_title(
        f"top {len(explanation.concepts)} of {explanation.num_active} active {explanation.concept_kind} "
        f"concepts (sparsity {explanation.sparsity_ratio:g})",
        fontsize=9,
    )
    heading = f"Predicted: {explanation.label}  (p = {explanation.probability:.2f}, from concepts)"
    backbone = (getattr(explanation, "backbone_predictions", None) or [None])[0]
    if backbone is not None:
        heading += f"  ·  backbone's own: {backbone['label']} (p = {backbone['score']:.2f})"
    return fig.suptitle(title or heading, fontsize=12, fontweight="bold")


def _place_bars_after_names(fig, ax, image_ax, thumbnails: bool):
    """Move the bars right after the widest concept name (and its thumbnail), measured with the
    figure's renderer (returned, for more measuring)."""
    renderer = renderer_of(fig)
    fig.canvas.draw()
    names = max((t.get_window_extent(renderer).width for t in ax.get_yticklabels()), default=0.0)
    pad = _name_pad(thumbnails) * fig.dpi / 72
    start = image_ax.get_position().x1 + 0.02 + (names + pad) / fig.bbox.width
    bottom, height = ax.get_position().y0, ax.get_position().height
    ax.set_position((start, bottom, 0.975 - start, height))
    return renderer
