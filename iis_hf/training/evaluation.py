"""What `IISTrainer` collects in an evaluation beside Trainer's own outputs.

Kept apart from the Trainer so an evaluation's bookkeeping (accuracies counted on the device,
logits and representations gathered over processes) reads on its own.
"""

from __future__ import annotations

import numpy as np
import torch

# Two head accuracies sit side by side in an evaluation's metrics, named for what they measure:
# ``eval_model_head_accuracy_<rho>``, the model's own head at each loss ratio (the head the loss trains,
# and after `iis_refit_head` the refitted one the model saves), and ``eval_iis_accuracy_<rho>``, A(rho) of
# the IIS curve: heads fitted afresh on the current features by the scoring recipe (`measure_iis`).
MODEL_HEAD_METRIC = "model_head_accuracy"


class EvaluationSide:
    """What IISTrainer collects in an evaluation beside Trainer's own outputs, gathered over processes.

    Accuracies are counted on the device; the interpretation logits and the representations are
    kept (on the CPU) only when asked for.
    """

    def __init__(self, keep_representations: bool):
        self.keep_representations = keep_representations
        self.correct: torch.Tensor | None = None  # (1 + R,) correct counts: backbone, then each head
        self.num_rows = 0
        self.logits: list[torch.Tensor] = []
        self.features: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def add(self, accelerator, outputs, labels: torch.Tensor | None) -> None:
        iis_logits = accelerator.gather_for_metrics(outputs.iis_logits.detach().transpose(0, 1).contiguous())
        self.logits.append(iis_logits.float().cpu())
        if labels is None:
            return
        logits = accelerator.gather_for_metrics(outputs.logits.detach())
        labels = accelerator.gather_for_metrics(labels)
        correct = torch.cat(
            [(logits.argmax(-1) == labels)[None], (iis_logits.argmax(-1) == labels[:, None]).T]
        )
        counts = correct.sum(-1)
        self.correct = counts if self.correct is None else self.correct + counts
        self.num_rows += int(labels.shape[0])
        if self.keep_representations:
            self.features.append(
                accelerator.gather_for_metrics(outputs.representations.detach().float()).cpu()
            )
            self.labels.append(labels.cpu())

    def accuracies(self, sparsity_ratios) -> dict[str, float]:
        correct = self.correct
        if not self.num_rows or correct is None:  # both set by the first labelled batch
            return {}
        counts = (correct.double() / self.num_rows).tolist()
        metrics = {"accuracy": counts[0]}
        metrics.update({f"{MODEL_HEAD_METRIC}_{r:g}": a for r, a in zip(sparsity_ratios, counts[1:])})
        return metrics

    def representations(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.features:
            return None, None
        return torch.cat(self.features), torch.cat(self.labels)

    def iis_logits(self) -> np.ndarray | None:
        return torch.cat(self.logits).numpy() if self.logits else None
