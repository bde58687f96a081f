"""The reproduction's measurements: the checkpoint grid (findings 1 and 3) and the fine-tuning
scenarios of finding 2, as rows of results.json.

A scenario is a data set fine-tuned in domain ("digits") or after pre-training on another one
("animals-to-digits").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .models import build_model, with_new_classifier
from .runs import finetune_run, pretrain, read_runs, train_with_checkpoints
from .scoring import classifier_accuracy, score_checkpoint

Log = Callable[[str], None]


# ------------------------------------------------------------------------------- findings 1 and 3


def _grid_settings(dataset: str, cfg: Any) -> dict:
    """What a resumed row must share with this run to be reused (else it is measured again)."""
    from iis_hf.config import HEADS_RECIPE_VERSION

    keys = ("seed", "num_concepts", "images_per_class", "head_epochs", "batch_size", "epochs", "device")
    settings = {k: getattr(cfg, k, None) for k in keys}
    settings["train_size"] = cfg.grid_train_size[dataset]
    settings["test_size"] = cfg.test_size[dataset]
    settings["recipe_version"] = HEADS_RECIPE_VERSION
    return json.loads(json.dumps(settings, default=str))


def run_checkpoint_grid(data: Any, dataset: str, cfg: Any, log: Log) -> list[dict]:
    """Findings 1 and 3: train each model, score every kept checkpoint with both kinds of concept.

    Each scored checkpoint is appended to ``checkpoint_rows.jsonl`` in the output folder as it is
    measured; a rerun into the same folder reuses a model whose checkpoints are all there.
    """
    output_dir = getattr(cfg, "output_dir", None)
    partial = Path(output_dir) / "checkpoint_rows.jsonl" if output_dir else None
    settings = _grid_settings(dataset, cfg)
    done = [r for r in (read_runs(partial) if partial else []) if r.pop("grid_settings", None) == settings]
    rows = []
    for model_name in cfg.models:
        kept = {r["epoch"]: r for r in done if r["dataset"] == dataset and r["model"] == model_name}
        if set(kept) >= set(cfg.epochs):
            rows += [kept[e] for e in cfg.epochs]
            log(f"[{dataset}] {model_name}: {len(cfg.epochs)} checkpoints resumed from {partial}")
            continue
        started = time.perf_counter()
        checkpoints = train_with_checkpoints(
            model_name, data, cfg.epochs, seed=cfg.seed, device=cfg.device, batch_size=cfg.batch_size
        )
        trained = time.perf_counter() - started
        for epoch, model in checkpoints.items():
            t0 = time.perf_counter()
            figures = score_checkpoint(
                model,
                data,
                seed=cfg.seed,
                device=cfg.device,
                num_concepts=cfg.num_concepts,
                images_per_class=cfg.images_per_class,
                head_epochs=cfg.head_epochs,
            )
            row = {
                "dataset": dataset,
                "model": model_name,
                "parameters": int(sum(p.numel() for p in model.parameters())),
                "epoch": epoch,
                **figures,
                "score_seconds": round(time.perf_counter() - t0, 2),
            }
            rows.append(row)
            if partial is not None:
                with partial.open("a") as f:
                    f.write(json.dumps({**row, "grid_settings": settings}) + "\n")
            c = row["concepts"]
            log(
                f"[{dataset}] {model_name:<10} epoch {epoch:>2}  acc {row['accuracy']:.3f}  "
                + "  ".join(f"{k}: A0 {c[k]['probe_accuracy']:.3f} IIS {c[k]['iis']:.3f}" for k in c)
            )
        log(f"[{dataset}] {model_name}: trained in {trained:.0f} s")
    return rows


TRANSFER = "-to-"  # scenario "animals-to-digits": pre-trained on animals, fine-tuned on digits


def scenario_datasets(name: str) -> tuple[str, str]:
    """(source, target) of a finding-2 scenario: "digits" is (digits, digits), in domain."""
    source, _, target = name.partition(TRANSFER)
    return source, target or source


def default_scenarios(datasets) -> list[str]:
    """Each data set in domain, then each ordered pair of different data sets (transfer)."""
    return list(datasets) + [f"{a}{TRANSFER}{b}" for a in datasets for b in datasets if a != b]


def scenario_title(name: str) -> str:
    """A scenario as a report's heading names it."""
    source, target = scenario_datasets(name)
    return f"{target}, pre-trained on {target}" if source == target else f"{target}, pre-trained on {source}"


def finetune_settings(cfg: Any) -> list[tuple[float | None, float | None, tuple[float, ...]]]:
    """(iis_weight, head learning rate, ratios) of every fine-tuning run: the plain Trainer first
    (weight and head learning rate None), then the grid head learning rate x iis_weight."""
    ratios = tuple(cfg.iis_ratios)
    settings: list[tuple[float | None, float | None, tuple[float, ...]]] = [(None, None, ratios)]
    for lr in cfg.head_learning_rates:
        for weight in cfg.iis_weights:
            if (weight, lr, ratios) not in settings:
                settings.append((weight, lr, ratios))
    return settings


