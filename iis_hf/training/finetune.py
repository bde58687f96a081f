"""Fine-tune an image classifier with interpretability maximization, the `run_image_classification.py` way.

This is transformers' image-classification example with `IISTrainer` in place of `Trainer`: the
same three argument dataclasses (`ModelArguments`, `DataTrainingArguments` and the training
arguments, here `IISTrainingArguments`), the same dataset sources, checkpoint resumption, metrics
files and model card. The loss becomes ``CE(model) + iis_weight * CE(interpretation heads)`` and
every evaluation also reports the Inherent Interpretability Score (`eval_iis`).

Entry points: `run(model_args, data_args, training_args)` (returns the metrics), `main(argv)`
(parses the command line or a single JSON/YAML file), `iis-hf finetune ...` and
`examples/run_image_classification_iis.py`.

Images are prepared without torchvision (`iis_hf.training.transforms`); a dataset without a
validation split gets one from `iis_hf.splits.stratified_split`, the rows the other entry points
would hold out too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..concepts import ConceptBank
from ..data import check_images_decode, limit_rows, undecoded
from ..devices import launched_alone_message
from ..errors import first_line
from ..hub import looks_like_hub_id
from ..modeling import IISHeadConfig, IISModelForImageClassification, has_head
from ..splits import stratified_split
from .arguments import IISTrainingArguments
from .checkpoints import last_complete_checkpoint
from .run_folder import check_output_dir, checkpoints_in, final_output, interrupted_outcome, output_lock
from .script_arguments import (
    DEFAULT_MODEL,
    NO_SWITCH_HELP,
    DataTrainingArguments,
    ModelArguments,
    build_parser,
    parse_arguments,
)
from .trainer import IISTrainer
from .transforms import AugmentationEpochs, ImageClassificationTransform, collate_fn, with_row_index

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODEL",
    "NO_SWITCH_HELP",
    "DataTrainingArguments",
    "IISTrainingArguments",
    "ModelArguments",
    "build_parser",
    "main",
    "parse_arguments",
    "run",
]

VALIDATION_SPLIT_NAMES = ("validation", "valid", "val")


def load_datasets(data_args: DataTrainingArguments, cache_dir: str | None = None, token: str | None = None):
    """The dataset as a `DatasetDict` (a single `Dataset` becomes its `train` split)."""
    from datasets import Dataset, DatasetDict, load_dataset

    from ..data import load_image_dataset

    if data_args.dataset_name is not None:
        data = load_image_dataset(
            data_args.dataset_name, data_args.dataset_config_name, cache_dir=cache_dir, token=token
        )
    else:
        data_files = {}
        for split, folder, flag in (
            ("train", data_args.train_dir, "--train_dir"),
            ("validation", data_args.validation_dir, "--validation_dir"),
        ):
            if folder is None:
                continue
            if not os.path.isdir(folder):
                raise ValueError(f"{flag} {folder} is not a folder")
            data_files[split] = os.path.join(folder, "**")
        try:
            data = load_dataset("imagefolder", data_files=data_files, cache_dir=cache_dir)
        except Exception as err:  # datasets raises many types for a bad folder
            raise ValueError(
                f"could not read the image folders {sorted(data_files.values())}: {err}"
            ) from err
    if isinstance(data, Dataset):
        data = DatasetDict(train=data)
    return data


def pick_columns(
    dataset, image_column: str | None, label_column: str | None, folders: tuple[str, ...] = ()
) -> tuple[str, str]:
    """The image and label columns: the given names (checked) or detected from the features; without
    labels, what is wrong with the image `folders` the dataset was read from (`image_folder_issue`)."""
    from ..data import ONE_CLASS, detect_columns, image_folder_issue

    columns = dataset.column_names
    for flag, name in (("--image_column_name", image_column), ("--label_column_name", label_column)):
        if name is not None and name not in columns:
            raise ValueError(f"{flag} {name!r} is not a column of the dataset; its columns are {columns}")
    try:
        image_column, label_column = detect_columns(dataset, image_column, label_column)
    except ValueError as err:
        raise ValueError(f"{str(err).split('; pass')[0]}: pass --image_column_name") from err
    if label_column is None:
        issue = next(filter(None, map(image_folder_issue, folders)), None)
        if issue is not None and issue[0] == ONE_CLASS:
            raise ValueError(issue[1])  # one class, said so (not "no label column")
        raise ValueError(
            f"the dataset has no label column (its columns are {columns}); fine-tuning needs labelled images: "
            + (
                issue[1]
                if issue
                else "pass --label_column_name, or give an image folder, one sub-folder per class"
            )
        )
    return image_column, label_column


def encode_labels(data, label_column: str):
    """Make `label_column` a `ClassLabel` in every split, with the same classes everywhere."""
    from datasets import ClassLabel

    first = data[next(iter(data))]
    if isinstance(first.features[label_column], ClassLabel):
        return data
    values = {value for split in data.values() for value in split.unique(label_column)} - {None}
    if not values:
        raise ValueError(f"label column {label_column!r} holds no labels")
    integers = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    ordered = sorted(values, key=None if integers else str)
    if all(isinstance(v, str) for v in ordered):
        names = ordered
    elif integers and ordered == list(range(len(ordered))):
        names = [str(v) for v in ordered]
    else:
        raise ValueError(
            f"label column {label_column!r} holds {type(ordered[0]).__name__} values {ordered[:5]}...; "
            "labels must be a ClassLabel, strings, or integers 0..K-1"
        )
    return data.cast_column(label_column, ClassLabel(names=names))


def split_train_validation(data, data_args: DataTrainingArguments, label_column: str, seed: int):
    """(train, validation or None): the validation split, else a stratified part of train."""
    if "train" not in data:
        raise ValueError(
            f"the dataset has no 'train' split (splits: {sorted(data)}); concepts and heads are fit on training images"
        )
    train = data["train"]
    name = next((s for s in VALIDATION_SPLIT_NAMES if s in data), None)
    if name is not None:
        return train, data[name]
    if not data_args.train_val_split:
        return train, None
    kept, held_out = stratified_split(train[label_column], data_args.train_val_split, seed)
    # select(keep_in_memory=True): no index files in the user's dataset folder (train_test_split
    # cannot do that for a dataset on disk in datasets 5.2)
    return train.select(kept, keep_in_memory=True), train.select(held_out, keep_in_memory=True)


# ---------------------------------------------------------------------------- model
def load_model_and_processor(model_args: ModelArguments, labels: list[str]):
    """Config with our labels, the model (a new head if asked), and its image processor."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    common: dict[str, Any] = {
        "cache_dir": model_args.cache_dir,
        "revision": model_args.model_revision,
        "token": model_args.token,
        "trust_remote_code": False,  # never run code from a model repository
    }
    name = model_args.model_name_or_path
    try:
        config = AutoConfig.from_pretrained(
            model_args.config_name or name,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            finetuning_task="image-classification",
            **common,
        )
        model = AutoModelForImageClassification.from_pretrained(
            name, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **common
        )
        image_processor = AutoImageProcessor.from_pretrained(
            model_args.image_processor_name or name, **common
        )
    except OSError as err:
        raise ValueError(f"cannot load {name!r}: {first_line(err)}") from err
    except RuntimeError as err:
        if "ignore_mismatched_sizes" not in str(err):
            raise
        raise ValueError(
            f"{name} has a classification head of another size than the dataset's {len(labels)} classes: "
            "pass --ignore_mismatched_sizes to train a new head"
        ) from err
    return model, image_processor


