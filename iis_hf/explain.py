"""Predictions made from interpretations, and explanations of them (the paper's application 2).

`ConceptClassifier` predicts with an interpretation head instead of the backbone's classifier:
representation -> concept activations -> LayerNorm -> sparsification -> linear. It wraps an
`IISModelForImageClassification` (from `IISTrainer` or `from_pretrained`), or any backbone with the
`InterpretationHeads` that `compute_iis(..., return_heads=True)` trained on its features.

`explain` breaks one prediction down by concept. The interpretation logit of class k is

    logit_k = bias_k + sum_c a_c * W[k, c]

where a is the sparse, normalised activation vector the head's classifier sees (concepts dropped by
sparsification have a_c = 0). The *contribution* of concept c is ``a_c * W[k, c]``: signed, and the
contributions of all concepts add up to the logit minus the bias. The top concepts are those with
the largest absolute contribution.

A contribution's sign alone does not say whether the image *resembles* the concept: a large positive
contribution can be a negative activation times a negative weight ("the image is unlike this
concept, and being unlike it counts for the class"). So each listed concept carries the signs of its
activation and of its weight, and is labelled "+ like NAME" (activation > 0: after LayerNorm, the
image's activation of the concept is above its average over concepts) or "- unlike NAME"
(activation < 0). The text summary and the figure show these labels.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .concepts import ConceptBank, FixedConcepts, LinearConcepts
from .config import DEFAULT_IIS_WEIGHT, ratio_index
from .images import load_image

IMAGE_TYPES_HELP = "a PIL image, an image file path, a numpy array, a list of those, or a datasets.Dataset"


def check_png_name(path: str | os.PathLike) -> None:
    """Figures are written as PNG: refuse a name that says otherwise (``figure.jpg``)."""
    suffix = os.path.splitext(os.fspath(path))[1]
    if suffix.lower() not in ("", ".png"):
        raise ValueError(
            f"{os.fspath(path)!r}: figures are written as PNG, so the file name must end in .png (got {suffix!r})"
        )


# ---------------------------------------------------------------------------- images
def _is_single_image(images) -> bool:
    from PIL import Image

    if isinstance(images, (Image.Image, str, os.PathLike)):
        return True
    return hasattr(images, "__array__") and getattr(images, "ndim", 0) in (2, 3)


def _prepare_images(images):
    """(images for extract_features, whether a single image was given)."""
    from datasets import Dataset

    if isinstance(images, Dataset):
        return images, False
    single = _is_single_image(images)
    items = [images] if single else images
    if not isinstance(items, Sequence) or isinstance(items, (bytes, str)):
        raise ValueError(f"images must be {IMAGE_TYPES_HELP}; got {type(images).__name__}")
    if len(items) == 0:
        raise ValueError("no images given")
    prepared = [load_image(item) if isinstance(item, (str, os.PathLike)) else item for item in items]
    return prepared, single


# ---------------------------------------------------------------------------- the classifier
class ConceptClassifier:
    """Predict labels from an interpretation head, like an image-classification pipeline.

    Args:
        model: an `IISModelForImageClassification` (its backbone's classifier input is the
            representation, and its heads and concept bank are used), or a path / Hub id of one.
        image_processor: defaults to the one saved with the backbone.

    Use `ConceptClassifier.from_heads(backbone, heads, concepts)` for heads trained by
    `compute_iis(..., return_heads=True)` on `extract_features(backbone, ...)`.
    """

    def __init__(self, model, image_processor=None):
        from .modeling import IISModelForImageClassification

        if isinstance(model, (str, os.PathLike)):
            model = IISModelForImageClassification.from_pretrained(model)
        if not isinstance(model, IISModelForImageClassification):
            raise TypeError(
                f"model must be an IISModelForImageClassification (or its folder); got {type(model).__name__}. "
                "For heads from compute_iis use ConceptClassifier.from_heads(backbone, heads, concepts)."
            )
        self._setup(
            backbone=model.backbone,
            heads=model.iis_head,
            concepts=model.concept_bank,
            image_processor=image_processor,
            id2label=getattr(model.config, "id2label", None),
            layer=None,
            pooling="default",
        )

    @classmethod
    def from_heads(
        cls,
        backbone,
        heads,
        concepts: ConceptBank | None = None,
        *,
        image_processor=None,
        id2label=None,
        layer: int | None = None,
        pooling: str = "default",
    ) -> ConceptClassifier:
        """A classifier from any backbone and the interpretation heads trained on its features.

        Args:
            backbone: the vision model (instance, Hub id or folder) the heads' features came from.
            heads: the `InterpretationHeads` (``compute_iis(..., return_heads=True).heads``), or the
                `IISResult` holding them.
            concepts: the `ConceptBank` the heads were trained on (names, sources, thumbnails);
                checked against the heads' projection. Without it concepts are named "concept i".
            id2label: class names, a dict {id: name} or a list (default: the backbone's config when
                it has one name per class, else "LABEL_i").
            layer, pooling: as given to `extract_features` when the heads' features were extracted.
        """
        from .features import load_vision_model
        from .heads import InterpretationHeads

        if hasattr(heads, "heads") and not isinstance(heads, InterpretationHeads):  # an IISResult
            if heads.heads is None:
                raise ValueError("this IISResult holds no heads: run compute_iis(..., return_heads=True)")
            heads = heads.heads
        if not isinstance(heads, InterpretationHeads):
            raise TypeError(f"heads must be InterpretationHeads or an IISResult, got {type(heads).__name__}")
        if isinstance(backbone, (str, os.PathLike)):
            backbone = load_vision_model(str(backbone))
        if id2label is None:  # as documented: the backbone's class names
            id2label = getattr(getattr(backbone, "config", None), "id2label", None)
        self = cls.__new__(cls)
        self._setup(backbone, heads, concepts, image_processor, id2label, layer, pooling)
        return self

    def _setup(self, backbone, heads, concepts, image_processor, id2label, layer, pooling) -> None:
        from .features import load_image_processor

        if concepts is not None:
            check_heads_match_bank(heads, concepts)
        self.backbone = backbone
        self.heads = heads.eval()
        self.concepts = concepts
        self.image_processor = load_image_processor(backbone, image_processor)
        self.layer, self.pooling = layer, pooling
        self.id2label = label_names(id2label, self.num_classes)

    @property
    def num_classes(self) -> int:
        return int(self.heads.weight.shape[1])

    @property
    def sparsity_ratios(self) -> list[float]:
        return list(self.heads.sparsity_ratios)

    @property
    def concept_names(self) -> list[str]:
        if self.concepts is not None:
            return list(self.concepts.names)
        return [f"concept {i}" for i in range(self.heads.num_concepts)]

    def ratio_index(self, sparsity_ratio: float | None) -> int:
        """Index of the head at `sparsity_ratio` (default: the last ratio the heads were trained at)."""
        return ratio_index(self.sparsity_ratios, sparsity_ratio)

    # -- computing ---------------------------------------------------------------------------------
    def representations(
        self, images, *, batch_size: int = 32, image_column: str | None = None
    ) -> torch.Tensor:
        """(N, D) representations, exactly as `extract_features` gives them to `compute_iis`."""
        from .features import extract_features

        prepared, _single = _prepare_images(images)
        return extract_features(
            self.backbone,
            prepared,
            image_processor=self.image_processor,
            image_column=image_column,
            label_column=None,
            layer=self.layer,
            pooling=self.pooling,
            batch_size=batch_size,
            progress=False,
        ).features

    @torch.no_grad()
    def concept_logits(self, representations: torch.Tensor, sparsity_ratio: float | None = None):
        """(sparse activations (N, C), logits (N, K)) of the head at `sparsity_ratio`."""
        index = self.ratio_index(sparsity_ratio)
        device = self.heads.weight.device
        normalized = self.heads.normalize(representations.float().to(device))
        sparse = self.heads.concept_activations_normalized(normalized)[index]
        logits = sparse @ self.heads.weight[index].T + self.heads.bias[index]
        return sparse.cpu(), logits.cpu()

    def __call__(
        self,
        images,
        *,
        sparsity_ratio: float | None = None,
        top_k: int = 5,
        batch_size: int = 32,
        image_column: str | None = None,
    ):
        """Top-`top_k` labels with probabilities, per image, as the image-classification pipeline gives.

        Args:
            images: a PIL image or file path (-> one list of predictions), or a list of them / a
                `datasets.Dataset` (-> one list per image).
            sparsity_ratio: which head predicts (default: the last ratio the heads were trained at).

        Returns:
            ``[{"label": str, "score": float}, ...]`` sorted by score, or a list of such lists.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
        self.ratio_index(sparsity_ratio)  # fail before any image is processed
        prepared, single = _prepare_images(images)
        features = self.representations(prepared, batch_size=batch_size, image_column=image_column)
        _sparse, logits = self.concept_logits(features, sparsity_ratio)
        probabilities = logits.softmax(-1)
        k = min(top_k, self.num_classes)
        scores, indices = probabilities.topk(k, dim=-1)
        results = [
            [{"label": self.id2label[int(i)], "score": float(s)} for s, i in zip(row_s, row_i)]
            for row_s, row_i in zip(scores, indices)
        ]
        return results[0] if single else results

    @torch.no_grad()
    def backbone_predictions(self, images, *, top_k: int = 5):
        """The backbone's own classifier's top-`top_k` labels with probabilities, per image, in the form
        `__call__` gives the head's (a PIL image or path -> one list; a list of them -> one list per
        image), with the backbone's class names; None when the backbone has no classifier (a bare
        feature extractor given to `from_heads`). One more forward pass of the backbone."""
        from .images import load_image

        prepared, single = _prepare_images(images)
        model = self.backbone
        parameter = next(model.parameters(), None)
        encoded = self.image_processor(images=[load_image(item) for item in prepared], return_tensors="pt")
        pixel_values = torch.as_tensor(encoded["pixel_values"])
        if parameter is not None:
            pixel_values = pixel_values.to(parameter.device, parameter.dtype)
        was_training = model.training
        model.eval()
        try:
            logits = getattr(model(pixel_values=pixel_values, return_dict=True), "logits", None)
        finally:
            model.train(was_training)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            return None
        names = label_names(getattr(getattr(model, "config", None), "id2label", None), int(logits.shape[-1]))
        scores, indices = logits.float().softmax(-1).topk(min(top_k, int(logits.shape[-1])), dim=-1)
        results = [
            [{"label": names[int(i)], "score": float(s)} for s, i in zip(row_s.cpu(), row_i.cpu())]
            for row_s, row_i in zip(scores, indices)
        ]
        return results[0] if single else results


