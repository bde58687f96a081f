"""A Gradio web app to explore the explanations of an IIS model's predictions.

    iis-hf app --model out/finetuned          # or: python -m iis_hf.app --model out/finetuned
    IIS_HF_MODEL=<user>/<model> python app.py # as a Hugging Face Space's app.py

The person who starts the app names the model(s) it serves (`--model`, repeatable; a folder or Hub id
saved by `IISModelForImageClassification` / `IISTrainer`); a visitor picks one of those, uploads an
image, and the page shows the prediction the interpretation head makes from concepts, the backbone's
own prediction beside it, the concepts that support and oppose it (contribution = activation x class
weight, with each concept's source patch when the concept bank has thumbnails), a choice of the
heads' sparsity ratios, and the model's IIS curve when its folder holds `iis.json` or `iis_curve.png`.

What a visitor can reach is only what they send: an image input accepts a file uploaded through
this page (a file in Gradio's upload folder, checked after resolving links), never a server path
named in the request; uploads over `MAX_UPLOAD_BYTES` or `MAX_UPLOAD_PIXELS` are refused; each upload
is decoded into the session and deleted from disk at once; outputs are sent inline (no files); a
model that cannot be opened gives one message whatever exists on disk; visitors type their own
model folder or Hub id only when the app was started with `--allow-any-model`.

Gradio is imported only inside functions: `import iis_hf.app` needs nothing beyond iis-hf, and a
missing gradio is a ValueError that says how to install it. The project is used only through its
top-level names (`iis_hf.ConceptClassifier`, `iis_hf.explain_prediction`, ...), and imports are
absolute, so this file also runs as a copied, stand-alone Space `app.py`.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import iis_hf

logger = logging.getLogger(__name__)

MODEL_ENV = "IIS_HF_MODEL"
# What one upload may be: 10 MB on disk (Gradio refuses larger uploads before they are stored) and
# 16.8 megapixels decoded (4096 x 4096), far above what a model looks at and far below a decompression bomb.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_PIXELS = 4096 * 4096
# Gradio's own clean-up of the files this app's Blocks created (every 10 min, those older than 10 min);
# uploads are deleted as soon as they are decoded, this catches anything a killed request left behind.
DELETE_CACHE = (600, 600)
NOT_UPLOADED = "the image did not come from an upload to this page; upload the image again"
INSTALL_HINT = 'the web app needs gradio: pip install "iis-hf[app]"'
DEFAULT_TOP_K = 8
MAX_TOP_K = 32  # the slider's end (a model with fewer concepts ends it at its own number)
MAX_PORT = 65535
TITLE = "iis-hf: predictions from concepts, explained"
POSITIVE, NEGATIVE = "#2e7d32", "#c62828"

# elem_id of the components a browser (or a test driving one) looks for.
IDS = {
    "model": "iis-model",
    "load": "iis-load",
    "status": "iis-status",
    "explain_status": "iis-explain-status",
    "model_info": "iis-model-info",
    "image": "iis-image",
    "ratio": "iis-ratio",
    "top_k": "iis-top-k",
    "explain": "iis-explain",
    "prediction": "iis-prediction",
    "backbone_prediction": "iis-backbone-prediction",
    "explanation": "iis-explanation",
    "curve": "iis-curve",
    "json": "iis-json",
}


def import_gradio():
    """gradio, or a ValueError that says how to install it."""
    try:
        import gradio
    except ImportError:
        raise ValueError(INSTALL_HINT) from None
    return gradio


# ---------------------------------------------------------------------------- loading models
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
    key = model_key(model)
    with _MODELS_LOCK:  # one load per folder, even when two sessions ask at once
        if key not in _MODELS:
            try:
                classifier = iis_hf.ConceptClassifier(key)
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


# ---------------------------------------------------------------------------- uploads
def upload_folder() -> Path:
    """Gradio's upload folder (where its upload route stores what a browser sends), resolved."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def uploaded_file(payload: Any) -> Path:
    """The file a Gradio image payload names, when it is an upload to this page; else a ValueError.

    A payload is only a name (`{"path": ...}`), and a client can put any name in it: the file must lie
    inside Gradio's upload folder once links are resolved, so no server file is ever opened for a visitor.
    """
    if isinstance(payload, dict):
        name = payload.get("path")
    elif hasattr(payload, "path") and not isinstance(payload, (str, os.PathLike)):  # a FileData
        name = payload.path
    elif isinstance(payload, (str, os.PathLike)):
        name = payload
    else:
        name = None
    if not name or not isinstance(name, (str, os.PathLike)):
        raise ValueError(NOT_UPLOADED)
    path = Path(name).resolve()
    folder = upload_folder()
    if path == folder or not path.is_relative_to(folder) or not path.is_file():
        raise ValueError(NOT_UPLOADED)
    return path


