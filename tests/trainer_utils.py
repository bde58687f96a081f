"""Shared pieces for the Trainer tests and their multi-process scripts."""

from __future__ import annotations

import torch
from conftest import build_tiny_model, make_image_dataset, tiny_image_processor

from iis_hf import ConceptBank, IISTrainer, IISTrainingArguments
from iis_hf.demo import image_classification_collator


def random_bank(dim: int = 32, num: int = 20, seed: int = 0) -> ConceptBank:
    generator = torch.Generator().manual_seed(seed)
    return ConceptBank(
        vectors=torch.randn(num, dim, generator=generator), names=[f"c{i}" for i in range(num)]
    )


def splits(per_class: int = 8, seed: int = 0):
    data = make_image_dataset(num_classes=3, per_class=per_class, seed=seed)
    split = data.train_test_split(test_size=0.25, seed=0, stratify_by_column="label")
    return split["train"], split["test"]


def make_args(output_dir, **overrides) -> IISTrainingArguments:
    settings = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=1e-3,
        num_train_epochs=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
        seed=0,
        data_seed=0,
        iis_eval_epochs=2,
        iis_num_concepts=20,
        iis_images_per_class=2,
        iis_sparsity_ratios=[0.9],  # the ratio these tests were written for (the default is [0.5])
    )
    settings.update(overrides)
    return IISTrainingArguments(**settings)


def make_trainer(
    output_dir, arch: str = "vit", bank=None, train=None, evaluation=None, model=None, **overrides
):
    processor = tiny_image_processor()
    if train is None:
        train, evaluation = splits()
    return IISTrainer(
        model=model if model is not None else build_tiny_model(arch, head=True),
        args=make_args(output_dir, **overrides),
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=processor,
        data_collator=image_classification_collator(processor),
        concept_bank=bank if bank is not None else random_bank(),
    )
