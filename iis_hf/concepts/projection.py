"""Concept projections: the module that turns (B, D) representations into (B, C) concept activations.

Fixed concepts (prototypes, clusters, custom vectors) project onto L2-normalised rows,
``a = x @ P.T``; a learned projection (text concepts) is a standardised linear map,
``a = (x @ W.T - mean) / std``. Both are buffers: nothing here is trained by the heads.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data_types import ConceptVectors

PROJECTION_TYPE = "linear-standardized"
PROJECTION_KEYS = ("weight", "mean", "std")


class ConceptProjection(nn.Module):
    """Maps (B, D) representations to (B, C) raw concept activations through a (C, D) matrix."""

    def matrix(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def num_concepts(self) -> int:
        return self.matrix().shape[0]

    @property
    def dim(self) -> int:
        return self.matrix().shape[1]

    def check_dim(self, representations: torch.Tensor) -> torch.Tensor:
        if representations.shape[-1] != self.dim:
            raise ValueError(
                f"representations have dimension {representations.shape[-1]} but the concepts have {self.dim}: "
                "the concept bank was built for another model (or another layer)"
            )
        return representations.to(self.matrix().dtype)


class FixedConcepts(ConceptProjection):
    """Activations ``x @ P.T`` for fixed concept rows P, L2-normalised here whatever the caller gave."""

    vectors: torch.Tensor  # a buffer: declared so the type checker knows it is a tensor

    def __init__(self, vectors: ConceptVectors):
        super().__init__()
        if isinstance(vectors, torch.Tensor):
            rows = vectors
        else:
            try:
                rows = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
            except (TypeError, ValueError) as err:
                raise ValueError(f"concepts must be a (C, D) array of numbers ({err})") from err
        if rows.ndim != 2 or rows.shape[0] < 1:
            raise ValueError(f"concepts must be a (C, D) array, got shape {tuple(rows.shape)}")
        rows = rows.detach().float()
        if not torch.isfinite(rows).all():
            raise ValueError("concept vectors contain NaN or inf")
        if (rows.norm(dim=1) == 0).any():
            raise ValueError("a concept vector is all zeros and cannot be normalised; remove it")
        self.register_buffer("vectors", normalize_rows(rows))

    def matrix(self) -> torch.Tensor:
        return self.vectors

    def forward(self, representations: torch.Tensor) -> torch.Tensor:
        return self.check_dim(representations) @ self.vectors.T


class LinearConcepts(ConceptProjection):
    """Standardised activations ``(x @ W.T - mean) / std`` of a learned projection (text concepts).

    Unlike `FixedConcepts` the rows of W are *not* normalised: W, mean and std were fitted together
    (`iis_hf.text_concepts`), so that each activation has mean 0 and standard deviation 1 over the
    probe images it was fitted on. All three are buffers, never trainable parameters.
    """

    # buffers: declared so the type checker knows they are tensors
    weight: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, weight: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        weight, mean, std = check_projection_state({"weight": weight, "mean": mean, "std": std})
        self.register_buffer("weight", weight)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def matrix(self) -> torch.Tensor:
        return self.weight

    def forward(self, representations: torch.Tensor) -> torch.Tensor:
        return (self.check_dim(representations) @ self.weight.T - self.mean) / self.std


def check_projection_state(state: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate a learned projection: weight (C, D), mean (C,), std (C,) > 0, all finite."""
    if not isinstance(state, dict) or set(state) != set(PROJECTION_KEYS):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"a concept projection needs exactly the tensors {list(PROJECTION_KEYS)}, got {found}"
        )
    weight, mean, std = (
        torch.as_tensor(np.asarray(state[k]) if not torch.is_tensor(state[k]) else state[k]).detach().float()
        for k in PROJECTION_KEYS
    )
    if weight.ndim != 2 or weight.shape[0] < 1:
        raise ValueError(f"projection weight must be a (C, D) array, got shape {tuple(weight.shape)}")
    num_concepts = weight.shape[0]
    if tuple(mean.shape) != (num_concepts,) or tuple(std.shape) != (num_concepts,):
        raise ValueError(
            f"projection mean and std must have shape ({num_concepts},), got {tuple(mean.shape)} and "
            f"{tuple(std.shape)}"
        )
    if not all(torch.isfinite(t).all() for t in (weight, mean, std)):
        raise ValueError("the concept projection contains NaN or inf")
    if not (std > 0).all():
        raise ValueError("the concept projection's std must be > 0 for every concept")
    return weight, mean, std


def normalize_rows(vectors: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows; rows already of unit norm are kept bit-for-bit, so save/load is exact."""
    norms = vectors.norm(dim=1, keepdim=True)
    if torch.allclose(norms, torch.ones_like(norms), rtol=0, atol=1e-6):
        return vectors
    return vectors / norms
