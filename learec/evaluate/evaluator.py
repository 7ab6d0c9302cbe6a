"""Batched full-ranking evaluation of any scorer ``(histories, lengths) -> [B, n_items]``.

``features`` (optional) are arrays aligned with the evaluation events, passed to the scorer batch by
batch as keyword tensors: the LE states of a model trained with lea.state_to_actor (``le=``).

Under torchrun each rank ranks its contiguous shard of the events and the ranks are gathered, so every
rank computes the same metrics as one process would.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from learec import distributed
from learec.data.splits import EvalSet
from learec.evaluate.metrics import summarize, target_ranks

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mask_seen(scores: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
    """Push the scores of items in each history window to the lowest float (the padding id falls in an
    extra column). The lowest finite value rather than -inf keeps those rows on the ranker's fast path;
    masked items tie among themselves either way."""
    n_items = scores.shape[1]
    seen = torch.zeros(scores.shape[0], n_items + 1, dtype=torch.bool, device=scores.device)
    seen.scatter_(1, histories, True)
    return scores.masked_fill(seen[:, :n_items], torch.finfo(scores.dtype).min)


@torch.no_grad()
def compute_ranks(scorer: Scorer, data: EvalSet, batch_size: int = 1024, exclude_seen: bool = False,
                  device: str | torch.device = "cpu", progress: bool = False, desc: str = "evaluate",
                  rows: slice | None = None, features: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """0-based full-ranking rank of every target in ``data`` (or of its ``rows``, a contiguous slice)."""
    for name, values in (features or {}).items():
        if len(values) != len(data):
            raise ValueError(f"feature {name!r} has {len(values)} rows for {len(data)} evaluation events")
    if isinstance(scorer, torch.nn.Module):
        scorer.eval()
    first, stop, _ = (rows or slice(0, len(data))).indices(len(data))
    ranks = np.empty(max(stop - first, 0), dtype=np.int64)
    for start in tqdm(range(first, stop, batch_size), desc=desc, disable=None if progress else True, leave=False):
        sl = slice(start, min(start + batch_size, stop))
        hist = torch.from_numpy(np.asarray(data.history[sl], dtype=np.int64)).to(device)
        length = torch.from_numpy(np.asarray(data.length[sl], dtype=np.int64)).to(device)
        target = torch.from_numpy(np.asarray(data.target[sl], dtype=np.int64)).to(device)
        extra = {name: torch.from_numpy(np.asarray(values[sl], dtype=np.float32)).to(device)
                 for name, values in (features or {}).items()}
        scores = scorer(hist, length, **extra).float()
        if exclude_seen:
            scores = mask_seen(scores, hist)
        ranks[sl.start - first:sl.stop - first] = target_ranks(scores, target, overwrite=True).cpu().numpy()
    return ranks


def evaluate(scorer: Scorer, data: EvalSet, event_types: list[str], ks: list[int], batch_size: int = 1024,
             exclude_seen: bool = False, device: str | torch.device = "cpu", progress: bool = False,
             desc: str = "evaluate", features: dict[str, np.ndarray] | None = None
             ) -> tuple[dict[str, float], np.ndarray]:
    """Metrics (HR/NDCG@k, per event type when there are several) and the per-event ranks."""
    mine = distributed.shard(len(data))  # everything outside torchrun
    local = compute_ranks(scorer, data, batch_size, exclude_seen, device, progress and distributed.is_main(), desc,
                          rows=mine, features=features)
    ranks = distributed.gather_shards(local, len(data))
    return summarize(ranks, np.asarray(data.event), event_types, ks), ranks
