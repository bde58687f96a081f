"""Head training with and without CUDA graphs on the same features: the same accuracies and weights?

    python benchmarks/check_graphed_heads.py --device cuda

Trains `fit_heads` twice on planted features (same seed), once replaying each full batch's step
from a CUDA graph and once eagerly, and prints per-ratio accuracies, the largest accuracy gap, the
largest difference between the trained head weights, and both times. On a CPU both runs are eager
(a smoke run). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_heads import planted_features

from iis_hf.config import DEFAULT_SPARSITY_RATIOS
from iis_hf.heads import fit_heads


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--num-concepts", type=int, default=200, help="C, the number of concept vectors")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    train = planted_features(args.rows, args.dim, args.classes, seed=0)
    evaluation = planted_features(max(args.rows // 5, 100), args.dim, args.classes, seed=1)
    concepts = torch.randn(args.num_concepts, args.dim, generator=torch.Generator().manual_seed(7))
    train = tuple(t.to(device) for t in train)
    evaluation = tuple(t.to(device) for t in evaluation)

    fits, seconds = {}, {}
    for graphs in (True, False):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        fits[graphs] = fit_heads(
            *train,
            *evaluation,
            concepts.to(device),
            num_classes=args.classes,
            sparsity_ratios=list(DEFAULT_SPARSITY_RATIOS),
            epochs=args.epochs,
            device=device,
            progress=False,
            probe_min_steps=0,
            cuda_graphs=graphs,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds[graphs] = time.perf_counter() - started
    graphed, eager = fits[True], fits[False]
    print(f"{'ratio':>6} {'graphed':>8} {'eager':>8}")
    for ratio, a, b in zip(DEFAULT_SPARSITY_RATIOS, graphed.accuracies, eager.accuracies):
        print(f"{ratio:>6.2f} {a:>8.4f} {b:>8.4f}")
    weights = graphed.heads.state_dict()
    weight_gap = max(
        float((weights[name].float() - t.float()).abs().max()) for name, t in eager.heads.state_dict().items()
    )
    result = {
        "device": args.device,
        "graphed_s": round(seconds[True], 3),
        "eager_s": round(seconds[False], 3),
        "max_accuracy_gap": round(
            max(abs(a - b) for a, b in zip(graphed.accuracies, eager.accuracies)) * 100, 3
        ),
        "probe_accuracy_gap": round(abs(graphed.standard_accuracy - eager.standard_accuracy) * 100, 3),
        "max_weight_difference": weight_gap,
        "same_best_epochs": graphed.best_epochs == eager.best_epochs,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
