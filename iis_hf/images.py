"""The one place where iis-hf turns an input into an RGB PIL image.

Every entry point (feature extraction, `explain`, the CLI) calls `load_image`, so a given picture
gives the same pixels -- and so the same features -- whether it arrives as a file, as bytes, as a
`datasets` row, as a PIL image, or as an array.

Conversion rules (the same for every kind of source):

* uint8 values are used as they are; bool is 0 / 255.
* 16-bit data -- uint16 and int32 arrays, PIL modes "I;16", "I;16B", "I;16L", "I;16N" and "I" -- is
  scaled by the 16-bit range, ``round(v * 255 / 65535)``, never clipped or wrapped. Mode "I" (and so
  int32, what ``numpy.asarray`` gives for it) is read as 16-bit because that is how Pillow has used
  it: older Pillow opens 16-bit greyscale PNGs as "I", and Pillow up to 12 saves an "I" image as a
  16-bit PNG, so such an image and its PNG give the same pixels. Values outside [0, 65535] are refused, as scaling them by the full
  int32 range would turn every real image black.
* Other integer types (int8, int16, int64, uint32, uint64: usually a numpy default, as in
  ``np.random.randint(0, 256, shape)``) must hold values in [0, 255], read as 8-bit; others are refused.
* Floats (arrays, tensors, PIL mode "F") must lie in [0, 1] and are scaled by 255 and rounded. Values
  in (1, 255] are refused rather than guessed (0-255 floats and over-bright [0, 1] floats cannot be
  told apart): divide by 255 or pass uint8. NaN and infinity are refused.
* Alpha is dropped the way ``Image.convert("RGB")`` drops it (the colour channels are kept, nothing is
  composited on a background), as iis-hf always did, so features of existing data sets do not change.
  Palette images ("P", with or without transparency), "CMYK", "LA", "RGBA", "L", "1" and the other
  PIL modes are converted with ``convert("RGB")``; greyscale gives R = G = B.
* Files, bytes and `datasets` image dicts get their EXIF orientation applied exactly as
  ``datasets.Image.decode_example`` does (``exif_transpose`` when an Orientation tag is present). A
  PIL image is taken as already decoded and is not rotated, as `datasets` also returns it unchanged.

Decompression bombs: an image with more than `max_pixels` pixels is refused from its header, before
its pixels are decoded (arrays and tensors are not checked: their pixels are in memory already). The
limit is the `max_pixels` argument, else the environment variable
``IIS_HF_MAX_IMAGE_PIXELS``, else `DEFAULT_MAX_IMAGE_PIXELS`. Pillow's process-wide
``PIL.Image.MAX_IMAGE_PIXELS`` is never changed here; Pillow itself refuses images over twice that
value, so a limit above it also needs ``PIL.Image.MAX_IMAGE_PIXELS`` raised by the caller.

Truncated files fail: the image is fully loaded and ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
import zlib
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .errors import first_line

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IMAGE_TYPES_HELP",
    "MAX_IMAGE_PIXELS_ENV",
    "load_image",
    "max_image_pixels",
    "open_image_file",
]

DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
"""Largest image (width x height) decoded by default: Pillow's own default warning limit
(``1024 * 1024 * 1024 // 4 // 3``), e.g. 9459 x 9459."""

MAX_IMAGE_PIXELS_ENV = "IIS_HF_MAX_IMAGE_PIXELS"
"""Environment variable that overrides `DEFAULT_MAX_IMAGE_PIXELS` (the `max_pixels` argument wins)."""

IMAGE_TYPES_HELP = (
    "an image file path (str or os.PathLike), image file bytes, a datasets image dict "
    "{'bytes': ..., 'path': ...}, a PIL image, or a numpy array / torch tensor shaped (H, W), "
    "(H, W, C) or (C, H, W) with C in 1, 3, 4 holding uint8, uint16, bool or floats in [0, 1]"
)

_ORIENTATION = 0x0112  # PIL.ExifTags.Base.Orientation, spelled out for Pillow < 9.4
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error, zlib.error)
_FLOAT_FIX = "scale the values to [0, 1] (e.g. divide 0-255 values by 255) or pass a uint8 array"
_INT_FIX = "cast to uint8 (values 0-255) or uint16 (values 0-65535), or pass floats in [0, 1]"


