"""Which vector is "the representation" of an image, for any Hugging Face vision model.

Loading (a Hub id or local folder, never remote code; a CLIP checkpoint gives its vision tower),
the image processor that goes with a model, and `pooled_representation`: the one place that turns a
forward pass into (B, D) features. `capture_classifier_input` gives logits and the representation
from one forward, which fine-tuning with an interpretation head needs.

What "the representation" is (``layer=None, pooling="default"``):

* a `*ForImageClassification` model: exactly the input of ``model.classifier`` (a forward pre-hook,
  ``inputs[0].flatten(1)``), i.e. the feature the trained classifier sees: ViT/DeiT the post-LayerNorm
  CLS token, DINOv2 concat(CLS, mean of patch tokens), CLIPForImageClassification the mean of the patch
  tokens, ResNet the flattened global pool, ConvNeXt/Swin their pooled output;
* a bare backbone: ``pooler_output.flatten(1)`` when the model has one, else ``last_hidden_state[:, 0]``
  for token outputs and the mean over (H, W) for 4-D feature maps. `CLIPVisionModel` (and the vision
  tower of a full `CLIPModel`) gives the post-LayerNorm CLS token.

Other choices: ``pooling="cls"`` / ``"mean"`` with ``layer=None`` pool the backbone's
``last_hidden_state`` (token 0, or the mean over all tokens / over (H, W) of a map); ``layer=k`` pools
``hidden_states[k]`` (0 = embeddings, negative indices count from the end). ``"default"`` pooling of a
hidden state is the CLS token for token sequences and the spatial mean for maps; models whose tokens
carry no CLS token (Swin and its relatives: detected by the absence of a ``cls_token`` /
``class_embedding`` parameter) use the mean, and ``pooling="cls"`` is refused for them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..config import POOLINGS
from ..errors import first_line
from ..preflight import TIMM_MESSAGE, PreflightError, check_timm_installed, is_timm_config

_CLS_PARAMETER_SUFFIXES = ("cls_token", "class_embedding", "class_token")
# Config entries that name where a model came from rather than what it computes.
_VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "_commit_hash", "_attn_implementation")


def load_vision_model(name_or_path: str, **kwargs) -> Any:
    """Load a vision model from a Hub id or a local `save_pretrained` folder, in eval mode.

    A checkpoint whose ``config.architectures`` names an image-classification class is loaded with
    `AutoModelForImageClassification` (so its trained classifier, and the feature it reads, are kept);
    anything else with `AutoModel`. A full `CLIPModel` (or another model with a ``vision_model`` tower)
    gives its vision tower. Remote code is never trusted. ``kwargs`` go to ``from_pretrained``.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    if kwargs.pop("trust_remote_code", False):
        raise ValueError("iis-hf never runs remote code: trust_remote_code=True is not accepted")
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"expected a model name or folder, got {type(name_or_path).__name__}")
    name_or_path = str(name_or_path)
    hub_keys = ("revision", "token", "cache_dir", "local_files_only", "subfolder", "force_download")
    config_kwargs = {k: kwargs[k] for k in hub_keys if k in kwargs}
    check_timm_folder(name_or_path)
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False, **config_kwargs)
    except ImportError as err:  # a timm checkpoint from the Hub: TimmWrapperConfig needs timm
        if "timm" in str(err):
            raise PreflightError(f"model {name_or_path!r}: {TIMM_MESSAGE}") from None
        raise
    except OSError as err:
        raise ValueError(
            f"cannot load a model from {name_or_path!r}: it is neither a local folder with a config.json "
            f"nor a reachable Hugging Face Hub model id ({first_line(err)})"
        ) from err

    classification_names: set[str] = set()
    for value in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.values():
        classification_names.update([value] if isinstance(value, str) else value)
    architectures = getattr(config, "architectures", None) or []
    classifies = any(arch in classification_names for arch in architectures)
    auto_class = AutoModelForImageClassification if classifies else AutoModel
    try:
        model = auto_class.from_pretrained(name_or_path, config=config, trust_remote_code=False, **kwargs)
    except OSError as err:
        raise ValueError(f"cannot load model weights from {name_or_path!r} ({first_line(err)})") from err
    except ValueError as err:
        raise ValueError(
            f"{name_or_path!r} ({type(config).__name__}) is not a model iis-hf can load as a vision "
            f"model: {err}"
        ) from err
    return as_vision_model(model).eval()


