"""A wrong config object or a misspelt setting gets one clear line, never a dataclass traceback."""

from __future__ import annotations

import pytest
import torch

from iis_hf import ExtractionConfig, compute_iis
from iis_hf.errors import IISError
from iis_hf.heads import fit_heads


@pytest.fixture
def rows():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(60, 8, generator=generator), torch.randint(0, 2, (60,), generator=generator)


@pytest.mark.parametrize("score", [compute_iis, fit_heads], ids=["compute_iis", "fit_heads"])
def test_a_config_of_another_kind_is_named(score, rows):
    x, y = rows
    extra = {"num_classes": 2} if score is fit_heads else {}
    with pytest.raises(IISError, match=r"takes a HeadsConfig, got ExtractionConfig") as refused:
        score(x, y, x, y, x[:10], config=ExtractionConfig(), progress=False, **extra)
    assert "\n" not in str(refused.value)


def test_a_misspelt_setting_suggests_the_field(rows):
    x, y = rows
    with pytest.raises(IISError, match=r"unknown setting\(s\) epoch \(did you mean epochs\?\)"):
        compute_iis(x, y, x, y, x[:10], epoch=3, progress=False)
    with pytest.raises(IISError, match=r"head_weight_decay"):
        compute_iis(x, y, x, y, x[:10], head_weight_decay=0.01, progress=False)


def test_labels_outside_num_labels_are_refused_before_training(tmp_path):
    from trainer_utils import make_trainer, splits

    train, evaluation = splits()
    too_high = train.cast_column("label", train.features["label"].__class__(num_classes=10)).map(
        lambda row: {"label": row["label"] + 6}
    )
    trainer = make_trainer(tmp_path, train=too_high, evaluation=evaluation)  # num_labels = 3
    with pytest.raises(ValueError, match=r"'label' column holds class id 6 .*num_labels=3") as refused:
        trainer.train()
    assert "\n" not in str(refused.value) and trainer.state.global_step == 0


def test_a_number_given_as_a_string_is_named(tmp_path):
    from trainer_utils import make_args

    with pytest.raises(IISError, match=r"iis_weight must be a number, got the string '0.5'"):
        make_args(tmp_path, iis_weight="0.5")


def test_a_one_concept_bank_is_refused_as_documented(rows):
    x, y = rows
    with pytest.raises(ValueError, match=r"hold 1 concept, and IIS needs at least 2"):
        compute_iis(x, y, x, y, x[:1], epochs=2, progress=False)
