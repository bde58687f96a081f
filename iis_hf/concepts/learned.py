"""Learned concepts: C concepts each chosen from a prototype library, trained with the head.

Each concept is a row of a learnable selection matrix over the M library prototypes. In training
the choice is a straight-through Gumbel-softmax sample (temperature 0.1): the forward pass uses
exactly one prototype per concept, the backward pass sends gradients to every selection logit.
In evaluation each concept is the arg-max prototype, so a learned bank is an ordinary prototype
bank once trained (`LearnedConcepts.selected_bank`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..data_types import ConceptVectors
from .bank import ConceptBank
from .projection import ConceptProjection, FixedConcepts

GUMBEL_TEMPERATURE = 0.1


class LearnedConcepts(ConceptProjection):
    """Concept activations from a learned selection of library prototypes.

    A `ConceptProjection` whose matrix is not fixed: `num_concepts` and `dim` are its own, and the
    chosen (heads, C, D) vectors are `concept_vectors()`.

    Args:
        library: a `ConceptBank` of prototypes (or a (M, D) array); rows are L2-normalised.
        num_concepts: C, the number of concepts to select (at most M).
        temperature: the Gumbel-softmax temperature (0.1 as published).
        seed: initialises the selection logits (N(0, 1), independent of the global RNG).
        num_heads: independent selections stacked for several heads (one per sparsity ratio);
            the output is then (num_heads, B, C).
    """

    library: torch.Tensor  # a buffer: declared so the type checker knows it is a tensor

    def __init__(
        self,
        library: ConceptBank | ConceptVectors,
        num_concepts: int,
        temperature: float = GUMBEL_TEMPERATURE,
        seed: int = 0,
        num_heads: int | None = None,
        seeds: list[int] | None = None,
    ):
        super().__init__()
        bank: ConceptBank | None
        if isinstance(library, ConceptBank):
            bank, vectors = library, library.vectors
        else:
            bank, vectors = None, FixedConcepts(library).vectors
        if bank is not None and bank.has_projection:
            raise ValueError("learned concepts select from a prototype library, not from a text bank")
        if not 1 <= num_concepts <= vectors.shape[0]:
            raise ValueError(
                f"cannot learn {num_concepts} concepts from a library of {vectors.shape[0]}: "
                "num_concepts must be between 1 and the library size"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.library_bank = bank
        self.register_buffer("library", vectors.clone())
        self.temperature = float(temperature)
        self.seed = seed
        self.stacked = num_heads is not None
        heads = num_heads or 1
        seeds = seeds if seeds is not None else [seed + i for i in range(heads)]
        logits = torch.stack(
            [
                torch.randn(num_concepts, vectors.shape[0], generator=torch.Generator().manual_seed(s))
                for s in seeds
            ]
        )
        self.selection_logits = nn.Parameter(logits)
        self._generator: torch.Generator | None = None

    @property
    def num_concepts(self) -> int:
        return self.selection_logits.shape[1]

    @property
    def dim(self) -> int:
        return self.library.shape[1]

    def for_heads(self, seeds: list[int]) -> LearnedConcepts:
        """A fresh, independent selection per head (InterpretationHeads stacks one per ratio)."""
        source = self.library_bank if self.library_bank is not None else self.library
        return LearnedConcepts(
            source, self.num_concepts, self.temperature, self.seed, num_heads=len(seeds), seeds=seeds
        )

    def selection(self) -> torch.Tensor:
        """(heads, C, M) one-hot choices: Gumbel straight-through in training, arg-max otherwise.

        The Gumbel noise comes from the module's own seeded generator, so a run is reproducible
        whatever else drew from the global random stream.
        """
        logits = self.selection_logits
        if not self.training:
            index = logits.argmax(-1, keepdim=True)
            return torch.zeros_like(logits).scatter_(-1, index, 1.0)
        if self._generator is None or self._generator.device != logits.device:
            self._generator = torch.Generator(device=logits.device).manual_seed(self.seed)
        uniform = torch.rand(logits.shape, generator=self._generator, device=logits.device)
        gumbels = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
        soft = ((logits + gumbels) / self.temperature).softmax(-1)
        hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
        return hard - soft.detach() + soft  # straight-through: one-hot forward, soft gradients

    def concept_vectors(self) -> torch.Tensor:
        """(heads, C, D): the prototypes chosen for each concept."""
        return self.selection() @ self.library

    def forward(self, representations: torch.Tensor) -> torch.Tensor:
        if representations.shape[-1] != self.dim:
            raise ValueError(
                f"representations have dimension {representations.shape[-1]} but the library has "
                f"{self.dim}: the library was built for another model"
            )
        activations = torch.einsum(
            "bd,hcd->hbc", representations.to(self.library.dtype), self.concept_vectors()
        )
        return activations if self.stacked else activations[0]

    def selected_indices(self) -> torch.Tensor:
        """(heads, C) library rows chosen by the arg-max."""
        return self.selection_logits.argmax(-1)

    def selected_bank(self, head: int = 0) -> ConceptBank:
        """The concepts one head selected, as a plain prototype `ConceptBank` (names, thumbnails kept)."""
        rows = self.selected_indices()[head].tolist()
        if self.library_bank is not None:
            bank = self.library_bank.subset(rows)
        else:
            bank = ConceptBank(vectors=self.library[rows], names=[f"prototype {r}" for r in rows])
        bank.kind = "learned"
        bank.provenance = {
            **bank.provenance,
            "learned_from_library_rows": rows,
            "temperature": self.temperature,
        }
        return bank
