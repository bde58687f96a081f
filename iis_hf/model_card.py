"""Model cards that carry IIS, written through one `huggingface_hub.ModelCard` template.

Every card iis-hf writes for a model (`IISTrainer.create_model_card`, `push_to_hub` of a trainer
or of an `IISModelForImageClassification`) comes from `iis_model_card`: `model-index` results
(accuracy, and IIS with every setting that makes it comparable as `args`), the dataset's real name
and split, "fine-tuned from" when there was a base model, a compact results table, the IIS curve
and how to load the head.

A card also says which weights its IIS was measured on against the weights that embedded its
concept bank (`weights_fingerprint`): a fine-tuned model measured with the bank of its starting
backbone is not scored as a fresh `iis-hf score` would score it, and `iis-hf compare` says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .config import CONCEPT_RECIPE_KEYS, SCHEMA_KEY, SCHEMA_VERSION
from .hub import public_name, public_record

IIS_METRIC_TYPE = "iis"
INVALID_IIS_METRIC_TYPE = "iis_not_valid"  # a number that is not a valid IIS (`IISResult.invalid_reason`)
FINGERPRINT_SAMPLES = 1024  # values read per tensor: enough to tell trained weights from their start
TASK = {"task_type": "image-classification", "task_name": "Image Classification"}
CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ summary }}

{% if results_table %}## Evaluation

{{ results_table }}
{% endif %}{% if iis_section %}
{{ iis_section }}
{% endif %}
## Interpretation head (iis-hf)

{{ head_section }}

```python
from transformers import AutoModelForImageClassification
from iis_hf import IISModelForImageClassification

backbone = AutoModelForImageClassification.from_pretrained("{{ load_id }}")  # no custom code
model = IISModelForImageClassification.from_pretrained("{{ load_id }}")  # backbone + head + concepts
```
{% if training_section %}
## Training

{{ training_section }}
{% endif %}
## Framework versions

{{ versions }}
"""


def iis_model_card(
    model,
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    result=None,
    accuracy: float | None = None,
    base_model: str | None = None,
    dataset: str | None = None,
    dataset_config: str | None = None,
    dataset_split: str | None = None,
    training: dict[str, Any] | None = None,
    history: Sequence[dict[str, Any]] | None = None,
    head_accuracy: dict[str, Any] | None = None,
    tags: Sequence[str] = (),
    license: str | None = None,
) -> ModelCard:
    """The card of an IIS model (an `IISModelForImageClassification`, or anything with the same
    `iis_weight`, `sparsity_ratios` and `concept_bank`).

    Args:
        result: the `IISResult` measured on the eval split (its settings become `model-index` args).
        accuracy: the backbone's eval accuracy.
        base_model: the checkpoint it was fine-tuned from (a Hub id), or None when trained from scratch.
        dataset, dataset_config, dataset_split: where the eval results were measured.
        training: hyperparameters to list; history: per-evaluation rows (`Trainer.state.log_history`).
        head_accuracy: the saved head's accuracy at its ratio(s), and how it was obtained.
    """
    name = model_name or repo_id or "iis-hf model"
    hub_dataset = dataset if dataset and _is_hub_name(dataset) else None
    dataset = public_name(dataset) if dataset else None  # a local folder by its base name: cards get pushed
    local_base = public_name(base_model) if base_model and not _is_hub_name(base_model) else None
    base_model = None if local_base else base_model  # `base_model` metadata is a Hub id
    dataset_name = dataset or "an image dataset"
    scored_weights = weights_fingerprint(getattr(model, "backbone", None))
    card_data = ModelCardData(
        model_name=name,
        library_name="transformers",
        base_model=base_model,
        license=license,
        datasets=[hub_dataset] if hub_dataset else None,
        metrics=[m for m, v in (("accuracy", accuracy), (IIS_METRIC_TYPE, result)) if v is not None] or None,
        tags=sorted({"iis-hf", "interpretability", "image-classification", *tags}),
        pipeline_tag="image-classification",
        eval_results=eval_results(
            result, accuracy, dataset_name, dataset_config, dataset_split, scored_weights=scored_weights
        )
        or None,
    )
    return ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE,
        model_name=name,
        summary=summary(base_model or local_base, dataset, dataset_split, local=bool(local_base)),
        results_table=results_table(result, accuracy),
        iis_section=iis_section(result),
        head_section=head_section(model, head_accuracy),
        load_id=repo_id or name,
        training_section=training_section(training, history),
        versions=versions(),
    )


