"""Which device a computation runs on: the one place that picks a default and checks a request."""

from __future__ import annotations

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
