"""Nothing lost, nothing half-written, nothing unpickled: interruption, concurrency, determinism,
trainer faults, and the safety of what iis-hf loads (issue 7; docs/reliability.md).

The end-to-end tests run the real `iis-hf score` (and a tiny IISTrainer run) in subprocesses and kill
them with real signals. Every subprocess runs with one intra-op thread (OMP_NUM_THREADS=1, as torchrun
sets it), so that runs with one and with two processes do the same arithmetic.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model, cpu_subprocess_env, make_image_dataset, torchrun_two_processes
from hub_server import fake_hub_fixture  # noqa: F401  (fake_hub_fixture provides `hub`)
from safetensors.torch import load_file

from iis_hf import ConceptBank, IISModelForImageClassification
from iis_hf.reading import refuse_pickles, resolve_inside

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tests" / "scripts"
CHUNK_SIZE = 4
NUM_TRAIN_CHUNKS = 12  # 60 images, 20% eval -> 48 train images in chunks of 4
SCORE_ARGS = [
    "--epochs",
    "5",
    "--num-concepts",
    "20",
    "--images-per-class",
    "2",
    "--chunk-size",
    str(CHUNK_SIZE),
    "--no-progress",
]
RESULT_KEYS = ("iis", "standard_accuracy", "accuracies", "sparsity_ratios", "best_epochs", "num_concepts")


def subprocess_env() -> dict[str, str]:
    env = {**cpu_subprocess_env(), "OMP_NUM_THREADS": "1"}
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    return env


def score_command(model: str, dataset: str, output_dir: Path, cache_dir: Path) -> list[str]:
    return [
        "--model",
        model,
        "--dataset",
        dataset,
        "--output-dir",
        str(output_dir),
        "--cache-dir",
        str(cache_dir),
        *SCORE_ARGS,
    ]


def run_score(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "iis_hf.cli", "score", *args]
    return subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


def start_slow_score(args: list[str], delay: float, **env) -> subprocess.Popen:
    command = [sys.executable, str(SCRIPTS / "slow_score.py"), str(delay), *args]
    return subprocess.Popen(
        command, env={**subprocess_env(), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def result_of(output_dir: Path) -> dict:
    report = json.loads((output_dir / "iis.json").read_text())
    return {k: report[k] for k in RESULT_KEYS}


def chunk_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*/chunk-*.safetensors"))


def train_cache_folder(cache_dir: Path) -> Path:
    """The cache folder of the train split (the one with 12 chunks; eval has 3)."""
    folders = [f for f in cache_dir.iterdir() if f.is_dir() and (f / "chunk-000011.safetensors").exists()]
    assert len(folders) == 1, sorted(p.name for p in cache_dir.rglob("*"))
    return folders[0]


def wait_for(condition, timeout: float, process: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(
                f"the process ended (rc {process.returncode}) before {what}:\n{out[-2000:]}{err[-3000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def assert_chunks_complete_and_correct(cache_dir: Path, reference_cache: Path) -> list[Path]:
    """Every chunk file present reads in full and equals the uninterrupted run's chunk, bit for bit."""
    chunks = chunk_files(cache_dir)
    for path in chunks:
        got = load_file(path)  # a half-written file would fail here
        expected = load_file(reference_cache / path.parent.name / path.name)
        assert set(got) == set(expected) == {"features", "labels"}, path
        assert torch.equal(got["features"], expected["features"]), path
        assert torch.equal(got["labels"], expected["labels"]), path
    for folder in cache_dir.iterdir():
        for item in folder.iterdir():
            visible = item.name == "settings.json" or re.fullmatch(r"chunk-\d{6}\.safetensors", item.name)
            assert visible or re.fullmatch(r"\.chunk-\d{6}\.safetensors\..+\.tmp", item.name), item
    return chunks


# ---------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def scoring(tmp_path_factory, tiny_models):
    """A 60-image dataset on disk, a tiny ViT, and an uninterrupted `iis-hf score` run over them."""
    root = tmp_path_factory.mktemp("reliability")
    dataset = root / "data"
    make_image_dataset(num_classes=3, per_class=20).save_to_disk(str(dataset))
    model = tiny_models("vit")
    reference_out, reference_cache = root / "reference", root / "reference-cache"
    done = run_score(score_command(model, str(dataset), reference_out, reference_cache))
    assert done.returncode == 0, done.stderr[-3000:]
    return {
        "root": root,
        "model": model,
        "dataset": str(dataset),
        "result": result_of(reference_out),
        "bank": load_file(reference_out / "concept_bank" / "concept_bank.safetensors"),
        "cache": reference_cache,
    }


