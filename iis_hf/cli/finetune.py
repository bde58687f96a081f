"""`iis-hf finetune`: transformers' run_image_classification.py arguments plus the `--iis_*` ones."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    # A pass-through command (`passes_through`): `iis_hf.cli.main` hands every argument after
    # `finetune` to transformers' HfArgumentParser untouched, so this parser declares none, not even -h.
    finetune = commands.add_parser(
        "finetune",
        help="fine-tune an image classifier with IISTrainer (run_image_classification.py arguments)",
        description="Arguments as in transformers' run_image_classification.py, plus the --iis_* "
        "IISTrainingArguments; see `iis-hf finetune --help`.",
        add_help=False,
    )
    finetune.set_defaults(func=run, passes_through=True)


def run(args: argparse.Namespace) -> int:
    from ..training.numbers import check_number_flags

    check_number_flags(args.passed_args)  # in a second: the import below takes ~10 s (transformers)
    from ..training.finetune import main as finetune_main

    finetune_main(args.passed_args, prog="iis-hf finetune")
    return 0
