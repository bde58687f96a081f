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
public modules (`iis_hf.explain.ConceptClassifier`, `iis_hf.explain.explain_prediction`,
`iis_hf.images.load_image`); a Space's `app.py` is ``from iis_hf.app import main; main()``.

The parts, each about one thing: `settings` (limits, element ids, gradio), `rendering` (HTML and
Markdown), `models` (loading and which models a visitor may open), `uploads` (the one door to the
server's files), `handlers` (the page's events), `page` (the Blocks); this module re-exports them
and holds the command line that serves the page.
"""

from __future__ import annotations

import argparse
import os
import socket

from iis_hf.app.handlers import (
    checked_ratio,
    checked_top_k,
    curve_html,
    explain_callback,
    explain_image,
    load_callback,
    upload_callback,
    with_top_k_slider,
)

# Re-exported with the private helpers (`iis_hf.app._md`, `_MODELS`, ...): every name stays where it was.
from iis_hf.app.models import (  # noqa: F401
    _MODELS,
    _MODELS_LOCK,
    LoadedModel,
    ModelPolicy,
    _is_path,
    _report_file,
    as_policy,
    find_iis_curve,
    load_model,
    logger,
    model_key,
    visitor_names,
)
from iis_hf.app.page import LAUNCH_SETTINGS, PRIVATE, _model_chooser, _page, _wire, build_app  # noqa: F401
from iis_hf.app.rendering import (  # noqa: F401
    APP_CSS,
    CSS,
    _backbone_line,
    _concept_rows,
    _concept_table,
    _h,
    _md,
    error_message,
    explain_status,
    explanation_html,
    png_data_uri,
)
from iis_hf.app.settings import (
    DEFAULT_TOP_K,
    DELETE_CACHE,
    IDS,
    INSTALL_HINT,
    MAX_PORT,
    MAX_TOP_K,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_PIXELS,
    MODEL_ENV,
    NEGATIVE,
    NOT_UPLOADED,
    POSITIVE,
    TITLE,
    import_gradio,
)
from iis_hf.app.uploads import discard_upload, read_upload, upload_folder, uploaded_file

__all__ = [
    "APP_CSS",
    "CSS",
    "DEFAULT_TOP_K",
    "DELETE_CACHE",
    "IDS",
    "INSTALL_HINT",
    "LAUNCH_SETTINGS",
    "MAX_PORT",
    "MAX_TOP_K",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_PIXELS",
    "MODEL_ENV",
    "NEGATIVE",
    "NOT_UPLOADED",
    "POSITIVE",
    "PRIVATE",
    "TITLE",
    "LoadedModel",
    "ModelPolicy",
    "as_policy",
    "build_app",
    "build_arg_parser",
    "check_port",
    "check_port_free",
    "checked_ratio",
    "checked_top_k",
    "curve_html",
    "discard_upload",
    "error_message",
    "explain_callback",
    "explain_image",
    "explain_status",
    "explanation_html",
    "find_iis_curve",
    "import_gradio",
    "load_callback",
    "load_model",
    "logger",
    "main",
    "model_key",
    "png_data_uri",
    "port_unavailable",
    "read_upload",
    "served_models",
    "upload_callback",
    "upload_folder",
    "uploaded_file",
    "visitor_names",
    "with_top_k_slider",
]


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
