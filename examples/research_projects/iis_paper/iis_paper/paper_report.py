"""The report of the paper's finding-2 re-test: the Markdown section "Finding 2" and its figure."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from iis_hf.files import write_text_atomic

from .paper_design import ALPHA, OFF_THE_SHELF, POWER, Setting
from .runs import write_json


def plot_differences(results: dict, path: Path) -> None:
    """Paired differences (chosen setting - CE only) per cell: accuracy and IIS, points and 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["confirmatory"]["paired_differences"]
    names = ("accuracy_vs_ce", "iis_rebuilt_vs_ce")
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        endpoint = results["confirmatory"]["endpoints"][name]
        labels = []
        for x, entry in enumerate(endpoint["cells"]):
            pairs = runs.get(f"{name}|{entry['scenario']}|{entry['width']}|{entry['arm']}", [])
            jitter: Sequence[float] | np.ndarray = np.linspace(-0.15, 0.15, len(pairs)) if pairs else []
            ax.scatter(np.full(len(pairs), x) + jitter, pairs, s=10, alpha=0.5, color="C0")
            if "ci95" in entry:
                low, high = entry["ci95"]
                ax.errorbar(
                    x,
                    entry["mean_difference"],
                    yerr=[[entry["mean_difference"] - low], [high - entry["mean_difference"]]],
                    fmt="o",
                    color="C3",
                    capsize=4,
                )
            labels.append(f"{entry['scenario']}\n{entry['width']}")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(f"{endpoint['metric']}: chosen setting − CE only", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png", delete=False) as tmp:
        fig.savefig(tmp.name, dpi=120)
    os.replace(tmp.name, path)
    plt.close(fig)


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.2g}" if value < 0.1 else f"{value:.2f}"


def _ms(summary: dict | None, digits: int = 4) -> str:
    return "–" if not summary else f"{summary['mean']:.{digits}f} ± {summary['sd']:.{digits}f}"


def configuration_table(results: dict) -> list[str]:
    """The experiment's settings beside the paper's."""
    prereg, scale = results["preregistration"], results["scale"]
    widths = ", ".join(f"M = {w['num_concepts']} at D = {w['hidden_sizes'][-1]}" for w in scale["widths"])
    chosen = "; ".join(f"{sc}: {Setting(**s).label}" for sc, ss in prereg["chosen"].items() for s in ss)
    starts = "; ".join(
        f"D = {b['dim']}: {b['images']} silhouettes, {b['epochs_run']} epochs (early stopping), best val acc {b['best_validation_accuracy']:.3f}"
        for b in results["backbones"].values()
    )
    arms = {(a["scenario"], a["width"], a["arm"]): a for a in results["confirmatory"]["arms"]}
    headroom = "; ".join(
        f"{sc} {w}: off-the-shelf {_ms(a['test_accuracy'], 3)}"
        for (sc, w, arm), a in arms.items() if arm == OFF_THE_SHELF
    )  # fmt: skip
    rows = [
        ("sparsity s of the loss", "0.1", f"grid 0.1 / 0.5 / 0.9; confirmed: {chosen}"),
        ("concepts M vs representation D", "M = 200, D = 768 / 2048 (M << D)", widths),
        ("starting point", "ImageNet-pre-trained backbones", f"ResNets pre-trained to a validation plateau: {starts}"),
        ("headroom (test accuracy before fine-tuning)", "–", headroom or "–"),
        ("fine-tuning", "–", f"in-domain: {scale['indomain_images']} animal images x {scale['indomain_epochs']:g} epochs; "
         f"transfer: {scale['digits_train']} digits x {scale['transfer_epochs']:g} epochs, new classifier; AdamW lr "
         f"{scale['indomain_learning_rate']:g} (in-domain) / {scale['transfer_learning_rate']:g} (transfer), "
         f"cosine, 10% warm-up, batch {scale['batch_size']}, shifts of up to 2 px"),
        ("interpretation head", "–", "own optimizer group (lr 1e-2, no decay), random or warm "
         "(fitted on the starting features); A(s) reported after a refit on the final features"),
        ("concepts during training", "–", f"prototype patches of the starting backbone, fixed or rebuilt every {scale['refresh_epochs']:g} epoch"),
        ("concepts after (IIS)", "–", "rebuilt from the final backbone, and the bank the loss used"),
        ("comparator", "–", "CE only (IISTrainer, λ = 0: the plain Trainer's path) and off-the-shelf (in-domain: no "
         "fine-tuning; transfer: linear probe on the frozen backbone's features, iis-hf's probe A0)"),
        ("seeds", "–", f"grid {len(scale['grid_seeds'])}, confirmatory {len(scale['confirm_seeds'])} fresh paired seeds"),
    ]  # fmt: skip
    return ["| | the paper | this run |", "|---|---|---|", *(f"| {a} | {b} | {c} |" for a, b, c in rows)]


def grid_table(results: dict) -> list[str]:
    """Validation gain over CE only of every grid setting in every cell; the chosen ones in bold."""
    summary = results["grid"]["summary"]
    cells = list(dict.fromkeys((r["scenario"], r["width"]) for r in summary))
    chosen = {(sc, Setting(**s).key) for sc, ss in results["preregistration"]["chosen"].items() for s in ss}
    head = "| setting | " + " | ".join(f"{sc} {w}" for sc, w in cells) + " |"
    lines = [head, "|---|" + "---|" * len(cells)]
    for arm in dict.fromkeys(r["arm"] for r in summary):
        row = {(r["scenario"], r["width"]): r for r in summary if r["arm"] == arm}
        label = Setting(**next(iter(row.values()))["setting"]).label
        values = []
        for cell in cells:
            r = row.get(cell)
            text = "–" if r is None else f"{r['gain'] * 100:+.2f} (head {r['trained_head_accuracy']:.2f})"
            values.append(f"**{text}**" if (cell[0], arm) in chosen else text)
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return lines


