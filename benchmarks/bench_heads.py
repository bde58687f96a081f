"""Head training, side by side: the published pipeline's shape vs `iis_hf.compute_iis`.

Both sides train on the same synthetic features (planted class structure, ImageNet-shaped but sized
for the machine), with the same concepts, ratios, epochs, batch size and optimizer recipe, and
report the best eval top-1 per ratio:

(a) reference: a re-implementation, written for this benchmark from docs/METHOD.md, of the published
    pipeline's shape: every feature a separate Python object in a per-sample dataset, a DataLoader
    with batch 1024, one head per ratio trained in turn (the concept projection recomputed for
    each batch of each head), and a sort of every batch for every ratio; the standard probe is
    trained the same way. It starts from the same initial weights and sees the same shuffles as
    (b), so the accuracy gap measures the implementations, not the luck of two random runs;
(b) ours: `iis_hf.compute_iis` (all ratios in one pass, projection and normalisation computed
    once; its probe is also included in the time).

    python benchmarks/bench_heads.py                                 # N=100k, D=768, C=200, K=100
    python benchmarks/bench_heads.py --growth 25000 50000 100000 200000   # ours only, time vs N
    python benchmarks/bench_heads.py --rows 2000 --dim 32 --epochs 2  # tiny (used by the tests)

The last line printed is one JSON object: reference_s, ours_s, speedup, max_accuracy_gap
(or, with --growth, the times and the fitted exponent).
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iis_hf import compute_iis
from iis_hf.config import DEFAULT_SPARSITY_RATIOS
from iis_hf.heads.modules import LinearProbe, ratio_generator, uniform_init_
from iis_hf.heads.rows import Rows, feature_moments


def planted_features(rows: int, dim: int, classes: int, seed: int, separation: float = 0.04):
    """Gaussian classes in a random low-rank subspace plus isotropic noise: a moderate probe accuracy."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.randn(64, dim, generator=torch.Generator().manual_seed(12345)) / math.sqrt(64)
    means = torch.randn(classes, 64, generator=torch.Generator().manual_seed(54321)) @ basis * separation * 8
    labels = torch.randint(0, classes, (rows,), generator=generator)
    return means[labels] + torch.randn(rows, dim, generator=generator), labels


