"""`iis-hf score`: one model's IIS on one image dataset."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..version import __version__
from ._arguments import (
    HelpFormatter,
    UsageError,
    add_data_arguments,
    add_output_dir_argument,
    add_overwrite_argument,
    add_scoring_arguments,
    add_verbosity_arguments,
    config_from_flags,
    scoring_config,
    warn_if_launched_alone,
)
from ._preflight import preflight


def register(commands: argparse._SubParsersAction) -> None:
    score = commands.add_parser(
        "score",
        help="score a model's representation on an image dataset",
        description="Extract representations, build concepts, fit the interpretation "
        "heads, and write OUTPUT_DIR/iis.json, OUTPUT_DIR/iis_curve.png and OUTPUT_DIR/concept_bank/.",
        formatter_class=HelpFormatter,
    )
    score.add_argument("--model", required=True, help="Hub model id or local save_pretrained folder")
    score.add_argument(
        "--dataset",
        required=True,
        help="Hub dataset id, a save_to_disk folder, or a folder of images (imagefolder)",
    )
    add_output_dir_argument(score, required=True, help="folder for iis.json, iis_curve.png, concept_bank/")
    add_overwrite_argument(score)
    add_data_arguments(score)
    add_scoring_arguments(score)
    add_verbosity_arguments(score)
    score.set_defaults(func=run)


def scoring_splits(args: argparse.Namespace, seed: int):  # -> iis_hf.data.ScoringSplits
    """The train and eval images the data flags (`DataConfig`) of `score` and `compare` name."""
    from dataclasses import asdict

    from ..config import DataConfig
    from ..data import load_scoring_splits

    data = asdict(config_from_flags(DataConfig, args))
    data["config_name"] = data.pop("dataset_config")
    data["data_files"] = data_files(data["data_files"])
    return load_scoring_splits(args.dataset, seed=seed, **data)


def data_files(values: list[str] | None) -> list[str] | dict[str, list[str]] | None:
    """`--data-files` as datasets takes it: paths or globs, or {split: [globs]} where given as SPLIT=GLOB."""
    if not values:
        return None
    named = [v for v in values if "=" in v]
    if not named:
        return list(values)
    if len(named) != len(values):
        raise UsageError(
            "--data-files: give every value as SPLIT=GLOB, or none (mixed: " + " ".join(values) + ")"
        )
    splits: dict[str, list[str]] = {}
    for value in values:
        split, _, pattern = value.partition("=")
        if not split or not pattern:
            raise UsageError(f"--data-files {value!r}: expected SPLIT=GLOB, e.g. train=data/train-*.parquet")
        splits.setdefault(split, []).append(pattern)
    return splits


def run(args: argparse.Namespace) -> int:
    from ..outputs import is_output_entry, is_writing_process, output_folder_lock
    from ..preflight import check_output_folder

    started = time.time()
    warn_if_launched_alone("score")
    config = scoring_config(args)
    for flag, value in (("--model", args.model), ("--dataset", args.dataset)):
        if not str(value).strip():
            raise UsageError(f"{flag} is empty; give a Hub id or a local folder")
    inputs = {
        "--model": args.model,
        "--dataset": args.dataset,
        "--concept-bank": config.concepts.concept_bank,
    }
    inputs["--concept-file"] = config.concepts.concept_file
    preflight(args, config, inputs=inputs, models={"--model": args.model}, ours=is_output_entry)
    # One run at a time writes a folder: a second is refused here, before any work (under torchrun /
    # accelerate launch only rank 0 writes, and only it takes the lock).
    with output_folder_lock(args.output_dir, "--output-dir", "iis-hf score", enabled=is_writing_process()):
        # again under the lock: a run that finished meanwhile may have filled a new folder
        check_output_folder(args.output_dir, "--output-dir", overwrite=args.overwrite, ours=is_output_entry)
        return score_and_write(args, config, started)


def score_and_write(args: argparse.Namespace, config, started: float) -> int:
    """Everything after the checks: load, score, write (the caller holds the output folder's lock)."""
    from ..features import load_image_processor, load_vision_model
    from ..features.distributed import process_layout
    from ..pipeline import score_model
    from ..preflight import model_loading

    if config.concepts.is_text and config.concepts.concept_file:
        from ..concepts import read_concept_words

        read_concept_words(config.concepts.concept_file)  # a missing or empty file fails before any work
    with model_loading(args.model):  # a damaged model fails before the dataset is read
        model = load_vision_model(args.model)
        image_processor = load_image_processor(model)
    bank = None
    if config.concepts.concept_bank:
        from ..concepts import ConceptBank

        bank = ConceptBank.from_pretrained(config.concepts.concept_bank)  # a damaged bank too
    splits = scoring_splits(args, config.seed)
    result = score_model(
        model,
        splits.train,
        splits.eval,
        config,
        image_processor=image_processor,
        image_column=splits.image_column,
        label_column=splits.label_column,
        concept_bank=bank,
    )
    result.settings["data"].update(splits.settings())
    result.metadata.update(
        model=args.model,
        dataset=args.dataset,
        **({"concept_bank": config.concepts.concept_bank} if config.concepts.concept_bank else {}),
        iis_hf_version=__version__,
        elapsed_s=round(time.time() - started, 1),
    )
    if process_layout()[1] != 0:  # under torchrun / accelerate launch every rank scored; one writes
        return 0
    return write_and_report(args, result, len(splits.train), len(splits.eval))


def write_and_report(args: argparse.Namespace, result, num_train: int, num_eval: int) -> int:
    """Write iis.json, the curve and the bank (all or nothing), then print the table."""
    from ..outputs import write_scoring_outputs

    if result.iis is None and not args.allow_chance:
        raise UsageError(f"{result.undefined_reason} (nothing written; --allow-chance writes the outputs)")
    title = f"IIS of {args.model} on {args.dataset}"  # a figure must say which model, on which data
    write_scoring_outputs(
        args.output_dir, {"": result}, result.concept_bank, title=title, overwrite=args.overwrite
    )
    kind = "learned" if "learned_concepts" in result.metadata else result.concept_bank.kind
    print(
        f"IIS of {args.model} on {args.dataset} ({result.num_concepts} {kind} concepts, "
        f"{num_train} train / {num_eval} eval images)"
    )
    print(result.table())
    print(f"wrote {Path(args.output_dir) / 'iis.json'} and {Path(args.output_dir) / 'iis_curve.png'}")
    return 0
