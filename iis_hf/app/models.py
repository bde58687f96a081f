"""The models the app serves: loading each once, what the page shows about it, and which ones a
visitor may open (`ModelPolicy`), under names that never show the server's paths.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import iis_hf
from iis_hf.app.rendering import _md, png_data_uri

logger = logging.getLogger("iis_hf.app")


@dataclass
class LoadedModel:
    """A model the app has loaded: its classifier, and what the page shows about it."""

    name: str
    classifier: Any
    iis_result: Any = None  # an iis_hf.IISResult when the folder has iis.json
    curve_path: str | None = None  # iis_curve.png beside the model, or plotted from iis.json
    _thumbnails: dict[int, str] = field(default_factory=dict, repr=False)

    @property
    def sparsity_ratios(self) -> list[float]:
        return self.classifier.sparsity_ratios

    @property
    def num_concepts(self) -> int:
        return int(self.classifier.heads.num_concepts)

    @property
    def default_ratio(self) -> float:
        return self.sparsity_ratios[-1]

    def ratio_choices(self) -> list[tuple[str, float]]:
        """The ratio selector's choices: every sparsity ratio the model's heads were trained at."""
        return [(f"{r:g}", r) for r in self.sparsity_ratios]

    def ratio_note(self) -> str:
        """What the ratio selector offers, for its caption: the heads' ratios, and when the IIS curve
        has more ratios, why those have no head here."""
        ratios = ", ".join(f"{r:g}" for r in self.sparsity_ratios)
        note = f"the share of concepts a head drops; one head per ratio the model was trained at ({ratios})"
        if self.iis_result is not None:
            heads = {round(float(r), 9) for r in self.sparsity_ratios}
            others = [r for r in self.iis_result.sparsity_ratios if round(float(r), 9) not in heads]
            if others:
                note += (
                    f". The IIS curve's other ratios ({', '.join(f'{r:g}' for r in others)}) were scored with "
                    "heads fitted afresh, which are not saved with the model"
                )
        return note

    def thumbnail_uri(self, index: int, thumbnail) -> str:
        """The concept's thumbnail as a PNG data URI (encoded once per model)."""
        if index not in self._thumbnails:
            self._thumbnails[index] = png_data_uri(thumbnail)
        return self._thumbnails[index]

    def summary(self, display_name: str | None = None) -> str:
        """Markdown: what the model is, and its IIS when known."""
        c = self.classifier
        kind = c.concepts.kind if c.concepts is not None else "custom"
        thumbs = c.concepts is not None and c.concepts.thumbnails is not None
        lines = [
            f"**{_md(display_name or self.name)}**: {type(c.backbone).__name__}, {c.num_classes} classes, "
            f"{c.heads.num_concepts} {kind} concepts{' (with source patches)' if thumbs else ''}, "
            f"interpretation heads at sparsity {', '.join(f'{r:g}' for r in self.sparsity_ratios)}.",
        ]
        if self.iis_result is not None:
            r = self.iis_result
            lines.append(
                f"IIS = {r.iis_text()} (perfect on this grid: {r.max_iis:.4f}); "
                f"standard accuracy A0 = {r.standard_accuracy:.4f}."
            )
        else:
            lines.append("No `iis.json` beside this model: no IIS curve to show.")
        return "\n\n".join(lines)


