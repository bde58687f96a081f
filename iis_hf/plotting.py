"""Pictures of IIS curves: accuracy kept under sparsification, relative to the standard probe."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping

from .files import write_bytes_atomic


def plot_iis_curve(result, path: str | os.PathLike, title: str | None = None) -> None:
    """One curve `A(rho)/A0` with its area (the IIS) shaded."""
    plot_iis_curves({"": result}, path, title=title)


def plot_iis_curves(results: Mapping[str, object], path: str | os.PathLike, title: str | None = None) -> None:
    """Several labelled curves on one figure (e.g. a random-init and a trained backbone)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    try:
        for i, (label, result) in enumerate(results.items()):
            order = sorted(range(len(result.sparsity_ratios)), key=lambda j: result.sparsity_ratios[j])
            x = [result.sparsity_ratios[j] for j in order]
            y = [result.relative_accuracies[j] for j in order]
            color = f"C{i}"
            name = f"{label}: IIS {result.iis:.3f}" if label else f"IIS = {result.iis:.3f}"
            ax.plot(x, y, "o-", color=color, label=f"{name} (A0 {result.standard_accuracy:.3f})")
            ax.fill_between(x, y, alpha=0.15 if len(results) > 1 else 0.25, color=color)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.text(
            0.0,
            1.01,
            "standard accuracy A0",
            color="grey",
            fontsize=8,
            va="bottom",
            transform=ax.get_yaxis_transform(),
        )
        top = max(max(r.relative_accuracies) for r in results.values())
        ax.set_ylim(0, max(1.08, top * 1.05))
        ax.set_xlim(0, 1)
        ax.set_xlabel("sparsity ratio ρ (fraction of concepts dropped)")
        ax.set_ylabel("interpretation accuracy / standard accuracy")
        ax.set_title(title or "Inherent interpretability: accuracy kept under sparse interpretation")
        ax.legend(loc="lower left", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
