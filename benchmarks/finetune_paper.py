#!/usr/bin/env python
"""Finding 2, run faithfully (issue 19): does fine-tuning with the interpretability loss raise accuracy?

The paper fine-tunes pre-trained backbones with ``loss = CE + lambda * CE(interpretation head over
sparsified concept activations)`` (s = 0.1, M = 200 concepts for D = 768 / 2048) and reports higher
accuracy. The earlier test (docs/RESULTS.md, finding 2) started from barely trained backbones with
M > D. This one keeps the paper's proportions and separates exploration from confirmation:

1. **Backbones**: two ResNets (32 x 32 RGB input) whose representation has D = 128 and D = 512, each
   pre-trained with a plain `transformers.Trainer` until its validation accuracy plateaus
   (`EarlyStoppingCallback`, `reduce_lr_on_plateau`) on every de-duplicated silhouette of
   `animal-shape-mnist` 0.39 outside a validation and a test split; M = 32 at D = 128, M = 200 at
   D = 512. Saved with `save_pretrained` in OUTPUT_DIR/backbones/ and reused.
2. **Scenarios**: *in-domain* (continued fine-tuning on animal images, held-out animal test set) and
   *transfer* (scikit-learn's digits, 200 training images, a new seeded classifier).
3. **Arms** on the same seeds: *off-the-shelf* (not fine-tuned; in-domain: the pre-trained model
   as it is; transfer: a linear probe on the frozen backbone's features, the scoring's probe A0),
   and two arms fine-tuned through `IISTrainer` (one code path) with the same data order, schedule
   and light augmentation (a seeded shift of up to 2 pixels): *CE only* (``iis_weight=0``, which
   reproduces `Trainer`) and *CE + lambda CE(head)*.
4. **Exploratory grid** on VALIDATION data, a few seeds: a one-factor-at-a-time design around a
   centre (s = 0.1 as in the paper, lambda = 0.5, head random, concepts fixed): s in {0.1, 0.5, 0.9},
   lambda in {0.1, 0.5, 1}, head random or warm (`iis_head_init`), concepts fixed or refreshed each
   epoch (`iis_concept_refresh_epochs`). The full factorial (36 settings x 4 cells) does not fit the
   CPU budget; the 7 settings here do.
5. **Pre-registration**: the setting with the best mean paired validation gain over CE only, per
   scenario, and the analysis plan go to OUTPUT_DIR/preregistration.json (with a timestamp) before
   any confirmatory training.
6. **Confirmatory run** on fresh paired seeds and the test split. Primary endpoint: test accuracy
   vs CE only. Secondary: accuracy vs off-the-shelf; IIS with concepts rebuilt from the final
   backbone and with the bank the loss used; the refitted head's accuracy (predictions from
   concepts). Paired t and Wilcoxon (`iis_hf.stats.paired_tests`), Holm over the 4 cells of each
   endpoint, 95% CI, and the smallest effect the run could detect (80% power, alpha 0.05).

Commands (the full CPU run needs about 75 minutes of one thread; rerun the same command to resume):

    OMP_NUM_THREADS=1 python benchmarks/finetune_paper.py --output-dir finetune_paper_output \\
        --write-report finetune_paper_output/finding2.md
    python benchmarks/finetune_paper.py --quick --output-dir /tmp/finetune_paper_quick      # ~2 min
    python benchmarks/finetune_paper.py --scale gpu --device cuda --output-dir finetune_paper_gpu
    python benchmarks/finetune_paper.py --output-dir finetune_paper_output --report-only \\
        --write-report docs/finding2_paper.md                    # tables and figure from the files

OUTPUT_DIR gets runs.jsonl (one line per finished run, appended: a restart skips them),
preregistration.json, results.json and finding2_differences.png; ``--write-report PATH`` writes
the Markdown section "Finding 2" with the figure beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import gzip
import importlib.metadata
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
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

ANIMAL_FILES = (
    "animal_shape_mnist/data/Animal Shape/animal_data_version_3.gz",
    "animal_shape_mnist/data/Animal Shape/animal_label_version_3.gz",
)
ANIMAL_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
IMAGE_SIZE = 32
SCORE_RATIOS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.98)  # the published grid (IIS scoring)
SCENARIOS = ("in-domain", "transfer")
ALPHA, POWER = 0.05, 0.8
OFF_THE_SHELF, CE_ONLY = "off-the-shelf", "ce"


# ----------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class Width:
    """One backbone: a small transformers ResNet and the number of concepts M its loss uses."""

    name: str
    layer_type: str
    embedding_size: int
    hidden_sizes: tuple[int, ...]
    num_concepts: int

    @property
    def dim(self) -> int:
        return self.hidden_sizes[-1]


@dataclass(frozen=True)
class Scale:
    """Every size of the experiment, so that --quick, the CPU run and the GPU run differ only here."""

    name: str
    widths: tuple[Width, ...]
    animal_test: int
    animal_validation: int
    pretrain_images: int | None  # None: every silhouette outside validation and test
    pretrain_max_epochs: int
    pretrain_patience: int
    indomain_images: int  # the in-domain fine-tuning set: a stratified part of the pre-training set
    indomain_epochs: float
    digits_train: int
    digits_validation: int
    digits_test: int | None  # None: every digit outside train and validation
    transfer_epochs: float
    grid_seeds: tuple[int, ...]
    confirm_seeds: tuple[int, ...]
    head_epochs: int  # epochs of the IIS scoring heads (and of a warm head's fit)
    images_per_class: int
    batch_size: int = 32
    indomain_learning_rate: float = 3e-4  # continued fine-tuning of a converged backbone
    transfer_learning_rate: float = 2e-3  # a new classifier
    pretrain_learning_rate: float = 2e-3
    pretrain_batch_size: int = 64
    refresh_epochs: float = 1.0
    grid_size: int | None = None  # the first settings of the grid only (None: all)
    head_batch_size: int = 256
    probe_min_steps: int = 100
    shrunk: tuple[str, ...] = ()


D128 = Width("resnet-d128", "basic", 32, (32, 64, 128), 32)
D512 = Width("resnet-d512", "bottleneck", 32, (64, 128, 512), 200)
CPU_SHRUNK = (
    "backbones: ~0.3M-parameter ResNets (D = 128 basic blocks, D = 512 bottleneck blocks, both "
    "~0.3M parameters) instead of ImageNet ViT-B / ResNet-50: a basic-block D = 512 ResNet "
    "(2.8M parameters) trained at 150 img/s against 530 img/s on one thread",
    "in-domain fine-tuning: 1,000 of the pre-training images for 2 epochs (not all ~6,700): measured "
    "on this machine (shared, load 4-7) a fine-tuning run took 10-20 s and its scoring 4-20 s, and 4 "
    "cells x (16 grid + 60 confirmatory runs) had to fit about 60 minutes",
    "transfer: 200 digits (the issue's example: 300) for 12 epochs at lr 2e-3, so that CE only "
    "converges (0.97-0.98 validation accuracy in 75 steps, 0.92-0.93 after 6 epochs at 1e-3) and "
    "still has headroom",
    "grid: one factor at a time around the centre (7 settings, 2 seeds) instead of the full "
    "36-setting factorial",
    "IIS scoring heads: 10 epochs of batch 256 and a probe of at least 100 steps (the published 30 "
    "epochs of batch 1024 and the converged probe's 1000 steps took 17-22 s per bank at D = 512, "
    "this 3-4 s; IIS 0.923 vs 0.937, A0 0.907 vs 0.902 on a test backbone), prototypes from 10 "
    "images per class",
    "transfer off-the-shelf: the scoring's linear probe A0 on the frozen backbone's features, not a "
    "classifier trained through the fine-tuning schedule (at the shared learning rate a new linear "
    "layer stayed at chance in 60 steps)",
)
SCALES = {
    "micro": Scale(
        "micro", (Width("resnet-d16", "basic", 8, (8, 16), 8),), 40, 40, 100, 1, 1, 40, 1,
        30, 30, 40, 1, (1000,), (0, 1), 1, 1, batch_size=16, grid_size=1, probe_min_steps=20,
    ),
    "quick": Scale(
        "quick", (Width("resnet-d32", "basic", 16, (16, 32), 16), Width("resnet-d128q", "bottleneck", 16, (32, 128), 50)),
        500, 300, 1500, 3, 1, 300, 1, 100, 100, None, 8, (1000,), (0, 1, 2), 5, 5,
    ),
    "cpu": Scale(
        "cpu", (D128, D512), 2000, 1000, None, 30, 3, 1000, 2, 200, 300, None, 12, (1000, 1001),
        tuple(range(20)), 10, 10, shrunk=CPU_SHRUNK,
    ),
    "gpu": Scale(
        "gpu",
        (Width("resnet-d512-basic", "basic", 128, (128, 256, 512), 200),
         Width("resnet-d2048", "bottleneck", 64, (256, 512, 1024, 2048), 200)),
        2000, 1000, None, 100, 6, 6000, 4, 200, 300, None, 12, (1000, 1001, 1002),
        tuple(range(40)), 30, 10, head_batch_size=1024, probe_min_steps=1000,
    ),
}  # fmt: skip
# The step further (issue 19, item 4): the CPU run found no effect at the ceiling (in-domain backbones at
# 98 %, transfer CE at 97 %); a regulariser can only show where cross-entropy overfits, so the same
# protocol (grid, pre-registration, 20 fresh seeds) with 5 digits per class and 200 in-domain images.
SCALES["cpu-lowdata"] = dataclasses.replace(
    SCALES["cpu"],
    name="cpu-lowdata",
    indomain_images=200,
    digits_train=50,
    shrunk=(
        *CPU_SHRUNK,
        "low-data follow-up: 200 in-domain images and 50 training digits (5 per class), backbones reused "
        "from the CPU run",
    ),
)


@dataclass(frozen=True)
class Setting:
    """One configuration of the interpretability loss (an arm of the grid)."""

    weight: float
    sparsity: float
    head_init: str = "random"
    refresh_epochs: float | None = None

    @property
    def key(self) -> str:
        concepts = "fixed" if self.refresh_epochs is None else f"refresh{self.refresh_epochs:g}"
        return f"s{self.sparsity:g}-l{self.weight:g}-{self.head_init}-{concepts}"

    @property
    def label(self) -> str:
        concepts = "fixed" if self.refresh_epochs is None else f"refreshed every {self.refresh_epochs:g} ep"
        return f"s={self.sparsity:g}, λ={self.weight:g}, head {self.head_init}, concepts {concepts}"


def grid_settings(scale: Scale) -> list[Setting]:
    """The one-factor-at-a-time design: the centre first, then each factor moved alone."""
    centre = Setting(weight=0.5, sparsity=0.1)
    out = [centre]
    out += [dataclasses.replace(centre, sparsity=s) for s in (0.5, 0.9)]
    out += [dataclasses.replace(centre, weight=w) for w in (0.1, 1.0)]
    out.append(dataclasses.replace(centre, head_init="warm"))
    out.append(dataclasses.replace(centre, refresh_epochs=scale.refresh_epochs))
    return out


def trainer_fields() -> set[str]:
    from iis_hf import IISTrainingArguments

    return {f.name for f in dataclasses.fields(IISTrainingArguments)}


def available(setting: Setting) -> bool:
    """A setting needing an `IISTrainingArguments` field this checkout lacks cannot run yet."""
    fields = trainer_fields()
    if setting.head_init != "random" and "iis_head_init" not in fields:
        return False
    return setting.refresh_epochs is None or "iis_concept_refresh_epochs" in fields


# -------------------------------------------------------------------------------------------- data
class _ArrayUnpickler(pickle.Unpickler):
    """The silhouettes ship as gzip'd pickles: accept numpy arrays, refuse every other class."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
            return getattr(np, name)
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return (
                np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
            )
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def read_silhouettes() -> tuple[np.ndarray, np.ndarray]:
    """The de-duplicated (N, 28, 28) silhouettes of animal-shape-mnist 0.39 and their labels.

    Images occurring twice are kept once, so no test image is also a training image."""
    distribution = importlib.metadata.distribution("animal-shape-mnist")
    arrays = []
    for relative in ANIMAL_FILES:
        with gzip.open(distribution.locate_file(relative), "rb") as stream:
            arrays.append(_ArrayUnpickler(stream).load())
    images, labels = np.asarray(arrays[0], dtype=np.uint8), np.asarray(arrays[1], dtype=np.int64)
    rows = np.ascontiguousarray(images.reshape(len(images), -1))
    _, first = np.unique(rows.view(np.dtype((np.void, rows.shape[1]))).ravel(), return_index=True)
    keep = np.sort(first)
    return images[keep], labels[keep]


