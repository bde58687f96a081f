"""The embedded default job: a small HF model on scikit-learn's digits, trained briefly, then scored.

Everything is offline: the images ship with scikit-learn and the model starts from a config.
"""

from __future__ import annotations

import os

import torch

DEMO_IMAGE_SIZE = 32


def demo_image_processor():
    """A ViT-style processor (resize to 32 x 32, scale, normalise to [-1, 1]) for the digits."""
    from transformers import ViTImageProcessor

    size = {"height": DEMO_IMAGE_SIZE, "width": DEMO_IMAGE_SIZE}
    return ViTImageProcessor(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def demo_model(num_labels: int = 10, seed: int = 0, id2label: dict[int, str] | None = None):
    """A 0.3M-parameter ResNet for 32 x 32 inputs, random-initialised from its config."""
    from transformers import AutoModelForImageClassification, ResNetConfig

    config = ResNetConfig(
        embedding_size=32,
        hidden_sizes=[32, 64, 128],
        depths=[1, 1, 1],
        layer_type="basic",
        downsample_in_first_stage=False,
        num_labels=num_labels,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()} if id2label else None,
    )
    torch.manual_seed(seed)
    return AutoModelForImageClassification.from_config(config)


def image_classification_collator(image_processor, image_column: str = "image", label_column: str = "label"):
    """Turn raw dataset rows into `{"pixel_values", "labels"}` with the model's own processor."""

    def collate(rows):
        images = [row[image_column].convert("RGB") for row in rows]
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
    model = trainer.model.eval()
    # save_pretrained rather than Trainer.save_model: the latter also pickles training_args.bin.
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return model, processor
