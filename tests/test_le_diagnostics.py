"""The LE report's collapse diagnostics against direct computation on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learec.env.report import ndcg_split, augmentation_diversity, key_spread, mean_pairwise_cosine


def test_mean_pairwise_cosine_of_identical_orthogonal_and_opposite_rows() -> None:
    assert mean_pairwise_cosine(np.tile([[1.0, 2.0, 3.0]], (5, 1))) == pytest.approx(1.0)
    assert mean_pairwise_cosine(np.eye(4)) == pytest.approx(0.0)
    assert mean_pairwise_cosine(np.array([[1.0, 0.0], [-2.0, 0.0]])) == pytest.approx(-1.0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    naive = np.mean([unit[i] @ unit[j] for i in range(6) for j in range(6) if i != j])
    assert mean_pairwise_cosine(torch.as_tensor(x)) == pytest.approx(naive)


def test_key_spread_separates_the_shared_part_from_the_item_specific_part() -> None:
    shared = np.array([3.0, 0.0, 0.0])
    keys = shared + np.array([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    spread = key_spread(keys)
    assert spread["key_mean_norm"] == pytest.approx(3.0)
    assert spread["key_specific_norm"] == pytest.approx(1.0)
    assert spread["key_mean_cosine"] == pytest.approx(mean_pairwise_cosine(keys))
    assert key_spread(np.eye(3))["key_mean_cosine"] == pytest.approx(0.0)


def test_augmentation_diversity_counts_distinct_items_and_the_top10_share() -> None:
    aug = np.array([[0, 1], [0, 2], [0, -1], [3, -1]])
    out = augmentation_diversity(aug)
    assert out == {"distinct@1": 2, "top10_share@1": 1.0, "distinct@2": 4, "top10_share@2": 1.0}
    # 12 items proposed once each after item 0 proposed 8 times: the top 10 hold 8 + 9 of 20
    many = np.array([[0]] * 8 + [[i] for i in range(1, 13)])
    out = augmentation_diversity(many, ks=(1, 3))  # k wider than the cache is left out
    assert out == {"distinct@1": 13, "top10_share@1": pytest.approx(17 / 20)}
    assert augmentation_diversity(np.full((3, 1), -1)) == {"distinct@1": 0, "top10_share@1": None}


def testndcg_split_by_membership() -> None:
    ranks = np.array([0, 1, 20])  # 0-based ranks: NDCG@10 1, 1/log2(3), 0
    inside = np.array([True, False, False])
    out = ndcg_split(ranks, inside)
    assert out["state_ndcg@10_le_users"] == pytest.approx(1.0)
    assert out["state_ndcg@10_other_users"] == pytest.approx((1 / np.log2(3)) / 2)
    assert ndcg_split(ranks, np.zeros(3, dtype=bool))["state_ndcg@10_le_users"] is None
