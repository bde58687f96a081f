"""Property-based tests (hypothesis): the IIS integral, and the heads' sparsification."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from iis_hf import inherent_interpretability_score
from iis_hf.heads.sparsify import (
    kth_smallest,
    sorted_thresholds,
    sparsify,
    sparsify_stacked,
    stacked_thresholds,
)

RATIO = st.floats(min_value=0.0, max_value=1.0, exclude_max=True, allow_nan=False)
ACCURACY = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
STANDARD = st.floats(min_value=1e-3, max_value=1.0, allow_nan=False)


@st.composite
def curves(draw, min_size=2, max_size=10):
    """(ratios, accuracies, standard accuracy): distinct ratios in [0, 1), accuracies in [0, 1]."""
    ratios = draw(st.lists(RATIO, min_size=min_size, max_size=max_size, unique=True))
    accuracies = draw(st.lists(ACCURACY, min_size=len(ratios), max_size=len(ratios)))
    return ratios, accuracies, draw(STANDARD)


# ---------------------------------------------------------------------------------------------------
# the integral


@settings(deadline=None, max_examples=200)
@given(curve=curves(), data=st.data())
def test_iis_does_not_depend_on_the_order_of_the_ratios(curve, data):
    ratios, accuracies, a0 = curve
    order = data.draw(st.permutations(range(len(ratios))))
    shuffled = inherent_interpretability_score([ratios[i] for i in order], [accuracies[i] for i in order], a0)
    assert shuffled == inherent_interpretability_score(ratios, accuracies, a0)  # to the last digit


@settings(deadline=None, max_examples=200)
@given(curve=curves())
def test_iis_lies_between_zero_and_the_span_times_the_best_relative_accuracy(curve):
    ratios, accuracies, a0 = curve
    iis = inherent_interpretability_score(ratios, accuracies, a0)
    upper = (max(ratios) - min(ratios)) * max(a / a0 for a in accuracies)
    assert 0.0 <= iis <= upper * (1 + 1e-12) + 1e-15


@settings(deadline=None, max_examples=200)
@given(curve=curves(), data=st.data())
def test_iis_never_falls_when_one_accuracy_rises(curve, data):
    ratios, accuracies, a0 = curve
    i = data.draw(st.integers(0, len(ratios) - 1))
    raised = list(accuracies)
    raised[i] = data.draw(st.floats(min_value=accuracies[i], max_value=1.0))
    before = inherent_interpretability_score(ratios, accuracies, a0)
    after = inherent_interpretability_score(ratios, raised, a0)
    assert after >= before - 1e-12
    lower_a0 = inherent_interpretability_score(ratios, accuracies, a0 / 2)  # a weaker probe: IIS doubles
    assert abs(lower_a0 - 2 * before) <= 1e-9 * max(1.0, lower_a0)


@settings(deadline=None, max_examples=100)
@given(ratios=st.lists(RATIO, min_size=2, max_size=10, unique=True), a0=STANDARD)
def test_a_representation_that_loses_nothing_scores_the_span_of_the_grid(ratios, a0):
    iis = inherent_interpretability_score(ratios, [a0] * len(ratios), a0)
    assert abs(iis - (max(ratios) - min(ratios))) <= 1e-12


@settings(deadline=None, max_examples=100)
@given(curve=curves(min_size=3), data=st.data())
def test_the_integral_adds_up_over_adjacent_parts_of_the_grid(curve, data):
    ratios, accuracies, a0 = curve
    order = np.argsort(ratios)
    r, a = [ratios[i] for i in order], [accuracies[i] for i in order]
    k = data.draw(st.integers(1, len(r) - 2))
    whole = inherent_interpretability_score(r, a, a0)
    parts = inherent_interpretability_score(r[: k + 1], a[: k + 1], a0) + inherent_interpretability_score(
        r[k:], a[k:], a0
    )
    assert abs(whole - parts) <= 1e-9


# ---------------------------------------------------------------------------------------------------
# sparsification


@st.composite
def distinct_activations(draw):
    """(B, C) float32 activations whose magnitudes are all distinct (random signs)."""
    rows, width = draw(st.integers(1, 6)), draw(st.integers(1, 64))
    magnitudes = draw(
        hnp.arrays(
            np.float32,
            (rows, width),
            elements=st.floats(min_value=2.0**-10, max_value=2.0**10, width=32),
            unique=True,
        )
    )
    signs = draw(hnp.arrays(np.bool_, (rows, width)))
    return torch.from_numpy(np.where(signs, -magnitudes, magnitudes))


@settings(deadline=None, max_examples=150)
@given(activations=distinct_activations(), ratio=RATIO)
def test_sparsify_zeroes_exactly_int_c_rho_plus_one_concepts_the_weakest(activations, ratio):
    width = activations.shape[1]
    dropped = int(width * ratio) + 1
    sparse = sparsify(activations, ratio)
    assert ((sparse == 0).sum(dim=1) == dropped).all()
    kept = sparse != 0
    assert torch.equal(sparse[kept], activations[kept])  # kept values are untouched
    strongest = activations.abs().argsort(dim=1, descending=True)[:, : width - dropped]
    expected = torch.zeros_like(kept).scatter_(1, strongest, True)
    assert torch.equal(kept, expected)


@settings(deadline=None, max_examples=100)
@given(activations=distinct_activations(), ratios=st.lists(RATIO, min_size=1, max_size=5, unique=True))
def test_sparsify_stacked_equals_sparsify_for_each_ratio(activations, ratios):
    width = activations.shape[1]
    stack = torch.stack([activations * 2.0**r for r in range(len(ratios))])  # exact scaling: still distinct
    sparse = sparsify_stacked(stack, [int(width * r) for r in ratios])
    for r, ratio in enumerate(ratios):
        assert torch.equal(sparse[r], sparsify(stack[r], ratio))
        assert ((sparse[r] == 0).sum(dim=1) == int(width * ratio) + 1).all()


@settings(deadline=None, max_examples=100)
@given(
    magnitude=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 6), st.integers(1, 20), st.integers(1, 30)),
        elements=st.floats(min_value=0, max_value=100, width=32),
    ),
    data=st.data(),
)
def test_sorted_thresholds_equal_the_cpu_selections(magnitude, data):
    # the accelerator path (one sort of the stack, a gather per ratio), run here on the CPU
    ratios, _, width = magnitude.shape
    ks = data.draw(st.lists(st.integers(0, width - 1), min_size=ratios, max_size=ratios))
    magnitude = torch.from_numpy(magnitude)
    expected = stacked_thresholds(magnitude, ks)
    assert torch.equal(sorted_thresholds(magnitude, ks), expected)
    assert torch.equal(sorted_thresholds(magnitude, torch.tensor(ks)), expected)


@settings(deadline=None, max_examples=150)
@given(
    magnitude=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=40),
        elements=st.floats(min_value=0, max_value=100, width=32),
    ),
    data=st.data(),
)
def test_cpu_selection_equals_torch_kthvalue_even_with_ties(magnitude, data):
    """The CPU path (NumPy introselect) and the accelerator path (torch.kthvalue) pick the same value."""
    magnitude = torch.from_numpy(magnitude)
    k = data.draw(st.integers(0, magnitude.shape[-1] - 1))
    expected = magnitude.kthvalue(k + 1, dim=-1, keepdim=True).values
    assert torch.equal(kth_smallest(magnitude, k), expected)
