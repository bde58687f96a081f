"""Which device a computation runs on: the one place that picks a default and checks a request."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch


def default_device() -> torch.device:
    """CUDA when a GPU is visible, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` as a `torch.device` that exists here, or `default_device()` for None.

    A name torch does not know, or an accelerator this machine does not have, is a ValueError that
    says what is available, before any work starts.
    """
    if device is None:
        return default_device()
    if isinstance(device, torch.device):
        resolved = device
    else:
        try:
            resolved = torch.device(str(device))
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'mps' (available here: "
                f"{', '.join(available_devices())})"
            ) from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r} was asked for but this machine has no CUDA GPU visible to torch "
                f"(available here: {', '.join(available_devices())}); use --device cpu"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(device)!r} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s)"
            )
    elif resolved.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ValueError(f"device {str(device)!r} is not available here; use --device cpu")
    elif resolved.type != "cpu":
        accelerator = getattr(torch, "accelerator", None)
        current = accelerator.current_accelerator() if accelerator and accelerator.is_available() else None
        if current is None or current.type != resolved.type:
            raise ValueError(
                f"device {str(device)!r} is not available here (available: {', '.join(available_devices())})"
            )
    return resolved


def available_devices() -> list[str]:
    """The device names this machine offers, for error messages."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


# What launchers set when they start several processes (`launched_alone_message`).
LAUNCH_SIZE_VARIABLES = ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "ACCELERATE_NUM_PROCESSES")


def launched_world_size(environ: Mapping[str, str] | None = None) -> int:
    """How many processes this one runs with, as its launcher set it up: ``WORLD_SIZE`` where the
    launcher also gave it a ``LOCAL_RANK`` (torchrun, accelerate launch --multi_gpu), else 1. The
    rule `iis_hf.features.distributed.process_layout` starts its process group by."""
    environ = os.environ if environ is None else environ
    if environ.get("LOCAL_RANK") is None:
        return 1
    return max(1, _count(environ.get("WORLD_SIZE")))


def launched_alone_message(
    world_size: int,
    environ: Mapping[str, str] | None = None,
    *,
    work: str = "runs",
    command: str = "...",
) -> str | None:
    """One line when the launch asked for several processes but this one `work`s alone (world size
    `world_size` is 1), naming what to launch with instead (`command`: what follows the launcher);
    None when there is nothing to say. Every command says it (`iis-hf score`, `compare`, `finetune`).

    `accelerate launch --cpu --num_processes N` (or ``--num_processes N`` with no GPU) runs accelerate's
    simple launcher: it starts one process, with ``ACCELERATE_USE_CPU`` and ``MASTER_ADDR`` but no
    ``WORLD_SIZE``, so the work runs in one process where N were asked for, and nothing else says so.
    """
    environ = os.environ if environ is None else environ
    if world_size > 1:
        return None
    asked = [f"{k}={environ[k]}" for k in LAUNCH_SIZE_VARIABLES if _count(environ.get(k)) > 1]
    if asked:
        return (
            f"the environment says several processes were launched ({', '.join(asked)}), but this one "
            f"{work} alone (world size 1): it did not see the distributed environment (RANK, MASTER_ADDR "
            "and MASTER_PORT are needed too); launch with torchrun or accelerate launch --multi_gpu"
        )
    if "ACCELERATE_USE_CPU" in environ and "MASTER_ADDR" in environ and "WORLD_SIZE" not in environ:
        return (
            "accelerate launch started this process alone although several were asked for (with --cpu, "
            f"or without GPUs, its --num_processes starts one process): it {work} in 1 process; for "
            f"several CPU processes use `accelerate launch --multi_gpu --num_processes N {command}` "
            f"or `torchrun --nproc_per_node N {command}`"
        )
    return None


def _count(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0
