"""Interpretation heads (concepts -> LayerNorm -> sparsification -> linear) and how they are trained."""

from .modules import InterpretationHead, InterpretationHeads, LinearProbe
from .sparsify import sparsify, sparsify_stacked
from .training import HeadFit, fit_heads

__all__ = [
    "HeadFit",
    "InterpretationHead",
    "InterpretationHeads",
    "LinearProbe",
    "fit_heads",
    "sparsify",
    "sparsify_stacked",
]
