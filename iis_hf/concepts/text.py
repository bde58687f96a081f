"""Text concepts: words, scored by CLIP, read off a backbone's representation by a learned projection.

The recipe is label-free CBM's (Oikarinen et al., ICLR 2023), as docs/METHOD.md states it:

1. CLIP similarity. Every probe image is scored against every word: the cosine of CLIP's image
   embedding (`get_image_features`) and text embedding (`get_text_features`) of the prompt
   ``prompt.format(word)``. The default prompt is the bare word (``"{}"``), as label-free CBM does;
   ``prompt="a photo of {}"`` is the other common choice.
2. CLIP cutoff. A word whose mean top-`top_k` similarity over the probe images is <= `clip_cutoff`
   is dropped: CLIP does not see it in these images, so there is nothing to match.
3. Projection. A bias-free linear map W from the backbone's representation x (as `extract_features`
   gives it) to the remaining words is fitted with Adam so that, per word, its outputs match the
   CLIP similarities over the images. The match is the label-free-CBM similarity: the cosine, over
   the images of a batch, between the mean-centred, *cubed* projection outputs and the mean-centred,
   cubed CLIP similarities. Cubing weights the images where a concept is strongly present or absent,
   so the projection is rewarded for ranking the clear cases right, not for fitting noise around the
   mean. The loss is minus the mean of this cosine over words. (W is fitted on standardised x and
   folded back into raw-x space afterwards; the CLIP targets are scaled by their std per word, which
   leaves the cosine unchanged and keeps float32 away from tiny cubes.)
4. Interpretability cutoff. On `holdout_fraction` of the probe images, held out from the fit, a word
   whose match is <= `interpretability_cutoff` is dropped: the backbone does not represent it.
   The epoch whose weights are kept is the one with the best mean held-out match (label-free CBM
   early-stops on the same validation images).
5. Standardisation. Activations are ``(x @ W.T - mean) / std`` with the mean and std of the
   training probe images, so every concept has the same scale before the heads' LayerNorm and
   sparsification.

The result is a `ConceptBank` of kind "text" whose `projection()` is that standardised linear map
(`iis_hf.concepts.LinearConcepts`). Each surviving word's CLIP score and held-out match are kept in
its `sources` entry, and every word's scores in the bank's provenance.

This module assembles the recipe (its settings, the steps in order, the bank's fields); the steps'
parts live beside it: `vocabulary` (the words and both cutoffs), `clip` (step 1) and
`text_projection` (the fit and the standardisation). Their names are re-exported here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from ..config import ConceptsConfig
from ..model_card import weights_fingerprint
from ..version import __version__

# Re-exported: the recipe's parts live beside it (the words, CLIP, the projection).
from .clip import (  # noqa: F401
    DEFAULT_PROMPT,
    _embedding,
    check_clip_folder,
    compute_clip_similarities,
    load_clip,
)
from .text_projection import (  # noqa: F401
    EARLY_STOP_EPOCHS,
    cubed_cosine_similarity,
    fit_text_projection,
    standardisation,
)
from .vocabulary import (
    DEFAULT_CONCEPT_FILE,
    apply_clip_cutoff,
    apply_interpretability_cutoff,
    read_concept_words,
)


@dataclass
class TextProbe:
    """The data text concepts are fitted to: the words, the probe images (or their representations)
    and CLIP's view of them (a model, or similarities given). Labels are not used.

    `words` (a list, or a file with one word per line) default to the settings' `concept_file`, else
    the starter vocabulary; `clip_model`, a `CLIPModel` instance, overrides the settings' name.
    """

    words: Sequence[str] | str | os.PathLike | None = None
    backbone: Any = None
    probe_dataset: Any = None
    features: Any = None
    clip_similarities: Any = None
    clip_model: Any = None
    clip_processor: Any = None
    image_processor: Any = None
    image_column: str | None = None


@dataclass
class TextRecipe:
    """The recipe's knobs `ConceptsConfig` does not hold (label-free CBM's defaults), and how the work runs.

    `layer`, `pooling`, `batch_size` and `precision` are the backbone's extraction (`batch_size`
    also batches CLIP); `learning_rate` and `projection_batch_size` are Adam's on the projection.
    """

    prompt: str = DEFAULT_PROMPT
    top_k: int = 5
    holdout_fraction: float = 0.2
    learning_rate: float = 1e-3
    projection_batch_size: int = 5000
    layer: int | None = None
    pooling: str = "default"
    batch_size: int = 64
    precision: str = "fp32"
    seed: int = 0
    device: Any = None
    progress: bool = True


# `ConceptBank.from_text`'s keywords that are `ConceptsConfig` fields (`epochs` is the projection's).
CONFIG_KEYWORDS = {
    "clip_cutoff": "clip_cutoff",
    "interpretability_cutoff": "interpretability_cutoff",
    "epochs": "projection_epochs",
}


def text_settings(
    concepts=None, clip_model=None, config: ConceptsConfig | None = None, **keywords: Any
) -> tuple[ConceptsConfig, TextProbe, TextRecipe]:
    """`ConceptBank.from_text`'s arguments sorted, by field name, into the settings and the data.

    Why: its callers keep one flat call (every keyword of `TextProbe`, `TextRecipe` and
    `CONFIG_KEYWORDS`), while the recipe reads each setting from the one object that holds it.
    """
    data_names = {f.name for f in fields(TextProbe)} - {"words", "clip_model"}
    recipe_names = {f.name for f in fields(TextRecipe)}
    unknown = sorted(set(keywords) - data_names - recipe_names - set(CONFIG_KEYWORDS))
    if unknown:
        raise TypeError(f"ConceptBank.from_text() got unexpected keyword arguments {unknown}")
    overrides = {CONFIG_KEYWORDS[k]: v for k, v in keywords.items() if k in CONFIG_KEYWORDS}
    if isinstance(clip_model, (str, os.PathLike)):
        overrides["clip_model"] = str(clip_model)
    config = (
        replace(config, **overrides)
        if config is not None
        else ConceptsConfig(concept_kind="text", **overrides)
    )
    probe = TextProbe(
        words=concepts,
        clip_model=None if isinstance(clip_model, (str, os.PathLike)) else clip_model,
        **{k: v for k, v in keywords.items() if k in data_names},
    )
    return config, probe, TextRecipe(**{k: v for k, v in keywords.items() if k in recipe_names})


def text_concept_fields(
    config: ConceptsConfig, probe: TextProbe, recipe: TextRecipe | None = None
) -> dict[str, Any]:
    """The fields of a text `ConceptBank` (the module docstring gives the recipe): the words of
    `probe` (or `config.concept_file`) cut by `config`'s CLIP and interpretability cutoffs, and the
    projection fitted for `config.projection_epochs` epochs.

    `probe` needs `backbone` and `probe_dataset` unless it gives `features` (the probe images'
    (N, D) representations, in order) and `clip_similarities` ((N, num_words), e.g. known by
    construction). `config.clip_model` (or `probe.clip_model`) is a Hub id or a local folder with its
    `CLIPProcessor` saved beside the weights (or pass `probe.clip_processor`).
    """
    recipe = recipe if recipe is not None else TextRecipe()
    source = probe.words if probe.words is not None else config.concept_file or DEFAULT_CONCEPT_FILE
    words = read_concept_words(source)
    check_settings(config, recipe)
    features = probe.features
    if features is None:  # step 0: the backbone's representations of the probe images
        features = probe_features(
            probe.backbone,
            probe.probe_dataset,
            image_processor=probe.image_processor,
            image_column=probe.image_column,
            layer=recipe.layer,
            pooling=recipe.pooling,
            batch_size=recipe.batch_size,
            precision=recipe.precision,
            device=recipe.device,
            progress=recipe.progress,
        )
    features = _as_matrix(features, "features")
    similarities, clip_name = probe_similarities(words, int(features.shape[0]), config, probe, recipe)
    fit = fit_words(words, features, similarities, config, recipe)
    record = recipe_record(config, probe, recipe, clip_name, int(features.shape[0]), fit)
    return text_bank_fields(
        words, fit.passed_clip, fit.keep, fit.clip_scores, fit.matches, record, fit.projection_state
    )


def probe_similarities(
    words: list[str], num_images: int, config: ConceptsConfig, probe: TextProbe, recipe: TextRecipe
) -> tuple[torch.Tensor, str | None]:
    """Step 1: CLIP's image-word similarities over the probe images (or those given), and the name
    of the CLIP model that computed them (None for given ones)."""
    clip_name = None
    similarities = probe.clip_similarities
    if similarities is None:
        if probe.probe_dataset is None:
            raise ValueError("CLIP needs the probe images: pass probe_dataset= (or clip_similarities=)")
        clip_model = probe.clip_model if probe.clip_model is not None else config.clip_model
        if clip_model is None:
            raise ValueError("pass clip_model= (a CLIPModel, Hub id or folder) or clip_similarities=")
        clip_name = _name(clip_model)
        similarities = compute_clip_similarities(
            clip_model,
            probe.probe_dataset,
            words,
            clip_processor=probe.clip_processor,
            prompt=recipe.prompt,
            image_column=probe.image_column,
            batch_size=recipe.batch_size,
            device=recipe.device,
            progress=recipe.progress,
        )
    similarities = _as_matrix(similarities, "clip_similarities")
    if similarities.shape != (num_images, len(words)):
        raise ValueError(
            f"clip_similarities must be (N_images, num_words) = ({num_images}, {len(words)}), "
            f"got {tuple(similarities.shape)}"
        )
    return similarities, clip_name


@dataclass
class WordFit:
    """What steps 2-5 found: the words past each cutoff, their scores, and the standardised projection."""

    passed_clip: list[int]  # positions in the words
    clip_scores: torch.Tensor  # every word's mean top-k CLIP similarity
    keep: list[int]  # positions in `passed_clip`
    matches: torch.Tensor  # held-out match of each word in `passed_clip`
    projection_state: dict[str, torch.Tensor]  # weight, mean, std of the kept words
    num_train: int
    num_holdout: int
    best_epoch: int


def fit_words(
    words: list[str],
    features: torch.Tensor,
    similarities: torch.Tensor,
    config: ConceptsConfig,
    recipe: TextRecipe,
) -> WordFit:
    """Steps 2-5: the CLIP cutoff, the projection fitted on the training part of the probe images,
    the interpretability cutoff on the held-out part, the standardisation."""
    passed_clip, clip_scores = apply_clip_cutoff(similarities, words, config.clip_cutoff, recipe.top_k)
    train_idx, holdout_idx = split_probe(features.shape[0], recipe.holdout_fraction, recipe.seed)
    targets = similarities[:, passed_clip]
    weight, best_epoch = fit_text_projection(
        features[train_idx],
        targets[train_idx],
        features[holdout_idx],
        targets[holdout_idx],
        epochs=config.projection_epochs,
        learning_rate=recipe.learning_rate,
        batch_size=recipe.projection_batch_size,
        seed=recipe.seed,
        device=recipe.device,
        progress=recipe.progress,
    )
    # 4. measured with the folded (raw-feature) projection
    matches = cubed_cosine_similarity(
        targets[holdout_idx].double(), (features[holdout_idx] @ weight.T).double()
    )
    passed_words = [words[i] for i in passed_clip]
    keep = apply_interpretability_cutoff(matches, passed_words, config.interpretability_cutoff)
    weight = weight[keep].contiguous()  # 5. with the train mean/std
    mean, std = standardisation(features[train_idx] @ weight.T, [passed_words[j] for j in keep])
    return WordFit(
        passed_clip,
        clip_scores,
        keep,
        matches,
        {"weight": weight, "mean": mean, "std": std},
        len(train_idx),
        len(holdout_idx),
        best_epoch,
    )


def recipe_record(
    config: ConceptsConfig,
    probe: TextProbe,
    recipe: TextRecipe,
    clip_name: str | None,
    num_images: int,
    fit: WordFit,
) -> dict[str, Any]:
    """Every setting the bank was built with, for its provenance."""
    return {
        "model": _name(probe.backbone),
        "embedded_by": weights_fingerprint(probe.backbone),  # None for given features or a name
        "clip_model": str(clip_name) if clip_name is not None else "given similarities",
        "dataset_fingerprint": getattr(probe.probe_dataset, "_fingerprint", None),
        "layer": recipe.layer,
        "pooling": recipe.pooling,
        "prompt": recipe.prompt,
        "clip_cutoff": config.clip_cutoff,
        "interpretability_cutoff": config.interpretability_cutoff,
        "top_k": recipe.top_k,
        "holdout_fraction": recipe.holdout_fraction,
        "num_probe_images": num_images,
        "num_train": fit.num_train,
        "num_holdout": fit.num_holdout,
        "epochs": config.projection_epochs,
        "best_epoch": fit.best_epoch,
        "learning_rate": recipe.learning_rate,
        "projection_batch_size": recipe.projection_batch_size,
        "seed": recipe.seed,
    }


def probe_features(backbone, probe_dataset, **extraction) -> torch.Tensor:
    """Step 0: the backbone's representations of the probe images (labels are not used)."""
    if backbone is None or probe_dataset is None:
        raise ValueError("text concepts need backbone= and probe_dataset= (or precomputed features=)")
    from ..features import extract_features

    return extract_features(backbone, probe_dataset, label_column=None, **extraction).features