def label_names(id2label, num_classes: int) -> list[str]:
    """Class names by id: from a dict or list when it has exactly one name per class, else LABEL_i."""
    if isinstance(id2label, dict) and id2label:
        try:
            mapping = {int(k): str(v) for k, v in id2label.items()}
        except (TypeError, ValueError):
            mapping = {}
        if sorted(mapping) == list(range(num_classes)):
            return [mapping[i] for i in range(num_classes)]
    elif isinstance(id2label, (list, tuple)) and len(id2label) == num_classes:
        return [str(n) for n in id2label]
    return [f"LABEL_{i}" for i in range(num_classes)]


def check_heads_match_bank(heads, bank: ConceptBank) -> None:
    """Refuse a bank the heads were not trained on (its names would explain someone else's concepts)."""
    projection = heads.concepts
    if heads.num_concepts != bank.num_concepts:
        raise ValueError(
            f"the heads have {heads.num_concepts} concepts but the concept bank has {bank.num_concepts}: "
            "pass the bank the heads were trained on"
        )
    expected = bank.projection()
    same = type(projection) is type(expected)
    if same and isinstance(projection, FixedConcepts) and isinstance(expected, FixedConcepts):
        same = torch.equal(projection.vectors.cpu(), expected.vectors)
    elif same and isinstance(projection, LinearConcepts) and isinstance(expected, LinearConcepts):
        same = all(
            torch.equal(getattr(projection, k).cpu(), getattr(expected, k)) for k in ("weight", "mean", "std")
        )
    if not same:
        raise ValueError("the heads were trained on other concepts than this concept bank's")


