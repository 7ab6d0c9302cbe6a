"""LEA's additions to the double-Q loss, as extra terms (learec.rl.double_q.ExtraTerms).

- Q-loss (+LEA, ``lea.augment_q``): each augmented action is an action not taken, like a negative: its
  next state is the current one, its reward ``base + reward_scale * z``; squared TD errors summed over
  the filled slots.
- CE loss (+LEA): ``lambda * mean over filled slots of -log pi(a_aug|s)``, each slot weighted like the
  logged action's CE term when ``lea.augment_weighting=actor`` (the objective's ``actor_weights``).
- total (+SM, ``lea.align_weight``): ``weight * (1 - cos(align_proj(s_t), LE state))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from learec.lea.batch import LEBatch
from learec.lea.rewards import LERewards
from learec.rl.base import SideInputs
from learec.rl.double_q import Step


class LEATerms:
    def __init__(self, rewards: LERewards, augment_weight: float = 0.0, augment_q: bool = True,
                 augment_weighting: str = "fixed", align_weight: float = 0.0) -> None:
        self.rewards = rewards
        self.augment_weight = augment_weight
        self.augment_q = augment_q
        self.augment_weighting = augment_weighting
        self.align_weight = align_weight

    def _augmented_q(self, side: SideInputs | None) -> bool:
        return isinstance(side, LEBatch) and side.aug_items is not None and self.augment_q

    def bootstraps_in_place(self, side: SideInputs | None) -> bool:
        return self._augmented_q(side)

    def q_loss(self, step: Step) -> torch.Tensor | None:
        if not self._augmented_q(step.side):
            return None
        le = step.side
        with torch.no_grad():  # augmented actions were not taken: like negatives, the next state is the current one
            y_aug = self.rewards.augmented(step.batch, le) + step.stay_bootstrap
        sq = 0.5 * (y_aug - step.q.gather(1, le.aug_items)).pow(2)
        return (sq if le.aug_mask is None else sq * le.aug_mask).sum(dim=1)

    def actor_loss(self, step: Step) -> torch.Tensor | None:
        le = step.side
        if not (isinstance(le, LEBatch) and le.aug_items is not None and self.augment_weight):
            return None
        augmented = le.aug_items
        logp = torch.log_softmax(step.logits, dim=1).gather(1, augmented)
        mask = torch.ones_like(logp) if le.aug_mask is None else le.aug_mask
        weight = None
        if self.augment_weighting == "actor":
            weight = step.actor_weights(step.q.detach().gather(1, augmented), augmented)
        weighted = mask if weight is None else mask * weight
        ce_aug = -(logp * weighted).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.augment_weight * ce_aug

    def loss(self, step: Step) -> torch.Tensor | None:
        le_state = step.side.state if step.side is not None else None
        if not self.align_weight or le_state is None or step.network.align_proj is None:
            return None
        return self.align_weight * (1 - F.cosine_similarity(step.network.align_proj(step.state), le_state, dim=1))
