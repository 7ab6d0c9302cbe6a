"""SAC, the self-supervised actor-critic of Xin et al. (SIGIR 2020): CE weighted by the critic's Q."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from learec.rl.double_q import DoubleQObjective, double_q_arguments

if TYPE_CHECKING:
    from learec.rl.build import BuildContext


class SAC(DoubleQObjective):
    """``L = Q(s_t, a_t)·CE(a_t) + TD(a_t)``, Q a stop-gradient weight; optional SQN warm-up before it."""

    def __init__(self, *args, warmup_steps: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.warmup_steps = warmup_steps

    def in_second_phase(self) -> bool:
        return self.steps >= self.warmup_steps

    def actor_weights(self, q_actions: torch.Tensor, actions: torch.Tensor, q_logged: torch.Tensor,
                      q_negatives: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor | None:
        return q_actions if self.in_second_phase() else None


def build(ctx: BuildContext) -> SAC:
    return SAC(**double_q_arguments(ctx), warmup_steps=ctx.settings.sac_warmup_steps)

