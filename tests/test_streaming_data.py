"""Data the way users hold it: a `datasets` stream and folders of parquet shards score as a `Dataset`.

An `IterableDataset` passed to the Python API failed with ``'IterableColumn' object has no attribute
'null_count'``, and a folder of parquet shards was always read as `imagefolder` ("Instruction 'train'
corresponds to no data").
"""

from __future__ import annotations

import warnings

import pytest
from conftest import build_tiny_model, make_image_dataset, tiny_image_processor
from datasets import Dataset, DatasetDict, IterableDataset

from iis_hf import extract_features, score_model
from iis_hf.config import ConceptsConfig, HeadsConfig, ScoringConfig
from iis_hf.data import as_map_dataset, load_image_dataset, load_scoring_splits


def config() -> ScoringConfig:
    return ScoringConfig(
        concepts=ConceptsConfig(num_concepts=8, images_per_class=2),
        heads=HeadsConfig(epochs=3, sparsity_ratios=[0.0, 0.5, 0.9]),
        progress=False,
    )


@pytest.fixture(scope="module")
def splits():
    return make_image_dataset(num_classes=3, per_class=8), make_image_dataset(
        num_classes=3, per_class=4, seed=1
    )


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("vit", num_labels=3)


def score(model, train, evaluation):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the budget warnings of a 3-epoch run
        return score_model(model, train, evaluation, config(), image_processor=tiny_image_processor())


def test_an_iterable_dataset_scores_as_the_same_rows_read_as_a_dataset(model, splits):
    train, evaluation = splits
    streamed = score(model, train.to_iterable_dataset(num_shards=2), evaluation.to_iterable_dataset())
    plain = score(model, train, evaluation)
    assert streamed.iis == pytest.approx(plain.iis, abs=1e-9)
    assert streamed.accuracies == plain.accuracies


def test_the_first_rows_of_a_stream_and_a_seeded_shuffle_buffer(model, splits):
    train, _ = splits
    taken = as_map_dataset(train.to_iterable_dataset().take(10))
    assert isinstance(taken, Dataset) and len(taken) == 10
    assert taken.features == train.features  # the ClassLabel and the Image feature survive
    assert taken["label"] == train["label"][:10]
    shuffled = [
        as_map_dataset(train.to_iterable_dataset().shuffle(seed=3, buffer_size=8).take(10)) for _ in range(2)
    ]
    assert shuffled[0]["label"] == shuffled[1]["label"]  # seeded: the same rows every time
    assert shuffled[0]._fingerprint == shuffled[1]._fingerprint != taken._fingerprint
    features = extract_features(
        model, train.to_iterable_dataset().take(10), image_processor=tiny_image_processor(), progress=False
    )
    plain = extract_features(
        model, train.select(range(10)), image_processor=tiny_image_processor(), progress=False
    )
    assert (features.features == plain.features).all() and (features.labels == plain.labels).all()


@pytest.fixture(scope="module")
def parquet_folder(tmp_path_factory, splits):
    folder = tmp_path_factory.mktemp("parquet") / "colours"
    (folder / "data").mkdir(parents=True)
    splits[0].to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    splits[1].to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))
    return folder


def test_a_parquet_folder_is_read_by_its_own_builder_with_its_class_label(parquet_folder, splits):
    data = load_image_dataset(str(parquet_folder))
    assert isinstance(data, DatasetDict) and sorted(data) == ["test", "train"]
    assert data["train"].features == splits[0].features and len(data["train"]) == 24
    one = load_image_dataset(str(parquet_folder), data_files={"train": "data/train-*.parquet"}, split="train")
    assert isinstance(one, Dataset) and len(one) == 24
    stream = load_image_dataset(str(parquet_folder), streaming=True, max_samples=5)
    assert isinstance(stream["train"], IterableDataset)
    assert len(as_map_dataset(stream)["train"]) == 5


