"""The flags every command shares, and the scoring flags generated from the config dataclasses.

`add_config_arguments` reads each field of `ExtractionConfig`, `ConceptsConfig`, `HeadsConfig` and
`ScoringConfig` (its type, default and `setting` metadata: help, choices) and adds its flag, spelled
from the field's name by one rule (`iis_hf.config.setting_flag`), the way `HfArgumentParser` builds
transformers' example flags: a new setting is one field. `config_from_flags` maps the parsed flags
back onto the dataclasses (each flag's dest is its field), and `setting_error_line` names a bad value
by its flag, by the same rule.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, Field
from typing import Any

from ..config import (
    ConceptsConfig,
    DataConfig,
    ExtractionConfig,
    HeadsConfig,
    ScoringConfig,
    config_fields,
    field_type,
    setting_flag,
)
from ..errors import IISError, first_line
from ..progress import bars_enabled

SCORING_CONFIGS: tuple[type, ...] = (ExtractionConfig, ConceptsConfig, HeadsConfig, ScoringConfig, DataConfig)
# The flags of `iis-hf score` that are no config's field: what to score, where to write, how loud.
COMMAND_ONLY_FLAGS = (
    "model",
    "models",
    "dataset",
    "output_dir",
    "overwrite",
    "verbosity",
    "allow_chance",
    "help",
)


class UsageError(IISError):
    """Input the user can fix, found by the command line itself; reported as one line and exit code 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default ("(default: 30)"), except where the help already says
    what the default is, and for on/off switches and options without a value by default (their help
    says what happens without them). `tests/test_cli_help.py` holds every option to this."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text.lower()
            or any(action.default is value for value in (None, False, argparse.SUPPRESS))  # `0 in (False,)`
            or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        ):
            return text
        return super()._get_help_string(action) or text


# ---------------------------------------------------------------------------- generated from the configs
def flag_options(config: type, f: Field) -> dict[str, Any]:
    """`add_argument` keywords for one field: type, nargs, choices and default from its annotation."""
    annotation = field_type(config, f.name)
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    options: dict[str, Any] = {"help": f.metadata["help"], "dest": f.name}
    if annotation is bool:
        return {**options, "action": "store_false" if default else "store_true"}
    scalar, is_list = _scalar_type(annotation)
    if is_list:
        default = (
            list(default) if isinstance(default, (list, tuple)) else default if default is None else [default]
        )
        options["nargs"] = "+"
    if f.metadata.get("choices"):
        options["choices"] = f.metadata["choices"]
    return {**options, "type": scalar, "default": default}


def _scalar_type(annotation: Any) -> tuple[type, bool]:
    """(the type one value is parsed with, whether a list of them is allowed): `float | list[float]` is
    (float, True), `int | None` is (int, False)."""
    parts = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    scalar: type = str
    is_list = False
    for part in parts:
        if typing.get_origin(part) is list:
            is_list, scalar = True, typing.get_args(part)[0]
        elif part in (int, float, str):
            scalar = part
    return scalar, is_list


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    config: type,
    only: Sequence[str] | None = None,
) -> None:
    """One flag per field of `config` (or of the fields named in `only`)."""
    for f in config_fields(config):
        if only is None or f.name in only:
            parser.add_argument(setting_flag(f), **flag_options(config, f))


