"""Where extraction time goes: decoding, preprocessing and the forward, for a small ViT.

Each stage is timed on its own over the same N images (PNG- or JPEG-encoded in a `datasets` image
dataset, sizes drawn between 200 and 500 pixels a side, as photos come): decode
(`iis_hf.images.load_image`), preprocess (the image processor, PIL backend; and the tensor path of
`iis_hf.features.preprocess` on `--device`), forward (``model(pixel_values=batch)`` under
`torch.inference_mode`). Then the whole `extract_features` run (one process) with each preprocessing
and each `--num-workers` (``auto``: `iis_hf.features.auto_num_workers`), and its wall time over the
bare forward's on the pre-processed tensors.

    python benchmarks/bench_pipeline_stages.py 64                 # small ViT (6 layers), CPU
    python benchmarks/bench_pipeline_stages.py 4000 --layers 4 --format jpeg --batch-size 64 \
        --preprocessings processor --num-workers 0 1 --repeats 2   # the 4,000-image case (docs/performance.md)
    python benchmarks/bench_pipeline_stages.py 2048 --device cuda --batch-size 128 --num-workers 8

Two more modes:

    # when workers pay off: extraction with 0 workers and with 1, for each number of images
    python benchmarks/bench_pipeline_stages.py --workers 64 128 256 512 1024 --layers 4 --format jpeg
    # `iis-hf score` end to end on a saved 4-layer ViT and an imagefolder of JPEGs (4,000 train,
    # 500 eval): wall time, IIS and peak memory (the main process's ru_maxrss; the sampled PSS of
    # it and its DataLoader workers together; --timeline: also each stage's peak, sampled);
    # --pythonpath scores with another checkout; --extraction-only: extract_features alone, in a
    # fresh process (the peak RSS of extraction, sampled every 20 ms)
    python benchmarks/bench_pipeline_stages.py --score 4000 --eval-images 500 --workdir /tmp/iis_bench \
        [--pythonpath /tmp/iis_before] [--score-args "--num-workers 1"]

The last line printed is one JSON object: the stages' seconds and shares per preprocessing, and
extraction_s / forward_s per preprocessing and workers (``ratio_processor_w0``, ...; with a single
`--num-workers` value also ``ratio_processor``, ``ratio_tensor``); with --workers, each size's
seconds; with --score, peak_rss_mb, peak_pss_mb, seconds and iis.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from iis_hf import extract_features
from iis_hf.features import auto_num_workers
from iis_hf.features.preprocess import tensor_path
from iis_hf.images import load_image

REPO = Path(__file__).resolve().parents[1]


def build(image_size: int, layers: int = 6):
    """A random-init ViT of ViT-Ti/16 width (6 layers: 5.4M parameters; 4 layers: 3.6M) and its processor."""
    import transformers
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=image_size, hidden_size=192, num_hidden_layers=layers, num_attention_heads=3,
        intermediate_size=768, num_labels=10,
    )  # fmt: skip
    processor_class = getattr(transformers, "ViTImageProcessorPil", transformers.ViTImageProcessor)
    processor = processor_class(size={"height": image_size, "width": image_size})
    return ViTForImageClassification(config).eval(), processor


def synthetic_image(rng: np.random.Generator, label: int | None = None):
    """A smooth random RGB image of 200-500 pixels a side; a class `label` tints it (learnable)."""
    from PIL import Image as PILImage

    width, height = (int(v) for v in rng.integers(200, 501, size=2))
    coarse = rng.integers(0, 256, size=(height // 16 + 1, width // 16 + 1, 3)).astype(np.int16)
    if label is not None:
        tint = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256]) - 128
        coarse = coarse // 2 + 64 + tint // 2
    coarse = np.clip(coarse, 0, 255).astype(np.uint8)
    return PILImage.fromarray(coarse).resize((width, height), PILImage.BICUBIC)


def encoded_dataset(num_images: int, seed: int = 0, image_format: str = "png"):
    """Encoded (PNG or JPEG) RGB images of random sizes, with labels, as a `datasets` image dataset."""
    from datasets import ClassLabel, Dataset, Features, Image

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(num_images):
        buffer = io.BytesIO()
        synthetic_image(rng).save(buffer, format=image_format.upper(), quality=90)
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


def stage_times(
    model, processor, dataset, batch_size: int, device: torch.device, preprocessings=("processor", "tensor")
) -> tuple[dict[str, float], list[torch.Tensor]]:
    """Each stage alone: decode, the preprocessings, the bare forward; and the pre-processed batches."""
    stored = dataset.cast_column("image", type(dataset.features["image"])(decode=False))
    encoded = stored["image"]
    decode_s, images = timed(lambda: [load_image(e) for e in encoded], device)
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]

    def processor_path():
        return [torch.as_tensor(processor(images=b, return_tensors="pt")["pixel_values"]) for b in batches]

    runner = tensor_path(processor)
    processor_s, pixels = timed(processor_path, device)
    times = {"decode_s": decode_s, "preprocess_processor_s": processor_s}
    if "tensor" in preprocessings:
        times["preprocess_tensor_s"], _ = timed(lambda: [runner(b).prepare(device) for b in batches], device)
    pixels = [p.to(device) for p in pixels]
    model.to(device)
    with torch.inference_mode():
        model(pixel_values=pixels[0])  # warm-up
    return {**times, "forward_s": bare_forward(model, pixels, device)}, pixels


def workers_value(value: str) -> int | None:
    return None if value == "auto" else int(value)


def extraction_times(model, processor, dataset, args, device: torch.device, pixels) -> dict[str, float]:
    """The whole `extract_features` run with each preprocessing and each number of workers.

    With ``--repeats R`` every run is made R times, interleaved with a bare forward over `pixels`
    (the pre-processed tensors), and the fastest of each is kept: on a machine other jobs share,
    the load moves between runs minutes apart.
    """
    times: dict[str, float] = {}
    for _ in range(args.repeats):
        for preprocessing in args.preprocessings:
            for workers in args.num_workers:
                chosen = auto_num_workers(len(dataset), workers, device=device)
                seconds, _ = timed(
                    lambda p=preprocessing, w=chosen: extract_features(
                        model, dataset, image_processor=processor, device=device, batch_size=args.batch_size,
                        num_workers=w, preprocessing=p, progress=False,
                    ),
                    device,
                )  # fmt: skip
                key = f"extraction_{preprocessing}_w{chosen}_s"
                times[key] = min(seconds, times.get(key, seconds))
        if args.repeats > 1:
            times["forward_s"] = min(
                bare_forward(model, pixels, device), times.get("forward_s", float("inf"))
            )
    return times


def bare_forward(model, pixels, device: torch.device) -> float:
    """Seconds of ``model(pixel_values=batch)`` over the pre-processed batches."""
    with torch.inference_mode():
        seconds, _ = timed(lambda: [model(pixel_values=p).logits for p in pixels], device)
    return seconds


def workers_threshold(args, device: torch.device) -> dict:
    """Extraction (processor path) with 0 workers and with 1 for each number of images, interleaved."""
    model, processor = build(args.image_size, args.layers)
    model.to(device)
    rows = []
    for count in args.workers:
        dataset = encoded_dataset(count, image_format=args.format)
        extract_features(model, dataset.select(range(min(count, 8))), image_processor=processor,
                         device=device, batch_size=args.batch_size, progress=False)  # fmt: skip  # warm-up
        seconds = {0: [], 1: []}
        for _ in range(args.repeats):
            for workers in (0, 1):
                elapsed, _ = timed(
                    lambda w=workers, d=dataset: extract_features(
                        model, d, image_processor=processor, device=device, batch_size=args.batch_size,
                        num_workers=w, progress=False,
                    ),
                    device,
                )  # fmt: skip
                seconds[workers].append(elapsed)
        best0, best1 = min(seconds[0]), min(seconds[1])
        rows.append({"images": count, "w0_s": round(best0, 3), "w1_s": round(best1, 3),
                     "gain": round(best0 / best1, 3)})  # fmt: skip
        print(f"{count:6d} images: 0 workers {best0:7.2f} s, 1 worker {best1:7.2f} s ({best0 / best1:.2f}x)")
    return {"device": str(device), "batch_size": args.batch_size, "layers": args.layers,
            "format": args.format, "repeats": args.repeats, "rows": rows}  # fmt: skip


def score_data(workdir: Path, train: int, evaluation: int, image_size: int, layers: int) -> tuple[Path, Path]:
    """A saved random-init ViT and an imagefolder of JPEGs (train/, test/; 10 tinted classes), made once."""
    model_dir, data_dir = workdir / "model", workdir / "data"
    marker = workdir / f"made-{train}-{evaluation}-{image_size}-{layers}"
    if marker.exists():
        return model_dir, data_dir
    model, processor = build(image_size, layers)
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", evaluation)):
        for i in range(count):
            label = i % 10
            folder = data_dir / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            synthetic_image(rng, label).save(folder / f"{i:06d}.jpg", quality=90)
    marker.touch()
    return model_dir, data_dir


def score_run(args) -> dict:
    """`iis-hf score` in a child process: wall time, IIS, the main process's ru_maxrss, sampled PSS.

    With `args.timeline` the child shows its progress bars, and each sample of the main process's
    resident set is attributed to the bar then running: the peak of each stage is reported.
    """
    import re
    import threading

    import psutil

    workdir = Path(args.workdir)
    model_dir, data_dir = score_data(workdir, args.score, args.eval_images, args.image_size, args.layers)
    output = workdir / f"out-{os.getpid()}"
    command = [
        sys.executable, "-m", "iis_hf.cli", "score", "--model", str(model_dir), "--dataset", str(data_dir),
        "--output-dir", str(output), "--overwrite", *([] if args.timeline else ["-q"]),
        *shlex.split(args.score_args),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": args.pythonpath or str(REPO)}
    started = time.perf_counter()
    # cwd: `python -m` puts the current folder first on the import path, before PYTHONPATH (the checkout must win)
    child = subprocess.Popen(command, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log, stage = [], ["loading"]

    def read() -> None:  # drains the pipe (a full one would block the child) and follows the bars
        for chunk in iter(lambda: child.stdout.read1(4096), b""):  # a bar redraws with "\r", no "\n"
            text = chunk.decode(errors="replace")
            log.append(text)
            for part in re.split(r"[\r\n]", text):
                bar = re.match(r"\s*([A-Za-z][^:|]{2,60}):\s+\d+%", part)
                if bar:
                    stage[0] = bar.group(1).strip()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    process, peak_pss, peaks = psutil.Process(child.pid), 0, {}
    while child.poll() is None:
        total = 0
        try:
            rss = process.memory_info().rss
            peaks[stage[0]] = max(peaks.get(stage[0], 0), rss)
            for p in [process, *process.children(recursive=True)]:
                total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
        peak_pss = max(peak_pss, total)
        time.sleep(0.5)
    seconds = time.perf_counter() - started
    reader.join(timeout=10)
    if child.returncode != 0:
        raise SystemExit(f"iis-hf score failed ({child.returncode}):\n{''.join(log)[-3000:]}")
    maxrss = resource_maxrss_children()
    iis = json.loads((output / "iis.json").read_text())["iis"]
    result = {
        "train_images": args.score, "eval_images": args.eval_images, "layers": args.layers,
        "pythonpath": env["PYTHONPATH"], "score_args": args.score_args,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "seconds": round(seconds, 1),
        "peak_rss_mb": round(maxrss / 2**20, 1), "peak_pss_mb": round(peak_pss / 2**20, 1), "iis": iis,
    }  # fmt: skip
    if args.timeline:
        result["peak_rss_mb_by_stage"] = {k: round(v / 2**20, 1) for k, v in peaks.items()}
    return result


def extraction_memory(args) -> dict:
    """Peak RSS of `extract_features` alone on the --score data's train split, in a fresh process
    importing iis_hf from --pythonpath (sampled every 20 ms; the base is the RSS just before)."""
    workdir = Path(args.workdir)
    model_dir, data_dir = score_data(workdir, args.score, args.eval_images, args.image_size, args.layers)
    code = f"""
