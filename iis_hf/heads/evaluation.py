"""How many rows the probe and each ratio's head classify correctly, read in chunks, so that features
held in a memory-mapped store (or activations projected per chunk) never load whole."""

from __future__ import annotations

import contextlib

import torch

from .rows import CHUNK, Rows

EVAL_CHUNK = 2048  # small enough for the per-ratio working set to stay in cache


@torch.no_grad()
def evaluate(
    probe, stack, rows: Rows, normalized, labels, device, autocast=None
) -> tuple[float, list[float]]:
    """Top-1 accuracy of the probe and (when `stack` is given) of each ratio's head."""
    probe_correct, head_correct = correct_rows(probe, stack, rows, normalized, labels, device, autocast)
    n = len(rows)
    return probe_correct.sum().item() / n, (head_correct.sum(-1).double() / n).tolist()


@torch.no_grad()
def correct_rows(
    probe, stack, rows: Rows, normalized, labels, device, autocast=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which rows the probe (N,) and each ratio's head (R, N) classify correctly, in chunks.

    `normalized` holds the rows' precomputed normalised activations, or is None: then each chunk of
    rows is projected as it is read (learned concepts through the stack's current arg-max selection;
    fixed ones whose activations were not kept, `keeps_activations`), so memory follows the chunk.
    """
    was_training = stack.training if stack is not None else False
    if stack is not None and normalized is None:
        stack.eval()
    probe_rows, head_rows = [], []
    try:
        for start, block in rows.chunks(CHUNK):  # projected in the blocks `project` uses
            z_block = None
            if stack is not None:
                z_block = (
                    stack.normalize(block.to(device))
                    if normalized is None
                    else normalized[..., start : start + block.shape[0], :]
                )
            for offset in range(0, block.shape[0], EVAL_CHUNK):
                chunk = block[offset : offset + EVAL_CHUNK]
                y = labels[start + offset : start + offset + chunk.shape[0]]
                with autocast or contextlib.nullcontext():
                    probe_rows.append(probe(chunk.to(device)).argmax(-1) == y)
                    if z_block is not None:
                        z = z_block[..., offset : offset + chunk.shape[0], :].to(device)
                        head_rows.append(stack.predict_normalized(z) == y)
    finally:
        if stack is not None:
            stack.train(was_training)
    num_heads = len(stack.sparsity_ratios) if stack is not None else 0
    heads = (
        torch.cat(head_rows, dim=-1)
        if head_rows
        else torch.zeros(num_heads, 0, dtype=torch.bool, device=device)
    )
    return torch.cat(probe_rows), heads