def discard_upload(path: Path) -> None:
    """Delete an upload and the folder Gradio made for it (never the upload folder itself)."""
    path.unlink(missing_ok=True)
    parent, folder = path.parent, upload_folder()
    if parent != folder and parent.is_relative_to(folder):
        shutil.rmtree(parent, ignore_errors=True)


def read_upload(payload: Any):
    """The uploaded image as an RGB PIL image, its file deleted; a one-line ValueError when it is not
    an upload to this page, over `MAX_UPLOAD_BYTES` or `MAX_UPLOAD_PIXELS`, or not an image."""
    path = uploaded_file(payload)
    try:
        size = path.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise ValueError(
                f"the image is {size / 2**20:.1f} MB; this app takes images up to {MAX_UPLOAD_BYTES / 2**20:.0f} MB"
            )
        data = path.read_bytes()
    finally:
        discard_upload(path)
    from iis_hf.images import DecompressionBombRefused

    try:
        return iis_hf.load_image(data, what="the uploaded image", max_pixels=MAX_UPLOAD_PIXELS)
    except DecompressionBombRefused:
        raise ValueError(
            f"the image has too many pixels: this app takes images up to {MAX_UPLOAD_PIXELS:,} pixels "
            "(4096 x 4096); resize it and upload it again"
        ) from None


# ---------------------------------------------------------------------------- explaining
def explain_image(model: str, image, sparsity_ratio: float | None = None, top_k: int = DEFAULT_TOP_K):
    """(the loaded model, the `iis_hf.Explanation`) of `image` (a PIL image, array or file path) by the
    model's head at `sparsity_ratio`."""
    loaded = load_model(model)
    ratio = checked_ratio(sparsity_ratio, loaded.sparsity_ratios)
    top_k = checked_top_k(top_k, loaded.num_concepts)
    explanation = iis_hf.explain_prediction(loaded.classifier, image, sparsity_ratio=ratio, top_k=top_k)
    return loaded, explanation


def checked_ratio(sparsity_ratio, ratios) -> float | None:
    """The sparsity ratio a visitor sent, as a number (None or "": the model's default head); a
    ValueError that lists the model's ratios when it is not a number."""
    if sparsity_ratio is None or sparsity_ratio == "":
        return None
    try:
        return float(sparsity_ratio)
    except (TypeError, ValueError):
        offered = ", ".join(f"{r:g}" for r in ratios)
        raise ValueError(
            f"the sparsity ratio must be a number, one of the model's ratios ({offered}); got {sparsity_ratio!r}"
        ) from None


def checked_top_k(top_k, num_concepts: int) -> int:
    """How many concepts to list: a whole number from 1 to the model's number of concepts, else a
    ValueError saying so (a value outside is refused, not clipped)."""
    try:
        value = float(top_k)
    except (TypeError, ValueError, OverflowError):
        value = math.nan
    if (
        isinstance(top_k, bool)
        or not math.isfinite(value)
        or value != int(value)
        or not 1 <= value <= num_concepts
    ):
        raise ValueError(
            f"top-k must be a whole number from 1 to {num_concepts} (the model's number of concepts), got {top_k!r}"
        )
    return int(value)


