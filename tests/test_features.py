"""iis_hf.features: pooled representations from tiny random-init vision models (offline)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    ARCHS,
    build_tiny_model,
    cpu_subprocess_env,
    make_image_dataset,
    tiny_config,
    tiny_image_processor,
    torchrun_two_processes,
)
from safetensors.torch import load_file

from iis_hf.features import ExtractedFeatures, extract_features
from iis_hf.features.backbones import (
    capture_classifier_input,
    load_image_processor,
    load_vision_model,
    pooled_representation,
)

REPO = Path(__file__).resolve().parents[1]
CASES = [(arch, head) for arch in ARCHS for head in (True, False)]


def build(arch: str, head: bool = True, seed: int = 0):
    return build_tiny_model(arch, head=head, seed=seed)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """saved(arch, head) -> folder with the model (seed 0) and its image processor."""
    root = tmp_path_factory.mktemp("features_models")
    cache: dict = {}

    def get(arch: str = "vit", head: bool = True) -> str:
        if (arch, head) not in cache:
            path = root / f"{arch}-{head}"
            build(arch, head).save_pretrained(path)
            tiny_image_processor().save_pretrained(path)
            cache[arch, head] = str(path)
        return cache[arch, head]

    return get


def pixels(images) -> torch.Tensor:
    return tiny_image_processor()(images=[im.convert("RGB") for im in images], return_tensors="pt")[
        "pixel_values"
    ]


@pytest.fixture(scope="module")
def pixel_values(image_dataset):
    return pixels(image_dataset["image"])


def direct_representation(model, pv: torch.Tensor) -> torch.Tensor:
    """What each architecture's representation is, computed by hand (docs/METHOD.md, "The representation")."""
    name = type(model).__name__
    if name in ("ViTForImageClassification", "DeiTForImageClassification"):
        return model.base_model(pv).last_hidden_state[:, 0]  # post-LayerNorm CLS
    if name == "Dinov2ForImageClassification":
        tokens = model.dinov2(pv).last_hidden_state
        return torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=1)
    if name == "CLIPForImageClassification":
        return model.vision_model(pv).last_hidden_state[:, 1:].mean(1)  # patch tokens, no post-LN
    if name == "CLIPVisionModel":
        out = model(pv)
        expected = model.post_layernorm(out.last_hidden_state[:, 0])
        torch.testing.assert_close(out.pooler_output, expected)
        return expected
    if name.endswith("ForImageClassification"):  # ResNet, ConvNeXt, Swin: the backbone's pooled output
        return model.base_model(pv).pooler_output.flatten(1)
    return model(pv).pooler_output.flatten(1)  # bare backbones


EXPECTED_CLASS = {
    ("clip", True): "CLIPForImageClassification",
    ("clip", False): "CLIPVisionModel",
    ("vit", True): "ViTForImageClassification",
    ("vit", False): "ViTModel",
    ("deit", True): "DeiTForImageClassification",
    ("dinov2", True): "Dinov2ForImageClassification",
    ("resnet", False): "ResNetModel",
}
EXPECTED_DIM = {"dinov2": 64}


@pytest.mark.parametrize(("arch", "head"), CASES)
def test_default_representation_matches_direct_computation(saved, image_dataset, pixel_values, arch, head):
    path = saved(arch, head)
    result = extract_features(path, image_dataset, batch_size=10, progress=False)
    assert isinstance(result, ExtractedFeatures)
    dim = EXPECTED_DIM.get(arch, 32) if head else 32
    assert result.features.shape == (len(image_dataset), dim)
    assert result.features.dtype == torch.float32 and result.features.device.type == "cpu"
    assert torch.equal(result.labels, torch.tensor(image_dataset["label"]))

    model = load_vision_model(path)
    assert not model.training
    if (arch, head) in EXPECTED_CLASS:
        assert type(model).__name__ == EXPECTED_CLASS[arch, head]
    with torch.no_grad():
        expected = direct_representation(model, pixel_values)
        torch.testing.assert_close(result.features, expected, rtol=1e-4, atol=1e-5)
        if head:  # exactly what the classifier reads: it reproduces the logits
            torch.testing.assert_close(model.classifier(result.features), model(pixel_values).logits)


def test_model_instance_and_path_agree(saved, image_dataset):
    model = build("swin", head=True)
    from_instance = extract_features(
        model, image_dataset, image_processor=tiny_image_processor(), progress=False
    )
    from_path = extract_features(saved("swin", True), image_dataset, progress=False)
    assert torch.equal(from_instance.features, from_path.features)


