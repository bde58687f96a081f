"""What the app fixes before it runs: its limits, the names a browser looks for, and gradio itself.

Why a module of its own: every other part of the app reads these, and none of them needs gradio
until `import_gradio` is called.
"""

from __future__ import annotations

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
