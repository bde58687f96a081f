"""The output folder of a scoring run: `iis.json`, `iis_curve.png` and the `concept_bank/` it used.

The three files appear together or not at all: they are written into a temporary folder beside
the target, which then replaces it in one step (`iis_hf.files.atomic_directory`): a killed run leaves
the previous folder or the new one, never a mix. One run at a time writes a folder: it holds the
folder's lock (`output_folder_lock`, that of every iis-hf command, `finetune` included) from before its
work starts until its outputs are in place.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

from .errors import IISError
from .files import atomic_directory, exclusive_lock, lock_path, write_json_atomic, write_text_atomic
from .plotting import plot_iis_curves
from .score import IISResult

RESULT_NAME = "iis.json"
CURVE_NAME = "iis_curve.png"
BANK_FOLDER = "concept_bank"
MODEL_FOLDER = "model"  # iis-hf demo: the trained model
# What an output folder of iis-hf holds: `--overwrite` replaces a folder holding only these.
OUTPUT_ENTRIES = re.compile(r"iis(_[^/]+)?\.json|iis_curve\.png|concept_bank|model|README\.md")


def is_output_entry(name: str) -> bool:
    """Whether an entry of a folder is one iis-hf writes into an output folder."""
    return OUTPUT_ENTRIES.fullmatch(name) is not None


class OutputFolderBusy(IISError):
    """Another run holds the output folder's lock: this one is refused before it does any work."""


def is_writing_process() -> bool:
    """Whether this process writes a command's outputs: rank 0 of a job started by ``torchrun`` /
    ``accelerate launch`` (they set RANK), or a process on its own; read before any process group exists."""
    try:
        return int(os.environ.get("RANK") or 0) == 0
    except ValueError:
        return True


@contextlib.contextmanager
def output_folder_lock(
    output_dir: str | os.PathLike, flag: str, command: str, enabled: bool = True
) -> Iterator[None]:
    """Hold `output_dir`'s lock for the whole run of `command`: a second run (of any iis-hf command) into
    the same folder is refused at once with an `OutputFolderBusy` naming the folder (as `flag`) and the
    holder, before it does any work, instead of replacing the first run's outputs or failing after all its
    work. The lock (`iis_hf.files.exclusive_lock`, filelock) is released by the kernel when the holder
    dies, so a killed run never blocks the next. `enabled=False` on the processes that write nothing
    (ranks other than 0). Folders made only to hold the lock file are removed again if left empty."""
    if not enabled:
        yield
        return
    lock = lock_path(output_dir)
    made = [p for p in (lock.parent, *lock.parent.parents) if not p.exists()]
    holder = f"{command} (pid {os.getpid()} on {socket.gethostname()})"
    try:
        with exclusive_lock(lock, holder):
            yield
    except FileExistsError as err:
        if err.filename != str(lock):
            raise
        raise OutputFolderBusy(
            f"{flag} {os.fspath(output_dir)!r} is being written by another run ({err.strerror}); wait for it "
            f"to finish, or choose another {flag}"
        ) from None
    finally:
        for folder in made:  # deepest first; a folder holding anything stays
            with contextlib.suppress(OSError):
                folder.rmdir()


def write_scoring_outputs(
    output_dir: str | os.PathLike,
    results: Mapping[str, IISResult],
    bank,
    *,
    title: str,
    extra_files: Mapping[str, str] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write the first result as `iis.json`, every other one as `iis_<name>.json`, their curves on one
    figure, and `bank` as `concept_bank/`; they replace `output_dir` as a whole (an existing folder
    with content only when `overwrite`). Returns the folder."""
    with atomic_directory(output_dir, overwrite=overwrite) as tmp:
        write_scoring_files(tmp, results, bank, title=title, extra_files=extra_files)
    return Path(output_dir)


def write_scoring_files(
    folder: Path,
    results: Mapping[str, IISResult],
    bank,
    *,
    title: str,
    extra_files: Mapping[str, str] | None = None,
) -> None:
    """The files of `write_scoring_outputs`, into a folder the caller made (e.g. an `atomic_directory`)."""
    first = next(iter(results.values()))
    write_json_atomic(folder / RESULT_NAME, first.to_dict())
    for name, result in results.items():
        if name and result is not first:
            write_json_atomic(folder / f"iis_{name}.json", result.to_dict())
    plot_iis_curves(results, folder / CURVE_NAME, title=title)
    bank.save_pretrained(folder / BANK_FOLDER)
    for name, content in (extra_files or {}).items():
        write_text_atomic(folder / name, content)


def comparison_table(results: Mapping[str, IISResult]) -> str:
    """A plain-text table of several results side by side: A(rho) per ratio, A0 and IIS, with the
    IIS's sd over seeds (when several were trained) and its 95% bootstrap interval."""
    names = list(results)
    first = results[names[0]]
    width = max(15, *(len(n) for n in names))

    def row(label: str, cells) -> str:
        return f"{label:>9}" + "".join(f"  {cell:>{width}}" for cell in cells)

    lines = [row("sparsity", names)]
    for j, ratio in enumerate(first.sparsity_ratios):
        lines.append(row(f"{ratio:.2f}", (f"{results[n].accuracies[j]:.4f}" for n in names)))
    lines.append(row("A0", (f"{results[n].standard_accuracy:.4f}" for n in names)))
    lines.append(row("IIS", (_score(results[n]) for n in names)))
    uncertainty = {n: results[n].uncertainty or {} for n in names}
    if any(u.get("num_seeds", 1) > 1 for u in uncertainty.values()):
        lines.append(
            row("± sd", (f"{u['sd']:.4f}" if u.get("sd") is not None else "–" for u in uncertainty.values()))
        )
    if any(u.get("ci") for u in uncertainty.values()):
        lines.append(
            row(
                "95% CI",
                (
                    f"[{u['ci'][0]:.3f}, {u['ci'][1]:.3f}]" if u.get("ci") else "–"
                    for u in uncertainty.values()
                ),
            )
        )
    return "\n".join(lines)


def _score(result: IISResult) -> str:
    return "undefined" if result.iis is None else f"{result.iis:.4f}"
