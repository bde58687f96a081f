"""A Gradio web app to explore the explanations of an IIS model's predictions.

    iis-hf app --model out/finetuned          # or: python -m iis_hf.app --model out/finetuned
    IIS_HF_MODEL=<user>/<model> python app.py # as a Hugging Face Space's app.py

Load an IIS model (a folder or Hub id saved by `IISModelForImageClassification` / `IISTrainer`),
upload an image, and the page shows the prediction the interpretation head makes from concepts,
the concepts that support and oppose it (contribution = activation x class weight, with each
concept's source patch when the concept bank has thumbnails), a choice of the heads' sparsity
ratios, and the model's IIS curve when its folder holds `iis.json` or `iis_curve.png`.

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
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import iis_hf

MODEL_ENV = "IIS_HF_MODEL"
INSTALL_HINT = 'the web app needs gradio: pip install "iis-hf[app]"'
DEFAULT_TOP_K = 8
MAX_TOP_K = 32
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
    def default_ratio(self) -> float:
        return self.sparsity_ratios[-1]

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

    Raises a ValueError (with a readable message) when the folder or Hub id holds no IIS model.
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


# ---------------------------------------------------------------------------- explaining
def image_path(image) -> Any:
    """What `explain_prediction` takes, from a Gradio image payload (a dict with a path), a file
    path, a PIL image or an array."""
    if image is None:
        return None
    if isinstance(image, dict):  # the raw payload of gr.Image (the event is not preprocessed)
        path = image.get("path")
        if not path:
            raise ValueError("the uploaded image did not reach the server; upload it again")
        return str(path)
    if hasattr(image, "path") and not isinstance(image, (str, os.PathLike)):  # a FileData
        return str(image.path)
    return image


def explain_image(model: str, image, sparsity_ratio: float | None = None, top_k: int = DEFAULT_TOP_K):
    """(the loaded model, the `iis_hf.Explanation`) of `image` by the model's head at `sparsity_ratio`."""
    loaded = load_model(model)
    if sparsity_ratio is not None and sparsity_ratio != "":
        sparsity_ratio = float(sparsity_ratio)
    else:
        sparsity_ratio = None
    try:
        top_k = round(float(top_k))
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"top-k must be a number, got {top_k!r}") from None
    top_k = max(1, min(top_k, MAX_TOP_K))
    explanation = iis_hf.explain_prediction(
        loaded.classifier, image_path(image), sparsity_ratio=sparsity_ratio, top_k=top_k
    )
    return loaded, explanation


def explain_callback(model: str | None, image, sparsity_ratio=None, top_k=DEFAULT_TOP_K):
    """The page's explain event: (status markdown, {label: probability}, explanation HTML, JSON).

    Never raises: a bad model, ratio or image gives an error message in the status and empty results.
    """
    empty = (None, "", None)
    if not model:
        return ("Load a model first.", *empty)
    if image is None:
        return ("Upload an image to explain.", *empty)
    try:
        loaded, explanation = explain_image(model, image, sparsity_ratio, top_k)
    except Exception as err:  # shown in the page; never a traceback
        return (error_message(err), *empty)
    labels = {p["label"]: p["score"] for p in explanation.top_predictions}
    status = (
        f"Predicted **{_md(explanation.label)}** (p = {explanation.probability:.3f}) from concepts "
        f"at sparsity {explanation.sparsity_ratio:g}."
    )
    return status, labels, explanation_html(explanation, loaded), explanation.to_dict()


def load_callback(model: str | None, current: str | None = None):
    """The page's load event: (status, ratio choices and value, curve, model summary, loaded model).

    A model that fails to load leaves the current one in place and says why in the status.
    """
    gr = import_gradio()
    try:
        loaded = load_model(model or "")
    except Exception as err:
        return error_message(err), gr.skip(), gr.skip(), gr.skip(), current
    ratios = gr.Radio(
        choices=[(f"{r:g}", r) for r in loaded.sparsity_ratios], value=loaded.default_ratio, interactive=True
    )
    curve = None
    if loaded.curve_path is not None:
        from PIL import Image

        try:  # as pixels: the folder may be outside the paths Gradio serves files from
            with Image.open(loaded.curve_path) as picture:
                curve = picture.convert("RGB")
        except (OSError, ValueError):
            curve = None  # an unreadable iis_curve.png is left out
    shown = str(model).strip()  # as typed; the cache key is the resolved path
    return f"Loaded {_md(shown)}.", ratios, curve, loaded.summary(shown), loaded.name


