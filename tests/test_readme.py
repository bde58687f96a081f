"""README.md, the documentation pages (docs/*.md) and metrics/iis/README.md as tested documents:
every ```python and ```bash block runs.

Why: a snippet nobody runs drifts from the library (undefined names, renamed flags, a GPU-only
setting). Each block is one test, named `<document>#<section anchor>:<index>` (the document without
`.md`, such as `README`, `docs/scoring` or `metrics/iis/README`; the index counts the python/bash
blocks of that section from 0), so a failure names the snippet that broke. Every page under docs/ is
tested but those `UNTESTED` names with the reason.

How a block runs, offline, on tiny random-init models and synthetic data (`tests/conftest.py`):
1. Text substitution: every name of `HUB_IDS` (a Hub id, a dataset name, another outside path),
   matched as a whole token, becomes its local stand-in; then `SIZES` shrinks a few sizes.
2. Lines matching `SKIPPED` (things that cannot run offline by nature) are left out, with the reason.
3. Python blocks are exec'd in-process in a fresh temporary working directory holding `WORKSPACE`
   (the files a snippet's prose says the reader has: `cat.png`, `out/finetuned`, ...). Namespaces:
   a block continues the namespace of the previous block of its section (they build on each other);
   a section's first block starts empty, or from the namespace the section named in `CONTINUES` ends
   with (it may be on another page), plus the names `GIVEN` lists for the section (the reader's own
   inputs, such as `features`, that the snippet's comments describe). Blocks of `>>>` prompts run as doctests.
4. Bash blocks run command by command with bash in a subprocess, in such a working directory (the
   repository root for `IN_REPO` sections), with this venv's bin first on PATH, `HF_HUB_OFFLINE=1`
   and one intra-op thread. A command matching `SERVERS` is started, its page must answer, and it is
   stopped.

The whole file took 15 minutes on this project's 2-core CPU shared with other jobs (fourteen `iis-hf`
subprocesses, each importing torch and transformers), so it runs when asked:
`IIS_HF_TEST_README=1 python -m pytest -q tests/test_readme.py` (docs/development.md, "Checks and CI").
"""

from __future__ import annotations

import contextlib
import doctest
import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, build_tiny_model, cpu_subprocess_env, save_tiny_model, tiny_image_processor

pytestmark = pytest.mark.skipif(
    os.environ.get("IIS_HF_TEST_README") != "1",
    reason="the documentation's snippets take minutes: run with IIS_HF_TEST_README=1",
)

# Pages of docs/ whose blocks are not run, and why.
UNTESTED = {
    "docs/RESULTS.md": "the experiments' report: its commands take 2 to 57 min and rewrite the report itself "
    "(tests/research/test_findings.py and tests/research/test_finetune_paper.py run them at tiny sizes)",
}
DOCUMENTS = (
    "README.md",
    *sorted(
        path.relative_to(REPO).as_posix()
        for path in (REPO / "docs").glob("*.md")
        if path.relative_to(REPO).as_posix() not in UNTESTED
    ),
    "metrics/iis/README.md",
)

# The one table of outside names: Hub ids, dataset names and paths of the reader's machine, mapped to
# the stand-ins `standins()` builds ("{s}": its folder, "{repo}": this checkout). Whole tokens only,
# so "cifar10" is replaced in `--dataset cifar10` but not in `out/vit-cifar10`.
HUB_IDS = {
    "google/vit-base-patch16-224": "{s}/models/vit",  # a tiny ViT classifier (3 labels)
    "google/vit-base-patch16-224-in21k": "{s}/models/vit-backbone",  # a bare tiny ViTModel, as in21k
    "facebook/dinov2-small": "{s}/models/dinov2",
    "microsoft/resnet-50": "{s}/models/resnet",
    "openai/clip-vit-base-patch32": "{s}/models/clip",  # tiny CLIPModel + word-level tokenizer
    "someone/vit-cifar10-iis": "{s}/cards/vit-cifar10-iis",  # a card scored on the cifar10 stand-in
    "cifar10": "{s}/data/cifar10",  # save_to_disk: columns img/label, 10 classes, train 300, test 250
    'evaluate.load("iis"': 'evaluate.load("{repo}/metrics/iis"',  # by path: no module cache needed
    'evaluate.load("accuracy"': 'evaluate.load("{s}/accuracy"',  # test_metric_ecosystem's stand-in
    "path/to/metrics/iis": "{repo}/metrics/iis",
    "path/to/iis-hf/tests": "{repo}/tests",  # the loopback Hub server (tests/hub_server.py)
    "path/to/concept_bank": "{s}/banks/vit",  # a prototype bank of the tiny ViT (D = 32)
    "/shared/fs/evaluate": "{s}/cache/evaluate",
    "~/.cache/iis": "{s}/cache/iis",
}

