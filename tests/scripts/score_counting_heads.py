"""Run `iis-hf score` with every call of the heads' trainer counted (tests only).

usage: score_counting_heads.py COUNT_FILE SCORE_ARGS...

`iis_hf.heads.fit_heads` (the one trainer of the probe and the interpretation heads, one call per
seed) is wrapped so that each call appends this process's rank to COUNT_FILE; then the command line
runs as `python -m iis_hf.cli score SCORE_ARGS...` would. Run alone or under torchrun.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for iis_hf

import iis_hf.heads
from iis_hf.cli import main as cli_main


def main() -> int:
    count_file, args = Path(sys.argv[1]), sys.argv[2:]
    fit = iis_hf.heads.fit_heads

    def counted(*a, **k):
        with count_file.open("a", encoding="utf-8") as handle:  # one short line: appends do not interleave
            handle.write(f"{os.environ.get('RANK', '0')}\n")
        return fit(*a, **k)

    iis_hf.heads.fit_heads = counted
    return cli_main(["score", *args])


if __name__ == "__main__":
    sys.exit(main())
