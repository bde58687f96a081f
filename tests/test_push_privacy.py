"""Nothing private leaves the machine (issue 29, item 6): whatever iis-hf pushes names a local model,
dataset or concept bank by its folder's base name, never by the absolute path it was read from.

Every push path is taken against the loopback Hub (`tests/hub_server.py`) with the model and the data
in a folder whose path holds a distinctive name; every uploaded file is then read back and searched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_image_dataset, save_tiny_model, tiny_image_processor
from hub_server import fake_hub_fixture  # noqa: F401  (the `hub` fixture)
from huggingface_hub import HfApi
from trainer_utils import make_args, splits
from transformers import AutoModelForImageClassification

from iis_hf import IISTrainer
from iis_hf.cli import main
from iis_hf.demo import image_classification_collator

SECRET = "secret-user-dir"  # a directory name that must not reach any pushed file
MODEL = "tiny-vit"  # the local model folder's base name: what the records name it by
DATASET = "colours"


@pytest.fixture
def local(tmp_path) -> dict[str, Path]:
    """A model and a dataset saved under tmp_path/secret-user-dir, as a user's home folder holds them."""
    root = tmp_path / SECRET
    model = Path(save_tiny_model(root / MODEL))
    data = root / DATASET
    make_image_dataset(per_class=8).save_to_disk(str(data))
    return {"root": root, "model": model, "data": data}


def assert_nothing_private(hub, repo_id: str, tmp_path: Path) -> dict[str, bytes]:
    """Every file of `repo_id` read back from the fake Hub; none names the machine's folders."""
    files = hub.files(repo_id)
    assert files, repo_id
    for name, data in files.items():
        for private in (SECRET, str(tmp_path)):
            at = data.find(private.encode())
            assert at < 0, f"{repo_id}/{name} holds {private!r}: {data[max(0, at - 120) : at + 60]!r}"
    return files


def test_trainer_model_and_bank_pushes_name_local_folders_by_base_name(hub, local, tmp_path):
    train, evaluation = splits()
    processor = tiny_image_processor()
    args = make_args(
        local["root"] / "run",
        max_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        metric_for_best_model="loss",  # trainer_state.json then names the best checkpoint's folder
        push_to_hub=True,
        hub_model_id="user/private-run",
    )
    trainer = IISTrainer(  # no bank given: prototypes embedded by the local model, which they record
        model=AutoModelForImageClassification.from_pretrained(local["model"]),
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=processor,
        data_collator=image_classification_collator(processor),
    )
    trainer.train()
    trainer.evaluate()
    trainer.save_state()
    assert trainer.state.best_model_checkpoint is not None
    trainer.push_to_hub(finetuned_from=str(local["model"]), dataset=str(local["data"]))
    model = trainer.iis_model
    model.push_to_hub(
        "user/private-model",
        model_card_kwargs={
            "result": trainer.last_iis_result,
            "base_model": str(local["model"]),
            "dataset": str(local["data"]),
        },
    )
    model.concept_bank.push_to_hub("user/private-bank")

    pushed = assert_nothing_private(hub, "user/private-run", tmp_path)
    for name in ("README.md", "iis.json", "iis_config.json", "concept_bank.json", "training_args.json"):
        assert name in pushed, name
    assert "trainer_state.json" in pushed
    assert json.loads(pushed["iis_config.json"])["base_model_name_or_path"] == MODEL
    assert json.loads(pushed["concept_bank.json"])["provenance"]["model"] == MODEL
    record = json.loads(pushed["iis.json"])
    assert record["settings"]["concepts"]["provenance"]["model"] == MODEL
    assert json.loads(pushed["training_args.json"])["output_dir"] == "run"
    assert json.loads(pushed["trainer_state.json"])["best_model_checkpoint"] == "checkpoint-2"
    card = pushed["README.md"].decode()
    assert f"a fine-tuned version of `{MODEL}` (a local checkpoint) on {DATASET}" in card
    assert "base_model:" not in card  # card metadata names a Hub model only
    assert f"model: {MODEL}" in card  # the bank's provenance in model-index

    model_files = assert_nothing_private(hub, "user/private-model", tmp_path)
    assert json.loads(model_files["iis_config.json"])["base_model_name_or_path"] == MODEL
    assert f"`{MODEL}` (a local checkpoint) on {DATASET}" in model_files["README.md"].decode()
    bank_files = assert_nothing_private(hub, "user/private-bank", tmp_path)
    assert json.loads(bank_files["concept_bank.json"])["provenance"]["model"] == MODEL
    assert hub.unhandled == []


def test_a_scored_folder_uploaded_as_it_is_names_no_local_path(hub, local, tmp_path, capsys):
    out = local["root"] / "scored"
    bank_args = ["--epochs", "2", "--num-concepts", "20", "--images-per-class", "2", "--no-progress"]
    common = ["score", "--model", str(local["model"]), "--dataset", str(local["data"]), *bank_args]
    assert main([*common, "--output-dir", str(out)]) == 0, capsys.readouterr().err
    # scoring again with that bank, given by its path, records the bank too
    again = local["root"] / "rescored"
    assert main([*common, "--output-dir", str(again), "--concept-bank", str(out / "concept_bank")]) == 0
    api = HfApi()
    for repo_id, folder in (("user/scored", out), ("user/rescored", again)):
        api.create_repo(repo_id)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder))
        files = assert_nothing_private(hub, repo_id, tmp_path)
        record = json.loads(files["iis.json"])
        assert record["metadata"]["model"] == MODEL and record["metadata"]["dataset"] == DATASET
        assert record["settings"]["data"]["dataset"] == DATASET
        assert json.loads(files["concept_bank/concept_bank.json"])["provenance"]["model"] == MODEL
    assert record["metadata"]["concept_bank"] == "concept_bank"