# Smaller sizes than the snippets give (regex -> replacement; "{port}": a free port).
SIZES = {
    r"\biis-hf demo\b": "iis-hf demo --train-epochs 1 --epochs 5",  # 35 s -> 27 s here
    r"--num_train_epochs 5\b": "--num_train_epochs 1",
    r"LearnedConcepts\(library, num_concepts=200\)": "LearnedConcepts(library, num_concepts=20)",  # 22 s -> 4 s
    r"--port 7860\b": "--port {port}",  # another app may hold 7860
}

# Lines (Python) and commands (bash, each part of an `a && b` on its own) that cannot run here.
SKIPPED = {
    r"^pip (install|wheel)\b": "installs packages from an index (network)",
    r"push_to_hub\((?!\"user/)": "uploads to the Hub (network, credentials)",  # "user/...": the loopback Hub's
    r"<user>": "needs a Space the reader published (network)",
    r"^(accelerate launch|torchrun --nnodes)": "needs several GPUs or machines",
    r"^python -m pytest -q tests\b": "the whole test suite (about 10 min; it runs this file only with IIS_HF_TEST_README=1)",
    r"^bash \.ci/run\b": "builds a fresh virtual environment (network, about 20 min)",
    r"(reproduce_findings|finetune_paper|findings_real_backbones)\.py": "2 to 57 min (tests/research/test_findings.py, "
    "tests/research/test_finetune_paper.py and tests/research/test_findings_real.py run them at tiny sizes)",
    r"convert_efficientnet_lite\.py": "writes a model folder (tests/research/test_efficientnet_lite.py runs the converter)",
    r"(finding2_real_backbone|head_budget_check)\.py": "an hour or more of ImageNet fine-tuning or scoring "
    "(tests/research/test_finding2_real.py runs it at tiny size)",
}
SKIPPED_BLOCKS = {  # whole blocks, by id
    "metrics/iis/README#how-to-publish-as-a-space-so-evaluateloaduseriis-works-online:0": (
        "builds a wheel and uploads it to a Space (network, credentials)"
    ),
}
SERVERS = {r"^iis-hf app\b": "http://127.0.0.1:{port}/"}  # started, asked for the page, stopped
IN_REPO = {  # run in the repository root
    "docs/development#checks-and-ci",
    "docs/reproducing#reproducing-the-papers-findings",
}
CONTINUES = {  # section -> the section whose namespace it builds on
    "docs/concepts-and-explanations#text-and-learned-concepts": "docs/scoring#python",
    "docs/concepts-and-explanations#predictions-from-concepts-and-explanations": "docs/scoring#python",
    "docs/metric#inside-a-plain-trainer": "docs/metric#usage",
    "metrics/iis/README#default-config-you-trained-the-interpretation-heads": "metrics/iis/README#how-to-use",
    "metrics/iis/README#classifier-config-and-evaluatecombine-with-accuracy": "metrics/iis/README#how-to-use",
    "metrics/iis/README#representations-config-the-metric-trains-the-probe-and-the-heads": (
        "metrics/iis/README#how-to-use"
    ),
    "metrics/iis/README#examples": "metrics/iis/README#how-to-use",
}
PALETTE = np.array(  # one colour per class, far apart
    [230, 25, 75, 60, 180, 75, 255, 225, 25, 0, 130, 200, 245, 130, 48, 145, 30, 180, 70, 240, 240,
     240, 50, 230, 210, 245, 60, 128, 128, 128]
).reshape(10, 3)  # fmt: skip
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
COMMAND_TIMEOUT_S = 180
SERVER_WAIT_S = 90