def test_a_parquet_folder_scores_as_the_same_rows_read_as_a_dataset(model, parquet_folder, splits):
    loaded = load_scoring_splits(str(parquet_folder))
    assert loaded.settings()["eval_split"] == "test"
    from_folder = score(model, loaded.train, loaded.eval)
    plain = score(model, *splits)
    assert from_folder.iis == pytest.approx(plain.iis, abs=1e-9)


def test_streamed_scoring_splits_take_the_first_rows_of_each_split(model, parquet_folder, splits):
    streamed = load_scoring_splits(
        str(parquet_folder), streaming=True, max_train_samples=12, max_eval_samples=6
    )
    assert len(streamed.train) == 12 and len(streamed.eval) == 6
    assert streamed.settings()["streaming"] is True
    assert streamed.train["label"] == splits[0]["label"][:12]
    result = score(model, streamed.train, streamed.eval)
    plain = score(model, splits[0].select(range(12)), splits[1].select(range(6)))
    assert result.iis == pytest.approx(plain.iis, abs=1e-9)


def test_an_image_folder_is_still_read_as_imagefolder(tmp_path, splits):
    for i, row in enumerate(splits[0].select(range(6, 10))):
        folder = tmp_path / f"class{row['label']}"
        folder.mkdir(exist_ok=True)
        row["image"].save(folder / f"{i}.png")
    data = load_image_dataset(str(tmp_path))
    assert data["train"].features["label"].names == ["class0", "class1"]


CLI_FAST = ["--epochs", "3", "--num-concepts", "8", "--images-per-class", "2", "--no-progress"]
CLI_FAST += ["--sparsity-ratios", "0", "0.5", "0.9"]


def cli_iis(tiny_models, dataset: str, out, *extra: str) -> float:
    """`iis-hf score` on `dataset`; the IIS its iis.json records."""
    import json

    from iis_hf.cli import main

    argv = ["score", "--model", tiny_models("vit", num_labels=3), "--dataset", dataset]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*argv, "--output-dir", str(out), *CLI_FAST, *extra]) == 0
    return json.loads((out / "iis.json").read_text())["iis"]


def test_the_command_line_reads_parquet_shards_streams_and_data_files(
    tiny_models, parquet_folder, splits, tmp_path
):
    """A parquet folder, its stream and its --data-files score as the same rows saved as a Dataset."""
    saved = tmp_path / "saved"
    DatasetDict(train=splits[0], test=splits[1]).save_to_disk(str(saved))
    plain = cli_iis(tiny_models, str(saved), tmp_path / "plain")
    assert cli_iis(tiny_models, str(parquet_folder), tmp_path / "parquet") == pytest.approx(plain, abs=1e-9)
    files = ["--data-files", "train=data/train-*.parquet", "test=data/test-*.parquet"]
    assert cli_iis(tiny_models, str(parquet_folder), tmp_path / "files", *files) == pytest.approx(
        plain, abs=1e-9
    )

    first = tmp_path / "first"
    DatasetDict(train=splits[0].select(range(18)), test=splits[1].select(range(12))).save_to_disk(str(first))
    streamed = cli_iis(
        tiny_models, str(parquet_folder), tmp_path / "streamed",
        "--streaming", "--max-train-samples", "18", "--max-eval-samples", "12",
    )  # fmt: skip
    assert streamed == pytest.approx(cli_iis(tiny_models, str(first), tmp_path / "first-out"), abs=1e-9)


def test_a_mixed_data_files_list_is_one_line(tiny_models, parquet_folder, tmp_path, capsys):
    from iis_hf.cli import main

    argv = ["score", "--model", tiny_models("vit", num_labels=3), "--dataset", str(parquet_folder)]
    code = main([*argv, "--output-dir", str(tmp_path / "o"), "--data-files", "train=a.parquet", "b.parquet"])
    assert code == 2
    assert "--data-files: give every value as SPLIT=GLOB, or none" in capsys.readouterr().err