def explain_callback(model: str | None, image, sparsity_ratio=None, top_k=DEFAULT_TOP_K):
    """The page's explain event: (status markdown, {label: probability} from concepts, the backbone's
    own {label: probability} (None when it has no classifier), explanation HTML, JSON).

    `model` is the session's loaded model (set only by `load_callback`, after the policy allowed it) and
    `image` the session's decoded upload (set only by `upload_callback`). Never raises: a bad ratio or
    image gives an error message in the status and empty results.
    """
    empty = (None, None, "", None)
    if not model:
        return ("Load a model first.", *empty)
    if image is None:
        return ("Upload an image to explain.", *empty)
    try:
        loaded, explanation = explain_image(model, image, sparsity_ratio, top_k)
    except Exception as err:  # shown in the page; never a traceback
        return (error_message(err), *empty)
    labels = {p["label"]: p["score"] for p in explanation.top_predictions}
    backbone = explanation.backbone_predictions
    return (
        explain_status(explanation),
        labels,
        {p["label"]: p["score"] for p in backbone} if backbone else None,
        explanation_html(explanation, loaded),
        explanation.to_dict(),
    )


def explain_status(explanation) -> str:
    """One line: the prediction from concepts, and the backbone's own beside it."""
    status = (
        f"Predicted **{_md(explanation.label)}** (p = {explanation.probability:.3f}) from concepts "
        f"at sparsity {explanation.sparsity_ratio:g}"
    )
    if explanation.backbone_predictions:
        top = explanation.backbone_predictions[0]
        agree = " (the same class)" if top["label"] == explanation.label else ""
        status += f"; the backbone's own classifier predicts **{_md(top['label'])}** (p = {top['score']:.3f}){agree}"
    return status + "."


def upload_callback(model: str | None, payload, sparsity_ratio=None, top_k=DEFAULT_TOP_K):
    """The page's upload event: (the decoded image for the session, then what `explain_callback` gives).

    The payload is Gradio's raw one (the event is not preprocessed): `read_upload` decides whether it is
    an upload at all, so an undecodable or oversized file gets iis-hf's one-line message.
    """
    try:
        image = read_upload(payload)
    except Exception as err:  # shown in the page; never a traceback
        return None, error_message(err), None, None, "", None
    return (image, *explain_callback(model, image, sparsity_ratio, top_k))


def load_callback(model: str | None, current: str | None = None, policy: ModelPolicy | None = None):
    """The page's load event: (status, ratio choices and value, curve, model summary, loaded model).

    A model that fails to load leaves the current one in place and says why in the status. `policy`
    (the app's) decides which names a visitor may load; without one, the name is loaded as given.
    """
    gr = import_gradio()
    try:
        loaded = policy.load(model) if policy is not None else load_model(model or "")
    except Exception as err:
        return error_message(err), gr.skip(), gr.skip(), gr.skip(), current
    ratios = gr.Radio(
        choices=loaded.ratio_choices(), value=loaded.default_ratio, info=loaded.ratio_note(), interactive=True
    )
    shown = str(model).strip()  # as typed; the cache key is the resolved path
    return f"Loaded {_md(shown)}.", ratios, curve_html(loaded), loaded.summary(shown), loaded.name


def with_top_k_slider(loaded: tuple) -> tuple:
    """`load_callback`'s outputs, then the top-k slider's: after a load, it reaches up to the model's
    number of concepts (`checked_top_k` refuses more) and is at the default; after a failed load, as it was."""
    gr = import_gradio()
    key = loaded[-1]
    if str(loaded[0]).startswith("**Error:**") or key not in _MODELS:
        return (*loaded, gr.skip())
    limit = max(1, min(MAX_TOP_K, _MODELS[key].num_concepts))
    return (*loaded, gr.Slider(minimum=1, maximum=limit, value=min(DEFAULT_TOP_K, limit), step=1))


def curve_html(loaded: LoadedModel) -> str:
    """The model's IIS curve as an inline image (no file for Gradio to serve), or nothing."""
    if loaded.curve_path is None:
        return ""
    try:
        data = Path(loaded.curve_path).read_bytes()
    except OSError:
        return ""  # an unreadable iis_curve.png is left out
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<img class="iis-curve-image" src="{uri}" alt="IIS curve" style="max-width: 100%">'


def error_message(err: BaseException) -> str:
    from iis_hf.errors import first_line

    return f"**Error:** {_md(first_line(err))}"