def image_dataset(pixels: np.ndarray, labels: np.ndarray, names, resample: int) -> Any:
    """A `datasets` image dataset of RGB IMAGE_SIZE^2 images with a ClassLabel."""
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    pictures = [
        PILImage.fromarray(p, mode="L").resize((IMAGE_SIZE, IMAGE_SIZE), resample).convert("RGB")
        for p in pixels
    ]
    features = Features({"image": Image(), "label": ClassLabel(names=list(names))})
    return Dataset.from_dict({"image": pictures, "label": labels.tolist()}, features=features)


def split_rows(labels: np.ndarray, sizes: list[int | None], seed: int) -> list[np.ndarray]:
    """Stratified, seeded, disjoint row sets of the given sizes (None: all that is left)."""
    from sklearn.model_selection import train_test_split

    rows, out = np.arange(len(labels)), []
    for size in sizes:
        if size is None or size >= len(rows):
            out.append(rows)
            rows = rows[:0]
            continue
        rest, taken = train_test_split(rows, test_size=size, stratify=labels[rows], random_state=seed)
        out.append(np.sort(taken))
        rows = np.sort(rest)
    return out


def load_data(scale: Scale) -> dict[str, Any]:
    """animals: pretrain / finetune (a part of pretrain) / validation / test; digits: train / validation / test."""
    from datasets import DatasetDict
    from PIL import Image as PILImage
    from sklearn.datasets import load_digits

    images, labels = read_silhouettes()
    test, validation, pretrain = split_rows(
        labels, [scale.animal_test, scale.animal_validation, scale.pretrain_images], 0
    )
    (finetune,) = split_rows(labels[pretrain], [scale.indomain_images], 0)
    build = lambda rows: image_dataset(images[rows], labels[rows], ANIMAL_CLASSES, PILImage.BILINEAR)  # noqa: E731
    animals = DatasetDict(
        pretrain=build(pretrain),
        train=build(pretrain[finetune]),
        validation=build(validation),
        test=build(test),
    )
    digits = load_digits()
    pixels = (digits.images / 16.0 * 255.0).round().astype(np.uint8)
    sizes = [scale.digits_train, scale.digits_validation, scale.digits_test]
    train, validation, test = split_rows(digits.target, sizes, 0)
    names = [str(d) for d in range(10)]
    build = lambda rows: image_dataset(pixels[rows], digits.target[rows], names, PILImage.NEAREST)  # noqa: E731
    return {
        "in-domain": animals,
        "transfer": DatasetDict(train=build(train), validation=build(validation), test=build(test)),
    }  # fmt: skip


