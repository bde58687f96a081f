"""Representations from any Hugging Face vision model.

`extract_features(model, dataset)` turns images into one pooled vector per image, the `x` that the
interpretation heads project onto concepts. It works with any `*ForImageClassification` model or bare
vision backbone (`AutoModel`), a model instance or a Hub id / local `save_pretrained` folder.

What "the representation" is, for each architecture, is decided in `iis_hf.features.backbones`; what
is read (a dataset, a list of images, pixel values) in `sources`; the chunk cache in `cache`; how
several processes share the work in `distributed`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from typing import Any, NamedTuple

import torch
from torch import nn

from ..config import ExtractionConfig
from .backbones import (
    as_vision_model,
    load_image_processor,
    load_vision_model,
    model_digest,
    pooled_representation,
)
from .cache import FeatureCache, processor_config
from .distributed import all_gather_chunks, process_layout
from .sources import Source, prepare_source

DEFAULT_CHUNK_SIZE = ExtractionConfig().chunk_size
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class ExtractedFeatures(NamedTuple):
    features: torch.Tensor  # (N, D) float32 on the CPU, in dataset order
    labels: torch.Tensor | None  # (N,) int64, or None when the dataset has no label column


def extract_features(
    model,
    dataset,
    *,
    config: ExtractionConfig | None = None,
    image_processor=None,
    image_column: str | None = None,
    label_column: str | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    **settings,
) -> ExtractedFeatures:
    """Pooled representations (N, D) of every image of `dataset`, in order, plus its labels.

    Args:
        model: a `PreTrainedModel` (moved to `device`, where it stays, and run in eval mode; its
            train/eval mode is restored afterwards), or a Hub id / local folder for `load_vision_model`.
        dataset: a `datasets.Dataset` with an image column, a list of images, or a (N, 3, H, W) tensor
            of prepared pixel values (labels are then None). Images are decoded and converted to RGB by
            `iis_hf.images.load_image`; the image processor resizes them.
        config: an `ExtractionConfig`; keyword `settings` named like its fields override it:
            `layer` (None: the model's final representation; an int picks ``hidden_states[layer]``),
            `pooling` ("default": the model's own pooled output, or for a hidden state the CLS token
            of token sequences and the spatial mean of maps, the token mean for models without a CLS
            token such as Swin; "cls": token 0; "mean": mean over all tokens or over (H, W)),
            `batch_size` (images per forward; batches never cross chunk boundaries), `precision`
            ("fp32", "bf16" or "fp16" autocast; features are returned as float32), `num_workers`
            (DataLoader workers decoding images while the model runs), `chunk_size` (rows per chunk,
            the unit of distribution and caching, independent of the number of processes) and
            `cache_dir` (features cached under ``cache_dir/<key>/`` as float16 safetensors chunks,
            keyed by the model's config and weights, the dataset fingerprint, the image processor,
            the columns, layer, pooling, precision and chunk size; a rerun, or a run after an
            interruption, reuses finished chunks; with several processes the folder must be shared).
        image_processor: defaults to `AutoImageProcessor.from_pretrained(model.name_or_path)`.
        image_column: defaults to the column whose feature is `datasets.Image`, else "image" / "img".
        label_column: defaults to the `ClassLabel` column, else "label" / "labels"; none found -> labels None.
        device: defaults to accelerate's ``PartialState().device`` (each process's own device).
        progress: show a tqdm bar on the main process.

    Returns:
        ExtractedFeatures(features (N, D) float32 CPU, labels (N,) int64 or None). Under ``accelerate
        launch`` / ``torchrun`` each process extracts its share and every process returns the whole.
    """
    config = (
        dataclasses.replace(config or ExtractionConfig(), **settings)
        if settings
        else (config or ExtractionConfig())
    )
    model = _as_model(model)
    image_processor = load_image_processor(model, image_processor)
    source = prepare_source(dataset, image_processor, image_column, label_column)
    world, rank, default_device = process_layout()
    plan = _ChunkPlan(source.num_rows, config.chunk_size, world, rank)
    cache = _open_cache(config, model, source, image_processor, plan, is_main=rank == 0)

    todo = (
        plan.mine
        if cache is None
        else [c for c in plan.mine if cache.read(c, plan.bounds[c], source.has_labels) is None]
    )
    # Every process runs the model when anything is left to do, even with no chunk of its own: a bad
    # argument then fails on all ranks alike (no rank waits forever at a barrier), and the feature
    # width is known for the all-gather.
    computed: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    width = None
    if todo or cache is None or not cache.complete(plan.num_chunks):
        width = _extract_chunks(
            model, source, todo, plan, config, device if device is not None else default_device, cache, computed,
            progress and rank == 0,
        )  # fmt: skip
    parts = _collect_chunks(plan, cache, computed, source.has_labels, width)
    features = torch.cat([p[0] for p in parts]).float()
    labels = torch.cat([p[1] for p in parts]) if source.has_labels else None
    return ExtractedFeatures(features, labels)


def _as_model(model) -> nn.Module:
    if isinstance(model, (str, os.PathLike)):
        return load_vision_model(str(model))
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a PreTrainedModel or a model name/folder, got {type(model).__name__}")
    return as_vision_model(model)


class _ChunkPlan:
    """Fixed-size chunks of the rows, and the ones this process extracts (r, r + W, ...)."""

    def __init__(self, num_rows: int, chunk_size: int, world: int, rank: int):
        self.num_rows, self.world, self.rank = num_rows, world, rank
        self.num_chunks = math.ceil(num_rows / chunk_size)
        self.bounds = [(c * chunk_size, min(num_rows, (c + 1) * chunk_size)) for c in range(self.num_chunks)]
        self.mine = list(range(rank, self.num_chunks, world))


def _open_cache(
    config: ExtractionConfig, model, source: Source, image_processor, plan: _ChunkPlan, is_main: bool
):
    """The cache for these exact inputs (None without `cache_dir`); the main process describes it."""
    if config.cache_dir is None:
        return None
    cache = FeatureCache(
        config.cache_dir,
        {
            "format_version": 1,
            "model": model_digest(model),
            "dataset": source.fingerprint(),
            "num_rows": source.num_rows,
            "layer": config.layer,
            "pooling": config.pooling,
            "precision": config.precision,
            "image_processor": processor_config(image_processor),
            "chunk_size": config.chunk_size,
            **source.columns,
        },
    )
    if is_main:
        cache.write_settings(
            model_class=type(model).__name__,
            model_name_or_path=getattr(model, "name_or_path", "") or "",
            num_chunks=plan.num_chunks,
            features_dtype="float16 (float32 where a chunk exceeds the float16 range)",
        )
    return cache


def _extract_chunks(
    model, source: Source, todo, plan: _ChunkPlan, config: ExtractionConfig, device, cache, computed, bar
) -> int:
    """Run the model over the `todo` chunks (into the cache, or `computed`); returns the feature width."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    if getattr(model, "hf_device_map", None) is None:
        model.to(device)
    else:  # dispatched over devices by accelerate (device_map=...): inputs go where it starts
        device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            width = _forward(model, source.batches[[0]]["pixel_values"], device, config).shape[1]
            for c, features, labels in _run_chunks(model, source, todo, plan.bounds, config, device, bar):
                if cache is not None:
                    cache.write(c, features, labels, plan.bounds[c])
                else:
                    computed[c] = (features, labels)
    finally:
        model.train(was_training)
    return width