# ---------------------------------------------------------------------------------------------------
# the blocks
@dataclass(frozen=True)
class Block:
    document: str  # "README", "docs/scoring", ..., "metrics/iis/README"
    section: str  # "<document>#<anchor of the heading above the block>"
    index: int  # among the python/bash blocks of the section
    language: str
    line: int  # of the opening fence
    source: str

    @property
    def id(self) -> str:
        return f"{self.section}:{self.index}"


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def read_blocks(document: str) -> list[Block]:
    """The ```python and ```bash blocks of a Markdown file, with their section and index."""
    name = document.removesuffix(".md")
    blocks: list[Block] = []
    section, counts, fence, body, start = f"{name}#", {}, None, [], 0
    for number, line in enumerate((REPO / document).read_text(encoding="utf-8").splitlines(), 1):
        if fence is None and line.startswith("```"):
            fence, body, start = line[3:].strip(), [], number
        elif fence is not None and line.startswith("```"):
            if fence in ("python", "bash"):
                index = counts.get(section, 0)
                counts[section] = index + 1
                blocks.append(Block(name, section, index, fence, start, "\n".join(body) + "\n"))
            fence = None
        elif fence is not None:
            body.append(line)
        elif line.startswith("#"):
            section = f"{name}#{anchor(line.lstrip('#'))}"
    return blocks


BLOCKS = [block for document in DOCUMENTS for block in read_blocks(document)]


def test_the_tables_name_existing_sections_and_blocks():
    """A renamed heading must not silently drop a block's namespace, skip or working directory."""
    sections = {block.section for block in BLOCKS}
    named = set(CONTINUES) | set(CONTINUES.values()) | set(GIVEN) | IN_REPO
    assert named <= sections, sorted(named - sections)
    assert set(SKIPPED_BLOCKS) <= {block.id for block in BLOCKS}
    assert set(WRITES) <= sections
    assert set(UNTESTED) <= {path.relative_to(REPO).as_posix() for path in (REPO / "docs").glob("*.md")}
    assert len(BLOCKS) >= 30, [block.id for block in BLOCKS]


def test_every_page_with_snippets_is_read():
    """README, the metric card and each docs/ page with a python or bash block (but `UNTESTED`)."""
    documents = {block.document for block in BLOCKS}
    assert {"README", "metrics/iis/README", "docs/scoring", "docs/fine-tuning", "docs/metric"} <= documents
    assert not any(name.removesuffix(".md") in documents for name in UNTESTED)


def test_every_size_and_skip_pattern_still_matches_a_snippet():
    """A pattern that matches nothing any more is a README change this file has not caught up with."""
    pieces = [
        part.split(" #")[0].strip()
        for block in BLOCKS
        for line in block.source.replace("\\\n", " ").splitlines()
        for part in line.split(" && ")
    ]
    for pattern in [*SIZES, *SKIPPED, *SERVERS]:
        assert any(re.search(pattern, piece) for piece in pieces), pattern


# ---------------------------------------------------------------------------------------------------
# substitutions and skips
def substitute(text: str, paths: dict[str, str]) -> str:
    """`HUB_IDS` (whole tokens only; a call's arguments may start on the next line) then `SIZES`."""
    for name in sorted(HUB_IDS, key=len, reverse=True):  # the longest first: "...-224-in21k"
        local = HUB_IDS[name].format(**paths)
        pattern = re.escape(name).replace(r"\(", r"\((\s*)")
        text = re.sub(rf"(?<![\w./-]){pattern}(?![\w./-])", lambda m, v=local: keep_space(m, v), text)
    for pattern, replacement in SIZES.items():
        text = re.sub(pattern, replacement.format(**paths), text, flags=re.MULTILINE)
    return text


