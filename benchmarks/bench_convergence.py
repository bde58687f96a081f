"""IIS against the heads' training budget, old default beside new, from 200 to 20,000 rows.

Until recipe version 2 the heads trained a fixed 30 epochs at batch 1,024: 30 Adam steps on a
600-row set, 600 on 20,000 rows. The converged protocol now trains at least `min_steps`, then until
no model's training loss fell by 1 % in `patience` steps (at most `max_steps`), and reports the
final state. This prints, per row count, the IIS and wall time of

- ``old``: the old default (30 epochs, best eval epoch), and ``old x10`` (300 epochs);
- ``new``: today's default, and ``new x4`` (min_steps, patience and max_steps all 4x).

A converged recipe gives ``new`` within seed noise of ``new x4``; ``old`` drifts from ``old x10``
where 30 epochs are few steps. With ``--selection`` it prints instead, at convergence and at 4x,
what each model-selection rule reports on the eval rows and what the same heads score on fresh
rows that chose nothing: the gap is the rule's optimism (docs/METHOD.md).

    python benchmarks/bench_convergence.py                       # 200, 1000, 5000, 20000 rows
    python benchmarks/bench_convergence.py --rows 200 1000 --seeds 0 1
    python benchmarks/bench_convergence.py --selection --rows 1000 5000

Real features: scikit-learn's digits (and their shifts by up to 2 pixels, for up to 33,675 rows)
through the random-init demo ResNet (D = 128), with 200 of its own patch prototypes, as
`iis-hf score`'s default concept kind builds them (synthetic Gaussian classes converged in 30 steps
and showed nothing). Every line is also one JSON object (``--output`` appends them to a file).
"""

from __future__ import annotations

import argparse
import functools
import json
import time
import warnings

import numpy as np
import torch

from iis_hf import HeadsConfig, inherent_interpretability_score
from iis_hf.config import DEFAULT_SPARSITY_RATIOS
from iis_hf.heads import fit_heads
from iis_hf.heads.evaluation import correct_rows
from iis_hf.heads.rows import Rows

NUM_CLASSES, NUM_CONCEPTS, HELD_OUT = 10, 200, 600
SHIFTS = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)]  # 25 copies: up to 33,675 train rows


@functools.cache
def digits_features() -> tuple[torch.Tensor, ...]:
    """Shifted digits through the random-init demo ResNet: (train x, train y, eval x, eval y, fresh x,
    fresh y, concepts). 600 held-out originals are split into eval rows (scored) and fresh rows (chose
    nothing); the train rows are every shift of the rest, in a seeded random order."""
    import datasets
    from sklearn.datasets import load_digits

    from iis_hf.concepts import ConceptBank
    from iis_hf.demo import demo_image_processor, demo_model
    from iis_hf.features import extract_features

    digits = load_digits()
    images, labels = (digits.images / 16 * 255).astype(np.uint8), digits.target
    order = np.random.default_rng(0).permutation(len(labels))
    held, pool = order[:HELD_OUT], order[HELD_OUT:]
    train_images = np.concatenate([np.roll(images[pool], s, axis=(-1, -2)) for s in SHIFTS])
    train_labels = np.tile(labels[pool], len(SHIFTS))

    def dataset(array: np.ndarray, label: np.ndarray) -> datasets.Dataset:
        rgb = [np.stack([a] * 3, -1).astype(np.uint8) for a in array]
        return datasets.Dataset.from_dict({"image": rgb, "label": label.tolist()}).cast_column(
            "image", datasets.Image()
        )

    model, processor = demo_model(NUM_CLASSES, 0).eval(), demo_image_processor()
    train = dataset(train_images, train_labels)
    extracted = extract_features(model, train, image_processor=processor, progress=False)
    held_out = extract_features(
        model, dataset(images[held], labels[held]), image_processor=processor, progress=False
    )
    bank = ConceptBank.from_prototypes(
        model,
        dataset(images[pool], labels[pool]),
        image_processor=processor,
        num_concepts=NUM_CONCEPTS,
        progress=False,
    )
    shuffle = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(0))
    half = HELD_OUT // 2
    return (
        extracted.features[shuffle],
        extracted.labels[shuffle],
        held_out.features[:half],
        held_out.labels[:half],
        held_out.features[half:],
        held_out.labels[half:],
        bank,
    )