def test_capture_classifier_input_gives_logits_and_representation_from_one_forward(pixel_values):
    model = build("dinov2", head=True)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    with capture_classifier_input(model) as holder:
        logits = model(pixel_values[:4]).logits
    assert len(calls) == 1 and holder.value.shape == (4, 64)
    torch.testing.assert_close(model.classifier(holder.value), logits)
    holder.value.sum().backward()  # gradients flow through the captured representation
    assert model.dinov2.embeddings.cls_token.grad is not None
    with (
        pytest.raises(ValueError, match="has no classifier layer iis-hf recognises"),
        capture_classifier_input(build("vit", head=False)),
    ):
        pass
    # pooled_representation is the same feature and keeps gradients
    model.zero_grad()
    again = pooled_representation(model, pixel_values[:4])
    assert again.requires_grad
    torch.testing.assert_close(again, holder.value)


def test_full_clip_model_gives_its_vision_tower(tmp_path, image_dataset, pixel_values):
    import transformers

    torch.manual_seed(0)
    clip = transformers.CLIPModel(tiny_config("clip")).eval()
    clip.save_pretrained(tmp_path)
    tiny_image_processor().save_pretrained(tmp_path)
    tower = load_vision_model(str(tmp_path))
    assert type(tower).__name__ == "CLIPVisionModel"
    result = extract_features(str(tmp_path), image_dataset, progress=False)
    with torch.no_grad():
        expected = clip.vision_model(pixel_values).pooler_output
    torch.testing.assert_close(result.features, expected)
    loaded = transformers.CLIPModel.from_pretrained(tmp_path)
    from_instance = extract_features(loaded, image_dataset, progress=False)  # processor found via the tower
    assert torch.equal(from_instance.features, result.features)


def test_load_errors(tmp_path, saved):
    import transformers

    with pytest.raises(ValueError, match="cannot load a model from"):
        load_vision_model(str(tmp_path / "missing"))
    text = transformers.BertModel(
        transformers.BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    text.save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="not a vision model"):
        load_vision_model(str(tmp_path / "bert"))
    with pytest.raises(ValueError, match="not a vision model"):
        extract_features(text, [], progress=False)
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_vision_model(saved("vit"), trust_remote_code=True)
    # image processors: none saved, or a model built in memory
    build("vit").save_pretrained(tmp_path / "no-processor")
    with pytest.raises(ValueError, match="image_processor="):
        load_image_processor(load_vision_model(str(tmp_path / "no-processor")))
    with pytest.raises(ValueError, match="image_processor="):
        load_image_processor(build("vit"))
    processor = tiny_image_processor()
    assert load_image_processor(build("vit"), processor) is processor


# ---------------------------------------------------------------- layers and pooling


def _hidden(model, pv):
    with torch.no_grad():
        return model(pv, output_hidden_states=True).hidden_states


@pytest.mark.parametrize(
    ("arch", "head", "layer", "pooling", "expected"),
    [
        ("vit", True, 1, "cls", lambda h: h[1][:, 0]),
        ("vit", True, 1, "default", lambda h: h[1][:, 0]),
        ("vit", True, -1, "mean", lambda h: h[-1].mean(1)),
        ("vit", False, 0, "cls", lambda h: h[0][:, 0]),
        ("dinov2", True, 2, "default", lambda h: h[2][:, 0]),
        ("resnet", True, 1, "default", lambda h: h[1].mean((2, 3))),
        ("convnext", False, 2, "mean", lambda h: h[2].mean((2, 3))),
        ("swin", True, 1, "default", lambda h: h[1].mean(1)),  # no CLS token: mean
        ("swin", False, 2, "mean", lambda h: h[2].mean(1)),
    ],
)
def test_layer_and_pooling(image_dataset, pixel_values, arch, head, layer, pooling, expected):
    model = build(arch, head)
    result = extract_features(
        model,
        image_dataset,
        image_processor=tiny_image_processor(),
        layer=layer,
        pooling=pooling,
        device="cpu",  # the model is used again below, on the CPU
        progress=False,
    )
    torch.testing.assert_close(result.features, expected(_hidden(model, pixel_values)))


