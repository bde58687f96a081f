"""`iis_hf.finetune`, `iis-hf finetune` and examples/run_image_classification_iis.py, offline."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    IMAGE_SIZE,
    cpu_subprocess_env,
    make_image_dataset,
    tiny_image_processor,
    torchrun_two_processes,
)
from safetensors.torch import load_file

from iis_hf import cli
from iis_hf.training import finetune
from iis_hf.training.transforms import ImageClassificationTransform, model_input_size, random_resized_crop

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "run_image_classification_iis.py"
CLASS_NAMES = ("red", "green", "blue", "yellow")
# small and fast: 20 concepts from 2 images per class, 2 epochs of eval-time head training
FAST = [
    "--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--seed", "0",
    "--iis_num_concepts", "20", "--iis_images_per_class", "2", "--iis_eval_epochs", "2",
    "--iis_sparsity_ratios", "0.9",
]  # fmt: skip
TRAIN_EVAL = ["--do_train", "--do_eval", "--num_train_epochs", "1", "--per_device_train_batch_size", "8"]
OUTPUT_FILES = (
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "iis_head.safetensors",
    "iis_config.json",
    "concept_bank.safetensors",
    "concept_bank.json",
    "iis.json",
    "iis_curve.png",
    "README.md",
    "eval_results.json",
    "train_results.json",
    "trainer_state.json",
)


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory):
    """24 images of 3 classes written with `save_to_disk` (no validation split)."""
    path = tmp_path_factory.mktemp("data") / "saved"
    make_image_dataset(num_classes=3, per_class=8).save_to_disk(str(path))
    return str(path)


def write_image_folder(root: Path, num_classes: int, per_class: int, seed: int = 0) -> Path:
    """`root/<class name>/<n>.png`, the imagefolder layout."""
    data = make_image_dataset(num_classes=num_classes, per_class=per_class, seed=seed)
    for i, row in enumerate(data):
        folder = root / CLASS_NAMES[row["label"]]
        folder.mkdir(parents=True, exist_ok=True)
        row["image"].save(folder / f"{i}.png")
    return root


def check_output_folder(output_dir: Path) -> dict:
    missing = [name for name in OUTPUT_FILES if not (output_dir / name).is_file()]
    assert not missing, f"missing {missing}; found {sorted(p.name for p in output_dir.iterdir())}"
    assert not list(output_dir.glob("*.bin")) and not list(output_dir.glob("*.pt")), "a pickle was written"
    card = (output_dir / "README.md").read_text()
    metadata = card.split("---")[1]
    assert "type: iis" in metadata and "type: accuracy" in metadata, metadata
    assert "iis-hf" in metadata and "image-classification" in metadata
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert 0.0 <= results["eval_accuracy"] <= 1.0 and 0.0 <= results["eval_iis"] <= 1.0, results
    assert json.loads((output_dir / "iis.json").read_text())["iis"] == pytest.approx(results["eval_iis"])
    return results


# ---------------------------------------------------------------- one process


def test_save_to_disk_dataset_trains_evaluates_and_writes_everything(tmp_path, tiny_models, saved_dataset):
    model_dir = tiny_models("vit")
    output_dir = tmp_path / "out"
    args = [
        "--model_name_or_path",
        model_dir,
        "--dataset_name",
        saved_dataset,
        "--output_dir",
        str(output_dir),
    ]
    metrics = finetune.main([*args, *TRAIN_EVAL, *FAST])
    results = check_output_folder(output_dir)
    assert metrics["eval_iis"] == results["eval_iis"] and metrics["train_samples"] == 21  # 24 - 15 % held out
    assert results["eval_samples"] == 3
    # the saved (refitted) head's accuracy and the trained head's, in train_results.json and the card
    saved = json.loads((output_dir / "train_results.json").read_text())
    assert (
        0.0 <= saved["iis_head_accuracy_0.9"] <= 1.0 and 0.0 <= saved["iis_trained_head_accuracy_0.9"] <= 1.0
    )
    assert f"{saved['iis_head_accuracy_0.9']:.4f}" in (output_dir / "README.md").read_text()
    # 21 images in batches of 8: 3 steps in one process
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 3
    config = json.loads((output_dir / "config.json").read_text())
    assert len(config["id2label"]) == 3
    # the save_to_disk folder is left as it was (the split keeps its indices in memory)
    assert sorted(p.name for p in Path(saved_dataset).iterdir() if p.name.startswith("cache-")) == []
    # the backbone loads as a plain transformers model, and it moved away from the starting weights
    start, end = load_file(Path(model_dir) / "model.safetensors"), load_file(output_dir / "model.safetensors")
    assert start.keys() == end.keys()
    assert any(not torch.equal(start[k], end[k]) for k in start)


def test_cli_with_train_and_validation_image_folders_and_a_new_head(tmp_path, tiny_models, capsys):
    """`iis-hf finetune` in-process, imagefolder --train_dir/--validation_dir, 4 classes on a 3-class model."""
    train_dir = write_image_folder(tmp_path / "train", num_classes=4, per_class=6)
    validation_dir = write_image_folder(tmp_path / "val", num_classes=4, per_class=2, seed=1)
    output_dir = tmp_path / "out"
    common = ["finetune", "--model_name_or_path", tiny_models("vit"), "--train_dir", str(train_dir)]
    common += ["--validation_dir", str(validation_dir), "--cache_dir", str(tmp_path / "cache")]
    code = cli.main([*common, "--output_dir", str(output_dir), *TRAIN_EVAL, *FAST])
    assert code == 2 and "--ignore_mismatched_sizes" in capsys.readouterr().err
    assert not (output_dir / "model.safetensors").exists()

    code = cli.main(
        [*common, "--ignore_mismatched_sizes", "--output_dir", str(output_dir), *TRAIN_EVAL, *FAST]
    )
    assert code == 0
    results = check_output_folder(output_dir)
    assert results["eval_samples"] == 8  # the validation folder, not a part of train
    config = json.loads((output_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "blue", "1": "green", "2": "red", "3": "yellow"}
    assert config["label2id"] == {"blue": 0, "green": 1, "red": 2, "yellow": 3}
    head = load_file(output_dir / "model.safetensors")["classifier.weight"]
    assert head.shape == (4, 32)


def test_json_config_and_resume_from_the_last_checkpoint(tmp_path, tiny_models, saved_dataset, monkeypatch):
    output_dir = tmp_path / "out"
    config = {
        "model_name_or_path": tiny_models("vit"),
        "dataset_name": saved_dataset,
        "output_dir": str(output_dir),
        "do_train": True,
        "max_steps": 2,
        "save_steps": 1,
        "per_device_train_batch_size": 4,
        "use_cpu": True,
        "report_to": "none",
        "disable_tqdm": True,
        "iis_num_concepts": 20,
        "iis_images_per_class": 2,
    }
    path = tmp_path / "args.json"
    path.write_text(json.dumps(config))
    resumed_from = []
    original_train = finetune.IISTrainer.train

    def spy(self, resume_from_checkpoint=None, **kwargs):
        resumed_from.append(resume_from_checkpoint)
        return original_train(self, resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    monkeypatch.setattr(finetune.IISTrainer, "train", spy)
    assert cli.main(["finetune", str(path)]) == 0
    assert (output_dir / "checkpoint-2" / "iis_head.safetensors").is_file()
    assert (output_dir / "iis_head.safetensors").is_file() and not (output_dir / "eval_results.json").exists()

    path.write_text(json.dumps({**config, "max_steps": 3}))
    assert cli.main(["finetune", str(path)]) == 0
    assert resumed_from == [None, str(output_dir / "checkpoint-2")]
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 3


def test_help_shows_the_hf_argument_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["finetune", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: iis-hf finetune")
    for option in (
        "--model_name_or_path",
        "--dataset_name",
        "--train_val_split",
        "--iis_weight",
        "--do_train",
    ):
        assert option in out
    assert "--trust_remote_code" not in out


# ---------------------------------------------------------------- bad input


def test_no_dataset_is_exit_code_2_with_one_line(capsys):
    assert cli.main(["finetune", "--do_train", "--output_dir", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no dataset given" in err and "--dataset_name" in err
    with pytest.raises(ValueError, match="no dataset given"):
        finetune.main(["--do_train"])


def test_image_folder_without_labels_is_rejected(tmp_path, tiny_models, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, row in enumerate(make_image_dataset(num_classes=2, per_class=3)):
        row["image"].save(flat / f"{i}.png")
    args = ["--model_name_or_path", tiny_models("vit"), "--dataset_name", str(flat), "--do_train"]
    args += ["--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"), "--use_cpu"]
    assert cli.main(["finetune", *args]) == 2
    assert "no label column" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--image_column_name", "picture"], "--image_column_name 'picture' is not a column"),
        (["--label_column_name", "target"], "--label_column_name 'target' is not a column"),
        (["--train_val_split", "0", "--do_eval"], "--do_eval needs a validation split"),
        (["--train_val_split", "1.5"], "--train_val_split must be in"),
        (["--train_dir", "somewhere"], "not both"),
    ],
)
def test_bad_arguments_raise_value_errors(tmp_path, tiny_models, saved_dataset, extra, message):
    args = ["--model_name_or_path", tiny_models("vit"), "--dataset_name", saved_dataset, "--use_cpu"]
    with pytest.raises(ValueError, match=message):
        finetune.main([*args, "--output_dir", str(tmp_path / "out"), *extra])


def test_missing_model_and_dataset_are_value_errors(tmp_path, tiny_models, saved_dataset):
    with pytest.raises(ValueError, match="does not exist"):
        finetune.main(["--dataset_name", str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="cannot load"):
        finetune.main(
            ["--model_name_or_path", str(tmp_path / "no-model"), "--dataset_name", saved_dataset, "--use_cpu"]
        )


# ---------------------------------------------------------------- labels, splits and images


def test_string_labels_become_one_class_label_for_all_splits():
    from datasets import ClassLabel, Dataset, DatasetDict

    data = DatasetDict(
        train=Dataset.from_dict({"label": ["dog", "cat", "dog"]}),
        validation=Dataset.from_dict({"label": ["emu", "cat"]}),
    )
    encoded = finetune.encode_labels(data, "label")
    for split in encoded.values():
        assert split.features["label"] == ClassLabel(names=["cat", "dog", "emu"])
    assert encoded["train"]["label"] == [1, 0, 1] and encoded["validation"]["label"] == [2, 0]
    with pytest.raises(ValueError, match=r"integers 0\.\.K-1"):
        finetune.encode_labels(DatasetDict(train=Dataset.from_dict({"label": [3, 7]})), "label")
    eleven = finetune.encode_labels(DatasetDict(train=Dataset.from_dict({"label": list(range(11))})), "label")
    assert eleven["train"].features["label"].names[10] == "10" and eleven["train"]["label"] == list(range(11))


def test_model_input_size_reads_every_kind_of_size():
    from transformers import ConvNextImageProcessor, DeiTImageProcessor, ViTImageProcessor

    assert model_input_size(ViTImageProcessor(size={"height": 24, "width": 40})) == (24, 40)
    assert model_input_size(ConvNextImageProcessor(size={"shortest_edge": 64})) == (64, 64)
    deit = DeiTImageProcessor(size={"height": 48, "width": 48}, crop_size={"height": 40, "width": 36})
    assert model_input_size(deit) == (40, 36)  # what the model sees after the centre crop
    with pytest.raises(ValueError, match="cannot tell the input size"):
        model_input_size(ViTImageProcessor(size={"longest_edge": 64}))


def test_random_resized_crop_is_seeded_and_sized():
    import random

    image = make_image_dataset(num_classes=1, per_class=1, size=50)[0]["image"]
    crops = [random_resized_crop(image, (24, 40), random.Random(seed)) for seed in (0, 0, 1)]
    assert all(crop.size == (40, 24) for crop in crops)
    assert np.array_equal(np.asarray(crops[0]), np.asarray(crops[1]))
    assert not np.array_equal(np.asarray(crops[0]), np.asarray(crops[2]))
    full = random_resized_crop(image, (50, 50), random.Random(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert np.array_equal(np.asarray(full), np.asarray(image))


def test_transforms_augment_train_images_only():
    processor = tiny_image_processor()
    rows = make_image_dataset(num_classes=2, per_class=3)[:6]
    rows["image"][0] = rows["image"][0].convert("L")  # a grey image is converted to RGB

    def pixels(transform):
        out = transform({"image": list(rows["image"]), "label": list(rows["label"])})
        assert out["labels"] == rows["label"]
        return torch.stack(out["pixel_values"])

    plain = pixels(ImageClassificationTransform(processor, "image", "label"))
    rgb = [image.convert("RGB") for image in rows["image"]]
    assert torch.equal(plain, processor(images=rgb, return_tensors="pt")["pixel_values"])
    augmented = pixels(ImageClassificationTransform(processor, "image", "label", augment=True, seed=0))
    assert augmented.shape == plain.shape == (6, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert not torch.equal(augmented, plain)
    assert torch.equal(augmented, pixels(ImageClassificationTransform(processor, "image", "label", True, 0)))
    assert not torch.equal(
        augmented, pixels(ImageClassificationTransform(processor, "image", "label", True, 1))
    )
    # values stay in the processor's normalised range: [-1, 1] for mean = std = 0.5
    assert augmented.min() >= -1.0 and augmented.max() <= 1.0


# ---------------------------------------------------------------- two processes


def test_example_script_under_torchrun_with_two_processes(tmp_path, tiny_models, saved_dataset):
    """torchrun, 2 CPU processes (gloo): the example script trains, evaluates and writes everything."""
    model_dir, output_dir = tiny_models("vit"), tmp_path / "out"
    command = torchrun_two_processes(
        str(EXAMPLE), "--model_name_or_path", model_dir, "--dataset_name", saved_dataset,
        "--output_dir", str(output_dir), "--do_train", "--do_eval", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "4", *FAST,
    )  # fmt: skip
    proc = subprocess.run(
        command, check=False, env=cpu_subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = check_output_folder(output_dir)
    assert results["eval_samples"] == 3
    # 21 training images, 4 per process and step, 2 processes: 3 steps (one process would take 6)
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 3
    start, end = load_file(Path(model_dir) / "model.safetensors"), load_file(output_dir / "model.safetensors")
    assert any(not torch.equal(start[k], end[k]) for k in start)
