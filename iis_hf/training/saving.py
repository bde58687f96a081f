"""The `IISTrainer`'s saving side: checkpoints, resuming, the best model, the Hub and the model card.

`HeadSavingTrainer` is the `transformers.Trainer` that writes, restores and pushes an
`IISModelForImageClassification` in iis-hf's layout (the backbone in its standard format, the head,
the concept bank and the last IIS report beside it). Kept apart from the loss and the evaluation
(`iis_hf.training.trainer`) because what lands on disk and on the Hub is one contract of its own.

Every save goes through the public `save_model` (Trainer's checkpoints and `push_to_hub` call it
too). Three private Trainer methods stay overridden, each where transformers offers no public hook.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from transformers import Trainer

from ..files import write_json_atomic, write_text_atomic
from ..hub import public_record
from ..modeling import IIS_FILES, IISModelForImageClassification
from ..outputs import CURVE_NAME, RESULT_NAME
from ..reading import read_json
from ..score import IISResult
from .arguments import IISTrainingArguments

REPORT_FILES = (RESULT_NAME, CURVE_NAME)
# Trainer pickles the arguments (local paths and all) beside each mid-training push; training_args.json
# says the same with no path and no pickle, so the pickle stays on this machine.
PICKLED_ARGUMENTS = "training_args.bin"


def ignore_on_the_hub(folder: Path, name: str) -> None:
    """List `name` in `folder`'s .gitignore, which the Hub applies to every upload of that folder."""
    gitignore = folder / ".gitignore"
    lines = gitignore.read_text(encoding="utf-8").splitlines() if gitignore.is_file() else []
    if name not in lines:
        write_text_atomic(gitignore, "\n".join([*lines, name]) + "\n")


class HeadSavingTrainer(Trainer):
    """A `Trainer` whose saves, resumes, best-model loads and Hub pushes carry the interpretation head."""

    args: IISTrainingArguments  # `IISTrainer.__init__` turns any `TrainingArguments` into these
    last_iis_result: IISResult | None = None  # the last IIS measured: saved beside the model as iis.json
    saved_head_accuracy: dict | None = None  # set by `IISTrainer.refit_head`, for the model card

    @property
    def iis_model(self) -> IISModelForImageClassification:
        # Trainer keeps the bare model in `self.model` (wrappers live in `model_wrapped`); unwrapping
        # on every step cost 0.5 ms, 5% of a small model's step.
        if isinstance(self.model, IISModelForImageClassification):
            return self.model
        return self.accelerator.unwrap_model(self.model)

    # -- saving ------------------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The backbone in the standard format, IIS files beside it, arguments as JSON (no pickle).

        The public hook every save goes through (each checkpoint, `push_to_hub`, a user's call). As
        `Trainer.save_model` does, sharded weights are gathered on every process, the saving process
        writes, and a user's call pushes to the Hub when `push_to_hub` is set.
        """
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        assert output_dir is not None  # TrainingArguments.__post_init__ fills a missing output_dir
        state_dict = self.gathered_state_dict()
        if self.args.should_save:
            self.write_model(output_dir, state_dict)
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save")

    def gathered_state_dict(self) -> dict | None:
        """The full weights when DeepSpeed or FSDP shard them (a collective: every process calls it),
        as `Trainer.save_model` gathers them; None otherwise (the model's own tensors are read)."""
        if self.is_deepspeed_enabled:
            return self.accelerator.get_state_dict(self.model_wrapped)
        if self.is_fsdp_enabled:
            return self.accelerator.get_state_dict(self.model)
        return None

    def write_model(self, output_dir: str, state_dict: dict | None = None) -> None:
        """Write the folder `IISModelForImageClassification.from_pretrained` reads, plus the IIS report."""
        os.makedirs(output_dir, exist_ok=True)
        self.iis_model.save_pretrained(output_dir, state_dict=state_dict, model_card=False)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        # Pushed with the model: a local folder (output_dir, a DeepSpeed config) by its base name only.
        args = public_record(json.loads(self.args.to_json_string()))
        write_json_atomic(Path(output_dir) / "training_args.json", args)
        if self.last_iis_result is not None:
            self.last_iis_result.save_json(Path(output_dir) / RESULT_NAME)
            self.last_iis_result.plot(
                Path(output_dir) / CURVE_NAME,
                title=f"IIS at step {self.last_iis_result.metadata.get('global_step')}",
            )

    def save_state(self) -> None:
        """`Trainer.save_state` (trainer_state.json in the output folder, which a push uploads), with a
        local path (the best checkpoint's) by its base name; checkpoints keep theirs, resuming reads them."""
        super().save_state()
        path = Path(self.args.output_dir or "") / "trainer_state.json"
        if self.is_world_process_zero() and path.is_file():
            write_json_atomic(path, public_record(read_json(path, "trainer state")))

    # -- resuming and the best model -----------------------------------------------------------------
    # No public hook loads resumed weights: train() does it before any callback, and PEFT folders break its loader.
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Backbone and head weights, and the last IIS measured (what the next save writes)."""
        target = self.accelerator.unwrap_model(model) if model is not None else self.iis_model
        target.load_checkpoint(resume_from_checkpoint)
        report = Path(resume_from_checkpoint) / RESULT_NAME
        if report.is_file():
            self.last_iis_result = IISResult.from_dict(read_json(report, "IIS result"))

    # No public hook: Trainer loads the best weights before on_train_end, and PEFT folders break its loader.
    def _load_best_model(self) -> None:
        """Backbone, head and concept bank of the best checkpoint (`load_best_model_at_end`)."""
        assert self.state.best_model_checkpoint is not None  # Trainer calls this only when there is one
        self.iis_model.load_checkpoint(self.state.best_model_checkpoint)

    # -- the Hub -----------------------------------------------------------------------------------
    # No public hook at the floor: on_push_begin is missing in transformers 4.47.1 and never sees the folder.
    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Trainer copies only the backbone's files for mid-training pushes; bring the head along."""
        if self.is_world_process_zero():
            assert self.args.output_dir is not None  # TrainingArguments.__post_init__ fills it
            for name in (*IIS_FILES, *REPORT_FILES):
                source = Path(checkpoint_folder) / name
                if source.is_file():
                    shutil.copy(source, Path(self.args.output_dir) / name)
            ignore_on_the_hub(Path(self.args.output_dir), PICKLED_ARGUMENTS)
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

        assert self.args.output_dir is not None  # TrainingArguments.__post_init__ fills it
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
            "iis_head_init": args.iis_head_init if args.iis_head_init != "random" else None,
            "iis_concept_refresh_epochs": args.iis_concept_refresh_epochs,
            "iis_concepts_per_feature": args.iis_concepts_per_feature,
            "label_smoothing_factor": args.label_smoothing_factor or None,
        }
        return {k: v for k, v in summary.items() if v is not None}

    def latest_eval_metric(self, name: str) -> float | None:
        """The last logged value of `name` (the card reports the final evaluation's)."""
        for entry in reversed(self.state.log_history):
            if name in entry:
                return float(entry[name])
        return None
