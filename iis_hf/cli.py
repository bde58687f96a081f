"""The `iis-hf` command: score, explain, install-metric, demo, finetune.

Bad input ends with one line on stderr and exit code 2; outputs are assembled in a temporary
folder and moved into place only when everything succeeded.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .score import DEFAULT_SPARSITY_RATIOS
from .version import __version__

CONCEPT_KINDS = ("prototype-patches", "prototype-segments", "cluster", "text", "learned")
PRECISIONS = ("fp32", "bf16", "fp16")
EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """Raised for input the user can fix; reported as one line and exit code 2."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, NotADirectoryError, KeyError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"iis-hf {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"iis-hf {args.command}: interrupted; no output was written", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iis-hf",
        description="Measure the inherent interpretability (IIS) of Hugging Face vision models.",
    )
    parser.add_argument("--version", action="version", version=f"iis-hf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    score = commands.add_parser(
        "score",
        help="score a model's representation on an image dataset",
        description="Extract representations, build concepts, fit the interpretation "
        "heads, and write OUTPUT_DIR/iis.json and OUTPUT_DIR/iis_curve.png.",
    )
    score.add_argument("--model", required=True, help="Hub model id or local save_pretrained folder")
    score.add_argument(
        "--dataset",
        required=True,
        help="Hub dataset id, a save_to_disk folder, or a folder of images (imagefolder)",
    )
    score.add_argument(
        "--output-dir", required=True, help="folder for iis.json, iis_curve.png, concept_bank/"
    )
    add_scoring_arguments(score)
    score.set_defaults(func=cmd_score)

    explain = commands.add_parser(
        "explain",
        help="explain the interpretation head's prediction for one image by its concepts",
        description="Predict one image's class from the interpretation head of a model saved by "
        "IISModelForImageClassification / IISTrainer, print the concepts that contributed most "
        "(activation x class weight), and write a figure.",
    )
    explain.add_argument(
        "--model", required=True, help="folder or Hub id saved by IISModelForImageClassification / IISTrainer"
    )
    explain.add_argument("--image", required=True, help="the image file to explain")
    explain.add_argument("--output", required=True, help="the PNG figure to write")
    explain.add_argument(
        "--sparsity-ratio", type=float, default=None, help="which head (default: the model's last ratio)"
    )
    explain.add_argument("--top-k", type=int, default=8, help="how many concepts to show")
    explain.add_argument("--json", action="store_true", help="print the explanation as JSON instead of text")
    explain.set_defaults(func=cmd_explain)

    install = commands.add_parser(
        "install-metric", help="register the evaluate module so evaluate.load('iis') works offline"
    )
    install.add_argument(
        "--modules-cache", default=None, help="evaluate's modules cache (default: HF_MODULES_CACHE)"
    )
    install.set_defaults(func=cmd_install_metric)

    demo = commands.add_parser(
        "demo", help="train a small model on scikit-learn's digits and score it (offline)"
    )
    demo.add_argument("--output-dir", default="demo_output", help="where the model, iis.json and plot go")
    demo.add_argument(
        "--train-epochs", type=float, default=3.0, help="epochs of plain fine-tuning before scoring"
    )
    demo.add_argument("--epochs", type=int, default=30, help="epochs of interpretation-head training")
    demo.add_argument("--num-concepts", type=int, default=200)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(func=cmd_demo)

    # Everything after `finetune` goes to transformers' HfArgumentParser untouched: prefix_chars="+"
    # keeps argparse from reading `--do_train`, `--help`, ... as options of this subparser.
    finetune = commands.add_parser(
        "finetune",
        help="fine-tune an image classifier with IISTrainer (run_image_classification.py arguments)",
        description="Arguments as in transformers' run_image_classification.py, plus the --iis_* "
        "IISTrainingArguments; see `iis-hf finetune --help`.",
        add_help=False,
        prefix_chars="+",
    )
    finetune.add_argument(
        "finetune_args", nargs=argparse.REMAINDER, help="arguments, or one .json file holding them"
    )
    finetune.set_defaults(func=cmd_finetune)
    return parser


