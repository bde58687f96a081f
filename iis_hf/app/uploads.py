"""Uploads: only a file uploaded through this page is read, size-checked, decoded and deleted at once.

Why a module of its own: it is the app's one door to the server's files, so its checks read together.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from iis_hf.app.settings import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, NOT_UPLOADED


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
    from iis_hf.images import DecompressionBombRefused, load_image

    try:
        return load_image(data, what="the uploaded image", max_pixels=MAX_UPLOAD_PIXELS)
    except DecompressionBombRefused:
        raise ValueError(
            f"the image has too many pixels: this app takes images up to {MAX_UPLOAD_PIXELS:,} pixels "
            "(4096 x 4096); resize it and upload it again"
        ) from None
