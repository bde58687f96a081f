"""Feature rows for head training: a tensor in memory or a `FeatureStore` on disk, read in chunks.

Head training reads its features in two ways: in order, chunk by chunk (to project every row onto
the concepts once, and to evaluate), and at random (training batches). `Rows` gives both for a
tensor and for a memory-mapped store alike, so the trainer does not care where features live.
"""

from __future__ import annotations

import torch

CHUNK = 16384
# Concept activations of features read from disk are kept in host memory up to this size; beyond
# it each batch projects its own rows, so memory follows the batch, not the data set.
KEPT_ACTIVATIONS_BYTES = 32 << 20


class Rows:
    """Features held in memory (a tensor) or on disk (a `FeatureStore`), read as float32."""

    def __init__(self, data, index: torch.Tensor | None = None):
        self.data, self.index = data, index  # index: an optional subset of rows, sorted
        self.is_store = not torch.is_tensor(data)

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else self.data.shape[0]

    @property
    def dim(self) -> int:
        return self.data.shape[1]

    def subset(self, index: torch.Tensor) -> Rows:
        return Rows(self.data, index if self.index is None else self.index[index])

    def chunks(self, size: int = CHUNK):
        """(start, float32 chunk) over the rows in order; a store's pages are released as it goes."""
        if self.index is not None:
            for start in range(0, len(self), size):
                yield start, self.gather(torch.arange(start, min(start + size, len(self))))
            return
        for start in range(0, len(self), size):
            stop = min(start + size, len(self))
            yield start, self.data.chunk(start, stop) if self.is_store else self.data[start:stop].float()

    def gather(self, positions: torch.Tensor) -> torch.Tensor:
        rows = positions if self.index is None else self.index[positions.cpu()]
        if self.is_store:
            return self.data.rows(rows.cpu())
        return self.data[rows.to(self.data.device)].float()

    def on(self, device: torch.device) -> bool:
        """Whether the rows are a tensor on `device` (so batches can be gathered there)."""
        return not self.is_store and self.index is None and self.data.device.type == device.type

    def release(self) -> None:
        if self.is_store:
            self.data.release_all()

    def to_device(self, device: torch.device) -> Rows:
        """Copy to the accelerator in float16 when it fits comfortably, so batches gather there."""
        if device.type != "cuda":
            return self
        needed = len(self) * self.dim * 2
        free, _ = torch.cuda.mem_get_info(device)
        if needed > free // 3:
            return self
        resident = torch.empty(len(self), self.dim, dtype=torch.float16, device=device)
        for start, chunk in self.chunks():
            resident[start : start + chunk.shape[0]] = chunk.to(device, non_blocking=True)
        return Rows(resident)


def keeps_activations(rows: Rows, num_concepts: int, device: torch.device) -> bool:
    """Whether the rows' normalised concept activations are computed once and kept: for features in
    memory (the activations are no larger than the features when C <= D) or on an accelerator, and
    for a `FeatureStore` on the CPU while they take at most `KEPT_ACTIVATIONS_BYTES`."""
    if not rows.is_store or device.type != "cpu":
        return True
    return len(rows) * num_concepts * 4 <= KEPT_ACTIVATIONS_BYTES


@torch.no_grad()
def project(normalize, rows: Rows, device: torch.device) -> torch.Tensor:
    """Normalised concept activations of all rows, computed once, chunk by chunk, on `device`."""
    out = None
    for start, chunk in rows.chunks():
        z = normalize(chunk.to(device))  # (b, C), or (R, b, C) for learned concepts
        if out is None:
            out = torch.empty(*z.shape[:-2], len(rows), z.shape[-1], dtype=z.dtype, device=device)
        out[..., start : start + z.shape[-2], :] = z
    return out if out is not None else torch.empty(0, device=device)


@torch.no_grad()
def feature_moments(rows: Rows) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std (float64 accumulation, chunked); constant dimensions get std 1."""
    total = total_sq = None
    for _, chunk in rows.chunks():
        chunk = chunk.to(torch.float64)
        if total is None:
            total = torch.zeros(rows.dim, dtype=torch.float64, device=chunk.device)
            total_sq = torch.zeros_like(total)
        total += chunk.sum(0)
        total_sq += (chunk * chunk).sum(0)
    assert total is not None and total_sq is not None, "feature moments of no rows"
    total, total_sq = total.cpu(), total_sq.cpu()
    n = max(len(rows), 1)
    mean = total / n
    std = (total_sq / n - mean * mean).clamp_min(0).sqrt()
    std[std < 1e-8] = 1.0
    return mean.float(), std.float()
