"""CLIP's view of the probe images: loading a CLIP model safely and scoring every image against every word.

Step 1 of the text-concept recipe (`iis_hf.concepts.text`): the cosine of CLIP's image and text
embeddings. Kept apart because loading CLIP (its processor files, its outputs across transformers
4 and 5) is its own source of errors, each turned here into a ValueError that says what is missing.
"""

from __future__ import annotations

import os

import torch

from ..devices import resolve_device
from ..errors import first_line
from ..progress import progress_bar

DEFAULT_PROMPT = "{}"
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
_IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "image_processor_config.json")


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
