"""README's demo table, regenerated from a fresh `iis-hf demo` run or checked against one.

README.md shows what `iis-hf demo` prints between `<!-- demo-table:begin -->` and
`<!-- demo-table:end -->`: the table in a code block and one sentence with the run's time, machine
and load. The demo pins its CPU threads (`--threads`, default 1), so on one CPU kind the table is
the same on every run and the check is exact; `--tolerance` allows for another CPU kind.

    python benchmarks/readme_demo.py --write      # run the demo, put its table and timing into README
    python benchmarks/readme_demo.py --check      # run the demo, compare with README; exit 1 on a difference

`--write` also saves the run's whole output to benchmarks/results/readme_demo.txt, which
tests/test_readme_demo.py compares with README's block without running the demo (minutes).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from iis_hf.errors import IISError
from iis_hf.files import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SAVED_OUTPUT = REPO / "benchmarks" / "results" / "readme_demo.txt"
BEGIN, END = "<!-- demo-table:begin -->", "<!-- demo-table:end -->"
FENCE = "```"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class DemoRun(NamedTuple):
    """One demo run: its printed table and what it cost."""

    table: str
    wall_s: float
    cpu_s: float
    load_before: float
    load_after: float


# ------------------------------------------------------------------------------------- the table itself
def extract_table(output: str) -> str:
    """The table `iis-hf demo` prints: from its `sparsity` header to the next blank line."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.split()[:1] == ["sparsity"]]
    if not starts:
        raise IISError("no table in the demo's output (no line starting with 'sparsity')")
    table = []
    for line in lines[starts[-1] :]:
        if not line.strip():
            break
        table.append(line.rstrip())
    return "\n".join(table)


def parse_table(table: str) -> dict[str, list[list[float]]]:
    """Each row's label -> one list of numbers per model column (an interval gives two numbers);
    every row below the header must have one cell per column the header names."""
    lines = table.splitlines()
    names = lines[0].split()[1:]
    rows: dict[str, list[list[float]]] = {}
    for line in lines[1:]:
        label, cells = _split_row(line, len(names))
        rows[label] = [[float(x) for x in NUMBER.findall(cell)] for cell in cells]
        if any(not numbers for numbers in rows[label]):
            raise IISError(f"table row {line.strip()!r} has a cell without a number")
    return rows


def _split_row(line: str, columns: int) -> tuple[str, list[str]]:
    """A row's label and its cells: cells are separated by two or more spaces (an interval has one)."""
    parts = re.split(r"\s{2,}", line.strip())
    if len(parts) != columns + 1:
        raise IISError(f"table row {line.strip()!r} has {len(parts) - 1} cells, expected {columns}")
    return parts[0], parts[1:]


def column_names(table: str) -> list[str]:
    return table.splitlines()[0].split()[1:]


def differences(expected: str, actual: str, tolerance: float = 0.0) -> list[str]:
    """One line per cell where `actual` differs from `expected` by more than `tolerance`, rows or
    columns that one table has and the other lacks included."""
    if column_names(expected) != column_names(actual):
        return [f"columns: README {column_names(expected)} vs run {column_names(actual)}"]
    want, got = parse_table(expected), parse_table(actual)
    found = [f"row {label!r}: only in README" for label in want if label not in got]
    found += [f"row {label!r}: only in the run" for label in got if label not in want]
    want_text, got_text = raw_cells(expected), raw_cells(actual)
    for label in (label for label in want if label in got):
        for j, (a, b) in enumerate(zip(want[label], got[label], strict=True)):
            if len(a) != len(b) or any(abs(x - y) > tolerance + 1e-12 for x, y in zip(a, b, strict=False)):
                name = column_names(expected)[j]
                found.append(f"{label:>9} {name}: README {want_text[label][j]}, run {got_text[label][j]}")
    return found


def raw_cells(table: str) -> dict[str, list[str]]:
    """Each row's cells as printed, for messages that quote them."""
    columns = len(column_names(table))
    return dict(_split_row(line, columns) for line in table.splitlines()[1:])


