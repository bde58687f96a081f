"""Interpretation heads: concept activations -> LayerNorm -> sparsification -> linear classifier.

`InterpretationHead` is steps 1-5 of the method for one sparsity ratio. `InterpretationHeads` holds
one head per ratio *stacked* into batched tensors, so all ratios train in one pass over the data:
the concept projection and the LayerNorm statistics are shared (they do not depend on the ratio),
and because Adam updates each parameter element on its own, a stacked head follows exactly the
trajectory it would follow if it were trained alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..concepts import LearnedConcepts, as_concept_projection
from ..concepts.bank import ConceptsLike
from ..config import ratio_index, validate_sparsity_ratios
from .sparsify import kth_smallest, sparsify, sparsify_stacked

LAYER_NORM_EPS = 1e-5


def uniform_init_(tensor: torch.Tensor, fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from an explicit generator."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    with torch.no_grad():
        tensor.copy_((torch.rand(tensor.shape, generator=generator) * 2.0 - 1.0) * bound)
    return tensor


INIT_SCHEMES = ("uniform", "trunc_normal")


def init_linear_(weight: torch.Tensor, bias: torch.Tensor, scheme: str, generator: torch.Generator) -> None:
    """Initialise a linear layer's (weight, bias) from `generator`.

    "uniform": PyTorch's default, U(+-1/sqrt(fan_in)) for both (iis-hf's default protocol);
    "trunc_normal": weight ~ N(0, 0.02) truncated to [-2, 2], bias 0 (the published code's init).
    """
    if scheme == "uniform":
        uniform_init_(weight, weight.shape[-1], generator)
        uniform_init_(bias, weight.shape[-1], generator)
    elif scheme == "trunc_normal":
        with torch.no_grad():
            nn.init.trunc_normal_(weight, std=0.02, a=-2.0, b=2.0, generator=generator)
            bias.zero_()
    else:
        raise ValueError(f"init must be one of {INIT_SCHEMES}, got {scheme!r}")


def ratio_seed(seed: int, sparsity_ratio: float) -> int:
    """A seed that depends on the seed and the ratio only, not on the rest of the grid.

    This is what makes a head initialised inside a stack identical to the same head built alone.
    """
    return seed * 1_000_003 + round(sparsity_ratio * 1_000_000)


def ratio_generator(seed: int, sparsity_ratio: float) -> torch.Generator:
    return torch.Generator().manual_seed(ratio_seed(seed, sparsity_ratio))


class InterpretationHead(nn.Module):
    """Predict from the strongest concepts of a representation (steps 1-5 of docs/METHOD.md).

    Args:
        concepts: a `ConceptBank` or a (C, D) array of concept vectors (rows are L2-normalised here).
        num_classes: number of output classes.
        sparsity_ratio: fraction rho of concepts dropped per sample, in [0, 1).
    """

    def __init__(self, concepts: ConceptsLike, num_classes: int, sparsity_ratio: float = 0.0):
        super().__init__()
        if not 0.0 <= float(sparsity_ratio) < 1.0:
            raise ValueError(f"sparsity_ratio must be in [0, 1), got {sparsity_ratio}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.concepts = as_concept_projection(concepts)
        self.sparsity_ratio = float(sparsity_ratio)
        self.norm = nn.LayerNorm(self.concepts.num_concepts, eps=LAYER_NORM_EPS)
        self.classifier = nn.Linear(self.concepts.num_concepts, int(num_classes))

    @property
    def num_concepts(self) -> int:
        return self.concepts.num_concepts

    def concept_activations(self, representations: torch.Tensor) -> torch.Tensor:
        """The sparse, normalised concept activations the classifier sees (B, C)."""
        activations = self.norm(self.concepts(representations))
        return sparsify(activations, self.sparsity_ratio)

    def forward(self, representations: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.concept_activations(representations))


class InterpretationHeads(nn.Module):
    """One interpretation head per sparsity ratio, stacked so that all ratios run in one pass.

    The input of each batch can be the representations (`forward`) or, when the concept projection
    is fixed, activations already projected and normalised once for the whole data set
    (`forward_normalized`): this is what makes scoring cost little more than reading the features.
    """

    ks_index: torch.Tensor  # a buffer: declared so the type checker knows it is a tensor

    def __init__(
        self,
        concepts: ConceptsLike,
        num_classes: int,
        sparsity_ratios: Sequence[float],
        seed: int = 0,
        init: str = "uniform",
        threshold_gradient: bool = False,
    ):
        super().__init__()
        ratios = validate_sparsity_ratios(sparsity_ratios)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        projection = as_concept_projection(concepts)
        if isinstance(projection, LearnedConcepts):  # an independent selection per ratio
            projection = projection.for_heads([ratio_seed(seed, r) + 17 for r in ratios])
        self.concepts = projection
        num_concepts = self.concepts.num_concepts
        self.sparsity_ratios = ratios
        self.ks = [int(num_concepts * r) for r in ratios]
        # The same ks on the module's device, for the accelerator's stacked selection (not saved).
        self.register_buffer("ks_index", torch.tensor(self.ks, dtype=torch.long), persistent=False)
        self.norm_weight = nn.Parameter(torch.ones(len(ratios), num_concepts))
        self.norm_bias = nn.Parameter(torch.zeros(len(ratios), num_concepts))
        self.weight = nn.Parameter(torch.empty(len(ratios), int(num_classes), num_concepts))
        self.bias = nn.Parameter(torch.empty(len(ratios), int(num_classes)))
        for i, ratio in enumerate(ratios):
            init_linear_(self.weight.data[i], self.bias.data[i], init, ratio_generator(seed, ratio))
        # Training only: pass the published half gradient through each threshold element.
        self.threshold_gradient = bool(threshold_gradient)

    @property
    def num_concepts(self) -> int:
        return self.concepts.num_concepts

    def normalize(self, representations: torch.Tensor) -> torch.Tensor:
        """Project onto the concepts and apply LayerNorm's normalisation (without its affine)."""
        return F.layer_norm(self.concepts(representations), (self.num_concepts,), eps=LAYER_NORM_EPS)

    @property
    def trainable_concepts(self) -> bool:
        return any(p.requires_grad for p in self.concepts.parameters())

    def concept_activations_normalized(self, normalized: torch.Tensor) -> torch.Tensor:
        """(B, C) normalised activations (or (R, B, C), one set per ratio, from learned concepts)
        -> (R, B, C) sparse activations, one slice per ratio."""
        if normalized.dim() == 2:
            normalized = normalized.unsqueeze(0)
        affine = normalized * self.norm_weight.unsqueeze(1) + self.norm_bias.unsqueeze(1)
        ks = self.ks if affine.device.type == "cpu" else self.ks_index
        return sparsify_stacked(affine, ks, threshold_gradient=self.threshold_gradient)

    def classify(self, sparse: torch.Tensor) -> torch.Tensor:
        """(R, B, C) sparse activations -> (R, B, num_classes) logits."""
        return torch.baddbmm(self.bias.unsqueeze(1), sparse, self.weight.transpose(1, 2))

    def forward_normalized(self, normalized: torch.Tensor) -> torch.Tensor:
        """(B, C) normalised activations -> (R, B, num_classes) logits."""
        return self.classify(self.concept_activations_normalized(normalized))

    def forward(self, representations: torch.Tensor) -> torch.Tensor:
        """(B, D) representations -> (R, B, num_classes) logits."""
        return self.forward_normalized(self.normalize(representations))

    @torch.no_grad()
    def predict_normalized(self, normalized: torch.Tensor) -> torch.Tensor:
        """(B, C) or (R, B, C) normalised activations -> (R, B) predicted classes.

        Inference only: one ratio at a time, in place, so the working set stays in cache (evaluating
        the whole (R, B, C) stack at once is memory-bound and measured several times slower).
        """
        predictions = []
        for r, k in enumerate(self.ks):
            z = normalized if normalized.dim() == 2 else normalized[r]
            activations = torch.addcmul(self.norm_bias[r], z, self.norm_weight[r])
            magnitude = activations.abs()
            activations.masked_fill_(magnitude <= kth_smallest(magnitude, k), 0.0)
            predictions.append(torch.addmm(self.bias[r], activations, self.weight[r].T).argmax(-1))
        return torch.stack(predictions)

    def head(self, sparsity_ratio: float) -> InterpretationHead:
        """A standalone `InterpretationHead` with the trained parameters of one ratio."""
        index = ratio_index(self.sparsity_ratios, sparsity_ratio)
        concepts: ConceptsLike = self.concepts
        if isinstance(self.concepts, LearnedConcepts):  # freeze this ratio's selection
            concepts = self.concepts.selected_bank(index)
        single = InterpretationHead(concepts, self.weight.shape[1], sparsity_ratio)
        with torch.no_grad():
            single.norm.weight.copy_(self.norm_weight[index])
            single.norm.bias.copy_(self.norm_bias[index])
            single.classifier.weight.copy_(self.weight[index])
            single.classifier.bias.copy_(self.bias[index])
        return single


class LinearProbe(nn.Module):
    """The standard head: a linear classifier on standardised representations (A0 of the IIS).

    Standardising with the train mean/std lets Adam converge in the same budget as the heads,
    whose LayerNorm does the same job; an unconverged probe inflates IIS (docs/METHOD.md). The
    published probe reads raw representations: pass mean 0 and std 1 (and ``init="trunc_normal"``).
    """

    # buffers: declared so the type checker knows they are tensors
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, mean: torch.Tensor, std: torch.Tensor, num_classes: int, seed: int = 0, init: str = "uniform"
    ):
        super().__init__()
        dim = mean.numel()
        self.register_buffer("mean", mean.reshape(1, dim).float())
        self.register_buffer("std", std.reshape(1, dim).float())
        self.classifier = nn.Linear(dim, int(num_classes))
        generator = torch.Generator().manual_seed(seed * 1_000_003 + 999_999_937)
        init_linear_(self.classifier.weight.data, self.classifier.bias.data, init, generator)

    def forward(self, representations: torch.Tensor) -> torch.Tensor:
        return self.classifier((representations.float() - self.mean) / self.std)
