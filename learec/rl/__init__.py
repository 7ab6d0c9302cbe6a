"""Training objectives (supervised now; SQN, SAC, SNQN, SA2C and the LE variants plug in here)."""

from __future__ import annotations

import torch

from learec.config import Config
from learec.models import PopularityRecommender, SequentialRecommender, build_backbone
from learec.rl.base import Batch, Objective
from learec.rl.supervised import CrossEntropyObjective

__all__ = ["Batch", "Objective", "CrossEntropyObjective", "build_objective"]


def build_objective(cfg: Config, n_items: int, item_counts: torch.Tensor) -> Objective:
    """The objective named by ``cfg.objective`` around the backbone named by ``cfg.model.backbone``."""
    if cfg.model.backbone == "pop":
        # Popularity has nothing to learn; wrapping it keeps the trainer's path uniform.
        return CrossEntropyObjective(PopularityRecommender(item_counts), lr=cfg.train.lr)
    backbone = build_backbone(cfg.model.backbone, n_items, cfg.data.history, cfg.model)
    model = SequentialRecommender(backbone, n_items)
    return CrossEntropyObjective(model, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