# ----------------------------------------------------------------------------- (a) the reference
class PerSampleDataset(torch.utils.data.Dataset):
    """One Python object per feature, as the published pipeline keeps them."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.items = [(features[i].clone(), int(labels[i])) for i in range(features.shape[0])]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class EpochPermutation(torch.utils.data.Sampler):
    """One `randperm` per epoch from a seeded generator: the shuffle iis-hf uses. (RandomSampler
    draws two permutations per epoch, and DataLoader(generator=) also draws from the generator.)"""

    def __init__(self, size: int, seed: int):
        self.size, self.generator = size, torch.Generator().manual_seed(seed)

    def __len__(self):
        return self.size

    def __iter__(self):
        return iter(torch.randperm(self.size, generator=self.generator).tolist())


class ReferenceHead(nn.Module):
    def __init__(self, concepts: torch.Tensor, num_classes: int, ratio: float, seed: int):
        super().__init__()
        self.register_buffer("concepts", F.normalize(concepts, dim=1))
        self.norm = nn.LayerNorm(concepts.shape[0])
        self.fc = nn.Linear(concepts.shape[0], num_classes)
        self.ratio = ratio
        # The same initial weights as iis-hf's head for this ratio, so both sides start alike.
        generator = ratio_generator(seed, ratio)
        uniform_init_(self.fc.weight.data, concepts.shape[0], generator)
        uniform_init_(self.fc.bias.data, concepts.shape[0], generator)

    def forward(self, x):
        a = self.norm(x @ self.concepts.T)
        threshold = torch.sort(a.abs(), dim=1).values[:, int(a.shape[1] * self.ratio)].unsqueeze(1)
        return self.fc(a * (a.abs() > threshold))


def train_reference(module, train_loader, eval_loader, epochs: int, lr: float) -> float:
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.99)
    best = 0.0
    for _ in range(epochs):
        module.train()
        for x, y in train_loader:
            loss = F.cross_entropy(module(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        module.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in eval_loader:
                correct += (module(x).argmax(1) == y).sum().item()
                total += y.shape[0]
        best = max(best, correct / total)
    return best


def reference_pipeline(train, evaluation, concepts, num_classes, ratios, epochs, batch_size, lr, seed):
    train_set, eval_set = PerSampleDataset(*train), PerSampleDataset(*evaluation)
    eval_loader = torch.utils.data.DataLoader(eval_set, batch_size=batch_size)

    def train_loader():  # every head sees the same shuffles (and the same as iis-hf's pass)
        return torch.utils.data.DataLoader(
            train_set, batch_size=batch_size, sampler=EpochPermutation(len(train_set), seed)
        )

    accuracies = [
        train_reference(
            ReferenceHead(concepts, num_classes, r, seed), train_loader(), eval_loader, epochs, lr
        )
        for r in ratios
    ]
    mean, std = feature_moments(Rows(train[0]))
    probe = LinearProbe(mean, std, num_classes, seed)  # standardised input, as iis-hf's probe
    standard = train_reference(probe, train_loader(), eval_loader, epochs, lr)
    return accuracies, standard


# ----------------------------------------------------------------------------- the runs
def run_ours(train, evaluation, concepts, num_classes, ratios, epochs, batch_size, lr, seed, device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compute_iis(
            *train,
            *evaluation,
            concepts,
            sparsity_ratios=ratios,
            num_classes=num_classes,
            epochs=epochs,
            head_batch_size=batch_size,
            learning_rate=lr,
            seed=seed,
            device=device,
            progress=False,
            probe_min_steps=0,
        )
    return result


def anchor(args, ratios, concepts) -> dict:
    """Seconds per epoch of iis-hf's head training at ImageNet scale, all ratios together vs in turn.

    Features are generated on the device; the per-epoch time is the difference between a 2-epoch
    and a 1-epoch run, so setup (projection, statistics) is left out.
    """
    from iis_hf.heads import fit_heads

    device = torch.device(args.device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    classes = torch.randn(args.classes, args.dim, generator=generator, device=device) * args.separation * 8
    labels = torch.randint(0, args.classes, (args.rows,), generator=generator, device=device)
    features = classes[labels] + torch.randn(args.rows, args.dim, generator=generator, device=device)
    evaluation = (features[:50_000], labels[:50_000])

    def seconds(sparsity_ratios, epochs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        fit_heads(
            features,
            labels,
            *evaluation,
            concepts.to(device),
            num_classes=args.classes,
            sparsity_ratios=sparsity_ratios,
            epochs=epochs,
            head_batch_size=args.batch_size,
            device=device,
            progress=False,
            probe_min_steps=0,
            head_precision=args.precision,
            cuda_graphs=not args.no_cuda_graphs,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    seconds(ratios, 1)  # warm-up
    together = seconds(ratios, 2) - seconds(ratios, 1)
    in_turn = None if args.no_in_turn else sum(seconds([r], 2) - seconds([r], 1) for r in ratios)
    if args.profile:
        profile_epoch(seconds, ratios, device)
    result = {
        "rows": args.rows,
        "dim": args.dim,
        "concepts": args.num_concepts,
        "classes": args.classes,
        "ratios": len(ratios),
        "device": args.device,
        "precision": args.precision,
        "cuda_graphs": not args.no_cuda_graphs,
        "epoch_s_all_ratios_one_pass": round(together, 3),
        "epoch_s_one_ratio_after_another": round(in_turn, 3) if in_turn else None,
        "ratio": round(in_turn / together, 2) if in_turn else None,
        "steps_per_epoch": -(-args.rows // args.batch_size),
    }
    print(
        f"one epoch over {args.rows} x {args.dim}: {together:.2f} s all ratios in one pass"
        + (f", {in_turn:.2f} s one ratio after another" if in_turn else "")
    )
    print(json.dumps(result))
    return result


def profile_epoch(seconds, ratios, device) -> None:
    """Where one epoch's time goes: the top operators by device time, and device-busy vs wall time
    (busy much below wall means the host's kernel launches, not the device, set the pace)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        wall = seconds(ratios, 1)
    events = prof.key_averages()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    if device.type == "cuda":  # the kernels themselves (device-side events), not the operators
        kernels = [e for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")]
        busy = sum(getattr(e, attr, 0) for e in kernels) / 1e6
    else:
        busy = sum(getattr(e, attr, 0) for e in events) / 1e6
    print(f"profiled 1-epoch fit: wall {wall:.2f} s (profiler on), device-busy {busy:.2f} s")
    print(events.table(sort_by=attr, row_limit=12, max_name_column_width=48))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--eval-rows", type=int, default=None, help="default: rows / 5")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--num-concepts", type=int, default=200, help="C, the number of concept vectors")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument(
        "--separation", type=float, default=0.04, help="class separation of the planted features"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--growth", type=int, nargs="*", default=None, help="time ours at these N; fit exponent"
    )
    parser.add_argument(
        "--anchor", action="store_true", help="per-epoch time of ours: all ratios in one pass vs in turn"
    )
    parser.add_argument(
        "--no-in-turn", action="store_true", help="with --anchor: skip the one-ratio-after-another timing"
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="with --anchor: heads' precision",
    )
    parser.add_argument(
        "--no-cuda-graphs", action="store_true", help="with --anchor: run every step eagerly on CUDA"
    )
    parser.add_argument(
        "--profile", action="store_true", help="with --anchor: print the top kernels of one profiled epoch"
    )
    args = parser.parse_args(argv)
    ratios = list(DEFAULT_SPARSITY_RATIOS)
    concepts = torch.randn(args.num_concepts, args.dim, generator=torch.Generator().manual_seed(7))
    eval_rows = args.eval_rows or max(args.rows // 5, 100)
    evaluation = planted_features(eval_rows, args.dim, args.classes, args.seed + 1, args.separation)
    common = dict(
        num_classes=args.classes,
        ratios=ratios,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.learning_rate,
        seed=args.seed,
    )

    if args.anchor:
        return anchor(args, ratios, concepts)
    if args.growth:
        times = []
        warm = planted_features(2048, args.dim, args.classes, args.seed, args.separation)
        run_ours(warm, warm, concepts, device=args.device, **{**common, "epochs": 1})  # first-call costs
        for rows in args.growth:
            train = planted_features(rows, args.dim, args.classes, args.seed, args.separation)
            started = time.perf_counter()
            run_ours(train, evaluation, concepts, device=args.device, **common)
            times.append(time.perf_counter() - started)
            print(f"N={rows:>8}: {times[-1]:.2f} s")
        exponent = float(np.polyfit(np.log(args.growth), np.log(times), 1)[0])
        # The evaluation set is the same size at every N, so time = fixed + per_row * N; a
        # straight line that fits well (r^2 near 1) is linear growth even where the exponent is < 1.
        per_row, fixed = np.polyfit(args.growth, times, 1)
        r2 = float(np.corrcoef(args.growth, times)[0, 1] ** 2)
        result = {
            "rows": args.growth,
            "seconds": [round(t, 3) for t in times],
            "exponent": round(exponent, 3),
            "linear_fit_fixed_s": round(float(fixed), 3),
            "linear_fit_us_per_row": round(float(per_row) * 1e6, 3),
            "linear_fit_r2": round(r2, 4),
            "epochs": args.epochs,
            "dim": args.dim,
            "concepts": args.num_concepts,
            "classes": args.classes,
        }
        print(f"fitted exponent of time vs N: {exponent:.3f} (1.0 = linear)")
        print(f"linear fit: {fixed:.2f} s + {per_row * 1e6:.1f} us x N (r^2 = {r2:.4f})")
        print(json.dumps(result))
        return result

    train = planted_features(args.rows, args.dim, args.classes, args.seed, args.separation)
    print(
        f"N={args.rows} train / {eval_rows} eval, D={args.dim}, C={args.num_concepts}, K={args.classes}, "
        f"{len(ratios)} ratios, {args.epochs} epochs, batch {args.batch_size}",
        flush=True,
    )
    warm = (train[0][:2048], train[1][:2048])  # imports and first-call costs stay out of the timing
    run_ours(warm, warm, concepts, device=args.device, **{**common, "epochs": 1})
    started = time.perf_counter()
    ours = run_ours(train, evaluation, concepts, device=args.device, **common)
    ours_s = time.perf_counter() - started
    print(f"ours:      {ours_s:8.1f} s", flush=True)
    started = time.perf_counter()
    reference, reference_standard = reference_pipeline(train, evaluation, concepts, **common)
    reference_s = time.perf_counter() - started
    print(f"reference: {reference_s:8.1f} s", flush=True)
    gaps = [abs(a - b) * 100 for a, b in zip(ours.accuracies, reference)]
    print(f"{'ratio':>6} {'reference':>10} {'ours':>8} {'gap (pts)':>10}")
    for r, a, b, g in zip(ratios, reference, ours.accuracies, gaps):
        print(f"{r:>6.2f} {a:>10.4f} {b:>8.4f} {g:>10.2f}")
    print(
        f"{'probe':>6} {reference_standard:>10.4f} {ours.standard_accuracy:>8.4f} "
        f"{abs(reference_standard - ours.standard_accuracy) * 100:>10.2f}"
    )
    result = {
        "reference_s": round(reference_s, 2),
        "ours_s": round(ours_s, 2),
        "speedup": round(reference_s / ours_s, 2),
        "max_accuracy_gap": round(max(gaps), 3),
        "probe_accuracy_gap": round(abs(reference_standard - ours.standard_accuracy) * 100, 3),
        "rows": args.rows,
        "dim": args.dim,
        "concepts": args.num_concepts,
        "classes": args.classes,
        "epochs": args.epochs,
        "device": args.device,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