def keep_space(match: re.Match, local: str) -> str:
    """`local`, with the line break a matched `load(\n    "name"` had after its parenthesis."""
    return local.replace("(", "(" + match.group(1), 1) if match.groups() else local


def local_paths(standins: Path) -> dict[str, str]:
    """The values of the placeholders in `HUB_IDS`, `SIZES` and `SERVERS`."""
    return {"s": str(standins), "repo": str(REPO), "port": str(free_port())}


def skip_reason(code: str) -> str | None:
    """Why a line or command cannot run offline (`SKIPPED`), or None."""
    code = code.split(" #")[0].strip()
    return next((why for pattern, why in SKIPPED.items() if re.search(pattern, code)), None)


def shell_commands(source: str) -> Iterator[tuple[str, str | None]]:
    """(command, skip reason or None) of a bash block: continuation lines joined, comments and
    blank lines dropped, skipped parts of an `a && b` left out of the command."""
    for line in source.replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert "<<" not in line, "heredocs are not split into commands: skip the block in SKIPPED_BLOCKS"
        parts = line.split(" && ")
        kept = [part for part in parts if skip_reason(part) is None]
        for part in parts:
            if skip_reason(part) is not None:
                yield part.split(" #")[0].strip(), skip_reason(part)
        if kept:
            yield " && ".join(kept).strip(), None


def python_source(source: str) -> tuple[str, list[str]]:
    """The block with its skipped lines (each a whole statement) replaced by `pass`, and the reasons."""
    lines, skipped = [], []
    for line in source.splitlines():
        reason = skip_reason(line)
        if reason is None:
            lines.append(line)
        else:
            indent = line[: len(line) - len(line.lstrip())]
            lines.append(f"{indent}pass  # skipped: {reason}")
            skipped.append(f"{line.strip()}: {reason}")
    return "\n".join(lines) + "\n", skipped