def augmented(dataset: Any) -> Any:
    """The training rows, each with its row number: the collator shifts only rows that carry one."""
    return dataset.add_column("row", list(range(len(dataset))))


class Collator:
    """Rows -> pixel values and labels. A row with a `row` number is shifted by up to `shift` pixels,
    drawn from (seed, row, how often the row was seen), so that every arm of one seed sees the same
    augmented images whatever else (prototypes, head fits) reads the data in between."""

    def __init__(self, processor: Any, seed: int, shift: int = 2) -> None:
        self.processor, self.seed, self.shift = processor, seed, shift
        self.seen: Counter = Counter()

    def _shift(self, image: Any, row: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, row, self.seen[row]))
        self.seen[row] += 1
        dx, dy = rng.integers(-self.shift, self.shift + 1, size=2)
        pixels = np.pad(np.asarray(image), ((self.shift,) * 2, (self.shift,) * 2, (0, 0)), mode="edge")
        h, w = image.size[1], image.size[0]
        return pixels[self.shift + dy : self.shift + dy + h, self.shift + dx : self.shift + dx + w]

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        from iis_hf.images import load_image

        images = [load_image(r["image"]) for r in rows]
        if "row" in rows[0]:
            images = [self._shift(image, int(r["row"])) for image, r in zip(images, rows)]
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "labels": torch.tensor([int(r["label"]) for r in rows])}


