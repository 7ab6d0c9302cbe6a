"""Caser as in SQN's TF code: horizontal + vertical convolutions over the masked embedding window."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from learec.config import ModelConfig
from learec.errors import UserError
from learec.models.base import Backbone, register


@register("caser")
class Caser(Backbone):
    """Not causal: the state sees the whole window of ``max_len`` positions (padding zeroed by the mask),
    so it uses ``lengths`` only through the mask. No final FC layer (SQN has none).
    ``out_dim = horizontal_filters * len(filter_heights) + vertical_filters * hidden``."""

    def __init__(self, n_items: int, max_len: int, cfg: ModelConfig) -> None:
        super().__init__(n_items, max_len, cfg)
        c, h = cfg.caser, cfg.hidden
        if any(k < 1 for k in c.filter_heights):
            raise UserError(f"model.caser.filter_heights must be positive, got {c.filter_heights}")
        self.heights = list(c.filter_heights)
        self.horizontal = nn.ModuleList(nn.Conv2d(1, c.horizontal_filters, (k, h)) for k in self.heights)
        self.vertical = nn.Conv2d(1, c.vertical_filters, (max_len, 1))
        for conv in [*self.horizontal, self.vertical]:  # SQN: truncated N(0, 0.1) weights, bias 0.1
            nn.init.trunc_normal_(conv.weight, std=0.1, a=-0.2, b=0.2)
            nn.init.constant_(conv.bias, 0.1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out_dim = c.horizontal_filters * len(self.heights) + c.vertical_filters * h

    def forward(self, histories: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        L = histories.size(1)
        if L > self.max_len:
            raise ValueError(f"Caser built for windows of {self.max_len}, got {L}")
        if L < self.max_len:  # the vertical filter spans exactly max_len positions: pad the window
            histories = F.pad(histories, (0, self.max_len - L), value=self.pad_id)
        x = (self.item_embedding(histories) * self.padding_mask(histories)).unsqueeze(1)  # [B, 1, L, H]
        pooled = []
        for k, conv in zip(self.heights, self.horizontal):
            xin = F.pad(x, (0, 0, 0, k - x.size(2))) if x.size(2) < k else x  # window shorter than filter
            pooled.append(F.relu(conv(xin)).amax(dim=(2, 3)))  # max over all time positions -> [B, nh]
        pooled.append(F.relu(self.vertical(x)).flatten(1))  # [B, nv, 1, H] -> [B, nv*H]
        return self.dropout(torch.cat(pooled, dim=1))
