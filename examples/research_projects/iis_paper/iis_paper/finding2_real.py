"""Finding 2 in the paper's regime: a real ImageNet backbone (EfficientNet-Lite0, D = 1,280 >> M = 200)
fine-tuned end to end with ``loss = CE + lambda * CE(head over concepts sparsified at s = 0.1)``,
against CE-only fine-tuning and the off-the-shelf model, on a transfer target.

Why: the earlier re-test (`finetune_paper`) used ~0.3M-parameter ResNets trained here, whose targets sat
at a 97-98 % ceiling; the paper's claim is about converged ImageNet backbones much wider than M.

Protocol (the one `finetune_paper` pre-registers, on a real backbone):

1. **Target**: animal silhouettes (`animal-shape-mnist`, 10 classes, duplicates removed), a stratified
   train / validation / test split, resized to `--resolution` px; a new seeded classifier per seed.
2. **Arms** on the same seeds (same data order and schedule): *off-the-shelf* (Lite0 not fine-tuned:
   the linear probe A0 on its frozen features), *CE only* (`IISTrainer` with ``iis_weight=0``), and
   *CE + lambda CE(head)* at the two pre-fixed lambdas of `--iis-weights` (s = 0.1, M = 200, head
   random, concepts fixed from the starting backbone).
3. **Grid** on VALIDATION (grid seeds): every arm at each fine-tuning learning rate of
   `--learning-rates`; the rate with the best mean validation accuracy of CE only is chosen (the
   comparator is tuned; the lambda arms get its schedule). Written to preregistration.json with the
   analysis plan before any confirmatory run (commit it before the confirmatory run).
4. **Confirmatory** runs on fresh seeds, test split. Primary endpoint: test accuracy of each lambda
   arm vs CE only (paired t and Wilcoxon, Holm over the two lambdas). Secondary: vs off-the-shelf;
   IIS with concepts rebuilt from the final backbone (the library's converged recipe); accuracy of
   predictions from concepts (the refitted head at s). The minimal detectable effect (80 % power) is
   given at the Holm level of the smallest p-value (alpha / 2).

Every finished run is a line of runs*.jsonl (a rerun skips it; `--shard K/N` runs every N-th run
into its own file, so two processes share the work). results.json and the figure summarise.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iis_hf.config import ConceptsConfig, ScoringConfig
from iis_hf.demo import image_classification_collator
from iis_hf.errors import IISError
from iis_hf.features import extract_features
from iis_hf.files import write_text_atomic
from iis_hf.pipeline import build_concepts, score_representations
from iis_hf.stats import detectable_effect, holm, paired_tests

from .data import ANIMAL_CLASSES, image_dataset, read_silhouettes, split_rows
from .findings_real import IMAGENET, at_resolution, fast_layout, imagenet_lite, label_settings
from .paper_runs import predictions  # the model's own top-1 and the trained head's, one pass
from .provenance import code_revision
from .runs import append_run, exit_code, read_runs, training_arguments, write_json, write_results_json

OFF_THE_SHELF, CE_ONLY = "off-the-shelf", "ce"
ALPHA, POWER = 0.05, 0.8
FIGURE = "finding2_real.png"


@dataclass(frozen=True)
class Design:
    """Every size and setting of one run of the experiment (recorded with each run)."""

    model: str = "lite0"  # lite0/1/2 (ImageNet EfficientNet-Lite, converted), or any Hub id or folder
    dataset: str = "animals"  # the animal silhouettes, or any dataset iis-hf score accepts (its train split)
    resolution: int = 96
    train_size: int = 400
    validation_size: int = 300
    test_size: int = 1000
    epochs: float = 5.0
    batch_size: int = 32
    learning_rates: tuple[float, ...] = (5e-4, 2e-3)
    iis_weights: tuple[float, ...] = (0.5, 1.0)
    sparsity: float = 0.1
    num_concepts: int = 200
    images_per_class: int = 10
    grid_seeds: tuple[int, ...] = (1000, 1001)
    confirm_seeds: tuple[int, ...] = tuple(range(10))
    precision: str = "fp32"  # "bf16": mixed precision (GPU)
    device: str = "cpu"

    def arms(self) -> list[tuple[str, float | None]]:
        """(name, iis_weight) of every fine-tuned arm; CE only first."""
        return [(CE_ONLY, 0.0), *((f"lambda{w:g}", w) for w in self.iis_weights)]


# -------------------------------------------------------------------------------------------- data
def load_target(design: Design) -> Any:
    """The target split train / validation / test (stratified, seed 0), columns "image" and "label":
    the animal silhouettes, or the train split of `design.dataset` (a Hub id or a local folder)."""
    from datasets import DatasetDict
    from PIL import Image as PILImage

    sizes = [design.test_size, design.validation_size, design.train_size]
    if design.dataset == "animals":
        images, labels = read_silhouettes()
        test, validation, train = split_rows(labels, sizes, 0)

        def split(rows: np.ndarray) -> Any:
            return image_dataset(images[rows], labels[rows], ANIMAL_CLASSES, PILImage.Resampling.BILINEAR)

        return DatasetDict(train=split(train), validation=split(validation), test=split(test))
    return user_target(design.dataset, sizes)


def user_target(source: str, sizes: list[int]) -> Any:
    """Any dataset the command line accepts, as the experiment's three splits of its train split."""
    from datasets import ClassLabel, DatasetDict

    from iis_hf.data import detect_columns, load_image_dataset

    data = load_image_dataset(source, split="train")
    image_column, label_column = detect_columns(data, None, None)
    if label_column is None:
        raise IISError(f"{source}: no label column; finding 2 needs labelled images")
    data = data.select_columns([image_column, label_column]).rename_columns(
        {image_column: "image", label_column: "label"}
    )
    if not isinstance(data.features["label"], ClassLabel):
        data = data.class_encode_column("label")
    labels = np.asarray(data["label"])
    if sum(sizes) > len(labels):
        raise IISError(f"{source}: {len(labels)} rows, fewer than test + validation + train = {sum(sizes)}")
    test, validation, train = split_rows(labels, sizes, 0)
    return DatasetDict(train=data.select(train), validation=data.select(validation), test=data.select(test))


