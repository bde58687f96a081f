"""The feature cache checks what it reads (issue 18, item 4): a chunk damaged or edited after it was
written (labels shifted, features cut to half their width, a NaN, labels out of range, an older format)
is said in a warning naming it and extracted again, so the result is the untampered run's, never
silently another one; when it cannot be extracted again, one ValueError names the folder and the fix."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from conftest import build_tiny_model, make_image_dataset, tiny_image_processor
from safetensors import safe_open
from safetensors.torch import save_file

from iis_hf.cli import main
from iis_hf.features import extract_features
from iis_hf.features.cache import FeatureCache, FeatureCacheWarning

CHUNK = "chunk-000001.safetensors"
KWARGS = {"chunk_size": 10, "batch_size": 4, "device": "cpu", "progress": False}


def load_chunk(path):
    with safe_open(str(path), framework="pt") as file:
        return {name: file.get_tensor(name) for name in file.keys()}, dict(file.metadata())  # noqa: SIM118


def tamper(path, change) -> None:
    """Rewrite a chunk file with `change` applied to its tensors, keeping the metadata it was written with."""
    tensors, metadata = load_chunk(path)
    change(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


def shift_labels(t):
    t["labels"] = t["labels"].roll(1)  # the same classes, each row given its neighbour's


def half_width(t):
    t["features"] = t["features"][:, : t["features"].shape[1] // 2]


def plant_nan(t):
    t["features"][-1, 5] = float("nan")


def labels_99(t):
    t["labels"][-1] = 99


def labels_plus_one(t):
    t["labels"] = t["labels"] + 1  # every class id shifted to the next one


TAMPERINGS = {
    "shifted labels": (shift_labels, "checksum mismatch"),
    "half width": (half_width, "features_shape [10, 16], recorded [10, 32]"),
    "NaN": (plant_nan, "NaN or inf features"),
    "labels 99": (labels_99, "labels 1..99, outside [0, 3)"),
    "labels plus one": (labels_plus_one, "labels 2..3, outside [0, 3)"),  # the CLI test uses the first 4
}


@pytest.fixture(scope="module")
def setup():
    model, processor = build_tiny_model("vit"), tiny_image_processor()
    return model, processor, make_image_dataset(num_classes=3, per_class=8)  # 24 rows: chunks 10, 10, 4


def extract(setup, cache_dir):
    model, processor, data = setup
    return extract_features(model, data, image_processor=processor, cache_dir=cache_dir, **KWARGS)


def count_forwards(model):
    """(the list of forwards so far, the hook's handle to remove)."""
    calls: list[int] = []
    return calls, model.register_forward_hook(lambda *_: calls.append(1))


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_a_tampered_chunk_is_named_recomputed_and_the_result_unchanged(setup, tmp_path, name):
    change, reason = TAMPERINGS[name]
    first = extract(setup, tmp_path)
    (folder,) = tmp_path.iterdir()
    tamper(folder / CHUNK, change)
    calls, hook = count_forwards(setup[0])
    try:
        with pytest.warns(FeatureCacheWarning) as caught:
            second = extract(setup, tmp_path)
    finally:
        hook.remove()
    messages = [str(w.message) for w in caught if issubclass(w.category, FeatureCacheWarning)]
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"feature cache chunk {folder / CHUNK} failed its check (")
    assert reason in messages[0] and messages[0].endswith("; recomputing it")
    assert len(calls) == 4  # chunk 1 only: its 3 batches, plus the one-image forward that finds the width
    assert torch.equal(second.features, first.features) and torch.equal(second.labels, first.labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureCacheWarning)
        third = extract(setup, tmp_path)  # the rewritten chunk passes its check
    assert torch.equal(third.features, first.features)


def test_a_chunk_of_the_older_format_is_recomputed(setup, tmp_path):
    first = extract(setup, tmp_path)
    (folder,) = tmp_path.iterdir()
    tensors, _ = load_chunk(folder / CHUNK)
    save_file(tensors, str(folder / CHUNK), metadata={"format": "pt", "start": "10", "stop": "20"})
    with pytest.warns(FeatureCacheWarning, match="records no checksum: written by an older version"):
        second = extract(setup, tmp_path)
    assert torch.equal(second.features, first.features)
    assert "sha256" in load_chunk(folder / CHUNK)[1]


def test_a_chunk_moved_to_another_place_is_recomputed(setup, tmp_path):
    first = extract(setup, tmp_path)
    (folder,) = tmp_path.iterdir()
    (folder / "chunk-000000.safetensors").replace(folder / CHUNK)  # rows 0:10 where 10:20 belong
    with pytest.warns(FeatureCacheWarning, match=r"rows 0:10 recorded, expected 10:20"):
        second = extract(setup, tmp_path)
    assert torch.equal(second.features, first.features)


def written_cache(tmp_path, width=8, labels=None, features=None) -> FeatureCache:
    """Three chunks of 4 rows written through `FeatureCache.write` (a consistent record each)."""
    cache = FeatureCache(tmp_path, {"test": 1})
    for c in range(3):
        x = torch.randn(4, width) if features is None or c != 1 else features
        y = torch.tensor([0, 1, 2, 0]) if labels is None or c != 1 else labels
        cache.write(c, x, y, (4 * c, 4 * c + 4))
    return cache


