"""One source for every setting: a field of a config dataclass is a flag, a Trainer argument and a
metric keyword, with one name, one help text and one default, and "comparable" is its metadata.

The central test adds a dummy field to `HeadsConfig` (a subclass swapped in for the test) and finds
it in `iis-hf score --help`, in `IISTrainingArguments` (as ``iis_eval_<name>``) and among the metric's
keywords, and a bad value of it named as the flag the user typed.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

import pytest

import iis_hf.config as config_module
from iis_hf.config import (
    NOT_RECORDED,
    ConceptsConfig,
    ExtractionConfig,
    HeadsConfig,
    ScoringConfig,
    config_fields,
    setting,
    setting_flag,
)

DUMMY_HELP = "a dummy head setting added by tests/test_one_source.py"
REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class HeadsConfigWithDummy(HeadsConfig):
    """`HeadsConfig` plus one setting, declared the one way a setting is declared."""

    dummy_patience: int = setting(3, minimum=1, help=DUMMY_HELP)  # checked by the one validator


@pytest.fixture
def dummy_heads(monkeypatch):
    """Every entry point built afresh against `HeadsConfigWithDummy`, then restored."""
    monkeypatch.setattr(config_module, "HeadsConfig", HeadsConfigWithDummy)
    names = ["iis_hf.cli._arguments", "iis_hf.cli", "iis_hf.training.arguments"]
    saved = {name: sys.modules.get(name) for name in names}
    for name in names:
        sys.modules.pop(name, None)
    for module in [m for m in sys.modules if m.startswith("iis_hf.cli.")]:
        saved.setdefault(module, sys.modules.pop(module))
    try:
        yield
    finally:
        for module in [m for m in sys.modules if m.startswith(("iis_hf.cli", "iis_hf.training.arguments"))]:
            sys.modules.pop(module, None)
        for name, module in saved.items():
            if module is not None:
                sys.modules[name] = module


def test_a_new_head_setting_is_a_flag_a_trainer_argument_and_a_metric_keyword(dummy_heads, tmp_path, capsys):
    cli = importlib.import_module("iis_hf.cli")
    with pytest.raises(SystemExit):
        cli.main(["score", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--dummy-patience DUMMY_PATIENCE" in help_text and DUMMY_HELP in help_text

    arguments = importlib.import_module("iis_hf.training.arguments")
    args = arguments.IISTrainingArguments(output_dir=str(tmp_path), report_to=[], iis_eval_dummy_patience=5)
    assert args.scoring_config().heads.dummy_patience == 5
    field = {f.name: f for f in dataclasses.fields(args)}["iis_eval_dummy_patience"]
    assert DUMMY_HELP in field.metadata["help"] and field.default == 3
    with pytest.raises(ValueError, match=r"^iis_eval_dummy_patience must be an int >= 1, got 0$"):
        arguments.IISTrainingArguments(output_dir=str(tmp_path), report_to=[], iis_eval_dummy_patience=0)

    code = cli.main(
        [
            "score",
            "--model",
            "m",
            "--dataset",
            "d",
            "--output-dir",
            str(tmp_path / "o"),
            "--dummy-patience",
            "0",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["iis-hf score: error: --dummy-patience must be an int >= 1, got 0"]

    metric = fresh_metric_module()
    assert "dummy_patience" in metric.HEADS_KEYWORDS
    assert "dummy_patience" in inspect.signature(metric.Iis._compute).parameters
    assert DUMMY_HELP in " ".join(metric._KWARGS_DESCRIPTION.split())
    metric.check_heads_keywords({"dummy_patience": 2})  # accepted, and passed on to HeadsConfig


def fresh_metric_module():
    """metrics/iis/iis.py imported anew (evaluate's own loader caches it), against today's configs."""
    spec = importlib.util.spec_from_file_location(
        "iis_metric_under_test", REPO / "metrics" / "iis" / "iis.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_metric_takes_every_head_setting_by_its_one_name_and_refuses_others():
    metric = fresh_metric_module()
    assert tuple(f.name for f in config_fields(HeadsConfig)) == metric.HEADS_KEYWORDS
    assert "head_batch_size" in metric.HEADS_KEYWORDS and "num_seeds" in metric.HEADS_KEYWORDS
    for f in config_fields(HeadsConfig):
        if f.name != "sparsity_ratios":
            assert f.metadata["help"] in " ".join(metric._KWARGS_DESCRIPTION.split())
    with pytest.raises(ValueError, match=r"unknown keyword\(s\) \['seeds'\]"):
        metric.check_heads_keywords({"seeds": 3})


def test_cli_trainer_and_metric_name_each_setting_alike():
    """The Trainer's `iis_eval_*` and `iis_*` arguments are the flags' names, with a prefix."""
    from iis_hf.cli import build_parser
    from iis_hf.training.arguments import IISTrainingArguments

    score = next(a for a in build_parser()._actions if a.dest == "command").choices["score"]
    flags = {o for a in score._actions for o in a.option_strings}
    trainer = {f.name for f in dataclasses.fields(IISTrainingArguments)}
    for f in config_fields(HeadsConfig):
        assert setting_flag(f) == "--" + f.name.replace("_", "-") and setting_flag(f) in flags
        assert "iis_eval_" + f.name in trainer
    concepts = {f.name: f for f in config_fields(ConceptsConfig)}
    for name in ("concept_kind", "num_concepts", "images_per_class", "concept_bank"):
        assert setting_flag(concepts[name]) in flags
        assert "iis_" + name in trainer
    for config in (ExtractionConfig, ConceptsConfig, ScoringConfig):
        assert all(setting_flag(f) in flags for f in config_fields(config))


def test_every_setting_has_one_name_across_the_configs_and_its_flag_follows_one_rule():
    """No two configs share a field name (so a field names one flag), and every flag is the field's name
    with dashes, ``--no-<name>`` for a switch that is on by default."""
    names = [f.name for config in (ExtractionConfig, ConceptsConfig, HeadsConfig, ScoringConfig) for f in config_fields(config)]  # fmt: skip
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    flags = {f.name: setting_flag(f) for f in config_fields(ScoringConfig)}
    assert flags["progress"] == "--no-progress" and flags["seed"] == "--seed"


def test_comparable_is_field_metadata_used_by_the_config_and_compare():
    from iis_hf.compare import EXTRACTION_KEYS, HEAD_RECIPE_KEYS

    assert set(HEAD_RECIPE_KEYS) == set(HeadsConfig.shared_fields()) - {"sparsity_ratios", "protocol"}
    assert (
        EXTRACTION_KEYS
        == ExtractionConfig.shared_fields()
        == ("layer", "pooling", "precision", "preprocessing")
    )
    recorded = ScoringConfig().recorded()
    assert "num_seeds" in recorded["heads"] and "num_seeds" not in HeadsConfig.shared_fields()
    assert "head_precision" not in recorded["heads"] and "batch_size" not in recorded["extraction"]
    assert "holdout_fraction" not in recorded["heads"]  # recorded only when it applies
    assert "holdout_fraction" in HeadsConfig(model_selection="holdout").recorded()
    assert "probe_min_steps" not in HeadsConfig(protocol="paper").recorded()
    not_recorded = [f.name for f in config_fields(ExtractionConfig) if f.metadata["compare"] is NOT_RECORDED]
    assert not_recorded == ["batch_size", "num_workers", "chunk_size", "cache_dir"]


# ---------------------------------------------------------------------------- the code's own shape
MAX_FUNCTION_LINES = 80


def long_functions(*roots: str) -> list[str]:
    """Every function of the given source trees longer than `MAX_FUNCTION_LINES` lines."""
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    found = []
    for root in roots:
        for path in sorted((repo / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        found.append(f"{path.relative_to(repo)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_of_the_library_or_the_metric_is_over_80_lines():
    assert long_functions("iis_hf", "metrics") == []


def test_the_length_check_finds_a_long_function(tmp_path, monkeypatch):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "long.py").write_text(f"def too_long():\n{body}\n")
    monkeypatch.setattr(__import__("pathlib").Path, "resolve", lambda self: tmp_path / "tests" / "x.py")
    assert long_functions("pkg") == [f"pkg/long.py:1 too_long ({MAX_FUNCTION_LINES + 1} lines)"]
