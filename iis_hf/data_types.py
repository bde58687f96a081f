"""Type aliases for the data that flows through iis-hf, so a signature says what it carries.

The same four kinds of data travel from images to a score: images, their (N, D) representations,
(N,) class ids and (C, D) concept vectors. Each public function accepts the forms a user already has
(a numpy array, a torch tensor, nested lists), so the aliases are unions; the shape is in the name's
docstring, not in the type, because neither numpy's nor torch's types carry it.

The module sits at the bottom of the import layers and imports torch, datasets and PIL only for the
type checker: the aliases are strings at run time, which every module that uses them reads under
``from __future__ import annotations``.

>>> from iis_hf.data_types import Features
>>> isinstance(Features, str)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import datasets
    import torch
    from PIL import Image

__all__ = [
    "ConceptVectors",
    "Features",
    "FloatArray",
    "ImageData",
    "IntArray",
    "Labels",
    "Numbers",
]

FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]
"""A numpy array of floats (any precision)."""

IntArray: TypeAlias = npt.NDArray[np.integer[Any]]
"""A numpy array of integers (any width)."""

Numbers: TypeAlias = "Sequence[float] | npt.NDArray[np.number[Any] | np.bool_]"
"""A 1-D sample of numbers: a list of floats or ints, or a numpy array (e.g. one score per seed)."""

Features: TypeAlias = "FloatArray | torch.Tensor | Sequence[Sequence[float]]"
"""(N, D) representations: one D-dimensional vector per image."""

Labels: TypeAlias = "IntArray | torch.Tensor | Sequence[int]"
"""(N,) class ids, one per image, in 0..K-1."""

ConceptVectors: TypeAlias = "FloatArray | torch.Tensor"
"""(C, D) concept vectors in the representation space, one row per concept."""

ImageData: TypeAlias = "datasets.Dataset | Sequence[Image.Image | npt.NDArray[Any] | torch.Tensor | str]"
"""Images to score: a `datasets.Dataset` with an image column, or a sequence of PIL images,
arrays, tensors or paths."""
