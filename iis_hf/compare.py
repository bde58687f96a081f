"""Several models, one dataset, one setting: an IIS leaderboard (`iis-hf compare`, `iis_hf.compare_models`).

Models given as a Hub id or a `save_pretrained` folder are scored here, all with one `ScoringConfig`
and in one pass over the images (`iis_hf.pipeline.score_models`: each image decoded once and fed to
every backbone through its own image processor; `cache_dir` keeps each model's features). Models
given as ``card:<Hub id or folder>`` are read from their model card's ``model-index`` (the IIS entry
`iis_hf.model_card` writes, whose metric args hold the settings it was measured with).

Scores are ranked only when they were measured alike: the settings recorded with each one
(`IISResult.settings`: ratio grid, head recipe, protocol, concept kind, number and recipe,
extraction, data) must agree, and a difference is refused with a message naming the setting.
The seed is not part of that check: another seed is another draw of the same measurement.
Neither is which bank (each model has its own), but who embedded it is: a fresh score embeds its
bank with the scored weights themselves, so a card measured with a bank of other weights (a
fine-tuned model's IIS measured during training with the concepts of its starting backbone) is
refused next to fresh scores ("concepts: embedded by").

The leaderboard is printed, and `Leaderboard.save` writes ``leaderboard.md``, ``leaderboard.csv``,
``leaderboard.json``, the accuracy-vs-IIS scatter ``iis_vs_accuracy.png`` and the curves of the
models with per-ratio accuracies ``iis_curves.png``, together or not at all.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import CONCEPT_RECIPE_KEYS, HEADS_RECIPE_VERSION, ExtractionConfig, HeadsConfig, ScoringConfig
from .errors import first_line
from .files import atomic_directory, write_json_atomic, write_text_atomic
from .plotting import model_colors, plot_iis_curves, plot_iis_vs_accuracy
from .score import IISResult
from .version import __version__

CARD_PREFIX = "card:"
IIS_METRIC_TYPE = "iis"  # the model-index metric type iis-hf's cards use (`iis_hf.model_card`)
INVALID_IIS_METRIC_TYPE = "iis_not_valid"  # ... and the one under which they keep a number that is not an IIS
SCATTER_NAME = "iis_vs_accuracy.png"
CURVES_NAME = "iis_curves.png"
OUTPUT_NAMES = ("leaderboard.md", "leaderboard.csv", "leaderboard.json", SCATTER_NAME, CURVES_NAME)
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
REQUIRED = ("ratio grid", "protocol", "concepts: kind")  # a score that does not say these cannot be ranked
SCORED_MODEL = "the scored model"  # who embeds the bank of a fresh score


# ---------------------------------------------------------------------------- which models
@dataclass
class ModelSpec:
    """One model of a comparison: its display name, and what to score or which card to read."""

    name: str
    target: Any  # a Hub id or folder (str), a model instance, or for a card its Hub id or folder
    from_card: bool = False


def parse_model_spec(spec: str) -> ModelSpec:
    """``[NAME=]LOCATION`` or ``[NAME=]card:LOCATION``, LOCATION a Hub id or folder.

    >>> parse_model_spec("trained=demo_output/model")
    ModelSpec(name='trained', target='demo_output/model', from_card=False)
    >>> parse_model_spec("card:me/vit-iis")
    ModelSpec(name='me/vit-iis', target='me/vit-iis', from_card=True)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a model must be a Hub id, a folder or card:<id or folder>, got {spec!r}")
    name, sep, rest = spec.partition("=")
    if not sep or not name or "/" in name or os.sep in name or os.path.exists(spec):
        name, rest = "", spec
    from_card = rest.startswith(CARD_PREFIX)
    location = rest[len(CARD_PREFIX) :] if from_card else rest
    if not location:
        raise ValueError(f"{spec!r} names no model: give a Hub id or a folder after {CARD_PREFIX!r}")
    return ModelSpec(name or location, location, from_card)


def model_specs(models) -> list[ModelSpec]:
    """`models` as specs: strings (see `parse_model_spec`), or a mapping of names to a model
    instance, a Hub id / folder, or ``card:<id or folder>``."""
    if isinstance(models, (str, os.PathLike)):
        raise ValueError("pass several models: a list of Hub ids / folders, or a mapping of names to models")
    if isinstance(models, Sequence) and all(isinstance(m, ModelSpec) for m in models):
        specs = list(models)
    elif isinstance(models, Mapping):
        specs = []
        for name, target in models.items():
            if isinstance(target, (str, os.PathLike)):
                spec = parse_model_spec(os.fspath(target))
                specs.append(ModelSpec(str(name), spec.target, spec.from_card))
            else:
                specs.append(ModelSpec(str(name), target))
    else:
        specs = [
            parse_model_spec(os.fspath(m)) if isinstance(m, (str, os.PathLike)) else ModelSpec(_name_of(m), m)
            for m in models
        ]
    if len(specs) < 1:
        raise ValueError("no models to compare")
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"two models are named {repeated[0]!r}: name them, e.g. a={repeated[0]} b=...")
    return specs