# ---------------------------------------------------------------------------------------------------
# the stand-ins: tiny models, data, a card, a bank, and the files of the reader's working directory
def cifar10_like(per_class: int, seed: int, size: int = 32):
    """cifar10's schema (`img`, `label` with its 10 names) over images whose class is a colour."""
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(len(CLASSES)):
        for _ in range(per_class):
            pixels = rng.integers(0, 40, size=(size, size, 3))
            x0, y0 = rng.integers(0, size // 2, size=2)
            pixels[y0 : y0 + size // 2, x0 : x0 + size // 2] = PALETTE[label]
            images.append(PILImage.fromarray(pixels.astype(np.uint8)))
            labels.append(label)
    features = Features({"img": Image(), "label": ClassLabel(names=CLASSES)})
    return Dataset.from_dict({"img": images, "label": labels}, features=features)


def iis_model_folder(folder: Path, data, seed: int) -> None:
    """What `IISTrainer.save_model` writes with its default `iis_sparsity_ratios` (backbone, a head at
    0.5 only, concept bank, iis.json), built directly: a tiny ViT with cifar10's labels over 24
    prototype concepts. A snippet asking for another ratio's head fails here as it would for a reader."""
    import json

    import iis_hf

    backbone = build_tiny_model("vit", num_labels=len(CLASSES), seed=seed)
    backbone.config.id2label = dict(enumerate(CLASSES))
    backbone.config.label2id = {name: i for i, name in enumerate(CLASSES)}
    processor = tiny_image_processor()
    bank = iis_hf.ConceptBank.from_prototypes(
        backbone, data, image_processor=processor, images_per_class=2, num_concepts=24, progress=False
    )
    model = iis_hf.IISModelForImageClassification(backbone, bank, [0.5]).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    report = {"iis": 0.6, "standard_accuracy": 0.9, "accuracies": [0.8, 0.6], "sparsity_ratios": [0.5, 0.9]}
    (folder / "iis.json").write_text(json.dumps(report), encoding="utf-8")


def image_folder(folder: Path, per_class: int) -> None:
    """datasets' `imagefolder` layout: one sub-folder of PNGs per class."""
    for i, row in enumerate(cifar10_like(per_class, seed=3).select(range(0, 10 * per_class))):
        name = CLASSES[row["label"]]
        (folder / name).mkdir(parents=True, exist_ok=True)
        row["img"].save(folder / name / f"{i}.png")


def write_card(folder: Path, dataset: str) -> None:
    """A model card whose model-index holds an IIS measured with `iis-hf compare`'s defaults on the
    cifar10 stand-in (as `tests/test_compare.py` writes one), so `card:` entries are comparable."""
    from huggingface_hub import ModelCard, ModelCardData

    import iis_hf
    from iis_hf.data import load_scoring_splits
    from iis_hf.model_card import eval_results

    splits = load_scoring_splits(dataset)
    config = iis_hf.ScoringConfig(progress=False)
    board = iis_hf.compare_models(
        {"vit": str(folder.parents[1] / "models" / "vit")}, splits.train, splits.eval, config,
        data_settings=splits.settings(),
    )  # fmt: skip
    result = board.entries[0].result
    split = result.settings["data"]["eval_split"]
    data = ModelCardData(
        model_name=folder.name, eval_results=eval_results(result, None, dataset, None, split)
    )
    folder.mkdir(parents=True)
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {folder.name}\n").save(folder / "README.md")


def build_models(root: Path) -> None:
    """The Hub models of `HUB_IDS`, tiny and random-init."""
    from test_text_concepts import save_tiny_clip

    save_tiny_model(root / "models" / "vit", "vit")
    save_tiny_model(root / "models" / "vit-backbone", "vit", head=False)
    save_tiny_model(root / "models" / "dinov2", "dinov2")
    save_tiny_model(root / "models" / "resnet", "resnet")
    save_tiny_clip(root / "models" / "clip", words=["red", "striped", "wheel", "fur"])


def build_data(root: Path) -> None:
    """The cifar10 stand-in, the bank of `path/to/concept_bank`, the accuracy module, caches."""
    from datasets import DatasetDict
    from test_metric_ecosystem import ACCURACY

    import iis_hf
    from iis_hf.features.backbones import load_vision_model

    cifar = DatasetDict(train=cifar10_like(30, seed=0), test=cifar10_like(25, seed=1))
    cifar.save_to_disk(str(root / "data" / "cifar10"))
    model = load_vision_model(str(root / "models" / "vit"))
    bank = iis_hf.ConceptBank.from_prototypes(
        model, cifar["train"], image_processor=tiny_image_processor(), images_per_class=2, num_concepts=20,
        progress=False,
    )  # fmt: skip
    bank.save_pretrained(root / "banks" / "vit")
    (root / "accuracy").mkdir()
    (root / "accuracy" / "accuracy.py").write_text(ACCURACY, encoding="utf-8")
    for cache in ("evaluate", "iis"):
        (root / "cache" / cache).mkdir(parents=True)
    write_card(root / "cards" / "vit-cifar10-iis", str(root / "data" / "cifar10"))


def build_workspace(root: Path) -> None:
    """The files `WORKSPACE` names, under `root`."""
    from datasets import DatasetDict

    from iis_hf.data import load_digits_dataset
    from iis_hf.demo import demo_image_processor, demo_model

    for i, name in enumerate(("cat.png", "a.png", "b.png")):
        cifar10_like(1, seed=10 + i, size=48)[3 * i]["img"].save(root / name)
    data = cifar10_like(4, seed=2)
    for name, seed in (("out/finetuned", 0), ("out/other", 1)):
        iis_model_folder(root / name, data, seed)
    save_tiny_model(root / "my-finetuned-model", "vit", num_labels=len(CLASSES))
    save_tiny_model(root / "my-model", "resnet", num_labels=len(CLASSES))
    image_folder(root / "images_by_class", per_class=10)
    cifar10_like(10, seed=4).save_to_disk(str(root / "saved_with_save_to_disk"))
    digits = load_digits_dataset()
    digits = DatasetDict(train=digits["train"].select(range(300)), test=digits["test"].select(range(100)))
    digits.save_to_disk(str(root / "digits"))
    for name, seed in (("demo_random", 0), ("demo_output/model", 1)):
        demo_model(10, seed).save_pretrained(root / name)
        demo_image_processor().save_pretrained(root / name)


# What a fresh working directory holds (links into one copy built by `build_workspace`).
WORKSPACE = {
    "cat.png": "a synthetic 48 x 48 image (also a.png, b.png)",
    "a.png": "",
    "b.png": "",
    "out/finetuned": "an IIS model folder (tiny ViT, cifar10's labels, a head at 0.5 as by default, iis.json)",
    "out/other": "another one (other weights)",
    "my-finetuned-model": "a tiny ViT classifier",
    "my-model": "a tiny ResNet classifier",
    "images_by_class": "imagefolder layout, 10 classes x 10 PNGs",
    "saved_with_save_to_disk": "a save_to_disk Dataset, 10 classes x 10 images",
    "digits": "load_digits_dataset() saved with save_to_disk: 300 train and 100 test digits (of 1,347 / 450)",
    "demo_random": "iis_hf.demo.demo_model(10, 0) with demo_image_processor()",
    "demo_output/model": "demo_model(10, 1), a stand-in for the model `iis-hf demo` trains",
}


WRITES = {"README#set-up": ("demo_output",)}  # `iis-hf demo` writes demo_output/ itself


@pytest.fixture(scope="session")
def standins(tmp_path_factory) -> Path:
    """Every stand-in, built once: models, data, card, bank (`HUB_IDS`) and the workspace files."""
    root = tmp_path_factory.mktemp("readme-standins")
    build_models(root)
    build_data(root)
    (root / "workspace" / "out").mkdir(parents=True)
    (root / "workspace" / "demo_output").mkdir()
    build_workspace(root / "workspace")
    missing = [name for name in WORKSPACE if not (root / "workspace" / name).exists()]
    assert not missing, missing
    return root


def fresh_workspace(standins: Path, folder: Path, section: str) -> Path:
    """A working directory with a link to each `WORKSPACE` entry (but those the section writes
    itself, `WRITES`); what a snippet writes stays there."""
    for name in WORKSPACE:
        if any(name.startswith(written) for written in WRITES.get(section, ())):
            continue
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(standins / "workspace" / name)
    return folder


# ---------------------------------------------------------------------------------------------------
# the reader's own inputs, by section
def reader_inputs(s: Path) -> dict[str, object]:
    """`features`/`labels` (300 x 32 representations of the tiny ViT on the cifar10 stand-in),
    `logits` and `head_labels` of the same images, a bank, and a tiny ResNet with what a `Trainer`
    needs (`args`, raw `train_dataset`/`eval_dataset`, `collate_fn`, `processor`)."""
    from datasets import load_from_disk
    from transformers import TrainingArguments

    import iis_hf
    from iis_hf.demo import image_classification_collator
    from iis_hf.features.backbones import load_vision_model

    cifar = load_from_disk(str(s / "data" / "cifar10"))
    processor = tiny_image_processor()
    vit = load_vision_model(str(s / "models" / "vit"))
    extracted = iis_hf.extract_features(vit, cifar["train"], image_processor=processor, progress=False)
    with torch.no_grad():
        logits = vit.classifier(extracted.features)
    predicted = logits.argmax(-1).numpy()
    resnet = build_tiny_model("resnet", num_labels=len(CLASSES))
    return {
        "features": extracted.features.numpy(),
        "labels": extracted.labels.numpy(),
        "bank_vectors_or_path": str(s / "banks" / "vit"),
        "logits": logits,
        "head_labels": np.stack([predicted, np.roll(predicted, 1)], axis=1),
        "model": resnet,
        "processor": processor,
        "args": TrainingArguments(
            output_dir="trainer", report_to=[], use_cpu=True, remove_unused_columns=False
        ),
        "train_dataset": cifar["train"],
        "eval_dataset": cifar["test"],  # 250 images: the "representations" config scores 50
        "collate_fn": image_classification_collator(processor, image_column="img"),
    }


def representations(s: Path) -> dict[str, object]:
    """`train_features`/`train_labels` and `eval_features`/`eval_labels`: the tiny ViT's representations
    of the cifar10 stand-in's train (300) and test (250) images."""
    from datasets import load_from_disk

    import iis_hf
    from iis_hf.features.backbones import load_vision_model

    cifar = load_from_disk(str(s / "data" / "cifar10"))
    vit = load_vision_model(str(s / "models" / "vit"))
    train, test = (
        iis_hf.extract_features(vit, cifar[split], image_processor=tiny_image_processor(), progress=False)
        for split in ("train", "test")
    )
    return {
        "train_features": train.features,
        "train_labels": train.labels,
        "eval_features": test.features,
        "eval_labels": test.labels,
    }


def two_hundred_eval_images(s: Path) -> dict[str, object]:
    """`eval_dataset`: 200 of the cifar10 stand-in's test images, 20 per class, where the metric's
    default eval_fraction (0.2) would score 40, fewer than the 50 it needs."""
    from datasets import load_from_disk

    test = load_from_disk(str(s / "data" / "cifar10"))["test"]
    labels = np.asarray(test["label"])
    rows = sorted(i for c in range(len(CLASSES)) for i in np.flatnonzero(labels == c)[:20].tolist())
    return {"eval_dataset": test.select(rows)}


def one_process(_s: Path) -> dict[str, object]:
    """One process (`world_size` 1, `rank` 0), two ratios, a `loader` of two batches of heads'
    labels, references and the probe's labels."""
    heads, references, probe = [[0, 0], [1, 1], [2, 0], [1, 1]], [0, 1, 2, 2], [0, 1, 2, 2]
    loader = [(heads[:2], references[:2], probe[:2]), (heads[2:], references[2:], probe[2:])]
    return {"world_size": 1, "rank": 0, "ratios": [0.0, 0.5], "loader": loader}


def classifier_batches(_s: Path) -> dict[str, object]:
    """A `loader` of two batches of a classifier's logits, references and two heads' labels."""
    logits, references, heads = torch.eye(3)[[0, 1, 2, 0]], [0, 1, 2, 2], [[0, 0], [1, 1], [2, 0], [1, 1]]
    return {"loader": [(logits[:2], references[:2], heads[:2]), (logits[2:], references[2:], heads[2:])]}


GIVEN: dict[str, Callable[[Path], dict[str, object]]] = {  # section -> its reader's inputs
    "README#in-python-score_model-and-compute_iis": representations,
    "README#fine-tuning-iistrainer": reader_inputs,
    "docs/metric#usage": reader_inputs,
    "docs/metric#inside-a-plain-trainer": two_hundred_eval_images,
    "metrics/iis/README#default-config-you-trained-the-interpretation-heads": one_process,
    "metrics/iis/README#classifier-config-and-evaluatecombine-with-accuracy": classifier_batches,
    "metrics/iis/README#representations-config-the-metric-trains-the-probe-and-the-heads": reader_inputs,
    "metrics/iis/README#inside-a-plain-trainer": reader_inputs,
}


# ---------------------------------------------------------------------------------------------------
# running python blocks
NAMESPACES: dict[str, dict | BaseException] = {}  # block id -> the namespace it left (or its failure)


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def python_blocks(section: str) -> list[Block]:
    return [block for block in BLOCKS if block.section == section and block.language == "python"]


def namespace_before(block: Block, standins: Path, folders) -> dict:
    """The namespace a block starts from: its section's previous block's, else `CONTINUES` + `GIVEN`."""
    earlier = [other for other in python_blocks(block.section) if other.index < block.index]
    if earlier:
        return dict(namespace_after(earlier[-1], standins, folders))
    namespace: dict = {"__name__": "__readme__"}
    if block.section in CONTINUES:
        namespace.update(namespace_after(python_blocks(CONTINUES[block.section])[-1], standins, folders))
    if block.section in GIVEN:
        namespace.update(GIVEN[block.section](standins))
    return namespace


def namespace_after(block: Block, standins: Path, folders) -> dict:
    """Run a python block once (its predecessors first) and keep the namespace it leaves."""
    if block.id not in NAMESPACES:
        try:
            NAMESPACES[block.id] = run_python(block, standins, folders)
        except BaseException as err:
            NAMESPACES[block.id] = err
            raise
    result = NAMESPACES[block.id]
    if isinstance(result, BaseException):
        raise RuntimeError(f"{block.id}, which this block builds on, failed") from result
    return result


def run_python(block: Block, standins: Path, folders) -> dict:
    """exec (or doctest) the substituted block in a fresh workspace; tracebacks name README's lines."""
    code, skipped = python_source(substitute(block.source, local_paths(standins)))
    namespace = namespace_before(block, standins, folders)
    filename = str(REPO / f"{block.document}.md")
    with working_directory(fresh_workspace(standins, folders.mktemp("block"), block.section)):
        if code.lstrip().startswith(">>>"):
            run_doctest(block, code, namespace, filename)
        else:
            exec(compile("\n" * block.line + code, filename, "exec"), namespace)
    for line in skipped:
        print(f"{block.id}: skipped {line}")
    return namespace


def run_doctest(block: Block, code: str, namespace: dict, filename: str) -> None:
    """A block of `>>>` prompts: each example's output must match what the block shows."""
    test = doctest.DocTestParser().get_doctest(code, namespace, block.id, filename, block.line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    runner.run(test, out=report.write, clear_globs=False)
    assert runner.failures == 0, report.getvalue()


# ---------------------------------------------------------------------------------------------------
# running bash blocks
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shell_env() -> dict[str, str]:
    """This venv's bin first on PATH, offline, CPU only, one intra-op thread (the tests' setting)."""
    env = cpu_subprocess_env()
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_EVALUATE_OFFLINE="1",
        OMP_NUM_THREADS="1",
        GRADIO_ANALYTICS_ENABLED="False",
        MPLBACKEND="Agg",
    )
    return env


def run_command(block: Block, command: str, cwd: Path) -> None:
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=cwd,
        env=shell_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert result.returncode == 0, (
        f"{block.id}: `{command}` exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )


def check_server(block: Block, command: str, cwd: Path, url: str) -> None:
    """Start a server command, wait until its page answers 200, stop it."""
    log = cwd / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"], cwd=cwd, env=shell_env(), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + SERVER_WAIT_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"{block.id}: `{command}` did not answer at {url}:\n{log.read_text()[-3000:]}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_bash(block: Block, standins: Path, folder: Path) -> None:
    """Each runnable command of the block in turn; skipped ones are reported, an all-skipped block
    is a skip."""
    paths = local_paths(standins)
    commands = list(shell_commands(substitute(block.source, paths)))
    skipped = [f"`{command}`: {why}" for command, why in commands if why is not None]
    runnable = [command for command, why in commands if why is None]
    for line in skipped:
        print(f"{block.id}: skipped {line}")
    if not runnable:
        pytest.skip("; ".join(skipped))
    cwd = REPO if block.section in IN_REPO else fresh_workspace(standins, folder, block.section)
    for command in runnable:
        server = next((url for pattern, url in SERVERS.items() if re.search(pattern, command)), None)
        if server is None:
            run_command(block, command, cwd)
        else:
            check_server(block, command, cwd, server.format(**paths))


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_readme_block_runs(block: Block, standins: Path, tmp_path_factory, tmp_path):
    """Each block of README.md, docs/*.md and metrics/iis/README.md runs as written, bar the documented
    changes."""
    if block.id in SKIPPED_BLOCKS:
        pytest.skip(SKIPPED_BLOCKS[block.id])
    if block.language == "python":
        namespace_after(block, standins, tmp_path_factory)
    else:
        run_bash(block, standins, tmp_path)