def iis_model_from_heads(backbone, concepts: ConceptBank, heads, *, iis_weight: float = DEFAULT_IIS_WEIGHT):
    """An `IISModelForImageClassification` holding heads from `compute_iis(..., return_heads=True)`.

    Only valid when the heads were trained on `extract_features(backbone)` with the default layer
    and pooling of a `*ForImageClassification` backbone (its classifier input). The result can be
    saved with `save_pretrained` and explained with `iis-hf explain --model FOLDER`.
    """
    from .heads import InterpretationHeads
    from .modeling import IISModelForImageClassification

    if hasattr(heads, "heads") and not isinstance(heads, InterpretationHeads):
        heads = heads.heads
    if not isinstance(heads, InterpretationHeads):
        raise TypeError(
            f"heads must be InterpretationHeads or an IISResult with heads, got {type(heads).__name__}"
        )
    check_heads_match_bank(heads, concepts)
    num_labels = int(getattr(backbone.config, "num_labels", -1))
    if int(heads.weight.shape[1]) != num_labels:
        raise ValueError(
            f"the heads predict {int(heads.weight.shape[1])} classes but the backbone has {num_labels} labels"
        )
    model = IISModelForImageClassification(backbone, concepts, heads.sparsity_ratios, iis_weight=iis_weight)
    model.iis_head.load_state_dict({k: v.detach().cpu() for k, v in heads.state_dict().items()})
    return model.eval()


