"""SASRec as in SQN (Kang & McAuley's TF modules): pre-LN causal self-attention blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from learec.config import ModelConfig
from learec.errors import UserError
from learec.models.base import Backbone, gather_last, register


class MaskDropout(nn.Module):
    """Inverted dropout whose mask comes from ``rand_like`` instead of ``bernoulli_``.

    On CPU ``F.dropout`` spends most of its time in ``bernoulli_``; this draws the same Bernoulli(1 - p)
    keep mask about twice as fast (a different random stream). It matters because SASRec drops out at
    every position, also in the no-grad target passes of SQN/SNQN/SA2C, which the published code runs in
    training mode. Elsewhere (CUDA) the fused ``F.dropout`` is used.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: MaskDropout) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d), causal) v`` with dropout on the attention weights.

    Written out rather than ``F.scaled_dot_product_attention``: with dropout on, SDPA's CPU path is slower
    than these few matmuls for SASRec's short windows.
    """
    L = q.size(-2)
    scores = (q @ k.transpose(-1, -2)) * (q.size(-1) ** -0.5)
    future = torch.ones(L, L, dtype=torch.bool, device=q.device).triu(1)
    return dropout(scores.masked_fill(future, float("-inf")).softmax(dim=-1)) @ v


class SASRecBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.attn_dropout = MaskDropout(dropout)
        self.ln_attn = nn.LayerNorm(hidden, eps=1e-8)
        # Separate Q/K/V projections with bias and no output projection, as in SASRec's multihead_attention.
        self.q, self.k, self.v = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.ln_ff = nn.LayerNorm(hidden, eps=1e-8)
        self.ff = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), MaskDropout(dropout), nn.Linear(hidden, hidden), MaskDropout(dropout)
        )

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, H] -> [B, heads, L, H/heads]
        B, L, H = x.shape
        return x.view(B, L, self.heads, H // self.heads).transpose(1, 2)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        q_in = self.ln_attn(seq)  # queries are normalised, keys/values are not (SASRec)
        att = causal_attention(self._split(self.q(q_in)), self._split(self.k(seq)), self._split(self.v(seq)),
                               self.attn_dropout)
        seq = q_in + att.transpose(1, 2).reshape(seq.shape)
        # Causal attention + padding at the end: real positions never attend to padding, so no key mask.
        ff_in = self.ln_ff(seq)
        return ff_in + self.ff(ff_in)  # SASRec's feedforward adds its (normalised) input back


@register("sasrec")
class SASRec(Backbone):
    def __init__(self, n_items: int, max_len: int, cfg: ModelConfig) -> None:
        super().__init__(n_items, max_len, cfg)
        h, c = cfg.hidden, cfg.sasrec
        if h % c.heads:
            raise UserError(
                f"model.sasrec.heads={c.heads} does not divide model.hidden={h}",
                "choose a number of heads that divides the hidden size",
            )
        self.position_embedding = nn.Embedding(max_len, h)
        nn.init.normal_(self.position_embedding.weight, 0.0, 0.01)
        self.dropout = MaskDropout(cfg.dropout)
        self.blocks = nn.ModuleList(SASRecBlock(h, c.heads, cfg.dropout) for _ in range(c.blocks))
        self.ln_final = nn.LayerNorm(h, eps=1e-8)
        self.out_dim = h

    def forward(self, histories: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        L = histories.size(1)
        if L > self.max_len:
            raise ValueError(f"SASRec built for windows of {self.max_len}, got {L}")
        mask = self.padding_mask(histories)
        pos = self.position_embedding(torch.arange(L, device=histories.device))
        seq = self.dropout(self.item_embedding(histories) + pos) * mask
        for block in self.blocks:
            seq = block(seq) * mask
        return gather_last(self.ln_final(seq), lengths)
