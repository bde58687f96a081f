"""Sparsification: keep the strongest concept activations of each sample, zero the rest.

At ratio rho with C concepts, the threshold is the ``int(C * rho)``-th smallest magnitude (0-based)
and activations at or below it are dropped (``t = sort(|a|)[int(C * rho)]``; keep ``|a| > t``, as
published). The thresholds are exact selections, not sorts, because they dominate head training.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch


def sparsify(activations: torch.Tensor, sparsity_ratio: float) -> torch.Tensor:
    """Zero every activation whose magnitude is <= the ``int(C * rho)``-th smallest (0-based) one.

    With distinct magnitudes this drops exactly ``int(C * rho) + 1`` of the C concepts, as the
    published implementation does (``t = sort(|a|)[int(C * rho)]``; keep ``|a| > t``).
    """
    magnitude = activations.abs()
    threshold = kth_smallest(magnitude, int(activations.shape[-1] * sparsity_ratio))
    return activations * (magnitude > threshold)


def kth_smallest(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """The (k+1)-th smallest value along the last dimension, keeping it (a threshold, no gradient).

    On the CPU NumPy's introselect (`np.partition`) is used: measured 3x faster than
    `torch.kthvalue` on 1024 x 200 (0.4 ms vs 1.1-1.4 ms), which dominates head training there.
    """
    if k == 0:
        return magnitude.detach().amin(dim=-1, keepdim=True)
    if magnitude.device.type == "cpu" and magnitude.dtype in (torch.float32, torch.float64):
        values = np.partition(magnitude.detach().contiguous().numpy(), k, axis=-1)[..., k : k + 1]
        return torch.from_numpy(values)
    return magnitude.kthvalue(k + 1, dim=-1, keepdim=True).values.detach()


def stacked_thresholds(magnitude: torch.Tensor, ks: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """`kth_smallest` of every slice r of a (R, B, C) stack at its own k.

    On the CPU, NumPy's selections run in a small thread pool (they release the GIL), so the cores
    share them. On an accelerator, where head training is bound by kernel launches, the whole stack
    is sorted in one segmented sort and each ratio's k-th value gathered, instead of R selections;
    pass `ks` as a tensor on that device so no host-to-device copy (a stream sync) happens per batch.
    """
    if magnitude.device.type != "cpu":
        return sorted_thresholds(magnitude, ks)
    ks = ks.tolist() if torch.is_tensor(ks) else ks
    if len(ks) > 1 and magnitude[0].numel() >= 65536:
        return torch.stack(
            list(_selection_pool().map(lambda r: kth_smallest(magnitude[r], int(ks[r])), range(len(ks))))
        )
    return torch.stack([kth_smallest(magnitude[r], int(k)) for r, k in enumerate(ks)])


def sorted_thresholds(magnitude: torch.Tensor, ks: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """`stacked_thresholds` by one sort of the (R, B, C) stack and a gather of each ratio's k."""
    index = torch.as_tensor(ks, device=magnitude.device).view(-1, 1, 1)
    index = index.expand(magnitude.shape[0], *magnitude.shape[1:-1], 1)
    return magnitude.detach().sort(dim=-1).values.gather(-1, index)


@functools.cache
def _selection_pool():
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(
        max_workers=max(1, min(4, torch.get_num_threads())), thread_name_prefix="iis-kth"
    )


def sparsify_stacked(
    activations: torch.Tensor, ks: Sequence[int] | torch.Tensor, threshold_gradient: bool = False
) -> torch.Tensor:
    """`sparsify` for a stack (R, B, C) where ratio r keeps entries above its ``ks[r]``-th magnitude.

    One k-th value selection per ratio, which is exact and much cheaper than sorting the whole
    stack (CPU, 8 x 1024 x 200: 3.4 ms with `kth_smallest` vs 41.6 ms for one sort).
    `threshold_gradient=True` gives the published implementation's backward (`ThresholdTieMask`).
    """
    magnitude = activations.abs()
    thresholds = stacked_thresholds(magnitude, ks)
    if threshold_gradient and torch.is_grad_enabled() and activations.requires_grad:
        return ThresholdTieMask.apply(activations, thresholds)
    return activations * (magnitude > thresholds)


class ThresholdTieMask(torch.autograd.Function):
    """The published code's sparsification: the same forward as the hard mask, another backward.

    The published mask is built from ``max(|a| - t, 0)`` (a value of 0 exactly at the threshold
    element, since t is that element's magnitude) and then set to 1 wherever it is non-zero.
    Forward, that is ``a * (|a| > t)``. Backward, the maximum splits the gradient of a tie
    evenly between its two arguments, so the threshold element, which is dropped, still passes
    ``0.5 * |a|`` times the incoming gradient (every other dropped element passes 0, every kept
    one passes the incoming gradient). The "paper" protocol trains with this to reproduce the
    published numbers; the default protocol uses the hard mask (no gradient through a dropped
    element).
    """

    @staticmethod
    def forward(ctx, activations: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
        magnitude = activations.abs()
        kept = magnitude > thresholds
        tie = magnitude == thresholds
        ctx.save_for_backward(kept, tie, magnitude)
        return activations * kept

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        kept, tie, magnitude = ctx.saved_tensors
        return grad_output * (kept + 0.5 * magnitude * tie), None
