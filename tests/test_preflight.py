"""Bad input II (issue 14): every bad input refused before the work starts, the user's files never
harmed, no image corrupted silently.

Tables of command-line cases (`iis-hf score`, `explain`, `demo`): each asserts exit code 2, exactly one
``iis-hf <command>: error:`` line naming the file or argument, no traceback, and that nothing was
written or changed (inputs and output folder compared file by file). Cases marked "before the work"
also fail the test if the scoring (or the image decoding, or the demo's training) was ever started.
Faults the machine cannot be made to show for real here (a full disk, ENOSPC in the middle of a write)
are simulated in-process. Then: outputs replaced whole, stale temporary folders, file modes, and the
same pixels from every entry point that reads an image.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny_model, make_image_dataset, tiny_image_processor
from PIL import Image
from trainer_utils import random_bank

import iis_hf.demo
import iis_hf.explain
import iis_hf.pipeline  # noqa: F401  (imported before any test patches one of its functions)
from iis_hf import IISModelForImageClassification
from iis_hf.cli import main

FAST = ["--epochs", "2", "--num-concepts", "10", "--images-per-class", "2", "--no-progress"]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder` with its size and mtime (datasets' index caches aside)."""
    return {
        str(p.relative_to(folder)): (
            p.stat().st_size if p.is_file() else 0,
            p.stat().st_mtime_ns if p.is_file() else 0,
        )
        for p in folder.rglob("*")
        if not (p.name.startswith("cache-") and p.suffix == ".arrow")
    }


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith(f"iis-hf {command}: error: "), err
    assert "Traceback" not in err, err
    return lines[0]


def picture(size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def encoded(fmt: str, array: np.ndarray | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture() if array is None else array).save(buffer, fmt)
    return buffer.getvalue()


def truncated(fmt: str) -> bytes:
    data = encoded(fmt)
    return data[: len(data) * 3 // 4]


def hostile_pickle(marker: Path) -> bytes:
    """A protocol-2 pickle that would run `touch MARKER` if anything unpickled it without restrictions."""
    command = f"touch {marker}".encode()
    return b"\x80\x02cposix\nsystem\nX" + struct.pack("<I", len(command)) + command + b"\x85R."


# ---------------------------------------------------------------------------------------------------
# shared inputs (built once) and the per-test context


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("preflight")
    found = {"root": root, "model": Path(tiny_models("vit"))}
    make_image_dataset(num_classes=3, per_class=8).save_to_disk(str(root / "data"))
    found["data"] = root / "data"
    colours = make_image_dataset(num_classes=3, per_class=4)
    for i, row in enumerate(colours):
        folder = root / "images" / f"class_{row['label']}"
        folder.mkdir(parents=True, exist_ok=True)
        row["image"].save(folder / f"{i}.png")
    found["images"] = root / "images"
    random_bank(dim=32, num=12).save_pretrained(root / "bank")
    found["bank"] = root / "bank"
    iis_model = root / "iis-model"
    IISModelForImageClassification(build_tiny_model("vit"), random_bank()).save_pretrained(iis_model)
    tiny_image_processor().save_pretrained(iis_model)
    found["iis_model"] = iis_model
    colours[0]["image"].save(root / "image.png")
    found["image"] = root / "image.png"
    Image.new("L", (14000, 14000)).save(root / "bomb.png")  # 196M pixels, 190 kB: a decompression bomb
    found["bomb"] = (root / "bomb.png").read_bytes()
    (root / "bomb.png").unlink()
    return found


class Context:
    """The shared inputs, `tmp` (this test's own folder) and helpers that damage copies there."""

    def __init__(self, world, tmp: Path):
        self.__dict__.update(world)
        self.tmp = tmp
        self.read_only: list[Path] = []

    def copy(self, source: Path, name: str) -> Path:
        target = self.tmp / name
        shutil.copytree(source, target)
        return target

    def image_folder_with(self, name: str, data: bytes) -> Path:
        folder = self.copy(self.images, "images")
        (folder / "class_1" / name).write_bytes(data)
        return folder

    def file(self, name: str, data: bytes) -> Path:
        (self.tmp / name).write_bytes(data)
        return self.tmp / name

    def model_with(self, change) -> Path:
        folder = self.copy(self.model, "model")
        change(folder)
        return folder

    def edit_config(self, folder: Path, **values) -> None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **values}))

    def make_read_only(self, path: Path) -> Path:
        path.chmod(0o555 if path.is_dir() else 0o444)
        self.read_only.append(path)
        return path

    def folder(self, name: str, files: dict[str, str] | None = None, read_only: bool = False) -> Path:
        folder = self.tmp / name
        folder.mkdir(parents=True)
        for file, text in (files or {}).items():
            (folder / file).write_text(text)
        return self.make_read_only(folder) if read_only else folder

    def restore(self) -> None:
        for path in self.read_only:
            path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.fixture