# ------------------------------------------------------------------------------------- README's block
def readme_block(readme: str) -> tuple[str, str]:
    """README's demo table and the timing sentence that follows it inside the markers."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise IISError(f"README.md must hold {BEGIN} once, then {END} once")
    inner = readme[readme.index(BEGIN) + len(BEGIN) : readme.index(END)].strip("\n")
    match = re.fullmatch(rf"{FENCE}\n(.*?)\n{FENCE}\n(.+)", inner, flags=re.DOTALL)
    if not match:
        raise IISError("README's demo block must be a ``` code block with the table, then one sentence")
    return match.group(1), match.group(2).strip()


def replace_block(readme: str, table: str, sentence: str) -> str:
    """README with the text between the markers replaced by `table` and `sentence`."""
    readme_block(readme)  # well-formed before we touch it
    head, rest = readme.split(BEGIN)
    tail = rest.split(END)[1]
    return f"{head}{BEGIN}\n{FENCE}\n{table}\n{FENCE}\n{sentence}\n{END}{tail}"


# ------------------------------------------------------------------------------------- running the demo
def run_demo(extra: list[str]) -> tuple[DemoRun, str]:
    """Run `iis-hf demo` in a child process (as a user would: the environment as it is) and time it."""
    with tempfile.TemporaryDirectory(prefix="readme_demo_") as folder:
        command = [sys.executable, "-m", "iis_hf.cli", "demo", "--output-dir", f"{folder}/out", "-q", *extra]
        load_before, cpu_before, started = os.getloadavg()[0], _children_cpu_s(), time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise IISError(f"iis-hf demo failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    cpu = _children_cpu_s() - cpu_before
    run = DemoRun(extract_table(done.stdout), wall, cpu, load_before, os.getloadavg()[0])
    return run, done.stdout


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine() -> str:
    """The CPU as the timing sentence names it: cores, model, and the vector instructions torch's
    kernels use (AVX512 or AVX2 sum floats in another order: other last digits)."""
    import torch

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), flags=re.MULTILINE)
        model = found.group(1).strip() if found else model
    return f"{os.cpu_count()}-core {model} ({torch.backends.cpu.get_cpu_capability()})"


def timing_sentence(run: DemoRun) -> str:
    import torch

    return (
        f"Regenerated by `python benchmarks/readme_demo.py --write` on {time.strftime('%Y-%m-%d')}: "
        f"{run.wall_s:.0f} s of wall time and {run.cpu_s:.0f} s of CPU time (user + system) on a "
        f"{machine()}, torch {torch.__version__}, load average {run.load_before:.1f} before and "
        f"{run.load_after:.1f} after (other jobs sharing the cores)."
    )


# ------------------------------------------------------------------------------------- the two modes
def write(extra: list[str]) -> int:
    """Run the demo; put its table and timing into README and its output into SAVED_OUTPUT."""
    run, output = run_demo(extra)
    sentence = timing_sentence(run)
    write_text_atomic(README, replace_block(README.read_text(), run.table, sentence))
    write_text_atomic(SAVED_OUTPUT, output)
    print(run.table)
    print(sentence)
    print(f"wrote the table into {README.name} and the output to {SAVED_OUTPUT.relative_to(REPO)}")
    return 0


def check(extra: list[str], tolerance: float) -> int:
    """Run the demo; compare its table with README's. Exit 1 and print each difference on a mismatch."""
    expected, _sentence = readme_block(README.read_text())
    run, _output = run_demo(extra)
    print(run.table)
    print(f"(run: {run.wall_s:.0f} s wall, {run.cpu_s:.0f} s CPU, load {run.load_before:.1f}, {machine()})")
    found = differences(expected, run.table, tolerance)
    for line in found:
        print(f"differs: {line}")
    bound = "exactly" if tolerance == 0 else f"within {tolerance:g}"
    print(f"README's demo table {'does not match' if found else 'matches'} a fresh run ({bound})")
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="run the demo and rewrite README's table")
    mode.add_argument("--check", action="store_true", help="run the demo and compare with README's table")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="--check: largest allowed difference per number (default 0: the table must match exactly; "
        "on another CPU kind README says how far the digits move)",
    )
    parser.add_argument("demo_args", nargs=argparse.REMAINDER, help="after --: more `iis-hf demo` flags")
    args = parser.parse_args(argv)
    extra = [a for a in args.demo_args if a != "--"]
    try:
        return write(extra) if args.write else check(extra, args.tolerance)
    except IISError as err:
        print(f"readme_demo: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
