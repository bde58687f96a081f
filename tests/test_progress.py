"""Progress bars and verbosity (`iis_hf.progress`): every iis-hf bar ends at its total, and `--quiet`,
`--verbose`, `HF_HUB_DISABLE_PROGRESS_BARS` and the hub's progress group are honoured."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from iis_hf import progress
from iis_hf.cli import main
from iis_hf.heads import fit_heads
from iis_hf.heads.training import HEADS_BAR, PROBE_BAR

BAR = re.compile(r"(\d+)/(\d+) \[")


def last_state(stderr: str, label: str) -> str:
    """The last drawn state of the bar called `label` (tqdm redraws with carriage returns)."""
    states = [s for s in re.split(r"[\r\n]", stderr) if s.strip().startswith(label)]
    assert states, f"no {label!r} bar in {stderr[-500:]!r}"
    return states[-1]


def separable(n: int = 120, dim: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=generator)
    return x, (x[:, 0] > 0).long(), torch.randn(12, dim, generator=generator)


def test_the_heads_bar_ends_at_its_total_and_says_when_the_probe_trains_on(capsys):
    x, y, concepts = separable()
    fit_heads(x, y, x, y, concepts, num_classes=2, epochs=2, probe_min_steps=40, sparsity_ratios=[0, 0.5])
    err = capsys.readouterr().err
    final = last_state(err, HEADS_BAR)
    # 120 rows, one step per epoch: 2 epochs of heads, the probe on to 40 steps. The old bar was
    # erased on close (leave=False), so a log kept its last refresh before the end, e.g. "39/40".
    assert final.startswith(PROBE_BAR) and BAR.search(final).groups() == ("40", "40"), final
    assert any(s.strip().startswith(HEADS_BAR + ":") for s in re.split(r"[\r\n]", err))


def test_the_text_projection_bar_ends_full_when_it_stops_early(capsys):
    from iis_hf.concepts.text import EARLY_STOP_EPOCHS, fit_text_projection

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(40, 6, generator=generator)
    targets = torch.randn(40, 3, generator=generator)  # nothing to learn: stops early
    _, best = fit_text_projection(features[:30], targets[:30], features[30:], targets[30:], epochs=5000)
    final = last_state(capsys.readouterr().err, "text concept projection")
    done, total = BAR.search(final).groups()
    assert done == total == str(best + EARLY_STOP_EPOCHS + 1) and "early-stopped" in final, final


def test_quiet_hides_every_bar_and_hf_logs_then_restores_them(capsys):
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    x, y, concepts = separable()
    with progress.verbosity("quiet"):
        assert progress.get_verbosity() == "quiet" and not progress.bars_enabled()
        assert hf_logging.get_verbosity() == logging.ERROR and not hf_logging.is_progress_bar_enabled()
        fit_heads(x, y, x, y, concepts, num_classes=2, epochs=1, probe_min_steps=5, sparsity_ratios=[0, 0.5])
    assert HEADS_BAR not in capsys.readouterr().err
    assert hf_logging.get_verbosity() == before and hf_logging.is_progress_bar_enabled()
    assert progress.get_verbosity() == "normal" and progress.bars_enabled()
    with progress.verbosity("verbose"):
        assert hf_logging.get_verbosity() == logging.INFO
    assert hf_logging.get_verbosity() == before
    with pytest.raises(ValueError, match="verbosity must be one of"):
        progress.set_verbosity("loud")


def test_hf_environment_and_the_hub_progress_group_hide_iis_hf_bars(monkeypatch, capsys):
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    assert progress.bars_enabled() and not progress.bars_enabled(False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    assert not progress.bars_enabled()
    list(progress.progress_bar(range(3), desc="hidden by the environment"))
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    disable_progress_bars(progress.PROGRESS_GROUP)
    try:
        assert not progress.bars_enabled()
        list(progress.progress_bar(range(3), desc="hidden by the hub group"))
    finally:
        enable_progress_bars(progress.PROGRESS_GROUP)
    assert progress.bars_enabled()
    assert "hidden by" not in capsys.readouterr().err


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory):
    from conftest import make_image_dataset

    path = tmp_path_factory.mktemp("data") / "colours"
    make_image_dataset(num_classes=3, per_class=6).save_to_disk(str(path))
    return str(path)


@pytest.mark.parametrize(
    "flags", [[], ["--quiet"], ["--quiet", "global"]], ids=["default", "quiet", "global"]
)
def test_score_shows_its_bars_unless_quiet(flags, tiny_models, saved_dataset, tmp_path, capsys):
    before = logging.getLogger("transformers").level
    args = ["score", "--model", tiny_models("vit"), "--dataset", saved_dataset, "--output-dir", str(tmp_path / "o"),
            "--epochs", "2", "--num-concepts", "10", "--images-per-class", "2", "--sparsity-ratios", "0", "0.5"]  # fmt: skip
    if flags == ["--quiet", "global"]:
        args = ["--quiet", *args]
    else:
        args += flags
    assert main(args) == 0
    err = capsys.readouterr().err
    if flags:
        assert "%|" not in err and "Loading weights" not in err, err[-800:]
    else:
        for label in ("extracting features", "prototype patches", HEADS_BAR):
            assert label in err
        done, total = BAR.search(last_state(err, "extracting features")).groups()
        assert done == total
    assert logging.getLogger("transformers").level == before  # the command's verbosity did not leak
