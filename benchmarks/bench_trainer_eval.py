#!/usr/bin/env python
"""What measuring IIS at evaluation costs: `IISTrainer.evaluate()` with and without `iis_eval`.

    python benchmarks/bench_trainer_eval.py                       # a ViT-S/16-shaped model, 224 px, CPU
    python benchmarks/bench_trainer_eval.py --arch demo-resnet    # the demo's 0.3M-parameter ResNet, 32 px

The shape of the fine-tuning example in docs/fine-tuning.md (ViT on CIFAR-10: 10,000 eval images, eval_iis heads fitted
on `iis_eval_max_train_samples` = 5,000 training images, i.e. half as many as the eval set), scaled
down to what this CPU runs in minutes: `--eval-images` eval images and half as many training images
for the heads (digits, repeated to size; the timing does not depend on the pixels), random-init
weights. Plain evaluation is one forward pass over the eval set; with `iis_eval` it also runs one over
the training images and fits the probe and the heads of every ratio (the published recipe, the default
protocol). The last line is the JSON result; the goal is an IIS evaluation costing at most 3x a plain one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch


def build(arch: str):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    if arch == "demo-resnet":
        from iis_hf.demo import demo_image_processor, demo_model

        return demo_model(10, 0), demo_image_processor()
    if arch == "vit-small":
        config = ViTConfig(
            image_size=224, patch_size=16, hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
            intermediate_size=1536, num_labels=10,
        )  # fmt: skip
        torch.manual_seed(0)
        return ViTForImageClassification(config), ViTImageProcessor(size={"height": 224, "width": 224})
    raise SystemExit(f"unknown --arch {arch}")


def repeat_to(dataset, size: int):
    from datasets import concatenate_datasets

    copies = -(-size // len(dataset))
    return concatenate_datasets([dataset] * copies).select(range(size))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", choices=("vit-small", "demo-resnet"), default="vit-small")
    parser.add_argument("--eval-images", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from iis_hf import ConceptBank, IISTrainer, IISTrainingArguments
    from iis_hf.data import load_digits_dataset
    from iis_hf.demo import image_classification_collator

    model, processor = build(args.arch)
    digits = load_digits_dataset()
    evaluation = repeat_to(digits["test"], args.eval_images)
    train = repeat_to(digits["train"], args.eval_images // 2)
    bank = ConceptBank.from_prototypes(
        model, digits["train"], image_processor=processor, images_per_class=2, num_concepts=64, progress=False
    )
    times = {}
    with tempfile.TemporaryDirectory() as output:
        for iis_eval in (False, True):
            trainer = IISTrainer(
                model=model,
                args=IISTrainingArguments(
                    output_dir=output,
                    per_device_eval_batch_size=args.batch_size,
                    report_to=[],
                    use_cpu=True,
                    disable_tqdm=True,
                    iis_eval=iis_eval,
                    iis_eval_max_train_samples=len(train),
                ),
                train_dataset=train,
                eval_dataset=evaluation,
                processing_class=processor,
                data_collator=image_classification_collator(processor),
                concept_bank=bank,
            )
            trainer.evaluate()  # warm-up
            runs = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                trainer.evaluate()
                runs.append(time.perf_counter() - started)
            times["iis" if iis_eval else "plain"] = statistics.median(runs)
            model = trainer.iis_model.backbone
    result = {
        "arch": args.arch,
        "eval_images": len(evaluation),
        "train_images_for_heads": len(train),
        "plain_s": round(times["plain"], 2),
        "iis_s": round(times["iis"], 2),
        "ratio": round(times["iis"] / times["plain"], 2),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
