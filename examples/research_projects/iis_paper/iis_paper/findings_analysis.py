"""The reproduction's statistics: correlations of findings 1 and 3, finding 2's paired tests.

Settings and scenarios are read from the stored runs themselves, so an older results.json is
analysed by the same code (`--from-results`).
"""

from __future__ import annotations

import statistics
from typing import Any

from iis_hf.stats import correlation_summary, holm, paired_tests

from .findings_runs import setting_label
from .scoring import CONCEPT_KINDS
from .statistics import verdict

INTERPRETATION_RATIO = 0.9  # finding 3: predictions from the interpretation head at this ratio


def analyse_checkpoints(rows: list[dict], cfg: Any) -> dict:
    """Findings 1 and 3 per dataset and concept kind: correlations with bootstrap intervals."""
    out: dict[str, Any] = {}
    for dataset in sorted({r["dataset"] for r in rows}):
        out[dataset] = {}
        for kind in CONCEPT_KINDS:
            group = [r for r in rows if r["dataset"] == dataset and kind in r["concepts"]]
            if not group:
                continue

            def summary(subset, y_of, x_of=lambda r, k=kind: r["concepts"][k]["probe_accuracy"]):
                x = [x_of(r) for r in subset]
                y = [y_of(r) for r in subset]
                return correlation_summary(x, y, n_resamples=cfg.bootstrap, seed=cfg.seed)

            iis = lambda r, k=kind: r["concepts"][k]["iis"]  # noqa: E731
            drop = lambda r, k=kind: (  # noqa: E731
                r["concepts"][k]["probe_accuracy"]
                - r["concepts"][k]["interpretation_accuracy"][str(INTERPRETATION_RATIO)]
            )
            trained = [r for r in group if r["epoch"] > 0]
            models = sorted({r["model"] for r in group}, key=list(cfg.models).index)
            out[dataset][kind] = {
                "finding1": {
                    "all_checkpoints": summary(group, iis),
                    "trained_checkpoints": summary(trained, iis) if len(trained) >= 3 else None,
                    "within_model": {
                        m: summary(
                            sorted((r for r in group if r["model"] == m), key=lambda r: r["epoch"]), iis
                        )
                        for m in models
                    },
                    "classifier_accuracy_vs_iis": summary(group, iis, x_of=lambda r: r["accuracy"]),
                },
                "finding3": {
                    "all_checkpoints": summary(group, drop),
                    "trained_checkpoints": summary(trained, drop) if len(trained) >= 3 else None,
                },
            }
    return out


def setting_key(run: dict) -> tuple:
    """(iis_weight, head learning rate, ratios): what tells two fine-tuning settings apart."""
    return (run["iis_weight"], run.get("head_learning_rate"), tuple(run["ratios"]))


def analyse_finetuning(runs: list[dict], cfg: Any = None, alpha: float = 0.05) -> dict:
    """Finding 2 per scenario: every IISTrainer setting against the plain Trainer on the same seeds.

    Paired t-test and Wilcoxon signed-rank test of accuracy and of IIS (`iis_hf.stats.paired_tests`),
    then Holm's correction (`holm`) over every setting of every scenario, for each metric and each
    test separately (the family of accuracy t-tests, of accuracy Wilcoxon tests, ...). A setting
    reproduces finding 2 when its accuracy is 'higher' after the correction (both corrected p < alpha).
    Settings are read from the runs themselves (so older results.json files are analysed too).
    """
    out = {}
    for scenario in dict.fromkeys(r.get("scenario", r["dataset"]) for r in runs):
        group = [r for r in runs if r.get("scenario", r["dataset"]) == scenario]
        plain = {r["seed"]: r for r in group if r["iis_weight"] is None}
        first = group[0]
        entry = {
            "scenario": scenario,
            "source": first.get("source", first["dataset"]),
            "target": first["dataset"],
            "trainer": {
                "seeds": sorted(plain),
                **{
                    metric: {
                        "mean": statistics.mean(r[metric] for r in plain.values()),
                        "sd": statistics.stdev(r[metric] for r in plain.values()) if len(plain) > 1 else 0.0,
                    }
                    for metric in ("accuracy", "iis")
                    if plain
                },
            },
            "settings": [],
        }
        for key in dict.fromkeys(setting_key(r) for r in group if r["iis_weight"] is not None):
            weight, head_lr, ratios = key
            mine = {r["seed"]: r for r in group if r["iis_weight"] is not None and setting_key(r) == key}
            seeds = sorted(set(mine) & set(plain))
            if len(seeds) < 2:
                continue
            setting = {
                "iis_weight": weight,
                "head_learning_rate": head_lr,
                "ratios": list(ratios),
                "label": setting_label(weight, ratios, head_lr),
                "seeds": seeds,
            }
            for metric in ("accuracy", "iis"):
                setting[metric] = paired_tests(
                    [mine[s][metric] for s in seeds], [plain[s][metric] for s in seeds]
                )
            heads = [h for s in seeds if (h := mine[s].get("trained_head_accuracy"))]
            if len(heads) == len(seeds):  # every seed has one
                ratio = str(ratios[0])
                setting["trained_head_accuracy"] = statistics.mean(h[ratio] for h in heads)
            entry["settings"].append(setting)
        out[scenario] = entry
    family = [s for entry in out.values() for s in entry["settings"]]
    for metric in ("accuracy", "iis"):
        for test in ("t_p", "wilcoxon_p"):
            adjusted = holm([s[metric].get(test) for s in family])
            for s, p in zip(family, adjusted):
                s[metric][f"{test}_holm"] = p
        for s in family:
            s[metric]["verdict_uncorrected"] = verdict(s[metric], alpha)
            s[metric]["verdict"] = verdict(s[metric], alpha, corrected=True)
    for s in family:
        s["finding2"] = {
            "higher": "reproduced",
            "lower": "not reproduced (accuracy lower)",
        }.get(s["accuracy"]["verdict"], "not reproduced (no detectable difference)")
    return out
