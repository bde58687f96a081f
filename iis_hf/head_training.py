"""Train the standard probe and the interpretation heads of every ratio in one pass over features.

The published recipe (Adam, exponential decay 0.99 per epoch, 30 epochs, batch 1024, best top-1
over epochs) is the default. Speed comes from three facts: with fixed concepts, projection and
LayerNorm statistics are computed once for the whole data set; every ratio (and every learning
rate of a grid) is a slice of one batched computation; and features are read once, in chunks, so
a memory-mapped `FeatureStore` larger than memory works too.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .graphed_step import WARMUP_STEPS, GraphedStep
from .heads import InterpretationHeads, LinearProbe

MODEL_SELECTIONS = ("eval", "holdout", "last")
CHUNK = 16384
EVAL_CHUNK = 2048  # small enough for the per-ratio working set to stay in cache
RELEASE_EVERY = 16  # batches between releases of a memory-mapped store's pages


@dataclass
class HeadFit:
    """Accuracies on the eval features at the selected epoch, and the heads that achieved them."""

    accuracies: list[float]
    standard_accuracy: float
    best_epochs: list[int]
    standard_best_epoch: int
    learning_rates: list[float]
    standard_learning_rate: float
    heads: InterpretationHeads
    probe: LinearProbe
    probe_steps: int = 0
    precision: str = "fp32"
    history: list[dict] = field(default_factory=list)


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


def fit_heads(
    train_features,
    train_labels: torch.Tensor,
    eval_features,
    eval_labels: torch.Tensor,
    concepts,
    *,
    num_classes: int,
    sparsity_ratios: Sequence[float],
    epochs: int = 30,
    batch_size: int = 1024,
    learning_rate: float | Sequence[float] = 1e-2,
    lr_decay: float = 0.99,
    model_selection: str = "eval",
    holdout_fraction: float = 0.1,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    probe_min_steps: int = 1000,
    precision: str = "auto",
    cuda_graphs: bool = True,
) -> HeadFit:
    """Fit the probe and one head per (ratio, learning rate); select per ratio by `model_selection`.

    `model_selection`: "eval" picks the best epoch on the eval features (the published protocol,
    which flatters the score a little); "holdout" trains on all but `holdout_fraction` of the train
    features, picks epoch and learning rate on the held-out part and reports eval accuracy there;
    "last" reports the last epoch.

    The probe trains in the same pass as the heads on standardised features; when that pass gives
    it fewer than `probe_min_steps` Adam steps (small data sets), it continues alone until it has
    them. An unconverged probe would let the heads beat it and inflate IIS (DESIGN.md).

    On CUDA, with fixed concepts and features that fit on the device, each full batch's step is
    replayed from a CUDA graph (`cuda_graphs=False` runs it eagerly; see `iis_hf.graphed_step`).
    """
    if model_selection not in MODEL_SELECTIONS:
        raise ValueError(f"model_selection must be one of {MODEL_SELECTIONS}, got {model_selection!r}")
    learning_rates = (
        [float(learning_rate)] if isinstance(learning_rate, (int, float)) else list(learning_rate)
    )
    if not learning_rates or any(lr <= 0 for lr in learning_rates):
        raise ValueError(f"learning rates must be > 0, got {learning_rate!r}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    device = torch.device(device) if device is not None else default_device()
    matmul_dtype = head_matmul_dtype(precision, device)
    autocast = torch.autocast(
        device.type,
        dtype=matmul_dtype or torch.bfloat16,
        enabled=matmul_dtype is not None,
        cache_enabled=device.type != "cuda",  # a cache of casts cannot live across CUDA graph replays
    )

    train, evaluation = Rows(train_features), Rows(eval_features)
    if model_selection == "holdout":
        keep, held = stratified_split(train_labels, holdout_fraction, seed)
        selection, select_labels = train.subset(held), train_labels[held]
        train, train_labels = train.subset(keep), train_labels[keep]
    else:
        selection, select_labels = evaluation, eval_labels

    stacks = [
        InterpretationHeads(concepts, num_classes, sparsity_ratios, seed).to(device) for _ in learning_rates
    ]
    # Fixed concepts: project and normalise every row once. Learned concepts change with training,
    # so each batch (and each evaluation) projects through its stack's current selection instead.
    learned = stacks[0].trainable_concepts
    mean, std = feature_moments(train)
    probes = [LinearProbe(mean, std, num_classes, seed).to(device) for _ in learning_rates]
    train_z = eval_z = select_z = None
    if not learned:
        normalize = stacks[0].normalize
        train_z = project(normalize, train, device)
        eval_z = project(normalize, evaluation, device)
        select_z = eval_z if model_selection != "holdout" else project(normalize, selection, device)
    train_x = train.to_device(device)
    train_y, eval_y, select_y = (t.to(device) for t in (train_labels, eval_labels, select_labels))

    n = len(train)
    steps_per_epoch = -(-n // batch_size)
    graphs = (
        cuda_graphs
        and device.type == "cuda"
        and not learned
        and train_x.on(device)
        and n // batch_size > WARMUP_STEPS + 1
    )
    optimizers, schedulers = [], []
    for lr, probe, stack in zip(learning_rates, probes, stacks):
        params = [*probe.parameters(), *stack.parameters()]
        try:
            optimizer = adam(params, lr, device, graphs)
        except (RuntimeError, ValueError):  # a torch without capturable fused Adam: no graphs
            graphs = False
            optimizer = adam(params, lr, device, graphs)
        optimizers.append(optimizer)
        schedulers.append(torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=lr_decay))

    def train_step(idx: torch.Tensor, heads_train: bool = True) -> None:
        x, y = train_x.gather(idx).to(device, non_blocking=True), train_y[idx.to(device)]
        z = None
        if heads_train and not learned:
            z = train_z[idx.to(train_z.device)].to(device, non_blocking=True)
        for probe, stack, optimizer in zip(probes, stacks, optimizers):
            with autocast:
                loss = F.cross_entropy(probe(x), y)
                if heads_train:
                    logits = stack.forward_normalized(stack.normalize(x) if learned else z)
                    # Sum over ratios of each ratio's mean loss: each head gets exactly its own gradient.
                    heads_loss = F.cross_entropy(
                        logits.float().reshape(-1, num_classes), y.repeat(num_ratios), reduction="sum"
                    )
                    loss = loss + heads_loss / y.shape[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    graphed = GraphedStep(train_step, batch_size, device) if graphs else None

    num_ratios = len(stacks[0].sparsity_ratios)
    best = Selection(len(learning_rates), num_ratios)
    best_heads = [copy.deepcopy(s.state_dict()) for s in stacks]
    best_probes = [copy.deepcopy(p.state_dict()) for p in probes]
    history: list[dict] = []
    shuffle = torch.Generator().manual_seed(seed)
    probe_epochs = max(epochs, -(-probe_min_steps // steps_per_epoch))
    # The probe's extra epochs (small data sets) are evaluated about 50 times, not after each one.
    probe_eval_every = max(1, (probe_epochs - epochs) // 50)
    bar = tqdm(range(probe_epochs), desc="IIS heads", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        heads_train = epoch < epochs
        order = torch.randperm(n, generator=shuffle)  # drawn on the CPU: the same order on every device
        if train_x.on(device):
            # One copy per epoch: a per-batch copy from pageable host memory would sync the stream
            # and stop the host from queueing the next batch's kernels while the device works.
            order = order.to(device)
        for step, start in enumerate(range(0, n, batch_size)):
            idx = order[start : start + batch_size]
            if graphed is not None and heads_train and idx.numel() == batch_size:
                graphed(idx)
            else:
                train_step(idx, heads_train)
            if step % RELEASE_EVERY == RELEASE_EVERY - 1:
                train_x.release()
        for scheduler in schedulers:
            scheduler.step()

        last_epoch = epoch == probe_epochs - 1
        if not heads_train and not last_epoch and (epoch - epochs + 1) % probe_eval_every:
            continue
        record = {"epoch": epoch, "standard": [], "heads": []}
        for li, (probe, stack) in enumerate(zip(probes, stacks)):
            eval_probe, eval_heads = evaluate(
                probe, stack if heads_train else None, evaluation, eval_z, eval_y, device, autocast
            )
            if model_selection == "holdout":
                sel_probe, sel_heads = evaluate(
                    probe, stack if heads_train else None, selection, select_z, select_y, device, autocast
                )
            else:
                sel_probe, sel_heads = eval_probe, eval_heads
            last = model_selection == "last"
            if heads_train:
                for r in best.update_heads(
                    li, epoch, sel_heads, eval_heads, last=last and epoch == epochs - 1
                ):
                    copy_ratio_state(best_heads[li], stack.state_dict(), r)
            if best.update_probe(li, epoch, sel_probe, eval_probe, last=last and epoch == probe_epochs - 1):
                best_probes[li] = copy.deepcopy(probe.state_dict())
            record["standard"].append(eval_probe)
            record["heads"].append(eval_heads)
        history.append(record)
        postfix = {"A0": f"{max(record['standard']):.3f}"}
        if heads_train:
            postfix["A_last"] = f"{max(h[-1] for h in record['heads']):.3f}"
        bar.set_postfix(postfix)
    train_x.release()

    fit = best.result(stacks, probes, best_heads, best_probes, learning_rates, history)
    fit.probe_steps = probe_epochs * steps_per_epoch
    fit.precision = "bf16" if matmul_dtype is not None else "fp32"
    return fit


class Selection:
    """Best (learning rate, epoch) per ratio by selection accuracy; earliest epoch wins ties."""

    def __init__(self, num_lrs: int, num_ratios: int):
        self.score = [[-1.0] * num_ratios for _ in range(num_lrs)]
        self.reported = [[0.0] * num_ratios for _ in range(num_lrs)]
        self.epoch = [[0] * num_ratios for _ in range(num_lrs)]
        self.probe_score = [-1.0] * num_lrs
        self.probe_reported = [0.0] * num_lrs
        self.probe_epoch = [0] * num_lrs

    def update_heads(self, li, epoch, selection, reported, last=False) -> list[int]:
        improved = []
        for r, (s, e) in enumerate(zip(selection, reported)):
            if last or s > self.score[li][r]:
                self.score[li][r], self.reported[li][r], self.epoch[li][r] = s, e, epoch
                improved.append(r)
        return improved

    def update_probe(self, li, epoch, selection, reported, last=False) -> bool:
        if last or selection > self.probe_score[li]:
            self.probe_score[li], self.probe_reported[li], self.probe_epoch[li] = selection, reported, epoch
            return True
        return False

    def result(self, stacks, probes, best_heads, best_probes, learning_rates, history) -> HeadFit:
        num_ratios = len(self.score[0])
        lrs = range(len(learning_rates))
        chosen = [max(lrs, key=lambda li: (self.score[li][r], -li)) for r in range(num_ratios)]
        heads = stacks[0]
        merged = copy.deepcopy(best_heads[0])
        for r, li in enumerate(chosen):
            copy_ratio_state(merged, best_heads[li], r)
        heads.load_state_dict(merged)
        probe_li = max(lrs, key=lambda li: (self.probe_score[li], -li))
        probe = probes[probe_li]
        probe.load_state_dict(best_probes[probe_li])
        return HeadFit(
            accuracies=[self.reported[li][r] for r, li in enumerate(chosen)],
            standard_accuracy=self.probe_reported[probe_li],
            best_epochs=[self.epoch[li][r] for r, li in enumerate(chosen)],
            standard_best_epoch=self.probe_epoch[probe_li],
            learning_rates=[learning_rates[li] for li in chosen],
            standard_learning_rate=learning_rates[probe_li],
            heads=heads.eval(),
            probe=probe.eval(),
            history=history,
        )


def adam(params, lr: float, device: torch.device, graphs: bool) -> torch.optim.Adam:
    """Adam as published; on CUDA fused (one kernel for all parameters), and for CUDA graphs also
    capturable with the learning rate as a device tensor, so the per-epoch decay reaches the graph."""
    if device.type != "cuda":
        return torch.optim.Adam(params, lr=lr)
    if graphs:
        return torch.optim.Adam(params, lr=torch.tensor(lr, device=device), fused=True, capturable=True)
    return torch.optim.Adam(params, lr=lr, fused=True)


def copy_ratio_state(target: dict, source: dict, ratio_index: int) -> None:
    for name in ("norm_weight", "norm_bias", "weight", "bias"):
        target[name][ratio_index].copy_(source[name][ratio_index])


@torch.no_grad()
def evaluate(
    probe, stack, rows: Rows, normalized, labels, device, autocast=None
) -> tuple[float, list[float]]:
    """Top-1 accuracy of the probe and (when `stack` is given) of each ratio's head, in chunks.

    `normalized` holds the rows' precomputed normalised activations, or is None for learned
    concepts, which are then projected through the stack's current (arg-max) selection.
    """
    if stack is not None and normalized is None:
        stack.eval()
        try:
            normalized = project(stack.normalize, rows, device)
            return evaluate(probe, stack, rows, normalized, labels, device, autocast)
        finally:
            stack.train()
    n = len(rows)
    probe_correct = torch.zeros((), dtype=torch.long, device=device)
    head_correct = torch.zeros(
        len(stack.sparsity_ratios) if stack is not None else 0, dtype=torch.long, device=device
    )
    for start, chunk in rows.chunks(EVAL_CHUNK):
        y = labels[start : start + chunk.shape[0]]
        with autocast or contextlib.nullcontext():
            probe_correct += (probe(chunk.to(device)).argmax(-1) == y).sum()
            if stack is not None:
                z = normalized[..., start : start + chunk.shape[0], :].to(device)
                head_correct += (stack.predict_normalized(z) == y).sum(-1)
    return probe_correct.item() / n, (head_correct.double() / n).tolist()


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
    total, total_sq = total.cpu(), total_sq.cpu()
    n = max(len(rows), 1)
    mean = total / n
    std = (total_sq / n - mean * mean).clamp_min(0).sqrt()
    std[std < 1e-8] = 1.0
    return mean.float(), std.float()


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, held-out) with about `fraction` of every class held out (at least one each)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {fraction}")
    generator = torch.Generator().manual_seed(seed + 7919)
    keep, held = [], []
    for label in labels.unique():
        idx = (labels == label).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        cut = max(1, round(idx.numel() * fraction)) if idx.numel() > 1 else 0
        held.append(idx[:cut])
        keep.append(idx[cut:])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values


PRECISIONS = ("auto", "fp32", "bf16")


def head_matmul_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bfloat16 for the heads' and the probe's matrix products where the hardware runs it natively
    ("auto": CUDA with bf16, or a CPU with AVX512-BF16/AMX, where the heads' batched products
    measured 3x faster than in float32); None means float32. Elementwise work, sparsification
    thresholds, losses and optimizer state stay in float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        fast = any(getattr(torch.cpu, name, lambda: False)() for name in checks)
        return torch.bfloat16 if fast else None
    return None


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
