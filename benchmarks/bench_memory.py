"""Peak resident memory while scoring ImageNet-sized features stored once, in float16, on disk.

Writes 1,281,167 x 768 synthetic features (ImageNet train with ViT-B) into a `FeatureStore`
(safetensors, float16, streamed in chunks: the full matrix never sits in memory), then scores them
with `compute_iis` in a fresh process that reads the store memory-mapped, and reports that
process's peak resident set (`ru_maxrss`) against the file's size. Goal: under 1.5x the file.

    python benchmarks/bench_memory.py                      # full size (writes ~2 GB to --folder)
    python benchmarks/bench_memory.py --rows 20000         # small

The last line printed is one JSON object: store_gib, peak_rss_gib, ratio, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from iis_hf.features.store import write_feature_store


def synthetic_chunks(rows: int, dim: int, classes: int, seed: int, chunk: int = 65536):
    """Planted classes plus noise, generated chunk by chunk with their labels."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dim, generator=torch.Generator().manual_seed(1)) * 0.3
    labels = torch.randint(0, classes, (rows,), generator=generator)

    def chunks():
        for start in range(0, rows, chunk):
            y = labels[start : start + chunk]
            yield means[y] + torch.randn(y.shape[0], dim, generator=generator)

    return chunks(), labels


def score(train_path: str, eval_path: str, concepts: int, epochs: int) -> None:
    """Runs in the measured child process."""
    import warnings

    from iis_hf import compute_iis
    from iis_hf.features.store import FeatureStore

    train, evaluation = FeatureStore(train_path), FeatureStore(eval_path)
    vectors = torch.randn(concepts, train.dim, generator=torch.Generator().manual_seed(7))
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compute_iis(
            train, None, evaluation, None, vectors, epochs=epochs, progress=False, device="cpu"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    print(
        json.dumps(
            {
                "peak_rss_bytes": peak,
                "seconds": time.perf_counter() - started,
                "iis": result.iis,
                "standard_accuracy": result.standard_accuracy,
            }
        )
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_281_167)
    parser.add_argument("--eval-rows", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--num-concepts", type=int, default=200, help="C, the number of concept vectors")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--folder", default=None, help="where the stores are written (default: a temp folder)"
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        score(*args.child, args.num_concepts, args.epochs)
        return {}

    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        paths = []
        for name, rows, seed in (("train", args.rows, 0), ("eval", args.eval_rows, 1)):
            chunks, labels = synthetic_chunks(rows, args.dim, args.classes, seed)
            path = Path(folder) / f"{name}.safetensors"
            write_feature_store(path, chunks, rows, args.dim, labels)
            paths.append(str(path))
        store_bytes = os.path.getsize(paths[0])
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                *paths,
                "--num-concepts",
                str(args.num_concepts),
                "--epochs",
                str(args.epochs),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        measured = json.loads(child.stdout.strip().splitlines()[-1])
    result = {
        "rows": args.rows,
        "dim": args.dim,
        "classes": args.classes,
        "concepts": args.num_concepts,
        "epochs": args.epochs,
        "store_gib": round(store_bytes / 2**30, 3),
        "peak_rss_gib": round(measured["peak_rss_bytes"] / 2**30, 3),
        "ratio": round(measured["peak_rss_bytes"] / store_bytes, 3),
        "seconds": round(measured["seconds"], 1),
        "iis": round(measured["iis"], 4),
    }
    print(
        f"store {result['store_gib']} GiB on disk; peak resident {result['peak_rss_gib']} GiB "
        f"({result['ratio']:.2f}x) while scoring in {result['seconds']} s"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