# ---------------------------------------------------------------------------------------------------
# 1. interruption


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_score_leaves_whole_chunks_and_the_rerun_reuses_them(scoring, tmp_path, sig):
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = score_command(scoring["model"], scoring["dataset"], out, cache)
    process = start_slow_score(args, delay=0.3)
    wait_for(lambda: chunk_files(cache), 240, process, "the first cache chunk")
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)

    if sig == signal.SIGINT:
        assert process.returncode == 130, err[-3000:]
        assert "interrupted; no output was written" in err.splitlines()[-1]
    else:
        assert process.returncode == -signal.SIGKILL
    # a killed run may leave its lock file: it blocks nothing (the kernel released the lock), and the
    # next run takes and removes it
    assert not out.exists() and not [
        p for p in tmp_path.iterdir() if p.name.startswith(".out") and p.name != ".out.lock"
    ]
    folder = train_cache_folder(scoring["cache"]).name
    assert [p.parent.name for p in chunk_files(cache)] == [folder] * len(chunk_files(cache))
    survivors = assert_chunks_complete_and_correct(cache, scoring["cache"])
    assert 1 <= len(survivors) < NUM_TRAIN_CHUNKS, "the run was not stopped in the middle of extraction"
    temporaries = sorted((cache / folder).glob(".*.tmp"))
    if sig == signal.SIGINT:
        assert temporaries == []  # KeyboardInterrupt ran the cleanup of the file being written
    else:
        # What a SIGKILL can leave: a temporary file, never a chunk. Plant one more (truncated), age both
        # past the staleness limit, and check the rerun neither reads nor keeps them.
        planted = cache / folder / ".chunk-000011.safetensors.planted.tmp"
        planted.write_bytes(survivors[0].read_bytes()[:100])
        temporaries = sorted((cache / folder).glob(".*.tmp"))
        two_hours_ago = time.time() - 7200
        for item in temporaries:
            os.utime(item, (two_hours_ago, two_hours_ago))
    before = {p.relative_to(cache): (p.stat().st_ino, p.stat().st_mtime_ns) for p in survivors}

    rerun = run_score(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert result_of(out) == scoring["result"]  # to the last digit
    after = {p.relative_to(cache): (p.stat().st_ino, p.stat().st_mtime_ns) for p in chunk_files(cache)}
    assert {name: after[name] for name in before} == before, "finished chunks were recomputed"
    assert len(assert_chunks_complete_and_correct(cache, scoring["cache"])) == NUM_TRAIN_CHUNKS + 3
    assert not list(cache.glob("*/.*.tmp")), "stale temporary files were left behind"


def output_snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_a_run_killed_while_replacing_an_existing_output_leaves_the_old_or_the_new_folder_whole(
    scoring, tmp_path, sig
):
    """`iis-hf score --overwrite` into a folder holding an earlier run's output, stopped by a signal in the
    middle of putting the new output in place (every rename and removal there is slowed, see
    tests/scripts/slow_score.py): the folder is then the old output or the new one, file for file, never a
    mix. With the file-by-file merge of the previous release (`os.replace` of each entry) this fails: the
    new iis.json lands beside the old concept bank."""
    reference = scoring["root"] / "reference"
    out, cache = tmp_path / "out", tmp_path / "cache"
    shutil.copytree(reference, out)
    old_report = json.loads((out / "iis.json").read_text())
    (out / "iis.json").write_text(json.dumps({**old_report, "iis": 0.123, "metadata": {"run": "old"}}))
    (out / "iis_curve.png").write_bytes((out / "iis_curve.png").read_bytes() + b"old")
    bank_config = out / "concept_bank" / "concept_bank.json"
    bank_config.write_text(json.dumps({**json.loads(bank_config.read_text()), "old": True}))
    old = output_snapshot(out)
    marker = tmp_path / "committing"
    args = [*score_command(scoring["model"], scoring["dataset"], out, cache), "--overwrite"]
    process = start_slow_score(args, delay=0.0, SLOW_SCORE_COMMIT=f"60,{marker}")
    wait_for(marker.exists, 240, process, "the output folder being put in place")
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)

    now = output_snapshot(out)
    if now != old:  # then it must be the new output, whole: no file of the old one is left
        assert sorted(p.name for p in out.iterdir()) == ["concept_bank", "iis.json", "iis_curve.png"]
        assert result_of(out) == scoring["result"]
        assert not [
            name for name, data in now.items() if old.get(name) == data and name.endswith((".json", ".png"))
        ]
        bank = load_file(out / "concept_bank" / "concept_bank.safetensors")
        assert all(torch.equal(bank[k], scoring["bank"][k]) for k in scoring["bank"])
    if sig == signal.SIGINT:
        assert process.returncode == 130, err[-3000:]
        said = f"interrupted; {out} was written whole" if now != old else "interrupted; no output was written"
        assert said in err.splitlines()[-1], err[-2000:]
    else:
        assert process.returncode == -signal.SIGKILL
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.") and p.name != ".out.lock"]
    # A rerun (same machine, the killed process gone) removes what the killed run left beside the folder.
    rerun = run_score(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert result_of(out) == scoring["result"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")], leftovers
    if sig == signal.SIGKILL:
        assert leftovers, (
            "the kill should have left the old content beside the folder, for the rerun to remove"
        )


def test_a_damaged_chunk_is_recomputed_not_read(scoring, tmp_path):
    """A chunk that is not what it should be (truncated by a copy, say) is extracted again."""
    cache = tmp_path / "cache"
    shutil.copytree(scoring["cache"], cache)
    folder = train_cache_folder(cache)
    damaged = folder / "chunk-000003.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:200])
    out = tmp_path / "out"
    done = run_score(score_command(scoring["model"], scoring["dataset"], out, cache))
    assert done.returncode == 0, done.stderr[-3000:]
    assert result_of(out) == scoring["result"]
    assert_chunks_complete_and_correct(cache, scoring["cache"])


# ---------------------------------------------------------------------------------------------------
# 2. concurrency


def test_two_concurrent_scores_sharing_a_cache_agree(scoring, tmp_path):
    cache = tmp_path / "cache"
    meeting = f"{tmp_path / 'rendezvous'},2"  # both wait for each other at their first chunk write
    runs = [
        start_slow_score(
            score_command(scoring["model"], scoring["dataset"], tmp_path / f"out{i}", cache),
            delay=0.1,
            SLOW_SCORE_RENDEZVOUS=meeting,
        )
        for i in (0, 1)
    ]
    # Both extract at the same time: at some moment each holds a temporary chunk file in the cache.
    most_writers = 0
    deadline = time.monotonic() + 300
    while any(run.poll() is None for run in runs) and time.monotonic() < deadline:
        most_writers = max(most_writers, len(list(cache.glob("*/.chunk-*.tmp"))))
        time.sleep(0.01)
    outputs = [run.communicate(timeout=60) for run in runs]
    for run, (_, err) in zip(runs, outputs):
        assert run.returncode == 0, err[-3000:]
    assert most_writers == 2, "the two runs did not extract concurrently"
    first, second = result_of(tmp_path / "out0"), result_of(tmp_path / "out1")
    assert first == second == scoring["result"]
    assert len(assert_chunks_complete_and_correct(cache, scoring["cache"])) == NUM_TRAIN_CHUNKS + 3
    assert not list(cache.glob("*/.*.tmp"))
    for folder in cache.iterdir():
        settings = json.loads((folder / "settings.json").read_text())  # written by both, whole
        assert settings["key"] == folder.name


# ---------------------------------------------------------------------------------------------------
# 3. determinism


def test_two_process_score_gives_the_one_process_iis_to_the_last_digit(scoring, tmp_path):
    """`torchrun --nproc_per_node 2 -m iis_hf.cli score`: extraction split over two processes (gloo),
    one writer; the same IIS, curve, concept bank and cached features as the one-process run."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    command = torchrun_two_processes(
        "-m", "iis_hf.cli", "score", *score_command(scoring["model"], scoring["dataset"], out, cache)
    )
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # only rank 0 writes and reports
    assert result_of(out) == scoring["result"]
    bank = load_file(out / "concept_bank" / "concept_bank.safetensors")
    assert all(torch.equal(bank[k], scoring["bank"][k]) for k in scoring["bank"])
    assert len(assert_chunks_complete_and_correct(cache, scoring["cache"])) == NUM_TRAIN_CHUNKS + 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out"]  # no second writer's leftovers


@pytest.mark.filterwarnings("ignore:interpretation accuracy exceeds")
def test_compute_iis_is_bitwise_reproducible_with_a_seed():
    from iis_hf import compute_iis

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(120) % 4
    features = torch.randn(120, 24, generator=generator) + torch.nn.functional.one_hot(labels, 24) * 2.0
    bank = torch.randn(30, 24, generator=generator)

    def run(seed):
        result = compute_iis(
            features[:90], labels[:90], features[90:], labels[90:], bank, epochs=4, head_batch_size=32,
            seed=seed, progress=False, return_heads=True, probe_min_steps=50, head_precision="fp32",
        )  # fmt: skip
        return result, {k: v.clone() for k, v in result.heads.state_dict().items()}

    (a, heads_a), (b, heads_b), (_, heads_c) = run(0), run(0), run(1)
    assert (a.iis, a.accuracies, a.standard_accuracy) == (b.iis, b.accuracies, b.standard_accuracy)
    assert all(torch.equal(heads_a[k], heads_b[k]) for k in heads_a)
    assert not all(torch.equal(heads_a[k], heads_c[k]) for k in heads_a)  # the seed does matter


# ---------------------------------------------------------------------------------------------------
# 6. trainer faults


@pytest.fixture(scope="module")
def uninterrupted_training(tmp_path_factory):
    out = tmp_path_factory.mktemp("training") / "full"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "train_killable.py"), str(out), "full"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return load_file(out / "final.safetensors")


def resume_and_compare(out: Path, expected: dict) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "train_killable.py"), str(out), "resume"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    final = load_file(out / "final.safetensors")
    assert set(final) == set(expected)
    for name, value in expected.items():  # backbone and head, bit for bit
        assert torch.equal(final[name], value), name
    return done.stderr


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(uninterrupted_training, tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "train_killable.py"), str(out), "slow"],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: (out / "checkpoint-4" / "trainer_state.json").exists(), 240, process, "checkpoint-4")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert 4 in steps and 10 not in steps and not (out / "final.safetensors").exists()
    last = max(s for s in steps if (out / f"checkpoint-{s}" / "trainer_state.json").exists())
    assert last % 5 != 0, "the checkpoint resumed from should fall inside an epoch (5 steps each)"
    resume_and_compare(out, uninterrupted_training)


def test_kill_while_saving_a_checkpoint_resumes_from_the_last_complete_one(uninterrupted_training, tmp_path):
    out = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, str(SCRIPTS / "train_killable.py"), str(out), "kill-while-saving", "6"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    half = out / "checkpoint-6"
    names = {p.name for p in half.iterdir()}
    assert {"model.safetensors", "iis_head.safetensors", "optimizer.pt"} <= names
    assert "trainer_state.json" not in names and "rng_state.pth" not in names
    # naming the half-written checkpoint is refused; `True` skips it and takes checkpoint-4
    from iis_hf.training.checkpoints import checkpoint_problem, last_complete_checkpoint

    assert "stopped while saving" in checkpoint_problem(half)
    with pytest.warns(UserWarning, match="skipping incomplete checkpoint .*checkpoint-6"):
        assert last_complete_checkpoint(out) == str(out / "checkpoint-4")
    from trainer_utils import make_trainer

    with pytest.raises(ValueError, match=r"cannot resume from .*checkpoint-6: .*stopped while saving"):
        make_trainer(tmp_path / "other", max_steps=1).train(resume_from_checkpoint=str(half))
    stderr = resume_and_compare(out, uninterrupted_training)
    assert "skipping incomplete checkpoint" in stderr


def test_finetune_resumes_from_the_newest_complete_checkpoint(tmp_path):
    from types import SimpleNamespace

    from iis_hf.training.finetune import detect_last_checkpoint

    for step, complete in ((2, True), (4, True), (6, False), (10, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "iis_head.safetensors").write_bytes(b"")
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}) if complete else '{"glo')
    args = SimpleNamespace(do_train=True, resume_from_checkpoint=None, output_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="skipping incomplete checkpoint"):
        assert detect_last_checkpoint(args) == str(tmp_path / "checkpoint-4")


def test_a_checkpoint_folder_loads_as_a_model_despite_trainer_pickles(tmp_path):
    """Trainer's own optimizer.pt / scheduler.pt / rng_state.pth sit in every checkpoint: iis-hf never
    reads them, and they must not make the checkpoint's head and bank unreadable either."""
    from trainer_utils import random_bank

    model = IISModelForImageClassification(build_tiny_model("vit"), random_bank())
    model.save_pretrained(tmp_path)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        (tmp_path / name).write_bytes(b"not even a pickle")  # would fail loudly if anything read it
    reloaded = IISModelForImageClassification.from_pretrained(tmp_path)
    assert torch.equal(reloaded.iis_head.weight, model.iis_head.weight)
    assert torch.equal(ConceptBank.from_pretrained(tmp_path).vectors, model.concept_bank.vectors)


# ---------------------------------------------------------------------------------------------------
# 5. what iis-hf loads


@pytest.mark.parametrize("suffix", [".bin", ".pkl", ".pt", ".pth", ".ckpt", ".pickle"])
@pytest.mark.parametrize("artefact", ["concept_bank", "iis_head"])
def test_a_pickle_for_our_artefacts_is_refused(tmp_path, artefact, suffix):
    from trainer_utils import random_bank

    model = IISModelForImageClassification(build_tiny_model("vit"), random_bank())
    model.save_pretrained(tmp_path)
    (tmp_path / f"{artefact}{suffix}").write_bytes(b"\x80\x04K\x01.")  # pickle.dumps(1)
    with pytest.raises(ValueError, match=rf"{artefact}{re.escape(suffix)}.*pickle|pickle.*{artefact}"):
        IISModelForImageClassification.from_pretrained(tmp_path)
    if artefact == "concept_bank":
        with pytest.raises(ValueError, match="pickle"):
            ConceptBank.from_pretrained(tmp_path)


def test_refuse_pickles_checks_only_the_named_artefacts(tmp_path):
    (tmp_path / "optimizer.pt").write_bytes(b"x")
    refuse_pickles(tmp_path, "concept bank", stems=("concept_bank",))  # not ours: ignored
    with pytest.raises(ValueError, match=r"\['optimizer.pt'\]"):
        refuse_pickles(tmp_path, "folder")  # every pickle, when no names are given


def test_hub_downloads_never_fetch_a_pickle(hub):
    bank = ConceptBank(vectors=torch.randn(4, 6), names=list("abcd"))
    bank.push_to_hub("user/bank")
    files = hub.files("user/bank")
    # the same repository also offers a pickle, and another only a pickle
    hub.add_repo("user/bank-and-pickle", {**files, "concept_bank.bin": b"\x80\x04K\x01."})
    hub.add_repo(
        "user/pickle-only", {"concept_bank.json": files["concept_bank.json"], "concept_bank.pt": b"\x80."}
    )
    loaded = ConceptBank.from_pretrained("user/bank-and-pickle")
    assert torch.equal(loaded.vectors, bank.vectors)
    with pytest.raises(
        ValueError,
        match=r"concept bank 'user/pickle-only' is not a local folder, and its files .* could not be downloaded",
    ):
        ConceptBank.from_pretrained("user/pickle-only")
    asked = [path.split("?")[0] for _method, path in hub.requests if "/resolve/" in path]
    assert asked and not [p for p in asked if p.endswith((".bin", ".pt"))], asked
    assert not [p for p in Path(hub.cache_dir).rglob("*") if p.suffix in (".bin", ".pt")]


# The modules allowed to import pickle, and why: the experiments read the pinned animal-shape-mnist
# package's own data files (gzip'd pickles, from its installation folder, never a user's or the Hub's
# file) through an unpickler that accepts numpy arrays only (tests/research/test_package_pickle.py);
# the comparison with the published code WRITES the concept pickle their loader reads (it never loads one).
PICKLE_READERS = {
    "examples/research_projects/iis_paper/iis_paper/data.py",
    "examples/research_projects/iis_paper/compare_with_published.py",
}


class Exploit:
    """A pickle that would run a command when loaded by a plain unpickler."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _source_files():
    research = REPO / "examples" / "research_projects"
    return sorted(
        [*(REPO / "iis_hf").rglob("*.py"), *(REPO / "metrics" / "iis").rglob("*.py"), *research.rglob("*.py")]
    )


def _is_literal(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def test_sources_never_trust_remote_code_nor_unpickle():
    problems = []
    for path in _source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            flags = []  # every value given to trust_remote_code, as a keyword or a dict entry
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                flags.append(node.value)
            if isinstance(node, ast.Dict):
                flags += [v for k, v in zip(node.keys, node.values) if _is_literal(k, "trust_remote_code")]
            problems += [
                f"{path.name}:{v.lineno}: trust_remote_code not False"
                for v in flags
                if not _is_literal(v, False)
            ]
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + (
                    [node.module] if isinstance(node, ast.ImportFrom) else []
                )
                pickles = any(
                    n and n.split(".")[0] in ("pickle", "dill", "joblib", "cloudpickle") for n in names
                )
                if pickles and path.relative_to(REPO).as_posix() not in PICKLE_READERS:
                    problems.append(f"{path.name}:{node.lineno}: imports a pickle library")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
            ):
                keywords = {k.arg: k.value for k in node.keywords}
                owner = ast.unparse(node.func.value)
                if owner == "torch" and not _is_literal(keywords.get("weights_only"), True):
                    problems.append(f"{path.name}:{node.lineno}: torch.load without weights_only=True")
                allow_pickle = keywords.get("allow_pickle", ast.Constant(False))
                if owner in ("np", "numpy") and not _is_literal(allow_pickle, False):
                    problems.append(f"{path.name}:{node.lineno}: np.load with allow_pickle")
    assert problems == []
    assert len(_source_files()) > 15  # the scan did see the package


def test_loaders_pass_trust_remote_code_false(tiny_models, tmp_path, monkeypatch):
    """Spy on transformers' Auto* loaders while iis-hf loads a model, a processor and an IIS model."""
    import transformers

    from iis_hf.features.backbones import load_image_processor, load_vision_model

    seen = []
    for name in ("AutoConfig", "AutoModel", "AutoModelForImageClassification", "AutoImageProcessor"):
        cls = getattr(transformers, name)
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, _name=name, **kwargs):
            seen.append((_name, kwargs.get("trust_remote_code", "absent")))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    model = load_vision_model(tiny_models("vit"))
    load_image_processor(model)
    load_vision_model(tiny_models("vit", head=False))
    from trainer_utils import random_bank

    IISModelForImageClassification(build_tiny_model("vit"), random_bank()).save_pretrained(tmp_path)
    IISModelForImageClassification.from_pretrained(tmp_path)
    assert {name for name, _ in seen} == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForImageClassification",
        "AutoImageProcessor",
    }
    assert {flag for _, flag in seen} == {False}, seen
    with pytest.raises(ValueError, match="never runs remote code"):
        load_vision_model(tiny_models("vit"), trust_remote_code=True)


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "sub/../../concept_bank.json",
        "sub/x.json",
        "..",
        ".",
        "..\\x.json",
        "",
        5,
        None,
        ["a"],
    ],
)
def test_file_names_from_json_cannot_leave_the_folder(tmp_path, name):
    with pytest.raises(ValueError, match=r"points outside|expected a file name"):
        resolve_inside(tmp_path, name, "test")