def results_table(results: dict) -> list[str]:
    """Every endpoint in every cell: means, paired difference with its CI, p-values, Holm, detectable effect."""
    arms = {(a["scenario"], a["width"], a["arm"]): a for a in results["confirmatory"]["arms"]}
    lines = [
        "| endpoint | scenario | backbone | n | chosen | comparator | Δ (points or IIS) [95% CI] | p t / W | Holm p t / W | detectable Δ | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, endpoint in results["confirmatory"]["endpoints"].items():
        scale = 100 if "accuracy" in endpoint["metric"] else 1
        digits = 2 if scale == 100 else 4
        for e in endpoint["cells"]:
            if "n" not in e:
                lines.append(
                    f"| {name} | {e['scenario']} | {e['width']} | {len(e['seeds'])} | – | – | – | – | – | – | not measured |"
                )
                continue
            mine = arms.get((e["scenario"], e["width"], e["arm"]))
            other = arms.get((e["scenario"], e["width"], endpoint["comparator"]))
            d, (lo, hi) = e["mean_difference"] * scale, (v * scale for v in e["ci95"])
            lines.append(
                f"| {name}{' (primary)' if endpoint['role'] == 'primary' else ''} | {e['scenario']} | {e['width']} | {e['n']} | "
                f"{_ms(mine[endpoint['metric']]) if mine else '–'} | {_ms(other[endpoint['metric']]) if other else '–'} | "
                f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}] | {_p(e.get('t_p'))} / {_p(e.get('wilcoxon_p'))} | "
                f"{_p(e.get('t_p_holm'))} / {_p(e.get('wilcoxon_p_holm'))} | ±{e['detectable_effect'] * scale:.{digits}f} | {e['verdict']} |"
            )
    return lines


def verdict_sentences(results: dict) -> list[str]:
    """One sentence per endpoint, over its cells."""
    lines = []
    for name, endpoint in results["confirmatory"]["endpoints"].items():
        cells = [e for e in endpoint["cells"] if "n" in e]
        counts = Counter(e["verdict"] for e in cells)
        parts = ", ".join(f"{k} in {v} of {len(cells)} cells" for k, v in counts.items()) or "not measured"
        unit = "points" if "accuracy" in endpoint["metric"] else "IIS"
        scale = 100 if unit == "points" else 1
        spans = [e["mean_difference"] * scale for e in cells]
        span = f" (mean differences {min(spans):+.2f} to {max(spans):+.2f} {unit})" if spans else ""
        lines.append(
            f"- **{name}** ({endpoint['role']}; {endpoint['metric']}, chosen setting vs {endpoint['comparator']}): {parts}{span}."
        )
    return lines


def report(results: dict, figure: str | None) -> str:
    """The Markdown section "Finding 2" (configuration, grid, pre-registration, results, verdicts)."""
    prereg = results["preregistration"]
    walls = results["wall_seconds"]
    lines = [
        "## Finding 2: fine-tuning with interpretability maximization (faithful re-test, issue 19)",
        "",
        f"`{results['command']}` ({results['threads']} thread(s), device {results['device']}, scale `{results['scale']['name']}`). "
        "Backbones pre-trained to a validation plateau; an exploratory grid chose the setting on validation data; "
        "the choice and the analysis plan were saved before the confirmatory run on fresh paired seeds and the test split.",
        "",
        "### Configuration",
        "",
        *configuration_table(results),
        "",
        "### Exploratory grid (validation accuracy gain over CE only, points; trained head's validation accuracy)",
        "",
        f"{results['grid']['design']}; grid seeds {results['scale']['grid_seeds']}. Chosen setting in bold.",
        "",
        *grid_table(results),
        "",
    ]
    if results["grid"]["not_run"]:
        lines += [
            f"Not run (the checkout's `IISTrainingArguments` lacked the field): {', '.join(Setting(**s).label for s in results['grid']['not_run'])}.",
            "",
        ]
    lines += [
        f"**Pre-registered** {prereg['created']} (`preregistration.json`): {prereg['rule']}. "
        + "; ".join(f"{sc}: {Setting(**s).label}" for sc, ss in prereg["chosen"].items() for s in ss)
        + ".",
        "",
        f"### Confirmatory results (test split, {len(prereg['seeds'])} paired seeds)",
        "",
        "Accuracy differences in points (x 100), IIS differences in IIS units. p: two-sided paired t / Wilcoxon; Holm over the "
        f"cells of each endpoint; detectable Δ: the smallest mean difference found with {POWER:.0%} power at alpha {ALPHA}.",
        "",
        *results_table(results),
        "",
        *verdict_sentences(results),
        "",
    ]
    if figure:
        lines += [f"![paired differences per setting]({figure})", ""]
    lines += [
        f"Wall time: pre-training {walls['pretraining'] / 60:.1f} min, grid {walls['grid'] / 60:.1f} min, confirmatory "
        f"{walls['confirm'] / 60:.1f} min. Shrunk to fit the CPU budget: "
        + ("; ".join(results["shrunk"]) or "nothing")
        + ".",
        "",
    ]
    return "\n".join(lines)


def write_outputs(results: dict, output_dir: Path, report_path: Path | None) -> None:
    """results.json, the figure, and (when asked) the report with the figure beside it."""
    write_json(output_dir / "results.json", results)
    figure = output_dir / "finding2_differences.png"
    plot_differences(results, figure)
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        beside = report_path.parent / figure.name
        if beside.resolve() != figure.resolve():
            shutil.copyfile(figure, beside)
        write_text_atomic(report_path, report(results, beside.name))
