"""LE rewards (+RM, and the rewards of augmented actions).

LE rewards are standardised (``z``, see learec.lea.inputs); an action's RL reward is
``base + reward_scale * z``, the base being the run's rewards per event type. Augmented actions
(``AugmentedRewards``, ``lea.augment_reward``) get that same form (``le``), or a reward tied to the logged
action's so that the LE's proposals never out-reward what the user did (``bounded``, ``logged``).
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


AUGMENT_REWARDS = ("le", "bounded", "logged")


class AugmentedRewards:
    """Rewards ``[B, k]`` of augmented actions (``lea.augment_reward``), ``r_logged`` being the logged action's
    reward as the objective trains on it (``logged``: with +RM its LE term, without it the base):

    - ``le``: ``base + reward_scale * z_aug`` (measured: above the logged action's in 92% of transitions);
    - ``bounded``: ``r_logged - |r_logged| * (1 - sigmoid(z_aug - z_logged))``, i.e.
      ``r_logged * sigmoid(z_aug - z_logged)`` for ``r_logged >= 0``: never above ``r_logged``, near it for a
      proposal the LE rates far above the logged action, half of it for one rated alike;
    - ``logged``: exactly ``r_logged``.
    """

    def __init__(self, le: LERewards, logged: RewardSource, mode: str = "le") -> None:
        if mode not in AUGMENT_REWARDS:
            raise ValueError(f"unknown augmented-action reward {mode!r} (one of {AUGMENT_REWARDS})")
        self.le = le
        self.logged = logged
        self.mode = mode

    def __call__(self, batch: Batch, side: LEBatch) -> torch.Tensor:
        if self.mode == "le":
            return self.le.augmented(batch, side)
        r_logged = self.logged.logged(batch, side)[:, None].expand_as(side.aug_reward_z)
        if self.mode == "logged":
            return r_logged
        if side.reward_z is None:
            raise RuntimeError("lea.augment_reward=bounded needs the logged action's LE reward (LEBatch.reward_z)")
        closeness = torch.sigmoid(side.aug_reward_z - side.reward_z[:, None])
        return r_logged - r_logged.abs() * (1 - closeness)
