"""The `iis-hf` command: score, demo, explain, finetune, app, install-metric.

The command line only parses: each subcommand maps its flags onto the settings of
`iis_hf.config` and calls the library (`iis_hf.pipeline` for every score). Bad input ends with one
line on stderr and exit code 2; outputs are assembled in a temporary folder and moved into place
only when everything succeeded. Heavy libraries are imported inside the commands, so `iis-hf
--help` starts fast.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from .config import (
    CONCEPT_KINDS,
    DEFAULT_CLIP_CUTOFF,
    DEFAULT_CLIP_MODEL,
    DEFAULT_INTERPRETABILITY_CUTOFF,
    DEFAULT_SPARSITY_RATIOS,
    EXTRACTION_PRECISIONS,
    MODEL_SELECTIONS,
    POOLINGS,
    PROTOCOLS,
    ConceptsConfig,
    ExtractionConfig,
    HeadsConfig,
    ScoringConfig,
)
from .version import __version__

EXIT_BAD_INPUT = 2
HELP_FORMAT = argparse.ArgumentDefaultsHelpFormatter


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


# ---------------------------------------------------------------------------- the parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iis-hf",
        description="Measure the inherent interpretability (IIS) of Hugging Face vision models.",
    )
    parser.add_argument("--version", action="version", version=f"iis-hf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_score_command(commands)
    add_explain_command(commands)
    add_install_metric_command(commands)
    add_demo_command(commands)
    add_finetune_command(commands)
    add_app_command(commands)
    return parser


def add_score_command(commands) -> None:
    score = commands.add_parser(
        "score",
        help="score a model's representation on an image dataset",
        description="Extract representations, build concepts, fit the interpretation "
        "heads, and write OUTPUT_DIR/iis.json, OUTPUT_DIR/iis_curve.png and OUTPUT_DIR/concept_bank/.",
        formatter_class=HELP_FORMAT,
    )
    score.add_argument("--model", required=True, help="Hub model id or local save_pretrained folder")
    score.add_argument(
        "--dataset",
        required=True,
        help="Hub dataset id, a save_to_disk folder, or a folder of images (imagefolder)",
    )
    add_output_dir_argument(score, required=True, help="folder for iis.json, iis_curve.png, concept_bank/")
    add_data_arguments(score)
    add_scoring_arguments(score)
    score.set_defaults(func=cmd_score)


def add_output_dir_argument(parser, *, required: bool, help: str, default: str | None = None) -> None:
    """`--output-dir` on every subcommand (`--output_dir`, the spelling of `finetune`, works too)."""
    parser.add_argument(
        "--output-dir", "--output_dir", dest="output_dir", required=required, default=default, help=help
    )


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--dataset-config", default=None, help="dataset configuration name (Hub datasets)")
    data.add_argument("--train-split", default="train", help="the split the heads and concepts are fitted on")
    data.add_argument(
        "--eval-split",
        default=None,
        help="the split IIS is measured on (default: validation/test if present, else a stratified part of "
        "the train split)",
    )
    data.add_argument(
        "--eval-fraction", type=float, default=0.2, help="eval part of train when there is no eval split"
    )
    data.add_argument("--image-column", default=None, help="default: detected (the datasets.Image column)")
    data.add_argument("--label-column", default=None, help="default: detected (the ClassLabel column)")
    data.add_argument("--max-train-samples", type=int, default=None, help="a random subset (seeded) of train")
    data.add_argument("--max-eval-samples", type=int, default=None, help="a random subset (seeded) of eval")


class _DeprecatedAlias(argparse.Action):
    """An option stored under its new name, with a FutureWarning when its old spelling is used."""

    def __init__(self, *args, new: str, old: str, **kwargs):
        self.new, self.old = new, old
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string == self.old:
            warnings.warn(f"{self.old} is deprecated; use {self.new}", FutureWarning, stacklevel=2)
        setattr(namespace, self.dest, values)


def add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a `ScoringConfig`, grouped as its parts (defaults from `iis_hf.config`)."""
    concepts = parser.add_argument_group("concepts")
    concepts.add_argument(
        "--concepts",
        choices=CONCEPT_KINDS,
        default=ConceptsConfig.kind,
        help="prototype-patches (4x4 grid), prototype-segments (SLIC), cluster (k-means of patches), text "
        "(CLIP-scored words), learned (Gumbel selection from the patch library, trained with the heads)",
    )
    concepts.add_argument(
        "--concept-bank",
        default=None,
        help="use an existing ConceptBank (folder or Hub id) instead of building one",
    )
    concepts.add_argument(
        "--num-concepts", type=int, default=ConceptsConfig.num_concepts, help="C, the number of concepts"
    )
    concepts.add_argument(
        "--images-per-class",
        type=int,
        default=ConceptsConfig.images_per_class,
        help="images per class the prototypes come from",
    )
    concepts.add_argument(
        "--concept-file",
        default=None,
        help="--concepts text: one word per line (default: the starter vocabulary shipped with iis-hf)",
    )
    concepts.add_argument(
        "--clip-model",
        default=None,
        help=f"--concepts text: CLIP Hub id or folder with its processor (default: {DEFAULT_CLIP_MODEL})",
    )
    concepts.add_argument(
        "--clip-cutoff",
        type=float,
        default=DEFAULT_CLIP_CUTOFF,
        help="--concepts text: drop words CLIP scores <= this",
    )
    concepts.add_argument(
        "--interpretability-cutoff",
        type=float,
        default=DEFAULT_INTERPRETABILITY_CUTOFF,
        help="--concepts text: drop words the backbone matches <= this on held-out images",
    )
    concepts.add_argument(
        "--projection-epochs",
        type=int,
        default=ConceptsConfig.projection_epochs,
        help="--concepts text: Adam epochs of the projection fit (early-stopped on held-out images)",
    )

    heads = parser.add_argument_group("interpretation heads")
    heads.add_argument(
        "--sparsity-ratios",
        "--ratios",
        dest="sparsity_ratios",
        type=float,
        nargs="+",
        default=list(DEFAULT_SPARSITY_RATIOS),
        action=_DeprecatedAlias,
        new="--sparsity-ratios",
        old="--ratios",
        help="the ratio grid rho (fractions of concepts dropped); --ratios is a deprecated spelling",
    )
    heads.add_argument(
        "--epochs", type=int, default=HeadsConfig.epochs, help="epochs of head and probe training"
    )
    heads.add_argument(
        "--head-batch-size", type=int, default=HeadsConfig.batch_size, help="rows per head-training step"
    )
    heads.add_argument(
        "--learning-rate",
        type=float,
        nargs="+",
        default=[HeadsConfig.learning_rate],
        help="Adam learning rate of the heads: one value, or a grid (each ratio keeps its best)",
    )
    heads.add_argument(
        "--model-selection",
        choices=MODEL_SELECTIONS,
        default=HeadsConfig.model_selection,
        help="'eval': best eval epoch (published); 'holdout': chosen on part of train; 'last': the last epoch",
    )
    heads.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=HeadsConfig.protocol,
        help="'converged': a standardised probe trained to convergence (iis-hf's default); 'paper': the "
        "published code's probe, initialisation and threshold gradient (comparable with the paper's tables)",
    )
    heads.add_argument(
        "--seeds",
        type=int,
        default=HeadsConfig.num_seeds,
        help="train probe and heads with this many seeds; IIS is their mean, reported with its sd",
    )
    heads.add_argument(
        "--allow-chance",
        action="store_true",
        help="write the outputs (with IIS null) even when A0 is not above chance, instead of exit 2",
    )

    run = parser.add_argument_group("extraction")
    run.add_argument(
        "--batch-size", type=int, default=ExtractionConfig.batch_size, help="images per forward pass"
    )
    run.add_argument(
        "--precision",
        choices=EXTRACTION_PRECISIONS,
        default=ExtractionConfig.precision,
        help="autocast of the backbone",
    )
    run.add_argument("--num-workers", type=int, default=0, help="DataLoader workers for image decoding")
    run.add_argument(
        "--layer", type=int, default=None, help="hidden_states index (default: final representation)"
    )
    run.add_argument(
        "--pooling", choices=POOLINGS, default="default", help="how a hidden state becomes one vector"
    )
    run.add_argument("--cache-dir", default=None, help="reuse extracted features across runs")
    run.add_argument(
        "--chunk-size",
        type=int,
        default=ExtractionConfig.chunk_size,
        help="images per feature-cache file, the unit an interrupted run resumes from",
    )
    run.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    run.add_argument("--seed", type=int, default=0, help="seeds data subsets, prototypes and head training")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")


