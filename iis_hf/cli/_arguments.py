"""The flags every command shares, and the scoring flags generated from the config dataclasses.

`add_config_arguments` reads each field of `ExtractionConfig`, `ConceptsConfig`, `HeadsConfig` and
`ScoringConfig` (its type, default and `setting` metadata: help, choices, flag spelling) and adds
its flag, the way `HfArgumentParser` builds transformers' example flags: a new setting is one field.
`config_from_flags` maps the parsed flags back onto the dataclasses, and `flag_error` names a bad
value by the flag the user typed.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import types
import typing
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import MISSING, Field
from typing import Any

from ..config import (
    ConceptsConfig,
    ExtractionConfig,
    HeadsConfig,
    ScoringConfig,
    config_fields,
    field_type,
    setting_flag,
    setting_name,
)
from ..errors import IISError
from ..progress import bars_enabled

SCORING_CONFIGS: tuple[type, ...] = (ExtractionConfig, ConceptsConfig, HeadsConfig, ScoringConfig)


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
    options: dict[str, Any] = {"help": f.metadata["help"], "dest": setting_name(config, f.name)}
    if annotation is bool:
        return {**options, "action": "store_false" if default else "store_true"}
    scalar, is_list = _scalar_type(annotation)
    if is_list:
        default = list(default) if isinstance(default, (list, tuple)) else [default]
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
            parser.add_argument(setting_flag(config, f.name), **flag_options(config, f))


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
        dest = setting_name(config, f.name)
        if f.name not in given and hasattr(args, dest):
            values[f.name] = getattr(args, dest)
    return config(**values, **given)


def scoring_config(args: argparse.Namespace, **parts: Any) -> ScoringConfig:
    """The command line's flags as a `ScoringConfig` (every value checked here, before any work);
    `parts` (e.g. ``extraction=ExtractionConfig(...)``) replace what the command has no flags for."""
    try:
        for name, config in (
            ("extraction", ExtractionConfig),
            ("concepts", ConceptsConfig),
            ("heads", HeadsConfig),
        ):
            if name not in parts:
                parts[name] = config_from_flags(config, args)
        return config_from_flags(
            ScoringConfig, args, progress=getattr(args, "progress", True) and bars_enabled(), **parts
        )
    except IISError as err:
        raise flag_error(err, args.command) from err


# ---------------------------------------------------------------------------- errors in the user's spelling
def command_flags(command: str) -> set[str]:
    """Every option string of `command` (``--epochs``, ``--output-dir``, ...)."""
    from . import build_parser  # the parser is built on demand: only an error needs it

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {o for a in subcommands.choices[command]._actions for o in a.option_strings}


def command_setting_flag(command: str, name: str, owner: str | None = None) -> str | None:
    """The flag of `command` that sets the config field `name` (of the config class named `owner`, or
    of any, the plain ``--name`` spelling first where two share it), or None."""
    configs = [c for c in SCORING_CONFIGS if name in c.__dataclass_fields__ and _is_owner(c, owner)]  # type: ignore[attr-defined]
    plain = "--" + name.replace("_", "-")
    spellings = sorted({setting_flag(c, name) for c in configs}, key=lambda flag: flag != plain)
    flags = command_flags(command)
    return next((flag for flag in spellings if flag in flags), None)


def _is_owner(config: type, owner: str | None) -> bool:
    """Whether an error's `owner` ("HeadsConfig") names `config` or a class it extends (None: any)."""
    return owner is None or owner in {k.__name__ for k in config.__mro__}


def flag_error(err: IISError, command: str) -> IISError:
    """A setting's error in the spelling the user typed: ``HeadsConfig.epochs must be ...`` becomes
    ``--epochs must be ...``, and a message that does not name its setting is prefixed with the flag
    (``--sparsity-ratios: sparsity ratio 1.5 ...``)."""
    flag = command_setting_flag(command, err.field, err.owner) if err.field else None
    if flag is None or str(err).startswith(flag):  # no flag, or already in the command line's spelling
        return err
    return err.spelled_as(flag, UsageError)


# A message names a setting the user can change by its Python keyword and "=", standing alone
# ("lower interpretability_cutoff=", "(epochs=)"): the Python API's spelling. On the command line
# `in_flags` spells each as the command's flag; `name=value` (a repr, an example call) stays as it is.
KEYWORD = re.compile(r"(?<![\w.-])([a-z][a-z0-9_]*)=(?=$|[\s),;:./])")
SAID_TWICE = re.compile(r"(--[\w-]+) \(\1\)")


def in_flags(text: str, command: str) -> str:
    """`text` with the keywords it names (``epochs=``) as `command`'s flags (``--epochs``): the
    argparse flags of score, compare and demo, the HfArgumentParser ones of finetune
    (`iis_hf.training.finetune.keyword_flag`). A keyword the command has no flag for stays."""
    if "=" not in text:
        return text
    spelled = KEYWORD.sub(lambda match: keyword_flag(command, match.group(1)) or match.group(0), text)
    return SAID_TWICE.sub(r"\1", spelled)  # "--cache-dir (cache_dir=)" gave both spellings: one is enough


def keyword_flag(command: str, keyword: str) -> str | None:
    """The flag of `command` that sets the setting a message names as `keyword`, or None."""
    if command == "finetune":  # HfArgumentParser's flags, which the finetune subparser passes on
        from ..training.finetune import keyword_flag as finetune_flag

        return finetune_flag(keyword)
    flag = command_setting_flag(command, keyword)
    if flag is None and "--" + keyword.replace("_", "-") in command_flags(command):
        flag = "--" + keyword.replace("_", "-")  # a flag of the command itself (--max-train-samples)
    return flag


@contextlib.contextmanager
def warnings_in_flags(command: str) -> Iterator[None]:
    """Show the warnings of a command with its flags where they name a keyword (`in_flags`): the
    message is the library's, only its spelling is the command line's."""
    show = warnings.showwarning

    def shown(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        text = in_flags(str(message), command)
        if text != str(message):
            with contextlib.suppress(Exception):  # a warning class that takes other arguments keeps its text
                message = category(text)
        show(message, category, filename, lineno, file, line)

    warnings.showwarning = shown
    try:
        yield
    finally:
        warnings.showwarning = show


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
    """Which images score and compare read (`iis_hf.data.load_scoring_splits`)."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset-config", default=None, help="dataset configuration name (Hub datasets; default: none)"
    )
    data.add_argument("--train-split", default="train", help="the split the heads and concepts are fitted on")
    data.add_argument(
        "--eval-split",
        default=None,
        help="the split IIS is measured on (default: validation/test if present, else a stratified part of "
        "the train split)",
    )
    data.add_argument(
        "--allow-same-split",
        action="store_true",
        help="let --eval-split name the --train-split (the heads are then measured on the images they were "
        "fitted on; recorded in iis.json); without it that is refused",
    )
    data.add_argument(
        "--eval-fraction", type=float, default=0.2, help="eval part of train when there is no eval split"
    )
    data.add_argument("--image-column", default=None, help="default: detected (the datasets.Image column)")
    data.add_argument("--label-column", default=None, help="default: detected (the ClassLabel column)")
    data.add_argument(
        "--max-train-samples", type=int, default=None, help="a random subset (seeded) of train (default: all)"
    )
    data.add_argument(
        "--max-eval-samples", type=int, default=None, help="a random subset (seeded) of eval (default: all)"
    )
