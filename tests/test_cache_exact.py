"""A feature cache changes only the time a run takes, never its features or its IIS.

The cache used to store every chunk in float16 while a run without a cache kept float32: a cached run
scored 0.6652 where an uncached one scored 0.6550 (random-init ResNet, 600 images).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import build_tiny_model, make_image_dataset, tiny_image_processor
from safetensors.torch import load_file

from iis_hf import extract_features, score_model
from iis_hf.config import ConceptsConfig, ExtractionConfig, HeadsConfig, ScoringConfig
from iis_hf.features.cache import storage_dtype

ARCHS = ("resnet", "vit")


@pytest.fixture(scope="module")
def splits():
    # 80 eval images of 4 classes: enough for a float16 rounding of the features to move an accuracy
    return make_image_dataset(num_classes=4, per_class=20), make_image_dataset(
        num_classes=4, per_class=20, seed=1
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_features_with_a_cache_fresh_and_reused_are_bit_identical_to_none(tmp_path, arch, splits):
    model, processor = build_tiny_model(arch, num_labels=4), tiny_image_processor()
    kwargs = {"image_processor": processor, "progress": False, "chunk_size": 32, "batch_size": 16}
    plain = extract_features(model, splits[0], **kwargs)
    fresh = extract_features(model, splits[0], cache_dir=tmp_path, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a reused chunk passes its check: nothing is recomputed
        reused = extract_features(model, splits[0], cache_dir=tmp_path, **kwargs)
    assert plain.features.dtype == fresh.features.dtype == reused.features.dtype == torch.float32
    assert torch.equal(fresh.features, plain.features), (fresh.features - plain.features).abs().max()
    assert torch.equal(reused.features, plain.features)
    assert torch.equal(fresh.labels, plain.labels) and torch.equal(reused.labels, plain.labels)
    (folder,) = tmp_path.iterdir()
    chunk = load_file(folder / "chunk-000000.safetensors")
    assert torch.equal(chunk["features"].float(), plain.features[:32])  # on disk exactly, too


@pytest.mark.parametrize("arch", ARCHS)
def test_the_iis_with_a_cache_fresh_and_reused_equals_the_iis_without(tmp_path, arch, splits):
    model, processor = build_tiny_model(arch, num_labels=4), tiny_image_processor()

    def score(cache_dir):
        config = ScoringConfig(
            extraction=ExtractionConfig(cache_dir=str(cache_dir) if cache_dir else None),
            concepts=ConceptsConfig(num_concepts=16, images_per_class=2),
            heads=HeadsConfig(epochs=5),
            progress=False,
            seed=1,  # float16 features move this IIS on both models (resnet 0.4931 -> 0.4956, vit 0.4344 -> 0.4325)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the heads' budget warnings of a 5-epoch run
            return score_model(model, splits[0], splits[1], config, image_processor=processor)

    plain, fresh, reused = score(None), score(tmp_path), score(tmp_path)
    assert fresh.iis == plain.iis and reused.iis == plain.iis, (plain.iis, fresh.iis, reused.iis)
    assert fresh.accuracies == plain.accuracies == reused.accuracies
    assert fresh.standard_accuracy == plain.standard_accuracy == reused.standard_accuracy


def test_a_chunk_is_stored_narrower_only_where_that_is_lossless():
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    assert storage_dtype(x) == torch.float32  # an fp32 extraction: kept whole
    assert storage_dtype(x.half().float()) == torch.float16  # under fp16 autocast: half the disk
    assert storage_dtype(x.bfloat16().float() * 2**20) == torch.bfloat16  # beyond float16's range
    assert storage_dtype(torch.tensor([[1e6 + 1.0]])) == torch.float32
    assert storage_dtype(torch.tensor([[float("nan"), 0.0]])) == torch.float32  # NaN only in float32