# -------------------------------------------------------------------------------------------- runs
def starting_model(design: Design, model_dir: Path, names: Sequence[str], seed: int) -> tuple[Any, Any]:
    """The backbone at the design's resolution with a new classifier for `names`, seeded by `seed`:
    a converted ImageNet EfficientNet-Lite, or any image classifier (Hub id or folder)."""
    if design.model in IMAGENET:
        return imagenet_lite(design.model, model_dir, design.resolution, names, seed)
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    torch.manual_seed(seed)
    model = AutoModelForImageClassification.from_pretrained(
        design.model, **label_settings(names), ignore_mismatched_sizes=True
    )
    return model.eval(), at_resolution(AutoImageProcessor.from_pretrained(design.model), design.resolution)


def finetune(design: Design, data: Any, model_dir: Path, weight: float, lr: float, seed: int) -> Any:
    """One arm: Lite0 fine-tuned end to end through IISTrainer (weight 0: CE only); the trainer."""
    from transformers import PrinterCallback

    from iis_hf.training import IISTrainer, IISTrainingArguments

    model, processor = starting_model(design, model_dir, data["train"].features["label"].names, seed)
    mixed = {"bf16": True} if design.precision == "bf16" else {}
    with tempfile.TemporaryDirectory() as tmp:
        args = IISTrainingArguments(
            **training_arguments(tmp, design.epochs, seed, design.device, design.batch_size, lr, **mixed),
            iis_weight=weight,
            iis_sparsity_ratios=[design.sparsity],
            iis_num_concepts=design.num_concepts,
            iis_images_per_class=design.images_per_class,
            iis_refit_head=False,
            iis_eval=False,
        )
        trainer = IISTrainer(
            model=fast_layout(model.train()),
            args=args,
            train_dataset=data["train"],
            data_collator=image_classification_collator(processor),
            processing_class=processor,
            concept_dataset=data["train"],
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    trainer.processor = processor
    return trainer


def scores(model: Any, processor: Any, data: Any, design: Design, seed: int) -> dict:
    """IIS (converged recipe) with M concepts rebuilt from `model`, A0, and A(s): predictions from
    concepts at the loss's sparsity, all on the test split."""
    config = ScoringConfig(
        concepts=ConceptsConfig(num_concepts=design.num_concepts, images_per_class=design.images_per_class),
        seed=seed,
        device=design.device,
        progress=False,
    )
    model = fast_layout(model.eval())
    kwargs = dict(image_processor=processor, config=config.extraction, device=design.device, progress=False)
    train, test = (extract_features(model, data[s], **kwargs) for s in ("train", "test"))
    bank = build_concepts(model, data["train"], config, features=train.features, image_processor=processor)
    result = score_representations(train.features, train.labels, test.features, test.labels, bank, config)
    accuracies = {f"{r:g}": a for r, a in zip(result.sparsity_ratios, result.accuracies)}
    return {
        "iis": result.iis,
        "probe_accuracy": result.standard_accuracy,
        "concept_accuracy": accuracies.get(f"{design.sparsity:g}"),
        "accuracies": accuracies,
        "head_steps": result.metadata.get("head_steps"),
        "heads_converged": result.metadata.get("heads_converged"),
    }


def run_key(phase: str, arm: str, seed: int, lr: float | None) -> str:
    return f"{phase}|{arm}|{seed}|{lr if lr is None else f'{lr:g}'}"


def run_one(
    design: Design, data: Any, model_dir: Path, phase: str, arm: str, seed: int, lr: float | None
) -> dict:
    """One arm on one seed: grid runs read validation, confirmatory runs the test split."""
    record: dict[str, Any] = {"phase": phase, "arm": arm, "seed": seed, "learning_rate": lr}
    record["design"] = asdict(design)
    record["library"] = library_revision()
    started = time.perf_counter()
    if arm == OFF_THE_SHELF:
        model, processor = starting_model(design, model_dir, data["train"].features["label"].names, seed)
        record["scores"] = scores(model, processor, data, design, seed)
        record["test_accuracy"] = record["scores"]["probe_accuracy"]
    else:
        weight = dict(design.arms())[arm]
        trainer = finetune(design, data, model_dir, weight, lr, seed)
        record["train_seconds"] = round(time.perf_counter() - started, 1)
        if phase == "grid":
            record["validation"] = predictions(trainer, data["validation"])
        else:
            test = predictions(trainer, data["test"])
            record["test_accuracy"], record["trained_head_accuracy"] = (
                test["accuracy"],
                test["trained_head_accuracy"],
            )
            record["scores"] = scores(trainer.iis_model.backbone, trainer.processor, data, design, seed)
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record


def library_revision() -> dict:
    """The iis_hf this run used: its version, and the commit of the checkout it was imported from."""
    import iis_hf

    return {"iis_hf": iis_hf.__version__, **code_revision(Path(iis_hf.__file__).resolve().parent)}


def all_runs(output_dir: Path) -> list[dict]:
    """Every finished run of every shard."""
    return [r for path in sorted(output_dir.glob("runs*.jsonl")) for r in read_runs(path)]


def run_plan(
    design: Design, data: Any, output_dir: Path, plan: list[tuple], shard: tuple[int, int], log
) -> None:
    """Run this shard's part of `plan` that no shard has finished, appending each run as it ends."""
    done = {run_key(r["phase"], r["arm"], r["seed"], r["learning_rate"]) for r in all_runs(output_dir)}
    # confirmatory runs by seed (each shard finishes whole seeds, as many as the other), the grid by index
    mine = [p for i, p in enumerate(plan) if (p[2] if p[0] == "confirm" else i) % shard[1] == shard[0]]
    todo = [p for p in mine if run_key(*p) not in done]
    log(
        f"[{plan[0][0] if plan else '-'}] {len(mine) - len(todo)} of {len(mine)} runs done, {len(todo)} to go"
    )
    path = output_dir / ("runs.jsonl" if shard[1] == 1 else f"runs.shard{shard[0]}.jsonl")
    with tempfile.TemporaryDirectory() as model_dir:
        for i, (phase, arm, seed, lr) in enumerate(todo, 1):
            record = run_one(design, data, Path(model_dir), phase, arm, seed, lr)
            append_run(path, record)
            figure = record.get("validation", {}).get("accuracy", record.get("test_accuracy"))
            log(
                f"[{phase} {i}/{len(todo)}] seed {seed} {arm} lr {lr}: acc {figure:.4f} ({record['seconds']:.0f} s)"
            )


# ----------------------------------------------------------------------------- grid and analysis
def grid_plan(design: Design) -> list[tuple]:
    return [
        ("grid", arm, s, lr)
        for lr in design.learning_rates
        for s in design.grid_seeds
        for arm, _ in design.arms()
    ]


def choose(design: Design, runs: list[dict]) -> dict:
    """The learning rate with the best mean validation accuracy of CE only, and the grid's means."""
    means: dict[str, dict[str, float]] = {}
    for lr in design.learning_rates:
        for arm, _ in design.arms():
            values = [
                r["validation"]["accuracy"]
                for r in runs
                if r["phase"] == "grid" and r["arm"] == arm and r["learning_rate"] == lr
            ]
            if len(values) < len(design.grid_seeds):
                raise IISError(f"the grid is incomplete ({arm} at lr {lr:g}): rerun to finish it")
            means.setdefault(f"{lr:g}", {})[arm] = float(np.mean(values))
    best = max(design.learning_rates, key=lambda lr: means[f"{lr:g}"][CE_ONLY])
    return {"learning_rate": best, "validation_means": means}


def preregister(design: Design, output_dir: Path, runs: list[dict], log) -> dict:
    """preregistration.json, written once before any confirmatory run (then read back)."""
    path = output_dir / "preregistration.json"
    if path.is_file():
        return json.loads(path.read_text())
    chosen = choose(design, runs)
    prereg = {
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "design": asdict(design),
        "chosen": chosen,
        "arms": [OFF_THE_SHELF, *(a for a, _ in design.arms())],
        "seeds": list(design.confirm_seeds),
        "split": "test (never read by the grid)",
        "primary": "test accuracy of each lambda arm minus CE only's, paired by seed",
        "secondary": [
            "test accuracy vs off-the-shelf (its linear probe A0)",
            "IIS (concepts rebuilt, converged recipe) vs CE only",
            "accuracy of predictions from concepts A(s) vs CE only",
        ],
        "tests": "two-sided paired t-test and Wilcoxon signed-rank test (iis_hf.stats.paired_tests)",
        "multiplicity": "Holm over the two lambdas, per endpoint and per test",
        "verdict": f"'higher'/'lower' when both Holm-adjusted p < {ALPHA}, else 'no detectable difference'",
        "detectable_effect": f"{POWER:.0%} power at the Holm level of the smallest p (alpha / number of lambdas)",
    }
    write_json(path, prereg)
    log(f"[preregistered] learning rate {chosen['learning_rate']:g}: {path}")
    return json.loads(path.read_text())  # as a rerun reads it


METRICS = {  # endpoint: value of a confirmatory run
    "test_accuracy": lambda r: r["test_accuracy"],
    "iis": lambda r: r["scores"]["iis"],
    "concept_accuracy": lambda r: r["scores"]["concept_accuracy"],
}


def compare(runs: list[dict], arm: str, other: str, metric: str) -> dict | None:
    """Paired tests of `arm` minus `other` over the seeds both finished."""
    by_seed = {a: {r["seed"]: METRICS[metric](r) for r in runs if r["arm"] == a} for a in (arm, other)}
    seeds = sorted(set(by_seed[arm]) & set(by_seed[other]))
    pairs = [
        (by_seed[arm][s], by_seed[other][s])
        for s in seeds
        if None not in (by_seed[arm][s], by_seed[other][s])
    ]
    if len(pairs) < 2:
        return None
    test = paired_tests([a for a, _ in pairs], [b for _, b in pairs])
    return {**test, "seeds": seeds}


def analyse(design: Design, runs: list[dict], prereg: dict) -> dict:
    """Every endpoint of every lambda arm, Holm-adjusted over the lambdas, with its detectable effect."""
    confirm = [r for r in runs if r["phase"] == "confirm"]
    lambdas = [a for a, _ in design.arms()[1:]]
    endpoints = [
        ("test_accuracy", CE_ONLY),
        ("test_accuracy", OFF_THE_SHELF),
        ("iis", CE_ONLY),
        ("concept_accuracy", CE_ONLY),
    ]
    out = {}
    for metric, other in endpoints:
        tests = {arm: compare(confirm, arm, other, metric) for arm in lambdas}
        t_holm = holm([t["t_p"] if t else None for t in tests.values()])
        w_holm = holm([t["wilcoxon_p"] if t else None for t in tests.values()])
        for (arm, test), tp, wp in zip(tests.items(), t_holm, w_holm):
            if test is None:
                continue
            both = tp is not None and wp is not None and tp < ALPHA and wp < ALPHA
            sign = "higher" if test["mean_difference"] > 0 else "lower"
            mde = detectable_effect(test["sd_difference"], test["n"], alpha=ALPHA / len(lambdas), power=POWER)
            out[f"{metric}|{arm}-{other}"] = {
                **test,
                "t_p_holm": tp,
                "wilcoxon_p_holm": wp,
                "verdict": sign if both else "no detectable difference",
                "detectable_effect": mde,
            }
    means = {}
    for arm in prereg["arms"]:
        rows = [r for r in confirm if r["arm"] == arm]
        means[arm] = {
            m: float(np.mean([METRICS[m](r) for r in rows if METRICS[m](r) is not None] or [np.nan]))
            for m in METRICS
        }
        means[arm]["n"] = len(rows)
    return {"comparisons": out, "means": means}


def draw_figure(results: dict, output_dir: Path) -> Path:
    """Each lambda arm's paired test-accuracy difference against CE only, one point per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    rows = [
        (k, v)
        for k, v in results["analysis"]["comparisons"].items()
        if k.startswith("test_accuracy|") and k.endswith(f"-{CE_ONLY}")
    ]
    confirm = {(r["arm"], r["seed"]): r["test_accuracy"] for r in results["runs"] if r["phase"] == "confirm"}
    for i, (key, test) in enumerate(rows):
        arm = key.split("|")[1].rsplit("-", 1)[0]
        diffs = [100 * (confirm[(arm, s)] - confirm[(CE_ONLY, s)]) for s in test["seeds"]]
        ax.scatter(np.full(len(diffs), i) + np.linspace(-0.15, 0.15, len(diffs)), diffs, s=14, alpha=0.7)
        ax.errorbar(
            i + 0.3,
            100 * test["mean_difference"],
            yerr=100 * 1.96 * test["sd_difference"] / np.sqrt(test["n"]),
            fmt="o",
            color="k",
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(
        range(len(rows)), [k.split("|")[1].rsplit("-", 1)[0].replace("lambda", "λ = ") for k, _ in rows]
    )
    ax.set_ylabel("test accuracy − CE only (points)")
    ax.set_title("Fine-tuned with the interpretability loss (s = 0.1): paired seeds", fontsize=10)
    fig.tight_layout()
    path = output_dir / FIGURE
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------- report
PAPER = {  # the paper's configuration (its ICLR 2025 text as quoted in its public reviews)
    "backbone": "ImageNet ResNet-50 / ViT-B / Swin-T / ConvNeXt-T", "D": "2,048 / 768", "M": "200",
    "s": "0.1", "lambda": "not given", "resolution": "224", "epochs": "not given", "seeds": "1 (single runs)",
}  # fmt: skip


def _cell(test: dict | None, points: bool = True) -> str:
    """'+0.4 [-0.6, 1.4] (t p 0.41, W p 0.50; Holm 0.82, 0.99) MDE 1.6: no detectable difference'."""
    if test is None:
        return "not measured yet"
    scale, unit = (100, " points") if points else (1, "")
    from scipy.stats import t as student

    half = student.ppf(0.975, test["n"] - 1) * test["sd_difference"] / test["n"] ** 0.5  # the 95% t interval
    mean = scale * test["mean_difference"]
    return (
        f"{mean:+.2f} [{mean - scale * half:+.2f}, {mean + scale * half:+.2f}]{unit}, n = {test['n']}; "
        f"Holm p: t {test['t_p_holm']:.2g}, Wilcoxon {test['wilcoxon_p_holm']:.2g}; "
        f"detectable {scale * test['detectable_effect']:.2f}{unit}: **{test['verdict']}**"
    )


def report_markdown(results: dict) -> str:
    """The finding-2-on-a-real-backbone section of docs/RESULTS.md, from results.json."""
    design, analysis = results["design"], results["analysis"]
    prereg = results["preregistration"]
    lambdas = [w for w in design["iis_weights"]]
    ours = {
        "backbone": f"{design['model']} (ImageNet EfficientNet-Lite0, 4.7M parameters)" if design["model"] == "lite0" else design["model"],
        "D": "1,280" if design["model"] == "lite0" else "the model's", "M": str(design["num_concepts"]),
        "s": f"{design['sparsity']:g}", "lambda": ", ".join(f"{w:g}" for w in lambdas),
        "resolution": str(design["resolution"]), "epochs": f"{design['epochs']:g} (lr {prereg['chosen']['learning_rate']:g}, chosen on validation)",
        "seeds": f"{len(design['confirm_seeds'])} paired (fresh; {len(design['grid_seeds'])} more for the grid)",
    }  # fmt: skip
    lines = ["| | the paper | this test |", "|---|---|---|"]
    lines += [f"| {k} | {PAPER[k]} | {ours[k]} |" for k in PAPER]
    means = analysis["means"]
    lines += [
        "",
        "| arm | n | test accuracy | IIS (rebuilt concepts) | A(s) from concepts |",
        "|---|---|---|---|---|",
    ]
    for arm, m in means.items():
        lines.append(
            f"| {arm} | {m['n']} | {m['test_accuracy']:.4f} | {m['iis']:.4f} | {m['concept_accuracy']:.4f} |"
        )
    comparisons = analysis["comparisons"]
    lines += [
        "",
        "| endpoint | " + " | ".join(f"λ = {w:g}" for w in lambdas) + " |",
        "|---|" + "---|" * len(lambdas),
    ]
    for metric, other, label, points in (
        ("test_accuracy", CE_ONLY, "accuracy − CE only (primary)", True),
        ("test_accuracy", OFF_THE_SHELF, "accuracy − off the shelf", True),
        ("iis", CE_ONLY, "IIS − CE only", False),
        ("concept_accuracy", CE_ONLY, "A(s) − CE only", True),
    ):
        cells = [_cell(comparisons.get(f"{metric}|lambda{w:g}-{other}"), points) for w in lambdas]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = Design()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output-dir", required=True, type=Path, help="runs*.jsonl, preregistration.json, results.json"
    )
    parser.add_argument(
        "--phase",
        choices=("grid", "preregister", "confirm", "report", "all"),
        default="all",
        help="what to run",
    )
    parser.add_argument(
        "--shard", default="0/1", help="K/N: run every N-th run starting at K (parallel processes)"
    )
    parser.add_argument(
        "--model",
        default=defaults.model,
        help="lite0, lite1, lite2 (ImageNet EfficientNet-Lite) or any Hub id / folder",
    )
    parser.add_argument(
        "--dataset",
        default=defaults.dataset,
        help="animals (silhouettes) or any dataset iis-hf score accepts",
    )
    parser.add_argument("--resolution", type=int, default=defaults.resolution, help="px a side")
    parser.add_argument("--train-size", type=int, default=defaults.train_size, help="training images")
    parser.add_argument("--validation-size", type=int, default=defaults.validation_size, help="grid images")
    parser.add_argument("--test-size", type=int, default=defaults.test_size, help="confirmatory images")
    parser.add_argument("--epochs", type=float, default=defaults.epochs, help="fine-tuning epochs")
    parser.add_argument(
        "--learning-rates",
        type=float,
        nargs="+",
        default=list(defaults.learning_rates),
        help="the grid's rates",
    )
    parser.add_argument(
        "--iis-weights",
        type=float,
        nargs="+",
        default=list(defaults.iis_weights),
        help="the pre-fixed lambdas",
    )
    parser.add_argument(
        "--grid-seeds", type=int, nargs="+", default=list(defaults.grid_seeds), help="seeds of the grid"
    )
    parser.add_argument(
        "--seeds", type=int, default=len(defaults.confirm_seeds), help="confirmatory seeds 0..N-1"
    )
    parser.add_argument("--num-concepts", type=int, default=defaults.num_concepts, help="M")
    parser.add_argument(
        "--images-per-class", type=int, default=defaults.images_per_class, help="prototype images"
    )
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="fine-tuning precision")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    try:
        k, n = (int(x) for x in args.shard.split("/"))
    except ValueError:
        raise IISError(f"--shard must be K/N (e.g. 0/2), got {args.shard!r}") from None
    if not 0 <= k < n:
        raise IISError(f"--shard K/N needs 0 <= K < N, got {args.shard!r}")
    args.shard_k, args.shard_n = k, n
    return args


def design_from(args: argparse.Namespace) -> Design:
    return Design(
        model=args.model, dataset=args.dataset, resolution=args.resolution, train_size=args.train_size, validation_size=args.validation_size,
        test_size=args.test_size, epochs=args.epochs, learning_rates=tuple(args.learning_rates),
        iis_weights=tuple(args.iis_weights), grid_seeds=tuple(args.grid_seeds), confirm_seeds=tuple(range(args.seeds)),
        num_concepts=args.num_concepts, images_per_class=args.images_per_class, precision=args.precision,
        device=args.device,
    )  # fmt: skip


def run(argv: Sequence[str] | None = None) -> dict:
    """Grid, pre-registration, confirmatory runs, analysis; each phase resumes from runs*.jsonl."""
    args = parse_args(argv)
    design, output = design_from(args), args.output_dir
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log = lambda text: print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)  # noqa: E731
    torch.manual_seed(0)
    data = load_target(design)
    shard = (args.shard_k, args.shard_n)
    recorded = json.loads(json.dumps(asdict(design)))
    if any(r.get("design") != recorded for r in all_runs(output)):
        raise IISError(
            f"{output} holds runs of another design: use a new --output-dir (or the same settings)"
        )
    if args.phase in ("grid", "all"):
        run_plan(design, data, output, grid_plan(design), shard, log)
    if args.phase == "grid":
        return {}
    prereg = preregister(design, output, all_runs(output), log)
    if prereg["design"] != json.loads(json.dumps(asdict(design))):
        raise IISError(
            f"{output / 'preregistration.json'} was written for another design: use a new --output-dir"
        )
    if args.phase == "preregister":
        return prereg
    if args.phase in ("confirm", "all"):
        lr = prereg["chosen"]["learning_rate"]
        plan = [  # seeds outermost: an interrupted run has whole seeds of every arm
            run
            for s in design.confirm_seeds
            for run in [
                ("confirm", OFF_THE_SHELF, s, None),
                *(("confirm", arm, s, lr) for arm, _ in design.arms()),
            ]
        ]
        run_plan(design, data, output, plan, shard, log)
    runs = all_runs(output)
    results = {
        "design": asdict(design),
        "preregistration": prereg,
        "analysis": analyse(design, runs, prereg),
        "runs": runs,
    }
    results["seconds_this_call"] = round(time.perf_counter() - started, 1)
    write_results_json(output / "results.json", results)
    write_text_atomic(output / "report.md", report_markdown(results))
    draw_figure(results, output)
    log(f"wrote {output / 'results.json'} and {output / FIGURE}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """0, or 2 with one line on stderr for input to fix (`runs.exit_code`)."""
    return exit_code(run, argv)