# ---------------------------------------------------------------------------- rendering
def _md(text: str) -> str:
    """Text for a Markdown component: HTML-escaped, Markdown's special characters escaped."""
    escaped = html.escape(str(text), quote=False)
    for ch in "\\`*_{}[]#|~$":
        escaped = escaped.replace(ch, "\\" + ch)
    return escaped


def _h(text: Any) -> str:
    """Text for the explanation HTML (gr.HTML fills a JS/Handlebars template: escape those too)."""
    escaped = html.escape(str(text), quote=True)
    for ch, entity in (("{", "&#123;"), ("}", "&#125;"), ("$", "&#36;"), ("`", "&#96;")):
        escaped = escaped.replace(ch, entity)
    return escaped


def png_data_uri(thumbnail) -> str:
    """A (3, h, w) uint8 tensor (or an (h, w, 3) array) as a PNG data URI."""
    import numpy as np
    from PIL import Image

    array = thumbnail.detach().cpu().numpy() if hasattr(thumbnail, "detach") else np.asarray(thumbnail)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array.astype(np.uint8))).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


CSS = """
.iis-result { font-size: 0.95em; }
.iis-headline { font-size: 1.15em; margin: 0 0 0.3em 0; }
.iis-backbone { margin: 0 0 0.3em 0; }
.iis-equation { opacity: 0.75; font-family: ui-monospace, monospace; font-size: 0.85em; margin: 0 0 0.8em 0; }
.iis-result h4 { margin: 0.8em 0 0.3em 0; }
.iis-concepts { border-collapse: collapse; width: 100%; }
.iis-concepts td, .iis-concepts th { padding: 3px 6px; text-align: left; vertical-align: middle; }
.iis-concepts th { font-weight: 600; opacity: 0.75; font-size: 0.85em; }
.iis-concepts tr + tr td { border-top: 1px solid rgba(128, 128, 128, 0.25); }
.iis-concepts .num { font-family: ui-monospace, monospace; white-space: nowrap; text-align: right; }
.iis-thumb { width: 44px; height: 44px; image-rendering: pixelated; border-radius: 3px; border: 2px solid; }
.iis-bar-cell { width: 30%; }
.iis-bar { height: 12px; border-radius: 2px; }
.iis-none { opacity: 0.7; font-style: italic; }
"""


# Page-wide CSS, given to `launch` (Gradio 6 takes it there): small images fill the upload box.
APP_CSS = """
#iis-image img { width: 100%; height: 100%; object-fit: contain; }
"""


def _concept_rows(items, loaded: LoadedModel | None, scale: float) -> str:
    rows = []
    for c in items:
        color = POSITIVE if c.contribution >= 0 else NEGATIVE
        thumb = ""
        if c.thumbnail is not None:
            uri = loaded.thumbnail_uri(c.index, c.thumbnail) if loaded else png_data_uri(c.thumbnail)
            thumb = f'<img class="iis-thumb" style="border-color: {color}" src="{uri}" alt="source patch">'
        width = 100.0 * abs(c.contribution) / scale if scale > 0 else 0.0
        source = ""
        if c.source:
            source = "; ".join(f"{k}={v}" for k, v in c.source.items())
        rows.append(
            f'<tr class="iis-concept" data-index="{c.index}">'
            f"<td>{thumb}</td>"
            f'<td class="iis-concept-name" title="{_h(source)}">{_h(c.label)}</td>'
            f'<td class="num">{c.activation:+.3f} &times; {c.weight:+.3f}</td>'
            f'<td class="num iis-contribution">{c.contribution:+.4f}</td>'
            f'<td class="iis-bar-cell"><div class="iis-bar" style="width: {width:.1f}%; background: {color}"></div></td>'
            "</tr>"
        )
    return "".join(rows)


def _concept_table(title: str, css_class: str, items, loaded, scale: float, empty: str) -> str:
    if not items:
        return f'<h4>{title}</h4><p class="iis-none {css_class}">{empty}</p>'
    header = (
        "<tr><th></th><th>concept</th><th>activation &times; class weight</th>"
        "<th>contribution</th><th></th></tr>"
    )
    return (
        f"<h4>{title}</h4>"
        f'<table class="iis-concepts {css_class}">{header}{_concept_rows(items, loaded, scale)}</table>'
    )


