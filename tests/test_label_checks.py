"""Issue 18, items 5 and 6: labels checked where they are read, train == eval refused, a processor size
over 8192 px refused in preflight, and the metric's format errors in one line.

Each bad input is one ``iis-hf score: error:`` line and exit code 2 on the command line (a ValueError
in Python) that names the problem, and nothing is written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_dataset

from iis_hf import compute_iis
from iis_hf.cli import main
from iis_hf.preflight import MAX_PROCESSOR_SIDE, PreflightError, check_model_folder, check_processor_size

REPO = Path(__file__).resolve().parents[1]
FAST = ["--epochs", "2", "--num-concepts", "10", "--images-per-class", "2", "--no-progress", "-q"]


def labelled(labels, feature):
    """The 24 colour images of `make_image_dataset` with other labels, in a column of `feature`."""
    from datasets import Dataset, Features, Image

    images = make_image_dataset(num_classes=3, per_class=8)["image"]
    return Dataset.from_dict(
        {"image": images, "label": labels}, features=Features({"image": Image(), "label": feature})
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_models):
    from datasets import ClassLabel, DatasetDict, Value

    root = tmp_path_factory.mktemp("label_checks")
    classes = [i // 8 for i in range(24)]
    found = {"root": root, "vit": tiny_models("vit")}
    data = {
        "floats": labelled([c + 0.5 for c in classes], Value("float64")),  # 0.5, 1.5, 2.5
        "nones": labelled([None if i == 3 else c for i, c in enumerate(classes)], ClassLabel(num_classes=3)),
        "two": DatasetDict(train=make_image_dataset(3, 8), validation=make_image_dataset(3, 8, seed=1)),
        "bad_eval": DatasetDict(
            train=labelled([float(c) for c in classes], Value("float64")),  # whole floats are class ids
            validation=labelled(
                [float(c) if i != 5 else 1.25 for i, c in enumerate(classes)], Value("float64")
            ),
        ),
    }
    for name, dataset in data.items():
        dataset.save_to_disk(str(root / name))
        found[name] = str(root / name)
    return found


def snapshot(folder: Path) -> dict[str, int]:
    """Every file under `folder` and its size (datasets' own index caches aside)."""
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith("cache-")
    }


def score_fails(argv, tmp_path, capsys, shared: Path) -> str:
    """Run `iis-hf score` expecting exit code 2, one error line and nothing written; return the line."""
    before, shared_before = snapshot(tmp_path), snapshot(shared)
    code = main(["score", *argv, "--output-dir", str(tmp_path / "out"), *FAST])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("iis-hf score: error: "), err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before and snapshot(shared) == shared_before, "output was written"
    return lines[0].removeprefix("iis-hf score: error: ")


# ---------------------------------------------------------------------------------------------------
# labels


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        (
            "floats",
            r"^label column 'label' of split 'train' holds a non-integer value 0\.5 at row 0: labels must be",
        ),
        (
            "nones",
            r"^label column 'label' of split 'train' holds a missing label \(None\) at row 3: labels must be",
        ),
        (
            "bad_eval",
            r"^label column 'label' of split 'validation' holds a non-integer value 1\.25 at row 5: ",
        ),
    ],
    ids=["floats", "ClassLabel with None", "a bad eval split"],
)
def test_bad_labels_are_one_line_naming_the_column_and_row(inputs, tmp_path, capsys, dataset, message):
    line = score_fails(
        ["--model", inputs["vit"], "--dataset", inputs[dataset]], tmp_path, capsys, inputs["root"]
    )
    assert re.search(message, line), line
    assert "integer class ids 0..K-1 (or a ClassLabel)" in line


