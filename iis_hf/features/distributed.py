"""Several processes extracting one data set: who does which chunk, and how all get every chunk.

Under ``accelerate launch`` / ``torchrun`` the rows are split into fixed-size chunks (independent of
the number of processes); rank r extracts chunks r, r+W, ... and the chunks are then shared, through
a cache folder all ranks see or an all-gather, so that every rank holds all features in dataset order.
What needs doing once (training the interpretation heads) runs on rank 0 alone (`on_main_process`):
the others wait for its result, so W ranks do not train W copies of the same heads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import torch

from ..errors import first_line

T = TypeVar("T")
# How long the other ranks wait for rank 0's work (`on_main_process`). The default collective timeout
# (10 to 30 minutes) is shorter than training heads on ImageNet-scale features; a rank 0 that dies is
# noticed by the launcher (torchrun / accelerate stop every rank when one fails), not by this timeout.
MAIN_PROCESS_WAIT = timedelta(days=7)


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


def current_layout() -> tuple[int, int]:
    """(number of processes, this one's rank) of the process group already set up; (1, 0) without
    one. Unlike `process_layout` it starts nothing."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def on_main_process(
    compute: Callable[[], T], send: Callable[[T], Any] = lambda value: value, what: str = "its work"
) -> Any:
    """`compute()` on rank 0 only; every other rank gets ``send(value)`` from it (picklable), and waits
    for it as long as rank 0 works (`MAIN_PROCESS_WAIT`, over a CPU group of its own). On one process
    this is `compute()`.

    Every rank must call it (it is a collective). When rank 0 fails, it re-raises its own error and the
    others raise one naming it (a ValueError stays a ValueError), instead of waiting forever.
    """
    import torch.distributed as dist

    world, rank = current_layout()
    if world == 1:
        return compute()
    group = dist.new_group(backend="gloo", timeout=MAIN_PROCESS_WAIT)
    if rank == 0:
        try:
            value = compute()
        except BaseException as err:
            failure = ("error", isinstance(err, ValueError), f"{type(err).__name__}: {first_line(err)}")
            dist.broadcast_object_list([failure], src=0, group=group)
            raise
        dist.broadcast_object_list([("ok", send(value))], src=0, group=group)
        return value
    received: list[Any] = [None]
    dist.broadcast_object_list(received, src=0, group=group)
    status, *payload = received[0]
    if status == "ok":
        return payload[0]
    is_value_error, message = payload
    error = ValueError if is_value_error else RuntimeError
    raise error(f"rank 0 failed while {what} (see its output): {message}")
