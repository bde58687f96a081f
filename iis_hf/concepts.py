"""Concept banks: the C directions a representation is interpreted along, with where they came from.

A prototype concept is the backbone's own embedding of an image part (a cell of a 4 x 4 grid or a
SLIC superpixel); a cluster concept is a k-means centre of many prototypes; a text concept is a word
whose activation is a learned linear projection of the representation, fitted to CLIP's image-text
similarities and standardised (built in `iis_hf.text_concepts`). On disk a bank is one safetensors
file (vectors, thumbnails; or a text bank's projection) and one JSON file (names, sources,
provenance).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .files import read_json, read_safetensors, refuse_pickles, save_safetensors_atomic, write_json_atomic
from .version import __version__

WEIGHTS_NAME = "concept_bank.safetensors"
CONFIG_NAME = "concept_bank.json"
FORMAT = "iis-hf-concept-bank"
PROTOTYPE_KINDS = ("prototype-patches", "prototype-segments")
THUMBNAIL_SIZE = 32
GREY_FILL = 117
SLIC_SETTINGS = (10, 20, 30)


PROJECTION_TYPE = "linear-standardized"
PROJECTION_PREFIX = "projection."
PROJECTION_KEYS = ("weight", "mean", "std")
FORMAT_VERSION = 1  # banks of fixed concept vectors (readable by every iis-hf release)
FORMAT_VERSION_PROJECTION = 2  # banks carrying a learned projection (text concepts)


class ConceptProjection(nn.Module):
    """Maps (B, D) representations to (B, C) raw concept activations through a (C, D) matrix."""

    def matrix(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def num_concepts(self) -> int:
        return self.matrix().shape[0]

    @property
    def dim(self) -> int:
        return self.matrix().shape[1]

    def check_dim(self, representations: torch.Tensor) -> torch.Tensor:
        if representations.shape[-1] != self.dim:
            raise ValueError(
                f"representations have dimension {representations.shape[-1]} but the concepts have {self.dim}: "
                "the concept bank was built for another model (or another layer)"
            )
        return representations.to(self.matrix().dtype)


class FixedConcepts(ConceptProjection):
    """Activations ``x @ P.T`` for fixed concept rows P, L2-normalised here whatever the caller gave."""

    def __init__(self, vectors: torch.Tensor):
        super().__init__()
        vectors = torch.as_tensor(np.asarray(vectors) if not torch.is_tensor(vectors) else vectors)
        if vectors.ndim != 2 or vectors.shape[0] < 1:
            raise ValueError(f"concepts must be a (C, D) array, got shape {tuple(vectors.shape)}")
        vectors = vectors.detach().float()
        if not torch.isfinite(vectors).all():
            raise ValueError("concept vectors contain NaN or inf")
        if (vectors.norm(dim=1) == 0).any():
            raise ValueError("a concept vector is all zeros and cannot be normalised; remove it")
        self.register_buffer("vectors", normalize_rows(vectors))

    def matrix(self) -> torch.Tensor:
        return self.vectors

    def forward(self, representations: torch.Tensor) -> torch.Tensor:
        return self.check_dim(representations) @ self.vectors.T


class LinearConcepts(ConceptProjection):
    """Standardised activations ``(x @ W.T - mean) / std`` of a learned projection (text concepts).

    Unlike `FixedConcepts` the rows of W are *not* normalised: W, mean and std were fitted together
    (`iis_hf.text_concepts`), so that each activation has mean 0 and standard deviation 1 over the
    probe images it was fitted on. All three are buffers, never trainable parameters.
    """

    def __init__(self, weight: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        weight, mean, std = check_projection_state({"weight": weight, "mean": mean, "std": std})
        self.register_buffer("weight", weight)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def matrix(self) -> torch.Tensor:
        return self.weight

    def forward(self, representations: torch.Tensor) -> torch.Tensor:
        return (self.check_dim(representations) @ self.weight.T - self.mean) / self.std


def check_projection_state(state) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate a learned projection: weight (C, D), mean (C,), std (C,) > 0, all finite."""
    if not isinstance(state, dict) or set(state) != set(PROJECTION_KEYS):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"a concept projection needs exactly the tensors {list(PROJECTION_KEYS)}, got {found}"
        )
    weight, mean, std = (
        torch.as_tensor(np.asarray(state[k]) if not torch.is_tensor(state[k]) else state[k]).detach().float()
        for k in PROJECTION_KEYS
    )
    if weight.ndim != 2 or weight.shape[0] < 1:
        raise ValueError(f"projection weight must be a (C, D) array, got shape {tuple(weight.shape)}")
    num_concepts = weight.shape[0]
    if tuple(mean.shape) != (num_concepts,) or tuple(std.shape) != (num_concepts,):
        raise ValueError(
            f"projection mean and std must have shape ({num_concepts},), got {tuple(mean.shape)} and "
            f"{tuple(std.shape)}"
        )
    if not all(torch.isfinite(t).all() for t in (weight, mean, std)):
        raise ValueError("the concept projection contains NaN or inf")
    if not (std > 0).all():
        raise ValueError("the concept projection's std must be > 0 for every concept")
    return weight, mean, std