class DecompressionBombRefused(ValueError):
    """An image with more pixels than the limit (`max_image_pixels`): refused before it is decoded."""


# ---------------------------------------------------------------------------- public API
def load_image(source: Any, *, what: str | None = None, max_pixels: int | None = None) -> Image.Image:
    """An RGB PIL image from any accepted input (see `IMAGE_TYPES_HELP`), or a one-line ValueError.

    `what` names the input in error messages (e.g. "row 3 of column 'image'"); by default the file
    path, or "the image". `max_pixels` overrides the decompression-bomb limit for this call (files,
    bytes, dicts and PIL images; arrays and tensors are already decoded).
    """
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source, what or _pil_label(source), max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return open_image_file(source, max_pixels=max_pixels, what=what)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(source), what or "the image", max_pixels)
    if isinstance(source, dict):
        return _decode_dict(source, what, max_pixels)
    if _is_tensor(source) or hasattr(source, "__array__"):
        return _array_to_rgb(_as_numpy(source), what or "the image")
    raise ValueError(
        f"{what or 'the image'} is a {type(source).__name__}, not an image; pass {IMAGE_TYPES_HELP}"
    )


def open_image_file(
    path: str | os.PathLike, *, max_pixels: int | None = None, what: str | None = None
) -> Image.Image:
    """Decode an image file to RGB, or raise a ValueError naming the file and the fix."""
    path = os.fspath(path)
    label = f"{what} (image file {path!r})" if what else f"image file {path!r}"
    if not os.path.exists(path):
        raise ValueError(f"{label} does not exist; check the path (relative paths start at {os.getcwd()!r})")
    if os.path.isdir(path):
        raise ValueError(f"{label} is a folder, not an image file; pass the path of an image file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{label} is empty (0 bytes); re-create or re-download it, or leave it out")
    try:
        with open(path, "rb") as file:
            return _decode_file(file, label, max_pixels)
    except PermissionError:
        raise ValueError(f"{label} cannot be read (permission denied); make it readable") from None


def max_image_pixels(max_pixels: int | None = None) -> int:
    """The decompression-bomb limit in force: `max_pixels`, else $IIS_HF_MAX_IMAGE_PIXELS, else
    `DEFAULT_MAX_IMAGE_PIXELS`. Read at each call, so changing the variable takes effect at once."""
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
        return max_pixels
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(
            f"environment variable {MAX_IMAGE_PIXELS_ENV}={text!r} must be a positive integer "
            f"(a number of pixels, width x height); unset it to use {DEFAULT_MAX_IMAGE_PIXELS}"
        )
    return value


# ---------------------------------------------------------------------------- encoded images
def _decode_dict(value: dict, what: str | None, max_pixels: int | None) -> Image.Image:
    """A `datasets` raw image dict: its bytes if present, else its path (as `datasets` decodes)."""
    data, path = value.get("bytes"), value.get("path")
    if data:
        label = what or "the image"
        if path:
            label = f"{what} (image {path!r})" if what else f"image {path!r}"
        return _decode_bytes(bytes(data), label, max_pixels)
    if path:
        return open_image_file(path, max_pixels=max_pixels, what=what)
    name = what or "the image"
    if data is not None:  # b"": an empty file stored in the data set
        raise ValueError(f"{name} is empty (0 bytes); re-create the image or leave this row out")
    raise ValueError(
        f"{name} is a dict without 'bytes' or 'path' (keys: {sorted(value)}); pass {IMAGE_TYPES_HELP}"
    )


def _decode_bytes(data: bytes, label: str, max_pixels: int | None) -> Image.Image:
    if not data:
        raise ValueError(f"{label} is empty (0 bytes); re-create the image or leave it out")
    return _decode_file(io.BytesIO(data), label, max_pixels)


def _decode_file(file: io.BufferedIOBase | io.BytesIO, label: str, max_pixels: int | None) -> Image.Image:
    """Open (header only), refuse a bomb, load fully, apply EXIF orientation, convert to RGB."""
    limit = max_image_pixels(max_pixels)
    image = _open_header(file, label, limit)
    with image:
        _check_pixels(image.size, label, limit)
        _load(image, label, limit)
        return _to_rgb(_exif_transpose(image, label), label)


