"""Offline fixtures: tiny random-init vision models saved locally, and small image datasets."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# One intra-op thread: the tiny models here gain nothing from two, and on a loaded machine two
# threads made small operations many times slower (an in-process `iis-hf score`: 35 s vs 0.5 s).
# It also matches the torchrun workers (OMP_NUM_THREADS=1), whose results tests compare bit for bit.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
ARCHS = ("vit", "deit", "resnet", "convnext", "swin", "dinov2", "clip")
IMAGE_SIZE = 32


def cpu_subprocess_env() -> dict[str, str]:
    """The environment of a test's subprocess: this checkout importable, CPU only (gloo even on a
    machine with a GPU)."""
    pythonpath = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": pythonpath, "CUDA_VISIBLE_DEVICES": ""}


def torchrun_two_processes(*args: str) -> list[str]:
    """`torchrun --nproc_per_node 2` on a free loopback port, then `args` (a script, or -m module)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(port), *args,
    ]  # fmt: skip


def tiny_config(arch: str, num_labels: int = 3):
    """A config of 16-25k parameters for each architecture the project supports."""
    import transformers as tf

    labels = {"num_labels": num_labels}
    if arch == "vit":
        return tf.ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            **labels,
        )
    if arch == "deit":
        return tf.DeiTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            **labels,
        )
    if arch == "resnet":
        return tf.ResNetConfig(
            embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", **labels
        )
    if arch == "convnext":
        return tf.ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], **labels)
    if arch == "swin":
        return tf.SwinConfig(
            image_size=32,
            patch_size=4,
            embed_dim=16,
            depths=[1, 1],
            num_heads=[1, 2],
            window_size=4,
            **labels,
        )
    if arch == "dinov2":
        return tf.Dinov2Config(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            mlp_ratio=2,
            **labels,
        )
    if arch == "clip":
        vision = dict(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
        )
        text = dict(
            vocab_size=99,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=2,
        )
        return tf.CLIPConfig(vision_config=vision, text_config=text, projection_dim=16, **labels)
    raise ValueError(arch)


def build_tiny_model(arch: str, num_labels: int = 3, head: bool = True, seed: int = 0):
    """A random-init `*ForImageClassification` (head=True) or bare backbone (head=False)."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    config = tiny_config(arch, num_labels)
    if head:
        if arch == "deit":  # DeiT maps to two head classes; AutoModel cannot choose without `architectures`
            return tf.DeiTForImageClassification(config).eval()
        return tf.AutoModelForImageClassification.from_config(config).eval()
    if arch == "clip":
        return tf.CLIPVisionModel(config.vision_config).eval()
    return tf.AutoModel.from_config(config).eval()


def tiny_image_processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def save_tiny_model(path, arch: str = "vit", num_labels: int = 3, head: bool = True, seed: int = 0):
    """Save model + image processor with `save_pretrained`, as a Hub repo would hold them."""
    model = build_tiny_model(arch, num_labels, head=head, seed=seed)
    model.save_pretrained(path)
    tiny_image_processor().save_pretrained(path)
    return str(path)


def make_image_dataset(num_classes: int = 3, per_class: int = 8, size: int = IMAGE_SIZE, seed: int = 0):
    """Synthetic RGB images whose class is a colour, plus noise: learnable by any backbone."""
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    palette = np.array([[220, 40, 40], [40, 200, 40], [40, 60, 220], [220, 220, 40], [200, 40, 200]])
    images, labels = [], []
    for label in range(num_classes):
        for _ in range(per_class):
            img = rng.integers(0, 60, size=(size, size, 3))
            x0, y0 = rng.integers(0, size // 2, size=2)
            img[y0 : y0 + size // 2, x0 : x0 + size // 2] = palette[label % len(palette)]
            images.append(PILImage.fromarray(img.astype(np.uint8)))
            labels.append(label)
    features = Features({"image": Image(), "label": ClassLabel(num_classes=num_classes)})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Factory: tiny_models(arch, head=True, num_labels=3) -> path of a saved model folder."""
    root = tmp_path_factory.mktemp("tiny_models")
    cache: dict = {}

    def get(arch: str = "vit", head: bool = True, num_labels: int = 3) -> str:
        key = (arch, head, num_labels)
        if key not in cache:
            cache[key] = save_tiny_model(
                root / f"{arch}-{'cls' if head else 'base'}-{num_labels}", arch, num_labels, head=head
            )
        return cache[key]

    return get


@pytest.fixture(scope="session")
def image_dataset():
    return make_image_dataset()


@pytest.fixture(scope="session")
def digits():
    from iis_hf.data import load_digits_dataset

    return load_digits_dataset(image_size=IMAGE_SIZE)


@pytest.fixture(autouse=True)
def no_leaked_mixed_precision(monkeypatch):
    """transformers 4.x's `TrainingArguments(bf16=True)` sets ACCELERATE_MIXED_PRECISION for the whole
    process, so every later Trainer would train in bf16 (the floor run of .ci/run): keep it to its test."""
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