BOUNDS = [(0, 4), (4, 8), (8, 12)]


def test_a_chunk_of_another_width_fails_even_with_a_consistent_record(tmp_path):
    cache = written_cache(tmp_path)
    cache.write(1, torch.randn(4, 4), torch.tensor([0, 1, 2, 0]), BOUNDS[1])  # checksum and record match
    fresh = FeatureCache(tmp_path, {"test": 1})
    with pytest.warns(FeatureCacheWarning, match="feature width 4, the other chunks have 8"):
        assert fresh.to_compute([0, 1, 2], BOUNDS, has_labels=True, num_classes=3) == [1]


def test_labels_out_of_range_fail_when_the_class_count_is_known(tmp_path):
    written_cache(tmp_path, labels=torch.tensor([0, 99, 1, 2]))
    fresh = FeatureCache(tmp_path, {"test": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureCacheWarning)
        assert fresh.to_compute([0, 1, 2], BOUNDS, has_labels=True) == []  # no class count: unknowable
    with pytest.warns(FeatureCacheWarning, match=r"labels 0\.\.99, outside \[0, 3\)"):
        assert fresh.to_compute([0, 1, 2], BOUNDS, has_labels=True, num_classes=3) == [1]


def test_what_the_data_or_the_model_gave_is_not_blamed_on_the_cache(tmp_path):
    """Labels -1 (`datasets`' missing label) and NaN features written as such pass: the pipeline then
    says the dataset or the model is at fault, as it should; only values changed after writing fail."""
    nan = torch.randn(4, 8)
    nan[0, 0] = math.nan
    written_cache(tmp_path, labels=torch.tensor([-1, -1, 2, 0]), features=nan)
    fresh = FeatureCache(tmp_path, {"test": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureCacheWarning)
        assert fresh.to_compute([0, 1, 2], BOUNDS, has_labels=True, num_classes=3) == []
    features, labels = fresh.read(1, BOUNDS[1], has_labels=True, num_classes=3)
    assert features.isnan().sum() == 1 and labels.tolist() == [-1, -1, 2, 0]


def test_a_chunk_that_cannot_be_recomputed_is_one_value_error_naming_the_folder(setup, tmp_path, monkeypatch):
    extract(setup, tmp_path)
    (folder,) = tmp_path.iterdir()
    tamper(folder / CHUNK, plant_nan)
    monkeypatch.setattr(FeatureCache, "write", lambda *args: None)  # the extraction's writes are lost
    with pytest.warns(FeatureCacheWarning), pytest.raises(ValueError) as raised:
        extract(setup, tmp_path)
    message = str(raised.value)
    assert "\n" not in message and f"feature cache chunk {folder / CHUNK} cannot be used (" in message
    assert f"remove the cache folder {folder}, or pass another --cache-dir" in message


def test_a_chunk_that_cannot_be_rewritten_is_one_value_error_naming_the_folder(setup, tmp_path, monkeypatch):
    extract(setup, tmp_path)
    (folder,) = tmp_path.iterdir()
    tamper(folder / CHUNK, labels_99)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(folder / CHUNK))

    monkeypatch.setattr("iis_hf.features.cache.save_safetensors_atomic", read_only)
    with pytest.warns(FeatureCacheWarning), pytest.raises(ValueError, match="rewriting it failed") as raised:
        extract(setup, tmp_path)
    assert "\n" not in str(raised.value) and f"remove the cache folder {folder}" in str(raised.value)


def test_score_rerun_after_tampering_exits_0_with_the_same_iis(tiny_models, tmp_path, capsys):
    """`iis-hf score --cache-dir`, four train chunks then tampered each its own way, and a rerun."""
    dataset = tmp_path / "data"
    make_image_dataset(num_classes=3, per_class=8).save_to_disk(str(dataset))
    cache = tmp_path / "cache"

    def score(out: str) -> dict:
        args = ["score", "--model", tiny_models("vit"), "--dataset", str(dataset), "--output-dir"]
        args += [str(tmp_path / out), "--cache-dir", str(cache), "--chunk-size", "4", "--epochs", "3"]
        code = main([*args, "--num-concepts", "20", "--images-per-class", "2", "--no-progress"])
        assert code == 0, capsys.readouterr().err
        return json.loads((tmp_path / out / "iis.json").read_text())

    reference = score("first")
    train = max(cache.iterdir(), key=lambda folder: len(list(folder.glob("chunk-*"))))
    chunks = sorted(train.glob("chunk-*.safetensors"))[
        1:5
    ]  # chunk 0 holds one class: a shift changes nothing
    assert len(chunks) == 4
    for chunk, (change, _) in zip(chunks, TAMPERINGS.values()):
        tamper(chunk, change)
    with pytest.warns(FeatureCacheWarning) as caught:
        rerun = score("second")
    named = sorted(str(w.message).split()[3] for w in caught if issubclass(w.category, FeatureCacheWarning))
    assert named == [str(c) for c in chunks]
    assert rerun["iis"] == reference["iis"] and rerun["accuracies"] == reference["accuracies"]
    assert rerun["standard_accuracy"] == reference["standard_accuracy"]
