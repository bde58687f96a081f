"""Records that say what made them (issue 29, item 4): the image processor's backend and the library
versions are in iis.json and in the feature-cache key, and compare refuses other backends.

torchvision does not import here, so the torchvision backend is a stand-in: the PIL processor with
``backend = "torchvision"`` (the attribute transformers >= 5 processors carry), which prepares the same
pixels: only what is recorded differs, which is what is tested.
"""

from __future__ import annotations

import json
import sys

import pytest
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

import iis_hf
import iis_hf.compare
from iis_hf.cli import main as cli_main
from iis_hf.compare import check_comparable, comparable_view, expected_result, read_card_result
from iis_hf.compare.comparable import BACKEND
from iis_hf.config import ConceptsConfig, HeadsConfig, ScoringConfig
from iis_hf.config.records import UNKNOWN_BACKEND, recorded_backend
from iis_hf.data import load_scoring_splits
from iis_hf.features.backbones import load_image_processor, load_vision_model, processor_backend
from iis_hf.model_card import eval_results

RATIOS = [0.0, 0.5, 0.9]


# A processor that says it is of the torchvision backend (its pixels are PIL's), named as the real one
# is: the torchvision and PIL processors of a model record the same settings and the same
# image_processor_type, which is why the backend must be recorded on its own.
TorchvisionStandIn = type("ViTImageProcessor", (ViTImageProcessorPil,), {"backend": "torchvision"})


def fast_config() -> ScoringConfig:
    return ScoringConfig(
        concepts=ConceptsConfig(num_concepts=12, images_per_class=2),
        heads=HeadsConfig(epochs=3, sparsity_ratios=RATIOS),
        progress=False,
    )


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory):
    from conftest import make_image_dataset

    path = tmp_path_factory.mktemp("data") / "colours"
    make_image_dataset(num_classes=3, per_class=8).save_to_disk(str(path))
    return str(path)


@pytest.fixture(scope="module")
def scored(tiny_models, saved_dataset):
    """The same tiny ViT scored with its own (PIL) processor and with the torchvision stand-in."""
    splits = load_scoring_splits(saved_dataset)
    model = load_vision_model(tiny_models("vit"))
    pil = load_image_processor(model)
    stand_in = TorchvisionStandIn(**{k: v for k, v in pil.to_dict().items() if k != "image_processor_type"})
    results = {}
    for name, processor in (("pil", pil), ("torchvision", stand_in)):
        results[name] = iis_hf.score_model(
            model, splits.train, splits.eval, fast_config(), image_processor=processor
        )
        results[name].settings["data"].update(splits.settings())
    return results


def test_the_backend_is_told_from_the_processor():
    assert processor_backend(ViTImageProcessorPil()) == "pil"
    assert processor_backend(TorchvisionStandIn()) == "torchvision"

    class ViTImageProcessorFast:  # transformers 4: the torchvision processors were the *Fast classes
        pass

    class BaseImageProcessorFast:
        pass

    legacy = type("ViTImageProcessorFast", (BaseImageProcessorFast,), {})
    assert processor_backend(legacy()) == "torchvision"
    assert processor_backend(lambda image: image) == "function"  # a custom callable: its class name


def test_the_backend_and_the_versions_are_in_iis_json(scored, tmp_path):
    import torch
    import transformers

    scored["pil"].save_json(tmp_path / "iis.json")
    environment = json.loads((tmp_path / "iis.json").read_text())["settings"]["environment"]
    assert environment["image_processor_backend"] == "pil"
    assert environment["image_processor_class"] == "ViTImageProcessorPil"
    assert scored["torchvision"].settings["environment"]["image_processor_class"] == "ViTImageProcessor"
    assert environment["versions"]["torch"] == torch.__version__
    assert environment["versions"]["transformers"] == transformers.__version__
    assert environment["versions"]["torchvision"] is None  # not installed here
    assert scored["torchvision"].settings["environment"]["image_processor_backend"] == "torchvision"
    # the IIS itself: the stand-in prepares PIL's pixels, so the same number
    assert scored["torchvision"].iis == scored["pil"].iis