def text_bank_fields(
    words: list[str],
    passed_clip: list[int],
    keep: list[int],
    clip_scores: torch.Tensor,
    matches: torch.Tensor,
    recipe: dict[str, Any],
    projection_state: dict[str, torch.Tensor],
) -> dict[str, Any]:
    """The bank's fields from the two cutoffs' outcome: the kept words with their scores, and a
    provenance that records every setting and why each dropped word was dropped."""
    names = [words[passed_clip[j]] for j in keep]
    clip_score_of = {w: round(float(clip_scores[i]), 6) for i, w in enumerate(words)}
    match_of = {words[i]: round(float(matches[j]), 6) for j, i in enumerate(passed_clip)}
    provenance: dict[str, Any] = {
        **recipe,
        "num_words": len(words),
        "clip_scores": clip_score_of,
        "holdout_matches": match_of,
        "dropped_by_clip_cutoff": [w for i, w in enumerate(words) if i not in passed_clip],
        "dropped_by_interpretability_cutoff": [words[i] for j, i in enumerate(passed_clip) if j not in keep],
        "iis_hf_version": __version__,
    }
    return {
        "vectors": projection_state["weight"],
        "names": names,
        "kind": "text",
        "sources": [
            {
                "word": w,
                "prompt": recipe["prompt"].format(w),
                "clip_score": clip_score_of[w],
                "holdout_match": match_of[w],
            }
            for w in names
        ],
        "provenance": provenance,
        "projection_state": projection_state,
    }


