"""Several processes, heads trained once (issue 29, item 3).

Under `torchrun` every rank extracts its share of the images, then the interpretation heads are
trained on rank 0 alone and the other ranks receive its result (`iis_hf.pipeline.fit_heads_once`).
Counted with real processes: `tests/scripts/score_counting_heads.py` appends the rank of every call of
the heads' trainer to a file. And a launch that asked for several processes but started one is said,
in one line, by every command.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import cpu_subprocess_env, make_image_dataset, torchrun_two_processes

from iis_hf.cli import main as cli_main
from iis_hf.devices import launched_alone_message, launched_world_size

SCRIPT = Path(__file__).resolve().parent / "scripts" / "score_counting_heads.py"
FAST = ["--epochs", "3", "--num-concepts", "12", "--images-per-class", "2", "--chunk-size", "4"]
FAST += ["--sparsity-ratios", "0", "0.5", "0.9", "--no-progress"]
RESULT_KEYS = ("iis", "standard_accuracy", "accuracies", "sparsity_ratios", "num_concepts")
ACCELERATE_CPU_LAUNCH = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def subprocess_env() -> dict[str, str]:
    """One intra-op thread in every process (torchrun's default), so 1 and 2 processes compute alike."""
    return {**cpu_subprocess_env(), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def score(command: list[str], out: Path, counts: Path, model: str, dataset: str):
    args = ["--model", model, "--dataset", dataset, "--output-dir", str(out), *FAST]
    done = subprocess.run(
        [*command, str(SCRIPT), str(counts), *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done, json.loads((out / "iis.json").read_text())


def test_two_processes_train_the_heads_once_and_give_the_one_process_iis(tiny_models, tmp_path):
    dataset = tmp_path / "data"
    make_image_dataset(num_classes=3, per_class=10).save_to_disk(str(dataset))
    model = tiny_models("vit")
    _, alone = score([sys.executable], tmp_path / "one", tmp_path / "one.txt", model, str(dataset))
    launch = torchrun_two_processes()
    done, two = score(launch, tmp_path / "two", tmp_path / "two.txt", model, str(dataset))

    # one call of the heads' trainer in each run (one seed), and under torchrun on rank 0
    assert (tmp_path / "one.txt").read_text().split() == ["0"]
    assert (tmp_path / "two.txt").read_text().split() == ["0"]
    assert {k: two[k] for k in RESULT_KEYS} == {k: alone[k] for k in RESULT_KEYS}
    assert two["metadata"]["num_processes"] == 2 and two["metadata"]["heads_trained_on_rank"] == 0
    assert "num_processes" not in alone["metadata"]
    assert done.stdout.count("wrote ") == 1  # only rank 0 writes and reports
    assert two["settings"]["environment"] == alone["settings"]["environment"]


def test_a_failure_on_rank_zero_ends_every_rank_with_one_line_instead_of_a_wait(tmp_path):
    script = tmp_path / "fail_on_rank_zero.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import torch.distributed as dist
            from iis_hf.features.distributed import on_main_process

            dist.init_process_group("gloo")

            def fit():
                raise ValueError("the heads could not be trained")

            try:
                on_main_process(fit, what="training the interpretation heads")
            except ValueError as err:
                print(f"rank {dist.get_rank()}: {err}")
                sys.exit(3)
            """
        )
    )
    done = subprocess.run(
        torchrun_two_processes(str(script)), env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "rank 0: the heads could not be trained" in done.stdout, done.stdout + done.stderr[-2000:]
    assert (
        "rank 1: rank 0 failed while training the interpretation heads (see its output): "
        "ValueError: the heads could not be trained" in done.stdout
    ), done.stdout + done.stderr[-2000:]


def test_a_launch_the_process_did_not_see_is_said_and_a_real_one_is_not():
    assert launched_world_size({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}) == 2
    assert launched_world_size({"WORLD_SIZE": "2"}) == 1  # no rank: it was not started by a launcher
    said = launched_alone_message(1, {"WORLD_SIZE": "2"}, work="scores")
    assert said is not None and "WORLD_SIZE=2" in said and "scores alone" in said and "\n" not in said
    said = launched_alone_message(1, ACCELERATE_CPU_LAUNCH, command="-m iis_hf.cli score ...")
    assert said is not None and "accelerate launch --multi_gpu --num_processes N -m iis_hf.cli score" in said
    assert launched_alone_message(2, {"WORLD_SIZE": "2", **ACCELERATE_CPU_LAUNCH}) is None
    assert launched_alone_message(1, {"WORLD_SIZE": "1"}) is None
    assert launched_alone_message(1, {"ACCELERATE_USE_CPU": "True"}) is None  # one process asked for


@pytest.mark.parametrize("command", ["score", "compare"])
def test_accelerate_launch_cpu_with_two_processes_is_said_by_every_command(
    command, monkeypatch, tmp_path, capsys
):
    """What `accelerate launch --cpu --num_processes 2 iis-hf ...` gives the command: one process,
    with ACCELERATE_USE_CPU and MASTER_ADDR/MASTER_PORT but no WORLD_SIZE (its simple launcher)."""
    for name, value in ACCELERATE_CPU_LAUNCH.items():
        monkeypatch.setenv(name, value)
    for name in ("WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "ACCELERATE_NUM_PROCESSES"):
        monkeypatch.delenv(name, raising=False)
    args = ["--model", str(tmp_path / "no-model"), "--dataset", str(tmp_path / "no-data")]
    code = cli_main([command, *args, "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith(f"iis-hf {command}: warning:")]
    assert len(warnings) == 1 and "started this process alone" in warnings[0], err
    assert code == 2  # then it stops at the missing model, as it would have
