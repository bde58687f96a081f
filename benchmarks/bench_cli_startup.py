"""How fast the command line starts: `iis-hf --help` wall time, and what `import iis_hf.cli` costs.

The command line imports only the standard library, `iis_hf.config`, `iis_hf.progress` and
`iis_hf.version` before it parses; torch, transformers, datasets and the rest load inside the
command that needs them. Goal: `iis-hf --help` under 0.5 s.

    python benchmarks/bench_cli_startup.py               # 10 runs of each
    python benchmarks/bench_cli_startup.py --repeats 3

The last line printed is one JSON object: help_s_median, help_s_runs, import_cli_us (median
cumulative import time of iis_hf.cli from `python -X importtime`), heavy_modules (torch,
transformers, ... if any were imported: none is expected) and slowest_imports.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "transformers", "datasets", "evaluate", "huggingface_hub", "numpy", "matplotlib", "gradio")


def help_command() -> list[str]:
    script = shutil.which("iis-hf")
    return [script, "--help"] if script else [sys.executable, "-m", "iis_hf.cli", "--help"]


def time_help(repeats: int) -> list[float]:
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(help_command(), check=True, capture_output=True)
        runs.append(time.perf_counter() - started)
    return runs


def import_times() -> tuple[int, dict[str, int]]:
    """(cumulative µs of iis_hf.cli, {module: self µs}) from one `python -X importtime` run."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import iis_hf.cli"],
        check=True,
        capture_output=True,
        text=True,
    )
    own, total = {}, None
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match:
            own[match.group(4)] = int(match.group(1))
            if match.group(4) == "iis_hf.cli":
                total = int(match.group(2))
    return total, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="runs of each measurement (default: 10)")
    args = parser.parse_args()
    runs = time_help(args.repeats)
    imports = [import_times() for _ in range(args.repeats)]
    totals = [total for total, _ in imports]
    own = imports[-1][1]
    heavy = sorted({m.split(".")[0] for m in own} & set(HEAVY))
    slowest = sorted(own.items(), key=lambda item: -item[1])[:8]
    print(f"iis-hf --help: median {statistics.median(runs):.3f} s over {len(runs)} runs (goal < 0.5 s)")
    print(
        f"import iis_hf.cli: median {statistics.median(totals) / 1000:.1f} ms cumulative; heavy modules: {heavy}"
    )
    print(
        json.dumps(
            {
                "help_s_median": round(statistics.median(runs), 4),
                "help_s_runs": [round(r, 4) for r in runs],
                "import_cli_us": int(statistics.median(totals)),
                "heavy_modules": heavy,
                "slowest_imports": [{"module": m, "us": us} for m, us in slowest],
            }
        )
    )


if __name__ == "__main__":
    main()
