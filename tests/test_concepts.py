"""Concept banks: building from prototypes and clusters, saving, loading, refusing bad artefacts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from iis_hf import ConceptBank, InterpretationHead, extract_features
from iis_hf.concepts import CONFIG_NAME, WEIGHTS_NAME
from iis_hf.concepts.prototypes import grid_patches, slic_segments


def small_bank(num=6, dim=5, thumbnails=True):
    generator = torch.Generator().manual_seed(0)
    return ConceptBank(
        vectors=torch.randn(num, dim, generator=generator),
        names=[f"concept {i}" for i in range(num)],
        kind="custom",
        sources=[
            {"image_index": i, "label": i % 2, "box": [0, 0, 4, 4], "part": "patch (0,0)"} for i in range(num)
        ],
        thumbnails=torch.randint(0, 255, (num, 3, 8, 8), generator=generator, dtype=torch.uint8)
        if thumbnails
        else None,
        provenance={"model": "tiny"},
    )


def test_bank_normalises_rows_and_validates():
    bank = small_bank()
    torch.testing.assert_close(bank.vectors.norm(dim=1), torch.ones(6))
    with pytest.raises(ValueError, match="one name each"):
        ConceptBank(vectors=torch.randn(3, 4), names=["a"])
    with pytest.raises(ValueError, match="NaN"):
        ConceptBank(vectors=torch.full((2, 4), float("nan")), names=["a", "b"])


def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    bank = small_bank()
    bank.save_pretrained(tmp_path / "bank")
    # the bank's two files, and the model card huggingface_hub's ModelHubMixin convention adds
    assert sorted(p.name for p in (tmp_path / "bank").iterdir()) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    loaded = ConceptBank.from_pretrained(tmp_path / "bank")
    assert torch.equal(loaded.vectors, bank.vectors) and torch.equal(loaded.thumbnails, bank.thumbnails)
    assert loaded.names == bank.names and loaded.sources == bank.sources and loaded.kind == "custom"
    head_a, head_b = InterpretationHead(bank, 3, 0.5), InterpretationHead(loaded, 3, 0.5)
    head_b.load_state_dict(head_a.state_dict())
    x = torch.randn(4, 5)
    assert torch.equal(head_a(x), head_b(x))


def corrupt(folder, name, content):
    (folder / name).write_bytes(content) if isinstance(content, bytes) else (folder / name).write_text(
        content
    )


@pytest.mark.parametrize(
    "name, content, message",
    [
        (WEIGHTS_NAME, b"\x10\x00\x00\x00\x00\x00\x00\x00{", "not a readable safetensors"),
        (CONFIG_NAME, "{not json", "not valid JSON"),
        (CONFIG_NAME, "[1, 2]", "JSON object"),
        (CONFIG_NAME, json.dumps({"format": "something-else"}), "not an iis-hf concept bank"),
        (CONFIG_NAME, json.dumps({"format": "iis-hf-concept-bank", "names": [1, 2]}), "list of strings"),
        (
            CONFIG_NAME,
            json.dumps({"format": "iis-hf-concept-bank", "names": ["a"] * 6, "sources": "x"}),
            "sources",
        ),
        (CONFIG_NAME, json.dumps({"format": "iis-hf-concept-bank", "names": ["a"] * 5}), "one name each"),
        (
            CONFIG_NAME,
            json.dumps({"format": "iis-hf-concept-bank", "names": ["a"] * 6, "dim": 7}),
            "says dim = 7",
        ),
    ],
)
def test_corrupted_bank_is_refused_with_a_clear_message(tmp_path, name, content, message):
    small_bank().save_pretrained(tmp_path)
    if name == WEIGHTS_NAME:  # truncate the real file rather than replace it
        data = (tmp_path / WEIGHTS_NAME).read_bytes()
        content = data[: len(data) // 2]
    corrupt(tmp_path, name, content)
    with pytest.raises(ValueError, match=message):
        ConceptBank.from_pretrained(tmp_path)


def test_bank_folder_with_a_pickle_is_refused(tmp_path):
    small_bank().save_pretrained(tmp_path)
    (tmp_path / "concept_bank.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ValueError, match="pickle"):
        ConceptBank.from_pretrained(tmp_path)


def test_missing_bank_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ConceptBank.from_pretrained(tmp_path / "nowhere")


def test_grid_patches_tile_the_image():
    image = Image.new("RGB", (32, 24))
    parts = list(grid_patches(image, 4))
    assert len(parts) == 16
    boxes = [source["box"] for _, source in parts]
    assert boxes[0] == [0, 0, 8, 6] and boxes[-1] == [24, 18, 32, 24]
    assert sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes) == 32 * 24
    assert parts[5][1]["part"] == "patch (1,1)"


def test_slic_segments_are_distinct_grey_filled_crops():
    rng = np.random.default_rng(0)
    pixels = np.zeros((48, 48, 3), dtype=np.uint8)
    pixels[:, :24] = [200, 30, 30]
    pixels[:, 24:] = [30, 30, 200]
    pixels[16:32, 16:32] = [30, 200, 30]
    pixels = np.clip(pixels + rng.integers(0, 10, pixels.shape), 0, 255).astype(np.uint8)
    parts = list(slic_segments(Image.fromarray(pixels)))
    assert 2 <= len(parts) <= 15
    for crop, source in parts:
        x0, y0, x1, y1 = source["box"]
        assert crop.size == (x1 - x0, y1 - y0)
        assert source["part"].startswith("segment (n=")
    filled = [np.asarray(c) for c, _ in parts if (np.asarray(c) == 117).all(axis=-1).any()]
    assert filled, "pixels outside a non-rectangular segment are grey 117"


def test_from_prototypes_embeds_patches_with_the_backbone(tiny_models, image_dataset):
    model_dir = tiny_models("vit")
    bank = ConceptBank.from_prototypes(model_dir, image_dataset, images_per_class=2, progress=False)
    assert bank.num_concepts == 3 * 2 * 16 and bank.dim == 32 and bank.kind == "prototype-patches"
    torch.testing.assert_close(bank.vectors.norm(dim=1), torch.ones(bank.num_concepts))
    assert bank.thumbnails.shape == (96, 3, 32, 32)
    assert {s["label"] for s in bank.sources} == {0, 1, 2}
    # each vector is the backbone's representation of its source part
    source = bank.sources[17]
    image = image_dataset[source["image_index"]]["image"].crop(tuple(source["box"]))
    direct = extract_features(model_dir, [image], progress=False).features[0]
    torch.testing.assert_close(bank.vectors[17], direct / direct.norm(), rtol=1e-4, atol=1e-5)

    subset = ConceptBank.from_prototypes(
        model_dir, image_dataset, images_per_class=2, num_concepts=10, progress=False
    )
    assert subset.num_concepts == 10 and len(set(subset.names)) == 10
    with pytest.raises(ValueError, match="only 96"):
        ConceptBank.from_prototypes(
            model_dir, image_dataset, images_per_class=2, num_concepts=500, progress=False
        )


def test_from_prototypes_with_segments(tiny_models, image_dataset):
    bank = ConceptBank.from_prototypes(
        tiny_models("resnet"), image_dataset, parts="segments", images_per_class=1, progress=False
    )
    assert bank.kind == "prototype-segments" and bank.dim == 32
    assert 3 <= bank.num_concepts <= 3 * 15


def test_from_prototypes_needs_labels(tiny_models, image_dataset):
    with pytest.raises(ValueError, match="need labels"):
        ConceptBank.from_prototypes(tiny_models("vit"), image_dataset.remove_columns("label"), progress=False)


def test_from_clusters_returns_normalised_centres_named_after_prototypes():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=generator) * 5
    library = ConceptBank(
        vectors=centres.repeat_interleave(10, 0) + 0.1 * torch.randn(40, 8, generator=generator),
        names=[f"proto {i}" for i in range(40)],
        sources=[{"image_index": i} for i in range(40)],
        thumbnails=torch.zeros(40, 3, 4, 4, dtype=torch.uint8),
    )
    bank = ConceptBank.from_clusters(library, 4)
    assert bank.kind == "cluster" and bank.num_concepts == 4 and bank.thumbnails.shape[0] == 4
    torch.testing.assert_close(bank.vectors.norm(dim=1), torch.ones(4))
    similarity = bank.vectors @ torch.nn.functional.normalize(centres, dim=1).T
    assert (similarity.max(dim=1).values > 0.99).all()  # every planted centre is found
    assert all("n=10" in name and "like: proto" in name for name in bank.names)
    with pytest.raises(ValueError, match="cannot make 41 clusters from 40"):
        ConceptBank.from_clusters(library, 41)
    plain = ConceptBank.from_clusters(library.vectors.numpy(), 3)
    assert plain.num_concepts == 3 and plain.sources is None
