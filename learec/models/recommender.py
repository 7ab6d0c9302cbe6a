"""Models that score items: a backbone with a supervised head, and the popularity baseline."""

from __future__ import annotations

import torch
from torch import nn

from learec.errors import UserError
from learec.models.base import Backbone


class TiedHead(nn.Module):
    """Scores = state · item embedding + bias: the output layer shares the input item embeddings."""

    def __init__(self, item_embedding: nn.Embedding, n_items: int) -> None:
        super().__init__()
        self.item_embedding = item_embedding
        self.n_items = n_items
        self.bias = nn.Parameter(torch.zeros(n_items))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, state, self.item_embedding.weight[: self.n_items].T)


class SequentialRecommender(nn.Module):
    def __init__(self, backbone: Backbone, n_items: int, tie_head: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.n_items = n_items
        if tie_head and backbone.out_dim != backbone.item_embedding.embedding_dim:
            raise UserError(f"model.tie_head needs a state as wide as the item embedding "
                            f"({backbone.out_dim} != {backbone.item_embedding.embedding_dim}, e.g. Caser)",
                            "set model.tie_head=false for this backbone")
        # Real items only: the padding id is never scored.
        self.head = TiedHead(backbone.item_embedding, n_items) if tie_head else nn.Linear(backbone.out_dim, n_items)

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
