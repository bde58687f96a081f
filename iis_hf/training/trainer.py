"""Fine-tuning with interpretability maximization: `IISTrainingArguments` and `IISTrainer`.

``loss = CE(backbone logits) + iis_weight * mean_r CE(interpretation head at ratio r)`` pushes the
representation to keep its accuracy under sparse interpretation, which is a direct push on IIS.
Everything else is the `transformers.Trainer` users know: accelerate for devices, processes and
mixed precision, checkpoints, callbacks, the Hub.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from transformers import EvalPrediction, Trainer

from ..concepts import ConceptBank
from ..files import write_text_atomic
from ..modeling import IIS_FILES, IISModelForImageClassification
from ..outputs import CURVE_NAME, RESULT_NAME
from ..pipeline import build_concepts, score_representations
from ..splits import random_subset
from .arguments import IISTrainingArguments
from .checkpoints import checkpoint_problem, last_complete_checkpoint

REPORT_FILES = (RESULT_NAME, CURVE_NAME)


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
            bank = concept_bank or concepts_for(
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
        # exact for every architecture (ResNet and CLIP scale their own loss wrongly under gradient
        # accumulation: huggingface/transformers#47688).
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
        """Fit the interpretation heads on current train features, score them on the eval features.

        The scoring is `iis_hf.pipeline.score_representations` with `args.scoring_config()`: the
        same code and settings as `iis-hf score`, so `eval_iis` is the number the command line gives.
        """
        train_features, train_labels = self.representations_of(self.iis_fit_dataset or self.train_dataset)
        if train_features is None:
            return {}
        result = score_representations(
            train_features,
            train_labels,
            torch.as_tensor(eval_output.predictions[2]),
            torch.as_tensor(eval_output.label_ids),
            self.iis_model.concept_bank,
            self.args.scoring_config(),
            num_classes=int(self.iis_model.config.num_labels),
        )
        result.metadata.update({"global_step": self.state.global_step, "epoch": self.state.epoch})
        self.last_iis_result = result
        if result.iis is None:  # chance-level A0: no score (NaN keeps metric_for_best_model working)
            warnings.warn(result.undefined_reason, UserWarning, stacklevel=2)
        metrics = result.to_metrics(prefix=f"{metric_key_prefix}_")
        return {k: float("nan") if v is None else v for k, v in metrics.items()}

    def representations_of(self, dataset):
        """Representations and labels of up to `iis_eval_max_train_samples` rows, gathered on all ranks."""
        if dataset is None:
            return None, None
        if len(dataset) > self.args.iis_eval_max_train_samples:
            rows = random_subset(len(dataset), self.args.iis_eval_max_train_samples, self.args.seed)
            dataset = (
                dataset.select(rows)
                if hasattr(dataset, "select")
                else torch.utils.data.Subset(dataset, rows.tolist())
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
        model.save_pretrained(output_dir, state_dict=state_dict, model_card=False)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        write_text_atomic(Path(output_dir) / "training_args.json", self.args.to_json_string())
        if self.last_iis_result is not None:
            self.last_iis_result.save_json(Path(output_dir) / RESULT_NAME)
            self.last_iis_result.plot(
                Path(output_dir) / CURVE_NAME,
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

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
        dataset_split: str | None = None,
        **kwargs,
    ) -> None:
        """README.md from iis-hf's card template (`iis_hf.model_card`): accuracy and IIS in
        `model-index` with the settings that make the IIS comparable, the dataset's name and split,
        the base model, a compact results table, the IIS curve and how to load the head."""
        if not self.is_world_process_zero():
            return
        from ..model_card import iis_model_card

        first = lambda v: v[0] if isinstance(v, (list, tuple)) and v else v  # noqa: E731
        tag_list = [tags] if isinstance(tags, str) else list(tags or [])
        card = iis_model_card(
            self.iis_model,
            repo_id=self.hub_model_id if getattr(self, "hub_model_id", None) else None,
            model_name=model_name or Path(self.args.output_dir).name,
            result=self.last_iis_result,
            accuracy=self.latest_eval_metric("eval_accuracy"),
            base_model=first(finetuned_from),
            dataset=first(dataset) or first(dataset_tags),
            dataset_config=first(dataset_args),
            dataset_split=dataset_split,
            training=self.training_summary(),
            history=self.state.log_history,
            head_accuracy=getattr(self, "saved_head_accuracy", None),
            tags=tag_list,
            license=license,
        )
        write_text_atomic(Path(self.args.output_dir) / "README.md", str(card))

    def training_summary(self) -> dict[str, object]:
        """The hyperparameters a reader needs to reproduce the run (a compact table)."""
        args = self.args
        summary = {
            "learning_rate": args.learning_rate,
            "train_batch_size": args.per_device_train_batch_size
            * max(1, args.world_size)
            * args.gradient_accumulation_steps,
            "num_epochs": args.num_train_epochs if args.max_steps <= 0 else None,
            "max_steps": args.max_steps if args.max_steps > 0 else None,
            "seed": args.seed,
            "mixed_precision": "bf16" if args.bf16 else "fp16" if args.fp16 else None,
            "iis_weight": self.iis_model.iis_weight,
            "iis_sparsity_ratios": ", ".join(f"{r:g}" for r in self.iis_model.sparsity_ratios),
        }
        return {k: v for k, v in summary.items() if v is not None}

    def latest_eval_metric(self, name: str) -> float | None:
        for entry in reversed(self.state.log_history):
            if name in entry:
                return float(entry[name])
        return None


def concepts_for(args: IISTrainingArguments, model, dataset, processing_class) -> ConceptBank:
    """`args.iis_concepts` as a ConceptBank: a folder / Hub id, or prototypes built right now."""
    config = args.scoring_config()
    if config.concepts.bank is None and dataset is None:
        raise ValueError(
            "iis_concepts='auto' builds concepts from a dataset: pass train_dataset or concept_dataset"
        )
    raw = dataset.with_format(None) if hasattr(dataset, "with_format") else dataset
    config.progress = not args.disable_tqdm
    return build_concepts(model, raw, config, image_processor=processing_class)
