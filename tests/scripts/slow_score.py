"""`iis-hf score`, with every feature-cache chunk write slowed down, so a test can stop it mid-way.

usage: slow_score.py DELAY_S SCORE_ARGS...

Runs ``iis_hf.cli.main(["score", *SCORE_ARGS])`` unchanged, except that writing each chunk file of
the feature cache takes DELAY_S seconds, half of the file being on disk meanwhile (a slow disk). A
signal sent while the run is extracting therefore lands, almost always, in the middle of writing a
chunk: the worst moment for a cache. With atomic writes the half-written file is a temporary one.
With SLOW_SCORE_RENDEZVOUS=FOLDER,COUNT set, the first chunk write waits (its file half-written)
until COUNT processes have reached theirs, so concurrent runs really write at the same time.
With SLOW_SCORE_COMMIT=DELAY_S,MARKER set, putting the output folder in place is slowed instead: the
first `os.replace`, `os.rename` or `shutil.rmtree` that touches OUTPUT_DIR, something inside it, or a
temporary folder beside it (``.OUTPUT_DIR-NAME.*``) creates the file MARKER and waits DELAY_S seconds
(after the operation for paths inside OUTPUT_DIR, before it for a folder beside it), so a signal sent
once MARKER exists lands in the middle of replacing the output folder.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for iis_hf

import iis_hf.files as files
from iis_hf.cli import main


def rendezvous(folder: str, count: int, timeout: float = 240.0) -> None:
    """Wait until `count` processes have reached this point (each leaves a file in `folder`)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + timeout
    while len(list(Path(folder).iterdir())) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def slow_down_chunk_writes(delay: float) -> None:
    save_file = files.save_file
    meeting = os.environ.get("SLOW_SCORE_RENDEZVOUS")  # "FOLDER,COUNT": meet at the first chunk write

    def slow_save_file(tensors, filename, metadata=None):
        nonlocal meeting
        save_file(tensors, filename, metadata=metadata)
        if "chunk-" in Path(filename).name:  # a slow disk: the file is half-written for `delay` seconds
            data = Path(filename).read_bytes()
            Path(filename).write_bytes(data[: len(data) // 2])
            if meeting:
                folder, count = meeting.rsplit(",", 1)
                meeting = None
                rendezvous(folder, int(count))
            time.sleep(delay)
            Path(filename).write_bytes(data)

    files.save_file = slow_save_file


def slow_down_the_commit(output_dir: str, delay: float, marker: str) -> None:
    import shutil

    out = Path(output_dir).absolute()
    state = {"slowed": False}

    def where(path) -> str | None:
        path = Path(os.fsdecode(path)).absolute()
        if path == out or path.is_relative_to(out):
            return "inside"
        if path.parent == out.parent and path.name.startswith(f".{out.name}."):
            return "beside"
        return None

    def slowed(function):
        def run(*args, **kwargs):
            places = [where(a) for a in args[:2] if isinstance(a, (str, os.PathLike))]
            if state["slowed"] or not any(places):
                return function(*args, **kwargs)
            state["slowed"] = True
            Path(marker).touch()
            if "inside" in places:
                done = function(*args, **kwargs)
                time.sleep(delay)
                return done
            time.sleep(delay)
            return function(*args, **kwargs)

        return run

    os.replace, os.rename, shutil.rmtree = slowed(os.replace), slowed(os.rename), slowed(shutil.rmtree)


if __name__ == "__main__":
    slow_down_chunk_writes(float(sys.argv[1]))
    if os.environ.get("SLOW_SCORE_COMMIT"):
        commit_delay, commit_marker = os.environ["SLOW_SCORE_COMMIT"].split(",", 1)
        slow_down_the_commit(sys.argv[sys.argv.index("--output-dir") + 1], float(commit_delay), commit_marker)
    sys.exit(main(["score", *sys.argv[2:]]))
