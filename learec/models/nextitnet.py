"""NextItNet as in SQN: stacked residual blocks of causal dilated 1-D convolutions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from learec.config import ModelConfig
from learec.models.base import Backbone, gather_last, register


class CausalConv1d(nn.Module):
    """Conv over time on ``[B, L, H]``; left padding ``(k-1)*d`` keeps output t a function of inputs <= t."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.left = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x.transpose(1, 2), (self.left, 0))).transpose(1, 2)


class ResidualBlock(nn.Module):
    """SQN's ``nextitnet_residual_block``: conv(d) -> LN -> ReLU -> conv(2d) -> LN -> ReLU, + input."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = CausalConv1d(channels, kernel_size, dilation)
        self.ln1 = nn.LayerNorm(channels, eps=1e-8)
        self.conv2 = CausalConv1d(channels, kernel_size, 2 * dilation)
        self.ln2 = nn.LayerNorm(channels, eps=1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.ln1(self.conv1(x)))
        return x + F.relu(self.ln2(self.conv2(y)))


@register("nextitnet")
class NextItNet(Backbone):
    def __init__(self, n_items: int, max_len: int, cfg: ModelConfig) -> None:
        super().__init__(n_items, max_len, cfg)
        c = cfg.nextitnet
        self.blocks = nn.ModuleList(ResidualBlock(cfg.hidden, c.kernel_size, d) for d in c.dilations)
        self.out_dim = cfg.hidden

    def forward(self, histories: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = self.padding_mask(histories)
        x = self.item_embedding(histories) * mask
        for block in self.blocks:
            x = block(x) * mask  # SQN re-masks after every block
        return gather_last(x, lengths)
