"""`iis-hf compare` and `iis_hf.compare_models`: several models, one dataset, one setting, a leaderboard."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch
from huggingface_hub import ModelCard, ModelCardData

import iis_hf
import iis_hf.compare
import iis_hf.features
from iis_hf import pipeline
from iis_hf.cli import main
from iis_hf.compare import parse_model_spec, read_card_result, settings_differences
from iis_hf.config import ConceptsConfig, ExtractionConfig, HeadsConfig, ScoringConfig
from iis_hf.data import load_scoring_splits
from iis_hf.model_card import eval_results

RATIOS = ["0", "0.5", "0.9"]
FAST = [
    "--epochs",
    "3",
    "--num-concepts",
    "20",
    "--images-per-class",
    "2",
    "--sparsity-ratios",
    *RATIOS,
    "--quiet",
]
OUTPUTS = ["iis_curves.png", "iis_vs_accuracy.png", "leaderboard.csv", "leaderboard.json", "leaderboard.md"]


def fast_config(**heads) -> ScoringConfig:
    return ScoringConfig(
        concepts=ConceptsConfig(num_concepts=20, images_per_class=2),
        heads=HeadsConfig(**{"epochs": 3, "sparsity_ratios": [float(r) for r in RATIOS], **heads}),
        progress=False,
    )


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory):
    from conftest import make_image_dataset

    path = tmp_path_factory.mktemp("data") / "colours"
    make_image_dataset(num_classes=3, per_class=8).save_to_disk(str(path))
    return str(path)


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def write_card(folder, result, dataset: str) -> str:
    """A model card whose model-index carries `result` as iis-hf's cards do (`iis_hf.model_card`)."""
    folder.mkdir(parents=True, exist_ok=True)
    split = result.settings["data"]["eval_split"]
    data = ModelCardData(
        model_name=folder.name, eval_results=eval_results(result, None, dataset, None, split)
    )
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {folder.name}\n").save(folder / "README.md")
    return str(folder)