# Which flag sets which setting, so a setting's error names the flag the user typed.
FLAGS = {
    "ExtractionConfig.layer": "--layer",
    "ExtractionConfig.pooling": "--pooling",
    "ExtractionConfig.batch_size": "--batch-size",
    "ExtractionConfig.precision": "--precision",
    "ExtractionConfig.num_workers": "--num-workers",
    "ExtractionConfig.chunk_size": "--chunk-size",
    "ConceptsConfig.kind": "--concepts",
    "ConceptsConfig.num_concepts": "--num-concepts",
    "ConceptsConfig.images_per_class": "--images-per-class",
    "ConceptsConfig.clip_cutoff": "--clip-cutoff",
    "ConceptsConfig.interpretability_cutoff": "--interpretability-cutoff",
    "ConceptsConfig.projection_epochs": "--projection-epochs",
    "HeadsConfig.epochs": "--epochs",
    "HeadsConfig.batch_size": "--head-batch-size",
    "HeadsConfig.learning_rate": "--learning-rate",
    "HeadsConfig.model_selection": "--model-selection",
    "HeadsConfig.protocol": "--protocol",
    "HeadsConfig.num_seeds": "--seeds",
    "ScoringConfig.seed": "--seed",
}


def scoring_config(args: argparse.Namespace) -> ScoringConfig:
    """The command line's flags as a `ScoringConfig` (every value checked here, before any work)."""
    if args.concepts != "text" and (args.concept_file or args.clip_model):
        raise UsageError("--concept-file and --clip-model apply to --concepts text only")
    try:
        return _scoring_config(args)
    except ValueError as err:
        message = str(err)
        for setting, flag in FLAGS.items():
            if message.startswith(setting + " "):
                raise UsageError(flag + message[len(setting) :]) from err
        raise


