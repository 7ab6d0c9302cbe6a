"""``LEBatch``: the LE inputs of one training batch, one optional tensor per kind (``None`` when unused).

It is the side input (learec.rl.base.SideInputs) the RL objectives receive beside the logged batch: they
read ``state``/``next_state`` as an extra critic input and ``neg_items`` as given negatives; the rest is
read by learec.lea's rewards and loss terms.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass(frozen=True)
class LEBatch:
    state: torch.Tensor | None = None  # [B, d] +SM: LE state of s
    next_state: torch.Tensor | None = None  # [B, d] LE state of s' (zeros where the episode ends)
    reward_z: torch.Tensor | None = None  # [B] +RM: standardised LE reward of the logged action
    neg_items: torch.Tensor | None = None  # [B, K] labelled negatives, used instead of uniform ones
    neg_reward_z: torch.Tensor | None = None  # [B, K] +RM: their standardised LE rewards
    aug_items: torch.Tensor | None = None  # [B, k] +LEA: augmented positive actions (0 in empty slots)
    aug_mask: torch.Tensor | None = None  # [B, k] 1 where a slot holds an augmented action, 0 where empty
    aug_reward_z: torch.Tensor | None = None  # [B, k] their standardised LE rewards

    def to(self, device: str | torch.device) -> LEBatch:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if getattr(self, f.name) is not None})
