"""Training runs of the experiments: shared arguments, pre-training, checkpoints, fine-tuning, and
the files that make a long run resumable (runs.jsonl, strict JSON).

Every fine-tuning arm shares one `TrainingArguments` recipe, so that a plain `Trainer` and an
`IISTrainer` differ only by the interpretability loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iis_hf.demo import demo_image_processor, image_classification_collator
from iis_hf.errors import IISError, first_line
from iis_hf.files import write_json_atomic, write_text_atomic

from .models import build_model, copy_model


# ---------------------------------------------------------------------------------------- recipe
def trainer_default(name: str) -> Any:
    """The default of an `IISTrainingArguments` field: the experiments state the library's default
    (e.g. `iis_head_learning_rate`), never a copy of it."""
    from iis_hf.training import IISTrainingArguments

    field = {f.name: f for f in dataclasses.fields(IISTrainingArguments)}[name]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def training_arguments(
    output_dir: str,
    epochs: float,
    seed: int,
    device: str = "cpu",
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    **overrides: Any,
) -> dict:
    """The `TrainingArguments` every run shares (AdamW, cosine schedule, 10% warm-up, no saving,
    the seed and the data order), as keywords; `overrides` replace or add any of them."""
    return (
        dict(
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
        | overrides
    )


def plain_trainer(model: Any, data: Any, args: dict, callbacks: list | None = None) -> Any:
    """A plain `transformers.Trainer` on `data["train"]`, silent."""
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


# ------------------------------------------------------------------------------------ pre-training
def train_with_checkpoints(
    model_name: str,
    data: Any,
    epochs: Sequence[int],
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 32,
    learning_rate: float = 1e-3,
) -> dict[int, Any]:
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
            args = training_arguments(tmp, last, seed, device, batch_size, learning_rate)
            plain_trainer(model, data, args, callbacks=[KeepCheckpoints()]).train()
    return {e: snapshots[e] for e in wanted}


def pretrain(data: Any, seed: int, epochs: float, model_name: str = "resnet-s", device: str = "cpu") -> Any:
    """A 'pre-trained backbone': a plain-Trainer run from a seeded init."""
    names = data["train"].features["label"].names
    model = build_model(model_name, names, seed)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = plain_trainer(model, data, training_arguments(tmp, epochs, seed, device))
        trainer.train()
    return trainer.model.cpu().eval()


# ------------------------------------------------------------------------------------ fine-tuning
def _iis_trainer(model: Any, data: Any, args: dict, loss: dict) -> Any:
    from transformers import PrinterCallback

    from iis_hf.training import IISTrainer, IISTrainingArguments

    processor = demo_image_processor()
    trainer = IISTrainer(
        model=model,
        args=IISTrainingArguments(**args, **loss),
        train_dataset=data["train"],
        data_collator=image_classification_collator(processor),
        processing_class=processor,
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def finetune_run(
    backbone: Any,
    data: Any,
    seed: int,
    epochs: float,
    iis_weight: float | None,
    ratios: Sequence[float] = (0.9,),
    device: str = "cpu",
    num_concepts: int = 200,
    images_per_class: int = 10,
    head_learning_rate: float | None = None,
    head_weight_decay: float | None = None,
    evaluate_head: bool = False,
) -> dict:
    """iis_weight None: plain Trainer; otherwise IISTrainer. Returns {"model", "seconds", "head_accuracy"}.

    Both start from a copy of `backbone` and train for the same epochs with the same arguments and
    data order; IISTrainer's concepts are prototypes of the starting backbone, its interpretation
    head trains at `head_learning_rate` (default: `IISTrainingArguments`'; its own optimizer group,
    `head_weight_decay`, the backbone's schedule shape) and is not refitted at the end
    (`iis_refit_head=False`: the refit only changes the saved head, not the backbone, and takes
    time). With `evaluate_head`, "head_accuracy" is the trained head's test accuracy at each loss
    ratio (None for the plain Trainer).
    """
    model = copy_model(backbone)
    started = time.perf_counter()
    head_accuracy = None
    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(tmp, epochs, seed, device)
        if iis_weight is None:
            trainer = plain_trainer(model, data, args)
            trainer.train()
            tuned, seconds = trainer.model, time.perf_counter() - started
        else:
            if head_learning_rate is None:
                head_learning_rate = trainer_default("iis_head_learning_rate")
            if head_weight_decay is None:
                head_weight_decay = trainer_default("iis_head_weight_decay")
            loss = dict(
                iis_weight=iis_weight,
                iis_sparsity_ratios=list(ratios),
                iis_head_learning_rate=head_learning_rate,
                iis_head_weight_decay=head_weight_decay,
                iis_refit_head=False,
                iis_num_concepts=num_concepts,
                iis_images_per_class=images_per_class,
                iis_eval=False,
            )
            trainer = _iis_trainer(model, data, args, loss)
            trainer.train()
            tuned, seconds = trainer.iis_model.backbone, time.perf_counter() - started
            if evaluate_head:
                logits = trainer.interpretation_logits(data["test"])  # (N, ratios, classes)
                labels = np.asarray(data["test"]["label"])
                head_accuracy = {
                    str(r): float((logits[:, i].argmax(-1) == labels).mean()) for i, r in enumerate(ratios)
                }
    return {"model": tuned.cpu().eval(), "seconds": seconds, "head_accuracy": head_accuracy}


# ------------------------------------------------------------------------------- files of a run
def json_ready(value: Any) -> Any:
    """Strict JSON: NaN and inf become null, tuples lists, numpy scalars Python numbers, keys strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return json_ready(value.item())
    return value


def write_json(path: Path, data: Any) -> None:
    """Strict JSON, keys sorted, written to a temporary name then renamed."""
    write_json_atomic(path, json_ready(data))


def write_results_json(path: Path, data: Any) -> None:
    """Strict JSON in the order the results were built (the reproduction's results.json and
    docs/RESULTS.json have always been written so), written to a temporary name then renamed."""
    write_text_atomic(path, json.dumps(json_ready(data), indent=1, allow_nan=False))


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


def exit_code(run: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None) -> int:
    """An experiment's command line: `run(argv)`, then 0; or 2 with one line for an error the user can
    fix (`IISError`), as the `iis-hf` commands report them."""
    try:
        run(argv)
    except IISError as err:
        print(f"error: {first_line(err)}", file=sys.stderr)
        return 2
    return 0
