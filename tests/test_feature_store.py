"""Features stored once in float16 and read memory-mapped give the same IIS as in memory."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from safetensors import safe_open

from iis_hf import compute_iis
from iis_hf.features.store import FeatureStore, write_feature_store


def planted(n, dim=24, classes=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dim, generator=torch.Generator().manual_seed(1)) * 2
    labels = torch.randint(0, classes, (n,), generator=generator)
    return means[labels] + torch.randn(n, dim, generator=generator), labels


def test_round_trip_is_float16_and_safetensors_compatible(tmp_path):
    x, y = planted(1000)
    store = write_feature_store(
        tmp_path / "f.safetensors", (x[i : i + 300] for i in range(0, 1000, 300)), 1000, 24, y
    )
    assert store.shape == (1000, 24) and len(store) == 1000 and store.nbytes == 1000 * 24 * 2
    torch.testing.assert_close(store.chunk(0, 1000), x.half().float(), rtol=0, atol=0)
    torch.testing.assert_close(store.rows(torch.tensor([5, 999, 0])), x[[5, 999, 0]].half().float())
    assert torch.equal(store.labels, y)
    with safe_open(str(tmp_path / "f.safetensors"), framework="pt") as f:
        assert torch.equal(f.get_tensor("features"), x.half()) and torch.equal(f.get_tensor("labels"), y)
    assert [p.name for p in tmp_path.iterdir()] == ["f.safetensors"]


@pytest.mark.parametrize(
    "chunks, rows, message",
    [
        ([torch.ones(10, 24)], 11, "got 10 feature rows, expected 11"),
        ([torch.ones(10, 23)], 10, r"\(rows, 24\)"),
        ([torch.full((10, 24), float("nan"))], 10, "NaN"),
        ([torch.full((10, 24), 1e6)], 10, "float16 range"),
    ],
)
def test_bad_features_leave_no_file(tmp_path, chunks, rows, message):
    with pytest.raises(ValueError, match=message):
        write_feature_store(tmp_path / "f.safetensors", chunks, rows, 24)
    assert list(tmp_path.iterdir()) == []


def test_truncated_store_is_refused(tmp_path):
    x, y = planted(100)
    write_feature_store(tmp_path / "f.safetensors", [x], 100, 24, y)
    data = (tmp_path / "f.safetensors").read_bytes()
    (tmp_path / "f.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        FeatureStore(tmp_path / "f.safetensors")
    (tmp_path / "g.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a safetensors feature store"):
        FeatureStore(tmp_path / "g.safetensors")


@pytest.mark.parametrize("selection", ["eval", "holdout"])
def test_compute_iis_on_a_store_equals_compute_iis_in_memory(tmp_path, selection):
    x, y = planted(3000)
    xe, ye = planted(800, seed=1)
    train = write_feature_store(tmp_path / "train.safetensors", [x], 3000, 24, y)
    evaluation = write_feature_store(tmp_path / "eval.safetensors", [xe], 800, 24, ye)
    concepts = torch.randn(30, 24, generator=torch.Generator().manual_seed(2))
    kwargs = dict(
        epochs=3, batch_size=256, progress=False, model_selection=selection, sparsity_ratios=[0, 0.5, 0.9]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_store = compute_iis(train, None, evaluation, None, concepts, **kwargs)
        in_memory = compute_iis(x.half().float(), y, xe.half().float(), ye, concepts, **kwargs)
    assert from_store.accuracies == pytest.approx(in_memory.accuracies, abs=1e-9)
    assert from_store.standard_accuracy == pytest.approx(in_memory.standard_accuracy, abs=1e-9)
    assert from_store.iis == pytest.approx(in_memory.iis)


def test_store_without_labels_needs_them_passed(tmp_path):
    x, _ = planted(50)
    store = write_feature_store(tmp_path / "f.safetensors", [x], 50, 24)
    with pytest.raises(ValueError, match="train_labels are missing"):
        compute_iis(store, None, x, np.arange(50) % 5, torch.randn(4, 24), epochs=1, progress=False)
