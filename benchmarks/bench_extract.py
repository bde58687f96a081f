"""Feature extraction throughput: `iis_hf.extract_features` vs a bare `model(pixel_values)` loop.

Same random-init model, same batch size, same precision, same pre-processed tensors:

* bare: ``for batch in pixels.split(B): model(pixel_values=batch)`` under `torch.inference_mode`;
* ours (decoding excluded): `extract_features(model, pixels)` on the same tensor;
* ours (decoding included): `extract_features(model, dataset)` on a `datasets` image dataset of the
  same images stored encoded (PNG), decoded and pre-processed by the model's image processor in
  DataLoader workers (`--num-workers`) so decoding overlaps compute.

    python benchmarks/bench_extract.py                                   # small ViT, CPU
    python benchmarks/bench_extract.py --arch vit-base --device cuda --precision bf16 --batch-size 256 \\
        --images 4096 --num-workers 12

The last line printed is one JSON object: bare_img_s, ours_img_s, ratio (decoding excluded), and
ours_decoding_img_s, decoding_ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from iis_hf import extract_features

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(arch: str, image_size: int):
    from transformers import AutoModelForImageClassification, ResNetConfig, ViTConfig, ViTImageProcessor

    torch.manual_seed(0)
    configs = {
        "vit-base": lambda: ViTConfig(image_size=image_size),  # ViT-B/16
        "vit-small": lambda: ViTConfig(
            image_size=image_size,
            hidden_size=384,
            num_hidden_layers=6,
            num_attention_heads=6,
            intermediate_size=1536,
        ),
        "resnet-50": lambda: ResNetConfig(),
        "resnet-18": lambda: ResNetConfig(
            layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512]
        ),
    }
    model = AutoModelForImageClassification.from_config(configs[arch]()).eval()
    processor = ViTImageProcessor(size={"height": image_size, "width": image_size})
    return model, processor


def synthetic_images(count: int, size: int, seed: int = 0):
    """Smooth random colour fields (compress like photos rather than like noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        images.append(Image.fromarray(small).resize((size, size), Image.BILINEAR))
    return images


def encoded_dataset(images):
    from datasets import Dataset, Features, Image

    encoded = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append({"bytes": buffer.getvalue(), "path": None})
    return Dataset.from_dict({"image": encoded}, features=Features({"image": Image()}))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_loop(model, pixels, batch_size, device, precision) -> float:
    autocast = (
        torch.autocast(device_type=torch.device(device).type, dtype=PRECISIONS[precision])
        if PRECISIONS[precision]
        else contextlib.nullcontext()
    )
    sync(device)
    started = time.perf_counter()
    with torch.inference_mode(), autocast:
        for batch in pixels.split(batch_size):
            model(pixel_values=batch.to(device, non_blocking=True))
    sync(device)
    return pixels.shape[0] / (time.perf_counter() - started)


def timed(fn, count, device) -> float:
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return count / (time.perf_counter() - started)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--arch", default="vit-small", choices=["vit-base", "vit-small", "resnet-50", "resnet-18"]
    )
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS))
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()

    model, processor = build(args.arch, args.image_size)
    model.to(args.device)
    images = synthetic_images(args.images, args.image_size)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    if args.device.startswith("cuda"):
        pixels = pixels.pin_memory()
    dataset = encoded_dataset(images)
    common = dict(batch_size=args.batch_size, precision=args.precision, device=args.device, progress=False)

    warm = pixels[: args.batch_size * 2]
    bare_loop(model, warm, args.batch_size, args.device, args.precision)
    extract_features(model, warm, image_processor=processor, **common)

    bare, ours, decoding = [], [], []
    for _ in range(args.repeats):  # interleaved; the best of each is reported
        bare.append(bare_loop(model, pixels, args.batch_size, args.device, args.precision))
        ours.append(
            timed(
                lambda: extract_features(model, pixels, image_processor=processor, **common),
                args.images,
                args.device,
            )
        )
        decoding.append(
            timed(
                lambda: extract_features(
                    model, dataset, image_processor=processor, num_workers=args.num_workers, **common
                ),
                args.images,
                args.device,
            )
        )
    result = {
        "arch": args.arch,
        "device": args.device,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "images": args.images,
        "image_size": args.image_size,
        "num_workers": args.num_workers,
        "bare_img_s": round(max(bare), 1),
        "ours_img_s": round(max(ours), 1),
        "ratio": round(max(ours) / max(bare), 3),
        "ours_decoding_img_s": round(max(decoding), 1),
        "decoding_ratio": round(max(decoding) / max(bare), 3),
    }
    print(
        f"bare loop {result['bare_img_s']} img/s; extract_features {result['ours_img_s']} img/s "
        f"({result['ratio']:.2f}x, decoding excluded); with decoding in {args.num_workers} workers "
        f"{result['ours_decoding_img_s']} img/s ({result['decoding_ratio']:.2f}x)"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
