"""iis_hf.images.load_image: one conversion for every kind of input, and clear errors naming the file."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from iis_hf.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    IMAGE_TYPES_HELP,
    MAX_IMAGE_PIXELS_ENV,
    load_image,
    max_image_pixels,
    open_image_file,
)


def pixels(image: Image.Image) -> np.ndarray:
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    return np.asarray(image)


def grey_as_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


@pytest.fixture
def picture() -> np.ndarray:
    """An asymmetric 12 x 20 RGB picture, all 256 levels represented."""
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    array[0, :3, 0] = (0, 255, 128)
    return array


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, rows: bytes = b"") -> bytes:
    """A PNG written by hand, for what Pillow cannot write (48-bit RGB) or must not (a lying header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def message_of(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, "errors are one line"
    return message


# ---------------------------------------------------------------------------- conversion rules
def test_16bit_greyscale_png_gives_the_8bit_pixels_it_was_made_from(tmp_path, picture):
    grey = picture[..., 0]
    path = tmp_path / "grey16.png"
    Image.fromarray(grey.astype(np.uint16) * 257).save(path)
    assert Image.open(path).mode == "I;16"  # the case convert("RGB") turned white
    np.testing.assert_array_equal(pixels(load_image(path)), grey_as_rgb(grey))


def test_16bit_rgb_png_gives_the_8bit_pixels_it_was_made_from(tmp_path, picture):
    height, width, _ = picture.shape
    wide = picture.astype(">u2") * 257
    rows = b"".join(b"\x00" + wide[y].tobytes() for y in range(height))
    path = tmp_path / "rgb48.png"
    path.write_bytes(png_bytes(width, height, 16, 2, rows))
    np.testing.assert_array_equal(pixels(load_image(path)), picture)


def test_float_array_in_unit_range_equals_the_uint8_array(picture):
    for dtype in (np.float16, np.float32, np.float64):
        floats = picture.astype(dtype) / dtype(255)
        np.testing.assert_array_equal(pixels(load_image(floats)), picture, err_msg=str(dtype))
    chw = torch.from_numpy(picture).permute(2, 0, 1).float() / 255
    np.testing.assert_array_equal(pixels(load_image(chw)), picture)
    coarse = pixels(load_image(chw.to(torch.bfloat16))).astype(int)  # numpy has no bfloat16
    assert np.abs(coarse - picture).max() <= 2


def test_uint16_array_is_scaled_not_wrapped():
    values = np.array([[0, 128, 256, 257, 32768, 65280, 65535]], dtype=np.uint16)
    expected = np.array([[0, 0, 1, 1, 128, 254, 255]], dtype=np.uint8)  # round(v * 255 / 65535)
    np.testing.assert_array_equal(pixels(load_image(values)), grey_as_rgb(expected))
    np.testing.assert_array_equal(
        pixels(load_image(torch.from_numpy(values.astype(np.int32)))), grey_as_rgb(expected)
    )
    np.testing.assert_array_equal(pixels(load_image(values.astype(">u2"))), grey_as_rgb(expected))


def test_mode_i_and_int32_are_read_as_16_bit(picture):
    grey = picture[..., 0]
    image_i = Image.fromarray(grey.astype(np.int32) * 257)
    assert image_i.mode == "I"
    np.testing.assert_array_equal(pixels(load_image(image_i)), grey_as_rgb(grey))
    with pytest.raises(ValueError, match=r"\[0, 70000\]"):
        load_image(np.array([[0, 70000]], dtype=np.int32), what="frame 7")


def test_numpy_default_int_holds_8_bit_values(picture):
    np.testing.assert_array_equal(pixels(load_image(picture.astype(np.int64))), picture)
    with pytest.raises(ValueError, match=r"frame 7.*\[0, 300\].*uint8"):
        load_image(np.array([[0, 300]], dtype=np.int64), what="frame 7")


def test_bool_array_is_black_and_white():
    mask = np.array([[True, False], [False, True]])
    np.testing.assert_array_equal(pixels(load_image(mask))[..., 0], [[255, 0], [0, 255]])


@pytest.mark.parametrize("transparency", [0, bytes([0, 128, 255])], ids=["index", "bytes"])
def test_palette_with_transparency_keeps_the_palette_colours(tmp_path, transparency):
    palette = [200, 10, 20, 30, 220, 40, 50, 60, 240]
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    image = Image.frombytes("P", (3, 2), indices.tobytes())
    image.putpalette(palette + [0] * (768 - len(palette)))
    image.info["transparency"] = transparency
    path = tmp_path / "palette.png"
    image.save(path, transparency=transparency)
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    expected = np.array(palette, dtype=np.uint8).reshape(3, 3)[indices]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Palette images with Transparency" warning either
        np.testing.assert_array_equal(pixels(load_image(path)), expected)
        np.testing.assert_array_equal(pixels(load_image(image)), expected)


def test_cmyk_becomes_rgb(tmp_path):
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 0, 255]]], dtype=np.uint8)
    path = tmp_path / "cmyk.tiff"
    Image.frombytes("CMYK", (4, 1), cmyk.tobytes()).save(path)
    expected = [[[255, 255, 255], [0, 255, 255], [255, 0, 255], [0, 0, 0]]]
    np.testing.assert_array_equal(pixels(load_image(path)), expected)


