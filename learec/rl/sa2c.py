"""SA2C (Xin et al., WSDM 2022): SNQN for a warm-up, then CE weighted by the clipped advantage.

``A(s, a_t) = Q(s, a_t) - mean(Q(s, a_t), Q(s, a^-_1..K))``, clipped to ``[0, 10]`` and detached; after
the warm-up a fresh Adam optimiser (lr 0.001) takes over. The optional off-policy correction multiplies
the weight by ``pi(a_t|s) / beta(a_t)``, the behaviour policy ``beta`` estimated by item popularity,
clipped above (off by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from learec.rl.double_q import double_q_arguments
from learec.rl.snqn import SNQN

if TYPE_CHECKING:
    from learec.rl.build import BuildContext


class SA2C(SNQN):
    def __init__(self, *args, warmup_steps: int = 3000, advantage_clip: tuple[float, float] = (0.0, 10.0),
                 item_popularity: torch.Tensor | None = None, correction_clip: float | None = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.warmup_steps = warmup_steps
        self.clip = advantage_clip
        self.correction_clip = correction_clip
        self.behaviour = None
        if item_popularity is not None:
            self.behaviour = (item_popularity.float() + 1.0) / (item_popularity.float().sum() + len(item_popularity))

    def in_second_phase(self) -> bool:
        return self.steps >= self.warmup_steps

    def actor_weights(self, q_actions: torch.Tensor, actions: torch.Tensor, q_logged: torch.Tensor,
                      q_negatives: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor | None:
        """Each action's clipped advantage against the logged action's baseline, times the off-policy
        correction if on; 1 (``None``) during the warm-up."""
        if not self.in_second_phase():
            return None
        baseline = torch.cat([q_logged.view(-1, 1), q_negatives], dim=1).mean(dim=1, keepdim=True)
        weight = (q_actions - baseline).clamp(*self.clip)
        if self.behaviour is not None:
            self.behaviour = self.behaviour.to(logits.device)
            pi = torch.softmax(logits.detach(), dim=1).gather(1, actions)
            weight = weight * (pi / self.behaviour[actions]).clamp(max=self.correction_clip)
        return weight


def build(ctx: BuildContext) -> SA2C:
    rl = ctx.settings
    warmup = rl.sa2c_warmup_steps(ctx.batches_per_epoch)  # rl.warmup_epochs becomes steps here
    return SA2C(**double_q_arguments(ctx), second_lr=rl.actor_lr, warmup_steps=warmup,
                advantage_clip=rl.advantage_clip, correction_clip=rl.correction_clip,
                item_popularity=ctx.item_counts if rl.off_policy_correction else None)

