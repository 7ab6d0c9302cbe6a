"""Backbone interface, shared helpers and ``build_backbone`` (names: :mod:`learec.models.registry`).

Input convention (SQN's, fixed for the whole project): item ids ``0..n_items-1``, padding id ``n_items``;
histories are LEFT-ALIGNED (real items first, in time order, padding at the end) and the state is the
network output at position ``length-1``. Causal models therefore never see the padding of a real row.
"""

from __future__ import annotations

import torch
from torch import nn

from learec.config import ModelConfig
from learec.errors import UserError
from learec.models.registry import BACKBONES, NO_NETWORK, register

__all__ = ["BACKBONES", "Backbone", "build_backbone", "gather_last", "make_item_embedding", "register"]


class Backbone(nn.Module):
    """Maps ``histories [B, L]`` (long) and ``lengths [B]`` (in 1..L) to a state ``[B, out_dim]``."""

    out_dim: int
    item_embedding: nn.Embedding

    def __init__(self, n_items: int, max_len: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_items = n_items
        self.max_len = max_len
        self.pad_id = n_items
        self.hidden = cfg.hidden
        self.item_embedding = make_item_embedding(n_items, cfg.hidden)

    def forward(self, histories: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def padding_mask(self, histories: torch.Tensor) -> torch.Tensor:
        """``[B, L, 1]`` float, 1 for real items, 0 for padding (SQN multiplies embeddings by it)."""
        return (histories != self.pad_id).unsqueeze(-1).to(self.item_embedding.weight.dtype)


def make_item_embedding(n_items: int, hidden: int) -> nn.Embedding:
    """``n_items + 1`` rows, the last one padding; N(0, 0.01) like SQN's ``state_embeddings``."""
    emb = nn.Embedding(n_items + 1, hidden, padding_idx=n_items)
    nn.init.normal_(emb.weight, 0.0, 0.01)
    with torch.no_grad():
        emb.weight[n_items].zero_()  # normal_ overwrote the padding row nn.Embedding had zeroed
    return emb


def gather_last(outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``outputs [B, L, H]`` -> ``[B, H]`` taken at position ``lengths - 1`` of each row."""
    rows = torch.arange(outputs.size(0), device=outputs.device)
    return outputs[rows, lengths.to(outputs.device) - 1]


def build_backbone(name: str, n_items: int, max_len: int, cfg: ModelConfig) -> Backbone:
    """The registered backbone ``name`` (``model.backbone``) for ``n_items`` items and histories of ``max_len``."""
    if name not in BACKBONES:
        hint = "set model.backbone to one of: " + ", ".join(BACKBONES)
        if name == NO_NETWORK:
            hint = "'pop' has no network; build learec.models.recommender.PopularityRecommender from item counts"
        raise UserError(f"Unknown backbone {name!r}; valid choices: {', '.join(BACKBONES)}", hint)
    return BACKBONES[name](n_items, max_len, cfg)