def check_timm_folder(name_or_path: str) -> None:
    """A local folder in the Hub's timm layout loads through transformers' `TimmWrapperModel`,
    which needs timm: without it, say so in one line (not transformers' ImportError)."""
    path = os.path.join(os.path.expanduser(name_or_path), "config.json")
    if not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return  # transformers names a damaged config itself
    if is_timm_config(config):
        check_timm_installed(f"model {name_or_path}")


def as_vision_model(model: nn.Module) -> nn.Module:
    """Return `model` itself when it takes ``pixel_values``, or its vision tower (e.g. `CLIPModel`).

    Raises ValueError for a model that cannot see images (a text model, for instance).
    """
    if getattr(model, "main_input_name", None) == "pixel_values":
        return model
    tower = getattr(model, "vision_model", None)
    if isinstance(tower, nn.Module) and getattr(tower, "main_input_name", None) == "pixel_values":
        tower_name = getattr(tower, "name_or_path", "") or ""
        model_name = getattr(model, "name_or_path", "") or ""
        if model_name and not tower_name:
            # torch types nn.Module.__setattr__ for tensors and modules only; it stores any value
            tower.name_or_path = model_name  # type: ignore[assignment]
            tower_config = getattr(tower, "config", None)  # a transformers model: its config names it
            if tower_config is not None:
                tower_config._name_or_path = model_name
        return tower
    raise ValueError(
        f"{type(model).__name__} ({getattr(model, 'name_or_path', '') or 'no name'}) is not a vision model: "
        f"its main input is {getattr(model, 'main_input_name', None)!r}, not 'pixel_values', and it has no "
        "vision tower (`vision_model`). Pass an image model such as a ViT, ResNet, ConvNeXt, Swin, DINOv2 "
        "or CLIP checkpoint."
    )


def load_image_processor(model: nn.Module, image_processor: Any = None) -> Any:
    """The image processor to use: `image_processor` when given, else the one saved with the model.

    A multimodal processor (e.g. `CLIPProcessor`) is accepted; its image processor is used.
    """
    if image_processor is None:
        from transformers import AutoImageProcessor

        name = getattr(model, "name_or_path", "") or getattr(
            getattr(model, "config", None), "_name_or_path", ""
        )
        if not name:
            raise ValueError(
                f"cannot find an image processor for this {type(model).__name__}: it was not loaded from a "
                "folder or Hub id. Pass image_processor=AutoImageProcessor.from_pretrained(...) (or any "
                "image processor instance)."
            )
        try:
            image_processor = AutoImageProcessor.from_pretrained(name, trust_remote_code=False)
        except ImportError as err:  # TimmWrapperImageProcessor needs timm
            if "timm" in str(err):
                raise PreflightError(f"image processor of {name!r}: {TIMM_MESSAGE}") from None
            raise
        except (OSError, ValueError) as err:
            raise ValueError(
                f"cannot load an image processor from {name!r} ({first_line(err)}). "
                "Pass image_processor= explicitly."
            ) from err
    inner = getattr(image_processor, "image_processor", None)
    if inner is not None:
        image_processor = inner
    if not callable(image_processor):
        raise TypeError(f"image_processor must be callable (an image processor), got {type(image_processor)}")
    return image_processor


# What prepared the pixel values: transformers' image processors come in a PIL/NumPy backend and a
# torchvision one, picked by whether torchvision is installed; their pixel values differ (up to 2/255),
# and so do the features and the IIS. Both are recorded (iis.json, the feature-cache key).
PIL_BACKEND, TORCHVISION_BACKEND = "pil", "torchvision"
_TORCHVISION_BASES = ("TorchvisionBackend", "BaseImageProcessorFast")  # transformers 5 / 4


def processor_backend(image_processor: Any) -> str:
    """The backend: "pil" or "torchvision" for a transformers image processor; else its class name
    (a custom callable prepares images its own way, which is recorded as such).

    transformers >= 5 says it (``processor.backend``); before, the torchvision processors were the
    ``*Fast`` classes (`BaseImageProcessorFast`) and every other `BaseImageProcessor` used PIL/NumPy.
    """
    image_processor = getattr(image_processor, "image_processor", None) or image_processor
    backend = getattr(image_processor, "backend", None)  # transformers >= 5
    if isinstance(backend, str) and backend:
        return backend
    bases = [cls.__name__ for cls in type(image_processor).__mro__]
    if any(name in _TORCHVISION_BASES for name in bases):
        return TORCHVISION_BACKEND
    if "BaseImageProcessor" in bases:
        return PIL_BACKEND
    return type(image_processor).__name__


