"""`iis_hf.training.finetune.main(ARGS)`, SIGKILLed at a chosen moment of the final save.

    python finetune_killed.py {save,swap} ARGS...

save: right after the final model is written (into the temporary folder); swap: when every final
file is written and the checkpoints are linked, just before the folders are exchanged.
"""

import os
import signal
import sys

from iis_hf.training import finetune, run_folder
from iis_hf.training.trainer import IISTrainer


def die_after(function):
    def wrapped(*args, **kwargs):
        function(*args, **kwargs)
        if not kwargs.get("_internal_call"):  # Trainer's checkpoints call save_model too: not those
            os.kill(os.getpid(), signal.SIGKILL)

    return wrapped


if __name__ == "__main__":
    moment, arguments = sys.argv[1], sys.argv[2:]
    if moment == "save":
        IISTrainer.save_model = die_after(IISTrainer.save_model)
    elif moment == "swap":
        run_folder.carry_over = die_after(run_folder.carry_over)
    else:
        raise SystemExit(f"unknown moment {moment!r}")
    finetune.main(arguments)