def _collect_chunks(plan: _ChunkPlan, cache, computed, has_labels: bool, width) -> list[Any]:
    """Every chunk in order: read back from the cache, all-gathered from the other ranks, or local."""
    if cache is not None:
        if plan.world > 1:
            torch.distributed.barrier()
        parts = []
        for c in range(plan.num_chunks):
            part = cache.read(c, plan.bounds[c], has_labels)
            if part is None:
                shared = " (with several processes, cache_dir must be a folder all of them share)"
                raise ValueError(
                    f"feature cache chunk {cache.path(c)} is missing or unreadable after extraction"
                    + (shared if plan.world > 1 else "")
                )
            parts.append(part)
        if plan.rank == 0:
            cache.remove_stale_temporaries()
        return parts
    if plan.world > 1:
        return all_gather_chunks(computed, plan.mine, plan.bounds, plan.world, width, has_labels)
    return [computed[c] for c in range(plan.num_chunks)]


def _forward(model, pixel_values, device, config: ExtractionConfig) -> torch.Tensor:
    dtype = AUTOCAST_DTYPES[config.precision]
    param = next(model.parameters(), None)
    pixel_values = pixel_values.to(device, non_blocking=True)
    if param is not None and param.dtype.is_floating_point and dtype is None:
        pixel_values = pixel_values.to(param.dtype)
    autocast = (
        torch.autocast(device_type=device.type, dtype=dtype)
        if dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        pooled = pooled_representation(model, pixel_values, layer=config.layer, pooling=config.pooling)
    return pooled.float()


def _run_chunks(model, source: Source, chunks, bounds, config: ExtractionConfig, device, bar):
    """Yield (chunk, features (n, D) float32 CPU, labels or None) for each chunk, in order."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    batches, owners = [], []
    for c in chunks:
        start, stop = bounds[c]
        for b in range(start, stop, config.batch_size):
            batches.append(list(range(b, min(stop, b + config.batch_size))))
            owners.append(c)
    if not batches:
        return
    loader = DataLoader(
        source.batches,
        batch_size=None,
        sampler=batches,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    total = sum(len(b) for b in batches)
    pending: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    with tqdm(total=total, desc="extracting features", unit="img", disable=not bar) as pbar:
        for i, batch in enumerate(loader):
            # Features stay on the device until the chunk is complete: no host sync per batch, so
            # the accelerator keeps working while the next batch is loaded.
            features = _forward(model, batch["pixel_values"], device, config)
            pending.append((features, batch.get("labels")))
            pbar.update(features.shape[0])
            if i + 1 == len(batches) or owners[i + 1] != owners[i]:
                labels = torch.cat([p[1] for p in pending]) if source.has_labels else None
                yield owners[i], torch.cat([p[0] for p in pending]).cpu(), labels
                pending = []
