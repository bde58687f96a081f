"""A backbone and its interpretation heads as one module, saved adapter-style beside the backbone.

`IISModelForImageClassification` owns any `*ForImageClassification` backbone and an
`InterpretationHeads` over a concept bank. One forward gives the backbone's logits, the
interpretation logits of every loss ratio, the sparse concept activations and the representation.
Because it is one `nn.Module`, DDP/FSDP and mixed precision through accelerate cover the head too.

On disk the backbone stays a standard checkpoint (`AutoModelForImageClassification.from_pretrained`
loads it with no custom code); beside it go `iis_head.safetensors`, `iis_config.json` and the
concept bank (`concept_bank.safetensors`, `concept_bank.json`). PEFT's `adapter_*` names are
avoided on purpose: transformers reroutes folders holding them to PEFT.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .backbones import capture_classifier_input, has_classifier
from .concepts import CONFIG_NAME as BANK_CONFIG_NAME
from .concepts import WEIGHTS_NAME as BANK_WEIGHTS_NAME
from .concepts import ConceptBank
from .files import (
    PICKLE_SUFFIXES,
    read_json,
    read_safetensors,
    resolve_inside,
    save_safetensors_atomic,
    write_json_atomic,
)
from .heads import InterpretationHeads
from .version import __version__

IIS_CONFIG_NAME = "iis_config.json"
IIS_HEAD_NAME = "iis_head.safetensors"
IIS_FILES = (IIS_CONFIG_NAME, IIS_HEAD_NAME, BANK_CONFIG_NAME, BANK_WEIGHTS_NAME)
HEAD_FORMAT = "iis-hf-interpretation-head"
HEAD_PREFIX = "iis_head."


@dataclass
class IISImageClassifierOutput(ModelOutput):
    """Outputs of `IISModelForImageClassification`.

    Attributes:
        loss: ``CE(logits) + iis_weight * mean_r CE(iis_logits[r])`` when labels were given.
        logits: the backbone's own logits (B, num_labels).
        iis_logits: interpretation logits, one slice per loss ratio (R, B, num_labels).
        concept_activations: sparse normalised concept activations (R, B, C).
        representations: what the backbone's classifier sees (B, D).
        classification_loss, iis_loss: the two parts of `loss`, for logging.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    iis_logits: torch.Tensor | None = None
    concept_activations: torch.Tensor | None = None
    representations: torch.Tensor | None = None
    classification_loss: torch.Tensor | None = None
    iis_loss: torch.Tensor | None = None


