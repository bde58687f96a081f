"""The error boundary (issue 20): one error type raised on purpose, one line for it on the command line,
and a bug's error keeping its traceback.

`IISError` carries the setting it is about, so the command line names the flag the user typed; a
KeyError, TypeError or AttributeError is a bug, never "bad input", and escapes `iis_hf.cli.main`.
"""

from __future__ import annotations

import errno

import pytest

import iis_hf
from iis_hf import cli
from iis_hf.cli import error_message, main
from iis_hf.config import HeadsConfig, validate_sparsity_ratios
from iis_hf.errors import IISError, first_line

FAST = ["--epochs", "2", "--num-concepts", "10", "--images-per-class", "2", "--no-progress"]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


# ---------------------------------------------------------------------------- the type and the line
def test_iis_error_is_a_value_error_exported_from_the_package_and_names_its_setting():
    assert iis_hf.IISError is IISError and issubclass(IISError, ValueError)
    with pytest.raises(IISError) as caught:
        HeadsConfig(sparsity_ratios=[0.0, 1.5])
    assert caught.value.field == "sparsity_ratios" and caught.value.setting == "sparsity_ratios"
    with pytest.raises(IISError) as caught:
        HeadsConfig(epochs=0)
    assert (caught.value.field, caught.value.owner, caught.value.setting) == (
        "epochs",
        "HeadsConfig",
        "HeadsConfig.epochs",
    )
    with pytest.raises(ValueError, match="duplicate sparsity ratios"):  # callers catching ValueError still do
        validate_sparsity_ratios([0.5, 0.5])


def test_first_line_of_a_multi_line_message_is_its_first_line():
    assert first_line(IISError("\n  the first line  \nthe second\nthe third")) == "the first line"
    assert first_line(OSError("ignored"), "the reason\nmore") == "the reason"


@pytest.mark.parametrize("message", ["", "   ", "\n\n"])
def test_first_line_of_an_empty_message_is_the_class_name(message):
    assert first_line(IISError(message)) == "IISError"
    assert first_line(KeyError()) == "KeyError"


# ---------------------------------------------------------------------------- the command line's boundary
@pytest.mark.parametrize(
    "err",
    [
        KeyError("boom"),
        TypeError("boom"),
        AttributeError("boom"),
        OSError("no file, no errno: a library's own message"),
        RuntimeError("boom"),
    ],
    ids=lambda err: type(err).__name__,
)
def test_a_bug_is_not_an_expected_error(err):
    assert error_message(err) is None


def test_bad_input_and_the_machine_are_expected_errors():
    from safetensors import SafetensorError

    assert error_message(ValueError("bad\nvalue")) == "bad"
    assert error_message(IISError()) == "IISError"
    assert error_message(SafetensorError("header too large")) == "header too large"
    assert "nested too deeply" in error_message(RecursionError())
    no_space = OSError(errno.ENOSPC, "No space left on device", "/data/out")
    assert (
        error_message(no_space)
        == "path '/data/out': no space left on device; free some space, or write somewhere else"
    )


def test_a_key_error_inside_scoring_escapes_main_with_its_traceback(
    tiny_models, image_dataset, tmp_path, capsys, monkeypatch
):
    import iis_hf.pipeline

    calls = []

    def broken_build_concepts(*args, **kwargs):
        calls.append(True)
        raise KeyError("boom")

    monkeypatch.setattr(iis_hf.pipeline, "build_concepts", broken_build_concepts)
    data = tmp_path / "data"
    image_dataset.save_to_disk(str(data))
    argv = [
        "score",
        "--model",
        tiny_models("vit"),
        "--dataset",
        str(data),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    with pytest.raises(KeyError, match="boom"):
        main([*argv, *FAST])
    assert calls, "scoring never reached the patched function"
    assert not error_lines(capsys.readouterr().err), "a bug was reported as bad input"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("message", "line"),
    [("", "IISError"), ("the first line\nthe second line", "the first line")],
    ids=["empty message", "multi-line message"],
)
def test_an_iis_error_is_one_line_and_exit_2(message, line, tmp_path, capsys, monkeypatch):
    def refuse(args):
        raise IISError(message)

    monkeypatch.setattr(cli.score, "scoring_config", refuse)
    code = main(["score", "--model", "m", "--dataset", "d", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert error_lines(err) == [f"iis-hf score: error: {line}"], err


# ---------------------------------------------------------------------------- a setting's error names its flag
RATIO_LINE = "error: --sparsity-ratios: sparsity ratio 1.5 is outside [0, 1): a ratio is the fraction of concepts dropped"


@pytest.mark.parametrize(
    "argv",
    [
        ["score", "--model", "m", "--dataset", "d", "--sparsity-ratios", "0", "1.5"],
        ["score", "--model", "m", "--dataset", "d", "--sparsity-ratios", "1.5"],
        ["compare", "--model", "a", "b", "--dataset", "d", "--sparsity-ratios", "0", "1.5"],
    ],
    ids=["score", "score, one ratio", "compare"],
)
def test_a_ratio_out_of_range_names_sparsity_ratios(argv, tmp_path, capsys):
    code = main([*argv, "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert error_lines(err) == [f"iis-hf {argv[0]}: {RATIO_LINE}"], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["score", "--batch-size", "0"], "iis-hf score: error: --batch-size must be an int >= 1, got 0"),
        (
            ["score", "--head-batch-size", "0"],
            "iis-hf score: error: --head-batch-size must be an int >= 1, got 0",
        ),
        (["score", "--num-seeds", "0"], "iis-hf score: error: --num-seeds must be an int >= 1, got 0"),
        (["demo", "--num-seeds", "0"], "iis-hf demo: error: --num-seeds must be an int >= 1, got 0"),
        (
            ["demo", "--num-concepts", "0"],
            "iis-hf demo: error: --num-concepts must be an int >= 2, got 0: every head drops int(C * rho) + 1 "
            "concepts, so with fewer nothing is left to predict from",
        ),
    ],
    ids=["extraction batch", "head batch", "score seeds", "demo seeds", "demo concepts"],
)
def test_a_setting_named_by_its_config_is_named_by_its_flag(argv, line, tmp_path, capsys):
    """The same field name in two configs (`batch_size`) names two flags; each command its own."""
    data = [] if argv[0] == "demo" else ["--model", "m", "--dataset", "d"]
    code = main([*argv, *data, "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and error_lines(err) == [line], err
