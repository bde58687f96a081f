"""Train the standard probe and the interpretation heads of every ratio in one pass over features.

Two recipes share the optimiser (Adam, exponential decay 0.99 per epoch, batch 1024): "paper" trains
a fixed 30 epochs and reports each model's best eval epoch, as the published code does; "converged"
(the default) trains at least `min_steps` steps, then until no model's training loss has fallen by
1 % within `patience` steps (at most `max_steps`), and reports the final state, so that a 600-row
set gets as converged a head as ImageNet (docs/METHOD.md). Speed comes from three facts: with fixed
concepts, projection and LayerNorm statistics are computed once for the whole data set; every ratio
(and every learning rate of a grid) is a slice of one batched computation; and features are read
once, in chunks, so a memory-mapped `FeatureStore` larger than memory works too.

The steps, in the order `fit_heads` runs them: hold out the selection rows (`model_selection`),
build one probe and one stack of heads per learning rate, project the rows onto the concepts once,
then train epoch by epoch, checking (`Plateau`) and keeping each ratio's selected state
(`Selection`), and finally let the probe continue alone until it has `probe_min_steps`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..config import HeadsConfig, given_settings, with_settings
from ..devices import resolve_device
from ..progress import progress_bar
from ..splits import stratified_split
from .evaluation import EVAL_CHUNK, correct_rows, evaluate
from .graphed_step import WARMUP_STEPS, GraphedStep
from .modules import InterpretationHeads, LinearProbe
from .numerics import CPU_BF16_MIN_ROWS, adam, head_matmul_dtype
from .rows import Rows, feature_moments, keeps_activations, project
from .selection import CHECKS_PER_PATIENCE, Plateau, Selection, copy_ratio_state

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..concepts.bank import ConceptsLike
    from ..features.store import FeatureStore

RELEASE_EVERY = 16  # batches between releases of a memory-mapped store's pages
PROBE_EVALUATIONS = 50  # the probe's extra epochs (small data sets) are evaluated about this often
HEADS_BAR = "IIS heads"
PROBE_BAR = "IIS heads done; linear probe converging"


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
    head_steps: int = 0  # Adam steps every head trained (all ratios train in one pass)
    converged: list[bool] | None = None  # per ratio: stopped improving before max_steps (None: "paper")
    precision: str = "fp32"
    history: list[dict] = field(default_factory=list)
    eval_probe_correct: torch.Tensor | None = None  # (N,) bool: which eval rows the selected probe gets right
    eval_heads_correct: torch.Tensor | None = None  # (R, N) bool: the same for each ratio's selected head


# One keyword per `HeadsConfig` field (tests/test_signatures.py holds every field to it), so the
# signature is longer than the argument-count rule allows; the settings are one idea, the recipe.
def fit_heads(  # noqa: PLR0913
    train_features: torch.Tensor | FeatureStore,
    train_labels: torch.Tensor,
    eval_features: torch.Tensor | FeatureStore,
    eval_labels: torch.Tensor,
    concepts: ConceptsLike,
    *,
    num_classes: int,
    config: HeadsConfig | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    cuda_graphs: bool = True,
    sparsity_ratios: Sequence[float] | None = None,
    epochs: int | None = None,
    head_batch_size: int | None = None,
    learning_rate: float | Sequence[float] | None = None,
    lr_decay: float | None = None,
    model_selection: str | None = None,
    holdout_fraction: float | None = None,
    min_steps: int | None = None,
    max_steps: int | None = None,
    patience: int | None = None,
    probe_min_steps: int | None = None,
    head_precision: str | None = None,
    protocol: str | None = None,
    num_seeds: int | None = None,
    **deprecated: Any,
) -> HeadFit:
    """Fit the probe and one head per (ratio, learning rate); select per ratio by `model_selection`.

    Each head setting defaults to None, "the value in `config`" (a `HeadsConfig()`'s field default
    when no config is given): the default is read from the field, never copied, and a keyword
    overrides only what it names (``fit_heads(..., sparsity_ratios=[0.9], epochs=5)``). `deprecated`
    takes the old names (`batch_size`, `precision`) for one release, with a FutureWarning.

    Args:
        train_features, eval_features: (N, D) tensors or `FeatureStore`s.
        train_labels, eval_labels: (N,) int64 tensors.
        concepts: a `ConceptBank`, a (C, D) array, or a module (e.g. `LearnedConcepts`).
        num_classes: the number of classes the heads predict.
        config: the recipe, a `HeadsConfig` (default: `HeadsConfig()`).
        seed: initialises the heads and the probe, and orders the training rows.
        device: where they train (default: CUDA if available, else CPU).
        progress: show progress bars.
        cuda_graphs: on CUDA, with fixed concepts and features that fit on the device, replay each
            full batch's step from a CUDA graph (see `iis_hf.heads.graphed_step`).
        sparsity_ratios: the grid rho, fractions of concepts each head drops.
        epochs: a fixed number of epochs instead of the protocol's own budget.
        head_batch_size: rows per head-training step.
        learning_rate: Adam's learning rate; a list is a grid (each ratio keeps its best).
        lr_decay: exponential learning-rate decay per epoch.
        model_selection: "eval" picks the best checked state on the eval features (published; it
            flatters the score a little); "holdout" trains on all but `holdout_fraction` of train and
            picks there; "last" reports the final state (default: the protocol's own).
        holdout_fraction: model selection "holdout": the share of train rows it chooses on.
        min_steps, max_steps, patience: protocol "converged": at least `min_steps` Adam steps, then
            until no loss improved in `patience` steps, at most `max_steps`.
        probe_min_steps: the probe trains in the same pass as the heads on standardised features;
            when that gives it fewer Adam steps than this (small data), it continues alone.
        head_precision: matrix products: "auto" (bfloat16 where native), "fp32", "bf16".
        protocol: "converged" (iis-hf's) or "paper" (the published code's probe and recipe).
        num_seeds: recorded with the config; one call fits one seed (`compute_iis` runs each).
    """
    settings = given_settings(HeadsConfig, locals(), deprecated)
    config = with_settings(config, HeadsConfig, settings, "fit_heads")
    run = _HeadTraining(
        config,
        _selection_rows(Rows(train_features), train_labels, Rows(eval_features), eval_labels, config, seed),
        concepts,
        num_classes,
        seed,
        resolve_device(device),
        cuda_graphs,
    )
    return run.fit(progress)


class _Data:
    """The rows head training reads: train, eval (reported) and selection (chooses the epoch)."""

    def __init__(self, train, train_labels, evaluation, eval_labels, selection, select_labels):
        self.train, self.train_labels = train, train_labels
        self.evaluation, self.eval_labels = evaluation, eval_labels
        self.selection, self.select_labels = selection, select_labels


def _selection_rows(train: Rows, train_labels, evaluation: Rows, eval_labels, config: HeadsConfig, seed: int):
    """Where the best epoch is chosen: the eval rows, or a stratified hold-out of the train rows."""
    if config.selection_rule != "holdout":
        return _Data(train, train_labels, evaluation, eval_labels, evaluation, eval_labels)
    keep, held = (
        torch.from_numpy(i) for i in stratified_split(train_labels.numpy(), config.holdout_fraction, seed)
    )
    return _Data(
        train.subset(keep),
        train_labels[keep],
        evaluation,
        eval_labels,
        train.subset(held),
        train_labels[held],
    )


class _HeadTraining:
    """One run of `fit_heads`: the modules, their optimizers, and the epoch loop."""

    def __init__(
        self, config: HeadsConfig, data: _Data, concepts, num_classes: int, seed, device, cuda_graphs
    ):
        self.config, self.data, self.num_classes, self.seed, self.device = (
            config,
            data,
            num_classes,
            seed,
            device,
        )
        self.learning_rates = config.learning_rates
        self.matmul_dtype = head_matmul_dtype(config.head_precision, device, len(data.train))
        self.autocast = torch.autocast(
            device.type,
            dtype=self.matmul_dtype or torch.bfloat16,
            enabled=self.matmul_dtype is not None,
            cache_enabled=device.type != "cuda",  # a cache of casts cannot live across CUDA graph replays
        )
        paper = config.protocol == "paper"
        init = "trunc_normal" if paper else "uniform"
        self.stacks = [
            InterpretationHeads(
                concepts, num_classes, config.sparsity_ratios, seed, init=init, threshold_gradient=paper
            ).to(device)
            for _ in self.learning_rates
        ]
        if self.stacks[0].num_concepts < 2:  # every head drops int(C * rho) + 1 concepts: none would be left
            raise ValueError(
                f"the concepts hold {self.stacks[0].num_concepts} concept, and IIS needs at least 2 (every head "
                "drops int(C * rho) + 1 of them): pass a bank with more concepts"
            )
        # Learned concepts change with training: each batch (and each evaluation) then projects
        # through its stack's current selection instead of activations computed once.
        self.learned = self.stacks[0].trainable_concepts
        if paper:  # the published probe: raw representations, trained exactly as long as the heads
            mean, std = torch.zeros(data.train.dim), torch.ones(data.train.dim)
            self.probe_min_steps = 0
        else:
            mean, std = feature_moments(data.train)
            self.probe_min_steps = config.probe_min_steps
        self.probes = [
            LinearProbe(mean, std, num_classes, seed, init=init).to(device) for _ in self.learning_rates
        ]
        self._project_once()
        self.train_x = data.train.to_device(device)
        self.train_y, self.eval_y, self.select_y = (
            t.to(device) for t in (data.train_labels, data.eval_labels, data.select_labels)
        )
        self.n = len(data.train)
        self.per_model_order = paper and not self.learned
        self.steps_per_epoch = -(-self.n // config.head_batch_size)
        self.num_ratios = len(config.sparsity_ratios)
        # Per (learning rate, model) training-loss sums of the current epoch: column 0 the probe, then
        # each ratio's head. Only the converged protocol tracks them (its stopping rule).
        self.loss_sums = (
            torch.zeros(len(self.learning_rates), 1 + self.num_ratios, device=device)
            if config.protocol == "converged"
            else None
        )
        self._build_optimizers(cuda_graphs)

    # -- set-up steps ------------------------------------------------------------------------------
    def _project_once(self) -> None:
        """Fixed concepts: project and normalise every row once, for training and evaluation, unless
        the activations of features read from disk would not fit (`keeps_activations`): those rows
        are then projected batch by batch, as they are read."""
        self.train_z = self.eval_z = self.select_z = None
        if self.learned:
            return
        normalize, data, count = self.stacks[0].normalize, self.data, self.stacks[0].num_concepts

        def once(rows: Rows):
            return (
                project(normalize, rows, self.device) if keeps_activations(rows, count, self.device) else None
            )

        self.train_z = once(data.train)
        self.eval_z = once(data.evaluation)
        self.select_z = self.eval_z if data.selection is data.evaluation else once(data.selection)

    def _build_optimizers(self, cuda_graphs: bool) -> None:
        graphs = (
            cuda_graphs
            and self.device.type == "cuda"
            and not self.learned
            and self.train_x.on(self.device)
            and self.n // self.config.head_batch_size > WARMUP_STEPS + 1
        )
        self.optimizers, self.schedulers = [], []
        for lr, probe, stack in zip(self.learning_rates, self.probes, self.stacks):
            params = [*probe.parameters(), *stack.parameters()]
            try:
                optimizer = adam(params, lr, self.device, graphs)
            except (RuntimeError, ValueError):  # a torch without capturable fused Adam: no graphs
                graphs = False
                optimizer = adam(params, lr, self.device, graphs)
            self.optimizers.append(optimizer)
            self.schedulers.append(
                torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.config.lr_decay)
            )
        self.graphed = (
            GraphedStep(self.train_step, self.config.head_batch_size, self.device) if graphs else None
        )

    # -- one step ----------------------------------------------------------------------------------
    def train_step(self, idx: torch.Tensor, heads_train: bool = True) -> None:
        """One Adam step of every probe (and, while `heads_train`, every stack of heads).

        `idx` is one batch of row indices shared by all models, or (1 + R, B): the probe's batch and
        each ratio's own batch (the "paper" protocol's one data order per model).
        """
        probe_idx, head_idx = (idx, idx) if idx.dim() == 1 else (idx[0], idx[1:])
        device, y = self.device, self.train_y[probe_idx.to(self.device)]
        head_y = (
            y.repeat(self.num_ratios)
            if idx.dim() == 1
            else self.train_y[head_idx.to(self.device)].reshape(-1)
        )
        x = self.train_x.gather(probe_idx).to(device, non_blocking=True)
        z = None
        if heads_train and not self.learned and self.train_z is not None:  # projected once
            z = self.train_z[head_idx.to(self.train_z.device)].to(device, non_blocking=True)
        elif heads_train and not self.learned:  # not kept (`keeps_activations`): this batch's own
            rows = x if idx.dim() == 1 else self.train_x.gather(head_idx.reshape(-1)).to(device)
            with torch.no_grad():
                z = self.stacks[0].normalize(rows).reshape(*head_idx.shape, -1)
        for li, (probe, stack, optimizer) in enumerate(zip(self.probes, self.stacks, self.optimizers)):
            logits = None
            with self.autocast:
                loss = probe_loss = F.cross_entropy(probe(x), y)
                if heads_train:
                    logits = stack.forward_normalized(stack.normalize(x) if z is None else z)
                    # Sum over ratios of each ratio's mean loss: each head gets exactly its own gradient.
                    heads_loss = F.cross_entropy(
                        logits.float().reshape(-1, self.num_classes), head_y, reduction="sum"
                    )
                    loss = loss + heads_loss / y.shape[0]
            if self.loss_sums is not None:  # the converged protocol's stopping rule reads these
                self.track_losses(li, probe_loss, logits if heads_train else None, y, head_y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    @torch.no_grad()
    def track_losses(self, li: int, probe_loss, logits, y, head_y) -> None:
        """Add this batch's training loss of the probe and of each ratio's head (row-weighted), in
        place on the device (no host sync; a CUDA graph replays it too)."""
        assert self.loss_sums is not None
        rows = y.shape[0]
        self.loss_sums[li, 0] += probe_loss.detach().float() * rows
        if logits is not None:
            per_row = F.cross_entropy(
                logits.detach().float().reshape(-1, self.num_classes), head_y, reduction="none"
            )
            self.loss_sums[li, 1:] += per_row.view(self.num_ratios, -1).sum(-1)

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self, progress: bool) -> HeadFit:
        self.best = Selection(len(self.learning_rates), self.num_ratios)
        self.best_heads = [copy.deepcopy(s.state_dict()) for s in self.stacks]
        self.best_probes = [copy.deepcopy(p.state_dict()) for p in self.probes]
        self.history: list[dict] = []
        shuffle = torch.Generator().manual_seed(self.seed)
        if self.config.protocol == "paper":  # the published loop, kept as it was (bit for bit)
            head_epochs, probe_epochs = self.train_published_epochs(shuffle, progress)
            converged = None
        else:
            head_epochs, probe_epochs, converged = self.train_until_converged(shuffle, progress)
        self.train_x.release()
        fit = self.best.result(
            self.stacks, self.probes, self.best_heads, self.best_probes, self.learning_rates, self.history
        )
        fit.probe_steps = probe_epochs * self.steps_per_epoch
        fit.head_steps = head_epochs * self.steps_per_epoch
        if converged is not None:
            fit.converged = [converged[li][r] for r, li in enumerate(self.best.chosen_learning_rates())]
        fit.precision = "bf16" if self.matmul_dtype is not None else "fp32"
        probe_rows, head_rows = correct_rows(
            fit.probe, fit.heads, self.data.evaluation, self.eval_z, self.eval_y, self.device, self.autocast
        )
        fit.eval_probe_correct, fit.eval_heads_correct = probe_rows.cpu(), head_rows.cpu()
        return fit

    def train_published_epochs(self, shuffle: torch.Generator, progress: bool) -> tuple[int, int]:
        """The "paper" protocol: `epochs` epochs of heads and probe, evaluated after each one.
        Returns (head epochs, probe epochs)."""
        config = self.config
        epochs = config.fixed_epochs
        assert epochs is not None  # the paper protocol's budget is fixed
        probe_epochs = max(epochs, -(-self.probe_min_steps // self.steps_per_epoch))
        probe_eval_every = max(1, (probe_epochs - epochs) // PROBE_EVALUATIONS)
        # One bar over every epoch, counted after each one and left at its total when done (a bar
        # erased on close showed its last refresh, e.g. 992/1000, in logs). When the probe trains on
        # alone after the heads (small data sets: `probe_min_steps`), the label says so.
        with progress_bar(total=probe_epochs, desc=HEADS_BAR, unit="epoch", enabled=progress) as bar:
            for epoch in range(probe_epochs):
                heads_train = epoch < epochs
                if epoch == epochs:
                    bar.set_description(PROBE_BAR, refresh=False)
                self.train_epoch(self.draw_order(shuffle), heads_train)
                self.check_finite(epoch)
                last_epoch = epoch == probe_epochs - 1
                if heads_train or last_epoch or not (epoch - epochs + 1) % probe_eval_every:
                    bar.set_postfix(
                        self.evaluate_epoch(epoch, heads_train, last_epoch, probe_epochs), refresh=False
                    )
                bar.update(1)
        return epochs, probe_epochs

    def train_until_converged(
        self, shuffle: torch.Generator, progress: bool
    ) -> tuple[int, int, list[list[bool]]]:
        """The "converged" protocol: train in epochs (one pass over the rows, one learning-rate decay)
        and check every `check_every` epochs; stop once `min_steps` are done and no head and no probe
        improved its selection accuracy within the last `patience` steps, or at `max_steps`.
        Returns (head epochs, probe epochs, converged[lr][ratio])."""
        config, per_epoch = self.config, self.steps_per_epoch
        min_epochs = -(-config.min_steps // per_epoch)
        max_epochs = max(min_epochs, -(-config.max_steps // per_epoch))
        check_every = max(1, -(-config.patience // (CHECKS_PER_PATIENCE * per_epoch)))
        if config.epochs is not None:  # a fixed budget asked for: exactly that many epochs, each checked
            min_epochs = max_epochs = config.epochs
            check_every = 1
        plateau = Plateau(len(self.learning_rates), self.num_ratios, config.patience)
        assert self.loss_sums is not None
        epoch = 0
        with progress_bar(total=max_epochs * per_epoch, desc=HEADS_BAR, unit="step", enabled=progress) as bar:
            while True:
                self.loss_sums.zero_()
                self.train_epoch(self.draw_order(shuffle), heads_train=True)
                self.check_finite(epoch)
                epoch += 1
                bar.update(per_epoch)
                if epoch % check_every and epoch < max_epochs:
                    continue
                steps = epoch * per_epoch
                plateau.update(steps, (self.loss_sums / self.n).tolist())
                measured = self.measure(epoch - 1, heads_train=True)
                done = (epoch >= min_epochs and plateau.all_stalled(steps)) or epoch >= max_epochs
                self.select(epoch - 1, measured, heads_train=True, final=done)
                bar.set_postfix(self.postfix(measured), refresh=False)
                if done:
                    bar.total = steps
                    bar.refresh()
                    break
        probe_epochs = epoch
        if epoch * per_epoch < self.probe_min_steps:
            probe_epochs = self.train_probe_alone(shuffle, epoch, progress)
        return epoch, probe_epochs, plateau.stalled_matrix(epoch * per_epoch)

    def train_probe_alone(self, shuffle: torch.Generator, start_epoch: int, progress: bool) -> int:
        """After converged heads on a small set: the probe continues alone to `probe_min_steps`."""
        per_epoch = self.steps_per_epoch
        probe_epochs = -(-self.probe_min_steps // per_epoch)
        every = max(1, (probe_epochs - start_epoch) // PROBE_EVALUATIONS)
        # One bar over every epoch the probe trained, the heads' included (it starts at `start_epoch`).
        with progress_bar(
            total=probe_epochs, initial=start_epoch, desc=PROBE_BAR, unit="epoch", enabled=progress
        ) as bar:
            for epoch in range(start_epoch, probe_epochs):
                self.train_epoch(self.draw_order(shuffle), heads_train=False)
                self.check_finite(epoch)
                last = epoch == probe_epochs - 1
                if last or not (epoch - start_epoch + 1) % every:
                    measured = self.measure(epoch, heads_train=False)
                    self.select(epoch, measured, heads_train=False, final=last)
                bar.update(1)
        return probe_epochs

    def measure(self, epoch: int, heads_train: bool) -> list[tuple[float, float, list[float], list[float]]]:
        """Per learning rate: (selection, eval) accuracy of the probe and of each ratio's head; recorded
        in `history`."""
        measured = [
            self.measure_model(probe, stack, heads_train) for probe, stack in zip(self.probes, self.stacks)
        ]
        self.history.append(
            {
                "epoch": epoch,
                "step": (epoch + 1) * self.steps_per_epoch,
                "standard": [m[1] for m in measured],
                "heads": [m[3] for m in measured],
            }
        )
        return measured

    def measure_model(self, probe, stack, heads_train: bool) -> tuple[float, float, list[float], list[float]]:
        """(selection, eval) accuracy of one probe and of its stack's heads (not measured: empty)."""
        data, heads = self.data, stack if heads_train else None
        eval_probe, eval_heads = evaluate(
            probe, heads, data.evaluation, self.eval_z, self.eval_y, self.device, self.autocast
        )
        if data.selection is data.evaluation:
            return eval_probe, eval_probe, eval_heads, eval_heads
        sel_probe, sel_heads = evaluate(
            probe, heads, data.selection, self.select_z, self.select_y, self.device, self.autocast
        )
        return sel_probe, eval_probe, sel_heads, eval_heads

    def select(self, epoch: int, measured, heads_train: bool, final: bool) -> None:
        """Keep each model's state chosen by `model_selection` ("last": the state at `final`)."""
        last = self.config.selection_rule == "last" and final
        for li, (sel_probe, eval_probe, sel_heads, eval_heads) in enumerate(measured):
            if heads_train:
                for r in self.best.update_heads(li, epoch, sel_heads, eval_heads, last=last):
                    copy_ratio_state(self.best_heads[li], self.stacks[li].state_dict(), r)
            if self.best.update_probe(li, epoch, sel_probe, eval_probe, last=last):
                self.best_probes[li] = copy.deepcopy(self.probes[li].state_dict())

    @staticmethod
    def postfix(measured) -> dict:
        return {
            "A0": f"{max(m[1] for m in measured):.3f}",
            "A_last": f"{max(m[3][-1] for m in measured):.3f}",
        }

    def check_finite(self, epoch: int) -> None:
        """Stop at the first epoch whose weights are not finite: a diverged fit scores nothing."""
        for name, modules in (("standard probe", self.probes), ("interpretation heads", self.stacks)):
            if not all(torch.isfinite(p).all() for module in modules for p in module.parameters()):
                magnitude = max(float(chunk.abs().max()) for _, chunk in self.data.train.chunks())
                raise ValueError(
                    f"head training diverged: the {name}' weights became NaN or inf in epoch {epoch} "
                    f"(learning rate {self.config.learning_rate}, largest |feature| {magnitude:.3g}); "
                    "lower the learning rate (learning_rate=), or check the features (rescale them, or extract in fp32)"
                )

    def draw_order(self, shuffle: torch.Generator) -> torch.Tensor:
        """This epoch's order of the train rows (drawn on the CPU: the same on every device).

        One permutation shared by the probe and every head; under the "paper" protocol one per model
        (the probe, then each ratio), as the published code trains each model with its own shuffles.
        """
        if not self.per_model_order:
            return torch.randperm(self.n, generator=shuffle)
        return torch.stack([torch.randperm(self.n, generator=shuffle) for _ in range(1 + self.num_ratios)])

    def train_epoch(self, order: torch.Tensor, heads_train: bool) -> None:
        """One pass over the train rows in `order` ((n,), or (1 + R, n) with one order per model)."""
        if self.train_x.on(self.device):
            # One copy per epoch: a per-batch copy from pageable host memory would sync the stream
            # and stop the host from queueing the next batch's kernels while the device works.
            order = order.to(self.device)
        batch_size = self.config.head_batch_size
        for step, start in enumerate(range(0, self.n, batch_size)):
            idx = order[..., start : start + batch_size]
            if self.graphed is not None and heads_train and idx.numel() == batch_size:
                self.graphed(idx)
            else:
                self.train_step(idx, heads_train)
            if step % RELEASE_EVERY == RELEASE_EVERY - 1:
                self.train_x.release()
        for scheduler in self.schedulers:
            scheduler.step()

    def evaluate_epoch(self, epoch: int, heads_train: bool, last_epoch: bool, probe_epochs: int) -> dict:
        """Measure every probe and stack; keep each ratio's best state. Returns the bar's postfix."""
        last = self.config.selection_rule == "last"
        standard: list[float] = []
        heads_accuracies: list[list[float]] = []
        record = {"epoch": epoch, "standard": standard, "heads": heads_accuracies}
        for li, (probe, stack) in enumerate(zip(self.probes, self.stacks)):
            sel_probe, eval_probe, sel_heads, eval_heads = self.measure_model(probe, stack, heads_train)
            if heads_train:
                final = last and epoch == (self.config.fixed_epochs or 0) - 1
                for r in self.best.update_heads(li, epoch, sel_heads, eval_heads, last=final):
                    copy_ratio_state(self.best_heads[li], stack.state_dict(), r)
            if self.best.update_probe(li, epoch, sel_probe, eval_probe, last=last and last_epoch):
                self.best_probes[li] = copy.deepcopy(probe.state_dict())
            standard.append(eval_probe)
            heads_accuracies.append(eval_heads)
        self.history.append(record)
        postfix = {"A0": f"{max(standard):.3f}"}
        if heads_train:
            postfix["A_last"] = f"{max(h[-1] for h in heads_accuracies):.3f}"
        return postfix


__all__ = [  # what this module offered before evaluation.py and numerics.py took their parts
    "CPU_BF16_MIN_ROWS",
    "EVAL_CHUNK",
    "HeadFit",
    "adam",
    "correct_rows",
    "evaluate",
    "fit_heads",
    "head_matmul_dtype",
]