def _name_of(model) -> str:
    return getattr(model, "name_or_path", "") or type(model).__name__


# ---------------------------------------------------------------------------- cards
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


def card_result(entry, location: str) -> IISResult:
    """An `IISResult` from one model-index entry (`huggingface_hub.EvalResult`) of an iis-hf card."""
    args = dict(entry.metric_args or {})
    ratios = args.get("sparsity_ratios")
    if not ratios or args.get("standard_accuracy") is None:
        raise ValueError(
            f"the IIS in the model card of {location} does not record its ratio grid and standard accuracy "
            "(metric_args sparsity_ratios, standard_accuracy): it cannot be compared with other scores"
        )
    heads = {k: args[k] for k in HeadsConfig().recorded() if k in args and k != "sparsity_ratios"}
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
            "extraction": args.get("extraction") or {},
            "concepts": concepts,
            "data": data,
            "seed": args.get("seed"),
        },
        metadata={"model": location, "source": "model card"},
    )


def dataset_name(dataset: str) -> str:
    """How a dataset is named when scores are compared: a Hub id as written, a local folder by its name
    (what a fine-tuned model's card records for it)."""
    text = os.fspath(dataset).rstrip("/\\")
    if os.path.isdir(text) or (os.sep in text and text.count("/") != 1):
        return Path(text).name
    return text