def ctx(world, tmp_path):
    context = Context(world, tmp_path)
    yield context
    context.restore()


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the scoring or the demo's training ever starts."""

    def started(*args, **kwargs):
        raise AssertionError("the work started although the input was bad")

    monkeypatch.setattr("iis_hf.pipeline.score_model", started)
    monkeypatch.setattr("iis_hf.demo.run_demo", started)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _pickle_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(hostile_pickle(folder.parent / "PWNED"))


def _nested_folders(ctx) -> Path:
    for i, image in enumerate(sorted(ctx.images.rglob("*.png"))):
        target = ctx.tmp / "nested" / f"class_{i % 2}" / "photos" / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, target)
    return ctx.tmp / "nested"


def _one_class(ctx) -> Path:
    shutil.copytree(ctx.images / "class_0", ctx.tmp / "one" / "class_0")
    return ctx.tmp / "one"


def _deep_bank(ctx) -> Path:
    bank = ctx.copy(ctx.bank, "bank")
    (bank / "concept_bank.json").write_text("[" * 100_000 + "]" * 100_000)
    return bank


OUT = object()  # stands for this test's default output folder, tmp/out

# id -> (argv after `score` and FAST (the default --output-dir is added), message regex, before the work)
SCORE_CASES = {
    "image: truncated JPEG": (
        lambda c: ["--model", c.model, "--dataset", c.image_folder_with("cut.jpg", truncated("JPEG"))],
        r"image file '[^']*class_1/cut\.jpg'\) (is truncated or corrupt|cannot be decoded)",
        False,
    ),
    "image: truncated PNG": (
        lambda c: ["--model", c.model, "--dataset", c.image_folder_with("cut.png", truncated("PNG"))],
        r"image file '[^']*class_1/cut\.png'\) is truncated or corrupt",
        False,
    ),
    "image: zero-byte file": (
        lambda c: ["--model", c.model, "--dataset", c.image_folder_with("empty.png", b"")],
        r"image file '[^']*class_1/empty\.png'\) is empty \(0 bytes\)",
        False,
    ),
    "image: text saved as .png": (
        lambda c: ["--model", c.model, "--dataset", c.image_folder_with("page.png", b"<html>404</html>\n")],
        r"image file '[^']*class_1/page\.png'\) is not an image Pillow can read",
        False,
    ),
    "image: a 14000 x 14000 PNG": (
        lambda c: ["--model", c.model, "--dataset", c.image_folder_with("huge.png", c.bomb)],
        r"huge\.png'\) is (14000 x 14000 = )?196000000 pixels, more than the limit .*decompression bomb",
        False,
    ),
    "model: truncated model.safetensors": (
        lambda c: ["--model", c.model_with(lambda f: _truncate(f / "model.safetensors")), "--dataset", c.data],
        r"--model: [^ ]*model/model\.safetensors is truncated or not a safetensors file",
        True,
    ),
    "model: config.json holding a string": (
        lambda c: [
            "--model", c.model_with(lambda f: (f / "config.json").write_text('"vit"')), "--dataset", c.data,
        ],
        r"config\.json must hold a JSON object, found str",
        True,
    ),
    "model: config.json with a wrong hidden_size": (
        lambda c: ["--model", c.model_with(lambda f: c.edit_config(f, hidden_size=48)), "--dataset", c.data],
        r"cannot load the model '[^']*model' \(--model\): its weights do not fit its config\.json \(\d+ tensor "
        r"group\(s\) differ, e\.g\. \S+: \[[\d, ]+\] in the weights, \[[\d, ]+\] from the config\)",
        True,
    ),
    "model: config.json with hidden_size as text": (
        lambda c: ["--model", c.model_with(lambda f: c.edit_config(f, hidden_size="32")), "--dataset", c.data],
        r"config\.json: 'hidden_size' must be a positive integer \(or a list of them\), got '32'",
        True,
    ),
    "model: a pickle weight file": (
        lambda c: ["--model", c.model_with(_pickle_weights), "--dataset", c.data],
        r"its weights \(pytorch_model\.bin\) are a pickle that torch\.load\(weights_only=True\) refuses",
        True,
    ),
    "device: cuda on a machine without one": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--device", "cuda"],
        r"--device: device 'cuda' was asked for but this machine has no CUDA GPU",
        True,
    ),
    "device: banana": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--device", "banana"],
        r"--device: unknown device 'banana'",
        True,
    ),
    "output: a file": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--output-dir", c.file("out.txt", b"notes")],
        r"--output-dir '[^']*out\.txt' is a file, not a folder",
        True,
    ),
    "output: a read-only folder": (
        lambda c: [
            "--model", c.model, "--dataset", c.data, "--overwrite",
            "--output-dir", c.folder("out", {"iis.json": "{}"}, read_only=True),
        ],
        r"--output-dir '[^']*out' is read-only",
        True,
    ),
    "output: in a read-only folder": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--output-dir", c.folder("ro", read_only=True) / "out"],
        r"--output-dir '[^']*ro/out' cannot be created: '[^']*ro' is read-only",
        True,
    ),
    "output: a name too long": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--output-dir", c.tmp / ("x" * 300)],
        r"--output-dir '[^']*x{300}': the name 'x{40}'\.\.\. is 300 bytes, longer than the file system takes",
        True,
    ),
    "output: empty": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--output-dir", ""],
        r"--output-dir is empty",
        True,
    ),
    "output: the dataset folder": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--output-dir", c.data],
        r"--output-dir '[^']*data' is the --dataset input; writing it would destroy the input",
        True,
    ),
    "output: the model folder": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--output-dir", c.model, "--overwrite"],
        r"--output-dir '[^']*' is the --model input",
        True,
    ),
    "output: the concept-bank folder": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--concept-bank", c.bank, "--output-dir", c.bank],
        r"--output-dir '[^']*bank' is the --concept-bank input",
        True,
    ),
    "output: a folder holding the dataset": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--output-dir", c.data.parent, "--overwrite"],
        r"--output-dir '[^']*' contains the --dataset input '[^']*data'; replacing it would destroy the input",
        True,
    ),
    "output: inside the dataset folder": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--output-dir", c.data / "iis"],
        r"--output-dir '[^']*data/iis' is inside the --dataset folder",
        True,
    ),
    "output: the cache folder": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--cache-dir", c.tmp / "out"],
        r"--output-dir '[^']*out' is the --cache-dir input",
        True,
    ),
    "output: exists, without --overwrite": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--output-dir", c.folder("out", {"iis.json": "{}"})],
        r"--output-dir '[^']*out' exists; pass --overwrite to replace it, or choose another folder",
        True,
    ),
    "output: --overwrite over a folder of other files": (
        lambda c: [
            "--model", c.model, "--dataset", c.data, "--overwrite",
            "--output-dir", c.folder("out", {"iis.json": "{}", "notes.txt": "mine"}),
        ],
        r"--output-dir '[^']*out' holds files iis-hf did not write \(notes\.txt\); --overwrite replaces only",
        True,
    ),
    "cache: read-only": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--cache-dir", c.folder("cache", read_only=True)],
        r"--cache-dir '[^']*cache' is read-only",
        True,
    ),
    "cache: a file": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--cache-dir", c.file("cache", b"x")],
        r"--cache-dir '[^']*cache' is a file, not a folder",
        True,
    ),
    "bank: concept_bank.json nested 100k deep": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--concept-bank", _deep_bank(c)],
        r"concept_bank\.json is nested too deeply to be read",
        True,
    ),
    "data: one class only (image folder)": (
        lambda c: ["--model", c.model, "--dataset", _one_class(c)],
        r"dataset folder [^ ]*one holds one class only \(class_0/\)",
        True,
    ),
    "data: class folders holding sub-folders": (
        lambda c: ["--model", c.model, "--dataset", _nested_folders(c)],
        r"dataset folder [^ ]*nested has images in nested folders \(e\.g\. class_0/photos/\)",
        True,
    ),
    "data: --dataset is a file": (
        lambda c: ["--model", c.model, "--dataset", c.file("data.csv", b"a,b\n")],
        r"dataset [^ ]*data\.csv is a file, not a folder",
        True,
    ),
    "data: --dataset empty": (lambda c: ["--model", c.model, "--dataset", ""], r"--dataset is empty", True),
    "concepts: --num-concepts 1": (
        lambda c: ["--model", c.model, "--dataset", c.data, "--num-concepts", "1"],
        r"--num-concepts must be an int >= 2, got 1: every head drops int\(C \* rho\) \+ 1 concepts",
        True,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(SCORE_CASES))