# ---------------------------------------------------------------------------- explanations
@dataclass
class ConceptContribution:
    """One concept's part in a prediction: ``contribution = activation * weight``."""

    index: int
    name: str
    activation: float
    weight: float
    contribution: float
    source: dict[str, Any] | None = None
    thumbnail: torch.Tensor | None = field(default=None, repr=False)

    @property
    def activation_sign(self) -> int:
        """+1, -1 or 0: the sign of the (normalised, sparse) activation."""
        return _sign(self.activation)

    @property
    def weight_sign(self) -> int:
        """+1, -1 or 0: the sign of the class weight."""
        return _sign(self.weight)

    @property
    def relation(self) -> str:
        """The word "like" when the activation is positive (the image activates the concept more than its
        average concept), "unlike" when it is negative. A picture of the concept's source (a prototype
        patch) shows what the image resembles only for "like"."""
        return "unlike" if self.activation < 0 else "like"

    @property
    def label(self) -> str:
        """The name with the sign of the activation: "+ like NAME" or "- unlike NAME"."""
        return f"{'-' if self.activation < 0 else '+'} {self.relation} {self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "activation": self.activation,
            "weight": self.weight,
            "contribution": self.contribution,
            "source": self.source,
            "activation_sign": self.activation_sign,
            "weight_sign": self.weight_sign,
            "relation": self.relation,
            "label": self.label,
        }


def _sign(value: float) -> int:
    return 1 if value > 0 else -1 if value < 0 else 0