def eval_results(
    result, accuracy, dataset_name, dataset_config, dataset_split, *, scored_weights: str | None = None
) -> list[EvalResult]:
    """The card's model-index entries; `scored_weights` (`weights_fingerprint` of the model the card
    describes) lets the IIS entry say whether its concept bank was embedded by those weights."""
    common = dict(
        **TASK,
        dataset_type=dataset_name,
        dataset_name=dataset_name,
        dataset_config=dataset_config,
        dataset_split=dataset_split,
    )
    results = []
    if accuracy is not None:
        results.append(
            EvalResult(metric_type="accuracy", metric_name="Accuracy", metric_value=accuracy, **common)
        )
    if result is not None and result.iis is not None:
        # An invalid score keeps its number (for the record) under another metric type, so a reader of
        # `model-index` that looks for "iis" never takes it for an IIS.
        results.append(
            EvalResult(
                metric_type=IIS_METRIC_TYPE if result.valid else INVALID_IIS_METRIC_TYPE,
                metric_name="IIS" if result.valid else "IIS (NOT VALID)",
                metric_value=result.iis,
                metric_args=iis_metric_args(result, scored_weights),
                **common,
            )
        )
    return results


def iis_metric_args(result, scored_weights: str | None = None) -> dict[str, Any]:
    """The settings two IIS values must share to be compared, as `model-index` metric args.

    The concept bank's provenance goes along (`concepts_provenance`: which weights embedded it, from
    which data, with which seed); with `scored_weights` it also says whether the weights the card
    describes are the ones that embedded the bank (``embedded_by_scored_model``).
    """
    settings = dict(result.settings)
    concepts = settings.pop("concepts", {}) or {}
    heads = settings.pop("heads", {}) or {}
    args: dict[str, Any] = {
        SCHEMA_KEY: SCHEMA_VERSION,  # how `iis_hf.compare` reads these args (`iis_hf.config.records`)
        "sparsity_ratios": list(result.sparsity_ratios),
        "standard_accuracy": result.standard_accuracy,
        "concepts": concepts.get("kind"),
        "num_concepts": concepts.get("num_concepts", result.num_concepts),
    }
    args.update({k: v for k, v in heads.items() if k != "sparsity_ratios"})
    args.update({k: v for k, v in settings.items() if k not in ("data",)})
    recipe = {k: concepts[k] for k in CONCEPT_RECIPE_KEYS if concepts.get(k) is not None}
    if recipe:
        args["concepts_recipe"] = recipe  # how the concepts were built (not the bank's fingerprint)
    provenance = bank_provenance(concepts, scored_weights)
    if provenance:
        args["concepts_provenance"] = provenance
    data = settings.get("data") or {}
    args.update({k: data[k] for k in ("num_train", "num_eval", "train_split", "eval_split") if k in data})
    # The curve and the interval, so a leaderboard can show them (`iis_hf.compare`), and how long each
    # ratio's head trained and whether it had converged (the converged protocol).
    args["accuracies"] = list(result.accuracies)
    args["valid"] = result.valid
    if result.invalid_reason:
        args["not_valid_because"] = result.invalid_reason
    for key in ("head_steps", "heads_converged"):
        if result.metadata.get(key) is not None:
            args[key] = list(result.metadata[key])
    uncertainty = result.uncertainty or {}
    if uncertainty.get("ci") is not None:
        args["iis_ci"] = list(uncertainty["ci"])
    if uncertainty.get("sd") is not None:
        args["iis_sd"] = uncertainty["sd"]
    return public_record(json.loads(json.dumps(args, default=str)))  # plain YAML-able values, no local path


def bank_provenance(concepts: dict[str, Any], scored_weights: str | None = None) -> dict[str, Any]:
    """A result's record of its bank's provenance (a learned selection's: its library's), with
    ``embedded_by_scored_model`` set from `scored_weights` when both fingerprints are known."""
    provenance = dict(concepts.get("provenance") or (concepts.get("library") or {}).get("provenance") or {})
    if scored_weights and provenance.get("embedded_by"):
        provenance["embedded_by_scored_model"] = provenance["embedded_by"] == scored_weights
    return provenance