def test_last_hidden_state_pooling(image_dataset, pixel_values):
    processor = tiny_image_processor()
    vit = build("vit", head=True)
    with torch.no_grad():
        tokens = vit.vit(pixel_values).last_hidden_state
    mean = extract_features(vit, image_dataset, image_processor=processor, pooling="mean", progress=False)
    torch.testing.assert_close(mean.features, tokens.mean(1))
    cls = extract_features(vit, image_dataset, image_processor=processor, pooling="cls", progress=False)
    torch.testing.assert_close(cls.features, tokens[:, 0])
    # CLIPVisionModel: "cls" is the CLS token before post_layernorm, unlike the default pooler_output
    clip = build("clip", head=False)
    with torch.no_grad():
        out = clip(pixel_values)
    clip_cls = extract_features(clip, image_dataset, image_processor=processor, pooling="cls", progress=False)
    torch.testing.assert_close(clip_cls.features, out.last_hidden_state[:, 0])
    assert not torch.allclose(clip_cls.features, out.pooler_output)
    resnet = build("resnet", head=False)
    with torch.no_grad():
        maps = resnet(pixel_values).last_hidden_state
    res = extract_features(resnet, image_dataset, image_processor=processor, pooling="mean", progress=False)
    torch.testing.assert_close(res.features, maps.mean((2, 3)))


def test_bad_options(image_dataset):
    vit, processor, data = build("vit"), tiny_image_processor(), image_dataset.select(range(2))

    def run(model=vit, **kwargs):
        return extract_features(model, data, image_processor=processor, progress=False, **kwargs)

    with pytest.raises(ValueError, match="pooling must be one of 'default', 'cls', 'mean', got 'max'"):
        run(pooling="max")
    with pytest.raises(ValueError, match="returns 3 hidden states"):
        run(layer=3)
    with pytest.raises(ValueError, match="returns 3 hidden states"):
        run(layer=-4)
    with pytest.raises(ValueError, match=r"layer must be an int \(or None\)"):
        run(layer="1")
    with pytest.raises(ValueError, match="precision must be one of 'fp32', 'bf16', 'fp16', got 'fp8'"):
        run(precision="fp8")
    with pytest.raises(ValueError, match="batch_size"):
        run(batch_size=0)
    with pytest.raises(ValueError, match="no CLS token"):
        run(build("swin"), layer=1, pooling="cls")
    with pytest.raises(ValueError, match="feature map"):
        run(build("resnet"), layer=1, pooling="cls")


# ---------------------------------------------------------------- datasets, columns and images


def test_columns_detected_from_feature_types(image_dataset):
    from datasets import ClassLabel, Dataset, Features, Image, Value

    vit, processor = build("vit"), tiny_image_processor()
    labels = [2, 0, 1, 1]
    renamed = Dataset.from_dict(
        {"caption": ["a", "b", "c", "d"], "picture": image_dataset["image"][:4], "target": labels},
        features=Features(
            {"caption": Value("string"), "picture": Image(), "target": ClassLabel(num_classes=3)}
        ),
    )
    result = extract_features(vit, renamed, image_processor=processor, progress=False)
    expected = extract_features(
        vit, image_dataset.select(range(4)), image_processor=processor, progress=False
    )
    assert torch.equal(result.features, expected.features)
    assert result.labels.dtype == torch.int64 and result.labels.tolist() == labels

    # plain int column with another name: only used when named
    plain = Dataset.from_dict(
        {"pixels": image_dataset["image"][:4], "y": labels},
        features=Features({"pixels": Image(), "y": Value("int32")}),
    )
    assert extract_features(vit, plain, image_processor=processor, progress=False).labels is None
    named = extract_features(vit, plain, image_processor=processor, label_column="y", progress=False)
    assert named.labels.tolist() == labels
    no_labels = image_dataset.select(range(4)).remove_columns("label")
    assert extract_features(vit, no_labels, image_processor=processor, progress=False).labels is None


