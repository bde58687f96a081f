"""The `iis-hf` command line: success paths, and bad input ending in one stderr line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from iis_hf.cli import main

FAST = ["--epochs", "3", "--num-concepts", "20", "--images-per-class", "2", "--no-progress"]


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory, image_dataset):
    path = tmp_path_factory.mktemp("data") / "colours"
    image_dataset.save_to_disk(str(path))
    return str(path)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, image_dataset):
    """datasets' imagefolder layout: one sub-folder per class."""
    root = tmp_path_factory.mktemp("imagefolder")
    for i, row in enumerate(image_dataset):
        folder = root / f"class_{row['label']}"
        folder.mkdir(exist_ok=True)
        row["image"].save(folder / f"{i}.png")
    return str(root)


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_score_writes_json_plot_and_bank(tiny_models, saved_dataset, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, err = run_cli(
        [
            "score",
            "--model",
            tiny_models("vit"),
            "--dataset",
            saved_dataset,
            "--output-dir",
            str(out_dir),
            *FAST,
        ],
        capsys,
    )
    assert code == 0, err
    assert "IIS =" in out and "standard accuracy A0" in out
    assert sorted(p.name for p in out_dir.iterdir()) == ["concept_bank", "iis.json", "iis_curve.png"]
    report = json.loads((out_dir / "iis.json").read_text())
    assert set(report) >= {
        "iis",
        "standard_accuracy",
        "accuracies",
        "sparsity_ratios",
        "settings",
        "metadata",
    }
    # a local folder is recorded by its base name: no path of this machine in a record that may be pushed
    assert report["metadata"]["model"] == os.path.basename(tiny_models("vit"))
    assert report["metadata"]["dataset"] == os.path.basename(saved_dataset) == "colours"
    assert report["num_concepts"] == 20 and len(report["accuracies"]) == 8
    assert report["settings"]["heads"]["epochs"] == 3
    assert (out_dir / "iis_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_score_on_an_image_folder_with_cluster_concepts(tiny_models, image_folder, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, _out, err = run_cli(
        [
            "score",
            "--model",
            tiny_models("resnet"),
            "--dataset",
            image_folder,
            "--output-dir",
            str(out_dir),
            "--concept-kind",
            "cluster",
            "--sparsity-ratios",
            "0",
            "0.5",
            "0.9",
            *FAST,
        ],
        capsys,
    )
    assert code == 0, err
    report = json.loads((out_dir / "iis.json").read_text())
    assert report["sparsity_ratios"] == [0.0, 0.5, 0.9] and report["num_concepts"] == 20
    bank = json.loads((out_dir / "concept_bank" / "concept_bank.json").read_text())
    assert bank["kind"] == "cluster"


def test_score_reuses_a_saved_concept_bank(tiny_models, saved_dataset, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert (
        run_cli(
            [
                "score",
                "--model",
                tiny_models("vit"),
                "--dataset",
                saved_dataset,
                "--output-dir",
                str(first),
                *FAST,
            ],
            capsys,
        )[0]
        == 0
    )
    code, _, err = run_cli(
        [
            "score",
            "--model",
            tiny_models("vit"),
            "--dataset",
            saved_dataset,
            "--output-dir",
            str(second),
            "--concept-bank",
            str(first / "concept_bank"),
            *FAST,
        ],
        capsys,
    )
    assert code == 0, err
    a, b = (json.loads((d / "iis.json").read_text()) for d in (first, second))
    assert a["iis"] == pytest.approx(b["iis"])  # same bank, same features, same seed


def one_class_dataset(tmp_path, image_dataset):
    path = tmp_path / "one_class"
    image_dataset.filter(lambda row: row["label"] == 0).save_to_disk(str(path))
    return str(path)


def unlabeled_dataset(tmp_path, image_dataset):
    path = tmp_path / "unlabeled"
    image_dataset.remove_columns("label").save_to_disk(str(path))
    return str(path)


def corrupted_bank(tmp_path):
    path = tmp_path / "bank"
    path.mkdir()
    (path / "concept_bank.json").write_text("{broken")
    (path / "concept_bank.safetensors").write_bytes(b"\x00" * 10)
    return str(path)


BAD_INPUTS = {
    "missing model": (
        lambda t, d, m, ds: ["--model", str(t / "no_model"), "--dataset", d],
        "cannot load a model",
    ),
    "missing dataset": (
        lambda t, d, m, ds: ["--model", m, "--dataset", str(t / "no_data")],
        "does not exist",
    ),
    "no label column": (
        lambda t, d, m, ds: ["--model", m, "--dataset", unlabeled_dataset(t, ds)],
        "label column",
    ),
    "no image column": (
        lambda t, d, m, ds: ["--model", m, "--dataset", d, "--image-column", "pixels"],
        "pixels",
    ),
    "one class only": (lambda t, d, m, ds: ["--model", m, "--dataset", one_class_dataset(t, ds)], "class"),
    "too many concepts": (
        lambda t, d, m, ds: ["--model", m, "--dataset", d, "--num-concepts", "5000"],
        "only 96",
    ),
    "ratio of 1": (
        lambda t, d, m, ds: ["--model", m, "--dataset", d, "--sparsity-ratios", "0", "1.0"],
        "outside [0, 1)",
    ),
    "duplicate ratios": (
        lambda t, d, m, ds: ["--model", m, "--dataset", d, "--sparsity-ratios", "0.5", "0.5"],
        "duplicate",
    ),
    "one ratio": (
        lambda t, d, m, ds: ["--model", m, "--dataset", d, "--sparsity-ratios", "0.5"],
        "at least 2",
    ),
    "corrupted bank": (
        lambda t, d, m, ds: ["--model", m, "--dataset", d, "--concept-bank", corrupted_bank(t)],
        "not valid JSON",
    ),
    "zero epochs": (
        lambda t, d, m, ds: ["--model", m, "--dataset", d, "--epochs", "0"],
        "--epochs must be an int >= 1",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_score_bad_input_is_one_line_and_exit_2_with_no_output(
    case, tiny_models, saved_dataset, image_dataset, tmp_path, capsys
):
    make_args, message = BAD_INPUTS[case]
    out_dir = tmp_path / "out"
    args = make_args(tmp_path, saved_dataset, tiny_models("vit"), image_dataset)
    fast = [a for a in FAST if not (case == "too many concepts" and a in ("--num-concepts", "20"))]
    if case == "zero epochs":
        fast = ["--no-progress"]
    code, _, err = run_cli(["score", *args, "--output-dir", str(out_dir), *fast], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("iis-hf score: error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert not out_dir.exists()


def test_existing_output_is_kept_when_a_rerun_fails(tiny_models, saved_dataset, tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert (
        run_cli(
            [
                "score",
                "--model",
                tiny_models("vit"),
                "--dataset",
                saved_dataset,
                "--output-dir",
                str(out_dir),
                *FAST,
            ],
            capsys,
        )[0]
        == 0
    )
    before = (out_dir / "iis.json").read_bytes()
    code, _, _ = run_cli(
        [
            "score",
            "--model",
            tiny_models("vit"),
            "--dataset",
            saved_dataset,
            "--output-dir",
            str(out_dir),
            "--concept-bank",
            corrupted_bank(tmp_path),
            "--overwrite",
            *FAST,
        ],
        capsys,
    )
    assert code == 2 and (out_dir / "iis.json").read_bytes() == before
    assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_demo_trains_then_scores_and_the_trained_model_is_more_interpretable(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    code, out, err = run_cli(
        ["demo", "--output-dir", str(out_dir), "--epochs", "10", "--num-concepts", "100", "--no-progress"],
        capsys,
    )
    assert code == 0, err
    trained = json.loads((out_dir / "iis.json").read_text())
    random_init = json.loads((out_dir / "iis_random-init.json").read_text())
    assert trained["standard_accuracy"] > 0.9
    assert trained["iis"] > random_init["iis"] + 0.1
    assert "IIS" in out and "random-init" in out
    assert (out_dir / "model" / "config.json").exists() and (out_dir / "iis_curve.png").exists()
    assert not list((out_dir / "model").glob("*.bin"))  # nothing pickled


def test_demo_passes_protocol_and_seeds_to_the_scoring(tmp_path, capsys, monkeypatch):
    import iis_hf.demo

    seen = {}

    def fake_run_demo(output_dir, train_epochs, config, log=print, *, overwrite=True):
        seen["heads"] = config.heads
        return {}

    monkeypatch.setattr(iis_hf.demo, "run_demo", fake_run_demo)
    monkeypatch.setattr("iis_hf.outputs.comparison_table", lambda results: "")
    argv = ["demo", "--output-dir", str(tmp_path / "d"), "--protocol", "paper", "--num-seeds", "2"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert seen["heads"].protocol == "paper" and seen["heads"].num_seeds == 2


def test_console_script_reports_usage_errors_with_exit_2(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ok = subprocess.run(
        [sys.executable, "-m", "iis_hf.cli", "--version"], capture_output=True, text=True, env=env
    )
    assert ok.returncode == 0 and "iis-hf" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "iis_hf.cli", "score", "--model", "m"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "--dataset" in bad.stderr


def test_pre_release_spellings_are_gone(tmp_path, capsys):
    """`--ratios`, `--concepts`, `--seeds` and `iis_eval_ratios` never shipped: one name per setting."""
    from iis_hf.cli import build_parser
    from iis_hf.training import IISTrainingArguments

    for old in (["--ratios", "0", "0.5"], ["--concepts", "cluster"], ["--seeds", "2"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["score", "--model", "m", "--dataset", "d", "--output-dir", "o", *old])
        assert "unrecognized arguments" in capsys.readouterr().err
    assert (
        build_parser().parse_args(["score", "--model", "m", "--dataset", "d", "--output_dir", "o"]).output_dir
        == "o"
    )
    with pytest.raises(TypeError, match="iis_eval_ratios"):
        IISTrainingArguments(output_dir=str(tmp_path), iis_eval_ratios=[0.0, 0.5], report_to=[])
