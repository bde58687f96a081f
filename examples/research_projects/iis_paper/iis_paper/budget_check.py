"""Does a reported IIS move when the heads' training budget doubles? (the reproduction's checkpoints)

The reproduction (findings 1 and 3) scores every checkpoint with the library's converged recipe: heads
and probe train at least `min_steps` / `probe_min_steps` Adam steps, then until no model lowered its
training loss within `patience` steps. This check retrains the chosen models' checkpoints exactly as
the reproduction does (same seed, data and schedule) and scores each twice: with that recipe and with
every budget of it doubled (min_steps, patience, probe_min_steps, max_steps). It reports each
checkpoint's two IIS, their largest difference and Spearman's rho of A0 against IIS under each budget.
Rows are appended to rows.jsonl as measured; a rerun skips them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iis_hf.config import HeadsConfig
from iis_hf.stats import correlation_summary

from .data import DATASETS, load_named_dataset
from .runs import append_run, exit_code, read_runs, train_with_checkpoints, write_results_json
from .scoring import score_checkpoint

DOUBLED = {  # every budget of the converged recipe, doubled
    name: 2 * HeadsConfig.__dataclass_fields__[name].default
    for name in ("min_steps", "patience", "probe_min_steps", "max_steps")
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", type=Path, required=True, help="rows.jsonl and results.json")
    parser.add_argument("--dataset", choices=DATASETS, default="digits", help="the reproduction's data set")
    parser.add_argument(
        "--models", nargs="+", default=["resnet-s", "convnext-s"], help="the reproduction's models"
    )
    parser.add_argument("--epochs", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16], help="checkpoints kept")
    parser.add_argument("--train-size", type=int, default=None, help="the reproduction's train size")
    parser.add_argument("--test-size", type=int, default=None, help="the reproduction's test size")
    parser.add_argument("--num-concepts", type=int, default=200, help="M")
    parser.add_argument("--images-per-class", type=int, default=10, help="prototype images per class")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, log: Any) -> list[dict]:
    """Score every checkpoint not in rows.jsonl at the default and at the doubled budget."""
    path = args.output_dir / "rows.jsonl"
    done = {(r["model"], r["epoch"], r["budget"]) for r in read_runs(path)}
    data = load_named_dataset(args.dataset, args.train_size, args.test_size, seed=0)
    for model_name in args.models:
        if all((model_name, e, b) in done for e in args.epochs for b in ("default", "doubled")):
            continue
        checkpoints = train_with_checkpoints(model_name, data, args.epochs, seed=0)
        for epoch, model in checkpoints.items():
            for budget, heads in (("default", None), ("doubled", DOUBLED)):
                if (model_name, epoch, budget) in done:
                    continue
                started = time.perf_counter()
                figures = score_checkpoint(
                    model, data, seed=0, kinds=("prototype",), num_concepts=args.num_concepts,
                    images_per_class=args.images_per_class, heads=heads,
                )  # fmt: skip
                proto = figures["concepts"]["prototype"]
                row = {"model": model_name, "epoch": epoch, "budget": budget, "iis": proto["iis"]}
                row.update(a0=proto["probe_accuracy"], seconds=round(time.perf_counter() - started, 1))
                append_run(path, row)
                log(
                    f"{model_name} epoch {epoch} {budget}: A0 {row['a0']:.3f} IIS {row['iis']:.4f} ({row['seconds']:.0f} s)"
                )
    return read_runs(path)


def summarise(rows: list[dict]) -> dict:
    """Per checkpoint the two IIS; the largest difference; rho(A0, IIS) under each budget."""
    by = {(r["model"], r["epoch"], r["budget"]): r for r in rows}
    pairs = sorted({(m, e) for m, e, _ in by})
    table = [
        {"model": m, "epoch": e, "a0": by[(m, e, "default")]["a0"], "iis": by[(m, e, "default")]["iis"],
         "iis_doubled": by[(m, e, "doubled")]["iis"], "a0_doubled": by[(m, e, "doubled")]["a0"]}
        for m, e in pairs if (m, e, "default") in by and (m, e, "doubled") in by
    ]  # fmt: skip
    defined = [t for t in table if t["iis"] is not None and t["iis_doubled"] is not None]
    out: dict[str, Any] = {"doubled_budget": DOUBLED, "checkpoints": table}
    if defined:
        out["max_abs_difference"] = max(abs(t["iis_doubled"] - t["iis"]) for t in defined)
        out["mean_difference"] = sum(t["iis_doubled"] - t["iis"] for t in defined) / len(defined)
    if len(defined) >= 3:
        for key, a0, iis in (("default", "a0", "iis"), ("doubled", "a0_doubled", "iis_doubled")):
            summary = correlation_summary(
                [t[a0] for t in defined], [t[iis] for t in defined], n_resamples=1000, seed=0
            )
            out[f"spearman_{key}"] = summary["spearman"]
    return out


def run(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log = lambda text: print(f"{time.perf_counter() - started:7.0f} s  {text}", flush=True)  # noqa: E731
    summary = summarise(measure(args, log))
    write_results_json(args.output_dir / "results.json", summary)
    log(
        f"max |IIS doubled - IIS| = {summary.get('max_abs_difference')}; rho default {summary.get('spearman_default')}, doubled {summary.get('spearman_doubled')}"
    )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """0, or 2 with one line on stderr for input to fix (`runs.exit_code`)."""
    return exit_code(run, argv)
