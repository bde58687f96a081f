"""Memory bounded by the chunk, not the data set: features extracted into a float16 `FeatureStore`
and concept activations projected batch by batch give the IIS of the in-memory path (within 1e-4)."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import build_tiny_model, make_image_dataset, tiny_image_processor

from iis_hf import compute_iis, extract_features
from iis_hf.features.store import FeatureStore, write_feature_store
from iis_hf.heads import rows as head_rows
from iis_hf.heads import training


def planted(n, dim=32, classes=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dim, generator=torch.Generator().manual_seed(1)) * 2
    labels = torch.randint(0, classes, (n,), generator=generator)
    return means[labels] + torch.randn(n, dim, generator=generator), labels


@pytest.mark.parametrize("selection", ["eval", "holdout"])
@pytest.mark.parametrize("protocol", ["converged", "paper"])
def test_activations_projected_per_batch_give_the_iis_of_activations_kept_whole(
    tmp_path, monkeypatch, selection, protocol
):
    x, y = planted(3000)
    xe, ye = planted(700, seed=1)
    train = write_feature_store(tmp_path / "train.safetensors", [x], 3000, 32, y)
    evaluation = write_feature_store(tmp_path / "eval.safetensors", [xe], 700, 32, ye)
    concepts = torch.randn(40, 32, generator=torch.Generator().manual_seed(2))
    kwargs = dict(
        epochs=3,
        progress=False,
        model_selection=selection,
        protocol=protocol,
        sparsity_ratios=[0, 0.5, 0.9],
        device="cpu",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        in_memory = compute_iis(x.half().float(), y, xe.half().float(), ye, concepts, **kwargs)
        projected = []
        original = training.project
        monkeypatch.setattr(training, "project", lambda *a: projected.append(1) or original(*a))
        monkeypatch.setattr(head_rows, "KEPT_ACTIVATIONS_BYTES", 0)  # nothing fits: every batch projects
        per_batch = compute_iis(train, None, evaluation, None, concepts, **kwargs)
    assert not projected  # no activations of the whole data set were materialised
    assert per_batch.iis == pytest.approx(in_memory.iis, abs=1e-4)
    assert per_batch.standard_accuracy == pytest.approx(in_memory.standard_accuracy, abs=1e-4)
    assert per_batch.accuracies == pytest.approx(in_memory.accuracies, abs=1e-3)


def test_activations_that_fit_are_still_kept(tmp_path):
    x, y = planted(500)
    store = write_feature_store(tmp_path / "f.safetensors", [x], 500, 32, y)
    cpu = torch.device("cpu")
    assert head_rows.keeps_activations(head_rows.Rows(store), 40, cpu)
    assert head_rows.keeps_activations(head_rows.Rows(x), 10**6, cpu)  # features in memory: kept
    assert not head_rows.keeps_activations(head_rows.Rows(store), 10**6, cpu)


def test_extraction_into_a_store_scores_as_the_in_memory_features(tmp_path):
    model, processor = build_tiny_model("vit", num_labels=3), tiny_image_processor()
    train, evaluation = make_image_dataset(per_class=10), make_image_dataset(per_class=5, seed=1)
    common = dict(image_processor=processor, progress=False, chunk_size=8, batch_size=4)
    stored = extract_features(model, train, feature_store=tmp_path / "train.safetensors", **common)
    stored_eval = extract_features(model, evaluation, feature_store=tmp_path / "eval.safetensors", **common)
    plain = extract_features(model, train, **common)
    plain_eval = extract_features(model, evaluation, **common)
    assert isinstance(stored.features, FeatureStore) and stored.features.shape == tuple(plain.features.shape)
    torch.testing.assert_close(
        stored.features.chunk(0, len(train)), plain.features.half().float(), rtol=0, atol=0
    )
    assert torch.equal(stored.labels, plain.labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.safetensors", "train.safetensors"]
    concepts = torch.randn(12, plain.features.shape[1], generator=torch.Generator().manual_seed(3))
    kwargs = dict(epochs=3, progress=False, device="cpu", sparsity_ratios=[0, 0.5, 0.9])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_store = compute_iis(stored.features, None, stored_eval.features, None, concepts, **kwargs)
        in_memory = compute_iis(
            plain.features.half().float(), plain.labels, plain_eval.features.half().float(), plain_eval.labels,
            concepts, **kwargs,
        )  # fmt: skip
    assert from_store.iis == pytest.approx(in_memory.iis, abs=1e-4)
