"""LEA's additions to the double-Q loss, as extra terms (learec.rl.double_q.ExtraTerms).

- Q-loss (+LEA, ``lea.augment_q``): each augmented action is an action not taken, like a negative: its
  next state is the current one, its reward ``base + reward_scale * z``; squared TD errors summed over
  the filled slots. ``lea.augment_reward`` picks another reward (``AugmentedRewards``), and
  ``lea.augment_next_state=append`` bootstraps from the history with the augmented item appended instead,
  by double Q like the logged action (``Q_target(s+a, argmax Q_main(s+a, .))``; never terminal).
- CE loss (+LEA): ``lambda * mean over filled slots of -log pi(a_aug|s)``, each slot weighted like the
  logged action's CE term when ``lea.augment_weighting=actor`` (the objective's ``actor_weights``), and by
  its LE reward when ``lea.augment_confidence`` is on.
- total (+SM, ``lea.align_weight``): ``weight * (1 - cos(align_proj(s_t), LE state))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from learec.lea.append import append_items
from learec.lea.batch import LEBatch
from learec.lea.rewards import AugmentedRewards, LERewards
from learec.rl.base import SideInputs
from learec.rl.double_q import Step

AUGMENT_CONFIDENCE = ("none", "softmax", "sigmoid")


def confidence_weights(z: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """``[B, k]`` weights of the augmented actions' CE terms from their standardised LE rewards ``z``:
    ``sigmoid(z)``, or ``k_filled * softmax(z)`` over each row's filled slots (mean weight 1 per row)."""
    if how == "sigmoid":
        return torch.sigmoid(z)
    if how == "softmax":
        masked = z.masked_fill(mask <= 0, torch.finfo(z.dtype).min)  # an all-empty row: uniform, then masked
        return torch.softmax(masked, dim=1) * mask.sum(dim=1, keepdim=True)
    raise ValueError(f"unknown augment confidence {how!r} (one of {AUGMENT_CONFIDENCE})")


class LEATerms:
    def __init__(self, rewards: LERewards, augment_weight: float = 0.0, augment_q: bool = True,
                 augment_weighting: str = "fixed", align_weight: float = 0.0,
                 augmented_rewards: AugmentedRewards | None = None, augment_next_state: str = "stay",
                 augment_confidence: str = "none", pad: int | None = None) -> None:
        if augment_next_state not in ("stay", "append") or (augment_next_state == "append" and pad is None):
            raise ValueError("augment_next_state is 'stay' or 'append' (which needs the padding id, pad)")
        self.rewards = rewards
        self.augment_weight = augment_weight
        self.augment_q = augment_q
        self.augment_weighting = augment_weighting
        self.align_weight = align_weight
        self.augmented_rewards = augmented_rewards or AugmentedRewards(rewards, rewards.base, "le")
        self.augment_next_state = augment_next_state
        self.augment_confidence = augment_confidence
        self.pad = pad

    def _augmented_q(self, side: SideInputs | None) -> bool:
        return isinstance(side, LEBatch) and side.aug_items is not None and self.augment_q

    def bootstraps_in_place(self, side: SideInputs | None) -> bool:
        return self._augmented_q(side) and self.augment_next_state == "stay"

    def q_loss(self, step: Step) -> torch.Tensor | None:
        if not self._augmented_q(step.side):
            return None
        le = step.side
        with torch.no_grad():
            reward = self.augmented_rewards(step.batch, le)
            if self.augment_next_state == "append":
                bootstrap = self._appended_bootstrap(step, le)
            else:  # augmented actions were not taken: like negatives, the next state is the current one
                bootstrap = step.stay_bootstrap
            y_aug = reward + bootstrap
        sq = 0.5 * (y_aug - step.q.gather(1, le.aug_items)).pow(2)
        return (sq if le.aug_mask is None else sq * le.aug_mask).sum(dim=1)

    def _appended_bootstrap(self, step: Step, le: LEBatch) -> torch.Tensor:
        """``[B, k]`` ``gamma * Q_target(s+a, argmax Q_main(s+a, .))`` over the appended histories ``s+a``,
        one batched pass of each copy over all ``B * k`` of them."""
        if step.target is None:
            raise RuntimeError("lea.augment_next_state=append needs the step's target network")
        n, k = le.aug_items.shape
        histories, lengths = append_items(step.batch["state"], le.aug_items, self.pad)
        extra = None
        if le.state is not None:  # no LE state of s+a: the transition's LE next state (its LE state at an end)
            ends = step.batch["done"].view(-1, 1)
            extra = torch.where(ends, le.state, le.next_state).repeat_interleave(k, dim=0)
        q_target = step.target.q_values(histories, lengths, le=extra)
        best = step.network.q_values(histories, lengths, le=extra).argmax(dim=1, keepdim=True)
        return step.gamma * q_target.gather(1, best).view(n, k)

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
        if self.augment_confidence != "none":
            weighted = weighted * confidence_weights(le.aug_reward_z, mask, self.augment_confidence)
        ce_aug = -(logp * weighted).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.augment_weight * ce_aug

    def loss(self, step: Step) -> torch.Tensor | None:
        le_state = step.side.state if step.side is not None else None
        if not self.align_weight or le_state is None or step.network.align_proj is None:
            return None
        return self.align_weight * (1 - F.cosine_similarity(step.network.align_proj(step.state), le_state, dim=1))
