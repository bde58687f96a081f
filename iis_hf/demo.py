"""The embedded default job: a small HF model on scikit-learn's digits, trained briefly, then scored.

Everything is offline: the images ship with scikit-learn and the model starts from a config.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from .score import IISResult

DEMO_IMAGE_SIZE = 32
# One intra-op thread: float sums then run in one order whatever the machine's core count, so on one
# CPU kind `iis-hf demo` prints the same table on every run (README's, checked by
# benchmarks/readme_demo.py). Two threads on a loaded 2-core machine also trained 2-3x slower.
DEMO_THREADS = 1


@contextlib.contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` intra-op CPU threads (None: leave torch's setting), then restore it.

    Why: the demo's training (convolutions) and heads reduce float sums split across threads, so
    another thread count gives other last digits; pinning it makes the printed table repeatable."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def demo_image_processor():
    """A ViT-style processor (resize to 32 x 32, scale, normalise to [-1, 1]) for the digits.

    Without torchvision, transformers' PIL backend directly (`ViTImageProcessor` would fall back to it
    with a warning on every run)."""
    import importlib.util

    import transformers

    name = "ViTImageProcessor" if importlib.util.find_spec("torchvision") else "ViTImageProcessorPil"
    if not hasattr(transformers, name):  # transformers releases before the PIL backend's own class
        name = "ViTImageProcessor"
    processor_class = getattr(transformers, name)
    size = {"height": DEMO_IMAGE_SIZE, "width": DEMO_IMAGE_SIZE}
    return processor_class(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def demo_model(num_labels: int = 10, seed: int = 0, id2label: dict[int, str] | None = None):
    """A 0.3M-parameter ResNet for 32 x 32 inputs, random-initialised from its config."""
    from transformers import AutoModelForImageClassification, ResNetConfig

    config = ResNetConfig(
        embedding_size=32,
        hidden_sizes=[32, 64, 128],
        depths=[1, 1, 1],
        layer_type="basic",
        downsample_in_first_stage=False,
        # num_labels is a documented PreTrainedConfig argument that transformers 5's typed signature omits
        num_labels=num_labels,  # type: ignore[call-arg]
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()} if id2label else None,
    )
    torch.manual_seed(seed)
    return AutoModelForImageClassification.from_config(config)


def image_classification_collator(image_processor, image_column: str = "image", label_column: str = "label"):
    """Turn raw dataset rows into `{"pixel_values", "labels"}` with the model's own processor."""

    from .images import load_image

    def collate(rows):
        images = [load_image(row[image_column], what=f"a value of column {image_column!r}") for row in rows]
        batch = {"pixel_values": image_processor(images=images, return_tensors="pt")["pixel_values"]}
        batch["labels"] = torch.tensor([int(row[label_column]) for row in rows])
        return batch

    return collate


def train_demo_model(
    dataset, output_dir: str | os.PathLike, epochs: float = 3.0, seed: int = 0, progress: bool = True
):
    """Train `demo_model` on `dataset["train"]` with a plain `transformers.Trainer`; save it."""
    from transformers import Trainer, TrainingArguments

    names = dataset["train"].features["label"].names
    model = demo_model(len(names), seed, id2label=dict(enumerate(names)))
    processor = demo_image_processor()
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=64,
        num_train_epochs=epochs,
        learning_rate=2e-3,
        weight_decay=0.05,
        warmup_steps=0.1,
        lr_scheduler_type="cosine",
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        logging_strategy="no",
        disable_tqdm=not progress,
        seed=seed,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset["train"],
        data_collator=image_classification_collator(processor),
        processing_class=processor,
    )
    trainer.train()
    model.eval()  # trained in place: `trainer.model` is this model
    # save_pretrained rather than Trainer.save_model: the latter also pickles training_args.bin.
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return model, processor


def run_demo(
    output_dir: str | os.PathLike, train_epochs: float, config, log=print, *, overwrite: bool = True
) -> dict[str, IISResult]:
    """The embedded default job: train the demo ResNet on digits, score it and its random init.

    Writes `output_dir/` (iis.json for the trained model, iis_random-init.json, iis_curve.png,
    concept_bank/ and model/) and returns both results, trained first. Everything, the trained model
    included, is written into a temporary folder beside `output_dir` that replaces it at the end
    (an existing folder with content only when `overwrite`): a failed or killed run leaves no `model/`.
    `iis-hf demo` runs it inside `pinned_threads(DEMO_THREADS)` (its `--threads`), which makes the
    printed table the same on every run on one CPU kind.
    """
    from .data import load_digits_dataset
    from .files import atomic_directory
    from .outputs import MODEL_FOLDER, write_scoring_files
    from .pipeline import score_model

    output_dir = Path(output_dir)
    data = load_digits_dataset()
    log(f"[1/3] scikit-learn digits: {len(data['train'])} train / {len(data['test'])} test images")
    random_model = demo_model(10, config.seed).eval()
    size = sum(p.numel() for p in random_model.parameters()) / 1e6
    with atomic_directory(output_dir, overwrite=overwrite) as folder:
        log(f"[2/3] training a {size:.2f}M-parameter ResNet for {train_epochs:g} epochs")
        trained_model, _processor = train_demo_model(
            data, folder / MODEL_FOLDER, train_epochs, config.seed, config.progress
        )
        log("[3/3] scoring the random-init and the trained model")
        results: dict[str, IISResult] = {}
        for name, model in (("trained", trained_model), ("random-init", random_model)):
            results[name] = score_model(
                model, data["train"], data["test"], config, image_processor=demo_image_processor()
            )
            results[name].metadata.update(model=f"demo ResNet ({name})", dataset="scikit-learn digits")
            results[name].settings["data"].update(
                dataset="scikit-learn digits", train_split="train", eval_split="test"
            )
        write_scoring_files(
            folder, results, results["trained"].concept_bank, title="IIS on scikit-learn digits (demo)"
        )
    return results