def add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--dataset-config", default=None, help="dataset configuration name (Hub datasets)")
    data.add_argument("--train-split", default="train")
    data.add_argument(
        "--eval-split",
        default=None,
        help="default: validation/test if present, else a stratified part of the train split",
    )
    data.add_argument(
        "--eval-fraction", type=float, default=0.2, help="eval part of train when no eval split"
    )
    data.add_argument("--image-column", default=None, help="default: detected (the datasets.Image column)")
    data.add_argument("--label-column", default=None, help="default: detected (the ClassLabel column)")
    data.add_argument("--max-train-samples", type=int, default=None)
    data.add_argument("--max-eval-samples", type=int, default=None)

    concepts = parser.add_argument_group("concepts")
    concepts.add_argument(
        "--concepts",
        choices=CONCEPT_KINDS,
        default="prototype-patches",
        help="prototype-patches (4x4 grid), prototype-segments (SLIC), cluster (k-means of patches), text "
        "(CLIP-scored words), learned (Gumbel selection from the patch library, trained with the heads)",
    )
    concepts.add_argument(
        "--concept-bank",
        default=None,
        help="use an existing ConceptBank (folder or Hub id) instead of building one",
    )
    concepts.add_argument("--num-concepts", type=int, default=200)
    concepts.add_argument("--images-per-class", type=int, default=10)
    concepts.add_argument(
        "--concept-file",
        default=None,
        help="--concepts text: one word per line (default: the starter vocabulary shipped with iis-hf)",
    )
    concepts.add_argument(
        "--clip-model",
        default=None,
        help="--concepts text: CLIP Hub id or folder with its processor (default: openai/clip-vit-base-patch32)",
    )
    concepts.add_argument(
        "--clip-cutoff", type=float, default=0.25, help="--concepts text: drop words CLIP scores <= this"
    )
    concepts.add_argument(
        "--interpretability-cutoff",
        type=float,
        default=0.45,
        help="--concepts text: drop words the backbone matches <= this on held-out images",
    )
    concepts.add_argument(
        "--projection-epochs",
        type=int,
        default=1000,
        help="--concepts text: Adam epochs of the projection fit (early-stopped on held-out images)",
    )

    heads = parser.add_argument_group("interpretation heads")
    heads.add_argument("--ratios", type=float, nargs="+", default=list(DEFAULT_SPARSITY_RATIOS))
    heads.add_argument("--epochs", type=int, default=30)
    heads.add_argument("--head-batch-size", type=int, default=1024)
    heads.add_argument(
        "--learning-rate",
        type=float,
        nargs="+",
        default=[1e-2],
        help="one value, or a grid (each ratio keeps its best)",
    )
    heads.add_argument(
        "--model-selection",
        choices=("eval", "holdout", "last"),
        default="eval",
        help="'eval': best eval epoch (published); 'holdout': chosen on part of train",
    )

    run = parser.add_argument_group("extraction")
    run.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    run.add_argument("--precision", choices=PRECISIONS, default="fp32")
    run.add_argument("--num-workers", type=int, default=0, help="DataLoader workers for image decoding")
    run.add_argument(
        "--layer", type=int, default=None, help="hidden_states index (default: final representation)"
    )
    run.add_argument("--pooling", choices=("default", "cls", "mean"), default="default")
    run.add_argument("--cache-dir", default=None, help="reuse extracted features across runs")
    run.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="images per feature-cache file, the unit an interrupted run resumes from (default: 4096)",
    )
    run.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")


