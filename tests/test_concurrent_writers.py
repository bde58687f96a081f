"""One run at a time writes an output folder, and a failed write names its file.

Two `iis-hf score` runs into one folder both exited 0 (--overwrite: one silently replaced the other's
outputs), or the second was refused only after all its work (a new folder). Now the second run is
refused before it loads anything, with exit code 2 and one line naming the folder.
"""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path

import pytest
import torch
from conftest import make_image_dataset
from safetensors import SafetensorError

import iis_hf.files
from iis_hf.cli import main
from iis_hf.files import exclusive_lock, save_safetensors_atomic, write_json_atomic
from iis_hf.outputs import OutputFolderBusy, lock_path, output_folder_lock


@pytest.fixture(scope="module")
def saved_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("writers") / "data"
    make_image_dataset(num_classes=3, per_class=6).save_to_disk(str(path))
    return str(path)


@pytest.fixture
def no_work(monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("the second run started its work")

    monkeypatch.setattr("iis_hf.pipeline.score_model", started)
    monkeypatch.setattr("iis_hf.features.load_vision_model", started)


@pytest.mark.parametrize("existing", [False, True], ids=["new folder", "--overwrite"])
def test_a_second_score_into_a_held_folder_is_refused_before_any_work(
    tmp_path, tiny_models, saved_data, capsys, no_work, existing
):
    out = tmp_path / "out"
    if existing:  # an earlier run's outputs, which --overwrite may replace
        out.mkdir()
        (out / "iis.json").write_text('{"earlier": true}')
    argv = ["score", "--model", tiny_models("resnet"), "--dataset", saved_data, "--output-dir", str(out)]
    argv += ["--overwrite"] * existing
    capsys.readouterr()  # the fixtures' own output
    with exclusive_lock(lock_path(out), "iis-hf score (pid 4242 on elsewhere)"):  # the first run
        started = time.monotonic()
        code = main(argv)
        elapsed = time.monotonic() - started
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "error" in line]  # (libraries' warnings aside)
    assert code == 2 and len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith("iis-hf score: error: --output-dir ") and str(out) in lines[0], lines[0]
    assert "another run" in lines[0] and "pid 4242" in lines[0], lines[0]
    assert "wrote" not in captured.out and elapsed < 5, elapsed  # refused in its checks (0.03 s here)
    if existing:
        assert json.loads((out / "iis.json").read_text()) == {"earlier": True}  # the first run's, intact
    else:
        assert not out.exists()
    assert not lock_path(out).exists()  # the holder's, removed when it let go; the refused run made none


def test_the_lock_is_the_one_finetune_takes_and_is_released(tmp_path):
    from iis_hf.training.run_folder import output_lock

    out = tmp_path / "new" / "out"
    with output_folder_lock(out, "--output-dir", "iis-hf score"):
        assert lock_path(out).is_file()
        with pytest.raises(ValueError, match="is being written by another run"), output_lock(out):
            pass  # `iis-hf finetune` into the same folder waits its turn too
        with (
            pytest.raises(
                OutputFolderBusy,
                match=r"^--output-dir '.*out' is being written by another run \(held by iis-hf score \(pid \d+",
            ),
            output_folder_lock(out, "--output-dir", "iis-hf score"),
        ):
            pass
    assert not lock_path(out).exists() and not (tmp_path / "new").exists()  # nothing left behind
    with output_folder_lock(out, "--output-dir", "iis-hf score"):  # free again
        pass


def test_a_full_disk_in_the_last_write_names_the_file(tmp_path, monkeypatch):
    def full(*args, **kwargs):  # what safetensors raises: no path in it
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(iis_hf.files, "save_file", full)
    target = tmp_path / "bank" / "concept_bank.safetensors"
    with pytest.raises(OSError) as raised:
        save_safetensors_atomic({"vectors": torch.zeros(2, 2)}, target)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert not list(target.parent.iterdir())  # no temporary file left

    def no_space(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")  # what write() raises: no file name

    monkeypatch.setattr(Path, "write_bytes", no_space)
    with pytest.raises(OSError) as raised:
        write_json_atomic(tmp_path / "iis.json", {})
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "iis.json")

    from iis_hf.cli import error_message

    line = error_message(raised.value)
    assert str(tmp_path / "iis.json") in line and "no space left on device" in line, line


def test_a_second_compare_into_a_held_folder_is_refused_before_any_work(
    tmp_path, tiny_models, saved_data, capsys
):
    out = tmp_path / "board"
    argv = ["compare", "--model", tiny_models("resnet"), "--dataset", saved_data, "--output-dir", str(out)]
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("iis_hf.compare.compare_models", lambda *a, **k: pytest.fail("the second run started"))
        with exclusive_lock(lock_path(out), "iis-hf compare (pid 4242 on elsewhere)"):
            code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("iis-hf compare: error: --output-dir ") and "4242" in lines[0], lines[0]
    assert not out.exists()
