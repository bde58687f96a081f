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
import warnings
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from torch import nn

from ..config import ExtractionConfig
from ..data import as_map_dataset
from ..progress import progress_bar
from .backbones import (
    as_vision_model,
    library_versions,
    load_image_processor,
    load_vision_model,
    model_digest,
    pooled_representation,
    processor_backend,
)
from .cache import CACHE_FORMAT_VERSION, FeatureCache, processor_config
from .distributed import all_gather_chunks, process_layout
from .preprocess import TensorPreprocessor, tensor_path, to_device
from .sources import ImageProcessors, Source, auto_num_workers, prepare_source
from .store import FeatureStoreWriter

DEFAULT_CHUNK_SIZE = ExtractionConfig().chunk_size
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class ExtractedFeatures(NamedTuple):
    features: Any  # (N, D) float32 tensor on the CPU, in dataset order; or a float16 `FeatureStore`
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
    progress: bool | str = True,
    feature_store: str | os.PathLike | None = None,
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
            ("fp32", "bf16" or "fp16" autocast; features are returned as float32), `preprocessing`
            ("processor": each image through the image processor; "tensor": resized, cropped and
            normalised as batches on the model's device, where `iis_hf.features.preprocess` covers the
            processor, pixel values at most two uint8 levels from its), `num_workers`
            (DataLoader workers decoding and preprocessing images while the model runs; None:
            chosen by `iis_hf.features.auto_num_workers` from the number of images and the device;
            never a change to the features), `chunk_size` (rows per chunk,
            the unit of distribution and caching, independent of the number of processes) and
            `cache_dir` (features cached under ``cache_dir/<key>/`` as safetensors chunks, exactly:
            a cached run returns the features an uncached one does, bit for bit;
            keyed by the model's config and weights, the dataset fingerprint, the image processor
            and its backend (PIL or torchvision), the versions of torch, transformers and
            torchvision, the columns, layer, pooling, precision and chunk size; a rerun, or a run after an
            interruption, reuses finished chunks, each checked against the checksum and record it was
            written with: one that fails is extracted again, with a `FeatureCacheWarning`; with several
            processes the folder must be shared).
        image_processor: defaults to `AutoImageProcessor.from_pretrained(model.name_or_path)`.
        image_column: defaults to the column whose feature is `datasets.Image`, else "image" / "img".
        label_column: defaults to the `ClassLabel` column, else "label" / "labels"; none found -> labels None.
        device: defaults to accelerate's ``PartialState().device`` (each process's own device).
        progress: show a progress bar on the main process (`iis_hf.progress`); a string labels it.
        feature_store: a file to stream the features into, chunk by chunk, as a float16
            `FeatureStore` (memory-mapped; `compute_iis` reads it in batches): memory then follows
            the chunk, not the data set. The features are returned as that store.

    Returns:
        ExtractedFeatures(features (N, D) float32 CPU, labels (N,) int64 or None). Under ``accelerate
        launch`` / ``torchrun`` each process extracts its share and every process returns the whole.
    """
    return extract_features_of_models(
        [model],
        dataset,
        config=config,
        image_processors=[image_processor],
        image_column=image_column,
        label_column=label_column,
        device=device,
        progress=progress,
        feature_stores=[feature_store],
        **settings,
    )[0]


def extract_features_of_models(
    models,
    dataset,
    *,
    config: ExtractionConfig | None = None,
    image_processors=None,
    image_column: str | None = None,
    label_column: str | None = None,
    device: str | torch.device | None = None,
    progress: bool | str = True,
    feature_stores=None,
    **settings,
) -> list[ExtractedFeatures]:
    """`extract_features` for several models over one dataset, decoding each image once.

    Each batch of images is decoded once, turned into pixel values by every model's own image
    processor (identical processors run once), and fed to every model that still needs it: a model
    whose features for a chunk are already in its cache (`cache_dir`; one cache per model, keyed as
    in `extract_features`) skips that chunk. All models sit on `device` together. Returns one
    `ExtractedFeatures` per model, in order; each equals what `extract_features` gives that model.
    `progress` may be a string: the bar's label. `feature_stores` (one file or None per model) streams
    a model's features into a float16 `FeatureStore` (see `extract_features`).
    """
    config = (
        dataclasses.replace(config or ExtractionConfig(), **settings)
        if settings
        else (config or ExtractionConfig())
    )
    models = [_as_model(model) for model in models]
    if not models:
        raise ValueError("no models to extract features with")
    processors = list(image_processors) if image_processors is not None else [None] * len(models)
    if len(processors) != len(models):
        raise ValueError(f"got {len(processors)} image processors for {len(models)} models")
    processors = [load_image_processor(model, p) for model, p in zip(models, processors)]
    dataset = as_map_dataset(dataset)  # a datasets stream (IterableDataset): its rows, read once
    runners = _preprocessors(processors, config.preprocessing)
    every = ImageProcessors(runners)
    source = prepare_source(dataset, every, image_column, label_column)
    world, rank, default_device = process_layout()
    plan = _ChunkPlan(source.num_rows, config.chunk_size, world, rank)
    caches = [
        _open_cache(config, model, source, processor, plan, is_main=rank == 0)
        for model, processor in zip(models, processors)
    ]
    num_classes = _class_count(dataset, source)
    todo = [
        plan.mine
        if cache is None
        else cache.to_compute(plan.mine, plan.bounds, source.has_labels, num_classes)
        for cache in caches
    ]
    # Every process runs a model when anything is left to do for it, even with no chunk of its own: a
    # bad argument then fails on all ranks alike (no rank waits forever at a barrier), and the feature
    # width is known for the all-gather.
    running = [
        m for m, cache in enumerate(caches) if todo[m] or cache is None or not cache.complete(plan.num_chunks)
    ]
    with _store_writers(feature_stores, len(models), source) as writers:
        # Without a cache, on one process, a model's chunks go straight into its store as they come.
        computed: list[Any] = [
            _StoreSink(writer) if writer is not None and cache is None and world == 1 else {}
            for writer, cache in zip(writers, caches)
        ]
        widths: dict[int, int] = {}
        if running:
            label = progress if isinstance(progress, str) else _bar_label(len(models))
            widths = _extract_chunks(
                models, runners, every, dataset, (image_column, label_column), source, running, todo, plan,
                config, device if device is not None else default_device, caches, computed,
                bool(progress) and rank == 0, label,
            )  # fmt: skip
        return [
            _features_in_order(
                plan, cache, computed[m], writers[m], source.has_labels, widths.get(m), num_classes
            )
            for m, cache in enumerate(caches)
        ]


@contextlib.contextmanager
def _store_writers(paths, num_models: int, source: Source):
    """One `FeatureStoreWriter` (or None) per model; what a failed run began writing is removed."""
    paths = list(paths) if paths is not None else [None] * num_models
    if len(paths) != num_models:
        raise ValueError(f"got {len(paths)} feature stores for {num_models} models")
    writers = [
        FeatureStoreWriter(p, source.num_rows, source.has_labels) if p is not None else None for p in paths
    ]
    try:
        yield writers
    finally:
        for writer in writers:
            if writer is not None:
                writer.abort()


def _features_in_order(
    plan: _ChunkPlan, cache, computed, writer, has_labels: bool, width, num_classes: int | None
) -> ExtractedFeatures:
    """One model's features in dataset order: whole in memory (float32), or in its `FeatureStore`
    (written as they came, or now from its cache / the gathered chunks, chunk by chunk)."""
    if isinstance(computed, _StoreSink):
        store = writer.finish()
        return ExtractedFeatures(store, store.labels)
    parts = _collect_chunks(plan, cache, computed, has_labels, width, num_classes)
    if writer is not None:
        for features, labels in parts:
            writer.append(features, labels)
        store = writer.finish()
        return ExtractedFeatures(store, store.labels)
    parts = list(parts)
    features = torch.cat([p[0] for p in parts]).float()
    return ExtractedFeatures(features, torch.cat([p[1] for p in parts]) if has_labels else None)


class _StoreSink:
    """Where `_extract_chunks` puts a model's chunks when they go straight into its feature store:
    chunks come in order on one process without a cache, so each is written and dropped at once."""

    def __init__(self, writer: FeatureStoreWriter):
        self.writer = writer

    def __setitem__(self, chunk: int, values: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        self.writer.append(*values)


def _preprocessors(processors: list, preprocessing: str) -> list:
    """What turns each model's images into pixel values: its processor, or the tensor path
    (`iis_hf.features.preprocess`) where `preprocessing` asks for it and it covers the processor."""
    if preprocessing == "processor":
        return list(processors)
    runners = []
    for processor in processors:
        runner = tensor_path(processor)
        if runner is None:
            warnings.warn(
                f"preprocessing='tensor' does not cover {type(processor).__name__} with these settings: "
                "its images are prepared by the image processor itself",
                stacklevel=3,
            )
        runners.append(runner or processor)
    return runners


def _bar_label(num_models: int) -> str:
    return "extracting features" + (f" ({num_models} models)" if num_models > 1 else "")


def _class_count(dataset, source: Source) -> int | None:
    """The number of classes of the label column's `ClassLabel` (None: not known), which bounds the
    labels of a cached chunk."""
    label_column = source.columns.get("label_column")
    feature = getattr(dataset, "features", None) or {}
    names = getattr(feature.get(label_column), "names", None) if label_column else None
    return len(names) if names else None


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
            "format_version": CACHE_FORMAT_VERSION,
            "model": model_digest(model),
            "dataset": source.fingerprint(),
            "num_rows": source.num_rows,
            "layer": config.layer,
            "pooling": config.pooling,
            "precision": config.precision,
            "image_processor": processor_config(image_processor),
            # PIL or torchvision, and the libraries' versions: the same settings give other pixels
            "image_processor_backend": processor_backend(image_processor),
            "versions": library_versions(),
            "chunk_size": config.chunk_size,
            **source.columns,
            # the tensor path's pixel values may differ from the processor's by a uint8 level or two
            **({"preprocessing": config.preprocessing} if config.preprocessing != "processor" else {}),
        },
    )
    if is_main:
        cache.write_settings(
            model_class=type(model).__name__,
            model_name_or_path=getattr(model, "name_or_path", "") or "",
            num_chunks=plan.num_chunks,
            features_dtype="as extracted: float32, or float16 / bfloat16 where a chunk's values fit exactly",
        )
    return cache


def _extract_chunks(
    models, processors, every: ImageProcessors, dataset, columns, source: Source, running, todo, plan: _ChunkPlan,
    config: ExtractionConfig, device, caches, computed, bar: bool, label: str,
) -> dict[int, int]:  # fmt: skip
    """Run the `running` models over their `todo` chunks (into their caches, or `computed`).

    Chunks are grouped by the set of models that need them; each group is read once, with exactly
    those models' image processors. Returns each running model's feature width.
    """
    device = torch.device(device)
    devices, was_training = {}, {}
    for m in running:
        model = models[m]
        was_training[m] = model.training
        model.eval()
        if getattr(model, "hf_device_map", None) is None:
            model.to(device)
            devices[m] = device
        else:  # dispatched over devices by accelerate (device_map=...): inputs go where it starts
            devices[m] = next(model.parameters()).device
    groups: dict[tuple[int, ...], list[int]] = {}
    for c in plan.mine:
        needing = tuple(m for m in running if c in todo[m])
        if needing:
            groups.setdefault(needing, []).append(c)
    total = sum(plan.bounds[c][1] - plan.bounds[c][0] for chunks in groups.values() for c in chunks)
    options = loader_options(total, config.num_workers, [devices[m] for m in running], source.decodes)
    _prepare_where_decoded(processors, [devices[m] for m in running])
    widths = {}
    try:
        with (
            torch.inference_mode(),
            progress_bar(total=total, desc=label, unit="img", enabled=bar and total > 0) as pbar,
        ):
            first = source.batches[[0]]["pixel_values"]
            for m in running:
                pixels = first[every.slots[m]] if isinstance(first, list) else first
                widths[m] = _forward(models[m], pixels, devices[m], config).shape[1]
            for group, chunks in groups.items():
                if len(group) == len(models):
                    group_source, group_processors = source, every
                else:  # read these chunks with the processors of the models that need them only
                    group_processors = ImageProcessors([processors[m] for m in group])
                    group_source = prepare_source(dataset, group_processors, *columns)
                group_models = {
                    m: (models[m], devices[m], group_processors.slots[i]) for i, m in enumerate(group)
                }
                for c, features, labels in _run_chunks(
                    group_models, group_source, chunks, plan.bounds, config, pbar, options
                ):
                    for m, values in features.items():
                        if caches[m] is not None:
                            caches[m].write(c, values, labels, plan.bounds[c])
                        else:
                            computed[m][c] = (values, labels)
    finally:
        for m in running:
            models[m].train(was_training[m])
    return widths


def _prepare_where_decoded(processors, devices) -> None:
    """With every model on the CPU, the tensor path's device is the CPU: its resize then runs where
    the images are decoded (in the workers, overlapped with the forward), with the same result."""
    if all(torch.device(d).type == "cpu" for d in devices):
        for runner in processors:
            if isinstance(runner, TensorPreprocessor):
                runner.prepare_on = torch.device("cpu")


def _collect_chunks(
    plan: _ChunkPlan, cache, computed, has_labels: bool, width, num_classes: int | None
) -> Iterable[Any]:
    """Every chunk in order: read back from the cache (checked; one chunk at a time, as it is
    iterated), all-gathered from the other ranks, or local."""
    if cache is not None:
        if plan.world > 1:
            torch.distributed.barrier()
        if width is not None:  # the model ran: its width is the one every chunk must have
            cache.width = width
        return _cached_chunks(plan, cache, has_labels, num_classes)
    if plan.world > 1:
        return all_gather_chunks(computed, plan.mine, plan.bounds, plan.world, width, has_labels)
    return [computed[c] for c in range(plan.num_chunks)]


def _cached_chunks(plan: _ChunkPlan, cache, has_labels: bool, num_classes: int | None):
    """The cache's chunks in order, each read (and checked) when it is needed."""
    for c in range(plan.num_chunks):
        yield cache.read(c, plan.bounds[c], has_labels, num_classes, several_processes=plan.world > 1)
    if plan.rank == 0:
        cache.remove_stale_temporaries()