@dataclass
class Explanation:
    """Why the interpretation head predicted `label`.

    Attributes:
        label, index: the predicted class.
        probability: its softmax probability under the head.
        logit: its interpretation logit; ``logit == bias + sum(contributions)``.
        bias: the head's bias for that class.
        sparsity_ratio: the head's ratio.
        concepts: the `top_k` active concepts with the largest |contribution|, largest first
            (concepts dropped by sparsification contribute 0 and are never listed); each carries
            the signs of its activation and weight, and its label "+ like NAME" or "- unlike NAME".
        contributions: the contribution of every concept (C numbers, zero for dropped concepts).
        other_contribution: the sum of the contributions not in `concepts`.
        concept_kind: the bank's kind ("text", "prototype-patches", ...).
        num_active: concepts left after sparsification.
        top_predictions: the best few labels with their probabilities.
        backbone_predictions: the backbone's own classifier's best few labels with their
            probabilities (None when the backbone has no classifier), to set beside the head's.
        image: the input image (for `plot`; not serialised).
    """

    label: str
    index: int
    probability: float
    logit: float
    bias: float
    sparsity_ratio: float
    concepts: list[ConceptContribution]
    contributions: list[float]
    other_contribution: float
    concept_kind: str
    num_active: int
    top_predictions: list[dict[str, Any]]
    image: Any = field(default=None, repr=False)
    backbone_predictions: list[dict[str, Any]] | None = None

    @property
    def num_concepts(self) -> int:
        return len(self.contributions)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: everything but the image and the thumbnails."""
        return {
            "label": self.label,
            "index": self.index,
            "probability": self.probability,
            "logit": self.logit,
            "bias": self.bias,
            "sparsity_ratio": self.sparsity_ratio,
            "concept_kind": self.concept_kind,
            "num_concepts": self.num_concepts,
            "num_active": self.num_active,
            "concepts": [c.to_dict() for c in self.concepts],
            "other_contribution": self.other_contribution,
            "contributions": self.contributions,
            "top_predictions": self.top_predictions,
            "backbone_predictions": self.backbone_predictions,
        }

    def summary(self) -> str:
        """A few lines of plain text for a terminal."""
        lines = [
            f"predicted {self.label!r} (p = {self.probability:.3f}) from {self.num_active} of {self.num_concepts} "
            f"{self.concept_kind} concepts at sparsity {self.sparsity_ratio:g}",
        ]
        if self.backbone_predictions:
            top = self.backbone_predictions[0]
            lines.append(f"the backbone's own classifier predicts {top['label']!r} (p = {top['score']:.3f})")
        lines += [
            f"logit {self.logit:+.4f} = bias {self.bias:+.4f} + concepts {self.logit - self.bias:+.4f}",
            "top concepts (contribution = activation x class weight; "
            "'+ like': positive activation, '- unlike': negative activation):",
        ]
        for c in self.concepts:
            lines.append(f"  {c.contribution:+9.4f} = {c.activation:+.3f} x {c.weight:+.3f}  {c.label}")
        lines.append(f"  {self.other_contribution:+9.4f}   all other concepts")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def plot(self, path: str | os.PathLike, title: str | None = None) -> None:
        """Save a PNG: the image, and the top concepts as signed bars (with source thumbnails if any),
        each named by its label ("+ like NAME" / "- unlike NAME"), so that the thumbnail of a concept
        the image is *unlike* is never read as a resemblance.

        The file name must end in .png (or have no extension): the figure is PNG, never mislabelled.
        """
        from .plotting import plot_explanation

        check_png_name(path)
        plot_explanation(self.labelled(), path, title=title)

    def labelled(self) -> Explanation:
        """A copy whose listed concepts are named by their signed labels (what the figure shows)."""
        concepts = [dataclasses.replace(c, name=c.label) for c in self.concepts]
        return dataclasses.replace(self, concepts=concepts)


def explain(
    model,
    image,
    *,
    sparsity_ratio: float | None = None,
    top_k: int = 8,
    image_processor=None,
) -> Explanation:
    """Explain the interpretation head's prediction for one image by its concepts.

    Args:
        model: an `IISModelForImageClassification` (or its folder / Hub id) or a `ConceptClassifier`.
        image: a PIL image, an image file path, or a numpy array.
        sparsity_ratio: which head (default: the last ratio the heads were trained at).
        top_k: how many concepts to list (largest |contribution| first).
        image_processor: overrides the backbone's saved processor (not for a ConceptClassifier).
    """
    classifier = model if isinstance(model, ConceptClassifier) else ConceptClassifier(model, image_processor)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    ratio_index = classifier.ratio_index(sparsity_ratio)
    if not _is_single_image(image):
        raise ValueError(
            f"explain takes one image (a PIL image, a file path or an array), got {type(image).__name__}"
        )
    prepared, _single = _prepare_images(image)
    features = classifier.representations(prepared)
    sparse, logits = classifier.concept_logits(features, classifier.sparsity_ratios[ratio_index])
    predicted = int(logits[0].argmax())

    heads = classifier.heads
    # float64 from here on, so that the contributions add up to the logit to float64 rounding.
    activations = sparse[0].double()
    weight = heads.weight[ratio_index].detach().cpu().double()
    bias = heads.bias[ratio_index].detach().cpu().double()
    class_logits = activations @ weight.T + bias
    probabilities = class_logits.softmax(-1)
    contributions = activations * weight[predicted] + 0.0  # + 0.0 turns -0.0 into 0.0
    active = [c for c in range(contributions.numel()) if activations[c] != 0]
    top = sorted(active, key=lambda c: (-abs(float(contributions[c])), c))[:top_k]

    bank = classifier.concepts
    names = classifier.concept_names
    items = []
    for c in top:
        items.append(
            ConceptContribution(
                index=c,
                name=names[c],
                activation=float(activations[c]),
                weight=float(weight[predicted, c]),
                contribution=float(contributions[c]),
                source=dict(bank.sources[c]) if bank is not None and bank.sources is not None else None,
                thumbnail=bank.thumbnails[c] if bank is not None and bank.thumbnails is not None else None,
            )
        )
    listed = set(top)
    others = [c for c in range(contributions.numel()) if c not in listed]
    ranked = probabilities.argsort(descending=True)[: min(5, classifier.num_classes)]
    return Explanation(
        label=classifier.id2label[predicted],
        index=predicted,
        probability=float(probabilities[predicted]),
        logit=float(class_logits[predicted]),
        bias=float(bias[predicted]),
        sparsity_ratio=classifier.sparsity_ratios[ratio_index],
        concepts=items,
        contributions=[float(v) for v in contributions],
        other_contribution=float(contributions[others].sum()) if others else 0.0,
        concept_kind=bank.kind if bank is not None else "custom",
        num_active=int((activations != 0).sum()),
        top_predictions=[
            {"label": classifier.id2label[int(i)], "score": float(probabilities[i])} for i in ranked
        ],
        image=prepared[0] if isinstance(prepared, list) else None,
        backbone_predictions=classifier.backbone_predictions(prepared[0]),
    )


explain_prediction = explain  # the name `iis_hf` exports (`iis_hf.explain` is this module)
