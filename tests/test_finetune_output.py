"""`iis-hf finetune`'s output folder keeps `iis-hf score`'s promises: refused when it holds someone
else's files, one run at a time, the final outputs whole or not at all, arguments checked first."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cpu_subprocess_env, make_image_dataset

from iis_hf import cli
from iis_hf.training import finetune, run_folder

SCRIPT = Path(__file__).parent / "scripts" / "finetune_killed.py"
FAST = [
    "--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--seed", "0",
    "--iis_num_concepts", "20", "--iis_images_per_class", "2", "--iis_eval_epochs", "2",
    "--per_device_train_batch_size", "8", "--save_strategy", "epoch",
]  # fmt: skip
# What would fail at once if anything were loaded: every refusal below must come before this.
NOTHING_LOADABLE = ["--model_name_or_path", "/nonexistent/model", "--dataset_name", "/nonexistent/data"]


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "saved"
    make_image_dataset(num_classes=3, per_class=8).save_to_disk(str(path))
    return str(path)


def contents(folder: Path, checkpoints: bool = True) -> dict[str, str]:
    """Every file under `folder` (without `checkpoint-*`, which Trainer writes in place as it trains,
    when `checkpoints` is False) with the hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (checkpoints or not p.relative_to(folder).parts[0].startswith("checkpoint-"))
    }


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------- before any work
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--num_train_epochs", "nan", "--num_train_epochs must be a number > 0, got nan"),
        (
            "--per_device_train_batch_size",
            "0",
            "--per_device_train_batch_size must be a whole number >= 1, got 0",
        ),
        ("--learning_rate", "nan", "--learning_rate must be a number > 0, got nan"),
        ("--iis_weight", "nan", "--iis_weight must be a number >= 0, got nan"),
        ("--iis_weight", "-1", "--iis_weight must be a number >= 0, got -1"),
    ],
)
def test_a_bad_number_is_refused_before_loading_naming_its_flag(tmp_path, capsys, flag, value, message):
    args = ["finetune", *NOTHING_LOADABLE, "--output_dir", str(tmp_path / "out"), "--do_train", flag, value]
    assert cli.main(args) == 2
    assert one_line_error(capsys) == f"iis-hf finetune: error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_a_folder_with_a_users_own_files_is_refused_before_any_work(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "README.md").write_text("# my notes\n")
    (folder / "config.json").write_text('{"mine": true}\n')
    before = contents(folder)
    assert cli.main(["finetune", *NOTHING_LOADABLE, "--output_dir", str(folder), "--do_train"]) == 2
    err = one_line_error(capsys)
    assert (
        f"--output_dir {folder} holds files a fine-tuning run did not write (README.md, config.json)" in err
    )
    assert "--overwrite_output_dir" in err
    assert contents(folder) == before
    # --overwrite_output_dir lets it through the check (the next failure is the missing model)
    assert (
        cli.main(
            [
                "finetune",
                *NOTHING_LOADABLE,
                "--output_dir",
                str(folder),
                "--do_train",
                "--overwrite_output_dir",
            ]
        )
        == 2
    )
    assert "holds files" not in capsys.readouterr().err


def test_what_counts_as_an_earlier_runs_output(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-3").mkdir(parents=True)
    for name in ("README.md", "config.json", "model.safetensors", "trainer_state.json", "iis.json"):
        (run / name).write_text("{}")
    assert run_folder.foreign_entries(run) == []
    (run / "notes.txt").write_text("mine")
    assert run_folder.foreign_entries(run) == ["notes.txt"]
    lookalike = tmp_path / "lookalike"  # only names a run writes, but no run wrote it
    lookalike.mkdir()
    (lookalike / "README.md").write_text("# mine")
    assert run_folder.foreign_entries(lookalike) == ["README.md"]
    assert run_folder.foreign_entries(tmp_path / "missing") == []
    (tmp_path / "empty").mkdir()
    assert run_folder.foreign_entries(tmp_path / "empty") == []


def test_a_second_run_into_a_folder_being_written_is_refused(tmp_path, capsys):
    folder = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom iis_hf.training.run_folder import output_lock\n"
         "with output_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n", str(folder)],
        stdout=subprocess.PIPE, text=True, env=cpu_subprocess_env(),
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli.main(["finetune", *NOTHING_LOADABLE, "--output_dir", str(folder), "--do_train"]) == 2
        err = one_line_error(capsys)
        assert (
            f"--output_dir '{folder}' is being written by another run (held by iis-hf finetune (pid {holder.pid} "
            in err
        )
    finally:
        holder.kill()
        holder.wait()
    with run_folder.output_lock(folder):  # the kernel released the dead holder's lock
        pass
    assert not (tmp_path / ".out.lock").exists()


def test_an_interrupted_run_says_which_checkpoints_are_left(
    tmp_path, tiny_models, saved_dataset, monkeypatch, capsys
):
    folder = tmp_path / "out"
    for step in (3, 6):
        checkpoint = folder / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        (checkpoint / "iis_head.safetensors").write_bytes(b"")

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune.IISTrainer, "train", interrupted)
    args = ["--model_name_or_path", tiny_models("vit"), "--dataset_name", saved_dataset]
    assert cli.main(["finetune", *args, "--output_dir", str(folder), "--do_train", *FAST]) == 130
    assert capsys.readouterr().err.splitlines()[-1] + "\n" == (  # after the loading bars
        f"iis-hf finetune: interrupted; the final model was not written; {folder} holds checkpoint-3, "
        "checkpoint-6: rerun the same command to resume from checkpoint-6\n"
    )
    assert run_folder.interrupted_outcome(tmp_path / "none") == (
        f"no checkpoint was completed; the final model was not written to {tmp_path / 'none'}"
    )


# ---------------------------------------------------------------------------- the final save
def run_killed(moment: str, args: list[str]) -> None:
    process = subprocess.run(
        [sys.executable, str(SCRIPT), moment, *args], env=cpu_subprocess_env(), capture_output=True, text=True
    )
    assert process.returncode == -9, process.stderr[-3000:]


def test_a_run_killed_during_its_final_save_leaves_the_old_folder_whole(tmp_path, tiny_models, saved_dataset):
    folder = tmp_path / "out"
    common = ["--model_name_or_path", tiny_models("vit"), "--dataset_name", saved_dataset, *FAST]
    finetune.main(
        [*common, "--output_dir", str(folder), "--do_train", "--do_eval", "--num_train_epochs", "1"]
    )
    assert (folder / "iis.json").is_file() and (folder / "checkpoint-3").is_dir()
    first = contents(folder, checkpoints=False)  # the final outputs: model, head, bank, card, IIS, metrics

    # A second run (two epochs, no evaluation) into the same folder, killed at two moments of its final save.
    second = [
        *common,
        "--output_dir",
        str(folder),
        "--do_train",
        "--num_train_epochs",
        "2",
        "--overwrite_output_dir",
    ]
    for moment in ("save", "swap"):
        run_killed(moment, second)
        assert contents(folder, checkpoints=False) == first, moment  # as it was, to the byte
        assert finetune.last_complete_checkpoint(folder) == str(folder / "checkpoint-6")  # resumable

    finetune.main(second)  # the same run, not killed: the new folder, whole, and nothing of the old one
    final = contents(folder, checkpoints=False)
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 6
    assert not (folder / "iis.json").exists() and not (folder / "eval_results.json").exists()
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    assert final["model.safetensors"] != first["model.safetensors"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.") and p.name.endswith(".tmp")]
