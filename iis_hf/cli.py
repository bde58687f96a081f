"""The `iis-hf` command: score, compare, demo, explain, finetune, app, install-metric.

The command line only parses: each subcommand maps its flags onto the settings of
`iis_hf.config` and calls the library (`iis_hf.pipeline` for every score). Bad input ends with one
line on stderr and exit code 2; outputs are assembled in a temporary folder and moved into place
only when everything succeeded. Heavy libraries are imported inside the commands, so `iis-hf
--help` starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
import traceback
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
    PREPROCESSINGS,
    PROTOCOLS,
    ConceptsConfig,
    ExtractionConfig,
    HeadsConfig,
    ScoringConfig,
)
from .errors import IISError, first_line
from .progress import bars_enabled, verbosity
from .version import __version__

EXIT_BAD_INPUT = 2


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default ("(default: 30)"), except where the help already says
    what the default is, and for on/off switches and options without a value by default (their help
    says what happens without them). `tests/test_cli_help.py` holds every option to this."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "default" in text.lower()
            or any(action.default is value for value in (None, False, argparse.SUPPRESS))  # `0 in (False,)`
            or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        ):
            return text
        return super()._get_help_string(action)


HELP_FORMAT = HelpFormatter


class UsageError(IISError):
    """Input the user can fix, found by the command line itself; reported as one line and exit code 2."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    written_before = len(committed_outputs())
    try:
        level = getattr(args, "verbosity", None) or args.global_verbosity or "normal"
        with verbosity(level), warnings_in_flags(args.command):
            return args.func(args) or 0
    except KeyboardInterrupt as interrupt:
        written = committed_outputs()[written_before:]
        outcome = f"{written[-1]} was written whole" if written else "no output was written"
        outcome = str(interrupt) or outcome  # a command that knows what it left says so (finetune)
        print(f"iis-hf {args.command}: interrupted; {outcome}", file=sys.stderr)
        return 130
    except Exception as err:  # the error boundary: every expected failure is one line and exit code 2
        message = error_message(flag_error(err, args.command) if isinstance(err, IISError) else err)
        if message is None:
            raise
        if args.debug:
            traceback.print_exc()
        print(f"iis-hf {args.command}: error: {in_flags(message, args.command)}", file=sys.stderr)
        return EXIT_BAD_INPUT


def committed_outputs() -> list:
    """The output folders put in place so far (`iis_hf.files.COMMITTED`), without importing `files`
    (and torch with it) for a command that never wrote one: `finetune`'s argument checks stay fast."""
    files = sys.modules.get(f"{__package__}.files")
    return list(files.COMMITTED) if files is not None else []


def expected_errors() -> tuple[type[BaseException], ...]:
    """Failures of bad input or of the machine: ValueError (IISError, and what the library and transformers
    raise for bad input), a damaged safetensors file, input nested too deeply. An OSError is one
    only when it names a file or a system error (`error_message`). Anything else, KeyError, TypeError and
    AttributeError included, is a bug and keeps its traceback."""
    from safetensors import SafetensorError  # imported here: `iis-hf --help` loads no more than it needs

    return (ValueError, SafetensorError, RecursionError)


def error_message(err: BaseException) -> str | None:
    """The one line an expected failure is reported with (None: not an expected failure)."""
    if isinstance(err, OSError):
        if err.errno is None and err.filename is None:
            return None  # no file and no system error to name: not the user's to fix
        from .files import describe_os_error

        return describe_os_error(err)
    if not isinstance(err, expected_errors()):
        return None
    if isinstance(err, RecursionError):
        return "an input is nested too deeply to be read (a damaged or hostile JSON file?); re-create it"
    return first_line(err)


