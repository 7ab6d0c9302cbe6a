"""The ranking network of a run, rebuilt from its config alone (no optimisers, no data, no LLM).

It mirrors the ``scorer()`` of each objective (``learec.rl.build_objective``), so a run's ``best.pt``
(the scorer's ``state_dict``) loads into it with ``strict=True``: a CE run ranks with
``SequentialRecommender``; an RL run with one ``QNetwork`` copy read through its CE head (default) or its
Q-head (``rl.rank_by``); ``pop`` with the popularity buffer.
"""

from __future__ import annotations

import torch
from torch import nn

from learec.config import Config
from learec.models import PopularityRecommender, SequentialRecommender, build_backbone
from learec.rl.networks import HeadScorer, QNetwork


def build_scorer(cfg: Config, n_items: int, item_counts: torch.Tensor | None = None) -> nn.Module:
    """``(histories [B, L], lengths [B]) -> scores [B, n_items]`` for ``cfg``, in eval mode, on the CPU."""
    if cfg.model.backbone == "pop":
        counts = item_counts if item_counts is not None else torch.zeros(n_items)
        return PopularityRecommender(counts).eval()
    backbone = build_backbone(cfg.model.backbone, n_items, cfg.data.history, cfg.model)
    if cfg.objective == "ce":
        return SequentialRecommender(backbone, n_items, cfg.model.tie_head).eval()
    return HeadScorer(QNetwork(backbone, n_items), cfg.rl.rank_by).eval()