def _forward(model, pixel_values, device, config: ExtractionConfig) -> torch.Tensor:
    dtype = AUTOCAST_DTYPES[config.precision]
    param = next(model.parameters(), None)
    pixel_values = to_device(pixel_values, device)  # prepared there on the tensor path
    if param is not None and param.dtype.is_floating_point and dtype is None:
        pixel_values = pixel_values.to(param.dtype)
    autocast = (
        torch.autocast(device_type=device.type, dtype=dtype)
        if dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        pooled = pooled_representation(model, pixel_values, layer=config.layer, pooling=config.pooling)
    return compact(pooled.float())


def compact(features: torch.Tensor) -> torch.Tensor:
    """`features` in storage of their own size: a pending batch keeps only its features alive.

    A pooled representation can be a view of the whole hidden state (ViT's CLS token is
    ``last_hidden_state[:, 0]``: 1/197 of the storage it keeps alive until its chunk is complete).
    ``.contiguous()`` is not enough: a (1, D) view counts as contiguous yet keeps all of its storage.
    """
    if features.untyped_storage().nbytes() > features.numel() * features.element_size():
        return features.clone(memory_format=torch.contiguous_format)
    return features


def loader_options(num_images: int, requested: int | None, devices, decodes: bool = True) -> dict[str, Any]:
    """The DataLoader's settings for `num_images` read for models on `devices`.

    Workers (`auto_num_workers` where `requested` is None) decode and preprocess the next batches
    while the model runs; on CUDA batches are pinned, so the copies to the device (``non_blocking``
    in `to_device`) overlap the forward too.
    """
    devices = [torch.device(d) for d in devices]
    accelerator = next((d for d in devices if d.type != "cpu"), torch.device("cpu"))
    return {
        "num_workers": auto_num_workers(num_images, requested, device=accelerator, decodes=decodes),
        "pin_memory": any(d.type == "cuda" for d in devices),
        "persistent_workers": False,
    }


def _run_chunks(
    group_models, source: Source, chunks, bounds, config: ExtractionConfig, pbar, options: dict[str, Any]
):
    """Yield (chunk, {model index: features (n, D) float32 CPU}, labels or None) for each chunk, in order.

    `group_models` maps a model's index to (model, device, where its pixel values sit in a batch's
    list of them: identical processors share one); `options` are the DataLoader's (`loader_options`).
    """
    from torch.utils.data import DataLoader

    batches, owners = [], []
    for c in chunks:
        start, stop = bounds[c]
        for b in range(start, stop, config.batch_size):
            batches.append(list(range(b, min(stop, b + config.batch_size))))
            owners.append(c)
    if not batches:
        return
    loader = DataLoader(source.batches, batch_size=None, sampler=batches, **options)
    pending: dict[int, list[torch.Tensor]] = {m: [] for m in group_models}
    pending_labels: list[torch.Tensor] = []
    for i, batch in enumerate(loader):
        # Features stay on the device until the chunk is complete: no host sync per batch, so
        # the accelerator keeps working while the next batch is loaded.
        pixel_values = batch["pixel_values"]
        for m, (model, device, slot) in group_models.items():
            pixels = pixel_values[slot] if isinstance(pixel_values, list) else pixel_values
            pending[m].append(_forward(model, pixels, device, config))
        if source.has_labels:
            pending_labels.append(batch["labels"])
        pbar.update(len(batches[i]))
        if i + 1 == len(batches) or owners[i + 1] != owners[i]:
            labels = torch.cat(pending_labels) if source.has_labels else None
            yield owners[i], {m: torch.cat(p).cpu() for m, p in pending.items()}, labels
            pending = {m: [] for m in group_models}
            pending_labels = []
