"""A batched tensor path for the image processors of the supported families (``preprocessing="tensor"``).

The processors' PIL backend resizes, crops, rescales and normalises one image at a time in NumPy, in
the DataLoader's workers. Here the workers only turn decoded RGB images into uint8 tensors, stacked
by size (`RawImages`); on the model's device each size group is resized with the processor's
resampling (``torch.nn.functional.interpolate``, bilinear / bicubic, ``antialias=True``, rounded and
clamped to uint8 levels as PIL gives them), center-cropped, and the whole batch is rescaled and
normalised at once. The steps and their size semantics are the processors' own (transformers 5,
``*ImageProcessorPil``): ``size={"height", "width"}`` warps to that size; ``{"shortest_edge": s}``
keeps the aspect ratio (long edge ``int(s * long / short)``); ConvNeXt (also ResNet's processor)
resizes the shortest edge to ``int(s / crop_pct)`` and crops ``s x s`` when ``s < 384``, warps to
``s x s`` otherwise; ``do_center_crop`` then crops ``crop_size`` (top/left ``(size - crop) // 2``).

Covered: `ViTImageProcessor` (ViT, Swin), `DeiTImageProcessor`, `BeitImageProcessor`,
`ConvNextImageProcessor` (ConvNeXt, ResNet), `BitImageProcessor` (DINOv2) and `CLIPImageProcessor`,
with bilinear or bicubic resampling, ``do_resize=True`` and no padding. Anything else (another
class, a subclass, other options) is left to the processor: `tensor_path` returns None for it.

Agreement with the PIL backend (tests/test_tensor_preprocess.py; synthetic RGB images of several
sizes, each family's default processor), in normalised units of pixel_values: the tests hold every
family to a mean absolute difference < 0.001 and a max < 0.05. Measured on CPU: mean 3e-4 and max
0.016 (two uint8 levels) for the bilinear ViT processor, mean <= 3e-5 and max <= 0.016 for the
bicubic ones (DeiT, BEiT, ConvNeXt, ResNet, DINOv2, CLIP); features of tiny models of every family
agree to cosine > 0.9999997. PIL resamples separably (width first) with fixed-point weights and
rounds to uint8 after each pass; the tensor path does the same passes in float32 and rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

# The processors of the supported families whose steps this module reproduces (class names, with
# transformers 5's "Pil" backend suffix removed).
COVERED_PROCESSORS = (
    "ViTImageProcessor",
    "DeiTImageProcessor",
    "BeitImageProcessor",
    "ConvNextImageProcessor",
    "BitImageProcessor",
    "CLIPImageProcessor",
)
_RESAMPLING = {2: "bilinear", 3: "bicubic"}  # PIL.Image.Resampling.BILINEAR / BICUBIC
_CONVNEXT_WARP_FROM = 384  # ConvNeXt warps (no crop_pct) from this shortest edge on


@dataclass(frozen=True)
class TensorPlan:
    """What a processor does to an image, read off its settings once.

    `resize`: ("size", h, w) warps; ("shortest_edge", s, 0) keeps the aspect ratio; ("crop_pct", s, 0)
    is ConvNeXt's shortest edge ``int(s / crop_pct)`` then an ``s x s`` crop. `crop`: (h, w) or None.
    """

    resize: tuple[str, int, int]
    crop_pct: float
    mode: str
    crop: tuple[int, int] | None
    scale: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) after the resize step (before any crop), as the processor computes it."""
        kind, a, b = self.resize
        if kind == "size":
            return a, b
        if kind == "crop_pct":
            a = int(a / self.crop_pct)
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = a, int(a * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)