def test_alpha_is_dropped_like_convert_rgb(picture):
    rgba = np.concatenate([picture, np.zeros_like(picture[..., :1])], axis=-1)  # fully transparent
    np.testing.assert_array_equal(pixels(load_image(rgba)), picture)
    np.testing.assert_array_equal(pixels(load_image(Image.fromarray(rgba, mode="RGBA"))), picture)
    la = Image.merge("LA", [Image.fromarray(picture[..., 0]), Image.new("L", (20, 12), 0)])
    np.testing.assert_array_equal(pixels(load_image(la)), grey_as_rgb(picture[..., 0]))


def test_exif_rotated_jpeg_gives_the_pixels_datasets_decodes(tmp_path, picture):
    from datasets import Dataset
    from datasets import Image as ImageFeature

    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.fromarray(picture).save(path, quality=95, exif=exif.tobytes())
    dataset = Dataset.from_dict({"image": [str(path)]}).cast_column("image", ImageFeature())
    decoded = np.asarray(dataset[0]["image"].convert("RGB"))
    assert decoded.shape == (20, 12, 3)  # datasets did rotate it
    np.testing.assert_array_equal(pixels(load_image(path)), decoded)
    raw = {"bytes": path.read_bytes(), "path": None}
    np.testing.assert_array_equal(pixels(load_image(raw)), decoded)
    stored = dataset.cast_column("image", ImageFeature(decode=False))[0]["image"]
    np.testing.assert_array_equal(pixels(load_image(stored)), decoded)


def test_greyscale_equals_its_rgb_conversion(tmp_path, picture):
    grey = picture[..., 1]
    path = tmp_path / "grey.png"
    Image.fromarray(grey).save(path)
    np.testing.assert_array_equal(pixels(load_image(path)), grey_as_rgb(grey))
    np.testing.assert_array_equal(pixels(load_image(grey[None])), grey_as_rgb(grey))  # (1, H, W)
    bilevel = Image.fromarray(grey > 127).convert("1")
    np.testing.assert_array_equal(pixels(load_image(bilevel)), grey_as_rgb(np.where(grey > 127, 255, 0)))


def test_every_kind_of_source_gives_the_same_pixels(tmp_path, picture):
    path = tmp_path / "picture.png"
    Image.fromarray(picture).save(path)
    data = path.read_bytes()
    sources = {
        "str path": str(path),
        "Path": path,
        "bytes": data,
        "datasets dict with bytes": {"bytes": data, "path": "elsewhere.png"},
        "datasets dict with path": {"bytes": None, "path": str(path)},
        "PIL": Image.open(path),
        "HWC array": picture,
        "CHW tensor": torch.from_numpy(picture).permute(2, 0, 1),
    }
    for name, source in sources.items():
        np.testing.assert_array_equal(pixels(load_image(source)), picture, err_msg=name)
    np.testing.assert_array_equal(pixels(open_image_file(path)), picture)


# ---------------------------------------------------------------------------- errors
def test_zero_byte_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ValueError) as excinfo:
        load_image(path)
    assert str(path) in message_of(excinfo) and "empty" in message_of(excinfo)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_refused_naming_it(tmp_path, picture, fmt):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    big = np.tile(picture, (8, 8, 1))
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, fmt)
    data = buffer.getvalue()
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) * 3 // 4])
    with pytest.raises(ValueError) as excinfo:
        load_image(path)
    message = message_of(excinfo)
    assert str(path) in message and "truncated or corrupt" in message and "re-create" in message
    with pytest.raises(ValueError, match="row 3 of column 'image'"):
        load_image({"bytes": path.read_bytes(), "path": None}, what="row 3 of column 'image'")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_text_file_named_png_is_refused_naming_it(tmp_path):
    path = tmp_path / "not_really.png"
    path.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(ValueError) as excinfo:
        load_image(path)
    message = message_of(excinfo)
    assert str(path) in message and "not an image" in message and "<html>" in message


