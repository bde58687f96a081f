"""Features given to the Python API as strings are a ValueError naming the argument (checked in
`iis_hf.score._as_features`, where features enter `compute_iis`), not torch's TypeError."""

from __future__ import annotations

import pytest
import torch

from iis_hf import compute_iis

CONCEPTS = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("train", "evaluation", "name"),
    [
        ([["a", "b"], ["c", "d"]], [[1.0, 2.0]], "train_features"),
        (torch.randn(2, 2), "abc", "eval_features"),
    ],
)
def test_string_features_are_a_value_error_naming_the_argument(train, evaluation, name):
    with pytest.raises(ValueError, match=rf"^{name} must be a 2-D \(N, D\) array of numbers"):
        compute_iis(train, [0, 1], evaluation, [0], CONCEPTS, epochs=1, progress=False)


def test_a_model_whose_representations_are_all_zero_gets_a_clear_message(monkeypatch):
    import datasets
    import numpy as np

    from iis_hf import ScoringConfig
    from iis_hf.demo import demo_image_processor, demo_model
    from iis_hf.pipeline import score_model

    model = demo_model(2, 0).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.zero_()
                module.bias.zero_()
    images = [np.full((8, 8, 3), 40 * i, dtype=np.uint8) for i in range(6)]
    data = datasets.Dataset.from_dict({"image": images, "label": [0, 1] * 3}).cast_column(
        "image", datasets.Image()
    )
    config = ScoringConfig(progress=False)
    with pytest.raises(ValueError, match=r"gives all-zero representations for every train image"):
        score_model(model, data, data, config, image_processor=demo_image_processor())