def test_three_tiny_models_give_a_printed_leaderboard_files_and_the_scatter(
    tiny_models, saved_dataset, tmp_path, capsys
):
    models = {arch: tiny_models(arch) for arch in ("vit", "resnet", "convnext")}
    out_dir = tmp_path / "board"
    code, out, err = run_cli(
        ["compare", "--model", *(f"{name}={path}" for name, path in models.items()),
         "--dataset", saved_dataset, "--output-dir", str(out_dir), *FAST],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "rank" in out and "A0" in out and "A(0.9)" in out
    assert all(name in out for name in models)
    assert sorted(p.name for p in out_dir.iterdir()) == OUTPUTS
    assert (out_dir / "iis_vs_accuracy.png").read_bytes()[:4] == b"\x89PNG"

    board = json.loads((out_dir / "leaderboard.json").read_text())
    rows = board["models"]
    assert sorted(r["name"] for r in rows) == sorted(models)
    scores = [r["iis"] for r in rows]
    assert scores == sorted(scores, reverse=True) and [r["rank"] for r in rows] == [1, 2, 3]
    assert board["settings"]["concepts: kind"] == "prototype-patches" and board["settings"]["ratio grid"] == [
        0.0,
        0.5,
        0.9,
    ]
    table = list(csv.DictReader(io.StringIO((out_dir / "leaderboard.csv").read_text())))
    assert [r["model"] for r in table] == [r["name"] for r in rows]
    assert {"iis", "iis_ci_low", "iis_ci_high", "accuracy_0.9"} <= set(table[0])
    assert "| rank | model |" in (out_dir / "leaderboard.md").read_text()

    # One pass over the images for all three gives each model the score it gets alone.
    splits = load_scoring_splits(saved_dataset)
    alone = iis_hf.score_model(models["resnet"], splits.train, splits.eval, fast_config())
    assert abs(next(r["iis"] for r in rows if r["name"] == "resnet") - alone.iis) <= 1e-6


def test_several_models_decode_each_image_once_and_match_one_by_one(tiny_models, monkeypatch):
    from conftest import make_image_dataset

    import iis_hf.features.sources as sources

    dataset = make_image_dataset(num_classes=3, per_class=6)
    paths = [tiny_models(arch) for arch in ("vit", "resnet", "convnext")]
    alone = [iis_hf.extract_features(p, dataset, progress=False).features for p in paths]
    calls = []
    decode = sources.load_image
    monkeypatch.setattr(sources, "load_image", lambda *a, **k: calls.append(1) or decode(*a, **k))
    together = iis_hf.features.extract_features_of_models(paths, dataset, batch_size=5, progress=False)
    # every row once, plus row 0 read twice more (checked up front, and the widths' first batch)
    assert len(calls) <= len(dataset) + 2, len(calls)
    for mine, theirs in zip(together, alone):
        torch.testing.assert_close(mine.features, theirs)


def test_a_model_cards_iis_joins_the_leaderboard(tiny_models, saved_dataset, tmp_path, capsys):
    splits = load_scoring_splits(saved_dataset)
    board = iis_hf.compare_models(
        {"vit": tiny_models("vit")}, splits.train, splits.eval, fast_config(), data_settings=splits.settings()
    )
    published = board.entries[0].result
    card = write_card(tmp_path / "published-vit", published, saved_dataset)

    read = read_card_result(card, saved_dataset)
    assert read.iis == pytest.approx(published.iis) and read.accuracies == pytest.approx(published.accuracies)
    assert read.uncertainty["ci"] == pytest.approx(published.uncertainty["ci"])

    out_dir = tmp_path / "board"
    code, out, err = run_cli(
        ["compare", "--model", f"resnet={tiny_models('resnet')}", f"theirs=card:{card}",
         "--dataset", saved_dataset, "--output-dir", str(out_dir), *FAST],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads((out_dir / "leaderboard.json").read_text())["models"]}
    assert rows["theirs"]["source"] == "card" and rows["resnet"]["source"] == "scored"
    assert rows["theirs"]["iis"] == pytest.approx(published.iis)
    assert rows["theirs"]["location"] == f"card:{card}"
    assert "theirs" in out and "card" in out
    assert (out_dir / "iis_vs_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_scores_measured_with_other_settings_are_refused_before_any_scoring(
    tiny_models, saved_dataset, tmp_path, capsys, monkeypatch
):
    splits = load_scoring_splits(saved_dataset)
    result = iis_hf.score_model(tiny_models("vit"), splits.train, splits.eval, fast_config(epochs=5))
    result.settings["data"].update(splits.settings())
    card = write_card(tmp_path / "five-epochs", result, saved_dataset)

    def must_not_run(*args, **kwargs):
        raise AssertionError("scored although the card's settings differ")

    monkeypatch.setattr(pipeline, "score_models", must_not_run)
    capsys.readouterr()
    out_dir = tmp_path / "board"
    code, _out, err = run_cli(
        ["compare", "--model", tiny_models("resnet"), f"card:{card}", "--dataset", saved_dataset,
         "--output-dir", str(out_dir), *FAST],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert err.count("\n") == 1 and "different settings" in err
    assert "heads recipe: epochs: 5" in err and "3 (the models to score)" in err
    assert not out_dir.exists()


def test_every_differing_setting_is_named():
    base = iis_hf.IISResult(
        iis=0.5,
        standard_accuracy=0.9,
        accuracies=[0.9, 0.4],
        sparsity_ratios=[0.0, 0.9],
        settings={
            # complete records, as this version writes them: compare refuses one that lacks a setting
            "heads": HeadsConfig(sparsity_ratios=[0.0, 0.9], epochs=30, learning_rate=0.01).recorded(),
            "concepts": {
                "kind": "prototype-patches",
                "num_concepts": 200,
                "fingerprint": "a",
                "parts": "patches",
            },
            "extraction": ExtractionConfig().recorded(),
            "data": {"dataset": "/data/cifar10", "eval_split": "test", "num_eval": 100},
            "seed": 0,
        },
    )

    def variant(**changes):
        result = iis_hf.IISResult.from_dict(
            {**base.to_dict(), "settings": json.loads(json.dumps(base.settings))}
        )
        for path, value in changes.items():
            part, key = path.split("__")
            if part == "result":
                setattr(result, key, value)
            else:
                result.settings[part][key] = value
        return result

    # another bank fingerprint (every model has its own bank) and another seed are comparable
    assert settings_differences({"a": base, "b": variant(concepts__fingerprint="b", **{})}) == []
    assert settings_differences({"a": base, "b": iis_hf.IISResult.from_dict({**base.to_dict(), "settings": {**base.settings, "seed": 1}})}) == []  # fmt: skip
    cases = {
        "ratio grid": variant(result__sparsity_ratios=[0.0, 0.5]),
        "protocol": variant(result__protocol="paper"),
        "heads recipe: learning_rate": variant(heads__learning_rate=0.001),
        "concepts: number": variant(concepts__num_concepts=50),
        "concepts: parts": variant(concepts__parts="segments"),
        "extraction: precision": variant(extraction__precision="bf16"),
        "data: dataset": variant(data__dataset="/elsewhere/cifar100"),
        "data: eval_split": variant(data__eval_split="validation"),
    }
    for setting, other in cases.items():
        differences = settings_differences({"a": base, "b": other})
        assert len(differences) == 1 and differences[0].startswith(setting + ":"), (setting, differences)
    with pytest.raises(ValueError, match="concepts: number: 200 \\(a\\) vs 50 \\(b\\)"):
        iis_hf.compare.Leaderboard.from_results({"a": base, "b": cases["concepts: number"]})


def test_model_specs_names_and_cards():
    assert parse_model_spec("trained=out/model").name == "trained"
    spec = parse_model_spec("theirs=card:me/vit-iis")
    assert (spec.name, spec.target, spec.from_card) == ("theirs", "me/vit-iis", True)
    assert parse_model_spec("google/vit-base-patch16-224").name == "google/vit-base-patch16-224"
    with pytest.raises(ValueError, match="two models are named"):
        iis_hf.compare_models(["a=x", "a=y"])
    with pytest.raises(ValueError, match="need train and eval images"):
        iis_hf.compare_models(["google/vit-base-patch16-224", "x"])


def test_cards_alone_are_ranked_and_an_existing_output_needs_overwrite(
    tiny_models, saved_dataset, tmp_path, capsys
):
    splits = load_scoring_splits(saved_dataset)
    result = iis_hf.score_model(tiny_models("vit"), splits.train, splits.eval, fast_config())
    result.settings["data"].update(splits.settings())
    better = iis_hf.IISResult.from_dict({**result.to_dict(), "iis": result.iis + 0.1})
    cards = [write_card(tmp_path / name, r, saved_dataset) for name, r in (("a", result), ("b", better))]
    out_dir = tmp_path / "board"
    command = ["compare", "--model", *(f"card:{c}" for c in cards), "--output-dir", str(out_dir), "--quiet"]
    capsys.readouterr()
    code, out, err = run_cli(command, capsys)
    assert code == 0, err
    rows = json.loads((out_dir / "leaderboard.json").read_text())["models"]
    assert [r["name"] for r in rows] == [cards[1], cards[0]] and {r["source"] for r in rows} == {"card"}
    assert "iis_curves.png" in out  # the cards carry their curves

    code, _out, err = run_cli(command, capsys)
    assert code == 2 and "pass --overwrite" in err
    assert run_cli([*command, "--overwrite"], capsys)[0] == 0
    (out_dir / "notes.txt").write_text("mine")
    code, _out, err = run_cli([*command, "--overwrite"], capsys)
    assert code == 2 and "did not write" in err and (out_dir / "notes.txt").read_text() == "mine"
