"""Extraction keeps only the features of a pending batch alive, not the hidden state they came from.

Features of a chunk stay on the device until the chunk is complete (issue 22, item 0). ViT's
representation is the CLS token, a view of the whole last hidden state: kept as is, every pending
batch held ~(tokens)x the bytes of its features. What a pending batch keeps is `_forward`'s result.
"""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_model, make_image_dataset, tiny_image_processor

from iis_hf.features import extract

MAX_OVERHEAD = 1.5  # storage bytes kept per pending batch / the features' own bytes


def _kept_batches(monkeypatch, arch: str, batch_size: int) -> list[torch.Tensor]:
    """Run an extraction and return what each of its forwards handed back to be kept."""
    kept: list[torch.Tensor] = []
    forward = extract._forward

    def recording(*args, **kwargs):
        out = forward(*args, **kwargs)
        kept.append(out)
        return out

    monkeypatch.setattr(extract, "_forward", recording)
    dataset = make_image_dataset(num_classes=2, per_class=5)
    extract.extract_features(
        build_tiny_model(arch), dataset, image_processor=tiny_image_processor(), device="cpu",
        batch_size=batch_size, chunk_size=100, progress=False,
    )  # fmt: skip
    return kept


@pytest.mark.parametrize("arch", ["vit", "resnet"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_pending_batch_holds_only_its_features(monkeypatch, arch, batch_size):
    kept = _kept_batches(monkeypatch, arch, batch_size)
    assert len(kept) > 2  # the width probe and several pending batches
    for features in kept:
        own = features.numel() * features.element_size()
        held = features.untyped_storage().nbytes()
        assert held <= MAX_OVERHEAD * own, (
            f"{arch}: a pending batch of {tuple(features.shape)} features ({own} B) keeps {held} B alive"
        )


def test_compact_copies_a_single_row_view():
    """A (1, D) view counts as contiguous, yet keeps the whole (1, L, D) storage: it must be copied."""
    hidden = torch.randn(1, 17, 8)
    row = extract.compact(hidden[:, 0])
    assert row.untyped_storage().nbytes() == 8 * 4
    assert torch.equal(row, hidden[:, 0])
    owned = torch.randn(3, 8)
    assert extract.compact(owned) is owned  # nothing to copy