def test_score_refuses_bad_input_in_one_line_and_writes_nothing(case, ctx, world, capsys, monkeypatch):
    if case.startswith("device: cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    make_argv, message, before_work = SCORE_CASES[case]
    argv = [str(a) for a in make_argv(ctx)]
    if "--output-dir" not in argv:
        argv += ["--output-dir", str(ctx.tmp / "out")]
    if before_work:
        monkeypatch.setattr("iis_hf.pipeline.score_model", no_work_done)
    before, shared = snapshot(ctx.tmp), snapshot(world["root"])
    code, out, err = run_cli(["score", *FAST, *argv], capsys)
    line = one_error_line(err, "score")
    assert code == 2 and re.search(message, line), line
    assert out == ""
    assert snapshot(ctx.tmp) == before and snapshot(world["root"]) == shared, "something was written"
    assert not (ctx.tmp.parent / "PWNED").exists() and not (ctx.tmp / "PWNED").exists()


def no_work_done(*args, **kwargs):
    raise AssertionError("the work started although the input was bad")


# id -> (changes to --model/--image/--output, message regex, refused before the image is decoded)
EXPLAIN_CASES = {
    "output: the image itself": (lambda c: {"--output": c.image}, r"--output '[^']*image\.png' is the --image input", True),
    "output: a .jpg name": (
        lambda c: {"--output": c.tmp / "figure.jpg"},
        r"the figure is written as PNG, so the file name must end in \.png \(got '\.jpg'\)",
        True,
    ),
    "output: a folder": (lambda c: {"--output": c.folder("figures")}, r"--output '[^']*figures' is a folder; name a file", True),
    "output: a read-only file": (
        lambda c: {"--output": c.make_read_only(c.file("figure.png", b"old figure"))},
        r"--output '[^']*figure\.png' is read-only",
        True,
    ),
    "output: in a read-only folder": (
        lambda c: {"--output": c.folder("ro", read_only=True) / "figure.png"},
        r"--output '[^']*ro/figure\.png' cannot be created: '[^']*ro' is read-only",
        True,
    ),
    "output: inside the model folder": (
        lambda c: {"--model": c.copy(c.iis_model, "model"), "--output": c.tmp / "model" / "figure.png"},
        r"--output '[^']*model/figure\.png' is inside the --model folder",
        True,
    ),
    "output: empty": (lambda c: {"--output": ""}, r"--output is empty", True),
    "model: truncated model.safetensors": (
        lambda c: {"--model": (lambda f: (_truncate(f / "model.safetensors"), f)[1])(c.copy(c.iis_model, "model"))},
        r"model\.safetensors is truncated or not a safetensors file",
        True,
    ),
    "model: truncated iis_head.safetensors": (
        lambda c: {"--model": (lambda f: (_truncate(f / "iis_head.safetensors"), f)[1])(c.copy(c.iis_model, "model"))},
        r"iis_head\.safetensors is not a readable safetensors file",
        False,
    ),
    "image: truncated JPEG": (
        lambda c: {"--image": c.file("cut.jpg", truncated("JPEG"))},
        r"image file '[^']*cut\.jpg' (is truncated or corrupt|cannot be decoded)",
        False,
    ),
    "image: truncated PNG": (
        lambda c: {"--image": c.file("cut.png", truncated("PNG"))},
        r"image file '[^']*cut\.png' is truncated or corrupt",
        False,
    ),
    "image: zero-byte file": (lambda c: {"--image": c.file("empty.png", b"")}, r"'[^']*empty\.png' is empty \(0 bytes\)", False),
    "image: text saved as .png": (
        lambda c: {"--image": c.file("page.png", b"<html>404</html>\n")},
        r"'[^']*page\.png' is not an image Pillow can read",
        False,
    ),
    "image: a 14000 x 14000 PNG": (
        lambda c: {"--image": c.file("huge.png", c.bomb)},
        r"image file '[^']*huge\.png' is (14000 x 14000 = )?196000000 pixels, more than the limit",
        False,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(EXPLAIN_CASES))
def test_explain_refuses_bad_input_in_one_line_and_harms_no_file(case, ctx, world, capsys, monkeypatch):
    change, message, before_image = EXPLAIN_CASES[case]
    image = ctx.tmp / "image.png"
    shutil.copy(world["image"], image)
    ctx.image = image
    args = {"--model": world["iis_model"], "--image": image, "--output": ctx.tmp / "figure.png"}
    args.update(change(ctx))
    if before_image:  # (a module function called through the module: patching it leaks into no import)
        monkeypatch.setattr("iis_hf.images._decode_file", no_work_done)
    before, shared, image_bytes = snapshot(ctx.tmp), snapshot(world["root"]), image.read_bytes()
    code, out, err = run_cli(["explain", *[str(x) for kv in args.items() for x in kv]], capsys)
    line = one_error_line(err, "explain")
    assert code == 2 and re.search(message, line), line
    assert out == "" and image.read_bytes() == image_bytes
    assert snapshot(ctx.tmp) == before and snapshot(world["root"]) == shared, "something was written"


DEMO_CASES = {
    "--num-concepts 0": (["--num-concepts", "0"], r"--num-concepts must be an int >= 2, got 0"),
    "--num-concepts 1": (["--num-concepts", "1"], r"--num-concepts must be an int >= 2, got 1"),
    "--epochs 0": (["--epochs", "0"], r"--epochs must be an int >= 1 \(or None\), got 0"),
    "--train-epochs nan": (["--train-epochs", "nan"], r"--train-epochs must be a finite number > 0, got nan"),
    "--train-epochs inf": (["--train-epochs", "inf"], r"--train-epochs must be a finite number > 0, got inf"),
    "--train-epochs 0": (["--train-epochs", "0"], r"--train-epochs must be a finite number > 0, got 0"),
    "output: exists, without --overwrite": (
        ["--output-dir", "{existing}"],
        r"--output-dir '[^']*existing' exists; pass --overwrite",
    ),
    "output: --overwrite over a folder of other files": (
        ["--output-dir", "{foreign}", "--overwrite"],
        r"--output-dir '[^']*foreign' holds files iis-hf did not write \(notes\.txt\)",
    ),
    "output: a file": (["--output-dir", "{file}"], r"--output-dir '[^']*out\.txt' is a file, not a folder"),
    "output: empty": (["--output-dir", ""], r"--output-dir is empty"),
}


@pytest.mark.parametrize("case", list(DEMO_CASES))
def test_demo_refuses_bad_arguments_before_training(case, ctx, capsys, no_work):
    argv, message = DEMO_CASES[case]
    paths = {
        "existing": ctx.folder("existing", {"iis.json": "{}"}),
        "foreign": ctx.folder("foreign", {"iis.json": "{}", "notes.txt": "mine"}),
        "file": ctx.file("out.txt", b"notes"),
    }
    argv = [a.format(**paths) for a in argv]
    if "--output-dir" not in argv:
        argv += ["--output-dir", str(ctx.tmp / "demo")]
    before = snapshot(ctx.tmp)
    code, out, err = run_cli(["demo", "--no-progress", *argv], capsys)
    line = one_error_line(err, "demo")
    assert code == 2 and re.search(message, line), line
    assert out == "" and snapshot(ctx.tmp) == before


@pytest.mark.parametrize("existing", [False, True], ids=["new folder", "existing folder"])
def test_a_demo_failing_after_training_leaves_no_model_folder(ctx, capsys, monkeypatch, existing):
    """The demo trains (here: a stand-in that saves a tiny model, as the real training does), then the
    scoring fails: neither out/model/ nor a temporary folder may be left, and an earlier output stays."""
    import iis_hf.demo

    def train(data, output_dir, epochs, seed, progress):
        model = build_tiny_model("resnet", num_labels=10)
        model.save_pretrained(output_dir)
        return model, None

    def fail(*args, **kwargs):
        raise ValueError("scoring failed")

    monkeypatch.setattr(iis_hf.demo, "train_demo_model", train)
    monkeypatch.setattr("iis_hf.pipeline.score_model", fail)
    out = ctx.tmp / "demo"
    if existing:
        ctx.folder("demo", {"iis.json": '{"old": true}'})
    before = snapshot(ctx.tmp)
    code, _, err = run_cli(
        ["demo", "--no-progress", "--output-dir", out, *(["--overwrite"] * existing)], capsys
    )
    assert code == 2 and "scoring failed" in one_error_line(err, "demo")
    assert snapshot(ctx.tmp) == before and not (out / "model").exists()
    assert sorted(p.name for p in ctx.tmp.iterdir()) == (["demo"] if existing else [])


# ---------------------------------------------------------------------------------------------------
# faults simulated in-process: a full disk, before the work and in the middle of the last write


@pytest.mark.parametrize("flag", ["--output-dir", "--cache-dir"])
def test_a_full_disk_is_refused_before_any_work(ctx, world, capsys, monkeypatch, flag):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("iis_hf.preflight.shutil.disk_usage", lambda path: usage(10**9, 10**9, 0))
    monkeypatch.setattr("iis_hf.pipeline.score_model", no_work_done)
    argv = ["--model", world["model"], "--dataset", world["data"], "--output-dir", ctx.tmp / "out"]
    if flag == "--cache-dir":
        argv += ["--cache-dir", ctx.tmp / "cache"]
    before = snapshot(ctx.tmp)
    code, _, err = run_cli(["score", *FAST, *argv], capsys)
    line = one_error_line(err, "score")
    assert code == 2 and re.search(rf"{flag} '[^']*': no space left on the device holding", line), line
    assert snapshot(ctx.tmp) == before


@pytest.mark.parametrize("existing", [False, True], ids=["new folder", "existing folder"])
def test_a_disk_filling_up_during_the_last_write_is_one_line_and_leaves_the_folder_as_it_was(
    ctx, world, capsys, monkeypatch, existing
):
    import iis_hf.files

    save_file = iis_hf.files.save_file

    def full(tensors, filename, metadata=None):
        if "concept_bank" in os.path.basename(filename):
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(iis_hf.files, "save_file", full)
    out = ctx.tmp / "out"
    if existing:
        ctx.folder("out", {"iis.json": '{"old": true}', "iis_curve.png": "old"})
    before = snapshot(ctx.tmp)
    argv = ["--model", world["model"], "--dataset", world["data"], "--output-dir", out, "--overwrite"]
    code, out_text, err = run_cli(["score", *FAST, *argv], capsys)
    line = one_error_line(err, "score")
    assert code == 2 and re.search(r"path '[^']*out': no space left on device; free some space", line), line
    assert snapshot(ctx.tmp) == before and "wrote" not in out_text
    assert [p.name for p in ctx.tmp.iterdir()] == (["out"] if existing else []), "temporary folder left"


def test_a_disk_filling_up_while_caching_features_is_one_line_naming_the_cache(
    ctx, world, capsys, monkeypatch
):
    import iis_hf.files

    def full(tensors, filename, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(iis_hf.files, "save_file", full)
    argv = ["--model", world["model"], "--dataset", world["data"], "--output-dir", ctx.tmp / "out"]
    code, _, err = run_cli(["score", *FAST, *argv, "--cache-dir", ctx.tmp / "cache"], capsys)
    line = one_error_line(err, "score")
    assert code == 2 and re.search(
        r"path '[^']*/cache/[0-9a-f]+/\.chunk-\d+\.safetensors\.[^']*': no space", line
    )
    assert not (ctx.tmp / "out").exists() and not list((ctx.tmp / "cache").rglob("chunk-*"))


def test_debug_shows_the_traceback_and_still_exits_2(ctx, world, capsys):
    argv = ["--model", world["model"], "--dataset", world["data"], "--output-dir", ctx.tmp / "out"]
    code, _, err = run_cli(["--debug", "score", *FAST, *argv, "--device", "banana"], capsys)
    assert code == 2 and "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("iis-hf score: error: --device: unknown device 'banana'")
    code, _, err = run_cli(["score", *FAST, *argv, "--device", "banana"], capsys)
    assert code == 2 and "Traceback" not in err


@pytest.mark.parametrize("output", [".", ".."], ids=["the current folder", "its parent"])
def test_the_current_folder_is_never_an_output(ctx, world, capsys, monkeypatch, output):
    """Even holding nothing but iis-hf's outputs, `--output-dir .` would replace the folder one works in."""
    work = ctx.folder("work/here", {"iis.json": "{}"})
    monkeypatch.chdir(work)
    monkeypatch.setattr("iis_hf.pipeline.score_model", no_work_done)
    before = snapshot(ctx.tmp)
    argv = ["--model", world["model"], "--dataset", world["data"], "--output-dir", output, "--overwrite"]
    code, _, err = run_cli(["score", *FAST, *argv], capsys)
    line = one_error_line(err, "score")
    assert code == 2 and f"--output-dir '{output}' is the current folder or holds it" in line, line
    assert snapshot(ctx.tmp) == before


def test_an_os_error_anywhere_is_one_line(ctx, world, capsys, monkeypatch):
    """A failure of the machine the checks could not foresee (here: permission denied while reading the
    dataset) is one line with the path, the reason and the fix, not a traceback."""

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(world["data"] / "state.json"))

    monkeypatch.setattr("iis_hf.data.load_image_dataset", denied)
    argv = ["--model", world["model"], "--dataset", world["data"], "--output-dir", ctx.tmp / "out"]
    code, _, err = run_cli(["score", *FAST, *argv], capsys)
    line = one_error_line(err, "score")
    assert code == 2 and re.search(r"path '[^']*state\.json': permission denied; check its permissions", line)


# ---------------------------------------------------------------------------------------------------
# warnings where a number would mislead


def test_eval_classes_missing_from_train_are_warned_about(ctx, world, capsys):
    from datasets import ClassLabel, DatasetDict

    from iis_hf.score import UnseenClassWarning

    train = make_image_dataset(num_classes=3, per_class=8).cast_column("label", ClassLabel(num_classes=4))
    validation = make_image_dataset(num_classes=4, per_class=4, seed=1).filter(lambda r: r["label"] >= 2)
    DatasetDict(train=train, validation=validation).save_to_disk(str(ctx.tmp / "data"))
    argv = ["--model", world["model"], "--dataset", ctx.tmp / "data", "--output-dir", ctx.tmp / "out"]
    with pytest.warns(
        UnseenClassWarning, match=r"4 of 8 eval images belong to classes with no training image"
    ):
        code, _, err = run_cli(["score", *FAST, *argv, "--allow-chance"], capsys)
    assert code == 0, err


def test_heads_that_keep_no_concept_are_warned_about():
    from iis_hf import compute_iis
    from iis_hf.score import EmptyHeadWarning

    x, y = torch.randn(60, 8), torch.arange(60) % 3
    with pytest.warns(EmptyHeadWarning, match=r"with 4 concepts the heads at sparsity ratio\(s\) \[0\.8\]"):
        compute_iis(
            x[:45], y[:45], x[45:], y[45:], torch.randn(4, 8), sparsity_ratios=[0.0, 0.5, 0.8],
            epochs=1, progress=False, probe_min_steps=5,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# outputs: replaced whole, temporary folders of killed runs, file modes


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_every_output_file_gets_the_mode_the_umask_gives(ctx, world, capsys):
    """safetensors >= 0.7 writes its files 0600 whatever the umask; outputs must read like the rest."""
    out = ctx.tmp / "out"
    argv = ["--model", world["model"], "--dataset", world["data"], "--output-dir", out]
    code, _, err = run_cli(["score", *FAST, *argv], capsys)
    assert code == 0, err
    mask = current_umask()
    modes = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in [out, *out.rglob("*")]}
    assert "concept_bank/concept_bank.safetensors" in modes
    assert modes == {name: (0o777 if (out / name).is_dir() else 0o666) & ~mask for name in modes}, (
        f"umask {mask:o}: {modes}"
    )


def test_a_library_file_of_mode_0600_gets_the_umask_mode(tmp_path):
    from iis_hf.files import FILE_MODE, atomic_directory, save_safetensors_atomic

    with atomic_directory(tmp_path / "out") as folder:
        (folder / "private.bin").write_bytes(b"x")
        (folder / "private.bin").chmod(0o600)  # as safetensors or a Trainer writes them
        save_safetensors_atomic({"x": torch.ones(2)}, folder / "sub" / "t.safetensors")
    assert (tmp_path / "out" / "private.bin").stat().st_mode & 0o777 == FILE_MODE
    assert (tmp_path / "out" / "sub" / "t.safetensors").stat().st_mode & 0o777 == FILE_MODE


WRITER = """import sys
from iis_hf.files import atomic_directory
with atomic_directory(sys.argv[1]) as folder:
    (folder / "iis.json").write_text(sys.argv[2])
    print(folder.name, flush=True)
    sys.stdin.readline()
"""


def start_writer(out: Path, text: str) -> tuple[subprocess.Popen, str]:
    """A process inside `atomic_directory(out)`, its file written, waiting for a line to put it in place."""
    from conftest import cpu_subprocess_env

    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out), text],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=cpu_subprocess_env(),
    )  # fmt: skip
    return process, process.stdout.readline().strip()