_MODELS: dict[str, LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def model_key(model: str) -> str:
    """The cache key of a folder (its resolved path) or Hub id (as given, stripped)."""
    model = str(model).strip()
    if not model:
        raise ValueError("enter a model folder or Hub id")
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def load_model(model: str) -> LoadedModel:
    """Load an IIS model folder or Hub id once; later calls with the same folder reuse it.

    For the person who starts the app (its errors say what is wrong with the folder); what a visitor
    asks for goes through `ModelPolicy.load`, which hides those details. Raises a ValueError (with a
    readable message) when the folder or Hub id holds no IIS model.
    """
    from iis_hf.explain import ConceptClassifier

    key = model_key(model)
    with _MODELS_LOCK:  # one load per folder, even when two sessions ask at once
        if key not in _MODELS:
            try:
                classifier = ConceptClassifier(key)
            except (OSError, KeyError, TypeError) as err:
                raise ValueError(f"cannot load an IIS model from {model!r}: {err}") from err
            iis_result, curve_path = find_iis_curve(key)
            _MODELS[key] = LoadedModel(key, classifier, iis_result, curve_path)
        return _MODELS[key]


def _is_path(model: str) -> bool:
    """Whether a served model is named by a path on the server (not a Hub id, ``<user>/<model>``)."""
    path = Path(model).expanduser()
    return path.is_absolute() or model.startswith((".", "~")) or path.exists() or model.count("/") > 1


def visitor_names(models: tuple[str, ...]) -> dict[str, str]:
    """The name visitors see for each served model (visitor name -> model): a Hub id as it is, a folder by
    its base name, with as many parent folders as it takes to tell two apart; never the server's path
    (the model list and ``/gradio_api/info`` show these names only)."""
    parts = {m: Path(m).expanduser().resolve().parts if _is_path(m) else None for m in models}
    depth = dict.fromkeys(models, 1)

    def shown(m: str) -> str:
        found = parts[m]
        return m if found is None else "/".join(found[-depth[m] :]).lstrip("/") or "model"

    for _ in range(max((len(p) for p in parts.values() if p), default=0)):
        taken: dict[str, list[str]] = {}
        for m in models:
            taken.setdefault(shown(m), []).append(m)
        clashes = [m for same in taken.values() if len(same) > 1 for m in same if parts[m] is not None]
        if not clashes:
            break
        for m in clashes:
            depth[m] = min(depth[m] + 1, len(parts[m] or ()) - 1)  # never the whole path from its root
    names: dict[str, str] = {}
    for m in models:
        name, n = shown(m), 2
        while name in names:  # still alike (a folder shown as a Hub id, say): numbered
            name, n = f"{shown(m)} ({n})", n + 1
        names[name] = m
    return names


@dataclass(frozen=True)
class ModelPolicy:
    """Which models a visitor may open: those the person who started the app named, or (only when
    they said so with --allow-any-model) any folder or Hub id the visitor types.

    Whatever the visitor asks for, a model that cannot be opened gives the same message, so the page
    never tells which server paths exist (the reason is logged on the server). Visitors see the served
    models by their `visitor_names` (a folder's base name), never by the server's paths.
    """

    models: tuple[str, ...] = ()
    allow_any: bool = False

    @property
    def names(self) -> dict[str, str]:
        """Visitor name -> served model (`visitor_names`)."""
        return visitor_names(self.models)

    @property
    def shown(self) -> list[str]:
        """The served models as visitors see them, in order."""
        return list(self.names)

    @property
    def default(self) -> str | None:
        """The model a session without a choice of its own gets (the page opens with it)."""
        return self.models[0] if self.models else None

    def unavailable(self, name: str) -> ValueError:
        if self.allow_any:
            return ValueError(f"no IIS model could be opened from {name!r}")
        served = ", ".join(repr(m) for m in self.shown) or "none"
        return ValueError(f"{name!r} is not a model this app serves (it serves: {served})")

    def load(self, name: str | None) -> LoadedModel:
        """The visitor's choice (a visitor name, or a served model as named), loaded, or a ValueError that
        says nothing about the server's files."""
        name = str(name or "").strip()
        if not name:
            raise ValueError("choose a model first")
        model = self.names.get(name, name)
        if not self.allow_any and model not in self.models:
            raise self.unavailable(name)
        try:
            return load_model(model)
        except Exception:  # the reason stays in the server's log; the page gets one message
            logger.warning("the app could not open model %r", name, exc_info=True)
            raise self.unavailable(name) from None


def _report_file(model: str, name: str) -> Path | None:
    """`name` beside the model: in its folder, or (best effort) from its Hub repository."""
    folder = Path(model)
    if folder.is_dir():
        path = folder / name
        return path if path.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(model, name))
    except Exception:  # no such file in the repository, offline, not a repository, ...
        return None


def find_iis_curve(model: str):
    """(IISResult or None, path of a PNG of the IIS curve or None) for a model folder or Hub id.

    The curve saved beside the model (`iis_curve.png`) is shown as it is; without one, the curve is
    plotted from `iis.json` into a temporary folder.
    """
    result = None
    json_path = _report_file(model, "iis.json")
    if json_path is not None:
        try:
            result = iis_hf.IISResult.from_dict(json.loads(json_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, AttributeError):
            result = None  # an unreadable report hides the curve; the model itself still works
    png = _report_file(model, "iis_curve.png")
    if png is not None:
        return result, str(png)
    if result is None:
        return None, None
    path = Path(tempfile.mkdtemp(prefix="iis-hf-app-")) / "iis_curve.png"
    try:
        result.plot(path)
    except Exception:  # a curve that cannot be drawn is left out; the model itself still works
        return result, None
    return result, str(path)


def as_policy(models: str | list[str] | tuple[str, ...] | None, allow_any_model: bool) -> ModelPolicy:
    """The `ModelPolicy` of a model name (or names) given by whoever starts the app."""
    if models is None:
        names: tuple[str, ...] = ()
    elif isinstance(models, (str, os.PathLike)):
        names = (str(models),)
    else:
        names = tuple(str(m) for m in models)
    return ModelPolicy(tuple(dict.fromkeys(n.strip() for n in names if n.strip())), allow_any_model)
