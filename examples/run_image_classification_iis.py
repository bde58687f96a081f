#!/usr/bin/env python
"""Fine-tune a 🤗 Transformers image classifier with interpretability maximization (iis-hf).

This is `examples/pytorch/image-classification/run_image_classification.py` from transformers with
`IISTrainer` in place of `Trainer`. The model is trained with

    loss = CE(model logits) + iis_weight * CE(sparse interpretation heads over concepts)

which pushes the representation to keep its accuracy when predictions must go through a few
concepts, and every evaluation reports the Inherent Interpretability Score (`eval_iis`) next to
`eval_accuracy`. The output folder is a standard checkpoint (`AutoModelForImageClassification`
loads it with no custom code) plus the interpretation head (`iis_head.safetensors`,
`iis_config.json`), its concept bank (`concept_bank.safetensors`, `concept_bank.json`), `iis.json`,
`iis_curve.png` and a model card whose `model-index` carries accuracy and IIS.

All arguments of `transformers.TrainingArguments` work, plus the `--iis_*` ones of
`iis_hf.IISTrainingArguments` (`--iis_weight`, `--iis_sparsity_ratios`, `--iis_concept_bank`,
`--iis_num_concepts`, `--iis_images_per_class`, `--iis_eval`, `--iis_eval_epochs`, ...); see `--help`.
The dataset is `--dataset_name` (a Hub dataset id, a folder written by `save_to_disk`, or a folder
of images with one sub-folder per class) or `--train_dir` / `--validation_dir` image folders.
Without a validation split, `--train_val_split` (0.15) of the training images is held out.
Training images get a random resized crop and a horizontal flip; torchvision is not needed.

One process (GPU if there is one, `--use_cpu` to force the CPU):

    python examples/run_image_classification_iis.py \\
        --model_name_or_path google/vit-base-patch16-224-in21k \\
        --dataset_name cifar10 \\
        --output_dir ./vit-cifar10-iis \\
        --do_train --do_eval \\
        --learning_rate 2e-5 --num_train_epochs 5 \\
        --per_device_train_batch_size 32 --per_device_eval_batch_size 32 \\
        --eval_strategy epoch --save_strategy epoch --logging_steps 10 \\
        --iis_weight 0.1 --iis_sparsity_ratios 0.9 \\
        --seed 1337

Your own images, in `imagefolder` layout (`train/<class>/*.jpg`, `val/<class>/*.jpg`), starting
from a checkpoint with another number of classes:

    python examples/run_image_classification_iis.py \\
        --model_name_or_path google/vit-base-patch16-224 --ignore_mismatched_sizes \\
        --train_dir ./images/train --validation_dir ./images/val \\
        --output_dir ./vit-mine-iis --do_train --do_eval --num_train_epochs 3

The same arguments can live in a JSON file, passed alone:

    python examples/run_image_classification_iis.py config.json

Several GPUs on one machine (accelerate; every process gets its share of each batch, gradients
are averaged, the interpretation head is part of the model and syncs with it):

    accelerate launch --num_processes 8 examples/run_image_classification_iis.py \\
        --model_name_or_path google/vit-base-patch16-224-in21k --dataset_name cifar10 \\
        --output_dir ./vit-cifar10-iis --do_train --do_eval --bf16 \\
        --per_device_train_batch_size 64 --num_train_epochs 5

Two machines with 8 GPUs each (run on both, `--machine_rank 1` on the second):

    accelerate launch --num_machines 2 --num_processes 16 --machine_rank 0 \\
        --main_process_ip 10.0.0.1 --main_process_port 29500 \\
        examples/run_image_classification_iis.py --dataset_name cifar10 --output_dir ./out --do_train --bf16

or with torchrun (`--node_rank 1` on the second machine):

    torchrun --nnodes 2 --nproc_per_node 8 --node_rank 0 --master_addr 10.0.0.1 --master_port 29500 \\
        examples/run_image_classification_iis.py --dataset_name cifar10 --output_dir ./out --do_train --bf16

The same job is `iis-hf finetune ARGS...` on the command line, and `iis_hf.training.finetune.run(...)`
from Python.
"""

import os
import sys

from iis_hf.training.finetune import build_parser, run


def main():
    # transformers' HfArgumentParser over ModelArguments, DataTrainingArguments and
    # iis_hf.IISTrainingArguments (TrainingArguments plus the --iis_* options); pass --help to see them.
    parser = build_parser()
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        # A single argument ending in .json is a file holding all the arguments.
        model_args, data_args, training_args = parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses()

    # Load the data and the model, fine-tune with IISTrainer, evaluate (accuracy and IIS),
    # save metrics and the model card or push everything to the Hub; see iis_hf/training/finetune.py.
    metrics = run(model_args, data_args, training_args)
    return metrics


if __name__ == "__main__":
    main()
