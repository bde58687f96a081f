"""One public name per setting: every flag of `iis-hf score` (and `compare`) is a config field's name
with dashes, or one of the few command-only options (what to score, where to write, how loud)."""

from __future__ import annotations

import pytest

from iis_hf.cli import build_parser
from iis_hf.cli._arguments import COMMAND_ONLY_FLAGS, SCORING_CONFIGS
from iis_hf.config import config_fields, setting_flag


def subcommand(name: str):
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return subparsers.choices[name]


@pytest.mark.parametrize("command", ["score", "compare"])
def test_every_flag_is_a_config_field_or_a_command_only_option(command):
    fields = {f.name: (config, f) for config in SCORING_CONFIGS for f in config_fields(config)}
    for action in subcommand(command)._actions:
        if action.dest in COMMAND_ONLY_FLAGS:
            continue
        assert action.dest in fields, f"--{action.dest.replace('_', '-')} is no config field's flag"
        _, f = fields[action.dest]
        assert setting_flag(f) in action.option_strings, (action.option_strings, setting_flag(f))


def test_the_field_names_are_unique_across_the_configs():
    names = [f.name for config in SCORING_CONFIGS for f in config_fields(config)]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    assert (
        duplicated == []
    )  # so a name says which setting it is, in Python, iis.json, the metric and the flags


def test_a_bad_data_setting_is_refused_by_its_flag_before_any_work(tmp_path, capsys):
    from iis_hf.cli import main

    code = main(
        [
            "score",
            "--model",
            "m",
            "--dataset",
            "d",
            "--output-dir",
            str(tmp_path / "o"),
            "--max-train-samples",
            "0",
        ]
    )
    assert code == 2
    assert (
        capsys.readouterr().err.strip().endswith("--max-train-samples must be an int >= 1 (or None), got 0")
    )
    assert not (tmp_path / "o").exists()
