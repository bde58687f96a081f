"""Run under torchrun (2 CPU processes, gloo): train IISTrainer, save each rank's weights."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safetensors.torch import save_file
from trainer_utils import make_trainer


def main(out_dir: str) -> None:
    rank = int(os.environ.get("RANK", "0"))
    trainer = make_trainer(Path(out_dir) / "run", arch="vit", per_device_train_batch_size=4, max_steps=3)
    trainer.train()
    model = trainer.iis_model
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(Path(out_dir) / f"rank{rank}.safetensors"))
    print(f"rank {rank} world {trainer.accelerator.num_processes} done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