def _backbone_line(explanation) -> str:
    """The backbone's own prediction, under the one from concepts (nothing without a classifier)."""
    if not explanation.backbone_predictions:
        return ""
    top = explanation.backbone_predictions[0]
    return (
        '<p class="iis-backbone">The backbone&#39;s own classifier predicts '
        f'<b class="iis-backbone-label">{_h(top["label"])}</b> with p = '
        f'<span class="iis-backbone-probability">{top["score"]:.3f}</span></p>'
    )


def explanation_html(explanation, loaded: LoadedModel | None = None) -> str:
    """The explanation as HTML: the prediction, then the supporting and the opposing concepts."""
    e = explanation
    supporting = [c for c in e.concepts if c.contribution >= 0]
    opposing = [c for c in e.concepts if c.contribution < 0]
    listed = sum(c.contribution for c in e.concepts)
    scale = max([abs(c.contribution) for c in e.concepts] + [0.0])
    return (
        f'<div class="iis-result" data-label="{_h(e.label)}" data-index="{e.index}" '
        f'data-ratio="{e.sparsity_ratio:g}" data-top-k="{len(e.concepts)}">'
        f'<p class="iis-headline">Predicted <b class="iis-predicted-label">{_h(e.label)}</b> '
        f'with p = <span class="iis-probability">{e.probability:.3f}</span>, from {e.num_active} of '
        f"{e.num_concepts} {_h(e.concept_kind)} concepts at sparsity "
        f'<span class="iis-ratio-value">{e.sparsity_ratio:g}</span></p>'
        + _backbone_line(e)
        + f'<p class="iis-equation">logit {e.logit:+.4f} = bias {e.bias:+.4f} + top {len(e.concepts)} concepts '
        f"{listed:+.4f} + all other concepts {e.other_contribution:+.4f}</p>"
        + _concept_table(
            "Supporting concepts",
            "iis-supporting",
            supporting,
            loaded,
            scale,
            "none of the top concepts speaks for this class",
        )
        + _concept_table(
            "Opposing concepts",
            "iis-opposing",
            opposing,
            loaded,
            scale,
            "none of the top concepts speaks against this class",
        )
        + "</div>"
    )


# ---------------------------------------------------------------------------- the page
def as_policy(models: str | list[str] | tuple[str, ...] | None, allow_any_model: bool) -> ModelPolicy:
    """The `ModelPolicy` of a model name (or names) given by whoever starts the app."""
    if models is None:
        names: tuple[str, ...] = ()
    elif isinstance(models, (str, os.PathLike)):
        names = (str(models),)
    else:
        names = tuple(str(m) for m in models)
    return ModelPolicy(tuple(dict.fromkeys(n.strip() for n in names if n.strip())), allow_any_model)


def _model_chooser(gr, policy: ModelPolicy):
    """A dropdown of the served models; a visitor types a name only under --allow-any-model."""
    if policy.allow_any:
        label, placeholder = "Model folder or Hub id", "out/finetuned or <user>/<model>"
    else:
        label, placeholder = "Model", None
    return gr.Dropdown(
        choices=policy.shown,  # folders by their base names: no server path reaches the page
        value=policy.shown[0] if policy.models else None,
        allow_custom_value=policy.allow_any,
        interactive=policy.allow_any or len(policy.models) > 1,
        label=label,
        info=placeholder,
        scale=5,
        elem_id=IDS["model"],
    )


