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
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConceptsConfig
from ..devices import resolve_device
from ..errors import first_line
from ..model_card import weights_fingerprint
from ..progress import progress_bar
from ..version import __version__

DEFAULT_CONCEPT_FILE = Path(__file__).resolve().parent / "starter_vocabulary.txt"
DEFAULT_PROMPT = "{}"
EARLY_STOP_EPOCHS = 100  # stop when the held-out match has not improved for this many epochs
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
_IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "image_processor_config.json")


# ---------------------------------------------------------------------------- words
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


# ---------------------------------------------------------------------------- CLIP
def load_clip(clip_model, clip_processor=None):
    """(CLIPModel, CLIPProcessor) from an instance, a local folder or a Hub id; never remote code.

    A folder (or Hub repository) without a tokenizer or an image processor is refused with a
    ValueError that names what is missing, instead of silently scoring every word as the same empty
    token sequence.
    """
    from transformers import CLIPModel, CLIPProcessor

    if isinstance(clip_model, CLIPModel):
        model = clip_model
        source = getattr(model, "name_or_path", "") or ""
    elif isinstance(clip_model, (str, os.PathLike)):
        source = str(clip_model)
        if os.path.isdir(source) and clip_processor is None:
            check_clip_folder(source)
        try:
            model = CLIPModel.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise ValueError(
                f"cannot load a CLIP model from {source!r}: it is neither a local folder with a CLIP "
                f"checkpoint nor a reachable Hub model id ({first_line(err)})"
            ) from err
    else:
        raise TypeError(
            f"clip_model must be a CLIPModel, a Hub id or a folder, got {type(clip_model).__name__}"
        )
    if clip_processor is None:
        if not source:
            raise ValueError(
                "this CLIPModel was not loaded from a folder or Hub id, so its processor cannot be found: "
                "pass clip_processor=CLIPProcessor.from_pretrained(...)"
            )
        try:
            clip_processor = CLIPProcessor.from_pretrained(source)
        except (OSError, ValueError) as err:
            what = (
                "image processor"
                if "image processor" in str(err)
                else "processor (tokenizer + image processor)"
            )
            raise ValueError(
                f"the CLIP model {source!r} has no usable {what} ({first_line(err)}); save one beside "
                "the weights with CLIPProcessor(image_processor=..., tokenizer=...).save_pretrained(folder) "
                "or pass clip_processor="
            ) from err
    tokenizer = getattr(clip_processor, "tokenizer", None)
    image_processor = getattr(clip_processor, "image_processor", None)
    if tokenizer is None or image_processor is None:
        raise ValueError(
            "clip_processor must carry a tokenizer and an image processor (a CLIPProcessor), got "
            f"{type(clip_processor).__name__}"
        )
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    if len(set(tokenizer.get_vocab()) - special) == 0:
        raise ValueError(
            f"the CLIP tokenizer of {source or 'this model'!r} has no vocabulary beyond its special tokens: "
            "its tokenizer files are missing. Save a tokenizer beside the weights (tokenizer.json) or pass "
            "clip_processor="
        )
    return model.eval(), clip_processor


def check_clip_folder(folder: str) -> None:
    """Name the processor files a local CLIP folder lacks, before transformers guesses around them."""
    import json

    names = set(os.listdir(folder))
    processor_config = {}
    if "processor_config.json" in names:
        try:
            with open(os.path.join(folder, "processor_config.json"), encoding="utf-8") as handle:
                processor_config = json.load(handle)
        except (OSError, ValueError):
            processor_config = {}
    missing = []
    if not names.intersection(_TOKENIZER_FILES):
        missing.append("a tokenizer (tokenizer.json or vocab.json + merges.txt)")
    has_image_processor = bool(names.intersection(_IMAGE_PROCESSOR_FILES)) or (
        isinstance(processor_config, dict) and "image_processor" in processor_config
    )
    if not has_image_processor:
        missing.append("an image processor (preprocessor_config.json)")
    if missing:
        raise ValueError(
            f"the CLIP folder {folder!r} lacks {' and '.join(missing)}: save the processor beside the "
            "weights with CLIPProcessor(image_processor=..., tokenizer=...).save_pretrained(folder), "
            "or pass clip_processor="
        )


def _embedding(output) -> torch.Tensor:
    """`get_*_features` returns a tensor in transformers 4 and an output with pooler_output in 5."""
    if torch.is_tensor(output):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise ValueError(f"unexpected CLIP output {type(output).__name__}: no pooler_output")
    return pooled


