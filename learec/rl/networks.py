"""The network the RL objectives train: a backbone with a Q-head and a supervised (CE) head."""

from __future__ import annotations

import torch
from torch import nn

from learec.models.base import Backbone


class QNetwork(nn.Module):
    """One full copy (SQN keeps two): shared state ``s_t``, Q-values and CE logits over all items."""

    def __init__(self, backbone: Backbone, n_items: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.q_head = nn.Linear(backbone.out_dim, n_items)
        self.ce_head = nn.Linear(backbone.out_dim, n_items)

    def forward(self, histories: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.backbone(histories, lengths)
        return self.q_head(state), self.ce_head(state)

    def q_values(self, histories: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.q_head(self.backbone(histories, lengths))


class HeadScorer(nn.Module):
    """Ranks items with one head of a ``QNetwork``: the CE head (default, as published) or the Q-head."""

    def __init__(self, network: QNetwork, head: str = "ce") -> None:
        super().__init__()
        self.network = network
        self.head = head

    def forward(self, histories: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        state = self.network.backbone(histories, lengths)
        return (self.network.ce_head if self.head == "ce" else self.network.q_head)(state)
