"""Prototype and cluster concepts: image parts embedded by the backbone itself, and k-means of them.

A prototype concept is the representation of one image part: a cell of a grid over the image
(``parts="patches"``) or a SLIC superpixel (``parts="segments"``), from a few images per class.
A cluster concept is a k-means centre of a prototype library. The functions here return the fields
of a `ConceptBank` (vectors, names, sources, thumbnails, provenance); `ConceptBank.from_prototypes`
and `ConceptBank.from_clusters` build the bank from them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..model_card import weights_fingerprint
from ..version import __version__
from .projection import FixedConcepts

PART_KINDS = ("patches", "segments")
THUMBNAIL_SIZE = 32
GREY_FILL = 117
SLIC_SETTINGS = (10, 20, 30)


def prototype_fields(
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
    device=None,
    seed: int = 0,
    progress: bool = True,
    **extraction: Any,
) -> dict[str, Any]:
    """The fields of a prototype `ConceptBank` (see `ConceptBank.from_prototypes`).

    The parts (crops of a few pixels to a few hundred a side) are each resized to the model's input:
    with ``preprocessing="tensor"``, where `iis_hf.features.preprocess` covers the image processor,
    they are resized as batches (parts of one size stacked, one interpolation per size), otherwise
    one at a time by the processor; both in the DataLoader workers `iis_hf.features.auto_num_workers`
    chooses for that many parts, overlapped with the forward. `extraction` are `ExtractionConfig`'s
    settings for embedding the parts (``batch_size=64, precision="fp32", preprocessing="processor"``).
    """
    from ..data import detect_columns, undecoded
    from ..features import auto_num_workers, extract_features, load_image_processor, load_vision_model
    from ..features.preprocess import tensor_path

    if parts not in PART_KINDS:
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

    crops, sources = image_parts(
        undecoded(dataset, image_column), rows, image_column, label_column, parts, grid
    )
    if num_concepts is not None:
        keep = choose_prototypes(len(crops), num_concepts, seed, images=len(rows))
        crops, sources = [crops[i] for i in keep], [sources[i] for i in keep]
    preprocessing = extraction.pop("preprocessing", "processor")
    if preprocessing == "tensor" and tensor_path(image_processor) is None:
        preprocessing = "processor"  # not covered: the processor resizes them, as it does the images
    vectors = extract_features(
        model,
        crops,
        image_processor=image_processor,
        preprocessing=preprocessing,
        num_workers=auto_num_workers(len(crops), device=device or _default_device()),
        **extraction,
        device=device,
        progress=f"prototype {parts}" if progress else False,
    ).features
    return {
        "vectors": vectors,
        "names": [f"{label_names[s['label']]} · image {s['image_index']} · {s['part']}" for s in sources],
        "kind": f"prototype-{parts}",
        "sources": sources,
        "thumbnails": torch.stack([thumbnail(c) for c in crops]),
        "provenance": {
            **embedding_provenance(model, dataset),
            "parts": parts,
            "grid": grid if parts == "patches" else None,
            "images_per_class": images_per_class,
            # how the parts were resized (recorded where it is not the processor, as in the settings)
            **({"preprocessing": preprocessing} if preprocessing != "processor" else {}),
            "seed": seed,
            "label_names": label_names,
            "iis_hf_version": __version__,
        },
    }


def _default_device() -> str:
    """Where extraction runs when no device is named (for choosing its workers only)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def choose_prototypes(
    library_size: int, num_concepts: int, seed: int, images: int | None = None
) -> np.ndarray:
    """Sorted indices of the `num_concepts` prototypes kept from a library of `library_size`.

    The one place this choice is made: `ConceptBank.from_prototypes(num_concepts=C, seed=s)` keeps
    exactly ``library.subset(choose_prototypes(len(library), C, s))`` of the full library.
    """
    if num_concepts > library_size:
        where = f" ({images} images x parts)" if images is not None else ""
        raise ValueError(
            f"asked for {num_concepts} concepts but the prototype library has only {library_size}{where}: "
            "lower num_concepts= or raise images_per_class="
        )
    return np.sort(np.random.default_rng(seed).choice(library_size, size=num_concepts, replace=False))


def cluster_fields(library, num_concepts: int, *, seed: int = 0) -> dict[str, Any]:
    """The fields of a cluster `ConceptBank` (see `ConceptBank.from_clusters`).

    `library` is a `ConceptBank` (each centre is then named after, and pictured by, its nearest
    prototype) or a (M, D) array of vectors.
    """
    from sklearn.cluster import KMeans

    bank = library if hasattr(library, "has_projection") else None
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
    return {
        "vectors": centres,
        "names": names,
        "kind": "cluster",
        "sources": sources,
        "thumbnails": bank.thumbnails[nearest] if bank is not None and bank.thumbnails is not None else None,
        "provenance": {
            **(bank.provenance if bank is not None else {}),
            "library_kind": bank.kind if bank is not None else "array",
            "library_size": int(vectors.shape[0]),
            "kmeans_seed": seed,
            "iis_hf_version": __version__,
        },
    }


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


def embedding_provenance(model: Any, dataset: Any) -> dict[str, Any]:
    """Which model, which weights (a fine-tuned model's are others) and which data embedded a bank."""
    return {
        "model": getattr(model, "name_or_path", None) or type(model).__name__,
        "embedded_by": weights_fingerprint(model),
        "dataset_fingerprint": getattr(dataset, "_fingerprint", None),
    }


def image_parts(
    stored, rows, image_column: str, label_column: str, parts: str, grid: int
) -> tuple[list[Any], list[dict[str, Any]]]:
    """The parts (grid patches or SLIC segments) of the chosen rows' images, and where each came from.
    Images are decoded by `iis_hf.images.load_image` only, never by `datasets` first."""
    from ..images import load_image

    crops, sources = [], []
    for row in rows:
        example = stored[int(row)]
        image = load_image(example[image_column], what=f"row {int(row)} of column {image_column!r}")
        label = int(example[label_column])
        for crop, source in grid_patches(image, grid) if parts == "patches" else slic_segments(image):
            crops.append(crop)
            sources.append({"image_index": int(row), "label": label, **source})
    return crops, sources


def thumbnail(image) -> torch.Tensor:
    from PIL import Image

    bilinear = Image.BILINEAR  # type: ignore[attr-defined]  # Image.Resampling needs Pillow 9.1; setup.py admits 9.0
    small = image.convert("RGB").resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), bilinear)
    return torch.from_numpy(np.asarray(small).copy()).permute(2, 0, 1)