def test_column_errors(image_dataset):
    from datasets import Dataset, DatasetDict, Features, Image, Value

    vit, processor = build("vit"), tiny_image_processor()

    def run(data, **kwargs):
        return extract_features(vit, data, image_processor=processor, progress=False, **kwargs)

    no_image = Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})
    with pytest.raises(ValueError, match=r"no image column.*\['text', 'label'\].*image_column="):
        run(no_image)
    with pytest.raises(ValueError, match=r"image_column='photo' is not a column.*\['image', 'label'\]"):
        run(image_dataset, image_column="photo")
    with pytest.raises(ValueError, match="label_column='y' is not a column"):
        run(image_dataset, label_column="y")
    with pytest.raises(ValueError, match=r"image file 'x'\) does not exist.*image_column="):
        run(Dataset.from_dict({"image": ["x", "y"]}).cast_column("image", Value("large_string")))
    empty_images = Dataset.from_dict({"image": [None, None]}, features=Features({"image": Image()}))
    with pytest.raises(ValueError, match=r"row 0 of column 'image' is a NoneType, not an image"):
        run(empty_images)
    with pytest.raises(ValueError, match="empty"):
        run(image_dataset.select([]))
    with pytest.raises(ValueError, match="DatasetDict"):
        run(DatasetDict(train=image_dataset))
    with pytest.raises(ValueError, match="label column 'caption' must hold integer"):
        run(image_dataset.select(range(2)).add_column("caption", ["a", "b"]), label_column="caption")


def test_list_of_images_greyscale_rgba_and_mixed_sizes():
    from datasets import Dataset, Features, Image
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    images = [
        PILImage.fromarray(rng.integers(0, 255, (20, 28), dtype=np.uint8), mode="L"),
        PILImage.fromarray(rng.integers(0, 255, (40, 40, 4), dtype=np.uint8), mode="RGBA"),
        PILImage.fromarray(rng.integers(0, 255, (32, 50, 3), dtype=np.uint8)),
        PILImage.fromarray(rng.integers(0, 255, (9, 9), dtype=np.uint8), mode="L").convert("P"),
    ]
    vit, processor = build("vit", head=False), tiny_image_processor()
    result = extract_features(
        vit, images, image_processor=processor, batch_size=3, device="cpu", progress=False
    )
    assert result.labels is None and result.features.shape == (4, 32)
    with torch.no_grad():
        expected = vit(pixels(images)).pooler_output
    torch.testing.assert_close(result.features, expected)
    as_dataset = Dataset.from_dict({"image": images}, features=Features({"image": Image()}))
    from_dataset = extract_features(vit, as_dataset, image_processor=processor, batch_size=3, progress=False)
    torch.testing.assert_close(from_dataset.features, result.features)
    with pytest.raises(ValueError, match="item 0 of the image list is a NoneType, not an image"):
        extract_features(vit, [None], image_processor=processor, progress=False)


def test_workers_and_batch_size_do_not_change_results(image_dataset):
    vit, processor = build("vit"), tiny_image_processor()
    one = extract_features(vit, image_dataset, image_processor=processor, batch_size=24, progress=False)
    workers = extract_features(
        vit, image_dataset, image_processor=processor, batch_size=5, num_workers=2, progress=False
    )
    torch.testing.assert_close(workers.features, one.features)
    assert torch.equal(workers.labels, one.labels)


def test_device_argument_and_training_mode_restored(image_dataset):
    vit = build("vit").train()
    extract_features(
        vit,
        image_dataset.select(range(3)),
        image_processor=tiny_image_processor(),
        device="cpu",
        progress=False,
    )
    assert vit.training


def test_bf16_precision_returns_float32_close_to_fp32(image_dataset):
    vit, processor = build("vit"), tiny_image_processor()
    fp32 = extract_features(vit, image_dataset, image_processor=processor, progress=False)
    bf16 = extract_features(vit, image_dataset, image_processor=processor, precision="bf16", progress=False)
    assert bf16.features.dtype == torch.float32
    assert not torch.equal(bf16.features, fp32.features)  # autocast really ran in bf16
    torch.testing.assert_close(bf16.features, fp32.features, rtol=0.1, atol=0.1)


# ---------------------------------------------------------------- cache