# ---------------------------------------------------------------------------- the parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iis-hf",
        description="Measure the inherent interpretability (IIS) of Hugging Face vision models.",
    )
    parser.add_argument("--version", action="version", version=f"iis-hf {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show its full traceback above the one-line message"
    )
    add_verbosity_arguments(parser, dest="global_verbosity")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_score_command(commands)
    add_compare_command(commands)
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
    add_overwrite_argument(score)
    add_data_arguments(score)
    add_scoring_arguments(score)
    add_verbosity_arguments(score)
    score.set_defaults(func=cmd_score)


def add_verbosity_arguments(parser, dest: str = "verbosity") -> None:
    """`--quiet` / `--verbose` (`iis_hf.progress`): on every subcommand, and before it for all of them
    (``iis-hf --quiet finetune ...``)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q",
        "--quiet",
        dest=dest,
        action="store_const",
        const="quiet",
        help="no progress bars (iis-hf's, the Hub's, datasets', Trainer's) and only errors from the Hugging "
        "Face libraries (default: bars shown; HF_HUB_DISABLE_PROGRESS_BARS=1 also hides them)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        dest=dest,
        action="store_const",
        const="verbose",
        help="info logs from transformers, datasets and evaluate (default: their own levels)",
    )


def add_output_dir_argument(parser, *, required: bool, help: str, default: str | None = None) -> None:
    """`--output-dir` on every subcommand (`--output_dir`, the spelling of `finetune`, works too)."""
    parser.add_argument(
        "--output-dir", "--output_dir", dest="output_dir", required=required, default=default, help=help
    )


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset-config", default=None, help="dataset configuration name (Hub datasets; default: none)"
    )
    data.add_argument("--train-split", default="train", help="the split the heads and concepts are fitted on")
    data.add_argument(
        "--eval-split",
        default=None,
        help="the split IIS is measured on (default: validation/test if present, else a stratified part of "
        "the train split)",
    )
    data.add_argument(
        "--allow-same-split",
        action="store_true",
        help="let --eval-split name the --train-split (the heads are then measured on the images they were "
        "fitted on; recorded in iis.json); without it that is refused",
    )
    data.add_argument(
        "--eval-fraction", type=float, default=0.2, help="eval part of train when there is no eval split"
    )
    data.add_argument("--image-column", default=None, help="default: detected (the datasets.Image column)")
    data.add_argument("--label-column", default=None, help="default: detected (the ClassLabel column)")
    data.add_argument(
        "--max-train-samples", type=int, default=None, help="a random subset (seeded) of train (default: all)"
    )
    data.add_argument(
        "--max-eval-samples", type=int, default=None, help="a random subset (seeded) of eval (default: all)"
    )


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
        help="use an existing ConceptBank (folder or Hub id) instead of building one (default: build one)",
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
    add_protocol_arguments(heads)
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
    run.add_argument(
        "--preprocessing", choices=PREPROCESSINGS, default=ExtractionConfig.preprocessing,
        help="'tensor': resize/crop/normalise batches on the model's device (processors it covers)",
    )  # fmt: skip
    run.add_argument("--num-workers", type=int, default=0, help="DataLoader workers for image decoding")
    run.add_argument(
        "--layer", type=int, default=None, help="hidden_states index (default: final representation)"
    )
    run.add_argument(
        "--pooling", choices=POOLINGS, default="default", help="how a hidden state becomes one vector"
    )
    run.add_argument(
        "--cache-dir", default=None, help="reuse extracted features across runs (default: no cache)"
    )
    run.add_argument(
        "--chunk-size",
        type=int,
        default=ExtractionConfig.chunk_size,
        help="images per feature-cache file, the unit an interrupted run resumes from",
    )
    run.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    run.add_argument("--seed", type=int, default=0, help="seeds data subsets, prototypes and head training")
    run.add_argument(
        "--no-progress", action="store_true", help="hide iis-hf's progress bars (--quiet: all bars)"
    )


def add_protocol_arguments(parser) -> None:
    """`--protocol` and `--seeds`: how probe and heads are trained (`score`, `compare`, `demo`)."""
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=HeadsConfig.protocol,
        help="'converged': a standardised probe trained to convergence (iis-hf's default); 'paper': the "
        "published code's probe, initialisation and threshold gradient (comparable with the paper's tables)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=HeadsConfig.num_seeds,
        help="train probe and heads with this many seeds; IIS is their mean, reported with its sd",
    )


# The settings whose flag's dest is not the field's name (for the others it is: `--epochs` sets
# `epochs`); a setting no flag of the command sets keeps the config's own message.
FLAG_DESTS = {
    "ConceptsConfig.kind": "concepts",
    "ConceptsConfig.bank": "concept_bank",
    "HeadsConfig.batch_size": "head_batch_size",
    "HeadsConfig.num_seeds": "seeds",
    "HeadsConfig.precision": None,  # no flag; `--precision` is the extraction's
}


def scoring_config(args: argparse.Namespace) -> ScoringConfig:
    """The command line's flags as a `ScoringConfig` (every value checked here, before any work)."""
    if args.concepts != "text" and (args.concept_file or args.clip_model):
        raise UsageError("--concept-file and --clip-model apply to --concepts text only")
    try:
        return _scoring_config(args)
    except IISError as err:
        raise flag_error(err, args.command) from err


