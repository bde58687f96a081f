"""Replay head training's step (gather, forward, backward, Adam) from a CUDA graph.

With the published batch of 1024 an ImageNet epoch is about 1,250 small steps, and on a GPU the
step is bound by the host launching some 80 kernels, not by the device (profiled on an H200: the
device was busy 0.89 s of a 2.2 s epoch). A CUDA graph launches the whole step at once. The step
itself is unchanged: the graph records the same kernels the eager step runs, reading the batch's
row indices from a fixed buffer that each step overwrites.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

WARMUP_STEPS = 3  # eager steps (real training steps) before capture: lazy state is created by then


class GraphedStep:
    """Call with a batch's row indices (a CUDA tensor of `batch_size`); runs `step(indices)`.

    The first `WARMUP_STEPS` calls run eagerly on a side stream (as CUDA graph capture requires),
    the next one captures `step` and replays it, and every later call only copies the indices and
    replays. If capture fails, a warning says so and every later call runs eagerly.
    """

    def __init__(self, step: Callable[[torch.Tensor], None], batch_size: int, device: torch.device):
        self.step = step
        self.indices = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.calls = 0
        self.failed = False

    def __call__(self, indices: torch.Tensor) -> None:
        self.calls += 1
        if self.failed:
            self.step(indices)
            return
        if self.calls <= WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.step(indices)
            torch.cuda.current_stream().wait_stream(side)
            return
        self.indices.copy_(indices)
        if self.graph is None:
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    self.step(self.indices)
            except RuntimeError as error:  # an op that cannot be captured: stay eager
                warnings.warn(
                    f"CUDA graph capture of the head-training step failed ({error}); running eagerly",
                    stacklevel=2,
                )
                self.failed = True
                self.step(indices)
                return
            self.graph = graph
        self.graph.replay()
