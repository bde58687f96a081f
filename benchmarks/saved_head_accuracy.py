#!/usr/bin/env python
"""How accurate is the interpretation head a fine-tuned model carries? the fine-tuning command of docs/fine-tuning.md on
scikit-learn's digits, compared with heads fitted afresh on the final features.

    python benchmarks/saved_head_accuracy.py --seeds 0 1 2

For each seed: the demo's 0.3M-parameter ResNet is pre-trained for two epochs with the interpretability
loss off (`--iis_weight 0`, the "pre-trained backbone"), then fine-tuned with docs/fine-tuning.md's command
(`iis-hf finetune ... --do_train --do_eval --eval_strategy epoch`, every IIS option at its default)
twice: with the head's own learning rate (`iis_head_learning_rate` 1e-2, the default) and with the
head on the backbone's learning rate (`--iis_head_learning_rate 2e-3`, what earlier releases did).
Per run it reports, at the loss ratio 0.9 on the 450 test digits:

- `trained`: the head as trained along with the backbone (`iis_trained_head_accuracy_0.9`);
- `saved`: the head the model carries after `iis_refit_head` (`iis_head_accuracy_0.9`);
- `fresh`: heads fitted afresh on the final features by the scoring pipeline (`eval_iis_accuracy_0.9`).

The last line printed is a JSON object with every run's figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from transformers.utils import logging as hf_logging

COMMON = [
    "--use_cpu", "--report_to", "none", "--disable_tqdm", "true",
    "--per_device_train_batch_size", "64", "--per_device_eval_batch_size", "128", "--learning_rate", "2e-3",
]  # fmt: skip
RATIO = "0.9"


def prepare(folder: Path, seed: int, epochs: float) -> tuple[str, str]:
    """The digits as a `save_to_disk` folder, and the demo ResNet pre-trained `epochs` on them."""
    from datasets import DatasetDict

    from iis_hf.data import load_digits_dataset
    from iis_hf.demo import demo_image_processor, demo_model
    from iis_hf.training.finetune import main as finetune

    data, start, pretrained = folder / "digits", folder / "start", folder / f"pretrained-{seed}"
    if not data.exists():  # its test split as "validation": the split the example evaluates on
        digits = load_digits_dataset()
        DatasetDict(train=digits["train"], validation=digits["test"]).save_to_disk(str(data))
    demo_model(10, seed).save_pretrained(start)
    demo_image_processor().save_pretrained(start)
    finetune([
        "--model_name_or_path", str(start), "--dataset_name", str(data), "--output_dir", str(pretrained),
        "--do_train", "--num_train_epochs", str(epochs), "--iis_weight", "0", "--no_iis_eval", "--no_iis_refit_head",
        "--seed", str(seed), "--save_strategy", "no", *COMMON,
    ])  # fmt: skip
    return str(data), str(pretrained)


def fine_tune(
    data: str,
    pretrained: str,
    output: Path,
    seed: int,
    epochs: float,
    head_lr: str | None,
    head_epochs: int | None = None,
) -> dict:
    """docs/fine-tuning.md's command (defaults for every IIS option but the loss ratio, RATIO), with the head's
    learning rate as given."""
    from iis_hf.training.finetune import main as finetune

    head = [] if head_lr is None else ["--iis_head_learning_rate", head_lr]
    if head_epochs is not None:  # a fixed budget for the scoring and refitted heads (quick runs)
        head += ["--iis_eval_epochs", str(head_epochs)]
    metrics = finetune([
        "--model_name_or_path", pretrained, "--dataset_name", data, "--output_dir", str(output),
        "--do_train", "--do_eval", "--eval_strategy", "epoch", "--save_strategy", "no",
        "--num_train_epochs", str(epochs), "--seed", str(seed), "--iis_sparsity_ratios", RATIO, *head, *COMMON,
    ])  # fmt: skip
    return {
        "accuracy": metrics["eval_accuracy"],
        "iis": metrics["eval_iis"],
        "trained": metrics[f"iis_trained_head_accuracy_{RATIO}"],
        "saved": metrics[f"iis_head_accuracy_{RATIO}"],
        "fresh": metrics[f"eval_iis_accuracy_{RATIO}"],
    }


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=3.0, help="fine-tuning epochs (default: 3)")
    parser.add_argument("--pretrain-epochs", type=float, default=2.0, help="pre-training epochs (default: 2)")
    parser.add_argument(
        "--head-epochs", type=int, help="a fixed budget for the heads (default: trained until converged)"
    )
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()

    settings = {"head lr 1e-2 (default)": None, "head lr = backbone lr (2e-3)": "2e-3"}
    runs: dict[str, list[dict]] = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            data, pretrained = prepare(Path(scratch), seed, args.pretrain_epochs)
            for name, head_lr in settings.items():
                output = Path(scratch) / f"run-{seed}-{len(runs[name])}-{head_lr}"
                runs[name].append(
                    fine_tune(data, pretrained, output, seed, args.epochs, head_lr, args.head_epochs)
                )
                print(f"seed {seed} {name}: {json.dumps(runs[name][-1])}", flush=True)

    print(f"\nAccuracy of the interpretation head at rho = {RATIO} on the 450 test digits "
          f"(mean ± sd over seeds {args.seeds}):\n")  # fmt: skip
    print("| head | model accuracy | IIS | trained head | saved head (refitted) | fresh heads |")
    print("|---|---|---|---|---|---|")
    for name, figures in runs.items():
        cells = [
            mean_sd([f[key] for f in figures]) for key in ("accuracy", "iis", "trained", "saved", "fresh")
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    result = {
        "seeds": args.seeds,
        "epochs": args.epochs,
        "pretrain_epochs": args.pretrain_epochs,
        "runs": runs,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
