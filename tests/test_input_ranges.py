"""Ranges and clear errors where input enters (the metric, the app), and
the app never showing the server's paths to visitors."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
import torch
from conftest import build_tiny_model, make_image_dataset, tiny_image_processor

import iis_hf
from iis_hf import app
from iis_hf.cli import main

gradio = pytest.importorskip("gradio")


# ---------------------------------------------------------------------------- the metric
@pytest.fixture(scope="module")
def metric():
    import evaluate
    from conftest import REPO

    return lambda config="default": evaluate.load(str(REPO / "metrics" / "iis"), config)


def test_the_metric_refuses_negative_labels_naming_the_argument(metric):
    rows = [[0, 0], [1, 1], [2, 0], [1, 1]]
    common = {"sparsity_ratios": [0.0, 0.5]}
    with pytest.raises(ValueError, match=r"^references hold the negative label -1; class ids must be >= 0"):
        metric().compute(predictions=rows, references=[0, -1, 2, 2], standard_accuracy=1.0, **common)
    with pytest.raises(ValueError, match=r"^predictions hold the negative label -3"):
        metric().compute(predictions=[[0, 0], [-3, -3], [2, 0], [1, 1]], references=[0, 1, 2, 2], **common)
    with pytest.raises(ValueError, match=r"^standard_predictions hold the negative label -1"):
        metric().compute(
            predictions=rows, references=[0, 1, 2, 2], standard_predictions=[0, -1, 2, 2], **common
        )
    classifier = metric("classifier")
    with pytest.raises(ValueError, match=r"^head_predictions hold the negative label -2"):
        classifier.compute(
            predictions=[0, 1], references=[0, 1], head_predictions=[[0, 0], [-2, 1]], **common
        )
    with pytest.raises(ValueError, match=r"^predictions hold the negative label -1"):
        classifier.compute(
            predictions=[0, -1], references=[0, 1], head_predictions=[[0, 0], [1, 1]], **common
        )
    with pytest.raises(ValueError, match=r"^references hold the negative label -1"):
        metric().add_batch(predictions=[[0, 0]], references=[-1], standard_predictions=[0])
    with pytest.raises(ValueError, match=r"^references hold the negative label -5"):
        metric("representations").compute(
            predictions=np.ones((4, 3)).tolist(), references=[0, 1, -5, 1], concept_bank=np.eye(3).tolist()
        )
    # the control: the same inputs with labels in range are scored
    result = metric().compute(predictions=rows, references=[0, 1, 2, 2], standard_accuracy=1.0, **common)
    assert result["iis_valid"] == 1.0 and result["iis"] == pytest.approx(0.3125)


# ---------------------------------------------------------------------------- the app's command line
def app_error(argv, capsys) -> str:
    capsys.readouterr()
    started = time.monotonic()
    code = main(["app", *argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("iis-hf app: error: ") and time.monotonic() - started < 10
    return lines[0]


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_a_port_out_of_range_is_one_line_and_exit_2(capsys, port):
    line = app_error(["--allow-any-model", "--port", port], capsys)
    assert f"--port must be from 0 to 65535 (0: any free port), got {port}" in line, line


def test_a_busy_port_is_one_line_and_exit_2_before_any_model_is_loaded(capsys, monkeypatch, tmp_path):
    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded although the port is taken")

    monkeypatch.setattr(app, "load_model", loaded)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = app_error(["--model", str(tmp_path), "--host", "127.0.0.1", "--port", str(port)], capsys)
    assert f"cannot serve on 127.0.0.1:{port} (address already in use)" in line, line
    assert "choose another --port" in line


# ---------------------------------------------------------------------------- the app's inputs
@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A tiny IIS model (a ViT, 6 random concepts, heads at 0 and 0.5) saved in a folder."""
    backbone = build_tiny_model("vit")
    generator = torch.Generator().manual_seed(0)
    bank = iis_hf.ConceptBank(
        vectors=torch.randn(6, 32, generator=generator), names=[f"c{i}" for i in range(6)]
    )
    model = iis_hf.IISModelForImageClassification(backbone, bank, (0.0, 0.5)).eval()
    folder = tmp_path_factory.mktemp("secret-server-place") / "my-model"
    model.save_pretrained(folder)
    tiny_image_processor().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def image():
    return make_image_dataset(num_classes=1, per_class=1)[0]["image"]


@pytest.mark.parametrize("top_k", [-5, 0, 7, 1e9, 2.5, "abc", None, float("nan"), True])
def test_top_k_must_be_from_1_to_the_number_of_concepts(model_folder, image, top_k):
    with pytest.raises(
        ValueError, match=r"^top-k must be a whole number from 1 to 6 \(the model's number of concepts\)"
    ):
        app.explain_image(model_folder, image, 0.5, top_k)
    status, *rest = app.explain_callback(model_folder, image, 0.5, top_k)
    assert status.startswith("**Error:** top-k must be a whole number from 1 to 6") and rest == [
        None,
        None,
        "",
        None,
    ]


def test_top_k_in_range_and_the_slider_follow_the_model(model_folder, image):
    for top_k in (1, 6, 6.0, "3"):
        _, explanation = app.explain_image(model_folder, image, 0.5, top_k)
        assert len(explanation.concepts) <= int(float(top_k))
    loaded = app.load_callback(model_folder)
    *_, slider = app.with_top_k_slider(loaded)
    assert slider.maximum == 6 and slider.value == 6  # this model has 6 concepts, fewer than the default 8


def test_a_ratio_that_is_not_a_number_is_a_clear_message(model_folder, image):
    with pytest.raises(
        ValueError,
        match=r"^the sparsity ratio must be a number, one of the model's ratios \(0, 0\.5\); got 'abc'$",
    ):
        app.explain_image(model_folder, image, "abc", 5)
    assert app.explain_image(model_folder, image, "0.5", 5)[1].sparsity_ratio == 0.5


# ---------------------------------------------------------------------------- no server path for visitors
def test_visitors_see_the_models_by_folder_name_never_the_servers_path(model_folder, tmp_path):
    other = tmp_path / "elsewhere" / "my-model"  # another folder of the same name
    demo = app.build_app([model_folder, str(other), "someone/hub-model"])
    page = json.dumps(demo.config, default=str)
    api = json.dumps(demo.get_api_info(), default=str)
    for text in (page, api):
        assert str(tmp_path) not in text and model_folder not in text
    choices = [c for c in demo.config["components"] if c.get("props", {}).get("elem_id") == app.IDS["model"]]
    shown = [name for name, _value in choices[0]["props"]["choices"]]
    assert (
        shown[2] == "someone/hub-model"
        and shown[0].endswith("/my-model")
        and shown[1] == "elsewhere/my-model"
    )
    assert "/" not in shown[0].removesuffix("/my-model")  # one parent folder tells the two apart
    policy = app.as_policy([model_folder], allow_any_model=False)
    assert policy.shown == ["my-model"]
    status, *_rest, loaded = app.load_callback("my-model", policy=policy)  # what the page sends
    assert status == "Loaded my-model." and app.load_model(loaded).num_concepts == 6
    status = app.load_callback("nothing", policy=policy)[0]
    assert "it serves: 'my-model'" in status and model_folder not in status
