"""Bad input, end to end (issue 7): one table over the Python API, the evaluate metric, the command
line, the Trainer arguments and the artefacts on disk.

Each bad input must give one clear message naming the problem (a ValueError or TypeError in Python;
one ``iis-hf ...: error:`` line on stderr and exit code 2 on the command line) and leave no partial
output. A second table holds inputs that look odd but must work: images of mixed sizes and modes,
ratios given out of order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny_model, make_image_dataset, tiny_image_processor
from trainer_utils import make_args, random_bank

from iis_hf import (
    ConceptBank,
    IISModelForImageClassification,
    IISResult,
    IISTrainer,
    InterpretationHead,
    compute_iis,
    extract_features,
    inherent_interpretability_score,
)
from iis_hf.cli import main
from iis_hf.heads import InterpretationHeads

REPO = Path(__file__).resolve().parents[1]
FAST = ["--epochs", "2", "--num-concepts", "10", "--images-per-class", "2", "--no-progress"]


# ---------------------------------------------------------------------------------------------------
# inputs shared by the cases (built once)


def planted(n=60, dim=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    features = rng.normal(size=(n, dim)) + np.eye(dim)[labels] * 3.0
    return features.astype(np.float32), labels


def image_dataset_from(images, labels, num_classes=3):
    from datasets import ClassLabel, Dataset, Features, Image

    features = Features({"image": Image(), "label": ClassLabel(num_classes=num_classes)})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def mixed_images(per_class=6, seed=0):
    """Greyscale, RGBA, palette and RGB images of different sizes; the class is the brightness."""
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(3):
        for i in range(per_class):
            h, w = (int(s) for s in rng.integers(12, 64, size=2))
            base = rng.integers(0, 40, size=(h, w, 3)) + 90 * label
            image = PILImage.fromarray(base.astype(np.uint8))
            image = [image, image.convert("L"), image.convert("RGBA"), image.convert("P")][i % 4]
            images.append(image)
            labels.append(label)
    return images, labels


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is as fast, and on a busy shared machine two threads that wait
    for each other at every operation made a CLI run here take 35 s instead of 0.5 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_models):
    import transformers

    root = tmp_path_factory.mktemp("bad_inputs")
    found = {"root": root, "vit": tiny_models("vit")}
    found["data"] = str(root / "data")
    make_image_dataset(num_classes=3, per_class=8).save_to_disk(found["data"])

    bert = transformers.BertModel(
        transformers.BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    bert.save_pretrained(root / "bert")
    found["bert"], found["bert_model"] = str(root / "bert"), bert

    nan_vit = build_tiny_model("vit")
    with torch.no_grad():
        nan_vit.vit.layernorm.weight.fill_(float("nan"))
    nan_vit.save_pretrained(root / "nan-vit")
    tiny_image_processor().save_pretrained(root / "nan-vit")
    found["nan_vit"] = str(root / "nan-vit")

    empty = image_dataset_from([], [])
    empty.save_to_disk(str(root / "empty"))
    found["empty"] = str(root / "empty")

    from datasets import DatasetDict

    DatasetDict(train=make_image_dataset(num_classes=3, per_class=8), test=empty).save_to_disk(
        str(root / "empty-split")
    )
    found["empty_split"] = str(root / "empty-split")
    (root / "no-images" / "class_a").mkdir(parents=True)
    found["no_images"] = str(root / "no-images")

    colours = make_image_dataset(num_classes=3, per_class=8)
    unlabelled = image_dataset_from(
        colours["image"], [-1 if i % 5 == 0 else lab for i, lab in enumerate(colours["label"])]
    )
    unlabelled.save_to_disk(str(root / "minus-one"))
    found["minus_one"] = str(root / "minus-one")

    images, labels = mixed_images()
    image_dataset_from(images, labels).save_to_disk(str(root / "mixed"))
    found["mixed"] = str(root / "mixed")

    random_bank(dim=16, num=12).save_pretrained(root / "bank16")  # for a 16-dimensional model
    found["bank16"] = str(root / "bank16")

    IISModelForImageClassification(build_tiny_model("vit"), random_bank()).save_pretrained(root / "iis-model")
    found["iis_model"] = root / "iis-model"
    return found


class Context:
    """What a case may use: the shared inputs, and `tmp` (this test's folder) for its own damage."""

    def __init__(self, inputs, tmp: Path):
        self.__dict__.update(inputs)
        self.tmp = tmp

    def copy(self, source, name: str) -> Path:
        import shutil

        target = self.tmp / name
        shutil.copytree(source, target)
        return target

    def bank(self, name: str = "bank") -> Path:
        ConceptBank(vectors=torch.randn(6, 8), names=list("abcdef")).save_pretrained(self.tmp / name)
        return self.tmp / name

    def edit_json(self, path: Path, change) -> None:
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    def truncate(self, path: Path) -> None:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder` (datasets' own index caches `cache-*.arrow` aside)."""
    return {
        str(p.relative_to(folder)): (
            p.stat().st_size if p.is_file() else 0,
            p.stat().st_mtime_ns if p.is_file() else 0,
        )
        for p in folder.rglob("*")
        if not (p.name.startswith("cache-") and p.suffix == ".arrow")
    }


# ---------------------------------------------------------------------------------------------------
# the table: id -> (prepare(ctx) -> a call that must fail, exception type, message regex)


def _compute(**change):
    x, y = planted()
    kwargs = dict(
        train_features=x[:45], train_labels=y[:45], eval_features=x[45:], eval_labels=y[45:],
        concepts=np.random.default_rng(1).normal(size=(6, 8)), epochs=1, progress=False, probe_min_steps=50,
    )  # fmt: skip
    kwargs.update(change)
    return lambda: compute_iis(**kwargs)


def _nan_rows():
    x, _ = planted()
    x = x[:45].copy()
    x[7, 3] = np.nan
    return x


def _inf_rows():
    x, _ = planted()
    x = x[45:].copy()
    x[2, 0] = np.inf
    return x


def _metric(config=None):
    import evaluate

    return evaluate.load(str(REPO / "metrics" / "iis"), config)


def _pickled_bank(ctx):
    folder = ctx.bank()
    (folder / "concept_bank.pkl").write_bytes(b"\x80\x04K\x01.")
    return folder


PYTHON_CASES = {
    # -- the Python API
    "api: duplicated ratios": (
        lambda ctx: lambda: inherent_interpretability_score([0.1, 0.5, 0.1], [0.8, 0.6, 0.7], 0.9),
        ValueError,
        r"duplicate sparsity ratios \[0\.1\]",
    ),
    "api: ratio of 1": (lambda ctx: _compute(sparsity_ratios=[0.0, 1.0]), ValueError, r"outside \[0, 1\)"),
    "api: NaN features": (lambda ctx: _compute(train_features=_nan_rows()), ValueError, "train_features contain NaN or inf"),
    "api: inf features": (lambda ctx: _compute(eval_features=_inf_rows()), ValueError, "eval_features contain NaN or inf"),
    "api: labels out of range": (
        lambda ctx: _compute(eval_labels=np.full(15, 3), num_classes=3),
        ValueError,
        r"eval labels must be in \[0, 3\); found 3\.\.3",
    ),
    "api: negative labels": (
        lambda ctx: _compute(train_labels=np.where(np.arange(45) % 9 == 0, -1, np.arange(45) % 3)),
        ValueError,
        r"train labels must be in \[0, 3\); found -1",
    ),
    "api: fractional labels": (
        lambda ctx: _compute(train_labels=np.linspace(0, 2, 45)),
        ValueError,
        "integer class ids",
    ),
    "api: no features": (
        lambda ctx: _compute(train_features=np.zeros((0, 8)), train_labels=np.zeros(0, dtype=int)),
        ValueError,
        "train features are empty",
    ),
    "api: empty dataset": (
        lambda ctx: lambda: extract_features(
            ctx.vit, image_dataset_from([], []), image_processor=tiny_image_processor(), progress=False
        ),
        ValueError,
        "the dataset is empty",
    ),
    "api: a DatasetDict": (
        lambda ctx: lambda: extract_features(
            ctx.vit, __import__("datasets").DatasetDict(train=image_dataset_from([], [])), progress=False
        ),
        ValueError,
        r"DatasetDict with splits \['train'\]; pass one split",
    ),
    "api: a text model": (
        lambda ctx: lambda: extract_features(ctx.bert_model, mixed_images()[0], progress=False),
        ValueError,
        "BertModel .* is not a vision model",
    ),
    "api: not a model": (
        lambda ctx: lambda: extract_features(42, mixed_images()[0], progress=False),
        TypeError,
        "model must be a PreTrainedModel or a model name/folder, got int",
    ),
    "api: chunk_size 0": (
        lambda ctx: lambda: extract_features(ctx.vit, mixed_images()[0], chunk_size=0, progress=False),
        ValueError,
        "chunk_size must be an int >= 1, got 0",
    ),
    "api: bank for another model": (
        lambda ctx: _compute(concepts=ConceptBank.from_pretrained(ctx.bank16)),
        ValueError,
        "representations have dimension 8 but the concepts have 16: the concept bank was built for another model",
    ),
    "api: IIS model over a bank for another model": (
        lambda ctx: lambda: IISModelForImageClassification(build_tiny_model("vit"), random_bank(dim=16)),
        ValueError,
        "concept bank has dimension 16 but ViTForImageClassification gives 32",
    ),
    "api: IIS model over a text model": (
        lambda ctx: lambda: IISModelForImageClassification(ctx.bert_model, random_bank()),
        ValueError,
        "BertModel is not an image-classification model",
    ),
    "api: one concept": (
        lambda ctx: lambda: __import__("iis_hf").ConceptsConfig(num_concepts=1),
        ValueError,
        r"num_concepts must be an int >= 2, got 1: every head drops int\(C \* rho\) \+ 1 concepts",
    ),
    "api: an all-zero concept": (
        lambda ctx: lambda: ConceptBank(vectors=torch.zeros(2, 4), names=["a", "b"]),
        ValueError,
        "all zeros",
    ),
    "api: head with one class": (
        lambda ctx: lambda: InterpretationHead(torch.randn(5, 4), 1, 0.5),
        ValueError,
        "num_classes must be at least 2, got 1",
    ),
    "api: heads with duplicated ratios": (
        lambda ctx: lambda: InterpretationHeads(torch.randn(5, 4), 3, [0.9, 0.5, 0.9]),
        ValueError,
        r"duplicate sparsity ratios \[0\.9\]",
    ),
    # -- the evaluate metric
    "metric: duplicated ratios": (
        lambda ctx: lambda: _metric().compute(
            predictions=[[0, 0], [1, 1]], references=[0, 1], standard_accuracy=1.0, sparsity_ratios=[0.5, 0.5]
        ),
        ValueError,
        r"duplicate sparsity ratios \[0\.5\]",
    ),
    "metric: accuracy as a percentage": (
        lambda ctx: lambda: _metric().compute(
            predictions=[[0, 0], [1, 1]], references=[0, 1], standard_accuracy=85.0, sparsity_ratios=[0, 0.5]
        ),
        ValueError,
        "not a percentage",
    ),
    "metric: ragged predictions": (
        lambda ctx: lambda: _metric().compute(
            predictions=[[0, 0], [1]], references=[0, 1], standard_accuracy=1.0, sparsity_ratios=[0, 0.5]
        ),
        ValueError,
        "same length",
    ),
    "metric: fractional predictions": (
        lambda ctx: lambda: _metric().compute(
            predictions=[[0, 0.5], [1, 1]], references=[0, 1], standard_accuracy=1.0, sparsity_ratios=[0, 0.5]
        ),
        ValueError,
        r"predictions must be integer class ids, found fractional values like \[0\.5\]",
    ),
    "metric: infinite predictions": (
        lambda ctx: lambda: _metric().compute(
            predictions=[[0, float("inf")], [1, 1]], references=[0, 1], standard_accuracy=1.0, sparsity_ratios=[0, 0.5]
        ),
        ValueError,
        r"predictions contain NaN or inf",
    ),
    "metric: infinite standard_predictions": (
        lambda ctx: lambda: _metric().compute(
            predictions=[[0, 0], [1, 1]], references=[0, 1], standard_predictions=[0, float("inf")], sparsity_ratios=[0, 0.5]
        ),
        ValueError,
        r"standard_predictions contain NaN or inf",
    ),
    "metric: empty input": (
        lambda ctx: lambda: _metric().compute(predictions=[], references=[], standard_accuracy=1.0, sparsity_ratios=[0, 0.5]),
        ValueError,
        r"predictions is empty: give at least one sample",
    ),
    "metric: string references": (
        lambda ctx: lambda: _metric().compute(
            predictions=[[0, 0], [1, 1]], references=["cat", "dog"], standard_accuracy=1.0, sparsity_ratios=[0, 0.5]
        ),
        ValueError,
        r"references must be integer class ids, found strings like \['cat', 'dog'\]",
    ),
    "metric: fractional references": (
        lambda ctx: lambda: _metric().compute(
            predictions=[[0, 0], [1, 1]], references=[0.5, 1], standard_accuracy=1.0, sparsity_ratios=[0, 0.5]
        ),
        ValueError,
        r"references must be integer class ids, found fractional values",
    ),
    "metric: infinite representations": (
        lambda ctx: lambda: _metric("representations").compute(
            predictions=[[0.0, float("inf")], [1.0, 0.0]], references=[0, 1], concept_bank=np.eye(2)
        ),
        ValueError,
        r"predictions \(representation vectors\) contain NaN or inf",
    ),
    "metric: string references for representations": (
        lambda ctx: lambda: _metric("representations").compute(
            predictions=[[0.0, 1.0], [1.0, 0.0]], references=["a", "b"], concept_bank=np.eye(2)
        ),
        ValueError,
        r"references must be integer class ids, found strings",
    ),
    "metric: NaN representations": (
        lambda ctx: lambda: _metric("representations").compute(
            predictions=[[0.0, float("nan")], [1.0, 0.0]], references=[0, 1], concept_bank=np.eye(2)
        ),
        ValueError,
        "NaN or inf",
    ),
    "metric: concepts for another model": (
        lambda ctx: lambda: _metric("representations").compute(
            predictions=planted(30, 16)[0], references=planted(30, 16)[1], concept_bank=np.ones((5, 4))
        ),
        ValueError,
        "the concepts have dimension 4 but the representations have 16",
    ),
    "metric: a bank folder holding a pickle": (
        lambda ctx: (
            lambda folder: lambda: _metric("representations").compute(
                predictions=planted()[0], references=planted()[1], concept_bank=str(folder)
            )
        )(_pickled_bank(ctx)),
        ValueError,
        r"contains pickle files \['concept_bank.pkl'\]",
    ),
    # -- the Trainer arguments
    "trainer: negative iis_weight": (
        lambda ctx: lambda: make_args(ctx.tmp / "run", iis_weight=-0.5),
        ValueError,
        "--iis_weight must be a number >= 0, got -0.5",
    ),
    "trainer: duplicated loss ratios": (
        lambda ctx: lambda: make_args(ctx.tmp / "run", iis_sparsity_ratios=[0.9, 0.9]),
        ValueError,
        r"duplicate sparsity ratios \[0\.9\]",
    ),
    "trainer: one eval ratio": (
        lambda ctx: lambda: make_args(ctx.tmp / "run", iis_eval_sparsity_ratios=[0.5]),
        ValueError,
        r"need at least 2 sparsity ratio\(s\), got 1",
    ),
    "trainer: no concepts": (
        lambda ctx: lambda: make_args(ctx.tmp / "run", iis_num_concepts=0),
        ValueError,
        "iis_num_concepts must be an int >= 2, got 0",
    ),
    "trainer: args that are not TrainingArguments": (  # a plain TrainingArguments is fine (test_dropin_peft.py)
        lambda ctx: lambda: IISTrainer(model=build_tiny_model("vit"), args={"output_dir": str(ctx.tmp / "run")}),
        TypeError,
        "IISTrainer's args must be TrainingArguments or IISTrainingArguments",
    ),
    "trainer: iis_args with a typo": (
        lambda ctx: lambda: IISTrainer(
            model=build_tiny_model("vit"),
            args=__import__("transformers").TrainingArguments(output_dir=str(ctx.tmp / "run"), report_to=[]),
            iis_args={"iis_wieght": 0.3},
        ),
        TypeError,
        "iis_args: unknown IIS setting 'iis_wieght'; did you mean 'iis_weight'\\?",
    ),
    "trainer: a missing concept bank": (
        lambda ctx: lambda: IISTrainer(
            model=build_tiny_model("vit"), args=make_args(ctx.tmp / "run", iis_concept_bank=str(ctx.tmp / "nowhere"))
        ),
        ValueError,
        r"concept bank folder .*nowhere does not exist",
    ),
    "trainer: a bank for another model": (
        lambda ctx: lambda: IISTrainer(
            model=build_tiny_model("vit"), args=make_args(ctx.tmp / "run", iis_concept_bank=ctx.bank16)
        ),
        ValueError,
        "dimension 16 but ViTForImageClassification gives 32",
    ),
    # -- artefacts on disk
    "disk: truncated concept_bank.safetensors": (
        lambda ctx: (lambda f: (ctx.truncate(f / "concept_bank.safetensors"), lambda: ConceptBank.from_pretrained(f))[1])(
            ctx.bank()
        ),
        ValueError,
        r"concept_bank.safetensors is not a readable safetensors file",
    ),
    "disk: concept_bank.json not JSON": (
        lambda ctx: (lambda f: ((f / "concept_bank.json").write_text('{"format": '), lambda: ConceptBank.from_pretrained(f))[1])(
            ctx.bank()
        ),
        ValueError,
        r"concept_bank.json is not valid JSON",
    ),
    "disk: concept_bank.json names of the wrong type": (
        lambda ctx: (
            lambda f: (ctx.edit_json(f / "concept_bank.json", lambda d: d.update(names="abcdef")), lambda: ConceptBank.from_pretrained(f))[1]
        )(ctx.bank()),
        ValueError,
        "'names' must be a list of strings",
    ),
    "disk: concept_bank.json without its format": (
        lambda ctx: (
            lambda f: (ctx.edit_json(f / "concept_bank.json", lambda d: d.pop("format")), lambda: ConceptBank.from_pretrained(f))[1]
        )(ctx.bank()),
        ValueError,
        r"is not an iis-hf concept bank \(format=None\)",
    ),
    "disk: a bank of another shape than its config": (
        lambda ctx: (
            lambda f: (ctx.edit_json(f / "concept_bank.json", lambda d: d.update(dim=9)), lambda: ConceptBank.from_pretrained(f))[1]
        )(ctx.bank()),
        ValueError,
        "says dim = 9 but concept_bank.safetensors holds 6 x 8",
    ),
    "disk: iis_config.json without sparsity_ratios": (
        lambda ctx: (
            lambda f: (ctx.edit_json(f / "iis_config.json", lambda d: d.pop("sparsity_ratios")), lambda: IISModelForImageClassification.from_pretrained(f))[1]
        )(ctx.copy(ctx.iis_model, "model")),
        ValueError,
        "'sparsity_ratios' must be a non-empty list of numbers",
    ),
    "disk: iis_config.json with iis_weight as text": (
        lambda ctx: (
            lambda f: (ctx.edit_json(f / "iis_config.json", lambda d: d.update(iis_weight="0.1")), lambda: IISModelForImageClassification.from_pretrained(f))[1]
        )(ctx.copy(ctx.iis_model, "model")),
        ValueError,
        "'iis_weight' must be a number",
    ),
    "disk: iis_config.json with duplicated ratios": (
        lambda ctx: (
            lambda f: (ctx.edit_json(f / "iis_config.json", lambda d: d.update(sparsity_ratios=[0.9, 0.9])), lambda: IISModelForImageClassification.from_pretrained(f))[1]
        )(ctx.copy(ctx.iis_model, "model")),
        ValueError,
        r"duplicate sparsity ratios \[0\.9\]",
    ),
    "disk: iis_config.json naming ../../etc/passwd": (
        lambda ctx: (
            lambda f: (ctx.edit_json(f / "iis_config.json", lambda d: d.update(concept_bank="../../etc/passwd")), lambda: IISModelForImageClassification.from_pretrained(f))[1]
        )(ctx.copy(ctx.iis_model, "model")),
        ValueError,
        r"'concept_bank': file name '\.\./\.\./etc/passwd' points outside",
    ),
    "disk: truncated iis_head.safetensors": (
        lambda ctx: (lambda f: (ctx.truncate(f / "iis_head.safetensors"), lambda: IISModelForImageClassification.from_pretrained(f))[1])(
            ctx.copy(ctx.iis_model, "model")
        ),
        ValueError,
        r"iis_head.safetensors is not a readable safetensors file",
    ),
    "disk: iis_head.safetensors of another head": (
        lambda ctx: (
            lambda f: (
                __import__("iis_hf.files", fromlist=["x"]).save_safetensors_atomic(
                    {"norm_weight": torch.ones(1, 20)}, f / "iis_head.safetensors"
                ),
                lambda: IISModelForImageClassification.from_pretrained(f),
            )[1]
        )(ctx.copy(ctx.iis_model, "model")),
        ValueError,
        r"iis_head.safetensors does not fit this head \(mismatched: ",
    ),
    "disk: iis_head pickle beside the safetensors": (
        lambda ctx: (lambda f: ((f / "iis_head.bin").write_bytes(b"\x80\x04K\x01."), lambda: IISModelForImageClassification.from_pretrained(f))[1])(
            ctx.copy(ctx.iis_model, "model")
        ),
        ValueError,
        r"iis_head.bin is a pickle; iis-hf only reads iis_head as safetensors \+ JSON",
    ),
    "disk: truncated feature store": (
        lambda ctx: (
            lambda path: (ctx.truncate(path), lambda: __import__("iis_hf.features.store", fromlist=["x"]).FeatureStore(path))[1]
        )(
            __import__("iis_hf.features.store", fromlist=["x"])
            .write_feature_store(ctx.tmp / "train.safetensors", [planted()[0]], 60, 8)
            .path
        ),
        ValueError,
        "is truncated or inconsistent",
    ),
    "disk: iis.json without its keys": (
        lambda ctx: (
            lambda path: (path.write_text(json.dumps({"iis": 0.5})), lambda: IISResult.from_dict(__import__("iis_hf.reading", fromlist=["x"]).read_json(path, "IIS result")))[1]
        )(ctx.tmp / "iis.json"),
        ValueError,
        r"not an IIS result: missing keys \['accuracies', 'sparsity_ratios', 'standard_accuracy'\]",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(PYTHON_CASES))
def test_python_bad_input_gives_one_clear_error_and_writes_nothing(case, inputs, tmp_path):
    prepare, error, message = PYTHON_CASES[case]
    ctx = Context(inputs, tmp_path)
    call = prepare(ctx)
    before, shared_before = snapshot(tmp_path), snapshot(inputs["root"])
    with pytest.raises(error) as caught:
        call()
    assert type(caught.value) is error or (error is ValueError and isinstance(caught.value, ValueError))
    text = str(caught.value)
    assert re.search(message, text), f"{text!r} does not match {message!r}"
    assert "Traceback" not in text and text.strip() == text and len(text) < 600
    assert snapshot(tmp_path) == before and snapshot(inputs["root"]) == shared_before, "output was written"


CLI_CASES = {
    "cli: duplicated ratios": (lambda ctx: ["--model", ctx.vit, "--dataset", ctx.data, "--sparsity-ratios", "0", "0.5", "0"], "duplicate sparsity ratios"),
    "cli: a text model": (lambda ctx: ["--model", ctx.bert, "--dataset", ctx.data], "is not a vision model"),
    "cli: a bank for another model": (
        lambda ctx: ["--model", ctx.vit, "--dataset", ctx.data, "--concept-bank", ctx.bank16],
        "the concept bank has dimension 16 but the model gives 32-dimensional representations",
    ),
    "cli: an empty dataset": (lambda ctx: ["--model", ctx.vit, "--dataset", ctx.empty], r"it is empty \(0 rows\)"),
    "cli: an empty eval split": (
        lambda ctx: ["--model", ctx.vit, "--dataset", ctx.empty_split],
        r"its split 'test' is empty \(0 rows\)",
    ),
    "cli: an image folder without images": (
        lambda ctx: ["--model", ctx.vit, "--dataset", ctx.no_images],
        "could not read dataset folder .*doesn't contain any data files",
    ),
    "cli: labels of -1 (unlabelled rows)": (
        lambda ctx: ["--model", ctx.vit, "--dataset", ctx.minus_one],
        r"labels must be in \[0, 3\); found -1",
    ),
    "cli: a model giving NaN": (
        lambda ctx: ["--model", ctx.nan_vit, "--dataset", ctx.data],
        "the model gives NaN or inf representations for 18 of 18 train images",
    ),
    "cli: a bank folder holding a pickle": (
        lambda ctx: ["--model", ctx.vit, "--dataset", ctx.data, "--concept-bank", str(_pickled_bank(ctx))],
        r"contains pickle files \['concept_bank.pkl'\]",
    ),
    "cli: a truncated bank": (
        lambda ctx: (
            lambda f: (ctx.truncate(f / "concept_bank.safetensors"), ["--model", ctx.vit, "--dataset", ctx.data, "--concept-bank", str(f)])[1]
        )(ctx.bank()),
        "is not a readable safetensors file",
    ),
    "cli: chunk size 0": (
        lambda ctx: ["--model", ctx.vit, "--dataset", ctx.data, "--chunk-size", "0"],
        "--chunk-size must be an int >= 1, got 0",
    ),
}  # fmt: skip


def run_cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_input_is_one_line_exit_2_and_no_output(case, inputs, tmp_path, capsys):
    make_argv, message = CLI_CASES[case]
    ctx = Context(inputs, tmp_path)
    argv = ["score", *make_argv(ctx), "--output-dir", str(tmp_path / "out"), *FAST]
    before, shared_before = snapshot(tmp_path), snapshot(inputs["root"])
    code, _out, err = run_cli(argv, capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("iis-hf score: error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before and snapshot(inputs["root"]) == shared_before, "output was written"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "iis_head.pt").write_bytes(b"\x80\x04K\x01."), r"iis_head.pt is a pickle"),
        (
            lambda f: f.joinpath("iis_config.json").write_text(
                json.dumps(
                    {**json.loads(f.joinpath("iis_config.json").read_text()), "concept_bank": "/etc/passwd"}
                )
            ),
            r"'concept_bank': file name '/etc/passwd' points outside",
        ),
        (lambda f: f.joinpath("concept_bank.json").write_text("[]"), "must hold a JSON object, found list"),
    ],
    ids=["head pickle", "config naming /etc/passwd", "bank config not an object"],
)
def test_explain_refuses_a_damaged_model_folder(inputs, tmp_path, capsys, damage, message):
    ctx = Context(inputs, tmp_path)
    folder = ctx.copy(inputs["iis_model"], "model")
    damage(folder)
    image = tmp_path / "image.png"
    mixed_images()[0][0].save(image)
    before = snapshot(tmp_path)
    code, _out, err = run_cli(
        ["explain", "--model", str(folder), "--image", str(image), "--output", str(tmp_path / "fig.png")],
        capsys,
    )
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert (
        len(lines) == 1 and lines[0].startswith("iis-hf explain: error: ") and re.search(message, lines[0])
    ), err
    assert snapshot(tmp_path) == before


def test_the_table_covers_every_surface_with_at_least_25_cases():
    cases = [*PYTHON_CASES, *CLI_CASES]
    surfaces = {c.split(":")[0] for c in cases}
    assert surfaces == {"api", "metric", "trainer", "disk", "cli"}
    assert len(cases) >= 25


# ---------------------------------------------------------------------------------------------------
# odd inputs that must work


def test_images_of_mixed_sizes_and_modes_work_and_greyscale_equals_its_rgb(inputs):
    images, labels = mixed_images()
    assert {im.mode for im in images} == {"RGB", "L", "RGBA", "P"} and len({im.size for im in images}) > 5
    processor = tiny_image_processor()
    result = extract_features(
        inputs["vit"], image_dataset_from(images, labels), image_processor=processor, progress=False
    )
    assert result.features.shape == (18, 32) and torch.isfinite(result.features).all()
    assert result.labels.tolist() == labels
    grey = images[1]  # mode L
    as_rgb = extract_features(inputs["vit"], [grey.convert("RGB")], image_processor=processor, progress=False)
    torch.testing.assert_close(result.features[1:2], as_rgb.features, rtol=0, atol=0)


def test_cli_scores_a_dataset_of_mixed_sizes_and_modes(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        ["score", "--model", inputs["vit"], "--dataset", inputs["mixed"], "--output-dir", str(out), *FAST],
        capsys,
    )
    assert code == 0, err
    report = json.loads((out / "iis.json").read_text())
    assert (
        report["settings"]["data"]["num_train"] + report["settings"]["data"]["num_eval"] == 18
        and "IIS =" in stdout
    )


@pytest.mark.filterwarnings("ignore:interpretation accuracy exceeds")
def test_unsorted_ratios_work_everywhere_and_change_nothing(inputs, tmp_path, capsys):
    ordered, shuffled = [0.0, 0.3, 0.5, 0.9], [0.5, 0.0, 0.9, 0.3]
    # the integral
    accs = {0.0: 0.9, 0.3: 0.85, 0.5: 0.7, 0.9: 0.4}
    assert inherent_interpretability_score(
        shuffled, [accs[r] for r in shuffled], 0.9
    ) == inherent_interpretability_score(ordered, [accs[r] for r in ordered], 0.9)
    # compute_iis: each ratio's head gets the same accuracy whatever its place in the grid
    a = _compute(sparsity_ratios=ordered, epochs=3)()
    b = _compute(sparsity_ratios=shuffled, epochs=3)()
    assert b.sparsity_ratios == shuffled and a.iis == pytest.approx(b.iis, abs=1e-12)
    assert dict(zip(a.sparsity_ratios, a.accuracies)) == dict(zip(b.sparsity_ratios, b.accuracies))
    # the metric
    metric = _metric()
    predictions = [[0, 0, 1, 2], [1, 1, 1, 0], [2, 0, 2, 2], [1, 1, 0, 1]]
    one = metric.compute(
        predictions=predictions, references=[0, 1, 2, 1], standard_accuracy=1.0, sparsity_ratios=ordered
    )
    columns = [ordered.index(r) for r in shuffled]
    two = metric.compute(
        predictions=[[row[c] for c in columns] for row in predictions],
        references=[0, 1, 2, 1],
        standard_accuracy=1.0,
        sparsity_ratios=shuffled,
    )
    assert one["iis"] == pytest.approx(two["iis"], abs=1e-12)
    # the command line
    results = []
    for i, ratios in enumerate((ordered, shuffled)):
        out = tmp_path / f"out{i}"
        argv = [
            "score",
            "--model",
            inputs["vit"],
            "--dataset",
            inputs["data"],
            "--output-dir",
            str(out),
            *FAST,
        ]
        code, _, err = run_cli([*argv, "--sparsity-ratios", *map(str, ratios)], capsys)
        assert code == 0, err
        results.append(json.loads((out / "iis.json").read_text()))
    assert results[0]["iis"] == pytest.approx(results[1]["iis"], abs=1e-12)
    assert dict(zip(results[0]["sparsity_ratios"], results[0]["accuracies"])) == dict(
        zip(results[1]["sparsity_ratios"], results[1]["accuracies"])
    )