def check_settings(config: ConceptsConfig, recipe: TextRecipe) -> None:
    """The settings the recipe reads, checked before any work (the objects may have been changed
    after they were built)."""
    clip_cutoff, interpretability_cutoff = config.clip_cutoff, config.interpretability_cutoff
    top_k, holdout_fraction, epochs = recipe.top_k, recipe.holdout_fraction, config.projection_epochs
    learning_rate, batch_size = recipe.learning_rate, recipe.projection_batch_size
    for name, value in (("clip_cutoff", clip_cutoff), ("interpretability_cutoff", interpretability_cutoff)):
        if not isinstance(value, (int, float)) or math.isnan(value):
            raise ValueError(f"{name} must be a number, got {value!r}")
    if not 0.0 < float(holdout_fraction) < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    for name, value in (("top_k", top_k), ("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")


def split_probe(num_images: int, holdout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random split of the probe images into (train, held-out), each of at least 2 images."""
    num_holdout = round(num_images * holdout_fraction)
    if num_holdout < 2 or num_images - num_holdout < 2:
        raise ValueError(
            f"{num_images} probe images with holdout_fraction={holdout_fraction} leave {num_holdout} held out "
            f"and {num_images - num_holdout} to fit: both need at least 2 images; add probe images"
        )
    order = np.random.default_rng(seed).permutation(num_images)
    return sorted(order[num_holdout:].tolist()), sorted(order[:num_holdout].tolist())


def _as_matrix(values, name: str) -> torch.Tensor:
    if hasattr(values, "features") and not hasattr(values, "shape"):  # an ExtractedFeatures
        values = values.features
    tensor = (
        torch.as_tensor(np.asarray(values) if not torch.is_tensor(values) else values).detach().float().cpu()
    )
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contain NaN or inf")
    return tensor


def _name(model) -> str | None:
    """A printable name for a model given as an instance, a Hub id or a folder."""
    if model is None:
        return None
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    return getattr(model, "name_or_path", None) or type(model).__name__
