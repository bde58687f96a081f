"""Concept banks: the C directions a representation is interpreted along, with where they came from.

A `ConceptBank` holds the concept vectors (or, for text concepts, a learned projection), a name
per concept, its source (dataset row, pixel box), a thumbnail of that source, and how the bank was
built. How each kind is built lives beside this module (`prototypes`, `text`); this one is the
schema, the files and the Hub. On disk a bank is one safetensors file (vectors, thumbnails; or a
text bank's projection) and one JSON file (names, sources, provenance); `push_to_hub` comes from
`huggingface_hub.ModelHubMixin`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeAlias, cast

import torch
from huggingface_hub import ModelCard, ModelCardData
from torch import nn

from ..config import ConceptsConfig, ExtractionConfig, given_settings, renamed_settings
from ..data_types import ConceptVectors
from ..files import save_safetensors_atomic, write_json_atomic
from ..hub import ArtefactHubMixin, download_files, public_record
from ..reading import read_json, read_safetensors, refuse_pickles
from ..version import __version__
from .projection import (
    PROJECTION_KEYS,
    PROJECTION_TYPE,
    ConceptProjection,
    FixedConcepts,
    LinearConcepts,
    check_projection_state,
)

WEIGHTS_NAME = "concept_bank.safetensors"
CONFIG_NAME = "concept_bank.json"
FORMAT = "iis-hf-concept-bank"
PROJECTION_PREFIX = "projection."
FORMAT_VERSION = 1  # banks of fixed concept vectors (readable by every iis-hf release)
FORMAT_VERSION_PROJECTION = 2  # banks carrying a learned projection (text concepts)
# The `ConceptsConfig` fields `from_text` takes as keywords (tests/test_signatures.py: every field is one
# builder's keyword, or named there as no builder's).
TEXT_CONCEPT_SETTINGS = ("concept_file", "clip_cutoff", "interpretability_cutoff", "projection_epochs")
CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ repo_id | default("Concept bank", true) }}

An [iis-hf](https://github.com/iis-hf/iis-hf) concept bank: {{ num_concepts }} {{ kind }} concepts of
dimension {{ dim }}, the directions along which a vision model's representation is interpreted when
its Inherent Interpretability Score (IIS) is measured.

```python
import iis_hf

bank = iis_hf.ConceptBank.from_pretrained("{{ repo_id | default("path/to/bank", true) }}")
```
"""


ConceptsLike: TypeAlias = "ConceptBank | ConceptProjection | ConceptVectors | str | os.PathLike[str]"
"""What a head takes as its concepts: a bank, its folder or Hub id, (C, D) vectors, or a projection."""


def as_concept_projection(concepts: ConceptsLike) -> ConceptProjection:
    """A module mapping (B, D) representations to (B, C) raw concept activations.

    `concepts` may be a `ConceptBank`, its folder or Hub id, a (C, D) array of vectors, or already a
    projection module (e.g. `LearnedConcepts`).
    """
    if isinstance(concepts, ConceptProjection):
        return concepts
    if isinstance(concepts, nn.Module) and hasattr(concepts, "num_concepts"):
        return cast(ConceptProjection, concepts)  # another module that projects onto concepts
    if isinstance(concepts, ConceptBank):
        return concepts.projection()
    if isinstance(concepts, (str, os.PathLike)):
        return ConceptBank.from_pretrained(concepts).projection()
    return FixedConcepts(concepts)