def flag_error(err: IISError, command: str) -> ValueError:
    """A setting's error in the spelling the user typed: the flag whose argparse `dest` is the error's
    field. ``HeadsConfig.epochs must be ...`` becomes ``--epochs must be ...``, and a message that does
    not name its setting is prefixed with the flag (``--sparsity-ratios: sparsity ratio 1.5 ...``)."""
    setting = err.setting
    flag = command_flag(command, FLAG_DESTS.get(setting, err.field)) if setting else None
    message = str(err)
    if flag is None or message.startswith(flag):  # no flag, or already in the command line's spelling
        return err
    if message.startswith(setting + " "):
        return UsageError(flag + message[len(setting) :], field=err.field, owner=err.owner)
    return UsageError(f"{flag}: {message}", field=err.field, owner=err.owner)


def command_flag(command: str, dest: str | None) -> str | None:
    """The long option of `command` that stores into `dest` (its first spelling), or None."""
    if dest is None:
        return None
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for action in subcommands.choices[command]._actions:
        if action.dest == dest and action.option_strings:
            return next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
    return None


# A message names a setting the user can change by its Python keyword and "=", standing alone
# ("lower interpretability_cutoff=", "(epochs=)"): the Python API's spelling. On the command line
# `in_flags` spells each as the command's flag; `name=value` (a repr, an example call) stays as it is.
KEYWORD = re.compile(r"(?<![\w.-])([a-z][a-z0-9_]*)=(?=$|[\s),;:./])")
KEYWORD_DESTS = {"num_seeds": "seeds", "kind": "concepts", "bank": "concept_bank"}  # dest != keyword
SAID_TWICE = re.compile(r"(--[\w-]+) \(\1\)")


def in_flags(text: str, command: str) -> str:
    """`text` with the keywords it names (``epochs=``) as `command`'s flags (``--epochs``): the
    argparse flags of score, compare and demo, the HfArgumentParser ones of finetune
    (`iis_hf.training.finetune.keyword_flag`). A keyword the command has no flag for stays."""
    if "=" not in text:
        return text
    spelled = KEYWORD.sub(lambda match: keyword_flag(command, match.group(1)) or match.group(0), text)
    return SAID_TWICE.sub(r"\1", spelled)  # "--cache-dir (cache_dir=)" gave both spellings: one is enough


def keyword_flag(command: str, keyword: str) -> str | None:
    """The flag of `command` that sets the setting a message names as `keyword`, or None."""
    if command == "finetune":  # HfArgumentParser's flags, which the finetune subparser passes on
        from .training.finetune import keyword_flag as finetune_flag

        return finetune_flag(keyword)
    return command_flag(command, KEYWORD_DESTS.get(keyword, keyword))


