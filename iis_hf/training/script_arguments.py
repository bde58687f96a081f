"""The arguments of `iis-hf finetune`: transformers' `ModelArguments` and `DataTrainingArguments` of
`run_image_classification.py`, and the parser over them and `IISTrainingArguments`.

Kept apart from the run itself (`iis_hf.training.finetune`, which re-exports all of this): what a
run is given, versus what it does with it.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

from .arguments import IISTrainingArguments

DEFAULT_MODEL = "google/vit-base-patch16-224-in21k"


# ---------------------------------------------------------------------------- arguments
@dataclass
class ModelArguments:
    """Which model, configuration and image processor to fine-tune from."""

    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Hub model id or local save_pretrained folder of an image-classification model"},
    )
    config_name: str | None = field(
        default=None, metadata={"help": "config name or path, if not the same as model_name_or_path"}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "where to store models and datasets downloaded from the Hub"}
    )
    model_revision: str = field(
        default="main", metadata={"help": "model version to use: a branch name, tag name or commit id"}
    )
    image_processor_name: str | None = field(
        default=None, metadata={"help": "image processor name or path, if not the same as model_name_or_path"}
    )
    token: str | None = field(
        default=None,
        metadata={
            "help": "Hub token for private models and datasets (default: the one `hf auth login` stored)"
        },
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={
            "help": "start a new classification head when the checkpoint's head has another number of classes"
        },
    )


@dataclass
class DataTrainingArguments:
    """Which images to train and evaluate on."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset id, a folder written by save_to_disk, or a folder of images with one sub-folder "
            "per class (imagefolder)"
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "configuration name of a Hub dataset"}
    )
    train_dir: str | None = field(
        default=None, metadata={"help": "a folder of training images, one sub-folder per class"}
    )
    validation_dir: str | None = field(
        default=None, metadata={"help": "a folder of validation images, one sub-folder per class"}
    )
    train_val_split: float | None = field(
        default=0.15,
        metadata={
            "help": "fraction of the train split held out for validation when there is no validation split"
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "use a random subset of this many training images (seeded)"}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "use a random subset of this many validation images (seeded)"}
    )
    image_column_name: str | None = field(
        default=None, metadata={"help": "column holding the images (default: the datasets.Image column)"}
    )
    label_column_name: str | None = field(
        default=None, metadata={"help": "column holding the labels (default: the ClassLabel column)"}
    )

    def __post_init__(self):
        if self.dataset_name is None and self.train_dir is None:
            raise ValueError(
                "no dataset given: pass --dataset_name (a Hub dataset id, a save_to_disk folder or an image "
                "folder) or --train_dir (and optionally --validation_dir)"
            )
        if self.dataset_name is not None and (self.train_dir is not None or self.validation_dir is not None):
            raise ValueError("pass either --dataset_name or --train_dir/--validation_dir, not both")
        if self.train_val_split is not None and not 0.0 <= self.train_val_split < 1.0:
            raise ValueError(f"--train_val_split must be in [0, 1), got {self.train_val_split}")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")


# ---------------------------------------------------------------------------- data
# What the --no_<field> switches HfArgumentParser adds for the True-by-default booleans do (it gives
# them the field's own help, which describes the opposite).
NO_SWITCH_HELP = {
    "iis_eval": "skip the IIS measurement at each evaluation: no eval_iis, eval_iis_accuracy_<rho> "
    "(sets iis_eval to False; the measurement is on by default)",
    "iis_refit_head": "keep the interpretation head as trained, without refitting it on the final backbone "
    "(sets iis_refit_head to False; refitting is on by default)",
}


def build_parser(prog: str | None = None):
    """transformers' HfArgumentParser over the three argument dataclasses, arranged for `--help`: the
    IIS options first, in their own group (702 lines of Trainer options would bury them), and each
    --no_iis_* switch with help of its own."""
    from transformers import HfArgumentParser

    # transformers types its argument as `DataClassType`, a NewType no dataclass matches without a cast
    parser = HfArgumentParser(
        (ModelArguments, DataTrainingArguments, IISTrainingArguments),  # type: ignore[arg-type]
        prog=prog,
    )
    iis = [a for a in parser._actions if a.dest.startswith("iis_")]
    for action in iis:
        if any(o.startswith(("--no_", "--no-")) for o in action.option_strings):
            action.help = NO_SWITCH_HELP.get(
                action.dest, f"sets {action.dest} to False (on by default; see --{action.dest})"
            )
            action.default = argparse.SUPPRESS  # help only: "(default: False)" would read as "off by default"
    group = parser.add_argument_group(
        "IIS options (IISTrainingArguments)",
        "The interpretability loss, its concepts, and the IIS measured at each evaluation. The "
        "model, data and Trainer arguments of transformers' run_image_classification.py follow.",
    )
    for action in iis:
        for other in parser._action_groups:
            if action in other._group_actions and other is not group:
                other._group_actions.remove(action)
        group._group_actions.append(action)
    parser._action_groups.remove(group)
    parser._action_groups.insert(0, group)
    help_actions = [a for a in parser._actions if isinstance(a, argparse._HelpAction)]
    rest = [a for a in parser._actions if a not in iis and a not in help_actions]
    parser._actions[:] = [*help_actions, *iis, *rest]  # the usage line follows this order
    return parser


def parse_arguments(argv: list[str] | None = None, prog: str | None = None):
    """(model_args, data_args, training_args) from command-line arguments or one .json/.yaml file."""
    parser = build_parser(prog)
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(yaml_file=os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)