def library_versions() -> dict[str, str | None]:
    """The versions of the libraries that turn images into features (None: not installed)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in ("torch", "transformers", "torchvision"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def preprocessing_environment(image_processor: Any) -> dict[str, Any]:
    """What made the pixel values and features, for a record: the image processor's class and
    backend (`processor_backend`) and `library_versions`."""
    inner = getattr(image_processor, "image_processor", None) or image_processor
    return {
        "image_processor_backend": processor_backend(inner),
        "image_processor_class": type(inner).__name__,
        "versions": library_versions(),
    }


# --------------------------------------------------------------------------------------------------
# The pooled representation


class _Holder:
    """Filled by `capture_classifier_input`: ``value`` is the classifier's (B, D) input."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None


# Where image-classification models keep the layer that turns the representation into logits.
CLASSIFIER_NAMES = ("classifier", "cls_classifier", "head", "fc", "score")


@contextlib.contextmanager
def capture_classifier_input(model: nn.Module, representation_module: str | None = None) -> Iterator[_Holder]:
    """Record what the model's classifier receives during forwards run inside the ``with`` block.

    ``holder.value`` is ``inputs[0].flatten(1)`` of the latest forward (gradients flow through it), so
    one forward gives both the logits and the representation::

        with capture_classifier_input(model) as holder:
            logits = model(pixel_values).logits
        features = holder.value

    The classifier is found by `classifier_name`; `representation_module` names another submodule
    whose input is the representation (``model.get_submodule(name)``).
    """
    name = classifier_name(model, representation_module)
    if name is None:
        raise ValueError(
            f"{type(model).__name__} has no classifier layer iis-hf recognises (a submodule named "
            f"{', '.join(CLASSIFIER_NAMES)}, or a timm model's get_classifier()): name the submodule whose "
            "input is the representation with representation_module= (e.g. 'head')"
        )
    holder = _Holder()

    def hook(_module, inputs):
        holder.value = inputs[0].flatten(1)

    handle = model.get_submodule(name).register_forward_pre_hook(hook)
    try:
        yield holder
    finally:
        handle.remove()


def classifier_name(model: nn.Module, representation_module: str | None = None) -> str | None:
    """The name of the submodule whose input is the representation, or None for a bare backbone.

    In order: `representation_module` when given; the first of `CLASSIFIER_NAMES` that is a module
    ending in a linear layer with ``config.num_labels`` outputs (``classifier`` of most models,
    ``cls_classifier`` of DeiT with a teacher, ``head`` of SwiftFormer and PP-LCNet, ``score`` of
    ImageGPT); a timm model's ``get_classifier()`` (`TimmWrapperForImageClassification`).
    """
    if representation_module:
        try:
            model.get_submodule(representation_module)
        except AttributeError as err:
            raise ValueError(
                f"representation_module={representation_module!r} is not a submodule of {type(model).__name__}"
            ) from err
        return representation_module
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    for name in CLASSIFIER_NAMES:
        module = getattr(model, name, None)
        if isinstance(module, nn.Module) and _is_classifier(module, num_labels, name):
            return name
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None and callable(getattr(timm_model, "get_classifier", None)):
        head = timm_model.get_classifier()
        return next((f"timm_model.{n}" for n, m in timm_model.named_modules() if m is head and n), None)
    return None


def _is_classifier(module: nn.Module, num_labels: int | None, name: str) -> bool:
    """A layer that maps to the labels: its last Linear has `num_labels` outputs (an Identity named
    `classifier` when the model has no labels, as transformers builds it)."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if linears:
        return num_labels is None or linears[-1].out_features == num_labels
    return name == "classifier" and isinstance(module, nn.Identity)


def has_classifier(model: nn.Module, representation_module: str | None = None) -> bool:
    return classifier_name(model, representation_module) is not None


def classifier_input_dim(model: nn.Module, representation_module: str | None = None) -> int | None:
    """The representation's width when it can be read off the classifier (its first Linear layer)."""
    name = classifier_name(model, representation_module)
    if name is None:
        return None
    linears = [m for m in model.get_submodule(name).modules() if isinstance(m, nn.Linear)]
    return linears[0].in_features if linears else None


