#!/usr/bin/env python
"""How uncertain is one IIS, and what reduces it: more seeds, or more eval images?

    python examples/research_projects/iis_paper/iis_uncertainty.py                      # the three cases below, 5 seeds
    python examples/research_projects/iis_paper/iis_uncertainty.py --cases digits_random --seeds 3 --eval-sizes 100 450

For each case (the arrays of `examples/research_projects/iis_paper/compare_with_published.py`, `iis_paper.comparison_arrays`: the demo ResNet at random init
and trained on scikit-learn's digits, 450 eval images; the same ResNet trained on animal silhouettes,
1,000 eval images) and each eval-set size (a stratified subset of the eval images), it runs
`iis_hf.compute_iis(..., num_seeds=N)` with the default settings and reports:

- `seed_sd`: the standard deviation of the IIS over the N seeds (what more seeds average away);
- `ci_half_width`: half the width of the 95% bootstrap interval over the eval rows and the seeds (what
  `iis.json` reports; it shrinks with more eval images, hardly with more seeds).

The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from iis_paper.comparison_arrays import CASES, make_arrays  # the same arrays as the comparison


def measure(arrays: dict, eval_size: int | None, seeds: int) -> dict:
    import iis_hf
    from iis_hf.splits import stratified_split

    eval_x, eval_y = arrays["eval_features"], arrays["eval_labels"]
    if eval_size is not None and eval_size < len(eval_y):
        _, kept = stratified_split(eval_y.tolist(), eval_size / len(eval_y), 0)
        eval_x, eval_y = eval_x[kept], eval_y[kept]
    result = iis_hf.compute_iis(
        arrays["train_features"], arrays["train_labels"], eval_x, eval_y, arrays["concepts"],
        num_seeds=seeds, progress=False,
    )  # fmt: skip
    low, high = result.uncertainty["ci"]
    return {
        "eval_images": len(eval_y),
        "iis": round(result.iis, 4),
        "seed_sd": round(result.uncertainty.get("sd", 0.0), 4),
        "ci": [round(low, 4), round(high, 4)],
        "ci_half_width": round((high - low) / 2, 4),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--seeds", type=int, default=5, help="seeds per measurement (default: 5)")
    parser.add_argument(
        "--eval-sizes", type=int, nargs="+", default=[100, 225, 450, 1000],
        help="eval-set sizes (stratified subsets; sizes above a case's eval set are skipped)",
    )  # fmt: skip
    parser.add_argument("--arrays-dir", default=None, help="where the arrays are built or found")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.arrays_dir or scratch)
        for case in args.cases:
            arrays = dict(np.load(make_arrays(case, folder)))
            sizes = sorted({min(size, len(arrays["eval_labels"])) for size in args.eval_sizes})
            for size in sizes:
                row = {"case": case, "seeds": args.seeds, **measure(arrays, size, args.seeds)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n| case | eval images | IIS | sd over {args.seeds} seeds | 95% CI | CI half-width |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['case']} | {row['eval_images']} | {row['iis']:.4f} | {row['seed_sd']:.4f} | "
            f"[{row['ci'][0]:.3f}, {row['ci'][1]:.3f}] | {row['ci_half_width']:.4f} |"
        )
    result = {"rows": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
