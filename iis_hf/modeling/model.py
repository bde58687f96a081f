"""A backbone and its interpretation heads as one module, saved adapter-style beside the backbone.

`IISModelForImageClassification` owns any `*ForImageClassification` backbone and an
`InterpretationHeads` over a concept bank. One forward gives the backbone's logits, the
interpretation logits of every loss ratio, the sparse concept activations and the representation.
Because it is one `nn.Module`, DDP/FSDP and mixed precision through accelerate cover the head too.

On disk the backbone stays a standard checkpoint (`AutoModelForImageClassification.from_pretrained`
loads it with no custom code); beside it go the head (`IISHeadConfig`: `iis_config.json`,
`iis_head.safetensors`) and the concept bank. `from_pretrained(folder)` reassembles all of it;
`from_pretrained(backbone, head_folder)` puts a saved head onto a backbone you already have, as
`PeftModel.from_pretrained(base_model, adapter)` does. `push_to_hub` comes from
`huggingface_hub.ModelHubMixin`.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from torch import nn
from transformers.utils import ModelOutput

from ..concepts import CONFIG_NAME as BANK_CONFIG_NAME
from ..concepts import ConceptBank
from ..config import DEFAULT_LOSS_SPARSITY_RATIOS, ratio_index
from ..features import capture_classifier_input
from ..features.backbones import classifier_input_dim, has_classifier
from ..files import FILE_MODE, save_safetensors_atomic
from ..heads import InterpretationHeads
from ..hub import ArtefactHubMixin, public_name
from ..reading import read_safetensors
from .head_config import DEFAULT_IIS_WEIGHT, IIS_HEAD_NAME, IISHeadConfig, checked_labels, head_folder

if TYPE_CHECKING:
    from transformers import PreTrainedModel

HEAD_PREFIX = "iis_head."
BACKBONE_PREFIX = "backbone."


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


class IISModelForImageClassification(
    nn.Module, ArtefactHubMixin, library_name="iis-hf", tags=["iis-hf", "interpretability"]
):
    """A `*ForImageClassification` backbone plus interpretation heads at `sparsity_ratios`.

    Args:
        backbone: a transformers image-classification model, or a PEFT model wrapping one (its
            classifier input is the representation the concepts interpret).
        concepts: the `ConceptBank` the heads project onto (its dimension must match).
        sparsity_ratios: the ratios the interpretability loss uses (averaged over them).
        iis_weight: lambda in ``loss = CE(model) + lambda * CE(interpretation heads)``.
        seed: initialises the heads (independently of the global RNG, so wrapping a model does
            not change the random stream a plain Trainer run would see).
        representation_module: the submodule whose input is the representation, when the backbone's
            classifier is not found by name (`iis_hf.features.backbones.classifier_name`: `classifier`,
            `cls_classifier`, `head`, `fc`, `score`, a timm model's `get_classifier()`).
    """

    main_input_name = "pixel_values"
    commit_message = "Upload IIS model"
    # compute_loss in IISTrainer normalises the loss itself; never inject num_items_in_batch.
    accepts_loss_kwargs = False

    def __init__(
        self,
        backbone: PreTrainedModel,
        concepts: ConceptBank,
        sparsity_ratios: Sequence[float] = DEFAULT_LOSS_SPARSITY_RATIOS,
        iis_weight: float = DEFAULT_IIS_WEIGHT,
        seed: int = 0,
        representation_module: str | None = None,
    ):
        super().__init__()
        if not hasattr(backbone, "config") or not has_classifier(backbone, representation_module):
            raise ValueError(
                f"{type(backbone).__name__} is not an image-classification model whose classifier iis-hf finds "
                "(load it with AutoModelForImageClassification, or name the submodule whose input is the "
                "representation with representation_module=)"
            )
        if not isinstance(concepts, ConceptBank):
            raise TypeError(f"concepts must be a ConceptBank, got {type(concepts).__name__}")
        if iis_weight < 0:
            raise ValueError(f"iis_weight must be >= 0, got {iis_weight}")
        labels = backbone.config.num_labels
        if labels is None:
            raise ValueError(f"{type(backbone).__name__}'s config names no classes (its id2label is None)")
        num_labels = int(labels)
        self.backbone = backbone
        self.concept_bank = concepts
        self.iis_weight = float(iis_weight)
        self.representation_module = representation_module
        # The head's own copy of the projection (a bank's projection shares the bank's tensors): loading
        # a checkpoint into the head, or refreshing its concepts, never writes into `concepts`.
        projection = copy.deepcopy(concepts.projection())
        self.iis_head = InterpretationHeads(projection, num_labels, sparsity_ratios, seed=seed)
        in_features = classifier_input_dim(backbone, representation_module)
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

    @property
    def device(self) -> torch.device:
        """Where the weights are (what `transformers.pipeline` moves inputs to)."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def can_generate(self) -> bool:  # asked by transformers.pipeline
        return False

    def gradient_checkpointing_enable(self, **kwargs):
        self.backbone.gradient_checkpointing_enable(**kwargs)

    def gradient_checkpointing_disable(self):
        self.backbone.gradient_checkpointing_disable()

    @property
    def supports_gradient_checkpointing(self) -> bool:
        return bool(getattr(self.backbone, "supports_gradient_checkpointing", False))

    @property
    def head_config(self) -> IISHeadConfig:
        """What `iis_config.json` says about this model's head."""
        id2label, label2id = adapter_class_names(self.backbone, int(self.iis_head.weight.shape[1]))
        return IISHeadConfig(
            sparsity_ratios=self.sparsity_ratios,
            num_classes=int(self.iis_head.weight.shape[1]),
            num_concepts=self.iis_head.num_concepts,
            in_features=self.concept_bank.dim,
            iis_weight=self.iis_weight,
            base_model_name_or_path=public_name(self.name_or_path or "") or None,  # no local path: pushed
            representation_module=self.representation_module,
            id2label=id2label,
            label2id=label2id,
        )

    # -- forward -----------------------------------------------------------------------------------
    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, return_dict: bool = True
    ) -> IISImageClassifierOutput:
        with capture_classifier_input(self.backbone, self.representation_module) as holder:
            logits = self.backbone(pixel_values=pixel_values, return_dict=True).logits
        representations = holder.value
        assert representations is not None  # the capture hook ran in the backbone's forward
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
        return classification, self.interpretation_loss(iis_logits, labels, reduction)

    def interpretation_loss(
        self, iis_logits, labels, reduction: str = "mean", label_smoothing: float = 0.0
    ) -> torch.Tensor:
        """CE of the interpretation heads (R, B, K), averaged over the R loss ratios.

        `label_smoothing` is PyTorch's, which is the formula of transformers' `LabelSmoother`.
        """
        num_ratios = iis_logits.shape[0]
        per_ratio = F.cross_entropy(
            iis_logits.float().reshape(-1, iis_logits.shape[-1]),
            labels.repeat(num_ratios),
            reduction="none",
            label_smoothing=label_smoothing,
        ).view(num_ratios, -1)
        interpretation = per_ratio.mean(0)
        return interpretation.mean() if reduction == "mean" else interpretation.sum()

    @torch.no_grad()
    def replace_concept_bank(self, bank: ConceptBank) -> None:
        """Interpret along `bank` from now on: the head keeps its weights, its projection becomes `bank`'s.

        For a bank rebuilt from the same image parts (`IISTrainer`'s concept refresh), concept i is
        still the same part, so the head's weight for it stays meaningful. Copied in place: the
        buffers stay on their device and inside any wrapper (DDP) that holds them.
        """
        current = self.iis_head.concepts.state_dict()
        fresh = bank.projection().state_dict()
        if set(fresh) != set(current) or any(fresh[k].shape != current[k].shape for k in current):
            raise ValueError(
                f"cannot replace the {self.concept_bank!r} of the head with {bank!r}: a replacement "
                "needs the same kind, number and dimension of concepts"
            )
        for name, tensor in current.items():
            tensor.copy_(fresh[name])
        self.concept_bank = bank

    @torch.no_grad()
    def predict_from_concepts(self, pixel_values: torch.Tensor, sparsity_ratio: float | None = None):
        """Class probabilities from the interpretation head at one of the trained ratios (B, K)."""
        index = ratio_index(self.sparsity_ratios, sparsity_ratio)
        output = self(pixel_values=pixel_values)
        return output.iis_logits[index].softmax(-1)

    # -- saving --------------------------------------------------------------------------------------
    def head_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.iis_head.state_dict().items()}

    def save_head(self, save_directory: str | os.PathLike, head_state: dict | None = None) -> None:
        """Write the head, its config and the concept bank (not the backbone) into a folder."""
        save_directory = Path(save_directory)
        save_safetensors_atomic(head_state or self.head_state_dict(), save_directory / IIS_HEAD_NAME)
        self.concept_bank._save_pretrained(save_directory)
        self.head_config.save_pretrained(save_directory)

    def _save_pretrained(self, save_directory: Path, state_dict: dict | None = None) -> None:
        """The backbone with its own `save_pretrained` (standard format), and the head beside it."""
        backbone_state = head_state = None
        if state_dict is not None:  # e.g. gathered by FSDP/DeepSpeed: split it by prefix
            backbone_state = {
                k[len(BACKBONE_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(BACKBONE_PREFIX)
            }
            head_state = {
                k[len(HEAD_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(HEAD_PREFIX)
            }
        self.backbone.save_pretrained(save_directory, state_dict=backbone_state)
        for weights in Path(save_directory).glob("*.safetensors"):  # safetensors writes them 0600
            os.chmod(weights, FILE_MODE)
        self.save_head(save_directory, head_state)

    def generate_model_card(self, *args, repo_id: str | None = None, result=None, **kwargs) -> ModelCard:
        """The model card pushed with the model (`iis_hf.model_card`): head, concepts, IIS if known."""
        from ..model_card import iis_model_card

        return iis_model_card(self, repo_id=repo_id, result=result, **kwargs)

    # -- loading --------------------------------------------------------------------------------------
    def load_head(self, folder: str | os.PathLike) -> None:
        """Load the head weights saved by `save_head` (strict: every tensor must match)."""
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
        """Restore backbone and head weights, and the concept bank, from a folder written by
        `save_pretrained` (strict; the bank may have been refreshed during training).

        The backbone goes through its own `from_pretrained`: transformers 5 stores some weights
        under checkpoint names that differ from the module's (e.g. ViT's fused attention), and only
        its loader converts them.
        """
        if is_peft_model(self.backbone):
            load_adapter_weights(self.backbone, folder)
        else:
            try:
                saved = type(self.backbone).from_pretrained(folder, config=self.backbone.config)
            except OSError as err:
                raise ValueError(f"{folder} holds no backbone weights ({err})") from err
            self.backbone.load_state_dict(saved.state_dict(), strict=True)
        self.load_head(folder)
        if (Path(folder) / BANK_CONFIG_NAME).is_file():  # the bank the head's projection came from
            self.concept_bank = ConceptBank.from_pretrained(folder)

    @classmethod
    def from_pretrained(  # type: ignore[override]  # PEFT-style (backbone, head): not the mixin's one-repo loader
        cls,
        pretrained: str | os.PathLike | PreTrainedModel,
        head_path_or_id: str | os.PathLike | None = None,
        *,
        revision: str | None = None,
        token: str | None = None,
        **backbone_kwargs,
    ) -> IISModelForImageClassification:
        """Reassemble backbone, concept bank and head, from one folder / Hub repository or two.

        ``from_pretrained("out/finetuned")`` loads everything saved together;
        ``from_pretrained(backbone, "me/vit-iis-head")`` puts a saved head (and its bank) onto a
        backbone you already have (an instance, a folder or a Hub id), like PEFT's
        ``PeftModel.from_pretrained(base_model, adapter_id)``.
        """
        source = head_path_or_id if head_path_or_id is not None else pretrained
        if isinstance(source, nn.Module):
            raise TypeError("pass the folder or Hub id of the head as head_path_or_id")
        folder = head_folder(source, revision=revision, token=token)
        config = IISHeadConfig.read(folder)
        bank = ConceptBank.from_pretrained(folder)
        backbone = (
            pretrained
            if isinstance(pretrained, nn.Module)
            else _load_backbone(pretrained, revision, token, backbone_kwargs, config)
        )
        if int(getattr(backbone.config, "num_labels", -1)) != config.num_classes:
            raise ValueError(
                f"the head predicts {config.num_classes} classes but the backbone has "
                f"{getattr(backbone.config, 'num_labels', None)} labels: load the backbone the head was trained with"
            )
        model = cls(
            backbone,
            bank,
            config.sparsity_ratios,
            iis_weight=config.iis_weight,
            representation_module=config.representation_module,
        )
        model.load_head(folder)
        return model.eval()


def is_peft_model(backbone: nn.Module) -> bool:
    """A PEFT-wrapped backbone (`peft.PeftModel`): its checkpoint holds adapters, not full weights."""
    return hasattr(backbone, "peft_config") and callable(getattr(backbone, "load_adapter", None))


def load_adapter_weights(backbone: nn.Module, folder: str | os.PathLike) -> None:
    """Load every adapter of a PEFT backbone from the folder its `save_pretrained` wrote (strict)."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    adapters: dict[str, Any] = getattr(backbone, "peft_config", {})  # is_peft_model: it has one
    for name in adapters:
        where = Path(folder) if name == "default" else Path(folder) / name
        try:
            weights = load_peft_weights(str(where), device="cpu")
        except (OSError, ValueError) as err:
            raise ValueError(f"{where} holds no weights for the adapter {name!r} ({err})") from err
        result = set_peft_model_state_dict(backbone, weights, adapter_name=name)
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise ValueError(f"{where}: adapter weights that do not fit the model: {unexpected[:5]}")


def adapter_class_names(
    backbone: nn.Module, num_classes: int
) -> tuple[dict[str, str] | None, dict[str, int] | None]:
    """A PEFT backbone's `id2label` / `label2id`, for `iis_config.json`: its adapter folder has no
    config.json, and its base model's config names the base's classes, not the trained classifier's.
    (None, None) for any other backbone."""
    if not is_peft_model(backbone):
        return None, None
    config = getattr(backbone, "config", None)
    try:
        id2label, label2id = checked_labels(
            getattr(config, "id2label", None), getattr(config, "label2id", None) or None, num_classes
        )
    except ValueError:  # names that do not fit the classifier: never fail a save, loading names them LABEL_i
        return None, None
    return id2label, label2id


def has_adapter(name: str | os.PathLike, revision: str | None, token: str | None) -> bool:
    """Whether a folder / Hub id holds a PEFT adapter (`adapter_config.json`) instead of full weights."""
    from transformers.utils import find_adapter_config_file

    try:
        return find_adapter_config_file(str(name), revision=revision, token=token) is not None
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def transformers_errors_only() -> Iterator[None]:
    """Hold back transformers' warnings: its load report calls the classifier an adapter replaces
    "reinitialised", and `_load_adapter_base` checks the same keys and says what is wrong itself."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)


def _load_adapter_backbone(name: str, revision, token, kwargs, head: IISHeadConfig) -> PreTrainedModel:
    """A PEFT adapter folder's backbone: its base model, made to predict the head's classes, then the adapter.

    A classifier trained on new labels is saved in the adapter (`modules_to_save`), but the base
    model's config still has the base's classes, so a plain load fails with a size mismatch. This is
    PEFT's recipe for that case (the base with the trained `num_labels` / `id2label` and
    `ignore_mismatched_sizes=True`, then `PeftModel.from_pretrained`), with the check that every
    tensor the base could not give is one the adapter replaces.
    """
    try:
        from peft import PeftConfig, PeftModel
    except ImportError as err:
        raise ValueError(f"{name} holds a PEFT adapter: install peft to load it") from err
    try:
        adapter = PeftConfig.from_pretrained(name, revision=revision, token=token)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the PEFT adapter config of {name!r}: {err}") from err
    base = _load_adapter_base(adapter, token, {**head.backbone_label_settings(), **kwargs})
    peft_model = PeftModel.from_pretrained(base, name, config=adapter, revision=revision, token=token)
    return cast("PreTrainedModel", peft_model)  # PEFT forwards the PreTrainedModel API to its base


def _load_adapter_base(adapter, token, kwargs) -> PreTrainedModel:
    """The base model of a PEFT adapter; a ValueError when a tensor it lacks is not the adapter's."""
    from transformers import AutoModelForImageClassification

    base_name = adapter.base_model_name_or_path
    if not base_name:
        raise ValueError(
            "the PEFT adapter config names no base_model_name_or_path: cannot load its base model"
        )
    kwargs = {"ignore_mismatched_sizes": True, **kwargs, "output_loading_info": True}
    try:
        with transformers_errors_only():
            base, info = AutoModelForImageClassification.from_pretrained(
                str(base_name), revision=adapter.revision, token=token, trust_remote_code=False, **kwargs
            )
    except OSError as err:
        raise ValueError(f"cannot load the adapter's base model {str(base_name)!r}: {err}") from err
    replaced = list(adapter.modules_to_save or [])
    mismatched = {k if isinstance(k, str) else k[0] for k in info["mismatched_keys"]}  # (key, saved, model)
    not_loaded = mismatched | set(info["missing_keys"])
    left = sorted(k for k in not_loaded if not replaced_by_adapter(k, replaced))
    if left:
        raise ValueError(
            f"the base model {str(base_name)!r} does not fit the adapter: {left[:5]} neither load from it nor are "
            f"among the adapter's modules_to_save ({replaced}); load the base model the adapter was trained on"
        )
    return base


def replaced_by_adapter(key: str, modules_to_save: list[str]) -> bool:
    """Whether a tensor of the base model belongs to a module the adapter saves whole (`modules_to_save`)."""
    module = "." + key.rsplit(".", 1)[0]
    return any(module.endswith(f".{name}") for name in modules_to_save)


def _load_backbone(
    name: str | os.PathLike, revision, token, kwargs, head: IISHeadConfig | None = None
) -> PreTrainedModel:
    """A folder / Hub id's backbone: a standard checkpoint, or a PEFT adapter over its base model."""
    from transformers import AutoModelForImageClassification

    if head is not None and has_adapter(name, revision, token):
        return _load_adapter_backbone(str(name), revision, token, kwargs, head)
    try:
        return AutoModelForImageClassification.from_pretrained(
            str(name), revision=revision, token=token, trust_remote_code=False, **kwargs
        )
    except OSError as err:
        raise ValueError(f"cannot load the backbone from {str(name)!r}: {err}") from err