@torch.no_grad()
def compute_clip_similarities(
    clip_model,
    probe_dataset,
    words: list[str],
    *,
    clip_processor=None,
    prompt: str = DEFAULT_PROMPT,
    image_column: str | None = None,
    batch_size: int = 64,
    device=None,
    progress: bool = True,
) -> torch.Tensor:
    """(N_images, num_words) cosine similarities between CLIP's image and text embeddings."""
    from ..features.sources import prepare_source

    model, processor = load_clip(clip_model, clip_processor)
    device = resolve_device(device)
    model.to(device)
    try:
        prompts = [prompt.format(w) for w in words]
    except (IndexError, KeyError):
        raise ValueError(f"prompt must contain one '{{}}' where the word goes, got {prompt!r}") from None
    max_length = getattr(getattr(model.config, "text_config", None), "max_position_embeddings", None)
    text = []
    for start in range(0, len(prompts), batch_size):
        encoded = processor.tokenizer(
            prompts[start : start + batch_size],
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            return_tensors="pt",
        )
        encoded = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        text.append(_embedding(model.get_text_features(**encoded)).float())
    text_features = torch.nn.functional.normalize(torch.cat(text), dim=-1)

    source = prepare_source(probe_dataset, processor.image_processor, image_column, None)
    rows = []
    bar = progress_bar(
        range(0, source.num_rows, batch_size), desc="CLIP similarities", unit="batch", enabled=progress
    )
    for start in bar:
        indices = list(range(start, min(start + batch_size, source.num_rows)))
        pixel_values = source.batches[indices]["pixel_values"].to(device)
        image_features = _embedding(model.get_image_features(pixel_values=pixel_values)).float()
        rows.append(torch.nn.functional.normalize(image_features, dim=-1) @ text_features.T)
    return torch.cat(rows).cpu()


# ---------------------------------------------------------------------------- the match
def cubed_cosine_similarity(targets: torch.Tensor, outputs: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per concept, the cosine over images of mean-centred, cubed targets and outputs (label-free CBM).

    Args:
        targets, outputs: (N, C) arrays (e.g. CLIP similarities and projection outputs).

    Returns:
        (C,) similarities in [-1, 1]; a concept constant over the images scores 0.
    """
    a = targets - targets.mean(dim=0, keepdim=True)
    b = outputs - outputs.mean(dim=0, keepdim=True)
    a, b = a**3, b**3
    a = a / a.norm(dim=0, keepdim=True).clamp_min(eps)
    b = b / b.norm(dim=0, keepdim=True).clamp_min(eps)
    return (a * b).sum(dim=0)


def fit_text_projection(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    holdout_features: torch.Tensor,
    holdout_targets: torch.Tensor,
    *,
    epochs: int = 1000,
    learning_rate: float = 1e-3,
    batch_size: int = 5000,
    seed: int = 0,
    device=None,
    progress: bool = True,
) -> tuple[torch.Tensor, int]:
    """Fit a bias-free (C, D) projection of raw features to `train_targets` by the cubed cosine.

    Returns the weight in raw-feature space (epoch with the best mean held-out match) and that epoch.
    """
    device = resolve_device(device)
    x_mean = train_features.mean(dim=0, keepdim=True)
    x_std = train_features.std(dim=0, keepdim=True)
    x_std = torch.where(x_std > 0, x_std, torch.ones_like(x_std))
    t_std = train_targets.std(dim=0, keepdim=True)
    t_std = torch.where(t_std > 0, t_std, torch.ones_like(t_std))
    train_x = ((train_features - x_mean) / x_std).to(device)
    holdout_x = ((holdout_features - x_mean) / x_std).to(device)
    train_t = (train_targets / t_std).to(device)
    holdout_t = (holdout_targets / t_std).to(device)

    num_train, dim = train_x.shape
    generator = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(dim)
    weight = ((torch.rand(train_t.shape[1], dim, generator=generator) * 2 - 1) * bound).to(device)
    weight.requires_grad_(True)
    optimizer = torch.optim.Adam([weight], lr=learning_rate)

    def holdout_match() -> float:
        with torch.no_grad():
            return float(cubed_cosine_similarity(holdout_t, holdout_x @ weight.T).mean())

    best_match, best_epoch, best_weight = holdout_match(), -1, weight.detach().clone()
    batch_size = max(2, min(batch_size, num_train))
    full_batch = batch_size >= num_train  # then the order of the images does not matter
    with progress_bar(total=epochs, desc="text concept projection", unit="epoch", enabled=progress) as bar:
        for epoch in range(epochs):
            order = None if full_batch else torch.randperm(num_train, generator=generator).to(device)
            for start in range(0, num_train, batch_size):
                if order is None:
                    x, t = train_x, train_t
                else:
                    idx = order[start : start + batch_size]
                    if idx.numel() < 2:  # a cosine over one centred image is 0/0
                        continue
                    x, t = train_x[idx], train_t[idx]
                loss = -cubed_cosine_similarity(t, x @ weight.T).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            bar.update(1)
            match = holdout_match()
            if match > best_match:
                best_match, best_epoch, best_weight = match, epoch, weight.detach().clone()
            elif epoch - best_epoch >= EARLY_STOP_EPOCHS:
                bar.total = epoch + 1  # done early: the bar ends full, saying why
                bar.set_postfix_str(f"early-stopped, best epoch {best_epoch}", refresh=False)
                break
    return (best_weight.cpu() / x_std), best_epoch


# ---------------------------------------------------------------------------- the bank
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
    config = replace(config, **overrides) if config is not None else ConceptsConfig(kind="text", **overrides)
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


def standardisation(activations: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 5: per-concept mean and std over the training probe images (every std must be > 0)."""
    mean, std = activations.mean(dim=0), activations.std(dim=0)
    flat = [w for w, s in zip(names, std) if not s > 0]
    if flat:
        raise ValueError(f"concepts {flat} are constant over the probe images; they cannot be standardised")
    return mean, std


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