# ---------------------------------------------------------------------------- score
def cmd_score(args: argparse.Namespace) -> int:
    from .backbones import load_image_processor, load_vision_model
    from .data import load_image_dataset, train_eval_splits
    from .features import detect_columns

    check_scoring_arguments(args)
    started = time.time()
    data = load_image_dataset(args.dataset, args.dataset_config)
    first = data if not hasattr(data, "keys") else data[next(iter(data.keys()))]
    image_column, label_column = detect_columns(first, args.image_column, args.label_column)
    if label_column is None:
        raise UsageError(
            f"dataset {args.dataset} has no label column (columns: {first.column_names}); pass --label-column"
        )
    train, evaluation, eval_source = train_eval_splits(
        data, args.train_split, args.eval_split, args.eval_fraction, label_column, args.seed
    )
    train, evaluation = (
        limit(train, args.max_train_samples, args.seed),
        limit(evaluation, args.max_eval_samples, args.seed),
    )
    model = load_vision_model(args.model)
    processor = load_image_processor(model)
    result, bank = run_scoring(model, processor, train, evaluation, image_column, label_column, args)
    result.metadata.update(
        {
            "model": args.model,
            "dataset": args.dataset,
            "dataset_config": args.dataset_config,
            "train_split": args.train_split,
            "eval_split": eval_source,
            "image_column": image_column,
            "label_column": label_column,
            "concepts": args.concept_bank or args.concepts,
            **text_concept_metadata(args),
            "layer": args.layer,
            "pooling": args.pooling,
            "precision": args.precision,
            "iis_hf_version": __version__,
            "elapsed_s": round(time.time() - started, 1),
        }
    )
    from .features import process_layout

    if process_layout()[1] != 0:  # under torchrun / accelerate launch every rank scored; one writes
        return 0
    write_outputs(args.output_dir, {"": result}, bank, title=f"IIS of {args.model}")
    print(
        f"IIS of {args.model} on {args.dataset} ({result.num_concepts} "
        f"{'learned' if 'learned_concepts' in result.metadata else bank.kind} concepts, "
        f"{len(train)} train / {len(evaluation)} eval images)"
    )
    print(result.table())
    print(f"wrote {Path(args.output_dir) / 'iis.json'} and {Path(args.output_dir) / 'iis_curve.png'}")
    return 0


def check_scoring_arguments(args: argparse.Namespace) -> None:
    from .score import validate_sparsity_ratios

    if len(args.ratios) < 2:
        raise UsageError("give at least 2 sparsity ratios to --ratios")
    validate_sparsity_ratios(args.ratios)
    positive = (
        "num_concepts",
        "images_per_class",
        "epochs",
        "head_batch_size",
        "batch_size",
        "projection_epochs",
        "chunk_size",
    )
    for name in positive:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if any(lr <= 0 for lr in args.learning_rate):
        raise UsageError("--learning-rate values must be > 0")
    if args.concepts != "text" and (args.concept_file or args.clip_model):
        raise UsageError("--concept-file and --clip-model apply to --concepts text only")
    if args.concepts == "text" and args.concept_file and not args.concept_bank:
        from .text_concepts import read_concept_words

        read_concept_words(args.concept_file)  # a missing or empty file fails before any extraction
    for name in ("max_train_samples", "max_eval_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")


def limit(dataset, max_samples: int | None, seed: int):
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(max_samples))


def run_scoring(model, processor, train, evaluation, image_column, label_column, args):
    """Features -> concepts -> heads -> IIS for one model; shared by `score` and `demo`."""
    from .features import extract_features
    from .score import compute_iis

    progress = not args.no_progress
    extract = dict(
        image_processor=processor,
        image_column=image_column,
        label_column=label_column,
        layer=args.layer,
        pooling=args.pooling,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        precision=args.precision,
        device=args.device,
        cache_dir=args.cache_dir,
        progress=progress,
    )
    if getattr(args, "chunk_size", None) is not None:
        extract["chunk_size"] = args.chunk_size
    train_features = extract_features(model, train, **extract)
    eval_features = extract_features(model, evaluation, **extract)
    for split, extracted in (("train", train_features), ("eval", eval_features)):
        bad = int((~extracted.features.isfinite().all(dim=1)).sum())
        if bad:  # say it here: the concepts, built from the same model, would fail less clearly
            raise UsageError(
                f"the model gives NaN or inf representations for {bad} of {len(extracted.features)} {split} "
                f"images; check its weights, or extract in fp32 (--precision {args.precision} was used)"
            )
    bank = build_concepts(
        model, processor, train, image_column, label_column, args, features=train_features.features
    )
    if bank.dim != train_features.features.shape[1]:
        raise UsageError(
            f"the concept bank has dimension {bank.dim} but the model gives "
            f"{train_features.features.shape[1]}-dimensional representations: "
            "the bank was built for another model or layer"
        )
    num_classes = (
        len(train.features[label_column].names) if hasattr(train.features[label_column], "names") else None
    )
    learned = None
    if getattr(args, "concepts", None) == "learned" and not args.concept_bank:
        from .learned_concepts import LearnedConcepts

        learned = LearnedConcepts(bank, args.num_concepts, seed=args.seed)
    result = compute_iis(
        train_features.features,
        train_features.labels,
        eval_features.features,
        eval_features.labels,
        learned if learned is not None else bank,
        sparsity_ratios=args.ratios,
        num_classes=num_classes,
        epochs=args.epochs,
        batch_size=args.head_batch_size,
        learning_rate=args.learning_rate if len(args.learning_rate) > 1 else args.learning_rate[0],
        model_selection=args.model_selection,
        seed=args.seed,
        device=args.device,
        progress=progress,
        return_heads=learned is not None,
    )
    if learned is not None:  # what each ratio's head chose from the library (saved as concept_bank/)
        chosen = result.heads.concepts.selected_indices().tolist()
        result.metadata["learned_concepts"] = {
            f"{ratio:g}": {"library_rows": rows, "names": [bank.names[r] for r in rows]}
            for ratio, rows in zip(result.sparsity_ratios, chosen)
        }
        result.heads = result.probe = None
    return result, bank