def weights_fingerprint(model) -> str | None:
    """Which weights a backbone holds: 16 hex digits of sha256 over a strided sample of every tensor
    of its representation (`base_model`: the classifier is left out, it does not shape the features).

    A concept bank records the fingerprint of the weights that embedded it (`embedded_by`) and a
    score the one of the weights it measured, so a bank of other weights is told apart by its record
    alone. It lives here, below the concepts and the pipeline, because the card needs it too.
    None for anything that is not a torch module.
    """
    import hashlib

    import torch

    module = getattr(model, "base_model", None)
    module = module if isinstance(module, torch.nn.Module) else model
    if not isinstance(module, torch.nn.Module):
        return None
    digest = hashlib.sha256()
    try:
        with torch.no_grad():
            for name, tensor in module.state_dict().items():
                flat = tensor.detach().reshape(-1)
                digest.update(f"{name}{tuple(tensor.shape)}".encode())
                digest.update(
                    flat[:: max(1, flat.numel() // FINGERPRINT_SAMPLES)].float().cpu().numpy().tobytes()
                )
    except (RuntimeError, TypeError, NotImplementedError):  # meta or sharded weights: provenance unknown
        return None
    return digest.hexdigest()[:16]


def summary(base_model: str | None, dataset: str | None, split: str | None, *, local: bool = False) -> str:
    """The card's first sentence; `local`: `base_model` is a local checkpoint's name, not a Hub id."""
    if base_model and local:
        source = f"a fine-tuned version of `{base_model}` (a local checkpoint)"
    elif base_model:
        source = f"a fine-tuned version of [{base_model}](https://huggingface.co/{base_model})"
    else:
        source = "an image classifier"
    where = f" on {dataset}" if dataset else ""
    split_text = f" (evaluated on its `{split}` split)" if split else ""
    return (
        f"This model is {source}{where}{split_text}, trained with [iis-hf](https://github.com/iis-hf/iis-hf): "
        "its representation carries an interpretation head over concepts, so predictions can be made from, "
        "and explained by, a few concepts."
    )


def results_table(result, accuracy) -> str:
    rows = []
    if accuracy is not None:
        rows.append(("accuracy", f"{accuracy:.4f}"))
    if result is not None:
        rows.append(("IIS (Inherent Interpretability Score)", result.iis_text()))
        rows.append(("standard accuracy A0 (linear probe)", f"{result.standard_accuracy:.4f}"))
    if not rows:
        return ""
    return "\n".join(["| metric | value |", "|---|---|", *(f"| {m} | {v} |" for m, v in rows)])


def iis_section(result) -> str:
    if result is None:
        return ""
    ratios = result.sparsity_ratios
    lines = [
        "### IIS curve",
        "",
        f"Accuracy of the interpretation heads at each sparsity ratio; a perfect score on this grid is "
        f"{result.max_iis:.2f}. Scores are comparable only when measured with the same settings (the "
        "`model-index` args: concepts, ratio grid, head recipe, protocol).",
        "",
        "| sparsity ratio | " + " | ".join(f"{r:g}" for r in ratios) + " |",
        "|---|" + "---|" * len(ratios),
        "| accuracy | " + " | ".join(f"{a:.4f}" for a in result.accuracies) + " |",
        "",
        "![IIS curve](iis_curve.png)",
    ]
    if result.invalid_reason is not None:  # the card says it where the number is read
        lines[1:1] = [
            "",
            f"**Not a valid IIS.** {result.invalid_reason[0].upper()}{result.invalid_reason[1:]}.",
        ]
    return "\n".join(lines)


def head_section(model, head_accuracy: dict[str, Any] | None) -> str:
    ratios = ", ".join(f"{r:g}" for r in model.sparsity_ratios)
    bank = model.concept_bank
    text = (
        f"`loss = CE(model) + {model.iis_weight:g} * CE(interpretation heads)` at sparsity ratio(s) {ratios}, over "
        f"{bank.num_concepts} {bank.kind} concepts. The backbone is a standard checkpoint; the interpretation head "
        "(`iis_head.safetensors`, `iis_config.json`) and its concept bank (`concept_bank.safetensors`, "
        "`concept_bank.json`) sit beside it."
    )
    if head_accuracy:
        parts = _per_ratio(head_accuracy.get("accuracies"))
        text += f" Accuracy of the saved head on the eval split, per ratio: {parts}"
        if head_accuracy.get("how"):
            text += f" ({head_accuracy['how']})"
        text += "."
        if head_accuracy.get("trained_head_accuracies"):
            text += (
                " The head as trained along with the backbone, before that: "
                f"{_per_ratio(head_accuracy['trained_head_accuracies'])}."
            )
    return text


# The two head accuracies a training log shows side by side (`iis_hf.training.trainer.MODEL_HEAD_METRIC`).
HEAD_ACCURACIES_NOTE = (
    "In the training logs, `eval_model_head_accuracy_<ρ>` is the accuracy of this model's own head (the one "
    "the loss trains, at the loss ratios) and `eval_iis_accuracy_<ρ>` the IIS curve's A(ρ): heads fitted "
    "afresh on the current features by the scoring recipe, at each ratio of the IIS grid."
)


def _per_ratio(accuracies: dict[str, Any] | None) -> str:
    return ", ".join(f"{float(k):g}: {v:.4f}" for k, v in (accuracies or {}).items())


def training_section(training: dict[str, Any] | None, history: Sequence[dict[str, Any]] | None) -> str:
    lines = []
    if training:
        lines += [
            "| hyperparameter | value |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in training.items()),
            "",
        ]
    rows, reevaluated = evaluation_rows(history or [])
    if rows:
        columns = [
            ("epoch", "epoch"),
            ("step", "step"),
            ("eval_loss", "eval loss"),
            ("eval_accuracy", "accuracy"),
        ]
        columns += [("eval_iis", "IIS")] if any("eval_iis" in h for h in rows) else []
        train_losses = _train_losses(history or [])
        lines += [
            "| training loss | " + " | ".join(title for _, title in columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        for row in rows:
            step = row.get("step")
            loss = train_losses.get(step) if step is not None else None
            cells = [_epoch(row.get(key)) if key == "epoch" else _cell(row.get(key)) for key, _ in columns]
            lines.append(f"| {_cell(loss)} | " + " | ".join(cells) + " |")
        if any(
            key.startswith(("eval_model_head_accuracy_", "eval_iis_accuracy_")) for h in rows for key in h
        ):
            lines += ["", HEAD_ACCURACIES_NOTE]
        if reevaluated:
            lines += [
                "",
                "One row per evaluation during training. The model was evaluated again after training (the "
                "saved model, whose head may have been refitted and whose weights may be the best "
                "checkpoint's): those results are in the Evaluation table above.",
            ]
    return "\n".join(lines).strip()


def evaluation_rows(history: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """The evaluations of `Trainer.state.log_history` for the training table, one per step, and
    whether a later evaluation at an already listed step was left out.

    `trainer.evaluate()` after `train()` logs one more evaluation at the last step (after the train
    summary entry, ``train_runtime``): the saved model's, whose eval loss differs from the one logged
    during training (the head was refitted, or the best checkpoint loaded). The table keeps the
    evaluation logged first at each step, so each epoch appears once; an evaluation-only run (no
    evaluation during training) keeps its rows.
    """
    rows: list[dict[str, Any]] = []
    seen: set = set()
    reevaluated = False
    for entry in history:
        if "eval_loss" not in entry and "eval_accuracy" not in entry:
            continue
        key = entry.get("step", entry.get("epoch"))
        if key is not None and key in seen:
            reevaluated = True
            continue
        seen.add(key)
        rows.append(entry)
    return rows, reevaluated


def _train_losses(history: Sequence[dict[str, Any]]) -> dict[int, float]:
    """The last logged training loss at or before each step (for the results table)."""
    losses, last = {}, None
    for entry in history:
        if "loss" in entry:
            last = entry["loss"]
        if "step" in entry and last is not None:
            losses[entry["step"]] = last
    return losses


def _epoch(value) -> str:
    """An epoch as Trainer counts it (1.0, 1.5, 2.0) read as a person reads it: 1, 1.5, 2."""
    return f"{round(value, 2):g}" if isinstance(value, (int, float)) else _cell(value)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def versions() -> str:
    import torch
    import transformers

    from .version import __version__

    return "\n".join(
        [
            f"- iis-hf {__version__}",
            f"- Transformers {transformers.__version__}",
            f"- PyTorch {torch.__version__}",
        ]
    )


def _is_hub_name(name: str) -> bool:
    from .hub import looks_like_hub_id

    return looks_like_hub_id(name)
