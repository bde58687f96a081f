"""Messages that say what is wrong (one class; a damaged image before training)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from conftest import make_image_dataset

from iis_hf import cli
from iis_hf.data import image_folder_problem, load_scoring_splits

FAST = ["--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--do_train", "--num_train_epochs", "1"]


def image_folder(root: Path, classes: dict[str, int], seed: int = 0) -> Path:
    """`root/<folder>/<n>.png` for each folder (a class, or `split/class`) and its number of images."""
    data = make_image_dataset(num_classes=len(classes), per_class=max(classes.values()), seed=seed)
    for c, (folder, count) in enumerate(classes.items()):
        rows = [row for row in data if row["label"] == c][:count]
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i, row in enumerate(rows):
            row["image"].save(root / folder / f"{i}.png")
    return root


def test_one_class_in_split_folders_is_told_it_has_one_class(tmp_path):
    folder = image_folder(tmp_path / "data", {"train/A": 4, "validation/A": 2})
    message = image_folder_problem(str(folder))
    assert message is not None and "nested" not in message
    assert "holds one class only (A/)" in message and "at least 2 class folders" in message
    with pytest.raises(
        ValueError, match=r"holds one class only \(A/\) \(in its split folders train/, validation/\)"
    ):
        load_scoring_splits(str(folder))
    # the controls: class folders holding sub-folders are still nested; two classes in splits are fine
    nested = image_folder(tmp_path / "nested", {"A/photos": 2, "B/photos": 2})
    assert "has images in nested folders (e.g. A/photos/)" in image_folder_problem(str(nested))
    assert image_folder_problem(str(image_folder(tmp_path / "two", {"train/A": 2, "train/B": 2}))) is None
    flat = image_folder(tmp_path / "flat", {"train": 2, "validation": 2})
    assert "holds its images directly (in its split folders train/, validation/)" in image_folder_problem(
        str(flat)
    )


@pytest.mark.parametrize("layout", ["dataset_name", "train_dir"])
def test_finetune_on_one_class_says_so_and_leaves_no_folder(tmp_path, tiny_models, capsys, layout):
    if layout == "dataset_name":
        source = ["--dataset_name", str(image_folder(tmp_path / "data", {"train/A": 4, "validation/A": 2}))]
    else:
        source = ["--train_dir", str(image_folder(tmp_path / "train", {"A": 4}))]
    out = tmp_path / "out"
    argv = ["finetune", "--model_name_or_path", tiny_models("vit"), *source, "--output_dir", str(out)]
    capsys.readouterr()
    assert cli.main([*argv, "--cache_dir", str(tmp_path / "cache"), *FAST]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "holds one class only (A/)" in lines[0], err
    assert "no label column" not in err and "at least 2 class folders" in lines[0]
    assert not out.exists()


def test_finetune_decodes_every_image_before_training_and_leaves_no_folder(
    tmp_path, tiny_models, capsys, monkeypatch
):
    from iis_hf.training.trainer import IISTrainer

    def trained(*args, **kwargs):
        raise AssertionError("training started with a damaged image in the data")

    monkeypatch.setattr(IISTrainer, "train", trained)
    monkeypatch.setattr(IISTrainer, "__init__", trained)  # not even built
    data = image_folder(tmp_path / "data", {"red": 4, "green": 4})
    buffer = io.BytesIO()
    make_image_dataset(num_classes=1, per_class=1)[0]["image"].save(buffer, format="PNG")
    (data / "green" / "cut.png").write_bytes(buffer.getvalue()[:-200])  # truncated
    out = tmp_path / "new" / "out"
    argv = ["finetune", "--model_name_or_path", tiny_models("vit"), "--dataset_name", str(data)]
    argv += ["--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"), *FAST]
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "green/cut.png" in lines[0] and "is truncated or corrupt" in lines[0], err
    assert not out.exists()