def test_resolve_inside_accepts_plain_names_and_the_hub_caches_symlinks(tmp_path):
    assert resolve_inside(tmp_path, "concept_bank.json", "test") == tmp_path.resolve() / "concept_bank.json"
    # the Hub cache: snapshots/<commit>/concept_bank.json -> ../../blobs/<hash>
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "abc").write_text("{}")
    snapshot = tmp_path / "snapshots" / "0123"
    snapshot.mkdir(parents=True)
    (snapshot / "concept_bank.json").symlink_to("../../blobs/abc")
    assert resolve_inside(snapshot, "concept_bank.json", "test").read_text() == "{}"


@pytest.mark.parametrize("entry", ["../../etc/passwd", "/etc/passwd", "other_bank.json", 3])
def test_iis_config_naming_a_file_outside_its_folder_is_refused(tmp_path, entry):
    from trainer_utils import random_bank

    IISModelForImageClassification(build_tiny_model("vit"), random_bank()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "iis_config.json").read_text())
    assert config["concept_bank"] == "concept_bank.json"
    (tmp_path / "iis_config.json").write_text(json.dumps({**config, "concept_bank": entry}))
    with pytest.raises(ValueError, match=r"'concept_bank'"):
        IISModelForImageClassification.from_pretrained(tmp_path)