def build_concepts(model, processor, train, image_column, label_column, args, features=None):
    from .concepts import ConceptBank

    if args.concept_bank:
        return ConceptBank.from_pretrained(args.concept_bank)
    if args.concepts == "text":
        return build_text_concepts(model, processor, train, image_column, args, features)
    common = dict(
        image_processor=processor,
        image_column=image_column,
        label_column=label_column,
        images_per_class=args.images_per_class,
        batch_size=args.batch_size,
        precision=args.precision,
        device=args.device,
        seed=args.seed,
        progress=not args.no_progress,
    )
    if args.concepts == "cluster":
        library = ConceptBank.from_prototypes(model, train, parts="patches", **common)
        return ConceptBank.from_clusters(library, args.num_concepts, seed=args.seed)
    if args.concepts == "learned":  # the library the heads learn to select `num_concepts` from
        return ConceptBank.from_prototypes(model, train, parts="patches", **common)
    parts = "patches" if args.concepts == "prototype-patches" else "segments"
    return ConceptBank.from_prototypes(model, train, parts=parts, num_concepts=args.num_concepts, **common)


def build_text_concepts(model, processor, train, image_column, args, features=None):
    """Text concepts on the training images (the probe set), reusing their features when given."""
    from .concepts import ConceptBank
    from .text_concepts import DEFAULT_CLIP_MODEL, DEFAULT_CONCEPT_FILE

    return ConceptBank.from_text(
        getattr(args, "concept_file", None) or DEFAULT_CONCEPT_FILE,
        getattr(args, "clip_model", None) or DEFAULT_CLIP_MODEL,
        backbone=model,
        probe_dataset=train,
        features=features,
        image_processor=processor,
        image_column=image_column,
        layer=args.layer,
        pooling=args.pooling,
        clip_cutoff=getattr(args, "clip_cutoff", 0.25),
        interpretability_cutoff=getattr(args, "interpretability_cutoff", 0.45),
        epochs=getattr(args, "projection_epochs", 1000),
        extraction_batch_size=args.batch_size,
        precision=args.precision,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )


def text_concept_metadata(args: argparse.Namespace) -> dict:
    if args.concept_bank or args.concepts != "text":
        return {}
    from .text_concepts import DEFAULT_CLIP_MODEL, DEFAULT_CONCEPT_FILE

    return {
        "concept_file": args.concept_file or f"{DEFAULT_CONCEPT_FILE.name} (iis-hf starter vocabulary)",
        "clip_model": args.clip_model or DEFAULT_CLIP_MODEL,
        "clip_cutoff": args.clip_cutoff,
        "interpretability_cutoff": args.interpretability_cutoff,
    }


def write_outputs(output_dir, results: dict, bank, title: str, extra_files: dict | None = None) -> None:
    """iis.json, iis_curve.png and concept_bank/ appear together or not at all."""
    from .files import atomic_directory, write_json_atomic
    from .plotting import plot_iis_curves

    main_result = next(iter(results.values()))
    with atomic_directory(output_dir) as tmp:
        write_json_atomic(tmp / "iis.json", main_result.to_dict())
        for name, result in results.items():
            if name and result is not main_result:
                write_json_atomic(tmp / f"iis_{name}.json", result.to_dict())
        plot_iis_curves(results, tmp / "iis_curve.png", title=title)
        bank.save_pretrained(tmp / "concept_bank")
        for name, content in (extra_files or {}).items():
            (tmp / name).write_text(content)