def _page(gr, policy: ModelPolicy) -> dict[str, Any]:
    """The page's components, by name (the `IDS` keys, plus the session's state)."""
    c: dict[str, Any] = {"loaded_model": gr.State(None), "image_state": gr.State(None)}
    with gr.Row(equal_height=True):
        c["model"] = _model_chooser(gr, policy)
        c["load"] = gr.Button("Load", variant="secondary", scale=1, elem_id=IDS["load"])
    c["status"] = gr.Markdown(
        "Loading the model…" if policy.models else "Enter a model folder or Hub id and press Load.",
        elem_id=IDS["status"],
    )
    with gr.Row():
        with gr.Column(scale=2):
            c["image"] = gr.Image(
                type="filepath",
                label=f"Image (up to {MAX_UPLOAD_BYTES // 2**20} MB and 4096 x 4096 pixels)",
                sources=["upload", "clipboard"],
                height=280,
                elem_id=IDS["image"],
            )
            c["ratio"] = gr.Radio(
                choices=[],
                label="Sparsity ratio (which interpretation head)",
                info="the share of concepts each head drops",
                elem_id=IDS["ratio"],
            )
            c["top_k"] = gr.Slider(
                1, MAX_TOP_K, value=DEFAULT_TOP_K, step=1, label="Concepts to list", elem_id=IDS["top_k"]
            )
            c["explain"] = gr.Button("Explain", variant="primary", elem_id=IDS["explain"])
        with gr.Column(scale=3):
            c["explain_status"] = gr.Markdown("Upload an image to explain.", elem_id=IDS["explain_status"])
            with gr.Row():
                c["prediction"] = gr.Label(
                    label="Prediction from concepts (top classes)",
                    num_top_classes=5,
                    elem_id=IDS["prediction"],
                )
                c["backbone_prediction"] = gr.Label(
                    label="The backbone's own prediction (its classifier)",
                    num_top_classes=5,
                    elem_id=IDS["backbone_prediction"],
                )
            c["explanation"] = gr.HTML(
                "", label="Explanation", css_template=CSS, elem_id=IDS["explanation"], padding=True
            )
    with gr.Row():
        with gr.Column(scale=3):
            c["curve"] = gr.HTML("", label="IIS curve", elem_id=IDS["curve"])
        with gr.Column(scale=2):
            c["model_info"] = gr.Markdown(elem_id=IDS["model_info"])
    with gr.Accordion("Explanation as JSON", open=False):
        c["json"] = gr.JSON(elem_id=IDS["json"])
    return c


PRIVATE = {"api_visibility": "private"}  # events a client has no reason to call on their own


def _wire(demo, c: dict[str, Any], policy: ModelPolicy) -> None:
    """The page's events. Each has an `api_name`: whatever a client posts there meets the same checks."""
    explain_outputs = [
        c["explain_status"],
        c["prediction"],
        c["backbone_prediction"],
        c["explanation"],
        c["json"],
    ]
    explain_event = {
        "fn": explain_callback,
        "inputs": [c["loaded_model"], c["image_state"], c["ratio"], c["top_k"]],
        "outputs": explain_outputs,
    }
    load_event = {
        "fn": lambda model, current: with_top_k_slider(load_callback(model, current, policy)),
        "inputs": [c["model"], c["loaded_model"]],
        "outputs": [c["status"], c["ratio"], c["curve"], c["model_info"], c["loaded_model"], c["top_k"]],
    }
    c["load"].click(**load_event, api_name="load_model").then(**explain_event, **PRIVATE)
    c["model"].select(**load_event, **PRIVATE).then(**explain_event, **PRIVATE)
    if policy.models:
        demo.load(**load_event, **PRIVATE).then(**explain_event, **PRIVATE)
    c["explain"].click(**explain_event, api_name="explain")
    # preprocess=False: the raw payload reaches `upload_callback`, which accepts only this page's uploads.
    c["image"].upload(
        lambda model, payload, ratio, top_k: upload_callback(model or policy.default, payload, ratio, top_k),
        [c["loaded_model"], c["image"], c["ratio"], c["top_k"]],
        [c["image_state"], *explain_outputs],
        preprocess=False,
        api_name="upload",
    )
    c["ratio"].input(**explain_event, **PRIVATE)
    c["top_k"].release(**explain_event, **PRIVATE)
    c["image"].clear(
        lambda: (None, "Upload an image to explain.", None, None, "", None),
        None,
        [c["image_state"], *explain_outputs],
        **PRIVATE,
    )


def build_app(models: str | list[str] | None = None, *, allow_any_model: bool = False):
    """The Gradio Blocks of the app, serving `models` (a folder or Hub id, or a list of them; the first
    is loaded when the page opens). `allow_any_model=True` lets a visitor type any folder or Hub id the
    server can open: only for a page nobody else can reach.

    Serve it with ``build_app(model).launch(**LAUNCH_SETTINGS)`` (what `main` does). Raises a ValueError
    when gradio is not installed.
    """
    gr = import_gradio()
    policy = as_policy(models, allow_any_model)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(
            f"## {TITLE}\n"
            "The interpretation head predicts from concept activations; each concept's "
            "*contribution* to the predicted class is its activation × the class weight, and the "
            "contributions add up to the class logit minus the bias."
        )
        _wire(demo, _page(gr, policy), policy)
    return demo


