"""The analysis of the paper's finding-2 re-test: the grid's summary, the pre-registered choice,
every endpoint in every cell with Holm's correction, and results.json.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from iis_hf.stats import holm

from .paper_design import ALPHA, CE_ONLY, ENDPOINTS, SCENARIOS, Setting, analysis_plan, grid_settings
from .paper_runs import Context
from .provenance import versions
from .runs import write_json
from .statistics import paired_comparison, verdict

# ------------------------------------------------------------------------- selection and the plan


def grid_summary(runs: list[dict]) -> list[dict]:
    """Per scenario, width and setting: mean validation accuracy and the mean paired gain over CE only."""
    grid = [r for r in runs if r["phase"] == "grid"]
    out = []
    for scenario in SCENARIOS:
        for width in dict.fromkeys(r["width"] for r in grid):
            cell = [r for r in grid if r["scenario"] == scenario and r["width"] == width]
            ce = {r["seed"]: r["validation"]["accuracy"] for r in cell if r["arm"] == CE_ONLY}
            for arm in dict.fromkeys(r["arm"] for r in cell if r["arm"] != CE_ONLY):
                mine = {r["seed"]: r for r in cell if r["arm"] == arm}
                seeds = sorted(set(mine) & set(ce))
                if not seeds:
                    continue
                gains = [mine[s]["validation"]["accuracy"] - ce[s] for s in seeds]
                out.append({
                    "scenario": scenario, "width": width, "arm": arm, "setting": mine[seeds[0]]["setting"],
                    "seeds": seeds, "validation_accuracy": statistics.mean(mine[s]["validation"]["accuracy"] for s in seeds),
                    "ce_validation_accuracy": statistics.mean(ce[s] for s in seeds),
                    "gain": statistics.mean(gains),
                    "trained_head_accuracy": statistics.mean(mine[s]["validation"]["trained_head_accuracy"] for s in seeds),
                })  # fmt: skip
    return out


def choose(summary: list[dict], per_scenario: int = 1) -> dict[str, list[dict]]:
    """Per scenario, the setting(s) with the largest mean validation gain over CE only, averaged over
    the widths (ties: the earlier setting of the grid, the centre first)."""
    chosen = {}
    for scenario in SCENARIOS:
        rows = [r for r in summary if r["scenario"] == scenario]
        arms = list(dict.fromkeys(r["arm"] for r in rows))
        score = {a: statistics.mean(r["gain"] for r in rows if r["arm"] == a) for a in arms}
        best = sorted(arms, key=lambda a: (-score[a], arms.index(a)))[:per_scenario]
        chosen[scenario] = [next(r["setting"] for r in rows if r["arm"] == a) for a in best]
    return chosen


def preregister(ctx: Context, runs: list[dict], missing: list[Setting]) -> dict:
    """The binding choice: read back if it exists, else made from the grid and saved before any
    confirmatory run."""
    path = ctx.output_dir / "preregistration.json"
    if path.is_file():
        return json.loads(path.read_text())
    summary = grid_summary(runs)
    prereg = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rule": "per scenario, the grid setting with the largest mean paired validation-accuracy gain over CE only "
        "(mean over widths and grid seeds; ties: the earlier setting, the centre first)",
        "chosen": choose(summary),
        "grid_seeds": list(ctx.scale.grid_seeds),
        "grid_summary": summary,
        "grid_settings_not_run": [
            {"setting": asdict(s), "why": "IISTrainingArguments lacks the field"} for s in missing
        ],
        "seeds": list(ctx.scale.confirm_seeds),
        "plan": analysis_plan(ctx.scale),
        "scale": ctx.scale.name,
    }
    write_json(path, prereg)
    ctx.log(f"[preregistration] {json.dumps(prereg['chosen'])} written to {path}")
    return prereg


def metric_of(run: dict, metric: str, sparsity: float | None = None) -> float | None:
    """One endpoint's value in a run; the refitted head is read at `sparsity` (default: the run's own)."""
    scores = run["scores"]
    ratio = f"{sparsity if sparsity is not None else run['setting']['sparsity']:g}"
    value = {
        "test_accuracy": scores["test_accuracy"],
        "iis_rebuilt": scores["rebuilt"]["iis"],
        "iis_loss_bank": scores["loss_bank"]["iis"],
        "refitted_head_accuracy": scores["loss_bank"]["accuracies"][ratio],
    }[metric]
    return value if value is not None and math.isfinite(value) else None


def measured(by_seed: dict[Any, float | None]) -> dict[Any, float]:
    """The seeds whose metric was measured (`metric_of` gave a number), with their values."""
    return {seed: value for seed, value in by_seed.items() if value is not None}


def analyse(runs: list[dict], prereg: dict) -> dict:
    """Every endpoint in every cell (scenario x width x chosen setting), Holm over each endpoint's cells."""
    confirm = [r for r in runs if r["phase"] == "confirm"]
    cells, out = [], {}
    for scenario in SCENARIOS:
        for width in dict.fromkeys(r["width"] for r in confirm):
            for setting in prereg["chosen"][scenario]:
                cells.append((scenario, width, Setting(**setting)))
    for name, metric, comparator, role in ENDPOINTS:
        entries = []
        for scenario, width, setting in cells:
            arm, s = setting.key, setting.sparsity
            cell = [r for r in confirm if r["scenario"] == scenario and r["width"] == width]
            mine = measured({r["seed"]: metric_of(r, metric, s) for r in cell if r["arm"] == arm})
            other = measured({r["seed"]: metric_of(r, metric, s) for r in cell if r["arm"] == comparator})
            seeds = sorted(set(mine) & set(other))
            entry = {"scenario": scenario, "width": width, "arm": arm, "seeds": seeds}
            if len(seeds) >= 2:
                entry.update(paired_comparison([mine[s] for s in seeds], [other[s] for s in seeds]))
            entries.append(entry)
        for test in ("t_p", "wilcoxon_p"):
            for entry, p in zip(entries, holm([e.get(test) for e in entries])):
                entry[f"{test}_holm"] = p
        for entry in entries:
            entry["verdict"] = verdict(entry, ALPHA, corrected=True) if "n" in entry else "not measured"
        out[name] = {"metric": metric, "comparator": comparator, "role": role, "cells": entries}
    return out