@dataclass
class ConceptBank(ArtefactHubMixin, library_name="iis-hf", tags=["iis-hf", "concept-bank"]):
    """Concept vectors with their names and provenance.

    Attributes:
        vectors: (C, D) concept directions in representation space (rows L2-normalised). For a
            bank with a learned projection these are the normalised rows of its weight.
        names: one readable name per concept.
        kind: "prototype-patches", "prototype-segments", "cluster", "text" or "custom".
        sources: per concept, where it came from (dataset row, label, pixel box of the part).
        thumbnails: optional (C, 3, h, w) uint8 pictures of each concept's source part, so an
            explanation can show a concept without the original dataset.
        provenance: how the bank was built (model, dataset fingerprint, settings, versions).
        projection_state: None for fixed concept vectors (activations ``x @ vectors.T``), or a learned
            projection ``{"weight": (C, D), "mean": (C,), "std": (C,)}`` whose activations are
            ``(x @ weight.T - mean) / std`` (text concepts; see `ConceptBank.from_text`).
    """

    vectors: torch.Tensor
    names: list[str]
    kind: str = "custom"
    sources: list[dict[str, Any]] | None = None
    thumbnails: torch.Tensor | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    projection_state: dict[str, torch.Tensor] | None = None

    def __post_init__(self):
        if self.projection_state is not None:
            weight, mean, std = check_projection_state(self.projection_state)
            self.projection_state = {"weight": weight, "mean": mean, "std": std}
            if self.vectors is None:
                self.vectors = weight
            elif tuple(torch.as_tensor(self.vectors).shape) != tuple(weight.shape):
                raise ValueError(
                    f"vectors have shape {tuple(torch.as_tensor(self.vectors).shape)} but the projection "
                    f"weight has shape {tuple(weight.shape)}"
                )
            self.vectors = weight  # the directions of a learned projection are its (normalised) rows
        self.vectors = FixedConcepts(self.vectors).vectors
        self.names = [str(n) for n in self.names]
        if len(self.names) != self.num_concepts:
            raise ValueError(
                f"{len(self.names)} names for {self.num_concepts} concept vectors: give one name each"
            )
        if self.sources is not None and len(self.sources) != self.num_concepts:
            raise ValueError(f"{len(self.sources)} sources for {self.num_concepts} concepts")
        if self.thumbnails is not None:
            self.thumbnails = torch.as_tensor(self.thumbnails)
            if self.thumbnails.ndim != 4 or self.thumbnails.shape[0] != self.num_concepts:
                raise ValueError(f"thumbnails must be (C, 3, h, w) with C={self.num_concepts}")
            self.thumbnails = self.thumbnails.to(torch.uint8)

    @property
    def num_concepts(self) -> int:
        return self.vectors.shape[0]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def __len__(self) -> int:
        return self.num_concepts

    def __repr__(self) -> str:
        return f"ConceptBank(kind={self.kind!r}, num_concepts={self.num_concepts}, dim={self.dim})"

    @property
    def has_projection(self) -> bool:
        """Whether activations come from a learned projection (text concepts) rather than ``x @ P.T``."""
        return self.projection_state is not None

    def projection(self) -> ConceptProjection:
        """The module that turns representations into raw concept activations.

        `FixedConcepts` (``x @ vectors.T``) for prototype, cluster and custom banks; `LinearConcepts`
        (standardised ``x @ weight.T``) for a bank with a learned projection.
        """
        if self.projection_state is not None:
            return LinearConcepts(**self.projection_state)
        return FixedConcepts(self.vectors)

    def fingerprint(self) -> str:
        """sha256 of what defines the activations (the vectors, or the projection): two banks with the
        same fingerprint interpret a representation identically, whatever their names."""
        digest = hashlib.sha256()
        tensors = self.projection_state if self.projection_state is not None else {"vectors": self.vectors}
        for name in sorted(tensors):
            tensor = tensors[name].detach().cpu().float().contiguous()
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            digest.update(tensor.numpy().tobytes())
        return digest.hexdigest()

    def subset(self, indices) -> ConceptBank:
        indices = [int(i) for i in indices]
        return ConceptBank(
            vectors=self.vectors[indices],
            names=[self.names[i] for i in indices],
            kind=self.kind,
            sources=[self.sources[i] for i in indices] if self.sources is not None else None,
            thumbnails=self.thumbnails[indices] if self.thumbnails is not None else None,
            provenance=dict(self.provenance),
            projection_state={k: v[indices] for k, v in self.projection_state.items()}
            if self.projection_state is not None
            else None,
        )

    commit_message = "Upload concept bank"

    # ------------------------------------------------------------------ building
    # The builders take every setting they use as a keyword (tests/test_signatures.py); a setting left
    # None is "its config field's default" (ConceptsConfig's, ExtractionConfig's), read, never copied.
    @classmethod
    def from_prototypes(  # noqa: PLR0913
        cls,
        model: Any,
        dataset: Any,
        *,
        parts: str = "patches",
        images_per_class: int | None = None,
        num_concepts: int | None = None,
        grid: int = 4,
        image_processor: Any = None,
        image_column: str | None = None,
        label_column: str | None = None,
        layer: int | None = None,
        pooling: str | None = None,
        batch_size: int | None = None,
        precision: str | None = None,
        preprocessing: str | None = None,
        device: Any = None,
        seed: int = 0,
        progress: bool = True,
    ) -> ConceptBank:
        """Embed image parts with the backbone itself: each part's representation is a concept.

        Args:
            model: the vision model (instance, Hub id or folder) whose representation is interpreted.
            dataset: a labelled `datasets` image dataset.
            parts: "patches" (a `grid` x `grid` grid of cells, each resized to the model's input size)
                or "segments" (SLIC superpixels at 10, 20 and 30 segments, the 5 largest of each,
                near-duplicates with Jaccard > 0.5 dropped, cropped to their box on grey 117).
            images_per_class: images drawn at random (seeded) from each class (None: ConceptsConfig's).
            num_concepts: keep a random subset of this many prototypes (None: all of them).
            grid: cells per side for "patches".
            image_processor: the model's processor (default: loaded with the model).
            image_column, label_column: the dataset's columns (default: detected).
            layer, pooling, batch_size, precision, preprocessing: how the parts are embedded,
                `ExtractionConfig`'s fields (None: its default).
            device, seed, progress: where it runs, what seeds the draw, whether bars show.
        """
        from .prototypes import prototype_fields

        extraction = given_settings(ExtractionConfig, locals(), {})
        fields = prototype_fields(
            model, dataset, parts=parts, num_concepts=num_concepts, grid=grid,
            images_per_class=ConceptsConfig().images_per_class if images_per_class is None else images_per_class,
            image_processor=image_processor, image_column=image_column, label_column=label_column,
            device=device, seed=seed, progress=progress, **extraction,
        )  # fmt: skip
        return cls(**fields)

    @classmethod
    def from_clusters(cls, library, num_concepts: int, *, seed: int = 0) -> ConceptBank:
        """k-means (scikit-learn) over a prototype library; the normalised centres are the concepts.

        `library` is a `ConceptBank` (each centre is then named after, and pictured by, its nearest
        prototype) or a (M, D) array of vectors.
        """
        from .prototypes import cluster_fields

        return cls(**cluster_fields(library, num_concepts, seed=seed))

    @classmethod
    def from_text(  # noqa: PLR0913
        cls,
        concepts: Sequence[str] | str | os.PathLike | None = None,
        clip_model: Any = None,
        *,
        config: ConceptsConfig | None = None,
        concept_file: str | None = None,
        clip_cutoff: float | None = None,
        interpretability_cutoff: float | None = None,
        projection_epochs: int | None = None,
        backbone: Any = None,
        probe_dataset: Any = None,
        features: Any = None,
        clip_similarities: Any = None,
        clip_processor: Any = None,
        image_processor: Any = None,
        image_column: str | None = None,
        prompt: str | None = None,
        top_k: int | None = None,
        holdout_fraction: float | None = None,
        learning_rate: float | None = None,
        projection_batch_size: int | None = None,
        layer: int | None = None,
        pooling: str | None = None,
        batch_size: int | None = None,
        precision: str | None = None,
        device: Any = None,
        seed: int = 0,
        progress: bool = True,
        **deprecated: Any,
    ) -> ConceptBank:
        """Text concepts: words scored by CLIP, with a projection from the backbone learned to match
        (the recipe: `iis_hf.concepts.text`). The bank's kind is "text"; `projection()` is its map.

        Args:
            concepts: the words, a list or a file with one per line (None: `concept_file`).
            clip_model: a CLIPModel, Hub id or folder with its processor (None: the config's).
            config: the settings below as a `ConceptsConfig` (default: ConceptsConfig's, kind "text").
            concept_file, clip_cutoff, interpretability_cutoff, projection_epochs: `ConceptsConfig`'s
                fields; each overrides `config` (None: the config's value).
            backbone, probe_dataset: the model and the images the projection is fitted on; not needed
                when `features` (the probe images' representations) and `clip_similarities`
                (N_images x num_words) are given.
            clip_processor, image_processor, image_column: as their names say (default: loaded, detected).
            prompt, top_k, holdout_fraction, learning_rate, projection_batch_size: the recipe's own
                knobs, `iis_hf.concepts.text.TextRecipe`'s fields (None: its default).
            layer, pooling, batch_size, precision: the backbone's extraction (None: TextRecipe's).
            device, seed, progress: where it runs, what seeds the fit, whether bars show.
            deprecated: `epochs=` (now `projection_epochs=`), for one release with a FutureWarning.
        """
        arguments = dict(locals())  # first: the parameters alone
        from .text import text_concept_fields, text_settings

        passed = ("cls", "concepts", "clip_model", "config", "deprecated")
        given = {k: v for k, v in arguments.items() if k not in passed and v is not None}
        keywords = renamed_settings(
            "ConceptBank.from_text", {**given, **deprecated}, "ConceptBank.from_text", stacklevel=3
        )
        overrides = {k: keywords.pop(k) for k in TEXT_CONCEPT_SETTINGS if k in keywords}
        config = (
            replace(config, **overrides)
            if config is not None
            else ConceptsConfig(concept_kind="text", **overrides)
        )
        return cls(**text_concept_fields(*text_settings(concepts, clip_model, config, **keywords)))

    # ------------------------------------------------------------------ saving and loading
    def generate_model_card(self, *args, repo_id: str | None = None, **kwargs) -> ModelCard:
        """The bank's README: what it holds and how to load it (a `huggingface_hub` card template)."""
        return ModelCard.from_template(
            ModelCardData(library_name="iis-hf", tags=["iis-hf", "concept-bank", "interpretability"]),
            template_str=CARD_TEMPLATE,
            repo_id=repo_id,
            num_concepts=self.num_concepts,
            kind=self.kind,
            dim=self.dim,
            **kwargs,
        )

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write `concept_bank.safetensors` and `concept_bank.json` (each atomically)."""
        save_directory = Path(save_directory)
        if self.projection_state is not None:
            # No "vectors" tensor: a reader that does not know projections fails instead of silently
            # using the normalised rows, which are not the activations this bank defines.
            tensors = {PROJECTION_PREFIX + k: v for k, v in self.projection_state.items()}
        else:
            tensors = {"vectors": self.vectors}
        if self.thumbnails is not None:
            tensors["thumbnails"] = self.thumbnails
        save_safetensors_atomic(tensors, save_directory / WEIGHTS_NAME)
        extra = {"projection": PROJECTION_TYPE} if self.projection_state is not None else {}
        write_json_atomic(
            save_directory / CONFIG_NAME,
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION_PROJECTION if extra else FORMAT_VERSION,
                **extra,
                "kind": self.kind,
                "num_concepts": self.num_concepts,
                "dim": self.dim,
                "names": self.names,
                # a local folder by its base name (`public_record`): the file may be pushed
                "sources": public_record(self.sources),
                "provenance": public_record(self.provenance),
                "iis_hf_version": __version__,
            },
        )

    @classmethod
    def from_pretrained(  # type: ignore[override]  # files only: the mixin's cache and download options do not apply
        cls,
        path_or_repo_id: str | os.PathLike,
        *,
        subfolder: str | None = None,
        revision: str | None = None,
        token: str | None = None,
    ) -> ConceptBank:
        """Load a bank from a local folder or a Hub repository (safetensors + JSON only)."""
        folder = Path(path_or_repo_id) / (subfolder or "")
        if not folder.is_dir():
            folder = download_files(
                str(path_or_repo_id),
                (CONFIG_NAME, WEIGHTS_NAME),
                what="concept bank",
                subfolder=subfolder,
                revision=revision,
                token=token,
            )
        refuse_pickles(folder, "concept bank", stems=(Path(CONFIG_NAME).stem,))
        config = _read_bank_config(folder)
        tensors = read_safetensors(folder / WEIGHTS_NAME, "concept bank weights")
        projection_state = _projection_state(config.get("projection"), tensors, folder)
        vectors = tensors.get("vectors")
        if vectors is None:  # a projection bank (checked above): its directions are the weight's rows
            assert projection_state is not None
            vectors = projection_state["weight"]
        bank = cls(
            vectors=vectors,
            projection_state=projection_state,
            names=config["names"],
            kind=str(config.get("kind", "custom")),
            sources=config.get("sources"),
            thumbnails=tensors.get("thumbnails"),
            provenance=config.get("provenance") or {},
        )
        for key, actual in (("num_concepts", bank.num_concepts), ("dim", bank.dim)):
            value = config.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"{folder / CONFIG_NAME}: {key!r} must be an integer, found {value!r} "
                    f"({type(value).__name__}); re-save the bank with save_pretrained()"
                )
            if value != actual:
                raise ValueError(
                    f"{folder}: {CONFIG_NAME} says {key} = {value} but {WEIGHTS_NAME} holds "
                    f"{bank.num_concepts} x {bank.dim}: the two files come from different banks"
                )
        return bank


def _read_bank_config(folder: Path) -> dict[str, Any]:
    """`concept_bank.json` checked: our format, names as strings, sources as objects, a version we read."""
    config = read_json(folder / CONFIG_NAME, "concept bank config")
    if config.get("format") != FORMAT:
        raise ValueError(
            f"{folder / CONFIG_NAME} is not an iis-hf concept bank (format={config.get('format')!r})"
        )
    names = config.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{folder / CONFIG_NAME}: 'names' must be a list of strings")
    sources = config.get("sources")
    if sources is not None and not (isinstance(sources, list) and all(isinstance(s, dict) for s in sources)):
        raise ValueError(f"{folder / CONFIG_NAME}: 'sources' must be a list of objects or null")
    version = config.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION_PROJECTION:
        raise ValueError(
            f"{folder / CONFIG_NAME} has format_version {version!r}, newer than this iis-hf "
            f"({__version__}) reads: upgrade iis-hf"
        )
    return config


def _projection_state(
    projection: Any, tensors: dict[str, torch.Tensor], folder: Path
) -> dict[str, torch.Tensor] | None:
    """The learned projection's tensors of a text bank (None for a bank of plain vectors, which then
    must hold a 'vectors' tensor)."""
    if projection is None:
        if "vectors" not in tensors:
            raise ValueError(f"{folder / WEIGHTS_NAME} has no 'vectors' tensor")
        return None
    if projection != PROJECTION_TYPE:
        raise ValueError(f"{folder / CONFIG_NAME}: unknown concept projection {projection!r}")
    missing = [PROJECTION_PREFIX + k for k in PROJECTION_KEYS if PROJECTION_PREFIX + k not in tensors]
    if missing:
        raise ValueError(f"{folder / WEIGHTS_NAME} lacks the projection tensors {missing}")
    return {k: tensors[PROJECTION_PREFIX + k] for k in PROJECTION_KEYS}
