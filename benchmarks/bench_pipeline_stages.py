"""Where extraction time goes: decoding, preprocessing and the forward, for a small ViT.

Each stage is timed on its own over the same N images (PNG-encoded in a `datasets` image dataset,
sizes drawn between 200 and 500 pixels a side, as photos come): decode (`iis_hf.images.load_image`),
preprocess (the image processor, PIL backend; and the tensor path of `iis_hf.features.preprocess` on
`--device`), forward (``model(pixel_values=batch)`` under `torch.inference_mode`). Then the whole
`extract_features` run (one process, `--num-workers` decoding workers) with each preprocessing,
and its wall time over the bare forward's.

    python benchmarks/bench_pipeline_stages.py 64                 # small ViT, CPU
    python benchmarks/bench_pipeline_stages.py 2048 --device cuda --batch-size 128 --num-workers 8

The last line printed is one JSON object: the stages' seconds and shares per preprocessing, and
extraction_s / forward_s per preprocessing (``ratio_processor``, ``ratio_tensor``).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from iis_hf import extract_features
from iis_hf.features.preprocess import tensor_path
from iis_hf.images import load_image


def build(image_size: int):
    """A random-init ViT of 5.4M parameters (ViT-Ti/16 width, 6 layers) and its processor."""
    import transformers
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=image_size, hidden_size=192, num_hidden_layers=6, num_attention_heads=3,
        intermediate_size=768, num_labels=10,
    )  # fmt: skip
    processor_class = getattr(transformers, "ViTImageProcessorPil", transformers.ViTImageProcessor)
    processor = processor_class(size={"height": image_size, "width": image_size})
    return ViTForImageClassification(config).eval(), processor


def encoded_dataset(num_images: int, seed: int = 0):
    """PNG-encoded RGB images of random sizes, with labels, as a `datasets` image dataset."""
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(num_images):
        width, height = (int(v) for v in rng.integers(200, 501, size=2))
        coarse = rng.integers(0, 256, size=(height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
        image = PILImage.fromarray(coarse).resize((width, height), PILImage.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        rows.append({"bytes": buffer.getvalue(), "path": None})
    labels = [int(v) for v in rng.integers(0, 10, size=num_images)]
    features = Features({"image": Image(), "label": ClassLabel(num_classes=10)})
    return Dataset.from_dict({"image": rows, "label": labels}, features=features)


def timed(function: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """Seconds of `function()` (the device synchronised before and after) and its result."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def stage_times(model, processor, dataset, batch_size: int, device: torch.device) -> dict[str, float]:
    """Each stage alone: decode, both preprocessings, the bare forward."""
    stored = dataset.cast_column("image", type(dataset.features["image"])(decode=False))
    encoded = stored["image"]
    decode_s, images = timed(lambda: [load_image(e) for e in encoded], device)
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]

    def processor_path():
        return [torch.as_tensor(processor(images=b, return_tensors="pt")["pixel_values"]) for b in batches]

    runner = tensor_path(processor)
    processor_s, pixels = timed(processor_path, device)
    tensor_s, _ = timed(lambda: [runner(b).prepare(device) for b in batches], device)
    pixels = [p.to(device) for p in pixels]
    model.to(device)
    with torch.inference_mode():
        model(pixel_values=pixels[0])  # warm-up
        forward_s, _ = timed(lambda: [model(pixel_values=p).logits for p in pixels], device)
    return {
        "decode_s": decode_s, "preprocess_processor_s": processor_s, "preprocess_tensor_s": tensor_s,
        "forward_s": forward_s,
    }  # fmt: skip


def extraction_times(model, processor, dataset, args, device: torch.device) -> dict[str, float]:
    """The whole `extract_features` run with each preprocessing."""
    times = {}
    for preprocessing in ("processor", "tensor"):
        seconds, _ = timed(
            lambda p=preprocessing: extract_features(
                model, dataset, image_processor=processor, device=device, batch_size=args.batch_size,
                num_workers=args.num_workers, preprocessing=p, progress=False,
            ),
            device,
        )  # fmt: skip
        times[f"extraction_{preprocessing}_s"] = seconds
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", type=int, nargs="?", default=32, help="number of images N")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    device = torch.device(args.device)
    model, processor = build(args.image_size)
    dataset = encoded_dataset(args.images)
    result = {"images": args.images, "device": str(device), "batch_size": args.batch_size}
    result.update(stage_times(model, processor, dataset, args.batch_size, device))
    result.update(extraction_times(model, processor, dataset, args, device))
    for preprocessing in ("processor", "tensor"):
        stages = ("decode_s", f"preprocess_{preprocessing}_s", "forward_s")
        total = sum(result[s] for s in stages)
        shares = ", ".join(f"{s.removesuffix('_s')} {result[s] / total:.0%}" for s in stages)
        ratio = result[f"extraction_{preprocessing}_s"] / result["forward_s"]
        result[f"ratio_{preprocessing}"] = ratio
        result[f"shares_{preprocessing}"] = {
            s.removesuffix("_s"): round(result[s] / total, 4) for s in stages
        }
        print(f"{preprocessing:9s}: {shares}; extraction {ratio:.2f}x the bare forward")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