def _starting_model(data: Any, scenario: str, cfg: Any, log: Log, source_data: Any) -> tuple[Any, dict]:
    """The pre-trained model every seed of a transfer scenario starts from (None in domain, where
    each seed pre-trains its own), and a description of the pre-training."""
    source, target = scenario_datasets(scenario)
    info: dict[str, Any] = {"scenario": scenario, "source": source, "target": target}
    if source == target:
        info["pretraining"] = {"epochs": cfg.pretrain_epochs, "images": len(data["train"]), "seeds": "each"}
        return None, info
    if source_data is None:
        raise ValueError(f"scenario {scenario!r} needs the {source} data to pre-train on")
    t0 = time.perf_counter()
    pretrained = pretrain(source_data, cfg.seed, cfg.transfer_pretrain_epochs, device=cfg.device)
    info["pretraining"] = {
        "epochs": cfg.transfer_pretrain_epochs,
        "images": len(source_data["train"]),
        "seed": cfg.seed,
        "seconds": round(time.perf_counter() - t0, 1),
        "source_test_accuracy": classifier_accuracy(pretrained, source_data["test"], cfg.device),
        "source_test_images": len(source_data["test"]),
    }
    log(
        f"[{scenario}] pre-trained on {source}: test accuracy "
        f"{info['pretraining']['source_test_accuracy']:.4f} ({info['pretraining']['seconds']:.0f} s)"
    )
    return pretrained, info


def _finetuning_row(
    start: Any, data: Any, scenario: str, seed: int, setting: tuple, cfg: Any, log: Log
) -> dict:
    """One setting on one seed: fine-tune `start`, score the result with prototype concepts."""
    weight, head_lr, ratios = setting
    source, target = scenario_datasets(scenario)
    out = finetune_run(
        start,
        data,
        seed,
        cfg.finetune_epochs,
        weight,
        ratios,
        device=cfg.device,
        num_concepts=cfg.num_concepts,
        images_per_class=cfg.images_per_class,
        head_learning_rate=head_lr,
        head_weight_decay=cfg.head_weight_decay,
        evaluate_head=True,
    )
    figures = score_checkpoint(
        out["model"],
        data,
        seed=seed,
        device=cfg.device,
        kinds=("prototype",),
        num_concepts=cfg.num_concepts,
        images_per_class=cfg.images_per_class,
        head_epochs=cfg.head_epochs,
    )
    proto = figures["concepts"]["prototype"]
    head = out["head_accuracy"]
    log(
        f"[{scenario}] seed {seed} {setting_label(weight, ratios, head_lr):<36} acc {figures['accuracy']:.4f}  "
        f"IIS {proto['iis']:.4f}" + (f"  trained head {head[str(ratios[0])]:.4f}" if head else "")
    )
    return {
        "scenario": scenario,
        "source": source,
        "dataset": target,
        "seed": seed,
        "iis_weight": weight,
        "head_learning_rate": head_lr,
        "ratios": list(ratios),
        "seconds": round(out["seconds"], 2),
        "accuracy": figures["accuracy"],
        "iis": proto["iis"],
        "probe_accuracy": proto["probe_accuracy"],
        "interpretation_accuracy": proto["interpretation_accuracy"],
        "trained_head_accuracy": head,
    }


def run_finetuning(
    data: Any, scenario: str, cfg: Any, log: Log, source_data: Any = None
) -> tuple[list[dict], dict]:
    """Finding 2 in one scenario: per seed, one starting model fine-tuned by every setting.

    In domain (`source_data` None), each seed's starting model is pre-trained `cfg.pretrain_epochs`
    on `data` itself from that seed's init. In transfer, one model is pre-trained
    `cfg.transfer_pretrain_epochs` on `source_data` (seed `cfg.seed`), and each seed starts from it
    with a new classifier for `data`'s classes initialised with that seed. Returns the runs and a
    description of the starting models.
    """
    names = data["train"].features["label"].names
    pretrained, info = _starting_model(data, scenario, cfg, log, source_data)
    runs = []
    for seed in cfg.seeds:
        if pretrained is None:
            start = pretrain(data, seed, cfg.pretrain_epochs, device=cfg.device)
        else:
            start = with_new_classifier(pretrained, build_model("resnet-s", names, seed))
        runs += [_finetuning_row(start, data, scenario, seed, s, cfg, log) for s in finetune_settings(cfg)]
    return runs, info


def setting_label(
    weight: float | None, ratios: Sequence[float], head_learning_rate: float | None = None
) -> str:
    """How a report names a fine-tuning setting ("Trainer", "IISTrainer λ=0.5 head lr=0.01")."""
    if weight is None:
        return "Trainer"
    label = f"IISTrainer λ={weight:g}"
    if head_learning_rate is not None:
        label += f" head lr={head_learning_rate:g}"
    if tuple(ratios) != (0.9,):
        label += f" ρ={','.join(f'{r:g}' for r in ratios)}"
    return label