# ------------------------------------------------------------------------------------------ models
def build_backbone(width: Width, names, seed: int) -> Any:
    """A random-initialised transformers ResNet for 32 x 32 inputs (seeded)."""
    from transformers import AutoModelForImageClassification, ResNetConfig

    config = ResNetConfig(
        embedding_size=width.embedding_size,
        hidden_sizes=list(width.hidden_sizes),
        depths=[1] * len(width.hidden_sizes),
        layer_type=width.layer_type,
        downsample_in_first_stage=False,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    torch.manual_seed(seed)
    return AutoModelForImageClassification.from_config(config)


def with_new_classifier(model: Any, width: Width, names, seed: int) -> Any:
    """Every pre-trained weight but the classifier, which starts afresh from `seed` (what
    `from_pretrained(..., ignore_mismatched_sizes=True)` gives new classes)."""
    fresh = build_backbone(width, names, seed)
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    missing, unexpected = fresh.load_state_dict(kept, strict=False)
    if unexpected or not all(k.startswith("classifier.") for k in missing):
        raise ValueError(f"unexpected weights when replacing the classifier: {missing=} {unexpected=}")
    return fresh


def copy_model(model: Any) -> Any:
    clone = type(model)(model.config)
    clone.load_state_dict(model.state_dict())
    return clone


def processor() -> Any:
    from iis_hf.demo import demo_image_processor

    return demo_image_processor()


def training_arguments(
    folder: str, batch_size: int, learning_rate: float, seed: int, epochs: float, device: str
) -> dict:
    """What every fine-tuning arm shares: AdamW, cosine schedule with 10% warm-up, batch, seed and data order."""
    return dict(
        output_dir=folder,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=256,
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


def _accuracy(prediction) -> dict[str, float]:
    from sklearn.metrics import accuracy_score

    return {"accuracy": float(accuracy_score(prediction.label_ids, prediction.predictions.argmax(-1)))}


def pretrain(width: Width, data, scale: Scale, device: str, folder: Path, log) -> tuple[Any, dict]:
    """A backbone trained until its validation accuracy plateaus (reused when saved before)."""
    from transformers import (
        AutoModelForImageClassification,
        EarlyStoppingCallback,
        Trainer,
        TrainingArguments,
    )

    info_path = folder / "pretraining.json"
    if info_path.is_file():
        return AutoModelForImageClassification.from_pretrained(folder), json.loads(info_path.read_text())
    model = build_backbone(width, ANIMAL_CLASSES, seed=0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(
            tmp, scale.pretrain_batch_size, scale.pretrain_learning_rate, 0, scale.pretrain_max_epochs, device
        )
        args.update(
            lr_scheduler_type="reduce_lr_on_plateau",
            lr_scheduler_kwargs={"mode": "max", "factor": 0.3, "patience": 1}, warmup_steps=0,
            eval_strategy="epoch", save_strategy="epoch", save_total_limit=1, load_best_model_at_end=True,
            metric_for_best_model="accuracy", greater_is_better=True, logging_strategy="epoch",
        )  # fmt: skip
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**args),
            train_dataset=augmented(data["pretrain"]),
            eval_dataset=data["validation"],
            data_collator=Collator(processor(), seed=0),
            compute_metrics=_accuracy,
            callbacks=[EarlyStoppingCallback(early_stopping_patience=scale.pretrain_patience)],
        )
        trainer.train()
        curve = [e["eval_accuracy"] for e in trainer.state.log_history if "eval_accuracy" in e]
    model = trainer.model.cpu().eval()
    info = {
        "width": asdict(width),
        "dim": width.dim,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "images": len(data["pretrain"]),
        "epochs_run": len(curve),
        "max_epochs": scale.pretrain_max_epochs,
        "stopped_early": len(curve) < scale.pretrain_max_epochs,
        "validation_accuracy_per_epoch": curve,
        "best_validation_accuracy": max(curve),
        "seconds": round(time.perf_counter() - started, 1),
    }
    model.save_pretrained(folder)
    write_json(info_path, info)  # last: its presence marks a complete folder
    log(
        f"[pretrain {width.name}] {info['epochs_run']} epochs, best val acc {max(curve):.4f} ({info['seconds']:.0f} s)"
    )
    return model, info


# ---------------------------------------------------------------------------------------- training
def loss_arguments(setting: Setting, width: Width, scale: Scale) -> dict:
    """The IISTrainingArguments of the interpretability loss (the new fields only when set)."""
    out = dict(
        iis_weight=setting.weight,
        iis_sparsity_ratios=[setting.sparsity],
        iis_num_concepts=width.num_concepts,
        iis_images_per_class=scale.images_per_class,
        iis_refit_head=False,
        iis_eval=False,
        iis_eval_epochs=scale.head_epochs,
    )
    fields = trainer_fields()
    if "iis_head_init" in fields:
        out["iis_head_init"] = setting.head_init
    elif setting.head_init != "random":
        raise RuntimeError("this checkout's IISTrainingArguments has no iis_head_init")
    if "iis_concept_refresh_epochs" in fields:
        out["iis_concept_refresh_epochs"] = setting.refresh_epochs
    elif setting.refresh_epochs is not None:
        raise RuntimeError("this checkout's IISTrainingArguments has no iis_concept_refresh_epochs")
    return out


def finetune(
    start: Any,
    data: Any,
    setting: Setting,
    seed: int,
    schedule: tuple[float, float],
    width: Width,
    scale: Scale,
    device: str,
) -> tuple[Any, float]:
    """Fine-tune a copy of `start` with IISTrainer (iis_weight 0: CE only) for `schedule` (epochs,
    learning rate); returns the trainer and seconds.

    Concepts (prototypes of the starting backbone) and any head fit read the training images
    un-augmented (`concept_dataset`, `iis_fit_dataset`); the training batches are augmented."""
    from transformers import PrinterCallback

    from iis_hf import IISTrainer, IISTrainingArguments

    model = copy_model(start)
    image_processor = processor()
    epochs, learning_rate = schedule
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        args = IISTrainingArguments(
            **training_arguments(tmp, scale.batch_size, learning_rate, seed, epochs, device),
            **loss_arguments(setting, width, scale),
        )
        trainer = IISTrainer(
            model=model,
            args=args,
            train_dataset=augmented(data["train"]),
            eval_dataset=data["validation"],
            data_collator=Collator(image_processor, seed),
            processing_class=image_processor,
            concept_dataset=data["train"],
            iis_fit_dataset=data["train"],
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return trainer, time.perf_counter() - started


def predictions(trainer, dataset) -> dict[str, float]:
    """Accuracy of the model's own classifier and of the loss's head as trained (one pass)."""
    output = trainer.predict(dataset)
    labels = output.label_ids
    head = trainer.last_interpretation_logits[:, 0].argmax(-1)
    return {
        "accuracy": float((output.predictions.argmax(-1) == labels).mean()),
        "trained_head_accuracy": float((head == labels).mean()),
    }


def scoring_config(width: Width, scale: Scale, seed: int, device: str) -> Any:
    """The IIS measurement (`iis-hf score`'s pipeline, `converged` protocol): M prototype-patch
    concepts, the published ratio grid, a small fast recipe (CPU: heads `head_epochs` = 10 epochs of
    batch 256, the standardised probe at least 100 steps), epochs chosen on a held-out part of the
    training rows (never on test)."""
    from iis_hf import ConceptsConfig, ExtractionConfig, HeadsConfig, ScoringConfig

    return ScoringConfig(
        extraction=ExtractionConfig(batch_size=256),
        concepts=ConceptsConfig(num_concepts=width.num_concepts, images_per_class=scale.images_per_class),
        heads=HeadsConfig(
            sparsity_ratios=list(SCORE_RATIOS),
            epochs=scale.head_epochs,
            batch_size=scale.head_batch_size,
            model_selection="holdout",
            probe_min_steps=scale.probe_min_steps,
        ),
        seed=seed,
        device=device,
        progress=False,
    )


def score_backbone(model, data, trainer, sparsity: float, config, probe_is_classifier: bool = False) -> dict:
    """Test accuracy, IIS with concepts rebuilt from `model` and with the bank the loss used (no
    trainer: the rebuilt one, which is the bank the loss would start from), the refitted head's
    accuracy A(s) over that bank, and the trained head's test accuracy.

    `probe_is_classifier`: the accuracy is the scoring's linear probe A0 (a new, untrained classifier)."""
    from iis_hf import extract_features
    from iis_hf.pipeline import build_concepts, score_representations

    kwargs = dict(image_processor=processor(), config=config.extraction, device=config.device, progress=False)
    model = model.eval()
    train, test = (extract_features(model, data[split], **kwargs) for split in ("train", "test"))
    classifier = copy.deepcopy(model.classifier).cpu()
    with torch.no_grad():
        accuracy = float((classifier(test.features).argmax(-1) == test.labels).float().mean())
    rebuilt = build_concepts(model, data["train"], config, image_processor=processor())
    loss_bank = trainer.iis_model.concept_bank if trainer is not None else None
    out = {"test_accuracy": accuracy}
    if trainer is not None:
        out["trained_head_accuracy"] = trainer.head_accuracies(test.features, test.labels)[f"{sparsity:g}"]
    for name, bank in (("rebuilt", rebuilt), ("loss_bank", loss_bank)):
        if bank is None:
            out[name] = out["rebuilt"]
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = score_representations(
                train.features, train.labels, test.features, test.labels, bank, config
            )
        out[name] = {
            "iis": result.iis,
            "probe_accuracy": result.standard_accuracy,
            "accuracies": {f"{r:g}": a for r, a in zip(result.sparsity_ratios, result.accuracies)},
            "num_concepts": bank.num_concepts,
        }
    out["refitted_head_accuracy"] = out["loss_bank"]["accuracies"][f"{sparsity:g}"]
    if probe_is_classifier:
        out["classifier_accuracy"], out["test_accuracy"] = accuracy, out["rebuilt"]["probe_accuracy"]
    return out


# ------------------------------------------------------------------------------- runs and resuming
def write_json(path: Path, data: Any) -> None:
    from iis_hf.files import write_json_atomic

    write_json_atomic(path, json_ready(data))


def json_ready(value: Any) -> Any:
    """Strict JSON: NaN and inf become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return json_ready(value.item())
    return value


def read_runs(path: Path) -> list[dict]:
    """Every complete line of runs.jsonl (a line cut short by a kill is ignored and redone)."""
    if not path.is_file():
        return []
    runs = []
    for line in path.read_text().splitlines():
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return runs


def append_run(path: Path, run: dict) -> None:
    """One finished run, appended and flushed to disk before the next one starts."""
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(json_ready(run), sort_keys=True) + "\n")
        stream.flush()
        os.fsync(stream.fileno())


def run_key(phase: str, scenario: str, width: str, arm: str, seed: int) -> str:
    return f"{phase}|{scenario}|{width}|{arm}|{seed}"


@dataclass
class Context:
    """What every run needs: sizes, data, the pre-trained backbones, where results go."""

    scale: Scale
    device: str
    data: dict
    backbones: dict
    output_dir: Path
    log: Any
    done: set

    @property
    def runs_path(self) -> Path:
        return self.output_dir / "runs.jsonl"

    def start_model(self, scenario: str, width: Width, seed: int) -> Any:
        pretrained = self.backbones[width.name]
        if scenario == "in-domain":
            return copy_model(pretrained)
        return with_new_classifier(
            pretrained, width, self.data["transfer"]["train"].features["label"].names, seed
        )

    def schedule(self, scenario: str) -> tuple[float, float]:
        """(epochs, learning rate) of fine-tuning in `scenario`."""
        s = self.scale
        if scenario == "in-domain":
            return s.indomain_epochs, s.indomain_learning_rate
        return s.transfer_epochs, s.transfer_learning_rate


def run_arm(
    ctx: Context, phase: str, scenario: str, width: Width, arm: str, setting: Setting, seed: int
) -> dict:
    """One arm on one seed: fine-tune (not off-the-shelf), then measure.

    Grid runs are measured on the validation split only; confirmatory runs on the test split."""
    data, start = ctx.data[scenario], ctx.start_model(scenario, width, seed)
    record = {
        "phase": phase, "scenario": scenario, "width": width.name, "dim": width.dim,
        "num_concepts": width.num_concepts, "arm": arm, "seed": seed, "setting": asdict(setting),
    }  # fmt: skip
    trainer, model, seconds = None, start, 0.0
    if arm != OFF_THE_SHELF:
        trainer, seconds = finetune(
            start, data, setting, seed, ctx.schedule(scenario), width, ctx.scale, ctx.device
        )
        model = trainer.iis_model.backbone
    record["train_seconds"] = round(seconds, 2)
    t0 = time.perf_counter()
    if phase == "grid":
        record["validation"] = predictions(trainer, data["validation"])
    else:
        config = scoring_config(width, ctx.scale, seed, ctx.device)
        probe = arm == OFF_THE_SHELF and scenario == "transfer"
        record["scores"] = score_backbone(
            model, data, trainer, setting.sparsity, config, probe_is_classifier=probe
        )
    record["measure_seconds"] = round(time.perf_counter() - t0, 2)
    return record


def run_all(ctx: Context, phase: str, plan: list[tuple[str, Width, str, Setting, int]]) -> None:
    """Run every (scenario, width, arm, setting, seed) of `plan` not yet in runs.jsonl."""
    todo = [p for p in plan if run_key(phase, p[0], p[1].name, p[2], p[4]) not in ctx.done]
    ctx.log(f"[{phase}] {len(plan) - len(todo)} of {len(plan)} runs already done, {len(todo)} to go")
    started = time.perf_counter()
    for i, (scenario, width, arm, setting, seed) in enumerate(todo, 1):
        record = run_arm(ctx, phase, scenario, width, arm, setting, seed)
        record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        append_run(ctx.runs_path, record)
        ctx.done.add(run_key(phase, scenario, width.name, arm, seed))
        elapsed = time.perf_counter() - started
        figures = record.get("validation") or {"accuracy": record["scores"]["test_accuracy"]}
        ctx.log(
            f"[{phase} {i}/{len(todo)}] {scenario} {width.name} seed {seed} {arm}: acc {figures['accuracy']:.4f} "
            f"({record['train_seconds']:.1f} + {record['measure_seconds']:.1f} s; ETA {elapsed / i * (len(todo) - i) / 60:.1f} min)"
        )


def grid_plan(ctx: Context) -> tuple[list, list[Setting], list[Setting]]:
    """The grid's runs (CE only and every available setting), and the settings left out."""
    settings = grid_settings(ctx.scale)[: ctx.scale.grid_size]
    runnable = [s for s in settings if available(s)]
    missing = [s for s in settings if not available(s)]
    ce = Setting(weight=0.0, sparsity=settings[0].sparsity)
    plan = [
        (scenario, width, arm, setting, seed)
        for scenario in SCENARIOS
        for width in ctx.scale.widths
        for seed in ctx.scale.grid_seeds
        for arm, setting in [(CE_ONLY, ce), *((s.key, s) for s in runnable)]
    ]
    return plan, runnable, missing


def confirm_plan(ctx: Context, prereg: dict) -> list:
    """Seeds outermost, so that an interrupted run has whole seeds of every cell."""
    plan = []
    for seed in prereg["seeds"]:
        for scenario in SCENARIOS:
            chosen = [Setting(**s) for s in prereg["chosen"][scenario]]
            ce = Setting(weight=0.0, sparsity=chosen[0].sparsity)
            arms = [(OFF_THE_SHELF, ce), (CE_ONLY, ce), *((s.key, s) for s in chosen)]
            plan += [
                (scenario, width, arm, setting, seed) for width in ctx.scale.widths for arm, setting in arms
            ]
    return plan


# ------------------------------------------------------------------------- selection and the plan
def grid_summary(runs: list[dict]) -> list[dict]:
    """Per scenario, width and setting: mean validation accuracy and the mean paired gain over CE only."""
    grid = [r for r in runs if r["phase"] == "grid"]
    out = []
    for scenario in SCENARIOS:
        for width in dict.fromkeys(r["width"] for r in grid):
            cell = [r for r in grid if r["scenario"] == scenario and r["width"] == width]
            ce = {r["seed"]: r["validation"]["accuracy"] for r in cell if r["arm"] == CE_ONLY}
            for arm in dict.fromkeys(r["arm"] for r in cell if r["arm"] != CE_ONLY):
                mine = {r["seed"]: r for r in cell if r["arm"] == arm}
                seeds = sorted(set(mine) & set(ce))
                if not seeds:
                    continue
                gains = [mine[s]["validation"]["accuracy"] - ce[s] for s in seeds]
                out.append({
                    "scenario": scenario, "width": width, "arm": arm, "setting": mine[seeds[0]]["setting"],
                    "seeds": seeds, "validation_accuracy": statistics.mean(mine[s]["validation"]["accuracy"] for s in seeds),
                    "ce_validation_accuracy": statistics.mean(ce[s] for s in seeds),
                    "gain": statistics.mean(gains),
                    "trained_head_accuracy": statistics.mean(mine[s]["validation"]["trained_head_accuracy"] for s in seeds),
                })  # fmt: skip
    return out


def choose(summary: list[dict], per_scenario: int = 1) -> dict[str, list[dict]]:
    """Per scenario, the setting(s) with the largest mean validation gain over CE only, averaged over
    the widths (ties: the earlier setting of the grid, the centre first)."""
    chosen = {}
    for scenario in SCENARIOS:
        rows = [r for r in summary if r["scenario"] == scenario]
        arms = list(dict.fromkeys(r["arm"] for r in rows))
        score = {a: statistics.mean(r["gain"] for r in rows if r["arm"] == a) for a in arms}
        best = sorted(arms, key=lambda a: (-score[a], arms.index(a)))[:per_scenario]
        chosen[scenario] = [next(r["setting"] for r in rows if r["arm"] == a) for a in best]
    return chosen


ENDPOINTS = (  # name, metric, comparator, role
    ("accuracy_vs_ce", "test_accuracy", CE_ONLY, "primary"),
    ("accuracy_vs_off_the_shelf", "test_accuracy", OFF_THE_SHELF, "secondary"),
    ("iis_rebuilt_vs_ce", "iis_rebuilt", CE_ONLY, "secondary"),
    ("iis_loss_bank_vs_ce", "iis_loss_bank", CE_ONLY, "secondary"),
    ("refitted_head_vs_ce", "refitted_head_accuracy", CE_ONLY, "secondary"),
)


def analysis_plan(scale: Scale) -> dict:
    """Written into preregistration.json before the confirmatory training."""
    return {
        "endpoints": [{"name": n, "metric": m, "comparator": c, "role": r} for n, m, c, r in ENDPOINTS],
        "unit": "paired seed: the same starting weights, data order, augmentation and schedule for every arm",
        "split": "test (never read by the grid or the pre-training)",
        "tests": "two-sided paired t-test and Wilcoxon signed-rank test (iis_hf.stats.paired_tests, scipy)",
        "multiplicity": "Holm step-down over the cells (scenario x width) of each endpoint, separately for the "
        "t-test and Wilcoxon p-values",
        "verdict": f"'higher'/'lower' when both Holm-adjusted p < {ALPHA}, else 'no detectable difference'",
        "interval": "95% t interval of the mean paired difference (scipy.stats.ttest_rel)",
        "detectable_effect": f"smallest mean paired difference a two-sided paired t-test detects with {POWER:.0%} "
        f"power at alpha {ALPHA}, from the observed sd of the differences (noncentral t, scipy)",
        "metrics": {
            "test_accuracy": "top-1 of the model's own classifier on the test split",
            "iis_rebuilt": "IIS with M prototype-patch concepts rebuilt from the final backbone",
            "iis_loss_bank": "IIS with the concept bank the loss used (after any refresh)",
            "refitted_head_accuracy": "A(s): a head over the loss's bank refitted on the final backbone's features "
            "with the scoring recipe, test accuracy at the loss's sparsity s",
        },
        "seeds": list(scale.confirm_seeds),
    }


def preregister(ctx: Context, runs: list[dict], missing: list[Setting]) -> dict:
    """The binding choice: read back if it exists, else made from the grid and saved before any
    confirmatory run."""
    path = ctx.output_dir / "preregistration.json"
    if path.is_file():
        return json.loads(path.read_text())
    summary = grid_summary(runs)
    prereg = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rule": "per scenario, the grid setting with the largest mean paired validation-accuracy gain over CE only "
        "(mean over widths and grid seeds; ties: the earlier setting, the centre first)",
        "chosen": choose(summary),
        "grid_seeds": list(ctx.scale.grid_seeds),
        "grid_summary": summary,
        "grid_settings_not_run": [
            {"setting": asdict(s), "why": "IISTrainingArguments lacks the field"} for s in missing
        ],
        "seeds": list(ctx.scale.confirm_seeds),
        "plan": analysis_plan(ctx.scale),
        "scale": ctx.scale.name,
    }
    write_json(path, prereg)
    ctx.log(f"[preregistration] {json.dumps(prereg['chosen'])} written to {path}")
    return prereg


# ---------------------------------------------------------------------------------------- analysis
def metric_of(run: dict, metric: str, sparsity: float | None = None) -> float | None:
    """One endpoint's value in a run; the refitted head is read at `sparsity` (default: the run's own)."""
    scores = run["scores"]
    ratio = f"{sparsity if sparsity is not None else run['setting']['sparsity']:g}"
    value = {
        "test_accuracy": scores["test_accuracy"],
        "iis_rebuilt": scores["rebuilt"]["iis"],
        "iis_loss_bank": scores["loss_bank"]["iis"],
        "refitted_head_accuracy": scores["loss_bank"]["accuracies"][ratio],
    }[metric]
    return value if value is not None and math.isfinite(value) else None


def detectable_effect(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true mean difference a two-sided paired t-test finds with `power` (noncentral t)."""
    from scipy.optimize import brentq
    from scipy.stats import nct
    from scipy.stats import t as student

    if n < 2 or not sd > 0:
        return 0.0
    df, crit = n - 1, student.ppf(1 - alpha / 2, n - 1)

    def shortfall(delta: float) -> float:
        nc = delta * math.sqrt(n) / sd
        lower = nct.cdf(-crit, df, nc)  # negligible here; scipy can return NaN for it
        return nct.sf(crit, df, nc) + (0.0 if math.isnan(lower) else lower) - power

    high = sd
    while shortfall(high) < 0:  # widen the bracket (n = 2 needs about 10 sd)
        high *= 2
    return float(brentq(shortfall, 1e-12 * sd, high))


def compare(a: list[float], b: list[float]) -> dict:
    """Paired tests of a - b, with the 95% interval of the mean difference and the detectable effect."""
    from scipy.stats import ttest_rel

    from iis_hf.stats import paired_tests

    out = paired_tests(a, b)
    d = np.asarray(a) - np.asarray(b)
    if np.ptp(d) > 0:
        ci = ttest_rel(a, b).confidence_interval(0.95)
        out["ci95"] = [float(ci.low), float(ci.high)]
    else:
        out["ci95"] = [float(d.mean()), float(d.mean())]
    out["detectable_effect"] = detectable_effect(out["sd_difference"], out["n"])
    return out


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values in the given order (scipy has none); None counts as 1."""
    filled = [1.0 if p is None or not math.isfinite(p) else float(p) for p in pvalues]
    adjusted, running = [1.0] * len(filled), 0.0
    for rank, i in enumerate(sorted(range(len(filled)), key=filled.__getitem__)):
        running = max(running, min(1.0, (len(filled) - rank) * filled[i]))
        adjusted[i] = running
    return [None if p is None or not math.isfinite(p) else q for p, q in zip(pvalues, adjusted)]


def verdict(test: dict) -> str:
    ps = [test.get("t_p_holm"), test.get("wilcoxon_p_holm")]
    if all(p is not None and p < ALPHA for p in ps):
        return "higher" if test["mean_difference"] > 0 else "lower"
    return "no detectable difference"


def analyse(runs: list[dict], prereg: dict) -> dict:
    """Every endpoint in every cell (scenario x width x chosen setting), Holm over each endpoint's cells."""
    confirm = [r for r in runs if r["phase"] == "confirm"]
    cells, out = [], {}
    for scenario in SCENARIOS:
        for width in dict.fromkeys(r["width"] for r in confirm):
            for setting in prereg["chosen"][scenario]:
                cells.append((scenario, width, Setting(**setting)))
    for name, metric, comparator, role in ENDPOINTS:
        entries = []
        for scenario, width, setting in cells:
            arm, s = setting.key, setting.sparsity
            cell = [r for r in confirm if r["scenario"] == scenario and r["width"] == width]
            mine = {r["seed"]: metric_of(r, metric, s) for r in cell if r["arm"] == arm}
            other = {r["seed"]: metric_of(r, metric, s) for r in cell if r["arm"] == comparator}
            seeds = sorted(s for s in set(mine) & set(other) if mine[s] is not None and other[s] is not None)
            entry = {"scenario": scenario, "width": width, "arm": arm, "seeds": seeds}
            if len(seeds) >= 2:
                entry.update(compare([mine[s] for s in seeds], [other[s] for s in seeds]))
            entries.append(entry)
        for test in ("t_p", "wilcoxon_p"):
            for entry, p in zip(entries, holm([e.get(test) for e in entries])):
                entry[f"{test}_holm"] = p
        for entry in entries:
            entry["verdict"] = verdict(entry) if "n" in entry else "not measured"
        out[name] = {"metric": metric, "comparator": comparator, "role": role, "cells": entries}
    return out


def arm_summary(runs: list[dict]) -> list[dict]:
    """Mean and sd of every metric per confirmatory cell and arm (the results table's first columns)."""
    confirm = [r for r in runs if r["phase"] == "confirm"]
    out = []
    for key in dict.fromkeys((r["scenario"], r["width"], r["arm"]) for r in confirm):
        group = [r for r in confirm if (r["scenario"], r["width"], r["arm"]) == key]
        row = {"scenario": key[0], "width": key[1], "arm": key[2], "seeds": len(group)}
        for metric in ("test_accuracy", "iis_rebuilt", "iis_loss_bank", "refitted_head_accuracy"):
            values = [v for v in (metric_of(r, metric) for r in group) if v is not None]
            row[metric] = (
                {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
                if values
                else None
            )
        trained = [
            r["scores"]["trained_head_accuracy"] for r in group if "trained_head_accuracy" in r["scores"]
        ]
        row["trained_head_accuracy"] = statistics.mean(trained) if trained else None
        row["train_seconds"] = statistics.mean(r["train_seconds"] for r in group)
        out.append(row)
    return out


# ------------------------------------------------------------------------------ results and report
def versions() -> dict:
    names = (
        "torch",
        "transformers",
        "datasets",
        "accelerate",
        "scipy",
        "scikit-learn",
        "numpy",
        "animal-shape-mnist",
        "iis-hf",
    )
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def build_results(
    ctx: Context, runs: list[dict], prereg: dict, pretraining: dict, missing, started: float
) -> dict:
    """Every number of the experiment, with how it was produced (results.json)."""
    phase_seconds = {
        phase: round(sum(r["train_seconds"] + r["measure_seconds"] for r in runs if r["phase"] == phase), 1)
        for phase in ("grid", "confirm")
    }
    phase_seconds["pretraining"] = round(sum(i["seconds"] for i in pretraining.values()), 1)
    data = {
        scenario: {split: len(ctx.data[scenario][split]) for split in ctx.data[scenario]}
        for scenario in SCENARIOS
    }
    return {
        "issue": 19,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": ctx.device,
        "scale": asdict(ctx.scale),
        "shrunk": list(ctx.scale.shrunk),
        "versions": versions(),
        "data": data,
        "backbones": pretraining,
        "grid": {
            "design": "one factor at a time around the centre (fractional; the full factorial is 36 settings)",
            "settings": [asdict(s) | {"key": s.key} for s in grid_settings(ctx.scale)[: ctx.scale.grid_size]],
            "not_run": [asdict(s) for s in missing],
            "summary": grid_summary(runs),
        },
        "preregistration": prereg,
        "confirmatory": {
            "arms": arm_summary(runs),
            "endpoints": analyse(runs, prereg),
            "paired_differences": paired_differences(runs, prereg),
        },
        "wall_seconds": {**phase_seconds, "this_invocation": round(time.perf_counter() - started, 1)},
        "runs": runs,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def plot_differences(results: dict, path: Path) -> None:
    """Paired differences (chosen setting - CE only) per cell: accuracy and IIS, points and 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["confirmatory"]["paired_differences"]
    names = ("accuracy_vs_ce", "iis_rebuilt_vs_ce")
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        endpoint = results["confirmatory"]["endpoints"][name]
        labels = []
        for x, entry in enumerate(endpoint["cells"]):
            pairs = runs.get(f"{name}|{entry['scenario']}|{entry['width']}|{entry['arm']}", [])
            jitter = np.linspace(-0.15, 0.15, len(pairs)) if pairs else []
            ax.scatter(np.full(len(pairs), x) + jitter, pairs, s=10, alpha=0.5, color="C0")
            if "ci95" in entry:
                low, high = entry["ci95"]
                ax.errorbar(
                    x,
                    entry["mean_difference"],
                    yerr=[[entry["mean_difference"] - low], [high - entry["mean_difference"]]],
                    fmt="o",
                    color="C3",
                    capsize=4,
                )
            labels.append(f"{entry['scenario']}\n{entry['width']}")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(f"{endpoint['metric']}: chosen setting − CE only", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png", delete=False) as tmp:
        fig.savefig(tmp.name, dpi=120)
    os.replace(tmp.name, path)
    plt.close(fig)


def paired_differences(runs: list[dict], prereg: dict) -> dict[str, list[float]]:
    """The per-seed differences behind the figure, keyed by endpoint, scenario, width and arm."""
    out = {}
    confirm = [r for r in runs if r["phase"] == "confirm"]
    for name, metric, comparator, _ in ENDPOINTS[:3]:
        for scenario in SCENARIOS:
            for setting in map(lambda s: Setting(**s), prereg["chosen"][scenario]):
                for width in dict.fromkeys(r["width"] for r in confirm):
                    cell = [r for r in confirm if r["scenario"] == scenario and r["width"] == width]
                    mine = {
                        r["seed"]: metric_of(r, metric, setting.sparsity)
                        for r in cell
                        if r["arm"] == setting.key
                    }
                    other = {
                        r["seed"]: metric_of(r, metric, setting.sparsity)
                        for r in cell
                        if r["arm"] == comparator
                    }
                    out[f"{name}|{scenario}|{width}|{setting.key}"] = [
                        mine[s] - other[s]
                        for s in sorted(set(mine) & set(other))
                        if mine[s] is not None and other[s] is not None
                    ]
    return out


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.2g}" if value < 0.1 else f"{value:.2f}"


def _ms(summary: dict | None, digits: int = 4) -> str:
    return "–" if not summary else f"{summary['mean']:.{digits}f} ± {summary['sd']:.{digits}f}"


def configuration_table(results: dict) -> list[str]:
    """The experiment's settings beside the paper's."""
    prereg, scale = results["preregistration"], results["scale"]
    widths = ", ".join(f"M = {w['num_concepts']} at D = {w['hidden_sizes'][-1]}" for w in scale["widths"])
    chosen = "; ".join(f"{sc}: {Setting(**s).label}" for sc, ss in prereg["chosen"].items() for s in ss)
    starts = "; ".join(
        f"D = {b['dim']}: {b['images']} silhouettes, {b['epochs_run']} epochs (early stopping), best val acc {b['best_validation_accuracy']:.3f}"
        for b in results["backbones"].values()
    )
    arms = {(a["scenario"], a["width"], a["arm"]): a for a in results["confirmatory"]["arms"]}
    headroom = "; ".join(
        f"{sc} {w}: off-the-shelf {_ms(a['test_accuracy'], 3)}"
        for (sc, w, arm), a in arms.items() if arm == OFF_THE_SHELF
    )  # fmt: skip
    rows = [
        ("sparsity s of the loss", "0.1", f"grid 0.1 / 0.5 / 0.9; confirmed: {chosen}"),
        ("concepts M vs representation D", "M = 200, D = 768 / 2048 (M << D)", widths),
        ("starting point", "ImageNet-pre-trained backbones", f"ResNets pre-trained to a validation plateau: {starts}"),
        ("headroom (test accuracy before fine-tuning)", "–", headroom or "–"),
        ("fine-tuning", "–", f"in-domain: {scale['indomain_images']} animal images x {scale['indomain_epochs']:g} epochs; "
         f"transfer: {scale['digits_train']} digits x {scale['transfer_epochs']:g} epochs, new classifier; AdamW lr "
         f"{scale['indomain_learning_rate']:g} (in-domain) / {scale['transfer_learning_rate']:g} (transfer), "
         f"cosine, 10% warm-up, batch {scale['batch_size']}, shifts of up to 2 px"),
        ("interpretation head", "–", "own optimizer group (lr 1e-2, no decay), random or warm "
         "(fitted on the starting features); A(s) reported after a refit on the final features"),
        ("concepts during training", "–", f"prototype patches of the starting backbone, fixed or rebuilt every {scale['refresh_epochs']:g} epoch"),
        ("concepts after (IIS)", "–", "rebuilt from the final backbone, and the bank the loss used"),
        ("comparator", "–", "CE only (IISTrainer, λ = 0: the plain Trainer's path) and off-the-shelf (in-domain: no "
         "fine-tuning; transfer: linear probe on the frozen backbone's features, iis-hf's probe A0)"),
        ("seeds", "–", f"grid {len(scale['grid_seeds'])}, confirmatory {len(scale['confirm_seeds'])} fresh paired seeds"),
    ]  # fmt: skip
    return ["| | the paper | this run |", "|---|---|---|", *(f"| {a} | {b} | {c} |" for a, b, c in rows)]


def grid_table(results: dict) -> list[str]:
    """Validation gain over CE only of every grid setting in every cell; the chosen ones in bold."""
    summary = results["grid"]["summary"]
    cells = list(dict.fromkeys((r["scenario"], r["width"]) for r in summary))
    chosen = {(sc, Setting(**s).key) for sc, ss in results["preregistration"]["chosen"].items() for s in ss}
    head = "| setting | " + " | ".join(f"{sc} {w}" for sc, w in cells) + " |"
    lines = [head, "|---|" + "---|" * len(cells)]
    for arm in dict.fromkeys(r["arm"] for r in summary):
        row = {(r["scenario"], r["width"]): r for r in summary if r["arm"] == arm}
        label = Setting(**next(iter(row.values()))["setting"]).label
        values = []
        for cell in cells:
            r = row.get(cell)
            text = "–" if r is None else f"{r['gain'] * 100:+.2f} (head {r['trained_head_accuracy']:.2f})"
            values.append(f"**{text}**" if (cell[0], arm) in chosen else text)
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return lines


def results_table(results: dict) -> list[str]:
    """Every endpoint in every cell: means, paired difference with its CI, p-values, Holm, detectable effect."""
    arms = {(a["scenario"], a["width"], a["arm"]): a for a in results["confirmatory"]["arms"]}
    lines = [
        "| endpoint | scenario | backbone | n | chosen | comparator | Δ (points or IIS) [95% CI] | p t / W | Holm p t / W | detectable Δ | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, endpoint in results["confirmatory"]["endpoints"].items():
        scale = 100 if "accuracy" in endpoint["metric"] else 1
        digits = 2 if scale == 100 else 4
        for e in endpoint["cells"]:
            if "n" not in e:
                lines.append(
                    f"| {name} | {e['scenario']} | {e['width']} | {len(e['seeds'])} | – | – | – | – | – | – | not measured |"
                )
                continue
            mine = arms.get((e["scenario"], e["width"], e["arm"]))
            other = arms.get((e["scenario"], e["width"], endpoint["comparator"]))
            d, (lo, hi) = e["mean_difference"] * scale, (v * scale for v in e["ci95"])
            lines.append(
                f"| {name}{' (primary)' if endpoint['role'] == 'primary' else ''} | {e['scenario']} | {e['width']} | {e['n']} | "
                f"{_ms(mine[endpoint['metric']]) if mine else '–'} | {_ms(other[endpoint['metric']]) if other else '–'} | "
                f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}] | {_p(e.get('t_p'))} / {_p(e.get('wilcoxon_p'))} | "
                f"{_p(e.get('t_p_holm'))} / {_p(e.get('wilcoxon_p_holm'))} | ±{e['detectable_effect'] * scale:.{digits}f} | {e['verdict']} |"
            )
    return lines


def verdict_sentences(results: dict) -> list[str]:
    """One sentence per endpoint, over its cells."""
    lines = []
    for name, endpoint in results["confirmatory"]["endpoints"].items():
        cells = [e for e in endpoint["cells"] if "n" in e]
        counts = Counter(e["verdict"] for e in cells)
        parts = ", ".join(f"{k} in {v} of {len(cells)} cells" for k, v in counts.items()) or "not measured"
        unit = "points" if "accuracy" in endpoint["metric"] else "IIS"
        scale = 100 if unit == "points" else 1
        spans = [e["mean_difference"] * scale for e in cells]
        span = f" (mean differences {min(spans):+.2f} to {max(spans):+.2f} {unit})" if spans else ""
        lines.append(
            f"- **{name}** ({endpoint['role']}; {endpoint['metric']}, chosen setting vs {endpoint['comparator']}): {parts}{span}."
        )
    return lines


def report(results: dict, figure: str | None) -> str:
    """The Markdown section "Finding 2" (configuration, grid, pre-registration, results, verdicts)."""
    prereg = results["preregistration"]
    walls = results["wall_seconds"]
    lines = [
        "## Finding 2: fine-tuning with interpretability maximization (faithful re-test, issue 19)",
        "",
        f"`{results['command']}` ({results['threads']} thread(s), device {results['device']}, scale `{results['scale']['name']}`). "
        "Backbones pre-trained to a validation plateau; an exploratory grid chose the setting on validation data; "
        "the choice and the analysis plan were saved before the confirmatory run on fresh paired seeds and the test split.",
        "",
        "### Configuration",
        "",
        *configuration_table(results),
        "",
        "### Exploratory grid (validation accuracy gain over CE only, points; trained head's validation accuracy)",
        "",
        f"{results['grid']['design']}; grid seeds {results['scale']['grid_seeds']}. Chosen setting in bold.",
        "",
        *grid_table(results),
        "",
    ]
    if results["grid"]["not_run"]:
        lines += [
            f"Not run (the checkout's `IISTrainingArguments` lacked the field): {', '.join(Setting(**s).label for s in results['grid']['not_run'])}.",
            "",
        ]
    lines += [
        f"**Pre-registered** {prereg['created']} (`preregistration.json`): {prereg['rule']}. "
        + "; ".join(f"{sc}: {Setting(**s).label}" for sc, ss in prereg["chosen"].items() for s in ss)
        + ".",
        "",
        f"### Confirmatory results (test split, {len(prereg['seeds'])} paired seeds)",
        "",
        "Accuracy differences in points (x 100), IIS differences in IIS units. p: two-sided paired t / Wilcoxon; Holm over the "
        f"cells of each endpoint; detectable Δ: the smallest mean difference found with {POWER:.0%} power at alpha {ALPHA}.",
        "",
        *results_table(results),
        "",
        *verdict_sentences(results),
        "",
    ]
    if figure:
        lines += [f"![paired differences per setting]({figure})", ""]
    lines += [
        f"Wall time: pre-training {walls['pretraining'] / 60:.1f} min, grid {walls['grid'] / 60:.1f} min, confirmatory "
        f"{walls['confirm'] / 60:.1f} min. Shrunk to fit the CPU budget: "
        + ("; ".join(results["shrunk"]) or "nothing")
        + ".",
        "",
    ]
    return "\n".join(lines)


def write_outputs(results: dict, output_dir: Path, report_path: Path | None) -> None:
    """results.json, the figure, and (when asked) the report with the figure beside it."""
    from iis_hf.files import write_text_atomic

    write_json(output_dir / "results.json", results)
    figure = output_dir / "finding2_differences.png"
    plot_differences(results, figure)
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        beside = report_path.parent / figure.name
        if beside.resolve() != figure.resolve():
            shutil.copyfile(figure, beside)
        write_text_atomic(report_path, report(results, beside.name))


# -------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output-dir", type=Path, required=True, help="runs.jsonl, preregistration.json, results.json"
    )
    parser.add_argument("--write-report", type=Path, default=None, help="write the Markdown section here")
    parser.add_argument(
        "--scale", choices=sorted(SCALES), default="cpu", help="sizes (gpu: for a GPU machine)"
    )
    parser.add_argument("--quick", action="store_true", help="--scale quick: tiny everything, < 10 minutes")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite report and figure from results.json"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.scale = "quick"
    return args


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Only warnings and errors from the Hugging Face libraries and no progress bars, for the run;
    the previous state comes back after it (the smoke test runs `main` inside pytest)."""
    import datasets
    import transformers

    hf_logging = transformers.utils.logging
    saved = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
    saved_datasets = (datasets.utils.logging.get_verbosity(), datasets.is_progress_bar_enabled())
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(saved[0])
        (hf_logging.enable_progress_bar if saved[1] else hf_logging.disable_progress_bar)()
        datasets.utils.logging.set_verbosity(saved_datasets[0])
        (datasets.enable_progress_bars if saved_datasets[1] else datasets.disable_progress_bars)()


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line and run (or resume) the experiment, quietly; returns the results."""
    args = parse_args(argv)
    with quiet():
        return run_experiment(args)


def run_experiment(args: argparse.Namespace) -> dict:
    """Pre-train (or reuse) the backbones, then the grid, the pre-registration, the confirmatory runs."""
    started = time.perf_counter()
    torch.set_num_threads(1)  # the machine is shared; one intra-op thread keeps runs steady
    output_dir = args.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        results = json.loads((output_dir / "results.json").read_text())
        write_outputs(results, output_dir, args.write_report)
        return results
    scale = SCALES[args.scale]
    log(f"scale {scale.name}, device {args.device}, output {output_dir}")
    data = load_data(scale)
    # accelerate calls gc.collect() at the end of every training: with the data and libraries
    # loaded that took ~1 s per run; the long-lived objects are frozen out of its reach.
    gc.collect()
    gc.freeze()
    backbones, pretraining = {}, {}
    for width in scale.widths:
        model, info = pretrain(
            width, data["in-domain"], scale, args.device, output_dir / "backbones" / width.name, log
        )
        backbones[width.name], pretraining[width.name] = model.cpu().eval(), info
    gc.collect()
    gc.freeze()  # and the backbones
    runs = read_runs(output_dir / "runs.jsonl")
    done = {run_key(r["phase"], r["scenario"], r["width"], r["arm"], r["seed"]) for r in runs}
    ctx = Context(scale, args.device, data, backbones, output_dir, log, done)
    plan, _, missing = grid_plan(ctx)
    if missing and not (output_dir / "preregistration.json").is_file():
        log(f"[grid] not run (IISTrainingArguments lacks the field): {[s.key for s in missing]}")
    run_all(ctx, "grid", plan)
    prereg = preregister(ctx, read_runs(ctx.runs_path), missing)
    run_all(ctx, "confirm", confirm_plan(ctx, prereg))
    runs = read_runs(ctx.runs_path)
    results = build_results(ctx, runs, prereg, pretraining, prereg["grid_settings_not_run"], started)
    write_outputs(results, output_dir, args.write_report)
    log(f"done in {(time.perf_counter() - started) / 60:.1f} min: {output_dir / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
