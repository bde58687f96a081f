"""The heads' optimiser and the precision of their matrix products, chosen per device."""

from __future__ import annotations

import torch

from ..config import HEAD_PRECISIONS


def adam(params, lr: float, device: torch.device, graphs: bool) -> torch.optim.Adam:
    """Adam as published; on CUDA fused (one kernel for all parameters), and for CUDA graphs also
    capturable with the learning rate as a device tensor, so the per-epoch decay reaches the graph."""
    if device.type != "cuda":
        return torch.optim.Adam(params, lr=lr)
    if graphs:
        return torch.optim.Adam(params, lr=torch.tensor(lr, device=device), fused=True, capturable=True)
    return torch.optim.Adam(params, lr=lr, fused=True)


CPU_BF16_MIN_ROWS = 50_000  # below this, bf16 autocast on the CPU costs more than it saves


def head_matmul_dtype(
    precision: str, device: torch.device, num_rows: int | None = None
) -> torch.dtype | None:
    """bfloat16 for the heads' and the probe's matrix products where it pays ("auto"): on CUDA with
    bf16, or on a CPU with AVX512-BF16/AMX for at least `CPU_BF16_MIN_ROWS` training rows (there the
    heads' batched products measured 3x faster than in float32; on a few thousand rows the CPU's
    bf16 kernels were slower, up to 5x for a probe on 225 rows); None means float32. Elementwise
    work, sparsification thresholds, losses and optimizer state stay in float32."""
    if precision not in HEAD_PRECISIONS:
        raise ValueError(f"precision must be one of {HEAD_PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        fast = any(getattr(torch.cpu, name, lambda: False)() for name in checks)
        large = num_rows is None or num_rows >= CPU_BF16_MIN_ROWS
        return torch.bfloat16 if fast and large else None
    return None
