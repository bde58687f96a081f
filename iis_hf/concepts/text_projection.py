"""The projection of text concepts: a linear map from a backbone's representation to the words,
fitted so its outputs match CLIP's similarities by label-free CBM's cubed cosine (steps 3 and 5).

Kept apart from the vocabulary and from CLIP: this is the only trained part of the recipe
(`iis_hf.concepts.text` gives the whole).
"""

from __future__ import annotations

import math

import torch

from ..devices import resolve_device
from ..progress import progress_bar

EARLY_STOP_EPOCHS = 100  # stop when the held-out match has not improved for this many epochs


def cubed_cosine_similarity(targets: torch.Tensor, outputs: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per concept, the cosine over images of mean-centred, cubed targets and outputs (label-free CBM).

    Args:
        targets, outputs: (N, C) arrays (e.g. CLIP similarities and projection outputs).

    Returns:
        (C,) similarities in [-1, 1]; a concept constant over the images scores 0.
    """
    a = targets - targets.mean(dim=0, keepdim=True)
    b = outputs - outputs.mean(dim=0, keepdim=True)
    a, b = a**3, b**3
    a = a / a.norm(dim=0, keepdim=True).clamp_min(eps)
    b = b / b.norm(dim=0, keepdim=True).clamp_min(eps)
    return (a * b).sum(dim=0)


def fit_text_projection(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    holdout_features: torch.Tensor,
    holdout_targets: torch.Tensor,
    *,
    epochs: int = 1000,
    learning_rate: float = 1e-3,
    batch_size: int = 5000,
    seed: int = 0,
    device=None,
    progress: bool = True,
) -> tuple[torch.Tensor, int]:
    """Fit a bias-free (C, D) projection of raw features to `train_targets` by the cubed cosine.

    Returns the weight in raw-feature space (epoch with the best mean held-out match) and that epoch.
    """
    device = resolve_device(device)
    x_mean = train_features.mean(dim=0, keepdim=True)
    x_std = train_features.std(dim=0, keepdim=True)
    x_std = torch.where(x_std > 0, x_std, torch.ones_like(x_std))
    t_std = train_targets.std(dim=0, keepdim=True)
    t_std = torch.where(t_std > 0, t_std, torch.ones_like(t_std))
    train_x = ((train_features - x_mean) / x_std).to(device)
    holdout_x = ((holdout_features - x_mean) / x_std).to(device)
    train_t = (train_targets / t_std).to(device)
    holdout_t = (holdout_targets / t_std).to(device)

    num_train, dim = train_x.shape
    generator = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(dim)
    weight = ((torch.rand(train_t.shape[1], dim, generator=generator) * 2 - 1) * bound).to(device)
    weight.requires_grad_(True)
    optimizer = torch.optim.Adam([weight], lr=learning_rate)

    def holdout_match() -> float:
        with torch.no_grad():
            return float(cubed_cosine_similarity(holdout_t, holdout_x @ weight.T).mean())

    best_match, best_epoch, best_weight = holdout_match(), -1, weight.detach().clone()
    batch_size = max(2, min(batch_size, num_train))
    full_batch = batch_size >= num_train  # then the order of the images does not matter
    with progress_bar(total=epochs, desc="text concept projection", unit="epoch", enabled=progress) as bar:
        for epoch in range(epochs):
            order = None if full_batch else torch.randperm(num_train, generator=generator).to(device)
            for start in range(0, num_train, batch_size):
                if order is None:
                    x, t = train_x, train_t
                else:
                    idx = order[start : start + batch_size]
                    if idx.numel() < 2:  # a cosine over one centred image is 0/0
                        continue
                    x, t = train_x[idx], train_t[idx]
                loss = -cubed_cosine_similarity(t, x @ weight.T).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            bar.update(1)
            match = holdout_match()
            if match > best_match:
                best_match, best_epoch, best_weight = match, epoch, weight.detach().clone()
            elif epoch - best_epoch >= EARLY_STOP_EPOCHS:
                bar.total = epoch + 1  # done early: the bar ends full, saying why
                bar.set_postfix_str(f"early-stopped, best epoch {best_epoch}", refresh=False)
                break
    return (best_weight.cpu() / x_std), best_epoch


def standardisation(activations: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 5: per-concept mean and std over the training probe images (every std must be > 0)."""
    mean, std = activations.mean(dim=0), activations.std(dim=0)
    flat = [w for w, s in zip(names, std) if not s > 0]
    if flat:
        raise ValueError(f"concepts {flat} are constant over the probe images; they cannot be standardised")
    return mean, std