@contextlib.contextmanager
def warnings_in_flags(command: str):
    """Show the warnings of a command with its flags where they name a keyword (`in_flags`): the
    message is the library's, only its spelling is the command line's."""
    show = warnings.showwarning

    def shown(message, category, filename, lineno, file=None, line=None):
        text = in_flags(str(message), command)
        if text != str(message):
            with contextlib.suppress(Exception):  # a warning class that takes other arguments keeps its text
                message = category(text)
        show(message, category, filename, lineno, file, line)

    warnings.showwarning = shown
    try:
        yield
    finally:
        warnings.showwarning = show


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
            preprocessing=args.preprocessing,
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
        progress=not args.no_progress and bars_enabled(),
    )


# ---------------------------------------------------------------------------- score
def scoring_splits(args: argparse.Namespace, seed: int):
    """The train and eval images the data flags of `score` and `compare` name (`ScoringSplits`)."""
    from .data import load_scoring_splits

    return load_scoring_splits(
        args.dataset,
        config_name=args.dataset_config,
        train_split=args.train_split,
        eval_split=args.eval_split,
        eval_fraction=args.eval_fraction,
        image_column=args.image_column,
        label_column=args.label_column,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        seed=seed,
        allow_same_split=args.allow_same_split,
    )


def cmd_score(args: argparse.Namespace) -> int:
    from .features import load_image_processor, load_vision_model
    from .features.distributed import process_layout
    from .outputs import write_scoring_outputs
    from .pipeline import score_model
    from .preflight import model_loading

    started = time.time()
    config = scoring_config(args)
    preflight_score(args, config)  # paths, device and model folder: before any work
    if config.concepts.is_text and config.concepts.concept_file:
        from .concepts import read_concept_words

        read_concept_words(config.concepts.concept_file)  # a missing or empty file fails before any work
    for name in ("max_train_samples", "max_eval_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    with model_loading(args.model):  # a damaged model fails before the dataset is read
        model = load_vision_model(args.model)
        image_processor = load_image_processor(model)
    bank = None
    if args.concept_bank:
        from .concepts import ConceptBank

        bank = ConceptBank.from_pretrained(args.concept_bank)  # a damaged bank too
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
        **({"concept_bank": args.concept_bank} if args.concept_bank else {}),
        iis_hf_version=__version__,
        elapsed_s=round(time.time() - started, 1),
    )
    if process_layout()[1] != 0:  # under torchrun / accelerate launch every rank scored; one writes
        return 0
    if result.iis is None and not args.allow_chance:
        raise UsageError(f"{result.undefined_reason} (nothing written; --allow-chance writes the outputs)")
    title = f"IIS of {args.model} on {args.dataset}"  # a figure must say which model, on which data
    write_scoring_outputs(
        args.output_dir, {"": result}, result.concept_bank, title=title, overwrite=args.overwrite
    )
    kind = "learned" if "learned_concepts" in result.metadata else result.concept_bank.kind
    print(
        f"IIS of {args.model} on {args.dataset} ({result.num_concepts} {kind} concepts, "
        f"{len(splits.train)} train / {len(splits.eval)} eval images)"
    )
    print(result.table())
    print(f"wrote {Path(args.output_dir) / 'iis.json'} and {Path(args.output_dir) / 'iis_curve.png'}")
    return 0


def preflight_score(args: argparse.Namespace, config: ScoringConfig) -> None:
    """Everything `iis-hf score` can check before it reads an image: the device, the output folder
    (creatable or replaceable, writable, not full, none of the inputs), the cache folder, the model
    folder's config and weights. Nothing is written."""
    from .outputs import is_output_entry
    from .preflight import (
        check_cache_dir,
        check_device,
        check_model_folder,
        check_not_an_input,
        check_output_folder,
    )

    for flag, value in (("--model", args.model), ("--dataset", args.dataset)):
        if not str(value).strip():
            raise UsageError(f"{flag} is empty; give a Hub id or a local folder")
    check_device(config.device)
    inputs = {
        "--model": args.model,
        "--dataset": args.dataset,
        "--concept-bank": args.concept_bank,
        "--concept-file": args.concept_file,
    }
    cache = check_cache_dir(args.cache_dir)
    if cache is not None:
        check_not_an_input(cache, "--cache-dir", inputs, "folder")
    check_output_folder(
        args.output_dir,
        "--output-dir",
        inputs={**inputs, "--cache-dir": cache},
        overwrite=args.overwrite,
        ours=is_output_entry,
    )
    check_model_folder(args.model)