class IISModelForImageClassification(nn.Module):
    """A `*ForImageClassification` backbone plus interpretation heads at `sparsity_ratios`.

    Args:
        backbone: a transformers image-classification model (its classifier input is the
            representation the concepts interpret).
        concepts: the `ConceptBank` the heads project onto (its dimension must match).
        sparsity_ratios: the ratios the interpretability loss uses (averaged over them).
        iis_weight: lambda in ``loss = CE(model) + lambda * CE(interpretation heads)``.
        seed: initialises the heads (independently of the global RNG, so wrapping a model does
            not change the random stream a plain Trainer run would see).
    """

    main_input_name = "pixel_values"
    # compute_loss in IISTrainer normalises the loss itself; never inject num_items_in_batch.
    accepts_loss_kwargs = False

    def __init__(
        self,
        backbone: nn.Module,
        concepts: ConceptBank,
        sparsity_ratios=(0.9,),
        iis_weight: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        if not has_classifier(backbone) or not hasattr(backbone, "config"):
            raise ValueError(
                f"{type(backbone).__name__} is not an image-classification model with a `classifier`; "
                "load it with AutoModelForImageClassification"
            )
        if not isinstance(concepts, ConceptBank):
            raise TypeError(f"concepts must be a ConceptBank, got {type(concepts).__name__}")
        if iis_weight < 0:
            raise ValueError(f"iis_weight must be >= 0, got {iis_weight}")
        num_labels = int(backbone.config.num_labels)
        self.backbone = backbone
        self.concept_bank = concepts
        self.iis_weight = float(iis_weight)
        self.iis_head = InterpretationHeads(concepts, num_labels, sparsity_ratios, seed=seed)
        in_features = representation_dim(backbone)
        if in_features is not None and in_features != concepts.dim:
            raise ValueError(
                f"the concept bank has dimension {concepts.dim} but {type(backbone).__name__} gives "
                f"{in_features}-dimensional representations: the bank was built for another model"
            )

    # -- what Trainer and users look up on a model -------------------------------------------------
    @property
    def config(self):
        return self.backbone.config

    @property
    def sparsity_ratios(self) -> list[float]:
        return self.iis_head.sparsity_ratios

    @property
    def name_or_path(self) -> str:
        return getattr(self.backbone, "name_or_path", "")

    def gradient_checkpointing_enable(self, **kwargs):
        self.backbone.gradient_checkpointing_enable(**kwargs)

    def gradient_checkpointing_disable(self):
        self.backbone.gradient_checkpointing_disable()

    @property
    def supports_gradient_checkpointing(self) -> bool:
        return bool(getattr(self.backbone, "supports_gradient_checkpointing", False))

    # -- forward -----------------------------------------------------------------------------------
    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, return_dict: bool = True
    ) -> IISImageClassifierOutput:
        with capture_classifier_input(self.backbone) as holder:
            logits = self.backbone(pixel_values=pixel_values, return_dict=True).logits
        representations = holder.value
        # The head runs in float32 even when the backbone autocasts (ResNet pools in bf16).
        normalized = self.iis_head.normalize(representations.float())
        activations = self.iis_head.concept_activations_normalized(normalized)
        iis_logits = self.iis_head.classify(activations)
        output = IISImageClassifierOutput(
            logits=logits,
            iis_logits=iis_logits,
            concept_activations=activations,
            representations=representations,
        )
        if labels is not None:
            classification, interpretation = self.loss_parts(logits, iis_logits, labels, reduction="mean")
            output.classification_loss = classification.detach()
            output.iis_loss = interpretation.detach()
            output.loss = classification + self.iis_weight * interpretation
        return output

    def loss_parts(self, logits, iis_logits, labels, reduction: str = "mean"):
        """CE of the backbone, and CE of the interpretation heads averaged over the loss ratios."""
        classification = F.cross_entropy(logits.float(), labels, reduction=reduction)
        num_ratios = iis_logits.shape[0]
        per_ratio = F.cross_entropy(
            iis_logits.float().reshape(-1, iis_logits.shape[-1]), labels.repeat(num_ratios), reduction="none"
        ).view(num_ratios, -1)
        interpretation = per_ratio.mean(0)
        interpretation = interpretation.mean() if reduction == "mean" else interpretation.sum()
        return classification, interpretation

    @torch.no_grad()
    def predict_from_concepts(self, pixel_values: torch.Tensor, sparsity_ratio: float | None = None):
        """Class probabilities from the interpretation head at one of the trained ratios (B, K)."""
        ratio = self.sparsity_ratios[-1] if sparsity_ratio is None else float(sparsity_ratio)
        if ratio not in self.sparsity_ratios:
            raise ValueError(f"no head for ratio {ratio}; this model has heads at {self.sparsity_ratios}")
        output = self(pixel_values=pixel_values)
        return output.iis_logits[self.sparsity_ratios.index(ratio)].softmax(-1)

    # -- saving and loading --------------------------------------------------------------------------
    def head_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.iis_head.state_dict().items()}

    def iis_config(self) -> dict[str, Any]:
        return {
            "format": HEAD_FORMAT,
            "format_version": 1,
            "head_type": "InterpretationHeads",
            "sparsity_ratios": self.sparsity_ratios,
            "iis_weight": self.iis_weight,
            "num_classes": int(self.iis_head.weight.shape[1]),
            "num_concepts": self.iis_head.num_concepts,
            "in_features": self.concept_bank.dim,
            "pooling": "classifier_input",
            "base_model_name_or_path": self.name_or_path or None,
            "concept_bank": BANK_CONFIG_NAME,
            "iis_hf_version": __version__,
        }

    def save_iis_files(self, save_directory: str | os.PathLike, head_state: dict | None = None) -> None:
        """Write the head, its config and the concept bank (not the backbone) into a folder."""
        save_directory = Path(save_directory)
        save_safetensors_atomic(head_state or self.head_state_dict(), save_directory / IIS_HEAD_NAME)
        self.concept_bank.save_pretrained(save_directory)
        write_json_atomic(save_directory / IIS_CONFIG_NAME, self.iis_config())

    def save_pretrained(
        self, save_directory: str | os.PathLike, state_dict: dict | None = None, **kwargs
    ) -> None:
        """The backbone with `save_pretrained` (standard format), and the IIS files beside it."""
        backbone_state = head_state = None
        if state_dict is not None:  # e.g. gathered by FSDP/DeepSpeed: split it by prefix
            backbone_state = {
                k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")
            }
            head_state = {
                k[len(HEAD_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(HEAD_PREFIX)
            }
        self.backbone.save_pretrained(save_directory, state_dict=backbone_state, **kwargs)
        self.save_iis_files(save_directory, head_state)

    def load_iis_files(self, folder: str | os.PathLike) -> None:
        """Load the head weights saved by `save_iis_files` (strict: every tensor must match)."""
        tensors = read_safetensors(Path(folder) / IIS_HEAD_NAME, "interpretation head")
        expected = self.iis_head.state_dict()
        problems = sorted(set(expected) ^ set(tensors)) + [
            k for k in expected if k in tensors and tensors[k].shape != expected[k].shape
        ]
        if problems:
            raise ValueError(
                f"{Path(folder) / IIS_HEAD_NAME} does not fit this head (mismatched: {problems})"
            )
        self.iis_head.load_state_dict(tensors)

    def load_checkpoint(self, folder: str | os.PathLike) -> None:
        """Restore backbone and head weights from a folder written by `save_pretrained` (strict).

        The backbone goes through its own `from_pretrained`: transformers 5 stores some weights
        under checkpoint names that differ from the module's (e.g. ViT's fused attention), and only
        its loader converts them.
        """
        try:
            saved = type(self.backbone).from_pretrained(folder, config=self.backbone.config)
        except OSError as err:
            raise ValueError(f"{folder} holds no backbone weights ({err})") from None
        self.backbone.load_state_dict(saved.state_dict(), strict=True)
        self.load_iis_files(folder)

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike,
        *,
        revision: str | None = None,
        token: str | None = None,
        **backbone_kwargs,
    ) -> IISModelForImageClassification:
        """Reassemble backbone, concept bank and heads from a local folder or a Hub repository."""
        from transformers import AutoModelForImageClassification

        folder = Path(path_or_repo_id)
        if not folder.is_dir():
            folder = download_iis_files(str(path_or_repo_id), revision, token)
        refuse_pickles_among_iis_files(folder)
        config = read_json(folder / IIS_CONFIG_NAME, "IIS head config")
        check_iis_config(config, folder)
        bank = ConceptBank.from_pretrained(folder)
        try:
            backbone = AutoModelForImageClassification.from_pretrained(
                str(path_or_repo_id),
                revision=revision,
                token=token,
                trust_remote_code=False,
                **backbone_kwargs,
            )
        except OSError as err:
            raise ValueError(f"cannot load the backbone from {path_or_repo_id!r}: {err}") from None
        model = cls(backbone, bank, config["sparsity_ratios"], iis_weight=config["iis_weight"])
        model.load_iis_files(folder)
        return model.eval()

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload IIS model",
        model_card: str | None = None,
    ):
        """Save everything into a temporary folder and upload it as one commit."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            if model_card is not None:
                Path(tmp, "README.md").write_text(model_card, encoding="utf-8")
            return api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)


def representation_dim(backbone: nn.Module) -> int | None:
    """The classifier's input width when it can be read off the module (a Linear or a Sequential)."""
    classifier = getattr(backbone, "classifier", None)
    linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)] if classifier is not None else []
    return linears[0].in_features if linears else None


