"""When two scores may be ranked together: the settings they must share, read from their records.

Scores are ranked only when they were measured alike: every setting the configs mark `SAME` (the ratio
grid, head recipe, protocol, extraction) is known for each (recorded, filled in from its record's
version, or not applying to how it was measured) and agrees, as do the concept kind, number and
recipe and the data. The seed is not part of that check: another seed is another draw of the same
measurement. Neither is which bank (each model has its own), but who embedded it is.

Nor what prepared the images, except the image processor's backend: PIL and torchvision give pixel
values up to 2/255 apart, which moves the IIS in the third decimal, so results of different backends
are refused, and so is a record that does not say its backend (an older iis.json or card, or features
extracted elsewhere) beside one that does; records that all do not say it rank together, as before.
The library versions are recorded for reading, not compared (every upgrade would split leaderboards).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from ..config import (
    CONCEPT_RECIPE_KEYS,
    HEADS_RECIPE_VERSION,
    ExtractionConfig,
    HeadsConfig,
    ScoringConfig,
    config_fields,
)
from ..config.records import (
    BACKEND_KEY,
    ENVIRONMENT_KEY,
    UNKNOWN_BACKEND,
    is_recipe_one,
    recorded_backend,
)
from ..score import IISResult
from .cards import dataset_name

# The head recipe and the extraction settings ranked scores must share: the fields the configs mark
# `SAME` (the ratio grid and the protocol have a line of their own in `comparable_view`).
RECIPE_VERSION = "heads recipe: version"
HEAD_RECIPE_KEYS = tuple(k for k in HeadsConfig.shared_fields() if k not in ("sparsity_ratios", "protocol"))
EXTRACTION_KEYS = ExtractionConfig.shared_fields()
DATA_KEYS = (
    "dataset",
    "dataset_config",
    "train_split",
    "eval_split",
    "max_train_samples",
    "max_eval_samples",
    "num_train",
    "num_eval",
)
BACKEND = "preprocessing: image-processor backend"
# What `expected_result` says of the models still to score: their processors are loaded later, and
# the check after scoring compares their backends.
PENDING_BACKEND = "known once the models are loaded"
REQUIRED = ("ratio grid", "protocol", "concepts: kind")  # a score that does not say these cannot be ranked
STEP_KEYS = ("min_steps", "max_steps", "patience")  # the converged budget: absent from recipe version 1
SCORED_MODEL = "the scored model"  # who embeds the bank of a fresh score


def comparable_view(result: IISResult) -> dict[str, Any]:
    """The settings that must agree between ranked scores, flat and named as a person reads them."""
    settings = result.settings or {}
    heads = settings.get("heads") or {}
    view: dict[str, Any] = {"ratio grid": sorted(float(r) for r in result.sparsity_ratios)}
    protocol = result.protocol or heads.get("protocol")
    recipe_one = is_recipe_one(heads, protocol)  # before the converged step budget existed
    view.update(
        {
            f"heads recipe: {k}": heads[k]
            for k in HEAD_RECIPE_KEYS
            if k in heads and not (recipe_one and k in STEP_KEYS)
        }
    )
    view["protocol"] = protocol
    if view["protocol"] == "converged":  # a record without a version trained its heads a fixed 30 epochs
        view[RECIPE_VERSION] = heads.get("recipe_version", 1)
        if view[RECIPE_VERSION] >= 2:  # every version-2 record says its budget (None: until converged)
            view["heads recipe: epochs"] = heads.get("epochs")
    concepts = dict(settings.get("concepts") or {})
    recipe = concepts.get("library") or concepts if concepts.get("kind") == "learned" else concepts
    view["concepts: kind"] = concepts.get("kind")
    if concepts.get("kind") != "text":  # words are kept per backbone: their number is not a setting
        view["concepts: number"] = concepts.get("num_concepts")
    view.update({f"concepts: {k}": recipe[k] for k in CONCEPT_RECIPE_KEYS if recipe.get(k) is not None})
    embedder = embedded_by(recipe.get("provenance") or concepts.get("provenance") or {})
    if embedder is not None:
        view["concepts: embedded by"] = embedder
    extraction = settings.get("extraction") or {}
    view.update({f"extraction: {k}": extraction[k] for k in EXTRACTION_KEYS if k in extraction})
    data = dict(settings.get("data") or {})
    if data.get("dataset") is not None:
        data["dataset"] = dataset_name(data["dataset"])
    view.update({f"data: {k}": data[k] for k in DATA_KEYS if k in data})
    backend = recorded_backend(settings)
    if backend != PENDING_BACKEND:
        view[BACKEND] = backend
    return view


def embedded_by(provenance: Mapping[str, Any]) -> str | None:
    """Who embedded a score's concept bank, as the comparison reads it: `SCORED_MODEL`, or the other
    backbone it names; None when the score does not say (an older card)."""
    own = provenance.get("embedded_by_scored_model")
    if own is None:
        return None
    if own:
        return SCORED_MODEL
    step = provenance.get("refreshed_at_step")
    when = f", refreshed at step {step}" if step is not None else ""
    return f"another backbone ({provenance.get('model') or 'unnamed'}{when})"


def required_settings(result: IISResult) -> list[tuple[str, str]]:
    """The (part, key) settings ranked scores must share (`SAME` in the configs' metadata) that apply
    to how `result` was measured: the head recipe when iis-hf trained its heads (a holdout fraction
    only under holdout selection, the converged step budget only from recipe 2 on), and the extraction."""
    heads = (result.settings or {}).get("heads") or {}
    protocol = result.protocol or heads.get("protocol")
    required = []
    if protocol is not None:  # None: heads the caller trained (`iis_from_predictions`), no recipe of ours
        measured = SimpleNamespace(protocol=protocol, selection_rule=heads.get("model_selection"))
        for f in config_fields(HeadsConfig):
            applies = f.metadata.get("recorded_if")
            not_in_recipe = f.name in STEP_KEYS and is_recipe_one(heads, protocol)
            if f.name in HEAD_RECIPE_KEYS and (applies is None or applies(measured)) and not not_in_recipe:
                required.append(("heads", f.name))
    return required + [("extraction", k) for k in EXTRACTION_KEYS]


def refuse_unknown_settings(results: Mapping[str, IISResult]) -> None:
    """Refuse, in one line naming the setting and the record that lacks it, to rank results of which
    one does not say a setting they must share: an iis.json or card written before that setting
    existed, beside one that records it (or one that records the rest of that part of its settings)."""
    parts = {name: result.settings or {} for name, result in results.items()}
    recorded = {
        (part, key) for s in parts.values() for part in ("heads", "extraction") for key in s.get(part) or {}
    }
    for name, result in results.items():
        for part, key in required_settings(result):
            own = parts[name].get(part) or {}
            if key not in own and (own or (part, key) in recorded):
                where = result.metadata.get("model") or name
                raise ValueError(
                    f"cannot rank these IIS values: the record of {name} ({where}, schema version "
                    f"{result.schema_version}) does not say its {part} setting {key!r}, which ranked scores "
                    "must share: re-score it with this version of iis-hf"
                )


def refuse_other_backends(results: Mapping[str, IISResult]) -> None:
    """Refuse, in one line, to rank results whose images different image-processor backends prepared
    (PIL vs torchvision), or of which one does not say its backend beside one that does."""
    groups: dict[str, list[str]] = {}
    for name, result in results.items():
        backend = comparable_view(result).get(BACKEND)
        if backend is not None:
            groups.setdefault(backend, []).append(name)
    if len(groups) < 2:
        return
    seen = " vs ".join(f"{backend!r} ({', '.join(names)})" for backend, names in groups.items())
    if UNKNOWN_BACKEND in groups:
        raise ValueError(
            f"cannot rank these IIS values: the record of {', '.join(groups[UNKNOWN_BACKEND])} does not say "
            "which image-processor backend (PIL or torchvision) prepared its images, and the backend moves "
            f"pixel values by up to 2/255 and the IIS in the third decimal ({BACKEND}: {seen}): re-score "
            "it with this version of iis-hf, in the environment of the others"
        )
    raise ValueError(
        "cannot rank these IIS values: their images were prepared by different image-processor backends "
        f"({BACKEND}: {seen}), whose pixel values differ by up to 2/255 and move the IIS in the third "
        "decimal (transformers uses torchvision when it is installed, else PIL): score them all in one "
        "environment, with torchvision installed for all or for none"
    )


def settings_differences(results: Mapping[str, IISResult]) -> list[str]:
    """The settings on which `results` disagree, one line each ("heads recipe: epochs: 3 (a, b) vs 5 (c)").

    A setting recorded by some results only (a card records fewer than a scoring run) is compared
    among those that record it; the ratio grid, protocol and concept kind must be recorded by all.
    """
    views = {name: comparable_view(result) for name, result in results.items()}
    lines = []
    for key in REQUIRED:
        missing = [name for name, view in views.items() if view.get(key) is None]
        if missing and len(missing) < len(views):
            lines.append(f"{key}: not recorded for {', '.join(missing)}")
    keys = [k for view in views.values() for k in view]
    for key in dict.fromkeys(keys):
        groups: list[tuple[Any, list[str]]] = []
        for name, view in views.items():
            if key not in view:
                continue
            for value, names in groups:
                if _same(value, view[key]):
                    names.append(name)
                    break
            else:
                groups.append((view[key], [name]))
        if len(groups) > 1:
            lines.append(f"{key}: " + " vs ".join(f"{_show(v)} ({', '.join(n)})" for v, n in groups))
    return lines


def check_comparable(results: Mapping[str, IISResult]) -> None:
    """Raise a ValueError when `results` may not be ranked together: a converged record of the first
    head recipe beside a newer one, a record that does not say a setting ranked scores must share
    (`refuse_unknown_settings`), or every setting on which they differ (`settings_differences`)."""
    differences = settings_differences(results)
    recipe = [d for d in differences if d.startswith(RECIPE_VERSION + ":")]
    if recipe:
        raise ValueError(
            "cannot rank these IIS values: some were scored by an older iis-hf whose heads trained a fixed "
            "30 epochs (recipe_version 1; on small data sets that is a few dozen steps, so its IIS measured "
            "the budget), others with converged heads (recipe_version "
            f"{HEADS_RECIPE_VERSION}): re-score the older ones with this version ({recipe[0]})"
        )
    if len(results) > 1:
        refuse_other_backends(results)
        refuse_unknown_settings(results)
    if differences:
        hint = ""
        if any(d.startswith("concepts: embedded by:") for d in differences):
            hint = " (a bank another backbone embedded: score that model here instead of reading its card)"
        raise ValueError(
            "cannot rank these IIS values: they were measured with different settings, so they are not "
            "comparable (docs/comparability.md: When two IIS values can be compared): "
            + "; ".join(differences)
            + hint
        )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _show(value: Any, quote: bool = True) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v, quote) for v in value) + "]"
    return repr(value) if isinstance(value, str) and quote else str(value)


def expected_result(config: ScoringConfig, data: Mapping[str, Any] | None) -> IISResult:
    """What the settings of a score measured with `config` will say (before any work): the ratio
    grid, the head recipe and protocol, the extraction, the concept kind, that the scored model
    embeds its own bank, and the data (the image-processor backend is `PENDING_BACKEND`: compared
    once the models are scored)."""
    concepts: dict[str, Any] = {"kind": config.concepts.concept_kind}
    if config.concepts.concept_kind not in ("text",):
        concepts["num_concepts"] = config.concepts.num_concepts
    concepts["provenance"] = {"embedded_by_scored_model": True}  # each scored model embeds its own
    return IISResult(
        iis=None,
        standard_accuracy=1.0,
        accuracies=[],
        sparsity_ratios=list(config.heads.sparsity_ratios),
        protocol=config.heads.protocol,
        settings={
            "heads": config.heads.recorded(),
            "extraction": config.extraction.recorded(),
            "concepts": concepts,
            "data": dict(data or {}),
            ENVIRONMENT_KEY: {BACKEND_KEY: PENDING_BACKEND},
        },
    )