def _exif_transpose(image: Image.Image, label: str) -> Image.Image:
    """Exactly what ``datasets.Image.decode_example`` does after ``image.load()``."""
    try:
        if image.getexif().get(_ORIENTATION) is not None:
            return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS as err:
        raise ValueError(
            f"{label} has corrupt EXIF data ({first_line(err)}); re-save the image without EXIF"
        ) from err
    return image


def _open_header(file: Any, label: str, limit: int) -> ImageFile.ImageFile:
    """`Image.open` (reads the header only), turning Pillow's errors into one-line ValueErrors."""
    try:
        return _open_with_pil_bomb_check(file, label, limit)
    except DecompressionBombRefused:
        raise  # already one line naming the file and the fix
    except Image.UnidentifiedImageError:
        file.seek(0)
        start = file.read(16)
        raise ValueError(
            f"{label} is not an image Pillow can read (it starts with {start!r}); check that it is "
            "an image file (JPEG, PNG, ...) and not text or HTML saved under an image name"
        ) from None
    except _DECODE_ERRORS as err:
        raise ValueError(f"{label} cannot be decoded ({first_line(err)}); re-create or remove it") from err


def _open_with_pil_bomb_check(file: Any, label: str, limit: int) -> ImageFile.ImageFile:
    """Pillow checks image sizes against its own global limit in `Image.open`: an error above twice
    ``PIL.Image.MAX_IMAGE_PIXELS``, a warning above it. Both are reported in our terms; the warning,
    when it is raised as an error (``-W error``), is ignored once if our own limit allows the image."""
    try:
        return Image.open(file)
    except Image.DecompressionBombError as err:
        raise DecompressionBombRefused(
            _bomb_message(label, _pixels_in(err), limit, pil_refused=True)
        ) from err
    except Image.DecompressionBombWarning as err:
        pixels = _pixels_in(err)
        if pixels is None or pixels > limit:
            raise DecompressionBombRefused(_bomb_message(label, pixels, limit)) from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        file.seek(0)
        return Image.open(file)


def _check_pixels(size: tuple[int, int], label: str, limit: int) -> None:
    width, height = size
    if width * height > limit:
        raise DecompressionBombRefused(_bomb_message(label, width * height, limit, size=size))


def _bomb_message(
    label: str,
    pixels: int | None,
    limit: int,
    *,
    size: tuple[int, int] | None = None,
    pil_refused: bool = False,
) -> str:
    found = f"{pixels} pixels" if pixels is not None else "too many pixels"
    if size is not None:
        found = f"{size[0]} x {size[1]} = {found}"
    message = (
        f"{label} is {found}, more than the limit of {limit} (a possible decompression bomb); "
        f"if the image is genuine, raise the limit with max_pixels= or the environment variable "
        f"{MAX_IMAGE_PIXELS_ENV}"
    )
    if pil_refused and pixels is not None and pixels <= limit:
        message = (
            f"{label} is {found}, more than twice Pillow's limit PIL.Image.MAX_IMAGE_PIXELS="
            f"{Image.MAX_IMAGE_PIXELS} (a possible decompression bomb), so Pillow refuses it; "
            f"iis-hf's limit ({limit}) allows it: if the image is genuine, also raise "
            "PIL.Image.MAX_IMAGE_PIXELS (iis-hf never changes it)"
        )
    return message


def _pixels_in(err: Exception) -> int | None:
    match = re.search(r"\((\d+) pixels\)", str(err))
    return int(match.group(1)) if match else None


def _load(image: Image.Image, label: str, limit: int) -> None:
    """Decode every pixel now, so a truncated or corrupt file fails here, naming the file."""
    try:
        image.load()
    except Image.DecompressionBombError as err:  # raised by some formats (GIF frames, TIFF tiles)
        raise DecompressionBombRefused(
            _bomb_message(label, _pixels_in(err), limit, pil_refused=True)
        ) from err
    except _DECODE_ERRORS as err:
        raise ValueError(
            f"{label} is truncated or corrupt ({first_line(err)}); re-create or re-download it, "
            "or leave it out"
        ) from err


