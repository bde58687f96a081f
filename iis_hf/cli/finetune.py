"""`iis-hf finetune`: transformers' run_image_classification.py arguments plus the `--iis_*` ones."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    # Everything after `finetune` goes to transformers' HfArgumentParser untouched: prefix_chars="+"
    # keeps argparse from reading `--do_train`, `--help`, ... as options of this subparser.
    finetune = commands.add_parser(
        "finetune",
        help="fine-tune an image classifier with IISTrainer (run_image_classification.py arguments)",
        description="Arguments as in transformers' run_image_classification.py, plus the --iis_* "
        "IISTrainingArguments; see `iis-hf finetune --help`.",
        add_help=False,
        prefix_chars="+",
    )
    finetune.add_argument(
        "finetune_args", nargs=argparse.REMAINDER, help="arguments, or one .json file holding them"
    )
    finetune.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training.numbers import check_number_flags

    check_number_flags(args.finetune_args)  # in a second: the import below takes ~10 s (transformers)
    from ..training.finetune import main as finetune_main

    finetune_main(args.finetune_args, prog="iis-hf finetune")
    return 0