def normalize_rows(vectors: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows; rows already of unit norm are kept bit-for-bit, so save/load is exact."""
    norms = vectors.norm(dim=1, keepdim=True)
    if torch.allclose(norms, torch.ones_like(norms), rtol=0, atol=1e-6):
        return vectors
    return vectors / norms


def as_concept_projection(concepts) -> nn.Module:
    """A module mapping (B, D) representations to (B, C) raw concept activations."""
    if isinstance(concepts, nn.Module) and hasattr(concepts, "num_concepts"):
        return concepts
    if isinstance(concepts, ConceptBank):
        return concepts.projection()
    if isinstance(concepts, (str, os.PathLike)):
        return ConceptBank.from_pretrained(concepts).projection()
    return FixedConcepts(concepts)


@dataclass
class ConceptBank:
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

    def projection(self) -> nn.Module:
        """The module that turns representations into raw concept activations.

        `FixedConcepts` (``x @ vectors.T``) for prototype, cluster and custom banks; `LinearConcepts`
        (standardised ``x @ weight.T``) for a bank with a learned projection.
        """
        if self.projection_state is not None:
            return LinearConcepts(**self.projection_state)
        return FixedConcepts(self.vectors)

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

    # ------------------------------------------------------------------ building
    @classmethod
    def from_prototypes(
        cls,
        model,
        dataset,
        *,
        parts: str = "patches",
        images_per_class: int = 10,
        num_concepts: int | None = None,
        grid: int = 4,
        image_processor=None,
        image_column: str | None = None,
        label_column: str | None = None,
        batch_size: int = 64,
        precision: str = "fp32",
        device=None,
        seed: int = 0,
        progress: bool = True,
    ) -> ConceptBank:
        """Embed image parts with the backbone itself: each part's representation is a concept.

        Args:
            parts: "patches" (a `grid` x `grid` grid of cells, each resized to the model's input size)
                or "segments" (SLIC superpixels at 10, 20 and 30 segments, the 5 largest of each,
                near-duplicates with Jaccard > 0.5 dropped, cropped to their box on grey 117).
            images_per_class: images drawn at random (seeded) from each class.
            num_concepts: keep a random subset of this many prototypes (default: all of them).
        """
        from .backbones import load_image_processor, load_vision_model
        from .features import detect_columns, extract_features

        if parts not in ("patches", "segments"):
            raise ValueError(f"parts must be 'patches' or 'segments', got {parts!r}")
        if images_per_class < 1:
            raise ValueError(f"images_per_class must be >= 1, got {images_per_class}")
        if isinstance(model, (str, os.PathLike)):
            model = load_vision_model(str(model))
        image_processor = load_image_processor(model, image_processor)
        image_column, label_column = detect_columns(dataset, image_column, label_column)
        if label_column is None:
            raise ValueError("prototype concepts need labels (N images per class): pass label_column=")
        rows = sample_per_class(dataset[label_column], images_per_class, seed)
        label_names = class_names(dataset, label_column)

        crops, sources = [], []
        for row in rows:
            example = dataset[int(row)]
            image = example[image_column].convert("RGB")
            label = int(example[label_column])
            for crop, source in grid_patches(image, grid) if parts == "patches" else slic_segments(image):
                crops.append(crop)
                sources.append({"image_index": int(row), "label": label, **source})
        if num_concepts is not None and num_concepts > len(crops):
            raise ValueError(
                f"asked for {num_concepts} concepts but the prototype library has only {len(crops)} "
                f"({len(rows)} images x parts): lower num_concepts or raise images_per_class"
            )
        if num_concepts is not None:
            keep = np.sort(np.random.default_rng(seed).choice(len(crops), size=num_concepts, replace=False))
            crops, sources = [crops[i] for i in keep], [sources[i] for i in keep]
        vectors = extract_features(
            model,
            crops,
            image_processor=image_processor,
            batch_size=batch_size,
            precision=precision,
            device=device,
            progress=progress,
        ).features
        names = [f"{label_names[s['label']]} · image {s['image_index']} · {s['part']}" for s in sources]
        return cls(
            vectors=vectors,
            names=names,
            kind=f"prototype-{parts}",
            sources=sources,
            thumbnails=torch.stack([thumbnail(c) for c in crops]),
            provenance={
                "model": getattr(model, "name_or_path", None) or type(model).__name__,
                "dataset_fingerprint": getattr(dataset, "_fingerprint", None),
                "parts": parts,
                "grid": grid if parts == "patches" else None,
                "images_per_class": images_per_class,
                "seed": seed,
                "label_names": label_names,
                "iis_hf_version": __version__,
            },
        )

    @classmethod
    def from_text(cls, concepts, clip_model: str = "openai/clip-vit-base-patch32", **kwargs) -> ConceptBank:
        """Text concepts: words scored by CLIP, with a projection from the backbone learned to match.

        Words (a list, or a file with one per line) whose mean top-`top_k` CLIP similarity over the
        probe images is <= `clip_cutoff` are dropped; a linear projection from the backbone's
        representation is fitted to CLIP's similarities (cosine of mean-centred, cubed activations);
        words whose match on `holdout_fraction` of the probe images is <= `interpretability_cutoff`
        are dropped; the activations are standardised with the train mean/std. The bank's kind is
        "text" and its `projection()` is the standardised linear map. `backbone=` and
        `probe_dataset=` are needed unless `features=` (the probe images' representations) and
        `clip_similarities=` (N_images x num_words) are given. Every argument is described in
        `iis_hf.text_concepts.text_concept_bank`.
        """
        from .text_concepts import text_concept_bank

        return text_concept_bank(concepts, clip_model, **kwargs)

    @classmethod
    def from_clusters(cls, library, num_concepts: int, *, seed: int = 0) -> ConceptBank:
        """k-means (scikit-learn) over a prototype library; the normalised centres are the concepts.

        `library` is a `ConceptBank` (each centre is then named after, and pictured by, its nearest
        prototype) or a (M, D) array of vectors.
        """
        from sklearn.cluster import KMeans

        bank = library if isinstance(library, ConceptBank) else None
        if bank is not None and bank.has_projection:
            raise ValueError(
                f"cannot cluster a {bank.kind!r} bank: its concepts are a learned projection, not vectors; "
                "cluster a prototype library (ConceptBank.from_prototypes) instead"
            )
        vectors = bank.vectors if bank is not None else FixedConcepts(library).vectors
        if num_concepts < 1 or num_concepts > vectors.shape[0]:
            raise ValueError(
                f"cannot make {num_concepts} clusters from {vectors.shape[0]} prototypes: "
                "num_concepts must be between 1 and the library size"
            )
        kmeans = KMeans(n_clusters=num_concepts, n_init=3, random_state=seed).fit(vectors.double().numpy())
        centres = F.normalize(torch.from_numpy(kmeans.cluster_centers_).float(), dim=1)
        nearest = (centres @ vectors.T).argmax(dim=1).tolist()
        sizes = np.bincount(kmeans.labels_, minlength=num_concepts)
        names = [
            f"cluster {i} (n={sizes[i]}, like: {bank.names[j]})"
            if bank is not None
            else f"cluster {i} (n={sizes[i]})"
            for i, j in enumerate(nearest)
        ]
        sources = None
        if bank is not None and bank.sources is not None:
            sources = [{**bank.sources[j], "cluster_size": int(sizes[i])} for i, j in enumerate(nearest)]
        return cls(
            vectors=centres,
            names=names,
            kind="cluster",
            sources=sources,
            thumbnails=bank.thumbnails[nearest] if bank is not None and bank.thumbnails is not None else None,
            provenance={
                **(bank.provenance if bank is not None else {}),
                "library_kind": bank.kind if bank is not None else "array",
                "library_size": int(vectors.shape[0]),
                "kmeans_seed": seed,
                "iis_hf_version": __version__,
            },
        )

    # ------------------------------------------------------------------ saving and loading
    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
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
                "sources": self.sources,
                "provenance": self.provenance,
                "iis_hf_version": __version__,
            },
        )

    @classmethod
    def from_pretrained(
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
            folder = download_bank(str(path_or_repo_id), subfolder, revision, token)
        refuse_pickles(folder, "concept bank", stems=(Path(CONFIG_NAME).stem,))
        config = read_json(folder / CONFIG_NAME, "concept bank config")
        if config.get("format") != FORMAT:
            raise ValueError(
                f"{folder / CONFIG_NAME} is not an iis-hf concept bank (format={config.get('format')!r})"
            )
        names = config.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{folder / CONFIG_NAME}: 'names' must be a list of strings")
        sources = config.get("sources")
        if sources is not None and not (
            isinstance(sources, list) and all(isinstance(s, dict) for s in sources)
        ):
            raise ValueError(f"{folder / CONFIG_NAME}: 'sources' must be a list of objects or null")
        version = config.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION_PROJECTION:
            raise ValueError(
                f"{folder / CONFIG_NAME} has format_version {version!r}, newer than this iis-hf "
                f"({__version__}) reads: upgrade iis-hf"
            )
        tensors = read_safetensors(folder / WEIGHTS_NAME, "concept bank weights")
        projection_state = None
        projection = config.get("projection")
        if projection is not None:
            if projection != PROJECTION_TYPE:
                raise ValueError(f"{folder / CONFIG_NAME}: unknown concept projection {projection!r}")
            missing = [PROJECTION_PREFIX + k for k in PROJECTION_KEYS if PROJECTION_PREFIX + k not in tensors]
            if missing:
                raise ValueError(f"{folder / WEIGHTS_NAME} lacks the projection tensors {missing}")
            projection_state = {k: tensors[PROJECTION_PREFIX + k] for k in PROJECTION_KEYS}
        elif "vectors" not in tensors:
            raise ValueError(f"{folder / WEIGHTS_NAME} has no 'vectors' tensor")
        bank = cls(
            vectors=tensors.get("vectors"),
            projection_state=projection_state,
            names=names,
            kind=str(config.get("kind", "custom")),
            sources=sources,
            thumbnails=tensors.get("thumbnails"),
            provenance=config.get("provenance") or {},
        )
        if config.get("dim") not in (None, bank.dim) or config.get("num_concepts") not in (
            None,
            bank.num_concepts,
        ):
            raise ValueError(
                f"{folder}: config says {config.get('num_concepts')} x {config.get('dim')} "
                f"but the weights are {bank.num_concepts} x {bank.dim}"
            )
        return bank

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload concept bank",
        path_in_repo: str | None = None,
    ):
        """Create the repository if needed and upload the bank (with a short card) to it."""
        from huggingface_hub import HfApi, ModelCard, ModelCardData

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            if path_in_repo is None:
                card = ModelCard.from_template(
                    ModelCardData(library_name="iis-hf", tags=["iis-hf", "concept-bank", "interpretability"]),
                    model_id=repo_id,
                    model_description=(
                        f"An iis-hf concept bank: {self.num_concepts} {self.kind} concepts "
                        f"of dimension {self.dim}. Load it with "
                        f'`iis_hf.ConceptBank.from_pretrained("{repo_id}")`.'
                    ),
                )
                card.save(os.path.join(tmp, "README.md"))
            return api.upload_folder(
                repo_id=repo_id, folder_path=tmp, path_in_repo=path_in_repo, commit_message=commit_message
            )


def download_bank(repo_id: str, subfolder: str | None, revision: str | None, token: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError

    if os.path.isabs(repo_id) or repo_id.startswith(".") or repo_id.count("/") > 1:
        raise ValueError(f"concept bank folder {repo_id} does not exist")
    try:
        paths = [
            hf_hub_download(repo_id, name, subfolder=subfolder, revision=revision, token=token)
            for name in (CONFIG_NAME, WEIGHTS_NAME)
        ]
    except HFValidationError:
        raise ValueError(
            f"concept bank {repo_id!r} is neither a local folder nor a Hub repository id"
        ) from None
    except Exception as err:  # network errors, missing repo or file: one clear message
        raise ValueError(f"could not download concept bank {repo_id!r} from the Hub: {err}") from None
    return Path(paths[0]).parent


# ---------------------------------------------------------------------- image parts
def sample_per_class(labels, per_class: int, seed: int) -> list[int]:
    """Up to `per_class` dataset rows of every class, drawn at random (seeded), in row order."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    if classes.size < 2:
        raise ValueError(f"the dataset has {classes.size} class(es); prototype concepts need at least 2")
    rows = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        rows.extend(rng.choice(idx, size=min(per_class, idx.size), replace=False).tolist())
    return sorted(rows)


def class_names(dataset, label_column: str) -> list[str]:
    feature = dataset.features.get(label_column)
    names = getattr(feature, "names", None)
    if names:
        return list(names)
    return [str(i) for i in range(int(max(dataset[label_column])) + 1)]


def grid_patches(image, grid: int):
    """The cells of a `grid` x `grid` grid over the image, with their pixel boxes."""
    width, height = image.size
    for r in range(grid):
        for c in range(grid):
            box = (c * width // grid, r * height // grid, (c + 1) * width // grid, (r + 1) * height // grid)
            if box[2] > box[0] and box[3] > box[1]:
                yield image.crop(box), {"box": list(box), "part": f"patch ({r},{c})"}


def slic_segments(image, per_setting: int = 5, max_jaccard: float = 0.5):
    """SLIC superpixels (scikit-image) as grey-filled crops; near-duplicate masks are dropped."""
    from PIL import Image
    from skimage.segmentation import slic

    pixels = np.asarray(image)
    kept: list[np.ndarray] = []
    for n_segments in SLIC_SETTINGS:
        segments = slic(pixels, n_segments=n_segments, compactness=10, sigma=1, start_label=0)
        ids, areas = np.unique(segments, return_counts=True)
        for rank, segment in enumerate(ids[np.argsort(-areas, kind="stable")][:per_setting]):
            mask = segments == segment
            if any(jaccard(mask, other) > max_jaccard for other in kept):
                continue
            kept.append(mask)
            rows, cols = np.nonzero(mask)
            box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
            filled = np.where(mask[..., None], pixels, GREY_FILL).astype(np.uint8)
            crop = Image.fromarray(filled[box[1] : box[3], box[0] : box[2]])
            yield crop, {"box": list(box), "part": f"segment (n={n_segments}, #{rank})"}


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def thumbnail(image) -> torch.Tensor:
    from PIL import Image

    small = image.convert("RGB").resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.BILINEAR)
    return torch.from_numpy(np.asarray(small).copy()).permute(2, 0, 1)