class TensorPreprocessor:
    """Stands in for an image processor: in the workers, images -> `RawImages` (uint8 tensors).

    With `prepare_on` set (a CPU device: extraction sets it where every model runs on the CPU), the
    workers also prepare the pixel values there, so the resize overlaps the forward as the
    processor's does; the values are the same wherever `RawImages.prepare` runs on the CPU.
    """

    def __init__(self, processor: Any, plan: TensorPlan):
        self.processor, self.plan = processor, plan
        self.prepare_on: torch.device | None = None

    def __call__(self, images: list) -> RawImages | torch.Tensor:
        raw = RawImages.from_images(images, self.plan)
        return raw if self.prepare_on is None else raw.prepare(self.prepare_on)

    def to_dict(self) -> dict[str, Any]:
        """The processor's settings, marked: identical processors on the tensor path share a slot."""
        to_dict = getattr(self.processor, "to_dict", None)
        return {"tensor_path": True, **(to_dict() if callable(to_dict) else {"id": id(self.processor)})}


def tensor_path(processor: Any) -> TensorPreprocessor | None:
    """The tensor path for `processor`, or None where it is not covered (it then runs itself)."""
    plan = tensor_plan(processor)
    return None if plan is None else TensorPreprocessor(processor, plan)


def tensor_plan(processor: Any) -> TensorPlan | None:
    """`processor`'s steps as a `TensorPlan`, or None for a class or an option not covered here."""
    cls = type(processor)
    name = cls.__name__.removesuffix("Pil")
    if name not in COVERED_PROCESSORS or not cls.__module__.startswith("transformers.models."):
        return None
    get = lambda key: getattr(processor, key, None)  # noqa: E731
    mode = _resampling(get("resample"))
    if not get("do_resize") or mode is None or get("do_pad") or get("do_reduce_labels"):
        return None
    size, crop_pct = _size_dict(get("size")), float(get("crop_pct") or 1.0)
    if name == "ConvNextImageProcessor":
        edge = size.get("shortest_edge")
        if not edge or get("crop_pct") is None or not 0 < crop_pct <= 1:
            return None
        resize = ("size", edge, edge) if edge >= _CONVNEXT_WARP_FROM else ("crop_pct", edge, 0)
    elif set(size) == {"height", "width"}:
        resize = ("size", size["height"], size["width"])
    elif set(size) == {"shortest_edge"}:
        resize = ("shortest_edge", size["shortest_edge"], 0)
    else:
        return None
    crop = None
    if get("do_center_crop"):
        crop_size = _size_dict(get("crop_size"))
        if set(crop_size) != {"height", "width"}:
            return None
        crop = (crop_size["height"], crop_size["width"])
    plan = TensorPlan(
        resize=resize, crop_pct=crop_pct, mode=mode, crop=crop,
        scale=_rescale_factor(get) if get("do_rescale") else None,
        mean=_channels(get("image_mean")) if get("do_normalize") else None,
        std=_channels(get("image_std")) if get("do_normalize") else None,
    )  # fmt: skip
    return plan if _crop_fits(plan) and (plan.mean is None or plan.std is not None) else None


def _resampling(resample: Any) -> str | None:
    """ "bilinear" / "bicubic" for PIL's (or torchvision's) resampling of that name, else None."""
    if isinstance(resample, int):  # PILImageResampling is an IntEnum
        return _RESAMPLING.get(int(resample))
    value = getattr(resample, "value", resample)
    return value if value in _RESAMPLING.values() else None


def _size_dict(size: Any) -> dict[str, int]:
    """A processor's `SizeDict` (or dict) without its unset entries."""
    items = dict(size).items() if size is not None else ()
    return {k: int(v) for k, v in items if v is not None}


def _channels(values: Any) -> tuple[float, ...] | None:
    if values is None:
        return None
    values = (values,) * 3 if isinstance(values, (int, float)) else tuple(float(v) for v in values)
    return values if len(values) == 3 else None


def _crop_fits(plan: TensorPlan) -> bool:
    """A crop never larger than the resized image (the processor would pad it: not covered)."""
    if plan.crop is None:
        return True
    kind, a, b = plan.resize
    smallest = (a, b) if kind == "size" else (a, a)  # the short edge is at least `a` after the resize
    return plan.crop[0] <= smallest[0] and plan.crop[1] <= smallest[1]