def test_the_command_line_records_the_backend(tiny_models, saved_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    command = ["score", "--model", tiny_models("vit"), "--dataset", saved_dataset, "--output-dir", str(out)]
    command += ["--epochs", "3", "--num-concepts", "12", "--images-per-class", "2", "--no-progress"]
    command += ["--sparsity-ratios", *map(str, RATIOS)]
    assert cli_main(command) == 0, capsys.readouterr().err
    record = json.loads((out / "iis.json").read_text())
    assert record["settings"]["environment"]["image_processor_backend"] == "pil"
    assert recorded_backend(iis_hf.IISResult.from_dict(record).settings) == "pil"


def test_the_cache_key_holds_the_backend_and_a_pil_extraction_is_not_reused(tiny_models, tmp_path):
    from conftest import make_image_dataset

    dataset = make_image_dataset(num_classes=3, per_class=3)
    model = load_vision_model(tiny_models("vit"))
    pil = load_image_processor(model)
    stand_in = TorchvisionStandIn(**{k: v for k, v in pil.to_dict().items() if k != "image_processor_type"})
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    cache = tmp_path / "cache"
    forwards = []
    for processor in (pil, stand_in, pil):
        calls.clear()
        iis_hf.extract_features(model, dataset, image_processor=processor, cache_dir=cache, progress=False)
        forwards.append(len(calls))
    # the torchvision run extracted again; the second PIL run reused the first one's chunks
    assert forwards[0] > 0 and forwards[1] == forwards[0] and forwards[2] == 0, forwards
    folders = sorted(p for p in cache.iterdir() if p.is_dir())
    assert len(folders) == 2  # two keys
    settings = [json.loads((f / "settings.json").read_text()) for f in folders]
    assert sorted(s["image_processor_backend"] for s in settings) == ["pil", "torchvision"]
    assert all(s["versions"]["torch"] for s in settings) and all(
        "torchvision" in s["versions"] for s in settings
    )
    first, second = (
        {k: v for k, v in s.items() if k not in ("key", "image_processor_backend")} for s in settings
    )
    assert first == second  # only the backend differs


def test_compare_refuses_two_records_of_other_backends_in_one_line(scored):
    records = {name: iis_hf.IISResult.from_dict(r.to_dict()) for name, r in scored.items()}
    with pytest.raises(ValueError) as refused:
        check_comparable(records)
    message = str(refused.value)
    assert "\n" not in message and "different image-processor backends" in message
    assert f"{BACKEND}: 'pil' (pil) vs 'torchvision' (torchvision)" in message
    assert "torchvision installed for all or for none" in message
    with pytest.raises(ValueError, match="different image-processor backends"):
        iis_hf.compare.Leaderboard.from_results(records)
    check_comparable({"a": records["pil"], "b": iis_hf.IISResult.from_dict(scored["pil"].to_dict())})


def test_an_old_record_reads_as_unknown_and_is_refused_beside_a_known_one(scored):
    new = scored["pil"].to_dict()
    old = json.loads(json.dumps(new))
    del old["settings"]["environment"]  # as every record before the backend was recorded
    read = iis_hf.IISResult.from_dict(old)
    assert recorded_backend(read.settings) == UNKNOWN_BACKEND == comparable_view(read)[BACKEND]
    with pytest.raises(ValueError) as refused:
        check_comparable({"old": read, "new": iis_hf.IISResult.from_dict(new)})
    message = str(refused.value)
    assert "\n" not in message and "the record of old does not say which image-processor backend" in message
    assert "re-score it with this version of iis-hf" in message
    # two records that both do not say it rank together, as they did before
    check_comparable({"a": read, "b": iis_hf.IISResult.from_dict(old)})


def test_a_cards_backend_is_read_and_compared_after_scoring(scored, saved_dataset, tmp_path):
    from huggingface_hub import ModelCard, ModelCardData

    folder = tmp_path / "published"
    folder.mkdir()
    result = scored["torchvision"]
    entries = eval_results(result, None, saved_dataset, None, result.settings["data"]["eval_split"])
    ModelCard(f"---\n{ModelCardData(model_name='p', eval_results=entries).to_yaml()}\n---\n").save(
        folder / "README.md"
    )
    card = read_card_result(folder, saved_dataset)
    assert recorded_backend(card.settings) == "torchvision"
    # before scoring the backends of the models to score are not known: not refused yet
    check_comparable(
        {"card": card, "the models to score": expected_result(fast_config(), result.settings["data"])}
    )
    with pytest.raises(ValueError, match=r"'torchvision' \(card\) vs 'pil' \(fresh\)"):
        check_comparable({"card": card, "fresh": scored["pil"]})


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
