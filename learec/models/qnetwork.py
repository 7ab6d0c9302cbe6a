"""The network the RL objectives train: a backbone with a Q-head and a supervised (CE) head.

It lives with the models because serving builds it too (``learec.models.ranking``), without the RL code.
"""

from __future__ import annotations

import torch
from torch import nn

from learec.models.base import Backbone


class QNetwork(nn.Module):
    """One full copy (SQN keeps two): shared state ``s_t``, Q-values and CE logits over all items.

    With ``le_dim`` (+SM), the LE state of the transition, projected to the backbone's width, is added
    to ``s_t`` at the Q-head's input only: the critic sees the LE, the actor (CE head, which ranks items)
    does not, so the served model needs no LLM. With ``align_dim``, ``align_proj`` maps ``s_t`` into the
    LE state space for the optional alignment loss. With ``le_to_actor`` (lea.state_to_actor) the CE head
    gets the LE state too, through its own projection: ranking then needs the LE.
    """

    def __init__(self, backbone: Backbone, n_items: int, le_dim: int = 0, align_dim: int = 0,
                 le_to_actor: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.q_head = nn.Linear(backbone.out_dim, n_items)
        self.ce_head = nn.Linear(backbone.out_dim, n_items)
        self.le_proj = nn.Linear(le_dim, backbone.out_dim) if le_dim else None
        self.actor_le_proj = nn.Linear(le_dim, backbone.out_dim) if le_dim and le_to_actor else None
        self.align_proj = nn.Linear(backbone.out_dim, align_dim) if align_dim else None

    def _q(self, state: torch.Tensor, le: torch.Tensor | None) -> torch.Tensor:
        if self.le_proj is not None and le is not None:
            state = state + self.le_proj(le.float())
        return self.q_head(state)

    def ce_logits(self, state: torch.Tensor, le: torch.Tensor | None) -> torch.Tensor:
        if self.actor_le_proj is not None:
            if le is None:
                raise ValueError("this network's CE head reads LE states (lea.state_to_actor): pass le=")
            state = state + self.actor_le_proj(le.float())
        return self.ce_head(state)

    def forward(self, histories: torch.Tensor, lengths: torch.Tensor, le: torch.Tensor | None = None,
                return_state: bool = False):
        state = self.backbone(histories, lengths)
        out = (self._q(state, le), self.ce_logits(state, le))
        return (*out, state) if return_state else out

    def q_values(self, histories: torch.Tensor, lengths: torch.Tensor, le: torch.Tensor | None = None) -> torch.Tensor:
        return self._q(self.backbone(histories, lengths), le)
