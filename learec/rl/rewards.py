"""Where rewards come from. The trainers ask one interface, ``RewardSource``.

A reward source maps a batch of transitions (and, for SNQN/SA2C, their sampled negative actions) to
rewards; it may also read the batch's side inputs (learec.lea's LE rewards do). The published setting is
a reward per event type (click 0.2, purchase 1.0) and 0 for negatives.
"""

from __future__ import annotations

from typing import Protocol

import torch

from learec.errors import UserError
from learec.rl.base import Batch, SideInputs


class RewardSource(Protocol):
    def logged(self, batch: Batch, side: SideInputs | None = None) -> torch.Tensor:
        """Reward of each transition's logged action: ``[B]`` float."""

    def negatives(self, batch: Batch, negatives: torch.Tensor, side: SideInputs | None = None) -> torch.Tensor:
        """Rewards of sampled negative actions ``[B, K]`` -> ``[B, K]`` float."""


class EventTypeRewards:
    """Reward by event type; types missing from the map get ``default`` (e.g. single-type data)."""

    def __init__(self, event_types: list[str], rewards: dict[str, float], default: float = 1.0,
                 negative: float = 0.0) -> None:
        missing = [t for t in event_types if t not in rewards]
        if len(event_types) > 1 and missing:
            # With several types a silent default would erase the reward shaping the config asks for.
            raise UserError(f"The data have event types {event_types}, but rl.rewards has no reward for {missing} "
                            f"(it has {sorted(rewards)})",
                            "set one per type, e.g. --set 'rl.rewards={" + ", ".join(f"{t}: 1.0" for t in event_types) + "}'")
        self.table = torch.tensor([rewards.get(t, default) for t in event_types], dtype=torch.float32)
        self.negative = negative

    def logged(self, batch: Batch, side: SideInputs | None = None) -> torch.Tensor:
        return self.table.to(batch["event"].device)[batch["event"].long()]

    def negatives(self, batch: Batch, negatives: torch.Tensor, side: SideInputs | None = None) -> torch.Tensor:
        return torch.full(negatives.shape, self.negative, dtype=torch.float32, device=negatives.device)
