"""Plain Trainer vs IISTrainer fine-tuning on scikit-learn's digits, at equal budgets and seeds.

For each seed: a ResNet is pre-trained briefly with a plain Trainer (the "pre-trained backbone"),
then fine-tuned for the same number of steps twice: with a plain Trainer, and with IISTrainer
(the interpretability loss over prototype concepts built from the pre-trained backbone). Each
result is scored the same way: test accuracy of the model's own classifier, and IIS with
prototype-patch concepts built from the fine-tuned backbone itself.

    python examples/research_projects/iis_paper/finetune_digits.py --seeds 0 1 2                    # the fine-tuning table of docs/RESULTS.md
    python examples/research_projects/iis_paper/finetune_digits.py --sweep --seeds 0 1 2            # iis_weight x ratios sweep

The last line printed is a JSON object with every run's figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

# The pre-training, fine-tuning and scoring of examples/research_projects/iis_paper/reproduce_findings.py (finding 2 there is
# this comparison, with more seeds and a second data set).
from iis_paper.runs import finetune_run, pretrain
from iis_paper.scoring import SCORE_RATIOS, score_checkpoint
from transformers.utils import logging as hf_logging

from iis_hf.data import load_digits_dataset


def score(model, data, seed: int) -> dict:
    """Test accuracy of the model's own classifier; IIS with 200 prototype-patch concepts of the model."""
    figures = score_checkpoint(model, data, seed=seed, kinds=("prototype",))
    prototype = figures["concepts"]["prototype"]
    return {
        "accuracy": figures["accuracy"],
        "iis": prototype["iis"],
        "probe_accuracy": prototype["probe_accuracy"],
        "interpretation_accuracy": prototype["interpretation_accuracy"],
    }


def mean_sd(values) -> str:
    values = list(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-epochs", type=float, default=1.0)
    parser.add_argument("--finetune-epochs", type=float, default=2.0)
    parser.add_argument(
        "--train-size", type=int, default=600, help="training images (the rest of train unused)"
    )
    parser.add_argument("--iis-weight", type=float, default=1.0)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.9])
    parser.add_argument("--sweep", action="store_true", help="sweep iis_weight and the loss ratios instead")
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    full = load_digits_dataset()
    data = {
        "train": full["train"].shuffle(seed=0).select(range(min(args.train_size, len(full["train"])))),
        "test": full["test"],
    }
    if args.sweep:
        settings = [(None, (0.9,))] + [
            (w, r) for w in (0.1, 0.5, 1.0, 2.0) for r in ((0.5,), (0.9,), (0.5, 0.9, 0.98))
        ]
    else:
        settings = [(None, (0.9,)), (args.iis_weight, tuple(args.ratios))]
    runs = []
    for seed in args.seeds:
        backbone = pretrain(data, seed, args.pretrain_epochs)
        for weight, ratios in settings:
            tuned = finetune_run(backbone, data, seed, args.finetune_epochs, weight, ratios)
            figures, seconds = score(tuned["model"], data, seed), tuned["seconds"]
            runs.append(
                {
                    "seed": seed,
                    "iis_weight": weight,
                    "ratios": list(ratios),
                    "seconds": round(seconds, 2),
                    **figures,
                }
            )
            label = "plain Trainer" if weight is None else f"IISTrainer w={weight:g} r={list(ratios)}"
            print(
                f"seed {seed} {label:<34} acc {figures['accuracy']:.4f}  IIS {figures['iis']:.4f}",
                file=sys.stderr,
            )

    print(
        f"\n{len(args.seeds)} seeds, train {len(data['train'])} / test {len(data['test'])} digits, "
        f"pretrain {args.pretrain_epochs:g} + fine-tune {args.finetune_epochs:g} epochs\n"
    )
    header = "| fine-tuning | accuracy | IIS | " + " | ".join(f"A({r:g})" for r in SCORE_RATIOS) + " |"
    print(header)
    print("|---" * (3 + len(SCORE_RATIOS)) + "|")
    for weight, ratios in settings:
        group = [r for r in runs if r["iis_weight"] == weight and r["ratios"] == list(ratios)]
        label = (
            "Trainer"
            if weight is None
            else f"IISTrainer (λ={weight:g}, ρ={','.join(f'{r:g}' for r in ratios)})"
        )
        cells = [mean_sd(r["accuracy"] for r in group), mean_sd(r["iis"] for r in group)]
        cells += [
            f"{statistics.mean(r['interpretation_accuracy'][str(x)] for r in group):.4f}"
            for x in SCORE_RATIOS
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(json.dumps({"runs": runs}))


if __name__ == "__main__":
    main()