# ---------------------------------------------------------------------------- explain
def cmd_explain(args: argparse.Namespace) -> int:
    import json

    from .explain import explain, open_image
    from .modeling import IISModelForImageClassification

    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    image = open_image(args.image)  # a bad image fails before the model is loaded
    model = IISModelForImageClassification.from_pretrained(args.model)
    explanation = explain(model, image, sparsity_ratio=args.sparsity_ratio, top_k=args.top_k)
    if args.json:
        report = json.dumps({**explanation.to_dict(), "model": args.model, "image": args.image}, indent=2)
    else:
        report = f"{args.image}: {explanation.summary()}\nwrote {args.output}"
    explanation.plot(args.output)  # last: the figure appears only when everything else succeeded
    print(report)
    return 0


# ---------------------------------------------------------------------------- install-metric
def cmd_install_metric(args: argparse.Namespace) -> int:
    from .metric_install import install_metric

    path = install_metric(args.modules_cache)
    print(f"installed the IIS metric at {path}")
    print(
        "use it offline from any folder: HF_EVALUATE_OFFLINE=1 python -c \"import evaluate; evaluate.load('iis')\""
    )
    return 0


# ---------------------------------------------------------------------------- finetune
def cmd_finetune(args: argparse.Namespace) -> int:
    from .finetune import main as finetune_main

    finetune_main(args.finetune_args, prog="iis-hf finetune")
    return 0


# ---------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from .data import load_digits_dataset
    from .demo import demo_image_processor, demo_model, train_demo_model

    started = time.time()
    output_dir = Path(args.output_dir)
    progress = not args.no_progress
    data = load_digits_dataset()
    print(
        f"[1/3] scikit-learn digits: {len(data['train'])} train / {len(data['test'])} test images", flush=True
    )
    random_model = demo_model(10, args.seed).eval()
    print(
        f"[2/3] training a {sum(p.numel() for p in random_model.parameters()) / 1e6:.2f}M-parameter ResNet "
        f"for {args.train_epochs:g} epochs",
        flush=True,
    )
    trained_model, _processor = train_demo_model(
        data, output_dir / "model", args.train_epochs, args.seed, progress
    )
    print("[3/3] scoring the random-init and the trained model", flush=True)
    scoring = argparse.Namespace(
        layer=None,
        pooling="default",
        batch_size=128,
        num_workers=0,
        precision="fp32",
        device=None,
        cache_dir=None,
        no_progress=args.no_progress,
        concepts="prototype-patches",
        concept_bank=None,
        num_concepts=args.num_concepts,
        images_per_class=10,
        ratios=list(DEFAULT_SPARSITY_RATIOS),
        epochs=args.epochs,
        head_batch_size=1024,
        learning_rate=[1e-2],
        model_selection="eval",
        seed=args.seed,
    )
    results, banks = {}, {}
    for name, model in (("random-init", random_model), ("trained", trained_model)):
        results[name], banks[name] = run_scoring(
            model, demo_image_processor(), data["train"], data["test"], "image", "label", scoring
        )
        results[name].metadata.update({"model": f"demo ResNet ({name})", "dataset": "scikit-learn digits"})
    elapsed = time.time() - started
    results["trained"].metadata["elapsed_s"] = round(elapsed, 1)
    ordered = {"trained": results["trained"], "random-init": results["random-init"]}
    write_outputs(output_dir, ordered, banks["trained"], title="IIS on scikit-learn digits (demo)")
    print()
    print(comparison_table(ordered))
    print(
        f"\ntotal time {elapsed:.0f} s; wrote {output_dir}/iis.json, iis_random-init.json, iis_curve.png, "
        f"concept_bank/ and model/"
    )
    return 0


def comparison_table(results: dict) -> str:
    names = list(results)
    first = results[names[0]]
    lines = [f"{'sparsity':>9}" + "".join(f"  {n:>12}" for n in names)]
    for j, ratio in enumerate(first.sparsity_ratios):
        lines.append(f"{ratio:>9.2f}" + "".join(f"  {results[n].accuracies[j]:>12.4f}" for n in names))
    lines.append(f"{'A0':>9}" + "".join(f"  {results[n].standard_accuracy:>12.4f}" for n in names))
    lines.append(f"{'IIS':>9}" + "".join(f"  {results[n].iis:>12.4f}" for n in names))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
