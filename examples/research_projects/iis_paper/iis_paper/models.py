"""The experiments' small image classifiers: configs, seeded construction, copies, new classifiers.

Every model is a random-initialised transformers `*ForImageClassification` for 32 x 32 inputs,
so that a CPU trains it in minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from iis_hf.demo import demo_model
from iis_hf.errors import IISError

MODELS = ("resnet-s", "resnet-m", "vit-s", "vit-m", "convnext-s", "convnext-m")
LARGE_MODELS = ("resnet-l", "vit-l", "convnext-l")  # not in the CPU presets: run them on a GPU


def model_config(name: str) -> Callable[[], Any] | None:
    """Configs of the small models (32 x 32 inputs) trained here: three families, two widths each.

    "-m" doubles every width of "-s" and keeps its depth; "-l" (for a GPU) quadruples the widths of
    "-s" and doubles its depth. None: `iis_hf.demo.demo_model` (resnet-s).
    """
    import transformers as tf

    def resnet(width: int, depth: int) -> Callable[[], Any]:
        return lambda: tf.ResNetConfig(
            embedding_size=width,
            hidden_sizes=[width, 2 * width, 4 * width],
            depths=[depth] * 3,
            layer_type="basic",
            downsample_in_first_stage=False,
        )

    def vit(width: int, depth: int, heads: int) -> Callable[[], Any]:
        return lambda: tf.ViTConfig(
            image_size=32,
            patch_size=4,
            hidden_size=width,
            num_hidden_layers=depth,
            num_attention_heads=heads,
            intermediate_size=2 * width,
        )

    def convnext(width: int, depth: int) -> Callable[[], Any]:
        return lambda: tf.ConvNextConfig(
            patch_size=2, num_stages=3, hidden_sizes=[width, 2 * width, 4 * width], depths=[depth] * 3
        )

    configs = {
        "resnet-s": None,  # iis_hf.demo.demo_model: embedding 32, hidden sizes 32/64/128, depths 1/1/1
        "resnet-m": resnet(64, 1),
        "resnet-l": resnet(128, 2),
        "vit-s": vit(64, 4, 4),
        "vit-m": vit(128, 4, 4),
        "vit-l": vit(256, 8, 8),
        "convnext-s": convnext(32, 1),
        "convnext-m": convnext(64, 1),
        "convnext-l": convnext(128, 2),
    }
    if name not in configs:
        raise IISError(f"unknown model {name!r}: choose from {sorted(configs)}")
    return configs[name]


def build_model(name: str, label_names: Sequence[str], seed: int) -> Any:
    """A random-initialised `*ForImageClassification` model (seeded) for the given classes."""
    from transformers import AutoModelForImageClassification

    id2label = dict(enumerate(label_names))
    factory = model_config(name)
    if factory is None:
        return demo_model(len(label_names), seed, id2label=id2label)
    config = factory()
    config.num_labels = len(label_names)
    config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}
    torch.manual_seed(seed)
    return AutoModelForImageClassification.from_config(config)


@dataclass(frozen=True)
class Width:
    """One ResNet backbone of the paper's re-test and the number of concepts M its loss uses."""

    name: str
    layer_type: str
    embedding_size: int
    hidden_sizes: tuple[int, ...]
    num_concepts: int

    @property
    def dim(self) -> int:
        return self.hidden_sizes[-1]


def build_resnet(width: Width, names: Sequence[str], seed: int) -> Any:
    """A random-initialised transformers ResNet of `width` for 32 x 32 inputs (seeded)."""
    from transformers import AutoModelForImageClassification, ResNetConfig

    # transformers 5's config signature omits num_labels, which its __init__ still takes (4.x lists it)
    config = ResNetConfig(  # type: ignore[call-arg]
        embedding_size=width.embedding_size,
        hidden_sizes=list(width.hidden_sizes),
        depths=[1] * len(width.hidden_sizes),
        layer_type=width.layer_type,
        downsample_in_first_stage=False,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    torch.manual_seed(seed)
    return AutoModelForImageClassification.from_config(config)


def copy_model(model: Any) -> Any:
    """An independent copy (same class, config and weights)."""
    clone = type(model)(model.config)
    clone.load_state_dict(model.state_dict())
    return clone


def with_new_classifier(model: Any, fresh: Any) -> Any:
    """`model`'s weights in `fresh` (a newly built model for the new classes), all but its
    classifier, which keeps `fresh`'s seeded initialisation: what `from_pretrained(...,
    ignore_mismatched_sizes=True)` does for a new head.

    (The data sets here all have 10 classes, so the sizes match and transformers would keep the old
    head; the classifier is therefore rebuilt explicitly.)
    """
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    missing, unexpected = fresh.load_state_dict(kept, strict=False)
    if unexpected or not missing or not all(k.startswith("classifier.") for k in missing):
        raise ValueError(f"unexpected weights when replacing the classifier: {missing=} {unexpected=}")
    return fresh.eval()
