"""Finding 1 on real backbones: does IIS rise with classifiability (the probe accuracy A0) across
ImageNet-pretrained EfficientNet-Lite models, a random initialisation and fine-tuned checkpoints?

Why: finding 1 of the reproduction (`findings_runs`) used tiny models trained from scratch on 32 px
images; the paper measured ImageNet backbones, and Lite0/1/2's ImageNet weights ship offline
(`efficientnet_lite.convert`). Per target, each model is scored with the library's defaults
(`iis_hf.score_model`) on one fixed split: random-init Lite0, Lite0, Lite1, Lite2, and Lite0 after
each of `--finetune-epochs` epochs of one plain-Trainer run. Each row is appended to results.jsonl
once measured, so a rerun skips it; results.json and finding1_real.png summarise.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from iis_hf.config import ScoringConfig
from iis_hf.demo import image_classification_collator
from iis_hf.errors import IISError
from iis_hf.pipeline import score_model
from iis_hf.plotting import plot_iis_vs_accuracy
from iis_hf.stats import correlation_summary

from .data import DATASETS, load_named_dataset
from .efficientnet_lite import _SE_GATE_BIAS, convert, efficientnet_lite_config, image_processor
from .models import copy_model
from .runs import append_run, exit_code, read_runs, training_arguments, write_results_json

IMAGENET = ("lite0", "lite1", "lite2")
MODELS = ("random-init", *IMAGENET, "finetuned")  # --models; "finetuned": Lite0 after each epoch
FIGURE = "finding1_real.png"
LABELS = {"random-init": "Lite0 random init", "lite0": "Lite0", "lite1": "Lite1", "lite2": "Lite2"}


# ------------------------------------------------------------------------------------ the models
def same_padding_blocks(config: Any, resolution: int) -> list[int]:
    """The blocks whose stride-2 depthwise conv sees an odd input at `resolution`: TensorFlow's "SAME"
    pads those symmetrically (transformers' ``depthwise_padding``). The converted configs list them
    for the native size; at another resolution they move, so they are recomputed."""
    side, block, odd = math.ceil(resolution / 2), 0, []  # after the stride-2 stem
    for stride, repeats in zip(config.strides, config.num_block_repeats):
        for j in range(math.ceil(config.depth_coefficient * repeats)):
            if j == 0 and stride == 2:
                odd += [block] if side % 2 else []
                side = math.ceil(side / 2)
            block += 1
    return odd


def at_resolution(processor: Any, resolution: int) -> Any:
    """The processor resizing to `resolution` px square (the converted folders' is the native size)."""
    processor.size = {"height": resolution, "width": resolution}
    return processor


def fast_layout(model: Any) -> Any:
    """channels_last: depthwise convs run ~1.5x faster on CPU; the numbers change by float rounding only."""
    return model.to(memory_format=torch.channels_last)


def standard_init(model: Any, seed: int) -> Any:
    """torchvision's EfficientNet initialisation (convs He-normal over fan-out, batch-norm scale 1 and
    shift 0, the classifier uniform), seeded. Why not transformers' own: it draws batch-norm scales
    from N(0, 0.02), and through Lite0's 16 blocks every representation becomes exactly zero."""
    from torch import nn

    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)
        for name, tensor in model.named_parameters():  # Lite has no squeeze-excite: make it the identity
            if ".squeeze_excite." in name:
                tensor.fill_(_SE_GATE_BIAS if name.endswith("excite.expand.bias") else 0.0)
    return model


def calibrate_batch_norm(model: Any, processor: Any, images: Any, batch_size: int = 50) -> Any:
    """Batch-norm running statistics as the mean over `images` (train-mode forward passes, no
    gradient). Why: at initialisation they are mean 0, variance 1, so an eval-mode random network
    does not normalise and Lite0's representation shrinks to ~1e-10, far below the LayerNorm epsilon
    the heads see concept activations through: the heads would be at chance for a reason of scale."""
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = processor(images=images[start : start + batch_size], return_tensors="pt")
            model(pixel_values=batch["pixel_values"])
    for norm in norms:
        norm.momentum = model.config.batch_norm_momentum
    return model.eval()


def label_settings(names: Sequence[str]) -> dict[str, Any]:
    """A config's num_labels, id2label and label2id for the target's classes."""
    ids = dict(enumerate(names))
    return {"num_labels": len(names), "id2label": ids, "label2id": {n: i for i, n in ids.items()}}


def random_lite0(resolution: int, names: Sequence[str], seed: int, images: Any = ()) -> tuple[Any, Any]:
    """Lite0's architecture with seeded random weights (`standard_init`), batch-norm statistics of
    `images` (`calibrate_batch_norm`: the training images); its squeeze-excite is the identity, as
    in the converted weights, so only the weights differ from Lite0."""
    from transformers import EfficientNetForImageClassification

    config = efficientnet_lite_config("lite0")
    config.depthwise_padding = same_padding_blocks(config, resolution)
    for key, value in label_settings(names).items():
        setattr(config, key, value)
    model = standard_init(EfficientNetForImageClassification(config), seed)
    processor = at_resolution(image_processor("lite0"), resolution)
    return calibrate_batch_norm(model, processor, list(images)), processor


def converted_folder(variant: str, model_dir: Path) -> Path:
    """The variant's transformers folder (`efficientnet_lite.convert`), converted once per run."""
    folder = model_dir / variant
    return folder if (folder / "config.json").is_file() else convert(variant, folder)


def imagenet_lite(
    variant: str, model_dir: Path, resolution: int, names: Sequence[str] | None = None, seed: int = 0
) -> tuple[Any, Any]:
    """A converted Lite with its ImageNet weights, padding set for `resolution`; with `names`, a new
    seeded classifier for those classes (what fine-tuning starts from)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    folder = converted_folder(variant, model_dir)
    padding = same_padding_blocks(AutoConfig.from_pretrained(folder), resolution)
    extra = {} if names is None else {**label_settings(names), "ignore_mismatched_sizes": True}
    torch.manual_seed(seed)
    model = AutoModelForImageClassification.from_pretrained(folder, depthwise_padding=padding, **extra)
    return model.eval(), at_resolution(AutoImageProcessor.from_pretrained(folder), resolution)


def finetuned_lite0(
    data: Any, model_dir: Path, resolution: int, epochs: Sequence[int], seed: int
) -> tuple[dict[int, Any], Any, float]:
    """Lite0 fine-tuned on `data["train"]` with a plain Trainer (the experiments' shared recipe:
    AdamW lr 1e-3, batch 32, cosine, 10% warm-up) for max(epochs); a copy after each listed epoch of
    that one run. Returns ({epoch: model}, processor, seconds)."""
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    names = data["train"].features["label"].names
    model, processor = imagenet_lite("lite0", model_dir, resolution, names, seed)
    wanted, snapshots = sorted(set(epochs)), {}

    class KeepCheckpoints(TrainerCallback):
        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            if round(state.epoch) in wanted and model is not None:
                snapshots[round(state.epoch)] = copy_model(model).cpu().eval()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        args = training_arguments(tmp, max(wanted), seed, device)
        trainer = Trainer(
            model=fast_layout(model.train()),
            args=TrainingArguments(**args),
            train_dataset=data["train"],
            data_collator=image_classification_collator(processor),
            callbacks=[KeepCheckpoints()],
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return snapshots, processor, time.perf_counter() - started


# ---------------------------------------------------------------------------------- measurement
def measure(model: Any, processor: Any, data: Any, seed: int) -> dict:
    """IIS with the library's defaults (`ScoringConfig`, converged protocol), the warnings it gave,
    and the seconds it took."""
    started, config = time.perf_counter(), ScoringConfig(seed=seed, progress=False)
    ours = lambda category: category.__module__.startswith("iis_hf")  # noqa: E731  (not a dependency's)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = score_model(
            fast_layout(model), data["train"], data["test"], config, image_processor=processor
        )
    ratios = [f"{r:g}" for r in result.sparsity_ratios]
    return {
        "a0": result.standard_accuracy,
        "iis": result.iis,
        "iis_ci": (result.uncertainty or {}).get("ci"),
        "accuracies": dict(zip(ratios, result.accuracies)),
        "valid": result.valid,
        "undefined_reason": result.undefined_reason,
        "invalid_reason": result.invalid_reason,
        "warnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught if ours(w.category)}),
        "score_seconds": round(time.perf_counter() - started, 1),
        "result": result.to_dict(),
    }


def model_names(models: Sequence[str], finetune_epochs: Sequence[int]) -> list[str]:
    """The rows of a target, in the order they are measured and shown ("lite0-ft3": 3 epochs)."""
    out = [m for m in MODELS[:-1] if m in models]
    return out + ([f"lite0-ft{e}" for e in sorted(set(finetune_epochs))] if "finetuned" in models else [])


def label(model: str) -> str:
    """How the table and the figure name a model."""
    if model.startswith("lite0-ft"):
        epochs = int(model.removeprefix("lite0-ft"))
        return f"Lite0 fine-tuned {epochs} epoch{'s' if epochs > 1 else ''}"
    return LABELS[model]


def measure_target(target: str, settings: dict, done: dict, jsonl: Path, model_dir: Path, log) -> None:
    """Score every model of `target` not in `done`, appending each row to `jsonl` as it is measured."""
    wanted = [
        m for m in model_names(settings["models"], settings["finetune_epochs"]) if (target, m) not in done
    ]
    if not wanted:
        log(f"[{target}] all {sum(t == target for t, _ in done)} rows measured already")
        return
    seed, resolution = settings["seed"], settings["resolution"]
    data = load_named_dataset(target, settings["train_size"], settings["eval_size"], seed=seed)
    names = data["train"].features["label"].names

    def record(model_name: str, model: Any, processor: Any, **extra: Any) -> None:
        row = {"target": target, "model": model_name, "label": label(model_name), "settings": settings}
        row.update(extra, **measure(model, processor, data, seed))
        append_run(jsonl, row)
        done[(target, model_name)] = row
        iis = "undefined" if row["iis"] is None else f"{row['iis']:.4f} {row['iis_ci']}"
        log(f"[{target}] {model_name:<12} A0 {row['a0']:.4f}  IIS {iis}  ({row['score_seconds']:.0f} s)")

    for name in wanted:
        if name == "random-init":
            record(name, *random_lite0(resolution, names, seed, data["train"]["image"]))
        elif name in IMAGENET:
            record(name, *imagenet_lite(name, model_dir, resolution))
    tuned = [m for m in wanted if m.startswith("lite0-ft")]
    if tuned:
        epochs = sorted(set(settings["finetune_epochs"]))
        snapshots, processor, seconds = finetuned_lite0(data, model_dir, resolution, epochs, seed)
        log(f"[{target}] fine-tuned Lite0 for {max(epochs)} epochs in {seconds:.0f} s")
        for name in tuned:
            epoch = int(name.removeprefix("lite0-ft"))
            record(name, snapshots[epoch], processor, epochs=epoch, finetune_seconds=round(seconds, 1))


# ------------------------------------------------------------------------------ resumable files
def read_done(jsonl: Path, settings: dict) -> dict[tuple[str, str], dict]:
    """The rows results.jsonl already holds, by (target, model); refuses rows measured otherwise."""
    done, mine = {}, {k: v for k, v in settings.items() if k not in ("models", "targets")}
    for row in read_runs(jsonl):
        theirs = {k: v for k, v in row["settings"].items() if k not in ("models", "targets")}
        if theirs != mine:
            raise IISError(
                f"{jsonl} holds rows measured with other settings ({theirs}, not {mine}): "
                "pass another --output-dir",
                field="output_dir",
            )
        done[(row["target"], row["model"])] = row
    return done


# ----------------------------------------------------------------------------------- the summary
def correlation(rows: list[dict], seed: int, resamples: int) -> dict | None:
    """Spearman (and Pearson) of IIS against A0 over the rows with a defined IIS, with bootstrap
    intervals and permutation p-values (`iis_hf.stats.correlation_summary`); None under 3 rows."""
    defined = [r for r in rows if r["iis"] is not None]
    if len(defined) < 3:
        return None
    out = correlation_summary(
        [r["a0"] for r in defined], [r["iis"] for r in defined], n_resamples=resamples, seed=seed
    )
    return {**out, "models": [r["model"] for r in defined]}


def summarise(done: dict, settings: dict, resamples: int) -> dict:
    """results.json: per target its rows (model order), IIS-vs-A0 correlations over all rows and
    without the random initialisation (whose A0 is far below the others')."""
    order = model_names(settings["models"], settings["finetune_epochs"])
    keep: tuple[str, ...] = (
        "model",
        "label",
        "a0",
        "iis",
        "iis_ci",
        "accuracies",
        "valid",
        "undefined_reason",
    )
    keep += ("warnings", "epochs", "score_seconds", "finetune_seconds")
    targets = {}
    for target in settings["targets"]:
        rows = [done[(target, m)] for m in order if (target, m) in done]
        table = [{k: r[k] for k in keep if k in r} for r in rows]
        trained = [r for r in rows if r["model"] != "random-init"]
        tuning = [r["finetune_seconds"] for r in rows if "finetune_seconds" in r]
        targets[target] = {
            "rows": table,
            "measured_seconds": round(sum(r["score_seconds"] for r in rows) + max(tuning, default=0), 1),
            "iis_vs_a0": correlation(rows, settings["seed"], resamples),
            "iis_vs_a0_without_random_init": correlation(trained, settings["seed"], resamples),
        }
    return {"experiment": "finding 1 on EfficientNet-Lite", "settings": settings, "targets": targets}


def draw_figure(summary: dict, output_dir: Path) -> Path:
    """finding1_real.png: one panel per target (`iis_hf.plotting.plot_iis_vs_accuracy`, same colour
    per model in every panel), side by side."""
    from PIL import Image

    panels, ratios = [], ScoringConfig().heads.sparsity_ratios
    for target, entry in summary["targets"].items():
        points = [
            {"name": r["label"], "standard_accuracy": r["a0"], "iis": r["iis"], "ci": r["iis_ci"]}
            for r in entry["rows"]
        ]
        rho = entry["iis_vs_a0"]
        title = f"{target}: Spearman ρ = " + (
            f"{rho['spearman']:.2f} [{rho['spearman_ci'][0]:.2f}, {rho['spearman_ci'][1]:.2f}]"
            if rho and rho["spearman_ci"][0] is not None
            else "n/a"
        )
        path = output_dir / f"finding1_real_{target}.png"
        plot_iis_vs_accuracy(points, path, title=title, max_iis=max(ratios) - min(ratios))
        panels.append(Image.open(path).convert("RGB"))
    figure = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), "white")
    for i, panel in enumerate(panels):
        figure.paste(panel, (sum(p.width for p in panels[:i]), 0))
    figure.save(output_dir / FIGURE)
    return output_dir / FIGURE


