"""`iis-hf demo`: train a small model on scikit-learn's digits and score it, offline."""

from __future__ import annotations

import argparse
import math
import time

from ..config import ConceptsConfig, ExtractionConfig, HeadsConfig, ScoringConfig
from ._arguments import (
    HelpFormatter,
    UsageError,
    add_config_arguments,
    add_output_dir_argument,
    add_overwrite_argument,
    add_verbosity_arguments,
    scoring_config,
)

# iis_hf.demo.DEMO_THREADS, repeated because importing iis_hf.demo loads torch (slow `iis-hf --help`);
# tests/test_readme_demo.py holds the two equal.
DEMO_THREADS = 1


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="train a small model on scikit-learn's digits and score it (offline)",
        formatter_class=HelpFormatter,
    )
    add_output_dir_argument(
        demo, required=False, default="demo_output", help="where the model, iis.json and plot go"
    )
    add_overwrite_argument(demo)
    demo.add_argument(
        "--train-epochs", type=float, default=3.0, help="epochs of plain fine-tuning before scoring"
    )
    demo.add_argument(
        "--threads",
        type=int,
        default=DEMO_THREADS,
        help="CPU threads for the training and scoring (torch.set_num_threads) (default: 1, which prints "
        "README's table on every run; another count changes its last digits)",
    )
    add_config_arguments(demo, HeadsConfig, only=("epochs", "protocol", "num_seeds"))
    add_config_arguments(demo, ConceptsConfig, only=("num_concepts",))
    add_config_arguments(demo, ScoringConfig, only=("seed", "progress"))
    add_verbosity_arguments(demo)
    demo.set_defaults(func=run)


def demo_config(args: argparse.Namespace) -> ScoringConfig:
    """The demo's settings: the flags it has, the library's defaults for the rest, batches of 128."""
    return scoring_config(args, extraction=ExtractionConfig(batch_size=128))  # 8 x 8 digits: big batches


def run(args: argparse.Namespace) -> int:
    from ..demo import pinned_threads, run_demo
    from ..outputs import comparison_table, is_output_entry
    from ..preflight import check_output_folder
    from ._arguments import warn_if_launched_alone

    warn_if_launched_alone("demo")  # every command says when a multi-process launch runs it alone

    started = time.time()
    config = demo_config(args)
    if not (math.isfinite(args.train_epochs) and args.train_epochs > 0):
        raise UsageError(f"--train-epochs must be a finite number > 0, got {args.train_epochs}")
    if args.threads < 1:
        raise UsageError(f"--threads must be 1 or more, got {args.threads}")
    # Before the training: a run that cannot write its output stops now, not after minutes of work.
    check_output_folder(args.output_dir, "--output-dir", overwrite=args.overwrite, ours=is_output_entry)
    with pinned_threads(args.threads):
        results = run_demo(
            args.output_dir,
            args.train_epochs,
            config,
            log=lambda line: print(line, flush=True),
            overwrite=args.overwrite,
        )
    print()
    print(comparison_table(results))
    print(
        f"\ntotal time {time.time() - started:.0f} s; wrote {args.output_dir}/iis.json, iis_random-init.json, "
        "iis_curve.png, concept_bank/ and model/"
    )
    return 0