def add_overwrite_argument(parser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output folder (only one holding iis-hf's outputs); without it an existing "
        "folder is kept and the command stops before any work",
    )


# ---------------------------------------------------------------------------- compare
def add_compare_command(commands) -> None:
    compare = commands.add_parser(
        "compare",
        help="rank several models by IIS on one dataset, with one setting (a leaderboard)",
        description="Score several models on one dataset with one concept/heads setting (each image "
        "decoded once for all of them), read others' IIS from their model cards, refuse scores measured "
        "with other settings, and write OUTPUT_DIR/leaderboard.md, .csv, .json, iis_vs_accuracy.png "
        "and iis_curves.png.",
        formatter_class=HELP_FORMAT,
    )
    compare.add_argument(
        "--model",
        "--models",
        dest="models",
        nargs="+",
        action="extend",
        required=True,
        metavar="MODEL",
        help="the models to rank: Hub ids or save_pretrained folders (scored here), or card:<Hub id or "
        "folder> (the IIS its model card reports); name one with NAME=MODEL, e.g. trained=out/model",
    )
    compare.add_argument(
        "--dataset",
        default=None,
        help="Hub dataset id, save_to_disk folder or image folder (default: none, allowed when every "
        "model is a card:)",
    )
    add_output_dir_argument(
        compare, required=True, help="folder for the leaderboard (.md, .csv, .json) and its figures"
    )
    add_overwrite_argument(compare)
    add_data_arguments(compare)
    add_scoring_arguments(compare)
    add_verbosity_arguments(compare)
    compare.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_models, model_specs
    from .devices import resolve_device
    from .features.distributed import process_layout

    started = time.time()
    if args.concept_bank:
        raise UsageError(
            "--concept-bank fits one model's representation; compare builds each model's own concepts"
        )
    config = scoring_config(args)
    specs = model_specs(args.models)  # bad names fail before any work
    preflight_compare(args, config, specs)  # paths, device and model folders: before any work
    resolve_device(config.device)
    for name in ("max_train_samples", "max_eval_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    scored = [s.name for s in specs if not s.from_card]
    splits, data = None, {"dataset": args.dataset} if args.dataset else {}
    if scored:
        if args.dataset is None:
            raise UsageError(
                f"--dataset is needed to score {', '.join(scored)} (only card: models need none)"
            )
        splits = scoring_splits(args, config.seed)
        data = splits.settings()
    leaderboard = compare_models(
        specs,
        splits.train if splits else None,
        splits.eval if splits else None,
        config,
        image_column=splits.image_column if splits else None,
        label_column=splits.label_column if splits else None,
        data_settings=data,
    )
    if process_layout()[1] != 0:  # under torchrun / accelerate launch every rank scored; one writes
        return 0
    out = leaderboard.save(args.output_dir, overwrite=args.overwrite)
    print(leaderboard.table())
    print(
        f"\nwrote {out}/: {', '.join(sorted(p.name for p in out.iterdir()))} ({time.time() - started:.0f} s)"
    )
    return 0


def preflight_compare(args: argparse.Namespace, config: ScoringConfig, specs) -> None:
    """What `iis-hf compare` can check before it reads an image (as `preflight_score`): the device,
    the output and cache folders, and the config and weights of each model folder to score."""
    from .compare import is_leaderboard_entry
    from .preflight import (
        check_cache_dir,
        check_device,
        check_model_folder,
        check_not_an_input,
        check_output_folder,
    )

    check_device(config.device)
    inputs = {"--dataset": args.dataset, **{f"--model {s.name}": s.target for s in specs}}
    cache = check_cache_dir(args.cache_dir)
    if cache is not None:
        check_not_an_input(cache, "--cache-dir", inputs, "folder")
    check_output_folder(
        args.output_dir,
        "--output-dir",
        inputs={**inputs, "--cache-dir": cache},
        overwrite=args.overwrite,
        ours=is_leaderboard_entry,
    )
    for spec in specs:
        if not spec.from_card:
            check_model_folder(spec.target, f"--model {spec.name}")


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
    add_verbosity_arguments(explain)
    explain.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    import json

    from .explain import explain
    from .images import load_image
    from .modeling import IISModelForImageClassification
    from .preflight import check_model_folder, check_output_file, model_loading

    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    if not str(args.model).strip():
        raise UsageError("--model is empty; give an IIS model folder or Hub id")
    # The figure must be writable, a PNG, and none of the inputs (never the image it explains).
    check_output_file(args.output, "--output", inputs={"--image": args.image, "--model": args.model})
    check_model_folder(args.model)
    image = load_image(args.image)  # a bad image fails before the model is loaded
    with model_loading(args.model):
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
    add_verbosity_arguments(install)
    install.set_defaults(func=cmd_install_metric)


def cmd_install_metric(args: argparse.Namespace) -> int:
    from .metric_install import install_metric

    path = install_metric(args.modules_cache)
    print(f"installed the IIS metric at {path}")
    print(
        "use it offline from any folder: HF_EVALUATE_OFFLINE=1 python -c \"import evaluate; evaluate.load('iis')\"\n"
        "(evaluate then logs that it uses its cached copy; iis_hf.load_metric() loads the module by its path, "
        "with no network and no such warning)"
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
    add_overwrite_argument(demo)
    demo.add_argument(
        "--train-epochs", type=float, default=3.0, help="epochs of plain fine-tuning before scoring"
    )
    demo.add_argument(
        "--epochs", type=int, default=HeadsConfig.epochs, help="epochs of interpretation-head training"
    )
    demo.add_argument(
        "--num-concepts", type=int, default=ConceptsConfig.num_concepts, help="C, the number of concepts"
    )
    add_protocol_arguments(demo)
    demo.add_argument("--seed", type=int, default=0, help="seeds the model, its training and the scoring")
    demo.add_argument(
        "--no-progress", action="store_true", help="hide iis-hf's progress bars (--quiet: all bars)"
    )
    add_verbosity_arguments(demo)
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    import math

    from .demo import run_demo
    from .outputs import comparison_table, is_output_entry
    from .preflight import check_output_folder

    started = time.time()
    try:
        config = ScoringConfig(
            extraction=ExtractionConfig(batch_size=128),
            concepts=ConceptsConfig(num_concepts=args.num_concepts),
            heads=HeadsConfig(epochs=args.epochs, protocol=args.protocol, num_seeds=args.seeds),
            seed=args.seed,
            progress=not args.no_progress and bars_enabled(),
        )
    except IISError as err:
        raise flag_error(err, args.command) from err
    if not (math.isfinite(args.train_epochs) and args.train_epochs > 0):
        raise UsageError(f"--train-epochs must be a finite number > 0, got {args.train_epochs}")
    # Before the training: a run that cannot write its output stops now, not after minutes of work.
    check_output_folder(args.output_dir, "--output-dir", overwrite=args.overwrite, ours=is_output_entry)
    results = run_demo(
        args.output_dir,
        args.train_epochs,
        config,
        log=lambda line: print(line, flush=True),
        overwrite=args.overwrite,
    )
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
    from .training.numbers import check_number_flags

    check_number_flags(args.finetune_args)  # in a second: the import below takes ~10 s (transformers)
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
