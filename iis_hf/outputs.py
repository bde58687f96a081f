"""The output folder of a scoring run: `iis.json`, `iis_curve.png` and the `concept_bank/` it used.

The three files appear together or not at all: they are written into a temporary folder beside
the target, which then replaces it (`iis_hf.files.atomic_directory`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .files import atomic_directory, write_json_atomic
from .plotting import plot_iis_curves
from .score import IISResult

RESULT_NAME = "iis.json"
CURVE_NAME = "iis_curve.png"
BANK_FOLDER = "concept_bank"


def write_scoring_outputs(
    output_dir: str | os.PathLike,
    results: Mapping[str, IISResult],
    bank,
    *,
    title: str,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write the first result as `iis.json`, every other one as `iis_<name>.json`, their curves on one
    figure, and `bank` as `concept_bank/`. Returns the folder."""
    first = next(iter(results.values()))
    with atomic_directory(output_dir) as tmp:
        write_json_atomic(tmp / RESULT_NAME, first.to_dict())
        for name, result in results.items():
            if name and result is not first:
                write_json_atomic(tmp / f"iis_{name}.json", result.to_dict())
        plot_iis_curves(results, tmp / CURVE_NAME, title=title)
        bank.save_pretrained(tmp / BANK_FOLDER)
        for name, content in (extra_files or {}).items():
            (tmp / name).write_text(content)
    return Path(output_dir)


def comparison_table(results: Mapping[str, IISResult]) -> str:
    """A plain-text table of several results side by side: A(rho) per ratio, A0 and IIS."""
    names = list(results)
    first = results[names[0]]
    lines = [f"{'sparsity':>9}" + "".join(f"  {n:>12}" for n in names)]
    for j, ratio in enumerate(first.sparsity_ratios):
        lines.append(f"{ratio:>9.2f}" + "".join(f"  {results[n].accuracies[j]:>12.4f}" for n in names))
    lines.append(f"{'A0':>9}" + "".join(f"  {results[n].standard_accuracy:>12.4f}" for n in names))
    lines.append(f"{'IIS':>9}" + "".join(f"  {_score(results[n]):>12}" for n in names))
    return "\n".join(lines)


def _score(result: IISResult) -> str:
    return "undefined" if result.iis is None else f"{result.iis:.4f}"