def error_message(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"**Error:** {_md(text)}"


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
            f'<td class="iis-concept-name" title="{_h(source)}">{_h(c.name)}</td>'
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
        f'<p class="iis-equation">logit {e.logit:+.4f} = bias {e.bias:+.4f} + top {len(e.concepts)} concepts '
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
def build_app(model: str | None = None):
    """The Gradio Blocks of the app; `model` (a folder or Hub id) is loaded when the page opens.

    Serve it with ``build_app(model).launch(css=APP_CSS)`` (what `main` does). Raises a ValueError
    when gradio is not installed.
    """
    gr = import_gradio()

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(
            f"## {TITLE}\n"
            "The interpretation head predicts from concept activations; each concept's "
            "*contribution* to the predicted class is its activation × the class weight, and the "
            "contributions add up to the class logit minus the bias."
        )
        loaded_model = gr.State(None)
        with gr.Row(equal_height=True):
            model_box = gr.Textbox(
                value=model or "",
                label="Model folder or Hub id",
                placeholder="out/finetuned or <user>/<model>",
                scale=5,
                elem_id=IDS["model"],
            )
            load_button = gr.Button("Load", variant="secondary", scale=1, elem_id=IDS["load"])
        status = gr.Markdown(
            "Enter a model folder or Hub id and press Load." if not model else "Loading the model…",
            elem_id=IDS["status"],
        )
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(
                    type="filepath",
                    label="Image",
                    sources=["upload", "clipboard"],
                    height=280,
                    elem_id=IDS["image"],
                )
                ratio = gr.Radio(
                    choices=[],
                    label="Sparsity ratio (which interpretation head)",
                    info="the share of concepts each head drops",
                    elem_id=IDS["ratio"],
                )
                top_k = gr.Slider(
                    1, MAX_TOP_K, value=DEFAULT_TOP_K, step=1, label="Concepts to list", elem_id=IDS["top_k"]
                )
                explain_button = gr.Button("Explain", variant="primary", elem_id=IDS["explain"])
            with gr.Column(scale=3):
                explain_status = gr.Markdown("Upload an image to explain.", elem_id=IDS["explain_status"])
                prediction = gr.Label(
                    label="Prediction from concepts (top classes)",
                    num_top_classes=5,
                    elem_id=IDS["prediction"],
                )
                explanation = gr.HTML(
                    "", label="Explanation", css_template=CSS, elem_id=IDS["explanation"], padding=True
                )
        with gr.Row():
            with gr.Column(scale=3):
                curve = gr.Image(
                    type="pil", label="IIS curve", interactive=False, elem_id=IDS["curve"], height=360
                )
            with gr.Column(scale=2):
                model_info = gr.Markdown(elem_id=IDS["model_info"])
        with gr.Accordion("Explanation as JSON", open=False):
            raw = gr.JSON(elem_id=IDS["json"])

        explain_inputs = [loaded_model, image, ratio, top_k]
        explain_outputs = [explain_status, prediction, explanation, raw]
        # preprocess=False: the callback decodes the upload itself, so that an undecodable file
        # gives iis-hf's readable message instead of an error from Gradio's preprocessing.
        explain_event = {
            "fn": explain_callback,
            "inputs": explain_inputs,
            "outputs": explain_outputs,
            "preprocess": False,
        }
        load_event = {
            "fn": load_callback,
            "inputs": [model_box, loaded_model],
            "outputs": [status, ratio, curve, model_info, loaded_model],
        }
        for trigger in (load_button.click, model_box.submit):
            trigger(**load_event).then(**explain_event)
        if model:
            demo.load(**load_event).then(**explain_event)
        explain_button.click(**explain_event)
        image.upload(**explain_event)
        ratio.input(**explain_event)
        top_k.release(**explain_event)
        image.clear(lambda: ("Upload an image to explain.", None, "", None), None, explain_outputs)
    return demo


# ---------------------------------------------------------------------------- the command line
def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iis-hf app",
        description="A web app to explore the explanations of an IIS model's predictions.",
    )
    parser.add_argument(
        "--model",
        default=os.environ.get(MODEL_ENV) or None,
        help=f"the IIS model folder or Hub id to open with (default: ${MODEL_ENV}, else none)",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1",
        help="address to serve on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("GRADIO_SERVER_PORT") or 7860),
        help="port to serve on (default: $GRADIO_SERVER_PORT, else 7860)",
    )
    parser.add_argument(
        "--share", action="store_true", help="also serve through a public gradio.live link (off by default)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, load the model (so a bad one fails here), and serve the app until stopped."""
    args = build_arg_parser().parse_args(argv)
    import_gradio()
    if args.model:
        load_model(args.model)
    demo = build_app(args.model)
    demo.queue().launch(
        server_name=args.host, server_port=args.port, share=args.share, show_error=True, css=APP_CSS
    )
    return 0


if __name__ == "__main__":  # `python app.py` in a Space, or `python -m iis_hf.app`
    try:
        main()
    except ValueError as err:  # a bad model or a missing gradio: one line, not a traceback
        raise SystemExit(f"iis-hf app: error: {err}") from err