def check_iis_config(config: dict, folder: Path) -> None:
    if config.get("format") != HEAD_FORMAT:
        raise ValueError(
            f"{folder / IIS_CONFIG_NAME} is not an iis-hf head config (format={config.get('format')!r})"
        )
    ratios = config.get("sparsity_ratios")
    if not isinstance(ratios, list) or not ratios or not all(isinstance(r, (int, float)) for r in ratios):
        raise ValueError(f"{folder / IIS_CONFIG_NAME}: 'sparsity_ratios' must be a non-empty list of numbers")
    if not isinstance(config.get("iis_weight"), (int, float)):
        raise ValueError(f"{folder / IIS_CONFIG_NAME}: 'iis_weight' must be a number")
    if "concept_bank" in config:  # a file name read from JSON: never a path out of the folder
        bank_config = resolve_inside(
            folder, config["concept_bank"], f"{folder / IIS_CONFIG_NAME}: 'concept_bank'"
        )
        if bank_config.name != BANK_CONFIG_NAME:
            raise ValueError(
                f"{folder / IIS_CONFIG_NAME}: 'concept_bank' is {config['concept_bank']!r}; the bank of an IIS "
                f"model is stored beside its head as {BANK_CONFIG_NAME} + {BANK_WEIGHTS_NAME}"
            )


def refuse_pickles_among_iis_files(folder: Path) -> None:
    """The backbone may ship legacy weights; our own artefacts must be safetensors + JSON."""
    for name in ("iis_head", "concept_bank"):
        for suffix in PICKLE_SUFFIXES:
            if (folder / f"{name}{suffix}").exists():
                raise ValueError(
                    f"{folder / (name + suffix)} is a pickle; iis-hf only reads {name} as safetensors + JSON"
                )


def download_iis_files(repo_id: str, revision: str | None, token: str | None) -> Path:
    from huggingface_hub import hf_hub_download

    if os.path.isabs(repo_id) or repo_id.startswith(".") or repo_id.count("/") > 1:
        raise ValueError(f"model folder {repo_id} does not exist")
    try:
        paths = [hf_hub_download(repo_id, name, revision=revision, token=token) for name in IIS_FILES]
    except Exception as err:
        raise ValueError(
            f"{repo_id!r} is not a local folder, and its IIS files could not be downloaded from the Hub ({err})"
        ) from None
    return Path(paths[0]).parent
