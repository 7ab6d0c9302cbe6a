"""Full-ranking metrics for one held-out target per prediction point.

Rank convention (0-based): the number of items scored strictly higher than the target, plus the tied
items with a smaller index. That is the target's position in a stable descending sort of the scores, so
results never depend on an unspecified top-k tie order.
"""

from __future__ import annotations

import numpy as np
import torch


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of ``targets[i]`` among ``scores[i]`` ([B, N] scores, [B] targets) -> [B] int64.

    A target whose score is NaN gets the worst rank, so a diverged model never scores hits.
    """
    scores = scores.float()
    n_items = scores.shape[1]
    target_scores = scores.gather(1, targets.view(-1, 1))
    if n_items < 2**24:
        # Comparisons written as 0/1 floats and summed: ~3x faster on CPU than summing a bool tensor,
        # and exact while counts stay below 2**24.
        buf = torch.empty_like(scores)
        higher = torch.gt(scores, target_scores, out=buf).sum(dim=1).long()
        tied = torch.eq(scores, target_scores, out=buf).sum(dim=1).long() - 1
    else:
        higher = (scores > target_scores).sum(dim=1)
        tied = (scores == target_scores).sum(dim=1) - 1
    ranks = higher
    rows = (tied > 0).nonzero().flatten()
    if len(rows):  # ties ahead of the target: equal scores at a smaller item index (rare with float scores)
        sub, sub_t = scores[rows], targets[rows].view(-1, 1)
        index = torch.arange(n_items, device=scores.device).view(1, -1)
        ranks[rows] += ((sub == target_scores[rows]) & (index < sub_t)).sum(dim=1)
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