def test_compute_iis_refuses_float_and_missing_labels_with_the_same_message(inputs, tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 8)).astype(np.float32)
    common = dict(eval_features=x, eval_labels=np.arange(24) % 3, concepts=rng.normal(size=(6, 8)), epochs=1)
    with pytest.raises(ValueError) as caught:
        compute_iis(x, np.array([i // 8 + 0.5 for i in range(24)]), progress=False, **common)
    api = str(caught.value)
    assert api.startswith("train_labels holds a non-integer value 0.5 at row 0: "), api
    line = score_fails(
        ["--model", inputs["vit"], "--dataset", inputs["floats"]], tmp_path, capsys, inputs["root"]
    )
    assert line.split(" holds ", 1)[1] == api.split(" holds ", 1)[1]  # the same words after the subject
    with pytest.raises(
        ValueError, match=r"^train_labels holds a missing label \(None\) at row 3: labels must"
    ):
        compute_iis(x, [None if i == 3 else i % 3 for i in range(24)], progress=False, **common)


def test_score_model_checks_the_labels_of_the_datasets_it_is_given(inputs):
    from datasets import load_from_disk

    from iis_hf import score_model

    floats = load_from_disk(inputs["floats"])
    with pytest.raises(
        ValueError, match=r"^label column 'label' of split 'eval' holds a non-integer value 0\.5 at row 0"
    ):
        score_model(inputs["vit"], make_image_dataset(3, 8), floats)


# ---------------------------------------------------------------------------------------------------
# train split == eval split


def test_the_same_split_for_train_and_eval_is_refused(inputs, tmp_path, capsys):
    argv = ["--model", inputs["vit"], "--dataset", inputs["two"], "--train-split", "validation"]
    line = score_fails([*argv, "--eval-split", "validation"], tmp_path, capsys, inputs["root"])
    assert line.startswith("--train-split and --eval-split are both 'validation': "), line
    assert "--allow-same-split" in line


def test_the_same_split_is_scored_and_recorded_with_allow_same_split(inputs, tmp_path, capsys):
    argv = ["--model", inputs["vit"], "--dataset", inputs["two"], "--allow-chance", *FAST]
    same = ["--train-split", "validation", "--eval-split", "validation", "--allow-same-split"]
    code = main(["score", *argv, *same, "--output-dir", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "out" / "iis.json").read_text())["settings"]["data"]
    assert data["train_split"] == data["eval_split"] == "validation" and data["allow_same_split"] is True
    assert main(["score", *argv, "--output-dir", str(tmp_path / "other")]) == 0  # train / validation
    assert (
        "allow_same_split"
        not in json.loads((tmp_path / "other" / "iis.json").read_text())["settings"]["data"]
    )


# ---------------------------------------------------------------------------------------------------
# an image processor asking for 100000 x 100000 pixels


def test_a_processor_size_over_the_limit_is_refused_in_preflight(inputs, tmp_path, capsys):
    import shutil

    folder = tmp_path / "huge-processor"
    shutil.copytree(inputs["vit"], folder)
    config = folder / "preprocessor_config.json"
    config.write_text(
        json.dumps({**json.loads(config.read_text()), "size": {"height": 100000, "width": 100000}})
    )
    # first in Python: without the check, the command below would try to allocate 100000 x 100000 images
    with pytest.raises(PreflightError, match=r"size \{'height': 100000, 'width': 100000\}.*limit of 8192 px"):
        check_model_folder(folder)
    line = score_fails(["--model", str(folder), "--dataset", inputs["two"]], tmp_path, capsys, inputs["root"])
    assert line.startswith(f"--model: {config}: the image processor's size "), line
    assert "100000" in line and f"the limit of {MAX_PROCESSOR_SIDE} px" in line


def test_a_processor_instance_over_the_limit_is_refused_before_extraction(inputs):
    from transformers import CLIPImageProcessor, ViTImageProcessor

    from iis_hf import score_model

    check_processor_size(ViTImageProcessor(size={"height": 8192, "width": 8192}))  # at the limit: allowed
    huge = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 50000, "width": 50000})
    with pytest.raises(
        PreflightError, match=r"^the image processor's crop_size .* 50000 px a side, over the limit"
    ):
        check_processor_size(huge)
    data = make_image_dataset(3, 8)
    with pytest.raises(PreflightError, match="over the limit of 8192 px"):
        score_model(inputs["vit"], data, data, image_processor=huge)


# ---------------------------------------------------------------------------------------------------
# the evaluate metric's format errors


def _metric(config=None):
    import evaluate

    return evaluate.load(str(REPO / "metrics" / "iis"), config)


@pytest.mark.parametrize(
    ("config", "kwargs", "message"),
    [
        (
            None,
            dict(
                predictions=[[[0, 0]], [[1, 1]]],
                references=[0, 1],
                standard_accuracy=1.0,
                sparsity_ratios=[0, 0.5],
            ),
            r"^predictions must be a list of N lists of R integer labels .*; got a 3-D list$",
        ),
        (
            None,
            dict(
                predictions=[[0, 0], [1, 1]],
                references=[[0], [1]],
                standard_accuracy=1.0,
                sparsity_ratios=[0, 0.5],
            ),
            r"^references must be a list of N integer labels .*; got a 2-D list$",
        ),
        (
            "representations",
            dict(predictions=np.zeros((2, 2, 2)), references=[0, 1], concept_bank=np.eye(2)),
            r"^predictions must be a list of N lists of D floats .*; got a 3-D numpy array$",
        ),
        (
            "classifier",
            dict(
                predictions=[[0], [1]],
                references=[0, 1],
                head_predictions=[[0, 0], [1, 1]],
                sparsity_ratios=[0, 0.5],
            ),
            r"^predictions must be a list of N integer labels \(the classifier's, one per sample\); got a 2-D list$",
        ),
    ],
    ids=["default 3-D predictions", "default 2-D references", "representations 3-D", "classifier 2-D"],
)
def test_metric_format_errors_are_one_short_line_naming_the_argument(config, kwargs, message):
    with pytest.raises(ValueError) as caught:
        _metric(config).compute(**kwargs)
    text = str(caught.value)
    assert re.search(message, text), text
    assert "\n" not in text and len(text) < 200 and "Input predictions" not in text


def test_a_format_error_the_checks_miss_is_still_one_line():
    with pytest.raises(ValueError) as caught:  # rows nested unevenly: only `datasets` sees it
        _metric("representations").compute(
            predictions=[[0.0, 1.0], [[1.0], [0.0]]], references=[0, 1], concept_bank=np.eye(2)
        )
    text = str(caught.value)
    assert text.startswith("the inputs do not fit the iis metric's 'representations' config (predictions: ")
    assert "\n" not in text and "Input predictions" not in text