def add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a `ScoringConfig`, grouped as its parts."""
    add_config_arguments(parser.add_argument_group("concepts"), ConceptsConfig)
    heads = parser.add_argument_group("interpretation heads")
    add_config_arguments(heads, HeadsConfig)
    heads.add_argument(
        "--allow-chance",
        action="store_true",
        help="write the outputs (with IIS null) even when A0 is not above chance, instead of exit 2",
    )
    extraction = parser.add_argument_group("extraction")
    add_config_arguments(extraction, ExtractionConfig)
    add_config_arguments(extraction, ScoringConfig)


def config_from_flags(config: type, args: argparse.Namespace, **given: Any) -> Any:
    """An instance of `config` from the flags `add_config_arguments` added (`given` wins; a field with
    no flag on this command keeps its default)."""
    values = {}
    for f in config_fields(config):
        if f.name not in given and hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    return config(**values, **given)


def scoring_config(args: argparse.Namespace, **parts: Any) -> ScoringConfig:
    """The command line's flags as a `ScoringConfig` (every value checked here, before any work: a bad
    one is an IISError naming its field, which `iis_hf.cli.main` reports by its flag); `parts` (e.g.
    ``extraction=ExtractionConfig(...)``) replace what the command has no flags for."""
    for name, config in (
        ("extraction", ExtractionConfig),
        ("concepts", ConceptsConfig),
        ("heads", HeadsConfig),
    ):
        if name not in parts:
            parts[name] = config_from_flags(config, args)
    if hasattr(args, "train_split"):  # the data flags too, before any work (`DataConfig`)
        config_from_flags(DataConfig, args)
    return config_from_flags(
        ScoringConfig, args, progress=getattr(args, "progress", True) and bars_enabled(), **parts
    )


# ---------------------------------------------------------------------------- errors named by their flag
def setting_error_line(err: IISError) -> str:
    """The one line a setting's error is reported with on the command line: the error names its field,
    and the flag is that field's by the one rule (`iis_hf.config.setting_flag`): ``--head-batch-size
    must be an int >= 1, got 0``. An error about no config field is its own first line."""
    fields = {(config.__name__, f.name): f for config in SCORING_CONFIGS for f in config_fields(config)}
    if err.owner is None:  # a check shared by the configs (the ratio grid): the field says whose
        fields = {("", name): f for (_, name), f in fields.items()}
    owned = fields.get((err.owner or "", err.field or ""))  # a TrainingArguments error is not a config's
    if owned is None:
        return first_line(err)
    return first_line(err, err.named(setting_flag(owned)))


# ---------------------------------------------------------------------------- shared flags
def add_verbosity_arguments(parser: argparse.ArgumentParser, dest: str = "verbosity") -> None:
    """`--quiet` / `--verbose` (`iis_hf.progress`): on every subcommand, and before it for all of them
    (``iis-hf --quiet finetune ...``)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q",
        "--quiet",
        dest=dest,
        action="store_const",
        const="quiet",
        help="no progress bars (iis-hf's, the Hub's, datasets', Trainer's) and only errors from the Hugging "
        "Face libraries (default: bars shown; HF_HUB_DISABLE_PROGRESS_BARS=1 also hides them)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        dest=dest,
        action="store_const",
        const="verbose",
        help="info logs from transformers, datasets and evaluate (default: their own levels)",
    )


def add_output_dir_argument(
    parser: argparse.ArgumentParser, *, required: bool, help: str, default: str | None = None
) -> None:
    """`--output-dir` on every subcommand (`--output_dir`, the spelling of `finetune`, works too)."""
    parser.add_argument(
        "--output-dir", "--output_dir", dest="output_dir", required=required, default=default, help=help
    )


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output folder (only one holding iis-hf's outputs); without it an existing "
        "folder is kept and the command stops before any work",
    )


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Which images score and compare read: the fields of `DataConfig` (`iis_hf.data.load_scoring_splits`)."""
    add_config_arguments(parser.add_argument_group("data"), DataConfig)


def warn_if_launched_alone(command: str) -> str | None:
    """Say, in one line on stderr, that a launch asked for several processes but this one works alone
    (`accelerate launch --cpu --num_processes 2` starts one): the same check as `iis-hf finetune`'s."""
    from ..devices import launched_alone_message, launched_world_size

    message = launched_alone_message(
        launched_world_size(), work="scores", command=f"-m iis_hf.cli {command} ..."
    )
    if message is not None:
        print(f"iis-hf {command}: warning: {message}", file=sys.stderr)
    return message
