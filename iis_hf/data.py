"""Real images that ship inside a package, so everything runs offline.

scikit-learn's digits (1,797 real 8x8 handwritten digits, 16 grey levels) become a `datasets`
image dataset: upscaled RGB PIL images with a `ClassLabel`, split into train and test.
"""

from __future__ import annotations

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image


def load_digits_dataset(image_size: int = 32, test_fraction: float = 0.25, seed: int = 0) -> DatasetDict:
    """scikit-learn's digits as a DatasetDict with `image` (RGB, image_size^2) and `label` columns."""
    from PIL import Image as PILImage
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images / 16.0 * 255.0).round().astype(np.uint8)
    images = [
        PILImage.fromarray(p, mode="L").resize((image_size, image_size), PILImage.NEAREST).convert("RGB")
        for p in pixels
    ]
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    full = Dataset.from_dict({"image": images, "label": digits.target.tolist()}, features=features)
    split = full.train_test_split(test_size=test_fraction, seed=seed, stratify_by_column="label")
    return DatasetDict(train=split["train"], test=split["test"])
