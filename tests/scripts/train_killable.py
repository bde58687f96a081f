"""A tiny IISTrainer run that a test can kill and resume (tests only).

usage: train_killable.py OUTPUT_DIR MODE [STEP]

MODE:
  full               train uninterrupted
  slow               train, sleeping 0.4 s after every step (the test kills it from outside)
  kill-while-saving  train, and SIGKILL this process while checkpoint-STEP is being written: after
                     the weights, head, optimizer and scheduler, before the RNG states and
                     trainer_state.json (what a kill in the middle of `Trainer._save_checkpoint` leaves)
  resume             train with resume_from_checkpoint=True (the newest complete checkpoint)

18 training images in batches of 4 give 5 steps per epoch; 10 steps with a checkpoint every 2 steps,
so checkpoints 2, 4, 6 and 8 fall in the middle of an epoch. The backbone has dropout, so a resumed run
matches an uninterrupted one only if the RNG states were restored too. At the end the weights of
backbone and head go to OUTPUT_DIR/final.safetensors. With IIS_TEST_AUGMENT=1 the training images go
through the fine-tuning run's random crops and flips (`ImageClassificationTransform`), whose draws must
resume where they stopped too.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest and trainer_utils
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for iis_hf

import torch
from conftest import tiny_config
from trainer_utils import make_trainer
from transformers import Trainer, TrainerCallback, ViTForImageClassification

from iis_hf.files import save_safetensors_atomic

SETTINGS = dict(
    per_device_train_batch_size=4,
    max_steps=10,
    save_strategy="steps",
    save_steps=2,
    learning_rate=5e-3,
    lr_scheduler_type="linear",
)


class Sleep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(0.4)


def dropout_vit():
    config = tiny_config("vit")
    config.hidden_dropout_prob = 0.1
    config.attention_probs_dropout_prob = 0.1
    torch.manual_seed(0)
    return ViTForImageClassification(config)


def main() -> None:
    output_dir, mode = Path(sys.argv[1]), sys.argv[2]
    if mode == "kill-while-saving":
        step = int(sys.argv[3])
        save_rng_state = Trainer._save_rng_state

        def die_at_step(self, checkpoint_dir):
            if self.state.global_step == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return save_rng_state(self, checkpoint_dir)

        Trainer._save_rng_state = die_at_step
    extra = {}
    if os.environ.get("IIS_TEST_AUGMENT") == "1":
        from conftest import tiny_image_processor
        from trainer_utils import splits

        from iis_hf.training.transforms import (
            AugmentationEpochs,
            ImageClassificationTransform,
            collate_fn,
            with_row_index,
        )

        train, evaluation = splits()
        augment = ImageClassificationTransform(tiny_image_processor(), "image", "label", augment=True)
        plain = ImageClassificationTransform(tiny_image_processor(), "image", "label")
        extra = dict(
            train=with_row_index(train).with_transform(augment), evaluation=evaluation.with_transform(plain)
        )
    trainer = make_trainer(output_dir, model=dropout_vit(), **extra, **SETTINGS)
    if extra:
        trainer.data_collator = collate_fn
        trainer.add_callback(AugmentationEpochs(augment))
    if mode == "slow":
        trainer.add_callback(Sleep())
    trainer.train(resume_from_checkpoint=True if mode == "resume" else None)
    state = {k: v.detach().clone() for k, v in trainer.iis_model.state_dict().items()}
    save_safetensors_atomic(state, output_dir / "final.safetensors")


if __name__ == "__main__":
    main()
