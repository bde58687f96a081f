"""Reading a score from a model card, as an `IISResult` of this record version.

A card's IIS entry (`iis_hf.model_card`) keeps the settings it was measured with in its metric args;
an older card's args are read as this version's (`iis_hf.config.upgrade_card_args`: old key names
mapped, that version's values filled in and listed in the result's `filled_in`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..config import ExtractionConfig, HeadsConfig, config_fields, upgrade_card_args
from ..config.records import ENVIRONMENT_KEY, FILLED_KEY
from ..errors import first_line
from ..score import IISResult

CARD_PREFIX = "card:"
IIS_METRIC_TYPE = "iis"  # the model-index metric type iis-hf's cards use (`iis_hf.model_card`)
INVALID_IIS_METRIC_TYPE = "iis_not_valid"  # ... and the one under which they keep a number that is not an IIS


def read_card_result(location: str | os.PathLike, dataset: str | None = None) -> IISResult:
    """The IIS a model card reports in its ``model-index`` (metric type "iis"), as an `IISResult`.

    `location` is a Hub model id, a folder holding ``README.md``, or the card file. With `dataset`,
    the entry measured on that dataset is taken (a card may report several); the settings come from
    the entry's metric args (`iis_hf.model_card.iis_metric_args`).
    """
    from huggingface_hub import ModelCard

    path = Path(location)
    card_file = path / "README.md" if path.is_dir() else path
    try:
        card = ModelCard.load(card_file if card_file.is_file() else os.fspath(location))
    except Exception as err:  # a missing file, an unknown repo, no network: say which card
        raise ValueError(f"could not read the model card of {location}: {first_line(err)}") from err
    entries = [r for r in (card.data.eval_results or []) if r.metric_type == IIS_METRIC_TYPE]
    if not entries:
        invalid = [r for r in (card.data.eval_results or []) if r.metric_type == INVALID_IIS_METRIC_TYPE]
        if invalid:
            reason = (invalid[0].metric_args or {}).get("not_valid_because", "its heads beat the probe")
            raise ValueError(
                f"the model card of {location} reports a score that is not a valid IIS ({reason})"
            )
        raise ValueError(f"the model card of {location} reports no IIS (no model-index result of type 'iis')")
    if dataset is not None:
        matching = [r for r in entries if dataset_name(dataset) in _card_datasets(r)]
        if not matching:
            found = sorted({d for r in entries for d in _card_datasets(r)})
            raise ValueError(
                f"the model card of {location} reports IIS on {found}, not on {dataset_name(dataset)!r}"
            )
        entries = matching
    if len(entries) > 1:
        found = [f"{r.dataset_name} ({r.dataset_split})" for r in entries]
        raise ValueError(
            f"the model card of {location} reports several IIS values ({found}): name the dataset"
        )
    return card_result(entries[0], str(location))


def _card_datasets(entry) -> set[str]:
    return {dataset_name(d) for d in (entry.dataset_name, entry.dataset_type) if d}


def with_nulls(config: type, recorded: dict[str, Any]) -> dict[str, Any]:
    """`recorded` settings of a card with the None values its YAML left out (the Hub's card format
    drops null metric args): a setting that may be None and is missing was None (``layer``: the final
    representation; ``epochs``: trained until converged). A part not recorded at all stays empty."""
    if not recorded:
        return recorded
    nulls = {f.name: None for f in config_fields(config) if f.default is None and f.name not in recorded}
    return {**recorded, **nulls}


def card_result(entry, location: str) -> IISResult:
    """An `IISResult` from one model-index entry (`huggingface_hub.EvalResult`) of an iis-hf card."""
    args = upgrade_card_args(entry.metric_args or {}, f"the model card of {location}")
    ratios = args.get("sparsity_ratios")
    if not ratios or args.get("standard_accuracy") is None:
        raise ValueError(
            f"the IIS in the model card of {location} does not record its ratio grid and standard accuracy "
            "(metric_args sparsity_ratios, standard_accuracy): it cannot be compared with other scores"
        )
    names = [f.name for f in config_fields(HeadsConfig)] + ["recipe_version"]
    heads = {k: args[k] for k in names if k in args and k != "sparsity_ratios"}
    heads = with_nulls(HeadsConfig, heads)
    heads["sparsity_ratios"] = list(ratios)
    concepts = {"kind": args.get("concepts"), "num_concepts": args.get("num_concepts")}
    concepts.update(args.get("concepts_recipe") or {})
    if args.get("concepts_provenance"):
        concepts["provenance"] = dict(args["concepts_provenance"])
    data = {
        "dataset": entry.dataset_name or entry.dataset_type,
        "dataset_config": entry.dataset_config,
        "eval_split": entry.dataset_split or args.get("eval_split"),
    }
    data.update({k: args[k] for k in ("train_split", "num_train", "num_eval") if k in args})
    uncertainty = None
    if args.get("iis_ci") is not None:
        uncertainty = {"ci": list(args["iis_ci"]), "confidence": 0.95, "sd": args.get("iis_sd")}
        uncertainty["num_seeds"] = args.get("num_seeds", 1)
    return IISResult(
        iis=float(entry.metric_value) if entry.metric_value is not None else None,
        standard_accuracy=float(args["standard_accuracy"]),
        accuracies=[float(a) for a in args.get("accuracies") or []],
        sparsity_ratios=[float(r) for r in ratios],
        num_concepts=args.get("num_concepts"),
        protocol=args.get("protocol"),
        uncertainty=uncertainty,
        settings={
            "heads": heads,
            "extraction": with_nulls(ExtractionConfig, args.get("extraction") or {}),
            "concepts": concepts,
            "data": data,
            "seed": args.get("seed"),
            # what prepared the images (an older card does not say: its backend reads as unknown)
            **(
                {ENVIRONMENT_KEY: dict(args[ENVIRONMENT_KEY])}
                if isinstance(args.get(ENVIRONMENT_KEY), dict)
                else {}
            ),
        },
        metadata={"model": location, "source": "model card"},
        filled_in=list(args.get(FILLED_KEY) or []),
    )


def dataset_name(dataset: str) -> str:
    """How a dataset is named when scores are compared: a Hub id as written, a local folder by its name
    (what a fine-tuned model's card records for it)."""
    text = os.fspath(dataset).rstrip("/\\")
    if os.path.isdir(text) or (os.sep in text and text.count("/") != 1):
        return Path(text).name
    return text
