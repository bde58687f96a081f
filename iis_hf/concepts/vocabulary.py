"""The vocabulary of text concepts: which words there are, and which survive the recipe's two cutoffs.

Why a module of its own: reading the words (`read_concept_words`) and dropping those CLIP does not
see (step 2) or the backbone does not represent (step 4) decide the bank's names, with an error that
names the best word when none is left; `iis_hf.concepts.text` gives the recipe.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

DEFAULT_CONCEPT_FILE = Path(__file__).resolve().parent / "starter_vocabulary.txt"


def read_concept_words(concepts) -> list[str]:
    """The concept words: a list of strings, or a text file with one word (or short phrase) per line.

    In a file, blank lines and lines starting with ``#`` are ignored (as is anything after a ``#``).
    Surrounding whitespace is stripped and repeated words are kept once, in first-seen order.
    """
    if isinstance(concepts, (str, os.PathLike)):
        path = Path(concepts)
        if not path.is_file():
            raise ValueError(
                f"concept file {str(path)!r} does not exist; give a text file with one concept word per line "
                "(or a Python list of words)"
            )
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise ValueError(f"concept file {str(path)!r} is not UTF-8 text") from None
        words = [line.split("#", 1)[0].strip() for line in lines]
        where = f"concept file {str(path)!r}"
    else:
        try:
            given = list(concepts)
        except TypeError:
            raise ValueError(
                f"concepts must be a list of words or a path to a text file, got {type(concepts).__name__}"
            ) from None
        if not all(isinstance(w, str) for w in given):
            raise ValueError("every concept must be a string (a word or a short phrase)")
        words = [w.strip() for w in given]
        where = "the list of concepts"
    unique = list(dict.fromkeys(w for w in words if w))
    if not unique:
        raise ValueError(f"{where} holds no concept words: give at least one word")
    return unique


def apply_clip_cutoff(
    similarities: torch.Tensor, words: list[str], clip_cutoff: float, top_k: int
) -> tuple[list[int], torch.Tensor]:
    """Step 2: the words whose mean top-`top_k` CLIP similarity is above the cutoff (and all scores)."""
    k = min(top_k, similarities.shape[0])
    clip_scores = similarities.topk(k, dim=0).values.mean(dim=0)
    passed = [i for i in range(len(words)) if clip_scores[i] > clip_cutoff]
    if not passed:
        best = int(clip_scores.argmax())
        raise ValueError(
            f"no concept passed the CLIP cutoff {clip_cutoff}: the best mean top-{k} CLIP similarity is "
            f"{float(clip_scores[best]):.4f} ({words[best]!r}); lower clip_cutoff= or use words CLIP "
            "sees in these images"
        )
    return passed, clip_scores


def apply_interpretability_cutoff(matches: torch.Tensor, words: list[str], cutoff: float) -> list[int]:
    """Step 4: the positions (among `words`) whose held-out match is above the cutoff."""
    keep = [j for j in range(len(words)) if matches[j] > cutoff]
    if not keep:
        best = int(matches.argmax())
        raise ValueError(
            f"no concept passed the interpretability cutoff {cutoff}: the best held-out "
            f"match is {float(matches[best]):.4f} ({words[best]!r}); lower "
            "interpretability_cutoff=, add probe images, or use other words"
        )
    return keep
