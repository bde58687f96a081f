"""The app's request handling: what each event of the page does with what a visitor sends.

Every callback checks its inputs (`checked_ratio`, `checked_top_k`, `read_upload`) and never raises:
a bad request gives a one-line message in the page's status.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

from iis_hf.app.models import _MODELS, LoadedModel, ModelPolicy, load_model
from iis_hf.app.rendering import _md, error_message, explain_status, explanation_html
from iis_hf.app.settings import DEFAULT_TOP_K, MAX_TOP_K, import_gradio
from iis_hf.app.uploads import read_upload


def explain_image(model: str, image, sparsity_ratio: float | None = None, top_k: int = DEFAULT_TOP_K):
    """(the loaded model, the `iis_hf.explain.Explanation`) of `image` (a PIL image, array or file path) by the
    model's head at `sparsity_ratio`."""
    loaded = load_model(model)
    ratio = checked_ratio(sparsity_ratio, loaded.sparsity_ratios)
    top_k = checked_top_k(top_k, loaded.num_concepts)
    from iis_hf.explain import explain_prediction

    explanation = explain_prediction(loaded.classifier, image, sparsity_ratio=ratio, top_k=top_k)
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
