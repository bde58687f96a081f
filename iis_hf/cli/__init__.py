"""The `iis-hf` command: score, compare, demo, explain, finetune, app, install-metric.

One module per command (`register` adds its flags, `run` carries it out), the shared flags in
`_arguments` (the scoring flags generated from the config dataclasses), one preflight in `_preflight`,
and here the parser and the error boundary. The command line only parses: each command maps its
flags onto the settings of `iis_hf.config` and calls the library. Bad input ends with one line on
stderr and exit code 2; outputs are assembled in a temporary folder and moved into place only when
everything succeeded. Heavy libraries are imported inside the commands, so `iis-hf --help` starts fast.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from ..errors import IISError, first_line
from ..progress import verbosity
from ..version import __version__
from . import app, compare, demo, explain, finetune, install_metric, score
from ._arguments import add_verbosity_arguments, setting_error_line

EXIT_BAD_INPUT = 2
COMMANDS = (score, compare, explain, install_metric, demo, finetune, app)

__all__ = ["EXIT_BAD_INPUT", "build_parser", "error_message", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iis-hf",
        description="Measure the inherent interpretability (IIS) of Hugging Face vision models.",
    )
    parser.add_argument("--version", action="version", version=f"iis-hf {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show its full traceback above the one-line message"
    )
    add_verbosity_arguments(parser, dest="global_verbosity")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_arguments(parser, sys.argv[1:] if argv is None else list(argv))
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    written_before = len(committed_outputs())
    try:
        level = getattr(args, "verbosity", None) or args.global_verbosity or "normal"
        with verbosity(level):
            return args.func(args) or 0
    except KeyboardInterrupt as interrupt:
        written = committed_outputs()[written_before:]
        outcome = f"{written[-1]} was written whole" if written else "no output was written"
        outcome = str(interrupt) or outcome  # a command that knows what it left says so (finetune)
        print(f"iis-hf {args.command}: interrupted; {outcome}", file=sys.stderr)
        return 130
    except Exception as err:  # the error boundary: every expected failure is one line and exit code 2
        message = setting_error_line(err) if isinstance(err, IISError) else error_message(err)
        if message is None:
            raise
        if args.debug:
            traceback.print_exc()
        print(f"iis-hf {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`argv` parsed; for a pass-through command (`finetune`, `app`: `passes_through`), the arguments
    after its name are left untouched in `passed_args`, for the parser that owns them.

    Why: those commands' options belong to another parser (transformers' HfArgumentParser, the app's),
    so argparse parses only up to the command name and hands over the rest of `argv`, as `git` hands
    an alias's arguments on; every other command is parsed strictly (an unknown flag is exit 2)."""
    args, unknown = parser.parse_known_args(argv)
    if not getattr(args, "passes_through", False):
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        return args
    at = argv.index(args.command)  # the first positional of `iis-hf` is the command's name
    args = parser.parse_args(argv[: at + 1])  # options before the name are iis-hf's own, checked strictly
    args.passed_args = argv[at + 1 :]
    return args


def committed_outputs() -> list:
    """The output folders put in place so far (`iis_hf.files.COMMITTED`), without importing `files`
    (and torch with it) for a command that never wrote one: `finetune`'s argument checks stay fast."""
    files = sys.modules.get("iis_hf.files")
    return list(files.COMMITTED) if files is not None else []


def expected_errors() -> tuple[type[BaseException], ...]:
    """Failures of bad input or of the machine: ValueError (IISError, and what the library and transformers
    raise for bad input), a damaged safetensors file, input nested too deeply. An OSError is one
    only when it names a file or a system error (`error_message`). Anything else, KeyError, TypeError and
    AttributeError included, is a bug and keeps its traceback."""
    from safetensors import SafetensorError  # imported here: `iis-hf --help` loads no more than it needs

    return (ValueError, SafetensorError, RecursionError)


def error_message(err: BaseException) -> str | None:
    """The one line an expected failure is reported with (None: not an expected failure)."""
    if isinstance(err, OSError):
        if err.errno is None and err.filename is None:
            return None  # no file and no system error to name: not the user's to fix
        from ..reading import describe_os_error

        return describe_os_error(err)
    if not isinstance(err, expected_errors()):
        return None
    if isinstance(err, RecursionError):
        return "an input is nested too deeply to be read (a damaged or hostile JSON file?); re-create it"
    return first_line(err)
