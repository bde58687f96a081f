"""The fine-tuning run's output folder, kept to the promises `iis-hf score` keeps for its own.

- A folder holding anything but an earlier run's outputs (a user's own `README.md`, `config.json`, ...)
  is refused before any work, unless `--overwrite_output_dir` says it may be replaced.
- One run at a time writes a folder: the lock beside it (`.<name>.lock`, `iis_hf.outputs.output_folder_lock`,
  the one `iis-hf score` takes) refuses a second while the first is alive (the kernel releases it when a
  process dies, so a killed run never blocks the next).
- The final outputs appear whole or not at all: they are written into a temporary sibling, the
  run's `checkpoint-*` folders are linked into it (so they stay resumable), and the two folders are
  exchanged in one step (`iis_hf.files.atomic_directory`). A run killed at any moment leaves the old
  folder as it was or the new one complete, never a mix.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..files import atomic_directory
from ..outputs import output_folder_lock

# What Trainer and IISTrainer write into an output folder (checkpoints, final model, metrics, card).
RUN_OUTPUTS = (
    "checkpoint-*",
    "runs",
    "README.md",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "adapter_config.json",
    "adapter_model.safetensors",
    "preprocessor_config.json",
    "iis_config.json",
    "iis_head.safetensors",
    "concept_bank.json",
    "concept_bank.safetensors",
    "iis.json",
    "iis_curve.png",
    "training_args.json",
    "training_args.bin",
    "trainer_state.json",
    "all_results.json",
    "train_results.json",
    "eval_results.json",
    "test_results.json",
    ".gitattributes",
    ".gitignore",
)
# Files only a run writes: a folder without one of them did not come from a run, whatever it holds.
RUN_MARKERS = ("checkpoint-*", "trainer_state.json", "training_args.json", "all_results.json")
# Written again by an evaluation-only run (everything else in the folder is kept as it was).
EVALUATION_OUTPUTS = ("eval_results.json", "iis.json", "iis_curve.png", "README.md")


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def foreign_entries(folder: str | os.PathLike) -> list[str]:
    """The entries of `folder` that an earlier run did not write ([] for a missing or empty folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = sorted(entry.name for entry in folder.iterdir())
    if names and not any(_matches(name, RUN_MARKERS) for name in names):
        return names  # no run wrote this folder: all of it is the user's
    return [name for name in names if not _matches(name, RUN_OUTPUTS)]


def check_output_dir(output_dir: str | os.PathLike, overwrite: bool) -> None:
    """Refuse (a ValueError, before any work) an output folder holding what a run did not write."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output_dir {output_dir} is a file, not a folder; choose a folder")
    foreign = foreign_entries(path)
    if foreign and not overwrite:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ValueError(
            f"--output_dir {output_dir} holds files a fine-tuning run did not write ({shown}); choose another "
            "--output_dir, or pass --overwrite_output_dir to replace its content"
        )


# Hold `output_dir`'s lock for the run (`enabled=False` on the processes that write nothing): the lock of
# every iis-hf command, so a `score` and a `finetune` into one folder refuse each other too.
output_lock = functools.partial(output_folder_lock, flag="--output_dir", command="iis-hf finetune")


def carry_over(old: Path, new: Path, do_train: bool, dropped: frozenset[str] = frozenset()) -> None:
    """Link into the new folder what it keeps of the old one: the checkpoints (so a later run can resume
    from them) and the logs after training; everything but the evaluation's own files after evaluation.
    `dropped`: an earlier run's checkpoints (`checkpoints_in`), not kept under --overwrite_output_dir."""
    if not old.is_dir():
        return
    dropped_now = checkpoints_in(old) & dropped  # those not written again since
    dropped_names = {signature.split(":")[0] for signature in dropped_now}
    for entry in sorted(old.iterdir()):
        if (new / entry.name).exists() or entry.name in dropped_names:
            continue  # written by this run, or replaced
        if do_train:
            keep = _matches(entry.name, ("checkpoint-*", "runs"))
        else:
            keep = not _matches(entry.name, EVALUATION_OUTPUTS)
        if not keep:
            continue
        link_tree(entry, new / entry.name)


def checkpoints_in(output_dir: str | os.PathLike) -> frozenset[str]:
    """The `checkpoint-*` folders in `output_dir` now, each as `name:inode:mtime` of its trainer state:
    a checkpoint this run writes again under the same name no longer matches (`carry_over` keeps it)."""
    folder = Path(output_dir)
    found = set()
    for checkpoint in folder.glob("checkpoint-*") if folder.is_dir() else ():
        with contextlib.suppress(OSError):
            state = (checkpoint / "trainer_state.json").stat()
            found.add(f"{checkpoint.name}:{state.st_ino}:{state.st_mtime_ns}")
    return frozenset(found)


@contextlib.contextmanager
def final_output(trainer, do_train: bool, dropped: frozenset[str] = frozenset()) -> Iterator[None]:
    """Point the trainer's output at a temporary sibling of `output_dir` for the final saves, then
    exchange the two folders in one step (on the process that writes; the others write nothing)."""
    args = trainer.args
    output_dir = args.output_dir
    if not trainer.is_world_process_zero():
        yield
        return
    with atomic_directory(output_dir, overwrite=True) as staging:
        args.output_dir = str(staging)
        try:
            yield
        finally:
            args.output_dir = output_dir
        carry_over(Path(output_dir), staging, do_train, dropped)


def interrupted_outcome(output_dir: str | os.PathLike) -> str:
    """What an interrupted run leaves: the checkpoints to resume from, or that nothing was written."""
    from .checkpoints import last_complete_checkpoint

    folder = Path(output_dir)
    checkpoints = sorted(p.name for p in folder.glob("checkpoint-*")) if folder.is_dir() else []
    last = last_complete_checkpoint(folder) if checkpoints else None
    if last is None:
        return f"no checkpoint was completed; the final model was not written to {output_dir}"
    return (
        f"the final model was not written; {output_dir} holds {', '.join(checkpoints)}: rerun the same "
        f"command to resume from {Path(last).name}"
    )


def link_tree(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Copy a file or folder as hard links (instant, no extra space; a full copy where links are refused), so
    that the copy survives the original's deletion and the original stays whole until then."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if Path(source).is_dir() and not Path(source).is_symlink():
        shutil.copytree(source, destination, copy_function=link_or_copy, symlinks=True)
    elif Path(source).is_symlink():
        os.symlink(os.readlink(Path(source)), destination)
    else:
        link_or_copy(os.fspath(source), os.fspath(destination))