def _count_forwards(model):
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_cache_hit_returns_identical_tensors_without_forward(tmp_path, image_dataset):
    vit, processor = build("vit"), tiny_image_processor()
    calls = _count_forwards(vit)
    kwargs = {"image_processor": processor, "cache_dir": tmp_path, "chunk_size": 10, "batch_size": 4}
    kwargs["progress"] = False
    first = extract_features(vit, image_dataset, **kwargs)
    assert len(calls) > 0
    calls.clear()
    second = extract_features(vit, image_dataset, **kwargs)
    assert calls == []
    assert torch.equal(first.features, second.features) and torch.equal(first.labels, second.labels)
    assert second.features.dtype == torch.float32
    uncached = extract_features(vit, image_dataset, image_processor=processor, progress=False)
    assert torch.equal(first.features, uncached.features)  # stored exactly: a cache changes only the time

    (folder,) = tmp_path.iterdir()
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "chunk-000000.safetensors",
        "chunk-000001.safetensors",
        "chunk-000002.safetensors",
        "settings.json",
    ]
    chunk = load_file(folder / "chunk-000001.safetensors")
    assert chunk["features"].dtype == torch.float32 and chunk["labels"].dtype == torch.int64
    assert chunk["features"].shape == (10, 32)
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["layer"] is None and settings["pooling"] == "default" and settings["num_rows"] == 24

    # resume: a lost chunk is the only one recomputed (its 3 batches + the 1-image check forward)
    (folder / "chunk-000001.safetensors").unlink()
    calls.clear()
    resumed = extract_features(vit, image_dataset, **kwargs)
    assert len(calls) == 4
    assert torch.equal(resumed.features, first.features)


def test_cache_key_follows_weights_settings_and_data(tmp_path, image_dataset):
    processor = tiny_image_processor()
    data = image_dataset.select(range(6))

    def folders():
        return {p.name for p in tmp_path.iterdir()}

    def run(model, dataset=data, **kwargs):
        calls = _count_forwards(model)
        result = extract_features(
            model, dataset, image_processor=processor, cache_dir=tmp_path, progress=False, **kwargs
        )
        return result, len(calls)

    base, _ = run(build("vit"))
    assert len(folders()) == 1
    same, n = run(build("vit"))  # same weights, another instance: hit
    assert n == 0 and torch.equal(same.features, base.features)
    finetuned = build("vit")
    with torch.no_grad():
        finetuned.vit.layernorm.bias.add_(0.5)
    changed, n = run(finetuned)  # same architecture and config, other weights: miss
    assert n > 0 and len(folders()) == 2 and not torch.allclose(changed.features, base.features)
    _, n = run(build("vit"), layer=1)
    assert n > 0 and len(folders()) == 3
    _, n = run(build("vit"), dataset=image_dataset.select(range(1, 7)))
    assert n > 0 and len(folders()) == 4
    images = image_dataset["image"][:3]
    from_list, n = run(build("vit"), dataset=images)
    assert n > 0 and len(folders()) == 5
    again, n = run(build("vit"), dataset=list(images))
    assert n == 0 and torch.equal(again.features, from_list.features)
    _, n = run(build("vit"), dataset=[im.rotate(90) for im in images])
    assert n > 0 and len(folders()) == 6
    for folder in tmp_path.iterdir():
        assert {p.suffix for p in folder.iterdir()} <= {".safetensors", ".json"}


# ---------------------------------------------------------------- several processes