def environment() -> dict:
    """Where the invocation that wrote results.json ran: thread counts change head training's float
    rounding (and so the step the stopping rule fires at), so they are recorded with the versions."""
    import platform

    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    device = "cuda" if torch.cuda.is_available() else f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    return {**versions, "torch_threads": torch.get_num_threads(), "device": device}


# --------------------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", required=True, help="results.jsonl, results.json and the figure")
    parser.add_argument("--targets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--resolution", type=int, default=128, help="px a side the images are resized to")
    parser.add_argument("--train-size", type=int, default=500, help="images the heads and probe train on")
    parser.add_argument("--eval-size", type=int, default=300, help="images A0 and A(rho) are measured on")
    parser.add_argument("--seed", type=int, default=0, help="split, random init, fine-tuning and scoring")
    parser.add_argument("--finetune-epochs", type=int, nargs="+", default=[1, 3], help="checkpoints kept")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples of the Spearman interval")
    args = parser.parse_args(argv)
    if args.resolution < 32 or args.resolution % 2 or min(args.finetune_epochs) < 1:
        raise IISError("--resolution must be even and >= 32, --finetune-epochs each >= 1")
    return args


def run(argv: Sequence[str] | None = None) -> dict:
    """Measure what results.jsonl lacks, then write results.json and the figure."""
    args = parse_args(argv)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    keys = ("targets", "models", "resolution", "train_size", "eval_size", "seed", "finetune_epochs")
    settings = {k: getattr(args, k) for k in keys}
    settings["finetune_epochs"] = sorted(set(settings["finetune_epochs"]))
    done = read_done(output / "results.jsonl", settings)
    started = time.perf_counter()
    log = lambda text: print(f"{time.perf_counter() - started:7.0f} s  {text}", flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory() as model_dir:
        for target in args.targets:
            measure_target(target, settings, done, output / "results.jsonl", Path(model_dir), log)
    summary = summarise(done, settings, args.bootstrap)
    summary["environment"] = environment()
    write_results_json(output / "results.json", summary)
    draw_figure(summary, output)
    log(f"wrote {output / 'results.json'} and {output / FIGURE}")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """0, or 2 with one line on stderr for input to fix (`runs.exit_code`)."""
    return exit_code(run, argv)