class RawImages:
    """A batch of decoded RGB images as uint8 (n, H, W, 3) tensors, one per distinct size.

    Made in the DataLoader's workers (cheap: no resampling there); `prepare` turns it into the
    batch's pixel values on the model's device.
    """

    def __init__(self, groups: list[tuple[list[int], torch.Tensor]], count: int, plan: TensorPlan):
        self.groups, self.count, self.plan = groups, count, plan

    @classmethod
    def from_images(cls, images: list, plan: TensorPlan) -> RawImages:
        by_size: dict[tuple[int, int], list[int]] = {}
        arrays = [np.asarray(image.convert("RGB") if image.mode != "RGB" else image) for image in images]
        for i, array in enumerate(arrays):
            by_size.setdefault(array.shape[:2], []).append(i)
        groups = [
            (positions, torch.from_numpy(np.stack([arrays[i] for i in positions])))
            for positions in by_size.values()
        ]
        return cls(groups, len(arrays), plan)

    def pin_memory(self) -> RawImages:
        """Called by the DataLoader (``pin_memory=True``): copies to the device then run asynchronously."""
        return RawImages([(p, t.pin_memory()) for p, t in self.groups], self.count, self.plan)

    def __len__(self) -> int:
        return self.count

    def prepare(self, device: torch.device | str) -> torch.Tensor:
        """The (n, 3, h, w) float32 pixel values on `device`, as the processor would give them."""
        plan, out = self.plan, None
        for positions, batch in self.groups:
            pixels = _resize_and_crop(batch.to(device, non_blocking=True), plan)
            if out is None:
                out = pixels.new_empty((self.count, *pixels.shape[1:]))
            out[torch.as_tensor(positions, device=out.device)] = pixels
        assert out is not None, "an empty batch of images"
        return _rescale_and_normalize(out, plan)


def _resize_and_crop(batch: torch.Tensor, plan: TensorPlan) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float32 (n, 3, h, w) holding uint8 levels: resized, then cropped."""
    pixels = batch.permute(0, 3, 1, 2).float()
    height, width = pixels.shape[-2:]
    new_height, new_width = plan.resized_size(height, width)
    # PIL resamples separably, width first, and rounds to uint8 after each pass: so do we (one pass
    # with float intermediates differs by up to 7 levels where bicubic overshoots).
    if new_width != width:
        pixels = _resample(pixels, (height, new_width), plan.mode)
    if new_height != height:
        pixels = _resample(pixels, (new_height, new_width), plan.mode)
    if plan.resize[0] == "crop_pct":
        pixels = _center_crop(pixels, plan.resize[1], plan.resize[1])
    if plan.crop is not None:
        pixels = _center_crop(pixels, *plan.crop)
    return pixels.contiguous()


def _resample(pixels: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    pixels = F.interpolate(pixels, size=size, mode=mode, align_corners=False, antialias=True)
    return pixels.round_().clamp_(0, 255)


def _center_crop(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top = (pixels.shape[-2] - height) // 2
    left = (pixels.shape[-1] - width) // 2
    return pixels[..., top : top + height, left : left + width]


def _rescale_and_normalize(pixels: torch.Tensor, plan: TensorPlan) -> torch.Tensor:
    """The processor's ``(x * rescale_factor - mean) / std``, over the whole batch at once."""
    if plan.scale is not None:
        pixels.mul_(plan.scale)
    if plan.mean is not None and plan.std is not None:
        mean = torch.tensor(plan.mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(plan.std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        pixels.sub_(mean).div_(std)
    return pixels


def to_device(pixel_values: torch.Tensor | RawImages, device: torch.device | str) -> torch.Tensor:
    """Pixel values on `device`: prepared there from `RawImages`, or moved as they are."""
    if isinstance(pixel_values, RawImages):
        return pixel_values.prepare(device)
    return pixel_values.to(device, non_blocking=True)


__all__ = ["COVERED_PROCESSORS", "RawImages", "TensorPlan", "TensorPreprocessor", "tensor_path", "to_device"]


def _rescale_factor(get: Any) -> float:
    """The processor's rescale factor (1/255 where a processor that rescales leaves it unset)."""
    factor = get("rescale_factor")
    return float(factor) if factor is not None else 1 / 255
