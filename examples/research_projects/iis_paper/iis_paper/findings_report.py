"""The reproduction's Markdown report (docs/RESULTS.md): provenance, one section per finding.

Everything is generated from results.json except the reading between `READING_BEGIN` and
`READING_END`, which a rerun keeps.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
from pathlib import Path

from iis_hf.files import write_text_atomic

from .findings_analysis import INTERPRETATION_RATIO
from .findings_runs import TRANSFER, scenario_title, setting_label
from .runs import write_results_json
from .scoring import CONCEPT_KINDS, SCORE_RATIOS

READING_BEGIN, READING_END = "<!-- reading:begin -->", "<!-- reading:end -->"


# ---------------------------------------------------------------------------------------- cells


def _f(value, digits=3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _p(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2g}" if value >= 0.001 else "< 0.001"


def _corr_cells(s: dict | None) -> list[str]:
    if s is None:
        return ["–"] * 5
    return [
        str(s["n"]),
        f"{_f(s['spearman'], 2)} [{_f(s['spearman_ci'][0], 2)}, {_f(s['spearman_ci'][1], 2)}]",
        _p(s["spearman_p"]),
        f"{_f(s['pearson'], 2)} [{_f(s['pearson_ci'][0], 2)}, {_f(s['pearson_ci'][1], 2)}]",
        _p(s["pearson_p"]),
    ]


def _mean_sd(values) -> str:
    values = list(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def checkpoint_table(rows: list[dict], device_column: str | None = None) -> list[str]:
    """The Markdown table of every checkpoint's figures (optionally with a device column)."""
    head = "| dataset | model | params | epoch | "
    rule = "|---|---|---|---|"
    if device_column:
        head, rule = head + "device | ", rule + "---|"
    L = [
        head
        + "classifier acc | A0 | IIS prototype | IIS cluster | "
        + f"A({INTERPRETATION_RATIO:g}) prototype | A({INTERPRETATION_RATIO:g}) cluster | max A/A0 |",
        rule + "---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["concepts"]
        cells = [r["dataset"], r["model"], f"{r['parameters'] / 1e6:.2f}M", str(r["epoch"])]
        if device_column:
            cells.append(device_column)
        cells += [_f(r["accuracy"]), _f(c["prototype"]["probe_accuracy"]) if "prototype" in c else "–"]
        for kind in CONCEPT_KINDS:
            cells.append(_f(c[kind]["iis"]) if kind in c else "–")
        for kind in CONCEPT_KINDS:
            cells.append(
                _f(c[kind]["interpretation_accuracy"][str(INTERPRETATION_RATIO)]) if kind in c else "–"
            )
        cells.append(_f(max(v["max_relative_accuracy"] for v in c.values())))
        L.append("| " + " | ".join(cells) + " |")
    return L


def finding1_rows(kinds: dict) -> list[str]:
    """Finding 1's correlation rows of one dataset (all, trained, classifier accuracy, per model)."""
    L = []
    for kind, a in kinds.items():
        f1 = a["finding1"]
        L.append(f"| {kind} | all | " + " | ".join(_corr_cells(f1["all_checkpoints"])) + " |")
        L.append(f"| {kind} | trained | " + " | ".join(_corr_cells(f1["trained_checkpoints"])) + " |")
        L.append(
            f"| {kind} | all, x = classifier accuracy | "
            + " | ".join(_corr_cells(f1["classifier_accuracy_vs_iis"]))
            + " |"
        )
        for model, summary in f1["within_model"].items():
            L.append(f"| {kind} | {model} | " + " | ".join(_corr_cells(summary)) + " |")
    return L


def extra_sections(runs: list[dict]) -> list[str]:
    """Sections for other runs (larger models on a GPU): provenance, finding 1 and 3, every row."""
    L = []
    for run in runs:
        L.append(f"## Larger models on {run['device']}\n")
        L.append(
            f"Run{'s' if len(run['commands']) > 1 else ''} on **{run['device']}** (finished "
            f"{', '.join(run['finished'])}; {run['runtime_seconds'] / 60:.1f} min in all), with the data, seeds, "
            "concepts and head recipe of the command(s) below (the full preset unless they say otherwise). "
            "These rows are reported on their own, not pooled with the CPU run's. Versions: "
            + ", ".join(f"{k} {v}" for k, v in run["versions"].items())
            + ".\n"
        )
        L.append("```bash")
        L += [f"python {' '.join(command)}" for command in run["commands"]]
        L.append("```\n")
        for dataset, kinds in run["finding1_3"].items():
            L.append(f"### {dataset}: finding 1 (A0 vs IIS) on {run['device']}\n")
            L.append("| concepts | checkpoints | n | Spearman ρ [95% CI] | p | Pearson r [95% CI] | p |")
            L.append("|---|---|---|---|---|---|---|")
            L += finding1_rows(kinds)
            L.append("")
            L.append(f"Finding 3 (A0 − A({INTERPRETATION_RATIO:g}) vs A0) on {run['device']}:\n")
            L.append("| concepts | checkpoints | n | Spearman ρ [95% CI] | p | Pearson r [95% CI] | p |")
            L.append("|---|---|---|---|---|---|---|")
            for kind, a in kinds.items():
                for label, key in (("all", "all_checkpoints"), ("trained", "trained_checkpoints")):
                    L.append(f"| {kind} | {label} | " + " | ".join(_corr_cells(a["finding3"][key])) + " |")
            L.append("")
        L.append(f"Every checkpoint of this run (device: {run['device']}):\n")
        L += checkpoint_table(run["checkpoints"], device_column=run["device"])
        L.append("")
    return L


def finetuning_provenance(results: dict) -> dict:
    """The run finding 2 comes from: a merged `finetuning_run` (`--finetuning-results`), else the run."""
    return results.get("finetuning_run") or results


def _command_line(run: dict) -> str:
    """The run's command, with the thread setting it ran under when it was not torch's default."""
    env = run["environment"]
    threads = env.get("omp_num_threads")
    if threads is None and env.get("torch_threads") == 1 and (env.get("cpu_count") or 1) > 1:
        threads = "1"  # runs from before omp_num_threads was recorded
    return ("" if threads is None else f"OMP_NUM_THREADS={threads} ") + f"python {' '.join(run['command'])}"


def _run_lines(run: dict, prefix: str = "") -> list[str]:
    """Provenance bullets of one run: when, how long (per phase), where, with which versions."""
    env, cfg = run["environment"], run["config"]
    code = ""
    if env.get("git_commit"):
        code = f"; code: commit {env['git_commit'][:10]}" + (
            " plus uncommitted changes" if env.get("git_dirty") else ""
        )
    lines = [
        f"- {prefix}run finished {run['finished']}; total runtime **{run['runtime_seconds'] / 60:.1f} min** "
        f"({', '.join(f'{k} {v / 60:.1f} min' for k, v in run['phase_seconds'].items())}) on "
        f"{env['machine']} with {env['cpu_count']} CPU cores (torch threads {env['torch_threads']}), "
        f"device `{cfg['device']}`{code}.",
        f"- {prefix}versions: "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + f"; Python {env['python']} on {env['platform']}.",
    ]
    return lines if prefix else ["- " + line[2].upper() + line[3:] for line in lines]


def _pp(test: dict, suffix: str = "") -> str:
    return f"{_p(test.get('t_p' + suffix))} / {_p(test.get('wilcoxon_p' + suffix))}"


def _diff(test: dict) -> str:
    mean = test["mean_difference"]
    return f"{0.0 if round(mean, 4) == 0 else mean:+.4f} ± {test['sd_difference']:.4f}"  # no "-0.0000"


def _epochs(value) -> str:
    return f"{value:g} epoch" + ("" if value == 1 else "s")


def _lr(value) -> str:
    return "backbone's" if value is None else f"{value:g}"


def finding2_section(results: dict, rel: str) -> list[str]:
    """The report's finding 2: design, the verdict of every setting, then each scenario's detail."""
    analysis = {k: v for k, v in results["finding2"].items() if v["settings"]}
    if not analysis:
        return []
    L = _finding2_design(results, analysis)
    L += _finding2_verdicts(analysis)
    scenarios = finetuning_provenance(results).get("scenarios", {})
    for scenario, entry in analysis.items():
        L += _finding2_scenario(scenario, entry, results["finetuning"], scenarios.get(scenario, {}), rel)
    return L


def _finding2_design(results: dict, analysis: dict) -> list[str]:
    """How finding 2 was tested: the arms, the starting weights of each scenario, the statistics."""
    ftc = finetuning_provenance(results)["config"]
    family = [s for entry in analysis.values() for s in entry["settings"]]
    sizes = sorted({s["accuracy"]["n"] for s in family})
    ratios = ",".join(f"{r:g}" for r in ftc.get("iis_ratios", [0.9]))
    in_domain = [k for k in analysis if TRANSFER not in k]
    transfer = [k for k in analysis if TRANSFER in k]
    L = ["## Finding 2: fine-tuning with interpretability maximization\n"]
    design = (
        "A ResNet (`resnet-s`, 0.3M parameters) is fine-tuned from the same starting weights, for "
        f"{_epochs(ftc['finetune_epochs'])}, with the same `TrainingArguments` (AdamW at lr 1e-3, weight decay 0.05, "
        "cosine schedule with 10% warm-up, batch 32) and the same seed and data order, once with a plain `Trainer` "
        "and once per setting with `IISTrainer`: loss = CE + λ · CE of the interpretation head at "
        f"ρ = {ratios} over {ftc['num_concepts']} prototype concepts of the starting backbone. The head trains in its own "
        "optimizer group at the stated **head lr** (`iis_head_learning_rate`, passed explicitly), weight decay "
        f"{ftc.get('head_weight_decay', 0.0):g}, with the backbone's schedule shape, and is not refitted "
        "(`iis_refit_head=False`: the refit changes only the saved head). Starting weights:"
    )
    L.append(design + "\n")
    if in_domain:
        L.append(
            f"- *in domain* ({', '.join(f'`{k}`' for k in in_domain)}): per seed, a model pre-trained "
            f"{_epochs(ftc['pretrain_epochs'])} with a plain `Trainer` from that seed's initialisation, on the "
            "fine-tuning images themselves (the design of the earlier report);"
        )
    if transfer:
        L.append(
            f"- *transfer* ({', '.join(f'`{k}`' for k in transfer)}), the setting the paper studies: one model "
            f"pre-trained {_epochs(ftc.get('transfer_pretrain_epochs', 0))} on the *other* data set's training split "
            f"(seed {ftc['seed']}), then per seed a new classifier for the target's classes initialised with that "
            "seed, every other weight pre-trained (what `from_pretrained(..., ignore_mismatched_sizes=True)` gives a "
            "new head)."
        )
    L.append("")
    L.append(
        "Accuracy is the fine-tuned model's own classifier on the target's test images; IIS uses prototype "
        "concepts of the fine-tuned backbone, scored as in finding 1; *trained head* is the loss head's own test "
        f"accuracy at ρ = {ratios} (a check that the head learned). Δ = IISTrainer − Trainer on the same seed, "
        "mean ± sd over seeds. p-values: two-sided paired t-test / Wilcoxon signed-rank test "
        "(`iis_hf.stats.paired_tests`), raw and **Holm-corrected** (step-down, over all "
        f"{len(family)} settings below, separately for each metric and each test). Verdict 'higher' / 'lower' "
        "only when both corrected p < 0.05; finding 2 is *reproduced* in a setting when its accuracy is higher "
        "after the correction. With n pairs the smallest two-sided Wilcoxon p is 2 / 2^n ("
        + ", ".join(f"{2 / 2**n:.2g} for {n} seeds" for n in sizes)
        + f"); Holm's correction multiplies the smallest p of the family by {len(family)}.\n"
    )
    return L


def _finding2_verdicts(analysis: dict) -> list[str]:
    """One row per setting of every scenario: differences, raw and Holm p-values, the verdict."""
    L = []
    L.append(
        "| scenario | λ | head lr | seeds | Δ accuracy | p (t / W) | Holm p (t / W) | Δ IIS | Holm p (t / W) | "
        "finding 2 |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for scenario, entry in analysis.items():
        for st in entry["settings"]:
            a, i = st["accuracy"], st["iis"]
            L.append(
                f"| {scenario_title(scenario)} | {st['iis_weight']:g} | {_lr(st['head_learning_rate'])} | {a['n']} | "
                f"{_diff(a)} | {_pp(a)} | {_pp(a, '_holm')} | {_diff(i)} | {_pp(i, '_holm')} | "
                f"{'**' + st['finding2'] + '**' if st['finding2'] == 'reproduced' else st['finding2']} |"
            )
    L.append("")
    return L


def _finding2_scenario(
    scenario: str, entry: dict, runs: list[dict], scenario_info: dict, rel: str
) -> list[str]:
    """One scenario of finding 2: its starting model, figure, and every setting against the Trainer."""
    L = []
    L.append(f"### {scenario_title(scenario)}\n")
    info = scenario_info.get("pretraining", {})
    if "source_test_accuracy" in info:
        L.append(
            f"Starting model: pre-trained {_epochs(info['epochs'])} on {info['images']} {entry['source']} "
            f"images (seed {info['seed']}, {info['seconds']:.0f} s); its accuracy on the "
            f"{info['source_test_images']} {entry['source']} test images: {info['source_test_accuracy']:.4f}.\n"
        )
    L.append(f"![finding 2, {scenario}]({rel}/finding2_{scenario}.png)\n")
    L.append(
        "| setting | head lr | seeds | accuracy (mean ± sd) | Δ accuracy | p (t / W) | Holm p (t / W) | "
        "IIS (mean ± sd) | Δ IIS | p (t / W) | Holm p (t / W) | trained head |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    plain = [
        r
        for r in runs
        if r.get("scenario", r["dataset"]) == scenario
        and r["iis_weight"] is None
        and r["seed"] in entry["trainer"]["seeds"]
    ]
    L.append(
        f"| Trainer | – | {len(plain)} | {_mean_sd(r['accuracy'] for r in plain)} | | | | "
        f"{_mean_sd(r['iis'] for r in plain)} | | | | |"
    )
    for st in entry["settings"]:
        a, i = st["accuracy"], st["iis"]
        head = st.get("trained_head_accuracy")
        L.append(
            f"| {setting_label(st['iis_weight'], st['ratios'])} "
            f"| {_lr(st['head_learning_rate'])} | {a['n']} | {a['mean_a']:.4f} ± {a['sd_a']:.4f} | {_diff(a)} | "
            f"{_pp(a)} | {_pp(a, '_holm')} | {i['mean_a']:.4f} ± {i['sd_a']:.4f} | {_diff(i)} | {_pp(i)} | "
            f"{_pp(i, '_holm')} | {'–' if head is None else f'{head:.4f}'} |"
        )
    L.append("")
    L.append(
        "(Each IISTrainer row is compared with the Trainer on the same seeds; the Trainer row is over "
        "all of them.)\n"
    )
    return L


def write_report(results: dict, report_path: Path, output_dir: Path) -> None:
    """docs/RESULTS.md from results.json: tables, figures (copied beside it), provenance; the JSON
    behind it is written beside it (same name, .json)."""
    report_path = Path(report_path)
    figures_dir = report_path.parent / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for name in results["figures"]:
        shutil.copyfile(output_dir / name, figures_dir / name)
    write_results_json(report_path.with_suffix(".json"), results)  # the numbers behind the report
    rel = os.path.relpath(figures_dir, report_path.parent)
    kept = kept_reading(report_path)
    L = _introduction(results, report_path)
    L += _how_it_was_run(results)
    L += _finding1_lines(results, rel)
    L += finding2_section(results, rel)
    L += _finding3_lines(results, rel)
    L += extra_sections(results.get("extra_runs", []))
    L.append("## Reading\n")
    L.append(
        kept
        or f"{READING_BEGIN}\n(Write the reading of this run here; this block is kept when the report is "
        f"regenerated.)\n{READING_END}"
    )
    L.append("")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(report_path, "\n".join(L))


def kept_reading(report_path: Path) -> str | None:
    """The hand-written reading of an existing report (markers included), kept across reruns."""
    if not report_path.exists():
        return None
    text = report_path.read_text(encoding="utf-8")
    if READING_BEGIN in text and READING_END in text:
        return text[text.index(READING_BEGIN) : text.index(READING_END) + len(READING_END)]
    return None


def _sources(results: dict) -> tuple[dict, bool, str]:
    """The finding-2 run, whether it was merged from another run, and how the report names its data."""
    ft = finetuning_provenance(results)
    merged = ft is not results
    return ft, merged, "the runs' `results.json` files" if merged else "the run's `results.json`"


def _introduction(results: dict, report_path: Path) -> list[str]:
    _, merged, source = _sources(results)
    L = []
    L.append("# Reproducing the paper's findings offline\n")
    L.append(
        "*Enhancing Pre-trained Representation Classifiability can Boost its Interpretability* (ICLR 2025) "
        "claims that (1) IIS rises with classifiability, (2) fine-tuning with interpretability maximization "
        "raises accuracy, and (3) stronger representations lose less accuracy when predictions come from "
        "interpretations. This report tests the three claims with `examples/research_projects/iis_paper/reproduce_findings.py` on real "
        "images that ship inside Python packages (no network), with small models trained from scratch on "
        f"a CPU. Everything below is generated from {source} except the reading, which is "
        "written by hand for the measurements.\n"
    )
    L.append(
        f"The numbers behind every table are in [`{report_path.with_suffix('.json').name}`]"
        f"({report_path.with_suffix('.json').name}) ({source}{', merged' if merged else ''}).\n"
    )
    return L


def _how_it_was_run(results: dict) -> list[str]:
    """Commands, provenance of each run, seeds, the scoring recipe and the data."""
    ft, merged, _ = _sources(results)
    cfg = results["config"]
    L = ["## How this was run\n"]
    if merged:
        superseded = any("fine-tuning" in k for k in results["phase_seconds"])
        L.append(
            "Two runs: findings 1 and 3 come from the first, finding 2 from the second"
            + (
                " (the first run's fine-tuning phases measured an earlier finding 2, which the second run "
                "replaces; its runs are not in this report's JSON)"
                if superseded
                else ""
            )
            + ".\n"
        )
    L.append("```bash")
    L.append(_command_line(results))
    if merged:
        L.append(_command_line(ft))
    L.append("```\n")
    if results.get("redraw_command"):
        L.append(
            "The report was then assembled from the runs' `results.json` (statistics recomputed, nothing trained):\n"
        )
        L.append("```bash")
        L.append(f"python {' '.join(results['redraw_command'])}")
        L.append("```\n")
    L += _run_lines(results, "findings 1 and 3: " if merged else "")
    if merged:
        L += _run_lines(ft, "finding 2: ")
    ftc = ft["config"]
    L.append(
        f"- Seeds: checkpoint models, concept sampling and k-means use seed {cfg['seed']}; fine-tuning "
        f"seeds {ftc['seeds']}"
        + (
            f" (transfer pre-training: seed {ftc['seed']})"
            if any(TRANSFER in sc for sc in ftc.get("scenarios", []))
            else ""
        )
        + f"; bootstrap {cfg['bootstrap']} resamples, seed {cfg['seed']}, percentile 95% intervals."
    )
    L.append(
        f"- Scoring: {cfg['num_concepts']} concepts from {cfg['images_per_class']} training images per class "
        f"(4 x 4 patches), ratio grid {list(SCORE_RATIOS)}, "
        + (
            f"heads trained {cfg['head_epochs']} epochs (Adam, lr 1e-2, decay 0.99, batch 1024, best test top-1, "
            "as published)"
            if cfg.get("head_epochs")
            else "heads trained until converged (recipe version 2: Adam, lr 1e-2, decay 0.99, batch 1024, at "
            "least 300 steps, then until the training loss stops falling, the final state)"
        )
        + "; A0 is the pipeline's converged linear probe on standardised features. *prototype*: a seeded random subset of the "
        "patch-prototype library; *cluster*: k-means centres of the whole library."
    )
    L.append("- Data:")
    for name, info in results["datasets"].items():
        L.append(f"  - `{name}`: {info['description']}; train {info['train']}, test {info['test']} images.")
    L.append("")
    L.append(
        "Reproduce a reduced version (digits only, three models, fewer epochs and seeds) in a few minutes "
        "with `python examples/research_projects/iis_paper/reproduce_findings.py --quick --output-dir reproduce_quick`.\n"
    )

    return L


def _finding1_lines(results: dict, rel: str) -> list[str]:
    L = []
    L.append("## Finding 1: IIS rises with classifiability\n")
    L.append(
        "Spearman's ρ and Pearson's r between the probe accuracy A0 and IIS, with 95% bootstrap intervals "
        "(pairs resampled) and two-sided permutation p-values (exact up to 7 points, else 9,999 seeded permutations). *All* = every checkpoint of every model (epoch 0 is the "
        "random initialisation); *trained* = epochs ≥ 1; *x = classifier accuracy* uses the model's own "
        "classifier head instead of the probe; then each model across its epochs.\n"
    )
    for dataset, kinds in results["finding1_3"].items():
        L.append(f"### {dataset}\n")
        L.append(f"![finding 1, {dataset}]({rel}/finding1_{dataset}.png)\n")
        L.append("| concepts | checkpoints | n | Spearman ρ [95% CI] | p | Pearson r [95% CI] | p |")
        L.append("|---|---|---|---|---|---|---|")
        L += finding1_rows(kinds)
        L.append("")
    L.append("Every checkpoint:\n")
    L += checkpoint_table(results["checkpoints"])
    L.append("")
    warned = sum(any(v["probe_warning"] for v in r["concepts"].values()) for r in results["checkpoints"])
    L.append(
        f"A head beat the probe (A(ρ)/A0 > 1, `WeakProbeWarning`; docs/METHOD.md) in {warned} of "
        f"{len(results['checkpoints'])} checkpoints.\n"
    )
    return L


def _finding3_lines(results: dict, rel: str) -> list[str]:
    L = []
    L.append("## Finding 3: stronger representations lose less through the interpretation\n")
    L.append(
        f"Accuracy drop A0 − A({INTERPRETATION_RATIO:g}) from the standard probe to the interpretation head at "
        f"ratio {INTERPRETATION_RATIO:g}, against A0, over the same checkpoints as finding 1. The paper's claim "
        "is a negative correlation.\n"
    )
    L.append("| dataset | concepts | checkpoints | n | Spearman ρ [95% CI] | p | Pearson r [95% CI] | p |")
    L.append("|---|---|---|---|---|---|---|---|")
    for dataset, kinds in results["finding1_3"].items():
        for kind, a in kinds.items():
            f3 = a["finding3"]
            L.append(f"| {dataset} | {kind} | all | " + " | ".join(_corr_cells(f3["all_checkpoints"])) + " |")
            L.append(
                f"| {dataset} | {kind} | trained | "
                + " | ".join(_corr_cells(f3["trained_checkpoints"]))
                + " |"
            )
    L.append("")
    for dataset in results["finding1_3"]:
        L.append(f"![finding 3, {dataset}]({rel}/finding3_{dataset}.png)\n")

    return L
