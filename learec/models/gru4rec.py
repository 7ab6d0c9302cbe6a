"""GRU4Rec as in SQN: item embedding -> GRU -> output at the last real position."""

from __future__ import annotations

import torch
from torch import nn

from learec.config import ModelConfig
from learec.models.base import Backbone, gather_last, register


@register("gru4rec")
class GRU4Rec(Backbone):
    def __init__(self, n_items: int, max_len: int, cfg: ModelConfig) -> None:
        super().__init__(n_items, max_len, cfg)
        # SQN's GRU has no dropout at all; cfg.dropout acts only on the input embedding (0 = published).
        self.dropout = nn.Dropout(cfg.dropout)
        gru_hidden = cfg.gru4rec.hidden or cfg.hidden
        self.gru = nn.GRU(cfg.hidden, gru_hidden, num_layers=cfg.gru4rec.layers, batch_first=True)
        # RecBole's variant: a wider GRU projected back to the embedding width (so the head can be tied)
        self.dense = nn.Linear(gru_hidden, cfg.hidden) if gru_hidden != cfg.hidden else None
        self.out_dim = cfg.hidden

    def forward(self, histories: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.item_embedding(histories))
        # Padding sits after the real items, so outputs before it are exactly the unpadded run's;
        # reading position length-1 replaces pack_padded_sequence (slow on CPU).
        out, _ = self.gru(x)
        state = gather_last(out, lengths)
        return self.dense(state) if self.dense is not None else state
