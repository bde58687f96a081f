"""Reproduce the paper's three findings on real images, offline, and write the evidence.

*Enhancing Pre-trained Representation Classifiability can Boost its Interpretability* (ICLR 2025)
reports that (1) IIS rises with classifiability, across models and across the training epochs of
one model; (2) fine-tuning with interpretability maximization raises accuracy; (3) stronger
representations lose less accuracy when predictions come from interpretations. This experiment
tests the three claims on images that ship inside Python packages, so it needs no network:

- ``digits``: scikit-learn's 1,797 handwritten digits (8 x 8, 10 classes), `iis_hf.data.load_digits_dataset`;
- ``animals``: the 10,000 animal silhouettes (28 x 28, 10 classes) of the `animal-shape-mnist`
  package (``pip install animal-shape-mnist==0.39``, or ``pip install -e ".[reproduce]"``).

Findings 1 and 3: small Hugging Face models of three families at two widths each (ResNet, ViT,
ConvNeXt, random-initialised from configs) are trained with a plain `transformers.Trainer`, and a
checkpoint is kept at several epochs (0 = the random initialisation). Every checkpoint is scored
with `iis_hf.pipeline.score_representations` twice, with 200 prototype-patch concepts and with 200
k-means cluster concepts; the standard accuracy A0 is the pipeline's converged linear probe.
Finding 2: a ResNet is fine-tuned at the same budget, seeds and data order with a plain `Trainer`
and with `iis_hf.IISTrainer`, over a grid of `iis_weight` x `iis_head_learning_rate` (the
interpretation head's own learning rate, always passed explicitly), in two kinds of scenario: *in
domain* (per seed, pre-trained 1 epoch on the images it is then fine-tuned on) and *transfer*
(pre-trained once on the other data set, then fine-tuned with a new, seeded classifier, as
`from_pretrained(..., ignore_mismatched_sizes=True)` gives for new classes). Each setting is
compared with the plain Trainer on the same seeds (paired t-test and Wilcoxon), with the p-values
Holm-corrected over all settings. (`examples/research_projects/iis_paper/finetune_digits.py` uses the same runs and scoring,
from `iis_paper`.)

    python examples/research_projects/iis_paper/reproduce_findings.py --output-dir reproduce_output --write-report docs/RESULTS.md
    python examples/research_projects/iis_paper/reproduce_findings.py --quick --output-dir reproduce_quick     # a few minutes on 2 CPU cores
    python examples/research_projects/iis_paper/reproduce_findings.py --smoke --output-dir /tmp/smoke           # seconds (the test)
    python examples/research_projects/iis_paper/reproduce_findings.py --skip-checkpoints --output-dir finding2  # finding 2 alone

Merge the finding-2 run into an earlier run's report (statistics recomputed, nothing trained):

    python examples/research_projects/iis_paper/reproduce_findings.py --from-results docs/RESULTS.json
        --finetuning-results finding2/results.json --output-dir reproduce_output
        --write-report docs/RESULTS.md

The output folder gets `results.json` (every checkpoint, run and statistic) and the figures
(`finding1_<dataset>.png`, `finding2_<scenario>.png`, `finding3_<dataset>.png`). `--write-report
PATH` also writes the Markdown report and copies the figures into `figures/` beside it; a block
between the `reading:begin` / `reading:end` markers of an existing report is kept, so a hand-written
reading survives a rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from iis_hf.errors import IISError

from .data import DATASETS, dataset_description, load_named_dataset
from .findings_analysis import analyse_checkpoints, analyse_finetuning
from .findings_figures import make_figures
from .findings_report import write_report
from .findings_runs import TRANSFER, default_scenarios, run_checkpoint_grid, run_finetuning, scenario_datasets
from .models import LARGE_MODELS, MODELS
from .provenance import environment
from .runs import exit_code, trainer_default, write_results_json

SCRIPT = "examples/research_projects/iis_paper/reproduce_findings.py"  # how results.json and the report name the command


PRESETS = {
    "full": dict(
        datasets=["digits", "animals"],
        models=list(MODELS),
        epochs=[0, 1, 2, 4, 8, 16],
        grid_train_size={"digits": None, "animals": 2000},
        test_size={"digits": None, "animals": 1000},
        finetune_train_size={"digits": 600, "animals": 1000},
        seeds=list(range(12)),
        iis_weights=[0.1, 1.0],
        head_learning_rates=[1e-3, 1e-2],
        transfer_pretrain_epochs=8.0,
        num_concepts=200,
        images_per_class=10,
        head_epochs=None,  # the converged protocol's own budget (heads trained until they stop improving)
        bootstrap=2000,
    ),
    "quick": dict(
        datasets=["digits"],
        models=["resnet-s", "vit-s", "convnext-s"],
        epochs=[0, 1, 2, 4, 8],
        grid_train_size={"digits": None, "animals": 1500},
        test_size={"digits": None, "animals": 500},
        finetune_train_size={"digits": 600, "animals": 600},
        seeds=list(range(5)),
        iis_weights=[0.1, 1.0],
        head_learning_rates=[1e-3, 1e-2],
        transfer_pretrain_epochs=8.0,
        num_concepts=200,
        images_per_class=10,
        head_epochs=None,  # the converged protocol's own budget (heads trained until they stop improving)
        bootstrap=1000,
    ),
    "smoke": dict(
        datasets=["digits"],
        models=["resnet-s"],
        epochs=[0, 1, 2],
        grid_train_size={"digits": 120, "animals": 120},
        test_size={"digits": 60, "animals": 60},
        finetune_train_size={"digits": 120, "animals": 120},
        seeds=[0, 1],
        iis_weights=[0.5],
        head_learning_rates=[1e-3, 1e-2],
        transfer_pretrain_epochs=1.0,
        num_concepts=20,
        images_per_class=2,
        head_epochs=2,
        bootstrap=50,
    ),
}


def _parser() -> argparse.ArgumentParser:
    """The command line of examples/research_projects/iis_paper/reproduce_findings.py."""
    parser = argparse.ArgumentParser(
        description=__doc__, prog=SCRIPT, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="reduced version, a few minutes on 2 CPU cores")
    mode.add_argument("--smoke", action="store_true", help="a tiny slice in seconds (for tests)")
    parser.add_argument("--output-dir", default="reproduce_output")
    parser.add_argument(
        "--write-report", metavar="PATH", help="also write the Markdown report (e.g. docs/RESULTS.md)"
    )
    parser.add_argument("--datasets", nargs="+", choices=DATASETS)
    parser.add_argument("--models", nargs="+", choices=MODELS + LARGE_MODELS)
    parser.add_argument("--epochs", type=int, nargs="+", help="checkpoint epochs (0 = initialisation)")
    parser.add_argument("--seeds", type=int, nargs="+", help="fine-tuning seeds (finding 2)")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        help="finding 2's scenarios: a data set (in domain) or SOURCE-to-TARGET (transfer); default: every "
        "data set of --datasets in domain, then every ordered pair",
    )
    parser.add_argument("--iis-weights", type=float, nargs="+", help="iis_weight values of the grid")
    parser.add_argument(
        "--head-learning-rates",
        type=float,
        nargs="+",
        help="iis_head_learning_rate values of the grid (the interpretation head's own learning rate)",
    )
    parser.add_argument(
        "--head-weight-decay",
        type=float,
        default=None,
        help="the interpretation head's weight decay (default: IISTrainingArguments')",
    )
    parser.add_argument(
        "--iis-ratios", type=float, nargs="+", default=[0.9], help="the loss's sparsity ratios"
    )
    parser.add_argument("--pretrain-epochs", type=float, default=1.0, help="in-domain pre-training epochs")
    parser.add_argument("--transfer-pretrain-epochs", type=float, help="pre-training epochs on the source")
    parser.add_argument("--finetune-epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the checkpoint models")
    parser.add_argument("--num-concepts", type=int)
    parser.add_argument("--images-per-class", type=int)
    parser.add_argument("--head-epochs", type=int, help="a fixed head budget (default: until converged)")
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples")
    parser.add_argument("--skip-finetuning", action="store_true")
    parser.add_argument("--skip-checkpoints", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--from-results",
        metavar="RESULTS_JSON",
        help="redraw the figures and rewrite the report from a finished run's results.json (no training)",
    )
    parser.add_argument(
        "--finetuning-results",
        metavar="RESULTS_JSON",
        help="with --from-results: take finding 2 (its runs and provenance) from this run's results.json "
        "instead (e.g. a --skip-checkpoints run)",
    )
    parser.add_argument(
        "--extra-results",
        metavar="RESULTS_JSON",
        nargs="+",
        default=[],
        help="with --from-results: other runs' results.json (e.g. larger models on a GPU), reported in "
        "their own section, each row marked with the device it came from",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, with the preset's values where a flag was not given, checked."""
    parser = _parser()
    args = parser.parse_args(argv)
    preset = PRESETS["smoke" if args.smoke else "quick" if args.quick else "full"]
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    args.grid_train_size, args.test_size = preset["grid_train_size"], preset["test_size"]
    args.finetune_train_size = preset["finetune_train_size"]
    if args.head_weight_decay is None:
        args.head_weight_decay = trainer_default("iis_head_weight_decay")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.scenarios is None:
        args.scenarios = default_scenarios(args.datasets)
    _check(parser, args)
    return args


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse combinations of flags that cannot run (argparse's usage error, exit code 2)."""
    if args.extra_results and not args.from_results:
        parser.error("--extra-results needs --from-results (the main run they are reported beside)")
    if args.skip_finetuning and args.skip_checkpoints:
        parser.error("nothing to do: both --skip-finetuning and --skip-checkpoints")
    if args.finetuning_results and not args.from_results:
        parser.error("--finetuning-results needs --from-results (the run whose findings 1 and 3 it joins)")
    for name in args.scenarios:
        source, target = scenario_datasets(name)
        if source not in DATASETS or target not in DATASETS:
            parser.error(f"unknown scenario {name!r}: a data set of {DATASETS}, or SOURCE{TRANSFER}TARGET")
        missing = {source, target} - set(args.datasets)
        if missing and not args.from_results:
            parser.error(f"scenario {name!r} needs --datasets to include {sorted(missing)}")


# What a merged finding-2 run keeps of its own results.json (its provenance in the report).
FINETUNING_RUN_KEYS = (
    "command",
    "mode",
    "config",
    "environment",
    "datasets",
    "scenarios",
    "phase_seconds",
    "runtime_seconds",
    "finished",
)


def redraw(
    results_path: Path,
    output_dir: Path,
    report: str | None,
    extra_results: Sequence[str] = (),
    finetuning_results: str | None = None,
    command: list[str] | None = None,
) -> dict:
    """Statistics, figures (into output_dir) and, if asked, the report again from a run's results.json.

    Nothing is trained or scored: the measurements (checkpoints, fine-tuning runs) are the runs' own.
    With `finetuning_results`, finding 2 (runs, provenance) is taken from that run instead, and kept
    in the written results as `finetuning_run`.
    """
    results = json.loads(results_path.read_text(encoding="utf-8"))
    if finetuning_results:
        other = json.loads(Path(finetuning_results).read_text(encoding="utf-8"))
        if not other.get("finetuning"):
            raise IISError(
                f"{finetuning_results}: no fine-tuning runs: pass the results.json of a run without --skip-finetuning"
            )
        results["finetuning"] = other["finetuning"]
        results["finetuning_run"] = {key: other.get(key) for key in FINETUNING_RUN_KEYS}
    saved = types.SimpleNamespace(**results["config"])
    # The statistics are recomputed from the stored measurements, so they follow this code.
    results["finding1_3"] = (
        analyse_checkpoints(results["checkpoints"], saved) if results["checkpoints"] else {}
    )
    results["finding2"] = analyse_finetuning(results["finetuning"]) if results["finetuning"] else {}
    results["figures"] = make_figures(results, output_dir, saved)
    results["extra_runs"] = extra_runs(extra_results)
    if command:
        results["redraw_command"] = command
    if report:
        write_report(results, Path(report), output_dir)
    return results


def extra_runs(results_paths: Sequence[str]) -> list[dict]:
    """Other runs' checkpoints (larger models, another device), one entry per device, with their
    own statistics; runs on the same device (e.g. one per dataset) are reported together."""
    by_device: dict[str, dict] = {}
    for path in map(Path, results_paths):
        other = json.loads(path.read_text(encoding="utf-8"))
        if not other.get("checkpoints"):
            raise IISError(
                f"{path}: no checkpoints to report: pass the results.json of a run without --skip-checkpoints"
            )
        env = other["environment"]
        device = env.get("cuda") or f"CPU ({env.get('machine')}, {env.get('cpu_count')} cores)"
        entry = by_device.setdefault(
            device,
            {"device": device, "commands": [], "finished": [], "runtime_seconds": 0.0, "checkpoints": []},
        )
        entry["commands"].append(other["command"])
        entry["finished"].append(other["finished"])
        entry["runtime_seconds"] += other["runtime_seconds"]
        entry["versions"] = env["versions"]
        entry["checkpoints"] += other["checkpoints"]
        entry["config"] = other["config"]
    for entry in by_device.values():
        cfg = types.SimpleNamespace(**entry.pop("config"))
        cfg.models = list(dict.fromkeys(r["model"] for r in entry["checkpoints"]))
        entry["finding1_3"] = analyse_checkpoints(entry["checkpoints"], cfg)
    return list(by_device.values())


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: run (or redraw) and write the results; 0, or 2 with one line for an error the user can fix."""
    return exit_code(run, argv)


def run(argv: Sequence[str] | None = None) -> dict:
    """Parse the command line, then measure (or redraw from --from-results); returns the results."""
    from transformers.utils import logging as hf_logging

    cfg = parse_args(argv)
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*requires torchvision.*")
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    command = [SCRIPT, *(sys.argv[1:] if argv is None else argv)]
    if cfg.from_results:
        return redraw(
            Path(cfg.from_results),
            output_dir,
            cfg.write_report,
            cfg.extra_results,
            cfg.finetuning_results,
            command=command,
        )
    started = time.perf_counter()

    def log(message: str) -> None:
        if not cfg.quiet:
            print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    measured, phases = measure(cfg, log)
    t2 = time.perf_counter()
    results = {"command": command, "mode": cfg.mode, "config": run_config(cfg), "environment": environment()}
    results |= measured
    results["finding1_3"] = analyse_checkpoints(results["checkpoints"], cfg) if results["checkpoints"] else {}
    results["finding2"] = analyse_finetuning(results["finetuning"], cfg) if results["finetuning"] else {}
    results["figures"] = make_figures(results, output_dir, cfg)
    phases["analysis and figures"] = time.perf_counter() - t2
    results["phase_seconds"] = {k: round(v, 1) for k, v in phases.items()}
    results["runtime_seconds"] = round(time.perf_counter() - started, 1)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    write_results_json(output_dir / "results.json", results)
    if cfg.write_report:
        write_report(results, Path(cfg.write_report), output_dir)
    log(f"done in {results['runtime_seconds'] / 60:.1f} min: {output_dir / 'results.json'}")
    return results


NOT_CONFIG = (
    "quick",
    "smoke",
    "quiet",
    "write_report",
    "output_dir",
    "from_results",
    "extra_results",
    "finetuning_results",
)


def run_config(cfg: argparse.Namespace) -> dict:
    """The settings a results.json records (every flag but where the files go)."""
    config = {k: v for k, v in vars(cfg).items() if k not in NOT_CONFIG}
    config["iis_refit_head"] = False  # finetune_run's IISTrainer runs: the backbone is what is compared
    return config


def measure(cfg: argparse.Namespace, log: Any) -> tuple[dict, dict[str, float]]:
    """Load each data set, run the checkpoint grid and the fine-tuning scenarios; returns the
    measurements (datasets, checkpoints, finetuning, scenarios) and each phase's seconds."""
    checkpoints, runs, datasets, loaded, small, scenarios = [], [], {}, {}, {}, {}
    phases: dict[str, float] = {}
    for dataset in cfg.datasets:
        t0 = time.perf_counter()
        data = load_named_dataset(
            dataset, cfg.grid_train_size[dataset], cfg.test_size[dataset], seed=cfg.seed
        )
        loaded[dataset] = data
        datasets[dataset] = {
            "description": dataset_description(dataset),
            "train": len(data["train"]),
            "test": len(data["test"]),
            "finetune_train": min(cfg.finetune_train_size[dataset], len(data["train"])),
        }
        small[dataset] = {
            "train": data["train"].shuffle(seed=0).select(range(datasets[dataset]["finetune_train"])),
            "test": data["test"],
        }
        log(f"[{dataset}] train {len(data['train'])}, test {len(data['test'])}")
        if not cfg.skip_checkpoints:
            checkpoints += run_checkpoint_grid(data, dataset, cfg, log)
            phases[f"{dataset} checkpoints"] = time.perf_counter() - t0
    if not cfg.skip_finetuning:
        for scenario in cfg.scenarios:
            t1 = time.perf_counter()
            source, target = scenario_datasets(scenario)
            source_data = loaded[source] if source != target else None
            mine, scenarios[scenario] = run_finetuning(
                small[target], scenario, cfg, log, source_data=source_data
            )
            runs += mine
            phases[f"fine-tuning {scenario}"] = time.perf_counter() - t1
    measured = {"datasets": datasets, "checkpoints": checkpoints, "finetuning": runs, "scenarios": scenarios}
    return measured, phases