def _scoring_config(args: argparse.Namespace) -> ScoringConfig:
    return ScoringConfig(
        extraction=ExtractionConfig(
            layer=args.layer,
            pooling=args.pooling,
            batch_size=args.batch_size,
            precision=args.precision,
            num_workers=args.num_workers,
            chunk_size=args.chunk_size,
            cache_dir=args.cache_dir,
        ),
        concepts=ConceptsConfig(
            kind=args.concepts,
            num_concepts=args.num_concepts,
            images_per_class=args.images_per_class,
            bank=args.concept_bank,
            concept_file=args.concept_file,
            clip_model=args.clip_model or DEFAULT_CLIP_MODEL,
            clip_cutoff=args.clip_cutoff,
            interpretability_cutoff=args.interpretability_cutoff,
            projection_epochs=args.projection_epochs,
        ),
        heads=HeadsConfig(
            sparsity_ratios=args.sparsity_ratios,
            epochs=args.epochs,
            batch_size=args.head_batch_size,
            learning_rate=args.learning_rate,
            model_selection=args.model_selection,
            protocol=args.protocol,
            num_seeds=args.seeds,
        ),
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )


# ---------------------------------------------------------------------------- score
def cmd_score(args: argparse.Namespace) -> int:
    from .data import load_scoring_splits
    from .devices import resolve_device
    from .features import load_image_processor, load_vision_model
    from .features.distributed import process_layout
    from .outputs import write_scoring_outputs
    from .pipeline import score_model

    started = time.time()
    config = scoring_config(args)
    resolve_device(config.device)
    if config.concepts.is_text and config.concepts.concept_file:
        from .concepts import read_concept_words

        read_concept_words(config.concepts.concept_file)  # a missing or empty file fails before any work
    for name in ("max_train_samples", "max_eval_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    splits = load_scoring_splits(
        args.dataset,
        config_name=args.dataset_config,
        train_split=args.train_split,
        eval_split=args.eval_split,
        eval_fraction=args.eval_fraction,
        image_column=args.image_column,
        label_column=args.label_column,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        seed=config.seed,
    )
    model = load_vision_model(args.model)
    result = score_model(
        model,
        splits.train,
        splits.eval,
        config,
        image_processor=load_image_processor(model),
        image_column=splits.image_column,
        label_column=splits.label_column,
    )
    result.settings["data"].update(splits.settings())
    result.metadata.update(
        model=args.model,
        dataset=args.dataset,
        **({"concept_bank": args.concept_bank} if args.concept_bank else {}),
        iis_hf_version=__version__,
        elapsed_s=round(time.time() - started, 1),
    )
    if process_layout()[1] != 0:  # under torchrun / accelerate launch every rank scored; one writes
        return 0
    if result.iis is None and not args.allow_chance:
        raise UsageError(f"{result.undefined_reason} (nothing written; --allow-chance writes the outputs)")
    write_scoring_outputs(args.output_dir, {"": result}, result.concept_bank, title=f"IIS of {args.model}")
    kind = "learned" if "learned_concepts" in result.metadata else result.concept_bank.kind
    print(
        f"IIS of {args.model} on {args.dataset} ({result.num_concepts} {kind} concepts, "
        f"{len(splits.train)} train / {len(splits.eval)} eval images)"
    )
    print(result.table())
    print(f"wrote {Path(args.output_dir) / 'iis.json'} and {Path(args.output_dir) / 'iis_curve.png'}")
    return 0


