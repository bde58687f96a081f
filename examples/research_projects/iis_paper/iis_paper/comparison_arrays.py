"""The arrays both sides of the published-code comparison are given (examples/research_projects/iis_paper/compare_with_published.py,
examples/research_projects/iis_paper/iis_uncertainty.py): representations, labels and a concept matrix per case.

- digits_random: the demo ResNet at random init (`iis_hf.demo.demo_model(10, seed=0)`);
- digits_trained: the demo ResNet trained 3 epochs on scikit-learn's digits;
- animals_trained: the same ResNet trained 5 epochs on 2,000 animal silhouettes, evaluated on 1,000 others.

Features come from `extract_features` (train split -> train, test split -> eval); the concepts are
the 200 patch prototypes of `ConceptBank.from_prototypes(..., images_per_class=10, seed=0)`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from iis_hf.concepts import ConceptBank
from iis_hf.demo import demo_image_processor, demo_model, train_demo_model
from iis_hf.errors import IISError
from iis_hf.features import extract_features
from iis_hf.files import write_bytes_atomic

from .data import load_named_dataset

CASES = ("digits_random", "digits_trained", "animals_trained")


def make_arrays(case: str, folder: Path) -> Path:
    """Features, labels and concepts of one case, as <folder>/<case>.npz (built once, reused)."""
    path = Path(folder) / f"{case}.npz"
    if path.exists():
        return path
    if case not in CASES:
        raise IISError(f"unknown case {case!r}: choose from {CASES}")
    if case.startswith("digits"):
        data = load_named_dataset("digits", seed=0)
    else:
        data = load_named_dataset("animals", train_size=2000, test_size=1000, seed=0)
    if case == "digits_random":
        model = demo_model(10, seed=0)
    else:
        epochs = 3.0 if case == "digits_trained" else 5.0
        model, _ = train_demo_model(
            data, path.parent / f"{case}_model", epochs=epochs, seed=0, progress=False
        )
    model.eval()
    processor = demo_image_processor()
    train, test = (
        extract_features(model, data[split], image_processor=processor, batch_size=128, progress=False)
        for split in ("train", "test")
    )
    bank = ConceptBank.from_prototypes(
        model,
        data["train"],
        image_processor=processor,
        images_per_class=10,
        num_concepts=200,
        seed=0,
        progress=False,
    )
    assert train.labels is not None and test.labels is not None  # both datasets have a label column
    buffer = io.BytesIO()
    np.savez(
        buffer,
        train_features=train.features.numpy(),
        train_labels=train.labels.numpy(),
        eval_features=test.features.numpy(),
        eval_labels=test.labels.numpy(),
        concepts=bank.vectors.numpy(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())
    return path
