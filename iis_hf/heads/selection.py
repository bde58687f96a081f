"""Which state of each head is reported, and when training stops: the selection and the plateau rule.

`Selection` keeps, per learning rate and ratio, the state chosen by `model_selection` (the best on
the selection rows, or the last); `Plateau` is the converged protocol's stopping rule on the training
loss. Both are bookkeeping over numbers `iis_hf.heads.training` measures; neither trains anything.
"""

from __future__ import annotations

import copy
import math

CHECKS_PER_PATIENCE = 5  # a patience window holds about this many checks (at least one per epoch)
MIN_LOSS_DECREASE = 0.01  # an improvement: the training loss fell by at least this fraction ...
MIN_LOSS_DECREASE_NATS = 0.002  # ... and by at least this much (a separable set's loss -> 0 forever)


class Plateau:
    """When each model last improved: the converged protocol's stopping rule.

    The signal is each model's training loss over the last epoch: smooth, and blind to the eval rows,
    so stopping cannot pick a lucky moment of the eval set (eval accuracy moves by whole rows, and a
    rule on it kept chasing one-row noise long after the heads had stopped learning). An improvement
    is a fall below the model's best loss so far of at least `MIN_LOSS_DECREASE` of it and at least
    `MIN_LOSS_DECREASE_NATS` (a separable set's loss creeps towards 0 without end); a model
    has stalled when its last improvement is `patience` steps old or older.
    """

    def __init__(self, num_lrs: int, num_ratios: int, patience: int):
        self.patience = patience
        self.best = [[math.inf] * (num_ratios + 1) for _ in range(num_lrs)]  # column 0: the probe
        self.improved_at = [[0] * (num_ratios + 1) for _ in range(num_lrs)]

    def update(self, step: int, losses: list[list[float]]) -> None:
        for li, row in enumerate(losses):
            for j, loss in enumerate(row):
                best = self.best[li][j]
                if math.isinf(best) or loss <= best - max(MIN_LOSS_DECREASE * best, MIN_LOSS_DECREASE_NATS):
                    self.best[li][j], self.improved_at[li][j] = loss, step

    def all_stalled(self, step: int) -> bool:
        return all(step - at >= self.patience for row in self.improved_at for at in row)

    def stalled_matrix(self, step: int) -> list[list[bool]]:
        """converged[lr][ratio]: whether each head had stalled by `step`."""
        return [[step - at >= self.patience for at in row[1:]] for row in self.improved_at]


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

    def chosen_learning_rates(self) -> list[int]:
        """Per ratio, the index of the learning rate whose head is reported (best selection score)."""
        lrs = range(len(self.score))
        return [max(lrs, key=lambda li: (self.score[li][r], -li)) for r in range(len(self.score[0]))]

    def result(self, stacks, probes, best_heads, best_probes, learning_rates, history):
        from .training import HeadFit

        lrs = range(len(learning_rates))
        chosen = self.chosen_learning_rates()
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


def copy_ratio_state(target: dict, source: dict, ratio_index: int) -> None:
    for name in ("norm_weight", "norm_bias", "weight", "bias"):
        target[name][ratio_index].copy_(source[name][ratio_index])