# ---------------------------------------------------------------------------- explain
def add_explain_command(commands) -> None:
    explain = commands.add_parser(
        "explain",
        help="explain the interpretation head's prediction for one image by its concepts",
        description="Predict one image's class from the interpretation head of a model saved by "
        "IISModelForImageClassification / IISTrainer, print the concepts that contributed most "
        "(activation x class weight), and write a figure.",
        formatter_class=HELP_FORMAT,
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


def cmd_explain(args: argparse.Namespace) -> int:
    import json

    from .explain import explain
    from .images import load_image
    from .modeling import IISModelForImageClassification

    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    image = load_image(args.image)  # a bad image fails before the model is loaded
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
def add_install_metric_command(commands) -> None:
    install = commands.add_parser(
        "install-metric",
        help="register the evaluate module so evaluate.load('iis') works offline",
        formatter_class=HELP_FORMAT,
    )
    install.add_argument(
        "--modules-cache", default=None, help="evaluate's modules cache (default: HF_MODULES_CACHE)"
    )
    install.set_defaults(func=cmd_install_metric)


def cmd_install_metric(args: argparse.Namespace) -> int:
    from .metric_install import install_metric

    path = install_metric(args.modules_cache)
    print(f"installed the IIS metric at {path}")
    print(
        "use it offline from any folder: HF_EVALUATE_OFFLINE=1 python -c \"import evaluate; evaluate.load('iis')\""
    )
    return 0


# ---------------------------------------------------------------------------- demo
def add_demo_command(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="train a small model on scikit-learn's digits and score it (offline)",
        formatter_class=HELP_FORMAT,
    )
    add_output_dir_argument(
        demo, required=False, default="demo_output", help="where the model, iis.json and plot go"
    )
    demo.add_argument(
        "--train-epochs", type=float, default=3.0, help="epochs of plain fine-tuning before scoring"
    )
    demo.add_argument(
        "--epochs", type=int, default=HeadsConfig.epochs, help="epochs of interpretation-head training"
    )
    demo.add_argument(
        "--num-concepts", type=int, default=ConceptsConfig.num_concepts, help="C, the number of concepts"
    )
    demo.add_argument("--seed", type=int, default=0, help="seeds the model, its training and the scoring")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .outputs import comparison_table

    started = time.time()
    config = ScoringConfig(
        extraction=ExtractionConfig(batch_size=128),
        concepts=ConceptsConfig(num_concepts=args.num_concepts),
        heads=HeadsConfig(epochs=args.epochs),
        seed=args.seed,
        progress=not args.no_progress,
    )
    if not args.train_epochs > 0:
        raise UsageError(f"--train-epochs must be a number > 0, got {args.train_epochs}")
    results = run_demo(args.output_dir, args.train_epochs, config, log=lambda line: print(line, flush=True))
    print()
    print(comparison_table(results))
    print(
        f"\ntotal time {time.time() - started:.0f} s; wrote {args.output_dir}/iis.json, iis_random-init.json, "
        "iis_curve.png, concept_bank/ and model/"
    )
    return 0


# ---------------------------------------------------------------------------- finetune
def add_finetune_command(commands) -> None:
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


def cmd_finetune(args: argparse.Namespace) -> int:
    from .training.finetune import main as finetune_main

    finetune_main(args.finetune_args, prog="iis-hf finetune")
    return 0


# ---------------------------------------------------------------------------- app
def add_app_command(commands) -> None:
    app = commands.add_parser(
        "app",
        help="a web app: upload an image, see the prediction from concepts and its explanation",
        description='Serve the Gradio app of iis_hf.app (needs `pip install "iis-hf[app]"`); '
        "see `iis-hf app --help`.",
        add_help=False,
        prefix_chars="+",
    )
    app.add_argument("app_args", nargs=argparse.REMAINDER, help="--model, --host, --port, --share")
    app.set_defaults(func=cmd_app)


def cmd_app(args: argparse.Namespace) -> int:
    from .app import main as app_main

    return app_main(args.app_args)


if __name__ == "__main__":
    sys.exit(main())
