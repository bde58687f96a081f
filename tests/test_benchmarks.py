"""The benchmark scripts run on tiny sizes and end with their one-line JSON result.

Benchmarks are timed outside the test suite; this only guards that each script still runs, in a
fresh process as a user would start it, and that its last line carries the keys the README and the
issues quote. The timings printed at these sizes mean nothing and are not checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TINY_HEADS = "--rows 600 --dim 16 --num-concepts 8 --classes 4"
CASES = {  # script and arguments, the keys its JSON line must carry
    "heads vs reference": (
        f"bench_heads.py {TINY_HEADS} --epochs 1",
        {"reference_s", "ours_s", "speedup", "max_accuracy_gap"},
    ),
    "heads growth": (
        "bench_heads.py --growth 300 600 --dim 16 --num-concepts 8 --classes 4",
        {"rows", "seconds", "exponent", "linear_fit_us_per_row", "linear_fit_r2"},
    ),
    "heads anchor": (
        f"bench_heads.py --anchor {TINY_HEADS}",
        {"epoch_s_all_ratios_one_pass", "epoch_s_one_ratio_after_another", "ratio", "steps_per_epoch"},
    ),
    "graphed vs eager heads": (
        "check_graphed_heads.py --rows 2000 --dim 32 --num-concepts 16 --classes 5 --epochs 2 --device cpu",
        {"graphed_s", "eager_s", "max_accuracy_gap", "max_weight_difference", "same_best_epochs"},
    ),
    "extraction": (
        "bench_extract.py --arch resnet-18 --images 8 --image-size 32 --batch-size 4 --num-workers 0 --repeats 1",
        {"bare_img_s", "ours_img_s", "ratio"},
    ),
    "memory": (
        "bench_memory.py --rows 2000 --eval-rows 200 --dim 16 --classes 4 --num-concepts 8",
        {"store_gib", "peak_rss_gib", "ratio", "seconds"},
    ),
    "trainer overhead": (
        "bench_trainer_overhead.py --steps 3 --warmup 1 --repeats 1 --batch-size 4 --num-concepts 8",
        {"plain_step_s", "iis_step_s", "overhead"},
    ),
    "command-line startup": (
        "bench_cli_startup.py --repeats 1",
        {"help_s_median", "help_s_runs", "import_cli_us", "heavy_modules"},
    ),
    "IIS evaluation cost": (
        "bench_trainer_eval.py --arch demo-resnet --eval-images 32 --batch-size 16 --repeats 1",
        {"plain_s", "iis_s", "ratio", "eval_images"},
    ),
    "saved head accuracy": (
        "saved_head_accuracy.py --seeds 0 --epochs 0.05 --pretrain-epochs 0.05 --head-epochs 2",
        {"runs", "seeds"},
    ),
    "IIS uncertainty": (
        "iis_uncertainty.py --cases digits_random --seeds 2 --eval-sizes 60",
        {"rows"},
    ),
    "pipeline stages": (
        "bench_pipeline_stages.py 16 --layers 2 --image-size 64 --num-workers 0 1",
        {"ratio_processor_w0", "forward_s"},
    ),
    "GPU scoring script, on the CPU": (
        "gpu_score_throughput.py --num-images 300 --device cpu",
        {"images_per_s", "bound_by"},
    ),
    "digits fine-tuning": (
        "finetune_digits.py --seeds 0 --pretrain-epochs 0.2 --finetune-epochs 0.2 --train-size 64",
        {"runs"},
    ),
}


RESEARCH = REPO / "examples" / "research_projects" / "iis_paper"  # the experiments' runners


def _script(name: str) -> Path:
    """A benchmark, or one of the research runners (they sit beside the package, not in it)."""
    return REPO / "benchmarks" / name if (REPO / "benchmarks" / name).exists() else RESEARCH / name


@pytest.mark.parametrize("case", sorted(CASES))
def test_benchmark_runs_tiny_and_ends_with_its_json_line(case):
    command, keys = CASES[case]
    argv = command.split()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(_script(argv[0])), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert keys <= set(result), sorted(keys - set(result))
    if case == "digits fine-tuning":  # plain Trainer and IISTrainer, each with its IIS
        assert [run["iis_weight"] is None for run in result["runs"]] == [True, False]
        assert all(0.0 <= run["iis"] <= 1.0 for run in result["runs"])


def test_benchmarks_and_examples_import_iis_hf_as_a_package():
    """No script puts code on sys.path to import it (the experiments are `iis_paper`); the
    one exception runs the published authors' checkout in its own child interpreter."""
    for path in sorted([*(REPO / "benchmarks").glob("*.py"), *(REPO / "examples").rglob("*.py")]):
        lines = [line.strip() for line in path.read_text().splitlines() if "sys.path" in line]
        lines = [line for line in lines if not line.startswith("#")]
        if path.parent.name == "iis_paper" and path.parent.parent.name == "iis_paper":
            continue  # the research modules themselves, imported by their runners from the folder
        if path.name == "compare_with_published.py":
            assert lines == ["sys.path[:0] = [training, checkout]"], lines  # their code, their child process
        else:
            assert not lines, (path.name, lines)