def attach_saved_head(backbone, model_args: ModelArguments, training_args: IISTrainingArguments):
    """Continue from a model saved by IISTrainer: reuse its concept bank and interpretation head.

    A folder (or Hub repo) without `iis_config.json` is a plain backbone, and an explicit
    `--iis_concept_bank` wins: IISTrainer then builds or loads concepts itself. The saved head is reused
    when it has the same loss ratios and class count, otherwise a new one starts from the bank. The
    arguments' `iis_weight` wins over the saved one.
    """
    name, revision, token = model_args.model_name_or_path, model_args.model_revision, model_args.token
    if training_args.iis_concept_bank is not None or not has_head(name, revision=revision, token=token):
        return backbone
    saved = IISHeadConfig.from_pretrained(name, revision=revision, token=token)
    same_head = saved.sparsity_ratios == training_args.iis_sparsity_ratios and saved.num_classes == int(
        backbone.config.num_labels
    )
    if same_head:
        model = IISModelForImageClassification.from_pretrained(backbone, name, revision=revision, token=token)
        model.iis_weight = training_args.iis_weight
    else:
        model = IISModelForImageClassification(
            backbone,
            ConceptBank.from_pretrained(name, revision=revision, token=token),
            training_args.iis_sparsity_ratios,
            iis_weight=training_args.iis_weight,
            seed=training_args.seed,
        )
    logger.info(f"reusing the concept bank{' and head' if same_head else ''} saved with {name}")
    return model.train()


