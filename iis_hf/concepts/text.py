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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import DEFAULT_CLIP_CUTOFF, DEFAULT_CLIP_MODEL, DEFAULT_INTERPRETABILITY_CUTOFF
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
            words = [w.strip() if isinstance(w, str) else None for w in concepts]
        except TypeError:
            raise ValueError(
                f"concepts must be a list of words or a path to a text file, got {type(concepts).__name__}"
            ) from None
        if any(w is None for w in words):
            raise ValueError("every concept must be a string (a word or a short phrase)")
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
def text_concept_fields(
    concepts,
    clip_model=DEFAULT_CLIP_MODEL,
    *,
    backbone=None,
    probe_dataset=None,
    features=None,
    clip_similarities=None,
    clip_processor=None,
    image_processor=None,
    image_column: str | None = None,
    layer: int | None = None,
    pooling: str = "default",
    prompt: str = DEFAULT_PROMPT,
    clip_cutoff: float = DEFAULT_CLIP_CUTOFF,
    interpretability_cutoff: float = DEFAULT_INTERPRETABILITY_CUTOFF,
    top_k: int = 5,
    holdout_fraction: float = 0.2,
    epochs: int = 1000,
    learning_rate: float = 1e-3,
    projection_batch_size: int = 5000,
    batch_size: int = 64,
    precision: str = "fp32",
    seed: int = 0,
    device=None,
    progress: bool = True,
) -> dict[str, Any]:
    """The fields of a text `ConceptBank` (see the module docstring for the recipe).

    Args:
        concepts: a list of words, or a text file with one word per line (``#`` comments allowed).
        clip_model: a `CLIPModel`, a Hub id or a local folder (with its `CLIPProcessor` saved beside
            the weights, or pass `clip_processor=`). Not needed when `clip_similarities` is given.
        backbone: the vision model whose representation the concepts interpret (instance, Hub id
            or folder); its features come from `extract_features(backbone, probe_dataset, ...)`
            with `image_processor`, `image_column`, `layer`, `pooling`, `precision`. Not needed when
            `features` is given.
        probe_dataset: the probe images (a `datasets.Dataset` or a list of PIL images); labels are
            not used.
        features: optional (N, D) representations of the probe images, in order (skips extraction).
        clip_similarities: optional (N, num_words) similarities (skips CLIP), e.g. to test the fit
            with similarities known by construction.
        prompt: how a word is put to CLIP's text encoder; ``"{}"`` (the word itself) by default.
        clip_cutoff: drop words whose mean top-`top_k` CLIP similarity over the images is <= this.
        interpretability_cutoff: drop words whose held-out match (cubed cosine) is <= this.
        holdout_fraction: share of probe images held out for the interpretability cutoff.
        epochs, learning_rate, projection_batch_size: Adam on the projection (label-free CBM: 1000
            steps of batch 5000 at lr 1e-3; here epochs, early-stopped after 100 without improvement).
        batch_size: images per forward pass of CLIP and the backbone.
    """
    words = read_concept_words(concepts)
    check_settings(
        clip_cutoff,
        interpretability_cutoff,
        top_k,
        holdout_fraction,
        epochs,
        learning_rate,
        projection_batch_size,
    )
    if features is None:  # step 0: the backbone's representations of the probe images
        features = probe_features(
            backbone,
            probe_dataset,
            image_processor=image_processor,
            image_column=image_column,
            layer=layer,
            pooling=pooling,
            batch_size=batch_size,
            precision=precision,
            device=device,
            progress=progress,
        )
    features = _as_matrix(features, "features")
    clip_name = None
    if clip_similarities is None:  # step 1: CLIP's image-word similarities over the probe images
        if probe_dataset is None:
            raise ValueError("CLIP needs the probe images: pass probe_dataset= (or clip_similarities=)")
        if clip_model is None:
            raise ValueError("pass clip_model= (a CLIPModel, Hub id or folder) or clip_similarities=")
        clip_name = _name(clip_model)
        clip_similarities = compute_clip_similarities(
            clip_model,
            probe_dataset,
            words,
            clip_processor=clip_processor,
            prompt=prompt,
            image_column=image_column,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
    similarities = _as_matrix(clip_similarities, "clip_similarities")
    if similarities.shape != (features.shape[0], len(words)):
        raise ValueError(
            f"clip_similarities must be (N_images, num_words) = ({features.shape[0]}, {len(words)}), "
            f"got {tuple(similarities.shape)}"
        )

    # 2. the CLIP cutoff; 3. the projection, fitted on the training part of the probe images
    passed_clip, clip_scores = apply_clip_cutoff(similarities, words, clip_cutoff, top_k)
    train_idx, holdout_idx = split_probe(features.shape[0], holdout_fraction, seed)
    targets = similarities[:, passed_clip]
    weight, best_epoch = fit_text_projection(
        features[train_idx],
        targets[train_idx],
        features[holdout_idx],
        targets[holdout_idx],
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=projection_batch_size,
        seed=seed,
        device=device,
        progress=progress,
    )
    # 4. the interpretability cutoff, measured with the folded (raw-feature) projection
    matches = cubed_cosine_similarity(
        targets[holdout_idx].double(), (features[holdout_idx] @ weight.T).double()
    )
    keep = apply_interpretability_cutoff(matches, [words[i] for i in passed_clip], interpretability_cutoff)
    # 5. standardisation with the train mean/std
    weight = weight[keep].contiguous()
    mean, std = standardisation(features[train_idx] @ weight.T, [words[passed_clip[j]] for j in keep])

    recipe = {
        "model": _name(backbone),
        "embedded_by": weights_fingerprint(backbone),  # None for given features or a backbone's name
        "clip_model": str(clip_name) if clip_name is not None else "given similarities",
        "dataset_fingerprint": getattr(probe_dataset, "_fingerprint", None),
        "layer": layer,
        "pooling": pooling,
        "prompt": prompt,
        "clip_cutoff": clip_cutoff,
        "interpretability_cutoff": interpretability_cutoff,
        "top_k": top_k,
        "holdout_fraction": holdout_fraction,
        "num_probe_images": int(features.shape[0]),
        "num_train": len(train_idx),
        "num_holdout": len(holdout_idx),
        "epochs": epochs,
        "best_epoch": best_epoch,
        "learning_rate": learning_rate,
        "projection_batch_size": projection_batch_size,
        "seed": seed,
    }
    return text_bank_fields(
        words, passed_clip, keep, clip_scores, matches, recipe, {"weight": weight, "mean": mean, "std": std}
    )


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


def check_settings(
    clip_cutoff, interpretability_cutoff, top_k, holdout_fraction, epochs, learning_rate, batch_size
):
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