import ctypes, json, threading, time
import psutil
from datasets import load_dataset
from transformers import AutoImageProcessor, AutoModelForImageClassification
from iis_hf.features import extract_features
data = load_dataset("imagefolder", data_dir={str(data_dir)!r})["train"]
model = AutoModelForImageClassification.from_pretrained({str(model_dir)!r}).eval()
processor = AutoImageProcessor.from_pretrained({str(model_dir)!r})
me, peak, done = psutil.Process(), [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], me.memory_info().rss)
        time.sleep(0.02)
ctypes.CDLL("libc.so.6").malloc_trim(0)
base = me.memory_info().rss
sampler = threading.Thread(target=sample)
sampler.start()
started = time.perf_counter()
extract_features(model, data, image_processor=processor, device="cpu", batch_size={args.batch_size},
                 num_workers={args.num_workers[0] or 0}, progress=False)
seconds = time.perf_counter() - started
done.set()
sampler.join()
import iis_hf
print(json.dumps({{"base_mb": base / 2**20, "peak_mb": peak[0] / 2**20, "seconds": seconds, "iis_hf": iis_hf.__file__}}))
"""
    env = {**os.environ, "PYTHONPATH": args.pythonpath or str(REPO)}
    done = subprocess.run(  # cwd: `-c` puts the current folder first on the import path, before PYTHONPATH
        [sys.executable, "-c", code], env=env, cwd=workdir, capture_output=True, text=True, check=True
    )
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "train_images": args.score, "layers": args.layers, "batch_size": args.batch_size,
        "num_workers": args.num_workers[0] or 0, "pythonpath": env["PYTHONPATH"],
        **{k: round(v, 1) if isinstance(v, float) else v for k, v in measured.items()},
    }  # fmt: skip


def resource_maxrss_children() -> int:
    """Bytes: the largest resident set of any waited-for child (the scoring process; Linux: KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", type=int, nargs="?", default=32, help="number of images N")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--layers", type=int, default=6, help="ViT layers (the issue's case: 4)")
    parser.add_argument("--format", choices=["png", "jpeg"], default="png")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--num-workers", type=workers_value, nargs="+", default=[0], help="one or more; 'auto' allowed"
    )
    parser.add_argument(
        "--preprocessings", nargs="+", choices=["processor", "tensor"], default=["processor", "tensor"]
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, nargs="+", help="the threshold mode: numbers of images")
    parser.add_argument(
        "--repeats", type=int, default=None, help="runs of each, the fastest kept (default: 1; --workers: 2)"
    )
    parser.add_argument("--score", type=int, help="the score mode: training images")
    parser.add_argument("--eval-images", type=int, default=500)
    parser.add_argument("--workdir", default="/tmp/iis_bench_score")
    parser.add_argument("--pythonpath", default=None, help="--score: the iis_hf checkout to run")
    parser.add_argument("--score-args", default="", help="--score: more `iis-hf score` flags")
    parser.add_argument(
        "--timeline", action="store_true", help="--score: the main process's peak RSS in each stage"
    )
    parser.add_argument(
        "--extraction-only",
        action="store_true",
        help="--score: the peak RSS of extract_features alone on the train images (--batch-size, one --num-workers)",
    )
    args = parser.parse_args()
    args.repeats = args.repeats or (2 if args.workers else 1)
    hf_logging.set_verbosity_error()
    device = torch.device(args.device)
    if args.score and args.extraction_only:
        result = extraction_memory(args)
        print(
            f"extract_features on {args.score} images: peak RSS {result['peak_mb']} MB (base {result['base_mb']} MB)"
        )
        print(json.dumps(result))
        return
    if args.score:
        result = score_run(args)
        print(
            f"iis-hf score, {args.score} + {args.eval_images} images: {result['seconds']} s, IIS "
            f"{result['iis']:.4f}, peak RSS {result['peak_rss_mb']} MB (PSS with workers {result['peak_pss_mb']} MB)"
        )
        print(json.dumps(result))
        return
    if args.workers:
        print(json.dumps(workers_threshold(args, device)))
        return
    model, processor = build(args.image_size, args.layers)
    dataset = encoded_dataset(args.images, image_format=args.format)
    result = {"images": args.images, "device": str(device), "batch_size": args.batch_size,
              "layers": args.layers, "format": args.format}  # fmt: skip
    stages, pixels = stage_times(model, processor, dataset, args.batch_size, device, args.preprocessings)
    result.update(stages)
    extraction = extraction_times(model, processor, dataset, args, device, pixels)
    result["forward_s"] = min(result["forward_s"], extraction.pop("forward_s", float("inf")))
    result.update(extraction)
    for preprocessing in args.preprocessings:
        stages = ("decode_s", f"preprocess_{preprocessing}_s", "forward_s")
        total = sum(result[s] for s in stages)
        shares = ", ".join(f"{s.removesuffix('_s')} {result[s] / total:.0%}" for s in stages)
        result[f"shares_{preprocessing}"] = {
            s.removesuffix("_s"): round(result[s] / total, 4) for s in stages
        }
        runs = sorted(k for k in result if k.startswith(f"extraction_{preprocessing}_w"))
        ratios = []
        for key in runs:
            workers = key.removeprefix(f"extraction_{preprocessing}_w").removesuffix("_s")
            ratio = result[key] / result["forward_s"]
            result[f"ratio_{preprocessing}_w{workers}"] = ratio
            ratios.append(f"{ratio:.2f}x with {workers} workers")
        if len(runs) == 1:
            result[f"ratio_{preprocessing}"] = result[f"ratio_{preprocessing}_w{workers}"]
        print(f"{preprocessing:9s}: {shares}; extraction {', '.join(ratios)} the bare forward")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
