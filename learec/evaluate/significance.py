"""Paired significance tests between runs evaluated on the same test events."""

from __future__ import annotations

import numpy as np
from scipy import stats

from learec.evaluate.metrics import hit_and_ndcg


def per_event_metric(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per-event values of ``hr@k`` or ``ndcg@k`` from 0-based ranks."""
    name, k = metric.split("@")
    hit, ndcg = hit_and_ndcg(ranks, int(k))
    return hit if name == "hr" else ndcg


def paired_test(ranks_a: list[np.ndarray], ranks_b: list[np.ndarray], metric: str = "ndcg@10") -> dict[str, float]:
    """Paired t-test over test events of ``metric``, each side averaged over its seeds.

    Seeds vary the model, not the data, so every run of both sides ranks the same events in the same
    order; averaging over seeds first tests the systems rather than single runs. Returns the mean
    difference (a - b) and the two-sided p-value.
    """
    a = np.mean([per_event_metric(r, metric) for r in ranks_a], axis=0)
    b = np.mean([per_event_metric(r, metric) for r in ranks_b], axis=0)
    if a.shape != b.shape:
        raise ValueError(f"runs were evaluated on different test sets ({a.shape} vs {b.shape} events)")
    diff = a - b
    if np.allclose(diff, 0):
        return {"diff": 0.0, "p": 1.0}
    return {"diff": float(diff.mean()), "p": float(stats.ttest_rel(a, b).pvalue)}
