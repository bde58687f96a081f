#!/usr/bin/env python
"""Run the authors' published IIS code side by side with iis-hf's "paper" protocol, on the same arrays.

    git clone https://github.com/ssfgunner/IIS /path/to/IIS        # their code: not part of this project
    python examples/research_projects/iis_paper/compare_with_published.py --published /path/to/IIS --seeds 0 1 2 3 4 \\
        --cases digits_random digits_trained animals_trained --output-dir compare_output

This is a measurement, not a test: their code is not part of the project and runs for minutes per seed.

1. Arrays (`--cases`): the representations and concept matrix each side is given, built once with
   iis-hf (`iis_paper.comparison_arrays`) and saved as compare_output/arrays/<case>.npz:
   - digits_random: the demo ResNet at random init (`iis_hf.demo.demo_model(10, seed=0)`);
   - digits_trained: the demo ResNet trained 3 epochs (`iis_hf.demo.train_demo_model`);
   - animals_trained: the same ResNet trained 5 epochs on 2,000 animal silhouettes (animal-shape-mnist,
     `iis_paper.data`), evaluated on 1,000 others;
   features from `extract_features` (train split -> train, test split -> eval), concepts the 200
   patch prototypes of `ConceptBank.from_prototypes(..., images_per_class=10, num_concepts=200, seed=0)`.
2. Their code: a copy of the checkout with only the fixes it needs to run at all (`MINIMAL_FIXES`:
   `ch` is used but never imported in IP_training/model.py; the published ratio grid is commented
   out in IP_training/IP_Prototype_training.py; `device = 'cuda'` on a machine without one). Their
   training script and iis_computing.py then run unchanged, one interpreter per seed, with
   torch/numpy/random seeded once (their code seeds nothing). Only data loading is glue: the
   features become the .pt files their `emb_dataset` reads, the concept matrix the pickle their
   `load_pkl` reads (written here, read by their code: we never unpickle), and their image-folder
   label loader `utils.data_utils.get_targets_only` is replaced by our labels; `timm`'s
   `trunc_normal_` comes from timm when it imports, else from `--timm-weight-init` (timm 0.6.13's
   weight_init.py, their pin), else from `torch.nn.init.trunc_normal_` (the same algorithm).
3. Ours: `iis_hf.compute_iis(..., protocol="paper", precision="fp32", seed=s)` and, for reference,
   the default protocol.
4. The report: per case, mean ± standard error over seeds of A(rho) per ratio, A0 and IIS for each
   side, and z = difference / combined standard error (|z| <= 2: within 2 standard errors).
   Results of their code are kept per seed in compare_output/published_<case>.json, so a rerun with
   more seeds only runs the new ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from iis_paper.comparison_arrays import CASES, make_arrays  # the arrays, built with iis-hf

from iis_hf.config import DEFAULT_SPARSITY_RATIOS as RATIOS  # the published grid, which their script runs

# (file, text in the published code, replacement): the fixes their code needs to run at all.
MINIMAL_FIXES = (
    (
        "IP_training/model.py",
        "import torch\n",
        "import torch\nimport torch as ch  # fix: `ch` is used below\n",
    ),
    (
        "IP_training/IP_Prototype_training.py",
        "# sparsity_ratios = (0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.98)",
        "sparsity_ratios = (0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.98)  # fix: the published grid",
    ),
    ("IP_training/IP_Prototype_training.py", "sparsity_ratios = (0.7, )", "# sparsity_ratios = (0.7, )"),
    (
        "IP_training/IP_Prototype_training.py",
        "device = 'cuda'",
        "device = 'cuda' if torch.cuda.is_available() else 'cpu'  # fix: a machine without CUDA",
    ),
)


# --------------------------------------------------------------------------- their code
def fixed_copy(published: Path, workdir: Path) -> Path:
    """A copy of their checkout with `MINIMAL_FIXES` applied (each must match exactly once)."""
    target = workdir / "IIS"
    shutil.copytree(published, target, ignore=shutil.ignore_patterns(".git"))
    for name, old, new in MINIMAL_FIXES:
        path = target / name
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"{name}: expected {old!r} once; is --published an unmodified checkout?")
        path.write_text(text.replace(old, new))
    return target


def run_their_seed(checkout: Path, arrays: dict, seed: int, timm_weight_init: str | None) -> dict:
    """Their training script and iis_computing.py on `arrays`, in a fresh interpreter."""
    import torch

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        torch.save(torch.from_numpy(arrays["train_features"]), work / "train.pt")
        torch.save(torch.from_numpy(arrays["eval_features"]), work / "val.pt")
        with open(work / "concepts.pkl", "wb") as file:  # their loader reads a pickle; we only write it
            pickle.dump(torch.from_numpy(arrays["concepts"]), file)
        np.save(work / "train_labels.npy", arrays["train_labels"])
        np.save(work / "val_labels.npy", arrays["eval_labels"])
        meta = {
            "in_channels": int(arrays["train_features"].shape[1]),
            "num_concepts": int(arrays["concepts"].shape[0]),
            "num_classes": int(max(arrays["train_labels"].max(), arrays["eval_labels"].max()) + 1),
            "timm_weight_init": timm_weight_init,
        }
        (work / "meta.json").write_text(json.dumps(meta))
        command = [sys.executable, __file__, "--_child", str(checkout), str(work), str(seed)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"their code failed for seed {seed}:\n{done.stderr[-3000:]}")
        return parse_their_run(done.stdout, work / "models", seed)


def child(checkout: str, work: str, seed: int) -> None:
    """Inside the fresh interpreter: stand-ins for what their code imports but this machine lacks,
    then their IP_Prototype_training.py and iis_computing.py as __main__."""
    import importlib.util
    import runpy
    import types

    import torch

    work = Path(work)
    meta = json.loads((work / "meta.json").read_text())
    labels = {
        "imagenet_train": np.load(work / "train_labels.npy"),
        "imagenet_val": np.load(work / "val_labels.npy"),
    }
    try:
        import timm.models.layers
    except ImportError:
        layers = types.ModuleType("timm.models.layers")
        if meta["timm_weight_init"]:
            spec = importlib.util.spec_from_file_location("timm_weight_init", meta["timm_weight_init"])
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            layers.trunc_normal_ = module.trunc_normal_
        else:
            layers.trunc_normal_ = torch.nn.init.trunc_normal_
        timm, models = types.ModuleType("timm"), types.ModuleType("timm.models")
        timm.models, models.layers = models, layers
        sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})
    sys.modules.setdefault("clip", types.ModuleType("clip"))  # imported by their utils, unused here
    data_utils = types.ModuleType("utils.data_utils")
    data_utils.get_targets_only = lambda name: labels[name]
    sys.modules["utils.data_utils"] = data_utils

    training = os.path.join(checkout, "IP_training")
    os.chdir(training)
    # Their scripts import their own modules (`model`, `utils`) as `python IP_training/...` would
    # find them: the path of *their* checkout, in this child interpreter only; no iis-hf code.
    sys.path[:0] = [training, checkout]
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    sys.argv = [
        "IP_Prototype_training.py", "--model_name", "arrays", "--in_channels", str(meta["in_channels"]),
        "--concept_path", str(work / "concepts.pkl"), "--num_concepts", str(meta["num_concepts"]),
        "--num_classes", str(meta["num_classes"]), "--n_epoch", "30", "--batch_size", "1024",
        "--train_pt", str(work / "train.pt"), "--val_pt", str(work / "val.pt"), "--save_dir", str(work / "models"),
    ]  # fmt: skip
    runpy.run_path(os.path.join(training, "IP_Prototype_training.py"), run_name="__main__")
    print("=== iis_computing.py ===", flush=True)
    os.chdir(checkout)
    sys.argv = ["iis_computing.py", "--model_root", str(work / "models")]
    runpy.run_path(os.path.join(checkout, "iis_computing.py"), run_name="__main__")


def parse_their_run(stdout: str, models: Path, seed: int) -> dict:
    """A0 and A(rho) from their saved file names (best top-1 over epochs), IIS from iis_computing.py."""
    accuracies, a0 = {}, None
    for name in os.listdir(models):
        fields = name.removesuffix(".pth").split("##")
        if fields[0] == "standard":
            a0 = float(fields[3])
        else:
            accuracies[float(fields[1])] = max(accuracies.get(float(fields[1]), 0.0), float(fields[4]))
    printed = re.findall(r"[-+0-9.eE]+", stdout.split("=== iis_computing.py ===")[1])
    return {
        "seed": seed,
        "accuracies": [accuracies[r] for r in RATIOS],
        "A0": a0,
        "IIS": float(printed[-1]),
    }


# --------------------------------------------------------------------------- ours
def run_our_seed(arrays: dict, seed: int, protocol: str) -> dict:
    import iis_hf

    result = iis_hf.compute_iis(
        arrays["train_features"], arrays["train_labels"], arrays["eval_features"], arrays["eval_labels"],
        arrays["concepts"], sparsity_ratios=RATIOS, protocol=protocol, head_precision="fp32", seed=seed,
        progress=False,
    )  # fmt: skip
    return {"seed": seed, "accuracies": result.accuracies, "A0": result.standard_accuracy, "IIS": result.iis}


# --------------------------------------------------------------------------- the report
def mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(
        values.std(ddof=1) / math.sqrt(values.size)
    ) if values.size > 1 else math.nan


def compare(theirs: list[dict], ours: list[dict]) -> list[dict]:
    rows = []
    quantities = [(f"A({r:g})", lambda run, j=j: run["accuracies"][j]) for j, r in enumerate(RATIOS)]
    quantities += [("A0", lambda run: run["A0"]), ("IIS", lambda run: run["IIS"])]
    for name, get in quantities:
        (tm, ts), (om, os_) = mean_se([get(r) for r in theirs]), mean_se([get(r) for r in ours])
        combined = math.hypot(ts, os_)
        z = (om - tm) / combined if combined > 0 else (0.0 if om == tm else math.inf)
        rows.append({"quantity": name, "published": [tm, ts], "paper_protocol": [om, os_], "z": z})
    return rows


def table(case: str, rows: list[dict], default: list[dict], seeds: int) -> str:
    lines = [
        f"### {case} ({seeds} seeds; mean ± standard error)",
        "",
        '| | published code | iis-hf `protocol="paper"` | z | iis-hf default protocol |',
        "|---|---|---|---|---|",
    ]
    reference = {row["quantity"]: row for row in compare(default, default)}
    for row in rows:
        d = reference[row["quantity"]]["paper_protocol"]
        lines.append(
            f"| {row['quantity']} | {row['published'][0]:.4f} ± {row['published'][1]:.4f} | "
            f"{row['paper_protocol'][0]:.4f} ± {row['paper_protocol'][1]:.4f} | {row['z']:+.2f} | "
            f"{d[0]:.4f} ± {d[1]:.4f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--published", help="a checkout of github.com/ssfgunner/IIS (unmodified)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--output-dir", default="compare_output")
    parser.add_argument(
        "--timm-weight-init", default=None, help="timm 0.6.13's timm/models/layers/weight_init.py"
    )
    parser.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        child(args._child[0], args._child[1], int(args._child[2]))
        return
    if not args.published:
        parser.error("--published (a checkout of their repository) is required")
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    report, summary = [], {}
    with tempfile.TemporaryDirectory() as work:
        checkout = fixed_copy(Path(args.published), Path(work))
        for case in args.cases:
            arrays = dict(np.load(make_arrays(case, output / "arrays")))
            cache = output / f"published_{case}.json"
            theirs = {run["seed"]: run for run in (json.loads(cache.read_text()) if cache.exists() else [])}
            for seed in args.seeds:
                if seed not in theirs:
                    started = time.time()
                    theirs[seed] = run_their_seed(checkout, arrays, seed, args.timm_weight_init)
                    print(f"{case} seed {seed}: their code {time.time() - started:.0f} s", flush=True)
                    cache.write_text(json.dumps(sorted(theirs.values(), key=lambda r: r["seed"]), indent=1))
            published = [theirs[s] for s in args.seeds]
            paper = [run_our_seed(arrays, s, "paper") for s in args.seeds]
            default = [run_our_seed(arrays, s, "converged") for s in args.seeds]
            rows = compare(published, paper)
            summary[case] = {"rows": rows, "max_abs_z": max(abs(r["z"]) for r in rows), "seeds": args.seeds}
            report.append(table(case, rows, default, len(args.seeds)))
            print(report[-1], flush=True)
    (output / "comparison.json").write_text(json.dumps(summary, indent=1))
    (output / "comparison.md").write_text("\n\n".join(report) + "\n")
    print(json.dumps({case: round(s["max_abs_z"], 2) for case, s in summary.items()}))


if __name__ == "__main__":
    main()
