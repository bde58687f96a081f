"""Finding 2, run faithfully (issue 19): does fine-tuning with the interpretability loss raise accuracy?

The paper fine-tunes pre-trained backbones with ``loss = CE + lambda * CE(interpretation head over
sparsified concept activations)`` (s = 0.1, M = 200 concepts for D = 768 / 2048) and reports higher
accuracy. The earlier test (docs/RESULTS.md, finding 2) started from barely trained backbones with
M > D. This one keeps the paper's proportions and separates exploration from confirmation:

1. **Backbones**: two ResNets (32 x 32 RGB input) whose representation has D = 128 and D = 512, each
   pre-trained with a plain `transformers.Trainer` until its validation accuracy plateaus
   (`EarlyStoppingCallback`, `reduce_lr_on_plateau`) on every de-duplicated silhouette of
   `animal-shape-mnist` 0.39 outside a validation and a test split; M = 32 at D = 128, M = 200 at
   D = 512. Saved with `save_pretrained` in OUTPUT_DIR/backbones/ and reused.
2. **Scenarios**: *in-domain* (continued fine-tuning on animal images, held-out animal test set) and
   *transfer* (scikit-learn's digits, 200 training images, a new seeded classifier).
3. **Arms** on the same seeds: *off-the-shelf* (not fine-tuned; in-domain: the pre-trained model
   as it is; transfer: a linear probe on the frozen backbone's features, the scoring's probe A0),
   and two arms fine-tuned through `IISTrainer` (one code path) with the same data order, schedule
   and light augmentation (a seeded shift of up to 2 pixels): *CE only* (``iis_weight=0``, which
   reproduces `Trainer`) and *CE + lambda CE(head)*.
4. **Exploratory grid** on VALIDATION data, a few seeds: a one-factor-at-a-time design around a
   centre (s = 0.1 as in the paper, lambda = 0.5, head random, concepts fixed): s in {0.1, 0.5, 0.9},
   lambda in {0.1, 0.5, 1}, head random or warm (`iis_head_init`), concepts fixed or refreshed each
   epoch (`iis_concept_refresh_epochs`). The full factorial (36 settings x 4 cells) does not fit the
   CPU budget; the 7 settings here do.
5. **Pre-registration**: the setting with the best mean paired validation gain over CE only, per
   scenario, and the analysis plan go to OUTPUT_DIR/preregistration.json (with a timestamp) before
   any confirmatory training.
6. **Confirmatory run** on fresh paired seeds and the test split. Primary endpoint: test accuracy
   vs CE only. Secondary: accuracy vs off-the-shelf; IIS with concepts rebuilt from the final
   backbone and with the bank the loss used; the refitted head's accuracy (predictions from
   concepts). Paired t and Wilcoxon (`iis_hf.stats.paired_tests`), Holm over the 4 cells of each
   endpoint, 95% CI, and the smallest effect the run could detect (80% power, alpha 0.05).

Commands (the full CPU run needs about 75 minutes of one thread; rerun the same command to resume):

    OMP_NUM_THREADS=1 python examples/research_projects/iis_paper/finetune_paper.py --output-dir finetune_paper_output \\
        --write-report finetune_paper_output/finding2.md
    python examples/research_projects/iis_paper/finetune_paper.py --quick --output-dir /tmp/finetune_paper_quick      # ~2 min
    python examples/research_projects/iis_paper/finetune_paper.py --scale gpu --device cuda --output-dir finetune_paper_gpu
    python examples/research_projects/iis_paper/finetune_paper.py --output-dir finetune_paper_output --report-only \\
        --write-report docs/finding2_paper.md                    # tables and figure from the files

OUTPUT_DIR gets runs.jsonl (one line per finished run, appended: a restart skips them),
preregistration.json, results.json and finding2_differences.png; ``--write-report PATH`` writes
the Markdown section "Finding 2" with the figure beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from .paper_analysis import build_results, preregister
from .paper_design import SCALES
from .paper_report import write_outputs
from .paper_runs import Context, confirm_plan, grid_plan, load_data, pretrain_to_plateau, run_all, run_key
from .runs import exit_code, read_runs

SCRIPT = "examples/research_projects/iis_paper/finetune_paper.py"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, prog=SCRIPT, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output-dir", type=Path, required=True, help="runs.jsonl, preregistration.json, results.json"
    )
    parser.add_argument("--write-report", type=Path, default=None, help="write the Markdown section here")
    parser.add_argument(
        "--scale", choices=sorted(SCALES), default="cpu", help="sizes (gpu: for a GPU machine)"
    )
    parser.add_argument("--quick", action="store_true", help="--scale quick: tiny everything, < 10 minutes")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite report and figure from results.json"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.scale = "quick"
    return args


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Only warnings and errors from the Hugging Face libraries and no progress bars, for the run;
    the previous state comes back after it (the smoke test runs `main` inside pytest)."""
    import datasets
    import transformers

    hf_logging = transformers.utils.logging
    saved = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
    saved_datasets = (datasets.utils.logging.get_verbosity(), datasets.is_progress_bar_enabled())
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(saved[0])
        (hf_logging.enable_progress_bar if saved[1] else hf_logging.disable_progress_bar)()
        datasets.utils.logging.set_verbosity(saved_datasets[0])
        (datasets.enable_progress_bars if saved_datasets[1] else datasets.disable_progress_bars)()


