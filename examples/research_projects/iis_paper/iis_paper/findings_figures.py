"""The reproduction's figures: findings 1 and 3 per data set, finding 2 per scenario (PNG)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .findings_analysis import INTERPRETATION_RATIO, setting_key
from .findings_runs import scenario_title
from .scoring import CONCEPT_KINDS


def _colours(models):
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(models)}


def plot_checkpoints(rows, dataset, models, path, y_of, ylabel, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in CONCEPT_KINDS if any(k in r["concepts"] for r in rows)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4.4), squeeze=False)
    colours = _colours(models)
    for ax, kind in zip(axes[0], kinds):
        for model in models:
            pts = sorted((r for r in rows if r["model"] == model), key=lambda r: r["epoch"])
            if not pts:
                continue
            x = [r["concepts"][kind]["probe_accuracy"] for r in pts]
            y = [y_of(r, kind) for r in pts]
            ax.plot(x, y, "-o", color=colours[model], label=model, markersize=4, linewidth=1.2)
            for xi, yi, r in zip(x, y, pts):
                ax.annotate(str(r["epoch"]), (xi, yi), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.set_xlabel("standard accuracy A0 (linear probe)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{dataset}: {kind} concepts")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_finetuning(runs, entry: dict, path) -> None:
    """One scenario of finding 2: per setting, each seed's paired difference IISTrainer − Trainer
    (dots) and their mean with a 95% t interval, for accuracy and IIS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import t as student_t

    group = [r for r in runs if r.get("scenario", r["dataset"]) == entry["scenario"]]
    plain = {r["seed"]: r for r in group if r["iis_weight"] is None}
    settings = entry["settings"]
    labels = [s["label"].replace("IISTrainer ", "").replace(" head lr=", "\nhead lr ") for s in settings]
    fig, axes = plt.subplots(1, 2, figsize=(4.2 + 1.5 * len(settings), 4.2))
    for ax, metric in zip(axes, ("accuracy", "iis")):
        for x, s in enumerate(settings):
            key = (s["iis_weight"], s.get("head_learning_rate"), tuple(s["ratios"]))
            mine = {r["seed"]: r for r in group if r["iis_weight"] is not None and setting_key(r) == key}
            diffs = [mine[seed][metric] - plain[seed][metric] for seed in s["seeds"]]
            jitter = np.linspace(-0.12, 0.12, len(diffs))
            ax.scatter(x + jitter, diffs, s=12, color="grey", alpha=0.6, zorder=2)
            test = s[metric]
            half = (
                student_t.ppf(0.975, test["n"] - 1) * test["sd_difference"] / math.sqrt(test["n"])
                if test["n"] > 1
                else 0.0
            )
            colour = {"higher": "C2", "lower": "C3"}.get(test["verdict"], "C0")
            ax.errorbar(x, test["mean_difference"], yerr=half, fmt="s", color=colour, capsize=4, zorder=3)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(settings)), labels, fontsize=7)
        ax.set_xlim(-0.5, len(settings) - 0.5)
        ax.set_ylabel(f"Δ {'accuracy' if metric == 'accuracy' else 'IIS (prototypes)'}: IISTrainer − Trainer")
        ax.set_title(
            f"{scenario_title(entry['scenario'])}: {'accuracy' if metric == 'accuracy' else 'IIS'}",
            fontsize=9,
        )
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(
        "dots: seeds (paired); squares: mean with 95% t interval\ngreen / red: higher / lower after Holm "
        "correction (both tests); blue: no detectable difference",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_figures(results: dict, output_dir: Path, cfg) -> list[str]:
    made = []
    rows = results["checkpoints"]
    for dataset in sorted({r["dataset"] for r in rows}):
        group = [r for r in rows if r["dataset"] == dataset]
        models = [m for m in cfg.models if any(r["model"] == m for r in group)]
        name = f"finding1_{dataset}.png"
        plot_checkpoints(
            group,
            dataset,
            models,
            output_dir / name,
            lambda r, k: r["concepts"][k]["iis"],
            "IIS",
            "Finding 1: IIS against classifiability, one line per model through its epochs (labels)",
        )
        made.append(name)
        name = f"finding3_{dataset}.png"
        plot_checkpoints(
            group,
            dataset,
            models,
            output_dir / name,
            lambda r, k: (
                r["concepts"][k]["probe_accuracy"]
                - r["concepts"][k]["interpretation_accuracy"][str(INTERPRETATION_RATIO)]
            ),
            f"A0 − A({INTERPRETATION_RATIO:g})  (accuracy lost through the interpretation)",
            f"Finding 3: accuracy drop from the probe to the interpretation head at ratio {INTERPRETATION_RATIO:g}",
        )
        made.append(name)
    for scenario, entry in results["finding2"].items():
        if not entry["settings"]:
            continue
        name = f"finding2_{scenario}.png"
        plot_finetuning(results["finetuning"], entry, output_dir / name)
        made.append(name)
    return made
