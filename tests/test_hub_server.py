"""push_to_hub for real, against the loopback fake Hub of hub_server.py (the Hub is out of reach here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model, tiny_image_processor
from hub_server import fake_hub, fake_hub_fixture  # noqa: F401  (fake_hub_fixture provides `hub`)

from iis_hf import ConceptBank


def write_folder(root: Path) -> dict[str, bytes]:
    files = {
        "notes.txt": b"hello hub\n",
        "weights/model.safetensors": os.urandom(64 * 1024),  # .safetensors would be LFS on the Hub
        "weights/config.json": json.dumps({"a": 1}).encode(),
        "empty.bin": b"",
    }
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    (root / "debug.log").write_text("not for the Hub")
    (root / "weights" / "trace.log").write_text("nor this")
    return files


@pytest.mark.parametrize("disable_xet", [False, True], ids=["xet-pipeline", "create-commit"])
def test_upload_folder_round_trip(tmp_path, disable_xet):
    from huggingface_hub import HfApi, hf_hub_download

    files = write_folder(tmp_path)
    with fake_hub(disable_xet=disable_xet) as hub:
        api = HfApi()
        url = api.create_repo("user/repo", exist_ok=True)
        assert url.repo_id == "user/repo" and url.startswith(hub.url)
        api.create_repo("user/repo", exist_ok=True)  # the 409 is absorbed
        info = api.upload_folder(
            repo_id="user/repo", folder_path=tmp_path, commit_message="Add files", ignore_patterns=["*.log"]
        )
        assert info.oid == hub.commits("user/repo")[-1]["oid"]

        assert hub.files("user/repo") == {".gitattributes": hub.files("user/repo")[".gitattributes"], **files}
        commits = hub.commits("user/repo")
        assert [c["message"] for c in commits] == ["initial commit", "Add files"]
        assert sorted(commits[-1]["files"]) == sorted(files)

        for path, data in files.items():
            folder, _, name = path.rpartition("/")
            local = hf_hub_download("user/repo", name, subfolder=folder or None)
            assert Path(local).read_bytes() == data
        first = hub.commits("user/repo")[-1]["oid"]
        pinned = hf_hub_download("user/repo", "notes.txt", revision=first)
        assert Path(pinned).read_bytes() == files["notes.txt"]

        # Uploading again: unchanged files are skipped, a changed one makes a one-file commit.
        (tmp_path / "notes.txt").write_bytes(b"changed\n")
        api.upload_folder(
            repo_id="user/repo", folder_path=tmp_path, commit_message="Edit", ignore_patterns="*.log"
        )
        assert hub.commits("user/repo")[-1]["files"] == ["notes.txt"]
        assert Path(hf_hub_download("user/repo", "notes.txt")).read_bytes() == b"changed\n"
        assert hub.unhandled == []


def test_client_errors_and_restore(tmp_path):
    from huggingface_hub import HfApi, constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError

    before = (
        constants.ENDPOINT,
        constants.HF_HUB_OFFLINE,
        constants.HF_HUB_CACHE,
        os.environ.get("HF_TOKEN"),
    )
    with fake_hub() as hub:
        assert hub.url == constants.ENDPOINT and not constants.HF_HUB_OFFLINE
        HfApi().create_repo("user/repo", private=True)
        with pytest.raises(RemoteEntryNotFoundError):
            hf_hub_download("user/repo", "missing.txt")
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download("user/other", "README.md")
        with pytest.raises(RepositoryNotFoundError):  # private: invisible without a token
            HfApi(token=False).model_info("user/repo")
        HfApi().create_repo("user/public")
        with pytest.raises(HfHubHTTPError) as err:  # writes need a token
            HfApi(token=False).upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="user/public")
        assert err.value.response.status_code == 401
        assert set(hub.files("user/public")) == {".gitattributes"}
    assert (
        constants.ENDPOINT,
        constants.HF_HUB_OFFLINE,
        constants.HF_HUB_CACHE,
        os.environ.get("HF_TOKEN"),
    ) == before


def test_concept_bank_round_trip(hub):
    bank = ConceptBank(vectors=torch.randn(6, 5), names=[f"concept {i}" for i in range(6)])
    bank.push_to_hub("user/bank")

    files = hub.files("user/bank")
    assert {"README.md", "concept_bank.json", "concept_bank.safetensors"} <= set(files)
    card = files["README.md"].decode()
    assert card.startswith("---\n") and "library_name: iis-hf" in card
    assert 'ConceptBank.from_pretrained("user/bank")' in card
    assert hub.commits("user/bank")[-1]["message"] == "Upload concept bank"

    loaded = ConceptBank.from_pretrained("user/bank")
    assert torch.equal(loaded.vectors, bank.vectors)
    assert loaded.names == bank.names
    assert hub.unhandled == []


def test_transformers_model_push_and_load(hub):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = build_tiny_model("vit")
    model.push_to_hub("user/tiny")
    tiny_image_processor().push_to_hub("user/tiny")
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(
        hub.files("user/tiny")
    )

    loaded = AutoModelForImageClassification.from_pretrained("user/tiny")
    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert AutoImageProcessor.from_pretrained("user/tiny").size == {"height": 32, "width": 32}
    assert hub.unhandled == []


def test_trainer_pushes_during_and_after_training(hub, tmp_path):
    from transformers import Trainer, TrainingArguments

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 32, 32, generator=generator)
    data = [{"pixel_values": images[i], "labels": torch.tensor(i % 3)} for i in range(4)]
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=2,
        save_strategy="steps",
        save_steps=1,
        push_to_hub=True,
        hub_model_id="user/trained",
        hub_strategy="every_save",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=build_tiny_model("vit"), args=args, train_dataset=data)
    trainer.train()
    trainer.push_to_hub()

    messages = [c["message"] for c in hub.commits("user/trained")]
    assert any(m.startswith("Training in progress, step") for m in messages), messages
    assert messages[-1] == "End of training"
    files = hub.files("user/trained")
    assert {"README.md", "model.safetensors", "config.json"} <= set(files)
    assert not any(p.startswith("checkpoint-") for p in files)  # Trainer's ignore_patterns reached the Hub
    assert files["model.safetensors"] == (tmp_path / "out" / "model.safetensors").read_bytes()
    assert "generated_from_trainer" in files["README.md"].decode()
    assert hub.unhandled == []


def test_subprocess_mode(tmp_path):
    code = (
        "from huggingface_hub import HfApi, hf_hub_download\n"
        "api = HfApi()\n"
        "api.create_repo('user/sub', exist_ok=True)\n"
        "api.upload_file(path_or_fileobj=b'from a child', path_in_repo='a.txt', repo_id='user/sub')\n"
        "print(open(hf_hub_download('user/sub', 'a.txt'), 'rb').read().decode())\n"
    )
    with fake_hub(patch=False) as hub:
        from huggingface_hub import constants

        assert hub.url != constants.ENDPOINT  # patch=False leaves this process alone
        result = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **hub.env},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == "from a child"
        assert hub.files("user/sub")["a.txt"] == b"from a child"
