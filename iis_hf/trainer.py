"""Fine-tuning with interpretability maximization: `IISTrainingArguments` and `IISTrainer`.

``loss = CE(backbone logits) + iis_weight * mean_r CE(interpretation head at ratio r)`` pushes the
representation to keep its accuracy under sparse interpretation, which is a direct push on IIS.
Everything else is the `transformers.Trainer` users know: accelerate for devices, processes and
mixed precision, checkpoints, callbacks, the Hub.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import EvalPrediction, Trainer, TrainingArguments

from .concepts import ConceptBank
from .files import write_text_atomic
from .modeling import IIS_FILES, IISModelForImageClassification
from .score import DEFAULT_SPARSITY_RATIOS, validate_sparsity_ratios

REPORT_FILES = ("iis.json", "iis_curve.png")


@dataclass
class IISTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the interpretability loss and IIS at evaluation time.

    The defaults (`iis_weight=0.1`, `iis_sparsity_ratios=[0.9]`) come from a sweep on
    scikit-learn's digits (`benchmarks/finetune_digits.py --sweep`, README.md): the only setting
    whose mean accuracy and mean IIS were both at least the plain Trainer's over 3 seeds. The
    differences there were within seed noise.
    """

    iis_weight: float = field(
        default=0.1,
        metadata={"help": "lambda in loss = CE(model) + lambda * CE(interpretation heads); 0 disables"},
    )
    iis_sparsity_ratios: list[float] = field(
        default_factory=lambda: [0.9],
        metadata={
            "help": "sparsity ratios of the interpretation heads in the loss (the loss averages over them)"
        },
    )
    iis_concepts: str = field(
        default="auto",
        metadata={
            "help": "a ConceptBank folder or Hub id, or 'auto': prototype concepts built from the training set "
            "with the starting backbone"
        },
    )
    iis_num_concepts: int = field(default=200, metadata={"help": "number of concepts C for 'auto' concepts"})
    iis_concept_parts: str = field(
        default="patches",
        metadata={"help": "image parts of 'auto' prototypes", "choices": ["patches", "segments"]},
    )
    iis_images_per_class: int = field(default=10, metadata={"help": "images per class for 'auto' prototypes"})
    iis_eval: bool = field(
        default=True,
        metadata={
            "help": "at each evaluation, fit heads on current features and report eval_iis (costs a pass)"
        },
    )
    iis_eval_ratios: list[float] = field(
        default_factory=lambda: list(DEFAULT_SPARSITY_RATIOS),
        metadata={"help": "ratio grid of the IIS measured at evaluation"},
    )
    iis_eval_epochs: int = field(default=30, metadata={"help": "epochs of head training for eval_iis"})
    iis_eval_max_train_samples: int = field(
        default=5000, metadata={"help": "training images whose features fit the eval_iis heads"}
    )
    # Image datasets keep their raw `image` column until the collator transforms it; Trainer's
    # default (True) would drop it first.
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "keep dataset columns the forward does not name (images need them)"}
    )

    # The head runs in every forward (even at iis_weight=0), so no parameter is ever unused: DDP's
    # search for unused parameters would only cost time (and warn).
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "DDP find_unused_parameters (IISTrainer uses every parameter)"}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.iis_weight < 0:
            raise ValueError(f"iis_weight must be >= 0, got {self.iis_weight}")
        self.iis_sparsity_ratios = validate_sparsity_ratios(self.iis_sparsity_ratios)
        self.iis_eval_ratios = validate_sparsity_ratios(self.iis_eval_ratios, minimum=2)
        for name in (
            "iis_num_concepts",
            "iis_images_per_class",
            "iis_eval_epochs",
            "iis_eval_max_train_samples",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class IISTrainer(Trainer):
    """A `Trainer` that fine-tunes with the interpretability loss and reports IIS at evaluation.

    Pass a plain `*ForImageClassification` model: it is wrapped into an
    `IISModelForImageClassification` over `concept_bank` (or `args.iis_concepts`). With
    ``iis_concepts="auto"`` the prototypes come from the raw images of `concept_dataset`
    (default: `train_dataset` without its transform).

    Extra keyword arguments:
        concept_bank: a ready `ConceptBank` (overrides `args.iis_concepts`).
        concept_dataset: a `datasets` image dataset with labels, for 'auto' concepts.
        iis_fit_dataset: whose features fit the eval-time IIS heads (default: `train_dataset`).
    """

    def __init__(
        self,
        model=None,
        args: IISTrainingArguments | None = None,
        *positional,
        concept_bank: ConceptBank | None = None,
        concept_dataset=None,
        iis_fit_dataset=None,
        **kwargs,
    ):
        if args is None:
            args = IISTrainingArguments(output_dir="trainer_output")
        if not isinstance(args, IISTrainingArguments):
            raise TypeError("IISTrainer needs IISTrainingArguments (a TrainingArguments subclass)")
        if model is not None and not isinstance(model, IISModelForImageClassification):
            bank = concept_bank or resolve_concepts(
                args,
                model,
                concept_dataset if concept_dataset is not None else kwargs.get("train_dataset"),
                kwargs.get("processing_class"),
            )
            model = IISModelForImageClassification(
                model, bank, args.iis_sparsity_ratios, iis_weight=args.iis_weight, seed=args.seed
            )
        self.user_compute_metrics = kwargs.pop("compute_metrics", None)
        super().__init__(model, args, *positional, compute_metrics=self.compute_iis_metrics, **kwargs)
        # Have Trainer count the labels of all accumulated micro-batches (num_items_in_batch):
        # compute_loss divides the summed loss by that count, which keeps gradient accumulation
        # exact for every architecture (HF-NOTES: ResNet and CLIP scale their own loss wrongly).
        self.model_accepts_loss_kwargs = True
        self.iis_fit_dataset = iis_fit_dataset
        self.last_iis_result = None
        self._collect_representations = False
        self._loss_parts: torch.Tensor | None = None

    @property
    def iis_model(self) -> IISModelForImageClassification:
        # Trainer keeps the bare model in `self.model` (wrappers live in `model_wrapped`); unwrapping
        # on every step cost 0.5 ms, 5% of a small model's step.
        if isinstance(self.model, IISModelForImageClassification):
            return self.model
        return self.accelerator.unwrap_model(self.model)

    # -- the loss ----------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.get("labels")
        if labels is None:
            raise ValueError(
                "the batch has no 'labels': IISTrainer needs labelled data (a dataset with a label column and a "
                "collate_fn that returns 'labels')"
            )
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        classification, interpretation = self.iis_model.loss_parts(
            outputs.logits, outputs.iis_logits, labels, reduction="sum"
        )
        loss = classification + self.iis_model.iis_weight * interpretation
        if num_items_in_batch is not None:
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes
        else:
            loss = loss / labels.shape[0]
        if model.training:  # accumulated on the device: no host sync per step
            parts = torch.stack(
                [classification.detach(), interpretation.detach(), labels.new_tensor(labels.shape[0])]
            )
            self._loss_parts = (
                parts.double() if self._loss_parts is None else self._loss_parts + parts.double()
            )
        outputs.loss = loss
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the two loss parts (per sample, averaged since the last log) to training logs."""
        if "loss" in logs and "eval_loss" not in logs:
            parts = self._loss_parts if self._loss_parts is not None else torch.zeros(3, dtype=torch.float64)
            parts = parts.to(self.args.device)
            if self.accelerator.num_processes > 1:
                parts = self.accelerator.reduce(parts, reduction="sum")
            if parts[2] > 0:
                logs["loss_classification"] = round(float(parts[0] / parts[2]), 4)
                logs["loss_iis"] = round(float(parts[1] / parts[2]), 4)
            self._loss_parts = None
        super().log(logs, start_time)

    # -- evaluation --------------------------------------------------------------------------------
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad():
            if labels is not None:
                loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
                loss = loss.detach()
            else:
                loss, outputs = None, model(**inputs)
        if prediction_loss_only:
            return loss, None, None
        predictions = [outputs.logits.detach(), outputs.iis_logits.detach().transpose(0, 1)]
        if self._collect_representations:
            predictions.append(outputs.representations.detach().float())
        return loss, tuple(predictions), labels

    def compute_iis_metrics(self, eval_prediction: EvalPrediction) -> dict[str, float]:
        """Standard accuracy, interpretation accuracy per loss ratio, then the user's metrics."""
        logits, iis_logits = eval_prediction.predictions[:2]
        labels = np.asarray(eval_prediction.label_ids)
        metrics = {"accuracy": float((np.asarray(logits).argmax(-1) == labels).mean())}
        for j, ratio in enumerate(self.iis_model.sparsity_ratios):
            metrics[f"interpretation_accuracy_{ratio:g}"] = float(
                (np.asarray(iis_logits)[:, j].argmax(-1) == labels).mean()
            )
        if self.user_compute_metrics is not None:
            metrics.update(
                self.user_compute_metrics(
                    EvalPrediction(predictions=logits, label_ids=eval_prediction.label_ids)
                )
            )
        return metrics

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        measure = self.args.iis_eval and description == "Evaluation" and not prediction_loss_only
        self._collect_representations = measure
        try:
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
        finally:
            self._collect_representations = False
        if measure and output.label_ids is not None:
            output.metrics.update(self.measure_iis(output, metric_key_prefix))
        return output

    def measure_iis(self, eval_output, metric_key_prefix: str) -> dict[str, float]:
        """Fit the interpretation heads on current train features, score them on the eval features."""
        from .score import compute_iis

        train_features, train_labels = self.representations_of(self.iis_fit_dataset or self.train_dataset)
        if train_features is None:
            return {}
        eval_features = torch.as_tensor(eval_output.predictions[2])
        result = compute_iis(
            train_features,
            train_labels,
            eval_features,
            torch.as_tensor(eval_output.label_ids),
            self.iis_model.concept_bank,
            sparsity_ratios=self.args.iis_eval_ratios,
            num_classes=int(self.iis_model.config.num_labels),
            epochs=self.args.iis_eval_epochs,
            seed=self.args.seed,
            device=self.args.device,
            progress=False,
        )
        result.metadata.update({"global_step": self.state.global_step, "epoch": self.state.epoch})
        self.last_iis_result = result
        metrics = {
            f"{metric_key_prefix}_iis": result.iis,
            f"{metric_key_prefix}_iis_standard_accuracy": result.standard_accuracy,
        }
        for ratio, accuracy in zip(result.sparsity_ratios, result.accuracies):
            metrics[f"{metric_key_prefix}_iis_accuracy_{ratio:g}"] = accuracy
        return metrics

    def representations_of(self, dataset):
        """Representations and labels of up to `iis_eval_max_train_samples` rows, gathered on all ranks."""
        if dataset is None:
            return None, None
        if len(dataset) > self.args.iis_eval_max_train_samples:
            rows = np.random.default_rng(self.args.seed).choice(
                len(dataset), self.args.iis_eval_max_train_samples, replace=False
            )
            dataset = (
                dataset.select(np.sort(rows))
                if hasattr(dataset, "select")
                else torch.utils.data.Subset(dataset, np.sort(rows).tolist())
            )
        self._collect_representations = True
        try:
            output = super().evaluation_loop(
                self.get_eval_dataloader(dataset),
                "IIS features",
                prediction_loss_only=False,
                metric_key_prefix="iis_fit",
            )
        finally:
            self._collect_representations = False
        return torch.as_tensor(output.predictions[2]), torch.as_tensor(output.label_ids)

    # -- saving, resuming, the Hub -----------------------------------------------------------------
    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None):
        """`Trainer.train`, resuming only from a *complete* checkpoint.

        Trainer writes a checkpoint in place (weights, optimizer, scheduler, RNG states, then
        ``trainer_state.json``), so a run killed while saving leaves a `checkpoint-N` folder without
        its state. ``resume_from_checkpoint=True`` skips such folders and takes the newest complete
        one (Trainer alone would pick the incomplete one and fail); naming one is a ValueError.
        """
        if resume_from_checkpoint is True:
            output_dir = self.args.output_dir
            resume_from_checkpoint = last_complete_checkpoint(output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"no complete checkpoint-* folder in {output_dir} to resume from")
        elif resume_from_checkpoint not in (None, False):
            problem = checkpoint_problem(resume_from_checkpoint)
            if problem:
                raise ValueError(f"cannot resume from {resume_from_checkpoint}: {problem}")
        return super().train(
            resume_from_checkpoint=resume_from_checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
        )

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The backbone in the standard format, IIS files beside it, arguments as JSON (no pickle)."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.iis_model
        model.save_pretrained(output_dir, state_dict=state_dict)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        write_text_atomic(Path(output_dir) / "training_args.json", self.args.to_json_string())
        if self.last_iis_result is not None:
            self.last_iis_result.save_json(Path(output_dir) / "iis.json")
            self.last_iis_result.plot(
                Path(output_dir) / "iis_curve.png",
                title=f"IIS at step {self.last_iis_result.metadata.get('global_step')}",
            )

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        target = self.accelerator.unwrap_model(model) if model is not None else self.iis_model
        target.load_checkpoint(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        self.iis_model.load_checkpoint(self.state.best_model_checkpoint)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Trainer copies only the backbone's files for mid-training pushes; bring the head along."""
        if self.is_world_process_zero():
            for name in (*IIS_FILES, *REPORT_FILES):
                source = Path(checkpoint_folder) / name
                if source.is_file():
                    shutil.copy(source, Path(self.args.output_dir) / name)
        super()._push_from_checkpoint(checkpoint_folder)

    def create_model_card(self, *args, **kwargs) -> None:
        """Trainer's card, plus IIS in `model-index`, the IIS curve and how to load the head."""
        super().create_model_card(*args, **kwargs)
        if not self.is_world_process_zero():
            return
        from .model_card import add_iis_to_model_card

        add_iis_to_model_card(
            Path(self.args.output_dir) / "README.md",
            result=self.last_iis_result,
            accuracy=self.latest_eval_metric("eval_accuracy"),
            model_name=kwargs.get("model_name") or Path(self.args.output_dir).name,
            dataset=kwargs.get("dataset"),
            iis_weight=self.iis_model.iis_weight,
            sparsity_ratios=self.iis_model.sparsity_ratios,
            repo_id=self.hub_model_id if getattr(self, "hub_model_id", None) else None,
        )

    def latest_eval_metric(self, name: str) -> float | None:
        for entry in reversed(self.state.log_history):
            if name in entry:
                return float(entry[name])
        return None


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why `folder` is not a complete IISTrainer checkpoint, or None when it is one."""
    import json

    from transformers.trainer import TRAINER_STATE_NAME

    from .modeling import IIS_HEAD_NAME

    folder = Path(folder)
    if not folder.is_dir():
        return "no such folder"
    try:
        state = json.loads((folder / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return (
            f"its {TRAINER_STATE_NAME} is missing or unreadable: the run was stopped while saving this "
            "checkpoint; resume from an earlier one"
        )
    if not isinstance(state, dict) or "global_step" not in state:
        return f"its {TRAINER_STATE_NAME} holds no global_step"
    if not (folder / IIS_HEAD_NAME).is_file():
        return f"it has no {IIS_HEAD_NAME} (not an IISTrainer checkpoint)"
    return None


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest `checkpoint-N` under `output_dir` that was saved completely (None when there is none).

    Incomplete folders, left by a run killed while saving, are skipped with a warning.
    """
    import re
    import warnings

    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = []
    for item in output_dir.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", item.name)
        if match and item.is_dir():
            found.append((int(match.group(1)), item))
    for _step, folder in sorted(found, reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return str(folder)
        warnings.warn(f"skipping incomplete checkpoint {folder}: {problem}", UserWarning, stacklevel=2)
    return None


def resolve_concepts(args: IISTrainingArguments, model, dataset, processing_class) -> ConceptBank:
    """`args.iis_concepts` as a ConceptBank: a folder / Hub id, or prototypes built right now."""
    if args.iis_concepts != "auto":
        return ConceptBank.from_pretrained(args.iis_concepts)
    if dataset is None:
        raise ValueError(
            "iis_concepts='auto' builds concepts from a dataset: pass train_dataset or concept_dataset"
        )
    raw = dataset.with_format(None) if hasattr(dataset, "with_format") else dataset
    return ConceptBank.from_prototypes(
        model,
        raw,
        parts=args.iis_concept_parts,
        images_per_class=args.iis_images_per_class,
        num_concepts=args.iis_num_concepts,
        image_processor=processing_class,
        seed=args.seed,
        device=args.device,
        progress=not args.disable_tqdm,
    )
