"""Train the standard probe and the interpretation heads of every ratio in one pass over features.

The published recipe (Adam, exponential decay 0.99 per epoch, 30 epochs, batch 1024, best top-1
over epochs) is the default. Speed comes from two facts: with fixed concepts, projection and
LayerNorm statistics are computed once for the whole data set, and every ratio (and every learning
rate of a grid) is a slice of one batched computation.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .heads import InterpretationHeads, LinearProbe

MODEL_SELECTIONS = ("eval", "holdout", "last")
CHUNK = 16384
PROBE_L2 = 1e-4  # keeps the probe's optimum finite on separable data; small enough not to cost accuracy


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
    standard_selection_accuracy: float = 0.0
    standard_optimizer: str = "adam"
    history: list[dict] = field(default_factory=list)


def fit_heads(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    eval_features: torch.Tensor,
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
    refine_probe_steps: int = 100,
) -> HeadFit:
    """Fit the probe and one head per (ratio, learning rate); select per ratio by `model_selection`.

    `model_selection`: "eval" picks the best epoch on the eval features (the published protocol,
    which flatters the score a little); "holdout" trains on all but `holdout_fraction` of the train
    features, picks epoch and learning rate on the held-out part and reports eval accuracy there;
    "last" reports the last epoch. `refine_probe_steps` > 0 then runs the probe to convergence
    with L-BFGS (see `refine_standard_probe`); 0 keeps the published Adam-only probe.
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

    if model_selection == "holdout":
        train_idx, select_idx = stratified_split(train_labels, holdout_fraction, seed)
        select_features, select_labels = train_features[select_idx], train_labels[select_idx]
        train_features, train_labels = train_features[train_idx], train_labels[train_idx]
    else:
        select_features, select_labels = eval_features, eval_labels

    train_y = train_labels.to(device)
    mean, std = feature_moments(train_features)
    probes = [LinearProbe(mean, std, num_classes, seed).to(device) for _ in learning_rates]
    stacks = [
        InterpretationHeads(concepts, num_classes, sparsity_ratios, seed).to(device) for _ in learning_rates
    ]
    if any(p.requires_grad for p in stacks[0].concepts.parameters()):
        raise NotImplementedError("trainable concept projections are trained with the head, not by fit_heads")
    normalize = stacks[0].normalize
    train_z = project(normalize, train_features, device)
    eval_z = project(normalize, eval_features, device)
    select_z = eval_z if model_selection != "holdout" else project(normalize, select_features, device)
    train_x = train_features.to(device)

    optimizers, schedulers = [], []
    for lr, probe, stack in zip(learning_rates, probes, stacks):
        optimizer = torch.optim.Adam([*probe.parameters(), *stack.parameters()], lr=lr)
        optimizers.append(optimizer)
        schedulers.append(torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=lr_decay))

    num_ratios = len(stacks[0].sparsity_ratios)
    best = Selection(len(learning_rates), num_ratios)
    best_state = (
        [copy.deepcopy(s.state_dict()) for s in stacks],
        [copy.deepcopy(p.state_dict()) for p in probes],
    )
    history: list[dict] = []
    shuffle = torch.Generator().manual_seed(seed)
    n = train_y.shape[0]
    bar = tqdm(range(epochs), desc="IIS heads", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        order = torch.randperm(n, generator=shuffle).to(device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            z, x, y = train_z[idx], train_x[idx], train_y[idx]
            for probe, stack, optimizer in zip(probes, stacks, optimizers):
                logits = stack.forward_normalized(z)
                # Sum over ratios of each ratio's mean loss: every head gets exactly its own gradient.
                loss = F.cross_entropy(logits.reshape(-1, num_classes), y.repeat(num_ratios), reduction="sum")
                loss = loss / y.shape[0] + F.cross_entropy(probe(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        for scheduler in schedulers:
            scheduler.step()

        record = {"epoch": epoch, "standard": [], "heads": []}
        for li, (probe, stack) in enumerate(zip(probes, stacks)):
            eval_probe, eval_heads = evaluate(probe, stack, eval_features, eval_z, eval_labels, device)
            if model_selection == "holdout":
                sel_probe, sel_heads = evaluate(
                    probe, stack, select_features, select_z, select_labels, device
                )
            else:
                sel_probe, sel_heads = eval_probe, eval_heads
            improved_heads, improved_probe = best.update(
                li, epoch, sel_heads, sel_probe, eval_heads, eval_probe, last=model_selection == "last"
            )
            for r in improved_heads:
                copy_ratio_state(best_state[0][li], stack.state_dict(), r)
            if improved_probe:
                best_state[1][li] = copy.deepcopy(probe.state_dict())
            record["standard"].append(eval_probe)
            record["heads"].append(eval_heads)
        history.append(record)
        bar.set_postfix(
            A0=f"{max(record['standard']):.3f}", A_last=f"{max(h[-1] for h in record['heads']):.3f}"
        )

    fit = best.result(stacks, probes, best_state, learning_rates, history)
    if refine_probe_steps > 0:
        refine_standard_probe(
            fit,
            train_x,
            train_y,
            (select_features, select_labels),
            (eval_features, eval_labels),
            device,
            refine_probe_steps,
        )
    return fit


def refine_standard_probe(fit, train_x, train_y, selection, evaluation, device, max_iter) -> None:
    """Run the probe to convergence with full-batch L-BFGS, warm-started from Adam's best epoch.

    A probe trained with the heads' small step budget can stay below the heads, which inflates IIS
    (DESIGN.md, "measured pitfall"). Logistic regression is convex, so L-BFGS reaches its optimum in
    a few dozen passes; the refined probe replaces Adam's when it is at least as good on the
    selection data.
    """
    probe = copy.deepcopy(fit.probe).train()
    params = list(probe.classifier.parameters())
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
    )
    n = train_y.shape[0]

    def closure():
        optimizer.zero_grad(set_to_none=False)
        total = torch.zeros((), device=device)
        for start in range(0, n, CHUNK):
            x, y = train_x[start : start + CHUNK], train_y[start : start + CHUNK]
            loss = F.cross_entropy(probe(x), y, reduction="sum") / n
            loss.backward()
            total += loss.detach()
        penalty = PROBE_L2 / 2 * probe.classifier.weight.pow(2).sum()
        penalty.backward()
        return total + penalty.detach()

    optimizer.step(closure)
    probe.eval()
    select_accuracy = probe_accuracy(probe, *selection, device)
    if select_accuracy >= fit.standard_selection_accuracy:
        fit.probe = probe
        fit.standard_selection_accuracy = select_accuracy
        fit.standard_accuracy = probe_accuracy(probe, *evaluation, device)
        fit.standard_optimizer = "lbfgs"


@torch.no_grad()
def probe_accuracy(probe, features, labels, device) -> float:
    correct = 0
    for start in range(0, labels.shape[0], CHUNK):
        logits = probe(features[start : start + CHUNK].to(device))
        correct += (logits.argmax(-1) == labels[start : start + CHUNK].to(device)).sum().item()
    return correct / labels.shape[0]


class Selection:
    """Best (learning rate, epoch) per ratio by selection accuracy; earliest epoch wins ties."""

    def __init__(self, num_lrs: int, num_ratios: int):
        self.score = [[-1.0] * num_ratios for _ in range(num_lrs)]
        self.reported = [[0.0] * num_ratios for _ in range(num_lrs)]
        self.epoch = [[0] * num_ratios for _ in range(num_lrs)]
        self.probe_score = [-1.0] * num_lrs
        self.probe_reported = [0.0] * num_lrs
        self.probe_epoch = [0] * num_lrs

    def update(self, li, epoch, sel_heads, sel_probe, eval_heads, eval_probe, last=False):
        improved = []
        for r, (s, e) in enumerate(zip(sel_heads, eval_heads)):
            if last or s > self.score[li][r]:
                self.score[li][r], self.reported[li][r], self.epoch[li][r] = s, e, epoch
                improved.append(r)
        probe_improved = last or sel_probe > self.probe_score[li]
        if probe_improved:
            self.probe_score[li], self.probe_reported[li], self.probe_epoch[li] = sel_probe, eval_probe, epoch
        return improved, probe_improved

    def result(self, stacks, probes, best_state, learning_rates, history) -> HeadFit:
        num_ratios = len(self.score[0])
        chosen = [
            max(range(len(learning_rates)), key=lambda li: (self.score[li][r], -li))
            for r in range(num_ratios)
        ]
        heads = stacks[0]
        merged = copy.deepcopy(best_state[0][0])
        for r, li in enumerate(chosen):
            copy_ratio_state(merged, best_state[0][li], r)
        heads.load_state_dict(merged)
        probe_li = max(range(len(learning_rates)), key=lambda li: (self.probe_score[li], -li))
        probe = probes[probe_li]
        probe.load_state_dict(best_state[1][probe_li])
        return HeadFit(
            accuracies=[self.reported[li][r] for r, li in enumerate(chosen)],
            standard_accuracy=self.probe_reported[probe_li],
            best_epochs=[self.epoch[li][r] for r, li in enumerate(chosen)],
            standard_best_epoch=self.probe_epoch[probe_li],
            learning_rates=[learning_rates[li] for li in chosen],
            standard_learning_rate=learning_rates[probe_li],
            standard_selection_accuracy=self.probe_score[probe_li],
            heads=heads.eval(),
            probe=probe.eval(),
            history=history,
        )


def copy_ratio_state(target: dict, source: dict, ratio_index: int) -> None:
    for name in ("norm_weight", "norm_bias", "weight", "bias"):
        target[name][ratio_index].copy_(source[name][ratio_index])


@torch.no_grad()
def evaluate(probe, stack, features, normalized, labels, device) -> tuple[float, list[float]]:
    """Top-1 accuracy of the probe and of each ratio's head, in chunks."""
    n = labels.shape[0]
    probe_correct = 0
    head_correct = torch.zeros(len(stack.sparsity_ratios), dtype=torch.long, device=device)
    for start in range(0, n, CHUNK):
        y = labels[start : start + CHUNK].to(device)
        probe_correct += (probe(features[start : start + CHUNK].to(device)).argmax(-1) == y).sum().item()
        head_correct += (stack.forward_normalized(normalized[start : start + CHUNK]).argmax(-1) == y).sum(-1)
    return probe_correct / n, (head_correct.double() / n).tolist()


@torch.no_grad()
def project(normalize, features: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Normalised concept activations of all features, computed once, chunk by chunk."""
    chunks = [
        normalize(features[s : s + CHUNK].to(device).float()) for s in range(0, features.shape[0], CHUNK)
    ]
    return torch.cat(chunks) if chunks else torch.empty(0, device=device)


@torch.no_grad()
def feature_moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std (float64 accumulation, chunked); constant dimensions get std 1."""
    total = torch.zeros(features.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for s in range(0, features.shape[0], CHUNK):
        chunk = features[s : s + CHUNK].to(torch.float64)
        total += chunk.sum(0)
        total_sq += (chunk * chunk).sum(0)
    n = max(features.shape[0], 1)
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


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
