"""Several processes extracting one data set: who does which chunk, and how all get every chunk.

Under ``accelerate launch`` / ``torchrun`` the rows are split into fixed-size chunks (independent of
the number of processes); rank r extracts chunks r, r+W, ... and the chunks are then shared, through
a cache folder all ranks see or an all-gather, so that every rank holds all features in dataset order.
"""

from __future__ import annotations

import os
from typing import Any

import torch


def process_layout() -> tuple[int, int, torch.device]:
    """(number of processes, this process's rank, its default device) for the current run.

    accelerate's `PartialState` sets up the process group under ``accelerate launch`` / ``torchrun``.
    On a machine without an accelerator it only does so when asked for the CPU, so a torchrun job there
    is detected from ``WORLD_SIZE`` and started with ``PartialState(cpu=True)``, or a gloo group when
    accelerate's state already exists without it. A process group made by the caller is used as it is.
    """
    import torch.distributed as dist
    from accelerate import PartialState

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("LOCAL_RANK") is not None
    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    state = PartialState(cpu=launched and not has_accelerator)
    if launched and dist.is_available() and not dist.is_initialized():
        # accelerate's state was created earlier without cpu=True: set up the CPU group ourselves.
        dist.init_process_group(backend="gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank(), state.device
    return 1, 0, state.device


def all_gather_chunks(
    computed: dict[int, tuple[torch.Tensor, torch.Tensor | None]],
    my_chunks: list[int],
    bounds: list[tuple[int, int]],
    world: int,
    width: int,
    has_labels: bool,
) -> list[Any]:
    """Share every rank's chunks with every rank; returns the list of all chunks, in order."""
    import torch.distributed as dist

    comm_device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        comm_device = torch.device("cuda", torch.cuda.current_device())
    num_chunks = len(bounds)
    owned = [list(range(r, num_chunks, world)) for r in range(world)]
    sizes = [sum(bounds[c][1] - bounds[c][0] for c in chunks) for chunks in owned]
    longest = max(sizes)

    def padded(tensors: list[torch.Tensor], trailing: tuple[int, ...], dtype) -> torch.Tensor:
        out = torch.zeros((longest, *trailing), dtype=dtype)
        if tensors:
            joined = torch.cat(tensors)
            out[: joined.shape[0]] = joined
        return out.to(comm_device)

    def gather(local: torch.Tensor) -> list[torch.Tensor]:
        bucket = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(bucket, local)
        return [t.cpu() for t in bucket]

    mine = [computed[c] for c in my_chunks]
    all_features = gather(padded([m[0] for m in mine], (width,), torch.float32))
    all_labels: list[torch.Tensor] | None = None
    if has_labels:
        labels_of = [m[1] for m in mine if m[1] is not None]
        assert len(labels_of) == len(mine), "a chunk of a labelled data set was extracted without labels"
        all_labels = gather(padded(labels_of, (), torch.int64))
    parts: list[Any] = [None] * num_chunks
    for r in range(world):
        offset = 0
        for c in owned[r]:
            n = bounds[c][1] - bounds[c][0]
            labels = all_labels[r][offset : offset + n] if all_labels is not None else None
            parts[c] = (all_features[r][offset : offset + n], labels)
            offset += n
    return parts
