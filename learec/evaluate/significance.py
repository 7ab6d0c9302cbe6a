"""Paired significance tests between runs evaluated on the same test events.

Two tests of the same difference: over test events (``p``), and over test users (``p_users``: each user's
events averaged first). Events of one user are not independent draws: on MovieLens-100K a test user has
about 100 events, so the test over events can call a difference significant that a test over the ~95
users does not. The test over users is the stricter of the two where users have many events.
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


def per_user_mean(values: np.ndarray, users: np.ndarray) -> np.ndarray:
    """The mean of ``values`` over each user's events, one entry per distinct user (in sorted user order)."""
    _, index = np.unique(users, return_inverse=True)
    return np.bincount(index, weights=values) / np.bincount(index)


def _ttest_p(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 if np.allclose(a - b, 0) else float(stats.ttest_rel(a, b).pvalue)


def paired_test(ranks_a: list[np.ndarray], ranks_b: list[np.ndarray], metric: str = "ndcg@10",
                users: np.ndarray | None = None) -> dict[str, float]:
    """Paired t-test over test events of ``metric``, each side averaged over its seeds; with ``users`` (the
    user of each test event), also the paired t-test over users of their per-user means (``p_users``).

    Seeds vary the model, not the data, so every run of both sides ranks the same events in the same
    order; averaging over seeds first tests the systems rather than single runs. Returns the mean
    difference over events (a - b), the two-sided p-value over events and, with ``users``, over users.
    """
    a = np.mean([per_event_metric(r, metric) for r in ranks_a], axis=0)
    b = np.mean([per_event_metric(r, metric) for r in ranks_b], axis=0)
    if a.shape != b.shape:
        raise ValueError(f"runs were evaluated on different test sets ({a.shape} vs {b.shape} events)")
    result = {"diff": 0.0 if np.allclose(a - b, 0) else float((a - b).mean()), "p": _ttest_p(a, b)}
    if users is not None:
        if users.shape != a.shape:
            raise ValueError(f"{users.shape[0]} event users for {a.shape[0]} test events")
        result["p_users"] = _ttest_p(per_user_mean(a, users), per_user_mean(b, users))
    return result