def log(message: str) -> None:
    """A progress line on stdout, with the time of day."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: run (or resume) the experiment quietly; 0, or 2 with one line for an error the user can fix."""
    return exit_code(run, argv)


def run(argv: Sequence[str] | None = None) -> dict:
    """Parse the command line and run (or resume) the experiment, quietly; returns the results."""
    args = parse_args(argv)
    with quiet():
        return run_experiment(args)


def run_experiment(args: argparse.Namespace) -> dict:
    """Pre-train (or reuse) the backbones, then the grid, the pre-registration, the confirmatory runs."""
    started = time.perf_counter()
    torch.set_num_threads(1)  # the machine is shared; one intra-op thread keeps runs steady
    output_dir = args.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        results = json.loads((output_dir / "results.json").read_text())
        write_outputs(results, output_dir, args.write_report)
        return results
    scale = SCALES[args.scale]
    log(f"scale {scale.name}, device {args.device}, output {output_dir}")
    data = load_data(scale)
    # accelerate calls gc.collect() at the end of every training: with the data and libraries
    # loaded that took ~1 s per run; the long-lived objects are frozen out of its reach.
    gc.collect()
    gc.freeze()
    backbones, pretraining = {}, {}
    for width in scale.widths:
        model, info = pretrain_to_plateau(
            width, data["in-domain"], scale, args.device, output_dir / "backbones" / width.name, log
        )
        backbones[width.name], pretraining[width.name] = model.cpu().eval(), info
    gc.collect()
    gc.freeze()  # and the backbones
    runs = read_runs(output_dir / "runs.jsonl")
    done = {run_key(r["phase"], r["scenario"], r["width"], r["arm"], r["seed"]) for r in runs}
    ctx = Context(scale, args.device, data, backbones, output_dir, log, done)
    plan, _, missing = grid_plan(ctx)
    if missing and not (output_dir / "preregistration.json").is_file():
        log(f"[grid] not run (IISTrainingArguments lacks the field): {[s.key for s in missing]}")
    run_all(ctx, "grid", plan)
    prereg = preregister(ctx, read_runs(ctx.runs_path), missing)
    run_all(ctx, "confirm", confirm_plan(ctx, prereg))
    runs = read_runs(ctx.runs_path)
    results = build_results(ctx, runs, prereg, pretraining, prereg["grid_settings_not_run"], started)
    write_outputs(results, output_dir, args.write_report)
    log(f"done in {(time.perf_counter() - started) / 60:.1f} min: {output_dir / 'results.json'}")
    return results
