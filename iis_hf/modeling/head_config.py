"""`IISHeadConfig`: what an interpretation head saved beside a backbone is, as `iis_config.json`.

The head is an add-on, saved the way PEFT saves an adapter: a config and a safetensors file beside
the backbone's own checkpoint (which stays loadable by `AutoModelForImageClassification` with no
custom code), plus the concept bank the head projects onto. The names are our own
(`iis_config.json`, `iis_head.safetensors`, `concept_bank.*`): transformers reroutes folders holding
PEFT's `adapter_*` files to PEFT.

The config owns its JSON: it writes a format name and version, reads files written by newer
releases as long as the format version is one it knows (unknown keys are kept, not refused), and
checks what it reads before anything is loaded.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..concepts import CONFIG_NAME as BANK_CONFIG_NAME
from ..concepts import WEIGHTS_NAME as BANK_WEIGHTS_NAME
from ..config import DEFAULT_IIS_WEIGHT, SCHEMA_KEY, SCHEMA_VERSION, record_version, validate_sparsity_ratios
from ..files import write_json_atomic
from ..hub import download_files
from ..reading import PICKLE_SUFFIXES, read_json, resolve_inside
from ..version import __version__

IIS_CONFIG_NAME = "iis_config.json"
IIS_HEAD_NAME = "iis_head.safetensors"
IIS_FILES = (IIS_CONFIG_NAME, IIS_HEAD_NAME, BANK_CONFIG_NAME, BANK_WEIGHTS_NAME)
HEAD_FORMAT = "iis-hf-interpretation-head"
HEAD_FORMAT_VERSION = 1
OPTIONAL_KEYS = ("id2label", "label2id")  # only a PEFT backbone's head records them


@dataclass
class IISHeadConfig:
    """The interpretation head of an `IISModelForImageClassification`, as saved in `iis_config.json`.

    Attributes:
        sparsity_ratios: the ratios the head has one classifier for (the ratios of the loss).
        num_classes, num_concepts, in_features: its shape (`in_features`: the representation width).
        iis_weight: lambda in ``loss = CE(model) + lambda * CE(interpretation heads)``.
        representation_module: the submodule whose input it is, when not the classifier found by name.
        base_model_name_or_path: the backbone the head was made for (informative).
        id2label, label2id: the class names of a PEFT backbone's trained classifier. An adapter folder
            has no config.json, and its base model's config names the base's classes, not those the
            saved classifier (`modules_to_save`) predicts: loading puts these back (None otherwise).
        extra: keys of the file this release does not know, kept so that saving again loses nothing.
    """

    sparsity_ratios: list[float]
    num_classes: int
    num_concepts: int
    in_features: int | None = None
    iis_weight: float = DEFAULT_IIS_WEIGHT
    representation_module: str | None = None
    base_model_name_or_path: str | None = None
    id2label: dict[str, str] | None = None
    label2id: dict[str, int] | None = None
    concept_bank: str = BANK_CONFIG_NAME
    format: str = HEAD_FORMAT
    format_version: int = HEAD_FORMAT_VERSION
    schema_version: int = SCHEMA_VERSION  # of the settings it records (`iis_hf.config.records`)
    iis_hf_version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.sparsity_ratios = validate_sparsity_ratios(self.sparsity_ratios)
        for name in ("num_classes", "num_concepts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"IISHeadConfig.{name} must be an int >= 1, got {value!r}")
        if (
            isinstance(self.iis_weight, bool)
            or not isinstance(self.iis_weight, (int, float))
            or not self.iis_weight >= 0
        ):
            raise ValueError(f"IISHeadConfig.iis_weight must be a number >= 0, got {self.iis_weight!r}")
        self.iis_weight = float(self.iis_weight)
        self.id2label, self.label2id = checked_labels(self.id2label, self.label2id, self.num_classes)

    def backbone_label_settings(self) -> dict[str, Any]:
        """The config settings a base model needs to predict the head's classes (`from_pretrained` kwargs)."""
        settings: dict[str, Any] = {"num_labels": self.num_classes}
        if self.id2label is not None and self.label2id is not None:  # checked_labels: both or neither
            settings["id2label"] = {int(k): v for k, v in self.id2label.items()}
            settings["label2id"] = dict(self.label2id)
        return settings

    # -- JSON ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        for name in OPTIONAL_KEYS:  # written only when set: older releases read the file without a warning
            if data[name] is None:
                del data[name]
        return {**extra, **data, "iis_hf_version": __version__}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = IIS_CONFIG_NAME) -> IISHeadConfig:
        """Check and read a config; keys this release does not know go to `extra`."""
        if data.get("format") != HEAD_FORMAT:
            raise ValueError(f"{where} is not an iis-hf head config (format={data.get('format')!r})")
        version = data.get("format_version", HEAD_FORMAT_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version > HEAD_FORMAT_VERSION:
            raise ValueError(
                f"{where} has format_version {version!r}, newer than this iis-hf ({__version__}) reads: upgrade iis-hf"
            )
        # A version-1 file (no schema_version) records the same keys: reading it as this version
        # fills in nothing, and saving it again writes this version.
        record_version(data, where)  # a newer version than this iis-hf reads is refused
        data = {**data, SCHEMA_KEY: SCHEMA_VERSION}
        # A version-1 file (no schema_version) records the same keys: reading it as this version
        # fills in nothing, and saving it again writes this version.
        record_version(data, where)  # a newer version than this iis-hf reads is refused
        data = {**data, SCHEMA_KEY: SCHEMA_VERSION}
        ratios = data.get("sparsity_ratios")
        if not isinstance(ratios, list) or not ratios or not all(isinstance(r, (int, float)) for r in ratios):
            raise ValueError(f"{where}: 'sparsity_ratios' must be a non-empty list of numbers")
        if not isinstance(data.get("iis_weight"), (int, float)) or isinstance(data.get("iis_weight"), bool):
            raise ValueError(f"{where}: 'iis_weight' must be a number")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        unknown = {k: v for k, v in data.items() if k not in known}
        try:
            return cls(**values, extra=unknown)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from err

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        write_json_atomic(Path(save_directory) / IIS_CONFIG_NAME, self.to_dict())

    @classmethod
    def from_pretrained(
        cls, path_or_repo_id: str | os.PathLike, *, revision: str | None = None, token: str | None = None
    ) -> IISHeadConfig:
        """Read `iis_config.json` of a local folder or a Hub repository (checked, pickles refused)."""
        return cls.read(head_folder(path_or_repo_id, revision=revision, token=token))

    @classmethod
    def read(cls, folder: str | os.PathLike) -> IISHeadConfig:
        folder = Path(folder)
        refuse_pickles_among_iis_files(folder)
        config = cls.from_dict(
            read_json(folder / IIS_CONFIG_NAME, "IIS head config"), str(folder / IIS_CONFIG_NAME)
        )
        check_bank_name(config.concept_bank, folder)
        if config.extra:
            warnings.warn(
                f"{folder / IIS_CONFIG_NAME} has settings this iis-hf ({__version__}) does not know: "
                f"{sorted(config.extra)}; they are kept but not used",
                UserWarning,
                stacklevel=3,
            )
        return config


def checked_labels(
    id2label: Any, label2id: Any, num_classes: int
) -> tuple[dict[str, str] | None, dict[str, int] | None]:
    """`id2label` with one name per class id 0..num_classes-1 (str keys, as JSON has them), and `label2id`
    (default: its inverse); both None when `id2label` is."""
    if id2label is None:
        if label2id is not None:
            raise ValueError("IISHeadConfig.label2id needs id2label")
        return None, None
    try:
        names = {int(k): str(v) for k, v in dict(id2label).items()}
    except (TypeError, ValueError):
        names = {}
    if sorted(names) != list(range(num_classes)):
        raise ValueError(
            f"IISHeadConfig.id2label must name the class ids 0..{num_classes - 1}, got {id2label!r}"
        )
    if label2id is None:
        label2id = {name: i for i, name in names.items()}
    if not isinstance(label2id, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in label2id.values()
    ):
        raise ValueError(f"IISHeadConfig.label2id must map names to class ids, got {label2id!r}")
    return {str(k): v for k, v in sorted(names.items())}, {str(k): v for k, v in label2id.items()}


def head_folder(
    path_or_repo_id: str | os.PathLike, *, revision: str | None = None, token: str | None = None
) -> Path:
    """The local folder holding a head's files: the folder itself, or the Hub files downloaded."""
    folder = Path(path_or_repo_id)
    if folder.is_dir():
        return folder
    return download_files(str(path_or_repo_id), IIS_FILES, what="IIS model", revision=revision, token=token)


def has_head(
    path_or_repo_id: str | os.PathLike, *, revision: str | None = None, token: str | None = None
) -> bool:
    """Whether a folder or Hub repository holds an interpretation head (`iis_config.json`)."""
    try:
        return (head_folder(path_or_repo_id, revision=revision, token=token) / IIS_CONFIG_NAME).is_file()
    except ValueError:
        return False


def check_bank_name(name: str, folder: Path) -> None:
    """The bank named by the config must be the file beside the head (never a path out of the folder)."""
    bank_config = resolve_inside(folder, name, f"{folder / IIS_CONFIG_NAME}: 'concept_bank'")
    if bank_config.name != BANK_CONFIG_NAME:
        raise ValueError(
            f"{folder / IIS_CONFIG_NAME}: 'concept_bank' is {name!r}; the bank of an IIS model is stored beside "
            f"its head as {BANK_CONFIG_NAME} + {BANK_WEIGHTS_NAME}"
        )


def refuse_pickles_among_iis_files(folder: Path) -> None:
    """The backbone may ship legacy weights; our own artefacts must be safetensors + JSON."""
    for name in ("iis_head", "concept_bank"):
        for suffix in PICKLE_SUFFIXES:
            if (folder / f"{name}{suffix}").exists():
                raise ValueError(
                    f"{folder / (name + suffix)} is a pickle; iis-hf only reads {name} as safetensors + JSON"
                )
