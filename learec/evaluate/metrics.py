"""Full-ranking metrics for one held-out target per prediction point.

Rank convention (0-based): the number of items scored strictly higher than the target, plus the tied
items with a smaller index. That is the target's position in a stable descending sort of the scores, so
results never depend on an unspecified top-k tie order.
"""

from __future__ import annotations

import numpy as np
import torch


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
    """0-based rank of ``targets[i]`` among ``scores[i]`` ([B, N] scores, [B] targets) -> [B] int64.

    With ``overwrite`` a float32 ``scores`` tensor is used as scratch space: the evaluator's fast path,
    with no [B, N] allocation (whose page faults cost more than the comparisons). A target whose score
    is NaN gets the worst rank, so a diverged model never scores hits; other NaN scores are not counted.
    """
    n_items = scores.shape[1]
    scores = scores.float()
    target_scores = scores.gather(1, targets.view(-1, 1))
    index = torch.arange(n_items, device=scores.device).view(1, -1)

    def exact(rows: torch.Tensor) -> torch.Tensor:  # plain comparisons: NaN compares false, inf == inf
        sub, t = scores[rows], target_scores[rows]
        return (sub > t).sum(dim=1) + ((sub == t) & (index < targets[rows].view(-1, 1))).sum(dim=1)

    # Rows with non-finite scores (NaN, +-inf) and catalogues too large for exact float counts take the
    # plain path; a row sum is non-finite exactly when the row holds a non-finite score (or overflows).
    if n_items >= 2**24:
        ranks = exact(torch.arange(len(targets), device=scores.device))
    else:
        slow_rows = (~torch.isfinite(scores.sum(dim=1))).nonzero().flatten()
        slow_ranks = exact(slow_rows) if len(slow_rows) else None
        # sign(s - s_target): +1 above, 0 at ties (the target included), -1 below. The row sum and the
        # absolute row sum give both counts; sums of +-1 floats are exact below 2**24 items.
        diff = (scores if overwrite else scores.clone()).sub_(target_scores).sign_()
        signed = diff.sum(dim=1)
        unequal = diff.abs_().sum(dim=1)  # diff is now 0 exactly at the ties
        ranks = ((signed + unequal) / 2).nan_to_num(0).long()
        tied = (n_items - 1 - unequal).nan_to_num(0).long()
        if slow_ranks is not None:
            tied[slow_rows] = 0
        rows = (tied > 0).nonzero().flatten()
        if len(rows):  # ties ahead of the target: equal scores at a smaller item index
            ranks[rows] += ((diff[rows] == 0) & (index < targets[rows].view(-1, 1))).sum(dim=1)
        if slow_ranks is not None:
            ranks[slow_rows] = slow_ranks
    ranks[torch.isnan(target_scores).flatten()] = n_items - 1
    return ranks


def hit_and_ndcg(ranks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-event HR@k (0/1) and NDCG@k (1/log2(rank+2) when in the top k) from 0-based ranks."""
    ranks = np.asarray(ranks)
    hit = (ranks < k).astype(np.float64)
    ndcg = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    return hit, ndcg


def summarize(ranks: np.ndarray, events: np.ndarray, event_types: list[str], ks: list[int]) -> dict[str, float]:
    """Mean HR/NDCG@k over all events and, with several event types, per type (divided by that type's count)."""
    out: dict[str, float] = {}
    groups: list[tuple[str, np.ndarray]] = [("", np.ones(len(ranks), dtype=bool))]
    if len(event_types) > 1:
        groups += [(f"{name}/", events == code) for code, name in enumerate(event_types)]
    for prefix, mask in groups:
        n = int(mask.sum())
        out[f"{prefix}events"] = n
        for k in ks:
            hit, ndcg = hit_and_ndcg(ranks[mask], k)
            out[f"{prefix}hr@{k}"] = float(hit.mean()) if n else 0.0
            out[f"{prefix}ndcg@{k}"] = float(ndcg.mean()) if n else 0.0
    return out
