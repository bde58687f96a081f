"""Help of every `iis-hf` flag: each says what it does and its default; `finetune --help` puts the
IIS options first. (How fast `iis-hf --help` starts is a benchmark: benchmarks/bench_cli_startup.py.)"""

from __future__ import annotations

import argparse

import pytest

from iis_hf.cli import build_parser
from iis_hf.training.finetune import build_parser as finetune_parser

SWITCHES = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def undocumented(parser: argparse.ArgumentParser) -> list[str]:
    """Flags without help, or whose help does not tell the default (switches and required flags aside)."""
    formatter = parser._get_formatter()
    problems = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        name = "/".join(action.option_strings) or action.dest
        if not (action.help or "").strip():
            problems.append(f"{name}: no help")
            continue
        text = formatter._get_help_string(action) % {**vars(action), "prog": parser.prog}
        if not (action.required or isinstance(action, SWITCHES) or not action.option_strings) and (
            "default" not in text.lower()
        ):
            problems.append(f"{name}: help does not say its default ({text!r})")
    return problems


def test_every_flag_of_every_subcommand_has_help_with_its_default():
    parser = build_parser()
    commands = subcommands(parser)
    assert {"score", "compare", "explain", "demo", "finetune", "app", "install-metric"} <= set(commands)
    problems = undocumented(parser)
    for name, sub in commands.items():
        problems += [f"{name} {p}" for p in undocumented(sub)]
    problems += [f"finetune {p}" for p in undocumented(finetune_parser())]
    pytest.importorskip("gradio")
    from iis_hf.app import build_arg_parser

    problems += [f"app {p}" for p in undocumented(build_arg_parser())]
    assert problems == [], "\n".join(problems)


def test_a_flag_without_help_is_caught():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cache", default=None, help="a folder")
    assert undocumented(parser) == [
        "--epochs: no help",
        "--cache: help does not say its default ('a folder')",
    ]


def test_finetune_help_lists_the_iis_options_first(capsys):
    from iis_hf.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    usage = text[: text.index("\n\n")]
    assert usage.index("--iis_weight") < usage.index("--model_name_or_path") < usage.index("--learning_rate")
    body = text[len(usage) :]
    assert body.index("IIS options") < body.index("--iis_weight") < body.index("\noptions:")
    assert body.index("--no_iis_eval") < body.index("--model_name_or_path")
    parser = finetune_parser()
    by_flag = {flag: action for action in parser._actions for flag in action.option_strings}
    assert by_flag["--no_iis_eval"].help != by_flag["--iis_eval"].help
    assert "skip the IIS measurement" in by_flag["--no_iis_eval"].help


def test_compare_and_verbosity_flags_are_on_the_commands():
    commands = subcommands(build_parser())
    for name in ("score", "compare", "explain", "demo", "install-metric"):
        flags = {flag for action in commands[name]._actions for flag in action.option_strings}
        assert {"--quiet", "--verbose"} <= flags, name
    args = build_parser().parse_args(
        ["--quiet", "compare", "--model", "a", "b", "--model", "c", "--output-dir", "o"]
    )
    assert args.models == ["a", "b", "c"] and args.global_verbosity == "quiet" and args.verbosity is None


def test_the_example_script_shows_the_same_help_as_the_command():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "run_image_classification_iis.py"
    shown = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    usage = shown[: shown.index("\n\n")]
    assert usage.index("--iis_weight") < usage.index("--model_name_or_path")
    assert "IIS options (IISTrainingArguments)" in shown and "skip the IIS measurement" in shown
