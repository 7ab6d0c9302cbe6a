"""Full-ranking metrics against hand-worked examples and a naive sort-based reference."""

import math

import numpy as np
import pytest
import torch

from learec.data.splits import EvalSet
from learec.evaluate.evaluator import compute_ranks, evaluate, mask_seen
from learec.evaluate.metrics import hit_and_ndcg, summarize, target_ranks


def test_ranks_hand_worked_with_ties():
    scores = torch.tensor([
        [0.9, 0.1, 0.5, 0.3],  # target 0 scores highest: rank 0 (a hit at rank 1)
        [0.9, 0.1, 0.5, 0.3],  # target 1 scores lowest: rank 3
        [0.2, 0.7, 0.7, 0.1],  # target 2 ties item 1, which has the smaller index: rank 1
        [0.2, 0.7, 0.7, 0.1],  # target 1 ties item 2 (larger index): rank 0
        [0.5, 0.5, 0.5, 0.5],  # all tied, target 3: three smaller indices ahead -> rank 3
    ])
    targets = torch.tensor([0, 1, 2, 1, 3])
    assert target_ranks(scores, targets).tolist() == [0, 3, 1, 0, 3]


def test_hr_ndcg_hand_worked():
    ranks = np.array([0, 1, 4, 5, 19])  # 1-based positions 1, 2, 5, 6, 20
    hit, ndcg = hit_and_ndcg(ranks, 5)
    assert hit.tolist() == [1, 1, 1, 0, 0]  # rank 5 (the k-th position) counts, rank 6 does not
    assert ndcg.tolist() == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(6), 0.0, 0.0])
    hit20, ndcg20 = hit_and_ndcg(ranks, 20)
    assert hit20.sum() == 5 and ndcg20[-1] == pytest.approx(1 / math.log2(21))


def test_ranks_match_a_stable_sort_reference():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (64, 30), generator=gen).float()  # many ties on purpose
    targets = torch.randint(0, 30, (64,), generator=gen)
    ranks = target_ranks(scores, targets)
    for i in range(64):
        order = sorted(range(30), key=lambda j: (-scores[i, j].item(), j))  # stable descending
        assert ranks[i].item() == order.index(targets[i].item())


def test_summarize_per_event_type_divides_by_type_count():
    ranks = np.array([0, 10, 2, 30])
    events = np.array([0, 0, 1, 1])
    out = summarize(ranks, events, ["click", "purchase"], [5])
    assert out["hr@5"] == pytest.approx(0.5)
    assert out["click/hr@5"] == pytest.approx(0.5)  # 1 hit of 2 clicks
    assert out["purchase/hr@5"] == pytest.approx(0.5)  # 1 hit of 2 purchases
    assert out["purchase/ndcg@5"] == pytest.approx(0.5 / math.log2(4))
    assert out["click/events"] == 2 and out["events"] == 4
    assert "click/hr@5" not in summarize(ranks, events, ["interaction"], [5])


def test_mask_seen_ignores_padding_and_masks_history():
    scores = torch.zeros(2, 4)
    hist = torch.tensor([[1, 3, 4], [4, 4, 4]])  # 4 is the padding id
    masked = mask_seen(scores, hist)
    lowest = torch.finfo(torch.float32).min
    assert (masked[0, [1, 3]] == lowest).all() and (masked[0, [0, 2]] == 0).all()
    assert torch.isfinite(masked[1]).all()


def random_eval_set(rng: np.random.Generator, n: int, n_items: int, L: int) -> EvalSet:
    """``n`` events with full random histories of ``L`` items and random targets."""
    return EvalSet(history=rng.integers(0, n_items, (n, L)).astype(np.int32), length=np.full(n, L, np.int32),
                   target=rng.integers(0, n_items, n).astype(np.int32), event=np.zeros(n, np.int8),
                   user=np.arange(n, dtype=np.int32), position=np.full(n, L, np.int32))


def test_evaluate_batched_equals_one_batch_and_exclude_seen_changes_ranks():
    rng = np.random.default_rng(0)
    n, n_items, L = 37, 20, 4
    data = random_eval_set(rng, n, n_items, L)
    table = torch.randn(n_items + 1, n_items, generator=torch.Generator().manual_seed(1))

    def scorer(h, lengths):  # scores depend on the last item: a stand-in for a model
        return table[h[torch.arange(len(h)), lengths - 1]]

    m1, r1 = evaluate(scorer, data, ["interaction"], [5, 10], batch_size=8)
    m2, r2 = evaluate(scorer, data, ["interaction"], [5, 10], batch_size=1000)
    assert np.array_equal(r1, r2) and m1 == m2
    _, r3 = evaluate(scorer, data, ["interaction"], [5, 10], batch_size=8, exclude_seen=True)
    in_hist = np.array([data.target[i] in data.history[i] for i in range(n)])
    assert (r3[~in_hist] <= r1[~in_hist]).all()  # masking others can only move a target up
    assert (r3[in_hist] >= n_items - L).all()  # a masked target falls to the bottom


def test_features_reach_the_scorer_row_by_row_in_any_batching_and_slice():
    rng = np.random.default_rng(2)
    n, n_items, L = 29, 12, 3
    data = random_eval_set(rng, n, n_items, L)
    features = rng.normal(size=(n, n_items)).astype(np.float16)  # each row's scores, given as its feature

    def scorer(h, lengths, le):
        return le

    def rank(row: np.ndarray, target: int) -> int:  # ties go to the lower item index
        return int((row > row[target]).sum() + ((row == row[target]) & (np.arange(n_items) < target)).sum())

    expected = np.array([rank(features[i], int(data.target[i])) for i in range(n)])
    for batch_size in (4, 100):
        assert np.array_equal(compute_ranks(scorer, data, batch_size, features={"le": features}), expected)
    part = compute_ranks(scorer, data, 4, rows=slice(7, 20), features={"le": features})  # a torchrun shard
    assert np.array_equal(part, expected[7:20])
    with pytest.raises(ValueError, match="rows"):
        compute_ranks(scorer, data, features={"le": features[:-1]})


def test_nan_target_score_is_never_a_hit():
    scores = torch.tensor([[0.1, float("nan"), 0.3], [float("nan")] * 3])
    assert target_ranks(scores, torch.tensor([1, 0])).tolist() == [2, 2]


@pytest.mark.parametrize("overwrite", [False, True])
def test_infinite_scores_follow_the_stable_sort_rule(overwrite):
    inf = float("inf")
    scores = torch.tensor([[-inf, 0.0, -inf, -inf], [inf, 1.0, inf, 0.0], [-inf, -inf, -inf, -inf]])
    targets = torch.tensor([2, 2, 3])
    # row 0: item 1 above, item 0 ties before -> 2; row 1: item 0 ties before -> 1; row 2: all tie -> 3
    assert target_ranks(scores, targets, overwrite=overwrite).tolist() == [2, 1, 3]


def test_nan_among_other_items_is_not_counted_and_overwrite_gives_the_same_ranks():
    scores = torch.tensor([[0.1, float("nan"), 0.3, 0.2], [0.5, 0.5, float("nan"), 0.9]])
    targets = torch.tensor([3, 1])
    assert target_ranks(scores, targets).tolist() == [1, 2]  # row 2: 0.9 above, tie at index 0 before
    gen = torch.Generator().manual_seed(3)
    s = torch.randint(0, 4, (50, 40), generator=gen).float()
    t = torch.randint(0, 40, (50,), generator=gen)
    expected = target_ranks(s, t)
    assert torch.equal(target_ranks(s.clone(), t, overwrite=True), expected)
