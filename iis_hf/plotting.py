"""Every figure iis-hf draws: IIS curves, leaderboards (IIS vs accuracy), and explanations of predictions.

Functions take result objects by duck typing (`IISResult`, `Explanation`) and write PNGs atomically.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Mapping, Sequence

from .files import write_bytes_atomic


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


def plot_iis_curve(result, path: str | os.PathLike, title: str | None = None) -> None:
    """One curve `A(rho)/A0` with its area (the IIS) shaded."""
    plot_iis_curves({"": result}, path, title=title)


def plot_iis_curves(results: Mapping[str, object], path: str | os.PathLike, title: str | None = None) -> None:
    """Several labelled curves on one figure (e.g. a random-init and a trained backbone).

    Each curve is ``A(rho)/A0`` with its area (the IIS) shaded; with several seeds a band shows
    one standard deviation of the seeds' accuracies around the mean.
    """
    with png_figure(path, figsize=(6.6, 4.3), dpi=120) as fig:
        ax = fig.add_subplot()
        for i, (label, result) in enumerate(results.items()):
            _draw_curve(ax, label, result, f"C{i}", shade=0.15 if len(results) > 1 else 0.25)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            "standard accuracy A0",
            xy=(0.0, 1.0),
            xycoords=("axes fraction", "data"),
            xytext=(6, 3),
            textcoords="offset points",
            color="grey",
            fontsize=8,
            va="bottom",
        )
        top = max(max(r.relative_accuracies) for r in results.values())
        ax.set_ylim(0, max(1.1, top * 1.06))
        ax.set_xlim(-0.02, 1.0)  # room for the markers at rho = 0
        ax.set_xlabel("sparsity ratio ρ (fraction of concepts dropped)")
        ax.set_ylabel("interpretation accuracy / standard accuracy")
        title = title or "Inherent interpretability: accuracy kept under sparse interpretation"
        ax.set_title(_wrap_title(title), fontsize=10)  # a long model path or Hub id stays inside the figure
        ax.legend(loc="lower left", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()


def _wrap_title(title: str, width: int = 80) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(title, width, break_on_hyphens=False)) or title


def _draw_curve(ax, label: str, result, color: str, shade: float) -> None:
    order = sorted(range(len(result.sparsity_ratios)), key=lambda j: result.sparsity_ratios[j])
    x = [result.sparsity_ratios[j] for j in order]
    y = [result.relative_accuracies[j] for j in order]
    score = result.iis_text(3) if hasattr(result, "iis_text") else f"{result.iis:.3f}"
    name = f"{label}: IIS {score}" if label else f"IIS {score}"
    ax.plot(x, y, "o-", color=color, label=f"{name} (A0 {result.standard_accuracy:.3f})", clip_on=False)
    ax.fill_between(x, y, alpha=shade, color=color)
    spread = (getattr(result, "uncertainty", None) or {}).get("accuracies_sd")
    if spread:
        sd = [spread[j] / result.standard_accuracy for j in order]
        ax.fill_between(
            x, [a - d for a, d in zip(y, sd)], [a + d for a, d in zip(y, sd)], alpha=0.3, color=color, lw=0
        )


# ---------------------------------------------------------------------------- comparisons
def plot_iis_vs_accuracy(
    points: Sequence[Mapping], path: str | os.PathLike, title: str | None = None, max_iis: float | None = None
) -> None:
    """The accuracy-vs-IIS scatter of a leaderboard: x = A0, y = IIS, one named point per model.

    Each point is a mapping with ``name``, ``standard_accuracy``, ``iis`` and optionally ``ci``
    ((low, high): drawn as an error bar) and ``source`` ("card": read from a model card, drawn
    hollow). Points whose IIS is None are left out (listed under the axes). `max_iis` draws the
    score of a representation that loses nothing on the ratio grid.
    """

    shown = [p for p in points if p.get("iis") is not None]
    missing = [p["name"] for p in points if p.get("iis") is None]
    xs = [p["standard_accuracy"] for p in shown] or [0.0, 1.0]
    x_pad = max(0.01, 0.08 * (max(xs) - min(xs)))
    low_x, high_x = min(xs) - x_pad, max(xs) + x_pad
    if high_x > 1.0:  # accuracy stops at 1: no axis beyond it, only room for the marker
        high_x = 1.0 + 0.2 * x_pad
    with png_figure(path, figsize=(6.6, 4.6), dpi=120) as fig:
        ax = fig.add_subplot()
        for i, point in enumerate(sorted(shown, key=lambda p: (p["standard_accuracy"], p["iis"]))):
            x, y = point["standard_accuracy"], point["iis"]
            low, high = point.get("ci") or (None, None)
            card = point.get("source") == "card"
            color = f"C{i % 10}"
            if low is not None and high is not None:
                ax.errorbar(
                    x, y, yerr=[[max(0.0, y - low)], [max(0.0, high - y)]], fmt="none", ecolor=color,
                    elinewidth=1.2, capsize=4, alpha=0.8, zorder=2,
                )  # fmt: skip
            ax.scatter(
                [x], [y], s=60, zorder=3, color="white" if card else color, edgecolors=color, linewidths=1.8
            )
            # The name beside its point, on the side with more room, alternately a little above and
            # below it, so neighbours along the accuracy axis do not write over each other.
            left = x > low_x + 0.6 * (high_x - low_x)
            ax.annotate(
                _short(point["name"], 34) + (" (card)" if card else ""),
                xy=(x, y),
                xytext=(-9 if left else 9, 7 if i % 2 == 0 else -9),
                textcoords="offset points",
                fontsize=8,
                color="0.15",
                ha="right" if left else "left",
                va="center",
            )
        ys = [v for p in shown for v in (p["iis"], *(c for c in (p.get("ci") or ()) if c is not None))] or [
            0.0
        ]
        if max_iis is not None:
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
            ys.append(max_iis)
        y_pad = max(0.02, 0.08 * (max(ys) - min(ys)))
        ax.set_xlim(low_x, high_x)
        ax.set_xticks([t for t in ax.get_xticks() if low_x <= t <= 1.0 + 1e-9])  # no tick above accuracy 1
        ax.set_ylim(max(0.0, min(ys) - y_pad), max(ys) + y_pad)
        if any(p.get("source") == "card" for p in shown):
            from matplotlib.lines import Line2D

            marker = dict(marker="o", linestyle="", markersize=7, markeredgecolor="0.3", markeredgewidth=1.5)
            ax.legend(
                handles=[
                    Line2D([], [], markerfacecolor="0.3", label="scored here", **marker),
                    Line2D([], [], markerfacecolor="white", label="read from a model card", **marker),
                ],
                loc="lower right",
                fontsize=8,
            )
        ax.set_xlabel("standard accuracy A0 (linear probe on the representation)")
        ax.set_ylabel("IIS (error bar: 95% interval)")
        note = "\nnot shown, IIS undefined (A0 at chance): " + ", ".join(missing) if missing else ""
        ax.set_title((title or "Interpretability vs accuracy") + note, fontsize=10)
        ax.grid(alpha=0.3)
        fig.tight_layout()


# ---------------------------------------------------------------------------- explanations
POSITIVE, NEGATIVE = "#2e7d32", "#c62828"


def _short(text: str, width: int = 38) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _wrap(name: str, width: int = 30, max_lines: int = 3) -> str:
    """A concept name on at most `max_lines` lines, never cut mid-way without an ellipsis.

    A prototype's name ("coffee · image 186 · patch (0,2)") breaks after its class, so the class and
    where the part comes from each get a line.
    """
    import textwrap

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
    bars with the thumbnail of each concept's source part.

    The bars' axes start right after the widest concept name (measured, not guessed), so names are
    not cut and no empty band separates the image from them.
    """
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage
    from matplotlib.patches import Patch

    items = explanation.concepts
    thumbnails = all(c.thumbnail is not None for c in items) and bool(items)
    labels = [_wrap(c.name) for c in items]
    lines = max([label.count("\n") + 1 for label in labels] + [1])
    width, height = 10.5, max(3.8, (0.32 + 0.16 * lines) * max(len(items), 4) + 1.9)
    with png_figure(path, figsize=(width, height), dpi=110) as fig:
        bottom, top = 1.05 / height, 1 - 0.75 / height  # inches kept for the x labels and the titles
        image_ax = fig.add_axes((0.015, bottom, 0.25, top - bottom))
        if explanation.image is not None:
            image_ax.imshow(explanation.image)
        image_ax.set_axis_off()
        image_ax.set_title("input image", fontsize=10)

        ax = fig.add_axes((0.5, bottom, 0.47, top - bottom))  # moved right of the names below
        values = [c.contribution for c in items]
        positions = list(range(len(items)))
        colors = [POSITIVE if v >= 0 else NEGATIVE for v in values]
        ax.barh(positions, values, color=colors, height=0.65)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_ylim(max(len(items), 4) - 0.5, -0.5)  # top concept first; bars keep their thickness
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
        # Room for the value labels on the side(s) where bars are; no empty half when all are positive.
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
        thumb_points = 26  # thumbnails are about this many points high, whatever their pixel size
        ax.set_yticks(positions)
        ax.set_yticklabels(labels, fontsize=8, linespacing=1.15)
        ax.tick_params(axis="y", length=0, pad=thumb_points + 10 if thumbnails else 6)
        if thumbnails:
            for y, c in zip(positions, items):
                picture = c.thumbnail.permute(1, 2, 0).cpu().numpy()
                box = AnnotationBbox(
                    OffsetImage(picture, zoom=thumb_points / max(picture.shape[:2])),
                    (0.0, y),
                    xycoords=("axes fraction", "data"),
                    xybox=(-(thumb_points / 2 + 4), 0),
                    boxcoords="offset points",
                    frameon=True,
                    pad=0.1,
                    bboxprops={"edgecolor": POSITIVE if c.contribution >= 0 else NEGATIVE, "linewidth": 1.5},
                    annotation_clip=False,
                )
                ax.add_artist(box)
        ax.set_xlabel(
            "contribution to the predicted class's logit (activation × class weight)\n"
            f"other concepts {explanation.other_contribution:+.2f}  ·  bias {explanation.bias:+.2f}  ·  "
            f"logit {explanation.logit:+.2f}",
            fontsize=8,
            linespacing=1.6,
        )
        ax.set_title(
            f"top {len(items)} of {explanation.num_active} active {explanation.concept_kind} concepts "
            f"(sparsity {explanation.sparsity_ratio:g})",
            fontsize=9,
        )
        ax.grid(axis="x", alpha=0.3)
        fig.suptitle(
            title or f"Predicted: {explanation.label}  (p = {explanation.probability:.2f}, from concepts)",
            fontsize=12,
            fontweight="bold",
        )
        # Where the names end: the bars start right after the widest one (and its thumbnail).
        if not hasattr(fig.canvas, "get_renderer"):  # a pyplot backend that does not render with Agg
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            FigureCanvasAgg(fig)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        names = max((t.get_window_extent(renderer).width for t in ax.get_yticklabels()), default=0.0)
        pad = (thumb_points + 10 if thumbnails else 6) * fig.dpi / 72
        image_right = image_ax.get_position().x1
        start = image_right + 0.02 + (names + pad) / fig.bbox.width
        ax.set_position((start, bottom, 0.975 - start, top - bottom))
