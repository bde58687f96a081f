"""The interpretation head is exactly steps 1-5 of the method; all ratios at once equal each alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iis_hf.heads import InterpretationHead, InterpretationHeads, fit_heads, sparsify


def reference_head(x, concepts, gamma, beta, weight, bias, ratio, eps=1e-5):
    """Steps 1-5 of docs/METHOD.md written out in numpy, independent of the library."""
    p = concepts / np.linalg.norm(concepts, axis=1, keepdims=True)
    a = x @ p.T
    a = (a - a.mean(1, keepdims=True)) / np.sqrt(a.var(1, keepdims=True) + eps) * gamma + beta
    c = a.shape[1]
    out = np.zeros_like(a)
    for i in range(a.shape[0]):
        t = np.sort(np.abs(a[i]))[int(c * ratio)]
        out[i] = np.where(np.abs(a[i]) > t, a[i], 0.0)
    return out @ weight.T + bias, out


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 0.9, 0.98])
def test_head_matches_direct_recomputation(ratio):
    rng = np.random.default_rng(0)
    concepts = rng.normal(size=(50, 12)) * rng.uniform(0.1, 5, size=(50, 1))  # rows deliberately unnormalised
    x = rng.normal(size=(7, 12)) * 3
    head = InterpretationHead(
        torch.tensor(concepts, dtype=torch.float32), num_classes=4, sparsity_ratio=ratio
    )
    with torch.no_grad():
        head.norm.weight.uniform_(0.5, 1.5)
        head.norm.bias.uniform_(-0.2, 0.2)
    logits = head(torch.tensor(x, dtype=torch.float32)).detach().numpy()
    expected, activations = reference_head(
        x,
        concepts,
        head.norm.weight.detach().numpy(),
        head.norm.bias.detach().numpy(),
        head.classifier.weight.detach().numpy(),
        head.classifier.bias.detach().numpy(),
        ratio,
    )
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    zeros = (head.concept_activations(torch.tensor(x, dtype=torch.float32)) == 0).sum(1)
    assert zeros.tolist() == [(activations[i] == 0).sum() for i in range(7)]


def test_head_layer_norm_has_default_init():
    head = InterpretationHead(torch.randn(10, 4), num_classes=3)
    assert torch.equal(head.norm.weight, torch.ones(10)) and torch.equal(head.norm.bias, torch.zeros(10))
    assert head.norm.eps == 1e-5


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.95])
def test_sparsify_drops_int_c_rho_plus_one_concepts(ratio):
    a = torch.randn(5, 40)
    zeros = (sparsify(a, ratio) == 0).sum(1)
    assert zeros.tolist() == [int(40 * ratio) + 1] * 5


def test_sparsify_keeps_gradient_only_on_kept_concepts():
    a = torch.randn(3, 10, requires_grad=True)
    sparsify(a, 0.5).sum().backward()
    kept = (sparsify(a.detach(), 0.5) != 0).float()
    assert torch.equal(a.grad, kept)


def test_stacked_heads_equal_single_heads():
    concepts = torch.randn(30, 8)
    stack = InterpretationHeads(concepts, num_classes=5, sparsity_ratios=[0.0, 0.5, 0.9])
    with torch.no_grad():
        stack.norm_weight.uniform_(0.5, 1.5)
        stack.norm_bias.uniform_(-0.3, 0.3)
    x = torch.randn(6, 8)
    logits = stack(x)
    assert logits.shape == (3, 6, 5)
    for i, ratio in enumerate([0.0, 0.5, 0.9]):
        torch.testing.assert_close(stack.head(ratio)(x), logits[i], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"no interpretation head for sparsity ratio 0\.7"):
        stack.head(0.7)


def test_head_init_depends_on_ratio_and_seed_only():
    concepts = torch.randn(30, 8)
    a = InterpretationHeads(concepts, 4, [0.0, 0.5, 0.9], seed=3)
    b = InterpretationHeads(concepts, 4, [0.5], seed=3)
    c = InterpretationHeads(concepts, 4, [0.5], seed=4)
    assert torch.equal(a.weight[1], b.weight[0])
    assert not torch.equal(b.weight[0], c.weight[0])


def test_training_all_ratios_at_once_equals_training_each_alone():
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(4, 10, generator=generator) * 2
    y = torch.randint(0, 4, (700,), generator=generator)
    x = means[y] + torch.randn(700, 10, generator=generator)
    ye = torch.randint(0, 4, (200,), generator=generator)
    xe = means[ye] + torch.randn(200, 10, generator=generator)
    concepts = torch.randn(24, 10, generator=generator)
    ratios = [0.0, 0.5, 0.9]
    kwargs = dict(num_classes=4, epochs=4, batch_size=128, seed=1, progress=False)
    together = fit_heads(x, y, xe, ye, concepts, sparsity_ratios=ratios, **kwargs)
    for i, ratio in enumerate(ratios):
        alone = fit_heads(x, y, xe, ye, concepts, sparsity_ratios=[ratio], **kwargs)
        assert alone.accuracies[0] == pytest.approx(together.accuracies[i], abs=1 / 200)
        assert alone.best_epochs[0] == together.best_epochs[i]
        torch.testing.assert_close(alone.heads.weight[0], together.heads.weight[i], rtol=1e-4, atol=1e-4)
    assert together.standard_accuracy == alone.standard_accuracy  # the probe does not see the heads


def test_cuda_graphs_change_nothing_off_cuda():
    # CUDA graphs are a CUDA-only replay of the same step; elsewhere the switch must be inert
    generator = torch.Generator().manual_seed(2)
    y = torch.randint(0, 3, (600,), generator=generator)
    x = torch.randn(3, 8, generator=generator)[y] * 2 + torch.randn(600, 8, generator=generator)
    concepts = torch.randn(12, 8, generator=generator)
    kwargs = dict(num_classes=3, sparsity_ratios=[0.0, 0.5], epochs=3, batch_size=64, progress=False)
    graphed = fit_heads(x, y, x[:100], y[:100], concepts, cuda_graphs=True, **kwargs)
    eager = fit_heads(x, y, x[:100], y[:100], concepts, cuda_graphs=False, **kwargs)
    assert graphed.accuracies == eager.accuracies
    for name, tensor in eager.heads.state_dict().items():
        assert torch.equal(graphed.heads.state_dict()[name], tensor), name


def test_head_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"sparsity_ratio must be in \[0, 1\)"):
        InterpretationHead(torch.randn(5, 3), 3, sparsity_ratio=1.0)
    with pytest.raises(ValueError, match="all zeros"):
        InterpretationHead(torch.zeros(5, 3), 3)
    with pytest.raises(ValueError, match="at least 2"):
        InterpretationHead(torch.randn(5, 3), 1)
    with pytest.raises(ValueError, match=r"\(C, D\)"):
        InterpretationHead(torch.randn(5), 3)
