"""Step-time overhead of the interpretability loss: plain Trainer vs IISTrainer on the same model.

Both trainers run the same model, data, batch size and number of steps (IIS at evaluation time
off); the step time is the median wall time between `on_step_begin` and `on_step_end` after a
warm-up. Goal on CPU: at most 10% overhead.

    python benchmarks/bench_trainer_overhead.py                          # demo ResNet, CPU
    python benchmarks/bench_trainer_overhead.py --arch vit-base --device cuda --bf16 --steps 200

The last line printed is one JSON object: plain_step_s, iis_step_s, overhead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.utils import logging as hf_logging

from iis_hf import ConceptBank, IISTrainer, IISTrainingArguments
from iis_hf.demo import demo_model


class StepTimer(TrainerCallback):
    def __init__(self, device: str):
        self.device, self.times, self.started = device, [], 0.0

    def _sync(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self.started)


def build_model(arch: str, num_labels: int, image_size: int):
    from transformers import AutoModelForImageClassification, ResNetConfig, ViTConfig

    if arch == "resnet-small":
        return demo_model(num_labels, seed=0)
    torch.manual_seed(0)
    if arch == "resnet-50":
        config = ResNetConfig(num_labels=num_labels)
    elif arch == "vit-small":
        config = ViTConfig(
            image_size=image_size,
            patch_size=8,
            hidden_size=192,
            num_hidden_layers=6,
            num_attention_heads=3,
            intermediate_size=768,
            num_labels=num_labels,
        )
    elif arch == "vit-base":  # ViT-B/16
        config = ViTConfig(image_size=image_size, num_labels=num_labels)
    else:
        raise ValueError(arch)
    return AutoModelForImageClassification.from_config(config)


class RandomImages(torch.utils.data.Dataset):
    def __init__(self, n: int, image_size: int, num_labels: int):
        generator = torch.Generator().manual_seed(0)
        self.pixels = torch.randn(n, 3, image_size, image_size, generator=generator)
        self.labels = torch.randint(0, num_labels, (n,), generator=generator)

    def __len__(self):
        return self.labels.shape[0]

    def __getitem__(self, i):
        return {"pixel_values": self.pixels[i], "labels": self.labels[i]}


def representation_dim(model) -> int:
    return next(m for m in model.classifier.modules() if isinstance(m, torch.nn.Linear)).in_features


def run(kind: str, args) -> tuple[float, float | None]:
    model = build_model(args.arch, args.num_labels, args.image_size)
    data = RandomImages(args.batch_size * (args.steps + args.warmup), args.image_size, args.num_labels)
    timer = StepTimer(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(
            output_dir=tmp,
            per_device_train_batch_size=args.batch_size,
            max_steps=args.steps + args.warmup,
            learning_rate=1e-4,
            save_strategy="no",
            report_to=[],
            logging_strategy="no",
            disable_tqdm=True,
            use_cpu=args.device == "cpu",
            bf16=args.bf16,
            fp16=args.fp16,
            seed=0,
            dataloader_num_workers=0,
        )
        if kind == "plain":
            trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=data)
        else:
            generator = torch.Generator().manual_seed(0)
            dim = representation_dim(model)
            bank = ConceptBank(
                vectors=torch.randn(args.num_concepts, dim, generator=generator),
                names=[f"c{i}" for i in range(args.num_concepts)],
            )
            iis_args = IISTrainingArguments(
                **common, iis_weight=1.0, iis_sparsity_ratios=args.ratios, iis_eval=False
            )
            trainer = IISTrainer(model=model, args=iis_args, train_dataset=data, concept_bank=bank)
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(timer)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None
    return statistics.median(timer.times[args.warmup :]), peak


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--arch", default="resnet-small", choices=["resnet-small", "resnet-50", "vit-small", "vit-base"]
    )
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="alternate plain/IIS runs this many times")
    parser.add_argument("--num-labels", type=int, default=10)
    parser.add_argument("--num-concepts", type=int, default=200)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.9])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--fp16", action="store_true")
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()
    plain, iis, peaks = [], [], {}
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        step, peaks["plain"] = run("plain", args)
        plain.append(step)
        step, peaks["iis"] = run("iis", args)
        iis.append(step)
    result = {
        "arch": args.arch,
        "device": args.device,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "steps": args.steps,
        "plain_step_s": round(min(plain), 5),
        "iis_step_s": round(min(iis), 5),
        "overhead": round(min(iis) / min(plain) - 1.0, 4),
        "plain_peak_gib": peaks["plain"],
        "iis_peak_gib": peaks["iis"],
    }
    print(
        f"plain Trainer {result['plain_step_s'] * 1000:.1f} ms/step, IISTrainer {result['iis_step_s'] * 1000:.1f} "
        f"ms/step: overhead {result['overhead']:+.1%}"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
