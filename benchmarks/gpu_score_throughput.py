"""End-to-end scoring throughput: N synthetic 256 px JPEGs in an imagefolder, scored, images per second.

Writes `--num-images` JPEGs (256 x 256, 10 tinted classes so the probe beats chance; 10% in test/),
then scores them as `iis-hf score` does, one stage at a time, each timed: the imagefolder scan
(`iis_hf.data.load_image_dataset`), train and eval extraction (`extract_features`), the prototype
concepts (`iis_hf.pipeline.build_concepts`) and the heads (`score_representations`). Prints
images/s end to end (all images over the sum of the stages; writing the files is not counted) and
the stage that bounds it. For extraction it also says what bounds that: the DataLoader alone
(decoding and preprocessing in the workers, measured with a 1-layer, 32-wide ViT whose forward costs
next to nothing) against the bare forward of the scored model on ready pixel values.

    python benchmarks/gpu_score_throughput.py                                 # 100k images, CUDA
    python benchmarks/gpu_score_throughput.py --num-images 300 --device cpu --arch vit-tiny4   # a check

Defaults follow the device: on CUDA a ViT-B/16, bf16, batch 256, the tensor preprocessing path; on the
CPU the benchmarks' 4-layer ViT, fp32, batch 64, the processor. `--num-workers auto` is
`iis_hf.features.auto_num_workers`. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

NUM_CLASSES = 10
EVAL_EVERY = 10  # one image in ten of each class goes to test/
ARCHS = {  # (hidden, layers, heads, intermediate)
    "vit-base": (768, 12, 12, 3072),
    "vit-tiny4": (192, 4, 3, 768),  # the CPU benchmarks' model (bench_pipeline_stages.py --layers 4)
    "null": (32, 1, 1, 64),  # next to no forward: extraction's time is the DataLoader's
}


def _write_part(args: tuple[str, int, int, int]) -> int:
    """Write images start..stop-1 (each seeded by its index, so the files do not depend on the split)."""
    from PIL import Image

    folder, start, stop, size = args
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        label = i % NUM_CLASSES
        tint = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256]) - 128
        coarse = rng.integers(0, 256, size=(size // 16, size // 16, 3)) // 2 + 64 + tint // 2
        image = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        split = "test" if (i // NUM_CLASSES) % EVAL_EVERY == 0 else "train"
        path = Path(folder) / split / f"class_{label}" / f"{i:07d}.jpg"
        image.save(path, quality=90)
    return stop - start


def write_images(folder: Path, count: int, size: int, processes: int) -> None:
    """The JPEGs, written in parallel (once: a folder that holds them already is reused)."""
    marker = folder / f".made-{count}-{size}"
    if marker.exists():
        return
    for split in ("train", "test"):
        for label in range(NUM_CLASSES):
            (folder / split / f"class_{label}").mkdir(parents=True, exist_ok=True)
    step = 1000
    parts = [(str(folder), s, min(count, s + step), size) for s in range(0, count, step)]
    with ProcessPoolExecutor(max_workers=processes) as pool:
        assert sum(pool.map(_write_part, parts)) == count
    marker.touch()


def build_model(arch: str, image_size: int):
    from transformers import ViTConfig, ViTForImageClassification

    hidden, layers, heads, intermediate = ARCHS[arch]
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=image_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate, num_labels=NUM_CLASSES,
    )  # fmt: skip
    return ViTForImageClassification(config).eval()


def build_processor(image_size: int):
    import transformers

    processor_class = getattr(transformers, "ViTImageProcessorPil", transformers.ViTImageProcessor)
    return processor_class(size={"height": image_size, "width": image_size})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stage(times: dict, name: str, function):
    """Run `function()`, record its seconds under `name`, return its result."""
    device = times["_device"]
    sync(device)
    started = time.perf_counter()
    result = function()
    sync(device)
    times[name] = time.perf_counter() - started
    print(f"  {name}: {times[name]:.1f} s", flush=True)
    return result


def bare_forward_rate(model, args, device: torch.device, batches: int = 8) -> float:
    """Images/s of the scored model on ready pixel values (no decoding, no preprocessing)."""
    from iis_hf.features.extract import AUTOCAST_DTYPES

    dtype = AUTOCAST_DTYPES[args.precision]
    pixels = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    autocast = torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)
    with torch.inference_mode(), autocast:
        model(pixel_values=pixels)  # warm-up
        sync(device)
        started = time.perf_counter()
        for _ in range(batches):
            model(pixel_values=pixels)
        sync(device)
    return batches * args.batch_size / (time.perf_counter() - started)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-images", type=int, default=100_000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", choices=sorted(ARCHS), default=None)
    parser.add_argument("--image-size", type=int, default=224, help="the model's input (files are 256 px)")
    parser.add_argument("--file-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None)
    parser.add_argument("--preprocessing", choices=["processor", "tensor"], default=None)
    parser.add_argument("--num-workers", default="auto", help="an int, or 'auto' (auto_num_workers)")
    parser.add_argument("--epochs", type=int, default=30, help="head epochs (the published recipe: 30)")
    parser.add_argument(
        "--loader-images", type=int, default=20_000, help="images for the DataLoader-alone rate"
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help="where the JPEGs go, kept and reused (default: a temp folder, removed)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.arch = args.arch or ("vit-base" if cuda else "vit-tiny4")
    args.batch_size = args.batch_size or (256 if cuda else 64)
    args.precision = args.precision or ("bf16" if cuda else "fp32")
    args.preprocessing = args.preprocessing or ("tensor" if cuda else "processor")

    made = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="iis_gpu_score_"))
    cache = workdir / f"hf_cache_{os.getpid()}"  # a fresh scan, never a cached one
    os.environ["HF_DATASETS_CACHE"] = str(cache)
    import datasets
    from transformers.utils import logging as hf_logging

    from iis_hf.config import ConceptsConfig, ExtractionConfig, HeadsConfig, ScoringConfig
    from iis_hf.data import load_image_dataset
    from iis_hf.features import auto_num_workers, extract_features
    from iis_hf.features.sources import available_cpus
    from iis_hf.pipeline import build_concepts, score_representations

    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    workers = auto_num_workers(args.num_images, None if args.num_workers == "auto" else int(args.num_workers),
                               device=device)  # fmt: skip
    times: dict = {"_device": device}
    print(f"{args.num_images} images, {args.arch} on {device}, {args.precision}, batch {args.batch_size}, "
          f"{args.preprocessing} preprocessing, {workers} workers ({available_cpus()} cores)", flush=True)  # fmt: skip
    try:
        stage(times, "write_s", lambda: write_images(workdir / "data", args.num_images, args.file_size,
                                                      max(1, available_cpus())))  # fmt: skip
        data = stage(times, "scan_s", lambda: load_image_dataset(str(workdir / "data")))
        train, evaluation = data["train"], data["test"]
        model, processor = (
            build_model(args.arch, args.image_size).to(device),
            build_processor(args.image_size),
        )
        config = ScoringConfig(
            extraction=ExtractionConfig(batch_size=args.batch_size, precision=args.precision,
                                        preprocessing=args.preprocessing, num_workers=workers),
            concepts=ConceptsConfig(num_concepts=200, images_per_class=10),
            heads=HeadsConfig(epochs=args.epochs),
            device=str(device),
            progress=False,
        )  # fmt: skip

        def extract(split):
            return extract_features(model, split, config=config.extraction, image_processor=processor,
                                    device=device, progress=False)  # fmt: skip

        train_x = stage(times, "extract_train_s", lambda: extract(train))
        eval_x = stage(times, "extract_eval_s", lambda: extract(evaluation))
        bank = stage(times, "concepts_s", lambda: build_concepts(
            model, train, config, features=train_x.features, image_processor=processor))  # fmt: skip

        def heads():
            try:
                return score_representations(train_x.features, train_x.labels, eval_x.features, eval_x.labels,
                                             bank, config, num_classes=NUM_CLASSES).iis  # fmt: skip
            except ValueError as err:  # a refused score still timed its heads
                print(f"  (no IIS: {str(err).splitlines()[0]})")
                return None

        iis = stage(times, "heads_s", heads)
        # What bounds extraction: the DataLoader alone (a null model) against the bare forward.
        loader_part = train.select(range(min(len(train), args.loader_images)))
        null = build_model("null", args.image_size).to(device)
        stage(times, "loader_alone_s", lambda: extract_features(
            null, loader_part, config=config.extraction, image_processor=processor, device=device,
            progress=False))  # fmt: skip
        forward_img_s = bare_forward_rate(model, args, device)
    finally:
        shutil.rmtree(workdir if made else cache, ignore_errors=True)
    times.pop("_device")
    scored = ("scan_s", "extract_train_s", "extract_eval_s", "concepts_s", "heads_s")
    total = sum(times[s] for s in scored)
    extraction_s = times["extract_train_s"] + times["extract_eval_s"]
    loader_img_s = len(loader_part) / times["loader_alone_s"]
    bound = max(scored, key=lambda s: times[s]).removesuffix("_s")
    if bound.startswith("extract"):
        within = "decoding + preprocessing in the workers" if loader_img_s < forward_img_s else "the forward"
        bound = f"{bound}, itself bounded by {within}"
    result = {
        "num_images": args.num_images, "device": str(device), "device_name": torch.cuda.get_device_name(device)
        if cuda else "cpu", "cores": available_cpus(), "arch": args.arch, "precision": args.precision,
        "batch_size": args.batch_size, "preprocessing": args.preprocessing, "num_workers": workers,
        **{k: round(v, 2) for k, v in times.items()}, "total_s": round(total, 2),
        "images_per_s": round(args.num_images / total, 1),
        "extraction_img_s": round((len(train) + len(evaluation)) / extraction_s, 1),
        "loader_alone_img_s": round(loader_img_s, 1), "bare_forward_img_s": round(forward_img_s, 1),
        "shares": {s.removesuffix("_s"): round(times[s] / total, 3) for s in scored},
        "bound_by": bound, "iis": iis,
    }  # fmt: skip
    print(
        f"{result['images_per_s']} images/s end to end ({args.num_images} images in {total:.1f} s); "
        f"bounded by {bound}: {', '.join(f'{k} {v:.0%}' for k, v in result['shares'].items())}; "
        f"extraction {result['extraction_img_s']} img/s, DataLoader alone {result['loader_alone_img_s']} img/s, "
        f"bare forward {result['bare_forward_img_s']} img/s"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
