"""The runs of the paper's finding-2 re-test: data, backbones pre-trained to a plateau, one arm on
one seed, and the resumable loop over a plan (runs.jsonl: a restart skips what is done).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from iis_hf.demo import demo_image_processor

from .data import ANIMAL_CLASSES, Collator, augmented, image_dataset, read_silhouettes, split_rows
from .models import Width, build_resnet, copy_model, with_new_classifier
from .paper_design import (
    CE_ONLY,
    OFF_THE_SHELF,
    SCENARIOS,
    Scale,
    Setting,
    available,
    grid_settings,
    trainer_fields,
)
from .runs import append_run, training_arguments, write_json
from .scoring import backbone_scoring_config, score_backbone

EVAL_BATCH_SIZE = 256  # images per forward when the re-test evaluates (validation, predictions)


# -------------------------------------------------------------------------------------------- data


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

    def animal_split(rows: np.ndarray) -> Any:
        return image_dataset(images[rows], labels[rows], ANIMAL_CLASSES, PILImage.Resampling.BILINEAR)

    animals = DatasetDict(
        pretrain=animal_split(pretrain),
        train=animal_split(pretrain[finetune]),
        validation=animal_split(validation),
        test=animal_split(test),
    )
    digits = load_digits()
    pixels = (digits.images / 16.0 * 255.0).round().astype(np.uint8)
    sizes = [scale.digits_train, scale.digits_validation, scale.digits_test]
    train, validation, test = split_rows(digits.target, sizes, 0)
    names = [str(d) for d in range(10)]

    def digit_split(rows: np.ndarray) -> Any:
        return image_dataset(pixels[rows], digits.target[rows], names, PILImage.Resampling.NEAREST)

    return {
        "in-domain": animals,
        "transfer": DatasetDict(
            train=digit_split(train), validation=digit_split(validation), test=digit_split(test)
        ),
    }


def _accuracy(prediction: Any) -> dict[str, float]:
    """The early stopping's metric: top-1 of the model's classifier on the validation split."""
    from sklearn.metrics import accuracy_score

    return {"accuracy": float(accuracy_score(prediction.label_ids, prediction.predictions.argmax(-1)))}


def pretrain_to_plateau(
    width: Width, data: Any, scale: Scale, device: str, folder: Path, log: Any
) -> tuple[Any, dict]:
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
    model = build_resnet(width, ANIMAL_CLASSES, seed=0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(
            tmp,
            scale.pretrain_max_epochs,
            0,
            device,
            scale.pretrain_batch_size,
            scale.pretrain_learning_rate,
            per_device_eval_batch_size=EVAL_BATCH_SIZE,
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
            data_collator=Collator(demo_image_processor(), seed=0),
            compute_metrics=_accuracy,
            callbacks=[EarlyStoppingCallback(early_stopping_patience=scale.pretrain_patience)],
        )
        trainer.train()
        curve = [e["eval_accuracy"] for e in trainer.state.log_history if "eval_accuracy" in e]
    trained: Any = trainer.model  # the ResNet built above (Trainer types it as an optional Module)
    model = trained.cpu().eval()
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


def finetune_arm(
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

    from iis_hf.training import IISTrainer, IISTrainingArguments

    model = copy_model(start)
    image_processor = demo_image_processor()
    epochs, learning_rate = schedule
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        args = IISTrainingArguments(
            **training_arguments(
                tmp,
                epochs,
                seed,
                device,
                scale.batch_size,
                learning_rate,
                per_device_eval_batch_size=EVAL_BATCH_SIZE,
            ),
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


def predictions(trainer: Any, dataset: Any) -> dict[str, float]:
    """Accuracy of the model's own classifier and of the loss's head as trained (one pass)."""
    output = trainer.predict(dataset)
    labels = output.label_ids
    head = trainer.last_interpretation_logits[:, 0].argmax(-1)
    return {
        "accuracy": float((output.predictions.argmax(-1) == labels).mean()),
        "trained_head_accuracy": float((head == labels).mean()),
    }


def run_key(phase: str, scenario: str, width: str, arm: str, seed: int) -> str:
    """What names a run in runs.jsonl (a rerun skips the keys it finds there)."""
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
        names = self.data["transfer"]["train"].features["label"].names
        return with_new_classifier(pretrained, build_resnet(width, names, seed))

    def schedule(self, scenario: str) -> tuple[float, float]:
        """(epochs, learning rate) of fine-tuning in `scenario`."""
        s = self.scale
        if scenario == "in-domain":
            return s.indomain_epochs, s.indomain_learning_rate
        return s.transfer_epochs, s.transfer_learning_rate


def scoring_config(width: Width, scale: Scale, seed: int, device: str) -> Any:
    """The IIS measurement of a confirmatory run: M = the width's concepts, the scale's head recipe."""
    return backbone_scoring_config(
        width.num_concepts,
        scale.images_per_class,
        scale.head_epochs,
        scale.head_batch_size,
        scale.probe_min_steps,
        seed,
        device,
    )


def run_arm(
    ctx: Context, phase: str, scenario: str, width: Width, arm: str, setting: Setting, seed: int
) -> dict:
    """One arm on one seed: fine-tune (not off-the-shelf), then measure.

    Grid runs are measured on the validation split only; confirmatory runs on the test split."""
    data, start = ctx.data[scenario], ctx.start_model(scenario, width, seed)
    record = {
        "phase": phase,
        "scenario": scenario,
        "width": width.name,
        "dim": width.dim,
        "num_concepts": width.num_concepts,
        "arm": arm,
        "seed": seed,
        "setting": asdict(setting),
    }
    trainer, model, seconds = None, start, 0.0
    if arm != OFF_THE_SHELF:
        trainer, seconds = finetune_arm(
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
