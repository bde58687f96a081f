"""Model cards that carry IIS: `model-index` results, the IIS curve, and how to load the head."""

from __future__ import annotations

from pathlib import Path

IIS_METRIC_TYPE = "iis"


def add_iis_to_model_card(
    readme: str | Path,
    *,
    result=None,
    accuracy: float | None = None,
    model_name: str,
    dataset: str | None = None,
    iis_weight: float,
    sparsity_ratios: list[float],
    repo_id: str | None = None,
) -> None:
    """Add accuracy and IIS to the card's `model-index` and a section about the interpretation head."""
    from huggingface_hub import EvalResult, ModelCard

    from .files import write_text_atomic

    readme = Path(readme)
    card = ModelCard.load(readme) if readme.exists() else ModelCard("---\n---\n")
    data = card.data
    dataset_name = dataset if isinstance(dataset, str) and dataset else "custom image dataset"
    results = []
    common = dict(
        task_type="image-classification",
        task_name="Image Classification",
        dataset_type=dataset_name,
        dataset_name=dataset_name,
    )
    if accuracy is not None:
        results.append(
            EvalResult(metric_type="accuracy", metric_name="Accuracy", metric_value=accuracy, **common)
        )
    if result is not None:
        results.append(
            EvalResult(metric_type=IIS_METRIC_TYPE, metric_name="IIS", metric_value=result.iis, **common)
        )
    kept = [r for r in (data.eval_results or []) if r.metric_type not in {"accuracy", IIS_METRIC_TYPE}]
    data.eval_results = kept + results or None
    data.model_name = data.model_name or model_name
    data.metrics = sorted(set(data.metrics or []) | {r.metric_type for r in results}) or None
    data.tags = sorted(set(data.tags or []) | {"iis-hf", "interpretability", "image-classification"})
    data.library_name = data.library_name or "transformers"
    load_id = repo_id or model_name
    section = [
        "",
        "## Interpretability (iis-hf)",
        "",
        f"Fine-tuned with `iis_hf.IISTrainer`: `loss = CE(model) + {iis_weight:g} * CE(interpretation heads)` "
        f"at sparsity ratios {', '.join(f'{r:g}' for r in sparsity_ratios)}. The backbone is a standard "
        "checkpoint; the interpretation head (`iis_head.safetensors`, `iis_config.json`) and its concept bank "
        "(`concept_bank.safetensors`, `concept_bank.json`) sit beside it.",
        "",
    ]
    if result is not None:
        section += [
            f"Inherent Interpretability Score: **{result.iis:.4f}** (standard accuracy "
            f"{result.standard_accuracy:.4f}, {result.num_concepts} concepts; a perfect score on this grid is "
            f"{result.max_iis:.2f}).",
            "",
            "| sparsity ratio | " + " | ".join(f"{r:g}" for r in result.sparsity_ratios) + " |",
            "|---|" + "---|" * len(result.sparsity_ratios),
            "| accuracy | " + " | ".join(f"{a:.4f}" for a in result.accuracies) + " |",
            "",
            "![IIS curve](iis_curve.png)",
            "",
        ]
    section += [
        "```python",
        "from transformers import AutoModelForImageClassification",
        "from iis_hf import IISModelForImageClassification",
        "",
        f'backbone = AutoModelForImageClassification.from_pretrained("{load_id}")  # no custom code',
        f'model = IISModelForImageClassification.from_pretrained("{load_id}")  # backbone + head + concepts',
        "```",
        "",
    ]
    card.text = card.text.split("\n## Interpretability (iis-hf)")[0].rstrip("\n") + "\n" + "\n".join(section)
    write_text_atomic(readme, str(card))
