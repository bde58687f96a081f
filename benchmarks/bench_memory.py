"""Peak resident memory while scoring ImageNet-sized features stored once, in float16, on disk.

Writes 1,281,167 x 768 synthetic features (ImageNet train with ViT-B) into a `FeatureStore`
(safetensors, float16, streamed in chunks: the full matrix never sits in memory), then scores them
with `compute_iis` in a fresh process that reads the store memory-mapped, and reports that
process's peak resident set (`ru_maxrss`) against the file's size. Goal: under 1.5x the file.

    python benchmarks/bench_memory.py                      # full size (writes ~2 GB to --folder)
    python benchmarks/bench_memory.py --rows 20000         # small

The last line printed is one JSON object: store_gib, peak_rss_gib, ratio, seconds.

``--sweep 20000 50000 100000 200000`` instead scores each size twice, each in a fresh process:
"before", the in-memory path (features whole in RAM as float32, as `extract_features` returns
them, concept activations computed once for every row), and "after", the bounded path (the float16
store read in batches, activations projected per batch once they pass
`iis_hf.heads.rows.KEPT_ACTIVATIONS_BYTES`); eval rows are a fifth of the train rows. It prints
one table row per size (peak RSS of each, and the IIS of each: the same features, so the same
number within 1e-4) and a JSON list. Goal: "after" flat within 20 % from the smallest to the largest.
The sweep trains one epoch with ``probe_min_steps=0`` (memory, not accuracy, is measured).
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


def peak_rss_bytes() -> int:
    """This process's peak resident set since it started: /proc's VmHWM where there is one.

    Not `ru_maxrss`: Linux carries that over from the parent at fork and exec, so a child started by
    a parent that had just written a large store reported the parent's peak, not its own.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def in_memory(store):
    """The in-memory path's features: the whole (N, D) matrix as float32 (plus its labels)."""
    features = torch.empty(store.num_rows, store.dim)
    for start, chunk in store.chunks(65536):
        features[start : start + chunk.shape[0]] = chunk
    store.release_all()
    return features, store.labels


def score(train_path: str, eval_path: str, concepts: int, epochs: int, mode: str = "store") -> None:
    """Runs in the measured child process; `mode` "memory" scores the in-memory path."""
    import warnings

    from iis_hf import compute_iis
    from iis_hf.features.store import FeatureStore

    train, evaluation = FeatureStore(train_path), FeatureStore(eval_path)
    vectors = torch.randn(concepts, train.dim, generator=torch.Generator().manual_seed(7))
    started = time.perf_counter()
    extra = {"probe_min_steps": 0} if mode != "store" else {}
    inputs = (
        (*in_memory(train), *in_memory(evaluation)) if mode == "memory" else (train, None, evaluation, None)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compute_iis(*inputs, vectors, epochs=epochs, progress=False, device="cpu", **extra)
    peak = peak_rss_bytes()
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
    parser.add_argument(
        "--sweep", type=int, nargs="+", help="train sizes to score before (in memory) and after (bounded)"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        score(*args.child[:2], args.num_concepts, args.epochs, mode=args.child[2])
        return {}
    if args.sweep:
        return sweep(args)

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
                "store",
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


def measure(paths: list[str], args, mode: str) -> dict:
    """Score the stores at `paths` in a fresh process; its peak RSS, time and IIS."""
    command = [sys.executable, __file__, "--child", *paths, mode]
    command += ["--num-concepts", str(args.num_concepts), "--epochs", str(args.epochs)]
    child = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(child.stdout.strip().splitlines()[-1])


def sweep(args) -> list[dict]:
    """Peak RSS of the in-memory path ("before") and the bounded path ("after") at each size."""
    rows_out = []
    print(
        f"D = {args.dim}, C = {args.num_concepts}, {args.classes} classes, {args.epochs} epoch(s), eval = rows / 5"
    )
    print(
        f"{'rows':>8} | {'before MiB':>10} | {'after MiB':>9} | {'before IIS':>10} | {'after IIS':>9} | {'after s':>7}"
    )
    for rows in args.sweep:
        with tempfile.TemporaryDirectory(dir=args.folder) as folder:
            paths = []
            for name, count, seed in (("train", rows, 0), ("eval", max(rows // 5, 1), 1)):
                chunks, labels = synthetic_chunks(count, args.dim, args.classes, seed)
                path = Path(folder) / f"{name}.safetensors"
                write_feature_store(path, chunks, count, args.dim, labels)
                paths.append(str(path))
            before, after = measure(paths, args, "memory"), measure(paths, args, "bounded")
        row = {
            "rows": rows,
            "before_peak_rss_mib": round(before["peak_rss_bytes"] / 2**20),
            "after_peak_rss_mib": round(after["peak_rss_bytes"] / 2**20),
            "before_iis": round(before["iis"], 6),
            "after_iis": round(after["iis"], 6),
            "before_seconds": round(before["seconds"], 1),
            "after_seconds": round(after["seconds"], 1),
        }
        rows_out.append(row)
        print(
            f"{rows:>8} | {row['before_peak_rss_mib']:>10} | {row['after_peak_rss_mib']:>9} | "
            f"{row['before_iis']:>10.6f} | {row['after_iis']:>9.6f} | {row['after_seconds']:>7}",
            flush=True,
        )
    after = [r["after_peak_rss_mib"] for r in rows_out]
    print(f"after: largest / smallest peak RSS = {max(after) / min(after):.3f} (goal: at most 1.2)")
    print(json.dumps(rows_out))
    return rows_out


if __name__ == "__main__":
    main()
