"""`iis-hf compare`: several models ranked by IIS on one dataset with one setting (a leaderboard)."""

from __future__ import annotations

import argparse
import time

from ._arguments import (
    HelpFormatter,
    UsageError,
    add_data_arguments,
    add_output_dir_argument,
    add_overwrite_argument,
    add_scoring_arguments,
    add_verbosity_arguments,
    scoring_config,
    warn_if_launched_alone,
)
from ._preflight import preflight
from .score import scoring_splits


def register(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare",
        help="rank several models by IIS on one dataset, with one setting (a leaderboard)",
        description="Score several models on one dataset with one concept/heads setting (each image "
        "decoded once for all of them), read others' IIS from their model cards, refuse scores measured "
        "with other settings, and write OUTPUT_DIR/leaderboard.md, .csv, .json, iis_vs_accuracy.png "
        "and iis_curves.png.",
        formatter_class=HelpFormatter,
    )
    compare.add_argument(
        "--model",
        "--models",
        dest="models",
        nargs="+",
        action="extend",
        required=True,
        metavar="MODEL",
        help="the models to rank: Hub ids or save_pretrained folders (scored here), or card:<Hub id or "
        "folder> (the IIS its model card reports); name one with NAME=MODEL, e.g. trained=out/model",
    )
    compare.add_argument(
        "--dataset",
        default=None,
        help="Hub dataset id, save_to_disk folder or image folder (default: none, allowed when every "
        "model is a card:)",
    )
    add_output_dir_argument(
        compare, required=True, help="folder for the leaderboard (.md, .csv, .json) and its figures"
    )
    add_overwrite_argument(compare)
    add_data_arguments(compare)
    add_scoring_arguments(compare)
    add_verbosity_arguments(compare)
    compare.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..compare import is_leaderboard_entry, model_specs
    from ..devices import resolve_device
    from ..outputs import is_writing_process, output_folder_lock
    from ..preflight import check_output_folder

    started = time.time()
    warn_if_launched_alone("compare")
    config = scoring_config(args)
    if config.concepts.concept_bank:
        raise UsageError(
            "--concept-bank fits one model's representation; compare builds each model's own concepts"
        )
    specs = model_specs(args.models)  # bad names fail before any work
    inputs = {"--dataset": args.dataset, **{f"--model {s.name}": s.target for s in specs}}
    models = {f"--model {s.name}": s.target for s in specs if not s.from_card}
    preflight(args, config, inputs=inputs, models=models, ours=is_leaderboard_entry)
    resolve_device(config.device)
    # One run at a time writes a folder (as `iis-hf score`): a second is refused here, before any work.
    with output_folder_lock(args.output_dir, "--output-dir", "iis-hf compare", enabled=is_writing_process()):
        check_output_folder(
            args.output_dir, "--output-dir", overwrite=args.overwrite, ours=is_leaderboard_entry
        )
        return rank_and_write(args, config, specs, started)


def rank_and_write(args: argparse.Namespace, config, specs, started: float) -> int:
    """Everything after the checks: score or read each model, rank, write (under the folder's lock)."""
    from ..compare import compare_models
    from ..features.distributed import process_layout

    scored = [s.name for s in specs if not s.from_card]
    splits, data = None, {"dataset": args.dataset} if args.dataset else {}
    if scored:
        if args.dataset is None:
            raise UsageError(
                f"--dataset is needed to score {', '.join(scored)} (only card: models need none)"
            )
        splits = scoring_splits(args, config.seed)
        data = splits.settings()
    leaderboard = compare_models(
        specs,
        splits.train if splits else None,
        splits.eval if splits else None,
        config,
        image_column=splits.image_column if splits else None,
        label_column=splits.label_column if splits else None,
        data_settings=data,
    )
    if process_layout()[1] != 0:  # under torchrun / accelerate launch every rank scored; one writes
        return 0
    out = leaderboard.save(args.output_dir, overwrite=args.overwrite)
    print(leaderboard.table())
    print(
        f"\nwrote {out}/: {', '.join(sorted(p.name for p in out.iterdir()))} ({time.time() - started:.0f} s)"
    )
    return 0
