"""The app's page: its components, the events that wire them to the request handling, `build_app`.

Why apart from the handlers: the layout and which events a client may call (`api_name`) are the
page's; what each event does is `iis_hf.app.handlers`'.
"""

from __future__ import annotations

from typing import Any

from iis_hf.app.handlers import explain_callback, load_callback, upload_callback, with_top_k_slider
from iis_hf.app.models import ModelPolicy, as_policy
from iis_hf.app.rendering import APP_CSS, CSS
from iis_hf.app.settings import (
    DEFAULT_TOP_K,
    DELETE_CACHE,
    IDS,
    MAX_TOP_K,
    MAX_UPLOAD_BYTES,
    TITLE,
    import_gradio,
)


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