def test_two_processes_return_the_one_process_result(tmp_path, saved):
    """torchrun with 2 CPU processes (gloo) over 13 images in chunks of 4: every rank gets everything."""
    model_dir, out_dir, cache_dir = saved("vit", True), tmp_path / "out", tmp_path / "cache"
    out_dir.mkdir()
    script = str(REPO / "tests" / "scripts" / "extract_distributed.py")
    command = torchrun_two_processes(script, model_dir, str(out_dir), str(cache_dir), "13")
    proc = subprocess.run(
        command, check=False, env=cpu_subprocess_env(), capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    data = make_image_dataset(num_classes=3, per_class=5).select(range(13))
    # the reference runs as the workers did: on the CPU, one thread (torchrun sets OMP_NUM_THREADS=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kwargs = {"chunk_size": 4, "batch_size": 3, "device": "cpu", "progress": False}
        reference = extract_features(model_dir, data, **kwargs)
        cached_reference = extract_features(model_dir, data, cache_dir=tmp_path / "cache1", **kwargs)
    finally:
        torch.set_num_threads(threads)
    assert reference.features.shape == (13, 32)
    for rank in (0, 1):
        for name, expected in (
            ("nocache", reference),
            ("cache", cached_reference),
            ("cached", cached_reference),
        ):
            got = load_file(out_dir / f"rank{rank}-{name}.safetensors")
            assert torch.equal(got["features"], expected.features), (rank, name)
            assert torch.equal(got["labels"], expected.labels), (rank, name)
    forwards = [json.loads((out_dir / f"rank{r}-forwards.json").read_text()) for r in (0, 1)]
    # chunks 0, 2 (rank 0) and 1, 3 (rank 1) in batches of 3, plus one check forward each: work was split
    assert [f["nocache"] for f in forwards] == [5, 4] and [f["cache"] for f in forwards] == [5, 4]
    assert [f["cached"] for f in forwards] == [0, 0]
    assert len(list(next(cache_dir.iterdir()).glob("chunk-*.safetensors"))) == 4


# ---------------------------------------------------------------- decoding off the critical path
def test_auto_num_workers_follows_the_measured_threshold_and_the_device(monkeypatch):
    from iis_hf.features import auto_num_workers
    from iis_hf.features.sources import MAX_WORKERS, WORKERS_FROM_IMAGES

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    below, above = WORKERS_FROM_IMAGES - 1, WORKERS_FROM_IMAGES
    assert auto_num_workers(10**6, 0) == 0 and auto_num_workers(3, 2) == 2  # asked for: as asked
    assert auto_num_workers(below, device="cuda", cpus=16) == 0  # too few images to gain
    # pixel values: nothing to decode
    assert auto_num_workers(10**6, device="cuda", decodes=False, cpus=16) == 0
    # CPU: only the cores the forward's threads leave free (this machine: 2 cores, OMP_NUM_THREADS=1 -> 1)
    cpu = [
        auto_num_workers(above, device="cpu", cpus=c, threads=t)
        for c, t in [(2, 1), (2, 2), (16, 14), (64, 8)]
    ]
    assert cpu == [1, 0, 2, 4]
    # an accelerator waits on the workers: every core but one, capped
    assert [auto_num_workers(above, device="cuda", cpus=c) for c in (1, 2, 16, 64)] == [1, 1, 15, MAX_WORKERS]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # eight processes share the node's cores
    assert auto_num_workers(above, device=torch.device("cuda", 3), cpus=64) == 7


def test_loader_options_pin_memory_for_cuda_and_choose_workers(monkeypatch):
    """The CUDA code path, without a GPU: batches are pinned, copies to the device non-blocking."""
    from iis_hf.features import extract
    from iis_hf.features.preprocess import to_device
    from iis_hf.features.sources import WORKERS_FROM_IMAGES

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cuda = extract.loader_options(WORKERS_FROM_IMAGES, None, [torch.device("cuda", 0)])
    assert cuda["pin_memory"] and cuda["num_workers"] >= 1
    cpu = extract.loader_options(WORKERS_FROM_IMAGES - 1, None, ["cpu"])
    assert cpu == {"num_workers": 0, "pin_memory": False, "persistent_workers": False}
    assert extract.loader_options(10**6, 3, ["cpu"])["num_workers"] == 3

    class Recorder:
        def to(self, device, **kwargs):
            self.call = (device, kwargs)
            return self

    sent = to_device(Recorder(), torch.device("cuda", 0))
    assert sent.call == (torch.device("cuda", 0), {"non_blocking": True})


def test_workers_chosen_automatically_give_the_same_features(monkeypatch, image_dataset):
    """num_workers=None (the planned default): workers from the threshold on, same features."""
    import torch.utils.data

    from iis_hf.config import ExtractionConfig
    from iis_hf.features import sources

    vit, processor = build("vit"), tiny_image_processor()
    seen = []
    loader = torch.utils.data.DataLoader

    def recording(*args, **kwargs):
        seen.append(kwargs["num_workers"])
        return loader(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", recording)
    monkeypatch.setattr(sources, "WORKERS_FROM_IMAGES", len(image_dataset))
    monkeypatch.setattr(sources, "available_cpus", lambda: torch.get_num_threads() + 1)  # one core free
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    config = ExtractionConfig(batch_size=5)
    config.num_workers = None  # what ExtractionConfig's default is to become (auto)
    auto = extract_features(
        vit, image_dataset, config=config, image_processor=processor, device="cpu", progress=False
    )
    small = extract_features(
        vit, image_dataset.select(range(4)), config=config, image_processor=processor, device="cpu",
        progress=False,
    )  # fmt: skip
    plain = extract_features(
        vit,
        image_dataset,
        image_processor=processor,
        device="cpu",
        batch_size=5,
        num_workers=0,
        progress=False,
    )
    assert seen == [1, 0, 0]  # one worker for the free core at the threshold; none below it or when asked
    assert torch.equal(auto.features, plain.features) and torch.equal(auto.labels, plain.labels)
    assert torch.equal(small.features, plain.features[:4])
