"""Fine-tuning with interpretability maximization: `IISTrainingArguments` and `IISTrainer`.

``loss = CE(backbone logits) + iis_weight * mean_r CE(interpretation head at ratio r)`` pushes the
representation to keep its accuracy under sparse interpretation, which is a direct push on IIS.
Everything else is the `transformers.Trainer` users know: accelerate for devices, processes and
mixed precision, checkpoints, callbacks, the Hub. Saving, resuming and pushing the head are
`HeadSavingTrainer`'s (`iis_hf.training.saving`), its base; building and refreshing the concept bank
are in `iis_hf.training.concepts`; what an evaluation collects is in `iis_hf.training.evaluation`.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import TrainingArguments
from transformers.trainer_pt_utils import LabelSmoother

from ..concepts import ConceptBank
from ..config import ratio_index
from ..features.backbones import preprocessing_environment
from ..heads import HeadFit, fit_heads
from ..modeling import IISModelForImageClassification
from ..pipeline import score_representations
from ..progress import progress_bar
from ..splits import random_subset
from .arguments import IISTrainingArguments
from .checkpoints import checkpoint_problem, last_complete_checkpoint

# Re-exported: their home moved beside the Trainer (the concepts, the evaluation, the saving side).
from .concepts import (  # noqa: F401
    PROTOTYPE_KINDS,
    ConceptRefresh,
    check_refreshable,
    concept_count,
    concepts_for,
    rebuilt_bank,
    representation_width,
)
from .evaluation import MODEL_HEAD_METRIC, EvaluationSide  # noqa: F401
from .saving import REPORT_FILES, HeadSavingTrainer  # noqa: F401

# `LabelSmoother` divides by the accumulated batch's count (`num_items_in_batch`) only in newer
# transformers; the oldest supported one averages over each micro-batch.
SMOOTHER_TAKES_COUNT = "num_items_in_batch" in inspect.signature(LabelSmoother.__call__).parameters


class IISTrainer(HeadSavingTrainer):
    """A `Trainer` that fine-tunes with the interpretability loss and reports IIS at evaluation.

    Pass a plain `*ForImageClassification` model: it is wrapped into an
    `IISModelForImageClassification` over `concept_bank` (or `args.iis_concept_bank`). Without
    a bank the prototypes come from the raw images of `concept_dataset`
    (default: `train_dataset` without its transform).

    As `Trainer` does, the classification term honours `args.label_smoothing_factor` and a
    `compute_loss_func=` (see `compute_loss`). `args.iis_head_init="warm"` fits the head before the
    first step, `args.iis_concept_refresh_epochs` rebuilds the concepts with the current backbone.

    A drop-in for `Trainer`: `args` may be a plain `TrainingArguments`, so a Trainer script changes by
    its class name only. Its fields are kept as given (`remove_unused_columns` too: image datasets
    read by a collator need False, as with Trainer; `ddp_find_unused_parameters=None` becomes False).
    The IIS settings then come from `iis_args=`, a mapping of `IISTrainingArguments`' `iis_*` fields
    (``iis_args={"iis_weight": 0.3}``; the rest keep their defaults), checked as the dataclass
    checks them, like the kwargs dicts of transformers (`gradient_checkpointing_kwargs`).
    `self.args` is the `IISTrainingArguments` built from both
    (`IISTrainingArguments.from_training_arguments`), so the code sees one type. With
    `IISTrainingArguments` the settings are its fields, and `iis_args` must be None.

    Extra keyword arguments:
        iis_args: the `iis_*` settings for a plain `TrainingArguments` (see above).
        concept_bank: a ready `ConceptBank` (overrides `args.iis_concept_bank`).
        concept_dataset: a `datasets` image dataset with labels, for 'auto' concepts (and the
            images a concept refresh embeds again).
        iis_fit_dataset: whose features fit the eval-time IIS heads (default: `train_dataset`).
    """

    args: IISTrainingArguments  # `__init__` turns any `TrainingArguments` into these

    def __init__(
        self,
        model=None,
        args: TrainingArguments | None = None,
        *positional,
        iis_args: Mapping[str, Any] | None = None,
        concept_bank: ConceptBank | None = None,
        concept_dataset=None,
        iis_fit_dataset=None,
        **kwargs,
    ):
        args = IISTrainingArguments.from_training_arguments(args, iis_args)
        self.concept_dataset = concept_dataset if concept_dataset is not None else kwargs.get("train_dataset")
        if isinstance(model, IISModelForImageClassification):
            apply_arguments(model, args)
        elif model is not None:
            bank = concept_bank or concepts_for(
                args, model, self.concept_dataset, kwargs.get("processing_class")
            )
            model = IISModelForImageClassification(
                model,
                bank,
                args.iis_sparsity_ratios,
                iis_weight=args.iis_weight,
                seed=args.seed,
                representation_module=args.iis_representation_module,
            )
        super().__init__(model, args, *positional, **kwargs)
        # Have Trainer count the labels of all accumulated micro-batches (num_items_in_batch):
        # compute_loss divides the summed loss by that count, which keeps gradient accumulation
        # exact for every architecture (ResNet and CLIP scale their own loss wrongly under gradient
        # accumulation: huggingface/transformers#47688).
        self.model_accepts_loss_kwargs = True
        self.iis_fit_dataset = iis_fit_dataset
        self.last_iis_result = None
        self.saved_head_accuracy = None
        self._side: EvaluationSide | None = None  # what an evaluation collects beside Trainer's outputs
        self._loss_parts: torch.Tensor | None = None
        if args.iis_concept_refresh_epochs is not None and model is not None:
            check_refreshable(self.iis_model.concept_bank, self.concept_dataset)
            self.add_callback(ConceptRefresh(args.iis_concept_refresh_epochs, self.refresh_concepts))

    # -- the optimizer -----------------------------------------------------------------------------
    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """Trainer's optimizer, with the interpretation head in a group of its own.

        The head is a freshly initialised linear layer over concept activations, not a pre-trained
        backbone: at the backbone's learning rate (5e-5 by default) it barely moves. It trains at
        `iis_head_learning_rate` (the published heads' 1e-2 by default) with `iis_head_weight_decay`
        (0), following the same schedule shape (warm-up, decay) as the backbone.
        """
        created = self.optimizer is None and self.optimizer_cls_and_kwargs is None
        # The `create_optimizer` of transformers 4.x takes no model.
        optimizer = super().create_optimizer() if model is None else super().create_optimizer(model)
        head = [p for p in self.iis_model.iis_head.parameters() if p.requires_grad]
        if (
            created
            and head
            and self.args.iis_head_learning_rate is not None
            and hasattr(optimizer, "param_groups")
        ):
            ids = {id(p) for p in head}
            for group in optimizer.param_groups:
                group["params"] = [p for p in group["params"] if id(p) not in ids]
            optimizer.add_param_group(
                {
                    "params": head,
                    "lr": self.args.iis_head_learning_rate,
                    "weight_decay": self.args.iis_head_weight_decay,
                }
            )
        return optimizer

    # -- the loss ----------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """``classification + iis_weight * interpretation``, each per sample of the accumulated batch.

        The classification term is Trainer's (`classification_loss`); the interpretation term is the
        heads' CE averaged over the loss ratios, with the same label smoothing
        (`args.label_smoothing_factor`): the heads then learn the targets the backbone learns.
        """
        labels = inputs.get("labels")
        if labels is None:
            raise ValueError(
                "the batch has no 'labels': IISTrainer needs labelled data (a dataset with a label column and a "
                "collate_fn that returns 'labels')"
            )
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        count = num_items_in_batch if num_items_in_batch is not None else labels.shape[0]
        smoothing = self.label_smoother.epsilon if self.label_smoother is not None else 0.0
        interpretation = self.iis_model.interpretation_loss(
            outputs.iis_logits, labels, reduction="sum", label_smoothing=smoothing
        )
        classification = self.classification_loss(outputs, labels, num_items_in_batch)
        loss = classification + self.iis_model.iis_weight * interpretation / count
        if (
            num_items_in_batch is not None  # then a count over every process (Trainer's convention)
            and self.args.average_tokens_across_devices
            and self.accelerator.num_processes > 1
        ):
            loss = loss * self.accelerator.num_processes
        classification = classification.detach() * count  # summed over the batch, as `interpretation`
        if model.training:  # accumulated on the device: no host sync per step
            parts = torch.stack(
                [classification.detach(), interpretation.detach(), labels.new_tensor(labels.shape[0])]
            )
            self._loss_parts = (
                parts.double() if self._loss_parts is None else self._loss_parts + parts.double()
            )
        outputs.loss = loss
        return (loss, outputs) if return_outputs else loss

    def classification_loss(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        """The backbone's loss as `Trainer.compute_loss` computes it, per sample of the accumulated batch.

        A `compute_loss_func` given to the trainer is called as Trainer calls it,
        ``compute_loss_func(outputs, labels, num_items_in_batch=...)`` (`outputs.logits` are the
        backbone's); otherwise CE, through Trainer's `LabelSmoother` when `label_smoothing_factor`
        is set. Both divide by `num_items_in_batch` (else by the batch's size).
        """
        if self.compute_loss_func is not None:
            return self.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        logits = outputs.logits.float()
        if self.label_smoother is not None:
            if SMOOTHER_TAKES_COUNT:
                return self.label_smoother({"logits": logits}, labels, num_items_in_batch=num_items_in_batch)
            # An older LabelSmoother averages over its micro-batch: rescale to the accumulated count.
            loss = self.label_smoother({"logits": logits}, labels)
            if num_items_in_batch is None:
                return loss
            return loss * labels.ne(self.label_smoother.ignore_index).sum() / num_items_in_batch
        count = num_items_in_batch if num_items_in_batch is not None else labels.shape[0]
        return F.cross_entropy(logits, labels, reduction="sum") / count

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
        """Trainer's (loss, logits, labels), with the backbone's logits as `predictions` (so
        `predict().predictions.argmax(-1)` works as with any classifier); the interpretation logits,
        the representations and both accuracies are collected beside them (`EvaluationSide`)."""
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad():
            if labels is not None:
                loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
                loss = loss.detach()
            else:
                loss, outputs = None, model(**{k: v for k, v in inputs.items() if k != "labels"})
        if self._side is not None:
            self._side.add(self.accelerator, outputs, labels)
        if prediction_loss_only:
            return loss, None, None
        return loss, outputs.logits.detach(), labels

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """Trainer's loop (one `compute_metrics` call, with the `EvalPrediction` a plain Trainer builds),
        then the accuracies of the backbone (``accuracy``) and of the model's own head at each loss
        ratio (``model_head_accuracy_<rho>``), and IIS (`iis_eval`: ``iis``, and ``iis_accuracy_<rho>``
        from heads fitted afresh; see `MODEL_HEAD_METRIC`)."""
        measure_iis = self.args.iis_eval and metric_key_prefix != "test" and description == "Evaluation"
        self._side = EvaluationSide(keep_representations=measure_iis)
        try:
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
            side, self._side = self._side, None
        finally:
            self._side = None
        for key, value in side.accuracies(self.iis_model.sparsity_ratios).items():
            output.metrics.setdefault(f"{metric_key_prefix}_{key}", value)
        if measure_iis and side.num_rows:
            output.metrics.update(self.measure_iis(*side.representations(), metric_key_prefix))
        self.last_interpretation_logits = side.iis_logits()
        return output

    def interpretation_logits(self, test_dataset, ignore_keys=None) -> np.ndarray:
        """The interpretation heads' logits (N, R, num_labels) of `test_dataset`, one row per loss ratio
        (`predict()` gives the backbone's logits, as a plain Trainer does)."""
        self.predict(test_dataset, ignore_keys=ignore_keys)
        return self.last_interpretation_logits

    def predict_from_concepts(
        self, test_dataset, sparsity_ratio: float | None = None, ignore_keys=None
    ) -> np.ndarray:
        """Class probabilities (N, num_labels) from the interpretation head at one loss ratio (None:
        the last), as `IISModelForImageClassification.predict_from_concepts` gives them for a batch."""
        index = ratio_index(self.iis_model.sparsity_ratios, sparsity_ratio)
        logits = torch.from_numpy(np.asarray(self.interpretation_logits(test_dataset, ignore_keys))[:, index])
        return logits.float().softmax(-1).numpy()

    def measure_iis(self, eval_features, eval_labels, metric_key_prefix: str) -> dict[str, float]:
        """Fit the interpretation heads on current train features, score them on the eval features.

        The scoring is `iis_hf.pipeline.score_representations` with `args.scoring_config()`: the
        same code and settings as `iis-hf score`, so `eval_iis` is the number the command line gives.
        """
        train_features, train_labels = self.representations_of(self.iis_fit_dataset or self.train_dataset)
        if train_features is None:
            return {}
        config = self.args.scoring_config()
        config.progress = self.show_progress()
        result = score_representations(
            train_features,
            train_labels,
            eval_features,
            eval_labels,
            self.iis_model.concept_bank,
            config,
            num_classes=int(self.iis_model.config.num_labels),
        )
        result.metadata.update({"global_step": self.state.global_step, "epoch": self.state.epoch})
        if self.processing_class is not None:  # what made the pixel values, as `iis-hf score` records it
            result.settings["environment"] = preprocessing_environment(self.processing_class)
        self.last_iis_result = result
        if result.iis is None:  # chance-level A0: no score (NaN keeps metric_for_best_model working)
            warnings.warn(result.undefined_reason or "IIS is undefined", UserWarning, stacklevel=2)
        metrics = result.to_metrics(prefix=f"{metric_key_prefix}_")
        return {k: float("nan") if v is None else v for k, v in metrics.items()}

    def representations_of(self, dataset) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Representations and labels of up to `iis_eval_max_train_samples` rows, gathered on all ranks.

        Its own pass over the data (no `compute_metrics`, no callbacks), with its own progress bar.
        """
        if dataset is None:
            return None, None
        if len(dataset) > self.args.iis_eval_max_train_samples:
            rows = random_subset(len(dataset), self.args.iis_eval_max_train_samples, self.args.seed)
            dataset = (
                dataset.select(rows)
                if hasattr(dataset, "select")
                else torch.utils.data.Subset(dataset, rows.tolist())
            )
        side = EvaluationSide(keep_representations=True)
        assert self.model is not None  # Trainer holds the model by now (from `model` or `model_init`)
        model = self._wrap_model(self.model, training=False)  # as Trainer's own evaluation loop does
        was_training = model.training
        model.eval()
        dataloader = self.get_eval_dataloader(dataset)
        try:
            for inputs in progress_bar(
                dataloader, desc="IIS features", unit="batch", enabled=self.show_progress()
            ):
                inputs = self._prepare_inputs(inputs)
                with torch.no_grad():
                    outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
                side.add(self.accelerator, outputs, inputs.get("labels"))
        finally:
            model.train(was_training)
        return side.representations()

    def show_progress(self) -> bool:
        return not self.args.disable_tqdm and self.is_local_process_zero()

    # -- training, and the head fitted to the backbone ---------------------------------------------
    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None):
        """`Trainer.train`, resuming only from a *complete* checkpoint.

        Trainer writes a checkpoint in place (weights, optimizer, scheduler, RNG states, then
        ``trainer_state.json``), so a run killed while saving leaves a `checkpoint-N` folder without
        its state. ``resume_from_checkpoint=True`` skips such folders and takes the newest complete
        one (Trainer alone would pick the incomplete one and fail); naming one is a ValueError.
        With ``iis_head_init="warm"`` a run that does not resume fits its head first (`warm_start_head`).
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
        check_label_range(self.train_dataset, int(self.iis_model.config.num_labels), "train_dataset")
        if self.args.iis_head_init == "warm" and resume_from_checkpoint in (None, False):
            self.warm_start_head()
        output = super().train(
            resume_from_checkpoint=resume_from_checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
        )
        if self.args.iis_refit_head:
            self.refit_head()
        return output

    def refit_head(self) -> dict | None:
        """Refit the interpretation head on the final backbone's features with the scoring recipe.

        The head trained along with the backbone chased a moving representation; explanations and
        `ConceptClassifier` predict with the saved head, so it is refitted (`fit_head_to_features`)
        on the features the saved backbone gives. Records, for the model card, the accuracy of the
        trained and of the refitted head at each loss ratio.
        """
        fitted = self.fit_head_to_features()
        if fitted is None:
            return None
        fit, eval_x, eval_y = fitted
        trained = self.head_accuracies(eval_x, eval_y) if eval_x is not None and eval_y is not None else None
        self.load_fitted_head(fit)
        self.saved_head_accuracy = {
            "accuracies": {f"{r:g}": a for r, a in zip(self.iis_model.sparsity_ratios, fit.accuracies)}
            if eval_x is not None
            else {},
            "trained_head_accuracies": trained,
            "how": "refitted on the final backbone's features with the scoring recipe"
            + (" (accuracy on the eval split)" if eval_x is not None else ""),
        }
        return self.saved_head_accuracy

    def warm_start_head(self) -> HeadFit | None:
        """``iis_head_init="warm"``: start from a head fitted on the starting backbone's features.

        A random head's loss first pushes the backbone towards whatever that head happens to read;
        a fitted one (the same recipe as `refit_head`) makes the loss measure how interpretable the
        representation already is. None (and a random head) without training data.
        """
        fitted = self.fit_head_to_features()
        if fitted is None:
            return None
        self.load_fitted_head(fitted[0])
        return fitted[0]

    def fit_head_to_features(self) -> tuple[HeadFit, torch.Tensor | None, torch.Tensor | None] | None:
        """Heads at the loss ratios fitted on the current backbone's features with the scoring recipe.

        The `iis_eval_*` recipe (converged heads, their final state; under the "paper" protocol the
        best epoch on the eval split, or on a held-out part of train without one). Returns the fit and
        the eval features (None without them), or None without training features.
        """
        model = self.iis_model
        train_x, train_y = self.representations_of(self.iis_fit_dataset or self.train_dataset)
        if train_x is None:
            return None
        assert train_y is not None  # `representations_of` gives both or neither
        eval_x, eval_y = (
            self.representations_of(self.eval_dataset) if self.eval_dataset is not None else (None, None)
        )
        recipe = self.args.eval_heads_config()  # the scoring recipe, at the loss's ratios
        selection = recipe.selection_rule
        if selection == "eval" and eval_x is None:  # nothing to choose on: a held-out part of train
            selection = "holdout"
        config = dataclasses.replace(
            recipe, sparsity_ratios=list(model.sparsity_ratios), model_selection=selection, num_seeds=1
        )
        fit = fit_heads(
            train_x,
            train_y,
            eval_x if eval_x is not None else train_x,
            eval_y if eval_y is not None else train_y,
            model.concept_bank,
            num_classes=int(model.config.num_labels),
            config=config,
            seed=self.args.seed,
            device=self.args.device,
            progress=self.show_progress(),
        )
        return fit, eval_x, eval_y

    @torch.no_grad()
    def load_fitted_head(self, fit: HeadFit) -> None:
        """Copy fitted heads into the model's head, in place (the optimizer keeps its parameters)."""
        target = self.iis_model.iis_head.state_dict()
        for name, tensor in fit.heads.state_dict().items():
            target[name].copy_(tensor)

    def refresh_concepts(self) -> ConceptBank:
        """``iis_concept_refresh_epochs``: the concepts of the backbone as it is now.

        The bank is rebuilt from the same image parts with the same recipe and seed
        (`rebuilt_bank`), so it is a function of the backbone alone and concept i stays the same
        part: the head keeps its weights and projects onto the new vectors.
        """
        model = self.iis_model
        bank = rebuilt_bank(
            model.concept_bank, model.backbone, self.concept_dataset, self.processing_class, self.args
        )
        bank.provenance["refreshed_at_step"] = int(self.state.global_step)
        model.replace_concept_bank(bank)
        return bank

    @torch.no_grad()
    def head_accuracies(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Accuracy of the model's current head at each loss ratio on given representations."""
        head = self.iis_model.iis_head
        was_training = head.training
        head.eval()
        try:
            logits = head(features.to(head.weight.device))
        finally:
            head.train(was_training)
        correct = (logits.argmax(-1).cpu() == labels[None]).double().mean(-1)
        return {f"{r:g}": float(a) for r, a in zip(self.iis_model.sparsity_ratios, correct)}


def check_label_range(dataset: Any, num_labels: int, what: str) -> None:
    """A ValueError naming the label and the fix when `dataset`'s label column holds a class id outside
    [0, num_labels): otherwise cross-entropy fails deep inside `train()` with "Target 6 is out of bounds"."""
    columns = getattr(dataset, "column_names", None) or []
    column = next((c for c in ("labels", "label") if c in columns), None)
    if column is None:  # no label column to read (a torch dataset, a stream): the loss checks it
        return
    values = np.asarray(dataset[column])
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer) or values.size == 0:
        return
    bad = values[(values < 0) | (values >= num_labels)]
    if bad.size:
        raise ValueError(
            f"{what}'s {column!r} column holds class id {int(bad[0])} ({bad.size} rows outside [0, {num_labels})), "
            f"but the model has num_labels={num_labels}: load the model with num_labels= the number of classes "
            "(and ignore_mismatched_sizes=True for a pre-trained classifier), or fix the labels"
        )


def apply_arguments(model: IISModelForImageClassification, args: IISTrainingArguments) -> None:
    """The arguments win over a pre-wrapped model's settings; what cannot change is an error."""
    if list(model.sparsity_ratios) != list(args.iis_sparsity_ratios):
        raise ValueError(
            f"the model's interpretation head has ratios {model.sparsity_ratios} but iis_sparsity_ratios is "
            f"{args.iis_sparsity_ratios}: pass iis_sparsity_ratios={model.sparsity_ratios} (or a plain backbone, "
            "which IISTrainer wraps with a new head)"
        )
    model.iis_weight = float(args.iis_weight)