def test_stale_temporary_folders_are_removed_but_a_live_writers_is_kept(tmp_path):
    """A writer killed inside `atomic_directory` leaves its temporary folder (and its lock file); the next
    writer of the folder removes them, its lock having died with its process. A live writer's folder is
    never touched: the next writer waits for the lock, then replaces the folder whole."""
    import threading

    from iis_hf.files import atomic_directory

    out = tmp_path / "out"
    names = {
        ".out.0123abcd-43.abcd1237.tmp": "removed",  # the previous release's name (<host>-<pid>)
        ".outer.abcd1240.tmp": "kept",  # another output's temporary folder
        ".out.v2.abcd1241.tmp": "kept",  # the folder `out.v2`'s, not ours
    }
    for name in names:
        (tmp_path / name).mkdir()
    killed, killed_folder = start_writer(out, "killed")
    killed.kill()
    killed.wait()
    assert (tmp_path / killed_folder).is_dir() and (tmp_path / ".out.lock").is_file()  # what SIGKILL leaves
    live, live_folder = start_writer(out, "live")  # not blocked by the dead writer's lock
    try:
        kept = sorted(name for name, fate in names.items() if fate == "kept")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, live_folder, ".out.lock"])
        second = threading.Thread(target=lambda: write_folder(atomic_directory, out, "second"))
        second.start()
        second.join(timeout=1.0)
        assert second.is_alive() and (tmp_path / live_folder).is_dir() and not out.exists()  # waits its turn
        live.stdin.write("\n")
        live.stdin.flush()
        assert live.wait(timeout=60) == 0
        second.join(timeout=60)
    finally:
        live.kill()
    assert not second.is_alive() and (out / "iis.json").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", *kept])  # no temporary, no lock