# ---------------------------------------------------------------------------- PIL images
def _pil_label(image: Image.Image) -> str:
    filename = getattr(image, "filename", "")
    return f"image file {filename!r}" if filename else "the image"


def _pil_to_rgb(image: Image.Image, label: str, max_pixels: int | None) -> Image.Image:
    """A PIL image given by the caller: taken as decoded (no EXIF rotation, as in `datasets`), but a
    lazily opened file is size-checked before its pixels are loaded."""
    limit = max_image_pixels(max_pixels)
    _check_pixels(image.size, label, limit)
    _load(image, label, limit)
    return _to_rgb(image, label)


def _to_rgb(image: Image.Image, label: str) -> Image.Image:
    """Any PIL mode to RGB: high bit-depth and float modes through the array rules, palettes with
    transparency through RGBA (the same colours, without Pillow's warning), the rest by convert."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "F":
        return _array_to_rgb(np.asarray(image), label)
    if mode in ("P", "PA") and "transparency" in image.info:
        image = image.convert("RGBA")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as err:
        raise ValueError(
            f"{label} has PIL mode {mode!r}, which cannot be converted to RGB ({first_line(err)}); "
            "convert it to 'RGB' or 'L' first"
        ) from err


# ---------------------------------------------------------------------------- arrays and tensors
def _is_tensor(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def _as_numpy(value: Any) -> np.ndarray:
    """A numpy view of an array or tensor (on CPU, detached; bfloat16 and the like as float32)."""
    if _is_tensor(value):
        import torch

        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:  # numpy has no bfloat16
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _array_to_rgb(array: np.ndarray, label: str) -> Image.Image:
    pixels = _to_uint8(_to_hwc(array, label), label)
    if pixels.shape[-1] == 1:
        return Image.fromarray(pixels[..., 0]).convert("RGB")
    return Image.fromarray(np.ascontiguousarray(pixels[..., :3]))  # RGBA: alpha dropped, as convert("RGB")


def _to_hwc(array: np.ndarray, label: str) -> np.ndarray:
    """(H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4 -> (H, W, C). A trailing dimension of 1, 3
    or 4 means channels-last, otherwise a leading one means channels-first (as iis-hf always read it)."""
    channels = (1, 3, 4)
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim == 3 and array.shape[-1] not in channels and array.shape[0] in channels:
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] not in channels or 0 in array.shape:
        raise ValueError(
            f"{label} is an array of shape {tuple(array.shape)}, not an image; pass one image shaped "
            "(H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4 (a batch must be split into images)"
        )
    return array


def _to_uint8(array: np.ndarray, label: str) -> np.ndarray:
    """The dtype rules of the module docstring."""
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype == np.uint8:
        return array
    if kind == "f":
        return _float_to_uint8(array, label)
    if kind in "iu":
        if (kind, array.dtype.itemsize) in (("u", 2), ("i", 4)):  # uint16, int32 (mode "I"), any byte order
            return _sixteen_bit_to_uint8(array, label)
        return _small_int_to_uint8(array, label)
    raise ValueError(f"{label} is an array of dtype {array.dtype}, not an image; pass {IMAGE_TYPES_HELP}")


def _float_to_uint8(array: np.ndarray, label: str) -> np.ndarray:
    if not np.isfinite(array).all():
        raise ValueError(f"{label} holds NaN or infinite values; {_FLOAT_FIX}")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"{label} is a float {array.dtype} image with values in [{low:g}, {high:g}], outside "
            f"[0, 1]; {_FLOAT_FIX}"
        )
    return np.floor(array.astype(np.float64) * 255.0 + 0.5).astype(np.uint8)


def _sixteen_bit_to_uint8(array: np.ndarray, label: str) -> np.ndarray:
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 65535:
        raise ValueError(
            f"{label} is a {array.dtype} image with values in [{low}, {high}], outside the 16-bit "
            f"range [0, 65535] it is read in; {_INT_FIX}"
        )
    return ((array.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)


def _small_int_to_uint8(array: np.ndarray, label: str) -> np.ndarray:
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:
        raise ValueError(
            f"{label} is a {array.dtype} image with values in [{low}, {high}]; {array.dtype} is read "
            f"as 8-bit values in [0, 255]; {_INT_FIX}"
        )
    return array.astype(np.uint8)