def test_missing_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "nowhere.png"
    with pytest.raises(ValueError) as excinfo:
        load_image(str(path))
    assert str(path) in message_of(excinfo) and "does not exist" in message_of(excinfo)
    with pytest.raises(ValueError, match="does not exist"):
        load_image({"bytes": None, "path": str(path)})


@pytest.mark.parametrize(
    "shape", [(5,), (2, 6, 7, 3), (6, 7, 2), (2, 6, 7), (0, 7, 3)], ids=lambda shape: str(shape)
)
def test_bad_array_shape_is_refused_naming_it(shape):
    with pytest.raises(ValueError) as excinfo:
        load_image(np.zeros(shape, dtype=np.uint8), what="row 3 of column 'image'")
    message = message_of(excinfo)
    assert "row 3 of column 'image'" in message and str(shape) in message and "(H, W, C)" in message


def test_unsupported_dtype_and_type_are_refused():
    with pytest.raises(ValueError, match=r"row 1.*complex128"):
        load_image(np.zeros((4, 4), dtype=np.complex128), what="row 1")
    with pytest.raises(ValueError, match=r"row 2 is a list"):
        load_image([[0, 1], [1, 0]], what="row 2")
    assert "numpy array" in IMAGE_TYPES_HELP


def test_float_out_of_range_is_refused_with_the_range_and_the_fix(picture):
    with pytest.raises(ValueError) as excinfo:
        load_image(picture.astype(np.float32), what="row 3 of column 'image'")
    message = message_of(excinfo)
    assert "row 3 of column 'image'" in message and "[0, 255]" in message and "divide" in message
    with pytest.raises(ValueError, match=r"\[-0\.5, 1\]"):
        load_image(np.array([[-0.5, 1.0]]), what="frame")
    with pytest.raises(ValueError, match="NaN"):
        load_image(np.array([[np.nan, 1.0]]), what="frame")
    with pytest.raises(ValueError, match=r"\[0, 200\]"):  # a PIL float image follows the same rule
        load_image(Image.fromarray(np.array([[0.0, 200.0]], dtype=np.float32)), what="frame")


def test_bomb_header_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(14_000, 14_000, 8, 0))  # claims 196e6 pixels, holds none
    pil_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ValueError) as excinfo:
        load_image(path)
    message = message_of(excinfo)
    assert str(path) in message and "196000000" in message and str(DEFAULT_MAX_IMAGE_PIXELS) in message
    assert MAX_IMAGE_PIXELS_ENV in message and "max_pixels" in message
    with pytest.raises(ValueError) as excinfo:  # our limit allows it, Pillow's own does not
        load_image(path, max_pixels=10**9)
    assert str(path) in message_of(excinfo) and "also raise PIL.Image.MAX_IMAGE_PIXELS" in message_of(excinfo)
    assert pil_limit == Image.MAX_IMAGE_PIXELS  # no process-wide change


@pytest.mark.parametrize("warning_filter", ["ignore", "error"])
def test_bomb_above_pillow_warning_limit_is_refused(tmp_path, warning_filter):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(10_000, 10_000, 8, 0))  # 1e8: Pillow only warns
    with warnings.catch_warnings():
        warnings.simplefilter(warning_filter, Image.DecompressionBombWarning)
        with pytest.raises(ValueError) as excinfo:
            load_image(path)
        assert str(path) in message_of(excinfo) and "100000000" in message_of(excinfo)
        with pytest.raises(ValueError) as excinfo:  # allowed by our limit: it gets to decoding
            load_image(path, max_pixels=10**8)
        assert "truncated" in message_of(excinfo)


def test_pixel_limit_per_call_and_from_the_environment(tmp_path, picture, monkeypatch):
    path = tmp_path / "picture.png"
    Image.fromarray(picture).save(path)  # 20 x 12 = 240 pixels
    monkeypatch.delenv(MAX_IMAGE_PIXELS_ENV, raising=False)
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS
    with pytest.raises(ValueError) as excinfo:
        load_image(path, max_pixels=239)
    message = message_of(excinfo)
    assert str(path) in message and "20 x 12 = 240" in message and "239" in message
    load_image(path, max_pixels=240)

    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "100")
    with pytest.raises(ValueError, match=rf"{path.name}.*limit of 100\b"):
        load_image(path)
    with pytest.raises(ValueError, match="limit of 100"):
        load_image(Image.open(path))  # a lazily opened PIL image is checked before loading
    np.testing.assert_array_equal(pixels(load_image(path, max_pixels=1000)), picture)  # argument wins
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "1000")
    np.testing.assert_array_equal(pixels(load_image(path)), picture)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=MAX_IMAGE_PIXELS_ENV):
        load_image(path)
