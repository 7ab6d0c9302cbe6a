"""LE rewards (+RM, and the rewards of augmented actions).

LE rewards are standardised (``z``, see learec.lea.inputs); an action's RL reward is
``base + reward_scale * z``, the base being the run's rewards per event type.
"""

from __future__ import annotations

import torch

from learec.lea.batch import LEBatch
from learec.rl.base import Batch, SideInputs
from learec.rl.rewards import RewardSource


def _le(side: SideInputs | None) -> LEBatch:
    if not isinstance(side, LEBatch):
        raise TypeError("LE rewards need the batch's LE inputs (an LEBatch)")
    return side


class LERewards:
    """A reward source: ``base + scale * z`` for the logged action and the labelled negatives (+RM), and the
    rewards of augmented actions (+LEA, with or without +RM)."""

    def __init__(self, base: RewardSource, scale: float) -> None:
        self.base = base
        self.scale = scale

    def logged(self, batch: Batch, side: SideInputs | None = None) -> torch.Tensor:
        return self.base.logged(batch, side) + self.scale * _le(side).reward_z

    def negatives(self, batch: Batch, negatives: torch.Tensor, side: SideInputs | None = None) -> torch.Tensor:
        le = _le(side)
        if le.neg_items is None or not torch.equal(negatives, le.neg_items):
            raise RuntimeError("LE rewards exist only for the labelled negatives (lea.cached_negatives)")
        return self.base.negatives(batch, negatives, side) + self.scale * le.neg_reward_z

    def augmented(self, batch: Batch, le: LEBatch) -> torch.Tensor:
        """Reward of each augmented action ``[B, k]``: the logged action's base reward plus its LE bonus."""
        return self.base.logged(batch, le)[:, None] + self.scale * le.aug_reward_z