# ---------------------------------------------------------------------------- comparability
def comparable_view(result: IISResult) -> dict[str, Any]:
    """The settings that must agree between ranked scores, flat and named as a person reads them."""
    settings = result.settings or {}
    heads = settings.get("heads") or {}
    view: dict[str, Any] = {"ratio grid": sorted(float(r) for r in result.sparsity_ratios)}
    view.update({f"heads recipe: {k}": heads[k] for k in HEAD_RECIPE_KEYS if k in heads})
    view["protocol"] = result.protocol or heads.get("protocol")
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
    """Raise a ValueError naming every setting on which `results` differ (see `settings_differences`)."""
    differences = settings_differences(results)
    if differences:
        hint = ""
        if any(d.startswith(RECIPE_VERSION + ":") for d in differences):
            raise ValueError(
                "cannot rank these IIS values: some were scored by an older iis-hf whose heads trained a fixed "
                "30 epochs (recipe_version 1; on small data sets that is a few dozen steps, so its IIS measured "
                "the budget), others with converged heads (recipe_version "
                f"{HEADS_RECIPE_VERSION}): re-score the older ones with this version ("
                + next(d for d in differences if d.startswith(RECIPE_VERSION + ":"))
                + ")"
            )
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
    embeds its own bank, and the data."""
    concepts: dict[str, Any] = {"kind": config.concepts.kind}
    if config.concepts.kind not in ("text",):
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
        },
    )


# ---------------------------------------------------------------------------- the leaderboard
@dataclass
class LeaderboardEntry:
    name: str
    source: str  # "scored" (here) or "card" (read from a model card)
    location: str  # the Hub id, folder or card it came from
    result: IISResult


@dataclass
class Leaderboard:
    """Models ranked by IIS (undefined scores last), all measured with the same settings."""

    entries: list[LeaderboardEntry]
    title: str = "IIS leaderboard"

    @classmethod
    def from_results(
        cls,
        results: Mapping[str, IISResult],
        *,
        sources: Mapping[str, str] | None = None,
        locations: Mapping[str, str] | None = None,
        title: str | None = None,
    ) -> Leaderboard:
        """Rank `results` (name -> result) after checking that they are comparable (`check_comparable`)."""
        if not results:
            raise ValueError("no results to rank")
        check_comparable(results)
        entries = [
            LeaderboardEntry(
                name, (sources or {}).get(name, "scored"), str((locations or {}).get(name, name)), result
            )
            for name, result in results.items()
        ]
        # Valid scores first, best first; then invalid ones (a number, but not an IIS); undefined last.
        entries.sort(key=lambda e: (not e.result.valid, e.result.iis is None, -(e.result.iis or 0.0)))
        return cls(entries, title or _title(results.values()))

    @property
    def sparsity_ratios(self) -> list[float]:
        return list(self.entries[0].result.sparsity_ratios)

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per model, best first: rank, model, source, A0, IIS, its sd and interval, A(rho)."""
        rows, rank = [], 0
        for entry in self.entries:
            result = entry.result
            uncertainty = result.uncertainty or {}
            low, high = uncertainty.get("ci") or (None, None)
            rank += result.valid
            row = {
                "rank": rank if result.valid else None,
                "model": entry.name,
                "source": entry.source,
                "standard_accuracy": result.standard_accuracy,
                "iis": result.iis,
                "iis_sd": uncertainty.get("sd"),
                "iis_ci_low": low,
                "iis_ci_high": high,
                "valid": result.valid,
                "not_valid_because": result.invalid_reason or result.undefined_reason,
            }
            accuracies = _accuracies_by_ratio(result)
            for ratio in self.sparsity_ratios:
                row[f"accuracy_{ratio:g}"] = accuracies.get(round(float(ratio), 9))
            rows.append(row)
        return rows

    def table(self) -> str:
        """The leaderboard as a plain-text table (what `iis-hf compare` prints)."""
        width = max(5, *(len(e.name) for e in self.entries))
        ratios = self.sparsity_ratios
        header = (
            f"{'rank':>4}  {'model':<{width}}  {'source':<6}  {'A0':>6}  {'IIS':>6}  {'± sd':>6}  "
            f"{'95% CI':<15}" + "".join(f"  {'A(' + format(r, 'g') + ')':>7}" for r in ratios)
        )
        lines = [self.title, header]
        for row in self.rows():
            low, high = row["iis_ci_low"], row["iis_ci_high"]
            interval = f"[{low:.3f}, {high:.3f}]" if low is not None and math.isfinite(low) else "–"
            lines.append(
                f"{_cell(row['rank'], 'd'):>4}  {row['model']:<{width}}  {row['source']:<6}  "
                f"{_cell(row['standard_accuracy']):>6}  {_cell(row['iis'], '.4f', 'undef'):>6}  "
                f"{_cell(row['iis_sd']):>6}  {interval:<15}"
                + "".join(f"  {_cell(row[f'accuracy_{r:g}']):>7}" for r in ratios)
            )
            if row["not_valid_because"] and row["iis"] is not None:
                lines.append(f"{'':>4}  ^ NOT A VALID IIS, not ranked: {row['not_valid_because']}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        ratios = self.sparsity_ratios
        columns = ["rank", "model", "source", "A0", "IIS", *(f"A({r:g})" for r in ratios)]
        lines = [
            f"## {self.title}",
            "",
            "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
        ]
        for entry, row in zip(self.entries, self.rows()):
            cells = [
                _cell(row["rank"], "d"),
                f"`{row['model']}`",
                row["source"],
                _cell(row["standard_accuracy"]),
                entry.result.iis_text(4),
                *(_cell(row[f"accuracy_{r:g}"]) for r in ratios),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Settings shared by every score:", ""]
        lines += [f"- {key}: {_show(value, quote=False)}" for key, value in self.shared_settings().items()]
        lines += ["", f"![IIS vs accuracy]({SCATTER_NAME})", ""]
        return "\n".join(lines)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        rows = self.rows()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "iis_hf_version": __version__,
            "settings": self.shared_settings(),
            "models": [
                {
                    "rank": row["rank"],
                    "name": e.name,
                    "source": e.source,
                    "location": e.location,
                    **e.result.to_dict(),
                }
                for e, row in zip(self.entries, self.rows())
            ],
        }

    def shared_settings(self) -> dict[str, Any]:
        """The comparable settings, as recorded by the scores that record each one."""
        shared: dict[str, Any] = {}
        for entry in self.entries:
            for key, value in comparable_view(entry.result).items():
                shared.setdefault(key, value)
        return shared

    def plot(self, path: str | os.PathLike) -> None:
        """The accuracy-vs-IIS scatter (x = A0, y = IIS, error bars from the 95% interval)."""
        points = [
            {
                "name": e.name,
                "standard_accuracy": e.result.standard_accuracy,
                "iis": e.result.iis,
                "ci": (e.result.uncertainty or {}).get("ci"),
                "source": e.source,
                "valid": e.result.valid,
            }
            for e in self.entries
        ]
        ratios = self.sparsity_ratios
        heading = "IIS vs accuracy" + self.title[3:] if self.title.startswith("IIS on ") else self.title
        title = f"{heading}\n{self.settings_summary()}"
        plot_iis_vs_accuracy(
            points, path, title=title, max_iis=max(ratios) - min(ratios), colors=self.colors()
        )

    def colors(self) -> dict[str, str]:
        """Each model's colour, from its rank: the same in the scatter and in the curves."""
        return model_colors([e.name for e in self.entries])

    def settings_summary(self) -> str:
        """One line: the concepts, the ratio grid, the protocol and the eval split the scores share."""
        shared = self.shared_settings()
        number = shared.get("concepts: number")
        parts = [
            f"{number} {shared['concepts: kind']} concepts"
            if number
            else f"{shared['concepts: kind']} concepts"
        ]
        parts.append(f"{len(self.sparsity_ratios)} ratios up to {max(self.sparsity_ratios):g}")
        parts.append(f"{shared.get('protocol')} protocol")
        if shared.get("data: eval_split"):
            parts.append(f"eval: {shared['data: eval_split']}")
        return " · ".join(parts)

    def save(self, output_dir: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write leaderboard.md/.csv/.json, the scatter and the curves as `output_dir`, all or nothing
        (an existing folder is replaced whole, `iis_hf.files.atomic_directory`; with ``overwrite=False``
        it is refused)."""
        with atomic_directory(output_dir, overwrite=overwrite) as tmp:
            write_text_atomic(tmp / "leaderboard.md", self.to_markdown())
            write_text_atomic(tmp / "leaderboard.csv", self.to_csv())
            write_json_atomic(tmp / "leaderboard.json", self.to_dict())
            self.plot(tmp / SCATTER_NAME)
            curves = {
                e.name: e.result
                for e in self.entries
                if e.result.iis is not None and len(e.result.accuracies) == len(e.result.sparsity_ratios)
            }
            if curves:
                plot_iis_curves(
                    curves,
                    tmp / CURVES_NAME,
                    title=f"{self.title}: the curves behind the scores",
                    colors=self.colors(),
                    subtitle=self.settings_summary(),
                )
        return Path(output_dir)

    def __str__(self) -> str:
        return self.table()


def is_leaderboard_entry(name: str) -> bool:
    """Whether a folder entry is one `Leaderboard.save` writes (what ``--overwrite`` may replace)."""
    return name in OUTPUT_NAMES


def _accuracies_by_ratio(result: IISResult) -> dict[float, float]:
    if len(result.accuracies) != len(result.sparsity_ratios):
        return {}
    return {round(float(r), 9): float(a) for r, a in zip(result.sparsity_ratios, result.accuracies)}


def _cell(value, spec: str = ".4f", missing: str = "–") -> str:
    if value is None:
        return missing
    return format(value, spec)


def _title(results) -> str:
    for result in results:
        dataset = ((result.settings or {}).get("data") or {}).get("dataset")
        if dataset:
            return f"IIS on {dataset_name(dataset)}"
    return "IIS leaderboard"


# ---------------------------------------------------------------------------- the entry point
def compare_models(
    models,
    train_data=None,
    eval_data=None,
    config: ScoringConfig | None = None,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    data_settings: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> Leaderboard:
    """Score several models on one dataset with one config, read others from their cards, and rank them.

    Args:
        models: Hub ids or folders (scored here), ``card:<Hub id or folder>`` (read from the model
            card's model-index), each optionally named ``NAME=...``; or a mapping of names to a
            model instance, a Hub id / folder or ``card:...``.
        train_data, eval_data: labelled `datasets` image datasets (needed when a model is scored).
        config: the one `ScoringConfig` every scored model is measured with (a `concepts.bank` is
            refused: concepts are built per model, from its own representation).
        data_settings: what names the data (dataset, splits, ...), recorded with each scored result
            and compared with the cards' (e.g. `iis_hf.data.ScoringSplits.settings()`).
        title: the leaderboard's title (default: "IIS on <dataset>").

    Returns:
        The `Leaderboard`. A ValueError names the setting that differs when the scores are not
        comparable; with cards, that is checked before any model is scored.
    """
    from .pipeline import score_models

    config = config or ScoringConfig()
    specs = model_specs(models)
    if config.concepts.bank is not None and any(not s.from_card for s in specs):
        raise ValueError(
            "a concept bank fits one model's representation: compare builds each model's own concepts "
            "(drop the concept bank)"
        )
    data = dict(data_settings or {})
    dataset = data.get("dataset")
    results: dict[str, IISResult] = {}
    sources, locations = {}, {}
    for spec in specs:
        if spec.from_card:
            results[spec.name] = read_card_result(spec.target, dataset)
            sources[spec.name], locations[spec.name] = "card", f"{CARD_PREFIX}{spec.target}"
    scored = [s for s in specs if not s.from_card]
    if scored:
        if train_data is None or eval_data is None:
            raise ValueError(
                f"models to score ({', '.join(s.name for s in scored)}) need train and eval images: pass a dataset"
            )
        if results:  # cheap first: refuse before any scoring when a card was measured differently
            check_comparable({**results, "the models to score": expected_result(config, data)})
        scores = score_models(
            [s.target for s in scored],
            train_data,
            eval_data,
            config,
            image_column=image_column,
            label_column=label_column,
        )
        for spec, result in zip(scored, scores):
            result.settings["data"].update(data)
            result.metadata.update(model=spec.name, **({"dataset": dataset} if dataset else {}))
            results[spec.name] = result
            sources[spec.name] = "scored"
            locations[spec.name] = spec.target if isinstance(spec.target, str) else _name_of(spec.target)
    ordered = {s.name: results[s.name] for s in specs}
    return Leaderboard.from_results(ordered, sources=sources, locations=locations, title=title)