# What `launch` gets besides host and port: uploads capped at MAX_UPLOAD_BYTES, no paths served
# beyond Gradio's own upload folder (no `allowed_paths`), exceptions' text never sent to the page.
LAUNCH_SETTINGS = {"max_file_size": MAX_UPLOAD_BYTES, "show_error": False, "css": APP_CSS}


# ---------------------------------------------------------------------------- the command line
def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iis-hf app",
        description="A web app to explore the explanations of an IIS model's predictions. Visitors "
        "see only the models named here, and the images they upload.",
    )
    env_model = os.environ.get(MODEL_ENV) or None
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        help=f"an IIS model folder or Hub id to serve; repeat it to offer several, the first opens with the "
        f"page (default: ${MODEL_ENV}{f', now {env_model!r}' if env_model else ''})",
    )
    parser.add_argument(
        "--allow-any-model",
        action="store_true",
        help="let visitors type any model folder or Hub id, which makes the server's model folders "
        "readable to anyone who reaches the page: only for a page nobody else can reach (off by default)",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1",
        help="address to serve on (default: $GRADIO_SERVER_NAME, else 127.0.0.1: this machine only)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=os.environ.get("GRADIO_SERVER_PORT") or 7860,  # argparse reads a string default as --port
        help="port to serve on (default: $GRADIO_SERVER_PORT, else 7860)",
    )
    parser.add_argument(
        "--share", action="store_true", help="also serve through a public gradio.live link (off by default)"
    )
    return parser


def served_models(args: argparse.Namespace) -> list[str]:
    """The models `main` serves: --model's, else $IIS_HF_MODEL; a ValueError when there is none to serve."""
    models = args.model or ([os.environ[MODEL_ENV]] if os.environ.get(MODEL_ENV) else [])
    if not models and not args.allow_any_model:
        raise ValueError(
            "name the model to serve: --model FOLDER_OR_HUB_ID (repeat --model to offer several), "
            f"or set ${MODEL_ENV}"
        )
    return models


def check_port(port: int) -> None:
    """A TCP port: 0 (any free one) to 65535, else a ValueError (socket's OverflowError otherwise)."""
    if not 0 <= port <= MAX_PORT:
        raise ValueError(f"--port must be from 0 to {MAX_PORT} (0: any free port), got {port}")


def check_port_free(host: str, port: int) -> None:
    """Bind `host`:`port` the way Gradio will, so a port in use (or a host this machine cannot serve
    on) is one line before any model is loaded, not Gradio's "Cannot find empty port"."""
    if port == 0:
        return
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise port_unavailable(host, port, err) from None


def port_unavailable(host: str, port: int, err: BaseException) -> ValueError:
    reason = (getattr(err, "strerror", None) or str(err)).strip() or type(err).__name__
    return ValueError(
        f"cannot serve on {host}:{port} ({reason[:1].lower()}{reason[1:]}): another program may be using "
        "--port; choose another --port (0: any free port) or --host"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, check the port and load the served models (so a bad one fails here, with its
    reason), and serve the app until stopped."""
    args = build_arg_parser().parse_args(argv)
    check_port(args.port)
    import_gradio()
    models = served_models(args)
    check_port_free(args.host, args.port)
    for model in models:
        load_model(model)
    demo = build_app(models, allow_any_model=args.allow_any_model)
    try:
        demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share, **LAUNCH_SETTINGS)
    except OSError as err:  # taken between the check and the launch
        if "Cannot find empty port" not in str(err):
            raise
        raise port_unavailable(args.host, args.port, err) from None
    return 0


if __name__ == "__main__":  # `python app.py` in a Space, or `python -m iis_hf.app`
    try:
        main()
    except ValueError as err:  # a bad model, port or a missing gradio: one line, not a traceback
        print(f"iis-hf app: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
