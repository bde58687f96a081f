"""Concepts: the directions a representation is interpreted along, and how they are built.

`projection` turns representations into concept activations; `bank` is the `ConceptBank` (schema,
files, Hub); `prototypes` (image parts, k-means), `text` (CLIP-scored words, from `vocabulary`, `clip` and
`text_projection`) and `learned` (a selection trained with the heads) build the kinds of concepts.
"""

from .bank import CONFIG_NAME, WEIGHTS_NAME, ConceptBank, as_concept_projection
from .learned import LearnedConcepts
from .projection import ConceptProjection, FixedConcepts, LinearConcepts
from .vocabulary import read_concept_words

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "ConceptBank",
    "ConceptProjection",
    "FixedConcepts",
    "LearnedConcepts",
    "LinearConcepts",
    "as_concept_projection",
    "read_concept_words",
]
