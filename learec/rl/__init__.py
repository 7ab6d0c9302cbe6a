"""Training objectives: supervised CE and the offline RL recommenders SQN, SAC, SNQN and SA2C.

``build_objective`` is the one place a config becomes an objective; each method lives in its own module.
"""

from __future__ import annotations

import torch

from learec.config import Config
from learec.models import PopularityRecommender, SequentialRecommender, build_backbone
from learec.rl.base import Batch, Objective
from learec.rl.double_q import DoubleQObjective
from learec.rl.networks import QNetwork
from learec.rl.rewards import EventTypeRewards, RewardSource
from learec.rl.sa2c import SA2C
from learec.rl.sac import SAC
from learec.rl.snqn import SNQN
from learec.rl.sqn import SQN
from learec.rl.supervised import CrossEntropyObjective

__all__ = ["Batch", "Objective", "CrossEntropyObjective", "DoubleQObjective", "SQN", "SAC", "SNQN", "SA2C",
           "EventTypeRewards", "RewardSource", "build_objective"]


def build_objective(cfg: Config, n_items: int, item_counts: torch.Tensor, event_types: list[str] | None = None,
                    rewards: RewardSource | None = None) -> Objective:
    """The objective named by ``cfg.objective`` around the backbone named by ``cfg.model.backbone``.

    Networks are placed on ``cfg.train.device`` before their optimisers are made. ``rewards`` defaults
    to the per-event-type constants of ``cfg.rl``; the LLM environment passes its own.
    """
    device = cfg.train.device
    if cfg.model.backbone == "pop":
        # Popularity has nothing to learn; wrapping it keeps the trainer's path uniform.
        return CrossEntropyObjective(PopularityRecommender(item_counts).to(device), lr=cfg.train.lr)

    def make_backbone():
        return build_backbone(cfg.model.backbone, n_items, cfg.data.history, cfg.model)

    if cfg.objective == "ce":
        model = SequentialRecommender(make_backbone(), n_items, cfg.model.tie_head).to(device)
        return CrossEntropyObjective(model, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    rl = cfg.rl
    rewards = rewards or EventTypeRewards(event_types or ["interaction"], rl.rewards, rl.default_reward)
    common = dict(make_network=lambda: QNetwork(make_backbone(), n_items).to(device), n_items=n_items, rewards=rewards,
                  lr=cfg.train.lr, gamma=rl.gamma, negatives=rl.negatives, rank_by=rl.rank_by,
                  weight_decay=cfg.train.weight_decay)
    if cfg.objective == "sqn":
        return SQN(**common)
    if cfg.objective == "sac":
        return SAC(**common, warmup_steps=rl.sac_warmup_steps)
    if cfg.objective == "snqn":
        return SNQN(**common)
    return SA2C(**common, second_lr=rl.actor_lr, warmup_steps=rl.warmup_steps, advantage_clip=rl.advantage_clip,
                item_popularity=item_counts if rl.off_policy_correction else None,
                correction_clip=rl.correction_clip)