def backbone_of(model: nn.Module) -> nn.Module:
    """The module that returns ``last_hidden_state`` (the model itself for a bare backbone)."""
    base = getattr(model, "base_model", model)
    if base is model and has_classifier(model):
        tower = getattr(model, "vision_model", None)  # CLIPForImageClassification
        if isinstance(tower, nn.Module):
            return tower
    return base


def tokens_have_cls(model: nn.Module) -> bool:
    """Whether the model's token sequences start with a CLS token (ViT, DeiT, DINOv2, CLIP: yes; Swin: no)."""
    return any(name.endswith(_CLS_PARAMETER_SUFFIXES) for name, _ in model.named_parameters())


def pool_hidden_state(hidden: torch.Tensor, pooling: str = "default", has_cls: bool = True) -> torch.Tensor:
    """Pool one hidden state to (B, D): (B, L, C) tokens or (B, C, H, W) maps.

    ``"cls"``: token 0; ``"mean"``: mean over all tokens (CLS included) or over (H, W);
    ``"default"``: CLS for token sequences with a CLS token, the mean otherwise.
    """
    check_pooling(pooling)
    if hidden.dim() == 4:
        if pooling == "cls":
            raise ValueError(
                f"pooling='cls' needs a token sequence, but this hidden state is a {tuple(hidden.shape)} "
                "feature map; use pooling='mean' or 'default'"
            )
        return hidden.mean(dim=(2, 3))
    if hidden.dim() == 3:
        if pooling == "cls" and not has_cls:
            raise ValueError(
                "pooling='cls' is not meaningful here: this model's tokens have no CLS token (e.g. Swin); "
                "use pooling='mean' or 'default'"
            )
        if pooling == "mean" or (pooling == "default" and not has_cls):
            return hidden.mean(dim=1)
        return hidden[:, 0]
    if hidden.dim() == 2:
        return hidden
    raise ValueError(f"cannot pool a hidden state of shape {tuple(hidden.shape)}")


def pooled_representation(
    model: nn.Module, pixel_values: torch.Tensor, layer: int | None = None, pooling: str = "default"
) -> torch.Tensor:
    """Run `model` on `pixel_values` and return the pooled (B, D) representation (see module docstring).

    This is the one place that decides what the representation is. It does not disable gradients or
    change the model's mode, so it can be used for training too.
    """
    check_pooling(pooling)
    check_layer_type(layer)
    if layer is not None:
        outputs = model(pixel_values=pixel_values, output_hidden_states=True, return_dict=True)
        hidden_states = getattr(outputs, "hidden_states", None)
        if not hidden_states:
            raise ValueError(f"{type(model).__name__} does not return hidden_states; use layer=None")
        count = len(hidden_states)
        if not -count <= layer < count:
            raise ValueError(
                f"layer={layer} is out of range: {type(model).__name__} returns {count} hidden states "
                f"(the embeddings and {count - 1} layers); use 0..{count - 1} or -{count}..-1, "
                "or layer=None for the final representation"
            )
        return pool_hidden_state(hidden_states[layer], pooling, tokens_have_cls(model)).flatten(1)
    if pooling == "default" and has_classifier(model):
        with capture_classifier_input(model) as holder:
            model(pixel_values=pixel_values, return_dict=True)
        if holder.value is None:
            raise ValueError(f"{type(model).__name__}.classifier was not called during the forward")
        return holder.value
    backbone = backbone_of(model) if has_classifier(model) else model
    outputs = backbone(pixel_values=pixel_values, return_dict=True)
    if pooling == "default":
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is not None:
            return pooled.flatten(1)
    hidden = getattr(outputs, "last_hidden_state", None)
    if hidden is None:
        raise ValueError(
            f"{type(backbone).__name__} returns neither pooler_output nor last_hidden_state; "
            "choose a hidden state with layer="
        )
    return pool_hidden_state(hidden, pooling, tokens_have_cls(backbone)).flatten(1)


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(map(repr, POOLINGS))}")


def check_layer_type(layer: Any) -> None:
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)):
        raise ValueError(f"layer must be None or an int index into hidden_states, got {layer!r}")


def model_digest(model: nn.Module) -> str:
    """sha256 over the model's config (minus where it came from) and every parameter and buffer's bytes."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        data = config.to_dict()
        for key in _VOLATILE_CONFIG_KEYS:
            data.pop(key, None)
        digest.update(json.dumps(data, sort_keys=True, default=str).encode())
    digest.update(type(model).__name__.encode())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        flat = tensor.to("cpu").contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()
