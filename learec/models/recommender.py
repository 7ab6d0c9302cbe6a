"""Models that score items: a backbone with a supervised head, and the popularity baseline."""

from __future__ import annotations

import torch
from torch import nn

from learec.models.base import Backbone


class SequentialRecommender(nn.Module):
    def __init__(self, backbone: Backbone, n_items: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.n_items = n_items
        self.head = nn.Linear(backbone.out_dim, n_items)  # real items only: the padding id is never scored

    def state(self, histories: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.backbone(histories, lengths)

    def forward(self, histories: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.state(histories, lengths))


class PopularityRecommender(nn.Module):
    """Scores every item by its training count, whatever the history; nothing to train."""

    def __init__(self, item_counts: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("item_counts", torch.as_tensor(item_counts, dtype=torch.float32).flatten().clone())
        self.n_items = int(self.item_counts.numel())

    def forward(self, histories: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # clone(): callers (e.g. exclude_seen masking) may write into the scores in place.
        return self.item_counts.unsqueeze(0).expand(histories.size(0), -1).clone()