# ---------------------------------------------------------------------------- the run
def setup_logging(training_args: IISTrainingArguments) -> None:
    import datasets
    import transformers

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    # --log_level passive (the default) leaves transformers' verbosity alone; this script's own
    # messages are then shown on the main process, as in transformers' examples.
    log_level = training_args.get_process_log_level()
    passive = training_args.log_level == "passive" and training_args.should_log
    logger.setLevel(logging.INFO if passive else log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    warn_if_launched_alone(training_args)


def warn_if_launched_alone(training_args, environ=None) -> str | None:
    """Warn (one line, on each process) when the launch asked for several processes but this one
    trains alone, and return the warning (None when there is nothing to say): the check every
    command makes (`iis_hf.devices.launched_alone_message`)."""
    message = launched_alone_message(
        training_args.world_size, environ, work="trains", command="... --use_cpu"
    )
    if message is not None:
        logger.warning(message)
    return message


def detect_last_checkpoint(training_args: IISTrainingArguments) -> str | None:
    """The newest complete `checkpoint-N` in the output folder, when training and no checkpoint was named."""
    if (
        not training_args.do_train
        or training_args.resume_from_checkpoint is not None
        or getattr(training_args, "overwrite_output_dir", False)
    ):
        return None
    assert training_args.output_dir is not None  # TrainingArguments.__post_init__ fills it
    if not os.path.isdir(training_args.output_dir):
        return None
    last = last_complete_checkpoint(training_args.output_dir)
    if last is not None:
        logger.info(
            f"Checkpoint detected, resuming training at {last}. To train from scratch, pass another --output_dir "
            "or remove the checkpoint-* folders."
        )
    return last


def run(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args: IISTrainingArguments
) -> dict[str, float]:
    """Fine-tune (`--do_train`) and/or evaluate (`--do_eval`) with `IISTrainer`; returns all metrics.

    The output folder is checked and locked before anything is loaded, and the final outputs appear in
    it whole or not at all (`iis_hf.training.run_folder`).
    """
    if not isinstance(training_args, IISTrainingArguments):
        raise TypeError("run() needs IISTrainingArguments (a TrainingArguments subclass) as training_args")
    data_args.__post_init__()  # the checks again, for arguments changed after construction
    assert training_args.output_dir is not None  # TrainingArguments.__post_init__ fills it
    check_output_dir(training_args.output_dir, training_args.overwrite_output_dir)
    earlier_checkpoints = (
        checkpoints_in(training_args.output_dir) if training_args.overwrite_output_dir else None
    )
    new_folder = not os.path.exists(training_args.output_dir)
    try:
        return _run_locked(model_args, data_args, training_args, earlier_checkpoints)
    except BaseException:
        if new_folder and training_args.process_index == 0:  # a failed run leaves no empty folder
            with contextlib.suppress(OSError):
                os.rmdir(training_args.output_dir)
        raise


def _run_locked(model_args, data_args, training_args, earlier_checkpoints) -> dict[str, float]:
    """`run` once its checks passed: lock the output folder, build the trainer, train, save."""
    with output_lock(training_args.output_dir, enabled=training_args.process_index == 0):
        setup_logging(training_args)
        logger.warning(
            f"Process rank: {training_args.process_index}, device: {training_args.device}, "
            f"n_gpu: {training_args.n_gpu}, distributed training: {training_args.parallel_mode.value == 'distributed'}, "
            f"mixed precision: {'bf16' if training_args.bf16 else 'fp16' if training_args.fp16 else 'no'}"
        )
        logger.info(f"Training/evaluation parameters {training_args}")
        trainer, data, sizes = build_trainer(model_args, data_args, training_args)
        card = model_card_arguments(model_args, data, data_args, training_args.seed)
        metrics = train_and_save(trainer, training_args, sizes, card, earlier_checkpoints or frozenset())
        if training_args.push_to_hub:  # after the folder is in place: a failed push loses nothing
            trainer.push_to_hub(**card)
    return metrics


def build_trainer(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args: IISTrainingArguments
):
    """(the IISTrainer, the dataset, {"train": rows, "eval": rows}): data and model loaded and prepared."""
    from transformers import set_seed

    set_seed(training_args.seed)
    # Data: every process reads the same dataset; the first one builds any cache alone.
    with training_args.main_process_first(desc="loading the dataset"):
        data = load_datasets(data_args, model_args.cache_dir, model_args.token)
    folders = (data_args.dataset_name, data_args.train_dir, data_args.validation_dir)
    image_column, label_column = pick_columns(
        data[next(iter(data))],
        data_args.image_column_name,
        data_args.label_column_name,
        tuple(f for f in folders if f is not None),
    )
    data = encode_labels(data, label_column)
    # images stay encoded until iis_hf.images.load_image decodes them (errors name the file)
    data = type(data)({name: undecoded(split, image_column) for name, split in data.items()})
    # before any selection: on a split without an indices mapping the column costs no cache file
    data["train"] = with_row_index(data["train"])
    train, evaluation = split_train_validation(data, data_args, label_column, training_args.seed)
    labels = list(train.features[label_column].names)
    if len(labels) < 2:
        raise ValueError(f"the dataset has {len(labels)} class; classification needs at least 2")
    if training_args.do_eval and evaluation is None:
        raise ValueError("--do_eval needs a validation split: give one, or a --train_val_split above 0")
    train = limit_rows(train, data_args.max_train_samples, training_args.seed)
    if evaluation is not None:
        evaluation = limit_rows(evaluation, data_args.max_eval_samples, training_args.seed)
    for name, split in (("train", train), ("validation", evaluation)):
        if split is not None:  # a damaged image fails now, naming its file, not inside the training loop
            check_images_decode(split, image_column, name)

    model, image_processor = load_model_and_processor(model_args, labels)
    model = attach_saved_head(model, model_args, training_args)
    # each row's augmentation is a function of (seed, epoch, row): a resumed run repeats it exactly
    train_transform = ImageClassificationTransform(
        image_processor, image_column, label_column, augment=True, seed=training_args.seed
    )
    eval_transform = ImageClassificationTransform(image_processor, image_column, label_column)
    trainer = IISTrainer(
        model=model,
        args=training_args,
        train_dataset=train.with_transform(train_transform) if training_args.do_train else None,
        eval_dataset=evaluation.with_transform(eval_transform) if evaluation is not None else None,
        processing_class=image_processor,
        data_collator=collate_fn,
        # prototypes come from raw training images; the eval-time IIS heads from un-augmented ones
        concept_dataset=train.select_columns([image_column, label_column]),
        iis_fit_dataset=train.with_transform(eval_transform),
        callbacks=[AugmentationEpochs(train_transform)],
    )
    sizes = {"train": len(train), "eval": len(evaluation) if evaluation is not None else 0}
    return trainer, data, sizes


def train_and_save(
    trainer: IISTrainer,
    training_args: IISTrainingArguments,
    sizes: dict[str, int],
    card: dict,
    dropped: frozenset[str] = frozenset(),
) -> dict[str, float]:
    """Train and/or evaluate, then write the final outputs, model card included, in one step
    (`final_output`); `dropped`: an earlier run's checkpoints, not kept (--overwrite_output_dir)."""
    assert training_args.output_dir is not None  # TrainingArguments.__post_init__ fills it
    metrics: dict[str, float] = {}
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint or detect_last_checkpoint(training_args)
        try:
            train_result = trainer.train(resume_from_checkpoint=checkpoint)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(interrupted_outcome(training_args.output_dir)) from None
        metrics.update(train_result.metrics)
    with final_output(trainer, training_args.do_train, dropped):
        if training_args.do_train:
            trainer.save_model()
            train_metrics = {**metrics, "train_samples": sizes["train"], **saved_head_metrics(trainer)}
            trainer.log_metrics("train", train_metrics)
            trainer.save_metrics("train", train_metrics)
            trainer.save_state()
            metrics.update(train_metrics)
        if training_args.do_eval:
            metrics.update(evaluate_and_save(trainer, training_args, sizes["eval"]))
        if not training_args.push_to_hub:
            trainer.create_model_card(**card)
    return metrics


def evaluate_and_save(trainer: IISTrainer, training_args: IISTrainingArguments, eval_samples: int) -> dict:
    """The evaluation's metrics, saved, with the IIS report and curve beside them."""
    eval_metrics = {**trainer.evaluate(), "eval_samples": eval_samples}
    trainer.log_metrics("eval", eval_metrics)
    trainer.save_metrics("eval", eval_metrics)
    if trainer.last_iis_result is not None and trainer.is_world_process_zero() and training_args.should_save:
        assert training_args.output_dir is not None  # TrainingArguments.__post_init__ fills it
        output_dir = Path(training_args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        trainer.last_iis_result.save_json(output_dir / "iis.json")
        trainer.last_iis_result.plot(output_dir / "iis_curve.png", title="IIS after fine-tuning")
    return eval_metrics


def model_card_arguments(
    model_args: ModelArguments, data, data_args: DataTrainingArguments, seed: int
) -> dict:
    """What the model card says about where the model and its eval results come from."""
    card: dict = {"tasks": "image-classification", "tags": ["image-classification", "iis-hf"]}
    if looks_like_hub_id(model_args.model_name_or_path):
        card["finetuned_from"] = model_args.model_name_or_path
    local = data_args.dataset_name or data_args.train_dir
    if looks_like_hub_id(data_args.dataset_name):
        card.update(dataset_tags=data_args.dataset_name, dataset=data_args.dataset_name)
        if data_args.dataset_config_name:
            card["dataset_args"] = data_args.dataset_config_name
    elif local:
        card["dataset"] = local_dataset_name(local)
    validation = next((name for name in VALIDATION_SPLIT_NAMES if name in data), None)
    if validation is not None:
        card["dataset_split"] = validation
    elif data_args.train_val_split:
        card["dataset_split"] = f"train ({data_args.train_val_split:.0%} held out, stratified, seed {seed})"
    return card


def saved_head_metrics(trainer: IISTrainer) -> dict[str, float]:
    """The saved interpretation head's accuracy at each loss ratio (`iis_head_accuracy_<rho>`), and the
    accuracy of the head as trained before it was refitted (`iis_trained_head_accuracy_<rho>`)."""
    record = trainer.saved_head_accuracy or {}
    metrics = {f"iis_head_accuracy_{r}": a for r, a in record.get("accuracies", {}).items()}
    trained = record.get("trained_head_accuracies") or {}
    metrics.update({f"iis_trained_head_accuracy_{r}": a for r, a in trained.items()})
    return metrics


def local_dataset_name(folder: str) -> str:
    """A local dataset's name: its folder's, or its parent's when the folder is a split (`data/train`)."""
    path = Path(folder).resolve()
    return path.parent.name if path.name.lower() in ("train", "training", "training_set") else path.name


def main(argv: list[str] | None = None, prog: str | None = None) -> dict[str, float]:
    """Parse the arguments (or one .json/.yaml file holding them) and `run` the fine-tuning."""
    model_args, data_args, training_args = parse_arguments(argv, prog)
    return run(model_args, data_args, training_args)


if __name__ == "__main__":
    main()
