"""Paired significance tests between runs evaluated on the same test events.

Both tests are of the same difference, the mean over test events of the per-event metric (each side
averaged over its seeds first):
- ``p``: the paired t-test over events, which takes every event as an independent draw;
- ``p_users``: the same mean difference with the events of each user as one cluster (a cluster-robust
  standard error, CR1, with users - 1 degrees of freedom). A user's events are not independent draws, and
  where users have many events (about 90 on MovieLens-100K's ``sqn`` split) this is the test to read.
  With one event per user it equals the test over events.
Both are conditional on the trained models: the spread between seeds is not part of either.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from learec.evaluate.metrics import hit_and_ndcg


def per_event_metric(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per-event values of ``hr@k`` or ``ndcg@k`` from 0-based ranks."""
    name, k = metric.split("@")
    hit, ndcg = hit_and_ndcg(ranks, int(k))
    return hit if name == "hr" else ndcg


def clustered_p(diff: np.ndarray, clusters: np.ndarray) -> float:
    """Two-sided p-value that the mean of ``diff`` is 0, with a cluster-robust (CR1) standard error over
    ``clusters`` (one id per entry) and G - 1 degrees of freedom; NaN with fewer than 2 clusters or no
    spread."""
    ids, index = np.unique(clusters, return_inverse=True)
    n_clusters = len(ids)
    if n_clusters < 2:
        return float("nan")
    mean = diff.mean()
    cluster_sums = np.bincount(index, weights=diff - mean)
    variance = n_clusters / (n_clusters - 1) * np.sum(cluster_sums ** 2) / len(diff) ** 2
    if variance <= 0:
        return 1.0 if np.isclose(mean, 0) else float("nan")
    t = mean / np.sqrt(variance)
    return float(2 * stats.t.sf(abs(t), n_clusters - 1))


def paired_test(ranks_a: list[np.ndarray], ranks_b: list[np.ndarray], metric: str = "ndcg@10",
                users: np.ndarray | None = None) -> dict[str, float]:
    """Paired tests of ``metric`` over test events, each side averaged over its seeds: the mean
    difference (a - b), the p-value over events and, with ``users`` (the user of each test event), the
    p-value with each user's events as one cluster (``p_users``).

    Seeds vary the model, not the data, so every run of both sides ranks the same events in the same
    order; averaging over seeds first tests the systems rather than single runs.
    """
    a = np.mean([per_event_metric(r, metric) for r in ranks_a], axis=0)
    b = np.mean([per_event_metric(r, metric) for r in ranks_b], axis=0)
    if a.shape != b.shape:
        raise ValueError(f"runs were evaluated on different test sets ({a.shape} vs {b.shape} events)")
    diff = a - b
    same = np.allclose(diff, 0)
    result = {"diff": 0.0, "p": 1.0} if same else {"diff": float(diff.mean()), "p": float(stats.ttest_rel(a, b).pvalue)}
    if users is not None:
        if users.shape != a.shape:
            raise ValueError(f"{users.shape[0]} event users for {a.shape[0]} test events")
        result["p_users"] = 1.0 if same else clustered_p(diff, users)
    return result
