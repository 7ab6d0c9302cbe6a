"""SAC, the self-supervised actor-critic of Xin et al. (SIGIR 2020): CE weighted by the critic's Q."""

from __future__ import annotations

import torch

from learec.rl.base import Batch
from learec.rl.double_q import DoubleQObjective


class SAC(DoubleQObjective):
    """``L = Q(s_t, a_t)·CE(a_t) + TD(a_t)``, Q a stop-gradient weight; optional SQN warm-up before it."""

    def __init__(self, *args, warmup_steps: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.warmup_steps = warmup_steps

    def in_second_phase(self) -> bool:
        return self.steps >= self.warmup_steps

    def actor_weight(self, q_logged: torch.Tensor, q_negatives: torch.Tensor | None, logits: torch.Tensor,
                     batch: Batch) -> torch.Tensor | None:
        return q_logged if self.in_second_phase() else None

    def augment_actor_weight(self, q_augmented: torch.Tensor, q_logged: torch.Tensor,
                             q_negatives: torch.Tensor | None, logits: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        return q_augmented if self.in_second_phase() else None
