"""timm checkpoints (the Hub's `timm/` layout: config.json with `architecture`, no `model_type`).

Without timm installed (it needs torchvision) the user gets one line, "this is a timm checkpoint: pip
install timm", not `config.json has no 'model_type'` nor transformers' ImportError; the fine-tuning
transform reads a `TimmWrapperImageProcessor`'s input size from its `data_config`.
"""

from __future__ import annotations

import json

import pytest

from iis_hf.features import load_vision_model
from iis_hf.preflight import TIMM_MESSAGE, PreflightError, check_model_folder, is_timm_config, timm_installed
from iis_hf.training.transforms import model_input_size

TIMM_CONFIG = {
    "architecture": "resnet18",
    "num_classes": 10,
    "num_features": 512,
    "pretrained_cfg": {
        "input_size": [3, 224, 224],
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "crop_pct": 0.875,
        "interpolation": "bicubic",
    },
}

needs_no_timm = pytest.mark.skipif(
    timm_installed(), reason="timm is installed here: transformers loads the folder"
)


@pytest.fixture
def timm_folder(tmp_path):
    folder = tmp_path / "resnet18.a1_in1k"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TIMM_CONFIG))
    return folder


def test_the_timm_layout_is_recognised():
    assert is_timm_config(TIMM_CONFIG)
    assert is_timm_config({"architecture": "vit_base_patch16_224"})
    assert not is_timm_config({"model_type": "vit", "architecture": "x"})
    assert not is_timm_config({"hidden_size": 8})


@needs_no_timm
def test_a_timm_folder_without_timm_gets_one_line(timm_folder):
    with pytest.raises(PreflightError, match=TIMM_MESSAGE) as preflight:
        check_model_folder(str(timm_folder))
    assert "model_type" not in str(preflight.value) and "\n" not in str(preflight.value)
    with pytest.raises(ValueError, match=TIMM_MESSAGE) as loading:
        load_vision_model(str(timm_folder))
    assert "\n" not in str(loading.value)


@needs_no_timm
def test_the_command_line_exits_2_with_the_line(timm_folder, tmp_path_factory, capsys):
    from conftest import make_image_dataset

    from iis_hf.cli import main

    data = tmp_path_factory.mktemp("data") / "colours"
    make_image_dataset(num_classes=2, per_class=2).save_to_disk(str(data))
    out = tmp_path_factory.mktemp("runs") / "out"
    assert main(["score", "--model", str(timm_folder), "--dataset", str(data), "--output-dir", str(out)]) == 2
    assert TIMM_MESSAGE in capsys.readouterr().err


class TimmProcessorStandIn:
    """What transformers' `TimmWrapperImageProcessor` offers: no `size`, timm's `data_config`."""

    size = None

    def __init__(self, input_size):
        self.data_config = {"input_size": input_size, "interpolation": "bicubic", "crop_pct": 0.875}


def test_the_input_size_of_a_timm_processor_comes_from_its_data_config():
    assert model_input_size(TimmProcessorStandIn((3, 256, 192))) == (256, 192)


def test_the_input_size_falls_back_to_the_model_pretrained_cfg():
    class Config:
        def __init__(self):
            self.pretrained_cfg = {"input_size": [3, 288, 288]}

    class Model:
        config = Config()

    class Bare:
        size = None

    assert model_input_size(Bare(), model=Model()) == (288, 288)
    with pytest.raises(ValueError, match="cannot tell the input size"):
        model_input_size(Bare())