def write_folder(atomic_directory, out: Path, text: str) -> None:
    with atomic_directory(out) as folder:
        (folder / "iis.json").write_text(text)


def test_without_an_atomic_exchange_a_replacement_is_two_renames_and_recovers(tmp_path, monkeypatch):
    import iis_hf.files as files
    from iis_hf.files import atomic_directory, remove_stale_folders

    monkeypatch.setattr(files, "_exchange", lambda a, b: False)  # not Linux, or a file system without it
    out = tmp_path / "out"
    out.mkdir()
    (out / "iis.json").write_text("old")
    write_folder(atomic_directory, out, "new")
    assert (out / "iis.json").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # killed between the two renames: the folder in place waits beside, the next one in its temporary
    # folder; the next writer puts the first back, whole, and removes the second
    out.rename(tmp_path / ".out.abcd1234.old.tmp")
    (tmp_path / ".out.abcd1234.tmp").mkdir()
    (tmp_path / ".out.abcd1234.tmp" / "iis.json").write_text("newer")
    remove_stale_folders(out)
    assert (out / "iis.json").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # interrupted between them (Ctrl-C): the old folder is put back at once
    rename = os.rename

    def interrupted(source, target):
        if Path(source).suffixes[-2:] != [".old", ".tmp"] and Path(target) == out:
            raise KeyboardInterrupt
        rename(source, target)

    monkeypatch.setattr(files.os, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_folder(atomic_directory, out, "newer")
    assert (out / "iis.json").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_existing_output_is_replaced_whole_not_merged(ctx, world, capsys):
    out = ctx.folder("out", {"iis.json": "{}", "iis_old.json": "{}", "iis_curve.png": "old"})
    argv = ["--model", world["model"], "--dataset", world["data"], "--output-dir", out, "--overwrite"]
    code, _, err = run_cli(["score", *FAST, *argv], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["concept_bank", "iis.json", "iis_curve.png"]
    assert sorted(p.name for p in ctx.tmp.iterdir()) == ["out"]


# ---------------------------------------------------------------------------------------------------
# images: the same pixels from every entry point


def special_images(tmp_path: Path) -> dict[str, tuple[object, np.ndarray]]:
    """Inputs that are easy to decode wrongly, each with the 8-bit RGB pixels it must give."""
    base = picture(32)
    grey = base[..., 0]
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(base).save(tmp_path / "rotated.png", exif=exif.tobytes())
    return {
        "16-bit PNG": (tmp_path / "grey16.png", np.repeat(grey[..., None], 3, axis=-1)),
        "EXIF-rotated PNG": (tmp_path / "rotated.png", np.rot90(base, k=-1)),
        "float array in [0, 1]": (base.astype(np.float32) / 255.0, base),
        "uint16 array": (base.astype(np.uint16) * 257, base),
    }


def test_every_entry_point_gives_the_same_pixels(tmp_path, world):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    from iis_hf import extract_features
    from iis_hf.concepts.prototypes import prototype_fields
    from iis_hf.demo import image_classification_collator
    from iis_hf.explain import ConceptClassifier
    from iis_hf.images import load_image
    from iis_hf.training.transforms import ImageClassificationTransform

    model = IISModelForImageClassification.from_pretrained(world["iis_model"])
    processor = tiny_image_processor()
    classifier = ConceptClassifier(model, processor)
    for name, (source, expected) in special_images(tmp_path).items():
        reference = Image.fromarray(np.ascontiguousarray(expected))
        want = processor(images=[reference], return_tensors="pt")["pixel_values"]
        features = extract_features(model.backbone, [reference], image_processor=processor, progress=False)
        pair = extract_features(model.backbone, [reference] * 2, image_processor=processor, progress=False)
        assert np.array_equal(np.asarray(load_image(source)), expected), name
        if isinstance(source, Path):  # files: as a dataset column (decoded by datasets, or stored)
            typed = Features({"image": ImageFeature(), "label": ClassLabel(num_classes=2)})
            rows = Dataset.from_dict({"image": [str(source)] * 2, "label": [0, 1]}, features=typed)
            for decode in (True, False):
                data = rows.cast_column("image", ImageFeature(decode=decode))
                got = extract_features(model.backbone, data, image_processor=processor, progress=False)
                assert torch.equal(got.features, pair.features), (name, decode)
                transform = ImageClassificationTransform(processor, "image", "label")
                assert torch.equal(transform(data[:1])["pixel_values"][0], want[0]), (name, decode)
                collate = image_classification_collator(processor)
                assert torch.equal(collate([data[0]])["pixel_values"], want), (name, decode)
                bank = prototype_fields(model.backbone, data, image_processor=processor, images_per_class=1)
                same = prototype_fields(
                    model.backbone,
                    Dataset.from_dict({"image": [reference] * 2, "label": [0, 1]}, features=typed),
                    image_processor=processor,
                    images_per_class=1,
                )
                assert torch.equal(bank["vectors"], same["vectors"]), (name, decode)
        # a list of images or paths (extract_features), and explanations (explain, the app, iis-hf explain)
        got = extract_features(model.backbone, [source], image_processor=processor, progress=False)
        assert torch.equal(got.features, features.features), name
        assert torch.equal(classifier.representations(source), features.features), name