def recipes() -> dict[str, HeadsConfig]:
    """The budgets compared: the old default and 10x it, the new default and 4x it."""
    base = HeadsConfig()
    return {
        "old": HeadsConfig(epochs=30, model_selection="eval"),  # recipe version 1's heads
        "old x10": HeadsConfig(epochs=300, model_selection="eval"),
        "new": base,
        "new x4": HeadsConfig(
            min_steps=4 * base.min_steps, max_steps=4 * base.max_steps, patience=4 * base.patience
        ),
    }


def measure(rows: int, name: str, config: HeadsConfig, seed: int) -> dict:
    all_x, all_y, eval_x, eval_y, fresh_x, fresh_y, concepts = digits_features()
    train_x, train_y = all_x[:rows], all_y[:rows]
    start = time.perf_counter()
    fit = fit_heads(
        train_x,
        train_y,
        eval_x,
        eval_y,
        concepts,
        num_classes=NUM_CLASSES,
        config=config,
        seed=seed,
        progress=False,
    )
    seconds = time.perf_counter() - start
    ratios = list(DEFAULT_SPARSITY_RATIOS)
    probe_rows, head_rows = correct_rows(
        fit.probe, fit.heads, Rows(fresh_x), None, fresh_y, torch.device("cpu")
    )
    fresh_iis = inherent_interpretability_score(
        ratios, head_rows.float().mean(-1).tolist(), probe_rows.float().mean().item()
    )
    return {
        "rows": rows,
        "recipe": name,
        "seed": seed,
        "iis": round(inherent_interpretability_score(ratios, fit.accuracies, fit.standard_accuracy), 4),
        "iis_on_fresh_rows": round(fresh_iis, 4),
        "standard_accuracy": round(fit.standard_accuracy, 4),
        "head_steps": fit.head_steps,
        "converged": None if fit.converged is None else all(fit.converged),
        "seconds": round(seconds, 2),
    }


def selection_recipes() -> dict[str, HeadsConfig]:
    base = HeadsConfig()
    x4 = {"min_steps": 4 * base.min_steps, "max_steps": 4 * base.max_steps, "patience": 4 * base.patience}
    table = {}
    for rule in ("eval", "holdout", "last"):
        table[rule] = HeadsConfig(model_selection=rule)
        table[f"{rule} x4"] = HeadsConfig(model_selection=rule, **x4)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200, 1000, 5000, 20000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--selection", action="store_true", help="compare the model-selection rules")
    parser.add_argument("--output", help="append each JSON line to this file as well")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    measure(200, "warm-up", HeadsConfig(epochs=2), 0)  # features, thread pools and kernels, untimed
    header = f"{'rows':>6}  {'recipe':<11} {'seed':>4}  {'IIS':>6}  {'fresh':>6}  {'A0':>6}  {'steps':>6}  {'s':>7}"
    print(header)
    for rows in args.rows:
        table = selection_recipes() if args.selection else recipes()
        for name, config in table.items():
            for seed in args.seeds:
                row = measure(rows, name, config, seed)
                print(
                    f"{rows:>6}  {name:<11} {seed:>4}  {row['iis']:>6.4f}  {row['iis_on_fresh_rows']:>6.4f}  "
                    f"{row['standard_accuracy']:>6.4f}  {row['head_steps']:>6}  {row['seconds']:>7.1f}",
                    flush=True,
                )
                line = json.dumps(row)
                print(line, flush=True)
                if args.output:
                    with open(args.output, "a", encoding="utf-8") as file:
                        file.write(line + "\n")


if __name__ == "__main__":
    main()