def arm_summary(runs: list[dict]) -> list[dict]:
    """Mean and sd of every metric per confirmatory cell and arm (the results table's first columns)."""
    confirm = [r for r in runs if r["phase"] == "confirm"]
    out = []
    for key in dict.fromkeys((r["scenario"], r["width"], r["arm"]) for r in confirm):
        group = [r for r in confirm if (r["scenario"], r["width"], r["arm"]) == key]
        row = {"scenario": key[0], "width": key[1], "arm": key[2], "seeds": len(group)}
        for metric in ("test_accuracy", "iis_rebuilt", "iis_loss_bank", "refitted_head_accuracy"):
            values = [v for v in (metric_of(r, metric) for r in group) if v is not None]
            row[metric] = (
                {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
                if values
                else None
            )
        trained = [
            r["scores"]["trained_head_accuracy"] for r in group if "trained_head_accuracy" in r["scores"]
        ]
        row["trained_head_accuracy"] = statistics.mean(trained) if trained else None
        row["train_seconds"] = statistics.mean(r["train_seconds"] for r in group)
        out.append(row)
    return out


def paired_differences(runs: list[dict], prereg: dict) -> dict[str, list[float]]:
    """The per-seed differences behind the figure, keyed by endpoint, scenario, width and arm."""
    out = {}
    confirm = [r for r in runs if r["phase"] == "confirm"]
    for name, metric, comparator, _ in ENDPOINTS[:3]:
        for scenario in SCENARIOS:
            for setting in map(lambda s: Setting(**s), prereg["chosen"][scenario]):
                for width in dict.fromkeys(r["width"] for r in confirm):
                    cell = [r for r in confirm if r["scenario"] == scenario and r["width"] == width]
                    mine = measured(
                        {
                            r["seed"]: metric_of(r, metric, setting.sparsity)
                            for r in cell
                            if r["arm"] == setting.key
                        }
                    )
                    other = measured(
                        {
                            r["seed"]: metric_of(r, metric, setting.sparsity)
                            for r in cell
                            if r["arm"] == comparator
                        }
                    )
                    out[f"{name}|{scenario}|{width}|{setting.key}"] = [
                        mine[s] - other[s] for s in sorted(set(mine) & set(other))
                    ]
    return out


def build_results(
    ctx: Context, runs: list[dict], prereg: dict, pretraining: dict, missing, started: float
) -> dict:
    """Every number of the experiment, with how it was produced (results.json)."""
    phase_seconds = {
        phase: round(sum(r["train_seconds"] + r["measure_seconds"] for r in runs if r["phase"] == phase), 1)
        for phase in ("grid", "confirm")
    }
    phase_seconds["pretraining"] = round(sum(i["seconds"] for i in pretraining.values()), 1)
    data = {
        scenario: {split: len(ctx.data[scenario][split]) for split in ctx.data[scenario]}
        for scenario in SCENARIOS
    }
    return {
        "issue": 19,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": ctx.device,
        "scale": asdict(ctx.scale),
        "shrunk": list(ctx.scale.shrunk),
        "versions": versions(),
        "data": data,
        "backbones": pretraining,
        "grid": {
            "design": "one factor at a time around the centre (fractional; the full factorial is 36 settings)",
            "settings": [asdict(s) | {"key": s.key} for s in grid_settings(ctx.scale)[: ctx.scale.grid_size]],
            "not_run": [asdict(s) for s in missing],
            "summary": grid_summary(runs),
        },
        "preregistration": prereg,
        "confirmatory": {
            "arms": arm_summary(runs),
            "endpoints": analyse(runs, prereg),
            "paired_differences": paired_differences(runs, prereg),
        },
        "wall_seconds": {**phase_seconds, "this_invocation": round(time.perf_counter() - started, 1)},
        "runs": runs,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
