"""iis_hf.splits: the one stratified hold-out and the one random subset every entry point uses."""

from __future__ import annotations

import numpy as np
import pytest

from iis_hf.splits import random_subset, stratified_split


def test_stratified_split_holds_out_each_class_in_proportion_and_is_seeded():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    kept, held = stratified_split(labels, 0.2, seed=0)
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(100))
    assert np.bincount(labels[held]).tolist() == [10, 6, 4]
    assert np.array_equal(held, stratified_split(labels, 0.2, seed=0)[1])
    assert not np.array_equal(held, stratified_split(labels, 0.2, seed=1)[1])


def test_every_class_of_two_rows_or_more_is_held_out_and_kept():
    labels = np.repeat([0, 1, 2], [20, 10, 2])
    kept, held = stratified_split(labels, 0.2, seed=0)
    assert np.bincount(labels[held], minlength=3).tolist() == [4, 2, 1]  # 20 % of 2 rounds up to one
    assert np.bincount(labels[kept], minlength=3).tolist() == [16, 8, 1]
    assert len(stratified_split(np.array([0, 1]), 0.5, seed=0)[1]) == 0  # a class of one row stays in train


def test_stratified_split_refuses_a_fraction_outside_zero_one():
    with pytest.raises(ValueError, match=r"must be in \(0, 1\), got 1\.5"):
        stratified_split([0, 1, 0, 1], 1.5, seed=0)


def test_random_subset_is_sorted_seeded_and_complete_when_large_enough():
    subset = random_subset(100, 10, seed=0)
    assert len(set(subset.tolist())) == 10 and list(subset) == sorted(subset)
    assert np.array_equal(subset, random_subset(100, 10, seed=0))
    assert not np.array_equal(subset, random_subset(100, 10, seed=1))
    assert random_subset(5, 10, seed=0).tolist() == [0, 1, 2, 3, 4]
