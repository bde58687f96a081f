"""Plain Trainer vs IISTrainer fine-tuning on scikit-learn's digits, at equal budgets and seeds.

For each seed: a ResNet is pre-trained briefly with a plain Trainer (the "pre-trained backbone"),
then fine-tuned for the same number of steps twice: with a plain Trainer, and with IISTrainer
(the interpretability loss over prototype concepts built from the pre-trained backbone). Each
result is scored the same way: test accuracy of the model's own classifier, and IIS with
prototype-patch concepts built from the fine-tuned backbone itself.

    python benchmarks/finetune_digits.py --seeds 0 1 2                    # the README table
    python benchmarks/finetune_digits.py --sweep --seeds 0 1 2            # iis_weight x ratios sweep

The last line printed is a JSON object with every run's figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings

import torch
from transformers import PrinterCallback, Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

from iis_hf import (
    ConceptBank,
    IISTrainer,
    IISTrainingArguments,
    compute_iis,
    extract_features,
    load_digits_dataset,
)
from iis_hf.demo import demo_image_processor, demo_model, image_classification_collator

SCORE_RATIOS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.98)


def common_args(output_dir: str, epochs: float, seed: int) -> dict:
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=32,
        num_train_epochs=epochs,
        learning_rate=1e-3,
        weight_decay=0.05,
        warmup_steps=0.1,
        lr_scheduler_type="cosine",
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=True,
        logging_strategy="no",
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
    )


def pretrain(data, seed: int, epochs: float):
    names = data["train"].features["label"].names
    model = demo_model(len(names), seed, id2label=dict(enumerate(names)))
    processor = demo_image_processor()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**common_args(tmp, epochs, seed)),
            train_dataset=data["train"],
            data_collator=image_classification_collator(processor),
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return trainer.model.cpu().eval()


def finetune(backbone, data, seed: int, epochs: float, iis_weight: float | None, ratios=(0.9,)):
    """iis_weight None: plain Trainer; otherwise IISTrainer. Returns the fine-tuned backbone, seconds."""
    model = type(backbone)(backbone.config)
    model.load_state_dict(backbone.state_dict())
    processor = demo_image_processor()
    collate = image_classification_collator(processor)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if iis_weight is None:
            trainer = Trainer(
                model=model,
                args=TrainingArguments(**common_args(tmp, epochs, seed)),
                train_dataset=data["train"],
                data_collator=collate,
            )
            trainer.remove_callback(PrinterCallback)
            trainer.train()
            tuned = trainer.model
        else:
            args = IISTrainingArguments(
                **common_args(tmp, epochs, seed),
                iis_weight=iis_weight,
                iis_sparsity_ratios=list(ratios),
                iis_num_concepts=200,
                iis_eval=False,
            )
            trainer = IISTrainer(
                model=model,
                args=args,
                train_dataset=data["train"],
                data_collator=collate,
                processing_class=processor,
            )
            trainer.remove_callback(PrinterCallback)
            trainer.train()
            tuned = trainer.iis_model.backbone
    return tuned.cpu().eval(), time.perf_counter() - started


def score(model, data, seed: int) -> dict:
    processor = demo_image_processor()
    kwargs = dict(image_processor=processor, batch_size=256, device="cpu", progress=False)
    train = extract_features(model, data["train"], **kwargs)
    test = extract_features(model, data["test"], **kwargs)
    bank = ConceptBank.from_prototypes(model, data["train"], num_concepts=200, seed=seed, **kwargs)
    with torch.no_grad():
        logits = model.classifier(test.features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compute_iis(
            train.features,
            train.labels,
            test.features,
            test.labels,
            bank,
            sparsity_ratios=SCORE_RATIOS,
            seed=seed,
            progress=False,
            device="cpu",
        )
    return {
        "accuracy": float((logits.argmax(-1) == test.labels).float().mean()),
        "iis": result.iis,
        "probe_accuracy": result.standard_accuracy,
        "interpretation_accuracy": dict(zip(map(str, result.sparsity_ratios), result.accuracies)),
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
            tuned, seconds = finetune(backbone, data, seed, args.finetune_epochs, weight, ratios)
            figures = score(tuned, data, seed)
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
