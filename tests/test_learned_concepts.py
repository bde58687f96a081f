"""Learned concepts: a straight-through Gumbel selection from a prototype library."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from iis_hf import ConceptBank, InterpretationHead, compute_iis
from iis_hf.cli import main
from iis_hf.concepts.learned import LearnedConcepts
from iis_hf.heads import InterpretationHeads


def library(num=12, dim=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return ConceptBank(
        vectors=torch.randn(num, dim, generator=generator),
        names=[f"p{i}" for i in range(num)],
        kind="prototype-patches",
    )


def test_forward_uses_exactly_one_library_entry_per_concept_and_backward_reaches_every_logit():
    learned = LearnedConcepts(library(), num_concepts=4, seed=1).train()
    selection = learned.selection()
    assert selection.shape == (1, 4, 12)
    assert torch.equal(selection.sum(-1), torch.ones(1, 4)) and set(selection.unique().tolist()) <= {0.0, 1.0}
    x = torch.randn(5, 6)
    activations = learned(x)
    assert activations.shape == (5, 4)
    activations.pow(2).sum().backward()
    grad = learned.selection_logits.grad
    assert (
        grad is not None and (grad != 0).float().mean() > 0.9
    )  # straight-through: soft gradients everywhere


def test_evaluation_uses_the_arg_max_and_matches_a_fixed_bank():
    learned = LearnedConcepts(library(), num_concepts=4, seed=1).eval()
    x = torch.randn(5, 6)
    chosen = learned.selected_indices()[0].tolist()
    expected = x @ library().vectors[chosen].T
    torch.testing.assert_close(learned(x), expected)
    bank = learned.selected_bank()
    assert bank.kind == "learned" and bank.names == [f"p{i}" for i in chosen]
    assert torch.equal(learned(x), learned(x))  # no sampling noise in evaluation


def test_heads_get_an_independent_selection_per_ratio_and_single_heads_work():
    learned = LearnedConcepts(library(), num_concepts=4)
    stack = InterpretationHeads(learned, num_classes=3, sparsity_ratios=[0.0, 0.5])
    assert stack.concepts.selection_logits.shape == (2, 4, 12) and stack.trainable_concepts
    assert not torch.equal(stack.concepts.selection_logits[0], stack.concepts.selection_logits[1])
    assert stack(torch.randn(5, 6)).shape == (2, 5, 3)
    stack.eval()
    single = stack.head(0.5)
    torch.testing.assert_close(single(torch.randn(3, 6)).shape, torch.Size([3, 3]))
    head = InterpretationHead(learned, num_classes=3, sparsity_ratio=0.5)
    assert head(torch.randn(5, 6)).shape == (5, 3)


def test_compute_iis_trains_learned_concepts_with_the_heads():
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(3, 6, generator=generator) * 3
    y = torch.randint(0, 3, (300,), generator=generator)
    x = means[y] + torch.randn(300, 6, generator=generator)
    ye = torch.randint(0, 3, (100,), generator=generator)
    xe = means[ye] + torch.randn(100, 6, generator=generator)
    # a library holding the class means among noise: a good selection picks them
    lib = ConceptBank(
        vectors=torch.cat([means, torch.randn(9, 6, generator=generator)]), names=[f"p{i}" for i in range(12)]
    )
    learned = LearnedConcepts(lib, num_concepts=4)
    before = learned.selection_logits.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compute_iis(
            x,
            y,
            xe,
            ye,
            learned,
            sparsity_ratios=[0.0, 0.5],
            epochs=15,
            head_batch_size=64,
            progress=False,
            return_heads=True,
        )
    assert result.num_concepts == 4 and result.accuracies[0] > 0.8
    assert not torch.equal(
        result.heads.concepts.selection_logits.detach()[0], before[0]
    )  # the selection trained
    assert torch.equal(learned.selection_logits.detach(), before)  # the caller's module is left as it was
    with pytest.raises(ValueError, match="cannot learn 20 concepts from a library of 12"):
        LearnedConcepts(lib, num_concepts=20)


def test_cli_scores_with_learned_concepts(tiny_models, image_dataset, tmp_path, capsys):
    data = tmp_path / "data"
    image_dataset.save_to_disk(str(data))
    code = main(
        [
            "score",
            "--model",
            tiny_models("vit"),
            "--dataset",
            str(data),
            "--output-dir",
            str(tmp_path / "out"),
            "--concept-kind",
            "learned",
            "--num-concepts",
            "10",
            "--images-per-class",
            "2",
            "--epochs",
            "2",
            "--sparsity-ratios",
            "0",
            "0.9",
            "--no-progress",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "10 learned concepts" in out
    report = json.loads((tmp_path / "out" / "iis.json").read_text())
    chosen = report["metadata"]["learned_concepts"]
    assert set(chosen) == {"0", "0.9"} and len(chosen["0.9"]["library_rows"]) == 10
    assert report["num_concepts"] == 10
