"""Every figure iis-hf draws: IIS curves, and explanations of predictions made from concepts.

Functions take result objects by duck typing (`IISResult`, `Explanation`) and write PNGs atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping

from .files import write_bytes_atomic


def plot_iis_curve(result, path: str | os.PathLike, title: str | None = None) -> None:
    """One curve `A(rho)/A0` with its area (the IIS) shaded."""
    plot_iis_curves({"": result}, path, title=title)


def plot_iis_curves(results: Mapping[str, object], path: str | os.PathLike, title: str | None = None) -> None:
    """Several labelled curves on one figure (e.g. a random-init and a trained backbone).

    Each curve is ``A(rho)/A0`` with its area (the IIS) shaded; with several seeds a band shows
    one standard deviation of the seeds' accuracies around the mean.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.6, 4.3), dpi=120)
    try:
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
        ax.set_title(
            title or "Inherent interpretability: accuracy kept under sparse interpretation", fontsize=10
        )
        ax.legend(loc="lower left", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


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


# ---------------------------------------------------------------------------- explanations
POSITIVE, NEGATIVE = "#2e7d32", "#c62828"


def _short(text: str, width: int = 38) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_explanation(explanation, path: str | os.PathLike, title: str | None = None) -> None:
    """The figure `Explanation.plot` writes (atomically): the image, and the top concepts as signed
    bars with the thumbnail of each concept's source part."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage
    from matplotlib.patches import Patch

    items = explanation.concepts
    thumbnails = all(c.thumbnail is not None for c in items) and bool(items)
    height = max(3.6, 0.55 * len(items) + 1.8)
    fig = plt.figure(figsize=(10.5, height), dpi=110)
    grid = fig.add_gridspec(1, 2, width_ratios=[1.0, 1.9], wspace=0.45 if not thumbnails else 0.75)
    try:
        image_ax = fig.add_subplot(grid[0, 0])
        if explanation.image is not None:
            image_ax.imshow(explanation.image)
        image_ax.set_axis_off()
        image_ax.set_title("input image", fontsize=10)

        ax = fig.add_subplot(grid[0, 1])
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
        left = min([0.0, *values]) - 0.28 * span
        right = max([0.0, *values]) + 0.28 * span
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
        if thumbnails:
            ax.set_yticks(positions)
            ax.set_yticklabels([_short(c.name, 30) for c in items], fontsize=7)
            ax.tick_params(axis="y", pad=34)
            for y, c in zip(positions, items):
                picture = c.thumbnail.permute(1, 2, 0).cpu().numpy()
                zoom = 24 / max(picture.shape[:2])  # about 24 points high, whatever the thumbnail size
                box = AnnotationBbox(
                    OffsetImage(picture, zoom=zoom),
                    (0.0, y),
                    xycoords=("axes fraction", "data"),
                    xybox=(-18, 0),
                    boxcoords="offset points",
                    frameon=True,
                    pad=0.1,
                    bboxprops={"edgecolor": POSITIVE if c.contribution >= 0 else NEGATIVE, "linewidth": 1.5},
                    annotation_clip=False,
                )
                ax.add_artist(box)
        else:
            ax.set_yticks(positions)
            ax.set_yticklabels([_short(c.name) for c in items], fontsize=9)
        ax.set_xlabel("contribution to the predicted class's logit (activation × class weight)", fontsize=8)
        ax.set_title(
            f"top {len(items)} of {explanation.num_active} active {explanation.concept_kind} concepts "
            f"(sparsity {explanation.sparsity_ratio:g})",
            fontsize=9,
        )
        ax.grid(axis="x", alpha=0.3)
        ax.text(
            1.0,
            -0.16 if height < 5 else -0.1,
            f"others {explanation.other_contribution:+.2f}   bias {explanation.bias:+.2f}   "
            f"logit {explanation.logit:+.2f}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            color="dimgray",
        )
        fig.suptitle(
            title or f"Predicted: {explanation.label}  (p = {explanation.probability:.2f}, from concepts)",
            fontsize=12,
            fontweight="bold",
        )
        fig.subplots_adjust(left=0.03, right=0.97, top=0.86, bottom=0.16 if height < 5 else 0.1)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
